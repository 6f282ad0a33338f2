//! Replays the committed fuzz inputs (`fuzz/corpus/<target>/` and the reproducers in
//! `fuzz/regressions/<target>/`) through the same `meshgate::fuzzing` checks the cargo-fuzz
//! targets run, on stable Rust, so that a finding fixed once stays fixed. See
//! `fuzz/README.md` for running the fuzzers themselves.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::join_all;
use meshgate::fuzzing::{self, FuzzCredentials, Http1Gateway};

/// Every input of `target`, sorted by path.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

/// Run `check` on every input of `target` (at least `min` of them) and report all failures.
fn replay(target: &str, min: usize, check: impl Fn(&[u8]) -> Result<(), String>) {
    let files = inputs(target);
    assert!(
        files.len() >= min,
        "expected at least {min} inputs for {target}, found {}",
        files.len()
    );
    let failures: Vec<String> = files
        .iter()
        .filter_map(|(p, d)| check(d).err().map(|e| format!("{}: {e}", p.display())))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} {target} inputs fail:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn sni_corpus() {
    replay("sni", 5, fuzzing::sni);
}

#[test]
fn config_corpus() {
    let ck = rcgen::generate_simple_self_signed(vec!["example.com".into()]).unwrap();
    let creds = FuzzCredentials {
        cert: ck.cert.pem().into_bytes(),
        key: ck.signing_key.serialize_pem().into_bytes(),
    };
    replay("config", 10, |d| fuzzing::config(d, &creds));
}

#[test]
fn route_corpus() {
    replay("route", 10, fuzzing::route);
}

#[test]
fn framing_corpus() {
    replay("framing", 10, fuzzing::framing);
}

#[tokio::test]
async fn http1_corpus() {
    let gw = Http1Gateway::new().unwrap();
    let files = inputs("http1");
    assert!(files.len() >= 10, "found {} http1 inputs", files.len());
    // Each exchange waits a quiet period before closing: run them all at once.
    let results = join_all(
        files
            .iter()
            .map(|(_, data)| fuzzing::http1(&gw, data, Duration::from_secs(5))),
    )
    .await;
    let failures: Vec<String> = files
        .iter()
        .zip(results)
        .filter_map(|((p, _), r)| r.err().map(|e| format!("{}: {e}", p.display())))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} http1 inputs fail:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
