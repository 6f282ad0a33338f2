//! HTTP/2 streams run on their connection's task: hyper hands each accepted stream (and each
//! RFC 8441 tunnel) to an executor, and this one keeps them in a set that the connection's
//! task polls together with the connection, instead of spawning a tokio task per stream.
//!
//! Why: a task per stream costs a spawn (an allocation, the runtime's owned-task list, a
//! schedule) and a scheduler round trip each time a stream and its connection hand work to
//! each other (the stream queues its response, the connection writes it). Here those
//! hand-offs are turns of one loop. Envoy, too, serves every stream of a connection on the
//! worker thread that owns the connection. When the connection ends, streams still running
//! are dropped, which cancels their upstream requests: the client that sent them is gone.
//!
//! Depends on: hyper (`rt::Executor`), futures-util (`FuturesUnordered`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;
use tokio::time::Instant;

use super::coalesce::TurnEnd;
use super::idle::StreamActivity;

type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A spawned future and, for a request stream under the stream idle timeout, its activity:
/// each poll counts as activity, and an expired stream ends at its next poll (dropping the
/// future resets the stream).
struct Tracked {
    fut: StreamFuture,
    act: Option<Arc<StreamActivity>>,
}

impl Future for Tracked {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let Some(act) = &this.act {
            if act.is_expired() {
                return Poll::Ready(());
            }
            act.touch(cx);
        }
        this.fut.as_mut().poll(cx)
    }
}

/// The executor handed to hyper's HTTP/2 server: it queues what hyper spawns for the
/// [`Driven`] future of the same connection.
#[derive(Clone, Default)]
pub(super) struct StreamExec {
    inbox: Arc<Inbox>,
}

#[derive(Default)]
struct Inbox {
    queue: Mutex<Queue>,
    /// Set while `Driven` polls: what is queued then is taken in the same turn, and waking
    /// the running task would only make tokio poll it once more.
    polling: AtomicBool,
    /// The connection task, for a stream queued while it is not being polled.
    waker: AtomicWaker,
}

#[derive(Default)]
struct Queue {
    spawned: Vec<Tracked>,
    /// The activity of the stream whose future comes next: hyper calls the service (which
    /// sets this) and at once hands the stream's future to `execute`.
    next: Option<Arc<StreamActivity>>,
}

impl Inbox {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A panic while the lock was held left nothing half-done: a push or a drain.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let mut queue = self.inbox.queue();
        let act = queue.next.take();
        queue.spawned.push(Tracked {
            fut: Box::pin(fut),
            act,
        });
        drop(queue);
        if !self.inbox.polling.load(Ordering::Acquire) {
            self.inbox.waker.wake();
        }
    }
}

impl StreamExec {
    /// Watch the stream whose future hyper spawns next (see `Queue::next`).
    pub(super) fn track_next(&self, act: Arc<StreamActivity>) {
        self.inbox.queue().next = Some(act);
    }

    /// Drive `conn` (the hyper connection built with this executor) and the streams it
    /// spawns; completes with the connection. `end`, when given, writes what the connection
    /// buffered at the end of each turn (see `coalesce`).
    pub(super) fn drive<'a, C: Future>(
        &self,
        conn: Pin<&'a mut C>,
        end: Option<Arc<dyn TurnEnd>>,
    ) -> Driven<'a, C> {
        Driven {
            conn,
            inbox: self.inbox.clone(),
            streams: FuturesUnordered::new(),
            end,
            idle_since: Some(Instant::now()),
        }
    }
}

/// A connection and its streams, polled on one task.
pub(super) struct Driven<'a, C: Future> {
    conn: Pin<&'a mut C>,
    inbox: Arc<Inbox>,
    streams: FuturesUnordered<Tracked>,
    end: Option<Arc<dyn TurnEnd>>,
    /// Since when no stream has been open (`None` while one is).
    idle_since: Option<Instant>,
}

