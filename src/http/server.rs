//! Serving one downstream connection: HTTP/1.1 (in rounds, see `keepalive`) or HTTP/2 by
//! prior knowledge on the same port, told apart by the first bytes; header read timeout,
//! header-name case kept only when asked, and graceful shutdown when the drain token fires (HTTP/1 closes
//! after the in-flight request, HTTP/2 sends GOAWAY).
//!
//! Depends on: hyper, hyper-util, `http::keepalive`, `http::framing`, `http::h2streams`,
//! `http::proxy`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::h2streams::StreamExec;
use super::idle::{earliest, StreamActivity};
use super::keepalive;
use super::proxy::{ConnInfo, Proxy};
use crate::body::DownBody;
use crate::inplace::pin_boxed;

/// Connection-level HTTP settings.
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    /// Time allowed for a complete request head (also closes idle keep-alive connections).
    pub header_read_timeout: Duration,
    /// Size and HTTP/2 limits.
    pub limits: HttpLimits,
    /// An HTTP/2 connection with no open stream for this long is drained and closed
    /// (zero: never).
    pub h2_idle_timeout: Duration,
    /// Answer HTTP/1.1 clients with header names in the case the upstream used
    /// (`--preserve-header-case`); off: lowercase, as Envoy and Istio do. Keeping the case
    /// costs about a sixth of the CPU of a proxied request (a second header map per message).
    pub preserve_header_case: bool,
}

