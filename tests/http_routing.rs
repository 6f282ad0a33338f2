//! HTTP routing end to end: match conditions, host and rule precedence, weighted and subset
//! destinations, redirects / direct responses / rewrites / header operations, proxy header
//! handling, endpoint selection, and the mesh port. Every test starts its own gateway from
//! YAML on ephemeral ports and talks to it over real sockets.
//!
//! Most matching tests answer with `directResponse` rules whose body is the rule's label, so
//! the reply says which rule won; forwarding tests use the recording upstreams of `support`.

// Test code: failing loudly is the point (clippy.toml only allows these inside `#[test]` fns,
// not in the helpers below nor in `support`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{HeaderMap, Request, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use support::client::raw_exchange;
use support::gateway::{http_gateway, service_entry};
use support::{within, Client, TestGateway, Upstream, UpstreamHandle};

// ---------------------------------------------------------------------------------------------
// YAML helpers
// ---------------------------------------------------------------------------------------------

/// Remove the common leading indentation of `text` (so YAML can be indented like the code
/// around it) and a leading newline.
fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| format!("{}\n", l.get(indent..).unwrap_or("").trim_end()))
        .collect()
}

/// Indent every non-empty line of `text` by `n` spaces.
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_owned()
            } else {
                format!("{pad}{l}\n")
            }
        })
        .collect()
}

/// One YAML document, dedented and terminated by `---`.
fn doc(text: &str) -> String {
    format!("{}---\n", dedent(text))
}

/// A YAML flow sequence of quoted strings.
fn flow_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The standard Gateway `gw`: one HTTP server on port 8080 for every host.
fn gateway() -> String {
    http_gateway("gw", 8080, &["*"])
}

/// A VirtualService `name` for `hosts`, bound to `gateways`, whose `http:` list is `http`
/// (YAML, indented freely).
fn virtual_service(name: &str, hosts: &[&str], gateways: &[&str], http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: {}\n  gateways: {}\n  http:\n{}---\n",
        flow_list(hosts),
        flow_list(gateways),
        indent(&dedent(http), 2)
    )
}

/// An `http[]` rule that answers 200 with body `label` when one of the match blocks in
/// `matches` (a YAML flow sequence; empty: no match blocks, so always) holds.
fn answer(label: &str, matches: &str) -> String {
    let m = if matches.is_empty() {
        String::new()
    } else {
        format!("  match: {matches}\n")
    };
    format!("- name: {label}\n{m}  directResponse: {{status: 200, body: {{string: {label}}}}}\n")
}

/// A STATIC ServiceEntry `host` (port 80, HTTP) with the single upstream `u`.
fn backend(host: &str, u: &UpstreamHandle) -> String {
    service_entry(host, 80, "HTTP", &[(u, "v1")])
}

/// A STATIC ServiceEntry `host` (port 80, HTTP) with one endpoint 127.0.0.1:`port`.
fn raw_backend(host: &str, port: u16) -> String {
    doc(&format!(
        r#"
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata:
          name: {name}
        spec:
          hosts: [{host}]
          location: MESH_INTERNAL
          resolution: STATIC
          ports:
          - {{number: 80, name: http, protocol: HTTP}}
          endpoints:
          - address: 127.0.0.1
            ports: {{http: {port}}}
        "#,
        name = host.replace('.', "-"),
    ))
}

/// Start a gateway from the concatenation of `docs`.
async fn start(docs: &[String]) -> TestGateway {
    TestGateway::start(&docs.concat()).await
}

/// A gateway on port 8080 whose VirtualService for `hosts` has, in order, one `answer` rule
/// per `(label, matches)` and a final catch-all answering `fallback`.
async fn answering_for(hosts: &[&str], rules: &[(&str, &str)]) -> TestGateway {
    let mut http: String = rules.iter().map(|(l, m)| answer(l, m)).collect();
    http.push_str(&answer("fallback", ""));
    start(&[gateway(), virtual_service("app", hosts, &["gw"], &http)]).await
}

/// `answering_for` the host `app.test`.
async fn answering(rules: &[(&str, &str)]) -> TestGateway {
    answering_for(&["app.test"], rules).await
}

// ---------------------------------------------------------------------------------------------
// Request helpers
// ---------------------------------------------------------------------------------------------

/// A client for `app.test` on Gateway port 8080.
fn app(gw: &TestGateway) -> Client {
    Client::new(gw.port(8080), "app.test")
}

/// Send `c` to `path`, assert 200 and return the body (the label of the answering rule, or
/// the upstream's name).
async fn label(c: Client, path: &str) -> String {
    let r = c.send(path).await;
    assert_eq!(r.status, 200, "{path}: {r:?}");
    r.body
}

/// Every value of header `name`, in order.
fn values(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// Send `n` GETs for `host` over one keep-alive connection; count replies by body.
async fn tally(addr: SocketAddr, host: &str, n: usize) -> BTreeMap<String, usize> {
    within(async {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let req = Request::get("/")
                .header("host", host)
                .body(Empty::<Bytes>::new())
                .unwrap();
            tx.ready().await.unwrap();
            let resp = tx.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            *counts
                .entry(String::from_utf8_lossy(&body).into_owned())
                .or_insert(0) += 1;
        }
        counts
    })
    .await
}

/// Assert that `label` got `expected` percent of the counted replies, within 4 points.
fn assert_share(counts: &BTreeMap<String, usize>, label: &str, expected: f64) {
    let total: usize = counts.values().sum();
    let got = counts.get(label).copied().unwrap_or(0) as f64 * 100.0 / total as f64;
    assert!(
        (got - expected).abs() <= 4.0,
        "{label} got {got:.1}% of {total} requests, expected {expected}% ± 4: {counts:?}"
    );
}

/// Whether `s` looks like a hyphenated UUID (8-4-4-4-12 hex digits).
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A one-shot HTTP/1.1 upstream on raw TCP: it reads one request head, answers 200 with body
/// `raw-upstream` (and a camel-case response header), closes, and yields the raw head bytes.
async fn raw_upstream() -> (u16, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before a full request head");
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(
            b"HTTP/1.1 200 OK\r\nX-Upstream-CamelCase: 1\r\ncontent-length: 12\r\nconnection: close\r\n\r\nraw-upstream",
        )
        .await
        .unwrap();
        head
    });
    (port, task)
}

// ---------------------------------------------------------------------------------------------
// 1. Match conditions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn uri_exact_matches_the_whole_path_only() {
    let gw = answering(&[("exact", "[{uri: {exact: /exact}}]")]).await;
    assert_eq!(label(app(&gw), "/exact").await, "exact");
    assert_eq!(label(app(&gw), "/exact?q=1").await, "exact");
    assert_eq!(label(app(&gw), "/exact/more").await, "fallback");
    assert_eq!(label(app(&gw), "/exactly").await, "fallback");
    assert_eq!(label(app(&gw), "/EXACT").await, "fallback");
}

