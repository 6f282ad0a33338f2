//! ServiceEntry / WorkloadEntry / DestinationRule resolution: a VirtualService destination
//! (host, port, subset) becomes an index into the snapshot's cluster list.
//!
//! Hosts resolve like Istio: the literal host first, then for a short name (no dots) its
//! Kubernetes form `name.<vs-namespace>.svc.cluster.local`, then the longest wildcard
//! ServiceEntry host. Only declared services are reachable (REGISTRY_ONLY).
//!
//! Depends on: `config::{raw, istio, error}`, `upstream`, `route::pattern_matches`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::config::error::ConfigError;
use crate::config::istio::{
    ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection, PortTrafficPolicy, TcpKeepalive,
};
use crate::config::istio::{
    Destination, DestinationRule, ServiceEntry, ServicePort, TrafficPolicy, VirtualService,
    WorkloadEntry,
};
use crate::config::raw::Res;
use crate::route::pattern_matches;
use crate::tls::client::{self, ClientParams, ClientTls};
use crate::tls::server::Credentials;
use crate::upstream::balance::Algorithm;
use crate::upstream::dns::Spread;
use crate::upstream::hash::{self, Cookie, HashKey};
use crate::upstream::outlier::OutlierPolicy;
use crate::upstream::proxy_protocol::ProxyVersion;
use crate::upstream::{
    Cluster, ConnLimits, Endpoint, Keepalive, Limits, Protocol, Registry, Target,
};

const RESOLUTIONS: [&str; 4] = ["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"];
const PROTOCOLS: [&str; 12] = [
    "HTTP", "HTTPS", "HTTP2", "GRPC", "GRPC-WEB", "TCP", "TLS", "MONGO", "MYSQL", "REDIS", "UDP",
    "THRIFT",
];

/// Expand a short service name the way Istio does for Kubernetes services.
pub(super) fn expand_short(host: &str, namespace: &str) -> Option<String> {
    (!host.contains('.') && !host.contains('*'))
        .then(|| format!("{host}.{namespace}.svc.cluster.local"))
}

/// Resolver and cluster builder for one compile.
pub(super) struct Services<'a> {
    ses: &'a [Res<ServiceEntry>],
    wes: &'a [Res<WorkloadEntry>],
    drs: &'a [Res<DestinationRule>],
    se_exact: HashMap<String, usize>,
    /// `(host pattern, se index)`, longest first.
    se_wild: Vec<(String, usize)>,
    dr_by_host: HashMap<String, usize>,
    registry: &'a Registry,
    credentials: &'a dyn Credentials,
    pub(super) clusters: Vec<Arc<Cluster>>,
    cluster_idx: HashMap<(String, u16, String), usize>,
}

impl<'a> Services<'a> {
    /// Validate and index every ServiceEntry and DestinationRule.
    pub(super) fn new(
        ses: &'a [Res<ServiceEntry>],
        wes: &'a [Res<WorkloadEntry>],
        drs: &'a [Res<DestinationRule>],
        registry: &'a Registry,
        credentials: &'a dyn Credentials,
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<ConfigError>,
    ) -> Self {
        let mut se_exact = HashMap::new();
        let mut se_wild = Vec::new();
        for (i, se) in ses.iter().enumerate() {
            if !validate_se(se, errors, warnings) {
                continue;
            }
            for (h, host) in se.spec.hosts.iter().enumerate() {
                let host = host.to_ascii_lowercase();
                let taken = if host.starts_with('*') {
                    se_wild.iter().any(|(w, _)| *w == host)
                } else {
                    se_exact.contains_key(&host)
                };
                if taken {
                    warnings.push(se.error(format!("hosts[{h}]"), format!("host {host} is declared by an earlier ServiceEntry; this one is ignored for it")));
                } else if host.starts_with('*') {
                    se_wild.push((host, i));
                } else {
                    se_exact.insert(host, i);
                }
            }
        }
        se_wild.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        let mut dr_by_host = HashMap::new();
        for (i, dr) in drs.iter().enumerate() {
            if dr.spec.host.is_empty() {
                errors.push(dr.error("host", "host is required"));
                continue;
            }
            let mut names = std::collections::HashSet::new();
            for (s, sub) in dr.spec.subsets.iter().enumerate() {
                if sub.name.is_empty() {
                    errors.push(dr.error(format!("subsets[{s}].name"), "subset name is required"));
                } else if !names.insert(&sub.name) {
                    errors.push(dr.error(
                        format!("subsets[{s}].name"),
                        format!("duplicate subset {}", sub.name),
                    ));
                }
                if let Some(tp) = &sub.traffic_policy {
                    policy_warnings(dr, &format!("subsets[{s}].trafficPolicy"), tp, warnings);
                }
            }
            if let Some(tp) = &dr.spec.traffic_policy {
                policy_warnings(dr, "trafficPolicy", tp, warnings);
            }
            let literal = dr.spec.host.to_ascii_lowercase();
            for key in std::iter::once(literal.clone()).chain(expand_short(&literal, &dr.namespace))
            {
                if dr_by_host.contains_key(&key) {
                    warnings.push(dr.error(
                        "host",
                        format!(
                            "another DestinationRule already applies to {key}; this one is ignored"
                        ),
                    ));
                    break;
                }
                dr_by_host.insert(key, i);
            }
        }
        Self {
            ses,
            wes,
            drs,
            se_exact,
            se_wild,
            dr_by_host,
            registry,
            credentials,
            clusters: Vec::new(),
            cluster_idx: HashMap::new(),
        }
    }

