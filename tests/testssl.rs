//! TLS defaults audited by a real scanner (issue 7): `testssl.sh --nodns none` against an
//! HTTPS Gateway server with meshgate's default TLS settings finds nothing rated MEDIUM or
//! worse. Needs the Debian package `testssl.sh` (the test installs it with apt-get when
//! missing; about 60 s of scanning on loopback).
//!
//! The certificate is a test CA's (trusted with `--add-ca`), with a CRL distribution point as
//! a public CA's would have, and the route sets the response security headers a site is
//! expected to send (HSTS and friends) the way an Istio user would: in the VirtualService.

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use support::pki::Ca;
use support::TestGateway;

fn config(cert: &std::path::Path, key: &std::path::Path) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  servers:
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    hosts: [\"*\"]
    tls:
      mode: SIMPLE
      serverCertificate: {cert}
      privateKey: {key}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: site
spec:
  hosts: [\"*\"]
  gateways: [gw]
  http:
  - headers:
      response:
        set:
          strict-transport-security: max-age=31536000; includeSubDomains
          x-content-type-options: nosniff
          x-frame-options: DENY
          content-security-policy: default-src 'self'
          referrer-policy: no-referrer
    directResponse: {{status: 200, body: {{string: ok}}}}
",
        cert = cert.display(),
        key = key.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testssl_finds_nothing_medium_or_worse() {
    support::ensure_debian_package("testssl", "--version", "testssl.sh");
    let ca = Ca::new("testssl CA");
    let leaf = ca.server_with_crl(
        "site",
        &["localhost", "127.0.0.1"],
        "http://crl.example.test/ca.crl",
    );
    let gw = TestGateway::start(&config(&leaf.cert_path, &leaf.key_path)).await;
    let addr = gw.port(8443);
    let out = ca.dir().join("testssl.json");
    let ca_pem = ca.pem_path.clone();
    let json = out.clone();
    let run = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg("300")
            .arg("testssl")
            .args([
                "--quiet",
                "--nodns",
                "none",
                "--warnings",
                "off",
                "--color",
                "0",
            ])
            .arg("--add-ca")
            .arg(&ca_pem)
            .arg("--jsonfile")
            .arg(&json)
            .arg(addr.to_string())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| {
        panic!(
            "testssl wrote no JSON ({e}); it printed:\n{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        )
    });
    let findings: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert!(
        findings.len() > 50,
        "testssl reported only {} findings: the scan did not run through:\n{}",
        findings.len(),
        String::from_utf8_lossy(&run.stdout)
    );
    let bad: Vec<String> = findings
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("MEDIUM" | "HIGH" | "CRITICAL")))
        .map(|f| format!("{} {}: {}", f["severity"], f["id"], f["finding"]))
        .collect();
    assert!(
        bad.is_empty(),
        "testssl rates these MEDIUM or worse:\n{}",
        bad.join("\n")
    );
    // The scan did reach the protocol checks (and found TLS 1.2 and 1.3 only).
    let offered = |id: &str| {
        findings
            .iter()
            .find(|f| f["id"] == id)
            .and_then(|f| f["finding"].as_str())
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        offered("TLS1_3").starts_with("offered"),
        "{}",
        offered("TLS1_3")
    );
    assert!(
        offered("TLS1_2").starts_with("offered"),
        "{}",
        offered("TLS1_2")
    );
    assert!(
        offered("TLS1_1").starts_with("not offered"),
        "{}",
        offered("TLS1_1")
    );
    assert!(
        offered("SSLv3").starts_with("not offered"),
        "{}",
        offered("SSLv3")
    );
}
