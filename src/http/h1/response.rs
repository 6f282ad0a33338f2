//! Writing a response head for the fast path, with the framing hyper's server would choose
//! (RFC 9112 §6): no body after HEAD, 1xx, 204 and 304; `Content-Length` when the body's
//! size is known; chunked otherwise, with trailers only for the fields the `Trailer` header
//! announced. The upstream's own framing headers never pass (they were hop-by-hop); a
//! `Date` is added when the response has none, from a per-thread cache updated once a second.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::response::Parts;
use http::{HeaderMap, HeaderName, Method, StatusCode};
use http_body::SizeHint;

use crate::http::framing::{parse_decimal, push_decimal, trim, ConnTokens};
use crate::http::names::{lowercase_token, Field};
use crate::upstream::h1::RawFields;

/// How the body follows the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body bytes at all.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked; the trailer fields that may be sent (those the `Trailer` header names).
    Chunked(Vec<HeaderName>),
}

/// The head written and what follows it.
#[derive(Debug)]
pub(crate) struct Plan {
    /// How the body is framed.
    pub(crate) framing: Framing,
    /// The connection closes after this response.
    pub(crate) close: bool,
}

/// What the encoder needs to know about the body, read before the head is written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyShape {
    /// The body has no bytes and no trailers.
    pub(crate) empty: bool,
    /// Its exact size, when known.
    pub(crate) exact: Option<u64>,
}

impl BodyShape {
    /// From a body's `is_end_stream` and `size_hint`.
    pub(crate) fn of(end: bool, hint: &SizeHint) -> Self {
        Self {
            empty: end,
            exact: hint.exact(),
        }
    }
}

/// Append the head of `parts` (and of `raw`, the upstream fields not in `parts`) to
/// `dst`. `close`: the connection is to close after this response (the client asked, or
/// the gateway is draining); a `Connection: close` from the gateway's own answers closes it
/// too.
pub(crate) fn encode(
    dst: &mut Vec<u8>,
    parts: &Parts,
    raw: Option<&RawFields>,
    method: &Method,
    body: BodyShape,
    mut close: bool,
) -> Plan {
    // Raw names keep the upstream's case and are written in lowercase, as the map's are.
    let fields = || {
        raw.into_iter().flat_map(RawFields::iter).chain(
            parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
        )
    };
    let named = |field: Field| {
        fields()
            .filter(move |(n, _)| Field::of(n) == field)
            .map(|(_, v)| v)
    };
    let status = parts.status;
    status_line(dst, status);
    let no_body = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    // A HEAD or 304 answer may describe the length of what a GET would get (RFC 9110
    // §8.6); 1xx and 204 never carry one.
    let keep_length = *method == Method::HEAD || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::None
    } else if body.empty {
        Framing::Length(0)
    } else if let Some(n) = body.exact {
        Framing::Length(n)
    } else if let Some(n) = single_length(named(Field::ContentLength)) {
        Framing::Length(n)
    } else {
        Framing::Chunked(announced_trailers(named(Field::Trailer)))
    };
    let mut wrote_date = false;
    let mut wrote_connection = false;
    let mut wrote_length = false;
    let mut field = |name: &[u8], value: &[u8]| {
        match Field::of(name) {
            Field::TransferEncoding => return,
            Field::ContentLength if !(no_body && keep_length) => return,
            Field::ContentLength => wrote_length = true,
            Field::Trailer if !matches!(framing, Framing::Chunked(_)) => return,
            Field::Date => wrote_date = true,
            Field::Connection => wrote_connection = true,
            _ => {}
        }
        let at = dst.len();
        dst.extend_from_slice(name);
        lowercase_token(&mut dst[at..]);
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value);
        dst.extend_from_slice(b"\r\n");
    };
    // Two loops rather than `fields()`: the chained iterator cost more than the writing.
    for (name, value) in raw.into_iter().flat_map(RawFields::iter) {
        field(name, value);
    }
    for (name, value) in &parts.headers {
        field(name.as_str().as_bytes(), value.as_bytes());
    }
    if wrote_connection && ConnTokens::of(named(Field::Connection)).close {
        close = true;
    } else if close {
        dst.extend_from_slice(b"connection: close\r\n");
    }
    match &framing {
        Framing::Length(n) => {
            dst.extend_from_slice(b"content-length: ");
            push_decimal(dst, *n);
            dst.extend_from_slice(b"\r\n");
        }
        Framing::Chunked(_) => dst.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        // A HEAD answer the gateway made itself (a direct response) has the body a GET
        // would get: say how long it is, as Envoy and hyper do.
        Framing::None => {
            if let (true, false, false, Some(n)) = (
                *method == Method::HEAD,
                wrote_length,
                body.empty,
                body.exact,
            ) {
                dst.extend_from_slice(b"content-length: ");
                push_decimal(dst, n);
                dst.extend_from_slice(b"\r\n");
            }
        }
    }
    if !wrote_date {
        dst.extend_from_slice(b"date: ");
        push_date(dst);
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    Plan { framing, close }
}

