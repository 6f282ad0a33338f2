//! The rest of Istio's HTTP traffic policy, end to end: fault injection (delay, abort, gRPC
//! abort, percentages), CORS (preflight allowed / denied / ignored, decorated responses),
//! mirroring (the copy arrives with a `-shadow` authority while the client gets the primary's
//! answer, even when the mirror is slow or down), and `uriRegexRewrite`.

// Tests (and the shared harness they include) fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use support::gateway::{http_gateway, service_entry};
use support::{within, Client, TestGateway, Upstream, UpstreamHandle};

const HOST: &str = "app.test";

/// A VirtualService for `HOST` on gateway `gw` with one `http[]` rule: `rule` lines (each
/// indented under the `- ` of the rule) plus a route to `app.svc`.
fn vs(rule: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: app\nspec:\n  hosts: [{HOST}]\n  gateways: [gw]\n  http:\n  - route:\n    - destination:\n        host: app.svc\n{rule}---\n"
    )
}

async fn start(up: &UpstreamHandle, rule: &str, extra: &str) -> TestGateway {
    let yaml = format!(
        "{}{}{}{extra}",
        http_gateway("gw", 8080, &["*"]),
        service_entry("app.svc", 80, "HTTP", &[(up, "v1")]),
        vs(rule),
    );
    TestGateway::start(&yaml).await
}

fn client(gw: &TestGateway) -> Client {
    Client::new(gw.port(8080), HOST)
}

async fn metrics(gw: &TestGateway) -> String {
    Client::new(gw.admin(), "admin").send("/metrics").await.body
}

// ---- fault ----

#[tokio::test]
async fn fault_abort_never_reaches_the_upstream_and_is_flagged_fi() {
    let up = Upstream::new("app").run().await;
    let gw = start(
        &up,
        "    fault:\n      abort:\n        httpStatus: 418\n        percentage: {value: 100}\n",
        "",
    )
    .await;
    for _ in 0..5 {
        let r = client(&gw).send("/").await;
        assert_eq!(r.status, 418);
        assert_eq!(r.body, "fault filter abort");
    }
    assert_eq!(up.hits(), 0, "an aborted request reached the upstream");
    let m = metrics(&gw).await;
    assert!(
        m.lines().any(|l| l.starts_with("istio_requests_total{")
            && l.contains("response_code=\"418\"")
            && l.contains("response_flags=\"FI\"")
            && l.ends_with(" 5")),
        "{m}"
    );
}

#[tokio::test]
async fn fault_percentages_hold_statistically() {
    let up = Upstream::new("app").run().await;
    let gw = start(
        &up,
        "    fault:\n      abort:\n        httpStatus: 503\n        percentage: {value: 30}\n",
        "",
    )
    .await;
    let n = 600;
    let mut aborted = 0;
    for _ in 0..n {
        let r = client(&gw).send("/").await;
        if r.body == "fault filter abort" {
            aborted += 1;
        } else {
            assert_eq!(r.status, 200);
        }
    }
    // 30% of 600 = 180; 5 standard deviations (~56) either side.
    assert!((124..=236).contains(&aborted), "aborted {aborted} of {n}");
    assert_eq!(up.hits(), n - aborted);
}

