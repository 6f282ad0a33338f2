//! A Kubernetes Service and its EndpointSlices become a synthesized ServiceEntry, the way
//! Istio sees Kubernetes services: host `name.ns.svc.cluster.local`, the Service's ports
//! (protocol from `appProtocol`, else from the Istio port-name prefix), resolution STATIC,
//! location MESH_INTERNAL, and one endpoint per ready EndpointSlice address carrying its pod's
//! labels (so DestinationRule subsets work) and the endpoint port of each Service port.
//!
//! A Service without ready endpoints still yields an entry (requests get 503, the config is
//! not invalid): its `workloadSelector` is the Service's selector, which is also how Istio
//! adds WorkloadEntries that a Service selects. Pure: no I/O, no kube client.
//!
//! Depends on: k8s-openapi (Service, EndpointSlice), `config::{istio, raw}`.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Service, ServicePort as KubePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::config::istio::{
    ObjectMeta, ServiceEntry, ServicePort, WorkloadEntry, WorkloadSelector,
};
use crate::config::raw::{Origin, Res};

/// The label that ties an EndpointSlice to its Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Selector of a Service that has none (endpoints managed by hand): a key that no
/// WorkloadEntry can carry (`!` is not allowed in label keys), so it selects nothing.
const SELECTS_NOTHING: &str = "meshgate.io/!no-selector";

/// Istio's port-name prefixes, longest first so `grpc-web` wins over `grpc`.
const NAME_PREFIXES: [(&str, &str); 10] = [
    ("grpc-web", "GRPC-WEB"),
    ("http2", "HTTP2"),
    ("https", "HTTPS"),
    ("http", "HTTP"),
    ("grpc", "GRPC"),
    ("tls", "TLS"),
    ("tcp", "TCP"),
    ("mongo", "MONGO"),
    ("mysql", "MYSQL"),
    ("redis", "REDIS"),
];

/// The ServiceEntry for `svc` with endpoints from `slices` (those labelled with its name,
/// in its namespace); `pod_labels(ns, name)` gives the labels of an endpoint's pod. `None`
/// for a Service meshgate cannot route to (no ports).
pub(crate) fn service_entry<'a>(
    svc: &Service,
    slices: &[&EndpointSlice],
    pod_labels: impl Fn(&str, &str) -> Option<&'a BTreeMap<String, String>>,
) -> Option<Res<ServiceEntry>> {
    let name = svc.metadata.name.clone()?;
    let namespace = svc
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let spec = svc.spec.as_ref()?;
    let kube_ports = spec.ports.as_deref().unwrap_or_default();
    let ports: Vec<ServicePort> = kube_ports.iter().filter_map(service_port).collect();
    if ports.is_empty() {
        return None;
    }
    let host = format!("{name}.{namespace}.svc.cluster.local");
    let external = spec.type_.as_deref() == Some("ExternalName");
    let entry = if external {
        // ExternalName: a DNS alias; connect to the external name on the Service's ports.
        ServiceEntry {
            hosts: vec![host],
            ports,
            location: Some("MESH_INTERNAL".to_owned()),
            resolution: Some("DNS".to_owned()),
            endpoints: spec
                .external_name
                .iter()
                .map(|a| WorkloadEntry {
                    address: a.clone(),
                    ..WorkloadEntry::default()
                })
                .collect(),
            ..ServiceEntry::default()
        }
    } else {
        let selector = match &spec.selector {
            Some(s) if !s.is_empty() => s.clone(),
            _ => BTreeMap::from([(SELECTS_NOTHING.to_owned(), String::new())]),
        };
        ServiceEntry {
            hosts: vec![host],
            ports,
            location: Some("MESH_INTERNAL".to_owned()),
            resolution: Some("STATIC".to_owned()),
            endpoints: endpoints(kube_ports, slices, pod_labels),
            workload_selector: Some(WorkloadSelector { labels: selector }),
            ..ServiceEntry::default()
        }
    };
    let meta = ObjectMeta {
        // `:` cannot appear in a Kubernetes name, so this never collides with a user's
        // ServiceEntry of the same name in the duplicate check.
        name: format!("k8s:{name}"),
        namespace: Some(namespace.clone()),
        labels: svc.metadata.labels.clone().unwrap_or_default(),
    };
    let origin = Origin::unlined(format!("kubernetes:Service/{namespace}/{name}"));
    Some(Res::new("Service", meta, entry, origin))
}

