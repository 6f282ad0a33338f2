//! Configuration: Istio YAML in, an immutable routing `Snapshot` out.
//!
//! Pipeline: sources (`source::file`) read YAML into a `RawSet` of serde mirrors
//! (`istio`), `compile` validates everything and builds a `Snapshot`, and `ConfigStore`
//! publishes it atomically. `istio` types never leave this module.
//!
//! Depends on: `route`, `upstream` (compiled types), serde, serde_yaml_ng.

pub mod bootstrap;
mod compile;
pub(crate) mod duration;
mod error;
mod istio;
mod raw;
mod snapshot;
pub mod source;
mod store;
mod yaml_lines;

pub use bootstrap::{AccessLog, Bootstrap, Source};
#[cfg(feature = "kubernetes")]
pub use bootstrap::{KubeConnect, KubeSettings};
pub use compile::{compile, render_dump, CompileFailure, CompileOptions};
pub use duration::parse as parse_duration;
pub use error::{ConfigError, ConfigErrors};
pub use raw::RawSet;
pub use snapshot::{
    L4Route, Listener, ListenerKind, PortProtocol, Snapshot, TlsMode, TlsPort, TlsServer,
};
pub use store::ConfigStore;
