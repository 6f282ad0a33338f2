//! `RouteTable::lookup` on the request path: host selection (exact, longest wildcard) and
//! first-match rule evaluation, over tables of 1, 100 and 10,000 hosts with 10 rules each.
//!
//! Tables are built with the public `route` API (not from YAML) once per host count, outside
//! the timed closure. `AllocProfiler` reports allocations per lookup, which must be zero.
//!
//! Run with `cargo bench --bench route_lookup`.

// Setup only: a failed regex compile or a wrong sanity check should stop the bench.
#![allow(clippy::expect_used)]

use std::sync::Arc;

use divan::{black_box, Bencher};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use meshgate::route::{
    Action, DirectResponse, HeaderMatch, HeaderOps, MatchBlock, Miss, RequestView, RetryPolicy,
    Route, RouteTable, StrMatch, VirtualHost,
};

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

/// Host counts every case runs over.
const HOSTS: [usize; 3] = [1, 100, 10_000];

/// Rules per virtual host; the request always matches the last one.
const RULES: usize = 10;

fn main() {
    divan::main();
}

/// How a virtual host's rules match the uri.
#[derive(Clone, Copy)]
enum UriKind {
    /// `Prefix("/svc<i>")`.
    Prefix,
    /// Full-match regex `/svc<i>/[a-z]+/v[0-9]+`.
    Regex,
}

fn header(name: &'static str, value: StrMatch) -> HeaderMatch {
    HeaderMatch {
        name: HeaderName::from_static(name),
        value,
    }
}

/// The 10 rules of one virtual host. Rule `i` matches uri `/svc<i>` (prefix or regex); odd
/// rules also need `x-tenant: tenant<i>`. The last rule has two blocks: the first needs an
/// `x-canary` header the request lacks (a header probe that fails), the second needs
/// `x-tenant: tenant9` and no `x-debug` header, and matches.
///
/// `regexes` holds one compiled regex per rule, cloned into every host: compiling 100,000
/// regexes would dominate setup without changing what a single lookup does.
fn rules(vs: &Arc<str>, kind: UriKind, regexes: &[StrMatch]) -> Vec<Route> {
    (0..RULES)
        .map(|i| {
            let uri = match kind {
                UriKind::Prefix => StrMatch::Prefix(format!("/svc{i}").into()),
                UriKind::Regex => regexes[i].clone(),
            };
            let tenant = || header("x-tenant", StrMatch::Exact(format!("tenant{i}").into()));
            let matches = if i == RULES - 1 {
                vec![
                    MatchBlock {
                        uri: Some(uri.clone()),
                        headers: vec![header("x-canary", StrMatch::Exact("always".into()))],
                        ..Default::default()
                    },
                    MatchBlock {
                        uri: Some(uri),
                        method: Some(StrMatch::Exact("GET".into())),
                        headers: vec![tenant()],
                        without_headers: vec![header("x-debug", StrMatch::Present)],
                        ..Default::default()
                    },
                ]
            } else {
                vec![MatchBlock {
                    uri: Some(uri),
                    headers: if i % 2 == 1 { vec![tenant()] } else { vec![] },
                    ..Default::default()
                }]
            };
            Route {
                virtual_service: vs.clone(),
                index: i,
                name: format!("{vs}.{i}").into(),
                matches,
                action: Action::Respond(DirectResponse {
                    status: StatusCode::OK,
                    body: bytes::Bytes::from_static(b"ok"),
                }),
                rewrite: None,
                headers: HeaderOps::default(),
                timeout: None,
                retry: RetryPolicy::default(),
                fault: None,
                cors: None,
                mirrors: Vec::new().into(),
            }
        })
        .collect()
}

fn compiled_regexes() -> Vec<StrMatch> {
    (0..RULES)
        .map(|i| StrMatch::regex(&format!("/svc{i}/[a-z]+/v[0-9]+")).expect("valid regex"))
        .collect()
}

