//! L4 forwarding for TLS passthrough and TCP routes: pick a weighted destination and an
//! endpoint, connect under a timeout (trying a second endpoint once), replay any peeked
//! bytes, then copy both ways until both sides are done (half-close is passed on) or the
//! connection has been idle too long.
//!
//! Depends on: tokio, `config::Snapshot`, `upstream`, `metrics`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::duration::NEVER;
use crate::config::{L4Route, Snapshot};
use crate::metrics::Metrics;
use crate::upstream::hash::HashKey;
use crate::upstream::Cluster;

/// Settings of L4 forwarding.
#[derive(Debug, Clone, Copy)]
pub struct L4Settings {
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Close after this long without a byte either way.
    pub idle_timeout: Duration,
}

/// The cluster `route` sends a new connection to, picked by weight. Callers take it and let
/// the snapshot go before forwarding: a connection can outlive many reloads, and holding the
/// snapshot would keep every route and cluster of that generation in memory until it closes.
pub(super) fn pick(snap: &Snapshot, route: &L4Route) -> Option<Arc<Cluster>> {
    let f = &route.forward;
    let pick = if f.destinations.len() > 1 {
        fastrand::u32(..f.total_weight)
    } else {
        0
    };
    f.pick(pick)
        .and_then(|d| snap.clusters.get(d.cluster))
        .cloned()
}

/// Forward `client` (from `peer`, reaching the gateway at `local`; after `prefix`, the
/// bytes already read from it) to `cluster`. `client` is the raw socket, or the plaintext
/// side of a terminated TLS session. `local` matters only for a PROXY protocol header.
pub(super) async fn forward<S>(
    client: S,
    peer: std::net::SocketAddr,
    local: Option<std::net::SocketAddr>,
    prefix: Bytes,
    cluster: &Cluster,
    settings: L4Settings,
    metrics: &Metrics,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Only the source IP is known at L4; other hash keys pick at random, as in Envoy.
    let hash = match &cluster.hash_key {
        Some(HashKey::SourceIp) => {
            HashKey::SourceIp
                .hash(&http::HeaderMap::new(), None, peer.ip())
                .hash
        }
        _ => None,
    };
    let (mut upstream, flags) = match connect(cluster, settings.connect_timeout, hash).await {
        Ok(s) => (Some(s), "-"),
        Err(flag) => (None, flag),
    };
    let labels = labels(cluster, flags);
    metrics.tcp_opened.with_label_values(&labels).inc();
    let counts = Arc::new(Counts::default());
    // The backend learns the client from a PROXY header ahead of the client's bytes; the
    // two go out in one write.
    let prefix = match cluster.proxy_protocol {
        None => prefix,
        Some(v) => {
            let local = local.unwrap_or_else(|| {
                std::net::SocketAddr::new(
                    match peer {
                        std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                        std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
                    },
                    0,
                )
            });
            match v.header(peer, local) {
                Ok(mut h) => {
                    h.extend_from_slice(&prefix);
                    Bytes::from(h)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot encode the PROXY header: closing");
                    upstream = None;
                    prefix
                }
            }
        }
    };
    if let Some(up) = upstream.as_mut() {
        if up.write_all(&prefix).await.is_ok() {
            counts
                .sent
                .fetch_add(prefix.len() as u64, Ordering::Relaxed);
            // The destination's `tcp.idleTimeout` (`0s`: off) over the listener's default.
            let conn = &cluster.limits.conn;
            let idle = match conn.tcp_idle_timeout {
                Some(d) if d.is_zero() => NEVER,
                Some(d) => d,
                None => settings.idle_timeout,
            };
            let spliced = splice(client, up, &counts, idle);
            match conn.max_connection_duration {
                None => spliced.await,
                Some(max) => {
                    if tokio::time::timeout(max.min(NEVER), spliced).await.is_err() {
                        tracing::debug!("l4 connection reached tcp.maxConnectionDuration");
                    }
                }
            }
        }
    }
    metrics
        .tcp_sent
        .with_label_values(&labels)
        .inc_by(counts.sent.load(Ordering::Relaxed));
    metrics
        .tcp_received
        .with_label_values(&labels)
        .inc_by(counts.received.load(Ordering::Relaxed));
    metrics.tcp_closed.with_label_values(&labels).inc();
}

fn labels<'a>(c: &'a Cluster, flags: &'static str) -> [&'a str; 8] {
    [
        "source",
        "meshgate",
        &c.service,
        &c.service_name,
        &c.namespace,
        &c.name,
        "none",
        flags,
    ]
}

/// Connect to an endpoint of `cluster`, trying a second one once; Envoy's flag on failure.
async fn connect(
    cluster: &Cluster,
    timeout: Duration,
    hash: Option<u64>,
) -> Result<TcpStream, &'static str> {
    let mut avoid = None;
    let mut flag = "UH";
    for _ in 0..2.min(cluster.endpoints.len().max(1)) {
        let Some((i, ep)) = cluster.pick(avoid, hash) else {
            return Err("UH");
        };
        match ep
            .pool
            .connect_tcp(timeout, cluster.limits.conn.keepalive)
            .await
        {
            Ok(s) => return Ok(s),
            Err(e) => {
                tracing::debug!(cluster = %cluster.name, error = %e, "upstream connect failed")
            }
        }
        flag = "UF";
        avoid = Some(i);
    }
    Err(flag)
}

#[derive(Debug, Default)]
struct Counts {
    /// Client -> upstream bytes.
    sent: AtomicU64,
    /// Upstream -> client bytes.
    received: AtomicU64,
    /// Milliseconds since `start` of the last byte moved.
    last: AtomicU64,
}

/// Copy both ways between two streams until both sides are done or nothing moved for
/// `idle` (upgraded HTTP connections use this too).
pub(crate) async fn splice_idle<A, B>(a: &mut A, b: &mut B, idle: Duration) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let counts = Arc::new(Counts::default());
    splice(a, b, &counts, idle).await;
    Ok(())
}

async fn splice<S: AsyncRead + AsyncWrite + Unpin, U: AsyncRead + AsyncWrite + Unpin>(
    client: S,
    upstream: &mut U,
    counts: &Arc<Counts>,
    idle: Duration,
) {
    let start = Instant::now();
    // A deadline past ten years cannot overflow, and nobody waits that long.
    let idle = idle.min(NEVER);
    let mut client = Counted {
        inner: client,
        counts: counts.clone(),
        start,
    };
    let copy = super::pipe::copy_both(&mut client, upstream);
    let watch = async {
        loop {
            let last = Duration::from_millis(counts.last.load(Ordering::Relaxed));
            let due = start + last + idle;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    };
    tokio::select! {
        r = copy => if let Err(e) = r {
            tracing::debug!(error = %e, "l4 connection ended with error");
        },
        () = watch => tracing::debug!("l4 connection idle timeout"),
    }
}

/// The client side of a spliced connection, counting bytes and noting activity.
struct Counted<S> {
    inner: S,
    counts: Arc<Counts>,
    start: Instant,
}

impl<S> Counted<S> {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.counts.last.store(ms, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.counts.sent.fetch_add(n as u64, Ordering::Relaxed);
            self.touch();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            self.counts.received.fetch_add(n as u64, Ordering::Relaxed);
            self.touch();
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
