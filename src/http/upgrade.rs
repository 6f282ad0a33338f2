//! Upgraded connections (WebSocket over HTTP/1.1): after the upstream answers 101, both
//! ends are spliced byte for byte until either closes or the tunnel is idle too long. The
//! tunnel owns its upstream connection, so a config swap never moves it.
//!
//! Depends on: hyper (upgrades), tokio, `metrics`, `upstream::Cluster`.

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::metrics::Metrics;
use crate::upstream::Cluster;

/// A tunnel with no byte either way for this long is closed (Envoy's default stream idle
/// timeout for upgraded connections is 1 h as well, through the TCP proxy idle timeout).
const IDLE: Duration = Duration::from_secs(3600);

/// Splice the client's and the upstream's upgraded connections in the background.
pub(super) fn tunnel(
    downstream: OnUpgrade,
    upstream: OnUpgrade,
    cluster: Arc<Cluster>,
    metrics: Arc<Metrics>,
) {
    tokio::spawn(async move {
        let (down, up) = match tokio::join!(downstream, upstream) {
            (Ok(d), Ok(u)) => (d, u),
            (d, u) => {
                tracing::debug!(down = ?d.err(), up = ?u.err(), "upgrade did not complete");
                return;
            }
        };
        let label = [&*cluster.name];
        metrics.upgrades.with_label_values(&label).inc();
        metrics.upgrades_active.with_label_values(&label).inc();
        let mut down = TokioIo::new(down);
        let mut up = TokioIo::new(up);
        let copy = crate::listen::tcp::splice_idle(&mut down, &mut up, IDLE);
        if let Err(e) = copy.await {
            tracing::debug!(error = %e, "upgraded connection ended with error");
        }
        metrics.upgrades_active.with_label_values(&label).dec();
    });
}
