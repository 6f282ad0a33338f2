//! The admin server (axum, its own port): `/healthz`, `/healthz/ready`, `/metrics`,
//! `/config_dump`, `/explain`. Reads the store and metrics; never writes them.
//!
//! Depends on: axum, `config::ConfigStore`, `metrics`, `shutdown`, `explain`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::config::ConfigStore;
use crate::explain::{explain, ExplainRequest};
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
        .route("/explain", get(explain_request))
        .route("/logging", axum::routing::post(logging))
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
    // One series set per destination service and outcome, as Istio labels them: with
    // thousands of services the text runs to megabytes, and a scrape must not hold a
    // runtime worker (they carry the proxied traffic) while it is encoded.
    let metrics = s.metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.render()).await {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics rendering failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn config_dump(State(s): State<AdminState>) -> Response {
    let snap = s.store.load();
    let errors = s.store.last_errors();
    // A large config takes tens of milliseconds to render; off the runtime's workers, which
    // also carry the proxied traffic.
    let rendered = tokio::task::spawn_blocking(move || {
        let mut dump = crate::config::render_dump(&snap);
        if let Some(o) = dump.as_object_mut() {
            o.insert("generation".into(), snap.generation.into());
            o.insert("lastErrors".into(), errors.as_slice().into());
        }
        serde_json::to_string_pretty(&dump)
    })
    .await;
    match rendered {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "config dump did not serialize");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "config dump task failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// `GET /explain?url=..&method=..&header=name:value&sni=..&port=..` (`header` repeatable):
/// the JSON explanation against the live snapshot, or 400 naming the bad parameter.
async fn explain_request(
    State(s): State<AdminState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let one = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let bad = |msg: String| {
        let body = serde_json::json!({ "error": msg }).to_string();
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    };
    let Some(url) = one("url") else {
        return bad("missing query parameter url".to_owned());
    };
    let port = match one("port").map(str::parse::<u16>) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(_)) => return bad("query parameter port must be 1..=65535".to_owned()),
    };
    let headers = params
        .iter()
        .filter(|(k, _)| k == "header")
        .map(|(_, v)| v.as_str());
    let req = match ExplainRequest::try_new(url, one("method"), headers, one("sni"), port) {
        Ok(r) => r,
        Err(e) => return bad(e.to_string()),
    };
    let snap = s.store.load();
    let body = serde_json::to_string_pretty(&explain(&snap, &req)).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
/// `POST /logging?level=SPEC`: replace the log filter (Envoy's admin verb; `SPEC` is a
/// tracing `EnvFilter` directive such as `debug` or `info,meshgate::http=trace`).
async fn logging(
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> (axum::http::StatusCode, String) {
    let Some(level) = q.get("level") else {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            "usage: POST /logging?level=debug (any tracing filter directive)\n".to_owned(),
        );
    };
    match crate::telemetry::set_filter(level) {
        Ok(f) => (axum::http::StatusCode::OK, format!("log filter: {f}\n")),
        Err(e) => (axum::http::StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}
