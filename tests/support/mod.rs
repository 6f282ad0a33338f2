//! Shared test harness: real sockets on 127.0.0.1, the gateway started in-process from YAML,
//! small hyper upstreams, and a client. Pulled into each test binary with `mod support;`.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub mod client;
pub mod gateway;
#[cfg(feature = "kubernetes")]
pub mod kmock;
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
