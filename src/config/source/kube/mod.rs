//! The Kubernetes source (`--source kubernetes`): kube-rs reflectors over the Istio kinds
//! (`networking.istio.io`, the version chosen by API discovery), core Services,
//! `discovery.k8s.io/v1` EndpointSlices, Pod metadata (labels of endpoints, for subsets) and
//! Secrets (`credentialName`), in all namespaces or those given with `--namespace`.
//!
//! `KubeSource::read` turns the stores into the same `RawSet` the file source produces
//! (Services become synthesized ServiceEntries) plus in-memory `Credentials`; the config task
//! compiles and publishes it exactly as it does for files. This module never compiles,
//! publishes or binds anything.
//!
//! ```text
//! API server ─► watcher (+ default_backoff) ─► reflector Store ─┐  ping Notify
//!  (per kind × namespace scope)                                 │      │ debounced by app
//!                                                               ▼      ▼
//!                          KubeSource::read: stores ─► RawSet + KubeCredentials ─► compile
//! ```
//!
//! Depends on: kube (client, runtime), k8s-openapi, `config::{raw, istio, error}`,
//! `tls::server::Credentials`; submodules `discover`, `reflect`, `istio`, `service`, `secret`,
//! `labels`.

mod discover;
mod error;
mod istio;
mod labels;
mod reflect;
mod secret;
mod service;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, PartialObjectMeta};
use kube::runtime::watcher::DefaultBackoff;
use kube::runtime::{metadata_watcher, watcher, WatchStreamExt};
use kube::Client;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::config::bootstrap::{KubeConnect, KubeSettings};
use crate::config::error::ConfigError;
use crate::config::raw::{RawSet, Res};
use reflect::{Reflectors, Watched};

pub use error::SourceError;
pub use secret::KubeCredentials;

/// Secret types that never hold certificates; the API server filters them out for us.
const SECRET_FIELDS: &str = "type!=kubernetes.io/service-account-token,type!=helm.sh/release.v1";

/// What one read of the stores gives the config task.
#[derive(Debug, Clone)]
pub struct KubeInput {
    /// The resources, Services included as ServiceEntries.
    pub raw: RawSet,
    /// `credentialName` material from Secrets.
    pub credentials: KubeCredentials,
    /// This pod's labels, when Gateways are selected by them (no `--selector`).
    pub workload_labels: Option<BTreeMap<String, String>>,
}

/// Live reflectors over the cluster; dropping it stops every watch.
pub struct KubeSource {
    /// One entry per `discover::KINDS`; `None` for a kind the API server does not serve.
    istio: Vec<Option<Watched<DynamicObject>>>,
    services: Watched<Service>,
    slices: Watched<EndpointSlice>,
    pods: Watched<PartialObjectMeta<Pod>>,
    secrets: Watched<Secret>,
    certs_dir: PathBuf,
    pod_labels: Option<BTreeMap<String, String>>,
    _tasks: JoinSet<()>,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("pod_labels", &self.pod_labels)
            .finish_non_exhaustive()
    }
}