#[tokio::test]
async fn uri_prefix_matches_paths_starting_with_it() {
    let gw = answering(&[("prefix", "[{uri: {prefix: /pre}}]")]).await;
    assert_eq!(label(app(&gw), "/pre").await, "prefix");
    assert_eq!(label(app(&gw), "/prefix").await, "prefix");
    assert_eq!(label(app(&gw), "/pre/x?y=1").await, "prefix");
    assert_eq!(label(app(&gw), "/pr").await, "fallback");
    assert_eq!(label(app(&gw), "/PRE").await, "fallback");
}

#[tokio::test]
async fn uri_regex_is_a_full_match() {
    let gw = answering(&[("regex", "[{uri: {regex: '/v[0-9]+'}}]")]).await;
    assert_eq!(label(app(&gw), "/v1").await, "regex");
    assert_eq!(label(app(&gw), "/v123?q=1").await, "regex");
    assert_eq!(label(app(&gw), "/v1/x").await, "fallback");
    assert_eq!(label(app(&gw), "/x/v1").await, "fallback");
    assert_eq!(label(app(&gw), "/v").await, "fallback");
}

#[tokio::test]
async fn ignore_uri_case_makes_uri_matching_case_insensitive() {
    let gw = answering(&[
        ("nocase", "[{uri: {prefix: /Api}, ignoreUriCase: true}]"),
        ("strict", "[{uri: {exact: /Strict}}]"),
    ])
    .await;
    assert_eq!(label(app(&gw), "/api/users").await, "nocase");
    assert_eq!(label(app(&gw), "/API").await, "nocase");
    assert_eq!(label(app(&gw), "/Strict").await, "strict");
    assert_eq!(label(app(&gw), "/strict").await, "fallback");
}

#[tokio::test]
async fn scheme_match() {
    let gw = answering(&[
        ("https", "[{scheme: {exact: https}}]"),
        ("http", "[{scheme: {exact: http}}]"),
    ])
    .await;
    assert_eq!(label(app(&gw), "/").await, "http");
}

#[tokio::test]
async fn method_match() {
    let gw = answering(&[
        ("post", "[{method: {exact: POST}}]"),
        ("get-or-delete", "[{method: {regex: 'GET|DELETE'}}]"),
    ])
    .await;
    assert_eq!(label(app(&gw).method("POST"), "/").await, "post");
    assert_eq!(label(app(&gw), "/").await, "get-or-delete");
    assert_eq!(label(app(&gw).method("DELETE"), "/").await, "get-or-delete");
    assert_eq!(label(app(&gw).method("PUT"), "/").await, "fallback");
}

#[tokio::test]
async fn authority_match() {
    let gw = answering_for(
        &["app.test", "api.app.test", "other.test"],
        &[
            ("api", "[{authority: {prefix: api.}}]"),
            ("exact", "[{authority: {exact: app.test}}]"),
        ],
    )
    .await;
    let on = |host: &str| Client::new(gw.port(8080), host);
    assert_eq!(label(on("api.app.test"), "/").await, "api");
    assert_eq!(label(on("app.test"), "/").await, "exact");
    assert_eq!(label(on("other.test"), "/").await, "fallback");
}

#[tokio::test]
async fn header_exact_match() {
    let gw = answering(&[("exact", "[{headers: {x-tier: {exact: gold}}}]")]).await;
    assert_eq!(label(app(&gw).header("x-tier", "gold"), "/").await, "exact");
    assert_eq!(label(app(&gw).header("X-Tier", "gold"), "/").await, "exact");
    assert_eq!(
        label(app(&gw).header("x-tier", "golden"), "/").await,
        "fallback"
    );
    assert_eq!(
        label(app(&gw).header("x-tier", "Gold"), "/").await,
        "fallback"
    );
    assert_eq!(label(app(&gw), "/").await, "fallback");
}

#[tokio::test]
async fn header_prefix_match() {
    let gw = answering(&[("prefix", "[{headers: {x-agent: {prefix: curl/}}}]")]).await;
    assert_eq!(
        label(app(&gw).header("x-agent", "curl/8.5"), "/").await,
        "prefix"
    );
    assert_eq!(
        label(app(&gw).header("x-agent", "not-curl/8.5"), "/").await,
        "fallback"
    );
    assert_eq!(label(app(&gw), "/").await, "fallback");
}

#[tokio::test]
async fn header_regex_is_a_full_match() {
    let gw = answering(&[("regex", "[{headers: {x-version: {regex: 'v[0-9]+'}}}]")]).await;
    assert_eq!(
        label(app(&gw).header("x-version", "v42"), "/").await,
        "regex"
    );
    assert_eq!(
        label(app(&gw).header("x-version", "v42-beta"), "/").await,
        "fallback"
    );
    assert_eq!(
        label(app(&gw).header("x-version", "beta-v42"), "/").await,
        "fallback"
    );
}

#[tokio::test]
async fn header_presence_match() {
    let gw = answering(&[("present", "[{headers: {x-debug: {}}}]")]).await;
    assert_eq!(
        label(app(&gw).header("x-debug", "anything"), "/").await,
        "present"
    );
    assert_eq!(label(app(&gw).header("x-debug", "0"), "/").await, "present");
    assert_eq!(
        label(app(&gw).header("x-other", "1"), "/").await,
        "fallback"
    );
}