#[tokio::test]
async fn fault_delay_holds_requests_and_is_flagged_di() {
    let up = Upstream::new("app").run().await;
    let gw = start(
        &up,
        "    fault:\n      delay:\n        fixedDelay: 300ms\n        percentage: {value: 100.0}\n",
        "",
    )
    .await;
    let t = Instant::now();
    let r = client(&gw).send("/").await;
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(up.hits(), 1);
    let m = within(async {
        loop {
            let m = metrics(&gw).await;
            if m.contains("response_flags=\"DI\"") {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(m.contains("response_code=\"200\""), "{m}");
}

#[tokio::test]
async fn fault_grpc_abort_answers_with_grpc_status() {
    let up = Upstream::new("app").run().await;
    let gw = start(
        &up,
        "    fault:\n      abort:\n        grpcStatus: UNAVAILABLE\n",
        "",
    )
    .await;
    let r = client(&gw)
        .header("content-type", "application/grpc")
        .method("POST")
        .send("/pkg.Svc/Call")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), "14");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn invalid_faults_are_rejected_with_their_field() {
    let up = Upstream::new("app").run().await;
    for (rule, field) in [
        (
            "    fault:\n      abort:\n        httpStatus: 99\n",
            "http[0].fault.abort.httpStatus",
        ),
        (
            "    fault:\n      delay:\n        fixedDelay: soon\n",
            "http[0].fault.delay.fixedDelay",
        ),
        (
            "    fault:\n      abort:\n        httpStatus: 500\n        percentage: {value: 150}\n",
            "http[0].fault.abort.percentage",
        ),
        (
            "    fault:\n      abort:\n        grpcStatus: SOMETIMES\n",
            "http[0].fault.abort.grpcStatus",
        ),
    ] {
        let yaml = format!(
            "{}{}{}",
            http_gateway("gw", 8080, &["*"]),
            service_entry("app.svc", 80, "HTTP", &[(&up, "v1")]),
            vs(rule),
        );
        let e = TestGateway::try_start_with(&yaml, |_| {})
            .await
            .err()
            .unwrap_or_else(|| panic!("accepted: {rule}"))
            .to_string();
        assert!(e.contains(field), "{field}: {e}");
    }
}

// ---- CORS ----

const CORS: &str = "    corsPolicy:\n      allowOrigins:\n      - exact: https://a.example\n      - regex: https://.*\\.b\\.example\n      allowMethods: [GET, POST]\n      allowHeaders: [x-user]\n      exposeHeaders: [x-trace]\n      maxAge: 24h\n      allowCredentials: true\n";

#[tokio::test]
async fn cors_preflight_is_answered_by_the_gateway() {
    let up = Upstream::new("app").run().await;
    let gw = start(&up, CORS, "").await;
    let r = client(&gw)
        .method("OPTIONS")
        .header("origin", "https://x.b.example")
        .header("access-control-request-method", "POST")
        .send("/api")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        "https://x.b.example"
    );
    assert_eq!(r.header("access-control-allow-methods"), "GET,POST");
    assert_eq!(r.header("access-control-allow-headers"), "x-user");
    assert_eq!(r.header("access-control-max-age"), "86400");
    assert_eq!(r.header("access-control-allow-credentials"), "true");
    assert_eq!(up.hits(), 0, "the preflight reached the upstream");
}

#[tokio::test]
async fn cors_disallowed_origin_gets_no_cors_headers() {
    let up = Upstream::new("app").run().await;
    let gw = start(&up, CORS, "").await;
    // Preflight from a disallowed origin: forwarded (unmatchedPreflights FORWARD), no CORS.
    let r = client(&gw)
        .method("OPTIONS")
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send("/api")
        .await;
    assert_eq!(r.header("access-control-allow-origin"), "");
    assert_eq!(up.hits(), 1);
    let r = client(&gw)
        .header("origin", "https://evil.example")
        .send("/api")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), "");
    // An allowed origin's actual request is decorated.
    let r = client(&gw)
        .header("origin", "https://a.example")
        .send("/api")
        .await;
    assert_eq!(r.header("access-control-allow-origin"), "https://a.example");
    assert_eq!(r.header("access-control-expose-headers"), "x-trace");
    assert_eq!(r.header("access-control-allow-credentials"), "true");
}

#[tokio::test]
async fn cors_ignore_unmatched_preflights_answers_without_headers() {
    let up = Upstream::new("app").run().await;
    let rule = format!("{CORS}      unmatchedPreflights: IGNORE\n");
    let gw = start(&up, &rule, "").await;
    let r = client(&gw)
        .method("OPTIONS")
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send("/api")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), "");
    assert_eq!(up.hits(), 0);
}

// ---- mirroring ----

