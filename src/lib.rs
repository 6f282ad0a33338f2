//! meshgate: a standalone ingress/egress gateway that speaks Istio's networking API.
//!
//! # Where things are
//!
//! - A request is routed in [`http::proxy::Proxy::handle`]: it loads the active
//!   [`config::Snapshot`], looks the request up in the port's [`route::RouteTable`] (host:
//!   exact > longest wildcard > `*`; then the first matching `http[]` rule), and either
//!   answers (redirect, direct response, 404) or forwards to a weighted destination's
//!   [`upstream::Cluster`] with Istio's retry and timeout policy.
//! - Config: [`config::source::file`] reads YAML into a `RawSet` (or, with the `kubernetes`
//!   feature and `--source kubernetes`, `config::source::kube` reads it from kube-rs
//!   reflectors), [`config::compile`] validates it (errors name file:line, resource and
//!   field) into a `Snapshot`, and [`config::ConfigStore`] publishes it atomically (arc-swap).
//! - Wiring (listeners, admin, shutdown): [`app`]. Admin API: [`admin`]. Metrics: [`metrics`].
//! - Why a request is routed where it is, or gets a 404, offline: [`explain::explain`].
//! - `meshgate validate`'s findings with codes (like `istioctl analyze`): [`analyze`].
//!
//! # Data flow
//!
//! ```text
//! TcpListener (listen) -> http::server (h2c by prior knowledge, or h1: http::keepalive
//!   serves plain requests itself (http::h1), the rest through hyper in rounds, every byte
//!   hyper reads checked by http::framing) -> http::proxy
//!   -> route::RouteTable::lookup -> action: redirect | directResponse | forward
//!   -> upstream::Cluster::pick -> upstream::pool (checkout) -> upstream::h1 (HTTP/1.1,
//!   in the request's task; for http::h1 the response's fields stay raw, no header map)
//!   or hyper (HTTP/2, upgrades, streamed bodies) -> retry loop
//!   -> response streamed back; metrics + access log when the body ends (http::log)
//! ```
//!
//! Layering: `route`, `error`, `upstream::balance` are pure leaves; `config` compiles into
//! `route`/`upstream` types and nothing outside `config` sees the raw Istio types.

// No unsafe code in the library but one `setsockopt` call (src/listen/defer.rs, which
// allows it for itself); the binary's allocator shim (src/allocator.rs) is the other.
#![deny(unsafe_code)]

pub mod admin;
pub mod analyze;
pub mod app;
pub mod body;
pub mod config;
pub mod error;
pub mod explain;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
mod inplace;
pub mod listen;
pub mod metrics;
pub mod route;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod upstream;

pub use app::{run, start, Running, StartError};
pub use config::Bootstrap;
