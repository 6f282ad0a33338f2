//! VirtualService `http[]` rules into compiled `Route`s.
//!
//! Depends on: `config::{raw, istio, error, duration}`, `route`, `compile::services`.

use std::str::FromStr;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

use super::services::Services;
use crate::config::duration;
use crate::config::error::ConfigError;
use crate::config::istio::{
    HeaderOperations, Headers, HttpMatchRequest, HttpRetry, HttpRoute, IntOrString, StringMatch,
    VirtualService,
};
use crate::config::raw::Res;
use crate::route::HeaderEdits;
use crate::route::{
    re2_template, Action, DirectResponse, Forward, HeaderMatch, HeaderOps, MatchBlock, Redirect,
    RetryOn, RetryPolicy, Rewrite, Route, StrMatch, WeightedDestination,
};

/// A compiled rule plus, per match block, the gateways it is restricted to (empty: all).
pub(super) struct CompiledRule {
    pub(super) route: Route,
    pub(super) block_gateways: Vec<Vec<String>>,
}

impl CompiledRule {
    /// The rule as served on gateway `gw` (`ns/name`, or `mesh`), or `None` when every match
    /// block is restricted to other gateways.
    pub(super) fn for_gateway(&self, gw: &str) -> Option<Route> {
        if self.block_gateways.iter().all(Vec::is_empty) {
            return Some(self.route.clone());
        }
        let mut route = self.route.clone();
        route.matches = self
            .route
            .matches
            .iter()
            .zip(&self.block_gateways)
            .filter(|(_, gws)| gws.is_empty() || gws.iter().any(|g| g == gw))
            .map(|(m, _)| m.clone())
            .collect();
        (!route.matches.is_empty()).then_some(route)
    }
}

/// Compiles the rules of one VirtualService.
pub(super) struct RuleCompiler<'a, 'b> {
    pub(super) vs: &'a Res<VirtualService>,
    pub(super) services: &'a mut Services<'b>,
    pub(super) errors: &'a mut Vec<ConfigError>,
    pub(super) warnings: &'a mut Vec<ConfigError>,
}

impl RuleCompiler<'_, '_> {
    fn err(&mut self, field: impl Into<String>, msg: impl Into<String>) {
        self.errors.push(self.vs.error(field, msg));
    }

    fn warn(&mut self, field: impl Into<String>, msg: impl Into<String>) {
        self.warnings.push(self.vs.error(field, msg));
    }