#[tokio::test]
async fn mirror_gets_a_shadow_copy_while_the_client_gets_the_primary() {
    let up = Upstream::new("primary").run().await;
    let shadow = Upstream::new("shadow").run().await;
    let gw = start(
        &up,
        "    mirror:\n      host: shadow.svc\n    mirrorPercentage: {value: 100}\n",
        &service_entry("shadow.svc", 80, "HTTP", &[(&shadow, "v1")]),
    )
    .await;
    let r = client(&gw)
        .method("POST")
        .header("x-user", "alice")
        .body("payload")
        .send("/orders?id=7")
        .await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "primary"));
    within(async {
        while shadow.hits() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let seen = shadow.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri, "/orders?id=7");
    assert_eq!(seen.headers["host"], "app.test-shadow");
    assert_eq!(seen.headers["x-user"], "alice");
    assert_eq!(&seen.body[..], b"payload");
    assert_eq!(up.last().headers["host"], "app.test");
}

#[tokio::test]
async fn slow_or_dead_mirror_never_delays_or_fails_the_primary() {
    let up = Upstream::new("primary").run().await;
    let slow = Upstream::new("slow")
        .delay(Duration::from_secs(5))
        .run()
        .await;
    // mirrors[]: a slow one for every request and one to a closed port.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let dead_se = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: dead\nspec:\n  hosts: [dead.svc]\n  resolution: STATIC\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {dead_port}}}}}\n---\n"
    );
    let gw = start(
        &up,
        "    mirrors:\n    - destination: {host: slow.svc}\n    - destination: {host: dead.svc}\n      percentage: {value: 100}\n",
        &format!(
            "{}{dead_se}",
            service_entry("slow.svc", 80, "HTTP", &[(&slow, "v1")])
        ),
    )
    .await;
    let t = Instant::now();
    for _ in 0..5 {
        let r = client(&gw).send("/").await;
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "primary"));
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the primary waited for the mirror: {:?}",
        t.elapsed()
    );
    let m = within(async {
        loop {
            let m = metrics(&gw).await;
            if m.contains("meshgate_mirror_requests_total{cluster=\"outbound|80||dead.svc\",result=\"failed\"} 5") {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(m.contains("dead.svc"), "{m}");
    assert_eq!(slow.hits(), 5);
}

#[tokio::test]
async fn mirror_percentage_zero_sends_nothing() {
    let up = Upstream::new("primary").run().await;
    let shadow = Upstream::new("shadow").run().await;
    let gw = start(
        &up,
        "    mirror:\n      host: shadow.svc\n    mirrorPercentage: {value: 0}\n",
        &service_entry("shadow.svc", 80, "HTTP", &[(&shadow, "v1")]),
    )
    .await;
    for _ in 0..10 {
        assert_eq!(client(&gw).send("/").await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(shadow.hits(), 0);
}

// ---- uriRegexRewrite ----

#[tokio::test]
async fn uri_regex_rewrite_substitutes_captures() {
    let up = Upstream::new("app").run().await;
    let gw = start(
        &up,
        "    rewrite:\n      uriRegexRewrite:\n        match: ^/service/([^/]+)(/.*)$\n        rewrite: \\2/instance/\\1\n",
        "",
    )
    .await;
    let r = client(&gw).send("/service/foo/v1/api?x=1").await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last().uri, "/v1/api/instance/foo?x=1");
    // A path the regex does not match is forwarded unchanged.
    client(&gw).send("/other").await;
    assert_eq!(up.last().uri, "/other");
}

// ---- WebSocket ----

/// A WebSocket echo server on 127.0.0.1 that prefixes each text message with `name: `.
async fn ws_echo(name: &'static str) -> u16 {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
                        let reply = format!("{name}: {t}");
                        if ws.send(reply.into()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

fn ws_config(port: u16, extra_rule: &str) -> String {
    format!(
        "{}apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: ws\nspec:\n  hosts: [ws.svc]\n  resolution: STATIC\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {port}}}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: ws\nspec:\n  hosts: [{HOST}]\n  gateways: [gw]\n  http:\n{extra_rule}  - route:\n    - destination: {{host: ws.svc}}\n---\n",
        http_gateway("gw", 8080, &["*"]),
    )
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Send `text`, return the reply.
async fn say(ws: &mut Ws, text: &'static str) -> String {
    use futures_util::{SinkExt, StreamExt};
    within(async {
        ws.send(text.into()).await.unwrap();
        ws.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .to_string()
    })
    .await
}

#[tokio::test]
async fn websocket_round_trip_survives_a_config_swap() {
    let one = ws_echo("one").await;
    let two = ws_echo("two").await;
    let gw = TestGateway::start(&ws_config(one, "")).await;
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(gw.port(8080)).await.unwrap();
        let (ws, resp) = tokio_tungstenite::client_async(format!("ws://{HOST}/chat"), tcp)
            .await
            .unwrap();
        assert_eq!(resp.status(), 101);
        ws
    };
    let mut ws = within(connect()).await;
    assert_eq!(say(&mut ws, "hello").await, "one: hello");
    // Swap the config to route to "two": the open tunnel keeps its upstream, new ones move.
    gw.reload_with(&ws_config(two, "")).await.unwrap();
    assert_eq!(say(&mut ws, "still").await, "one: still");
    let mut ws2 = within(connect()).await;
    assert_eq!(say(&mut ws2, "new").await, "two: new");
    assert_eq!(say(&mut ws, "bye").await, "one: bye");
    drop(ws);
    drop(ws2);
    let m = metrics(&gw).await;
    assert!(
        m.contains("meshgate_upgraded_connections_total{cluster=\"outbound|80||ws.svc\"} 2"),
        "{m}"
    );
}

#[tokio::test]
async fn upgrade_refused_by_the_upstream_is_a_plain_response() {
    // A backend that answers 200 to an upgrade request: the client gets that 200, not a tunnel.
    let up = Upstream::new("plain").run().await;
    let gw = start(&up, "", "").await;
    let r = client(&gw)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .send("/")
        .await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "plain"));
    assert_eq!(up.last().headers["upgrade"], "websocket");
}

// ---- delegate ----

fn delegate_config(a: u16, b: u16, c: u16, child_rules: &str) -> String {
    let se = |name: &str, port: u16| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\nspec:\n  hosts: [{name}.svc]\n  resolution: STATIC\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {port}}}}}\n---\n"
        )
    };
    format!(
        "{}{}{}{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: root\nspec:\n  hosts: [{HOST}]\n  gateways: [gw]\n  http:\n  - match:\n    - uri: {{prefix: /productpage}}\n    delegate:\n      name: pages\n      namespace: team\n  - route:\n    - destination: {{host: c.svc}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: pages\n  namespace: team\nspec:\n  http:\n{child_rules}---\n",
        http_gateway("gw", 8080, &["*"]),
        se("a", a),
        se("b", b),
        se("c", c),
    )
}

