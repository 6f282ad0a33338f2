//! Upstream policy, end to end: Istio's retry semantics (the implicit default, explicit
//! `retries`, the `retryOn` vocabulary, endpoint avoidance), per-try and route timeouts, the
//! status / body / response flag of every upstream failure, the keep-alive race, streamed
//! bodies, and what the admin API reports (Prometheus metrics, readiness, config dump).
//!
//! Every test starts its own gateway and upstreams on ephemeral loopback ports.

// Tests (and the shared harness they include) fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use support::gateway::http_gateway;
use support::{Client, Reply, TestGateway, Upstream, UpstreamHandle};

// ---------------------------------------------------------------------------------------
// Config helpers
// ---------------------------------------------------------------------------------------

/// The host every single-service test routes, and the service it routes to.
const HOST: &str = "app.test";
const SVC: &str = "app.svc";

/// Envoy's body for a failed upstream connection.
const CONNECT_FAILURE_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
/// Envoy's body for a connection closed before the response head.
const RESET_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
const TIMEOUT_BODY: &str = "upstream request timeout";

/// A STATIC ServiceEntry `host` on port 80 whose endpoints are `(port, weight)` on 127.0.0.1,
/// each labelled `version: v1`.
fn service(host: &str, endpoints: &[(u16, u32)]) -> String {
    let eps: String = endpoints
        .iter()
        .map(|(port, weight)| {
            format!(
                "  - address: 127.0.0.1\n    ports:\n      http: {port}\n    weight: {weight}\n    labels:\n      version: v1\n"
            )
        })
        .collect();
    let name = host.replace('.', "-");
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\nspec:\n  hosts:\n  - {host}\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - number: 80\n    name: http\n    protocol: HTTP\n  endpoints:\n{eps}---\n"
    )
}

/// A DestinationRule for `host` with one subset `name` selecting `version: <version>`.
fn subset_rule(host: &str, name: &str, version: &str) -> String {
    let rname = host.replace('.', "-");
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {rname}\nspec:\n  host: {host}\n  subsets:\n  - name: {name}\n    labels:\n      version: {version}\n---\n"
    )
}

/// One `http[]` rule forwarding to `dest` (optionally a subset), with extra rule-level YAML
/// lines such as `timeout: 200ms` or `retries: {attempts: 0}`.
fn rule(dest: &str, subset: Option<&str>, policy: &[&str]) -> String {
    let mut s = format!("  - route:\n    - destination:\n        host: {dest}\n");
    if let Some(subset) = subset {
        s.push_str(&format!("        subset: {subset}\n"));
    }
    for line in policy {
        s.push_str(&format!("    {line}\n"));
    }
    s
}

/// A VirtualService `name` for `host` on Gateway `gw` with the given `http[]` rules.
fn virtual_service(name: &str, host: &str, rules: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: [{host}]\n  gateways: [gw]\n  http:\n{rules}---\n"
    )
}

/// A gateway serving `HOST` -> `SVC` (endpoints `(port, weight)`) with `policy` on the route.
async fn start_app(endpoints: &[(u16, u32)], policy: &[&str]) -> TestGateway {
    let yaml = format!(
        "{}{}{}",
        http_gateway("gw", 8080, &["*"]),
        service(SVC, endpoints),
        virtual_service("app", HOST, &rule(SVC, None, policy)),
    );
    TestGateway::start(&yaml).await
}

/// `start_app` with one upstream of weight 1.
async fn start_single(up: &UpstreamHandle, policy: &[&str]) -> TestGateway {
    start_app(&[(up.port(), 1)], policy).await
}

/// A client for `HOST` on the gateway's port 8080.
fn app(gw: &TestGateway) -> Client {
    Client::new(gw.port(8080), HOST)
}

/// A loopback port nothing listens on, so connecting to it is refused.
///
/// The port stays bound (without `SO_REUSEADDR`, never listening) for as long as this value
/// lives: a port merely bound and released could be handed to another test's listener
/// running in parallel, turning "connection refused" into a stray request to that test.
struct ClosedPort(TcpSocket);

impl ClosedPort {
    fn new() -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        Self(socket)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }
}

/// Assert status and body of `r`.
#[track_caller]
fn assert_reply(r: &Reply, status: u16, body: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.body, body, "{r:?}");
}

// ---------------------------------------------------------------------------------------
// Admin and metrics helpers
// ---------------------------------------------------------------------------------------

/// GET `path` on the admin API.
async fn admin_get(gw: &TestGateway, path: &str) -> Reply {
    Client::new(gw.admin(), "admin").send(path).await
}

/// One Prometheus sample.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parse the Prometheus text exposition format (comments skipped, label values unescaped).
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = line[..name_end].to_owned();
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            let mut key = String::new();
            let mut end = inner.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '}' => {
                        end = i + 1;
                        break;
                    }
                    ',' | ' ' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                        let mut value = String::new();
                        while let Some((_, c)) = chars.next() {
                            match c {
                                '"' => break,
                                '\\' => match chars.next().map(|(_, c)| c) {
                                    Some('n') => value.push('\n'),
                                    Some(other) => value.push(other),
                                    None => {}
                                },
                                other => value.push(other),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    other => key.push(other),
                }
            }
            rest = &inner[end..];
        }
        let value = rest.split_whitespace().next().unwrap_or_default();
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad sample value in {line:?}")),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// The samples named `name` whose labels include all of `labels`.
fn matching<'a>(
    samples: &'a [Sample],
    name: &'a str,
    labels: &'a [(&str, &str)],
) -> impl Iterator<Item = &'a Sample> + 'a {
    samples.iter().filter(move |s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

/// The sum of the samples named `name` whose labels include all of `labels`.
fn total(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    matching(samples, name, labels).map(|s| s.value).sum()
}

/// The Prometheus samples the gateway reports now.
async fn scrape(gw: &TestGateway) -> Vec<Sample> {
    let r = admin_get(gw, "/metrics").await;
    assert_eq!(r.status, 200, "{r:?}");
    parse_metrics(&r.body)
}

// ---------------------------------------------------------------------------------------
// Raw TCP upstreams (wire-level behaviour the hyper test upstream cannot produce)
// ---------------------------------------------------------------------------------------

/// What a raw upstream does on each connection.
#[derive(Debug, Clone, Copy)]
enum RawMode {
    /// Answer every request (keep-alive).
    KeepAlive,
    /// Answer the first request, then read the next one and close without answering: the
    /// gateway's pooled connection turns out to be dead only once a request was written on
    /// it, exactly as when a backend closes an idle keep-alive connection in the meantime.
    DropSecondRequest,
    /// Answer the first request (no `Connection: close`), then close the socket shortly
    /// after, whether or not another request has arrived meanwhile.
    CloseAfterFirst,
}

/// What a raw upstream saw.
#[derive(Debug, Clone, Default)]
struct RawStats {
    connections: Arc<AtomicUsize>,
    /// `(request line, body)` of each answered request.
    answered: Arc<Mutex<Vec<(String, Bytes)>>>,
    /// Request lines of the requests read and then left unanswered.
    dropped: Arc<Mutex<Vec<String>>>,
}

impl RawStats {
    fn answered(&self) -> Vec<(String, Bytes)> {
        self.answered.lock().unwrap().clone()
    }

    fn dropped(&self) -> Vec<String> {
        self.dropped.lock().unwrap().clone()
    }
}

/// Start a raw HTTP/1.1 upstream answering with the bytes of `response`; returns its port.
async fn raw_upstream(mode: RawMode, response: Bytes) -> (u16, RawStats) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stats = RawStats::default();
    let st = stats.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            st.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve_raw(stream, mode, response.clone(), st.clone()));
        }
    });
    (port, stats)
}

