//! Per-route policies as compiled data: header operations, redirects, direct responses,
//! rewrites and the retry policy. Pure data plus the small functions that apply it.
//!
//! Depends on: std, http, bytes.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// `set` / `add` / `remove` for one direction.
#[derive(Debug, Clone, Default)]
pub struct HeaderEdits {
    /// Replace (or create) these headers.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append these headers.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Remove these headers.
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Apply to `headers`: remove, then set, then add (Envoy's order).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// Istio `Headers`: request and response edits.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    /// Edits to the request sent upstream.
    pub request: HeaderEdits,
    /// Edits to the response sent downstream.
    pub response: HeaderEdits,
}

/// A compiled `HTTPRedirect`.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// New path (and query, when it has one).
    pub uri: Option<Box<str>>,
    /// New host.
    pub authority: Option<Box<str>>,
    /// New port.
    pub port: Option<u16>,
    /// New scheme.
    pub scheme: Option<Box<str>>,
    /// 301 unless set.
    pub code: StatusCode,
    /// `derivePort`, when `port` is not set.
    pub derive_port: Option<DerivePort>,
}

/// `HTTPRedirect.derivePort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerivePort {
    /// The new scheme's default port (so no port in the Location).
    ProtocolDefault,
    /// The port the request arrived on (the Gateway server port).
    RequestPort,
}

impl Redirect {
    /// The `Location` for a request with this scheme, authority, path and query.
    pub fn location(
        &self,
        scheme: &str,
        authority: &str,
        path: &str,
        query: Option<&str>,
    ) -> String {
        self.location_at(scheme, authority, path, query, None)
    }

    /// `location`, for a request that arrived on `request_port` (for `derivePort`).
    pub fn location_at(
        &self,
        scheme: &str,
        authority: &str,
        path: &str,
        query: Option<&str>,
        request_port: Option<u16>,
    ) -> String {
        let new_scheme = self.scheme.as_deref().unwrap_or(scheme);
        let (orig_host, orig_port) = split_port(authority);
        let host = self
            .authority
            .as_deref()
            .map_or(orig_host, |a| split_port(a).0);
        let port = match (self.port, orig_port) {
            (Some(p), _) => Some(p.to_string()),
            (None, _) if self.derive_port == Some(DerivePort::ProtocolDefault) => None,
            (None, _)
                if self.derive_port == Some(DerivePort::RequestPort) && request_port.is_some() =>
            {
                request_port.map(|p| p.to_string())
            }
            // Changing the scheme drops the port only when it is the old scheme's default,
            // as Envoy's processRequestHost does.
            (None, Some(p))
                if new_scheme != scheme
                    && matches!((scheme, p), ("http", "80") | ("https", "443")) =>
            {
                None
            }
            (None, Some(p)) if self.authority.is_none() => Some(p.to_owned()),
            (None, _) => self
                .authority
                .as_deref()
                .and_then(|a| split_port(a).1)
                .map(str::to_owned),
        };
        let mut loc = String::with_capacity(64);
        loc.push_str(new_scheme);
        loc.push_str("://");
        loc.push_str(host);
        if let Some(p) = port {
            let default = matches!((new_scheme, p.as_str()), ("http", "80") | ("https", "443"));
            if !default {
                loc.push(':');
                loc.push_str(&p);
            }
        }
        match self.uri.as_deref() {
            Some(uri) => {
                loc.push_str(uri);
                if !uri.contains('?') {
                    push_query(&mut loc, query);
                }
            }
            None => {
                loc.push_str(path);
                push_query(&mut loc, query);
            }
        }
        loc
    }
}

fn push_query(s: &mut String, query: Option<&str>) {
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
}

/// Split `host:port` (IPv6 in brackets kept whole).
fn split_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        return match authority.rsplit_once("]:") {
            Some((h, p)) => (&authority[..h.len() + 1], Some(p)),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (authority, None),
    }
}

/// A compiled `HTTPDirectResponse`.
#[derive(Debug, Clone)]
pub struct DirectResponse {
    /// Status code.
    pub status: StatusCode,
    /// Body (may be empty).
    pub body: Bytes,
}

/// A compiled `HTTPRewrite`.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    /// Replacement for the matched path prefix.
    pub uri: Option<Box<str>>,
    /// New Host / authority sent upstream.
    pub authority: Option<HeaderValue>,
    /// `uriRegexRewrite`: every match of the regex in the path replaced by the template
    /// (captures already converted from RE2's `\1` to `${1}`).
    pub uri_regex: Option<(regex::Regex, Box<str>)>,
}