impl KubeSource {
    /// Connect, discover the Istio versions, start every reflector and wait for their first
    /// complete lists. While the API server is unreachable this keeps retrying with backoff.
    /// With `select_by_pod_labels`, Gateways are selected by the labels in
    /// `settings.pod_labels_file` (all Gateways when that file does not exist).
    pub async fn start(
        settings: &KubeSettings,
        certs_dir: PathBuf,
        select_by_pod_labels: bool,
        changed: Arc<Notify>,
    ) -> Result<Self, SourceError> {
        let pod_labels = if select_by_pod_labels {
            let found = labels::read(&settings.pod_labels_file)?;
            match &found {
                Some(l) => tracing::info!(labels = ?l, "selecting Gateways by this pod's labels"),
                None => tracing::info!(
                    file = %settings.pod_labels_file.display(),
                    "no --selector and no pod labels file: serving every Gateway"
                ),
            }
            found
        } else {
            None
        };
        let client = connect(&settings.connect).await?;
        let kinds = discover_with_backoff(&client).await;
        let mut r = Reflectors::new(settings.namespaces.clone(), changed);
        let istio = kinds
            .into_iter()
            .map(|ar| ar.map(|ar| watch_istio(&mut r, &client, ar)))
            .collect();
        let cfg = watcher::Config::default();
        let c = client.clone();
        let services = r.spawn("Service", (), None, move |ns| {
            watcher(api::<Service>(&c, ns), cfg.clone())
                .modify(|s| s.metadata.managed_fields = None)
                .boxed()
        });
        let (c, cfg) = (client.clone(), watcher::Config::default());
        let slices = r.spawn("EndpointSlice", (), None, move |ns| {
            watcher(api::<EndpointSlice>(&c, ns), cfg.clone())
                .modify(|s| s.metadata.managed_fields = None)
                .boxed()
        });
        // Only pod labels are needed: metadata-only watch, stripped to name and labels.
        let (c, cfg) = (client.clone(), watcher::Config::default());
        let pods = r.spawn("Pod", (), Some(pod_labels_digest), move |ns| {
            metadata_watcher(api::<Pod>(&c, ns), cfg.clone())
                .modify(|p| {
                    p.metadata.managed_fields = None;
                    p.metadata.annotations = None;
                    p.metadata.owner_references = None;
                })
                .boxed()
        });
        let (c, cfg) = (client, watcher::Config::default().fields(SECRET_FIELDS));
        let secrets = r.spawn("Secret", (), None, move |ns| {
            watcher(api::<Secret>(&c, ns), cfg.clone())
                .modify(secret::strip)
                .boxed()
        });
        let tasks = r.ready().await?;
        tracing::info!(namespaces = ?settings.namespaces, "kubernetes watches synced");
        Ok(Self {
            istio,
            services,
            slices,
            pods,
            secrets,
            certs_dir,
            pod_labels,
            _tasks: tasks,
        })
    }

    /// The current state of the stores as a `RawSet` (sorted by namespace and name, so an
    /// unchanged cluster reads equal), or every object that cannot be read.
    pub fn read(&self) -> Result<KubeInput, Vec<ConfigError>> {
        let mut raw = RawSet::default();
        let mut errors = Vec::new();
        let w = |i: usize| self.istio.get(i).and_then(Option::as_ref);
        collect(0, w(0), &mut raw.gateways, &mut errors);
        collect(1, w(1), &mut raw.virtual_services, &mut errors);
        collect(2, w(2), &mut raw.destination_rules, &mut errors);
        collect(3, w(3), &mut raw.service_entries, &mut errors);
        collect(4, w(4), &mut raw.workload_entries, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        raw.service_entries.extend(self.service_entries());
        Ok(KubeInput {
            raw,
            credentials: self.credentials(),
            workload_labels: self.pod_labels.clone(),
        })
    }

    /// One synthesized ServiceEntry per Service, after the user's own entries (so an
    /// explicit ServiceEntry for the same host wins, with a warning from the compiler).
    fn service_entries(&self) -> Vec<Res<crate::config::istio::ServiceEntry>> {
        let pods: HashMap<(String, String), BTreeMap<String, String>> = self
            .pods
            .objects()
            .iter()
            .filter_map(|p| {
                let m = &p.metadata;
                let key = (m.namespace.clone()?, m.name.clone()?);
                Some((key, m.labels.clone().unwrap_or_default()))
            })
            .collect();
        let mut by_service: HashMap<(String, String), Vec<Arc<EndpointSlice>>> = HashMap::new();
        for s in self.slices.objects() {
            let owner = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(service::SERVICE_NAME_LABEL))
                .cloned();
            if let (Some(ns), Some(svc)) = (s.metadata.namespace.clone(), owner) {
                by_service.entry((ns, svc)).or_default().push(s);
            }
        }
        let mut services = self.services.objects();
        services.sort_by_key(|s| sort_key(&s.metadata));
        services
            .iter()
            .filter_map(|svc| {
                let key = sort_key(&svc.metadata);
                let mut slices: Vec<&EndpointSlice> = by_service
                    .get(&key)
                    .map(|v| v.iter().map(AsRef::as_ref).collect())
                    .unwrap_or_default();
                slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
                service::service_entry(svc, &slices, |ns, name| {
                    pods.get(&(ns.to_owned(), name.to_owned()))
                })
            })
            .collect()
    }

