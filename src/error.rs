//! `ProxyError`: every way a request can fail on the hot path. `status()`, `flag()` and
//! `retry_conditions()` are the only places that decide the HTTP status, the Envoy response
//! flag and which `retryOn` conditions cover the failure.
//!
//! Depends on: std, http, `route` (retry vocabulary).

use std::fmt;

use http::StatusCode;

use crate::route::RetryOn;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Upstream refused or failed the TCP connection.
    ConnectFailed,
    /// Upstream did not accept the connection in time.
    ConnectTimeout,
    /// The client went away.
    DownstreamClosed,
    /// A bug or an impossible state.
    Internal,
    /// The request itself is malformed.
    BadRequest,
    /// No endpoint could be chosen (empty cluster, or DNS gave nothing).
    NoHealthyEndpoint,
    /// The Host does not belong to the TLS server the SNI chose.
    Misdirected,
    /// No route matched.
    NoRoute,
    /// The destination's connectionPool limits are reached (circuit breaker open).
    Overflow,
    /// The request body exceeded a limit.
    RequestTooLarge,
    /// HTTP/2 REFUSED_STREAM: the upstream did not process the request.
    RefusedStream,
    /// The upstream closed or reset before a complete response head.
    UpstreamReset,
    /// The TLS handshake with the upstream failed (certificate, protocol).
    UpstreamTls,
    /// The per-try timeout fired.
    PerTryTimeout,
    /// The route timeout fired.
    RouteTimeout,
    /// The stream idle timeout fired after the whole request arrived (no response head).
    StreamIdle,
    /// The stream idle timeout fired while the request body was still due.
    RequestIdle,
    /// A protocol upgrade (WebSocket) cannot be carried to this upstream (HTTP/2 only).
    UpgradeUnsupported,
}

/// Who is to blame, as in pingora's `ErrorSource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Internal,
    Upstream,
}

