//! `RawSet` -> `Snapshot`: all validation happens here. Errors are collected (never
//! fail-fast), each with file, line, resource and field path; warnings note what is accepted
//! but not (yet) acted upon.
//!
//! Binding follows Istio: a VirtualService applies to a Gateway server when the Gateway is in
//! its `gateways` list and their hosts intersect (the virtual host is the more specific of
//! the two); several VirtualServices for one host are merged in source order.
//!
//! Depends on: `config::{raw, istio, error, snapshot}`, `route`, `upstream`.

mod dump;
mod routes;
mod services;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::config::error::ConfigError;
use crate::config::raw::RawSet;
use crate::config::snapshot::{Listener, ListenerKind, Snapshot};
use crate::route::{intersect, RouteTable, VirtualHost};
use crate::upstream::Registry;
use routes::{CompiledRule, RuleCompiler};

/// Server protocols served as plain HTTP listeners.
const HTTP_PROTOCOLS: [&str; 4] = ["HTTP", "HTTP2", "GRPC", "GRPC-WEB"];
/// The reserved gateway name for sidecar (mesh) routing.
const MESH: &str = "mesh";

/// Inputs of a compile besides the resources.
#[derive(Debug)]
pub struct CompileOptions<'a> {
    /// Serve only Gateways whose `selector` contains all these labels (`--selector`).
    pub selector: BTreeMap<String, String>,
    /// Serve mesh-bound VirtualServices on this port (`--mesh-port`).
    pub mesh_port: Option<u16>,
    /// Upstream pools, shared across compiles.
    pub registry: &'a Registry,
}

/// A compile that found errors: nothing from it may be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileFailure {
    /// What must be fixed.
    pub errors: Vec<ConfigError>,
    /// What would have been accepted with a warning.
    pub warnings: Vec<ConfigError>,
}

/// `ns/name` for a gateway reference written in namespace `ns`.
pub(crate) fn gateway_key(reference: &str, ns: &str) -> String {
    if reference == MESH || reference.contains('/') {
        reference.to_owned()
    } else {
        format!("{ns}/{reference}")
    }
}

struct ServerHost {
    /// Namespace filter: `None` for any.
    namespace: Option<String>,
    host: String,
}

struct ServerRef {
    gateway: String,
    id: String,
    hosts: Vec<ServerHost>,
}

