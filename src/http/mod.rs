//! The HTTP data plane: connection serving, the per-request proxy pipeline, header rules,
//! synthetic responses and end-of-request records.
//!
//! Depends on: `config`, `route`, `upstream`, `error`, `body`, `metrics`, `shutdown`.

mod coalesce;
pub mod framing;
mod h1;
mod h2streams;
pub mod headers;
mod idle;
mod keepalive;
mod log;
pub mod mirror;
pub(crate) mod names;
pub mod proxy;
pub mod respond;
pub mod server;
pub mod strict;
mod upgrade;
