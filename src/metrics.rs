//! Prometheus metrics on a private registry: Istio's standard request metrics (so existing
//! Istio dashboards work) plus `meshgate_*` internals. Label values are bounded: they come
//! from the config (service, subset) or small enums (code, flags), never from raw requests.
//!
//! Depends on: prometheus.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Labels of the `istio_*` request metrics, in order.
pub const REQUEST_LABELS: [&str; 13] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_subset",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// The four `istio_*` request metrics for one label set.
#[derive(Debug, Clone)]
pub struct RequestStats {
    /// `istio_requests_total`.
    pub requests: IntCounter,
    /// `istio_request_duration_milliseconds`.
    pub duration: Histogram,
    /// `istio_request_bytes`.
    pub request_bytes: Histogram,
    /// `istio_response_bytes`.
    pub response_bytes: Histogram,
}

/// The most common label sets of one destination, resolved once: looking a label set up
/// hashes all 13 values and takes the metric family's lock, four times per request (4% of
/// the CPU per proxied request before this cache). Covers flags `-` with the usual statuses,
/// for HTTP (no gRPC status) and gRPC (status 0); anything else takes the slow path.
#[derive(Debug, Default)]
pub struct StatsCache {
    slots: [OnceLock<RequestStats>; 2 * CACHED_STATUSES.len()],
}

/// Response codes whose label sets are cached.
const CACHED_STATUSES: [u16; 8] = [200, 204, 304, 404, 201, 302, 301, 503];

impl StatsCache {
    /// The cache slot for this outcome, when it is a cached one.
    pub fn slot(
        &self,
        status: u16,
        grpc: bool,
        grpc_status: Option<u32>,
        flags: &str,
    ) -> Option<&OnceLock<RequestStats>> {
        if flags != "-" || grpc_status != if grpc { Some(0) } else { None } {
            return None;
        }
        let i = CACHED_STATUSES.iter().position(|s| *s == status)?;
        self.slots.get(2 * i + usize::from(grpc))
    }
}

/// Labels of the `istio_tcp_*` metrics, in order.
pub const TCP_LABELS: [&str; 8] = [
    "reporter",
    "source_workload",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "connection_security_policy",
    "response_flags",
];

/// Every metric meshgate exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Cached label sets of requests that reached no destination.
    pub unrouted_stats: std::sync::Arc<StatsCache>,
    registry: Registry,
    /// `istio_requests_total`.
    pub requests: IntCounterVec,
    /// `istio_request_duration_milliseconds`.
    pub duration: HistogramVec,
    /// `istio_request_bytes`.
    pub request_bytes: HistogramVec,
    /// `istio_response_bytes`.
    pub response_bytes: HistogramVec,
    /// `meshgate_downstream_connections_active{listener}`.
    pub active_connections: IntGaugeVec,
    /// `meshgate_downstream_connections_total{listener}`.
    pub connections: IntCounterVec,
    /// `meshgate_upstream_retries_total{cluster}`.
    pub retries: IntCounterVec,
    /// Upgraded (WebSocket) connections established, by cluster.
    pub upgrades: IntCounterVec,
    /// Upgraded connections open now, by cluster.
    pub upgrades_active: IntGaugeVec,
    /// Mirrored request copies by cluster and result (`sent`, `failed`, `dropped`).
    pub mirrors: IntCounterVec,
    /// `meshgate_upstream_connect_errors_total{cluster}`.
    pub connect_errors: IntCounterVec,
    /// `istio_tcp_connections_opened_total`.
    pub tcp_opened: IntCounterVec,
    /// `istio_tcp_connections_closed_total`.
    pub tcp_closed: IntCounterVec,
    /// `istio_tcp_sent_bytes_total` (towards the upstream).
    pub tcp_sent: IntCounterVec,
    /// `istio_tcp_received_bytes_total` (from the upstream).
    pub tcp_received: IntCounterVec,
    /// `meshgate_tls_rejected_total{listener, reason}`: connections dropped before or during
    /// the handshake.
    pub tls_rejected: IntCounterVec,
    /// `meshgate_config_generation`.
    pub config_generation: IntGauge,
    /// `meshgate_config_reloads_total{result}`.
    pub config_reloads: IntCounterVec,
}

/// Istio's duration buckets (milliseconds).
const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

impl Metrics {
    /// The request metrics for `labels` (in `REQUEST_LABELS` order).
    pub fn request_stats(&self, labels: &[&str; 13]) -> RequestStats {
        RequestStats {
            requests: self.requests.with_label_values(labels),
            duration: self.duration.with_label_values(labels),
            request_bytes: self.request_bytes.with_label_values(labels),
            response_bytes: self.response_bytes.with_label_values(labels),
        }
    }

