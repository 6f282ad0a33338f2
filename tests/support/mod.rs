//! Shared test harness: real sockets on 127.0.0.1, the gateway started in-process from YAML,
//! small hyper upstreams, and a client. Pulled into each test binary with `mod support;`.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub mod client;
pub mod gateway;
#[cfg(feature = "kubernetes")]
pub mod kmock;
pub mod nginx;
pub mod pki;
pub mod upstream;

use std::future::Future;
use std::time::Duration;

pub use client::{Client, Reply};
pub use gateway::TestGateway;
pub use upstream::{Upstream, UpstreamHandle};

/// Await `fut`, failing the test if it takes longer than 10 s (no test may hang).
pub async fn within<T>(fut: impl Future<Output = T>) -> T {
    within_for(Duration::from_secs(10), fut).await
}

/// Await `fut`, failing the test after `limit`.
pub async fn within_for<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}"),
    }
}

/// Make sure the Debian package `package` providing `command` is installed: when
/// `command probe_arg` cannot run, install it with apt-get (updating the lists once if the
/// first attempt fails). Fails the test with one clear line when that is impossible.
pub fn ensure_debian_package(command: &str, probe_arg: &str, package: &str) {
    use std::process::Command;
    if Command::new(command).arg(probe_arg).output().is_ok() {
        return;
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300", "-qq"])
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let installed =
        apt(&["install", "-y", package]) || (apt(&["update"]) && apt(&["install", "-y", package]));
    assert!(
        installed,
        "missing {command}: apt-get install {package} failed (needs root)"
    );
}
