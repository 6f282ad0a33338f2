//! The explanation as data: what `explain` found at each step of the request's path, ready
//! for JSON (serde, camelCase) and for the text form in `display`.
//!
//! Depends on: serde.

use std::collections::BTreeMap;

use serde::Serialize;

/// Everything `explain` found about one request, step by step.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// The request as the gateway would see it.
    pub request: RequestSummary,
    /// The listener the request arrives on, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<ListenerInfo>,
    /// On a TLS port: the Gateway server the SNI picked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsInfo>,
    /// The virtual host the Host header selected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_host: Option<VirtualHostInfo>,
    /// Host patterns served where the request arrived (listed when none matched).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exposed_hosts: Vec<String>,
    /// The rules tried, in order, up to and including the one that matched.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleTrace>,
    /// Rules of the virtual host that no request can ever reach.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadowed: Vec<Shadowed>,
    /// The rule that selected the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteRef>,
    /// What the gateway does with the request.
    pub outcome: Outcome,
    /// Remarks that do not change the outcome.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Explanation {
    /// Whether the request is served by the configuration (forwarded, redirected, answered
    /// by a rule) rather than rejected.
    pub fn is_routed(&self) -> bool {
        !matches!(self.outcome, Outcome::Rejected { .. })
    }
}

/// The request, as described.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestSummary {
    /// Method.
    pub method: String,
    /// The URL as given.
    pub url: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The Host header.
    pub authority: String,
    /// Path without query.
    pub path: String,
    /// Query without `?`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The listener port.
    pub port: u16,
    /// SNI (https only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Headers other than Host, credentials hidden.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

/// A listener port.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerInfo {
    /// Port.
    pub port: u16,
    /// `gateway` or `mesh`.
    pub kind: &'static str,
    /// `http`, `tls` or `tcp`.
    pub protocol: &'static str,
    /// `Gateway ns/name servers[i]` of every server on the port.
    pub servers: Vec<String>,
}

/// The TLS server chosen by SNI.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsInfo {
    /// The ClientHello's SNI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// `Gateway ns/name servers[i]`.
    pub server: String,
    /// The host pattern the SNI matched (`*` also takes a missing SNI).
    pub matched: String,
    /// The server's hosts.
    pub hosts: Vec<String>,
    /// `terminate`, `terminate-tcp` or `passthrough`.
    pub mode: &'static str,
}

/// The virtual host chosen by Host.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualHostInfo {
    /// The request's host (port removed).
    pub host: String,
    /// The pattern that matched it.
    pub pattern: String,
    /// Number of rules.
    pub rules: usize,
    /// Whether the server has `tls.httpsRedirect`.
    pub https_redirect: bool,
}

/// A rule of a VirtualService, as placed in a virtual host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleRef {
    /// Position in the virtual host's merged rule list.
    pub position: usize,
    /// `namespace/name` of the VirtualService.
    pub virtual_service: String,
    /// Index in its `http` list.
    pub index: usize,
    /// The rule's name (or `<vs>[<index>]`).
    pub name: String,
}

/// One rule tried against the request.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleTrace {
    /// The rule.
    #[serde(flatten)]
    pub rule: RuleRef,
    /// Whether it selected the request.
    pub matched: bool,
    /// The match block that accepted the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<usize>,
    /// For a rule that did not match: per match block, the first condition that failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// A rule no request can reach.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Shadowed {
    /// The unreachable rule.
    #[serde(flatten)]
    pub rule: RuleRef,
    /// The earlier rules that take every request it could match.
    pub by: Vec<RuleRef>,
    /// Whether one of them matches every request (a catch-all).
    pub catch_all: bool,
}

/// The rule that selected the request.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRef {
    /// The rule.
    #[serde(flatten)]
    pub rule: RuleRef,
    /// Index of the match block that accepted the request (0 for a rule without blocks).
    pub block: usize,
    /// That block's `name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_name: Option<String>,
}