    /// The ServiceEntry serving `host` (asked from namespace `ns`): (se index, service host).
    fn find_se(&self, host: &str, ns: &str) -> Option<(usize, String)> {
        let literal = host.to_ascii_lowercase();
        if let Some(i) = self.se_exact.get(&literal) {
            return Some((*i, literal));
        }
        if let Some(full) = expand_short(&literal, ns) {
            if let Some(i) = self.se_exact.get(&full) {
                return Some((*i, full));
            }
        }
        self.se_wild
            .iter()
            .find(|(pat, _)| pattern_matches(pat, &literal))
            .map(|(_, i)| (*i, literal))
    }

    fn find_dr(
        &self,
        service: &str,
        requested: &str,
        ns: &str,
    ) -> Option<&'a Res<DestinationRule>> {
        let candidates = [
            Some(service.to_owned()),
            Some(requested.to_ascii_lowercase()),
            expand_short(requested, ns),
        ];
        candidates
            .into_iter()
            .flatten()
            .find_map(|k| self.dr_by_host.get(&k))
            .map(|i| &self.drs[*i])
    }

    /// Resolve `dest` of `vs` (at `field`) to a cluster index, building the cluster once.
    pub(super) fn cluster_for(
        &mut self,
        vs: &Res<VirtualService>,
        field: &str,
        dest: &Destination,
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<ConfigError>,
    ) -> Option<usize> {
        if dest.host.is_empty() {
            errors.push(vs.error(format!("{field}.host"), "destination host is required"));
            return None;
        }
        if dest.host.contains('*') {
            errors.push(vs.error(
                format!("{field}.host"),
                "destination host cannot be a wildcard",
            ));
            return None;
        }
        let Some((se_i, service)) = self.find_se(&dest.host, &vs.namespace) else {
            errors.push(vs.error(
                format!("{field}.host"),
                format!("unknown host {}: no ServiceEntry declares it", dest.host),
            ));
            return None;
        };
        let se = &self.ses[se_i];
        let port = match dest.port.as_ref().map(|p| p.number) {
            Some(n) => match se.spec.ports.iter().find(|p| p.number == n) {
                Some(p) => p,
                None => {
                    errors.push(vs.error(
                        format!("{field}.port.number"),
                        format!("port {n} is not declared by {}", se.id()),
                    ));
                    return None;
                }
            },
            None => match se.spec.ports.as_slice() {
                [only] => only,
                [] => {
                    errors.push(vs.error(
                        format!("{field}.host"),
                        format!("{} declares no ports", se.id()),
                    ));
                    return None;
                }
                _ => {
                    errors.push(vs.error(
                        format!("{field}.port"),
                        format!(
                            "{} declares several ports: the destination must select one",
                            se.id()
                        ),
                    ));
                    return None;
                }
            },
        };
        let subset = dest.subset.clone().unwrap_or_default();
        let subset_labels = if subset.is_empty() {
            BTreeMap::new()
        } else {
            let found = self
                .find_dr(&service, &dest.host, &vs.namespace)
                .and_then(|dr| dr.spec.subsets.iter().find(|s| s.name == subset));
            match found {
                Some(s) => s.labels.clone(),
                None => {
                    errors.push(vs.error(
                        format!("{field}.subset"),
                        format!(
                            "unknown subset {subset}: no DestinationRule for {} defines it",
                            dest.host
                        ),
                    ));
                    return None;
                }
            }
        };
        let port_number = u16::try_from(port.number).unwrap_or(0);
        let key = (service.clone(), port_number, subset.clone());
        if let Some(i) = self.cluster_idx.get(&key) {
            return Some(*i);
        }
        let dr = self.find_dr(&service, &dest.host, &vs.namespace);
        // HTTP/2 to the upstream: an HTTP2 or gRPC port, or `h2UpgradePolicy: UPGRADE`.
        let h2 = matches!(
            port.protocol
                .as_deref()
                .map(str::to_ascii_uppercase)
                .as_deref(),
            Some("HTTP2" | "GRPC" | "GRPC-WEB")
        ) || match dr {
            Some(dr) => h2_upgrade(dr, &subset, port.number, errors)?,
            None => false,
        };
        let protocol = if h2 { Protocol::Http2 } else { Protocol::Http1 };
        let tls = match dr {
            Some(dr) => self.client_tls(dr, &subset, port.number, &service, h2, errors)?,
            None => None,
        };
        let endpoints = self.endpoints(se, &service, port, protocol, &subset_labels, tls);
        let name: Arc<str> = format!("outbound|{}|{}|{}", port.number, subset, service).into();
        let subset_name = subset.clone();
        if endpoints.is_empty() {
            warnings.push(vs.error(
                field.to_owned(),
                format!("cluster {name} has no endpoints: requests to it get 503"),
            ));
        }
        let (algorithm, hash_key) = match dr {
            Some(dr) => load_balancer(dr, &subset_name, port.number, errors)?,
            None => (Algorithm::default(), None),
        };
        let cluster = Cluster::new(
            name,
            service.into(),
            se.namespace.as_str().into(),
            subset.into(),
            port_number,
            protocol,
            endpoints,
            algorithm,
            {
                let mut limits = match dr {
                    Some(dr) => Limits {
                        outlier: outlier_policy(dr, &subset_name, port.number, errors)?,
                        ..connection_limits(dr, &subset_name, port.number, errors)?
                    },
                    None => Limits::default(),
                };
                // Without `http2MaxRequests`, the gateway's own bound on requests in flight
                // to one destination: a slow upstream then sheds 503 UO instead of growing
                // memory without limit.
                limits.max_requests = limits
                    .max_requests
                    .or(self.registry.settings().max_requests);
                limits
            },
        )
        .with_hash_key(hash_key)
        .with_proxy_protocol(match dr {
            Some(dr) => proxy_protocol(dr, &subset_name, errors)?,
            None => None,
        });
        self.clusters.push(Arc::new(cluster));
        let i = self.clusters.len() - 1;
        self.cluster_idx.insert(key, i);
        Some(i)
    }

    /// The TLS origination settings for (`subset`, `port`) of `dr`: the most specific of
    /// subset port-level, subset, port-level and rule-level `tls`, as Istio merges them.
    /// `None` when they are invalid (errors recorded).
    fn client_tls(
        &self,
        dr: &Res<DestinationRule>,
        subset: &str,
        port: u32,
        service: &str,
        h2: bool,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Option<Arc<ClientTls>>> {
        let chosen = most_specific(
            dr,
            subset,
            port,
            "tls",
            |p| p.tls.as_ref(),
            |t| t.tls.as_ref(),
        );
        let Some((t, f)) = chosen else {
            return Some(None);
        };
        let mode = t.mode.as_deref().unwrap_or("DISABLE");
        match mode {
            "DISABLE" => return Some(None),
            "SIMPLE" | "MUTUAL" => {}
            "ISTIO_MUTUAL" => {
                errors.push(dr.error(
                    format!("{f}.mode"),
                    "ISTIO_MUTUAL needs Istio's own certificates: use MUTUAL with clientCertificate, privateKey and caCertificates",
                ));
                return None;
            }
            other => {
                errors.push(dr.error(format!("{f}.mode"), format!("unknown TLS mode {other}")));
                return None;
            }
        }
        let read = |field: &str, path: &str, errors: &mut Vec<ConfigError>| match self
            .credentials
            .read_file(std::path::Path::new(path))
        {
            Ok(b) => Some(b),
            Err(e) => {
                errors.push(dr.error(format!("{f}.{field}"), format!("cannot read {path}: {e}")));
                None
            }
        };
        let mut params = ClientParams {
            sni: t.sni.clone().unwrap_or_else(|| service.to_owned()),
            subject_alt_names: t.subject_alt_names.clone(),
            insecure_skip_verify: t.insecure_skip_verify.unwrap_or(false),
            h2,
            ..ClientParams::default()
        };
        if let Some(name) = &t.credential_name {
            match self.credentials.load(&dr.namespace, name) {
                Ok(pem) => {
                    params.ca = pem.ca;
                    if mode == "MUTUAL" {
                        params.client_cert = Some((pem.cert, pem.key));
                    }
                }
                Err(e) => {
                    errors.push(dr.error(format!("{f}.credentialName"), e));
                    return None;
                }
            }
        } else {
            if let Some(ca) = &t.ca_certificates {
                params.ca = Some(read("caCertificates", ca, errors)?);
            }
            if mode == "MUTUAL" {
                match (&t.client_certificate, &t.private_key) {
                    (Some(c), Some(k)) => {
                        let c = read("clientCertificate", c, errors);
                        let k = read("privateKey", k, errors);
                        params.client_cert = Some((c?, k?));
                    }
                    _ => {
                        errors.push(dr.error(
                            &f,
                            "MUTUAL needs clientCertificate and privateKey (or credentialName)",
                        ));
                        return None;
                    }
                }
            }
        }
        match client::build(&params) {
            Ok(c) => Some(Some(Arc::new(c))),
            Err(e) => {
                errors.push(dr.error(format!("{f}.{}", e.field), e.message));
                None
            }
        }
    }

    fn endpoints(
        &self,
        se: &Res<ServiceEntry>,
        service: &str,
        port: &ServicePort,
        protocol: Protocol,
        subset: &BTreeMap<String, String>,
        tls: Option<Arc<ClientTls>>,
    ) -> Vec<Endpoint> {
        let default_port = u16::try_from(port.target_port.unwrap_or(port.number)).unwrap_or(0);
        let resolution = se.spec.resolution.as_deref().unwrap_or("NONE");
        let spread = if resolution == "DNS_ROUND_ROBIN" {
            Spread::First
        } else {
            Spread::All
        };
        let mut workloads: Vec<&WorkloadEntry> = se.spec.endpoints.iter().collect();
        if let Some(sel) = &se.spec.workload_selector {
            workloads.extend(
                self.wes
                    .iter()
                    .filter(|we| {
                        we.namespace == se.namespace
                            && labels_match(&sel.labels, &merged_labels(we))
                    })
                    .map(|we| &we.spec),
            );
        }
        let mk = |target: Target, weight: u32, labels: BTreeMap<String, String>| Endpoint {
            weight: weight.max(1),
            labels,
            pool: self.registry.pool(target, protocol, tls.clone()),
            active: Default::default(),
            health: Default::default(),
        };
        if resolution == "NONE" || (workloads.is_empty() && resolution != "STATIC") {
            // NONE: connect to the service host itself (for a wildcard entry, the host the
            // route names). DNS without endpoints resolves the host.
            if !subset.is_empty() {
                return Vec::new();
            }
            return vec![mk(
                Target::Dns(service.into(), default_port, spread),
                1,
                BTreeMap::new(),
            )];
        }
        workloads
            .into_iter()
            .filter(|w| labels_match(subset, &w.labels))
            .filter_map(|w| {
                let p = w
                    .ports
                    .get(&port.name)
                    .and_then(|p| u16::try_from(*p).ok())
                    .unwrap_or(default_port);
                let target = match w.address.parse::<IpAddr>() {
                    Ok(ip) => Target::Addr(SocketAddr::new(ip, p)),
                    // STATIC addresses were checked in validate_se.
                    Err(_) if resolution == "STATIC" => return None,
                    Err(_) => Target::Dns(w.address.as_str().into(), p, spread),
                };
                Some(mk(target, w.weight.unwrap_or(1), w.labels.clone()))
            })
            .collect()
    }
}

