//! Synthetic responses: errors (`ProxyError` -> status + short body), redirects and direct
//! responses. The only place that builds a response meshgate invents.
//!
//! Depends on: http, `error`, `body`, `route`.

use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;
use crate::error::{ErrorKind, ProxyError};
use crate::route::DirectResponse;

/// The response for a failed request.
pub fn error(e: &ProxyError) -> Response<ProxyBody> {
    let mut r = text(e.status(), e.body());
    if e.kind == ErrorKind::Overflow {
        r.headers_mut()
            .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    }
    r
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