/// A hot-path error with its blame and what is known about the request's fate.
#[derive(Debug)]
pub struct ProxyError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Whether it happened on a pooled connection that had served requests before.
    pub reused: bool,
    /// Underlying cause, for logs.
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ProxyError {
    /// An error of `kind` with no cause.
    pub fn new(kind: ErrorKind) -> Self {
        Self {
            kind,
            reused: false,
            source: None,
        }
    }

    /// An error of `kind` caused by `source`.
    pub fn with(
        kind: ErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            reused: false,
            source: Some(source.into()),
        }
    }

    /// Who is to blame.
    pub fn side(&self) -> Side {
        match self.kind {
            ErrorKind::DownstreamClosed
            | ErrorKind::BadRequest
            | ErrorKind::RequestTooLarge
            | ErrorKind::NoRoute
            | ErrorKind::Misdirected
            // Stream-level, as Envoy's connection manager sees it: not an upstream failure
            // for outlier detection.
            | ErrorKind::StreamIdle
            | ErrorKind::RequestIdle => Side::Downstream,
            ErrorKind::Internal => Side::Internal,
            _ => Side::Upstream,
        }
    }

    /// The status sent to the client, as Envoy gives it.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::PerTryTimeout | ErrorKind::RouteTimeout => StatusCode::GATEWAY_TIMEOUT,
            // Envoy: 504 once the request was received whole, 408 while it was still due.
            ErrorKind::StreamIdle => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::RequestIdle => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::UpgradeUnsupported => StatusCode::BAD_GATEWAY,
            // Envoy's 0 / "downstream disconnect" is not an HTTP status; nobody reads it.
            ErrorKind::DownstreamClosed => StatusCode::BAD_REQUEST,
            ErrorKind::ConnectFailed
            | ErrorKind::ConnectTimeout
            | ErrorKind::NoHealthyEndpoint
            | ErrorKind::RefusedStream
            | ErrorKind::UpstreamReset
            | ErrorKind::UpstreamTls
            | ErrorKind::Overflow => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The short plain-text body Envoy sends with `status()`.
    pub fn body(&self) -> &'static str {
        match self.kind {
            ErrorKind::NoRoute => "",
            ErrorKind::Misdirected => "misdirected request",
            ErrorKind::NoHealthyEndpoint => "no healthy upstream",
            ErrorKind::ConnectFailed | ErrorKind::ConnectTimeout => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
            }
            ErrorKind::Overflow => {
                "upstream connect error or disconnect/reset before headers. reset reason: overflow"
            }
            ErrorKind::UpstreamTls => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS error"
            }
            ErrorKind::RefusedStream => {
                "upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset"
            }
            ErrorKind::UpstreamReset => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            }
            ErrorKind::PerTryTimeout | ErrorKind::RouteTimeout => "upstream request timeout",
            ErrorKind::StreamIdle | ErrorKind::RequestIdle => "stream timeout",
            ErrorKind::RequestTooLarge => "payload too large",
            ErrorKind::BadRequest => "bad request",
            ErrorKind::DownstreamClosed => "downstream closed",
            ErrorKind::Internal => "internal error",
            ErrorKind::UpgradeUnsupported => "upgrade failed",
        }
    }

    /// Envoy's response flag for this failure.
    pub fn flag(&self) -> &'static str {
        match self.kind {
            ErrorKind::NoRoute | ErrorKind::Misdirected => "NR",
            ErrorKind::NoHealthyEndpoint => "UH",
            ErrorKind::Overflow => "UO",
            ErrorKind::ConnectFailed | ErrorKind::ConnectTimeout | ErrorKind::UpstreamTls => "UF",
            ErrorKind::RefusedStream => "UR",
            ErrorKind::UpstreamReset => "UC",
            ErrorKind::PerTryTimeout | ErrorKind::RouteTimeout => "UT",
            ErrorKind::StreamIdle | ErrorKind::RequestIdle => "SI",
            ErrorKind::DownstreamClosed => "DC",
            ErrorKind::RequestTooLarge | ErrorKind::BadRequest => "DPE",
            ErrorKind::Internal => "-",
            ErrorKind::UpgradeUnsupported => "UPE",
        }
    }

    /// Which `retryOn` conditions cover this failure (Envoy: any reset counts as 5xx and as
    /// gateway-error; a connect failure is also a reset).
    pub fn retry_conditions(&self) -> RetryOn {
        let resetish = RetryOn::RESET | RetryOn::FIVE_XX | RetryOn::GATEWAY_ERROR;
        match self.kind {
            ErrorKind::ConnectFailed | ErrorKind::ConnectTimeout | ErrorKind::UpstreamTls => {
                resetish | RetryOn::CONNECT_FAILURE
            }
            ErrorKind::RefusedStream => resetish | RetryOn::REFUSED_STREAM,
            ErrorKind::UpstreamReset | ErrorKind::PerTryTimeout => resetish,
            _ => RetryOn::default(),
        }
    }

    /// Whether the upstream can have seen (part of) the request. Connect failures and
    /// refused streams prove it did not, so even a POST may be sent again.
    pub fn request_may_have_reached_upstream(&self) -> bool {
        !matches!(
            self.kind,
            ErrorKind::ConnectFailed
                | ErrorKind::ConnectTimeout
                | ErrorKind::UpstreamTls
                | ErrorKind::RefusedStream
                | ErrorKind::NoHealthyEndpoint
        )
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.kind)?;
        if self.reused {
            f.write_str(" on reused connection")?;
        }
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_flag_and_retry_table() {
        use ErrorKind::*;
        let table = [
            (NoRoute, 404, "NR", false),
            (NoHealthyEndpoint, 503, "UH", false),
            (ConnectFailed, 503, "UF", true),
            (UpstreamReset, 503, "UC", true),
            (PerTryTimeout, 504, "UT", true),
            (RouteTimeout, 504, "UT", false),
        ];
        for (kind, status, flag, resetish) in table {
            let e = ProxyError::new(kind);
            assert_eq!(e.status().as_u16(), status, "{kind:?}");
            assert_eq!(e.flag(), flag, "{kind:?}");
            assert_eq!(
                e.retry_conditions().any(RetryOn::FIVE_XX),
                resetish,
                "{kind:?}"
            );
        }
        assert!(ProxyError::new(ConnectFailed)
            .retry_conditions()
            .any(RetryOn::CONNECT_FAILURE));
        assert!(!ProxyError::new(UpstreamReset)
            .retry_conditions()
            .any(RetryOn::CONNECT_FAILURE));
        assert!(!ProxyError::new(ConnectFailed).request_may_have_reached_upstream());
        assert!(ProxyError::new(UpstreamReset).request_may_have_reached_upstream());
    }
}