    /// Compile `http[i]`; `None` (with errors recorded) when it is invalid.
    pub(super) fn rule(&mut self, i: usize, r: &HttpRoute) -> Option<CompiledRule> {
        let f = format!("http[{i}]");
        let before = self.errors.len();
        if r.delegate.is_some() {
            // Root rules that delegate are expanded by `compile::delegate`; reaching here
            // means a delegate VirtualService delegates again.
            self.err(format!("{f}.delegate"), "delegation is one level only");
        }
        let mut matches = Vec::with_capacity(r.matches.len());
        let mut block_gateways = Vec::with_capacity(r.matches.len());
        for (j, m) in r.matches.iter().enumerate() {
            let (block, gws) = self.block(&format!("{f}.match[{j}]"), m);
            matches.push(block);
            block_gateways.push(gws);
        }
        let actions = [
            !r.route.is_empty(),
            r.redirect.is_some(),
            r.direct_response.is_some(),
        ];
        let n_actions = actions.iter().filter(|a| **a).count();
        if n_actions > 1 {
            self.err(
                &f,
                "only one of route, redirect or directResponse may be set",
            );
        } else if n_actions == 0 && r.delegate.is_none() {
            self.err(&f, "rule needs a route, a redirect or a directResponse");
        }
        let action = if let Some(rd) = &r.redirect {
            self.redirect(&format!("{f}.redirect"), rd)
        } else if let Some(dr) = &r.direct_response {
            self.direct(&format!("{f}.directResponse"), dr)
        } else {
            self.forward(&f, r)
        };
        if r.rewrite.is_some() && !matches!(action, Some(Action::Forward(_))) {
            self.err(format!("{f}.rewrite"), "rewrite needs a route destination");
        }
        let rewrite = r.rewrite.as_ref().map(|rw| {
            if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
                self.err(
                    format!("{f}.rewrite"),
                    "uri and uriRegexRewrite are exclusive",
                );
            }
            let uri_regex =
                rw.uri_regex_rewrite
                    .as_ref()
                    .and_then(|rr| match regex::Regex::new(&rr.pattern) {
                        Ok(re) => Some((re, re2_template(&rr.rewrite).into())),
                        Err(e) => {
                            self.err(
                                format!("{f}.rewrite.uriRegexRewrite.match"),
                                format!("invalid regex: {e}"),
                            );
                            None
                        }
                    });
            Rewrite {
                uri_regex,
                uri: rw.uri.as_deref().map(Into::into),
                authority: rw
                    .authority
                    .as_deref()
                    .and_then(|a| match HeaderValue::from_str(a) {
                        Ok(v) if !a.is_empty() => Some(v),
                        _ => {
                            self.err(
                                format!("{f}.rewrite.authority"),
                                format!("invalid authority {a:?}"),
                            );
                            None
                        }
                    }),
            }
        });
        let timeout = r.timeout.as_deref().and_then(|t| match duration::parse(t) {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => {
                self.err(format!("{f}.timeout"), format!("invalid duration {t:?}"));
                None
            }
        });
        let retry = match &r.retries {
            Some(rt) => self.retry(&format!("{f}.retries"), rt),
            None => RetryPolicy::default(),
        };
        let headers = self.headers(&format!("{f}.headers"), r.headers.as_ref());
        let fault = r
            .fault
            .as_ref()
            .and_then(|fi| self.fault(&format!("{f}.fault"), fi));
        if fault.is_some() && !matches!(action, Some(Action::Forward(_))) {
            self.warn(
                format!("{f}.fault"),
                "fault injection applies to routed requests only: ignored with redirect or directResponse",
            );
        }
        let cors = r
            .cors_policy
            .as_ref()
            .and_then(|c| self.cors(&format!("{f}.corsPolicy"), c));
        let mirrors = self.mirrors(&f, r).unwrap_or_else(|| Vec::new().into());
        if self.errors.len() > before {
            return None;
        }
        let name = r
            .name
            .clone()
            .unwrap_or_else(|| format!("{}[{i}]", self.vs.name));
        Some(CompiledRule {
            route: Route {
                virtual_service: self.vs.key().into(),
                index: i,
                name: name.into(),
                matches,
                action: action?,
                rewrite,
                headers,
                timeout,
                retry,
                fault,
                cors,
                mirrors,
            },
            block_gateways,
        })
    }

    fn block(&mut self, f: &str, m: &HttpMatchRequest) -> (MatchBlock, Vec<String>) {
        if m.source_labels.is_some() || m.source_namespace.is_some() {
            self.warn(
                f,
                "sourceLabels / sourceNamespace do not apply at a gateway: ignored",
            );
        }
        let port = m.port.and_then(|p| match u16::try_from(p) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.err(format!("{f}.port"), "must be 1..=65535");
                None
            }
        });
        let mut headers = Vec::new();
        for (name, sm) in &m.headers {
            if let Some(h) = self.header_match(&format!("{f}.headers.{name}"), name, sm) {
                headers.push(h);
            }
        }
        let mut without_headers = Vec::new();
        for (name, sm) in &m.without_headers {
            if let Some(h) = self.header_match(&format!("{f}.withoutHeaders.{name}"), name, sm) {
                without_headers.push(h);
            }
        }
        let mut query = Vec::new();
        for (name, sm) in &m.query_params {
            let field = format!("{f}.queryParams.{name}");
            if sm.prefix.is_some() {
                self.err(
                    &field,
                    "prefix is not supported for queryParams (use exact or regex)",
                );
                continue;
            }
            let sm = if sm.exact.as_deref() == Some("") {
                StringMatch::default()
            } else {
                sm.clone()
            };
            if let Some(s) = self.string_match(&field, &sm) {
                query.push((name.as_str().into(), s));
            }
        }
        let gateways = m
            .gateways
            .iter()
            .map(|g| super::gateway_key(g, &self.vs.namespace))
            .collect();
        let block = MatchBlock {
            name: m.name.as_deref().map(Into::into),
            uri: m
                .uri
                .as_ref()
                .and_then(|s| self.string_match(&format!("{f}.uri"), s)),
            scheme: m
                .scheme
                .as_ref()
                .and_then(|s| self.string_match(&format!("{f}.scheme"), s)),
            method: m
                .method
                .as_ref()
                .and_then(|s| self.string_match(&format!("{f}.method"), s)),
            authority: m
                .authority
                .as_ref()
                .and_then(|s| self.string_match(&format!("{f}.authority"), s)),
            headers,
            without_headers,
            query,
            port,
            ignore_uri_case: m.ignore_uri_case,
        };
        (block, gateways)
    }

    fn header_match(&mut self, f: &str, name: &str, sm: &StringMatch) -> Option<HeaderMatch> {
        let Ok(name) = HeaderName::from_str(&name.to_ascii_lowercase()) else {
            self.err(f, format!("invalid header name {name:?}"));
            return None;
        };
        Some(HeaderMatch {
            name,
            value: self.string_match(f, sm)?,
        })
    }

    pub(super) fn string_match(&mut self, f: &str, sm: &StringMatch) -> Option<StrMatch> {
        match (&sm.exact, &sm.prefix, &sm.regex) {
            (None, None, None) => Some(StrMatch::Present),
            (Some(e), None, None) => Some(StrMatch::Exact(e.as_str().into())),
            (None, Some(p), None) => Some(StrMatch::Prefix(p.as_str().into())),
            (None, None, Some(r)) => match StrMatch::regex(r) {
                Ok(m) => Some(m),
                Err(e) => {
                    self.err(format!("{f}.regex"), format!("invalid regex: {e}"));
                    None
                }
            },
            _ => {
                self.err(f, "only one of exact, prefix or regex may be set");
                None
            }
        }
    }

    fn forward(&mut self, f: &str, r: &HttpRoute) -> Option<Action> {
        let mut destinations = Vec::with_capacity(r.route.len());
        let mut total: u32 = 0;
        let single = r.route.len() == 1;
        let errors_before = self.errors.len();
        for (k, d) in r.route.iter().enumerate() {
            let field = format!("{f}.route[{k}]");
            let weight = match d.weight {
                None | Some(0) if single => 100,
                None => 0,
                Some(w @ 0..=100) => w as u32,
                Some(_) => {
                    self.err(format!("{field}.weight"), "must be 0..=100");
                    continue;
                }
            };
            let Some(dest) = &d.destination else {
                self.err(format!("{field}.destination"), "destination is required");
                continue;
            };
            let headers = self.headers(&format!("{field}.headers"), d.headers.as_ref());
            let Some(cluster) = self.services.cluster_for(
                self.vs,
                &format!("{field}.destination"),
                dest,
                self.errors,
                self.warnings,
            ) else {
                continue;
            };
            total += weight;
            if weight > 0 {
                destinations.push(WeightedDestination {
                    weight,
                    cluster,
                    headers,
                });
            }
        }
        if self.errors.len() > errors_before {
            return None;
        }
        if total == 0 && !r.route.is_empty() {
            self.err(
                format!("{f}.route"),
                "the weights of the destinations sum to 0",
            );
            return None;
        }
        Some(Action::Forward(Forward {
            destinations,
            total_weight: total,
        }))
    }

    fn redirect(&mut self, f: &str, rd: &crate::config::istio::HttpRedirect) -> Option<Action> {
        let derive_port = match rd.derive_port.as_deref() {
            None => None,
            Some("FROM_PROTOCOL_DEFAULT") => Some(crate::route::DerivePort::ProtocolDefault),
            Some("FROM_REQUEST_PORT") => Some(crate::route::DerivePort::RequestPort),
            Some(other) => {
                self.err(
                    format!("{f}.derivePort"),
                    format!("unknown value {other} (FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT)"),
                );
                return None;
            }
        };
        if derive_port.is_some() && rd.port.is_some() {
            self.err(f, "port and derivePort are exclusive");
            return None;
        }
        let code = match rd.redirect_code {
            None | Some(0) => StatusCode::MOVED_PERMANENTLY,
            Some(c @ (301 | 302 | 303 | 307 | 308)) => StatusCode::from_u16(c as u16).ok()?,
            Some(c) => {
                self.err(
                    format!("{f}.redirectCode"),
                    format!("{c} is not a redirect code (301, 302, 303, 307, 308)"),
                );
                return None;
            }
        };
        let port = match rd.port {
            None => None,
            Some(p @ 1..=65535) => Some(p as u16),
            Some(_) => {
                self.err(format!("{f}.port"), "must be 1..=65535");
                return None;
            }
        };
        if let Some(s) = &rd.scheme {
            if s != "http" && s != "https" {
                self.err(
                    format!("{f}.scheme"),
                    format!("unsupported scheme {s:?} (http or https)"),
                );
            }
        }
        if let Some(u) = &rd.uri {
            if !u.starts_with('/') {
                self.err(format!("{f}.uri"), "must start with /");
            }
        }
        Some(Action::Redirect(Redirect {
            uri: rd.uri.as_deref().map(Into::into),
            authority: rd.authority.as_deref().map(Into::into),
            port,
            scheme: rd.scheme.as_deref().map(Into::into),
            code,
            derive_port,
        }))
    }

    fn direct(&mut self, f: &str, dr: &crate::config::istio::HttpDirectResponse) -> Option<Action> {
        let status = match u16::try_from(dr.status)
            .ok()
            .filter(|s| (200..=599).contains(s))
        {
            Some(s) => StatusCode::from_u16(s).ok()?,
            None => {
                self.err(format!("{f}.status"), "must be 200..=599");
                return None;
            }
        };
        let body = match dr.body.as_ref() {
            None => Bytes::new(),
            Some(b) => match (&b.string, &b.bytes) {
                (Some(s), None) => Bytes::from(s.clone()),
                (None, Some(b64)) => match base64::engine::general_purpose::STANDARD.decode(b64) {
                    Ok(v) => Bytes::from(v),
                    Err(e) => {
                        self.err(format!("{f}.body.bytes"), format!("invalid base64: {e}"));
                        return None;
                    }
                },
                (None, None) => Bytes::new(),
                _ => {
                    self.err(
                        format!("{f}.body"),
                        "only one of string or bytes may be set",
                    );
                    return None;
                }
            },
        };
        Some(Action::Respond(DirectResponse { status, body }))
    }

    fn retry(&mut self, f: &str, rt: &HttpRetry) -> RetryPolicy {
        let attempts = match &rt.attempts {
            None => 0,
            Some(IntOrString::Int(n)) if *n >= 0 => u32::try_from(*n).unwrap_or(u32::MAX),
            Some(IntOrString::String(s)) if s.parse::<u32>().is_ok() => s.parse().unwrap_or(0),
            Some(other) => {
                self.err(
                    format!("{f}.attempts"),
                    format!("invalid attempts {other:?}: must be a non-negative integer"),
                );
                0
            }
        };
        let per_try_timeout =
            rt.per_try_timeout
                .as_deref()
                .and_then(|t| match duration::parse(t) {
                    Some(d) if d.is_zero() => None,
                    Some(d) => Some(d),
                    None => {
                        self.err(
                            format!("{f}.perTryTimeout"),
                            format!("invalid duration {t:?}"),
                        );
                        None
                    }
                });
        let mut policy = RetryPolicy {
            attempts,
            per_try_timeout,
            explicit: true,
            ..RetryPolicy::default()
        };
        if let Some(on) = rt.retry_on.as_deref().filter(|s| !s.trim().is_empty()) {
            policy.on = RetryOn::default();
            policy.status_codes.clear();
            for cond in on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if let Ok(code) = cond.parse::<u16>() {
                    if (100..=599).contains(&code) {
                        policy.status_codes.push(code);
                        policy.on |= RetryOn::RETRIABLE_STATUS_CODES;
                        continue;
                    }
                }
                match RetryOn::from_name(cond) {
                    Some(c) => policy.on |= c,
                    None => self.err(
                        format!("{f}.retryOn"),
                        format!(
                            "unknown retry condition {cond:?} (expected 5xx, gateway-error, reset, connect-failure, \
                             refused-stream, retriable-4xx, retriable-status-codes, cancelled, deadline-exceeded, \
                             internal, resource-exhausted, unavailable, or a status code)"
                        ),
                    ),
                }
            }
        }
        policy
    }

    fn headers(&mut self, f: &str, h: Option<&Headers>) -> HeaderOps {
        let Some(h) = h else {
            return HeaderOps::default();
        };
        HeaderOps {
            request: self.edits(&format!("{f}.request"), h.request.as_ref()),
            response: self.edits(&format!("{f}.response"), h.response.as_ref()),
        }
    }

    fn edits(&mut self, f: &str, ops: Option<&HeaderOperations>) -> HeaderEdits {
        let Some(ops) = ops else {
            return HeaderEdits::default();
        };
        let pairs =
            |this: &mut Self, kind: &str, map: &std::collections::BTreeMap<String, String>| {
                let mut out = Vec::new();
                for (k, v) in map {
                    match (
                        HeaderName::from_str(&k.to_ascii_lowercase()),
                        HeaderValue::from_str(v),
                    ) {
                        (Ok(n), Ok(v)) => out.push((n, v)),
                        _ => this.err(format!("{f}.{kind}.{k}"), "invalid header name or value"),
                    }
                }
                out
            };
        let set = pairs(self, "set", &ops.set);
        let add = pairs(self, "add", &ops.add);
        let mut remove = Vec::new();
        for (i, k) in ops.remove.iter().enumerate() {
            match HeaderName::from_str(&k.to_ascii_lowercase()) {
                Ok(n) => remove.push(n),
                Err(_) => self.err(
                    format!("{f}.remove[{i}]"),
                    format!("invalid header name {k:?}"),
                ),
            }
        }
        HeaderEdits { set, add, remove }
    }
}