#[tokio::test]
async fn hop_by_hop_fields_are_not_matched_on_either_parser() {
    // They describe the client's connection and are dropped before routing, as Envoy does.
    // The fast path reads the plain GETs; hyper the HTTP/1.0 request and the chunked POST.
    let gw = answering(&[(
        "hop",
        "[{headers: {connection: {}}}, {headers: {keep-alive: {}}}, {headers: {proxy-connection: {}}}, {headers: {upgrade: {}}}]",
    )])
    .await;
    // Every request ends its connection, so each reply is read to the close.
    let requests = [
        "GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close, x-foo\r\nKeep-Alive: timeout=5\r\nx-foo: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: app.test\r\nProxy-Connection: close\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: app.test\r\nUpgrade: foo\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: app.test\r\nKeep-Alive: timeout=5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    ];
    for raw in requests {
        let reply = raw_exchange(gw.port(8080), raw.as_bytes(), "").await;
        assert!(reply.starts_with("HTTP/1."), "{raw:?}: {reply:?}");
        assert!(
            reply.ends_with("fallback"),
            "{raw:?} matched a hop-by-hop field: {reply:?}"
        );
    }
    // The same rule still sees an ordinary field named by nothing.
    let gw = answering(&[("seen", "[{headers: {x-foo: {}}}]")]).await;
    let raw = "GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nx-foo: 1\r\n\r\n";
    let reply = raw_exchange(gw.port(8080), raw.as_bytes(), "").await;
    assert!(reply.ends_with("seen"), "{reply:?}");
}

#[tokio::test]
async fn without_headers_excludes_matching_requests() {
    let gw = answering(&[
        ("anonymous", "[{withoutHeaders: {end-user: {}}}]"),
        (
            "not-jason",
            "[{withoutHeaders: {end-user: {exact: jason}}}]",
        ),
    ])
    .await;
    assert_eq!(label(app(&gw), "/").await, "anonymous");
    assert_eq!(
        label(app(&gw).header("end-user", "bob"), "/").await,
        "not-jason"
    );
    assert_eq!(
        label(app(&gw).header("end-user", "jason"), "/").await,
        "fallback"
    );
}

#[tokio::test]
async fn query_param_exact_match() {
    let gw = answering(&[("v2", "[{queryParams: {version: {exact: '2'}}}]")]).await;
    assert_eq!(label(app(&gw), "/?version=2").await, "v2");
    assert_eq!(label(app(&gw), "/items?a=1&version=2&b=3").await, "v2");
    assert_eq!(label(app(&gw), "/?version=20").await, "fallback");
    assert_eq!(label(app(&gw), "/?xversion=2").await, "fallback");
    assert_eq!(label(app(&gw), "/").await, "fallback");
}

#[tokio::test]
async fn query_param_regex_is_a_full_match() {
    let gw = answering(&[("numeric", "[{queryParams: {id: {regex: '[0-9]+'}}}]")]).await;
    assert_eq!(label(app(&gw), "/items?id=123").await, "numeric");
    assert_eq!(label(app(&gw), "/items?id=12a").await, "fallback");
    assert_eq!(label(app(&gw), "/items?id=").await, "fallback");
    assert_eq!(label(app(&gw), "/items").await, "fallback");
}

#[tokio::test]
async fn port_match_selects_by_gateway_port() {
    let gw = start(&[
        doc(r#"
            apiVersion: networking.istio.io/v1
            kind: Gateway
            metadata:
              name: gw
            spec:
              selector: {istio: ingressgateway}
              servers:
              - port: {number: 8080, name: http, protocol: HTTP}
                hosts: ["*"]
              - port: {number: 9090, name: http-alt, protocol: HTTP}
                hosts: ["*"]
        "#),
        virtual_service(
            "app",
            &["app.test"],
            &["gw"],
            &[answer("on-9090", "[{port: 9090}]"), answer("fallback", "")].concat(),
        ),
    ])
    .await;
    assert_eq!(
        label(Client::new(gw.port(9090), "app.test"), "/").await,
        "on-9090"
    );
    assert_eq!(label(app(&gw), "/").await, "fallback");
}

#[tokio::test]
async fn match_blocks_are_ored_and_fields_within_a_block_anded() {
    let gw = answering(&[(
        "hit",
        "[{uri: {prefix: /a}, headers: {x-key: {exact: k}}}, {uri: {prefix: /b}}]",
    )])
    .await;
    assert_eq!(label(app(&gw).header("x-key", "k"), "/a").await, "hit");
    assert_eq!(label(app(&gw), "/a").await, "fallback");
    assert_eq!(label(app(&gw), "/b").await, "hit");
    assert_eq!(label(app(&gw).header("x-key", "k"), "/c").await, "fallback");
}

// ---------------------------------------------------------------------------------------------
// 2. Precedence
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn exact_host_beats_wildcard_host() {
    let gw = start(&[
        gateway(),
        virtual_service("wild", &["*.example.com"], &["gw"], &answer("wild", "")),
        virtual_service("exact", &["app.example.com"], &["gw"], &answer("exact", "")),
    ])
    .await;
    let on = |host: &str| Client::new(gw.port(8080), host);
    assert_eq!(label(on("app.example.com"), "/").await, "exact");
    assert_eq!(label(on("www.example.com"), "/").await, "wild");
}

#[tokio::test]
async fn longest_wildcard_wins_and_star_comes_last() {
    let gw = start(&[
        gateway(),
        virtual_service("any", &["*"], &["gw"], &answer("any", "")),
        virtual_service("short", &["*.example.com"], &["gw"], &answer("short", "")),
        virtual_service("long", &["*.b.example.com"], &["gw"], &answer("long", "")),
    ])
    .await;
    let on = |host: &str| Client::new(gw.port(8080), host);
    assert_eq!(label(on("x.b.example.com"), "/").await, "long");
    assert_eq!(label(on("y.x.b.example.com"), "/").await, "long");
    assert_eq!(label(on("x.example.com"), "/").await, "short");
    assert_eq!(label(on("b.example.com"), "/").await, "short");
    assert_eq!(label(on("elsewhere.test"), "/").await, "any");
}

#[tokio::test]
async fn rules_are_evaluated_in_order_first_match_wins() {
    let gw = start(&[
        gateway(),
        virtual_service(
            "shadowed",
            &["shadowed.test"],
            &["gw"],
            &[
                answer("catch-all", ""),
                answer("specific", "[{uri: {exact: /specific}}]"),
            ]
            .concat(),
        ),
        virtual_service(
            "ordered",
            &["ordered.test"],
            &["gw"],
            &[
                answer("specific", "[{uri: {exact: /specific}}]"),
                answer("broad", "[{uri: {prefix: /spec}}]"),
                answer("catch-all", ""),
            ]
            .concat(),
        ),
    ])
    .await;
    let on = |host: &str| Client::new(gw.port(8080), host);
    assert_eq!(label(on("shadowed.test"), "/specific").await, "catch-all");
    assert_eq!(label(on("ordered.test"), "/specific").await, "specific");
    assert_eq!(label(on("ordered.test"), "/special").await, "broad");
    assert_eq!(label(on("ordered.test"), "/other").await, "catch-all");
}

#[tokio::test]
async fn virtual_services_for_one_host_merge_in_file_order() {
    // Named so that sorting by name would give the opposite order.
    let gw = start(&[
        gateway(),
        virtual_service(
            "zzz-first",
            &["app.test"],
            &["gw"],
            &answer("first-shared", "[{uri: {prefix: /shared}}]"),
        ),
        virtual_service(
            "aaa-second",
            &["app.test"],
            &["gw"],
            &[
                answer("second-shared", "[{uri: {prefix: /shared}}]"),
                answer("second-rest", ""),
            ]
            .concat(),
        ),
    ])
    .await;
    assert_eq!(label(app(&gw), "/shared").await, "first-shared");
    assert_eq!(label(app(&gw), "/other").await, "second-rest");
}

#[tokio::test]
async fn gateway_server_hosts_restrict_what_is_served() {
    let gw = start(&[
        http_gateway("gw", 8080, &["app.test", "*.example.com"]),
        virtual_service(
            "listed",
            &["app.test", "other.test"],
            &["gw"],
            &answer("listed", ""),
        ),
        virtual_service("wild", &["*"], &["gw"], &answer("wild", "")),
    ])
    .await;
    let on = |host: &str| Client::new(gw.port(8080), host);
    assert_eq!(label(on("app.test"), "/").await, "listed");
    assert_eq!(label(on("x.example.com"), "/").await, "wild");
    let r = on("other.test").send("/").await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = on("nowhere.test").send("/").await;
    assert_eq!(r.status, 404, "{r:?}");
}

#[tokio::test]
async fn virtual_service_without_gateways_is_not_served_on_gateway_ports() {
    let gw = start(&[
        gateway(),
        virtual_service("bound", &["app.test"], &["gw"], &answer("bound", "")),
        virtual_service("mesh-only", &["mesh.test"], &[], &answer("mesh-only", "")),
    ])
    .await;
    assert_eq!(label(app(&gw), "/").await, "bound");
    let r = Client::new(gw.port(8080), "mesh.test").send("/").await;
    assert_eq!(r.status, 404, "{r:?}");
}

#[tokio::test]
async fn host_header_with_port_and_mixed_case_still_matches() {
    let gw = start(&[
        gateway(),
        virtual_service("app", &["app.test"], &["gw"], &answer("app", "")),
        virtual_service("wild", &["*.example.com"], &["gw"], &answer("wild", "")),
    ])
    .await;
    let on = |host: &str| Client::new(gw.port(8080), host);
    assert_eq!(label(on("app.test:8080"), "/").await, "app");
    assert_eq!(label(on("WWW.Example.Com:8080"), "/").await, "wild");
    assert_eq!(label(on("APP.Test"), "/").await, "app");
    assert_eq!(label(on("App.TEST:8080"), "/").await, "app");
}

#[tokio::test]
async fn no_matching_host_or_rule_gets_404_with_empty_body() {
    let gw = start(&[
        gateway(),
        virtual_service(
            "app",
            &["app.test"],
            &["gw"],
            &answer("only", "[{uri: {exact: /only}}]"),
        ),
    ])
    .await;
    let r = Client::new(gw.port(8080), "unknown.test")
        .send("/only")
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.body, "");
    let r = app(&gw).send("/other").await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.body, "");
}

