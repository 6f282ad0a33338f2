//! Upstream clusters: a service host + port (+ subset) with its endpoints, how to pick one,
//! and the pooled connections to each.
//!
//! A `Cluster` is compiled config (immutable, in the snapshot) plus a round-robin cursor.
//! Connection pools belong to the `pool::Registry`, outside the snapshot.
//!
//! Depends on: `error`, `body`, hyper, tokio (through `pool`).

pub mod balance;
pub mod pool;
pub mod retry;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub use pool::{
    Checkout, EndpointPool, PoolSettings, PooledConn, Protocol, Registry, Sent, Target,
};

/// One backend address of a cluster.
#[derive(Debug)]
pub struct Endpoint {
    /// Relative weight (> 0).
    pub weight: u32,
    /// Labels (for subsets and dumps).
    pub labels: BTreeMap<String, String>,
    /// Connections to it.
    pub pool: Arc<EndpointPool>,
    /// Requests in flight to it (LEAST_REQUEST).
    pub active: AtomicUsize,
}

/// An Istio cluster: `outbound|port|subset|host`.
#[derive(Debug)]
pub struct Cluster {
    /// Istio-style cluster name, e.g. `outbound|9080|v1|reviews`.
    pub name: Arc<str>,
    /// The service host (`destination_service` in metrics).
    pub service: Arc<str>,
    /// Short service name (`destination_service_name`).
    pub service_name: Arc<str>,
    /// Namespace of the ServiceEntry that declares it.
    pub namespace: Arc<str>,
    /// Subset name, empty when none.
    pub subset: Arc<str>,
    /// Service port.
    pub port: u16,
    /// Upstream HTTP version.
    pub protocol: Protocol,
    /// Endpoints (may be empty: requests then get 503 `no healthy upstream`).
    pub endpoints: Vec<Endpoint>,
    /// Endpoint choice state.
    pub balancer: balance::Balancer,
}

impl Cluster {
    /// Build a cluster; the balancer is derived from the endpoint weights.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: Arc<str>,
        service: Arc<str>,
        namespace: Arc<str>,
        subset: Arc<str>,
        port: u16,
        protocol: Protocol,
        endpoints: Vec<Endpoint>,
        algorithm: balance::Algorithm,
    ) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        let service_name = service.split('.').next().unwrap_or_default().into();
        Self {
            name,
            service,
            service_name,
            namespace,
            subset,
            port,
            protocol,
            endpoints,
            balancer: balance::Balancer::new(algorithm, &weights),
        }
    }

    /// Pick an endpoint, avoiding `avoid` when another one exists (a retry should not go
    /// back to the endpoint that just failed).
    pub fn pick(&self, avoid: Option<usize>) -> Option<(usize, &Endpoint)> {
        let active = |i: usize| {
            self.endpoints
                .get(i)
                .map_or(0, |e| e.active.load(Ordering::Relaxed))
        };
        let i = self.balancer.pick(self.endpoints.len(), avoid, active)?;
        self.endpoints.get(i).map(|e| (i, e))
    }

    /// Count a request in flight to endpoint `index` until the returned guard drops.
    pub fn start(self: &Arc<Self>, index: usize) -> InFlight {
        if let Some(e) = self.endpoints.get(index) {
            e.active.fetch_add(1, Ordering::Relaxed);
        }
        InFlight {
            cluster: self.clone(),
            index,
        }
    }
}

/// A request in flight to one endpoint (see `Cluster::start`).
#[derive(Debug)]
pub struct InFlight {
    cluster: Arc<Cluster>,
    index: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(e) = self.cluster.endpoints.get(self.index) {
            e.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