impl<C: Future> Driven<'_, C> {
    /// The connection, e.g. to start its graceful shutdown.
    pub(super) fn conn(&mut self) -> Pin<&mut C> {
        self.conn.as_mut()
    }

    /// Since when the connection has had no open stream, as of its last turn.
    pub(super) fn idle_since(&self) -> Option<Instant> {
        self.idle_since
    }

    /// Move what hyper spawned into the set; whether there was anything.
    fn take_spawned(&mut self) -> bool {
        let mut queue = self.inbox.queue();
        if queue.spawned.is_empty() {
            return false;
        }
        self.streams.extend(queue.spawned.drain(..));
        true
    }

    /// One stream idle sweep over the answered streams; how many it expired.
    pub(super) fn sweep(&self) -> usize {
        self.streams
            .iter()
            .filter_map(|t| t.act.as_ref())
            .filter(|a| a.sweep())
            .count()
    }

    /// Poll every stream that was woken (and every new one) until none is ready.
    fn poll_streams(&mut self, cx: &mut Context<'_>) {
        // `Ready(Some)` per finished stream, `Ready(None)` once the set is empty.
        while let Poll::Ready(Some(())) = self.streams.poll_next_unpin(cx) {}
    }
}

impl<C: Future> Future for Driven<'_, C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = &mut *self;
        this.inbox.waker.register(cx.waker());
        this.inbox.polling.store(true, Ordering::Release);
        // Streams first: what they queue to send, the connection writes in this same turn.
        this.take_spawned();
        this.poll_streams(cx);
        let done = loop {
            if let Poll::Ready(out) = this.conn.as_mut().poll(cx) {
                break Some(out);
            }
            // New streams (or a tunnel a stream opened) start now; what they send at once
            // is written by the next turn of the connection.
            if !this.take_spawned() {
                break None;
            }
            this.poll_streams(cx);
        };
        this.inbox.polling.store(false, Ordering::Release);
        // Read the clock only when the connection goes idle, not once per turn.
        if !this.streams.is_empty() {
            this.idle_since = None;
        } else if this.idle_since.is_none() {
            this.idle_since = Some(Instant::now());
        }
        match done {
            Some(out) => Poll::Ready(out),
            None => {
                // What the connection and its streams wrote in this turn leaves now.
                if let Some(end) = &this.end {
                    end.drain(cx);
                }
                // Queued from elsewhere after the last look, while `polling` was still set.
                if !this.inbox.queue().spawned.is_empty() {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A stand-in connection: spawns `n` streams on its first poll, then finishes once
    /// every stream has run.
    struct Conn {
        exec: StreamExec,
        spawned: bool,
        n: usize,
        finished: Arc<AtomicUsize>,
    }

    impl Future for Conn {
        type Output = usize;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            if !self.spawned {
                self.spawned = true;
                for i in 0..self.n {
                    let finished = self.finished.clone();
                    let waker = cx.waker().clone();
                    self.exec.execute(async move {
                        // Some streams wait, as one waiting for its upstream does.
                        if i % 2 == 0 {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        finished.fetch_add(1, Ordering::SeqCst);
                        waker.wake();
                    });
                }
            }
            let done = self.finished.load(Ordering::SeqCst);
            if done == self.n {
                Poll::Ready(done)
            } else {
                Poll::Pending
            }
        }
    }

    #[tokio::test]
    async fn streams_run_on_the_connection_task() {
        let exec = StreamExec::default();
        let finished = Arc::new(AtomicUsize::new(0));
        let conn = Conn {
            exec: exec.clone(),
            spawned: false,
            n: 10,
            finished: finished.clone(),
        };
        tokio::pin!(conn);
        let out =
            tokio::time::timeout(Duration::from_secs(5), exec.drive(conn.as_mut(), None)).await;
        assert_eq!(out.ok(), Some(10));
        assert_eq!(finished.load(Ordering::SeqCst), 10);
    }

    #[tokio::test]
    async fn spawned_from_outside_a_poll_wakes_the_driver() {
        let exec = StreamExec::default();
        let ran = Arc::new(AtomicBool::new(false));
        // A connection that registers no waker: only the executor's wake can get the driver
        // polled again, to run the stream and then see the connection finish.
        let seen = ran.clone();
        let conn = std::future::poll_fn(move |_| {
            if seen.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        tokio::pin!(conn);
        let flag = ran.clone();
        let spawner = exec.clone();
        let outside = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            spawner.execute(async move { flag.store(true, Ordering::SeqCst) });
        });
        let started = std::time::Instant::now();
        let out =
            tokio::time::timeout(Duration::from_secs(5), exec.drive(conn.as_mut(), None)).await;
        // The timeout's own last poll would run the queued stream too: only a prompt end
        // shows the wake.
        assert!(
            out.is_ok() && started.elapsed() < Duration::from_secs(2),
            "the stream spawned from outside waited for an unrelated wake-up"
        );
        assert!(outside.await.is_ok());
    }
}
