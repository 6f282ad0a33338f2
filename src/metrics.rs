//! Prometheus metrics on a private registry: Istio's standard request metrics (so existing
//! Istio dashboards work) plus `meshgate_*` internals. Label values are bounded: they come
//! from the config (service, subset) or small enums (code, flags), never from raw requests.
//!
//! Depends on: prometheus.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
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
