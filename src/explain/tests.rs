//! Tests of `explain`, compiled only under `#[cfg(test)]` (the module is declared
//! `#[cfg(test)] mod tests;`). Its `unwrap()`s unwrap fixtures written in this file
//! (literal YAML and JSON, snapshots compiled from them), never user or peer input: a
//! failure is a failing test.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::config::{compile, CompileOptions};
use crate::tls::server::CertsDir;
use crate::upstream::Registry;

const GATEWAY: &str = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: web}
spec:
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [shop.example, '*.api.example']
  - port: {number: 8081, name: http2, protocol: HTTP}
    hosts: [old.example]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop, namespace: web}
spec:
  hosts: [shop.web.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, labels: {version: v2}, weight: 3}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: shop, namespace: web}
spec:
  host: shop
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool: {tcp: {maxConnections: 7}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: web}
spec:
  hosts: [shop.example]
  gateways: [gw]
  http:
  - name: jason
    match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: shop, subset: v2}
  - match:
    - uri: {prefix: /api}
      method: {exact: POST}
    - uri: {exact: /legacy}
    rewrite: {uri: /v1}
    timeout: 3s
    retries: {attempts: 4, perTryTimeout: 500ms, retryOn: 5xx}
    route:
    - destination: {host: shop, subset: v1}
      weight: 90
    - destination: {host: shop, subset: v2}
      weight: 10
  - match:
    - uri: {prefix: /old}
    redirect: {uri: /new, authority: new.example}
  - route:
    - destination: {host: shop}
  - match:
    - uri: {prefix: /never}
    directResponse: {status: 418}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: web}
spec:
  hosts: ['*.api.example']
  gateways: [gw]
  http:
  - match:
    - uri: {prefix: /health}
    directResponse: {status: 204}
";

fn snapshot(yaml: &str) -> Snapshot {
    let raw = crate::config::source::file::parse_str("test.yaml", yaml).unwrap();
    let registry = Registry::default();
    let credentials = CertsDir(PathBuf::from("certs"));
    let opts = CompileOptions {
        workload_labels: None,
        selector: BTreeMap::new(),
        mesh_port: None,
        registry: &registry,
        credentials: &credentials,
    };
    compile(&raw, &opts).unwrap()
}

fn run(snap: &Snapshot, url: &str, headers: &[&str], method: Option<&str>) -> Explanation {
    let req = ExplainRequest::try_new(url, method, headers.iter().copied(), None, None).unwrap();
    explain(snap, &req)
}

fn chosen(ex: &Explanation) -> (String, usize, usize) {
    let r = ex
        .route
        .as_ref()
        .unwrap_or_else(|| panic!("no route:\n{ex}"));
    (r.rule.virtual_service.clone(), r.rule.index, r.block)
}

#[test]
fn first_matching_rule_and_block_with_reasons_for_the_others() {
    let snap = snapshot(GATEWAY);
    let ex = run(
        &snap,
        "http://shop.example:8080/legacy?x=1",
        &[],
        Some("GET"),
    );
    assert_eq!(chosen(&ex), ("web/shop".to_owned(), 1, 1));
    assert_eq!(ex.rules.len(), 2);
    assert_eq!(ex.rules[0].reasons, ["header end-user missing"]);
    assert!(ex.rules[1].matched);
    let Outcome::Forward(fw) = &ex.outcome else {
        panic!("{ex}")
    };
    let shares: Vec<(f64, &str)> = fw
        .destinations
        .iter()
        .map(|d| (d.percent, d.cluster.subset.as_str()))
        .collect();
    assert_eq!(shares, [(90.0, "v1"), (10.0, "v2")]);
    let v1 = &fw.destinations[0].cluster;
    assert_eq!(v1.load_balancer, "LEAST_REQUEST");
    assert_eq!(v1.connection_pool["tcp.maxConnections"], "7");
    assert_eq!(v1.endpoints.len(), 1);
    assert_eq!(v1.endpoints[0].labels["version"], "v1");
    let p = &fw.policy;
    assert_eq!(p.timeout.as_deref(), Some("3s"));
    assert_eq!(
        (p.retries.attempts, p.retries.per_try_timeout.as_deref()),
        (4, Some("500ms"))
    );
    assert_eq!(p.retries.retry_on, ["5xx"]);
    // The exact match /legacy is replaced whole by /v1, as Proxy::forward does.
    let rw = p.rewrite.as_ref().unwrap();
    assert_eq!(rw.path.as_deref(), Some("/v1"));
    assert!(ex.is_routed());
    assert!(
        ex.notes.iter().any(|n| n.contains("3 later rule(s)")),
        "{ex}"
    );
}

