//! Body types of the proxy path, as enums rather than boxed trait objects so a request costs
//! no allocation for its bodies.
//!
//! - `UpBody`: what is sent upstream (nothing, buffered bytes that can be replayed, or the
//!   client's stream passed through once).
//! - `ProxyBody`: what is sent to the client (a synthetic response or the upstream's body),
//!   carrying the completion hook that returns the upstream connection to its pool and
//!   records metrics and the access log when the body ends or is dropped.
//!
//! Depends on: bytes, http-body, hyper.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A body held whole (`None` once sent): the same three answers for every body type here.
mod whole {
    use bytes::Bytes;
    use http_body::{Frame, SizeHint};

    /// Its one data frame, then the end (an empty body has no frame).
    pub(super) fn next<E>(b: &mut Option<Bytes>) -> Option<Result<Frame<Bytes>, E>> {
        b.take()
            .filter(|b| !b.is_empty())
            .map(|b| Ok(Frame::data(b)))
    }

    /// Whether nothing is left to send.
    pub(super) fn is_end(b: &Option<Bytes>) -> bool {
        b.as_ref().is_none_or(Bytes::is_empty)
    }

    /// Exactly what is left.
    pub(super) fn size(b: &Option<Bytes>) -> SizeHint {
        SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// A client's request body: from hyper (streamed, HTTP/2 and the HTTP/1.1 requests hyper
/// serves), or already in hand (the HTTP/1.1 fast path takes only requests whose body
/// arrived with their head).
#[derive(Debug)]
pub enum DownBody {
    /// Read by hyper as the proxy polls it.
    Hyper(Incoming),
    /// The whole body (`None` once taken, or when there is none). Only the HTTP/1.1 fast
    /// path makes these, and the proxy relies on it: that path's writer is the one that
    /// copies an upstream's raw header fields (`ProxyBody::raw_fields`).
    Full(Option<Bytes>),
}

impl Body for DownBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            DownBody::Hyper(b) => Pin::new(b).poll_frame(cx),
            DownBody::Full(b) => Poll::Ready(whole::next(b)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DownBody::Hyper(b) => b.is_end_stream(),
            DownBody::Full(b) => whole::is_end(b),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DownBody::Hyper(b) => b.size_hint(),
            DownBody::Full(b) => whole::size(b),
        }
    }
}

/// Set in a streamed body's byte count when reading the client's body failed.
pub const DOWNSTREAM_FAILED: u64 = 1 << 63;

/// Request body sent upstream.
#[derive(Debug)]
pub enum UpBody {
    /// No body.
    Empty,
    /// A buffered body; cloning the `Bytes` for another try is free.
    Full(Option<Bytes>),
    /// The client's body streamed through (sent once); see `Streamed`.
    Stream(Arc<Streamed>),
}

/// A client body streamed upstream. It stays owned here when an attempt ends early (hyper
/// drops the request body when the response comes first), so a retry can read the rest and
/// resend a body that had no `Content-Length` (gRPC, chunked) from the copy in `tee`.
#[derive(Debug)]
pub struct Streamed {
    inc: std::sync::Mutex<DownBody>,
    /// Bytes read from the client (high bit: the client's body failed).
    pub count: Arc<AtomicU64>,
    tee: Tee,
}

impl Streamed {
    /// Wrap the client's body, keeping a copy of up to `limit` bytes.
    pub fn new(inc: DownBody, count: Arc<AtomicU64>, limit: usize) -> Self {
        Self {
            inc: std::sync::Mutex::new(inc),
            count,
            tee: Tee::new(limit),
        }
    }

    fn poll_frame(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // Never contended: one attempt reads at a time, and the lock is not held across
        // an await.
        let mut inc = self.inc.lock().unwrap_or_else(|p| p.into_inner());
        let res = Pin::new(&mut *inc).poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.count.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
            }
            // The client's body broke (bad chunk framing, reset): mark it, so the failed
            // exchange is blamed on the client, not the upstream.
            Poll::Ready(Some(Err(_))) => {
                self.count.fetch_or(DOWNSTREAM_FAILED, Ordering::Relaxed);
            }
            _ => {}
        }
        if let Poll::Ready(f) = &res {
            self.tee.record(f);
        }
        res
    }

    /// Whether the client's body has been read to its end.
    pub fn finished(&self) -> bool {
        self.inc
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_end_stream()
    }

    /// The whole body for a resend: reads what the last attempt left unread (while it fits
    /// the copy), then returns the copy; `None` when it is too large, broken, or still
    /// streaming after `wait`.
    pub async fn replay(&self, wait: std::time::Duration) -> Option<Bytes> {
        let drain = std::future::poll_fn(|cx| loop {
            if self.tee.is_settled() {
                return Poll::Ready(());
            }
            match self.poll_frame(cx) {
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        });
        if self.tee.complete().is_none() {
            let _ = tokio::time::timeout(wait, drain).await;
        }
        self.tee.complete()
    }
}

/// A copy of a streamed request body, kept while it stays under a limit, so that a retry
/// can resend a body that had no `Content-Length` (gRPC, chunked) once it has fully arrived.
#[derive(Debug)]
pub struct Tee {
    limit: usize,
    state: std::sync::Mutex<TeeState>,
}

