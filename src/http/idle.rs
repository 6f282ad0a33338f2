//! The stream idle timeout while a request waits for its response head (Envoy's
//! `stream_idle_timeout`, default 5 min): with no byte of request body and no response for
//! that long, the client gets 408 `stream timeout` (flag `SI`) instead of waiting forever on
//! an upstream that accepted the request and went silent. A route `timeout` bounds the whole
//! exchange; this bounds silence, and Istio leaves the route timeout off by default.
//!
//! Activity is the request's start, the end of a buffered body, and every byte of a streamed
//! body (its running count, read at each check, so the body's hot path pays nothing). While
//! a body streams, the count is looked at every quarter of the limit, so the timeout fires
//! between one and one and a quarter limits after the last byte.
//!
//! A small body that is buffered before it is sent (to be replayable) is read under the
//! same limit, frame to frame ([`Watched`]).
//!
//! Depends on: std, tokio (timer), http-body.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::body::DOWNSTREAM_FAILED;

/// Longer limits are taken as this one (ten years), so deadlines cannot overflow.
pub(super) const MAX_LIMIT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The error of a [`Watched`] body that went silent for the whole limit.
#[derive(Debug, thiserror::Error)]
#[error("no request body bytes within the stream idle timeout")]
pub(super) struct Stalled;

/// A body that fails with [`Stalled`] when no frame comes for `limit`.
pub(super) struct Watched<B> {
    inner: B,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<B> Watched<B> {
    /// Watch `inner`, its silence counted from now.
    pub(super) fn new(inner: B, limit: Duration) -> Self {
        let limit = limit.min(MAX_LIMIT);
        Self {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl<B> Body for Watched<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.limit;
                this.timer.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Stalled)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Tracks one request's last activity against the stream idle limit.
#[derive(Debug)]
pub(super) struct IdleWatch<'a> {
    limit: Duration,
    /// Bytes read so far from a streamed request body.
    body: Option<&'a AtomicU64>,
    seen: u64,
    last: Instant,
    checked: Instant,
}

impl<'a> IdleWatch<'a> {
    /// A watch whose last activity is `now`; `None` when the timeout is off.
    pub(super) fn new(
        limit: Option<Duration>,
        body: Option<&'a AtomicU64>,
        now: Instant,
    ) -> Option<Self> {
        let limit = limit.filter(|l| !l.is_zero())?.min(MAX_LIMIT);
        Some(Self {
            limit,
            body,
            seen: body.map_or(0, read),
            last: now,
            checked: now,
        })
    }

    /// When to look again: the end of the limit, or sooner while a body may still move.
    pub(super) fn next_check(&self) -> Instant {
        let end = self.last + self.limit;
        match self.body {
            Some(_) => end.min(self.checked + self.limit / 4),
            None => end,
        }
    }

    /// Look at `now`: whether the request has been idle for the whole limit.
    pub(super) fn expired(&mut self, now: Instant) -> bool {
        if let Some(count) = self.body {
            let n = read(count);
            if n != self.seen {
                self.seen = n;
                self.last = now;
            }
        }
        self.checked = now;
        now >= self.last + self.limit
    }
}

fn read(count: &AtomicU64) -> u64 {
    count.load(Ordering::Relaxed) & !DOWNSTREAM_FAILED
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(300);

    #[test]
    fn off_when_zero_or_unset() {
        let now = Instant::now();
        assert!(IdleWatch::new(None, None, now).is_none());
        assert!(IdleWatch::new(Some(Duration::ZERO), None, now).is_none());
    }

    #[test]
    fn without_a_body_it_fires_once_at_the_limit() {
        let t0 = Instant::now();
        let mut w = IdleWatch::new(Some(LIMIT), None, t0).unwrap();
        assert_eq!(w.next_check(), t0 + LIMIT);
        assert!(!w.expired(t0 + LIMIT - Duration::from_millis(1)));
        assert!(w.expired(t0 + LIMIT));
    }

    #[test]
    fn a_moving_body_keeps_the_request_alive_and_a_stalled_one_times_out() {
        let t0 = Instant::now();
        let count = AtomicU64::new(0);
        let mut w = IdleWatch::new(Some(LIMIT), Some(&count), t0).unwrap();
        let q = LIMIT / 4;
        // Bytes keep arriving for 20 quarters (five limits): never expired.
        let mut now = t0;
        for i in 1..=20u64 {
            assert_eq!(w.next_check(), now + q);
            now += q;
            count.store(i * 100, Ordering::Relaxed);
            assert!(
                !w.expired(now),
                "expired while the body moved (quarter {i})"
            );
        }
        // Then silence: expires at the fourth quarter after the last byte was seen.
        for k in 1..=3 {
            now = w.next_check();
            assert!(!w.expired(now), "expired after only {k} quiet quarters");
        }
        now = w.next_check();
        assert!(w.expired(now));
        // A body that failed still counts only its bytes.
        count.fetch_or(DOWNSTREAM_FAILED, Ordering::Relaxed);
        assert!(w.expired(now + q));
    }
}
