//! `meshgate explain` end to end: the real binary on the configurations in `config/examples/`
//! and the seed examples (copied into `tests/fixtures/explain/`), asserting which rule and
//! match block each request selects, why others did not, and the exit codes; plus the
//! admin `/explain` endpoint on a running gateway.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use support::pki::Ca;
use support::{Client, TestGateway};

/// Run `meshgate explain ARGS --json` from the crate root: (exit code, parsed stdout).
fn explain(args: &[&str]) -> (i32, Value) {
    let (code, out) = explain_text(&[args, &["--json"]].concat());
    let json = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    (code, json)
}

/// Run `meshgate explain ARGS`: (exit code, stdout).
fn explain_text(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("explain")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let code = out.status.code().unwrap();
    assert!(
        code != 1,
        "explain failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code, stdout)
}

/// The selected rule: (VirtualService, rule index, match block index).
fn rule(v: &Value) -> (&str, u64, u64) {
    let r = &v["route"];
    assert!(r.is_object(), "no route selected: {v:#}");
    (
        r["virtualService"].as_str().unwrap(),
        r["index"].as_u64().unwrap(),
        r["block"].as_u64().unwrap(),
    )
}

/// (cluster name, percent) of each destination.
fn destinations(v: &Value) -> Vec<(String, f64)> {
    v["outcome"]["destinations"]
        .as_array()
        .unwrap_or_else(|| panic!("not forwarded: {v:#}"))
        .iter()
        .map(|d| {
            (
                d["cluster"]["name"].as_str().unwrap().to_owned(),
                d["percent"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn reasons(v: &Value, position: usize) -> Vec<&str> {
    v["rules"][position]["reasons"]
        .as_array()
        .map(|a| a.iter().map(|r| r.as_str().unwrap()).collect())
        .unwrap_or_default()
}

const BOOKINFO: &str = "config/examples/bookinfo";
const PISMO: &str = "config/examples/pismo";

#[test]
fn bookinfo_gateway_picks_the_match_block() {
    for (path, block) in [
        ("/productpage", 0),
        ("/static/css/app.css", 1),
        ("/login", 2),
        ("/api/v1/products/0/reviews", 4),
    ] {
        let url = format!("http://bookinfo.example:8080{path}");
        let (code, v) = explain(&["--config", BOOKINFO, &url]);
        assert_eq!(code, 0, "{v:#}");
        assert_eq!(rule(&v), ("default/bookinfo", 0, block), "{path}");
        assert_eq!(
            destinations(&v),
            [(
                "outbound|9080||productpage.default.svc.cluster.local".to_owned(),
                100.0
            )]
        );
        let ep = &v["outcome"]["destinations"][0]["cluster"]["endpoints"][0];
        assert_eq!(ep["address"], "127.0.0.1:9001");
        assert_eq!(ep["labels"]["version"], "v1");
        assert_eq!(
            v["listener"]["servers"][0],
            "Gateway default/bookinfo-gateway servers[0]"
        );
    }
}

#[test]
fn bookinfo_404_is_explained_block_by_block() {
    let (code, v) = explain(&["--config", BOOKINFO, "http://bookinfo.example:8080/reviews"]);
    assert_eq!(code, 2);
    assert_eq!(v["outcome"]["kind"], "rejected");
    assert_eq!(v["outcome"]["status"], 404);
    assert!(v["route"].is_null());
    assert_eq!(v["virtualHost"]["pattern"], "*");
    assert_eq!(
        reasons(&v, 0),
        [
            "match[0]: uri exact /productpage does not match /reviews",
            "match[1]: uri prefix /static does not match /reviews",
            "match[2]: uri exact /login does not match /reviews",
            "match[3]: uri exact /logout does not match /reviews",
            "match[4]: uri prefix /api/v1/products does not match /reviews",
        ]
    );
    let (code, text) =
        explain_text(&["--config", BOOKINFO, "http://bookinfo.example:8080/reviews"]);
    assert_eq!(code, 2);
    assert!(
        text.contains("REJECTED  404: no rule of virtual host * matched"),
        "{text}"
    );
    assert!(
        text.contains("uri prefix /static does not match /reviews"),
        "{text}"
    );
}

#[test]
fn bookinfo_reviews_routing_by_end_user() {
    let cfg = [
        "--config",
        BOOKINFO,
        "--config",
        "config/examples/bookinfo/reviews-routing/2-jason-v2.yaml",
        "--mesh-port",
        "15001",
        "--port",
        "15001",
    ];
    let (code, v) = explain(
        &[
            &cfg[..],
            &["http://reviews:9080/reviews/0", "-H", "end-user: jason"],
        ]
        .concat(),
    );
    assert_eq!(code, 0);
    assert_eq!(rule(&v), ("default/reviews-test-v2", 0, 0));
    assert_eq!(
        destinations(&v),
        [(
            "outbound|9080|v2|reviews.default.svc.cluster.local".to_owned(),
            100.0
        )]
    );
    let (code, v) = explain(
        &[
            &cfg[..],
            &["http://reviews:9080/reviews/0", "-H", "end-user: bob"],
        ]
        .concat(),
    );
    assert_eq!(code, 0);
    assert_eq!(rule(&v), ("default/reviews-test-v2", 1, 0));
    assert_eq!(
        reasons(&v, 0),
        ["header end-user exact jason does not match bob"]
    );
    assert_eq!(v["rules"][0]["matched"], false);
    assert_eq!(v["rules"][1]["matched"], true);
    assert_eq!(
        destinations(&v),
        [(
            "outbound|9080|v1|reviews.default.svc.cluster.local".to_owned(),
            100.0
        )]
    );
}

#[test]
fn seed_bookinfo_all_steps_at_once_shadow_the_later_ones() {
    let cfg = [
        "--config",
        "tests/fixtures/seed-examples/bookinfo-gateway.yaml",
        "--config",
        "tests/fixtures/seed-examples/bookinfo-destination-rules.yaml",
        "--config",
        "tests/fixtures/seed-examples/bookinfo-routing.yaml",
        "--config",
        "tests/fixtures/explain/bookinfo-routing",
        "--mesh-port",
        "15001",
    ];
    // No listener on port 80 would be the seed Gateway's: the URL names the mesh service,
    // so --port picks the mesh listener.
    let (code, v) = explain(
        &[
            &cfg[..],
            &[
                "--port",
                "15001",
                "http://reviews/",
                "-H",
                "end-user: jason",
            ],
        ]
        .concat(),
    );
    assert_eq!(code, 0);
    // Step 1's catch-all is first: jason never reaches step 2's rule.
    assert_eq!(rule(&v), ("default/reviews", 0, 0));
    let shadowed: Vec<(&str, u64, bool)> = v["shadowed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["virtualService"].as_str().unwrap(),
                s["index"].as_u64().unwrap(),
                s["catchAll"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shadowed,
        [
            ("default/reviews-test-v2", 0, true),
            ("default/reviews-test-v2", 1, true),
            ("default/reviews-50-v3", 0, true),
        ]
    );
    assert_eq!(
        v["shadowed"][0]["by"][0]["virtualService"],
        "default/reviews"
    );
    let (_, text) = explain_text(&[&cfg[..], &["--port", "15001", "http://reviews/"]].concat());
    assert!(
        text.contains("#1 default/reviews-test-v2 http[0] can never match: the catch-all #0 default/reviews http[0]"),
        "{text}"
    );
    // The seed's ingress Gateway on port 80 for `*`.
    let (code, v) = explain(&[&cfg[..], &["http://203.0.113.7/productpage"]].concat());
    assert_eq!(code, 0);
    assert_eq!(rule(&v), ("default/bookinfo", 0, 0));
    assert_eq!(v["listener"]["port"], 80);
}

#[test]
fn canary_splits_ninety_ten() {
    for configs in [
        &["--config", "config/examples/canary"][..],
        &[
            "--config",
            "tests/fixtures/seed-examples/canary-10.yaml",
            "--config",
            "tests/fixtures/explain/canary",
        ][..],
    ] {
        // No Gateway listens on 80: the mesh port is used, and said so.
        let (code, v) = explain(
            &[
                configs,
                &["--mesh-port", "15001", "http://serviceb.serviceb/"][..],
            ]
            .concat(),
        );
        assert_eq!(code, 0, "{configs:?}");
        assert_eq!(rule(&v), ("default/serviceb", 0, 0));
        assert_eq!(
            destinations(&v),
            [
                ("outbound|80|v1|serviceb.serviceb".to_owned(), 90.0),
                ("outbound|80|v2|serviceb.serviceb".to_owned(), 10.0),
            ]
        );
        assert_eq!(v["listener"]["kind"], "mesh");
        assert!(
            v["notes"][0].as_str().unwrap().contains("mesh port 15001"),
            "{v:#}"
        );
        let subsets: Vec<&str> = v["outcome"]["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                d["cluster"]["endpoints"][0]["labels"]["version"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(subsets, ["v1", "v2"]);
    }
}

#[test]
fn pismo_first_matching_rule_wins_with_its_retries() {
    let url = "http://application.yourdomain:8080/health";
    let (code, v) = explain(&["--config", PISMO, url]);
    assert_eq!(code, 0);
    assert_eq!(rule(&v), ("istio-apps/application-ingress", 1, 0));
    assert_eq!(reasons(&v, 0), ["header myself missing"]);
    let retries = &v["outcome"]["policy"]["retries"];
    assert_eq!(retries["attempts"], 25);
    assert_eq!(retries["perTryTimeout"], "1s");
    assert_eq!(retries["explicit"], true);
    assert_eq!(
        destinations(&v),
        [(
            "outbound|8080||application.istio-apps.svc.cluster.local".to_owned(),
            100.0
        )]
    );

    let (_, v) = explain(&["--config", PISMO, url, "-H", "myself: yourself"]);
    assert_eq!(rule(&v), ("istio-apps/application-ingress", 0, 0));
    assert_eq!(
        destinations(&v),
        [(
            "outbound|8080||applicationtwo.istio-apps.svc.cluster.local".to_owned(),
            100.0
        )]
    );

    let (_, v) = explain(&[
        "--config",
        PISMO,
        "http://application.yourdomain:8080/grpc.Svc/Call",
    ]);
    assert_eq!(rule(&v), ("istio-apps/application-ingress", 2, 0));
    assert_eq!(
        reasons(&v, 1),
        ["uri prefix /health does not match /grpc.Svc/Call"]
    );
    assert_eq!(v["outcome"]["destinations"][0]["cluster"]["port"], 8333);
    assert_eq!(
        v["outcome"]["destinations"][0]["cluster"]["protocol"],
        "http2"
    );
}

#[test]
fn pismo_host_outside_the_virtual_service_and_passthrough_without_route() {
    let (code, v) = explain(&["--config", PISMO, "http://other.yourdomain:8080/health"]);
    assert_eq!(code, 2);
    assert_eq!(v["outcome"]["status"], 404);
    let reason = v["outcome"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("other.yourdomain is not served on port 8080"),
        "{reason}"
    );
    assert_eq!(
        v["exposedHosts"],
        serde_json::json!(["application.yourdomain"])
    );

    // Port 8443 passes TLS through by SNI, and no VirtualService has a `tls` route.
    let (code, v) = explain(&["--config", PISMO, "https://application.yourdomain:8443/"]);
    assert_eq!(code, 2);
    assert_eq!(v["tls"]["mode"], "passthrough");
    assert_eq!(v["tls"]["matched"], "*.yourdomain");
    assert!(v["outcome"]["status"].is_null());
    let reason = v["outcome"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("no passthrough route for SNI application.yourdomain"),
        "{reason}"
    );
}

#[test]
fn seed_pismo_on_its_original_ports() {
    let cfg = "tests/fixtures/explain/pismo";
    let seeds = [
        "--config",
        "tests/fixtures/seed-examples/pismo-gateway.yaml",
        "--config",
        "tests/fixtures/seed-examples/pismo-virtualservice.yaml",
    ];
    let (code, v) = explain(
        &[
            &seeds[..],
            &["--config", cfg, "http://application.yourdomain/health"],
        ]
        .concat(),
    );
    assert_eq!(code, 0);
    assert_eq!(v["listener"]["port"], 80);
    assert_eq!(rule(&v), ("istio-apps/application-ingress", 1, 0));
    let (code, v) = explain(
        &[
            &seeds[..],
            &[
                "--config",
                cfg,
                "-X",
                "POST",
                "http://application.yourdomain/",
            ],
        ]
        .concat(),
    );
    assert_eq!(code, 0);
    assert_eq!(rule(&v), ("istio-apps/application-ingress", 2, 0));
}

const TLS_CONFIG: &str = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [a.example]
    tls: {mode: SIMPLE, credentialName: a-cred}
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [a.example]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [a.example]
  gateways: [gw]
  http:
  - directResponse: {status: 200, body: {string: hello}}
";

#[test]
fn tls_server_by_sni_misdirected_host_and_https_redirect() {
    let dir = tempfile::tempdir().unwrap();
    Ca::new("explain-ca")
        .server("a.example", &["a.example"])
        .write_credential(dir.path(), "a-cred", None);
    let file = dir.path().join("gw.yaml");
    std::fs::write(&file, TLS_CONFIG).unwrap();
    let certs = dir.path().to_str().unwrap();
    let cfg = file.to_str().unwrap();
    let base = ["--config", cfg, "--certs-dir", certs];

    let (code, v) = explain(&[&base[..], &["https://a.example:8443/x"]].concat());
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["tls"]["server"], "Gateway default/gw servers[0]");
    assert_eq!(v["tls"]["sni"], "a.example");
    assert_eq!(rule(&v), ("default/a", 0, 0));
    assert_eq!(v["outcome"]["kind"], "directResponse");
    assert_eq!(v["outcome"]["body"], "hello");

    // The SNI picks the server; a Host outside it is refused.
    let (code, v) = explain(
        &[
            &base[..],
            &["https://a.example:8443/x", "-H", "Host: b.example"],
        ]
        .concat(),
    );
    assert_eq!(code, 2);
    assert_eq!(v["outcome"]["status"], 421);

    let (code, v) = explain(
        &[
            &base[..],
            &["https://a.example:8443/x", "--sni", "c.example"],
        ]
        .concat(),
    );
    assert_eq!(code, 2);
    assert!(v["tls"].is_null());
    let reason = v["outcome"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("SNI c.example matches no server on port 8443"),
        "{reason}"
    );

    let (code, v) = explain(&[&base[..], &["http://a.example:8080/x?y=1"]].concat());
    assert_eq!(code, 0);
    assert_eq!(v["outcome"]["kind"], "httpsRedirect");
    assert_eq!(v["outcome"]["location"], "https://a.example/x?y=1");
}

#[test]
fn configuration_and_input_errors_exit_1() {
    for args in [
        &[
            "--config",
            "tests/fixtures/explain/no-such-dir",
            "http://a/",
        ][..],
        &["--config", BOOKINFO, "ftp://a/"][..],
        &["--config", BOOKINFO, "http://a/", "-H", "no colon"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("explain")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test]
async fn admin_explain_answers_against_the_live_snapshot() {
    let yaml = std::fs::read_to_string(Path::new(PISMO).join("virtualservice.yaml")).unwrap()
        + "---\n"
        + &std::fs::read_to_string(Path::new(PISMO).join("gateway.yaml")).unwrap()
        + "---\n"
        + &std::fs::read_to_string(Path::new(PISMO).join("services.yaml")).unwrap();
    let gw = TestGateway::start(&yaml).await;
    let admin = Client::new(gw.admin(), "127.0.0.1");
    let reply = admin
        .send(
            "/explain?url=http%3A%2F%2Fapplication.yourdomain%3A8080%2Fhealth\
             &header=myself%3Ayourself&header=x-other%3A1&method=GET",
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), "application/json");
    let v: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(rule(&v), ("istio-apps/application-ingress", 0, 0));
    assert_eq!(v["request"]["headers"][1][0], "x-other");

    let reply = admin
        .send("/explain?url=http%3A%2F%2Fnope.yourdomain%3A8080%2F")
        .await;
    assert_eq!(reply.status, 200);
    let v: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(v["outcome"]["status"], 404);

    let reply = admin.send("/explain?url=http%3A%2F%2Fa%2F&port=x").await;
    assert_eq!(reply.status, 400);
    let reply = admin.send("/explain").await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.body.contains("missing query parameter url"),
        "{}",
        reply.body
    );
}
