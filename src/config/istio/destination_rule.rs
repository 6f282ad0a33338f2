//! `DestinationRule` (networking.istio.io): subsets and traffic policy per service host.
//!
//! Depends on: serde.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `DestinationRule.spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct DestinationRule {
    pub(crate) host: String,
    pub(crate) traffic_policy: Option<TrafficPolicy>,
    pub(crate) subsets: Vec<Subset>,
    pub(crate) export_to: Vec<String>,
}

/// `DestinationRule.spec.subsets[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Subset {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) traffic_policy: Option<TrafficPolicy>,
}

/// `TrafficPolicy`. Fields meshgate does not implement yet stay opaque so the compiler can
/// name them in a warning.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct TrafficPolicy {
    pub(crate) load_balancer: Option<serde_yaml_ng::Value>,
    pub(crate) connection_pool: Option<serde_yaml_ng::Value>,
    pub(crate) outlier_detection: Option<serde_yaml_ng::Value>,
    pub(crate) tls: Option<ClientTlsSettings>,
    pub(crate) port_level_settings: Vec<PortTrafficPolicy>,
    pub(crate) tunnel: Option<serde_yaml_ng::Value>,
    pub(crate) proxy_protocol: Option<serde_yaml_ng::Value>,
}

/// `TrafficPolicy.portLevelSettings[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PortTrafficPolicy {
    pub(crate) port: Option<super::virtual_service::PortSelector>,
    pub(crate) load_balancer: Option<serde_yaml_ng::Value>,
    pub(crate) connection_pool: Option<serde_yaml_ng::Value>,
    pub(crate) outlier_detection: Option<serde_yaml_ng::Value>,
    pub(crate) tls: Option<ClientTlsSettings>,
}

/// `ClientTLSSettings`: TLS origination to the destination.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ClientTlsSettings {
    pub(crate) mode: Option<String>,
    pub(crate) client_certificate: Option<String>,
    pub(crate) private_key: Option<String>,
    pub(crate) ca_certificates: Option<String>,
    pub(crate) credential_name: Option<String>,
    pub(crate) subject_alt_names: Vec<String>,
    pub(crate) sni: Option<String>,
    pub(crate) insecure_skip_verify: Option<bool>,
}

/// `LoadBalancerSettings`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct LoadBalancerSettings {
    pub(crate) simple: Option<String>,
    pub(crate) consistent_hash: Option<ConsistentHashLb>,
    pub(crate) locality_lb_setting: Option<serde_yaml_ng::Value>,
    pub(crate) warmup_duration_secs: Option<serde_yaml_ng::Value>,
    pub(crate) warmup: Option<serde_yaml_ng::Value>,
}

/// `LoadBalancerSettings.ConsistentHashLB`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct ConsistentHashLb {
    pub(crate) http_header_name: Option<String>,
    pub(crate) http_cookie: Option<HttpCookie>,
    pub(crate) use_source_ip: Option<bool>,
    pub(crate) http_query_parameter_name: Option<String>,
    pub(crate) ring_hash: Option<RingHash>,
    pub(crate) maglev: Option<MagLev>,
    pub(crate) minimum_ring_size: Option<u64>,
}

/// `ConsistentHashLB.HTTPCookie`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct HttpCookie {
    pub(crate) name: String,
    pub(crate) path: Option<String>,
    pub(crate) ttl: Option<String>,
    pub(crate) attributes: Vec<serde_yaml_ng::Value>,
}

/// `ConsistentHashLB.RingHash`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct RingHash {
    pub(crate) minimum_ring_size: Option<u64>,
}

/// `ConsistentHashLB.MagLev`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct MagLev {
    pub(crate) table_size: Option<u64>,
}

/// `ConnectionPoolSettings`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ConnectionPoolSettings {
    pub(crate) tcp: Option<TcpSettings>,
    pub(crate) http: Option<HttpSettings>,
}

/// `ConnectionPoolSettings.TCPSettings`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct TcpSettings {
    pub(crate) max_connections: Option<i64>,
    pub(crate) connect_timeout: Option<String>,
    pub(crate) tcp_keepalive: Option<serde_yaml_ng::Value>,
    pub(crate) max_connection_duration: Option<String>,
    pub(crate) idle_timeout: Option<String>,
}

/// `ConnectionPoolSettings.TCPSettings.TcpKeepalive`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct TcpKeepalive {
    pub(crate) probes: Option<u32>,
    pub(crate) time: Option<String>,
    pub(crate) interval: Option<String>,
}

/// `ConnectionPoolSettings.HTTPSettings`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct HttpSettings {
    pub(crate) http1_max_pending_requests: Option<i64>,
    pub(crate) http2_max_requests: Option<i64>,
    pub(crate) max_requests_per_connection: Option<i64>,
    pub(crate) max_retries: Option<i64>,
    pub(crate) idle_timeout: Option<String>,
    pub(crate) h2_upgrade_policy: Option<String>,
    pub(crate) use_client_protocol: Option<bool>,
    pub(crate) max_concurrent_streams: Option<i64>,
}

/// `OutlierDetection`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct OutlierDetection {
    #[serde(rename = "consecutive5xxErrors")]
    pub(crate) consecutive_5xx_errors: Option<u32>,
    pub(crate) consecutive_gateway_errors: Option<u32>,
    pub(crate) consecutive_errors: Option<u32>,
    pub(crate) interval: Option<String>,
    pub(crate) base_ejection_time: Option<String>,
    pub(crate) max_ejection_percent: Option<u32>,
    pub(crate) min_health_percent: Option<u32>,
}
