//! Serving one downstream connection: hyper-util's auto builder (HTTP/1.1 and h2c prior
//! knowledge on the same port), header read timeout, header case preserved, and graceful
//! shutdown when the drain token fires (HTTP/1 closes after the in-flight request, HTTP/2
//! sends GOAWAY).
//!
//! Depends on: hyper, hyper-util, `http::proxy`, `shutdown`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::proxy::{ConnInfo, Proxy};

/// Largest HTTP/1.1 request head accepted (bytes).
const MAX_HEAD: usize = 64 * 1024;

/// Connection-level HTTP settings.
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    /// Time allowed for a complete request head.
    pub header_read_timeout: Duration,
}

/// Serve HTTP on `io` until the client closes or `stop` fires and in-flight work ends.
pub async fn serve<I>(
    io: I,
    proxy: Arc<Proxy>,
    conn: ConnInfo,
    settings: ServerSettings,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req, &conn).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .preserve_header_case(true)
        // The request head (line and headers) may use at most this much; beyond it hyper
        // answers 431. Request targets over 16 KiB get 414 from `strict`.
        .max_buf_size(MAX_HEAD)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024)
        // RFC 8441: WebSocket over HTTP/2.
        .enable_connect_protocol();
    // Every connection's request bytes pass the framing guard (it steps aside for h2).
    let io = super::framing::Guarded::new(io);
    let served = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(served);
    tokio::select! {
        res = served.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "connection ended with error");
            }
        }
        () = stop.cancelled() => {
            served.as_mut().graceful_shutdown();
            if let Err(e) = served.await {
                tracing::debug!(error = %e, "connection ended with error while draining");
            }
        }
    }
}
