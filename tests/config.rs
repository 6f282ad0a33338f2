#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Configuration: every sample under config/ compiles, every seed example parses, bad input
//! is rejected with file:line, resource and field, and `meshgate validate` reports it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use meshgate::config::{self, CompileOptions, ConfigError};
use meshgate::upstream::Registry;

fn compile(
    paths: &[PathBuf],
    mesh_port: Option<u16>,
) -> Result<meshgate::config::Snapshot, Vec<ConfigError>> {
    let raw = config::source::file::load(paths)?;
    let registry = Registry::default();
    let credentials = meshgate::tls::server::CertsDir("certs".into());
    let opts = CompileOptions {
        workload_labels: None,
        selector: Default::default(),
        mesh_port,
        registry: &registry,
        credentials: &credentials,
    };
    config::compile(&raw, &opts).map_err(|f| f.errors)
}

fn yaml_dirs(root: &Path, out: &mut Vec<PathBuf>) {
    let mut has_yaml = false;
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_dirs(&p, out);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            has_yaml = true;
        }
    }
    if has_yaml {
        out.push(root.to_owned());
    }
}

#[test]
fn every_sample_under_config_compiles() {
    let mut dirs = Vec::new();
    yaml_dirs(Path::new("config"), &mut dirs);
    assert!(dirs.len() >= 4, "{dirs:?}");
    for dir in dirs {
        // A directory of alternatives (one VirtualService per step) compiles beside its parent.
        let alternatives = dir.file_name().is_some_and(|n| n == "reviews-routing");
        if alternatives {
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                let paths = vec![dir.parent().unwrap().to_owned(), f.clone()];
                compile(&paths, Some(15001)).unwrap_or_else(|e| panic!("{}: {e:#?}", f.display()));
            }
        } else {
            compile(std::slice::from_ref(&dir), Some(15001))
                .unwrap_or_else(|e| panic!("{}: {e:#?}", dir.display()));
        }
    }
}

#[test]
fn default_config_serves_port_8080() {
    let snap = compile(&[PathBuf::from("config")], None).unwrap();
    assert_eq!(
        snap.listeners.iter().map(|l| l.port).collect::<Vec<_>>(),
        [8080]
    );
}

#[test]
fn seed_examples_parse() {
    // Vendored verbatim from the tutorials this project was founded on.
    let seeds = Path::new("tests/fixtures/seed-examples");
    let raw = config::source::file::load(&[seeds.to_owned()]).unwrap();
    let [gw, vs, dr, se, _] = raw.counts();
    assert_eq!((gw, vs, dr, se), (2, 6, 5, 2));
}

/// Write `yaml` to a temp file named `name` and compile it, expecting errors.
fn errors_of(name: &str, yaml: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, yaml).unwrap();
    let errs = compile(&[file], None).expect_err("config should be rejected");
    errs.iter()
        .map(|e| {
            e.to_string()
                .replace(&format!("{}/", dir.path().display()), "")
        })
        .collect()
}

const GW: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: svc
spec:
  hosts: [svc.local]
  resolution: STATIC
  ports:
  - {number: 80, name: http, protocol: HTTP}
  endpoints:
  - address: 127.0.0.1
    labels: {version: v1}
---
";

#[test]
fn bad_weight_names_file_line_resource_and_field() {
    let yaml = format!(
        "{GW}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [a.test]
  gateways: [gw]
  http:
  - route:
    - destination:
        host: svc.local
      weight: 50
    - destination:
        host: svc.local
      weight: 150
"
    );
    let errs = errors_of("vs.yaml", &yaml);
    assert_eq!(
        errs,
        ["vs.yaml:37: VirtualService default/reviews: http[0].route[1].weight: must be 0..=100"]
    );
}

#[test]
fn unknown_references_are_errors() {
    let yaml = format!(
        "{GW}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
  namespace: apps
spec:
  hosts: [a.test]
  gateways: [nope, default/gw]
  http:
  - route:
    - destination: {{host: missing.local}}
  - route:
    - destination: {{host: svc.local, subset: v9}}
  - route:
    - destination: {{host: svc.local, port: {{number: 81}}}}
"
    );
    let errs = errors_of("refs.yaml", &yaml);
    assert_eq!(
        errs,
        [
            "refs.yaml:30: VirtualService apps/vs: gateways[0]: unknown gateway apps/nope",
            "refs.yaml:33: VirtualService apps/vs: http[0].route[0].destination.host: unknown host missing.local: no ServiceEntry declares it",
            "refs.yaml:35: VirtualService apps/vs: http[1].route[0].destination.subset: unknown subset v9: no DestinationRule for svc.local defines it",
            "refs.yaml:37: VirtualService apps/vs: http[2].route[0].destination.port.number: port 81 is not declared by ServiceEntry default/svc",
        ]
    );
}

