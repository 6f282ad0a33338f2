//! Retry decisions for Istio's `HTTPRetry`, over `ProxyError` and upstream statuses.
//!
//! Rules: a condition in `retryOn` must cover the failure; and a request that may have
//! reached the upstream is sent again only when it is idempotent or the route asked for
//! retries explicitly (Istio's implicit default would re-send a POST; meshgate does not).
//! Whether the body can be replayed is the caller's check.
//!
//! Depends on: `error`, `route`, fastrand.

use std::time::Duration;

use crate::error::ProxyError;
use crate::route::RetryPolicy;

/// Envoy's default retry back-off: 25 ms base, 250 ms cap.
const BASE: Duration = Duration::from_millis(25);
const CAP: Duration = Duration::from_millis(250);

/// Whether `err` on try number `tries` (1-based) should be retried.
pub fn on_error(policy: &RetryPolicy, err: &ProxyError, idempotent: bool, tries: u32) -> bool {
    tries <= policy.attempts
        && policy.on.any(err.retry_conditions())
        && (idempotent || policy.explicit || !err.request_may_have_reached_upstream())
}

/// Whether a response with `status` on try number `tries` should be retried.
pub fn on_status(
    policy: &RetryPolicy,
    status: u16,
    grpc: Option<u32>,
    idempotent: bool,
    tries: u32,
) -> bool {
    tries <= policy.attempts
        && (idempotent || policy.explicit)
        && policy.retries_status(status, grpc)
}

/// Back-off before retry number `retry` (1-based): full jitter over an exponential window.
pub fn backoff(retry: u32) -> Duration {
    let window = BASE
        .saturating_mul(1 << retry.saturating_sub(1).min(8))
        .min(CAP);
    let ms = u64::try_from(window.as_millis()).unwrap_or(250);
    Duration::from_millis(fastrand::u64(0..=ms))
}

/// Whether `method` is idempotent per RFC 9110.
pub fn is_idempotent(method: &http::Method) -> bool {
    matches!(
        method.as_str(),
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::route::RetryOn;

    #[test]
    fn default_policy_never_resends_a_post_that_reached_upstream() {
        let p = RetryPolicy::default();
        let reset = ProxyError::new(ErrorKind::UpstreamReset);
        let refused = ProxyError::new(ErrorKind::ConnectFailed);
        assert!(
            on_error(&p, &refused, false, 1),
            "connect failure is always safe"
        );
        assert!(
            !on_error(&p, &reset, true, 1),
            "reset is not in Istio's default retryOn"
        );
        assert!(
            !on_status(&p, 503, None, false, 1),
            "POST + 503 not re-sent by default"
        );
        assert!(on_status(&p, 503, None, true, 1));
        assert!(!on_status(&p, 503, None, true, 3), "only 2 retries");
        let explicit = RetryPolicy {
            explicit: true,
            on: RetryOn::FIVE_XX,
            ..RetryPolicy::default()
        };
        assert!(on_error(&explicit, &reset, false, 1));
        assert!(on_status(&explicit, 500, None, false, 2));
    }

    #[test]
    fn backoff_is_bounded() {
        for r in 1..20 {
            assert!(backoff(r) <= CAP);
        }
    }
}
