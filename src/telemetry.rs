//! Logging setup: tracing-subscriber with `RUST_LOG` (default `info`) to stderr, and the
//! access log (target `meshgate::access`) to stdout through a non-blocking writer, as text
//! or JSON.
//!
//! Depends on: tracing-subscriber, tracing-appender, `config::AccessLog`.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::AccessLog;

const ACCESS: &str = "meshgate::access";

/// Install the global subscriber. Keep the guard alive for the process lifetime.
pub fn init(access: AccessLog) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter)
        .with_filter(filter_fn(|m| m.target() != ACCESS));
    let (access_layer, guard) = match access {
        AccessLog::Off => (None, None),
        AccessLog::Text | AccessLog::Json => {
            let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
            let base = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_target(false);
            let layer = if access == AccessLog::Json {
                base.json()
                    .flatten_event(true)
                    .with_filter(filter_fn(|m| m.target() == ACCESS))
                    .boxed()
            } else {
                base.with_filter(filter_fn(|m| m.target() == ACCESS))
                    .boxed()
            };
            (Some(layer), Some(guard))
        }
    };
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(access_layer)
        .try_init();
    guard
}
