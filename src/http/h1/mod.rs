//! The HTTP/1.1 fast path: plain requests (no upgrade, no `Expect`, no chunked or partial
//! body) are parsed, proxied and answered right here in the connection's task, without a
//! hyper connection. Everything else on the connection is served by hyper as before
//! (`keepalive`), and the connection comes back here once hyper parks it.
//!
//! Why: with the upstream side already our own (`upstream::h1`), hyper's server (its
//! buffered I/O, parser, dispatcher and encoder) was the largest block left in callgrind's
//! profile of a proxied keep-alive request.
//!
//! Depends on: httparse, http, `http::framing` (the guard that already scanned these bytes),
//! `http::proxy`, `body`.

mod request;
mod response;

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use http::{Method, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::framing::Guarded;
use super::idle::{self, StreamActivity};
use super::proxy::{ConnInfo, Proxy};
use super::server::HttpLimits;
use crate::body::ProxyBody;
use response::{BodyShape, Framing};

/// Body bytes up to this size are copied behind the head (or the previous chunk) so the
/// response goes out in one write.
const COALESCE: usize = 16 * 1024;

/// What the connection does after `Fast::serve_one`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Served; read the next request.
    Continue,
    /// Served (or broken off); close the connection.
    Close,
    /// Not for the fast path: hyper serves the request waiting in the buffer.
    Hyper,
}

/// The fast path's share of a listener's settings.
pub(super) struct Fast {
    /// The proxy that handles each request.
    pub(super) proxy: Arc<Proxy>,
    /// Request limits (a request outside them goes to hyper for its error status).
    pub(super) limits: HttpLimits,
}

impl Fast {
    /// Serve the request at the start of `io`'s buffered bytes, if it is one for the fast
    /// path.
    pub(super) async fn serve_one<I>(
        &self,
        io: &mut Guarded<I>,
        conn: &ConnInfo,
        stop: &CancellationToken,
    ) -> Next
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let buf = io.unread_bytes();
        let Some(parsed) = request::parse(&buf, &self.limits, self.proxy.max_replay_body) else {
            return Next::Hyper;
        };
        drop(buf);
        io.consume(parsed.len);
        let mut req = parsed.req;
        let method = req.method().clone();
        // Under the stream idle timeout, the proxy watches the wait for the head, and the
        // response's writing is watched here (see `idle`).
        let watch = self.proxy.stream_idle_timeout.map(|limit| {
            let act = Arc::new(StreamActivity::default());
            req.extensions_mut().insert(act.clone());
            (limit, act)
        });
        let resp = self.proxy.handle(req, conn).await;
        // Draining: this answer is the connection's last, and says so.
        let close = parsed.close || stop.is_cancelled();
        let written = match &watch {
            None => write_response(io, resp, &method, close).await,
            Some((limit, act)) => {
                match idle::quiet(*limit, act, write_response(io, resp, &method, close)).await {
                    Some(w) => w,
                    None => {
                        tracing::debug!("response stalled for the stream idle timeout: closing");
                        return Next::Close;
                    }
                }
            }
        };
        match written {
            Ok(false) => Next::Continue,
            Ok(true) => Next::Close,
            Err(e) => {
                tracing::debug!(error = %e, "response not delivered");
                Next::Close
            }
        }
    }
}

/// Write `resp` to `io`; `Ok(true)` when the connection must close after it.
async fn write_response<W: AsyncWrite + Unpin>(
    io: &mut W,
    resp: Response<ProxyBody>,
    method: &Method,
    close: bool,
) -> io::Result<bool> {
    let (parts, mut body) = resp.into_parts();
    let shape = BodyShape::of(body.is_end_stream(), &body.size_hint());
    // Room for the head and a body that will be coalesced behind it, so that copy does not
    // reallocate (and copy the head again).
    let coalesced = shape.exact.filter(|&n| n <= COALESCE as u64).unwrap_or(0);
    let mut out = Vec::with_capacity(512 + coalesced as usize);
    let plan = response::encode(&mut out, &parts, body.raw_fields(), method, shape, close);
    drop(parts);
    let mut left = match &plan.framing {
        Framing::None => {
            // HEAD, 204, 304: whatever the body holds is not sent (the upstream sent none).
            drop(body);
            io.write_all(&out).await?;
            io.flush().await?;
            return Ok(plan.close);
        }
        Framing::Length(n) => Some(*n),
        Framing::Chunked(_) => None,
    };
    loop {
        // Take what is ready at once; before waiting for more, send what is held.
        let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
            Poll::Ready(f) => f,
            Poll::Pending => {
                if !out.is_empty() {
                    io.write_all(&out).await?;
                    io.flush().await?;
                    out.clear();
                }
                poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let frame = match frame {
            None => break,
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                // What was sent cannot be taken back: the client sees the body cut off
                // (no final chunk, or fewer bytes than announced) and the close.
                if !out.is_empty() {
                    let _ = io.write_all(&out).await;
                }
                return Err(io::Error::other(e));
            }
        };
        match frame.into_data() {
            Ok(data) => {
                if let Some(left) = left.as_mut() {
                    let n = data.len() as u64;
                    if n > *left {
                        return Err(io::Error::other("response body longer than its length"));
                    }
                    *left -= n;
                    push_data(io, &mut out, data).await?;
                } else if !data.is_empty() {
                    push_hex(&mut out, data.len());
                    out.extend_from_slice(b"\r\n");
                    push_data(io, &mut out, data).await?;
                    out.extend_from_slice(b"\r\n");
                }
            }
            Err(frame) => {
                if let (Framing::Chunked(allowed), Ok(trailers)) =
                    (&plan.framing, frame.into_trailers())
                {
                    out.extend_from_slice(b"0\r\n");
                    response::encode_trailers(&mut out, allowed, &trailers);
                    left = Some(0);
                    // Trailers end the body; anything after them is not sent.
                    break;
                }
            }
        }
    }
    match left {
        Some(0) => {}
        Some(_) => {
            if !out.is_empty() {
                let _ = io.write_all(&out).await;
            }
            return Err(io::Error::other("response body shorter than its length"));
        }
        None => out.extend_from_slice(b"0\r\n\r\n"),
    }
    if !out.is_empty() {
        io.write_all(&out).await?;
    }
    io.flush().await?;
    Ok(plan.close)
}

/// Queue `data` behind `out`, or send both when that would copy too much.
async fn push_data<W: AsyncWrite + Unpin>(
    io: &mut W,
    out: &mut Vec<u8>,
    data: Bytes,
) -> io::Result<()> {
    if out.len() + data.len() <= COALESCE {
        out.extend_from_slice(&data);
        return Ok(());
    }
    if !out.is_empty() {
        io.write_all(out).await?;
        out.clear();
    }
    io.write_all(&data).await
}

/// Append `n` in lowercase hex (a chunk size).
fn push_hex(out: &mut Vec<u8>, n: usize) {
    let digits = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = digits[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}
