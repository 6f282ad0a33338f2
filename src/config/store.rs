//! `ConfigStore`: the one `ArcSwap<Snapshot>` the data plane reads, plus a `watch` channel
//! announcing each new generation. Exactly one writer (the config task) publishes.
//!
//! Depends on: arc-swap, tokio (watch), `config::snapshot`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::snapshot::Snapshot;

/// The active snapshot and its generation.
#[derive(Debug)]
pub struct ConfigStore {
    current: ArcSwap<Snapshot>,
    version: watch::Sender<u64>,
    last_errors: ArcSwap<Vec<String>>,
}

impl Default for ConfigStore {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigStore {
    /// A store holding an empty snapshot (generation 0: nothing loaded yet).
    pub fn new() -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::default()),
            version: watch::channel(0).0,
            last_errors: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// The current snapshot; hold the `Arc` for the whole request.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publish `snap` as the next generation; returns that generation and the snapshot it
    /// replaced (for the caller to free where it costs no request anything).
    pub fn publish(&self, mut snap: Snapshot) -> (u64, Arc<Snapshot>) {
        let generation = *self.version.borrow() + 1;
        snap.generation = generation;
        let previous = self.current.swap(Arc::new(snap));
        self.version.send_replace(generation);
        self.last_errors.store(Arc::new(Vec::new()));
        (generation, previous)
    }

    /// Record a rejected config; the active snapshot stays.
    pub fn reject(&self, errors: Vec<String>) {
        self.last_errors.store(Arc::new(errors));
    }

    /// Errors of the last rejected config (empty once a config is accepted).
    pub fn last_errors(&self) -> Arc<Vec<String>> {
        self.last_errors.load_full()
    }

    /// A receiver notified on every publish.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}