/// A table with one virtual host per entry of `patterns(h)` for `h in 0..hosts`.
fn table<const N: usize>(
    hosts: usize,
    kind: UriKind,
    patterns: impl Fn(usize) -> [String; N],
) -> RouteTable {
    let regexes = match kind {
        UriKind::Prefix => Vec::new(),
        UriKind::Regex => compiled_regexes(),
    };
    let mut table = RouteTable::default();
    for h in 0..hosts {
        let vs: Arc<str> = format!("ns{h}/vs{h}").into();
        for pattern in patterns(h) {
            table.hosts.entry_or_insert_with(&pattern, || VirtualHost {
                name: pattern.as_str().into(),
                routes: rules(&vs, kind, &regexes),
                https_redirect: false,
            });
        }
    }
    table
}

fn exact_pattern(h: usize) -> String {
    format!("host{h}.example.com")
}

fn wildcard_pattern(h: usize) -> String {
    format!("*.zone{h}.example.com")
}

/// Headers of every request: the tenant the last rule wants, plus noise.
fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-tenant", HeaderValue::from_static("tenant9"));
    h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    h.insert("x-request-id", HeaderValue::from_static("0123456789abcdef"));
    h
}

fn view<'a>(authority: &'a str, path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
    RequestView {
        method: "GET",
        scheme: "http",
        authority,
        path,
        query: Some("page=2"),
        headers,
        port: 8080,
    }
}

/// Checks (untimed) that the request takes the intended path, then times the lookup.
fn run(bencher: Bencher, table: &RouteTable, req: &RequestView<'_>, want: Result<usize, Miss>) {
    let got = table.lookup(req).map(|(route, block)| (route.index, block));
    assert_eq!(got, want.map(|rule| (rule, 1)), "unexpected lookup result");
    bencher.bench(|| black_box(table.lookup(black_box(req))));
}

/// Exact host in the middle of the table; the last rule (uri prefix + headers) matches.
#[divan::bench(args = HOSTS)]
fn exact_host_hit(bencher: Bencher, hosts: usize) {
    let table = table(hosts, UriKind::Prefix, |h| [exact_pattern(h)]);
    let authority = format!("{}:8080", exact_pattern(hosts / 2));
    let headers = request_headers();
    let req = view(&authority, "/svc9/orders/42", &headers);
    run(bencher, &table, &req, Ok(RULES - 1));
}

/// `a.b.zone<N>.example.com` against `*.zone<N>.example.com` patterns: an exact probe and
/// two suffix probes, then the last rule matches.
#[divan::bench(args = HOSTS)]
fn wildcard_host_hit(bencher: Bencher, hosts: usize) {
    let table = table(hosts, UriKind::Prefix, |h| [wildcard_pattern(h)]);
    let authority = format!("a.b.zone{}.example.com:8080", hosts / 2);
    let headers = request_headers();
    let req = view(&authority, "/svc9/orders/42", &headers);
    run(bencher, &table, &req, Ok(RULES - 1));
}

/// Exact host; every rule is a full-match regex and the last one matches.
#[divan::bench(args = HOSTS)]
fn regex_uri_hit(bencher: Bencher, hosts: usize) {
    let table = table(hosts, UriKind::Regex, |h| [exact_pattern(h)]);
    let authority = format!("{}:8080", exact_pattern(hosts / 2));
    let headers = request_headers();
    let req = view(&authority, "/svc9/orders/v2", &headers);
    run(bencher, &table, &req, Ok(RULES - 1));
}

/// Unknown host: each host contributes an exact and a wildcard pattern, so the miss costs
/// an exact probe plus every suffix probe before `Miss::Host`.
#[divan::bench(args = HOSTS)]
fn host_miss(bencher: Bencher, hosts: usize) {
    let table = table(hosts, UriKind::Prefix, |h| {
        [exact_pattern(h), wildcard_pattern(h)]
    });
    let headers = request_headers();
    let req = view("unknown.zone.example.org:8080", "/svc9/orders/42", &headers);
    run(bencher, &table, &req, Err(Miss::Host));
}
