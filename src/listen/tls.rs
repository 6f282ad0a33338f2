//! A connection on a TLS port: peek the ClientHello, choose the Gateway server by SNI, then
//! either terminate (rustls with that server's config, then HTTP with its routes) or pass
//! the bytes through to the route matching the SNI. One deadline covers the peek and the
//! handshake; failures are counted by reason and the connection is dropped.
//!
//! Depends on: `tls::{peek}`, `listen::tcp`, `http::server`, `config::Snapshot`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::tcp;
use super::Ctx;
use crate::config::TlsMode;
use crate::http::proxy::ConnInfo;
use crate::http::server;
use crate::tls::identity::Identity;
use crate::tls::peek::{self, Rewind};

/// TLS alert: fatal, unrecognized_name (RFC 6066), sent in a TLS 1.2-versioned record.
const UNRECOGNIZED_NAME: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

/// Serve one connection accepted on TLS port `port`.
pub(super) async fn serve(
    mut stream: TcpStream,
    client: SocketAddr,
    port: u16,
    ctx: Arc<Ctx>,
    stop: &CancellationToken,
) {
    let label = port.to_string();
    let reject = |reason: &str| {
        ctx.proxy
            .metrics
            .tls_rejected
            .with_label_values(&[&label, reason])
            .inc();
    };
    let deadline = Instant::now() + ctx.tls_handshake_timeout;
    let (hello, prefix) = match peek::read_hello(&mut stream, deadline).await {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(error = %e, "dropping connection before TLS");
            reject(e.reason());
            return;
        }
    };
    let snap = ctx.proxy.store.load();
    let Some(tp) = snap.tls.get(&port) else {
        reject("no_listener");
        return;
    };
    let Some(srv) = tp.server_for(hello.sni.as_deref()) else {
        tracing::debug!(sni = ?hello.sni, "no server for SNI");
        reject("unknown_sni");
        let _ = stream.write_all(&UNRECOGNIZED_NAME).await;
        let _ = stream.shutdown().await;
        return;
    };
    match &srv.mode {
        TlsMode::Passthrough => {
            let route = hello
                .sni
                .as_deref()
                .and_then(|s| tp.passthrough.lookup(s))
                .and_then(|routes| routes.first());
            let Some(route) = route else {
                tracing::debug!(sni = ?hello.sni, "no passthrough route for SNI");
                reject("no_route");
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
            tcp::forward(
                stream,
                client,
                local,
                prefix,
                &cluster,
                ctx.l4,
                &ctx.proxy.metrics,
            )
            .await;
        }
        TlsMode::TerminateTcp { config, routes } => {
            let Some(route) = routes.first() else {
                tracing::debug!(sni = ?hello.sni, "no TCP route for terminated TLS");
                reject("no_route");
                return;
            };
            let Some(cluster) = tcp::pick(&snap, route) else {
                return;
            };
            let config = config.clone();
            drop(snap);
            let local = cluster
                .proxy_protocol
                .and_then(|_| stream.local_addr().ok());
            let Some(tls) = handshake(&config, prefix, stream, deadline, &reject).await else {
                return;
            };
            tcp::forward(
                tls,
                client,
                local,
                bytes::Bytes::new(),
                &cluster,
                ctx.l4,
                &ctx.proxy.metrics,
            )
            .await;
        }
        TlsMode::Terminate { config, .. } => {
            let Some(tls) = handshake(config, prefix, stream, deadline, &reject).await else {
                return;
            };
            drop(snap);
            let peer_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|der| Identity::from_der(der))
                .map(Arc::new);
            let conn = ConnInfo {
                client,
                port,
                scheme: "https",
                sni: hello.sni.map(Into::into),
                peer_cert,
                forwarded_for: crate::http::headers::forwarded_for(client.ip()),
            };
            server::serve(tls, ctx.proxy.clone(), conn, ctx.http, stop).await;
        }
    }
}

/// Finish the handshake `prefix` began, within `deadline`; `None` (counted) on failure.
async fn handshake(
    config: &Arc<rustls::ServerConfig>,
    prefix: bytes::Bytes,
    stream: TcpStream,
    deadline: Instant,
    reject: &impl Fn(&str),
) -> Option<tokio_rustls::server::TlsStream<Rewind<TcpStream>>> {
    let acceptor = TlsAcceptor::from(config.clone());
    let io = Rewind::new(prefix, stream);
    match tokio::time::timeout_at(deadline, acceptor.accept(io)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            reject("handshake");
            None
        }
        Err(_) => {
            reject("handshake_timeout");
            None
        }
    }
}
