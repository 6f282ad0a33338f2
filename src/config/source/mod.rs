//! Config sources: each produces a complete `RawSet`.
//!
//! Depends on: `config::raw`, `config::istio`.

pub mod file;
pub mod watch;
