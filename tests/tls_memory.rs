#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Memory per TLS certificate: compiling a Gateway with 2,000 HTTPS servers, each with its
//! own certificate, must cost at most 20 KiB of resident memory per certificate (Istio users
//! report 12 GiB for 500 certificates).
//!
//! Resident memory is process-wide, so this file holds this one test only: any other test in
//! the same binary would run concurrently and disturb the measurement.

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};

use meshgate::config::{self, CompileOptions, RawSet, Snapshot};
use meshgate::tls::server::CertsDir;
use meshgate::upstream::Registry;

const CERTS: usize = 2_000;
const BUDGET_KIB_PER_CERT: f64 = 20.0;

/// Resident set size of this process, in bytes (`VmRSS` of `/proc/self/status`).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

/// A self-signed ECDSA P-256 certificate for `host` as `<certs>/<name>/tls.crt` + `tls.key`.
fn write_credential(certs: &Path, name: &str, host: &str) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = certs.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
}

/// One Gateway with `n` HTTPS servers on port 8443, server `i` for `host<i>.example.com`
/// with credential `<prefix><i>`, written to `file`.
fn write_gateway(file: &Path, name: &str, prefix: &str, n: usize) {
    let mut yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\nspec:\n  servers:\n"
    );
    for i in 0..n {
        yaml.push_str(&format!(
            "  - port: {{number: 8443, name: https-{i}, protocol: HTTPS}}\n    \
             hosts: [host{i}.example.com]\n    \
             tls: {{mode: SIMPLE, credentialName: {prefix}{i}}}\n"
        ));
    }
    std::fs::write(file, yaml).unwrap();
}

fn compile(raw: &RawSet, certs: &Path) -> Snapshot {
    let registry = Registry::default();
    let credentials = CertsDir(certs.to_owned());
    let opts = CompileOptions {
        workload_labels: None,
        selector: Default::default(),
        mesh_port: None,
        registry: &registry,
        credentials: &credentials,
    };
    config::compile(raw, &opts).unwrap_or_else(|f| panic!("{:#?}", f.errors))
}

#[test]
fn two_thousand_certificates_cost_at_most_20_kib_each() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let warm_yaml = tmp.path().join("warm.yaml");
    let big_yaml = tmp.path().join("big.yaml");

    // Generate the certificates and parse the YAML on another thread: glibc gives it its own
    // malloc arena, so the memory it frees is not silently reused (already resident) by the
    // compile measured below on this thread.
    let (warm_raw, big_raw) = {
        let (certs, warm_yaml, big_yaml) = (certs.clone(), warm_yaml.clone(), big_yaml.clone());
        std::thread::spawn(move || {
            for i in 0..2 {
                write_credential(
                    &certs,
                    &format!("warm-{i}"),
                    &format!("host{i}.example.com"),
                );
            }
            write_gateway(&warm_yaml, "warm", "warm-", 2);
            for i in 0..CERTS {
                write_credential(
                    &certs,
                    &format!("cert-{i}"),
                    &format!("host{i}.example.com"),
                );
            }
            write_gateway(&big_yaml, "big", "cert-", CERTS);
            let load = |p: &PathBuf| {
                config::source::file::load(std::slice::from_ref(p))
                    .unwrap_or_else(|e| panic!("{e:#?}"))
            };
            (load(&warm_yaml), load(&big_yaml))
        })
        .join()
        .unwrap()
    };
    assert_eq!(big_raw.counts()[0], 1);

    // Warm-up: one-time allocations (lazy statics, tracing callsites, ...) are not counted.
    let warm = compile(&warm_raw, &certs);
    assert_eq!(warm.tls[&8443].servers.len(), 2);
    drop(warm);

    let before = rss_bytes();
    let snap = compile(&big_raw, &certs);
    let after = rss_bytes();

    // The snapshot (and the input) stay alive while measuring.
    let tls = &snap.tls[&8443];
    assert_eq!(tls.servers.len(), CERTS);
    assert!(tls.server_for(Some("host1999.example.com")).is_some());

    let per_cert_kib = after.saturating_sub(before) as f64 / 1024.0 / CERTS as f64;
    eprintln!(
        "tls_memory: {CERTS} certificates: RSS {:.1} MiB -> {:.1} MiB, {per_cert_kib:.2} KiB per certificate (budget {BUDGET_KIB_PER_CERT} KiB)",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
    );
    assert!(
        per_cert_kib <= BUDGET_KIB_PER_CERT,
        "{per_cert_kib:.2} KiB per certificate exceeds the {BUDGET_KIB_PER_CERT} KiB budget"
    );
    drop(big_raw);
}
