//! `RawSet` -> `Snapshot`: all validation happens here. Errors are collected (never
//! fail-fast), each with file, line, resource and field path; warnings note what is accepted
//! but not (yet) acted upon.
//!
//! Binding follows Istio: a VirtualService applies to a Gateway server when the Gateway is in
//! its `gateways` list and their hosts intersect (the virtual host is the more specific of
//! the two); several VirtualServices for one host are merged in source order.
//!
//! Depends on: `config::{raw, istio, error, snapshot}`, `route`, `upstream`.

mod delegate;
mod dump;
mod filters;
mod l4;
mod routes;
mod services;
mod tls;

pub use dump::render as render_dump;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::config::error::ConfigError;
use crate::config::raw::RawSet;
use crate::config::snapshot::{
    L4Route, Listener, ListenerKind, PortProtocol, Snapshot, TlsMode, TlsPort, TlsServer,
};
use crate::route::{intersect, FastMap, RouteTable, VirtualHost};
use crate::tls::server::{Credentials, SessionCaches};
use crate::upstream::Registry;
use routes::CompiledRule;

/// Server protocols served as plain HTTP listeners.
const HTTP_PROTOCOLS: [&str; 4] = ["HTTP", "HTTP2", "GRPC", "GRPC-WEB"];
/// Server protocols served as TLS listeners (terminated or passed through by SNI).
const TLS_PROTOCOLS: [&str; 2] = ["HTTPS", "TLS"];
/// Server protocols served as opaque TCP.
const TCP_PROTOCOLS: [&str; 4] = ["TCP", "MONGO", "MYSQL", "REDIS"];
/// The reserved gateway name for sidecar (mesh) routing.
const MESH: &str = "mesh";

/// Inputs of a compile besides the resources.
#[derive(Debug)]
pub struct CompileOptions<'a> {
    /// Serve only Gateways whose `selector` contains all these labels (`--selector`).
    pub selector: BTreeMap<String, String>,
    /// This gateway's own labels (the pod's, in Kubernetes mode): serve only Gateways whose
    /// `selector` they contain, Istio's rule. `None`: no such filter.
    pub workload_labels: Option<BTreeMap<String, String>>,
    /// Serve mesh-bound VirtualServices on this port (`--mesh-port`).
    pub mesh_port: Option<u16>,
    /// Upstream pools, shared across compiles.
    pub registry: &'a Registry,
    /// Where `credentialName` certificates come from.
    pub credentials: &'a dyn Credentials,
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
    /// Index of the Gateway in `raw.gateways` and of the server in it.
    gw_index: usize,
    server_index: usize,
    id: String,
    protocol: String,
    hosts: Vec<ServerHost>,
    https_redirect: bool,
}

impl ServerRef {
    fn admits(&self, vs_namespace: &str) -> impl Iterator<Item = &ServerHost> + '_ {
        let ns = vs_namespace.to_owned();
        self.hosts
            .iter()
            .filter(move |sh| sh.namespace.as_ref().is_none_or(|n| *n == ns))
    }
}

/// A VirtualService after rule compilation.
struct CompiledVs {
    index: usize,
    rules: Vec<CompiledRule>,
    tls: Vec<l4::L4Rule>,
    tcp: Vec<l4::L4Rule>,
    gateways: Vec<String>,
}

fn class_of(protocol: &str) -> Option<PortProtocol> {
    if HTTP_PROTOCOLS.contains(&protocol) {
        Some(PortProtocol::Http)
    } else if TLS_PROTOCOLS.contains(&protocol) {
        Some(PortProtocol::Tls)
    } else if TCP_PROTOCOLS.contains(&protocol) {
        Some(PortProtocol::Tcp)
    } else {
        None
    }
}