/// The most specific setting of `dr` for (`subset`, `port`), as Istio merges them: the
/// subset's port-level, the subset's, the rule's port-level, then the rule's own; with the
/// field path it was found at (for errors).
fn most_specific<T: Clone>(
    dr: &Res<DestinationRule>,
    subset: &str,
    port: u32,
    name: &str,
    at_port: impl Fn(&PortTrafficPolicy) -> Option<&T>,
    at_rule: impl Fn(&TrafficPolicy) -> Option<&T>,
) -> Option<(T, String)> {
    let level = |tp: Option<&TrafficPolicy>, base: String| -> Option<(T, String)> {
        let tp = tp?;
        let by_port = tp
            .port_level_settings
            .iter()
            .enumerate()
            .find(|(_, p)| p.port.as_ref().is_some_and(|s| s.number == port))
            .and_then(|(i, p)| {
                at_port(p).map(|v| (v.clone(), format!("{base}portLevelSettings[{i}].{name}")))
            });
        by_port.or_else(|| at_rule(tp).map(|v| (v.clone(), format!("{base}{name}"))))
    };
    let sub = dr
        .spec
        .subsets
        .iter()
        .enumerate()
        .find(|(_, s)| !subset.is_empty() && s.name == subset);
    sub.and_then(|(i, s)| {
        level(
            s.traffic_policy.as_ref(),
            format!("subsets[{i}].trafficPolicy."),
        )
    })
    .or_else(|| level(dr.spec.traffic_policy.as_ref(), "trafficPolicy.".to_owned()))
}