    /// Create and register every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let bytes_buckets = prometheus::exponential_buckets(1.0, 10.0, 10)?;
        let requests = IntCounterVec::new(
            Opts::new("istio_requests_total", "Requests handled"),
            &REQUEST_LABELS,
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "istio_request_duration_milliseconds",
                "Request duration in milliseconds",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &REQUEST_LABELS,
        )?;
        let request_bytes = HistogramVec::new(
            HistogramOpts::new("istio_request_bytes", "Request body size in bytes")
                .buckets(bytes_buckets.clone()),
            &REQUEST_LABELS,
        )?;
        let response_bytes = HistogramVec::new(
            HistogramOpts::new("istio_response_bytes", "Response body size in bytes")
                .buckets(bytes_buckets),
            &REQUEST_LABELS,
        )?;
        let active_connections = IntGaugeVec::new(
            Opts::new(
                "meshgate_downstream_connections_active",
                "Open downstream connections",
            ),
            &["listener"],
        )?;
        let connections = IntCounterVec::new(
            Opts::new(
                "meshgate_downstream_connections_total",
                "Accepted downstream connections",
            ),
            &["listener"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new("meshgate_upstream_retries_total", "Upstream retries"),
            &["cluster"],
        )?;
        let upgrades = IntCounterVec::new(
            Opts::new(
                "meshgate_upgraded_connections_total",
                "Upgraded (WebSocket) connections established",
            ),
            &["cluster"],
        )?;
        let upgrades_active = IntGaugeVec::new(
            Opts::new(
                "meshgate_upgraded_connections_active",
                "Upgraded (WebSocket) connections open now",
            ),
            &["cluster"],
        )?;
        let mirrors = IntCounterVec::new(
            Opts::new(
                "meshgate_mirror_requests_total",
                "Mirrored request copies (dropped: over the in-flight bound or body too large)",
            ),
            &["cluster", "result"],
        )?;
        let connect_errors = IntCounterVec::new(
            Opts::new(
                "meshgate_upstream_connect_errors_total",
                "Upstream connect failures and timeouts",
            ),
            &["cluster"],
        )?;
        let tcp = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &TCP_LABELS);
        let tcp_opened = tcp(
            "istio_tcp_connections_opened_total",
            "TCP connections opened",
        )?;
        let tcp_closed = tcp(
            "istio_tcp_connections_closed_total",
            "TCP connections closed",
        )?;
        let tcp_sent = tcp("istio_tcp_sent_bytes_total", "Bytes sent to the upstream")?;
        let tcp_received = tcp(
            "istio_tcp_received_bytes_total",
            "Bytes received from the upstream",
        )?;
        let tls_rejected = IntCounterVec::new(
            Opts::new(
                "meshgate_tls_rejected_total",
                "TLS connections dropped before routing",
            ),
            &["listener", "reason"],
        )?;
        let config_generation = IntGauge::new(
            "meshgate_config_generation",
            "Generation of the active config",
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new("meshgate_config_reloads_total", "Config loads by result"),
            &["result"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(request_bytes.clone()))?;
        registry.register(Box::new(response_bytes.clone()))?;
        registry.register(Box::new(active_connections.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(mirrors.clone()))?;
        registry.register(Box::new(upgrades.clone()))?;
        registry.register(Box::new(upgrades_active.clone()))?;
        registry.register(Box::new(connect_errors.clone()))?;
        registry.register(Box::new(tcp_opened.clone()))?;
        registry.register(Box::new(tcp_closed.clone()))?;
        registry.register(Box::new(tcp_sent.clone()))?;
        registry.register(Box::new(tcp_received.clone()))?;
        registry.register(Box::new(tls_rejected.clone()))?;
        registry.register(Box::new(config_generation.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        Ok(Self {
            unrouted_stats: Default::default(),
            registry,
            requests,
            duration,
            request_bytes,
            response_bytes,
            active_connections,
            connections,
            retries,
            mirrors,
            upgrades,
            upgrades_active,
            connect_errors,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
            tls_rejected,
            config_generation,
            config_reloads,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_outcomes_are_cached_each_in_its_own_slot() {
        let c = StatsCache::default();
        let ptr = |s: Option<&OnceLock<RequestStats>>| s.map(|s| s as *const _);
        let ok_http = ptr(c.slot(200, false, None, "-"));
        let ok_grpc = ptr(c.slot(200, true, Some(0), "-"));
        let not_found = ptr(c.slot(404, false, None, "-"));
        assert!(ok_http.is_some() && ok_grpc.is_some() && not_found.is_some());
        assert_ne!(ok_http, ok_grpc);
        assert_ne!(ok_http, not_found);
        assert_eq!(ok_http, ptr(c.slot(200, false, None, "-")));
        // Flags, gRPC statuses and unusual codes are labelled per request.
        assert!(c.slot(503, false, None, "UF").is_none());
        assert!(c.slot(200, true, Some(14), "-").is_none());
        assert!(c.slot(200, false, Some(0), "-").is_none());
        assert!(c.slot(418, false, None, "-").is_none());
    }

    #[test]
    fn cached_handles_count_under_the_same_labels() {
        let m = Metrics::new().unwrap();
        let labels = [
            "source", "meshgate", "", "svc", "svc", "ns", "", "c", "http", "200", "", "-", "none",
        ];
        let a = m.request_stats(&labels);
        a.requests.inc();
        m.requests.with_label_values(&labels).inc();
        assert_eq!(a.requests.get(), 2);
    }
}
