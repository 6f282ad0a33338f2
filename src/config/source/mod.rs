//! Config sources: each produces a complete `RawSet` (and the credentials it names).
//!
//! - `file`: `--config` YAML files and directories; `watch` signals their changes.
//! - `kube` (feature `kubernetes`): kube-rs reflectors over the Istio kinds, Services,
//!   EndpointSlices, Pods and Secrets, read into the same `RawSet`.
//!
//! Depends on: `config::raw`, `config::istio`.

pub mod file;
#[cfg(feature = "kubernetes")]
pub mod kube;
pub mod watch;
