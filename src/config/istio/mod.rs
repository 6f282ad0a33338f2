//! Raw serde mirrors of the Istio `networking.istio.io` specs meshgate reads.
//!
//! Field names follow Istio's API exactly (camelCase on the wire). No logic lives here:
//! validation and defaults belong to `config::compile`. Unknown keys are ignored on purpose,
//! because the CRDs are large and evolve; fields meshgate knows but does not implement are
//! kept as opaque values so the compiler can warn about them.
//!
//! Depends on: serde only.

mod destination_rule;
mod gateway;
mod service_entry;
mod virtual_service;

use std::collections::BTreeMap;

use serde::Deserialize;

pub(crate) use destination_rule::{
    ConnectionPoolSettings, DestinationRule, LoadBalancerSettings, OutlierDetection,
    PortTrafficPolicy, TcpKeepalive, TrafficPolicy,
};
pub(crate) use gateway::{Gateway, ServerTlsSettings};
#[cfg(feature = "kubernetes")]
pub(crate) use service_entry::WorkloadSelector;
pub(crate) use service_entry::{ServiceEntry, ServicePort, WorkloadEntry};
pub(crate) use virtual_service::{
    CorsPolicy, Destination, HeaderOperations, Headers, HttpDirectResponse, HttpFaultInjection,
    HttpMatchRequest, HttpRedirect, HttpRetry, HttpRoute, L4Match, Percent, PortSelector,
    RouteDestination, StringMatch, VirtualService,
};

/// The `metadata` block every resource carries; only the fields meshgate uses.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ObjectMeta {
    pub(crate) name: String,
    pub(crate) namespace: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
}

/// A string or number, as Istio accepts for a few numeric fields written both ways.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub(crate) enum IntOrString {
    Int(i64),
    String(String),
}
