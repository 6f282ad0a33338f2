//! The Kubernetes source end to end: kmock (an in-memory Kubernetes API emulator) fed with
//! real-shaped Istio objects, Services, EndpointSlices, Pods and Secrets; meshgate started
//! in-process against it; real HTTP and TLS traffic through it to real hyper upstreams.
#![cfg(feature = "kubernetes")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use meshgate::config::{KubeConnect, KubeSettings, Source};
use serde_json::{json, Value};

use support::kmock::Kmock;
use support::pki::{Ca, Leaf, TlsClient};
use support::{within_for, Client, TestGateway, Upstream, UpstreamHandle};

const NS: &str = "shop";
const HOST: &str = "bookinfo.test";

// === objects, shaped as the API server serves them ===

fn gateway(name: &str, port: u16, selector: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": selector, "servers": [
            {"port": {"number": port, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}
        ]}
    })
}

/// VirtualService `bookinfo`: `/ratings` to the short name `ratings`, the rest to `reviews`
/// (subset `subset` when given).
fn virtual_service(subset: Option<&str>) -> Value {
    let mut reviews = json!({"host": "reviews"});
    if let Some(s) = subset {
        reviews["subset"] = json!(s);
    }
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "bookinfo", "namespace": NS},
        "spec": {"hosts": [HOST], "gateways": ["gw"], "http": [
            {"match": [{"uri": {"prefix": "/ratings"}}],
             "route": [{"destination": {"host": "ratings"}}]},
            {"route": [{"destination": reviews}]}
        ]}
    })
}

fn destination_rule() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": NS},
        "spec": {"host": "reviews", "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}}
        ]}
    })
}

/// A Service whose port 9080 targets the container port named `web` (resolved per
/// EndpointSlice, as the endpoints controller does).
fn service(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": {"app": name}, "ports": [
            {"name": "http", "port": 9080, "targetPort": "web", "protocol": "TCP"}
        ]}
    })
}

fn pod(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "example/app"}]}
    })
}

/// An EndpointSlice of `svc` with one ready endpoint: `up` as pod `pod`.
fn slice(name: &str, svc: &str, up: &UpstreamHandle, pod: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": up.port(), "protocol": "TCP"}],
        "endpoints": [{"addresses": [up.addr.ip().to_string()], "conditions": {"ready": true},
                       "targetRef": {"kind": "Pod", "name": pod, "namespace": NS}}]
    })
}

fn tls_secret(name: &str, leaf: &Leaf) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": NS},
        "data": {"tls.crt": b64(&leaf.cert_pem), "tls.key": b64(&leaf.key_pem)}
    })
}

// === harness ===

/// The bookinfo-like world: reviews v1 and v2 (pods labelled by version), ratings.
struct Bookinfo {
    v1: UpstreamHandle,
    v2: UpstreamHandle,
    ratings: UpstreamHandle,
}

impl Bookinfo {
    async fn upstreams() -> Self {
        Self {
            v1: Upstream::new("v1").run().await,
            v2: Upstream::new("v2").run().await,
            ratings: Upstream::new("ratings").run().await,
        }
    }

    /// Every object, the VirtualService routing the default route to `subset`.
    fn objects(&self, subset: Option<&str>) -> Vec<Value> {
        vec![
            gateway("gw", 8080, json!({"istio": "ingressgateway"})),
            virtual_service(subset),
            destination_rule(),
            service("reviews"),
            service("ratings"),
            pod("reviews-v1-abc", json!({"app": "reviews", "version": "v1"})),
            pod("reviews-v2-def", json!({"app": "reviews", "version": "v2"})),
            pod("ratings-0", json!({"app": "ratings"})),
            slice("reviews-v1", "reviews", &self.v1, "reviews-v1-abc"),
            slice("reviews-v2", "reviews", &self.v2, "reviews-v2-def"),
            slice("ratings-1", "ratings", &self.ratings, "ratings-0"),
        ]
    }

    async fn feed(&self, k: &Kmock, subset: Option<&str>) {
        for o in self.objects(subset) {
            k.create(o).await;
        }
    }
}

