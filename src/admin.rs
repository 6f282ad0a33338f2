//! The admin server (axum, its own port): `/healthz`, `/healthz/ready`, `/metrics`,
//! `/config_dump`. Reads the store and metrics; never writes them.
//!
//! Depends on: axum, `config::ConfigStore`, `metrics`, `shutdown`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::config::ConfigStore;
use crate::metrics::Metrics;
use crate::shutdown::Drain;

/// What the admin handlers read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The active config.
    pub store: Arc<ConfigStore>,
    /// Metrics to render.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub drain: Drain,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/healthz/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/config_dump", get(config_dump))
        .with_state(state)
}

/// Serve the admin API on `listener` until `drain` fires.
pub async fn serve(listener: TcpListener, state: AdminState) {
    let stop = state.drain.token.clone();
    let app = router(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "admin server failed");
    }
}

async fn ready(State(s): State<AdminState>) -> Response {
    if s.drain.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn config_dump(State(s): State<AdminState>) -> Response {
    let snap = s.store.load();
    let mut dump = snap.dump.clone();
    if let Some(o) = dump.as_object_mut() {
        o.insert("generation".into(), snap.generation.into());
        o.insert("lastErrors".into(), s.store.last_errors().as_slice().into());
    }
    let body = serde_json::to_string_pretty(&dump).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