// ---------------------------------------------------------------------------------------------
// 3. Weighted destinations
// ---------------------------------------------------------------------------------------------

/// A gateway routing `app.test` to `<name>.svc` of each upstream with the given weights.
async fn weighted(dests: &[(&UpstreamHandle, u32)]) -> TestGateway {
    let mut docs = vec![gateway()];
    let mut route = String::from("- route:\n");
    for (u, w) in dests {
        docs.push(backend(&format!("{}.svc", u.name), u));
        route.push_str(&format!(
            "  - destination: {{host: {}.svc}}\n    weight: {w}\n",
            u.name
        ));
    }
    docs.push(virtual_service("app", &["app.test"], &["gw"], &route));
    start(&docs).await
}

#[tokio::test]
async fn weights_90_10_split_traffic() {
    let a = Upstream::new("a").run().await;
    let b = Upstream::new("b").run().await;
    let gw = weighted(&[(&a, 90), (&b, 10)]).await;
    let counts = tally(gw.port(8080), "app.test", 1000).await;
    assert_share(&counts, "a", 90.0);
    assert_share(&counts, "b", 10.0);
}

#[tokio::test]
async fn weights_50_50_split_traffic() {
    let a = Upstream::new("a").run().await;
    let b = Upstream::new("b").run().await;
    let gw = weighted(&[(&a, 50), (&b, 50)]).await;
    let counts = tally(gw.port(8080), "app.test", 2000).await;
    assert_share(&counts, "a", 50.0);
    assert_share(&counts, "b", 50.0);
}

#[tokio::test]
async fn weights_are_relative() {
    let a = Upstream::new("a").run().await;
    let b = Upstream::new("b").run().await;
    let gw = weighted(&[(&a, 1), (&b, 3)]).await;
    let counts = tally(gw.port(8080), "app.test", 2000).await;
    assert_share(&counts, "a", 25.0);
    assert_share(&counts, "b", 75.0);
}

#[tokio::test]
async fn destination_with_weight_zero_gets_nothing() {
    let a = Upstream::new("a").run().await;
    let b = Upstream::new("b").run().await;
    let gw = weighted(&[(&a, 100), (&b, 0)]).await;
    let counts = tally(gw.port(8080), "app.test", 200).await;
    assert_eq!(counts.get("a"), Some(&200), "{counts:?}");
    assert_eq!(b.hits(), 0);
}

// ---------------------------------------------------------------------------------------------
// 4. Subsets
// ---------------------------------------------------------------------------------------------

/// A gateway with the ServiceEntry `service` (endpoints `v1` and `v2`, labelled
/// `version: v1|v2`), a DestinationRule for `dr_host` with subsets v1 and v2, the
/// VirtualService `app.test` -> `http`, and `all.test` routing to `service` without a subset.
async fn reviews_gateway(
    v1: &UpstreamHandle,
    v2: &UpstreamHandle,
    service: &str,
    dr_host: &str,
    http: &str,
) -> TestGateway {
    start(&[
        gateway(),
        service_entry(service, 80, "HTTP", &[(v1, "v1"), (v2, "v2")]),
        doc(&format!(
            r#"
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata:
              name: reviews
            spec:
              host: {dr_host}
              subsets:
              - name: v1
                labels: {{version: v1}}
              - name: v2
                labels: {{version: v2}}
            "#
        )),
        virtual_service("app", &["app.test"], &["gw"], http),
        virtual_service(
            "all",
            &["all.test"],
            &["gw"],
            &format!("- route: [{{destination: {{host: {service}}}}}]"),
        ),
    ])
    .await
}

#[tokio::test]
async fn subset_selects_endpoints_by_label() {
    let v1 = Upstream::new("v1").run().await;
    let v2 = Upstream::new("v2").run().await;
    let gw = reviews_gateway(
        &v1,
        &v2,
        "reviews.svc",
        "reviews.svc",
        "- route: [{destination: {host: reviews.svc, subset: v2}}]",
    )
    .await;
    for _ in 0..10 {
        assert_eq!(label(app(&gw), "/").await, "v2");
    }
    assert_eq!(v1.hits(), 0);
    // Without a subset both endpoints serve.
    for _ in 0..10 {
        label(Client::new(gw.port(8080), "all.test"), "/").await;
    }
    assert!(v1.hits() > 0 && v2.hits() > 10);
}

#[tokio::test]
async fn bookinfo_end_user_jason_goes_to_v2() {
    let v1 = Upstream::new("v1").run().await;
    let v2 = Upstream::new("v2").run().await;
    // As in bookinfo: Kubernetes-style service name, short names in the DestinationRule and
    // the routes.
    let gw = reviews_gateway(
        &v1,
        &v2,
        "reviews.default.svc.cluster.local",
        "reviews",
        r#"
        - match: [{headers: {end-user: {exact: jason}}}]
          route: [{destination: {host: reviews, subset: v2}}]
        - route: [{destination: {host: reviews, subset: v1}}]
        "#,
    )
    .await;
    for _ in 0..5 {
        assert_eq!(label(app(&gw).header("end-user", "jason"), "/").await, "v2");
        assert_eq!(label(app(&gw).header("end-user", "bob"), "/").await, "v1");
        assert_eq!(label(app(&gw), "/").await, "v1");
    }
    assert_eq!((v1.hits(), v2.hits()), (10, 5));
}