#[test]
fn invalid_values_are_all_reported() {
    let yaml = format!(
        "{GW}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
spec:
  hosts: [a.test]
  gateways: [gw]
  http:
  - match:
    - uri:
        regex: '(unclosed'
    route:
    - destination: {{host: svc.local}}
    timeout: 5 parsecs
    retries:
      attempts: 3
      retryOn: 5xx,sometimes
  - redirect:
      uri: /x
      redirectCode: 200
  - directResponse:
      status: 99
"
    );
    let errs = errors_of("many.yaml", &yaml);
    let want = [
        "many.yaml:33: VirtualService default/vs: http[0].match[0].uri.regex: invalid regex",
        "many.yaml:36: VirtualService default/vs: http[0].timeout: invalid duration \"5 parsecs\"",
        "many.yaml:39: VirtualService default/vs: http[0].retries.retryOn: unknown retry condition \"sometimes\"",
        "many.yaml:42: VirtualService default/vs: http[1].redirect.redirectCode: 200 is not a redirect code",
        "many.yaml:44: VirtualService default/vs: http[2].directResponse.status: must be 200..=599",
    ];
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
    for (got, want) in errs.iter().zip(want) {
        assert!(got.starts_with(want), "{got}\n  should start with\n{want}");
    }
}

#[test]
fn yaml_syntax_and_type_errors_have_lines() {
    let errs = errors_of(
        "syntax.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g\n",
    );
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("syntax.yaml:4: invalid YAML"),
        "{errs:?}"
    );
    let errs = errors_of(
        "types.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n  - port:\n      number: eighty\n",
    );
    assert!(
        errs[0].starts_with("types.yaml:7: spec.servers[0].port.number: invalid type"),
        "{errs:?}"
    );
}

#[test]
fn duplicate_resources_are_rejected() {
    let yaml = format!("{GW}{GW}");
    let errs = errors_of("dup.yaml", &yaml);
    assert!(
        errs.iter()
            .any(|e| e.contains("duplicate Gateway default/gw")),
        "{errs:?}"
    );
}

#[test]
fn other_kinds_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.yaml");
    std::fs::write(
        &file,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: y}\n---\n",
    )
    .unwrap();
    let snap = compile(&[file], None).unwrap();
    assert!(snap.listeners.is_empty());
}

fn meshgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meshgate"))
}

#[test]
fn validate_cli_exit_codes_and_messages() {
    let ok = meshgate().args(["validate", "config"]).output().unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        format!("{GW}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: v}}\nspec:\n  hosts: [a]\n  gateways: [gw, other]\n  http:\n  - route:\n    - destination: {{host: nowhere}}\n"),
    )
    .unwrap();
    let bad = meshgate().arg("validate").arg(&file).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains(
            "bad.yaml:28: VirtualService default/v: gateways[1]: unknown gateway default/other"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("http[0].route[0].destination.host: unknown host nowhere"),
        "{stderr}"
    );
    assert!(stderr.contains("2 error(s)"), "{stderr}");
    let unbound = dir.path().join("mesh.yaml");
    std::fs::write(&unbound, "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: m}\nspec:\n  hosts: [a]\n  http:\n  - directResponse: {status: 200}\n").unwrap();
    let out = meshgate().arg("validate").arg(&unbound).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no gateways: bound to the mesh only"));
}

#[tokio::test]
async fn startup_with_bad_config_fails_with_the_errors() {
    let err = support::TestGateway::try_start_with(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n  hosts: [a]\n  gateways: [ghost]\n",
        |_| {},
    )
    .await
    .err()
    .expect("start must fail");
    let msg = err.to_string();
    assert!(
        msg.contains(
            "config.yaml:6: VirtualService default/v: gateways[0]: unknown gateway default/ghost"
        ),
        "{msg}"
    );
}

#[tokio::test]
async fn default_config_answers_the_readme_walkthrough() {
    let gw =
        support::TestGateway::start_with("", |b| b.config_paths = vec![PathBuf::from("config")])
            .await;
    let r = support::Client::new(gw.port(8080), "demo.local")
        .send("/")
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "hello from meshgate\n")
    );
    let r = support::Client::new(gw.port(8080), "demo.local")
        .send("/old?x=1")
        .await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), "http://demo.local/new?x=1");
    let r = support::Client::new(gw.port(8080), "other.local")
        .send("/")
        .await;
    assert_eq!(r.status, 404);
}

/// A port that is free right now (the binary needs a concrete port in its config).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary serving a Gateway on a free port and a VirtualService for `log.test`
/// whose one rule is `rule`, with `args` and `env` added; returns once both the port and the
/// admin port accept connections.
struct Served {
    child: std::process::Child,
    port: u16,
    admin: u16,
    _dir: tempfile::TempDir,
}

