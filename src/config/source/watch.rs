//! Watching the files a config came from: every `--config` path and every certificate file
//! the config references. Events (including a Kubernetes ConfigMap's `..data` symlink swap
//! and editors that save by rename, which show up as events on the containing directory)
//! are reduced to a "something changed" signal; the config task debounces bursts.
//!
//! Depends on: notify, tokio (sync).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::Notify;

/// A live set of watches that pings `changed` on any event.
pub struct Watcher {
    inner: notify::RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
    changed: Arc<Notify>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("watched", &self.watched)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// A watcher that wakes `changed` on every file system event it sees.
    pub fn new(changed: Arc<Notify>) -> notify::Result<Self> {
        let tx = changed.clone();
        let inner =
            notify::recommended_watcher(move |ev: notify::Result<notify::Event>| match ev {
                Ok(e) if e.kind.is_access() => {}
                Ok(_) => tx.notify_one(),
                Err(e) => tracing::warn!(error = %e, "file watch error"),
            })?;
        Ok(Self {
            inner,
            watched: BTreeSet::new(),
            changed,
        })
    }

    /// Watch exactly the directories needed for `files_or_dirs`: a directory itself, and for
    /// a file its parent (so renames and symlink swaps are seen). Returns watch errors.
    pub fn set(&mut self, files_or_dirs: &[PathBuf]) -> Vec<String> {
        let want: BTreeSet<PathBuf> = files_or_dirs
            .iter()
            .filter_map(|p| dir_of(p))
            .filter(|d| d.is_dir())
            .collect();
        let mut errors = Vec::new();
        for old in self.watched.difference(&want).cloned().collect::<Vec<_>>() {
            let _ = self.inner.unwatch(&old);
            self.watched.remove(&old);
        }
        for dir in want {
            if self.watched.contains(&dir) {
                continue;
            }
            match self.inner.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(dir);
                }
                Err(e) => errors.push(format!("cannot watch {}: {e}", dir.display())),
            }
        }
        errors
    }

    /// The signal this watcher raises.
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }
}

fn dir_of(p: &Path) -> Option<PathBuf> {
    if p.is_dir() {
        return Some(p.to_owned());
    }
    let parent = p.parent()?;
    Some(if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent.to_owned()
    })
}
