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

/// `TrafficPolicy`: kept opaque until the egress/upstream-policy work compiles it; the
/// compiler reports each present field as not yet supported.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct TrafficPolicy {
    pub(crate) load_balancer: Option<serde_yaml_ng::Value>,
    pub(crate) connection_pool: Option<serde_yaml_ng::Value>,
    pub(crate) outlier_detection: Option<serde_yaml_ng::Value>,
    pub(crate) tls: Option<serde_yaml_ng::Value>,
    pub(crate) port_level_settings: Option<serde_yaml_ng::Value>,
    pub(crate) tunnel: Option<serde_yaml_ng::Value>,
    pub(crate) proxy_protocol: Option<serde_yaml_ng::Value>,
}
