//! Passive health checking (DestinationRule `outlierDetection`): an endpoint that returns too
//! many consecutive 5xx (or gateway errors: 502, 503, 504 and connection failures) is
//! ejected for `baseEjectionTime` × the number of times it has been ejected, within
//! `maxEjectionPercent` of the cluster (at least one endpoint). When fewer than
//! `minHealthPercent` of the endpoints are healthy, ejections are ignored (Envoy's panic
//! mode), so traffic is never sent nowhere.
//!
//! Depends on: std.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Compiled `outlierDetection`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierPolicy {
    /// Eject after this many consecutive 5xx (including connection failures).
    pub consecutive_5xx: Option<u32>,
    /// Eject after this many consecutive 502/503/504 or connection failures.
    pub consecutive_gateway: Option<u32>,
    /// Base ejection time, multiplied by the number of ejections so far.
    pub base_ejection: Duration,
    /// Most endpoints that may be ejected at once, in percent (at least one).
    pub max_ejection_percent: u32,
    /// Below this share of healthy endpoints ejections are ignored, in percent.
    pub min_health_percent: u32,
}

impl Default for OutlierPolicy {
    /// Istio's defaults when `outlierDetection` is present.
    fn default() -> Self {
        Self {
            consecutive_5xx: Some(5),
            consecutive_gateway: None,
            base_ejection: Duration::from_secs(30),
            max_ejection_percent: 10,
            min_health_percent: 0,
        }
    }
}

/// What happened to a request, as outlier detection counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status.
    Status(u16),
    /// No response: connection failure, reset or timeout.
    Failure,
}

/// Per-endpoint state.
#[derive(Debug, Default)]
pub struct Health {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    ejections: AtomicU32,
    /// Milliseconds since `epoch` until which the endpoint is ejected; 0 when not ejected.
    ejected_until: AtomicU64,
}

/// The clock origin for ejection times (process-wide, monotonic).
fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Health {
    /// Whether the endpoint is ejected now.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Acquire);
        until != 0 && now_ms() < until
    }

    /// Record an outcome; returns true when this call ejected the endpoint. `can_eject` says
    /// whether the cluster's `maxEjectionPercent` still allows one more ejection.
    pub fn record(
        &self,
        policy: &OutlierPolicy,
        outcome: Outcome,
        can_eject: impl Fn() -> bool,
    ) -> bool {
        let (is_5xx, is_gateway) = match outcome {
            Outcome::Failure => (true, true),
            Outcome::Status(s) => (s >= 500, matches!(s, 502..=504)),
        };
        let bump = |c: &AtomicU32, hit: bool| {
            if hit {
                c.fetch_add(1, Ordering::AcqRel) + 1
            } else {
                c.store(0, Ordering::Release);
                0
            }
        };
        let n5 = bump(&self.consecutive_5xx, is_5xx);
        let ng = bump(&self.consecutive_gateway, is_gateway);
        let trip = policy.consecutive_5xx.is_some_and(|t| t > 0 && n5 >= t)
            || policy.consecutive_gateway.is_some_and(|t| t > 0 && ng >= t);
        if !trip || self.is_ejected() || !can_eject() {
            return false;
        }
        let times = self.ejections.fetch_add(1, Ordering::AcqRel) + 1;
        let ms = u64::try_from(policy.base_ejection.as_millis()).unwrap_or(u64::MAX);
        self.ejected_until.store(
            now_ms().saturating_add(ms.saturating_mul(u64::from(times))),
            Ordering::Release,
        );
        self.consecutive_5xx.store(0, Ordering::Release);
        self.consecutive_gateway.store(0, Ordering::Release);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejects_after_consecutive_errors_and_resets_on_success() {
        let p = OutlierPolicy {
            consecutive_5xx: Some(3),
            base_ejection: Duration::from_millis(50),
            ..OutlierPolicy::default()
        };
        let h = Health::default();
        assert!(!h.record(&p, Outcome::Status(500), || true));
        assert!(!h.record(&p, Outcome::Status(200), || true));
        assert!(!h.record(&p, Outcome::Status(503), || true));
        assert!(!h.record(&p, Outcome::Failure, || true));
        assert!(h.record(&p, Outcome::Status(500), || true));
        assert!(h.is_ejected());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!h.is_ejected());
        // The second ejection lasts twice as long.
        for _ in 0..3 {
            h.record(&p, Outcome::Status(500), || true);
        }
        std::thread::sleep(Duration::from_millis(60));
        assert!(h.is_ejected());
    }

    #[test]
    fn gateway_errors_and_the_ejection_cap() {
        let p = OutlierPolicy {
            consecutive_5xx: None,
            consecutive_gateway: Some(2),
            ..OutlierPolicy::default()
        };
        let h = Health::default();
        h.record(&p, Outcome::Status(500), || true);
        assert!(
            !h.record(&p, Outcome::Status(500), || true),
            "500 is not a gateway error"
        );
        h.record(&p, Outcome::Status(502), || true);
        assert!(!h.record(&p, Outcome::Status(504), || false), "cap reached");
        assert!(!h.is_ejected());
    }
}
