//! `Drain`: one handle for the lifecycle — readiness, the stop signal and tracking of every
//! connection task so shutdown can wait for them instead of sleeping.
//!
//! Depends on: tokio-util.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared lifecycle state.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    /// Fires when listeners must stop accepting and connections must wind down.
    pub token: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    ready: Arc<AtomicBool>,
}

impl Drain {
    /// A new, not-ready handle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `/healthz/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Set readiness.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Start shutting down: not ready, stop accepting, wind connections down.
    pub fn shutdown(&self) {
        self.set_ready(false);
        self.token.cancel();
    }
}
