//! Compiled request matchers: strings (exact / prefix / RE2 regex, full match), headers,
//! query parameters and whole `HTTPMatchRequest` blocks. Pure and allocation-free on the
//! common path.
//!
//! Depends on: std, http, regex.

use http::{HeaderMap, HeaderName};
use regex::Regex;

/// A compiled Istio `StringMatch`.
#[derive(Debug, Clone)]
pub enum StrMatch {
    /// The whole value equals this.
    Exact(Box<str>),
    /// The value starts with this.
    Prefix(Box<str>),
    /// Present with any value (an empty `StringMatch`).
    Present,
    /// The whole value matches this RE2-syntax regex (anchored at compile time).
    Regex(Regex),
}

impl StrMatch {
    /// Compile a regex with Envoy's full-match semantics.
    pub fn regex(pattern: &str) -> Result<Self, regex::Error> {
        Ok(Self::Regex(Regex::new(&format!("^(?:{pattern})$"))?))
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(e) => value == &**e,
            Self::Prefix(p) => value.starts_with(&**p),
            Self::Present => true,
            Self::Regex(r) => r.is_match(value),
        }
    }

    /// Like `matches`, ASCII case-insensitive for exact and prefix (Istio's `ignoreUriCase`).
    pub fn matches_ignore_case(&self, value: &str) -> bool {
        match self {
            Self::Exact(e) => value.eq_ignore_ascii_case(e),
            Self::Prefix(p) => {
                value.len() >= p.len()
                    && value.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
            other => other.matches(value),
        }
    }

    /// The part of `path` a `rewrite.uri` replaces (Envoy's `prefix_rewrite` as Istio
    /// configures it): the prefix or exact value, the whole path for a regex, and `/` when
    /// the block has no uri condition.
    pub fn rewritten_part<'a>(&'a self, path: &'a str) -> &'a str {
        match self {
            Self::Exact(s) | Self::Prefix(s) => s,
            Self::Regex(_) => path,
            Self::Present => "/",
        }
    }
}

/// A header condition: `headers` (must match) or `withoutHeaders` (must not).
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    /// Lowercase header name.
    pub name: HeaderName,
    /// Condition on the value.
    pub value: StrMatch,
}

impl HeaderMatch {
    /// Whether the header is present and matches. Several values are joined with `,` as
    /// Envoy does.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        let Some(first) = values.next() else {
            return false;
        };
        if matches!(self.value, StrMatch::Present) {
            return true;
        }
        let Some(more) = values.next() else {
            return first.to_str().is_ok_and(|v| self.value.matches(v));
        };
        // Rare: repeated header. Join like Envoy.
        let mut joined = String::from(first.to_str().unwrap_or_default());
        for v in std::iter::once(more).chain(values) {
            joined.push(',');
            joined.push_str(v.to_str().unwrap_or_default());
        }
        self.value.matches(&joined)
    }
}

/// What a match block sees of a request. Borrowed from the request, built once per request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Method, e.g. `GET`.
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The Host / `:authority` as sent (port included).
    pub authority: &'a str,
    /// Path without the query.
    pub path: &'a str,
    /// Query string without `?`.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The Gateway server port the request arrived on.
    pub port: u16,
}

/// A compiled `HTTPMatchRequest`: every present condition must hold.
#[derive(Debug, Clone, Default)]
pub struct MatchBlock {
    /// Optional block name, for explain and logs.
    pub name: Option<Box<str>>,
    pub uri: Option<StrMatch>,
    pub scheme: Option<StrMatch>,
    pub method: Option<StrMatch>,
    pub authority: Option<StrMatch>,
    pub headers: Vec<HeaderMatch>,
    pub without_headers: Vec<HeaderMatch>,
    pub query: Vec<(Box<str>, StrMatch)>,
    pub port: Option<u16>,
    pub ignore_uri_case: bool,
}

impl MatchBlock {
    /// Whether the request satisfies every condition of this block.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        if let Some(p) = self.port {
            if p != req.port {
                return false;
            }
        }
        if let Some(m) = &self.method {
            if !m.matches(req.method) {
                return false;
            }
        }
        if let Some(u) = &self.uri {
            let ok = if self.ignore_uri_case {
                u.matches_ignore_case(req.path)
            } else {
                u.matches(req.path)
            };
            if !ok {
                return false;
            }
        }
        if let Some(s) = &self.scheme {
            if !s.matches(req.scheme) {
                return false;
            }
        }
        if let Some(a) = &self.authority {
            if !a.matches(req.authority) {
                return false;
            }
        }
        if !self.headers.iter().all(|h| h.matches(req.headers)) {
            return false;
        }
        if self.without_headers.iter().any(|h| h.matches(req.headers)) {
            return false;
        }
        self.query
            .iter()
            .all(|(name, m)| query_value(req.query, name).is_some_and(|v| m.matches(v)))
    }
}

/// The first value of query parameter `name` (raw, not percent-decoded, as Envoy matches).
fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(path: &'a str, query: Option<&'a str>, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            method: "GET",
            scheme: "http",
            authority: "a.example:8080",
            path,
            query,
            headers,
            port: 80,
        }
    }

    #[test]
    fn string_matches() {
        let cases = [
            (StrMatch::Exact("/a".into()), "/a", true),
            (StrMatch::Exact("/a".into()), "/ab", false),
            (StrMatch::Prefix("/a".into()), "/ab", true),
            (StrMatch::Prefix("/a".into()), "/b", false),
            (StrMatch::regex("/v[0-9]+").unwrap(), "/v12", true),
            (StrMatch::regex("/v[0-9]+").unwrap(), "/v12/x", false),
            (StrMatch::regex("a|b").unwrap(), "ab", false),
            (StrMatch::Present, "", true),
        ];
        for (m, v, want) in cases {
            assert_eq!(m.matches(v), want, "{m:?} {v}");
        }
        assert!(StrMatch::Prefix("/API".into()).matches_ignore_case("/api/x"));
        assert!(!StrMatch::Prefix("/API/long".into()).matches_ignore_case("/api"));
    }

    #[test]
    fn blocks_and_fields() {
        let mut h = HeaderMap::new();
        h.insert("end-user", "jason".parse().unwrap());
        h.append("x-multi", "a".parse().unwrap());
        h.append("x-multi", "b".parse().unwrap());
        let block = MatchBlock {
            uri: Some(StrMatch::Prefix("/r".into())),
            headers: vec![HeaderMatch {
                name: HeaderName::from_static("end-user"),
                value: StrMatch::Exact("jason".into()),
            }],
            query: vec![("v".into(), StrMatch::Exact("2".into()))],
            ..Default::default()
        };
        assert!(block.matches(&view("/reviews", Some("x=1&v=2"), &h)));
        assert!(!block.matches(&view("/reviews", Some("v=3"), &h)));
        assert!(!block.matches(&view("/reviews", None, &h)));
        let multi = HeaderMatch {
            name: HeaderName::from_static("x-multi"),
            value: StrMatch::Exact("a,b".into()),
        };
        assert!(multi.matches(&h));
        let without = MatchBlock {
            without_headers: vec![HeaderMatch {
                name: HeaderName::from_static("end-user"),
                value: StrMatch::Present,
            }],
            ..Default::default()
        };
        assert!(!without.matches(&view("/", None, &h)));
        assert!(without.matches(&view("/", None, &HeaderMap::new())));
        let port = MatchBlock {
            port: Some(81),
            ..Default::default()
        };
        assert!(!port.matches(&view("/", None, &h)));
    }
}
