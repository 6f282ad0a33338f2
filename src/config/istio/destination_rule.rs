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
