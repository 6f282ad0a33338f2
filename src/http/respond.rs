//! Synthetic responses: errors (`ProxyError` -> status + short body), redirects and direct
//! responses. The only place that builds a response meshgate invents.
//!
//! Depends on: http, `error`, `body`, `route`.

use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;
use crate::error::{ErrorKind, ProxyError};
use crate::route::{AbortStatus, DirectResponse};

/// The response for a failed request.
pub fn error(e: &ProxyError) -> Response<ProxyBody> {
    let mut r = text(e.status(), e.body());
    if e.kind == ErrorKind::Overflow {
        r.headers_mut()
            .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    }
    r
}

/// The gRPC form of a failed request: HTTP 200, trailers-only, `grpc-status` mapped from
/// the HTTP status as Envoy maps it, the short text in `grpc-message`. Returns the code too.
pub fn grpc_error(e: &ProxyError) -> (Response<ProxyBody>, u32) {
    let code: u32 = match e.status().as_u16() {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    };
    let mut r = Response::new(ProxyBody::empty());
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(code));
    let msg = if e.body().is_empty() {
        "no route"
    } else {
        e.body()
    };
    h.insert("grpc-message", HeaderValue::from_static(msg));
    if e.kind == ErrorKind::Overflow {
        h.insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    }
    (r, code)
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(body));
    *r.status_mut() = status;
    if !body.is_empty() {
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r
}

/// A redirect to `location`.
pub fn redirect(code: StatusCode, location: &str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::empty());
    *r.status_mut() = code;
    match HeaderValue::from_str(location) {
        Ok(v) => {
            r.headers_mut().insert(LOCATION, v);
        }
        Err(_) => *r.status_mut() = StatusCode::BAD_REQUEST,
    }
    r
}

/// A request aborted by `fault.abort` (Envoy's body and, for gRPC, its trailers-only form).
/// Returns the gRPC status sent, if any.
pub fn fault_abort(status: AbortStatus) -> (Response<ProxyBody>, Option<u32>) {
    match status {
        AbortStatus::Http(code) => (text(code, "fault filter abort"), None),
        AbortStatus::Grpc(code) => {
            let mut r = Response::new(ProxyBody::empty());
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            h.insert("grpc-status", HeaderValue::from(code));
            h.insert(
                "grpc-message",
                HeaderValue::from_static("fault filter abort"),
            );
            (r, Some(code))
        }
    }
}

/// The answer to a CORS preflight: 200, no body, these headers.
pub fn preflight(headers: http::HeaderMap) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::empty());
    *r.headers_mut() = headers;
    r
}

/// A configured `directResponse`.
pub fn direct(d: &DirectResponse) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(d.body.clone()));
    *r.status_mut() = d.status;
    if !d.body.is_empty() {
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r
}