/// Compile `raw` into a snapshot, or every error found.
pub fn compile(raw: &RawSet, opts: &CompileOptions<'_>) -> Result<Snapshot, CompileFailure> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    check_duplicates(raw, &mut errors);

    // Gateways: which exist, which we serve, their servers per port.
    let mut known_gateways = HashSet::new();
    let mut ports: BTreeMap<u16, (PortProtocol, Vec<ServerRef>)> = BTreeMap::new();
    for (gi, gw) in raw.gateways.iter().enumerate() {
        known_gateways.insert(gw.key());
        let selected = opts
            .selector
            .iter()
            .all(|(k, v)| gw.spec.selector.get(k) == Some(v))
            && opts.workload_labels.as_ref().is_none_or(|labels| {
                gw.spec
                    .selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            });
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
            let Some(class) = class_of(&protocol) else {
                warnings.push(gw.error(
                    format!("{f}.port.protocol"),
                    format!("{protocol} servers are not supported: port {number} is not opened"),
                ));
                continue;
            };
            let https_redirect = s.tls.as_ref().is_some_and(|t| t.https_redirect);
            if https_redirect && class != PortProtocol::Http {
                warnings.push(gw.error(
                    format!("{f}.tls.httpsRedirect"),
                    "applies to HTTP servers only: ignored",
                ));
            }
            if s.bind.is_some() {
                warnings.push(gw.error(
                    format!("{f}.bind"),
                    "not supported: every port binds on --bind-address",
                ));
            }
            let entry = ports.entry(number).or_insert_with(|| (class, Vec::new()));
            if entry.0 != class {
                errors.push(gw.error(
                    format!("{f}.port.protocol"),
                    format!("port {number} is already used by a server of another protocol family"),
                ));
                continue;
            }
            entry.1.push(ServerRef {
                gateway: gw.key(),
                gw_index: gi,
                server_index: i,
                id: format!("{} servers[{i}]", gw.id()),
                protocol,
                hosts,
                https_redirect: https_redirect && class == PortProtocol::Http,
            });
        }
    }

    let mut services = services::Services::new(
        &raw.service_entries,
        &raw.workload_entries,
        &raw.destination_rules,
        opts.registry,
        opts.credentials,
        &mut errors,
        &mut warnings,
    );

    // VirtualServices: compile rules once, then bind.
    let mut compiled: Vec<CompiledVs> = Vec::new();
    let delegates = delegate::targets(raw);
    for (vi, vs) in raw.virtual_services.iter().enumerate() {
        if vs.spec.hosts.is_empty() {
            // Without hosts a VirtualService is a delegate: its rules are compiled where a
            // root VirtualService delegates to it.
            if delegates.contains(&vs.key()) {
                if !vs.spec.gateways.is_empty() {
                    warnings.push(vs.error(
                        "gateways",
                        "ignored: a delegate VirtualService is bound through its root",
                    ));
                }
            } else {
                errors.push(vs.error(
                    "hosts",
                    "at least one host is required (only a delegate VirtualService may omit hosts, and none delegates to this one)",
                ));
            }
            continue;
        }
        for (h, host) in vs.spec.hosts.iter().enumerate() {
            if !valid_host_pattern(host) {
                errors.push(vs.error(format!("hosts[{h}]"), format!("invalid host {host:?}")));
            }
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
        let rules: Vec<CompiledRule> =
            delegate::rules(raw, vs, &mut services, &mut errors, &mut warnings);
        let tls = l4::rules(vs, true, &mut services, &mut errors, &mut warnings);
        let tcp = l4::rules(vs, false, &mut services, &mut errors, &mut warnings);
        compiled.push(CompiledVs {
            index: vi,
            rules,
            tls,
            tcp,
            gateways: gws,
        });
    }

    let mut listeners = Vec::new();
    let mut tables = FastMap::default();
    let mut tls_ports = FastMap::default();
    let mut tcp_ports = FastMap::default();
    let mut caches = SessionCaches::default();
    for (port, (class, servers)) in &ports {
        match class {
            PortProtocol::Http => {
                let refs: Vec<&ServerRef> = servers.iter().collect();
                tables.insert(*port, http_table(raw, &compiled, &refs));
            }
            PortProtocol::Tls => {
                let tp = tls_port(
                    raw,
                    opts,
                    &mut services,
                    &compiled,
                    *port,
                    servers,
                    &mut caches,
                    &mut errors,
                    &mut warnings,
                );
                tls_ports.insert(*port, tp);
            }
            PortProtocol::Tcp => {
                let refs: Vec<&ServerRef> = servers.iter().collect();
                tcp_ports.insert(*port, tcp_routes(raw, &compiled, *port, &refs));
            }
        }
        listeners.push(Listener {
            port: *port,
            kind: ListenerKind::Gateway,
            protocol: *class,
            servers: servers.iter().map(|s| s.id.clone()).collect(),
        });
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
        let mut table = mesh_table(raw, &compiled);
        mesh_defaults(raw, &mut services, &mut table, &mut errors, &mut warnings);
        tables.insert(mesh_port, table);
        listeners.push(Listener {
            port: mesh_port,
            kind: ListenerKind::Mesh,
            protocol: PortProtocol::Http,
            servers: Vec::new(),
        });
    }

    if !errors.is_empty() {
        return Err(CompileFailure { errors, warnings });
    }
    let clusters = std::mem::take(&mut services.clusters);
    let snap = Snapshot {
        generation: 0,
        listeners,
        tables,
        tls: tls_ports,
        tcp: tcp_ports,
        clusters,
        warnings,
        files: raw.files.clone(),
    };
    Ok(snap)
}