#[tokio::test]
async fn delegate_rules_apply_inside_the_root_match_in_order() {
    let a = Upstream::new("a").run().await;
    let b = Upstream::new("b").run().await;
    let c = Upstream::new("c").run().await;
    let child = "  - match:\n    - uri: {exact: /productpage/v1}\n    route:\n    - destination: {host: a.svc}\n  - match:\n    - uri: {prefix: /reviews}\n    route:\n    - destination: {host: a.svc}\n  - route:\n    - destination: {host: b.svc}\n";
    let gw = TestGateway::start(&delegate_config(a.port(), b.port(), c.port(), child)).await;
    for (path, want) in [
        ("/productpage/v1", "a"),
        ("/productpage/v2", "b"),
        ("/productpage", "b"),
        // The child's /reviews rule is outside the root's /productpage: never used.
        ("/reviews", "c"),
        ("/other", "c"),
    ] {
        let r = client(&gw).send(path).await;
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, want), "{path}");
    }
}

#[tokio::test]
async fn missing_and_nested_delegates_are_errors() {
    let a = Upstream::new("a").run().await;
    let yaml = delegate_config(
        a.port(),
        a.port(),
        a.port(),
        "  - route:\n    - destination: {host: a.svc}\n",
    )
    .replace(
        "name: pages\n      namespace: team",
        "name: nowhere\n      namespace: team",
    );
    let e = TestGateway::try_start_with(&yaml, |_| {})
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("http[0].delegate.name") && e.contains("unknown VirtualService team/nowhere"),
        "{e}"
    );
    // A delegate that delegates (to itself: a cycle).
    let nested = "  - match:\n    - uri: {prefix: /productpage}\n    delegate: {name: pages, namespace: team}\n";
    let yaml = delegate_config(a.port(), a.port(), a.port(), nested);
    let e = TestGateway::try_start_with(&yaml, |_| {})
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("VirtualService team/pages") && e.contains("one level only"),
        "{e}"
    );
}