fn status_line(dst: &mut Vec<u8>, status: StatusCode) {
    if status == StatusCode::OK {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    dst.extend_from_slice(b"HTTP/1.1 ");
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.push(b' ');
    // A reason phrase must be there for some parsers, even an unknown one.
    dst.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    dst.extend_from_slice(b"\r\n");
}

/// The length the `Content-Length` fields give, when there is exactly one that parses.
fn single_length<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<u64> {
    let v = values.next()?;
    if values.next().is_some() {
        return None;
    }
    parse_decimal(trim(v))
}

/// The trailer fields the `Trailer` fields announce.
fn announced_trailers<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<HeaderName> {
    values
        .flat_map(|v| v.split(|&b| b == b','))
        .filter_map(|n| HeaderName::from_bytes(trim(n)).ok())
        .collect()
}

/// Append the trailer section of a chunked body (after the last chunk): the fields of
/// `trailers` that were announced, then the final empty line.
pub(crate) fn encode_trailers(dst: &mut Vec<u8>, allowed: &[HeaderName], trailers: &HeaderMap) {
    for (name, value) in trailers {
        // Framing, routing and authentication fields are never valid as trailers
        // (RFC 9110 §6.5.1).
        let forbidden = matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "host" | "connection" | "trailer" | "te"
        );
        if allowed.contains(name) && !forbidden {
            dst.extend_from_slice(name.as_str().as_bytes());
            dst.extend_from_slice(b": ");
            dst.extend_from_slice(value.as_bytes());
            dst.extend_from_slice(b"\r\n");
        }
    }
    dst.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The formatted date and the second it is for.
    static DATE_CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Append the current time as an HTTP date (IMF-fixdate, 29 bytes).
fn push_date(dst: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                c.1.copy_from_slice(text.as_bytes());
                c.0 = secs;
            } else {
                // Not a four-digit year: not cached, written as it is.
                dst.extend_from_slice(text.as_bytes());
                return;
            }
        }
        dst.extend_from_slice(&c.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn head(status: u16, headers: &[(&str, &str)]) -> Parts {
        let mut r = http::Response::new(());
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        for (n, v) in headers {
            r.headers_mut().append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r.into_parts().0
    }

    fn run(
        parts: &Parts,
        method: Method,
        empty: bool,
        exact: Option<u64>,
        close: bool,
    ) -> (String, Plan) {
        let mut dst = Vec::new();
        let plan = encode(
            &mut dst,
            parts,
            None,
            &method,
            BodyShape { empty, exact },
            close,
        );
        (String::from_utf8(dst).unwrap(), plan)
    }

    #[test]
    fn a_known_length_is_written_once_from_the_body() {
        let p = head(
            200,
            &[("content-type", "text/plain"), ("content-length", "5")],
        );
        let (text, plan) = run(&p, Method::GET, false, Some(5), false);
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"),
            "{text}"
        );
        assert_eq!(text.matches("content-length: 5\r\n").count(), 1, "{text}");
        assert!(
            text.contains("\r\ndate: ") && text.ends_with(" GMT\r\n\r\n"),
            "{text}"
        );
        assert_eq!(plan.framing, Framing::Length(5));
        assert!(!plan.close);
    }

    #[test]
    fn an_unknown_length_is_chunked_with_only_announced_trailers() {
        let p = head(
            404,
            &[
                ("trailer", "grpc-status, x-b"),
                ("transfer-encoding", "chunked"),
            ],
        );
        let (text, plan) = run(&p, Method::POST, false, None, false);
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\ntrailer: grpc-status, x-b\r\n"));
        assert_eq!(text.matches("transfer-encoding").count(), 1, "{text}");
        let Framing::Chunked(allowed) = plan.framing else {
            panic!("{:?}", plan.framing)
        };
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        t.insert("x-c", HeaderValue::from_static("no"));
        t.insert("content-length", HeaderValue::from_static("1"));
        let mut out = Vec::new();
        encode_trailers(&mut out, &allowed, &t);
        assert_eq!(out, b"grpc-status: 0\r\n\r\n");
    }

    #[test]
    fn a_length_header_frames_a_body_of_unknown_size() {
        let p = head(200, &[("content-length", "7")]);
        let (text, plan) = run(&p, Method::GET, false, None, false);
        assert_eq!(plan.framing, Framing::Length(7));
        assert_eq!(text.matches("content-length").count(), 1, "{text}");
    }

    #[test]
    fn bodiless_answers_keep_or_drop_their_length_as_the_rfc_says() {
        let with_len = head(200, &[("content-length", "42")]);
        let (text, plan) = run(&with_len, Method::HEAD, true, Some(0), false);
        assert_eq!(plan.framing, Framing::None);
        assert!(text.contains("content-length: 42\r\n"), "{text}");
        // The gateway's own answer to HEAD: the length of the body it is not sending.
        let direct = head(200, &[]);
        let (text, plan) = run(&direct, Method::HEAD, false, Some(5), false);
        assert_eq!(plan.framing, Framing::None);
        assert_eq!(text.matches("content-length: 5\r\n").count(), 1, "{text}");
        let no_content = head(204, &[("content-length", "0")]);
        let (text, plan) = run(&no_content, Method::GET, true, Some(0), false);
        assert_eq!(plan.framing, Framing::None);
        assert!(!text.contains("content-length"), "{text}");
        let empty = head(200, &[]);
        let (text, plan) = run(&empty, Method::GET, true, Some(0), false);
        assert_eq!(plan.framing, Framing::Length(0));
        assert!(text.contains("content-length: 0\r\n"), "{text}");
    }

    #[test]
    fn close_is_announced_once_and_a_gateway_close_is_obeyed() {
        let p = head(200, &[]);
        let (text, plan) = run(&p, Method::GET, true, Some(0), true);
        assert!(plan.close);
        assert_eq!(text.matches("connection: close").count(), 1, "{text}");
        let refused = head(400, &[("connection", "close")]);
        let (text, plan) = run(&refused, Method::GET, true, Some(0), false);
        assert!(plan.close);
        assert_eq!(text.matches("connection: close").count(), 1, "{text}");
    }

    #[test]
    fn raw_upstream_fields_are_written_in_order_in_lowercase() {
        let raw = RawFields::parse(
            b"HTTP/1.1 200 OK\r\nServer: up\r\nSet-Cookie: a=1\r\nX-A: 1\r\nset-cookie: b=2\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
        );
        // What the gateway added goes after the upstream's fields.
        let p = head(200, &[("x-added", "yes")]);
        let mut dst = Vec::new();
        let plan = encode(
            &mut dst,
            &p,
            Some(&raw),
            &Method::GET,
            BodyShape {
                empty: false,
                exact: Some(2),
            },
            false,
        );
        assert_eq!(
            String::from_utf8(dst).unwrap(),
            "HTTP/1.1 200 OK\r\nserver: up\r\nset-cookie: a=1\r\nx-a: 1\r\nset-cookie: b=2\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\nx-added: yes\r\ncontent-length: 2\r\n\r\n"
        );
        assert_eq!(plan.framing, Framing::Length(2));
        // Unknown size: the raw length frames it; a raw Trailer announces trailers.
        let unknown_size = |wire: &'static [u8]| {
            let mut dst = Vec::new();
            let shape = BodyShape {
                empty: false,
                exact: None,
            };
            let raw = RawFields::parse(wire);
            let plan = encode(
                &mut dst,
                &head(200, &[]),
                Some(&raw),
                &Method::GET,
                shape,
                false,
            );
            (String::from_utf8(dst).unwrap(), plan)
        };
        let (_, plan) = unknown_size(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(plan.framing, Framing::Length(9));
        let (text, plan) = unknown_size(b"HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\n\r\n");
        assert_eq!(
            plan.framing,
            Framing::Chunked(vec![HeaderName::from_static("x-sum")])
        );
        assert!(text.contains("\r\ntrailer: X-Sum\r\n"), "{text}");
    }

    #[test]
    fn an_upstream_date_is_kept_and_unknown_codes_get_a_reason() {
        let p = head(599, &[("date", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        let (text, _) = run(&p, Method::GET, true, Some(0), false);
        assert!(text.starts_with("HTTP/1.1 599 Unknown\r\n"), "{text}");
        assert_eq!(text.matches("date:").count(), 1, "{text}");
    }
}