// ---------------------------------------------------------------------------------------------
// 5. Redirect, direct response, rewrite, header operations
// ---------------------------------------------------------------------------------------------

/// A gateway whose `app.test` answers a redirect per path prefix.
async fn redirect_gateway() -> TestGateway {
    let http = r#"
        - match: [{uri: {prefix: /old}}]
          redirect: {uri: /new}
        - match: [{uri: {prefix: /moved-host}}]
          redirect: {authority: new.example.com}
        - match: [{uri: {prefix: /moved-port}}]
          redirect: {port: 9443}
        - match: [{uri: {prefix: /secure}}]
          redirect: {scheme: https}
        - match: [{uri: {prefix: /found}}]
          redirect: {uri: /elsewhere, redirectCode: 302}
        - match: [{uri: {prefix: /permanent}}]
          redirect: {uri: /elsewhere, redirectCode: 308}
    "#;
    start(&[
        gateway(),
        virtual_service("app", &["app.test"], &["gw"], http),
    ])
    .await
}

#[tokio::test]
async fn redirect_uri_replaces_the_path_and_keeps_the_query() {
    let gw = redirect_gateway().await;
    let r = app(&gw).send("/old/page?x=1&y=2").await;
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(r.header("location"), "http://app.test/new?x=1&y=2");
}

#[tokio::test]
async fn redirect_authority_and_port() {
    let gw = redirect_gateway().await;
    let r = app(&gw).send("/moved-host/p?q=1").await;
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(
        r.header("location"),
        "http://new.example.com/moved-host/p?q=1"
    );
    let r = app(&gw).send("/moved-port/p").await;
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(r.header("location"), "http://app.test:9443/moved-port/p");
    // The request's own port is replaced, or dropped with the old authority.
    let with_port = Client::new(gw.port(8080), "app.test:8080");
    let r = with_port.send("/moved-port/p").await;
    assert_eq!(r.header("location"), "http://app.test:9443/moved-port/p");
    let r = with_port.send("/moved-host/p").await;
    assert_eq!(r.header("location"), "http://new.example.com/moved-host/p");
}

#[tokio::test]
async fn redirect_scheme_https() {
    let gw = redirect_gateway().await;
    let r = app(&gw).send("/secure/p?q=1").await;
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(r.header("location"), "https://app.test/secure/p?q=1");
}

#[tokio::test]
async fn redirect_scheme_change_drops_only_the_default_port() {
    // Envoy (`processRequestHost`) strips the request's port on a scheme change only when it is
    // the default port of the original scheme.
    let gw = redirect_gateway().await;
    let r = Client::new(gw.port(8080), "app.test:80")
        .send("/secure/p")
        .await;
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(r.header("location"), "https://app.test/secure/p");
    let r = Client::new(gw.port(8080), "app.test:8080")
        .send("/secure/p")
        .await;
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(r.header("location"), "https://app.test:8080/secure/p");
}

#[tokio::test]
async fn redirect_codes_default_to_301() {
    let gw = redirect_gateway().await;
    let r = app(&gw).send("/found").await;
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(r.header("location"), "http://app.test/elsewhere");
    let r = app(&gw).send("/permanent").await;
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(r.header("location"), "http://app.test/elsewhere");
    let r = app(&gw).send("/old").await;
    assert_eq!(r.status, 301, "{r:?}");
}

/// A gateway whose `app.test` answers direct responses.
async fn direct_gateway() -> TestGateway {
    let http = r#"
        - match: [{uri: {exact: /maintenance}}]
          directResponse: {status: 503, body: {string: "down for maintenance"}}
        - match: [{uri: {exact: /bytes}}]
          directResponse: {status: 200, body: {bytes: aGVsbG8gYnl0ZXM=}}
        - match: [{uri: {exact: /teapot}}]
          directResponse: {status: 418}
    "#;
    start(&[
        gateway(),
        virtual_service("app", &["app.test"], &["gw"], http),
    ])
    .await
}

#[tokio::test]
async fn direct_response_with_string_body() {
    let gw = direct_gateway().await;
    let r = app(&gw).send("/maintenance").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body, "down for maintenance");
    let r = app(&gw).send("/teapot").await;
    assert_eq!(r.status, 418, "{r:?}");
    assert_eq!(r.body, "");
}

#[tokio::test]
async fn direct_response_with_base64_bytes_body() {
    let gw = direct_gateway().await;
    let r = app(&gw).send("/bytes").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "hello bytes");
}

#[tokio::test]
async fn rewrite_uri_replaces_the_matched_prefix() {
    let a = Upstream::new("a").run().await;
    let gw = start(&[
        gateway(),
        backend("a.svc", &a),
        virtual_service(
            "app",
            &["app.test"],
            &["gw"],
            r#"
            - match: [{uri: {prefix: /api/v1}}, {uri: {prefix: /legacy}}]
              rewrite: {uri: /v2}
              route: [{destination: {host: a.svc}}]
            "#,
        ),
    ])
    .await;
    assert_eq!(label(app(&gw), "/api/v1/users?id=7").await, "a");
    assert_eq!(a.last().uri, "/v2/users?id=7");
    assert_eq!(a.last().headers["host"], "app.test");
    assert_eq!(label(app(&gw), "/api/v1").await, "a");
    assert_eq!(a.last().uri, "/v2");
    // The prefix replaced is the one of the match block that matched.
    assert_eq!(label(app(&gw), "/legacy/users").await, "a");
    assert_eq!(a.last().uri, "/v2/users");
}

#[tokio::test]
async fn rewrite_uri_replaces_the_whole_path_after_an_exact_or_regex_match() {
    // Istio turns `rewrite.uri` into Envoy's `prefix_rewrite`, which replaces what the route
    // matched: the whole path for exact (`path`) and regex (`safe_regex`) matches.
    let a = Upstream::new("a").run().await;
    let gw = start(&[
        gateway(),
        backend("a.svc", &a),
        virtual_service(
            "app",
            &["app.test"],
            &["gw"],
            r#"
            - match: [{uri: {exact: /old/path}}]
              rewrite: {uri: /new/path}
              route: [{destination: {host: a.svc}}]
            - match: [{uri: {regex: '/v1/[a-z]+'}}]
              rewrite: {uri: /v2/all}
              route: [{destination: {host: a.svc}}]
            "#,
        ),
    ])
    .await;
    assert_eq!(label(app(&gw), "/old/path?q=1").await, "a");
    assert_eq!(a.last().uri, "/new/path?q=1");
    assert_eq!(label(app(&gw), "/v1/users?id=7").await, "a");
    assert_eq!(a.last().uri, "/v2/all?id=7");
}