impl Rewrite {
    /// The rewritten path for `path`, where `prefix` is the part the match consumed
    /// (see `StrMatch::rewritten_part`).
    pub fn path(&self, path: &str, prefix: &str) -> Option<String> {
        if let Some((re, template)) = &self.uri_regex {
            return Some(re.replace_all(path, &**template).into_owned());
        }
        let new = self.uri.as_deref()?;
        let rest = if path.len() >= prefix.len() && path.is_char_boundary(prefix.len()) {
            &path[prefix.len()..]
        } else {
            path
        };
        let mut out = String::with_capacity(new.len() + rest.len());
        out.push_str(new);
        out.push_str(rest);
        Some(out)
    }
}

/// Convert an RE2 / Envoy substitution (`\1` for capture 1) to the `regex` crate's syntax
/// (`${1}`), escaping a literal `$`.
pub fn re2_template(t: &str) -> String {
    let mut out = String::with_capacity(t.len() + 8);
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek() {
                Some(d) if d.is_ascii_digit() => {
                    out.push_str("${");
                    out.push(*d);
                    out.push('}');
                    chars.next();
                }
                Some('\\') => {
                    out.push('\\');
                    chars.next();
                }
                _ => out.push('\\'),
            },
            other => out.push(other),
        }
    }
    out
}

/// Envoy `retry_on` conditions, as a bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(u32);

impl RetryOn {
    pub const CONNECT_FAILURE: Self = Self(1);
    pub const REFUSED_STREAM: Self = Self(1 << 1);
    pub const RESET: Self = Self(1 << 2);
    pub const FIVE_XX: Self = Self(1 << 3);
    pub const GATEWAY_ERROR: Self = Self(1 << 4);
    pub const RETRIABLE_4XX: Self = Self(1 << 5);
    pub const RETRIABLE_STATUS_CODES: Self = Self(1 << 6);
    pub const GRPC_CANCELLED: Self = Self(1 << 7);
    pub const GRPC_DEADLINE_EXCEEDED: Self = Self(1 << 8);
    pub const GRPC_INTERNAL: Self = Self(1 << 9);
    pub const GRPC_RESOURCE_EXHAUSTED: Self = Self(1 << 10);
    pub const GRPC_UNAVAILABLE: Self = Self(1 << 11);
    /// Accepted for compatibility; meshgate never rate-limits.
    pub const ENVOY_RATELIMITED: Self = Self(1 << 12);

    /// The condition named `name` in Envoy's / Istio's vocabulary.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "connect-failure" => Self::CONNECT_FAILURE,
            "refused-stream" => Self::REFUSED_STREAM,
            "reset" => Self::RESET,
            "5xx" => Self::FIVE_XX,
            "gateway-error" => Self::GATEWAY_ERROR,
            "retriable-4xx" => Self::RETRIABLE_4XX,
            "retriable-status-codes" => Self::RETRIABLE_STATUS_CODES,
            "cancelled" => Self::GRPC_CANCELLED,
            "deadline-exceeded" => Self::GRPC_DEADLINE_EXCEEDED,
            "internal" => Self::GRPC_INTERNAL,
            "resource-exhausted" => Self::GRPC_RESOURCE_EXHAUSTED,
            "unavailable" => Self::GRPC_UNAVAILABLE,
            "envoy-ratelimited" => Self::ENVOY_RATELIMITED,
            _ => return None,
        })
    }

    /// Whether any condition of `other` is set.
    pub fn any(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }
}