#[test]
fn each_failed_block_says_why() {
    let snap = snapshot(GATEWAY);
    let ex = run(
        &snap,
        "http://shop.example:8080/api/x",
        &["end-user: bob"],
        None,
    );
    // Falls through to the catch-all rule 3.
    assert_eq!(chosen(&ex), ("web/shop".to_owned(), 3, 0));
    assert_eq!(
        ex.rules[0].reasons,
        ["header end-user exact jason does not match bob"]
    );
    assert_eq!(
        ex.rules[1].reasons,
        [
            "match[0]: method exact POST does not match GET",
            "match[1]: uri exact /legacy does not match /api/x"
        ]
    );
    assert_eq!(
        ex.rules[2].reasons,
        ["uri prefix /old does not match /api/x"]
    );
    let text = ex.to_string();
    assert!(
        text.contains("#3 web/shop http[3]: MATCHED (match[0])"),
        "{text}"
    );
}

#[test]
fn unreachable_rule_behind_a_catch_all_is_noted() {
    let snap = snapshot(GATEWAY);
    let ex = run(&snap, "http://shop.example:8080/never", &[], None);
    assert_eq!(chosen(&ex), ("web/shop".to_owned(), 3, 0));
    assert_eq!(ex.shadowed.len(), 1, "{ex}");
    let s = &ex.shadowed[0];
    assert_eq!((s.rule.index, s.catch_all), (4, true));
    assert_eq!(s.by.iter().map(|r| r.index).collect::<Vec<_>>(), [3]);
    assert!(ex.to_string().contains("can never match"), "{ex}");
}

#[test]
fn unexposed_host_is_a_404_listing_the_exposed_hosts() {
    let snap = snapshot(GATEWAY);
    let ex = run(&snap, "http://other.example:8080/", &[], None);
    let Outcome::Rejected { status, reason } = &ex.outcome else {
        panic!("{ex}")
    };
    assert_eq!(*status, Some(404));
    assert!(
        reason.contains("other.example is not served on port 8080"),
        "{reason}"
    );
    assert_eq!(ex.exposed_hosts, ["shop.example", "*.api.example"]);
    assert!(!ex.is_routed());
    // A wildcard host with no matching rule: 404 with the rule's reason.
    let ex = run(&snap, "http://a.api.example:8080/x", &[], None);
    assert_eq!(ex.virtual_host.as_ref().unwrap().pattern, "*.api.example");
    assert!(matches!(
        ex.outcome,
        Outcome::Rejected {
            status: Some(404),
            ..
        }
    ));
    assert_eq!(
        ex.rules[0].reasons,
        ["uri prefix /health does not match /x"]
    );
}

#[test]
fn redirects_and_direct_responses() {
    let snap = snapshot(GATEWAY);
    let ex = run(&snap, "http://shop.example:8080/old/page?q=1", &[], None);
    let Outcome::Redirect { status, location } = &ex.outcome else {
        panic!("{ex}")
    };
    assert_eq!(
        (*status, location.as_str()),
        (301, "http://new.example/new?q=1")
    );
    let ex = run(&snap, "http://x.api.example:8080/health", &[], None);
    assert!(matches!(
        ex.outcome,
        Outcome::DirectResponse { status: 204, .. }
    ));
    let ex = run(&snap, "http://old.example:8081/p?a=b", &[], None);
    let Outcome::HttpsRedirect { status, location } = &ex.outcome else {
        panic!("{ex}")
    };
    assert_eq!(
        (*status, location.as_str()),
        (301, "https://old.example/p?a=b")
    );
}

#[test]
fn connection_level_rejections() {
    let snap = snapshot(GATEWAY);
    let ex = run(&snap, "http://shop.example:9999/", &[], None);
    let Outcome::Rejected { status, reason } = &ex.outcome else {
        panic!("{ex}")
    };
    assert_eq!(*status, None);
    assert!(reason.contains("no listener on port 9999"), "{reason}");
    let ex = run(&snap, "https://shop.example:8080/", &[], None);
    assert!(
        matches!(ex.outcome, Outcome::Rejected { status: None, .. }),
        "{ex}"
    );
    let ex = run(&snap, "http://shop.example:8080/", &[], Some("CONNECT"));
    assert!(matches!(
        ex.outcome,
        Outcome::Rejected {
            status: Some(404),
            ..
        }
    ));
}

#[test]
fn agrees_with_the_route_table_on_every_request() {
    // The explanation's route is `VirtualHost::find`'s, whatever the request.
    let snap = snapshot(GATEWAY);
    let table = snap.table(8080).unwrap();
    for (url, headers, method) in [
        ("http://shop.example:8080/", vec![], "GET"),
        ("http://shop.example:8080/api", vec![], "POST"),
        (
            "http://shop.example:8080/api",
            vec!["end-user: jason"],
            "POST",
        ),
        ("http://shop.example:8080/old", vec![], "DELETE"),
        ("http://x.api.example:8080/health", vec![], "GET"),
        ("http://x.api.example:8080/nope", vec![], "GET"),
    ] {
        let req = ExplainRequest::try_new(url, Some(method), headers, None, None).unwrap();
        let ex = explain(&snap, &req);
        let want = table
            .lookup(&req.view(8080))
            .ok()
            .map(|(r, b)| (r.virtual_service.to_string(), r.index, b));
        let got = ex
            .route
            .as_ref()
            .map(|r| (r.rule.virtual_service.clone(), r.rule.index, r.block));
        assert_eq!(got, want, "{url}\n{ex}");
    }
}