/// Downstream request limits. Defaults follow Envoy's and nginx's where they agree, and are
/// tighter where theirs have been the root of denial-of-service reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request head (request line and headers; HTTP/2: header list), bytes; over it
    /// HTTP/1.1 gets 431 and an HTTP/2 stream is refused. Default 64 KiB (Envoy: 60 KiB).
    pub max_request_head: usize,
    /// Most header fields in a request; more gets 431. Default 100 (Envoy's).
    pub max_request_headers: usize,
    /// Longest request target (bytes); longer gets 414. Default 16 KiB.
    pub max_request_target: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`. Default 256 (nginx: 128; Go: 250).
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 initial stream flow-control window, bytes. Default 1 MiB.
    pub h2_stream_window: u32,
    /// HTTP/2 initial connection flow-control window, bytes. Default 2 MiB.
    pub h2_connection_window: u32,
    /// HTTP/2 streams a client may reset before the server accepted them, before the
    /// connection is closed with `ENHANCE_YOUR_CALM` (rapid reset, CVE-2023-44487). Default 20.
    pub h2_max_pending_accept_reset_streams: usize,
    /// HTTP/2 streams the server may reset because of client errors before it closes the
    /// connection (the "MadeYouReset" variant). Default 256.
    pub h2_max_local_error_reset_streams: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_request_head: 64 * 1024,
            max_request_headers: 100,
            max_request_target: 16 * 1024,
            h2_max_concurrent_streams: 256,
            h2_stream_window: 1024 * 1024,
            h2_connection_window: 2 * 1024 * 1024,
            h2_max_pending_accept_reset_streams: 20,
            h2_max_local_error_reset_streams: 256,
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4) that starts a prior-knowledge connection.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serve HTTP on `io` until the client closes, stays silent for the header timeout, or
/// `stop` fires and in-flight work ends.
pub async fn serve<I>(
    io: I,
    proxy: Arc<Proxy>,
    conn: ConnInfo,
    settings: ServerSettings,
    stop: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Every connection's request bytes pass the framing guard (it steps aside for h2).
    let mut io = super::framing::Guarded::new(io);
    if conn.scheme == "http" {
        // Plain TCP: no TLS close_notify to send before the FIN.
        io.close_by_drop();
    }
    // The first bytes tell HTTP/2 prior knowledge from HTTP/1.
    let h2 = loop {
        let wait = stop.cancelled();
        tokio::pin!(wait);
        if !keepalive::next_bytes(&mut io, settings.header_read_timeout, wait).await {
            keepalive::close(io).await;
            return;
        }
        let got = io.unread();
        let n = got.len().min(H2_PREFACE.len());
        if got[..n] != H2_PREFACE[..n] {
            break false;
        }
        if n == H2_PREFACE.len() {
            break true;
        }
    };
    let limits = settings.limits;
    if !h2 {
        let idle = settings.header_read_timeout;
        let stream_idle = proxy.stream_idle_timeout;
        // Header names in the upstream's case need hyper's encoder: no fast path then.
        let fast = (!settings.preserve_header_case).then(|| super::h1::Fast {
            proxy: proxy.clone(),
            limits,
        });
        let make_hyper = move |conn: ConnInfo| {
            let round = keepalive::Round::new(conn, stream_idle);
            let noted = round.clone();
            let service = service_fn(move |mut req| {
                let proxy = proxy.clone();
                let round = noted.clone();
                round.request(&mut req);
                async move {
                    let resp = proxy.handle(req.map(DownBody::Hyper), &round.conn).await;
                    Ok::<_, Infallible>(round.response(resp))
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(settings.header_read_timeout)
                .preserve_header_case(settings.preserve_header_case)
                // The request head (line and headers) may use at most this much; beyond it
                // hyper answers 431. Long request targets get 414 from `strict`.
                .max_buf_size(limits.max_request_head.max(8192))
                .max_headers(limits.max_request_headers)
                .keep_alive(true);
            keepalive::HyperSide {
                round,
                service,
                builder,
            }
        };
        keepalive::serve(io, conn, make_hyper, fast.as_ref(), idle, stop).await;
        return;
    }
    // Boxed: its state would otherwise size the task of every HTTP/1 connection too.
    pin_boxed!(serve_h2(
        io,
        proxy,
        conn,
        limits,
        settings.h2_idle_timeout,
        stop
    ))
    .await;
}

/// Serve an HTTP/2 prior-knowledge connection.
async fn serve_h2<I>(
    io: super::framing::Guarded<I>,
    proxy: Arc<Proxy>,
    conn: ConnInfo,
    limits: HttpLimits,
    idle_timeout: Duration,
    stop: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    // The connection's streams run on this task (see `h2streams`).
    let exec = StreamExec::default();
    let stream_idle = proxy
        .stream_idle_timeout
        .map(|t| t.min(crate::config::duration::NEVER));
    let tracker = exec.clone();
    // Each stream's future is boxed: hyper moves its stream (which holds this future) into
    // the executor, and the whole request state is kilobytes.
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let proxy = proxy.clone();
        let conn = conn.clone();
        // Under the stream idle timeout, the proxy watches the wait for the head and the
        // connection's sweeps watch the rest (see `idle`).
        let act = stream_idle.map(|_| {
            let act = Arc::new(StreamActivity::default());
            tracker.track_next(act.clone());
            req.extensions_mut().insert(act.clone());
            act
        });
        pin_boxed!(async move {
            let resp = proxy.handle(req.map(DownBody::Hyper), &conn).await;
            if let Some(act) = act {
                act.responded();
            }
            Ok::<_, Infallible>(resp)
        })
    });
    let mut builder = hyper::server::conn::http2::Builder::new(exec.clone());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_request_head).unwrap_or(u32::MAX))
        .initial_stream_window_size(limits.h2_stream_window)
        .initial_connection_window_size(limits.h2_connection_window)
        .max_pending_accept_reset_streams(limits.h2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(limits.h2_max_local_error_reset_streams)
        // RFC 8441: WebSocket over HTTP/2.
        .enable_connect_protocol();
    // What a turn writes leaves in one system call at its end (see `coalesce`).
    let (io, end) = super::coalesce::pair(io);
    let served = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(served);
    let mut driven = exec.drive(served.as_mut(), Some(end));
    // One timer for both idle bounds, looked at when it fires: the connection's is then set
    // from the moment it last went idle (no timer work while streams come and go), and the
    // stream sweep runs every quarter of the stream limit.
    let idle_timeout = idle_timeout.min(crate::config::duration::NEVER);
    let sweep_every = stream_idle.map(|t| (t / 4).max(Duration::from_millis(1)));
    let start = tokio::time::Instant::now();
    let mut next_sweep = sweep_every.map(|p| start + p);
    let next_idle = (!idle_timeout.is_zero()).then(|| start + idle_timeout);
    let armed = next_sweep.is_some() || next_idle.is_some();
    let first = earliest(next_sweep, next_idle).unwrap_or(start);
    let check = tokio::time::sleep_until(first);
    tokio::pin!(check);
    loop {
        tokio::select! {
            res = &mut driven => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with error");
                }
                return;
            }
            () = stop.cancelled() => {
                driven.conn().graceful_shutdown();
                if let Err(e) = driven.await {
                    tracing::debug!(error = %e, "connection ended with error while draining");
                }
                return;
            }
            () = &mut check, if armed => {
                let now = tokio::time::Instant::now();
                if let (Some(at), Some(every)) = (next_sweep, sweep_every) {
                    if now >= at {
                        let expired = driven.sweep();
                        if expired > 0 {
                            tracing::debug!(expired, "HTTP/2 streams reset by the stream idle timeout");
                        }
                        next_sweep = Some(now + every);
                    }
                }
                let next_idle = (!idle_timeout.is_zero()).then(|| {
                    driven.idle_since().map_or(now, |t| t) + idle_timeout
                });
                if next_idle.is_some_and(|t| now >= t) {
                    break;
                }
                if let Some(at) = earliest(next_sweep, next_idle) {
                    check.as_mut().reset(at);
                }
            }
        }
    }
    // Envoy's drain sequence: GOAWAY, then the connection closes once the client has seen
    // it, or after `H2_IDLE_DRAIN` if the client does not answer.
    tracing::debug!("HTTP/2 connection idle: closing");
    driven.conn().graceful_shutdown();
    match tokio::time::timeout(H2_IDLE_DRAIN, driven).await {
        Ok(Err(e)) => tracing::debug!(error = %e, "idle connection ended with error"),
        Ok(Ok(())) => {}
        Err(_) => tracing::debug!("idle connection did not finish its GOAWAY: dropped"),
    }
}

/// How long an idle HTTP/2 connection's GOAWAY exchange may take (Envoy's `drain_timeout`).
const H2_IDLE_DRAIN: Duration = Duration::from_secs(5);