/// The `proxyProtocol` of `dr` for `subset` (subset level first; Istio has no port level
/// for it): `Some(None)` when unset, `None` when invalid (error recorded).
fn proxy_protocol(
    dr: &Res<DestinationRule>,
    subset: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Option<ProxyVersion>> {
    let chosen = most_specific(
        dr,
        subset,
        0,
        "proxyProtocol",
        |_| None,
        |t| t.proxy_protocol.as_ref(),
    );
    let Some((value, f)) = chosen else {
        return Some(None);
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        #[serde(default)]
        version: Option<String>,
    }
    let version = match serde_yaml_ng::from_value::<Option<Settings>>(value) {
        Ok(s) => s.and_then(|s| s.version),
        Err(e) => {
            errors.push(dr.error(&f, format!("invalid proxyProtocol: {e}")));
            return None;
        }
    };
    match version.as_deref() {
        None | Some("V1") => Some(Some(ProxyVersion::V1)),
        Some("V2") => Some(Some(ProxyVersion::V2)),
        Some(other) => {
            errors.push(dr.error(
                format!("{f}.version"),
                format!("must be V1 or V2, got {other:?}"),
            ));
            None
        }
    }
}

/// The most specific `connectionPool` of `dr` for (`subset`, `port`), parsed, with its field
/// path; `None` when there is none.
fn chosen_pool(
    dr: &Res<DestinationRule>,
    subset: &str,
    port: u32,
) -> Option<(serde_yaml_ng::Result<ConnectionPoolSettings>, String)> {
    let (value, f) = most_specific(
        dr,
        subset,
        port,
        "connectionPool",
        |p| p.connection_pool.as_ref(),
        |t| t.connection_pool.as_ref(),
    )?;
    Some((serde_yaml_ng::from_value(value), f))
}

/// Whether the `connectionPool` of `dr` for (`subset`, `port`) upgrades HTTP/1.1 to HTTP/2
/// (`http.h2UpgradePolicy: UPGRADE`, unless `useClientProtocol` is set, as Istio's
/// `shouldH2Upgrade`; the mesh default, `DO_NOT_UPGRADE`, otherwise). `None` when the policy
/// is not one of Istio's values (error recorded); a malformed `connectionPool` is reported
/// by `connection_limits`.
fn h2_upgrade(
    dr: &Res<DestinationRule>,
    subset: &str,
    port: u32,
    errors: &mut Vec<ConfigError>,
) -> Option<bool> {
    let Some((Ok(cp), f)) = chosen_pool(dr, subset, port) else {
        return Some(false);
    };
    let http = cp.http.unwrap_or_default();
    match http.h2_upgrade_policy.as_deref() {
        None | Some("DEFAULT" | "DO_NOT_UPGRADE") => Some(false),
        Some("UPGRADE") => Some(!http.use_client_protocol.unwrap_or(false)),
        Some(other) => {
            errors.push(dr.error(
                format!("{f}.http.h2UpgradePolicy"),
                format!("must be DEFAULT, DO_NOT_UPGRADE or UPGRADE, got {other:?}"),
            ));
            None
        }
    }
}

/// The `loadBalancer` of `dr` for (`subset`, `port`): the most specific of subset
/// port-level, subset, port-level and rule-level settings, as an algorithm and, for
/// `consistentHash`, the request key. `None` when invalid (errors recorded).
fn load_balancer(
    dr: &Res<DestinationRule>,
    subset: &str,
    port: u32,
    errors: &mut Vec<ConfigError>,
) -> Option<(Algorithm, Option<HashKey>)> {
    let chosen = most_specific(
        dr,
        subset,
        port,
        "loadBalancer",
        |p| p.load_balancer.as_ref(),
        |t| t.load_balancer.as_ref(),
    );
    let Some((value, f)) = chosen else {
        return Some((Algorithm::default(), None));
    };
    let lb: LoadBalancerSettings = match serde_yaml_ng::from_value(value) {
        Ok(lb) => lb,
        Err(e) => {
            errors.push(dr.error(&f, format!("invalid loadBalancer: {e}")));
            return None;
        }
    };
    let Some(ch) = lb.consistent_hash else {
        let algorithm = match lb.simple.as_deref() {
            Some("LEAST_REQUEST" | "LEAST_CONN") => Algorithm::LeastRequest,
            Some("RANDOM") => Algorithm::Random,
            _ => Algorithm::RoundRobin,
        };
        return Some((algorithm, None));
    };
    let f = format!("{f}.consistentHash");
    if lb.simple.is_some() {
        errors.push(dr.error(&f, "simple and consistentHash are exclusive"));
        return None;
    }
    let mut keys = Vec::new();
    if let Some(h) = &ch.http_header_name {
        match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => keys.push(HashKey::Header(name)),
            Err(_) => {
                errors.push(dr.error(format!("{f}.httpHeaderName"), "invalid header name"));
                return None;
            }
        }
    }
    if let Some(c) = &ch.http_cookie {
        if c.name.is_empty() {
            errors.push(dr.error(format!("{f}.httpCookie.name"), "a cookie name is required"));
            return None;
        }
        let ttl = match c.ttl.as_deref() {
            None => None,
            Some(t) => match crate::config::duration::parse(t) {
                Some(d) => Some(d),
                None => {
                    errors.push(dr.error(
                        format!("{f}.httpCookie.ttl"),
                        format!("invalid duration {t:?}"),
                    ));
                    return None;
                }
            },
        };
        keys.push(HashKey::Cookie(Cookie {
            name: c.name.clone(),
            path: c.path.clone(),
            ttl,
        }));
    }
    if ch.use_source_ip == Some(true) {
        keys.push(HashKey::SourceIp);
    }
    if let Some(q) = &ch.http_query_parameter_name {
        keys.push(HashKey::Query(q.clone()));
    }
    if keys.len() != 1 {
        errors.push(dr.error(
            &f,
            "exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is required",
        ));
        return None;
    }
    let algorithm = match (&ch.ring_hash, &ch.maglev) {
        (Some(_), Some(_)) => {
            errors.push(dr.error(&f, "ringHash and maglev are exclusive"));
            return None;
        }
        (None, Some(m)) => {
            let size = m.table_size.unwrap_or(hash::DEFAULT_MAGLEV_SIZE);
            if !hash::is_prime(size) || size > 5_000_011 {
                errors.push(dr.error(
                    format!("{f}.maglev.tableSize"),
                    format!("{size} must be a prime number up to 5000011"),
                ));
                return None;
            }
            Algorithm::Maglev(size)
        }
        (ring, None) => {
            let min = ring
                .as_ref()
                .and_then(|r| r.minimum_ring_size)
                .or(ch.minimum_ring_size)
                .filter(|n| *n > 0)
                .unwrap_or(hash::DEFAULT_RING_SIZE);
            if min > hash::MAX_RING_SIZE {
                errors.push(dr.error(
                    format!("{f}.ringHash.minimumRingSize"),
                    format!(
                        "{min} is above the maximum ring size {}",
                        hash::MAX_RING_SIZE
                    ),
                ));
                return None;
            }
            Algorithm::RingHash(min)
        }
    };
    Some((algorithm, keys.pop()))
}