    fn credentials(&self) -> KubeCredentials {
        let secrets = self
            .secrets
            .objects()
            .iter()
            .filter_map(|s| {
                let key = sort_key(&s.metadata);
                Some((key, secret::TlsSecret::from_secret(s)?))
            })
            .collect();
        KubeCredentials::new(self.certs_dir.clone(), secrets)
    }
}

/// What the source reads of a Pod: its labels.
fn pod_labels_digest(p: &PartialObjectMeta<Pod>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    p.metadata.labels.hash(&mut h);
    h.finish()
}

/// (namespace, name) of an object, for sorting and joins.
fn sort_key(m: &kube::core::ObjectMeta) -> (String, String) {
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

/// Read every object of Istio kind `KINDS[i]` into `out`, sorted; bad ones into `errors`.
fn collect<T: DeserializeOwned>(
    i: usize,
    watched: Option<&Watched<DynamicObject>>,
    out: &mut Vec<Res<T>>,
    errors: &mut Vec<ConfigError>,
) {
    let (Some(watched), Some((kind, _))) = (watched, discover::KINDS.get(i)) else {
        return;
    };
    let mut objs = watched.objects();
    objs.sort_by_key(|o| sort_key(&o.metadata));
    for o in objs {
        match istio::resource(kind, &o) {
            Ok(r) => out.push(r),
            Err(e) => errors.push(e),
        }
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn watch_istio(r: &mut Reflectors, client: &Client, ar: ApiResource) -> Watched<DynamicObject> {
    let kind: &'static str = discover::KINDS
        .iter()
        .find(|(k, _)| *k == ar.kind)
        .map_or("Istio", |(k, _)| k);
    tracing::info!(kind, api_version = %ar.api_version, "watching");
    let (c, cfg, dyntype) = (client.clone(), watcher::Config::default(), ar.clone());
    r.spawn(kind, ar, None, move |ns| {
        let api = match ns {
            Some(ns) => Api::<DynamicObject>::namespaced_with(c.clone(), ns, &dyntype),
            None => Api::<DynamicObject>::all_with(c.clone(), &dyntype),
        };
        watcher(api, cfg.clone())
            .modify(|o| o.metadata.managed_fields = None)
            .boxed()
    })
}

async fn connect(connect: &KubeConnect) -> Result<Client, SourceError> {
    match connect {
        KubeConnect::Client(c) => Ok(c.clone()),
        KubeConnect::Config(cfg) => Client::try_from((**cfg).clone()).map_err(SourceError::Client),
        KubeConnect::Infer => {
            let cfg = kube::Config::infer().await.map_err(SourceError::Infer)?;
            Client::try_from(cfg).map_err(SourceError::Client)
        }
    }
}

/// Discover the Istio kinds, retrying with kube-runtime's default backoff until the API
/// server answers and serves at least one of them (Istio's CRDs may be installed later).
async fn discover_with_backoff(client: &Client) -> Vec<Option<ApiResource>> {
    let mut backoff = DefaultBackoff::default();
    loop {
        match discover::istio_resources(client).await {
            Ok(found) if found.iter().any(Option::is_some) => {
                for ((kind, _), ar) in discover::KINDS.iter().zip(&found) {
                    if ar.is_none() {
                        tracing::warn!(kind, "not served by the API server; ignoring this kind");
                    }
                }
                return found;
            }
            Ok(_) => tracing::warn!(
                group = discover::GROUP,
                "API group not served (are Istio's CRDs installed?); retrying"
            ),
            Err(e) => tracing::warn!(error = %e, "API discovery failed; retrying"),
        }
        tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(30))).await;
    }
}
