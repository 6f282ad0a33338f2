//! Reading one HTTP/1.1 request for the fast path: the head parsed with httparse straight
//! from the connection's buffered bytes (header values are slices of them, not copies), and
//! a `Content-Length` body taken whole from the same bytes.
//!
//! Anything the fast path does not serve is left to hyper, which then answers it exactly
//! as before (including every error status): an incomplete or malformed head, one over
//! the limits, HTTP/1.0, `CONNECT`, `Upgrade`, `Expect`, `Transfer-Encoding`, several
//! `Content-Length` fields, or a body that has not fully arrived or is too large to hold.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use crate::body::DownBody;
use crate::http::framing::{parse_decimal, trim, ConnTokens};
use crate::http::names;
use crate::http::server::HttpLimits;

/// Most header fields the fast path parses (Envoy's default count limit); a request with
/// more goes to hyper, which applies the configured limit.
const FIELDS: usize = 100;

/// Room left in the header map for what the gateway adds (request id, trace context,
/// x-forwarded-*), so adding them does not grow the map.
const ADDED: usize = 10;

/// A request the fast path serves.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// The request, its body in hand.
    pub(crate) req: Request<DownBody>,
    /// Bytes it took in the buffer (head and body).
    pub(crate) len: usize,
    /// The client asked to close the connection after this exchange.
    pub(crate) close: bool,
}

/// Parse the request at the start of `buf`; `None` when hyper must serve it (see the
/// module documentation). Bodies longer than `max_body` are left to hyper (streamed).
pub(crate) fn parse(buf: &Bytes, limits: &HttpLimits, max_body: usize) -> Option<Parsed> {
    let mut fields = [MaybeUninit::<httparse::Header<'_>>::uninit(); FIELDS];
    let mut head = httparse::Request::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut head,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    if head_len > limits.max_request_head
        || head.headers.len() > limits.max_request_headers
        || head.version != Some(1)
    {
        return None;
    }
    let method = Method::from_bytes(head.method?.as_bytes()).ok()?;
    if method == Method::CONNECT {
        return None;
    }
    let uri = Uri::from_maybe_shared(buf.slice_ref(head.path?.as_bytes())).ok()?;
    let mut headers = HeaderMap::with_capacity(head.headers.len() + ADDED);
    let mut body_len: Option<u64> = None;
    let mut conn = ConnTokens::default();
    for f in head.headers.iter() {
        let name = match names::known(f.name.as_bytes()) {
            Some(n) => n,
            None => HeaderName::from_bytes(f.name.as_bytes()).ok()?,
        };
        if name == TRANSFER_ENCODING || name == UPGRADE || name == EXPECT {
            return None;
        }
        if name == CONTENT_LENGTH {
            if body_len.is_some() {
                return None;
            }
            body_len = Some(parse_decimal(trim(f.value))?);
        } else if name == CONNECTION && conn.note(f.value) {
            // Only `close` and `keep-alive`: hop-by-hop, stripped before forwarding anyway,
            // and, as in Envoy (which cleans them before routing), nothing for a route to
            // match. Left out of the map, neither the insertion nor the strip's search of
            // its tokens is paid (a browser sends `keep-alive` on every request).
            continue;
        }
        let value = HeaderValue::from_maybe_shared(buf.slice_ref(f.value)).ok()?;
        headers.append(name, value);
    }
    let body_len = usize::try_from(body_len.unwrap_or(0)).ok()?;
    if body_len > max_body || buf.len() - head_len < body_len {
        return None;
    }
    let body = (body_len > 0).then(|| buf.slice(head_len..head_len + body_len));
    let mut req = Request::new(DownBody::Full(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Some(Parsed {
        req,
        len: head_len + body_len,
        close: conn.close,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    fn parse_str(s: &str) -> Option<Parsed> {
        parse(
            &Bytes::copy_from_slice(s.as_bytes()),
            &HttpLimits::default(),
            1024,
        )
    }

    #[test]
    fn a_plain_get_is_parsed_with_its_headers_in_order() {
        let p = parse_str("GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\nGET")
            .unwrap_or_else(|| panic!("not parsed"));
        assert_eq!(
            p.len,
            "GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\n".len()
        );
        assert!(!p.close);
        assert_eq!(p.req.method(), Method::GET);
        assert_eq!(p.req.uri().path(), "/a/b");
        assert_eq!(p.req.uri().query(), Some("x=1"));
        let a: Vec<_> = p.req.headers().get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        assert!(p.req.body().is_end_stream());
    }

    #[test]
    fn a_body_that_arrived_whole_is_taken_with_its_head() {
        let p = parse_str("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET")
            .unwrap_or_else(|| panic!("not parsed"));
        assert_eq!(p.req.body().size_hint().exact(), Some(5));
        assert_eq!(
            p.len,
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello".len()
        );
    }

    #[test]
    fn connection_close_is_noted() {
        let p = parse_str("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n")
            .unwrap_or_else(|| panic!("not parsed"));
        assert!(p.close);
        // Nothing left to strip: the field is not in the map.
        assert!(p.req.headers().get("connection").is_none());
    }

    #[test]
    fn a_connection_field_naming_other_fields_stays_for_the_strip() {
        let p =
            parse_str("GET / HTTP/1.1\r\nHost: h\r\nConnection: close, x-hop\r\nX-Hop: 1\r\n\r\n")
                .unwrap_or_else(|| panic!("not parsed"));
        assert!(p.close);
        assert_eq!(
            p.req.headers().get("connection").map(|v| v.as_bytes()),
            Some(&b"close, x-hop"[..])
        );
    }

    #[test]
    fn what_hyper_must_serve_is_left_to_it() {
        for raw in [
            "GET / HTTP/1.1\r\nHost: h\r\n",                 // incomplete
            "GET / HTTP/1.0\r\nHost: h\r\n\r\n",             // HTTP/1.0
            "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", // tunnel
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\nx",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nshort", // not all here
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n\r\n",    // over max_body
            "GET / HTTP/1.1\r\nHo st: h\r\n\r\n",                            // malformed
            "GET / HTTP/1.1\r\nHost: h\0\r\n\r\n", // poisoned by the guard
        ] {
            assert!(parse_str(raw).is_none(), "taken by the fast path: {raw:?}");
        }
    }

    #[test]
    fn limits_send_the_request_to_hyper_for_its_error_status() {
        let limits = HttpLimits {
            max_request_headers: 2,
            max_request_head: 64,
            ..HttpLimits::default()
        };
        let three = Bytes::from_static(b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n");
        assert!(parse(&three, &limits, 0).is_none());
        let long = Bytes::from(format!(
            "GET /{} HTTP/1.1\r\nHost: h\r\n\r\n",
            "a".repeat(64)
        ));
        assert!(parse(&long, &limits, 0).is_none());
        let many = "X: 1\r\n".repeat(FIELDS + 1);
        let many = Bytes::from(format!("GET / HTTP/1.1\r\n{many}\r\n"));
        assert!(parse(&many, &HttpLimits::default(), 0).is_none());
    }
}
