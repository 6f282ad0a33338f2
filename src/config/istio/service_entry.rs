//! `ServiceEntry` and `WorkloadEntry` (networking.istio.io): the backends meshgate may call.
//!
//! Depends on: serde.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `ServiceEntry.spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ServiceEntry {
    pub(crate) hosts: Vec<String>,
    pub(crate) addresses: Vec<String>,
    pub(crate) ports: Vec<ServicePort>,
    pub(crate) location: Option<String>,
    pub(crate) resolution: Option<String>,
    pub(crate) endpoints: Vec<WorkloadEntry>,
    pub(crate) workload_selector: Option<WorkloadSelector>,
    pub(crate) export_to: Vec<String>,
    pub(crate) subject_alt_names: Vec<String>,
}

/// `ServiceEntry.spec.ports[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ServicePort {
    pub(crate) number: u32,
    pub(crate) protocol: Option<String>,
    pub(crate) name: String,
    pub(crate) target_port: Option<u32>,
}

/// `ServiceEntry.spec.workloadSelector`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct WorkloadSelector {
    pub(crate) labels: BTreeMap<String, String>,
}

/// `WorkloadEntry.spec`, also the shape of `ServiceEntry.spec.endpoints[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct WorkloadEntry {
    pub(crate) address: String,
    pub(crate) ports: BTreeMap<String, u32>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) network: Option<String>,
    pub(crate) locality: Option<String>,
    pub(crate) weight: Option<u32>,
    pub(crate) service_account: Option<String>,
}
