//! The request `explain` describes: parsed once from a URL plus curl-like options (method,
//! `name: value` headers, SNI, port), so the CLI and the admin endpoint accept the same input.
//!
//! Depends on: http, `route::RequestView`.

use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::route::{host_of, RequestView};

/// Why a request description was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExplainError {
    /// A header is not `name: value`, or its name or value is not valid HTTP.
    #[error("invalid header {line:?}: expected 'name: value'")]
    InvalidHeader {
        /// The header as given.
        line: String,
    },
    /// The method is not an HTTP token.
    #[error("invalid method {method:?}")]
    InvalidMethod {
        /// The method as given.
        method: String,
    },
    /// The URL does not parse or lacks a host.
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A URL scheme other than http and https.
    #[error("unsupported scheme {scheme:?} in {url:?}: use http or https")]
    UnsupportedScheme {
        /// The URL as given.
        url: String,
        /// Its scheme.
        scheme: String,
    },
}

/// A request as the gateway would receive it, described offline.
#[derive(Debug, Clone)]
pub struct ExplainRequest {
    /// The URL as given, for the report.
    pub url: String,
    /// Request method.
    pub method: Method,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The Host header sent: a `Host` header if one was given, else the URL's authority.
    pub authority: String,
    /// Path without the query (`/` when the URL has none).
    pub path: String,
    /// Query without `?`.
    pub query: Option<String>,
    /// Request headers, `host` included (HTTP/1.1 carries it there).
    pub headers: HeaderMap,
    /// SNI of the ClientHello (https only).
    pub sni: Option<String>,
    /// The listener port the request arrives on.
    pub port: u16,
    /// Whether the port was given with `--port` (else it comes from the URL or the scheme).
    pub port_given: bool,
}

impl ExplainRequest {
    /// Describe a request like curl would send it: `header` lines are `name: value`; a
    /// `Host` header replaces the URL's authority; for https the SNI defaults to the URL's
    /// host (none for an IP address, which SNI cannot carry) and `Some("")` means no SNI;
    /// the port defaults to the URL's, else 80 or 443 by scheme.
    pub fn try_new<'a>(
        url: &str,
        method: Option<&str>,
        header: impl IntoIterator<Item = &'a str>,
        sni: Option<&str>,
        port: Option<u16>,
    ) -> Result<Self, ExplainError> {
        let bad_url = |reason: &str| ExplainError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad_url(&e.to_string()))?;
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => "http",
            Some(s) if s.eq_ignore_ascii_case("https") => "https",
            Some(s) => {
                return Err(ExplainError::UnsupportedScheme {
                    url: url.to_owned(),
                    scheme: s.to_owned(),
                })
            }
            None => return Err(bad_url("expected scheme://host/path")),
        };
        let url_authority = uri
            .authority()
            .map(|a| a.as_str().rsplit_once('@').map_or(a.as_str(), |(_, h)| h))
            .filter(|a| !a.is_empty())
            .ok_or_else(|| bad_url("no host"))?
            .to_owned();
        let method = match method {
            None => Method::GET,
            Some(m) => {
                Method::from_bytes(m.as_bytes()).map_err(|_| ExplainError::InvalidMethod {
                    method: m.to_owned(),
                })?
            }
        };
        let mut headers = HeaderMap::new();
        for line in header {
            let (name, value) = parse_header(line)?;
            headers.append(name, value);
        }
        let authority = match headers.get(HOST) {
            Some(h) => h.to_str().unwrap_or_default().to_owned(),
            None => {
                let v = HeaderValue::from_str(&url_authority)
                    .map_err(|_| bad_url("host is not a valid header value"))?;
                headers.insert(HOST, v);
                url_authority.clone()
            }
        };
        // As the proxy does before routing: hop-by-hop fields never reach a header match.
        crate::http::headers::strip_hop_by_hop(&mut headers);
        let url_host = host_of(&url_authority);
        let sni = match (scheme, sni) {
            (_, Some("")) => None,
            (_, Some(s)) => Some(s.to_owned()),
            ("https", None) if url_host.parse::<std::net::IpAddr>().is_err() => {
                Some(url_host.to_owned())
            }
            _ => None,
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        Ok(Self {
            url: url.to_owned(),
            method,
            scheme,
            authority,
            path: match uri.path() {
                "" => "/".to_owned(),
                p => p.to_owned(),
            },
            query: uri.query().map(str::to_owned),
            headers,
            sni,
            port: port.or(uri.port_u16()).unwrap_or(default_port),
            port_given: port.is_some(),
        })
    }

    /// What route matching sees, on listener `port`.
    pub fn view(&self, port: u16) -> RequestView<'_> {
        RequestView {
            method: self.method.as_str(),
            scheme: self.scheme,
            authority: &self.authority,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            port,
        }
    }
}

/// `name: value` (or `name:value`), value trimmed as curl does.
fn parse_header(line: &str) -> Result<(HeaderName, HeaderValue), ExplainError> {
    let bad = || ExplainError::InvalidHeader {
        line: line.to_owned(),
    };
    let (name, value) = line.split_once(':').ok_or_else(bad)?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_curl() {
        let r = ExplainRequest::try_new("https://a.example/p?x=1", None, [], None, None).unwrap();
        assert_eq!(
            (r.scheme, r.port, r.sni.as_deref(), r.authority.as_str()),
            ("https", 443, Some("a.example"), "a.example")
        );
        assert_eq!((r.path.as_str(), r.query.as_deref()), ("/p", Some("x=1")));
        assert_eq!(r.method, Method::GET);
        assert_eq!(r.headers[HOST], "a.example");

        let r = ExplainRequest::try_new(
            "http://10.0.0.1:8080",
            Some("POST"),
            ["Host: b.example", "x-user:  jason "],
            None,
            Some(80),
        )
        .unwrap();
        assert_eq!((r.authority.as_str(), r.path.as_str()), ("b.example", "/"));
        assert_eq!((r.port, r.port_given, r.sni.as_deref()), (80, true, None));
        assert_eq!(r.headers["x-user"], "jason");
        assert_eq!(r.method, Method::POST);

        // An IP address is never sent as SNI; an explicit empty SNI means none.
        let r = ExplainRequest::try_new("https://10.0.0.1:8443/", None, [], None, None).unwrap();
        assert_eq!((r.port, r.sni), (8443, None));
        let r = ExplainRequest::try_new("https://a.example", None, [], Some(""), None).unwrap();
        assert_eq!(r.sni, None);
    }

    #[test]
    fn hop_by_hop_fields_are_dropped_as_the_proxy_drops_them() {
        let r = ExplainRequest::try_new(
            "http://a.example/",
            None,
            [
                "Connection: close, x-named",
                "x-named: 1",
                "Keep-Alive: 5",
                "x-user: j",
            ],
            None,
            None,
        )
        .unwrap();
        let names: Vec<&str> = r.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-user", "host"]);
    }

    #[test]
    fn bad_input_is_named() {
        let e = ExplainRequest::try_new("ftp://a/", None, [], None, None).unwrap_err();
        assert!(matches!(e, ExplainError::UnsupportedScheme { .. }), "{e}");
        let e = ExplainRequest::try_new("/just/a/path", None, [], None, None).unwrap_err();
        assert!(matches!(e, ExplainError::InvalidUrl { .. }), "{e}");
        let e = ExplainRequest::try_new("http://a/", None, ["no-colon"], None, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid header \"no-colon\": expected 'name: value'"
        );
        let e = ExplainRequest::try_new("http://a/", Some("GE T"), [], None, None).unwrap_err();
        assert!(matches!(e, ExplainError::InvalidMethod { .. }), "{e}");
    }
}
