//! Upstream clusters: a service host + port (+ subset) with its endpoints, how to pick one,
//! and the pooled connections to each.
//!
//! A `Cluster` is compiled config (immutable, in the snapshot) plus a round-robin cursor.
//! Connection pools belong to the `pool::Registry`, outside the snapshot.
//!
//! Depends on: `error`, `body`, hyper, tokio (through `pool`).

pub mod balance;
pub mod dns;
pub mod h1;
pub mod hash;
pub mod outlier;
pub mod pool;
pub mod proxy_protocol;
pub mod retry;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

pub use pool::{
    Checkout, ConnLimits, EndpointPool, Keepalive, PoolSettings, PooledConn, Protocol, Registry,
    Sent, Target,
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
    /// Outlier-detection state.
    pub health: outlier::Health,
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
    /// DestinationRule `connectionPool` limits.
    pub limits: Limits,
    /// `loadBalancer.consistentHash` key, when the algorithm hashes.
    pub hash_key: Option<hash::HashKey>,
    /// `trafficPolicy.proxyProtocol`: the header that starts each TCP-proxied connection.
    pub proxy_protocol: Option<proxy_protocol::ProxyVersion>,
    /// Request metric handles for this destination's common outcomes.
    pub stats: crate::metrics::StatsCache,
    gate: Gate,
}

/// Circuit-breaking limits of a cluster (DestinationRule `connectionPool`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Settings applied to each connection checkout.
    pub conn: ConnLimits,
    /// `tcp.maxConnections`: HTTP/1.1 requests in flight (one per connection).
    pub max_connections: Option<usize>,
    /// `http.http1MaxPendingRequests`: requests waiting for one of those connections.
    pub max_pending: Option<usize>,
    /// `http.http2MaxRequests`: requests in flight, any protocol.
    pub max_requests: Option<usize>,
    /// `http.maxRetries`: retries in flight across the cluster.
    pub max_retries: Option<usize>,
    /// `outlierDetection`, when set.
    pub outlier: Option<outlier::OutlierPolicy>,
}

#[derive(Debug, Default)]
struct Gate {
    active: AtomicUsize,
    pending: AtomicUsize,
    retries: AtomicUsize,
    freed: Notify,
}

/// The cluster's circuit breaker is open: answer 503 `UO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// A request admitted by the cluster's limits; frees its slot on drop.
#[derive(Debug)]
pub struct Admitted {
    cluster: Arc<Cluster>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.cluster.gate.active.fetch_sub(1, Ordering::AcqRel);
        self.cluster.gate.freed.notify_one();
    }
}

/// A retry counted against `maxRetries`; frees its slot on drop.
#[derive(Debug)]
pub struct RetrySlot {
    cluster: Arc<Cluster>,
}