impl std::ops::BitOr for RetryOn {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for RetryOn {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

/// A compiled `HTTPRetry`.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries allowed after the first try (Istio's `attempts`).
    pub attempts: u32,
    /// Timeout of each try, inside the route timeout.
    pub per_try_timeout: Option<Duration>,
    /// Conditions that trigger a retry.
    pub on: RetryOn,
    /// Codes for `retriable-status-codes`.
    pub status_codes: Vec<u16>,
    /// Whether the route set `retries` itself. Only then are non-idempotent requests that may
    /// have reached the upstream sent again.
    pub explicit: bool,
}

impl Default for RetryPolicy {
    /// Istio's default: 2 retries on connect-failure, refused-stream, unavailable, cancelled
    /// and retriable-status-codes (503).
    fn default() -> Self {
        Self {
            attempts: 2,
            per_try_timeout: None,
            on: RetryOn::CONNECT_FAILURE
                | RetryOn::REFUSED_STREAM
                | RetryOn::GRPC_UNAVAILABLE
                | RetryOn::GRPC_CANCELLED
                | RetryOn::RETRIABLE_STATUS_CODES,
            status_codes: vec![503],
            explicit: false,
        }
    }
}

impl RetryPolicy {
    /// Whether a response with `status` (and optional `grpc-status`) should be retried.
    pub fn retries_status(&self, status: u16, grpc_status: Option<u32>) -> bool {
        let on = self.on;
        (on.any(RetryOn::FIVE_XX) && status >= 500)
            || (on.any(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504))
            || (on.any(RetryOn::RETRIABLE_4XX) && status == 409)
            || (on.any(RetryOn::RETRIABLE_STATUS_CODES) && self.status_codes.contains(&status))
            || grpc_status.is_some_and(|g| {
                (on.any(RetryOn::GRPC_CANCELLED) && g == 1)
                    || (on.any(RetryOn::GRPC_DEADLINE_EXCEEDED) && g == 4)
                    || (on.any(RetryOn::GRPC_RESOURCE_EXHAUSTED) && g == 8)
                    || (on.any(RetryOn::GRPC_INTERNAL) && g == 13)
                    || (on.any(RetryOn::GRPC_UNAVAILABLE) && g == 14)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_rewrite_with_captures() {
        assert_eq!(re2_template(r"/v2/\1/x$"), "/v2/${1}/x$$");
        let rw = Rewrite {
            uri_regex: Some((
                regex::Regex::new("^/service/([^/]+)(/.*)$").unwrap(),
                re2_template(r"\2/instance/\1").into(),
            )),
            ..Rewrite::default()
        };
        assert_eq!(
            rw.path("/service/foo/v1/api", "/").as_deref(),
            Some("/v1/api/instance/foo")
        );
        let all = Rewrite {
            uri_regex: Some((regex::Regex::new("a").unwrap(), "b".into())),
            ..Rewrite::default()
        };
        assert_eq!(all.path("/aaa", "/").as_deref(), Some("/bbb"));
    }

    fn redirect() -> Redirect {
        Redirect {
            uri: None,
            authority: None,
            port: None,
            scheme: None,
            code: StatusCode::MOVED_PERMANENTLY,
            derive_port: None,
        }
    }

    #[test]
    fn redirect_derive_port() {
        let https = |d| Redirect {
            scheme: Some("https".into()),
            derive_port: Some(d),
            ..redirect()
        };
        assert_eq!(
            https(DerivePort::ProtocolDefault).location_at(
                "http",
                "a.com:8080",
                "/p",
                None,
                Some(8080)
            ),
            "https://a.com/p"
        );
        assert_eq!(
            https(DerivePort::RequestPort).location_at("http", "a.com", "/p", None, Some(8443)),
            "https://a.com:8443/p"
        );
        assert_eq!(
            https(DerivePort::RequestPort).location_at("http", "a.com", "/p", None, Some(443)),
            "https://a.com/p"
        );
    }

    #[test]
    fn redirect_locations() {
        let r = Redirect {
            uri: Some("/new".into()),
            ..redirect()
        };
        assert_eq!(
            r.location("http", "a.com:8080", "/old", Some("x=1")),
            "http://a.com:8080/new?x=1"
        );
        let r = Redirect {
            scheme: Some("https".into()),
            ..redirect()
        };
        assert_eq!(
            r.location("http", "a.com:8080", "/p", None),
            "https://a.com:8080/p"
        );
        assert_eq!(
            r.location("http", "a.com:80", "/p", None),
            "https://a.com/p"
        );
        let r = Redirect {
            authority: Some("b.com".into()),
            port: Some(9000),
            ..redirect()
        };
        assert_eq!(
            r.location("http", "a.com", "/p", None),
            "http://b.com:9000/p"
        );
        let r = Redirect {
            uri: Some("/n?y=2".into()),
            ..redirect()
        };
        assert_eq!(
            r.location("http", "a.com", "/p", Some("x=1")),
            "http://a.com/n?y=2"
        );
        let r = Redirect {
            port: Some(80),
            ..redirect()
        };
        assert_eq!(r.location("http", "a.com:8080", "/", None), "http://a.com/");
    }

    #[test]
    fn rewrite_replaces_prefix() {
        let r = Rewrite {
            uri: Some("/v2".into()),
            ..Rewrite::default()
        };
        assert_eq!(r.path("/v1/users", "/v1").as_deref(), Some("/v2/users"));
        assert_eq!(r.path("/x", "/").as_deref(), Some("/v2x"));
    }

    #[test]
    fn retry_status_vocabulary() {
        let mut p = RetryPolicy::default();
        assert!(p.retries_status(503, None));
        assert!(!p.retries_status(502, None));
        assert!(p.retries_status(200, Some(14)));
        p.on = RetryOn::GATEWAY_ERROR;
        assert!(p.retries_status(504, None) && !p.retries_status(500, None));
        p.on = RetryOn::FIVE_XX;
        assert!(p.retries_status(500, None));
        p.on = RetryOn::RETRIABLE_4XX;
        assert!(p.retries_status(409, None) && !p.retries_status(404, None));
    }
}