/// The `connectionPool` of `dr` for (`subset`, `port`), most specific level first, as
/// cluster limits; `None` when invalid (errors recorded).
fn connection_limits(
    dr: &Res<DestinationRule>,
    subset: &str,
    port: u32,
    errors: &mut Vec<ConfigError>,
) -> Option<Limits> {
    let Some((cp, f)) = chosen_pool(dr, subset, port) else {
        return Some(Limits::default());
    };
    let cp = match cp {
        Ok(cp) => cp,
        Err(e) => {
            errors.push(dr.error(&f, format!("invalid connectionPool: {e}")));
            return None;
        }
    };
    let before = errors.len();
    let mut count = |field: &str, v: Option<i64>| -> Option<usize> {
        match v {
            None => None,
            Some(n) if n > 0 => usize::try_from(n).ok(),
            Some(_) => {
                errors.push(dr.error(format!("{f}.{field}"), "must be above 0"));
                None
            }
        }
    };
    let tcp = cp.tcp.unwrap_or_default();
    let http = cp.http.unwrap_or_default();
    let max_connections = count("tcp.maxConnections", tcp.max_connections);
    let max_pending = count(
        "http.http1MaxPendingRequests",
        http.http1_max_pending_requests,
    );
    let max_requests = count("http.http2MaxRequests", http.http2_max_requests);
    let max_per_conn = count(
        "http.maxRequestsPerConnection",
        http.max_requests_per_connection,
    );
    let max_retries = match http.max_retries {
        Some(n) if n >= 0 => usize::try_from(n).ok(),
        Some(_) => {
            errors.push(dr.error(format!("{f}.http.maxRetries"), "must not be negative"));
            None
        }
        None => None,
    };
    let mut bad_keepalive = None;
    let mut duration = |field: &str, v: &Option<String>| -> Option<std::time::Duration> {
        let s = v.as_deref()?;
        match crate::config::duration::parse(s) {
            Some(d) if !d.is_zero() => Some(d),
            _ => {
                errors.push(dr.error(format!("{f}.{field}"), format!("invalid duration {s:?}")));
                None
            }
        }
    };
    let connect_timeout = duration("tcp.connectTimeout", &tcp.connect_timeout);
    let http_idle_timeout = duration("http.idleTimeout", &http.idle_timeout);
    let max_connection_duration =
        duration("tcp.maxConnectionDuration", &tcp.max_connection_duration);
    let keepalive = match &tcp.tcp_keepalive {
        None => None,
        Some(k) => match serde_yaml_ng::from_value::<TcpKeepalive>(k.clone()) {
            Ok(k) => Some(k),
            Err(e) => {
                bad_keepalive = Some(format!("invalid: {e}"));
                None
            }
        },
    }
    .map(|k| Keepalive {
        time: duration("tcp.tcpKeepalive.time", &k.time),
        interval: duration("tcp.tcpKeepalive.interval", &k.interval),
        probes: k.probes,
    });
    if let Some(msg) = bad_keepalive {
        errors.push(dr.error(format!("{f}.tcp.tcpKeepalive"), msg));
    }
    // Unlike the others, `0s` is valid here: it turns the timeout off (Istio, Envoy).
    let tcp_idle_timeout = match tcp.idle_timeout.as_deref() {
        None => None,
        Some(s) => match crate::config::duration::parse(s) {
            Some(d) => Some(d),
            None => {
                errors.push(dr.error(
                    format!("{f}.tcp.idleTimeout"),
                    format!("invalid duration {s:?}"),
                ));
                None
            }
        },
    };
    if errors.len() > before {
        return None;
    }
    // Istio gives an HTTP cluster `tcp.idleTimeout` as its connections' idle timeout when
    // `http.idleTimeout` is unset (cluster_traffic_policy.go); off means kept until the
    // upstream closes them.
    let idle_timeout = http_idle_timeout.or(tcp_idle_timeout.map(|d| {
        if d.is_zero() {
            crate::config::duration::NEVER
        } else {
            d
        }
    }));
    Some(Limits {
        conn: ConnLimits {
            connect_timeout,
            idle_timeout,
            max_requests_per_connection: max_per_conn.and_then(|n| u32::try_from(n).ok()),
            keepalive,
            tcp_idle_timeout,
            max_connection_duration,
        },
        max_connections,
        max_pending,
        max_requests,
        max_retries,
        outlier: None,
    })
}