impl Drop for RetrySlot {
    fn drop(&mut self) {
        self.cluster.gate.retries.fetch_sub(1, Ordering::AcqRel);
    }
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
        limits: Limits,
    ) -> Self {
        let keyed: Vec<(u32, String)> = endpoints
            .iter()
            .map(|e| (e.weight, e.pool.target().to_string()))
            .collect();
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
            balancer: balance::Balancer::new(algorithm, &keyed),
            limits,
            hash_key: None,
            proxy_protocol: None,
            stats: Default::default(),
            gate: Gate::default(),
        }
    }

    /// Hash requests on `key` (consistent-hash algorithms).
    pub fn with_hash_key(mut self, key: Option<hash::HashKey>) -> Self {
        self.hash_key = key;
        self
    }

    /// The same cluster, its TCP-proxied connections starting with a PROXY header.
    pub fn with_proxy_protocol(mut self, v: Option<proxy_protocol::ProxyVersion>) -> Self {
        self.proxy_protocol = v;
        self
    }

    /// Pick an endpoint, avoiding `avoid` when another one exists (a retry should not go
    /// back to the endpoint that just failed); `hash` is the request's consistent-hash key.
    pub fn pick(&self, avoid: Option<usize>, hash: Option<u64>) -> Option<(usize, &Endpoint)> {
        let n = self.endpoints.len();
        if let (Some(h), Some(table)) = (hash, self.balancer.table()) {
            let panic = self.limits.outlier.is_some_and(|o| {
                let healthy = (0..n).filter(|j| !self.is_ejected(*j)).count();
                healthy == 0 || healthy * 100 < n * o.min_health_percent as usize
            });
            let check_health = self.limits.outlier.is_some() && !panic;
            let i = table
                .lookup(h, |i| {
                    (n > 1 && avoid == Some(i)) || (check_health && self.is_ejected(i))
                })
                .or_else(|| table.lookup(h, |_| false))?;
            return self.endpoints.get(i).map(|e| (i, e));
        }
        let active = |i: usize| {
            self.endpoints
                .get(i)
                .map_or(0, |e| e.active.load(Ordering::Relaxed))
        };
        let i = self.balancer.pick(n, avoid, active)?;
        if self.limits.outlier.is_none() || !self.is_ejected(i) {
            return self.endpoints.get(i).map(|e| (i, e));
        }
        // The pick is ejected: use another endpoint unless too few are healthy (panic mode).
        let healthy = (0..n).filter(|j| !self.is_ejected(*j)).count();
        let min = self
            .limits
            .outlier
            .map_or(0, |o| o.min_health_percent as usize);
        if healthy == 0 || healthy * 100 < n * min {
            return self.endpoints.get(i).map(|e| (i, e));
        }
        let j = (0..4)
            .filter_map(|_| self.balancer.pick(n, avoid, active))
            .find(|j| !self.is_ejected(*j))
            .or_else(|| (0..n).map(|k| (i + k) % n).find(|j| !self.is_ejected(*j)))?;
        self.endpoints.get(j).map(|e| (j, e))
    }

    fn is_ejected(&self, i: usize) -> bool {
        self.endpoints.get(i).is_some_and(|e| e.health.is_ejected())
    }

    /// Feed outlier detection with the outcome of a request to endpoint `i`.
    pub fn report(&self, i: usize, outcome: outlier::Outcome) {
        let Some(policy) = &self.limits.outlier else {
            return;
        };
        let Some(e) = self.endpoints.get(i) else {
            return;
        };
        let n = self.endpoints.len();
        let can_eject = || {
            let ejected = (0..n).filter(|j| self.is_ejected(*j)).count();
            let cap = (n * policy.max_ejection_percent as usize / 100).max(1);
            ejected < cap
        };
        if e.health.record(policy, outcome, can_eject) {
            tracing::info!(cluster = %self.name, endpoint = %e.pool.target(), "outlier detection: endpoint ejected");
        }
    }

    /// Admit a request under the cluster's limits: at once, after waiting as one of at most
    /// `max_pending` pending HTTP/1.1 requests, or `Overflow`.
    pub async fn admit(self: &Arc<Self>) -> Result<Admitted, Overflow> {
        let l = &self.limits;
        let per_conn = (self.protocol == Protocol::Http1)
            .then_some(l.max_connections)
            .flatten();
        let g = &self.gate;
        let mut waiting = false;
        loop {
            let freed = g.freed.notified();
            let active = g.active.load(Ordering::Acquire);
            if l.max_requests.is_some_and(|m| active >= m) {
                if waiting {
                    g.pending.fetch_sub(1, Ordering::AcqRel);
                }
                return Err(Overflow);
            }
            if per_conn.is_none_or(|c| active < c) {
                if g.active
                    .compare_exchange(active, active + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    continue;
                }
                if waiting {
                    g.pending.fetch_sub(1, Ordering::AcqRel);
                }
                return Ok(Admitted {
                    cluster: self.clone(),
                });
            }
            if !waiting {
                let pending = g.pending.fetch_add(1, Ordering::AcqRel);
                if l.max_pending.is_some_and(|m| pending >= m) {
                    g.pending.fetch_sub(1, Ordering::AcqRel);
                    return Err(Overflow);
                }
                waiting = true;
            }
            freed.await;
        }
    }

    /// A slot for one more retry, unless `maxRetries` retries are already in flight.
    pub fn retry_slot(self: &Arc<Self>) -> Option<RetrySlot> {
        let n = self.gate.retries.fetch_add(1, Ordering::AcqRel);
        if self.limits.max_retries.is_some_and(|m| n >= m) {
            self.gate.retries.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(RetrySlot {
            cluster: self.clone(),
        })
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