/// One Service port as a ServiceEntry port; `None` for an out-of-range number.
fn service_port(p: &KubePort) -> Option<ServicePort> {
    let number = u32::try_from(p.port)
        .ok()
        .filter(|n| (1..=65535).contains(n))?;
    Some(ServicePort {
        number,
        protocol: protocol(p),
        name: p.name.clone().unwrap_or_default(),
        target_port: match &p.target_port {
            Some(IntOrString::Int(n)) => u32::try_from(*n).ok().filter(|n| *n > 0),
            _ => None,
        },
    })
}

/// Istio's protocol for a Service port: `appProtocol` first, then the port name's prefix
/// (`http`, `http-web`, `grpc-api`, ...), then UDP from the L4 protocol; else unknown (`None`).
fn protocol(p: &KubePort) -> Option<String> {
    if let Some(app) = &p.app_protocol {
        let app = app.to_ascii_lowercase();
        let known = match app.as_str() {
            "kubernetes.io/h2c" => Some("HTTP2"),
            "kubernetes.io/ws" => Some("HTTP"),
            "kubernetes.io/wss" => Some("HTTPS"),
            other => NAME_PREFIXES
                .iter()
                .find(|(prefix, _)| *prefix == other)
                .map(|(_, proto)| *proto),
        };
        if let Some(k) = known {
            return Some(k.to_owned());
        }
    }
    if let Some(name) = &p.name {
        let name = name.to_ascii_lowercase();
        let found = NAME_PREFIXES.iter().find(|(prefix, _)| {
            name == *prefix
                || name
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('-'))
        });
        if let Some((_, proto)) = found {
            return Some((*proto).to_owned());
        }
    }
    (p.protocol.as_deref() == Some("UDP")).then(|| "UDP".to_owned())
}

/// Ready endpoints of `slices`, each with its pod's labels and, per Service port name, the
/// port to connect to (the slice port of that name, which the endpoints controller has
/// already resolved from `targetPort`, by number or by container port name).
fn endpoints<'a>(
    kube_ports: &[KubePort],
    slices: &[&EndpointSlice],
    pod_labels: impl Fn(&str, &str) -> Option<&'a BTreeMap<String, String>>,
) -> Vec<WorkloadEntry> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue; // FQDN slices cannot back a STATIC entry
        }
        let ports = slice_ports(kube_ports, slice);
        for ep in &slice.endpoints {
            // nil `ready` means unknown, which consumers treat as ready (API docs).
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            // All addresses of one endpoint are the same workload: use the first.
            let Some(address) = ep.addresses.first() else {
                continue;
            };
            // The same workload can sit in two slices while they are rebalanced.
            if !ready || !seen.insert((address.clone(), ports.clone())) {
                continue;
            }
            let labels = ep
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| {
                    let ns = r
                        .namespace
                        .as_deref()
                        .or(slice.metadata.namespace.as_deref())?;
                    pod_labels(ns, r.name.as_deref()?)
                })
                .cloned()
                .unwrap_or_default();
            out.push(WorkloadEntry {
                address: address.clone(),
                ports: ports.clone(),
                labels,
                ..WorkloadEntry::default()
            });
        }
    }
    out
}

/// Service port name -> endpoint port for the endpoints of `slice`.
fn slice_ports(kube_ports: &[KubePort], slice: &EndpointSlice) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for p in kube_ports {
        let name = p.name.clone().unwrap_or_default();
        let from_slice = slice
            .ports
            .iter()
            .flatten()
            .find(|sp| sp.name.as_deref().unwrap_or_default() == name)
            .and_then(|sp| sp.port);
        let port = from_slice.or(match &p.target_port {
            Some(IntOrString::Int(n)) => Some(*n),
            // A named target port only the slice can resolve: leave the default.
            Some(IntOrString::String(_)) => None,
            None => Some(p.port),
        });
        if let Some(port) = port.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0) {
            out.insert(name, port);
        }
    }
    out
}

#[cfg(test)]
mod tests;