async fn serve_raw(mut stream: TcpStream, mode: RawMode, response: Bytes, stats: RawStats) {
    let mut buf = Vec::new();
    let mut served = 0usize;
    while let Some((line, body)) = read_request(&mut stream, &mut buf).await {
        if served == 1 && matches!(mode, RawMode::DropSecondRequest) {
            stats.dropped.lock().unwrap().push(line);
            return;
        }
        stats.answered.lock().unwrap().push((line, body));
        if stream.write_all(&response).await.is_err() {
            return;
        }
        served += 1;
        if matches!(mode, RawMode::CloseAfterFirst) {
            // Upstream behaviour, not test synchronisation: the backend's idle close.
            tokio::time::sleep(Duration::from_millis(30)).await;
            return;
        }
    }
}

/// Read one request (head and `Content-Length` body) from `s`, keeping surplus bytes in
/// `buf`; `None` at end of stream.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Bytes)> {
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = Bytes::copy_from_slice(&buf[head_end..head_end + len]);
    buf.drain(..head_end + len);
    let line = head.lines().next().unwrap_or_default().to_owned();
    Some((line, body))
}

/// The tiny keep-alive response of the keep-alive race tests.
fn ok_response() -> Bytes {
    Bytes::from_static(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
}

/// `len` bytes of printable ASCII that are not a repetition of a short period.
fn pattern(len: usize) -> String {
    (0..len)
        .map(|i| char::from(b'a' + ((i * 7 + i / 1000) % 26) as u8))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Istio's default retry policy (no `retries` on the route)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn default_policy_retries_get_twice_on_503() {
    let a = Upstream::new("a").fail_first(2, 503).run().await;
    let gw = start_single(&a, &[]).await;
    let r = app(&gw).send("/").await;
    assert_reply(&r, 200, "a");
    assert_eq!(a.hits(), 3, "1 try + 2 retries");
}

#[tokio::test]
async fn default_policy_does_not_retry_a_third_time() {
    let a = Upstream::new("a").fail_first(3, 503).run().await;
    let gw = start_single(&a, &[]).await;
    let r = app(&gw).send("/").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        r.header("x-upstream"),
        "a",
        "the upstream's own 503 is passed on"
    );
    assert_eq!(a.hits(), 3, "1 try + 2 retries, no more");
}

#[tokio::test]
async fn default_policy_does_not_retry_5xx_other_than_503() {
    let a = Upstream::new("a").fail_first(1, 500).run().await;
    let gw = start_single(&a, &[]).await;
    let r = app(&gw).send("/").await;
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(a.hits(), 1);
}

#[tokio::test]
async fn default_policy_never_resends_post_or_patch_after_503() {
    let a = Upstream::new("a").fail_first(2, 503).run().await;
    let gw = start_single(&a, &[]).await;
    let r = app(&gw).method("POST").body("order").send("/orders").await;
    assert_eq!(r.status, 503, "POST is not re-sent by default: {r:?}");
    assert_eq!(a.hits(), 1);
    let r = app(&gw)
        .method("PATCH")
        .body("order")
        .send("/orders/1")
        .await;
    assert_eq!(r.status, 503, "PATCH is not re-sent by default: {r:?}");
    assert_eq!(a.hits(), 2);
    let r = app(&gw).method("POST").body("order").send("/orders").await;
    assert_reply(&r, 200, "a");
    assert_eq!(a.hits(), 3);
}

// ---------------------------------------------------------------------------------------
// Explicit `retries`
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn explicit_retries_resend_post_with_its_body() {
    let a = Upstream::new("a").fail_first(2, 503).run().await;
    let gw = start_single(&a, &["retries: {attempts: 2}"]).await;
    let r = app(&gw)
        .method("POST")
        .body("order-42")
        .send("/orders")
        .await;
    assert_reply(&r, 200, "a");
    assert_eq!(a.hits(), 3);
    for seen in a.seen() {
        assert_eq!(seen.method, "POST");
        assert_eq!(&seen.body[..], b"order-42", "every try carries the body");
    }
}

#[tokio::test]
async fn tutorial_attempts_25_per_try_timeout_1s() {
    let a = Upstream::new("a").fail_first(4, 503).run().await;
    let gw = start_single(&a, &["retries: {attempts: 25, perTryTimeout: 1s}"]).await;
    let r = app(&gw).send("/").await;
    assert_reply(&r, 200, "a");
    assert_eq!(a.hits(), 5, "more than the default 2 retries");
}

#[tokio::test]
async fn explicit_attempts_count_retries_not_tries() {
    let a = Upstream::new("a").fail_first(2, 503).run().await;
    let gw = start_single(&a, &["retries: {attempts: 1}"]).await;
    let r = app(&gw).send("/").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(a.hits(), 2, "attempts: 1 is one retry: two tries in all");
}

#[tokio::test]
async fn attempts_zero_disables_retries() {
    let a = Upstream::new("a").fail_first(1, 503).run().await;
    let gw = start_single(&a, &["retries: {attempts: 0}"]).await;
    let r = app(&gw).send("/").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(a.hits(), 1);
    let r = app(&gw).send("/").await;
    assert_reply(&r, 200, "a");
}

#[tokio::test]
async fn retry_on_5xx_covers_500() {
    let a = Upstream::new("a").fail_first(1, 500).run().await;
    let gw = start_single(&a, &["retries: {attempts: 1, retryOn: 5xx}"]).await;
    let r = app(&gw).send("/").await;
    assert_reply(&r, 200, "a");
    assert_eq!(a.hits(), 2);
}

#[tokio::test]
async fn retry_on_gateway_error_covers_502_to_504_only() {
    let policy = ["retries: {attempts: 1, retryOn: gateway-error}"];
    for code in [502, 503, 504] {
        let a = Upstream::new("a").fail_first(1, code).run().await;
        let gw = start_single(&a, &policy).await;
        let r = app(&gw).send("/").await;
        assert_reply(&r, 200, "a");
        assert_eq!(a.hits(), 2, "{code} is a gateway error");
    }
    let a = Upstream::new("a").fail_first(1, 500).run().await;
    let gw = start_single(&a, &policy).await;
    let r = app(&gw).send("/").await;
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(a.hits(), 1, "500 is not a gateway error");
}

