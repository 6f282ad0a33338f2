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

/// Set in a streamed body's byte count when reading the client's body failed.
pub const DOWNSTREAM_FAILED: u64 = 1 << 63;

/// Request body sent upstream.
#[derive(Debug)]
pub enum UpBody {
    /// No body.
    Empty,
    /// A buffered body; cloning the `Bytes` for another try is free.
    Full(Option<Bytes>),
    /// The client's body streamed through; can be sent once only. Counts bytes read.
    Stream(Incoming, Arc<AtomicU64>),
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
            UpBody::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            UpBody::Stream(inc, count) => {
                let res = Pin::new(inc).poll_frame(cx);
                match &res {
                    Poll::Ready(Some(Ok(f))) => {
                        if let Some(d) = f.data_ref() {
                            count.fetch_add(d.len() as u64, Ordering::Relaxed);
                        }
                    }
                    // The client's body broke (bad chunk framing, reset): mark it, so the
                    // failed exchange is blamed on the client, not the upstream.
                    Poll::Ready(Some(Err(_))) => {
                        count.fetch_or(DOWNSTREAM_FAILED, Ordering::Relaxed);
                    }
                    _ => {}
                }
                res
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Empty => true,
            UpBody::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            UpBody::Stream(inc, _) => inc.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Empty => SizeHint::with_exact(0),
            UpBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            UpBody::Stream(inc, _) => inc.size_hint(),
        }
    }
}

/// Called once when a response body has been fully sent, or abandoned.
pub trait Completion: Send + Sync + 'static {
    /// `bytes`: body bytes sent to the client; `complete`: whether the body ended normally.
    fn finish(&mut self, bytes: u64, complete: bool);
}

enum Inner {
    Full(Option<Bytes>),
    Upstream(Incoming),
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
    pub fn upstream(b: Incoming) -> Self {
        Self {
            inner: Inner::Upstream(b),
            sent: 0,
            done: None,
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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let res = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
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
            Inner::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            Inner::Upstream(inc) => inc.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Upstream(inc) => inc.size_hint(),
        }
    }
}
