//! `SourceError`: why the Kubernetes source could not start. Problems inside one object are
//! not here: they are `ConfigError`s that reject one snapshot and keep the last one serving.
//!
//! Depends on: thiserror, kube (error types).

use std::path::PathBuf;

/// The Kubernetes source could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No kubeconfig and no in-cluster service account could be used.
    #[error("cannot find a Kubernetes configuration (KUBECONFIG or in-cluster): {0}")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built from the configuration (TLS, proxy, auth).
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The pod labels file exists but cannot be read.
    #[error("cannot read pod labels from {}: {source}", path.display())]
    LabelsRead {
        /// The `--pod-labels-file`.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The pod labels file is not in the downward API format (`key="value"` per line).
    #[error("{}:{line}: invalid pod label line: {message}", path.display())]
    LabelsFormat {
        /// The `--pod-labels-file`.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A watcher task ended before its first complete list (the runtime stopped).
    #[error("the {0} watcher stopped before its first list completed")]
    WatcherStopped(&'static str),
}