#[tokio::test]
async fn rewrite_authority_changes_the_upstream_host() {
    let a = Upstream::new("a").run().await;
    let gw = start(&[
        gateway(),
        backend("a.svc", &a),
        virtual_service(
            "app",
            &["app.test"],
            &["gw"],
            r#"
            - rewrite: {authority: internal.example.com}
              route: [{destination: {host: a.svc}}]
            "#,
        ),
    ])
    .await;
    assert_eq!(label(app(&gw), "/x?y=1").await, "a");
    assert_eq!(a.last().headers["host"], "internal.example.com");
    assert_eq!(a.last().uri, "/x?y=1");
}

#[tokio::test]
async fn rule_level_header_operations() {
    let a = Upstream::new("a").run().await;
    let gw = start(&[
        gateway(),
        backend("a.svc", &a),
        virtual_service(
            "app",
            &["app.test"],
            &["gw"],
            r#"
            - match: [{uri: {prefix: /strip}}]
              headers:
                response:
                  remove: [x-upstream]
              route: [{destination: {host: a.svc}}]
            - headers:
                request:
                  set: {x-set: replaced}
                  add: {x-add: added}
                  remove: [x-remove]
                response:
                  set: {x-upstream: replaced}
                  add: {x-added: added}
              route: [{destination: {host: a.svc}}]
            "#,
        ),
    ])
    .await;
    let r = app(&gw)
        .header("x-set", "original")
        .header("x-add", "original")
        .header("x-remove", "bye")
        .header("x-other", "kept")
        .send("/")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = a.last().headers;
    assert_eq!(values(&seen, "x-set"), ["replaced"]);
    assert_eq!(values(&seen, "x-add"), ["original", "added"]);
    assert!(seen.get("x-remove").is_none(), "{seen:?}");
    assert_eq!(values(&seen, "x-other"), ["kept"]);
    assert_eq!(values(&r.headers, "x-upstream"), ["replaced"]);
    assert_eq!(values(&r.headers, "x-added"), ["added"]);

    let r = app(&gw).send("/strip").await;
    assert_eq!(r.body, "a");
    assert!(r.headers.get("x-upstream").is_none(), "{r:?}");
}