fn settings(k_port: u16, adjust: impl FnOnce(&mut KubeSettings)) -> KubeSettings {
    let mut cfg = kube::Config::new(format!("http://127.0.0.1:{k_port}").parse().unwrap());
    cfg.connect_timeout = Some(Duration::from_secs(2));
    let mut s = KubeSettings {
        namespaces: Vec::new(),
        pod_labels_file: "/nonexistent/podinfo/labels".into(),
        connect: KubeConnect::Config(Box::new(cfg)),
    };
    adjust(&mut s);
    s
}

/// meshgate in-process against the emulator on `k_port`.
async fn start_gateway(k_port: u16, adjust: impl FnOnce(&mut KubeSettings)) -> TestGateway {
    let s = settings(k_port, adjust);
    within_for(
        Duration::from_secs(60),
        TestGateway::start_with("", move |b| b.source = Source::Kubernetes(s)),
    )
    .await
}

/// GET `path` with Host `bookinfo.test`: (status, body); status 0 on a transport error.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    match Client::new(addr, HOST).try_send(path).await {
        Ok(r) => (r.status.as_u16(), r.body),
        Err(_) => (0, String::new()),
    }
}

/// Poll until `GET path` answers 200 with `body` (a config change has been applied).
async fn until_body(addr: SocketAddr, path: &str, body: &str) {
    let mut last = (0, String::new());
    let done = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            last = get(addr, path).await;
            if last.0 == 200 && last.1 == body {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "never got 200 {body:?} on {path}; last: {last:?}"
    );
}