/// The `outlierDetection` of `dr` for (`subset`, `port`), most specific level first;
/// `Some(None)` when there is none, `None` when invalid (errors recorded).
fn outlier_policy(
    dr: &Res<DestinationRule>,
    subset: &str,
    port: u32,
    errors: &mut Vec<ConfigError>,
) -> Option<Option<OutlierPolicy>> {
    let chosen = most_specific(
        dr,
        subset,
        port,
        "outlierDetection",
        |p| p.outlier_detection.as_ref(),
        |t| t.outlier_detection.as_ref(),
    );
    let Some((value, f)) = chosen else {
        return Some(None);
    };
    let od: OutlierDetection = match serde_yaml_ng::from_value(value) {
        Ok(od) => od,
        Err(e) => {
            errors.push(dr.error(&f, format!("invalid outlierDetection: {e}")));
            return None;
        }
    };
    let before = errors.len();
    let mut policy = OutlierPolicy::default();
    if let Some(n) = od.consecutive_5xx_errors {
        policy.consecutive_5xx = (n > 0).then_some(n);
    }
    if let Some(n) = od.consecutive_gateway_errors.or(od.consecutive_errors) {
        policy.consecutive_gateway = (n > 0).then_some(n);
    }
    if let Some(s) = &od.base_ejection_time {
        match crate::config::duration::parse(s) {
            Some(d) if !d.is_zero() => policy.base_ejection = d,
            _ => errors.push(dr.error(
                format!("{f}.baseEjectionTime"),
                format!("invalid duration {s:?}"),
            )),
        }
    }
    if let Some(s) = &od.interval {
        if crate::config::duration::parse(s).is_none() {
            errors.push(dr.error(format!("{f}.interval"), format!("invalid duration {s:?}")));
        }
    }
    for (field, v, slot) in [
        (
            "maxEjectionPercent",
            od.max_ejection_percent,
            &mut policy.max_ejection_percent,
        ),
        (
            "minHealthPercent",
            od.min_health_percent,
            &mut policy.min_health_percent,
        ),
    ] {
        match v {
            Some(p @ 0..=100) => *slot = p,
            Some(_) => errors.push(dr.error(format!("{f}.{field}"), "must be 0..=100")),
            None => {}
        }
    }
    (errors.len() == before).then_some(Some(policy))
}