#[test]
fn json_names_the_rule() {
    let snap = snapshot(GATEWAY);
    let ex = run(
        &snap,
        "http://shop.example:8080/x",
        &["end-user: jason"],
        None,
    );
    let v = serde_json::to_value(&ex).unwrap();
    assert_eq!(v["route"]["virtualService"], "web/shop");
    assert_eq!(v["route"]["index"], 0);
    assert_eq!(v["route"]["name"], "jason");
    assert_eq!(v["outcome"]["kind"], "forward");
    assert_eq!(v["outcome"]["destinations"][0]["cluster"]["subset"], "v2");
    assert_eq!(v["request"]["headers"][0][0], "end-user");
}

const POLICIES: &str = "
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: policies, namespace: web}
spec:
  hosts: [p.api.example]
  gateways: [gw]
  http:
  - match:
    - uri: {prefix: /f}
    fault:
      delay: {fixedDelay: 5s, percentage: {value: 10}}
      abort: {httpStatus: 503, percentage: {value: 100}}
    mirror: {host: shop, subset: v2}
    mirrorPercentage: {value: 50}
    corsPolicy:
      allowOrigins: [{exact: 'https://a.example'}]
      allowMethods: [GET]
    headers:
      request:
        set: {x-env: prod}
      response:
        remove: [server]
    route:
    - destination: {host: shop, subset: v1}
";

#[test]
fn fault_mirror_cors_and_headers_are_reported() {
    let snap = snapshot(&format!("{GATEWAY}{POLICIES}"));
    let ex = run(
        &snap,
        "http://p.api.example:8080/f",
        &["origin: https://a.example"],
        None,
    );
    assert_eq!(chosen(&ex), ("web/policies".to_owned(), 0, 0));
    let Outcome::Forward(fw) = &ex.outcome else {
        panic!("{ex}")
    };
    let p = &fw.policy;
    assert_eq!(
        p.fault,
        [
            "delay 5s for 10% of requests",
            "abort with HTTP 503 for 100% of requests, before the upstream"
        ]
    );
    assert_eq!(
        p.mirrors,
        ["50% of requests copied to outbound|80|v2|shop.web.svc.cluster.local"]
    );
    assert_eq!(
        p.cors.as_deref(),
        Some("allowOrigins [exact https://a.example]: origin allowed: CORS headers added to the response")
    );
    assert_eq!(p.headers.request, ["set x-env: prod"]);
    assert_eq!(p.headers.response, ["remove server"]);
    assert!(ex
        .notes
        .iter()
        .any(|n| n.contains("fault.abort applies to every request")));
    let text = ex.to_string();
    assert!(text.contains("fault     abort with HTTP 503"), "{text}");

    // A preflight from an allowed origin never reaches the route's action.
    let ex = run(
        &snap,
        "http://p.api.example:8080/f",
        &[
            "origin: https://a.example",
            "access-control-request-method: GET",
        ],
        Some("OPTIONS"),
    );
    assert!(
        matches!(ex.outcome, Outcome::DirectResponse { status: 200, .. }),
        "{ex}"
    );
    assert!(
        ex.notes.iter().any(|n| n.contains("CORS preflight")),
        "{ex}"
    );
}

#[test]
fn mesh_default_route_of_a_service_entry() {
    let raw = crate::config::source::file::parse_str("test.yaml", GATEWAY).unwrap();
    let registry = Registry::default();
    let credentials = CertsDir(PathBuf::from("certs"));
    let opts = CompileOptions {
        workload_labels: None,
        selector: BTreeMap::new(),
        mesh_port: Some(15001),
        registry: &registry,
        credentials: &credentials,
    };
    let snap = compile(&raw, &opts).unwrap();
    // No Gateway listens on 80: the mesh port answers, by the ServiceEntry's default route.
    let ex = run(&snap, "http://shop.web.svc.cluster.local/", &[], None);
    assert_eq!(ex.listener.as_ref().unwrap().kind, "mesh");
    assert!(ex.notes[0].contains("mesh port 15001"), "{ex}");
    let route = ex.route.as_ref().unwrap();
    assert_eq!(route.rule.virtual_service, "web/shop");
    assert!(route.rule.name.starts_with("default|"), "{ex}");
    assert!(
        ex.to_string()
            .contains("ServiceEntry web/shop default route"),
        "{ex}"
    );
    // An explicit --port that nothing listens on is refused, not redirected to the mesh.
    let req = ExplainRequest::try_new(
        "http://shop.web.svc.cluster.local/",
        None,
        [],
        None,
        Some(80),
    )
    .unwrap();
    assert!(!explain(&snap, &req).is_routed());
}
