//! What is recorded when a request ends: Istio metrics and the access log line. Runs from
//! the response body's completion hook, so durations and byte counts cover the whole body.
//!
//! Depends on: `metrics`, `body`, `upstream::PooledConn`, tracing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method};

use crate::body::Completion;
use crate::metrics::Metrics;
use crate::upstream::{Admitted, Cluster, InFlight, PooledConn};

/// Everything the end-of-request record needs.
pub(crate) struct RequestRecord {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) start: Instant,
    pub(crate) access_log: bool,
    pub(crate) client: SocketAddr,
    pub(crate) method: Method,
    pub(crate) authority: String,
    pub(crate) path: String,
    pub(crate) protocol: &'static str,
    pub(crate) request_id: HeaderValue,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) cluster: Option<Arc<Cluster>>,
    pub(crate) upstream: Option<String>,
    pub(crate) status: u16,
    pub(crate) grpc_status: Option<u32>,
    pub(crate) flags: &'static str,
    /// A `fault.delay` held the request (response flag `DI`, added to the others).
    pub(crate) fault_delayed: bool,
    pub(crate) request_bytes: RequestBytes,
    pub(crate) conn: Option<PooledConn>,
    /// Counts the request against its endpoint (LEAST_REQUEST) until the body ends.
    pub(crate) in_flight: Option<InFlight>,
    /// Holds the request's slot under the cluster's connectionPool limits until the body ends.
    pub(crate) admitted: Option<Admitted>,
}

/// Request body size: known up front, or counted while streaming.
pub(crate) enum RequestBytes {
    Known(u64),
    Counted(Arc<AtomicU64>),
}

impl RequestBytes {
    fn get(&self) -> u64 {
        match self {
            RequestBytes::Known(n) => *n,
            RequestBytes::Counted(c) => c.load(Ordering::Relaxed) & !crate::body::DOWNSTREAM_FAILED,
        }
    }
}

impl Completion for RequestRecord {
    fn finish(&mut self, bytes: u64, complete: bool) {
        self.in_flight = None;
        self.admitted = None;
        if let Some(conn) = self.conn.take() {
            // An unfinished body leaves the connection mid-message: let it close.
            if complete {
                conn.release();
            }
        }
        let elapsed_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let code = itoa(self.status);
        let grpc_status = self.grpc_status.map(|g| g.to_string()).unwrap_or_default();
        let (service, name, ns, subset, cluster) = match &self.cluster {
            Some(c) => (
                &*c.service,
                &*c.service_name,
                &*c.namespace,
                &*c.subset,
                &*c.name,
            ),
            None => ("unknown", "unknown", "unknown", "", "unknown"),
        };
        let base = if !complete && self.flags == "-" {
            "DC"
        } else {
            self.flags
        };
        let flags: std::borrow::Cow<'static, str> = match (self.fault_delayed, base) {
            (false, f) => f.into(),
            (true, "-") => "DI".into(),
            (true, f) => format!("DI,{f}").into(),
        };
        let flags = &*flags;
        let labels: [&str; 13] = [
            "source",
            "meshgate",
            "",
            service,
            name,
            ns,
            subset,
            cluster,
            self.protocol,
            &code,
            &grpc_status,
            flags,
            "none",
        ];
        let m = &self.metrics;
        m.requests.with_label_values(&labels).inc();
        m.duration.with_label_values(&labels).observe(elapsed_ms);
        let req_bytes = self.request_bytes.get();
        m.request_bytes
            .with_label_values(&labels)
            .observe(req_bytes as f64);
        m.response_bytes
            .with_label_values(&labels)
            .observe(bytes as f64);
        if self.access_log {
            tracing::info!(
                target: "meshgate::access",
                method = %self.method,
                authority = %self.authority,
                path = %self.path,
                protocol = self.protocol,
                response_code = self.status,
                response_flags = flags,
                bytes_received = req_bytes,
                bytes_sent = bytes,
                duration_ms = elapsed_ms as u64,
                upstream_host = self.upstream.as_deref().unwrap_or("-"),
                upstream_cluster = cluster,
                route_name = self.route.as_deref().unwrap_or("-"),
                request_id = self.request_id.to_str().unwrap_or("-"),
                downstream_remote_address = %self.client,
            );
        }
    }
}

fn itoa(n: u16) -> String {
    n.to_string()
}