/// Compile `raw` into a snapshot, or every error found.
pub fn compile(raw: &RawSet, opts: &CompileOptions<'_>) -> Result<Snapshot, CompileFailure> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    check_duplicates(raw, &mut errors);

    // Gateways: which exist, which we serve, their servers per port.
    let mut known_gateways = HashSet::new();
    let mut ports: BTreeMap<u16, (String, Vec<ServerRef>)> = BTreeMap::new();
    for gw in &raw.gateways {
        known_gateways.insert(gw.key());
        let selected = opts
            .selector
            .iter()
            .all(|(k, v)| gw.spec.selector.get(k) == Some(v));
        if !selected {
            tracing::debug!(gateway = %gw.key(), "gateway not selected by --selector");
            continue;
        }
        if gw.spec.servers.is_empty() {
            errors.push(gw.error("servers", "at least one server is required"));
        }
        for (i, s) in gw.spec.servers.iter().enumerate() {
            let f = format!("servers[{i}]");
            let Some(port) = &s.port else {
                errors.push(gw.error(format!("{f}.port"), "port is required"));
                continue;
            };
            let Some(number) = u16::try_from(port.number).ok().filter(|n| *n > 0) else {
                errors.push(gw.error(format!("{f}.port.number"), "must be 1..=65535"));
                continue;
            };
            if s.hosts.is_empty() {
                errors.push(gw.error(format!("{f}.hosts"), "at least one host is required"));
                continue;
            }
            let protocol = port.protocol.to_ascii_uppercase();
            let mut hosts = Vec::new();
            for (h, host) in s.hosts.iter().enumerate() {
                let (ns, name) = match host.split_once('/') {
                    Some(("*", n)) => (None, n),
                    Some((".", n)) => (Some(gw.namespace.clone()), n),
                    Some((ns, n)) => (Some(ns.to_owned()), n),
                    None => (None, host.as_str()),
                };
                if !valid_host_pattern(name) {
                    errors.push(
                        gw.error(format!("{f}.hosts[{h}]"), format!("invalid host {host:?}")),
                    );
                }
                hosts.push(ServerHost {
                    namespace: ns,
                    host: name.to_ascii_lowercase(),
                });
            }
            if !HTTP_PROTOCOLS.contains(&protocol.as_str()) {
                warnings.push(gw.error(
                    format!("{f}.port.protocol"),
                    format!("{protocol} servers are not served yet (TLS termination and passthrough come next): port {number} is not opened"),
                ));
                continue;
            }
            if let Some(tls) = &s.tls {
                if tls.https_redirect {
                    warnings.push(gw.error(
                        format!("{f}.tls.httpsRedirect"),
                        "not supported yet: ignored",
                    ));
                }
            }
            if s.bind.is_some() {
                warnings.push(gw.error(
                    format!("{f}.bind"),
                    "not supported: every port binds on --bind-address",
                ));
            }
            let entry = ports
                .entry(number)
                .or_insert_with(|| (protocol.clone(), Vec::new()));
            entry.1.push(ServerRef {
                gateway: gw.key(),
                id: format!("{} servers[{i}]", gw.id()),
                hosts,
            });
        }
    }

    let mut services = services::Services::new(
        &raw.service_entries,
        &raw.workload_entries,
        &raw.destination_rules,
        opts.registry,
        &mut errors,
        &mut warnings,
    );

    // VirtualServices: compile rules once, then bind.
    let mut compiled: Vec<(usize, Vec<CompiledRule>, Vec<String>)> = Vec::new();
    for (vi, vs) in raw.virtual_services.iter().enumerate() {
        if vs.spec.hosts.is_empty() {
            errors.push(vs.error("hosts", "at least one host is required"));
        }
        for (h, host) in vs.spec.hosts.iter().enumerate() {
            if !valid_host_pattern(host) {
                errors.push(vs.error(format!("hosts[{h}]"), format!("invalid host {host:?}")));
            }
        }
        if !vs.spec.tls.is_empty() {
            warnings.push(vs.error("tls", "TLS routes are not supported yet: ignored"));
        }
        if !vs.spec.tcp.is_empty() {
            warnings.push(vs.error("tcp", "TCP routes are not supported yet: ignored"));
        }
        let mut gws = Vec::new();
        for (g, r) in vs.spec.gateways.iter().enumerate() {
            let key = gateway_key(r, &vs.namespace);
            if key != MESH && !known_gateways.contains(&key) {
                errors.push(vs.error(format!("gateways[{g}]"), format!("unknown gateway {key}")));
            }
            gws.push(key);
        }
        if gws.is_empty() {
            warnings.push(vs.error(
                "gateways",
                "no gateways: bound to the mesh only (Istio's rule), served only on --mesh-port",
            ));
            gws.push(MESH.to_owned());
        }
        let mut rc = RuleCompiler {
            vs,
            services: &mut services,
            errors: &mut errors,
            warnings: &mut warnings,
        };
        let rules: Vec<CompiledRule> = vs
            .spec
            .http
            .iter()
            .enumerate()
            .filter_map(|(i, r)| rc.rule(i, r))
            .collect();
        compiled.push((vi, rules, gws));
    }

    let mut listeners = Vec::new();
    let mut tables = HashMap::new();
    for (port, (protocol, servers)) in &ports {
        let mut table = RouteTable::default();
        let mut seen = HashSet::new();
        for (vi, rules, gws) in &compiled {
            let vs = &raw.virtual_services[*vi];
            for server in servers.iter().filter(|s| gws.contains(&s.gateway)) {
                for vs_host in &vs.spec.hosts {
                    for sh in &server.hosts {
                        if sh.namespace.as_ref().is_some_and(|ns| *ns != vs.namespace) {
                            continue;
                        }
                        let Some(pattern) = intersect(vs_host, &sh.host) else {
                            continue;
                        };
                        if !seen.insert((pattern.clone(), *vi, server.gateway.clone())) {
                            continue;
                        }
                        let vh = table.hosts.entry_or_insert_with(&pattern, || VirtualHost {
                            name: pattern.as_str().into(),
                            routes: Vec::new(),
                        });
                        vh.routes
                            .extend(rules.iter().filter_map(|r| r.for_gateway(&server.gateway)));
                    }
                }
            }
        }
        let _ = protocol;
        listeners.push(Listener {
            port: *port,
            kind: ListenerKind::Gateway,
            servers: servers.iter().map(|s| s.id.clone()).collect(),
        });
        tables.insert(*port, table);
    }

    if let Some(mesh_port) = opts.mesh_port {
        if ports.contains_key(&mesh_port) {
            errors.push(ConfigError {
                file: "".into(),
                line: 0,
                resource: None,
                field: None,
                message: format!("--mesh-port {mesh_port} is also a Gateway server port"),
            });
        }
        let mut table = RouteTable::default();
        for (vi, rules, gws) in &compiled {
            if !gws.iter().any(|g| g == MESH) {
                continue;
            }
            let vs = &raw.virtual_services[*vi];
            let mut names = BTreeSet::new();
            for h in &vs.spec.hosts {
                names.insert(h.to_ascii_lowercase());
                if let Some(full) = services::expand_short(h, &vs.namespace) {
                    names.insert(full);
                }
            }
            for name in names {
                let vh = table.hosts.entry_or_insert_with(&name, || VirtualHost {
                    name: name.as_str().into(),
                    routes: Vec::new(),
                });
                vh.routes
                    .extend(rules.iter().filter_map(|r| r.for_gateway(MESH)));
            }
        }
        listeners.push(Listener {
            port: mesh_port,
            kind: ListenerKind::Mesh,
            servers: Vec::new(),
        });
        tables.insert(mesh_port, table);
    }

    if !errors.is_empty() {
        return Err(CompileFailure { errors, warnings });
    }
    let clusters = std::mem::take(&mut services.clusters);
    let mut snap = Snapshot {
        generation: 0,
        listeners,
        tables,
        clusters,
        warnings,
        files: raw.files.clone(),
        dump: serde_json::Value::Null,
    };
    snap.dump = dump::render(&snap);
    Ok(snap)
}

/// `name`, `*.suffix` or `*`; no other wildcard, no empty labels.
fn valid_host_pattern(h: &str) -> bool {
    let name = h.strip_prefix("*.").unwrap_or(h);
    h == "*"
        || (!name.is_empty()
            && !name.contains('*')
            && !name.contains('/')
            && name
                .split('.')
                .all(|l| !l.is_empty() || name.ends_with('.')))
}

fn check_duplicates(raw: &RawSet, errors: &mut Vec<ConfigError>) {
    fn dups<T>(items: &[crate::config::raw::Res<T>], errors: &mut Vec<ConfigError>) {
        let mut seen = HashMap::new();
        for r in items {
            if let Some(first) = seen.insert(r.key(), Arc::clone(&r.origin.file)) {
                errors.push(r.error(
                    "",
                    format!("duplicate {} (first defined in {first})", r.id()),
                ));
            }
        }
    }
    dups(&raw.gateways, errors);
    dups(&raw.virtual_services, errors);
    dups(&raw.destination_rules, errors);
    dups(&raw.service_entries, errors);
    dups(&raw.workload_entries, errors);
}
