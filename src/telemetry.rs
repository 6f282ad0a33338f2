//! Logging setup: tracing-subscriber with `RUST_LOG` (default `info`) to stderr, and the
//! access log (target `meshgate::access`) to stdout through a non-blocking writer, as text
//! or JSON. The log filter can be replaced at run time (`POST /logging?level=debug` on the
//! admin port, like Envoy's).
//!
//! Depends on: tracing-subscriber, tracing-appender, log (its ceiling), `config::AccessLog`.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::AccessLog;

const ACCESS: &str = "meshgate::access";

/// Replaces the log filter of the installed subscriber.
type Reload = tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>;

static FILTER: std::sync::OnceLock<Reload> = std::sync::OnceLock::new();

/// Set the log filter (an `EnvFilter` directive such as `debug` or
/// `info,meshgate::http=trace`); the new filter as text, or why it was refused.
pub fn set_filter(spec: &str) -> Result<String, String> {
    let filter = EnvFilter::try_new(spec).map_err(|e| format!("invalid level {spec:?}: {e}"))?;
    let text = filter.to_string();
    let handle = FILTER
        .get()
        .ok_or_else(|| "logging is not initialised in this process".to_owned())?;
    let ceiling = log_ceiling(&filter);
    handle.reload(filter).map_err(|e| e.to_string())?;
    log::set_max_level(ceiling);
    tracing::info!(filter = %text, "log filter changed");
    Ok(text)
}

/// Prints an event's message and nothing else (no time, level, target or span).
struct MessageOnly;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for MessageOnly
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Install the global subscriber. Keep the guard alive for the process lifetime.
pub fn init(access: AccessLog) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ceiling = log_ceiling(&filter);
    let (subscriber, handle, guard) = build(access, filter);
    let _ = FILTER.set(handle);
    // `try_init` sets the `log` crate's ceiling from the whole subscriber, which the access
    // layer's filter makes TRACE; only the log filter ever takes `log` records.
    if subscriber.try_init().is_ok() {
        log::set_max_level(ceiling);
    }
    guard
}

/// The `log` crate's global ceiling for a log filter. Records above it (mio and tokio log a
/// `trace` for every socket they register and deregister) stop at the call site instead of
/// being converted into tracing events and filtered out: ~1,200 instructions per accepted
/// connection.
fn log_ceiling(filter: &EnvFilter) -> log::LevelFilter {
    use tracing_subscriber::filter::LevelFilter as L;
    match filter.max_level_hint() {
        Some(L::OFF) => log::LevelFilter::Off,
        Some(L::ERROR) => log::LevelFilter::Error,
        Some(L::WARN) => log::LevelFilter::Warn,
        Some(L::INFO) => log::LevelFilter::Info,
        Some(L::DEBUG) => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// The subscriber `init` installs: logs to stderr under `filter` (reloadable through the
/// handle), and the access log, if any, to stdout.
fn build(
    access: AccessLog,
    filter: EnvFilter,
) -> (
    impl tracing::Subscriber + Send + Sync + 'static,
    Reload,
    Option<WorkerGuard>,
) {
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    // Per-layer: the level applies to the logs only, never to the access log.
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // One combined filter: nested per-layer filters let the registry create (and enter,
        // on every poll) spans that no layer records.
        .with_filter(filter.and(filter_fn(|m| m.target() != ACCESS)));
    // Never `None` for "off": a `None` layer beside per-layer filters enables every span
    // (and an empty Vec disables every one); a layer that wants nothing does neither.
    let (access_layer, guard) = match access {
        AccessLog::Off => (
            tracing_subscriber::layer::Identity::new()
                .with_filter(tracing_subscriber::filter::LevelFilter::OFF)
                .boxed(),
            None,
        ),
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
                // The line is already in Envoy's format: print it alone.
                base.event_format(MessageOnly)
                    .with_filter(filter_fn(|m| m.target() == ACCESS))
                    .boxed()
            };
            (layer, Some(guard))
        }
    };
    let subscriber = tracing_subscriber::registry().with(logs).with(access_layer);
    (subscriber, handle, guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A span below the log level is never created, so entering it on every poll of a
    /// connection costs nothing (it used to cost ~3% of a proxied request); raising the
    /// level at run time brings it back.
    #[test]
    fn spans_below_the_level_are_not_created() {
        for access in [AccessLog::Off, AccessLog::Json] {
            let (sub, handle, _guard) = build(access, EnvFilter::new("info"));
            tracing::subscriber::with_default(sub, || {
                assert!(tracing::debug_span!("conn").is_disabled(), "{access:?}");
                assert!(!tracing::info_span!("shown").is_disabled(), "{access:?}");
                assert_eq!(
                    tracing::enabled!(target: "meshgate::access", tracing::Level::INFO),
                    access != AccessLog::Off
                );
                handle.reload(EnvFilter::new("debug")).unwrap();
                assert!(!tracing::debug_span!("conn").is_disabled(), "{access:?}");
            });
        }
    }

    /// `log` records above the log filter's level are cut at the call site; a filter
    /// naming a target at a finer level lets that level through.
    #[test]
    fn log_ceiling_follows_the_log_filter() {
        let cases = [
            ("off", log::LevelFilter::Off),
            ("warn", log::LevelFilter::Warn),
            ("info", log::LevelFilter::Info),
            ("info,rustls=debug", log::LevelFilter::Debug),
            ("warn,mio=trace", log::LevelFilter::Trace),
        ];
        for (spec, want) in cases {
            assert_eq!(log_ceiling(&EnvFilter::new(spec)), want, "{spec}");
        }
    }
}