#[tokio::test]
async fn destination_level_header_operations_apply_to_their_destination_only() {
    let a = Upstream::new("a").run().await;
    let b = Upstream::new("b").run().await;
    let gw = start(&[
        gateway(),
        backend("a.svc", &a),
        backend("b.svc", &b),
        virtual_service(
            "app",
            &["app.test"],
            &["gw"],
            r#"
            - route:
              - destination: {host: a.svc}
                weight: 50
                headers:
                  request: {set: {x-dest: a}, add: {x-add: a}, remove: [x-remove]}
                  response: {set: {x-resp: a}, add: {x-upstream: extra-a}}
              - destination: {host: b.svc}
                weight: 50
                headers:
                  request: {set: {x-dest: b}}
                  response: {set: {x-resp: b}, remove: [x-upstream]}
            "#,
        ),
    ])
    .await;
    for _ in 0..40 {
        let r = app(&gw)
            .header("x-add", "original")
            .header("x-remove", "bye")
            .send("/")
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        match r.body.as_str() {
            "a" => {
                assert_eq!(r.header("x-resp"), "a");
                assert_eq!(values(&r.headers, "x-upstream"), ["a", "extra-a"]);
            }
            "b" => {
                assert_eq!(r.header("x-resp"), "b");
                assert!(r.headers.get("x-upstream").is_none(), "{r:?}");
            }
            other => panic!("unexpected body {other:?}"),
        }
    }
    assert!(a.hits() > 0 && b.hits() > 0);
    for s in a.seen() {
        assert_eq!(values(&s.headers, "x-dest"), ["a"]);
        assert_eq!(values(&s.headers, "x-add"), ["original", "a"]);
        assert!(s.headers.get("x-remove").is_none(), "{s:?}");
    }
    for s in b.seen() {
        assert_eq!(values(&s.headers, "x-dest"), ["b"]);
        assert_eq!(values(&s.headers, "x-add"), ["original"]);
        assert_eq!(values(&s.headers, "x-remove"), ["bye"]);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Proxy behaviour
// ---------------------------------------------------------------------------------------------

/// A gateway routing every request for `app.test` to the single upstream `u`.
async fn proxy_to(u: &UpstreamHandle) -> TestGateway {
    start(&[
        gateway(),
        backend("a.svc", u),
        virtual_service(
            "app",
            &["app.test"],
            &["gw"],
            "- route: [{destination: {host: a.svc}}]",
        ),
    ])
    .await
}

#[tokio::test]
async fn host_method_path_and_body_preserved_to_upstream() {
    let a = Upstream::new("a").run().await;
    let gw = proxy_to(&a).await;
    let r = app(&gw).method("POST").body("payload").send("/p?q=1").await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = a.last();
    assert_eq!(seen.headers["host"], "app.test");
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri, "/p?q=1");
    assert_eq!(seen.body, "payload");
}

#[tokio::test]
async fn x_forwarded_for_appended_and_proto_set() {
    let a = Upstream::new("a").run().await;
    let gw = proxy_to(&a).await;
    label(app(&gw), "/").await;
    assert_eq!(values(&a.last().headers, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(values(&a.last().headers, "x-forwarded-proto"), ["http"]);
    // At the edge the connection's scheme wins over a client-supplied x-forwarded-proto.
    label(
        app(&gw)
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", "https"),
        "/",
    )
    .await;
    assert_eq!(
        values(&a.last().headers, "x-forwarded-for"),
        ["203.0.113.7, 127.0.0.1"]
    );
    assert_eq!(values(&a.last().headers, "x-forwarded-proto"), ["http"]);
}

#[tokio::test]
async fn x_request_id_generated_when_absent() {
    let a = Upstream::new("a").run().await;
    let gw = proxy_to(&a).await;
    label(app(&gw), "/").await;
    let first = a.last().headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(is_uuid(&first), "{first:?}");
    label(app(&gw), "/").await;
    let second = a.last().headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(is_uuid(&second), "{second:?}");
    assert_ne!(first, second);
}

#[tokio::test]
async fn x_request_id_passed_through_when_present() {
    let a = Upstream::new("a").run().await;
    let gw = proxy_to(&a).await;
    label(app(&gw).header("x-request-id", "client-id-42"), "/").await;
    assert_eq!(values(&a.last().headers, "x-request-id"), ["client-id-42"]);
}

#[tokio::test]
async fn hop_by_hop_headers_not_forwarded() {
    let a = Upstream::new("a").run().await;
    let gw = proxy_to(&a).await;
    let r = app(&gw)
        .header("connection", "x-foo")
        .header("x-foo", "private")
        .header("keep-alive", "timeout=5")
        .header("x-keep", "1")
        .send("/")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = a.last().headers;
    assert!(seen.get("x-foo").is_none(), "{seen:?}");
    assert!(seen.get("keep-alive").is_none(), "{seen:?}");
    assert!(
        !values(&seen, "connection")
            .iter()
            .any(|v| v.contains("x-foo")),
        "{seen:?}"
    );
    assert_eq!(values(&seen, "x-keep"), ["1"]);
}

#[tokio::test]
async fn http2_client_requests_are_routed_like_http1() {
    let a = Upstream::new("a").run().await;
    let b = Upstream::new("b").run().await;
    let gw = start(&[
        gateway(),
        backend("a.svc", &a),
        backend("b.svc", &b),
        virtual_service(
            "app",
            &["app.test"],
            &["gw"],
            r#"
            - match: [{uri: {prefix: /reviews}, headers: {end-user: {exact: jason}}}]
              route: [{destination: {host: b.svc}}]
            - route: [{destination: {host: a.svc}}]
            "#,
        ),
    ])
    .await;
    let r = app(&gw)
        .h2()
        .header("end-user", "jason")
        .send("/reviews?x=1")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "b");
    let seen = b.last();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.uri, "/reviews?x=1");
    assert_eq!(seen.headers["host"], "app.test");
    assert_eq!(label(app(&gw).h2(), "/reviews").await, "a");
    let r = Client::new(gw.port(8080), "unknown.test")
        .h2()
        .send("/")
        .await;
    assert_eq!(r.status, 404, "{r:?}");
}

#[tokio::test]
async fn http2_service_port_reaches_upstream_over_h2c() {
    let g = Upstream::new("g").http2().run().await;
    let gw = start(&[
        gateway(),
        service_entry("g.svc", 80, "HTTP2", &[(&g, "v1")]),
        virtual_service(
            "app",
            &["app.test"],
            &["gw"],
            "- route: [{destination: {host: g.svc}}]",
        ),
    ])
    .await;
    assert_eq!(label(app(&gw), "/x?y=1").await, "g");
    let seen = g.last();
    assert_eq!(seen.version, Version::HTTP_2);
    let uri: Uri = seen.uri.parse().unwrap();
    assert_eq!(uri.authority().map(|a| a.as_str()), Some("app.test"));
    assert_eq!(uri.path_and_query().map(|p| p.as_str()), Some("/x?y=1"));
    // And from an h2 client too.
    assert_eq!(label(app(&gw).h2(), "/h2").await, "g");
    assert_eq!(g.last().version, Version::HTTP_2);
}

/// One request with camel-case header names through a gateway (`preserve`: with
/// `--preserve-header-case`); returns the head the upstream saw and the client's reply.
async fn camel_case_exchange(preserve: bool) -> (String, String) {
    let (port, upstream) = raw_upstream().await;
    let docs = [
        gateway(),
        raw_backend("raw.svc", port),
        virtual_service(
            "app",
            &["app.test"],
            &["gw"],
            "- route: [{destination: {host: raw.svc}}]",
        ),
    ];
    let gw =
        TestGateway::start_with(&docs.concat(), |b| b.pool.preserve_header_case = preserve).await;
    let reply = raw_exchange(
        gw.port(8080),
        b"GET /case HTTP/1.1\r\nHost: app.test\r\nX-CamelCase-Header: 1\r\n\r\n",
        "raw-upstream",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let head = within(upstream).await.unwrap();
    (String::from_utf8_lossy(&head).into_owned(), reply)
}

#[tokio::test]
async fn http1_header_names_lowercase_by_default_as_envoy() {
    let (head, reply) = camel_case_exchange(false).await;
    assert!(head.contains("\r\nx-camelcase-header: 1\r\n"), "{head}");
    assert!(reply.contains("\r\nx-upstream-camelcase: 1\r\n"), "{reply}");
}

#[tokio::test]
async fn http1_header_name_case_preserved_end_to_end_when_asked() {
    let (head, reply) = camel_case_exchange(true).await;
    assert!(head.contains("\r\nX-CamelCase-Header: 1\r\n"), "{head}");
    assert!(reply.contains("\r\nX-Upstream-CamelCase: 1\r\n"), "{reply}");
}

// ---------------------------------------------------------------------------------------------
// 7. Endpoints
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn workload_entries_selected_by_service_entry_workload_selector() {
    let w1 = Upstream::new("w1").run().await;
    let w2 = Upstream::new("w2").run().await;
    let other_app = Upstream::new("other-app").run().await;
    let other_ns = Upstream::new("other-ns").run().await;
    let workload = |name: &str, ns: &str, app: &str, u: &UpstreamHandle| {
        doc(&format!(
            r#"
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata:
              name: {name}
              namespace: {ns}
            spec:
              address: 127.0.0.1
              ports: {{http: {port}}}
              labels: {{app: {app}}}
            "#,
            port = u.port()
        ))
    };
    let gw = start(&[
        gateway(),
        doc(r#"
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata:
              name: workloads
            spec:
              hosts: [wl.svc]
              location: MESH_INTERNAL
              resolution: STATIC
              ports:
              - {number: 80, name: http, protocol: HTTP}
              workloadSelector:
                labels: {app: wl}
        "#),
        workload("w1", "default", "wl", &w1),
        workload("w2", "default", "wl", &w2),
        workload("other-app", "default", "other", &other_app),
        workload("other-ns", "elsewhere", "wl", &other_ns),
        virtual_service(
            "app",
            &["app.test"],
            &["gw"],
            "- route: [{destination: {host: wl.svc}}]",
        ),
    ])
    .await;
    for _ in 0..10 {
        let body = label(app(&gw), "/").await;
        assert!(body == "w1" || body == "w2", "{body}");
    }
    assert!(w1.hits() > 0 && w2.hits() > 0);
    assert_eq!((other_app.hits(), other_ns.hits()), (0, 0));
}

#[tokio::test]
async fn dns_resolution_connects_to_localhost_endpoint() {
    let a = Upstream::new("a").run().await;
    let gw = start(&[
        gateway(),
        doc(&format!(
            r#"
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata:
              name: dns
            spec:
              hosts: [dns.example.com]
              location: MESH_EXTERNAL
              resolution: DNS
              ports:
              - {{number: 80, name: http, protocol: HTTP}}
              endpoints:
              - address: localhost
                ports: {{http: {port}}}
            "#,
            port = a.port()
        )),
        virtual_service(
            "app",
            &["app.test"],
            &["gw"],
            "- route: [{destination: {host: dns.example.com}}]",
        ),
    ])
    .await;
    assert_eq!(label(app(&gw), "/dns").await, "a");
    assert_eq!(a.last().uri, "/dns");
}

#[tokio::test]
async fn endpoint_port_chosen_by_service_port_name() {
    let web = Upstream::new("web").run().await;
    let admin = Upstream::new("admin").run().await;
    let gw = start(&[
        gateway(),
        doc(&format!(
            r#"
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata:
              name: multi
            spec:
              hosts: [multi.svc]
              location: MESH_INTERNAL
              resolution: STATIC
              ports:
              - {{number: 80, name: web, protocol: HTTP}}
              - {{number: 9000, name: admin, protocol: HTTP}}
              endpoints:
              - address: 127.0.0.1
                ports: {{admin: {admin}, web: {web}}}
            "#,
            web = web.port(),
            admin = admin.port()
        )),
        virtual_service(
            "app",
            &["app.test"],
            &["gw"],
            r#"
            - match: [{uri: {prefix: /admin}}]
              route: [{destination: {host: multi.svc, port: {number: 9000}}}]
            - route: [{destination: {host: multi.svc, port: {number: 80}}}]
            "#,
        ),
    ])
    .await;
    assert_eq!(label(app(&gw), "/admin").await, "admin");
    assert_eq!(label(app(&gw), "/").await, "web");
}

#[tokio::test]
async fn target_port_used_when_endpoint_has_no_port_of_that_name() {
    let a = Upstream::new("a").run().await;
    let decoy = Upstream::new("decoy").run().await;
    let gw = start(&[
        gateway(),
        doc(&format!(
            r#"
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata:
              name: target
            spec:
              hosts: [target.svc]
              location: MESH_INTERNAL
              resolution: STATIC
              ports:
              - {{number: 80, name: web, protocol: HTTP, targetPort: {target}}}
              endpoints:
              - address: 127.0.0.1
                ports: {{metrics: {decoy}}}
            "#,
            target = a.port(),
            decoy = decoy.port()
        )),
        virtual_service(
            "app",
            &["app.test"],
            &["gw"],
            "- route: [{destination: {host: target.svc}}]",
        ),
    ])
    .await;
    assert_eq!(label(app(&gw), "/").await, "a");
    assert_eq!(decoy.hits(), 0);
}

// ---------------------------------------------------------------------------------------------
// 8. Mesh port and gateway selector
// ---------------------------------------------------------------------------------------------

/// A gateway with `--mesh-port 15001`, a mesh-only VirtualService `reviews` (short name,
/// served by `reviews.default.svc.cluster.local`) and a gateway-bound one for `edge.test`.
async fn mesh_gateway(reviews: &UpstreamHandle) -> TestGateway {
    let yaml = [
        gateway(),
        service_entry(
            "reviews.default.svc.cluster.local",
            9080,
            "HTTP",
            &[(reviews, "v1")],
        ),
        virtual_service(
            "reviews",
            &["reviews"],
            &[],
            "- route: [{destination: {host: reviews}}]",
        ),
        virtual_service("edge", &["edge.test"], &["gw"], &answer("edge", "")),
    ]
    .concat();
    TestGateway::start_with(&yaml, |b| b.mesh_port = Some(15001)).await
}

#[tokio::test]
async fn mesh_port_serves_gatewayless_virtual_services_by_host() {
    let reviews = Upstream::new("reviews-v1").run().await;
    let gw = mesh_gateway(&reviews).await;
    let mesh = |host: &str| Client::new(gw.port(15001), host);
    assert_eq!(label(mesh("reviews"), "/r?x=1").await, "reviews-v1");
    assert_eq!(reviews.last().uri, "/r?x=1");
    assert_eq!(reviews.last().headers["host"], "reviews");
    assert_eq!(
        label(mesh("reviews.default.svc.cluster.local:9080"), "/").await,
        "reviews-v1"
    );
    // Gateway-bound VirtualServices stay on the gateway ports, and the other way round.
    let r = mesh("edge.test").send("/").await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(
        label(Client::new(gw.port(8080), "edge.test"), "/").await,
        "edge"
    );
    let r = Client::new(gw.port(8080), "reviews").send("/").await;
    assert_eq!(r.status, 404, "{r:?}");
}

#[tokio::test]
async fn mesh_port_acts_as_forward_proxy_for_absolute_form_requests() {
    let reviews = Upstream::new("reviews-v1").run().await;
    let gw = mesh_gateway(&reviews).await;
    // The request-line authority wins over the Host header (RFC 9112 section 3.2.2); read
    // until the gateway closes.
    let reply = raw_exchange(
        gw.port(15001),
        b"GET http://reviews/x?y=1 HTTP/1.1\r\nHost: ignored.test\r\nConnection: close\r\n\r\n",
        "",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("reviews-v1"), "{reply}");
    let seen = reviews.last();
    assert_eq!(seen.uri, "/x?y=1");
    assert_eq!(seen.headers["host"], "reviews");
    // An empty path goes upstream as `/`, the query kept.
    let reply = raw_exchange(
        gw.port(15001),
        b"GET http://reviews?y=2 HTTP/1.1\r\nHost: ignored.test\r\nConnection: close\r\n\r\n",
        "",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(reviews.last().uri, "/?y=2");
}

#[tokio::test]
async fn selector_restricts_served_gateways() {
    let yaml = [
        doc(r#"
            apiVersion: networking.istio.io/v1
            kind: Gateway
            metadata:
              name: ingress
            spec:
              selector: {istio: ingressgateway}
              servers:
              - port: {number: 8080, name: http, protocol: HTTP}
                hosts: [a.test]
        "#),
        doc(r#"
            apiVersion: networking.istio.io/v1
            kind: Gateway
            metadata:
              name: egress
            spec:
              selector: {istio: egressgateway}
              servers:
              - port: {number: 8080, name: http, protocol: HTTP}
                hosts: [b.test]
              - port: {number: 9090, name: http-alt, protocol: HTTP}
                hosts: ["*"]
        "#),
        virtual_service("a", &["a.test"], &["ingress"], &answer("a", "")),
        virtual_service("b", &["b.test"], &["egress"], &answer("b", "")),
    ]
    .concat();
    let gw = TestGateway::start_with(&yaml, |b| {
        b.selector = BTreeMap::from([("istio".to_owned(), "ingressgateway".to_owned())]);
    })
    .await;
    assert!(gw.running.listener(8080).is_some());
    assert!(
        gw.running.listener(9090).is_none(),
        "{:?}",
        gw.running.listeners()
    );
    assert_eq!(label(Client::new(gw.port(8080), "a.test"), "/").await, "a");
    let r = Client::new(gw.port(8080), "b.test").send("/").await;
    assert_eq!(r.status, 404, "{r:?}");
}

/// A rule's `headers.response` apply to its direct responses and redirects too, as Envoy
/// applies a route's response header operations to them (how Istio users add HSTS).
#[tokio::test]
async fn response_header_ops_apply_to_direct_responses_and_redirects() {
    let http = "
        - match: [{uri: {prefix: /old}}]
          headers: {response: {set: {strict-transport-security: max-age=60}, add: {x-extra: r}}}
          redirect: {uri: /new}
        - headers: {response: {set: {strict-transport-security: max-age=60}, remove: [content-type]}}
          directResponse: {status: 200, body: {string: ok}}
    ";
    let gw = start(&[
        gateway(),
        virtual_service("app", &["app.test"], &["gw"], http),
    ])
    .await;
    let r = app(&gw).send("/").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("strict-transport-security"), "max-age=60");
    assert_eq!(r.header("content-type"), "", "remove applies too: {r:?}");
    let r = app(&gw).send("/old").await;
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(r.header("strict-transport-security"), "max-age=60");
    assert_eq!(r.header("x-extra"), "r");
}
