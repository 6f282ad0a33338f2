//! `RawSet`: every Istio resource read from the sources, with where each came from.
//!
//! Sources (files today, Kubernetes later) produce a `RawSet`; `compile` turns it into a
//! `Snapshot`. Nothing here validates.
//!
//! Depends on: `config::istio`, `config::yaml_lines`.

use std::sync::Arc;

use super::error::ConfigError;
use super::istio::{
    DestinationRule, Gateway, ObjectMeta, ServiceEntry, VirtualService, WorkloadEntry,
};
use super::yaml_lines::DocLines;

/// Where a resource was read from, to point errors at a line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Origin {
    pub(crate) file: Arc<str>,
    pub(crate) lines: Arc<DocLines>,
}

impl Origin {
    /// An origin with no lines, for resources not read from a YAML text (the Kubernetes
    /// source names them `kubernetes:Kind/namespace/name`).
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    pub(crate) fn unlined(file: impl Into<Arc<str>>) -> Self {
        Self {
            file: file.into(),
            lines: Arc::new(DocLines::default()),
        }
    }
}

/// One resource: its kind, metadata (namespace defaulted) and spec.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Res<T> {
    pub(crate) kind: &'static str,
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) labels: std::collections::BTreeMap<String, String>,
    pub(crate) spec: T,
    pub(crate) origin: Origin,
}

impl<T> Res<T> {
    pub(crate) fn new(kind: &'static str, meta: ObjectMeta, spec: T, origin: Origin) -> Self {
        Self {
            kind,
            name: meta.name,
            namespace: meta.namespace.unwrap_or_else(|| "default".to_owned()),
            labels: meta.labels,
            spec,
            origin,
        }
    }

    /// `Kind namespace/name`, as errors print it.
    pub(crate) fn id(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    /// `namespace/name`.
    pub(crate) fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// An error at `field` (a path inside `spec`).
    pub(crate) fn error(
        &self,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let field = field.into();
        let path = if field.is_empty() {
            "spec".to_owned()
        } else if field.starts_with('[') {
            format!("spec{field}")
        } else {
            format!("spec.{field}")
        };
        ConfigError {
            file: self.origin.file.clone(),
            line: self.origin.lines.line_of(&path),
            resource: Some(self.id()),
            field: Some(field),
            message: message.into(),
        }
    }
}

/// Every resource meshgate reads, in source order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawSet {
    pub(crate) gateways: Vec<Res<Gateway>>,
    pub(crate) virtual_services: Vec<Res<VirtualService>>,
    pub(crate) destination_rules: Vec<Res<DestinationRule>>,
    pub(crate) service_entries: Vec<Res<ServiceEntry>>,
    pub(crate) workload_entries: Vec<Res<WorkloadEntry>>,
    /// The files read, in order.
    pub(crate) files: Vec<String>,
}

impl RawSet {
    /// Certificate files the Gateways reference (paths, and `credentialName` directories
    /// under `certs_dir`), so a change to them can trigger a reload.
    pub fn referenced_files(&self, certs_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for gw in &self.gateways {
            for tls in gw.spec.servers.iter().filter_map(|s| s.tls.as_ref()) {
                for p in [
                    &tls.server_certificate,
                    &tls.private_key,
                    &tls.ca_certificates,
                ]
                .into_iter()
                .flatten()
                {
                    out.push(std::path::PathBuf::from(p));
                }
                if let Some(name) = &tls.credential_name {
                    for dir in [
                        certs_dir.join(name),
                        certs_dir.join(format!("{name}-cacert")),
                    ] {
                        for f in ["tls.crt", "tls.key", "ca.crt"] {
                            out.push(dir.join(f));
                        }
                    }
                }
            }
        }
        out
    }

    /// Number of resources of each kind, for logs: (gw, vs, dr, se, we).
    pub fn counts(&self) -> [usize; 5] {
        [
            self.gateways.len(),
            self.virtual_services.len(),
            self.destination_rules.len(),
            self.service_entries.len(),
            self.workload_entries.len(),
        ]
    }
}