#[derive(Debug, Default)]
struct TeeState {
    buf: bytes::BytesMut,
    /// Too large, or had trailers: cannot be replayed.
    spoiled: bool,
    /// The body ended.
    done: bool,
}

impl Tee {
    /// A copy that gives up beyond `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            state: std::sync::Mutex::default(),
        }
    }

    fn record<T>(&self, frame: &Option<Result<Frame<Bytes>, T>>) {
        // Uncontended: one request's body is read by one task at a time.
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.spoiled {
            return;
        }
        match frame {
            None => st.done = true,
            Some(Ok(f)) => match f.data_ref() {
                Some(d) if st.buf.len() + d.len() <= self.limit => st.buf.extend_from_slice(d),
                _ => {
                    st.spoiled = true;
                    st.buf = bytes::BytesMut::new();
                }
            },
            Some(Err(_)) => st.spoiled = true,
        }
    }

    /// Whether nothing more will be copied (the body ended, or the copy was given up).
    fn is_settled(&self) -> bool {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.spoiled || st.done
    }

    /// The whole body, when it has fully arrived and was small enough to keep.
    pub fn complete(&self) -> Option<Bytes> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (st.done && !st.spoiled).then(|| Bytes::copy_from_slice(&st.buf))
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpBody::Empty => Poll::Ready(None),
            UpBody::Full(b) => Poll::Ready(whole::next(b)),
            UpBody::Stream(src) => src.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Empty => true,
            UpBody::Full(b) => whole::is_end(b),
            UpBody::Stream(src) => src.tee.complete().is_some(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Empty => SizeHint::with_exact(0),
            UpBody::Full(b) => whole::size(b),
            UpBody::Stream(src) => src.inc.lock().map(|i| i.size_hint()).unwrap_or_default(),
        }
    }
}

/// Called once when a response body has been fully sent, or abandoned.
pub trait Completion: Send + Sync + 'static {
    /// `bytes`: body bytes sent to the client; `complete`: whether the body ended normally.
    fn finish(&mut self, bytes: u64, complete: bool);
}

/// An upstream response body: from hyper (HTTP/2, upgrades, streamed requests) or from our
/// own HTTP/1.1 client.
#[derive(Debug)]
pub enum UpstreamBody {
    /// Read by hyper's connection task.
    Hyper(Incoming),
    /// Read from the connection by whoever polls it. Boxed: the body holds the upstream
    /// connection (200 bytes), and the response it is part of moves several times between
    /// the pool, the retry loop and the proxy.
    Raw(Box<crate::upstream::h1::RawBody>),
}

/// Why a response body broke off.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl UpstreamBody {
    /// The response's header fields, when the upstream client left them out of its head.
    pub fn raw_fields(&self) -> Option<&crate::upstream::h1::RawFields> {
        match self {
            UpstreamBody::Raw(b) => b.fields(),
            UpstreamBody::Hyper(_) => None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Raw(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(b) => b.is_end_stream(),
            UpstreamBody::Raw(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper(b) => b.size_hint(),
            UpstreamBody::Raw(b) => b.size_hint(),
        }
    }
}

enum Inner {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
}

/// Response body sent to the client.
pub struct ProxyBody {
    inner: Inner,
    sent: u64,
    done: Option<Box<dyn Completion>>,
}

impl ProxyBody {
    /// A fixed body.
    pub fn full(b: impl Into<Bytes>) -> Self {
        Self {
            inner: Inner::Full(Some(b.into())),
            sent: 0,
            done: None,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// The upstream's body passed through.
    pub fn upstream(b: UpstreamBody) -> Self {
        Self {
            inner: Inner::Upstream(b),
            sent: 0,
            done: None,
        }
    }

    /// An upstream response's header fields that are not in its head's map (see
    /// `upstream::h1::RawFields`): whoever writes the head writes these too.
    pub fn raw_fields(&self) -> Option<&crate::upstream::h1::RawFields> {
        match &self.inner {
            Inner::Upstream(b) => b.raw_fields(),
            Inner::Full(_) => None,
        }
    }

    /// Attach the hook run when the body ends or is dropped.
    pub fn on_complete(mut self, c: Box<dyn Completion>) -> Self {
        if self.is_end_stream() {
            // Nothing will ever be polled (HEAD, 204, empty): finish now so the upstream
            // connection goes back to its pool at once.
            let mut c = c;
            c.finish(0, true);
        } else {
            self.done = Some(c);
        }
        self
    }

    fn finish(&mut self, complete: bool) {
        if let Some(mut c) = self.done.take() {
            c.finish(self.sent, complete);
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        self.finish(false);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let res = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(whole::next(b)),
            Inner::Upstream(inc) => Pin::new(inc).poll_frame(cx),
        };
        match &res {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.sent += d.len() as u64;
                }
                if this.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => whole::is_end(b),
            Inner::Upstream(inc) => inc.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => whole::size(b),
            Inner::Upstream(inc) => inc.size_hint(),
        }
    }
}
