//! Per-route HTTP filters Istio configures on a rule: fault injection (`fault`), CORS
//! (`corsPolicy`) and request mirroring (`mirror`, `mirrors`). Compiled data plus the pure
//! decisions; the proxy applies them.
//!
//! Depends on: http, fastrand, `route::matcher`.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::matcher::StrMatch;

/// `fault`: delay and/or abort a share of requests before the upstream is contacted.
#[derive(Debug, Clone, Default)]
pub struct Fault {
    /// `fault.delay`.
    pub delay: Option<FaultDelay>,
    /// `fault.abort`.
    pub abort: Option<FaultAbort>,
}

/// `fault.delay.fixedDelay` for `percent` of requests.
#[derive(Debug, Clone)]
pub struct FaultDelay {
    /// How long to hold the request.
    pub fixed: Duration,
    /// Share of requests delayed, 0..=100.
    pub percent: f64,
}

/// `fault.abort` for `percent` of requests.
#[derive(Debug, Clone)]
pub struct FaultAbort {
    /// The answer.
    pub status: AbortStatus,
    /// Share of requests aborted, 0..=100.
    pub percent: f64,
}

/// What an aborted request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortStatus {
    /// `grpcStatus`: HTTP 200 with this `grpc-status`.
    Grpc(u32),
    /// `httpStatus`.
    Http(StatusCode),
}

/// Whether a request falls in `percent` (0..=100) of requests.
pub fn roll(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && fastrand::f64() * 100.0 < percent)
}

/// The gRPC status code named `name` (Istio's `grpcStatus` takes names like `UNAVAILABLE`).
pub fn grpc_code(name: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    let upper = name.to_ascii_uppercase();
    NAMES
        .iter()
        .position(|n| *n == upper)
        .and_then(|i| u32::try_from(i).ok())
        .or_else(|| name.parse().ok().filter(|c| *c <= 16))
}

/// `corsPolicy`.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    /// `allowOrigins` (and the deprecated `allowOrigin`); `*` exact matches any origin.
    pub origins: Vec<StrMatch>,
    /// `allowMethods`, joined.
    pub allow_methods: Option<HeaderValue>,
    /// `allowHeaders`, joined.
    pub allow_headers: Option<HeaderValue>,
    /// `exposeHeaders`, joined.
    pub expose_headers: Option<HeaderValue>,
    /// `maxAge` in seconds.
    pub max_age: Option<HeaderValue>,
    /// `allowCredentials`.
    pub allow_credentials: bool,
    /// `unmatchedPreflights: IGNORE`: answer a preflight from a disallowed origin ourselves
    /// (200, no CORS headers) instead of forwarding it (`FORWARD`, the default).
    pub ignore_unmatched_preflights: bool,
}

/// What the CORS policy does with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum CorsDecision {
    /// Not a CORS request, or an origin the policy does not allow: forward untouched.
    Pass,
    /// An allowed cross-origin request: forward, then add these headers to the response.
    Decorate(HeaderMap),
    /// A preflight: answer 200 with these headers, without contacting the upstream.
    Preflight(HeaderMap),
}

static ACAO: &str = "access-control-allow-origin";
static ACAC: &str = "access-control-allow-credentials";

impl Cors {
    /// Whether `origin` is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        self.origins
            .iter()
            .any(|m| matches!(m, StrMatch::Exact(e) if &**e == "*") || m.matches(origin))
    }

    /// Decide for a request with this method and headers (Envoy's CORS filter).
    pub fn decide(&self, method: &Method, headers: &HeaderMap) -> CorsDecision {
        let Some(origin) = headers.get(http::header::ORIGIN) else {
            return CorsDecision::Pass;
        };
        let preflight =
            method == Method::OPTIONS && headers.contains_key("access-control-request-method");
        let allowed = origin.to_str().is_ok_and(|o| self.allows(o));
        if !allowed {
            if preflight && self.ignore_unmatched_preflights {
                return CorsDecision::Preflight(HeaderMap::new());
            }
            return CorsDecision::Pass;
        }
        let mut h = HeaderMap::new();
        h.insert(ACAO, origin.clone());
        if self.allow_credentials {
            h.insert(ACAC, HeaderValue::from_static("true"));
        }
        if preflight {
            for (name, v) in [
                ("access-control-allow-methods", &self.allow_methods),
                ("access-control-allow-headers", &self.allow_headers),
                ("access-control-max-age", &self.max_age),
            ] {
                if let Some(v) = v {
                    h.insert(name, v.clone());
                }
            }
            CorsDecision::Preflight(h)
        } else {
            if let Some(v) = &self.expose_headers {
                h.insert("access-control-expose-headers", v.clone());
            }
            CorsDecision::Decorate(h)
        }
    }
}