/// Warnings for a `loadBalancer` block: the parts meshgate does not implement.
fn lb_warnings(
    dr: &Res<DestinationRule>,
    field: &str,
    lb: &serde_yaml_ng::Value,
    warnings: &mut Vec<ConfigError>,
) {
    match lb.get("simple").and_then(|v| v.as_str()) {
        None | Some("UNSPECIFIED" | "ROUND_ROBIN" | "LEAST_REQUEST" | "LEAST_CONN" | "RANDOM") => {}
        Some("PASSTHROUGH") => warnings.push(dr.error(
            format!("{field}.simple"),
            "PASSTHROUGH has no original destination at a gateway: ROUND_ROBIN is used",
        )),
        Some(other) => warnings.push(dr.error(
            format!("{field}.simple"),
            format!("unknown algorithm {other}: ROUND_ROBIN is used"),
        )),
    }
    if let Some(attrs) = lb
        .get("consistentHash")
        .and_then(|c| c.get("httpCookie"))
        .and_then(|c| c.get("attributes"))
    {
        if attrs.as_sequence().is_some_and(|a| !a.is_empty()) {
            warnings.push(dr.error(
                format!("{field}.consistentHash.httpCookie.attributes"),
                "not supported yet: ignored",
            ));
        }
    }
    if let Some(map) = lb.as_mapping() {
        for key in map
            .keys()
            .filter_map(|k| k.as_str())
            .filter(|k| !matches!(*k, "simple" | "consistentHash"))
        {
            warnings.push(dr.error(format!("{field}.{key}"), "not supported yet: ignored"));
        }
    }
}