// ---- tracing headers ----

#[tokio::test]
async fn trace_context_is_started_when_absent_and_propagated_when_present() {
    let up = Upstream::new("app").run().await;
    let gw = TestGateway::start_with(
        &format!(
            "{}{}{}",
            http_gateway("gw", 8080, &["*"]),
            service_entry("app.svc", 80, "HTTP", &[(&up, "v1")]),
            vs(""),
        ),
        |b| b.trace_sampling = 100.0,
    )
    .await;
    client(&gw).send("/").await;
    let seen = up.last();
    let tp = seen.headers["traceparent"].to_str().unwrap().to_owned();
    assert!(
        tp.starts_with("00-") && tp.ends_with("-01") && tp.len() == 55,
        "{tp}"
    );
    assert_eq!(tp[3..35], *seen.headers["x-b3-traceid"].to_str().unwrap());
    assert_eq!(seen.headers["x-b3-sampled"], "1");
    assert!(!seen.headers["x-request-id"].is_empty());
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    client(&gw)
        .header("traceparent", incoming)
        .header("tracestate", "congo=t61rcWkgMzE")
        .header("x-request-id", "abc")
        .send("/")
        .await;
    let seen = up.last();
    assert_eq!(seen.headers["traceparent"], incoming);
    assert_eq!(seen.headers["tracestate"], "congo=t61rcWkgMzE");
    assert_eq!(seen.headers["x-request-id"], "abc");
    assert!(seen.headers.get("x-b3-traceid").is_none());

    // A started context is injected after the route's header rules, replacing what they
    // set (Envoy's router injects it last), and never twice.
    let rules = "    headers:\n      request:\n        set:\n          x-b3-sampled: \"0\"\n          traceparent: bogus\n";
    let gw = TestGateway::start_with(
        &format!(
            "{}{}{}",
            http_gateway("gw", 8080, &["*"]),
            service_entry("app.svc", 80, "HTTP", &[(&up, "v1")]),
            vs(rules),
        ),
        |b| b.trace_sampling = 100.0,
    )
    .await;
    client(&gw).send("/").await;
    let seen = up.last();
    for name in ["traceparent", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled"] {
        assert_eq!(seen.headers.get_all(name).iter().count(), 1, "{name}");
    }
    assert_eq!(seen.headers["x-b3-sampled"], "1");
    let tp = seen.headers["traceparent"].to_str().unwrap();
    assert!(tp.starts_with("00-") && tp.len() == 55, "{tp}");
}

#[tokio::test]
async fn websocket_over_http2_extended_connect_reaches_an_http1_backend() {
    let one = ws_echo("one").await;
    let gw = TestGateway::start(&ws_config(one, "")).await;
    let tcp = tokio::net::TcpStream::connect(gw.port(8080)).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    // Wait for the server's SETTINGS (ENABLE_CONNECT_PROTOCOL) before an extended CONNECT.
    within(std::future::poll_fn(|cx| tx.poll_ready(cx)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut req = hyper::Request::builder()
        .method("CONNECT")
        .uri(format!("http://{HOST}/chat"))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut resp = within(tx.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let upgraded = within(hyper::upgrade::on(&mut resp)).await.unwrap();
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    use futures_util::{SinkExt, StreamExt};
    within(ws.send("over h2".into())).await.unwrap();
    let reply = within(ws.next()).await.unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "one: over h2");
}
