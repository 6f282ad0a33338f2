//! `VirtualService` (networking.istio.io): hosts, gateways and ordered HTTP rules.
//!
//! Depends on: serde.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::IntOrString;

/// `VirtualService.spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct VirtualService {
    pub(crate) hosts: Vec<String>,
    pub(crate) gateways: Vec<String>,
    pub(crate) http: Vec<HttpRoute>,
    pub(crate) tls: Vec<TlsRoute>,
    pub(crate) tcp: Vec<TcpRoute>,
    pub(crate) export_to: Vec<String>,
}

/// `VirtualService.spec.http[]` (HTTPRoute).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct HttpRoute {
    pub(crate) name: Option<String>,
    #[serde(rename = "match")]
    pub(crate) matches: Vec<HttpMatchRequest>,
    pub(crate) route: Vec<HttpRouteDestination>,
    pub(crate) redirect: Option<HttpRedirect>,
    pub(crate) direct_response: Option<HttpDirectResponse>,
    pub(crate) rewrite: Option<HttpRewrite>,
    pub(crate) timeout: Option<String>,
    pub(crate) retries: Option<HttpRetry>,
    pub(crate) headers: Option<Headers>,
    pub(crate) delegate: Option<serde_yaml_ng::Value>,
    pub(crate) fault: Option<serde_yaml_ng::Value>,
    pub(crate) mirror: Option<serde_yaml_ng::Value>,
    pub(crate) mirrors: Option<serde_yaml_ng::Value>,
    pub(crate) mirror_percentage: Option<serde_yaml_ng::Value>,
    pub(crate) mirror_percent: Option<serde_yaml_ng::Value>,
    pub(crate) cors_policy: Option<serde_yaml_ng::Value>,
}

/// `TLSRoute`: SNI-routed, not terminated.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct TlsRoute {
    #[serde(rename = "match")]
    pub(crate) matches: Vec<L4Match>,
    pub(crate) route: Vec<RouteDestination>,
}

/// `TCPRoute`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct TcpRoute {
    #[serde(rename = "match")]
    pub(crate) matches: Vec<L4Match>,
    pub(crate) route: Vec<RouteDestination>,
}

/// `TLSMatchAttributes` / `L4MatchAttributes` (`sniHosts` only for TLS).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct L4Match {
    pub(crate) sni_hosts: Vec<String>,
    pub(crate) port: Option<u32>,
    pub(crate) destination_subnets: Vec<String>,
    pub(crate) gateways: Vec<String>,
    pub(crate) source_labels: Option<serde_yaml_ng::Value>,
    pub(crate) source_namespace: Option<String>,
}

/// `RouteDestination` (L4).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct RouteDestination {
    pub(crate) destination: Option<Destination>,
    pub(crate) weight: Option<i64>,
}

/// `HTTPMatchRequest`: fields inside one block are AND'ed, blocks are OR'ed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct HttpMatchRequest {
    pub(crate) name: Option<String>,
    pub(crate) uri: Option<StringMatch>,
    pub(crate) scheme: Option<StringMatch>,
    pub(crate) method: Option<StringMatch>,
    pub(crate) authority: Option<StringMatch>,
    pub(crate) headers: BTreeMap<String, StringMatch>,
    pub(crate) port: Option<u32>,
    pub(crate) query_params: BTreeMap<String, StringMatch>,
    pub(crate) ignore_uri_case: bool,
    pub(crate) without_headers: BTreeMap<String, StringMatch>,
    pub(crate) gateways: Vec<String>,
    pub(crate) source_labels: Option<serde_yaml_ng::Value>,
    pub(crate) source_namespace: Option<String>,
    pub(crate) stat_prefix: Option<String>,
}

/// `StringMatch`: at most one of `exact`, `prefix`, `regex`; none means "present".
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct StringMatch {
    pub(crate) exact: Option<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) regex: Option<String>,
}

/// `HTTPRouteDestination`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct HttpRouteDestination {
    pub(crate) destination: Option<Destination>,
    pub(crate) weight: Option<i64>,
    pub(crate) headers: Option<Headers>,
}

/// `Destination`: a service host, an optional subset and port.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Destination {
    pub(crate) host: String,
    pub(crate) subset: Option<String>,
    pub(crate) port: Option<PortSelector>,
}

/// `PortSelector`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PortSelector {
    pub(crate) number: u32,
}

/// `HTTPRedirect`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct HttpRedirect {
    pub(crate) uri: Option<String>,
    pub(crate) authority: Option<String>,
    pub(crate) port: Option<u32>,
    pub(crate) derive_port: Option<String>,
    pub(crate) scheme: Option<String>,
    pub(crate) redirect_code: Option<u32>,
}

/// `HTTPDirectResponse`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct HttpDirectResponse {
    pub(crate) status: u32,
    pub(crate) body: Option<HttpBody>,
}

/// `HTTPBody`: `string` or base64 `bytes`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct HttpBody {
    pub(crate) string: Option<String>,
    pub(crate) bytes: Option<String>,
}

/// `HTTPRewrite`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct HttpRewrite {
    pub(crate) uri: Option<String>,
    pub(crate) authority: Option<String>,
    pub(crate) uri_regex_rewrite: Option<serde_yaml_ng::Value>,
}

/// `HTTPRetry`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct HttpRetry {
    pub(crate) attempts: Option<IntOrString>,
    pub(crate) per_try_timeout: Option<String>,
    pub(crate) retry_on: Option<String>,
    pub(crate) retry_remote_localities: Option<bool>,
}

/// `Headers`: request and response manipulation.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Headers {
    pub(crate) request: Option<HeaderOperations>,
    pub(crate) response: Option<HeaderOperations>,
}

/// `Headers.HeaderOperations`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct HeaderOperations {
    pub(crate) set: BTreeMap<String, String>,
    pub(crate) add: BTreeMap<String, String>,
    pub(crate) remove: Vec<String>,
}
