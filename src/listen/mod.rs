//! Listeners: bind each port of the snapshot, accept under a global connection cap, and run
//! one task per connection (tracked, so shutdown can wait for them). Each connection is
//! classified by its port's protocol in the current snapshot: plain HTTP, TLS (terminate or
//! pass through, by SNI: `tls`) or TCP (`tcp`). Accept loops stop when the drain token fires.
//!
//! Depends on: tokio, `http::{server, proxy}`, `config::Snapshot`, `metrics`, `shutdown`.

pub mod defer;
mod nodelay;
mod pipe;
pub(crate) mod tcp;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tracing::Instrument;

pub use tcp::L4Settings;

use crate::config::PortProtocol;
use crate::http::proxy::{ConnInfo, Proxy};
use crate::http::server::{self, ServerSettings};
use crate::inplace::pin_boxed;
use crate::shutdown::Drain;

/// What every connection task needs.
#[derive(Debug)]
pub struct Ctx {
    /// The HTTP pipeline (and through it the store and metrics).
    pub proxy: Arc<Proxy>,
    /// HTTP connection settings.
    pub http: ServerSettings,
    /// L4 forwarding settings.
    pub l4: L4Settings,
    /// One deadline for ClientHello and handshake.
    pub tls_handshake_timeout: Duration,
}

/// A bound listener for Gateway/mesh port `port`.
#[derive(Debug)]
pub struct Bound {
    /// The configured port (what routes match on).
    pub port: u16,
    /// The socket actually bound (shared with the app, which adjusts it on reload).
    pub listener: Arc<TcpListener>,
}

/// Bind `addr` for configured port `port`.
pub async fn bind(port: u16, addr: SocketAddr) -> std::io::Result<Bound> {
    let listener = Arc::new(TcpListener::bind(addr).await?);
    Ok(Bound { port, listener })
}

/// Defer accepts on `listener` (configured port `port`) when `protocol` wants it (see
/// `defer`); the state now in effect. A failure only costs the optimisation: logged.
pub fn defer_accepts(listener: &TcpListener, port: u16, protocol: PortProtocol) -> bool {
    let on = defer::wanted(protocol);
    match defer::set(listener, on) {
        Ok(()) => on,
        Err(e) => {
            tracing::warn!(port, error = %e, "could not set TCP_DEFER_ACCEPT");
            !on
        }
    }
}

/// Accept connections on `bound` until `stop` (a child of the drain token) fires; its
/// connections are drained with it. A connection needs a permit of the global cap `conns`
/// and, when set, of this listener's own cap; at a cap, new connections wait in the kernel's
/// accept queue instead of costing memory here.
pub async fn accept_loop(
    bound: Bound,
    ctx: Arc<Ctx>,
    conns: Arc<Semaphore>,
    per_listener: Option<Arc<Semaphore>>,
    drain: Drain,
    stop: CancellationToken,
) {
    let Bound { port, listener } = bound;
    let label = port.to_string();
    let local = listener.local_addr().ok();
    // Resolved once: a labelled lookup per connection costs a hash and a lock.
    let accepted = ctx.proxy.metrics.connections.with_label_values(&[&label]);
    let open = ctx
        .proxy
        .metrics
        .active_connections
        .with_label_values(&[&label]);
    // One waiter on the token for the listener's life, not one registered and removed per
    // connection. Polled after the work it races: a ready permit or connection is taken
    // without touching it, and the loop checks the token itself each turn.
    let cancelled = stop.cancelled();
    tokio::pin!(cancelled);
    // Shared by the connections through an `Arc`: cloning the token itself takes a lock
    // (and dropping it another), once per connection.
    let shared = Arc::new(stop.clone());
    loop {
        if stop.is_cancelled() {
            return;
        }
        let own = match &per_listener {
            Some(sem) => match permit(sem, cancelled.as_mut()).await {
                Some(p) => Some(p),
                None => return,
            },
            None => None,
        };
        let Some(global) = permit(&conns, cancelled.as_mut()).await else {
            return;
        };
        let (stream, client) = tokio::select! {
            biased;
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, port, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut cancelled => return,
        };
        accepted.inc();
        let active = open.clone();
        active.inc();
        let span = tracing::debug_span!("conn", client.addr = %client, server.addr = ?local, listener.port = port);
        let ctx = ctx.clone();
        let stop = shared.clone();
        // Boxed: the task then holds a pointer, not the connection's whole future state
        // (kilobytes), which tokio would otherwise copy as it spawns, binds and finishes the
        // task.
        drain.tracker.spawn(
            pin_boxed!(async move {
                handle(stream, client, port, ctx, stop).await;
                active.dec();
                drop(global);
                drop(own);
            })
            .instrument(span),
        );
    }
}

/// A permit of `sem`, without a future when one is free; `None` once `sem` is closed or
/// `cancelled` fires.
async fn permit(
    sem: &Arc<Semaphore>,
    cancelled: std::pin::Pin<&mut WaitForCancellationFuture<'_>>,
) -> Option<OwnedSemaphorePermit> {
    match sem.clone().try_acquire_owned() {
        Ok(p) => Some(p),
        Err(TryAcquireError::Closed) => None,
        Err(TryAcquireError::NoPermits) => tokio::select! {
            biased;
            p = sem.clone().acquire_owned() => p.ok(),
            () = cancelled => None,
        },
    }
}

async fn handle(
    stream: TcpStream,
    client: SocketAddr,
    port: u16,
    ctx: Arc<Ctx>,
    stop: Arc<CancellationToken>,
) {
    let protocol = ctx.proxy.store.load().listener(port).map(|l| l.protocol);
    if protocol != Some(PortProtocol::Http) {
        // TLS and TCP relays write in many pieces from the start: Nagle off at once.
        let _ = stream.set_nodelay(true);
    }
    match protocol {
        Some(PortProtocol::Http) => {
            // A client that connects and says nothing is closed after the header timeout
            // (`serve` waits for its first bytes).
            let conn = ConnInfo {
                client,
                port,
                scheme: "http",
                sni: None,
                peer_cert: None,
                forwarded_for: crate::http::headers::forwarded_for(client.ip()),
            };
            let stream = nodelay::LateNoDelay::new(stream);
            server::serve(stream, ctx.proxy.clone(), conn, ctx.http, &stop).await;
        }
        // Boxed, as is the TCP proxy: their state would otherwise size the task of every
        // plain HTTP connection too.
        Some(PortProtocol::Tls) => pin_boxed!(tls::serve(stream, client, port, ctx, &stop)).await,
        Some(PortProtocol::Tcp) => {
            let snap = ctx.proxy.store.load();
            let Some(route) = snap.tcp.get(&port).and_then(|r| r.first()) else {
                tracing::debug!(port, "no TCP route: closing");
                return;
            };
            let Some(cluster) = tcp::pick(&snap, route) else {
                return;
            };
            // The connection may outlive many reloads; it needs the cluster, not the config.
            drop(snap);
            let local = cluster
                .proxy_protocol
                .and_then(|_| stream.local_addr().ok());
            pin_boxed!(tcp::forward(
                stream,
                client,
                local,
                bytes::Bytes::new(),
                &cluster,
                ctx.l4,
                &ctx.proxy.metrics,
            ))
            .await
        }
        None => tracing::debug!(port, "port no longer configured: closing"),
    }
}