/// The HTTP routes of `servers`: every VirtualService bound to a server's Gateway, under
/// the intersection of its hosts with the server's, merged per host in source order.
fn http_table(raw: &RawSet, compiled: &[CompiledVs], servers: &[&ServerRef]) -> RouteTable {
    let mut table = RouteTable::default();
    let mut seen = HashSet::new();
    for cvs in compiled {
        let vs = &raw.virtual_services[cvs.index];
        for server in servers.iter().filter(|s| cvs.gateways.contains(&s.gateway)) {
            for vs_host in &vs.spec.hosts {
                for sh in server.admits(&vs.namespace) {
                    let Some(pattern) = intersect(vs_host, &sh.host) else {
                        continue;
                    };
                    if !seen.insert((pattern.clone(), cvs.index, server.gateway.clone())) {
                        continue;
                    }
                    let vh = table.hosts.entry_or_insert_with(&pattern, || VirtualHost {
                        name: pattern.as_str().into(),
                        ..VirtualHost::default()
                    });
                    vh.https_redirect |= server.https_redirect;
                    vh.routes.extend(
                        cvs.rules
                            .iter()
                            .filter_map(|r| r.for_gateway(&server.gateway)),
                    );
                }
            }
        }
    }
    // `extend` leaves room for four routes (1.9 KB) where most hosts have one; the table
    // lives as long as the snapshot, and 10,000 hosts held 19 MB of spare capacity.
    for vh in table.hosts.values_mut() {
        vh.routes.shrink_to_fit();
    }
    // httpsRedirect applies to every host the server exposes, with or without routes.
    for server in servers.iter().filter(|s| s.https_redirect) {
        for sh in &server.hosts {
            let vh = table.hosts.entry_or_insert_with(&sh.host, || VirtualHost {
                name: sh.host.as_str().into(),
                ..VirtualHost::default()
            });
            vh.https_redirect = true;
        }
    }
    table
}