#[tokio::test]
async fn retry_on_retriable_4xx_covers_409_only() {
    let policy = ["retries: {attempts: 1, retryOn: retriable-4xx}"];
    let a = Upstream::new("a").fail_first(1, 409).run().await;
    let gw = start_single(&a, &policy).await;
    let r = app(&gw).send("/").await;
    assert_reply(&r, 200, "a");
    assert_eq!(a.hits(), 2);

    let a = Upstream::new("a").fail_first(1, 404).run().await;
    let gw = start_single(&a, &policy).await;
    let r = app(&gw).send("/").await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(a.hits(), 1);

    // retryOn replaces the default conditions: 503 is no longer retried.
    let a = Upstream::new("a").fail_first(1, 503).run().await;
    let gw = start_single(&a, &policy).await;
    let r = app(&gw).send("/").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(a.hits(), 1);
}

#[tokio::test]
async fn retry_on_numeric_status_code() {
    let policy = ["retries: {attempts: 1, retryOn: \"418\"}"];
    let a = Upstream::new("a").fail_first(1, 418).run().await;
    let gw = start_single(&a, &policy).await;
    let r = app(&gw).send("/").await;
    assert_reply(&r, 200, "a");
    assert_eq!(a.hits(), 2);

    let a = Upstream::new("a").fail_first(1, 503).run().await;
    let gw = start_single(&a, &policy).await;
    let r = app(&gw).send("/").await;
    assert_eq!(r.status, 503, "only 418 is listed: {r:?}");
    assert_eq!(a.hits(), 1);
}

#[tokio::test]
async fn reset_before_response_retried_when_retry_on_reset() {
    let policy = ["retries: {attempts: 1, retryOn: reset}"];
    let a = Upstream::new("a").reset_first(1).run().await;
    let gw = start_single(&a, &policy).await;
    let r = app(&gw).send("/").await;
    assert_reply(&r, 200, "a");
    assert_eq!(a.hits(), 2);

    let b = Upstream::new("b").reset_first(1).run().await;
    let gw = start_single(&b, &policy).await;
    let r = app(&gw).method("POST").body("payload").send("/").await;
    assert_reply(&r, 200, "b");
    assert_eq!(b.hits(), 2, "explicit retries re-send a POST after a reset");
    assert_eq!(&b.last().body[..], b"payload");
}

// ---------------------------------------------------------------------------------------
// Connect failures and endpoint choice on retry
// ---------------------------------------------------------------------------------------

/// A closed endpoint with weight 99 next to a good one with weight 1: a retry that did not
/// avoid the endpoint that just failed would almost always go back to the closed one.
async fn start_closed_and_good(
    closed: &ClosedPort,
    good: &UpstreamHandle,
    policy: &[&str],
) -> TestGateway {
    start_app(&[(closed.port(), 99), (good.port(), 1)], policy).await
}

#[tokio::test]
async fn connect_failure_retried_on_other_endpoint_for_get() {
    let good = Upstream::new("good").run().await;
    let closed = ClosedPort::new();
    let gw = start_closed_and_good(&closed, &good, &[]).await;
    for i in 0..5 {
        let r = app(&gw).send(&format!("/get/{i}")).await;
        assert_reply(&r, 200, "good");
    }
    assert_eq!(good.hits(), 5);
    let m = scrape(&gw).await;
    let cluster = [("cluster", "outbound|80||app.svc")];
    assert!(
        total(&m, "meshgate_upstream_connect_errors_total", &cluster) >= 1.0,
        "the closed endpoint was tried"
    );
    assert!(total(&m, "meshgate_upstream_retries_total", &cluster) >= 1.0);
}

#[tokio::test]
async fn connect_failure_retried_on_other_endpoint_for_post() {
    let good = Upstream::new("good").run().await;
    let closed = ClosedPort::new();
    let gw = start_closed_and_good(&closed, &good, &[]).await;
    for i in 0..5 {
        let body = format!("post-{i}");
        let r = app(&gw).method("POST").body(body.clone()).send("/").await;
        assert_reply(&r, 200, "good");
        assert_eq!(good.last().method, "POST");
        assert_eq!(good.last().body, body.as_bytes(), "body replayed intact");
    }
    assert_eq!(good.hits(), 5);
    let m = scrape(&gw).await;
    let cluster = [("cluster", "outbound|80||app.svc")];
    assert!(total(&m, "meshgate_upstream_connect_errors_total", &cluster) >= 1.0);
}

#[tokio::test]
async fn retry_avoids_the_endpoint_that_just_failed() {
    let bad = Upstream::new("bad").fail_first(1000, 503).run().await;
    let good = Upstream::new("good").run().await;
    let gw = start_app(
        &[(bad.port(), 99), (good.port(), 1)],
        &["retries: {attempts: 1}"],
    )
    .await;
    for _ in 0..5 {
        let r = app(&gw).send("/").await;
        assert_reply(&r, 200, "good");
    }
    assert_eq!(good.hits(), 5);
    assert!(
        bad.hits() >= 1,
        "the heavy endpoint was tried first at least once"
    );
}

