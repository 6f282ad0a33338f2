//! Listeners: bind each port of the snapshot, accept under a global connection cap, and run
//! one task per connection (tracked, so shutdown can wait for them). Accept loops stop when
//! the drain token fires.
//!
//! Depends on: tokio, `http::server`, `http::proxy`, `metrics`, `shutdown`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::http::proxy::{ConnInfo, Proxy};
use crate::http::server::{self, ServerSettings};
use crate::shutdown::Drain;

/// A bound listener for Gateway/mesh port `port`.
#[derive(Debug)]
pub struct Bound {
    /// The configured port (what routes match on).
    pub port: u16,
    /// The socket actually bound.
    pub listener: TcpListener,
}

/// Bind `addr` for configured port `port`.
pub async fn bind(port: u16, addr: SocketAddr) -> std::io::Result<Bound> {
    let listener = TcpListener::bind(addr).await?;
    Ok(Bound { port, listener })
}

/// Accept connections on `bound` until `drain` fires.
pub async fn accept_loop(
    bound: Bound,
    proxy: Arc<Proxy>,
    settings: ServerSettings,
    conns: Arc<Semaphore>,
    drain: Drain,
) {
    let Bound { port, listener } = bound;
    let label = port.to_string();
    let local = listener.local_addr().ok();
    loop {
        let permit = tokio::select! {
            p = conns.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = drain.token.cancelled() => return,
        };
        let (stream, client) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, port, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = drain.token.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let metrics = proxy.metrics.clone();
        metrics.connections.with_label_values(&[&label]).inc();
        let active = metrics.active_connections.with_label_values(&[&label]);
        active.inc();
        let conn = ConnInfo {
            client,
            port,
            scheme: "http",
        };
        let span = tracing::debug_span!("conn", client.addr = %client, server.addr = ?local, listener.port = port);
        let proxy = proxy.clone();
        let stop = drain.token.clone();
        drain.tracker.spawn(
            async move {
                server::serve(stream, proxy, conn, settings, stop).await;
                active.dec();
                drop(permit);
            }
            .instrument(span),
        );
    }
}