/// What the gateway does with the request.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Outcome {
    /// Answered by the rule's `directResponse`.
    DirectResponse {
        /// Status.
        status: u16,
        /// Body (UTF-8 lossy, shortened).
        body: String,
    },
    /// Forwarded to a weighted destination.
    Forward(Box<ForwardInfo>),
    /// The server has `tls.httpsRedirect`: 301 to https.
    HttpsRedirect {
        /// Status (301).
        status: u16,
        /// The `Location` sent.
        location: String,
    },
    /// Bytes forwarded untouched (TLS passthrough, TCP, or TLS terminated then TCP).
    L4 {
        /// `tls-passthrough`, `tls-terminate-tcp` or `tcp`.
        mode: &'static str,
        /// The route's name.
        route: String,
        /// Weighted destinations.
        destinations: Vec<DestinationInfo>,
    },
    /// Answered by the rule's `redirect`.
    Redirect {
        /// Status.
        status: u16,
        /// The `Location` sent.
        location: String,
    },
    /// Refused by the gateway.
    Rejected {
        /// HTTP status; `None` when the connection fails before HTTP (TLS, no listener).
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// Why.
        reason: String,
    },
}

/// A forwarding rule's destinations and policies.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardInfo {
    /// Weighted destinations (one is picked per request by weight).
    pub destinations: Vec<DestinationInfo>,
    /// The route's policies.
    pub policy: PolicyInfo,
}

/// One weighted destination and its cluster.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationInfo {
    /// Relative weight.
    pub weight: u32,
    /// Share of requests, in percent.
    pub percent: f64,
    /// The cluster.
    pub cluster: ClusterInfo,
    /// Destination-level header operations.
    #[serde(skip_serializing_if = "HeaderOpsInfo::is_empty")]
    pub headers: HeaderOpsInfo,
}

/// A cluster: service, subset, endpoints and DestinationRule traffic policy.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    /// `outbound|port|subset|host`.
    pub name: String,
    /// Service host.
    pub service: String,
    /// Subset (empty for none).
    pub subset: String,
    /// Service port.
    pub port: u16,
    /// Upstream protocol: `http1` or `http2`.
    pub protocol: &'static str,
    /// Load-balancing algorithm, Istio's names.
    pub load_balancer: String,
    /// `consistentHash` key, when hashing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<String>,
    /// `connectionPool` settings that are set.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub connection_pool: BTreeMap<&'static str, String>,
    /// `outlierDetection`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<String>,
    /// Endpoints.
    pub endpoints: Vec<EndpointInfo>,
}

/// One endpoint.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointInfo {
    /// `ip:port` or `name:port`.
    pub address: String,
    /// Relative weight.
    pub weight: u32,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Route-level policies of a forwarding rule.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyInfo {
    /// Route timeout (`None`: off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Retry policy.
    pub retries: RetryInfo,
    /// Rewrite, with the path that would be sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<RewriteInfo>,
    /// Rule-level header operations.
    #[serde(skip_serializing_if = "HeaderOpsInfo::is_empty")]
    pub headers: HeaderOpsInfo,
    /// Fault injection.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fault: Vec<String>,
    /// Mirrors: cluster and share.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
    /// CORS policy and what it does with this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<String>,
}

/// A retry policy.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryInfo {
    /// Retries after the first try.
    pub attempts: u32,
    /// Per-try timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    /// `retryOn` conditions.
    pub retry_on: Vec<&'static str>,
    /// Codes for `retriable-status-codes`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub status_codes: Vec<u16>,
    /// Whether the route sets `retries` (else Istio's default applies).
    pub explicit: bool,
}

/// A rewrite.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RewriteInfo {
    /// The path sent upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The authority sent upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// Header operations, as `name: value` strings.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderOpsInfo {
    /// On the request: `set name: value`, `add name: value`, `remove name`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request: Vec<String>,
    /// On the response, same form.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub response: Vec<String>,
}

impl HeaderOpsInfo {
    /// Whether there are no operations.
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }
}