// ---------------------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn per_try_timeout_then_success() {
    let a = Upstream::new("a")
        .delay_first(1, Duration::from_secs(2))
        .run()
        .await;
    let gw = start_single(
        &a,
        &["retries: {attempts: 2, perTryTimeout: 200ms, retryOn: \"gateway-error,connect-failure,refused-stream\"}"],
    )
    .await;
    let t = Instant::now();
    let r = app(&gw).send("/").await;
    assert_reply(&r, 200, "a");
    assert_eq!(a.hits(), 2);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn per_try_timeout_on_last_try_is_504() {
    let a = Upstream::new("a").delay(Duration::from_secs(2)).run().await;
    let gw = start_single(
        &a,
        &["retries: {attempts: 1, perTryTimeout: 100ms, retryOn: gateway-error}"],
    )
    .await;
    let t = Instant::now();
    let r = app(&gw).send("/").await;
    assert_reply(&r, 504, TIMEOUT_BODY);
    assert_eq!(a.hits(), 2);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn route_timeout_is_504_upstream_request_timeout() {
    let a = Upstream::new("a").delay(Duration::from_secs(2)).run().await;
    let gw = start_single(&a, &["timeout: 200ms"]).await;
    let t = Instant::now();
    let r = app(&gw).send("/").await;
    assert_reply(&r, 504, TIMEOUT_BODY);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(190), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[tokio::test]
async fn route_timeout_bounds_all_retries() {
    let a = Upstream::new("a").delay(Duration::from_secs(2)).run().await;
    let gw = start_single(
        &a,
        &[
            "timeout: 300ms",
            "retries: {attempts: 10, perTryTimeout: 100ms, retryOn: gateway-error}",
        ],
    )
    .await;
    let t = Instant::now();
    let r = app(&gw).send("/").await;
    assert_reply(&r, 504, TIMEOUT_BODY);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(
        took < Duration::from_millis(1000),
        "the route timeout stops retrying: {took:?}"
    );
    assert!(
        (2..=4).contains(&a.hits()),
        "only the tries that fit in 300 ms: {}",
        a.hits()
    );
}

// ---------------------------------------------------------------------------------------
// Failure statuses and bodies
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn no_route_is_404_with_empty_body() {
    let a = Upstream::new("a").run().await;
    let yaml = format!(
        "{}{}{}",
        http_gateway("gw", 8080, &["*"]),
        service(SVC, &[(a.port(), 1)]),
        virtual_service(
            "app",
            HOST,
            "  - match:\n    - uri:\n        prefix: /api\n    route:\n    - destination:\n        host: app.svc\n"
        ),
    );
    let gw = TestGateway::start(&yaml).await;
    assert_reply(&app(&gw).send("/api/x").await, 200, "a");
    assert_reply(&app(&gw).send("/other").await, 404, "");
    let r = Client::new(gw.port(8080), "unknown.test")
        .send("/api/x")
        .await;
    assert_reply(&r, 404, "");
    assert_eq!(a.hits(), 1);
}

#[tokio::test]
async fn subset_without_endpoints_is_503_no_healthy_upstream() {
    let a = Upstream::new("a").run().await;
    let yaml = format!(
        "{}{}{}{}",
        http_gateway("gw", 8080, &["*"]),
        service(SVC, &[(a.port(), 1)]),
        subset_rule(SVC, "v9", "v9"),
        virtual_service("app", HOST, &rule(SVC, Some("v9"), &[])),
    );
    let gw = TestGateway::start(&yaml).await;
    let r = app(&gw).send("/").await;
    assert_reply(&r, 503, "no healthy upstream");
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn connect_failure_is_503_connection_failure() {
    let cluster = [("cluster", "outbound|80||app.svc")];
    let closed = ClosedPort::new();
    let gw = start_app(&[(closed.port(), 1)], &["retries: {attempts: 0}"]).await;
    assert_reply(&app(&gw).send("/").await, 503, CONNECT_FAILURE_BODY);
    let m = scrape(&gw).await;
    assert_eq!(
        total(&m, "meshgate_upstream_connect_errors_total", &cluster),
        1.0
    );
    assert_eq!(total(&m, "meshgate_upstream_retries_total", &cluster), 0.0);
    // With the default policy the two retries fail the same way.
    let gw = start_app(&[(closed.port(), 1)], &[]).await;
    assert_reply(&app(&gw).send("/").await, 503, CONNECT_FAILURE_BODY);
    let m = scrape(&gw).await;
    assert_eq!(
        total(&m, "meshgate_upstream_connect_errors_total", &cluster),
        3.0
    );
    assert_eq!(total(&m, "meshgate_upstream_retries_total", &cluster), 2.0);
}

#[tokio::test]
async fn reset_before_response_is_503_connection_termination() {
    // `reset` is not in Istio's default retryOn.
    let a = Upstream::new("a").reset_first(1).run().await;
    let gw = start_single(&a, &[]).await;
    let r = app(&gw).send("/").await;
    assert_reply(&r, 503, RESET_BODY);
    assert_eq!(a.hits(), 1);
    let r = app(&gw).send("/").await;
    assert_reply(&r, 200, "a");
}

// ---------------------------------------------------------------------------------------
// The keep-alive race
// ---------------------------------------------------------------------------------------

/// Send `first`, then `more` more requests built by `req`; every one must succeed, and at
/// least one must have hit a dead pooled connection (otherwise the race was not exercised).
async fn race(gw: &TestGateway, stats: &RawStats, req: impl Fn() -> Client, more: usize) {
    for i in 0..=more {
        let r = req().send(&format!("/r{i}")).await;
        assert_reply(&r, 200, "ok");
    }
    let dropped = stats.dropped();
    assert!(
        !dropped.is_empty(),
        "no request went out on a reused connection; answered: {:?}",
        stats.answered()
    );
    assert_eq!(
        stats.answered().len(),
        more + 1,
        "each request answered once"
    );
    let m = scrape(gw).await;
    let cluster = [("cluster", "outbound|80||app.svc")];
    assert_eq!(
        total(&m, "meshgate_upstream_retries_total", &cluster),
        0.0,
        "re-sending on a fresh connection is not an Istio retry"
    );
    let ok = [("destination_service", SVC), ("response_code", "200")];
    assert_eq!(
        total(&m, "istio_requests_total", &ok),
        (more + 1) as f64,
        "{:?}",
        matching(&m, "istio_requests_total", &[]).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn keepalive_race_get_is_resent_on_fresh_connection() {
    let (port, stats) = raw_upstream(RawMode::DropSecondRequest, ok_response()).await;
    // attempts 0: no Istio retry can hide a missing keep-alive race recovery.
    let gw = start_app(&[(port, 1)], &["retries: {attempts: 0}"]).await;
    race(&gw, &stats, || app(&gw), 3).await;
    assert!(stats.dropped().iter().all(|l| l.starts_with("GET ")));
}

#[tokio::test]
async fn keepalive_race_post_with_buffered_body_is_resent_on_fresh_connection() {
    let (port, stats) = raw_upstream(RawMode::DropSecondRequest, ok_response()).await;
    // Default policy: a POST is never retried after a reset, so only the keep-alive race
    // recovery can make these succeed.
    let gw = start_app(&[(port, 1)], &[]).await;
    race(&gw, &stats, || app(&gw).method("POST").body("hello"), 3).await;
    for (line, body) in stats.answered() {
        assert!(line.starts_with("POST "), "{line}");
        assert_eq!(
            &body[..],
            b"hello",
            "the buffered body is sent again intact"
        );
    }
}

#[tokio::test]
async fn upstream_closing_shortly_after_each_response_is_invisible_to_clients() {
    // GET with retries off: only the keep-alive race recovery can hide the closes.
    let (port, stats) = raw_upstream(RawMode::CloseAfterFirst, ok_response()).await;
    let gw = start_app(&[(port, 1)], &["retries: {attempts: 0}"]).await;
    for i in 0..4 {
        assert_reply(&app(&gw).send(&format!("/{i}")).await, 200, "ok");
    }
    assert_eq!(stats.answered().len(), 4);

    // POST with the default policy, whose small body is buffered.
    let (port, stats) = raw_upstream(RawMode::CloseAfterFirst, ok_response()).await;
    let gw = start_app(&[(port, 1)], &[]).await;
    for i in 0..4 {
        let r = app(&gw)
            .method("POST")
            .body("x")
            .send(&format!("/{i}"))
            .await;
        assert_reply(&r, 200, "ok");
    }
    let bodies: Vec<_> = stats.answered().into_iter().map(|(_, b)| b).collect();
    assert_eq!(bodies, vec![Bytes::from_static(b"x"); 4]);
}

// ---------------------------------------------------------------------------------------
// Streamed bodies
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn one_mib_request_body_reaches_upstream_intact() {
    let a = Upstream::new("a").run().await;
    let gw = start_single(&a, &[]).await;
    let body = pattern(1 << 20);
    let r = app(&gw)
        .method("POST")
        .body(body.clone())
        .send("/upload")
        .await;
    assert_reply(&r, 200, "a");
    let seen = a.last();
    assert_eq!(seen.body.len(), 1 << 20);
    assert!(seen.body == body.as_bytes(), "request body corrupted");
    let m = scrape(&gw).await;
    let ok = [("destination_service", SVC), ("response_code", "200")];
    assert_eq!(total(&m, "istio_request_bytes_sum", &ok), (1 << 20) as f64);
}

#[tokio::test]
async fn one_mib_response_body_reaches_client_intact() {
    let body = pattern(1 << 20);
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (port, stats) = raw_upstream(RawMode::KeepAlive, Bytes::from(response)).await;
    let gw = start_app(&[(port, 1)], &[]).await;
    let r = app(&gw).send("/download").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1 << 20);
    assert!(r.body == body, "response body corrupted");
    assert_eq!(stats.answered().len(), 1);
    let m = scrape(&gw).await;
    let ok = [("destination_service", SVC), ("response_code", "200")];
    assert_eq!(total(&m, "istio_response_bytes_sum", &ok), (1 << 20) as f64);
}

// ---------------------------------------------------------------------------------------
// Metrics and admin
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_report_istio_labels_and_response_flags() {
    let ok = Upstream::new("a").run().await;
    let flaky = Upstream::new("flaky").fail_first(1000, 503).run().await;
    let slow = Upstream::new("slow")
        .delay(Duration::from_secs(2))
        .run()
        .await;
    let reset = Upstream::new("reset").reset_first(1).run().await;
    let dead = ClosedPort::new();
    let yaml = [
        http_gateway("gw", 8080, &["*"]),
        service("ok.svc", &[(ok.port(), 1)]),
        service("flaky.svc", &[(flaky.port(), 1)]),
        service("slow.svc", &[(slow.port(), 1)]),
        service("dead.svc", &[(dead.port(), 1)]),
        service("reset.svc", &[(reset.port(), 1)]),
        subset_rule("ok.svc", "v9", "v9"),
        virtual_service("ok", "ok.test", &rule("ok.svc", None, &[])),
        virtual_service("uh", "uh.test", &rule("ok.svc", Some("v9"), &[])),
        virtual_service("urx", "urx.test", &rule("flaky.svc", None, &[])),
        virtual_service(
            "ut",
            "ut.test",
            &rule("slow.svc", None, &["timeout: 100ms"]),
        ),
        virtual_service(
            "uf",
            "uf.test",
            &rule("dead.svc", None, &["retries: {attempts: 0}"]),
        ),
        virtual_service("ufurx", "ufurx.test", &rule("dead.svc", None, &[])),
        virtual_service("uc", "uc.test", &rule("reset.svc", None, &[])),
    ]
    .concat();
    let gw = TestGateway::start(&yaml).await;
    let at = |host: &str| Client::new(gw.port(8080), host);

    assert_reply(&at("ok.test").send("/").await, 200, "a");
    assert_reply(
        &at("ok.test").method("POST").body("hello").send("/").await,
        200,
        "a",
    );
    assert_eq!(at("unknown.test").send("/").await.status, 404);
    assert_eq!(at("uh.test").send("/").await.status, 503);
    assert_eq!(at("urx.test").send("/").await.status, 503);
    assert_eq!(flaky.hits(), 3);
    assert_eq!(at("ut.test").send("/").await.status, 504);
    assert_eq!(at("uf.test").send("/").await.status, 503);
    assert_eq!(at("ufurx.test").send("/").await.status, 503);
    assert_eq!(at("uc.test").send("/").await.status, 503);

    let m = scrape(&gw).await;
    let requests = |labels: &[(&str, &str)]| total(&m, "istio_requests_total", labels);
    let ok_labels = [
        ("response_code", "200"),
        ("destination_service", "ok.svc"),
        ("destination_subset", ""),
        ("request_protocol", "http"),
        ("response_flags", "-"),
    ];
    assert_eq!(requests(&ok_labels), 2.0);
    let expect = [
        ("404", "unknown", "NR"),
        ("503", "ok.svc", "UH"),
        ("503", "flaky.svc", "URX"),
        ("504", "slow.svc", "UT"),
        ("503", "dead.svc", "UF"),
        ("503", "dead.svc", "UF,URX"),
        ("503", "reset.svc", "UC"),
    ];
    for (code, service, flags) in expect {
        let labels = [
            ("response_code", code),
            ("destination_service", service),
            ("response_flags", flags),
        ];
        assert_eq!(
            requests(&labels),
            1.0,
            "{code} {service} {flags}: {:#?}",
            matching(&m, "istio_requests_total", &[]).collect::<Vec<_>>()
        );
    }
    assert_eq!(
        requests(&[("response_flags", "UH"), ("destination_subset", "v9")]),
        1.0
    );

    // Histograms: duration buckets, request and response sizes.
    let ok_hist = &ok_labels[..2];
    let inf_bucket = matching(&m, "istio_request_duration_milliseconds_bucket", ok_hist)
        .find(|s| s.labels.get("le").map(String::as_str) == Some("+Inf"));
    assert_eq!(inf_bucket.map(|s| s.value), Some(2.0));
    assert_eq!(
        total(&m, "istio_request_duration_milliseconds_count", ok_hist),
        2.0
    );
    assert_eq!(total(&m, "istio_request_bytes_count", ok_hist), 2.0);
    assert_eq!(
        total(&m, "istio_request_bytes_sum", ok_hist),
        5.0,
        "the POST body"
    );
    assert!(matching(&m, "istio_request_bytes_bucket", ok_hist)
        .next()
        .is_some());
    assert_eq!(
        total(&m, "istio_response_bytes_sum", ok_hist),
        2.0,
        "two bodies \"a\""
    );
    assert!(matching(&m, "istio_response_bytes_bucket", ok_hist)
        .next()
        .is_some());

    // meshgate internals.
    let retries = |c: &str| total(&m, "meshgate_upstream_retries_total", &[("cluster", c)]);
    assert_eq!(retries("outbound|80||flaky.svc"), 2.0);
    assert_eq!(retries("outbound|80||dead.svc"), 2.0);
    assert_eq!(
        total(
            &m,
            "meshgate_upstream_connect_errors_total",
            &[("cluster", "outbound|80||dead.svc")]
        ),
        4.0,
        "1 try on uf.test + 3 on ufurx.test"
    );
    assert_eq!(total(&m, "meshgate_config_generation", &[]), 1.0);
    assert!(
        m.iter()
            .any(|s| s.name == "meshgate_downstream_connections_active"),
        "active connections gauge"
    );
    let raw = admin_get(&gw, "/metrics").await;
    assert!(
        raw.body.contains("\nmeshgate_config_generation 1\n"),
        "{}",
        raw.body
    );
    assert!(raw.header("content-type").starts_with("text/plain"));
}

#[tokio::test]
async fn admin_reports_readiness_and_config_dump() {
    let a = Upstream::new("a").run().await;
    let rules = "  - name: first\n    match:\n    - uri:\n        prefix: /api\n    route:\n    - destination:\n        host: app.svc\n    retries: {attempts: 25, perTryTimeout: 1s}\n  - name: second\n    route:\n    - destination:\n        host: app.svc\n    timeout: 2s\n";
    let yaml = format!(
        "{}{}{}",
        http_gateway("gw", 8080, &["*"]),
        service(SVC, &[(a.port(), 1)]),
        virtual_service("app", HOST, rules),
    );
    let gw = TestGateway::start(&yaml).await;

    assert_reply(&admin_get(&gw, "/healthz/ready").await, 200, "ready\n");
    assert_eq!(admin_get(&gw, "/healthz").await.status, 200);

    let r = admin_get(&gw, "/config_dump").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("content-type").starts_with("application/json"));
    let dump: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(dump["generation"], 1, "{dump:#}");
    assert_eq!(dump["lastErrors"], serde_json::json!([]), "{dump:#}");
    let file = gw.config_file().display().to_string();
    let files = dump["files"].as_array().unwrap();
    assert!(
        files.iter().any(|f| f.as_str() == Some(file.as_str())),
        "{files:?} lists {file}"
    );

    let listeners = dump["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 1, "{dump:#}");
    let routes = listeners[0]["hosts"][HOST]
        .as_array()
        .unwrap_or_else(|| panic!("{dump:#}"));
    let names: Vec<_> = routes.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["first", "second"], "routes in order");
    assert_eq!(routes[0]["retries"]["attempts"], 25);
    assert_eq!(routes[0]["retries"]["perTryTimeout"], "1000ms");
    assert_eq!(routes[0]["retries"]["explicit"], true);
    assert_eq!(
        routes[1]["retries"]["attempts"], 2,
        "Istio's default policy"
    );
    assert_eq!(routes[1]["retries"]["explicit"], false);
    assert_eq!(routes[1]["timeout"], "2000ms");

    let clusters = dump["clusters"].as_array().unwrap();
    let cluster = clusters
        .iter()
        .find(|c| c["name"] == "outbound|80||app.svc")
        .unwrap_or_else(|| panic!("{dump:#}"));
    assert_eq!(
        cluster["endpoints"][0]["address"],
        format!("127.0.0.1:{}", a.port())
    );
}

// ---- loadBalancer.simple ----

/// A DestinationRule for `SVC` with `loadBalancer: {simple: <alg>}`.
fn lb_rule(alg: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: lb\nspec:\n  host: {SVC}\n  trafficPolicy:\n    loadBalancer:\n      simple: {alg}\n---\n"
    )
}

async fn start_lb(alg: &str, a: &UpstreamHandle, b: &UpstreamHandle) -> TestGateway {
    let yaml = format!(
        "{}{}{}{}",
        http_gateway("gw", 8080, &["*"]),
        service(SVC, &[(a.port(), 1), (b.port(), 1)]),
        lb_rule(alg),
        virtual_service("app", HOST, &rule(SVC, None, &[])),
    );
    TestGateway::start(&yaml).await
}

#[tokio::test]
async fn round_robin_alternates_and_random_spreads() {
    let (a, b) = (
        Upstream::new("a").run().await,
        Upstream::new("b").run().await,
    );
    let gw = start_lb("ROUND_ROBIN", &a, &b).await;
    let bodies: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..10 {
            v.push(app(&gw).send("/").await.body);
        }
        v
    };
    for pair in bodies.windows(2) {
        assert_ne!(pair[0], pair[1], "round robin alternates: {bodies:?}");
    }
    let (a, b) = (
        Upstream::new("a").run().await,
        Upstream::new("b").run().await,
    );
    let gw = start_lb("RANDOM", &a, &b).await;
    for _ in 0..400 {
        assert_eq!(app(&gw).send("/").await.status, 200);
    }
    let share = a.hits() as f64 / 400.0;
    assert!((share - 0.5).abs() < 0.1, "random share {share}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_avoids_the_busy_endpoint() {
    // One endpoint holds three slow requests in flight; three are idle. Power of two choices
    // sends a new request to the busy one only when both draws hit it (1/16); a random or
    // round-robin pick would send a quarter of the requests there.
    let slow = Upstream::new("slow")
        .delay_first(3, Duration::from_secs(2))
        .run()
        .await;
    let idle = [
        Upstream::new("i1").run().await,
        Upstream::new("i2").run().await,
        Upstream::new("i3").run().await,
    ];
    let yaml = format!(
        "{}{}{}{}",
        http_gateway("gw", 8080, &["*"]),
        service(
            SVC,
            &[
                (slow.port(), 1),
                (idle[0].port(), 1),
                (idle[1].port(), 1),
                (idle[2].port(), 1)
            ]
        ),
        lb_rule("LEAST_REQUEST"),
        virtual_service("app", HOST, &rule(SVC, None, &["retries: {attempts: 0}"])),
    );
    let gw = TestGateway::start(&yaml).await;
    let mut busy = Vec::new();
    support::within(async {
        while slow.hits() < 3 {
            let c = app(&gw);
            busy.push(tokio::spawn(async move { c.send("/").await }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let before = slow.hits();
    for _ in 0..96 {
        assert_eq!(app(&gw).send("/").await.status, 200);
    }
    let to_slow = slow.hits() - before;
    assert!(
        to_slow <= 13,
        "least request sent {to_slow} of 96 to the busy endpoint (random: ~24)"
    );
    for t in busy {
        assert_eq!(support::within(t).await.unwrap().status, 200);
    }
}

// ---- loadBalancer.consistentHash ----

/// A DestinationRule for `SVC` with `loadBalancer: {consistentHash: <hash>}` (a YAML flow map).
fn hash_rule(hash: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: lb\nspec:\n  host: {SVC}\n  trafficPolicy:\n    loadBalancer:\n      consistentHash: {hash}\n---\n"
    )
}

async fn three_upstreams() -> [UpstreamHandle; 3] {
    [
        Upstream::new("a").run().await,
        Upstream::new("b").run().await,
        Upstream::new("c").run().await,
    ]
}

fn hash_config(ups: &[UpstreamHandle], hash: &str) -> String {
    let eps: Vec<(u16, u32)> = ups.iter().map(|u| (u.port(), 1)).collect();
    format!(
        "{}{}{}{}",
        http_gateway("gw", 8080, &["*"]),
        service(SVC, &eps),
        hash_rule(hash),
        virtual_service("app", HOST, &rule(SVC, None, &[])),
    )
}

#[tokio::test]
async fn consistent_hash_on_header_sticks_and_spreads() {
    for algo in [
        "",
        ", maglev: {tableSize: 251}",
        ", ringHash: {minimumRingSize: 64}",
    ] {
        let ups = three_upstreams().await;
        let gw = TestGateway::start(&hash_config(
            &ups,
            &format!("{{httpHeaderName: x-user{algo}}}"),
        ))
        .await;
        let mut seen = std::collections::BTreeSet::new();
        for user in 0..24 {
            let first = app(&gw)
                .header("x-user", &format!("user-{user}"))
                .send("/")
                .await
                .body;
            for _ in 0..4 {
                let again = app(&gw)
                    .header("x-user", &format!("user-{user}"))
                    .send("/")
                    .await
                    .body;
                assert_eq!(again, first, "user-{user} moved ({algo})");
            }
            seen.insert(first);
        }
        assert!(
            seen.len() >= 2,
            "24 users all on one endpoint ({algo}): {seen:?}"
        );
    }
}

#[tokio::test]
async fn consistent_hash_without_the_key_picks_at_random() {
    let ups = three_upstreams().await;
    let gw = TestGateway::start(&hash_config(&ups, "{httpHeaderName: x-user}")).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        seen.insert(app(&gw).send("/").await.body);
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[tokio::test]
async fn consistent_hash_cookie_with_ttl_is_set_then_sticks() {
    let ups = three_upstreams().await;
    let gw = TestGateway::start(&hash_config(
        &ups,
        "{httpCookie: {name: sticky, path: /, ttl: 3600s}}",
    ))
    .await;
    let mut cookies = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let first = app(&gw).send("/").await;
        assert_eq!(first.status, 200);
        let set = first.header("set-cookie").to_owned();
        assert!(
            set.starts_with("sticky=\"") && set.contains("Max-Age=3600") && set.contains("Path=/"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_owned();
        cookies.insert(cookie.clone());
        for _ in 0..4 {
            let again = app(&gw).header("cookie", &cookie).send("/").await;
            assert_eq!(again.body, first.body, "cookie {cookie} moved");
            assert_eq!(again.header("set-cookie"), "", "cookie set again");
        }
    }
    assert_eq!(cookies.len(), 6, "each new client gets its own cookie");
}

#[tokio::test]
async fn consistent_hash_on_source_ip_and_query_parameter() {
    let ups = three_upstreams().await;
    let gw = TestGateway::start(&hash_config(&ups, "{useSourceIp: true}")).await;
    let first = app(&gw).send("/").await.body;
    for _ in 0..10 {
        assert_eq!(app(&gw).send("/").await.body, first);
    }
    let ups = three_upstreams().await;
    let gw = TestGateway::start(&hash_config(&ups, "{httpQueryParameterName: u}")).await;
    for u in 0..10 {
        let first = app(&gw).send(&format!("/?x=1&u={u}")).await.body;
        for _ in 0..3 {
            assert_eq!(app(&gw).send(&format!("/p?u={u}")).await.body, first);
        }
    }
}

#[tokio::test]
async fn consistent_hash_is_stable_when_an_endpoint_goes() {
    let ups = [
        Upstream::new("a").run().await,
        Upstream::new("b").run().await,
        Upstream::new("c").run().await,
        Upstream::new("d").run().await,
        Upstream::new("e").run().await,
    ];
    let gw = TestGateway::start(&hash_config(&ups, "{httpHeaderName: x-user}")).await;
    let mut before = Vec::new();
    for user in 0..60 {
        before.push(
            app(&gw)
                .header("x-user", &format!("u{user}"))
                .send("/")
                .await
                .body,
        );
    }
    // Remove endpoint "e": only its users may move.
    gw.reload_with(&hash_config(&ups[..4], "{httpHeaderName: x-user}"))
        .await
        .unwrap();
    for (user, was) in before.iter().enumerate() {
        let now = app(&gw)
            .header("x-user", &format!("u{user}"))
            .send("/")
            .await
            .body;
        if was != "e" {
            assert_eq!(&now, was, "u{user} moved from {was} to {now}");
        } else {
            assert_ne!(now, "e");
        }
    }
    assert!(before.iter().any(|b| b == "e"), "no user on e: {before:?}");
}

#[tokio::test]
async fn invalid_consistent_hash_is_rejected_with_its_field() {
    let ups = three_upstreams().await;
    for (hash, field, msg) in [
        (
            "{httpHeaderName: x-user, useSourceIp: true}",
            "consistentHash",
            "exactly one of",
        ),
        (
            "{httpHeaderName: x-user, maglev: {tableSize: 1000}}",
            "consistentHash.maglev.tableSize",
            "prime",
        ),
        (
            "{httpCookie: {name: s, ttl: soon}}",
            "consistentHash.httpCookie.ttl",
            "invalid duration",
        ),
    ] {
        let errors = TestGateway::try_start_with(&hash_config(&ups, hash), |_| {})
            .await
            .err()
            .unwrap_or_else(|| panic!("{hash} accepted"));
        let text = errors.to_string();
        assert!(
            text.contains(&format!("trafficPolicy.loadBalancer.{field}")) && text.contains(msg),
            "{hash}: {text}"
        );
    }
}

#[tokio::test]
async fn tcp_keepalive_is_set_on_upstream_connections() {
    let ups = three_upstreams().await;
    let dr = format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: lb\nspec:\n  host: {SVC}\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        tcpKeepalive: {{time: 7s, interval: 3s, probes: 4}}\n---\n"
    );
    let yaml = format!(
        "{}{}{}{}",
        http_gateway("gw", 8080, &["*"]),
        service(SVC, &[(ups[0].port(), 1)]),
        dr,
        virtual_service("app", HOST, &rule(SVC, None, &[])),
    );
    let gw = TestGateway::start(&yaml).await;
    assert_eq!(app(&gw).send("/").await.status, 200);
    // The gateway's pooled socket to the upstream: /proc/net/tcp shows timer 02 (keepalive)
    // on an idle established socket only when SO_KEEPALIVE is on.
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = format!(":{:04X}", ups[0].port());
    let timers: Vec<&str> = tcp
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 5 && f[2].ends_with(&port) && f[3] == "01")
        .map(|f| f[5].split(':').next().unwrap_or(""))
        .collect();
    assert!(
        timers.contains(&"02"),
        "no keepalive timer on the upstream socket: {timers:?}"
    );
    let bad = yaml.replace("probes: 4", "probes: 4, every: 1s");
    let errors = TestGateway::start_err(&bad).await;
    assert!(
        errors.contains("connectionPool.tcp.tcpKeepalive"),
        "{errors}"
    );
}

#[tokio::test]
async fn connection_age_and_tcp_idle_timeout_limit_upstream_reuse() {
    // Two requests 450 ms apart, the pool's own idle timeout 200 ms (so `0s`, off, shows);
    // connections the upstream saw, per DestinationRule `connectionPool`.
    let cases = [
        (
            "{tcp: {maxConnectionDuration: 300ms}, http: {idleTimeout: 10s}}",
            false,
            2,
        ),
        (
            "{tcp: {maxConnectionDuration: 2s}, http: {idleTimeout: 10s}}",
            false,
            1,
        ),
        ("{tcp: {idleTimeout: 300ms}}", false, 2),
        ("{tcp: {idleTimeout: 0s}}", false, 1),
        // The shared HTTP/2 connection too.
        (
            "{tcp: {maxConnectionDuration: 300ms}, http: {idleTimeout: 10s}}",
            true,
            2,
        ),
        ("{tcp: {maxConnectionDuration: 2s}}", true, 1),
    ];
    for (pool, h2, want) in cases {
        let up = if h2 {
            Upstream::new("app").http2().run().await
        } else {
            Upstream::new("app").run().await
        };
        let protocol = if h2 { "HTTP2" } else { "HTTP" };
        let dr = format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: pool\nspec:\n  host: {SVC}\n  trafficPolicy:\n    connectionPool: {pool}\n---\n"
        );
        let yaml = format!(
            "{}{}{}{}",
            http_gateway("gw", 8080, &["*"]),
            service(SVC, &[(up.port(), 1)])
                .replace("protocol: HTTP\n", &format!("protocol: {protocol}\n")),
            dr,
            virtual_service("app", HOST, &rule(SVC, None, &[])),
        );
        let gw = TestGateway::start_with(&yaml, |b| {
            b.pool.idle_timeout = Duration::from_millis(200);
        })
        .await;
        assert_eq!(app(&gw).send("/").await.status, 200, "{pool}");
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(app(&gw).send("/").await.status, 200, "{pool}");
        assert_eq!(up.connections(), want, "{pool} (h2: {h2})");
    }
    // `0s` is valid only for the idle timeout.
    let bad = format!(
        "{}{}{}apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: pool\nspec:\n  host: {SVC}\n  trafficPolicy:\n    connectionPool: {{tcp: {{maxConnectionDuration: 0s}}}}\n---\n",
        http_gateway("gw", 8080, &["*"]),
        service(SVC, &[(1, 1)]),
        virtual_service("app", HOST, &rule(SVC, None, &[])),
    );
    let errors = TestGateway::start_err(&bad).await;
    assert!(
        errors.contains("connectionPool.tcp.maxConnectionDuration"),
        "{errors}"
    );
}

#[tokio::test]
async fn h2_upgrade_policy_speaks_http2_to_an_http_port() {
    // The upstream speaks only HTTP/2 (prior knowledge) behind a port declared HTTP.
    let up = Upstream::new("app").http2().run().await;
    let start = |http: &str| {
        let yaml = format!(
            "{}{}apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: pool\nspec:\n  host: {SVC}\n  trafficPolicy:\n    connectionPool: {{http: {http}}}\n---\n{}",
            http_gateway("gw", 8080, &["*"]),
            service(SVC, &[(up.port(), 1)]),
            virtual_service("app", HOST, &rule(SVC, None, &["retries: {attempts: 0}"])),
        );
        async move { TestGateway::try_start_with(&yaml, |_| {}).await }
    };
    let gw = start("{h2UpgradePolicy: UPGRADE}").await.unwrap();
    let r = app(&gw).send("/").await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "app"));
    assert_eq!(up.last().version, hyper::Version::HTTP_2);
    // Not upgraded (Istio's default, and `useClientProtocol` wins over UPGRADE): HTTP/1.1,
    // which this upstream cannot answer.
    for http in [
        "{h2UpgradePolicy: DO_NOT_UPGRADE}",
        "{h2UpgradePolicy: DEFAULT}",
        "{h2UpgradePolicy: UPGRADE, useClientProtocol: true}",
    ] {
        let gw = start(http).await.unwrap();
        let before = up.hits();
        let r = app(&gw).send("/").await;
        assert_eq!(r.status.as_u16(), 503, "{http}: {}", r.body);
        assert_eq!(
            up.hits(),
            before,
            "{http}: an HTTP/1.1 request was answered"
        );
    }
    let errors = start("{h2UpgradePolicy: SOMETIMES}")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        errors.contains("trafficPolicy.connectionPool.http.h2UpgradePolicy")
            && errors.contains("SOMETIMES"),
        "{errors}"
    );
}

// ---- connectionPool (circuit breaking) ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_pool_overflow_answers_503_uo() {
    // Istio's circuit-breaking task: one connection, one pending request.
    let slow = Upstream::new("slow")
        .delay(Duration::from_millis(400))
        .run()
        .await;
    let dr = format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: cb\nspec:\n  host: {SVC}\n  trafficPolicy:\n    connectionPool:\n      tcp: {{maxConnections: 1}}\n      http: {{http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}}\n---\n"
    );
    let yaml = format!(
        "{}{}{}{}",
        http_gateway("gw", 8080, &["*"]),
        service(SVC, &[(slow.port(), 1)]),
        dr,
        virtual_service("app", HOST, &rule(SVC, None, &[])),
    );
    let gw = TestGateway::start(&yaml).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = app(&gw);
        tasks.push(tokio::spawn(async move { c.send("/").await }));
    }
    let mut ok = 0;
    let mut overflow = 0;
    for t in tasks {
        let r = support::within(t).await.unwrap();
        match r.status.as_u16() {
            200 => ok += 1,
            503 => {
                assert_eq!(r.header("x-envoy-overloaded"), "true", "{r:?}");
                assert!(r.body.contains("overflow"), "{r:?}");
                overflow += 1;
            }
            other => panic!("unexpected {other}: {r:?}"),
        }
    }
    // One in flight + one pending succeed; the other two overflow.
    assert_eq!((ok, overflow), (2, 2));
    assert!(
        slow.hits() == 2,
        "overflowing requests never reach the upstream"
    );
    let samples = scrape(&gw).await;
    assert_eq!(
        total(
            &samples,
            "istio_requests_total",
            &[("response_flags", "UO")]
        ),
        2.0
    );
    // Limits free up: a later request goes through.
    assert_eq!(app(&gw).send("/").await.status, 200);
}