fn serve_binary(
    rule: &str,
    env: &[(&str, &str)],
    args: &[&str],
    stdout: std::process::Stdio,
    stderr: std::process::Stdio,
) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("gw.yaml"),
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  servers:\n  - port: {{number: {port}, name: http, protocol: HTTP}}\n    hosts: ['*']\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs}}\nspec:\n  hosts: [log.test]\n  gateways: [gw]\n  http:\n{rule}"
        ),
    )
    .unwrap();
    let mut cmd = meshgate();
    cmd.envs(env.iter().copied())
        .arg("--config")
        .arg(dir.path())
        .args(["--bind-address", "127.0.0.1", "--admin"])
        .arg(format!("127.0.0.1:{admin}"))
        .args(args)
        .stdout(stdout)
        .stderr(stderr);
    let child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for p in [port, admin] {
        while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "meshgate did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    Served {
        child,
        port,
        admin,
        _dir: dir,
    }
}

#[test]
fn binary_serves_and_writes_json_access_log_to_stdout() {
    use std::io::{BufRead, BufReader, Read, Write};
    let Served {
        mut child, port, ..
    } = serve_binary(
        "  - name: hello\n    directResponse: {status: 203, body: {string: hi}}\n",
        &[],
        &["--access-log", "json"],
        std::process::Stdio::piped(),
        std::process::Stdio::null(),
    );
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /x?y=1 HTTP/1.1\r\nHost: log.test\r\nx-request-id: abc-123\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 203"), "{reply}");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["response_code"], 203, "{v}");
    assert_eq!(v["path"], "/x");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["authority"], "log.test");
    assert_eq!(v["route_name"], "hello");
    assert_eq!(v["request_id"], "abc-123");
    assert_eq!(v["bytes_sent"], 2);
    assert_eq!(v["response_flags"], "-");
}

/// Send one raw HTTP/1.1 request to 127.0.0.1:`port` and return the whole reply.
fn raw_http(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn binary_log_level_changes_at_run_time_through_admin() {
    use std::io::{BufRead, BufReader};
    let Served {
        mut child,
        port,
        admin,
        ..
    } = serve_binary(
        "  - directResponse: {status: 200}\n",
        &[("RUST_LOG", "warn")],
        &[],
        std::process::Stdio::null(),
        std::process::Stdio::piped(),
    );
    let bad = raw_http(
        admin,
        "POST /logging?level=nonsense%3D%3D HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    let ok = raw_http(
        admin,
        "POST /logging?level=debug HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.contains("log filter: debug"),
        "{ok}"
    );
    // At debug, a request refused before routing (no Host) is logged; at warn it was not.
    raw_http(port, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let found = loop {
        match rx.recv_timeout(std::time::Duration::from_secs(5)) {
            Ok(l) if l.contains("DEBUG") => break true,
            Ok(l) => seen.push(l),
            Err(_) => break false,
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        found,
        "no DEBUG line after POST /logging?level=debug: {seen:?}"
    );
}

#[test]
fn gateways_are_selected_by_the_workload_labels_as_istio_does() {
    let dir = tempfile::tempdir().unwrap();
    let gw = |name: &str, selector: &str, port: u16| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}}}\nspec:\n  selector: {selector}\n  servers:\n  - port: {{number: {port}, name: http, protocol: HTTP}}\n    hosts: ['*']\n---\n"
        )
    };
    std::fs::write(
        dir.path().join("gw.yaml"),
        format!(
            "{}{}{}",
            gw("a", "{istio: ingressgateway}", 8001),
            gw("b", "{istio: egressgateway}", 8002),
            gw("c", "{}", 8003),
        ),
    )
    .unwrap();
    let raw = config::source::file::load(&[dir.path().to_owned()]).unwrap();
    let registry = Registry::default();
    let credentials = meshgate::tls::server::CertsDir("certs".into());
    let ports = |labels: Option<&[(&str, &str)]>| {
        let opts = CompileOptions {
            workload_labels: labels.map(|l| {
                l.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            }),
            selector: Default::default(),
            mesh_port: None,
            registry: &registry,
            credentials: &credentials,
        };
        let snap = config::compile(&raw, &opts).unwrap();
        snap.listeners.iter().map(|l| l.port).collect::<Vec<_>>()
    };
    // The pod's labels contain a's selector and c's empty one; not b's.
    assert_eq!(
        ports(Some(&[("istio", "ingressgateway"), ("app", "gw")])),
        [8001, 8003]
    );
    assert_eq!(ports(None), [8001, 8002, 8003]);
}

