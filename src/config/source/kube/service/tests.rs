//! Tests of the Service / EndpointSlice conversion, compiled only under `#[cfg(test)]` (the module is declared
//! `#[cfg(test)] mod tests;`). Its `unwrap()`s unwrap fixtures written in this file
//! (literal YAML and JSON, snapshots compiled from them), never user or peer input: a
//! failure is a failing test.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::*;

fn svc(v: serde_json::Value) -> Service {
    serde_json::from_value(v).unwrap()
}

fn slice(v: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(v).unwrap()
}

fn reviews() -> Service {
    svc(json!({
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {
            "selector": {"app": "reviews"},
            "ports": [
                {"name": "http", "port": 9080, "targetPort": "web"},
                {"name": "grpc-api", "port": 9090, "targetPort": 19090},
                {"name": "metrics", "port": 9100, "appProtocol": "http2"},
                {"name": "dns", "port": 53, "protocol": "UDP"}
            ]
        }
    }))
}

fn reviews_slice() -> EndpointSlice {
    slice(json!({
        "metadata": {"name": "reviews-abc", "namespace": "bookinfo",
                     "labels": {"kubernetes.io/service-name": "reviews"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}, {"name": "grpc-api", "port": 19090}],
        "endpoints": [
            {"addresses": ["10.0.0.1"], "conditions": {"ready": true},
             "targetRef": {"kind": "Pod", "name": "reviews-v1-x", "namespace": "bookinfo"}},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": false},
             "targetRef": {"kind": "Pod", "name": "reviews-v2-y", "namespace": "bookinfo"}},
            {"addresses": ["10.0.0.3"],
             "targetRef": {"kind": "Pod", "name": "reviews-v3-z"}}
        ]
    }))
}

fn pods() -> BTreeMap<(String, String), BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for (pod, v) in [("reviews-v1-x", "v1"), ("reviews-v3-z", "v3")] {
        m.insert(
            ("bookinfo".to_owned(), pod.to_owned()),
            BTreeMap::from([
                ("app".to_owned(), "reviews".to_owned()),
                ("version".to_owned(), v.to_owned()),
            ]),
        );
    }
    m
}

#[test]
fn service_and_slices_become_a_static_mesh_internal_entry() {
    let pods = pods();
    let s = reviews_slice();
    let se = service_entry(&reviews(), &[&s], |ns, n| {
        pods.get(&(ns.to_owned(), n.to_owned()))
    })
    .unwrap();
    assert_eq!(se.kind, "Service");
    assert_eq!(se.namespace, "bookinfo");
    assert_eq!(&*se.origin.file, "kubernetes:Service/bookinfo/reviews");
    let spec = &se.spec;
    assert_eq!(spec.hosts, ["reviews.bookinfo.svc.cluster.local"]);
    assert_eq!(spec.resolution.as_deref(), Some("STATIC"));
    assert_eq!(spec.location.as_deref(), Some("MESH_INTERNAL"));
    let protos: Vec<_> = spec.ports.iter().map(|p| p.protocol.as_deref()).collect();
    assert_eq!(
        protos,
        [Some("HTTP"), Some("GRPC"), Some("HTTP2"), Some("UDP")]
    );
    assert_eq!(spec.ports[1].target_port, Some(19090));
    assert_eq!(
        spec.ports[0].target_port, None,
        "named targetPort resolves via the slice"
    );

    // Only ready (or unknown-readiness) endpoints, with their pod's labels.
    let addrs: Vec<_> = spec.endpoints.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(addrs, ["10.0.0.1", "10.0.0.3"]);
    assert_eq!(spec.endpoints[0].labels["version"], "v1");
    assert_eq!(
        spec.endpoints[1].labels["version"], "v3",
        "targetRef namespace defaults to the slice's"
    );
    // Service port name -> endpoint port: by the slice's port of that name, else targetPort.
    let ports = &spec.endpoints[0].ports;
    assert_eq!(ports["http"], 8080);
    assert_eq!(ports["grpc-api"], 19090);
    assert_eq!(ports["metrics"], 9100, "no targetPort: the service port");
    assert_eq!(
        spec.workload_selector.as_ref().unwrap().labels["app"],
        "reviews"
    );
}