// ---- gRPC local replies ----

#[tokio::test]
async fn grpc_requests_get_grpc_status_for_local_errors() {
    let closed = ClosedPort::new();
    let gw = start_app(&[(closed.port(), 1)], &["retries: {attempts: 0}"]).await;
    let grpc = |host: &str| {
        Client::new(gw.port(8080), host)
            .method("POST")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .h2()
    };
    let r = grpc(HOST).send("/pkg.Svc/Call").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("grpc-status"), "14", "UNAVAILABLE: {r:?}");
    assert!(
        r.header("grpc-message").contains("connection failure"),
        "{r:?}"
    );
    let r = grpc("nowhere.test").send("/pkg.Svc/Call").await;
    assert_eq!(
        (r.status.as_u16(), r.header("grpc-status")),
        (200, "12"),
        "UNIMPLEMENTED: {r:?}"
    );
    let samples = scrape(&gw).await;
    assert_eq!(
        total(
            &samples,
            "istio_requests_total",
            &[("grpc_response_status", "14"), ("request_protocol", "grpc")]
        ),
        1.0
    );
}

// ---- outlierDetection ----

#[tokio::test]
async fn outlier_detection_ejects_a_failing_endpoint_and_returns_it() {
    let bad = Upstream::new("bad").fail_first(1_000_000, 500).run().await;
    let good = Upstream::new("good").run().await;
    let dr = format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: od\nspec:\n  host: {SVC}\n  trafficPolicy:\n    outlierDetection:\n      consecutive5xxErrors: 3\n      interval: 1s\n      baseEjectionTime: 300ms\n      maxEjectionPercent: 50\n---\n"
    );
    let yaml = format!(
        "{}{}{}{}",
        http_gateway("gw", 8080, &["*"]),
        service(SVC, &[(bad.port(), 1), (good.port(), 1)]),
        dr,
        virtual_service("app", HOST, &rule(SVC, None, &["retries: {attempts: 0}"])),
    );
    let gw = TestGateway::start(&yaml).await;
    // Round robin: the bad endpoint answers every other request until its third 500.
    let mut failures = 0;
    for _ in 0..6 {
        if app(&gw).send("/").await.status == 500 {
            failures += 1;
        }
    }
    assert_eq!(failures, 3, "three 500s, then ejected");
    let before = bad.hits();
    for _ in 0..20 {
        assert_eq!(app(&gw).send("/").await.status, 200);
    }
    assert_eq!(
        bad.hits(),
        before,
        "an ejected endpoint receives no traffic"
    );
    // After baseEjectionTime it gets traffic again.
    support::within(tokio::time::sleep(Duration::from_millis(350))).await;
    for _ in 0..4 {
        app(&gw).send("/").await;
    }
    assert!(
        bad.hits() > before,
        "the endpoint returns after its ejection time"
    );
}
