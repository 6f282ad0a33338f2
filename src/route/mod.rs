//! Routing: the compiled per-port tables and `RouteTable::lookup`, which picks the virtual
//! host by Host (exact, longest wildcard, `*`) and then the first rule whose match blocks
//! accept the request (Istio's order: first match wins). Pure: no IO, no allocation.
//!
//! Depends on: std, http, regex (through `matcher`), foldhash.

mod filter;
mod host;
mod matcher;
mod policy;

use std::sync::Arc;
use std::time::Duration;

/// A map whose keys come from the config (host names, ports) and that requests probe:
/// foldhash instead of SipHash, several times cheaper per probe. SipHash's keyed hashing
/// guards maps that clients can insert into; clients only look these up, so a client's
/// input cannot lengthen a probe sequence.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub use filter::{
    grpc_code, roll, shadow_authority, AbortStatus, Cors, CorsDecision, Fault, FaultAbort,
    FaultDelay, Mirror,
};
pub use host::{intersect, pattern_matches, HostTable};
pub use matcher::{HeaderMatch, MatchBlock, RequestView, StrMatch};
pub use policy::{
    re2_template, DerivePort, DirectResponse, HeaderEdits, HeaderOps, Redirect, RetryOn,
    RetryPolicy, Rewrite,
};

/// One compiled `http[]` rule of a VirtualService.
#[derive(Debug, Clone)]
pub struct Route {
    /// `namespace/vs-name` of the VirtualService this rule came from.
    pub virtual_service: Arc<str>,
    /// Index of the rule in that VirtualService's `http` list.
    pub index: usize,
    /// The rule's `name`, or `<vs>.<index>` when it has none; a bounded metric label.
    pub name: Arc<str>,
    /// OR'ed match blocks; empty matches everything.
    pub matches: Vec<MatchBlock>,
    /// What to do with a matching request.
    pub action: Action,
    /// URI / authority rewrite before forwarding.
    pub rewrite: Option<Rewrite>,
    /// Rule-level header operations.
    pub headers: HeaderOps,
    /// Overall route timeout (`None`: off, Istio's default).
    pub timeout: Option<Duration>,
    /// Retry policy (Istio's default when `retries` is absent).
    pub retry: RetryPolicy,
    /// `fault` injection.
    pub fault: Option<Arc<Fault>>,
    /// `corsPolicy`.
    pub cors: Option<Arc<Cors>>,
    /// `mirror` / `mirrors`.
    pub mirrors: Arc<[Mirror]>,
}

impl Route {
    /// The index of the first block matching `req` (0 for a rule without blocks).
    pub fn matching_block(&self, req: &RequestView<'_>) -> Option<usize> {
        if self.matches.is_empty() {
            return Some(0);
        }
        self.matches.iter().position(|m| m.matches(req))
    }
}

/// A rule's action.
#[derive(Debug, Clone)]
pub enum Action {
    /// Forward to one of weighted destinations.
    Forward(Forward),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer with a fixed response.
    Respond(DirectResponse),
}

/// Weighted destinations of a forwarding rule.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Destinations with a weight above zero, in order.
    pub destinations: Vec<WeightedDestination>,
    /// Sum of the weights (> 0).
    pub total_weight: u32,
}

impl Forward {
    /// The destination for a point `r` in `0..total_weight`.
    pub fn pick(&self, r: u32) -> Option<&WeightedDestination> {
        let mut acc = 0;
        for d in &self.destinations {
            acc += d.weight;
            if r < acc {
                return Some(d);
            }
        }
        self.destinations.last()
    }
}

/// One `route[]` entry.
#[derive(Debug, Clone)]
pub struct WeightedDestination {
    /// Relative weight (> 0).
    pub weight: u32,
    /// Index of the cluster in the snapshot's cluster list.
    pub cluster: usize,
    /// Destination-level header operations.
    pub headers: HeaderOps,
}

/// The routes for one host pattern on one port (merged from every VirtualService for it).
#[derive(Debug, Clone, Default)]
pub struct VirtualHost {
    /// The host pattern, e.g. `*.example.com`.
    pub name: Arc<str>,
    /// Rules in order.
    pub routes: Vec<Route>,
    /// Served by an HTTP server with `tls.httpsRedirect`: every request gets a 301 to https.
    pub https_redirect: bool,
}

impl VirtualHost {
    /// The first route matching `req`, with the index of the block that matched.
    pub fn find(&self, req: &RequestView<'_>) -> Option<(&Route, usize)> {
        self.routes
            .iter()
            .find_map(|r| r.matching_block(req).map(|b| (r, b)))
    }
}

/// Why no route was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// No virtual host covers the request's host.
    Host,
    /// A virtual host matched but none of its rules did.
    Rule,
}

/// All virtual hosts of one listener port.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Virtual hosts by host pattern.
    pub hosts: HostTable<VirtualHost>,
}

impl RouteTable {
    /// The first route matching `req`, with the index of the block that matched.
    pub fn lookup(&self, req: &RequestView<'_>) -> Result<(&Route, usize), Miss> {
        let vhost = self
            .hosts
            .lookup(host_of(req.authority))
            .ok_or(Miss::Host)?;
        vhost.find(req).ok_or(Miss::Rule)
    }
}

/// The host part of an authority: port and IPv6 brackets removed, trailing dot dropped.
pub fn host_of(authority: &str) -> &str {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_ports() {
        assert_eq!(host_of("a.com:8080"), "a.com");
        assert_eq!(host_of("a.com"), "a.com");
        assert_eq!(host_of("a.com."), "a.com");
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of(""), "");
    }

    #[test]
    fn weighted_pick() {
        let d = |w, c| WeightedDestination {
            weight: w,
            cluster: c,
            headers: HeaderOps::default(),
        };
        let f = Forward {
            destinations: vec![d(90, 0), d(10, 1)],
            total_weight: 100,
        };
        assert_eq!(f.pick(0).unwrap().cluster, 0);
        assert_eq!(f.pick(89).unwrap().cluster, 0);
        assert_eq!(f.pick(90).unwrap().cluster, 1);
        assert_eq!(f.pick(99).unwrap().cluster, 1);
    }
}