#[allow(
    clippy::too_many_arguments,
    reason = "threads the compile's shared state"
)]
fn tls_port(
    raw: &RawSet,
    opts: &CompileOptions<'_>,
    services: &mut services::Services<'_>,
    compiled: &[CompiledVs],
    port: u16,
    servers: &[ServerRef],
    caches: &mut SessionCaches,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> TlsPort {
    let mut tp = TlsPort::default();
    for server in servers {
        let gw = &raw.gateways[server.gw_index];
        let spec = &gw.spec.servers[server.server_index];
        let Some(kind) = tls::compile(
            gw,
            server.server_index,
            &server.protocol,
            spec.tls.as_ref(),
            opts.credentials,
            caches,
            errors,
            warnings,
        ) else {
            continue;
        };
        let mode = match kind {
            tls::ServerTls::AutoPassthrough => {
                auto_passthrough(raw, services, server, &mut tp, errors, warnings);
                TlsMode::Passthrough
            }
            tls::ServerTls::Passthrough => {
                for cvs in compiled
                    .iter()
                    .filter(|c| c.gateways.contains(&server.gateway))
                {
                    let vs = &raw.virtual_services[cvs.index];
                    for rule in &cvs.tls {
                        for m in &rule.matches {
                            let gw_ok = m.gateways.is_empty()
                                || m.gateways
                                    .iter()
                                    .any(|g| gateway_key(g, &vs.namespace) == server.gateway);
                            if !gw_ok || m.port.is_some_and(|p| p != u32::from(port)) {
                                continue;
                            }
                            for sni in &m.sni_hosts {
                                for sh in server.admits(&vs.namespace) {
                                    if let Some(pattern) = intersect(sni, &sh.host) {
                                        tp.passthrough
                                            .entry_or_insert_with(&pattern, Vec::new)
                                            .push(rule.route.clone());
                                    }
                                }
                            }
                        }
                    }
                }
                TlsMode::Passthrough
            }
            tls::ServerTls::Terminate { config } if server.protocol == "TLS" => {
                TlsMode::TerminateTcp {
                    config,
                    routes: tcp_routes(raw, compiled, port, &[server]),
                }
            }
            tls::ServerTls::Terminate { config } => TlsMode::Terminate {
                config,
                table: http_table(raw, compiled, &[server]),
            },
        };
        let index = tp.servers.len();
        for sh in &server.hosts {
            let slot = tp.by_sni.entry_or_insert_with(&sh.host, || index);
            if *slot != index {
                warnings.push(gw.error(
                    format!("servers[{}].hosts", server.server_index),
                    format!("host {} on port {port} is already served by an earlier server: ignored here", sh.host),
                ));
            }
        }
        tp.servers.push(TlsServer {
            id: server.id.clone(),
            hosts: server.hosts.iter().map(|h| h.host.clone()).collect(),
            mode,
        });
    }
    tp
}

/// AUTO_PASSTHROUGH: one passthrough route per SNI `outbound_.PORT_.SUBSET_.HOST` (subset
/// empty for the whole service) for every ServiceEntry host the server exposes, its ports
/// and its DestinationRule subsets, as Istio's east-west gateways accept them.
fn auto_passthrough(
    raw: &RawSet,
    services: &mut services::Services<'_>,
    server: &ServerRef,
    tp: &mut TlsPort,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) {
    use crate::config::istio::{Destination, PortSelector};
    use crate::route::{Forward, HeaderOps, WeightedDestination};
    for se in &raw.service_entries {
        let origin = se_origin(se);
        for host in se.spec.hosts.iter().filter(|h| !h.contains('*')) {
            let host = host.to_ascii_lowercase();
            if !server
                .admits(&se.namespace)
                .any(|sh| crate::route::pattern_matches(&sh.host, &host))
            {
                continue;
            }
            let subsets: Vec<String> = std::iter::once(String::new())
                .chain(
                    raw.destination_rules
                        .iter()
                        .filter(|dr| {
                            dr.spec.host.eq_ignore_ascii_case(&host)
                                || services::expand_short(&dr.spec.host, &dr.namespace)
                                    .is_some_and(|full| full == host)
                        })
                        .flat_map(|dr| dr.spec.subsets.iter().map(|s| s.name.clone())),
                )
                .collect();
            for port in &se.spec.ports {
                for subset in &subsets {
                    let dest = Destination {
                        host: host.clone(),
                        subset: (!subset.is_empty()).then(|| subset.clone()),
                        port: Some(PortSelector {
                            number: port.number,
                        }),
                    };
                    let Some(cluster) =
                        services.cluster_for(&origin, "hosts", &dest, errors, warnings)
                    else {
                        continue;
                    };
                    let sni = format!("outbound_.{}_.{subset}_.{host}", port.number);
                    tp.passthrough
                        .entry_or_insert_with(&sni, Vec::new)
                        .push(L4Route {
                            name: format!("auto|{sni}").into(),
                            forward: Forward {
                                destinations: vec![WeightedDestination {
                                    weight: 100,
                                    cluster,
                                    headers: HeaderOps::default(),
                                }],
                                total_weight: 100,
                            },
                        });
                }
            }
        }
    }
}

/// A stand-in VirtualService for routes meshgate derives from ServiceEntry `se` itself
/// (AUTO_PASSTHROUGH, the mesh port's default routes), so their errors point at `se`.
fn se_origin(
    se: &crate::config::raw::Res<crate::config::istio::ServiceEntry>,
) -> crate::config::raw::Res<crate::config::istio::VirtualService> {
    crate::config::raw::Res {
        kind: "ServiceEntry",
        name: se.name.clone(),
        namespace: se.namespace.clone(),
        labels: Default::default(),
        spec: Default::default(),
        origin: se.origin.clone(),
    }
}

/// TCP routes for `port`: rules of VirtualServices bound to the port's Gateways whose match
/// is empty or names this port, in source order.
fn tcp_routes(
    raw: &RawSet,
    compiled: &[CompiledVs],
    port: u16,
    servers: &[&ServerRef],
) -> Vec<L4Route> {
    let mut out = Vec::new();
    for cvs in compiled {
        let vs = &raw.virtual_services[cvs.index];
        let bound = servers.iter().any(|s| {
            cvs.gateways.contains(&s.gateway)
                && s.admits(&vs.namespace).any(|sh| {
                    vs.spec
                        .hosts
                        .iter()
                        .any(|h| intersect(h, &sh.host).is_some())
                })
        });
        if !bound {
            continue;
        }
        for rule in &cvs.tcp {
            let applies = rule.matches.is_empty()
                || rule.matches.iter().any(|m| {
                    m.port.is_none_or(|p| p == u32::from(port))
                        && (m.gateways.is_empty()
                            || m.gateways.iter().any(|g| {
                                servers
                                    .iter()
                                    .any(|s| s.gateway == gateway_key(g, &vs.namespace))
                            }))
                });
            if applies {
                out.push(rule.route.clone());
            }
        }
    }
    out
}

/// Istio's sidecar gives every declared service a default route, so a client using the mesh
/// port reaches a ServiceEntry host without any VirtualService (the egress examples rely on
/// it). One route per HTTP-family port, chosen by the port in the authority; a last route
/// for an authority without a port (port 80 if declared, else the first port).
fn mesh_defaults(
    raw: &RawSet,
    services: &mut services::Services<'_>,
    table: &mut RouteTable,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) {
    use crate::config::istio::{Destination, PortSelector};
    use crate::route::{
        Action, Forward, HeaderOps, MatchBlock, RetryPolicy, Route, StrMatch, WeightedDestination,
    };
    for se in &raw.service_entries {
        let ports: Vec<u32> = se
            .spec
            .ports
            .iter()
            .filter(|p| {
                !matches!(
                    p.protocol
                        .as_deref()
                        .map(str::to_ascii_uppercase)
                        .as_deref(),
                    Some("TCP" | "TLS" | "MONGO" | "MYSQL" | "REDIS" | "UDP")
                )
            })
            .map(|p| p.number)
            .collect();
        let Some(&fallback) = ports.iter().find(|p| **p == 80).or(ports.first()) else {
            continue;
        };
        // Errors, should any arise, point at the ServiceEntry.
        let origin = se_origin(se);
        for host in se.spec.hosts.iter().filter(|h| !h.contains('*')) {
            let host = host.to_ascii_lowercase();
            if table
                .hosts
                .lookup(&host)
                .is_some_and(|v| v.name.as_ref() == host)
            {
                continue; // a VirtualService owns this host
            }
            let mut routes = Vec::new();
            for (i, port) in ports
                .iter()
                .map(|p| (Some(*p), *p))
                .chain([(None, fallback)])
                .enumerate()
            {
                let dest = Destination {
                    host: host.clone(),
                    subset: None,
                    port: Some(PortSelector { number: port.1 }),
                };
                let Some(cluster) = services.cluster_for(&origin, "hosts", &dest, errors, warnings)
                else {
                    continue;
                };
                let authority = port
                    .0
                    .map(|p| StrMatch::regex(&format!("(?i){}:{p}", regex::escape(&host))));
                let Some(authority) = authority.transpose().ok() else {
                    continue;
                };
                routes.push(Route {
                    virtual_service: se.key().into(),
                    index: i,
                    name: format!("default|{host}|{}", port.1).into(),
                    matches: authority
                        .map(|a| MatchBlock {
                            authority: Some(a),
                            ..MatchBlock::default()
                        })
                        .into_iter()
                        .collect(),
                    action: Action::Forward(Forward {
                        destinations: vec![WeightedDestination {
                            weight: 100,
                            cluster,
                            headers: HeaderOps::default(),
                        }],
                        total_weight: 100,
                    }),
                    rewrite: None,
                    headers: HeaderOps::default(),
                    timeout: None,
                    retry: RetryPolicy::default(),
                    fault: None,
                    cors: None,
                    mirrors: Vec::new().into(),
                });
            }
            let vh = table.hosts.entry_or_insert_with(&host, || VirtualHost {
                name: host.as_str().into(),
                ..VirtualHost::default()
            });
            vh.routes.extend(routes);
        }
    }
}

fn mesh_table(raw: &RawSet, compiled: &[CompiledVs]) -> RouteTable {
    let mut table = RouteTable::default();
    for cvs in compiled {
        if !cvs.gateways.iter().any(|g| g == MESH) {
            continue;
        }
        let vs = &raw.virtual_services[cvs.index];
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
                ..VirtualHost::default()
            });
            vh.routes
                .extend(cvs.rules.iter().filter_map(|r| r.for_gateway(MESH)));
        }
    }
    table
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
