//! Reflectors: one kube-runtime watcher + store per (kind, namespace scope), each driven by
//! its own task. Every change (an object applied or deleted, a relist completed) pings the
//! config task's `Notify`, which debounces bursts into one rebuild. A kind can name the part
//! of its objects that matters (`Digest`): Pods change status all the time, but only their
//! labels are read, so only a label change pings.
//!
//! Recovery is kube-runtime's: a failed list or watch is retried with `default_backoff`
//! (0.8 s doubling to 30 s, with jitter); a dropped watch resumes from the last resource
//! version; `410 Gone` restarts with a fresh list, swapped into the store atomically at
//! `InitDone`. Until then the store keeps its last state, so the last snapshot keeps serving.
//!
//! Depends on: kube-runtime (watcher, reflector), futures-util, tokio (Notify, JoinSet).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::Store;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::error::SourceError;

/// A future that resolves when one store has its first complete list.
type Ready = Pin<Box<dyn Future<Output = Result<(), SourceError>> + Send>>;

/// The part of an object the source reads, hashed; an update that keeps it is not a change.
pub(crate) type Digest<K> = fn(&K) -> u64;

/// The stores of one kind, one per watched namespace (or one for all namespaces).
pub(crate) struct Watched<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    stores: Vec<Store<K>>,
}

impl<K: Resource + Clone + 'static> Watched<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    /// Every object currently known, across namespaces.
    pub(crate) fn objects(&self) -> Vec<Arc<K>> {
        self.stores.iter().flat_map(Store::state).collect()
    }
}

/// Starts reflectors and tracks their tasks and first lists.
pub(crate) struct Reflectors {
    /// Namespaces to watch; empty means all.
    namespaces: Vec<String>,
    changed: Arc<Notify>,
    tasks: JoinSet<()>,
    ready: Vec<Ready>,
}

impl Reflectors {
    /// Reflectors over `namespaces` (all when empty) that ping `changed`.
    pub(crate) fn new(namespaces: Vec<String>, changed: Arc<Notify>) -> Self {
        Self {
            namespaces,
            changed,
            tasks: JoinSet::new(),
            ready: Vec::new(),
        }
    }

    /// Watch `kind` in every scope: `events(namespace)` makes the watcher stream for one
    /// namespace (`None`: all namespaces).
    pub(crate) fn spawn<K>(
        &mut self,
        kind: &'static str,
        dyntype: K::DynamicType,
        digest: Option<Digest<K>>,
        events: impl Fn(Option<&str>) -> BoxStream<'static, watcher::Result<watcher::Event<K>>>,
    ) -> Watched<K>
    where
        K: Resource + Clone + Send + Sync + 'static,
        K::DynamicType: Eq + Hash + Clone + Send + Sync,
    {
        let scopes: Vec<Option<String>> = if self.namespaces.is_empty() {
            vec![None]
        } else {
            self.namespaces.iter().cloned().map(Some).collect()
        };
        let mut stores = Vec::new();
        for scope in scopes {
            let writer = Writer::new(dyntype.clone());
            let store = writer.as_reader();
            let stream = events(scope.as_deref()).default_backoff().reflect(writer);
            self.tasks
                .spawn(drive(kind, scope, stream, digest, self.changed.clone()));
            let first = store.clone();
            self.ready.push(Box::pin(async move {
                first
                    .wait_until_ready()
                    .await
                    .map_err(|_| SourceError::WatcherStopped(kind))
            }));
            stores.push(store);
        }
        Watched { stores }
    }

    /// Wait until every store has its first complete list; then the tasks, which end when
    /// the returned set is dropped.
    pub(crate) async fn ready(self) -> Result<JoinSet<()>, SourceError> {
        for r in self.ready {
            r.await?;
        }
        Ok(self.tasks)
    }
}

/// Drive one reflector stream for ever, pinging `changed` on every change (with `digest`:
/// on every change of the digested part).
async fn drive<K: Resource>(
    kind: &'static str,
    scope: Option<String>,
    events: impl Stream<Item = watcher::Result<watcher::Event<K>>>,
    digest: Option<Digest<K>>,
    changed: Arc<Notify>,
) {
    let namespace = scope.as_deref().unwrap_or("*");
    let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
    // Digests of the objects in the store, and of those arriving during a relist.
    let mut known: HashMap<(String, String), u64> = HashMap::new();
    let mut relist: HashMap<(String, String), u64> = HashMap::new();
    let mut events = std::pin::pin!(events);
    while let Some(ev) = events.next().await {
        match ev {
            Ok(watcher::Event::Apply(o)) => match digest {
                Some(d) if known.insert(key(&o), d(&o)) == Some(d(&o)) => {}
                _ => changed.notify_one(),
            },
            Ok(watcher::Event::Delete(o)) => {
                known.remove(&key(&o));
                changed.notify_one();
            }
            Ok(watcher::Event::Init) => relist.clear(),
            Ok(watcher::Event::InitApply(o)) => {
                if let Some(d) = digest {
                    relist.insert(key(&o), d(&o));
                }
            }
            Ok(watcher::Event::InitDone) => {
                // The store was just replaced: always rebuild (a relist may drop objects).
                known = std::mem::take(&mut relist);
                changed.notify_one();
            }
            Err(watcher::Error::WatchError(e)) if e.code == 410 => {
                tracing::debug!(kind, namespace, "watch expired (410 Gone): relisting");
            }
            Err(e) => {
                tracing::warn!(kind, namespace, error = %e, "watch failed; retrying with backoff");
            }
        }
    }
}
