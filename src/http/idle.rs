//! The stream idle timeout (Envoy's `stream_idle_timeout`; `--stream-idle-timeout`, off by
//! default as istiod configures gateways). While a request waits for its response head
//! ([`IdleWatch`], in the proxy's retry loop): with no byte of request body and no response
//! for that long, the client gets 504 `stream timeout` (408 while its body was still due),
//! flag `SI`, instead of waiting forever on an upstream that accepted the request and went
//! silent. A route `timeout` bounds the whole exchange; this bounds silence.
//!
//! Activity is the request's start, the end of a buffered body, and every byte of a streamed
//! body (its running count, read at each check, so the body's hot path pays nothing). While
//! a body streams, the count is looked at every quarter of the limit, so the timeout fires
//! between one and one and a quarter limits after the last byte.
//!
//! A small body that is buffered before it is sent (to be replayable) is read under the
//! same limit, frame to frame ([`Watched`]).
//!
//! Once the response head has gone out: HTTP/2 streams are watched by their connection
//! ([`StreamActivity`], swept from `server::serve_h2`, polled through `h2streams`), and an
//! HTTP/1.1 response being written by its connection's task ([`quiet`] on the fast path,
//! [`QuietTicks`] in `keepalive::serve_round`), which closes the connection when it stalls.
//! Either way the request's record is flagged `SI` through its `StreamActivity`.
//!
//! Depends on: std, tokio (timer), http-body, futures-util (`AtomicWaker`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::body::DOWNSTREAM_FAILED;
use crate::config::duration::NEVER;

/// Sweeps of a quarter limit each without activity that expire an answered HTTP/2 stream:
/// it fires between one and one and a quarter limits after the stream's last activity.
pub(super) const QUIET_SWEEPS: u32 = 5;

/// One HTTP/2 stream's activity once its response head has gone out, when the stream idle
/// timeout is on. Its future's polls are activity (it is polled only when woken: by data
/// from the upstream, window from the client, or its end), and so is a streamed request
/// body's byte count, read at each sweep; the connection sweeps every quarter limit and
/// expires a stream that stayed quiet, which its future then ends (a reset to the client).
#[derive(Debug, Default)]
pub(crate) struct StreamActivity {
    quiet: AtomicU32,
    responded: AtomicBool,
    expired: AtomicBool,
    body: OnceLock<Arc<AtomicU64>>,
    seen: AtomicU64,
    waker: AtomicWaker,
}

impl StreamActivity {
    /// The stream's future is being polled by `cx`'s task.
    pub(super) fn touch(&self, cx: &Context<'_>) {
        self.quiet.store(0, Ordering::Relaxed);
        self.waker.register(cx.waker());
    }

    /// The response head was handed over: from now on the sweeps watch the stream.
    pub(super) fn responded(&self) {
        self.responded.store(true, Ordering::Relaxed);
    }

    /// Count a streamed request body's bytes as activity.
    pub(super) fn watch_body(&self, count: Arc<AtomicU64>) {
        let _ = self.body.set(count);
    }

    /// The stream timed out: its end is logged with `SI`.
    pub(super) fn expire(&self) {
        self.expired.store(true, Ordering::Relaxed);
    }

    /// Whether a sweep expired the stream.
    pub(crate) fn is_expired(&self) -> bool {
        self.expired.load(Ordering::Relaxed)
    }

    /// One sweep; true when it expired the stream (and woke its future to end it).
    pub(super) fn sweep(&self) -> bool {
        if !self.responded.load(Ordering::Relaxed) || self.is_expired() {
            return false;
        }
        if let Some(count) = self.body.get() {
            let n = read(count);
            if self.seen.swap(n, Ordering::Relaxed) != n {
                self.quiet.store(0, Ordering::Relaxed);
                return false;
            }
        }
        if self.quiet.fetch_add(1, Ordering::Relaxed) + 1 < QUIET_SWEEPS {
            return false;
        }
        self.expired.store(true, Ordering::Relaxed);
        self.waker.wake();
        true
    }
}

/// Run `fut` (an HTTP/1.1 response being written) under the stream idle timeout: every poll
/// the timer did not cause is activity (the future is polled only when woken: by response
/// bytes from the upstream, or room in the client's socket). Quiet for `QUIET_SWEEPS`
/// quarter limits in a row, `fut` is dropped, `act` expired, and `None` returned.
pub(super) async fn quiet<F: Future>(
    limit: Duration,
    act: &StreamActivity,
    fut: F,
) -> Option<F::Output> {
    let mut ticks = QuietTicks::new(limit);
    let tick = tokio::time::sleep(ticks.period);
    tokio::pin!(tick, fut);
    std::future::poll_fn(|cx| {
        if ticks.poll(tick.as_mut(), cx, true, false).is_ready() {
            act.expire();
            return Poll::Ready(None);
        }
        fut.as_mut().poll(cx).map(Some)
    })
    .await
}

/// The quarter-limit ticks of an HTTP/1.1 connection's stream idle check.
#[derive(Debug)]
pub(super) struct QuietTicks {
    period: Duration,
    quiet: u32,
}

impl QuietTicks {
    /// Ticks for `limit`.
    pub(super) fn new(limit: Duration) -> Self {
        Self {
            period: (limit.min(NEVER) / 4).max(Duration::from_millis(1)),
            quiet: 0,
        }
    }

    /// The tick period.
    pub(super) fn period(&self) -> Duration {
        self.period
    }

    /// Called on every poll of the watched work, before it is polled: `Ready` once it has
    /// been quiet for `QUIET_SWEEPS` ticks while `watching` (a response being written).
    /// A poll that neither this tick nor another timer of the task (`timer_woke`) caused
    /// is activity.
    pub(super) fn poll(
        &mut self,
        mut tick: Pin<&mut Sleep>,
        cx: &mut Context<'_>,
        watching: bool,
        timer_woke: bool,
    ) -> Poll<()> {
        if tick.as_mut().poll(cx).is_pending() {
            if !timer_woke {
                self.quiet = 0;
            }
            return Poll::Pending;
        }
        if watching {
            self.quiet += 1;
            if self.quiet >= QUIET_SWEEPS {
                return Poll::Ready(());
            }
        } else {
            self.quiet = 0;
        }
        tick.as_mut()
            .reset(tokio::time::Instant::now() + self.period);
        // Registers the new deadline with this task.
        let _ = tick.poll(cx);
        Poll::Pending
    }
}

/// The earlier of two optional deadlines.
pub(super) fn earliest<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

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
        let limit = limit.min(NEVER);
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
        let limit = limit.filter(|l| !l.is_zero())?.min(NEVER);
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