/// Warn about the traffic-policy fields meshgate does not act on yet.
fn policy_warnings(
    dr: &Res<DestinationRule>,
    base: &str,
    tp: &TrafficPolicy,
    warnings: &mut Vec<ConfigError>,
) {
    if let Some(lb) = &tp.load_balancer {
        lb_warnings(dr, &format!("{base}.loadBalancer"), lb, warnings);
    }
    for (i, p) in tp.port_level_settings.iter().enumerate() {
        if let Some(lb) = &p.load_balancer {
            lb_warnings(
                dr,
                &format!("{base}.portLevelSettings[{i}].loadBalancer"),
                lb,
                warnings,
            );
        }
    }
    for (field, cp) in std::iter::once(("connectionPool".to_owned(), &tp.connection_pool)).chain(
        tp.port_level_settings.iter().enumerate().map(|(i, p)| {
            (
                format!("portLevelSettings[{i}].connectionPool"),
                &p.connection_pool,
            )
        }),
    ) {
        let Some(Ok(cp)) = cp
            .clone()
            .map(serde_yaml_ng::from_value::<ConnectionPoolSettings>)
        else {
            continue;
        };
        let http = cp.http.unwrap_or_default();
        for (name, present) in [
            ("http.useClientProtocol", http.use_client_protocol.is_some()),
            (
                "http.maxConcurrentStreams",
                http.max_concurrent_streams.is_some(),
            ),
        ] {
            if present {
                warnings.push(dr.error(
                    format!("{base}.{field}.{name}"),
                    "not supported yet: ignored",
                ));
            }
        }
    }
    if tp.tunnel.is_some() {
        warnings.push(dr.error(format!("{base}.tunnel"), "not supported yet: ignored"));
    }
    if tp.proxy_protocol.is_some() {
        warnings.push(dr.error(
            format!("{base}.proxyProtocol"),
            "sent on TCP and TLS-passthrough connections only: HTTP requests to this host \
             go over pooled connections without it (x-forwarded-for carries the client)",
        ));
    }
}

/// A WorkloadEntry's labels: `spec.labels` merged over `metadata.labels`.
fn merged_labels(we: &Res<WorkloadEntry>) -> BTreeMap<String, String> {
    let mut l = we.labels.clone();
    l.extend(we.spec.labels.clone());
    l
}

fn labels_match(want: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

fn validate_se(
    se: &Res<ServiceEntry>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> bool {
    let before = errors.len();
    let spec = &se.spec;
    if spec.hosts.is_empty() {
        errors.push(se.error("hosts", "at least one host is required"));
    }
    for (i, h) in spec.hosts.iter().enumerate() {
        if h == "*" {
            warnings.push(se.error(
                format!("hosts[{i}]"),
                "a bare \"*\" host matches every destination host; newer Istio rejects it",
            ));
        } else if h.is_empty() || (h.contains('*') && !h.starts_with("*.")) {
            errors.push(se.error(format!("hosts[{i}]"), format!("invalid host {h:?}")));
        }
    }
    let resolution = spec.resolution.as_deref().unwrap_or("NONE");
    if !RESOLUTIONS.contains(&resolution) {
        errors.push(se.error(
            "resolution",
            format!("unknown resolution {resolution} (expected one of {RESOLUTIONS:?})"),
        ));
    }
    if matches!(resolution, "DNS" | "DNS_ROUND_ROBIN" | "STATIC") {
        for (i, h) in spec.hosts.iter().enumerate() {
            if h.contains('*') && (resolution != "STATIC" && spec.endpoints.is_empty()) {
                errors.push(se.error(
                    format!("hosts[{i}]"),
                    format!(
                        "wildcard host {h} cannot use resolution {resolution} without endpoints"
                    ),
                ));
            }
        }
    }
    if resolution == "STATIC" && spec.endpoints.is_empty() && spec.workload_selector.is_none() {
        errors.push(se.error(
            "endpoints",
            "resolution STATIC needs endpoints or a workloadSelector",
        ));
    }
    for (i, ep) in spec.endpoints.iter().enumerate() {
        if ep.address.is_empty() {
            errors.push(se.error(format!("endpoints[{i}].address"), "address is required"));
        } else if ep.address.starts_with("unix://") {
            errors.push(se.error(
                format!("endpoints[{i}].address"),
                "unix domain socket endpoints are not supported",
            ));
        } else if resolution == "STATIC" && ep.address.parse::<IpAddr>().is_err() {
            errors.push(se.error(
                format!("endpoints[{i}].address"),
                format!(
                    "{} is not an IP address (required by resolution STATIC)",
                    ep.address
                ),
            ));
        }
        for (name, p) in &ep.ports {
            if *p == 0 || *p > 65535 {
                errors.push(se.error(format!("endpoints[{i}].ports.{name}"), "must be 1..=65535"));
            }
        }
    }
    if spec.ports.is_empty() {
        errors.push(se.error("ports", "at least one port is required"));
    }
    for (i, p) in spec.ports.iter().enumerate() {
        if p.number == 0 || p.number > 65535 {
            errors.push(se.error(format!("ports[{i}].number"), "must be 1..=65535"));
        }
        if let Some(tp) = p.target_port {
            if tp == 0 || tp > 65535 {
                errors.push(se.error(format!("ports[{i}].targetPort"), "must be 1..=65535"));
            }
        }
        if let Some(proto) = &p.protocol {
            let upper = proto.to_ascii_uppercase();
            if !PROTOCOLS.contains(&upper.as_str()) {
                warnings.push(se.error(
                    format!("ports[{i}].protocol"),
                    format!("unknown protocol {proto}: treated as HTTP/1.1"),
                ));
            }
        }
    }
    errors.len() == before
}