#[test]
fn service_without_ready_endpoints_still_yields_an_entry() {
    let se = service_entry(&reviews(), &[], |_, _| None).unwrap();
    assert!(se.spec.endpoints.is_empty());
    assert_eq!(se.spec.resolution.as_deref(), Some("STATIC"));
    // The compiler accepts STATIC without endpoints when a workloadSelector is present.
    assert!(se.spec.workload_selector.is_some());
}

#[test]
fn duplicate_addresses_across_slices_count_once_and_fqdn_slices_are_skipped() {
    let a = reviews_slice();
    let mut b = reviews_slice();
    b.metadata.name = Some("reviews-def".to_owned());
    let mut fqdn = reviews_slice();
    fqdn.address_type = "FQDN".to_owned();
    fqdn.endpoints[0].addresses = vec!["example.com".to_owned()];
    let se = service_entry(&reviews(), &[&a, &b, &fqdn], |_, _| None).unwrap();
    assert_eq!(se.spec.endpoints.len(), 2);
    assert!(
        se.spec.endpoints.iter().all(|e| e.labels.is_empty()),
        "unknown pods: no labels"
    );
}

#[test]
fn port_protocols_follow_istio_naming() {
    let cases = [
        (json!({"name": "http", "port": 80}), Some("HTTP")),
        (json!({"name": "http-web", "port": 80}), Some("HTTP")),
        (json!({"name": "HTTP2-x", "port": 80}), Some("HTTP2")),
        (json!({"name": "grpc-web", "port": 80}), Some("GRPC-WEB")),
        (json!({"name": "https-admin", "port": 443}), Some("HTTPS")),
        (json!({"name": "tls", "port": 443}), Some("TLS")),
        (json!({"name": "tcp-db", "port": 5432}), Some("TCP")),
        (json!({"name": "httpish", "port": 80}), None),
        (json!({"name": "web", "port": 80}), None),
        (
            json!({"name": "web", "port": 80, "appProtocol": "kubernetes.io/h2c"}),
            Some("HTTP2"),
        ),
        (
            json!({"name": "tcp-x", "port": 80, "appProtocol": "http"}),
            Some("HTTP"),
        ),
        (json!({"port": 80}), None),
    ];
    for (port, want) in cases {
        let p: k8s_openapi::api::core::v1::ServicePort =
            serde_json::from_value(port.clone()).unwrap();
        assert_eq!(protocol(&p).as_deref(), want, "{port}");
    }
}

#[test]
fn selectorless_and_portless_services() {
    let manual = svc(json!({"metadata": {"name": "db", "namespace": "a"},
                             "spec": {"ports": [{"port": 5432}]}}));
    let se = service_entry(&manual, &[], |_, _| None).unwrap();
    let sel = &se.spec.workload_selector.as_ref().unwrap().labels;
    assert!(
        sel.keys().all(|k| k.contains('!')),
        "selects no WorkloadEntry: {sel:?}"
    );
    assert_eq!(se.spec.ports[0].name, "");

    let none = svc(json!({"metadata": {"name": "x", "namespace": "a"}, "spec": {}}));
    assert!(service_entry(&none, &[], |_, _| None).is_none());

    let ext = svc(json!({"metadata": {"name": "ext", "namespace": "a"},
                          "spec": {"type": "ExternalName", "externalName": "api.example.com",
                                   "ports": [{"name": "https", "port": 443}]}}));
    let se = service_entry(&ext, &[], |_, _| None).unwrap();
    assert_eq!(se.spec.resolution.as_deref(), Some("DNS"));
    assert_eq!(se.spec.endpoints[0].address, "api.example.com");
}
