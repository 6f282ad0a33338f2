//! Watching the files a config came from: every `--config` path and every certificate file
//! the config references. Directories are watched (not files), so a Kubernetes ConfigMap's
//! `..data` symlink swap and editors that save by rename are seen; events are filtered to
//! the files that can change the config (YAML, the `..` entries of a mounted volume, the
//! referenced certificates) and reduced to a "something changed" signal that the config
//! task debounces.
//!
//! Depends on: notify, tokio (sync).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::Notify;

/// A live set of watches that pings `changed` on events about config or certificate files.
pub struct Watcher {
    inner: notify::RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
    /// Files whose events matter besides YAML files and `..data`-style entries.
    files: Arc<Mutex<BTreeSet<PathBuf>>>,
    changed: Arc<Notify>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("watched", &self.watched)
            .finish_non_exhaustive()
    }
}

/// Whether an event on `p` can change the config.
fn relevant(p: &Path, files: &BTreeSet<PathBuf>) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        || p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".."))
        || files.contains(p)
}

impl Watcher {
    /// A watcher that wakes `changed` on relevant file system events.
    pub fn new(changed: Arc<Notify>) -> notify::Result<Self> {
        let tx = changed.clone();
        let files: Arc<Mutex<BTreeSet<PathBuf>>> = Arc::default();
        let seen = files.clone();
        let inner =
            notify::recommended_watcher(move |ev: notify::Result<notify::Event>| match ev {
                Ok(e) if e.kind.is_access() => {}
                Ok(e) => {
                    let files = seen.lock().unwrap_or_else(|p| p.into_inner());
                    if e.paths.is_empty() || e.paths.iter().any(|p| relevant(p, &files)) {
                        tx.notify_one();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "file watch error"),
            })?;
        Ok(Self {
            inner,
            watched: BTreeSet::new(),
            files,
            changed,
        })
    }

    /// Watch the directories needed for `files_or_dirs` (a directory itself, a file's
    /// parent); events on the files among them and on `files` count, besides YAML files.
    /// Returns watch errors.
    pub fn set(&mut self, files_or_dirs: &[PathBuf], files: &[PathBuf]) -> Vec<String> {
        {
            let mut set = self.files.lock().unwrap_or_else(|p| p.into_inner());
            set.clear();
            set.extend(files_or_dirs.iter().filter(|p| !p.is_dir()).cloned());
            set.extend(files.iter().cloned());
            // notify reports absolute paths: keep both forms of relative ones.
            let absolute: Vec<PathBuf> = set
                .iter()
                .filter_map(|p| std::path::absolute(p).ok())
                .collect();
            set.extend(absolute);
        }
        let want: BTreeSet<PathBuf> = files_or_dirs
            .iter()
            .chain(files)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relevance() {
        let files = BTreeSet::from([PathBuf::from("/c/tls.crt")]);
        assert!(relevant(Path::new("/x/gw.yaml"), &files));
        assert!(relevant(Path::new("/x/..data"), &files));
        assert!(relevant(Path::new("/x/..2026_01_01"), &files));
        assert!(relevant(Path::new("/c/tls.crt"), &files));
        assert!(!relevant(Path::new("/x/debug.log"), &files));
    }
}
