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

// === explain helpers ===
//
// Used by `meshgate explain` only, never on the request path, so they may allocate. Each one
// checks the conditions in the order `MatchBlock::matches` does and through the same
// functions, so the reason given is the condition that really failed.

impl std::fmt::Display for StrMatch {
    /// `exact /a`, `prefix /a`, `regex v[0-9]+` (as written, without the anchors), `present`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(e) => write!(f, "exact {e}"),
            Self::Prefix(p) => write!(f, "prefix {p}"),
            Self::Present => f.write_str("present"),
            Self::Regex(r) => write!(f, "regex {}", regex_source(r)),
        }
    }
}

/// The pattern as configured: `StrMatch::regex` wraps it in `^(?:...)$`.
fn regex_source(r: &Regex) -> &str {
    let s = r.as_str();
    s.strip_prefix("^(?:")
        .and_then(|x| x.strip_suffix(")$"))
        .unwrap_or(s)
}

/// Headers whose values `explain` never echoes.
fn is_sensitive(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    )
}

impl HeaderMatch {
    /// Why `headers` fail this condition (`None` when they satisfy it), e.g.
    /// `header x-user missing`.
    pub fn mismatch(&self, headers: &HeaderMap) -> Option<String> {
        if self.matches(headers) {
            return None;
        }
        let values: Vec<&str> = headers
            .get_all(&self.name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<not text>"))
            .collect();
        if values.is_empty() {
            return Some(format!("header {} missing", self.name));
        }
        if is_sensitive(&self.name) {
            return Some(format!(
                "header {} does not match (value hidden)",
                self.name
            ));
        }
        Some(format!(
            "header {} {} does not match {}",
            self.name,
            self.value,
            values.join(",")
        ))
    }
}

impl MatchBlock {
    /// Why `req` fails this block: the first condition (in `matches` order) it does not
    /// satisfy, e.g. `uri prefix /api does not match /web`; `None` when the block matches.
    pub fn first_mismatch(&self, req: &RequestView<'_>) -> Option<String> {
        if let Some(p) = self.port {
            if p != req.port {
                return Some(format!("port {p} does not match {}", req.port));
            }
        }
        if let Some(m) = &self.method {
            if !m.matches(req.method) {
                return Some(format!("method {m} does not match {}", req.method));
            }
        }
        if let Some(u) = &self.uri {
            let ok = if self.ignore_uri_case {
                u.matches_ignore_case(req.path)
            } else {
                u.matches(req.path)
            };
            if !ok {
                let case = if self.ignore_uri_case {
                    " (ignoring case)"
                } else {
                    ""
                };
                return Some(format!("uri {u}{case} does not match {}", req.path));
            }
        }
        if let Some(s) = &self.scheme {
            if !s.matches(req.scheme) {
                return Some(format!("scheme {s} does not match {}", req.scheme));
            }
        }
        if let Some(a) = &self.authority {
            if !a.matches(req.authority) {
                return Some(format!("authority {a} does not match {}", req.authority));
            }
        }
        if let Some(reason) = self.headers.iter().find_map(|h| h.mismatch(req.headers)) {
            return Some(reason);
        }
        if let Some(h) = self.without_headers.iter().find(|h| h.matches(req.headers)) {
            return Some(format!(
                "withoutHeaders {} {} matches the request",
                h.name, h.value
            ));
        }
        self.query
            .iter()
            .find_map(|(name, m)| match query_value(req.query, name) {
                None => Some(format!("query parameter {name} missing")),
                Some(v) if !m.matches(v) => {
                    Some(format!("query parameter {name} {m} does not match {v}"))
                }
                Some(_) => None,
            })
    }
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

    #[test]
    fn explain_first_mismatch_agrees_with_matches_and_names_the_condition() {
        let mut h = HeaderMap::new();
        h.insert("end-user", "bob".parse().unwrap());
        h.insert("x-debug", "1".parse().unwrap());
        let header = |name: &'static str, value| HeaderMatch {
            name: HeaderName::from_static(name),
            value,
        };
        let blocks = [
            MatchBlock {
                uri: Some(StrMatch::Prefix("/api".into())),
                ..Default::default()
            },
            MatchBlock {
                uri: Some(StrMatch::Prefix("/API".into())),
                ignore_uri_case: true,
                ..Default::default()
            },
            MatchBlock {
                method: Some(StrMatch::Exact("POST".into())),
                ..Default::default()
            },
            MatchBlock {
                headers: vec![header("x-user", StrMatch::Present)],
                ..Default::default()
            },
            MatchBlock {
                headers: vec![header("end-user", StrMatch::Exact("jason".into()))],
                ..Default::default()
            },
            MatchBlock {
                without_headers: vec![header("x-debug", StrMatch::Present)],
                ..Default::default()
            },
            MatchBlock {
                query: vec![("v".into(), StrMatch::regex("[0-9]+").unwrap())],
                ..Default::default()
            },
            MatchBlock {
                port: Some(81),
                ..Default::default()
            },
            MatchBlock::default(),
        ];
        let requests = [
            ("/web", None),
            ("/api/x", Some("v=1")),
            ("/Api", Some("v=x")),
        ];
        for b in &blocks {
            for (path, query) in requests {
                let v = view(path, query, &h);
                assert_eq!(
                    b.first_mismatch(&v).is_none(),
                    b.matches(&v),
                    "{b:?} {path}"
                );
            }
        }
        let web = view("/web", Some("v=x"), &h);
        let reasons: Vec<_> = blocks.iter().map(|b| b.first_mismatch(&web)).collect();
        assert_eq!(
            reasons,
            [
                Some("uri prefix /api does not match /web".to_owned()),
                Some("uri prefix /API (ignoring case) does not match /web".to_owned()),
                Some("method exact POST does not match GET".to_owned()),
                Some("header x-user missing".to_owned()),
                Some("header end-user exact jason does not match bob".to_owned()),
                Some("withoutHeaders x-debug present matches the request".to_owned()),
                Some("query parameter v regex [0-9]+ does not match x".to_owned()),
                Some("port 81 does not match 80".to_owned()),
                None,
            ]
        );
        let mut secret = HeaderMap::new();
        secret.insert("authorization", "Bearer s3cret".parse().unwrap());
        let auth = header("authorization", StrMatch::Exact("Bearer other".into()));
        let reason = auth.mismatch(&secret).unwrap();
        assert!(
            !reason.contains("s3cret") && !reason.contains("other"),
            "{reason}"
        );
    }
}
