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
    pub(crate) delegate: Option<Delegate>,
    pub(crate) fault: Option<HttpFaultInjection>,
    pub(crate) mirror: Option<Destination>,
    pub(crate) mirrors: Vec<HttpMirrorPolicy>,
    pub(crate) mirror_percentage: Option<Percent>,
    pub(crate) mirror_percent: Option<u32>,
    pub(crate) cors_policy: Option<CorsPolicy>,
}

/// `Delegate`: another VirtualService whose rules apply inside this rule's match.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct Delegate {
    pub(crate) name: String,
    pub(crate) namespace: Option<String>,
}

/// `Percent`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct Percent {
    pub(crate) value: f64,
}

/// `HTTPFaultInjection`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct HttpFaultInjection {
    pub(crate) delay: Option<FaultDelay>,
    pub(crate) abort: Option<FaultAbort>,
}

/// `HTTPFaultInjection.Delay`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct FaultDelay {
    pub(crate) fixed_delay: Option<String>,
    pub(crate) exponential_delay: Option<String>,
    pub(crate) percentage: Option<Percent>,
    pub(crate) percent: Option<u32>,
}

/// `HTTPFaultInjection.Abort`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct FaultAbort {
    pub(crate) http_status: Option<u32>,
    pub(crate) grpc_status: Option<String>,
    pub(crate) http2_error: Option<String>,
    pub(crate) percentage: Option<Percent>,
}

/// `HTTPMirrorPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct HttpMirrorPolicy {
    pub(crate) destination: Option<Destination>,
    pub(crate) percentage: Option<Percent>,
}

/// `CorsPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct CorsPolicy {
    pub(crate) allow_origins: Vec<StringMatch>,
    pub(crate) allow_origin: Vec<String>,
    pub(crate) allow_methods: Vec<String>,
    pub(crate) allow_headers: Vec<String>,
    pub(crate) expose_headers: Vec<String>,
    pub(crate) max_age: Option<String>,
    pub(crate) allow_credentials: Option<bool>,
    pub(crate) unmatched_preflights: Option<String>,
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
    pub(crate) uri_regex_rewrite: Option<RegexRewrite>,
}

/// `RegexRewrite`: an RE2 `match` and a `rewrite` that may use `\1`-style captures.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct RegexRewrite {
    #[serde(rename = "match")]
    pub(crate) pattern: String,
    pub(crate) rewrite: String,
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