/// Poll until the gateway listens for configured port `port`.
async fn until_listening(gw: &TestGateway, port: u16) -> SocketAddr {
    within_for(Duration::from_secs(30), async {
        loop {
            if let Some(a) = gw.running.listener(port) {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

// === tests ===

#[tokio::test]
async fn routes_short_names_and_subsets_by_pod_labels() {
    let k = Kmock::start().await;
    let b = Bookinfo::upstreams().await;
    b.feed(&k, Some("v2")).await;
    let gw = start_gateway(k.port, |_| {}).await;
    let addr = gw.port(8080);

    // `ratings` is a short name: ratings.shop.svc.cluster.local, from the Service.
    assert_eq!(get(addr, "/ratings").await, (200, "ratings".to_owned()));
    // Subset v2 selects the endpoint whose pod is labelled version=v2 only.
    for _ in 0..8 {
        assert_eq!(get(addr, "/").await, (200, "v2".to_owned()));
    }
    assert_eq!(b.v1.hits(), 0);
    // The Service's named targetPort was mapped to the EndpointSlice port.
    assert_eq!(b.v2.hits(), 8);
}

#[tokio::test]
async fn virtual_service_change_under_traffic_loses_nothing() {
    let k = Kmock::start().await;
    let b = Bookinfo::upstreams().await;
    b.feed(&k, Some("v1")).await;
    let gw = start_gateway(k.port, |_| {}).await;
    let addr = gw.port(8080);
    until_body(addr, "/", "v1").await;

    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let (status, body) = get(addr, "/").await;
                sent.fetch_add(1, Ordering::SeqCst);
                if status != 200 || !(body == "v1" || body == "v2") {
                    failed.fetch_add(1, Ordering::SeqCst);
                    eprintln!("failed request: {status} {body:?}");
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    k.patch(virtual_service(Some("v2"))).await;
    until_body(addr, "/", "v2").await;
    let at_switch = sent.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    let total = sent.load(Ordering::SeqCst);
    assert!(
        total > at_switch + 10,
        "traffic kept flowing after the switch: {total}"
    );
    assert_eq!(failed.load(Ordering::SeqCst), 0, "of {total} requests");
    // Once the new route is served, the old subset gets nothing new.
    let v1_after = b.v1.hits();
    for _ in 0..5 {
        assert_eq!(get(addr, "/").await, (200, "v2".to_owned()));
    }
    assert_eq!(b.v1.hits(), v1_after);
}

#[tokio::test]
async fn endpoints_added_and_removed() {
    let k = Kmock::start().await;
    let b = Bookinfo::upstreams().await;
    // Start with reviews backed by v1 only.
    for o in b.objects(None) {
        if o["metadata"]["name"] != "reviews-v2" {
            k.create(o).await;
        }
    }
    let gw = start_gateway(k.port, |_| {}).await;
    let addr = gw.port(8080);
    assert_eq!(get(addr, "/").await, (200, "v1".to_owned()));

    k.create(slice("reviews-v2", "reviews", &b.v2, "reviews-v2-def"))
        .await;
    until_body(addr, "/", "v2").await; // round robin reaches the new endpoint

    k.delete(&slice("reviews-v1", "reviews", &b.v1, "reviews-v1-abc"))
        .await;
    within_for(Duration::from_secs(30), async {
        loop {
            let v1 = b.v1.hits();
            let mut only_v2 = true;
            for _ in 0..6 {
                only_v2 &= get(addr, "/").await == (200, "v2".to_owned());
            }
            if only_v2 && b.v1.hits() == v1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    // No ready endpoint left: the Service still exists, requests get 503 (not a config error).
    k.delete(&slice("reviews-v2", "reviews", &b.v2, "reviews-v2-def"))
        .await;
    within_for(Duration::from_secs(30), async {
        while get(addr, "/").await.0 != 503 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(gw.running.store.last_errors().is_empty());
    assert_eq!(get(addr, "/ratings").await, (200, "ratings".to_owned()));
}

#[tokio::test]
async fn credential_name_resolves_from_a_secret() {
    let k = Kmock::start().await;
    let b = Bookinfo::upstreams().await;
    b.feed(&k, Some("v1")).await;
    let ca = Ca::new("kube test CA");
    let leaf = ca.server("secure", &["secure.test"]);
    k.create(tls_secret("secure-cert", &leaf)).await;
    k.create(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
        "metadata": {"name": "secure", "namespace": NS},
        "spec": {"selector": {"istio": "ingressgateway"}, "servers": [{
            "port": {"number": 8443, "name": "https", "protocol": "HTTPS"},
            "hosts": ["secure.test"],
            "tls": {"mode": "SIMPLE", "credentialName": "secure-cert"}
        }]}
    }))
    .await;
    let gw = start_gateway(k.port, |_| {}).await;
    let hs = TlsClient::new(&ca)
        .connect(gw.port(8443), "secure.test")
        .await;
    assert!(hs.is_ok(), "handshake failed: {}", hs.error());
    assert!(hs.presented(&leaf), "wrong certificate");
}

#[tokio::test]
async fn gateways_selected_by_the_pod_labels_file() {
    let k = Kmock::start().await;
    let b = Bookinfo::upstreams().await;
    b.feed(&k, Some("v1")).await;
    k.create(gateway("egress", 9090, json!({"istio": "egressgateway"})))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels");
    std::fs::write(
        &labels,
        "app=\"meshgate\"\nistio=\"ingressgateway\"\npod-template-hash=\"5f7c\"\n",
    )
    .unwrap();
    let gw = start_gateway(k.port, |s| s.pod_labels_file = labels).await;
    // `gw` (istio=ingressgateway) is served, `egress` (istio=egressgateway) is not.
    assert_eq!(get(gw.port(8080), "/").await, (200, "v1".to_owned()));
    assert!(gw.running.listener(9090).is_none());
    assert!(gw.running.store.last_errors().is_empty());
}

#[tokio::test]
async fn only_the_given_namespaces_are_watched() {
    let k = Kmock::start().await;
    let b = Bookinfo::upstreams().await;
    b.feed(&k, Some("v1")).await;
    // A Gateway elsewhere: it would open port 9090 if its namespace were watched.
    let mut other = gateway("other", 9090, json!({"istio": "ingressgateway"}));
    other["metadata"]["namespace"] = json!("elsewhere");
    k.create(other).await;

    let gw = start_gateway(k.port, |s| s.namespaces = vec![NS.to_owned()]).await;
    assert_eq!(get(gw.port(8080), "/").await, (200, "v1".to_owned()));
    assert!(gw.running.listener(9090).is_none());

    // Changes in the watched namespace still arrive through the namespaced watches.
    k.patch(virtual_service(Some("v2"))).await;
    until_body(gw.port(8080), "/", "v2").await;
}

#[tokio::test]
async fn invalid_virtual_service_is_rejected_and_the_old_snapshot_serves() {
    let k = Kmock::start().await;
    let b = Bookinfo::upstreams().await;
    b.feed(&k, Some("v1")).await;
    let gw = start_gateway(k.port, |_| {}).await;
    let addr = gw.port(8080);
    let generation = gw.running.store.load().generation;

    let mut bad = virtual_service(Some("v2"));
    bad["spec"]["http"][1]["route"][0]["weight"] = json!("heavy");
    k.patch(bad).await;
    let errors = within_for(Duration::from_secs(30), async {
        loop {
            let e = gw.running.store.last_errors();
            if !e.is_empty() {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        errors[0]
            .starts_with("kubernetes:VirtualService/shop/bookinfo: spec.http[1].route[0].weight: "),
        "{errors:?}"
    );
    assert_eq!(gw.running.store.load().generation, generation);
    assert_eq!(get(addr, "/").await, (200, "v1".to_owned()));
    let rejected = gw
        .running
        .metrics
        .config_reloads
        .with_label_values(&["rejected"])
        .get();
    assert!(rejected >= 1);

    // Fixed: applied, and the error is cleared.
    k.patch(virtual_service(Some("v2"))).await;
    until_body(addr, "/", "v2").await;
    assert!(gw.running.store.last_errors().is_empty());
}

#[tokio::test]
async fn gone_forces_a_relist() {
    let k = Kmock::start().await;
    let b = Bookinfo::upstreams().await;
    b.feed(&k, Some("v1")).await;
    let gw = start_gateway(k.port, |_| {}).await;
    let addr = gw.port(8080);

    // A change no watch event announces: only a fresh LIST can see it.
    let mut vs = virtual_service(Some("v2"));
    vs["metadata"]["resourceVersion"] = json!("1");
    k.put_silently(vs).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        get(addr, "/").await,
        (200, "v1".to_owned()),
        "no event, no change"
    );

    let lists = k.lists().await;
    k.gone().await;
    until_body(addr, "/", "v2").await;
    assert!(k.lists().await > lists, "410 Gone must relist");
}

#[tokio::test]
async fn api_server_down_at_start_then_available() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = settings(port, |_| {});
    let start = tokio::spawn(TestGateway::try_start_with("", move |b| {
        b.source = Source::Kubernetes(s);
    }));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!start.is_finished(), "start must wait for the API server");

    let k = Kmock::start_on(port).await;
    let b = Bookinfo::upstreams().await;
    b.feed(&k, Some("v2")).await;
    let gw = within_for(Duration::from_secs(60), start)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("start failed: {e}"));
    let addr = until_listening(&gw, 8080).await;
    until_body(addr, "/", "v2").await;
}

#[tokio::test]
async fn dropped_watches_reconnect_and_the_last_snapshot_serves_meanwhile() {
    let mut k = Kmock::start().await;
    let port = k.port;
    let b = Bookinfo::upstreams().await;
    b.feed(&k, Some("v1")).await;
    let gw = start_gateway(port, |_| {}).await;
    let addr = gw.port(8080);
    assert_eq!(get(addr, "/").await, (200, "v1".to_owned()));

    // The API server goes away: every watch stream drops, traffic is unaffected.
    k.kill().await;
    for _ in 0..10 {
        assert_eq!(get(addr, "/").await, (200, "v1".to_owned()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // It comes back (kmock's state is gone: feed it again, with a changed route); the
    // watchers reconnect with backoff and pick the change up.
    let k = Kmock::start_on(port).await;
    b.feed(&k, Some("v2")).await;
    until_body(addr, "/", "v2").await;
    assert_eq!(get(addr, "/ratings").await, (200, "ratings".to_owned()));
}

// === protocol level: kube's tower-test pattern (what kmock cannot show) ===
//
// kmock ignores `resourceVersion` on watches (every watch replays all objects), so it cannot
// show *how* the watcher recovers. Here a `tower_test::mock::pair` sits under a real
// `kube::Client` (the transport, not the client, is faked, as kube-runtime's own tests do),
// and the test answers every request itself.

mod wire {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::combinators::BoxBody;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::Frame;
    use serde_json::{json, Value};
    use tokio::sync::mpsc;

    pub(crate) type Body = BoxBody<Bytes, Infallible>;
    pub(crate) type Handle =
        tower_test::mock::Handle<http::Request<kube::client::Body>, http::Response<Body>>;
    pub(crate) type Send = tower_test::mock::SendResponse<http::Response<Body>>;

    pub(crate) fn json_response(status: u16, v: &Value) -> http::Response<Body> {
        http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())).boxed())
            .unwrap()
    }

    pub(crate) fn list(rv: &str, items: Vec<Value>) -> http::Response<Body> {
        json_response(
            200,
            &json!({"apiVersion": "v1", "kind": "List",
                                   "metadata": {"resourceVersion": rv}, "items": items}),
        )
    }

    /// A watch response whose events the test sends one by one; dropping the sender ends
    /// the stream (a dropped watch connection).
    pub(crate) fn watch() -> (http::Response<Body>, mpsc::UnboundedSender<Value>) {
        let (tx, rx) = mpsc::unbounded_channel::<Value>();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            let ev = rx.recv().await?;
            let line = Bytes::from(format!("{ev}\n"));
            Some((Ok::<_, Infallible>(Frame::data(line)), rx))
        });
        let resp = http::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(StreamBody::new(stream).boxed())
            .unwrap();
        (resp, tx)
    }

    /// `LIST` or `WATCH <resourceVersion>` for a request.
    pub(crate) fn summary<B>(req: &http::Request<B>) -> String {
        let q = req.uri().query().unwrap_or("");
        let param = |k: &str| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                .unwrap_or("")
                .to_owned()
        };
        if param("watch") == "true" {
            format!("WATCH {}", param("resourceVersion"))
        } else {
            "LIST".to_owned()
        }
    }
}

#[tokio::test]
async fn watch_resumes_from_its_last_version_and_relists_after_gone() {
    use tokio::sync::mpsc;

    let one = Upstream::new("one").run().await;
    let two = Upstream::new("two").run().await;
    let vs = |target: &str, rv: &str| {
        let mut v = json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "bookinfo", "namespace": NS, "resourceVersion": rv},
            "spec": {"hosts": [HOST], "gateways": ["gw"],
                     "http": [{"route": [{"destination": {"host": target}}]}]}
        });
        v["metadata"]["uid"] = json!("vs-uid");
        v
    };
    let mut statics: Vec<(&str, Vec<Value>)> = vec![
        (
            "gateways",
            vec![gateway("gw", 8080, json!({"istio": "ingressgateway"}))],
        ),
        ("services", vec![service("one"), service("two")]),
        (
            "pods",
            vec![
                pod("one-0", json!({"app": "one"})),
                pod("two-0", json!({"app": "two"})),
            ],
        ),
        (
            "endpointslices",
            vec![
                slice("one-a", "one", &one, "one-0"),
                slice("two-a", "two", &two, "two-0"),
            ],
        ),
    ];
    for (_, items) in &mut statics {
        for (i, o) in items.iter_mut().enumerate() {
            o["metadata"]["resourceVersion"] = json!(format!("{}", i + 1));
        }
    }

    let (service, mut handle): (_, wire::Handle) = tower_test::mock::pair();
    let client = kube::Client::new(service, "default");
    let (vs_tx, mut vs_rx) = mpsc::unbounded_channel::<(String, wire::Send)>();
    // The fake API server: discovery fails twice (API server not up yet), then answers;
    // VirtualService requests go to the test body, other kinds list `statics` and hold
    // their watches open.
    tokio::spawn(async move {
        let mut unavailable = 2;
        let mut held = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let path = req.uri().path().to_owned();
            let summary = wire::summary(&req);
            if path == "/apis" && unavailable > 0 {
                unavailable -= 1;
                let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "code": 503, "reason": "ServiceUnavailable", "message": "starting"});
                send.send_response(wire::json_response(503, &status));
                continue;
            }
            let plural = path.rsplit('/').next().unwrap_or_default();
            if path == "/apis" {
                send.send_response(wire::json_response(200, &json!({
                    "kind": "APIGroupList", "apiVersion": "v1", "groups": [{
                        "name": "networking.istio.io",
                        "versions": [{"groupVersion": "networking.istio.io/v1", "version": "v1"}],
                        "preferredVersion": {"groupVersion": "networking.istio.io/v1", "version": "v1"}
                    }]
                })));
            } else if path == "/apis/networking.istio.io/v1" {
                let resources: Vec<Value> = [
                    "gateways",
                    "virtualservices",
                    "destinationrules",
                    "serviceentries",
                    "workloadentries",
                ]
                .iter()
                .map(|p| {
                    json!({"name": p, "singularName": "", "namespaced": true,
                                    "kind": "X", "verbs": ["list", "watch"]})
                })
                .collect();
                send.send_response(wire::json_response(
                    200,
                    &json!({
                        "kind": "APIResourceList", "apiVersion": "v1",
                        "groupVersion": "networking.istio.io/v1", "resources": resources
                    }),
                ));
            } else if plural == "virtualservices" {
                vs_tx.send((summary, send)).unwrap();
            } else if summary == "LIST" {
                let items = statics
                    .iter()
                    .find(|(p, _)| *p == plural)
                    .map(|(_, items)| items.clone())
                    .unwrap_or_default();
                send.send_response(wire::list("100", items));
            } else {
                let (resp, tx) = wire::watch();
                send.send_response(resp);
                held.push(tx);
            }
        }
    });
    let settings = KubeSettings {
        namespaces: Vec::new(),
        pod_labels_file: "/nonexistent/podinfo/labels".into(),
        connect: KubeConnect::Client(client),
    };
    let start = tokio::spawn(TestGateway::try_start_with("", move |b| {
        b.source = Source::Kubernetes(settings);
    }));
    async fn next(rx: &mut mpsc::UnboundedReceiver<(String, wire::Send)>) -> (String, wire::Send) {
        within_for(Duration::from_secs(30), rx.recv())
            .await
            .unwrap()
    }

    // Initial list, then a watch from the list's version.
    let (s, send) = next(&mut vs_rx).await;
    assert_eq!(s, "LIST");
    send.send_response(wire::list("10", vec![vs("one", "10")]));
    let gw = within_for(Duration::from_secs(30), start)
        .await
        .unwrap()
        .unwrap();
    let addr = gw.port(8080);
    assert_eq!(get(addr, "/").await, (200, "one".to_owned()));

    let (s, send) = next(&mut vs_rx).await;
    assert_eq!(s, "WATCH 10");
    let (resp, events) = wire::watch();
    send.send_response(resp);
    events
        .send(json!({"type": "MODIFIED", "object": vs("two", "11")}))
        .unwrap();
    until_body(addr, "/", "two").await;

    // The connection drops: the watcher resumes from the last version it saw, no relist.
    drop(events);
    let (s, send) = next(&mut vs_rx).await;
    assert_eq!(s, "WATCH 11");
    let (resp, events) = wire::watch();
    send.send_response(resp);
    // That version is too old now: 410 Gone. The watcher must list again.
    events
        .send(
            json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                     "status": "Failure", "reason": "Expired", "code": 410,
                     "message": "too old resource version: 11 (15)"}}),
        )
        .unwrap();
    let (s, send) = next(&mut vs_rx).await;
    assert_eq!(s, "LIST");
    send.send_response(wire::list("20", vec![vs("one", "20")]));
    until_body(addr, "/", "one").await;
    let (s, _held) = next(&mut vs_rx).await;
    assert_eq!(s, "WATCH 20");
    drop(events);
}
