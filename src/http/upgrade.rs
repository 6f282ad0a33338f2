//! Upgraded connections (WebSocket over HTTP/1.1): after the upstream answers 101, both
//! ends are spliced byte for byte until either closes or the tunnel is idle too long. The
//! tunnel owns its upstream connection, so a config swap never moves it.
//!
//! The client's end arrives one of two ways: from hyper (HTTP/2 extended CONNECT), or from
//! the HTTP/1.1 connection driver (`keepalive`), which runs hyper's connection without
//! shutdown and so takes the connection back itself once the 101 is written.
//!
//! Depends on: hyper (upgrades), tokio, `metrics`, `upstream::Cluster`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Extensions;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::upstream::Cluster;

/// A client connection after its protocol switch.
pub(super) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Where the HTTP/1.1 connection driver hands over a connection once its 101 is written;
/// put into the request's extensions by the driver (which need `Clone`, hence the slot).
#[derive(Clone)]
pub(super) struct Handover(Arc<Mutex<Option<Receiver>>>);

/// The receiving end of a handover.
type Receiver = oneshot::Receiver<Box<dyn Io>>;

impl Handover {
    /// A handover slot for `rx`.
    pub(super) fn new(rx: Receiver) -> Self {
        Self(Arc::new(Mutex::new(Some(rx))))
    }
}

/// The client's end of an upgrade that may happen.
pub(super) enum Downstream {
    /// hyper completes it (HTTP/2 extended CONNECT).
    Hyper(OnUpgrade),
    /// The HTTP/1.1 connection driver hands the connection over.
    Driver(Receiver),
}

impl Downstream {
    /// Take the client's end out of a request's extensions, if the request can upgrade.
    pub(super) fn take(ext: &mut Extensions) -> Option<Self> {
        if let Some(rx) = ext
            .remove::<Handover>()
            .and_then(|h| h.0.lock().ok().and_then(|mut s| s.take()))
        {
            ext.remove::<OnUpgrade>();
            return Some(Self::Driver(rx));
        }
        ext.remove::<OnUpgrade>().map(Self::Hyper)
    }

    /// The connection, once the switch has happened.
    async fn ready(self) -> Result<Box<dyn Io>, String> {
        match self {
            Self::Hyper(on) => on
                .await
                .map(|u| Box::new(TokioIo::new(u)) as Box<dyn Io>)
                .map_err(|e| e.to_string()),
            Self::Driver(rx) => rx
                .await
                .map_err(|_| "connection not handed over".to_owned()),
        }
    }
}

/// A tunnel with no byte either way for this long is closed (Envoy's default stream idle
/// timeout for upgraded connections is 1 h as well, through the TCP proxy idle timeout).
const IDLE: Duration = Duration::from_secs(3600);

/// Splice the client's and the upstream's upgraded connections in the background.
pub(super) fn tunnel(
    downstream: Downstream,
    upstream: OnUpgrade,
    cluster: Arc<Cluster>,
    metrics: Arc<Metrics>,
) {
    tokio::spawn(async move {
        let (mut down, mut up) = match tokio::join!(downstream.ready(), upstream) {
            (Ok(d), Ok(u)) => (d, TokioIo::new(u)),
            (d, u) => {
                tracing::debug!(down = ?d.err(), up = ?u.err(), "upgrade did not complete");
                return;
            }
        };
        let label = [&*cluster.name];
        metrics.upgrades.with_label_values(&label).inc();
        metrics.upgrades_active.with_label_values(&label).inc();
        let copy = crate::listen::tcp::splice_idle(&mut down, &mut up, IDLE);
        if let Err(e) = copy.await {
            tracing::debug!(error = %e, "upgraded connection ended with error");
        }
        metrics.upgrades_active.with_label_values(&label).dec();
    });
}