#[test]
fn binary_text_access_log_is_envoys_default_format() {
    use std::io::{BufRead, BufReader};
    // The log level never silences the access log.
    let Served {
        mut child, port, ..
    } = serve_binary(
        "  - directResponse: {status: 203, body: {string: hi}}\n",
        &[("RUST_LOG", "error")],
        &["--access-log", "text"],
        std::process::Stdio::piped(),
        std::process::Stdio::null(),
    );
    let reply = raw_http(
        port,
        "GET /x?y=1 HTTP/1.1\r\nHost: log.test\r\nUser-Agent: curl/8.0\r\nx-request-id: abc-123\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 203"), "{reply}");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // [START] "GET /x?y=1 HTTP/1.1" 203 - 0 2 <ms> - "<xff>" "curl/8.0" "abc-123" "log.test" "-"
    let (start, rest) = line.trim_end().split_once("] ").unwrap();
    assert!(
        start.starts_with('[') && start.ends_with('Z') && start.len() == 25,
        "{line}"
    );
    let want_head = "\"GET /x?y=1 HTTP/1.1\" 203 - 0 2 ";
    assert!(rest.starts_with(want_head), "{line}");
    assert!(
        rest.ends_with(" - \"-\" \"curl/8.0\" \"abc-123\" \"log.test\" \"-\""),
        "{line}"
    );
}

/// A self-signed certificate for `names`, valid until `until` (year, month, day), written as
/// `dir/NAME/tls.crt` + `tls.key` (a credentialName).
fn credential(dir: &Path, name: &str, names: &[&str], until: (i32, u8, u8)) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap();
    p.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    let cert = p.self_signed(&key).unwrap();
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(d.join("tls.key"), key.serialize_pem()).unwrap();
}

#[test]
fn validate_reports_analyzer_findings_with_codes() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    credential(&certs, "old", &["old.example"], (2001, 1, 1));
    credential(&certs, "other", &["other.example"], (4000, 1, 1));
    let yaml = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [a.example]
  - port: {number: 8443, name: https-old, protocol: HTTPS}
    hosts: [old.example]
    tls: {mode: SIMPLE, credentialName: old}
  - port: {number: 8443, name: https-new, protocol: HTTPS}
    hosts: [new.example]
    tls: {mode: SIMPLE, credentialName: other}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw2}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [a.example]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc}
spec:
  hosts: [svc.example]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}, {address: 127.0.0.2}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: [a.example]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /api}}]
    route:
    - {destination: {host: svc.example}, weight: 30}
    - {destination: {host: svc.example}, weight: 30}
  - match: [{uri: {prefix: /api/v2}}]
    route:
    - destination: {host: svc.example}
";
    let file = dir.path().join("cfg.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = meshgate()
        .arg("validate")
        .arg(&file)
        .arg("--certs-dir")
        .arg(&certs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    for want in [
        "error[MG0202] ",
        "Gateway default/gw: servers[1].tls: certificate expired on",
        "warning[MG0104] ",
        "http[0].route: destination weights sum to 60, not 100",
        "warning[MG0105] ",
        "http[1]: rule can never match on host a.example port 8080: default/vs http[0]",
        "warning[MG0106] ",
        "Gateway default/gw2: servers[0].hosts[0]: host a.example on port 8080 is also served by Gateway default/gw",
        "warning[MG0203] ",
        "servers[2].hosts[0]: certificate does not cover new.example (it names other.example)",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    assert_eq!(
        out.status.code(),
        Some(1),
        "an expired certificate fails validation"
    );
    // A missing credential, and the codes on compile errors.
    let broken = yaml
        .replace("credentialName: other", "credentialName: nowhere")
        .replace("gateways: [gw]", "gateways: [gw, ghost]");
    std::fs::write(&file, broken).unwrap();
    let out = meshgate()
        .arg("validate")
        .arg(&file)
        .arg("--certs-dir")
        .arg(&certs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error[MG0101] ") && stderr.contains("unknown gateway default/ghost"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error[MG0201] ") && stderr.contains("servers[2].tls.credentialName"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn route_lists_hold_no_spare_capacity() {
    // The snapshot lives until the next reload: with 10,000 one-rule hosts, the room
    // `extend` left for four routes per host came to 19 MB.
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: ['*']\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: up}\nspec:\n  hosts: [up.example.com]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 127.0.0.1}]\n",
    );
    for i in 0..3 {
        yaml.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs-{i}}}\nspec:\n  hosts: [h{i}.example.com]\n  gateways: [gw]\n  http:\n  - route: [{{destination: {{host: up.example.com}}}}]\n"
        ));
    }
    let file = dir.path().join("hosts.yaml");
    std::fs::write(&file, yaml).unwrap();
    let snap = compile(&[file], None).unwrap();
    let table = snap.table(8080).unwrap();
    for i in 0..3 {
        let vh = table.hosts.lookup(&format!("h{i}.example.com")).unwrap();
        assert_eq!(vh.routes.len(), 1);
        assert_eq!(vh.routes.capacity(), 1, "h{i}");
    }
}