/// `mirror` / `mirrors[]`: copy `percent` of requests to cluster `cluster`.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// Index of the mirror cluster in the snapshot.
    pub cluster: usize,
    /// Share of requests mirrored, 0..=100.
    pub percent: f64,
}

/// The authority a mirrored request carries: `-shadow` appended to the host, before any
/// port (Envoy's behaviour, which Istio keeps).
pub fn shadow_authority(authority: &str) -> String {
    match authority.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']')) =>
        {
            format!("{host}-shadow:{port}")
        }
        _ => format!("{authority}-shadow"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors() -> Cors {
        Cors {
            origins: vec![
                StrMatch::Exact("https://a.example".into()),
                StrMatch::regex(r"https://.*\.b\.example").unwrap(),
            ],
            allow_methods: Some(HeaderValue::from_static("GET,POST")),
            allow_headers: Some(HeaderValue::from_static("x-user")),
            expose_headers: Some(HeaderValue::from_static("x-trace")),
            max_age: Some(HeaderValue::from_static("86400")),
            allow_credentials: true,
            ignore_unmatched_preflights: false,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn cors_decisions() {
        let c = cors();
        assert_eq!(
            c.decide(&Method::GET, &HeaderMap::new()),
            CorsDecision::Pass
        );
        let pre = c.decide(
            &Method::OPTIONS,
            &headers(&[
                ("origin", "https://x.b.example"),
                ("access-control-request-method", "POST"),
            ]),
        );
        let CorsDecision::Preflight(h) = pre else {
            panic!("{pre:?}")
        };
        assert_eq!(h[ACAO], "https://x.b.example");
        assert_eq!(h["access-control-allow-methods"], "GET,POST");
        assert_eq!(h["access-control-max-age"], "86400");
        assert_eq!(h[ACAC], "true");
        let simple = c.decide(&Method::GET, &headers(&[("origin", "https://a.example")]));
        let CorsDecision::Decorate(h) = simple else {
            panic!("{simple:?}")
        };
        assert_eq!(h["access-control-expose-headers"], "x-trace");
        assert!(h.get("access-control-allow-methods").is_none());
        // A disallowed origin gets nothing; its preflight goes upstream unless IGNORE.
        let bad = headers(&[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ]);
        assert_eq!(c.decide(&Method::OPTIONS, &bad), CorsDecision::Pass);
        let ignore = Cors {
            ignore_unmatched_preflights: true,
            ..cors()
        };
        assert_eq!(
            ignore.decide(&Method::OPTIONS, &bad),
            CorsDecision::Preflight(HeaderMap::new())
        );
        let any = Cors {
            origins: vec![StrMatch::Exact("*".into())],
            ..Cors::default()
        };
        assert!(any.allows("https://whatever"));
    }

    #[test]
    fn rolls_and_names() {
        assert!(roll(100.0));
        assert!(!roll(0.0));
        let hits = (0..20_000).filter(|_| roll(25.0)).count();
        assert!((4_300..5_700).contains(&hits), "{hits}");
        assert_eq!(grpc_code("UNAVAILABLE"), Some(14));
        assert_eq!(grpc_code("unavailable"), Some(14));
        assert_eq!(grpc_code("4"), Some(4));
        assert_eq!(grpc_code("NOPE"), None);
    }

    #[test]
    fn shadow_host() {
        assert_eq!(shadow_authority("a.example"), "a.example-shadow");
        assert_eq!(shadow_authority("a.example:8080"), "a.example-shadow:8080");
        assert_eq!(shadow_authority("[::1]:80"), "[::1]-shadow:80");
    }
}
