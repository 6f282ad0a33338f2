//! `Gateway` (networking.istio.io): the ports and hosts a gateway exposes.
//!
//! Depends on: serde.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `Gateway.spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Gateway {
    pub(crate) selector: BTreeMap<String, String>,
    pub(crate) servers: Vec<Server>,
}

/// `Gateway.spec.servers[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Server {
    pub(crate) port: Option<GatewayPort>,
    pub(crate) bind: Option<String>,
    pub(crate) hosts: Vec<String>,
    pub(crate) tls: Option<ServerTlsSettings>,
    pub(crate) name: Option<String>,
    pub(crate) default_endpoint: Option<String>,
}

/// `Gateway.spec.servers[].port`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct GatewayPort {
    pub(crate) number: u32,
    pub(crate) protocol: String,
    pub(crate) name: String,
    pub(crate) target_port: Option<u32>,
}

/// `Gateway.spec.servers[].tls` (ServerTLSSettings).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ServerTlsSettings {
    pub(crate) https_redirect: bool,
    pub(crate) mode: Option<String>,
    pub(crate) server_certificate: Option<String>,
    pub(crate) private_key: Option<String>,
    pub(crate) ca_certificates: Option<String>,
    pub(crate) credential_name: Option<String>,
    pub(crate) subject_alt_names: Vec<String>,
    pub(crate) min_protocol_version: Option<String>,
    pub(crate) max_protocol_version: Option<String>,
    pub(crate) cipher_suites: Vec<String>,
}
