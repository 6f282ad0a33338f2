//! Fuzzing entry points, shared by the cargo-fuzz targets in `fuzz/` and by
//! `tests/fuzz_corpus.rs`, which replays the committed corpora on stable Rust so that a fixed
//! finding stays fixed. Each function takes one fuzz input, runs it through the calls the
//! gateway makes on such bytes, and returns `Err` naming the invariant that broke; a panic
//! inside is a finding too. The gateway itself never calls anything here.
//!
//! Inputs: [`sni()`] a ClientHello; [`config()`] a YAML text; [`route`] a request in a line
//! format; [`framing`] and [`http1`] a selector byte (where the bytes are split into two
//! reads) followed by the bytes of one downstream HTTP/1 connection.
//!
//! Depends on: `tls::sni`, `config`, `analyze`, `explain`, `route`, `http::{framing,
//! strict, server, proxy}`, rustls, tokio.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::config::{
    self, AccessLog, Bootstrap, CompileOptions, ConfigError, ConfigStore, PortProtocol, RawSet,
    Snapshot,
};
use crate::explain::{explain, ExplainRequest};
use crate::http::framing::Framing;
use crate::http::proxy::{ConnInfo, Proxy};
use crate::http::server::{self, HttpLimits, ServerSettings};
use crate::metrics::Metrics;
use crate::route::host_of;
use crate::tls::server::Credentials;
use crate::tls::sni::{self, ClientHello};
use crate::upstream::Registry;

// === sni ===

/// Inputs up to this long are checked at every prefix; longer ones at record boundaries and
/// a few evenly spaced cuts, to keep an execution fast.
const ALL_PREFIXES_UP_TO: usize = 600;
/// Records whose boundaries are checked in a longer input.
const MAX_RECORD_CUTS: usize = 64;

/// Check `sni::parse` on one buffer: it never asks for more beyond `MAX_HELLO` (the peek
/// buffer stays bounded), a prefix never answers differently from the whole (the hello may
/// arrive in any segmentation), bytes after a complete hello change nothing, the name is
/// lowercase, and when rustls also finds a name in the bytes it is the same one (otherwise
/// routing and the TLS stack would disagree on which server the client asked for).
pub fn sni(data: &[u8]) -> Result<(), String> {
    let whole = sni::parse(data);
    if whole == ClientHello::NeedMore && data.len() >= sni::MAX_HELLO {
        return Err(format!(
            "NeedMore after {} bytes: the peek buffer would grow without bound",
            data.len()
        ));
    }
    for cut in prefix_cuts(data) {
        let part = sni::parse(&data[..cut]);
        if part != ClientHello::NeedMore && part != whole {
            return Err(format!(
                "the first {cut} bytes parse as {part:?}, all {} as {whole:?}",
                data.len()
            ));
        }
    }
    let ClientHello::Hello(hello) = &whole else {
        return Ok(());
    };
    let mut longer = data.to_vec();
    longer.extend_from_slice(&[0x17, 3, 3, 0, 1, 0]);
    let after = sni::parse(&longer);
    if after != whole {
        return Err(format!(
            "a record after the hello changes {whole:?} into {after:?}"
        ));
    }
    if let Some(name) = &hello.sni {
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!("server name {name:?} is empty or not lowercase"));
        }
        if let Some(theirs) = rustls_server_name(data) {
            if !name.eq_ignore_ascii_case(&theirs) {
                return Err(format!(
                    "sni::parse finds {name:?}, rustls finds {theirs:?}"
                ));
            }
        }
    }
    Ok(())
}

/// Where to cut `data` for the prefix check.
fn prefix_cuts(data: &[u8]) -> Vec<usize> {
    if data.len() <= ALL_PREFIXES_UP_TO {
        return (0..data.len()).collect();
    }
    let mut cuts: Vec<usize> = (1..16).map(|i| data.len() * i / 16).collect();
    let mut at = 0;
    // Record boundaries are where `parse` changes state; the first few dozen suffice (a
    // hello in thousands of one-byte records would otherwise cost seconds per input).
    let mut records = 0;
    while let Some(h) = data.get(at..at + 5).filter(|_| records < MAX_RECORD_CUTS) {
        records += 1;
        cuts.extend([at, at + 1, at + 4, at + 5, at + 6]);
        at += 5 + usize::from(u16::from_be_bytes([h[3], h[4]]));
        cuts.extend([at.saturating_sub(1), at]);
    }
    cuts.retain(|c| *c < data.len());
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// The server name rustls reads from the same bytes, when it accepts them as a ClientHello.
fn rustls_server_name(data: &[u8]) -> Option<String> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = data;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(n) if n > 0 => {}
            _ => return None,
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                return accepted.client_hello().server_name().map(str::to_owned);
            }
            Ok(None) => {}
            Err(_) => return None,
        }
    }
    None
}

// === config ===

/// Certificates for [`config()`] without touching the disk (a fuzzed config may name any
/// path): every `*.crt` / `*.pem` file reads as `cert`, every `*.key` file as `key`,
/// anything else is missing. `credentialName` lookups therefore find a certificate, a key
/// and a CA bundle.
#[derive(Debug, Clone)]
pub struct FuzzCredentials {
    /// PEM certificate chain.
    pub cert: Vec<u8>,
    /// PEM private key for `cert`.
    pub key: Vec<u8>,
}

impl Credentials for FuzzCredentials {
    fn certs_dir(&self) -> &Path {
        Path::new("/meshgate-fuzz/certs")
    }

    fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt" | "pem") => Ok(self.cert.clone()),
            Some("key") => Ok(self.key.clone()),
            _ => Err(std::io::ErrorKind::NotFound.into()),
        }
    }
}

/// The file name fuzzed configs are reported under.
const CONFIG_FILE: &str = "fuzz.yaml";
/// The mesh port of the second compile, so mesh-bound VirtualServices are compiled too.
const MESH_PORT: u16 = 15001;
/// A fixed "now" for certificate expiry checks, so a run does not depend on the date.
const NOW_SECS: u64 = 1_900_000_000;

/// Parse `data` (UTF-8 YAML) as the file source does, compile it (with default options,
/// then with a mesh port) and, when it compiles, analyze it as `meshgate validate` does and
/// explain a request for each served host. Invalid configs are expected; what must hold is
/// that nothing panics and every reported line exists in the text.
pub fn config(data: &[u8], creds: &FuzzCredentials) -> Result<(), String> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let lines = line_count(text);
    let mut raw = RawSet::default();
    let mut errors = Vec::new();
    config::source::file::parse_into(&mut raw, &Arc::from(CONFIG_FILE), text, &mut errors);
    check_lines(&errors, lines)?;
    // The file source stops at parse errors; compiling what did parse anyway checks that
    // compile copes with any set of resources (the Kubernetes source builds them without
    // this parser).
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS);
    for mesh_port in [None, Some(MESH_PORT)] {
        let opts = CompileOptions {
            selector: BTreeMap::new(),
            workload_labels: None,
            mesh_port,
            registry: registry(),
            credentials: creds,
        };
        match config::compile(&raw, &opts) {
            Ok(snap) => {
                check_lines(&snap.warnings, lines)?;
                for f in crate::analyze::analyze(&raw, Some(&snap), creds, now) {
                    check_lines(std::slice::from_ref(&f.at), lines)?;
                    let _ = f.to_string();
                }
                explain_served_hosts(&snap)?;
            }
            Err(failure) => {
                check_lines(&failure.errors, lines)?;
                check_lines(&failure.warnings, lines)?;
                for f in crate::analyze::analyze(&raw, None, creds, now) {
                    check_lines(std::slice::from_ref(&f.at), lines)?;
                }
            }
        }
    }
    Ok(())
}

/// Upstream pools are shared across compiles, as in the gateway.
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// Lines in `text` as YAML counts them (LF, CRLF and a lone CR each end one).
fn line_count(text: &str) -> u32 {
    let b = text.as_bytes();
    let breaks = b
        .iter()
        .enumerate()
        .filter(|(i, c)| **c == b'\n' || (**c == b'\r' && b.get(i + 1) != Some(&b'\n')))
        .count();
    u32::try_from(breaks + 1).unwrap_or(u32::MAX)
}

/// Every error names the fuzzed file and a line inside it (0: unknown).
fn check_lines(errors: &[ConfigError], lines: u32) -> Result<(), String> {
    for e in errors {
        let msg = e.to_string();
        if !e.file.is_empty() && &*e.file != CONFIG_FILE {
            return Err(format!("error names file {:?}: {msg}", e.file));
        }
        // The YAML parser places an error at the end of a text without a final line break
        // on the line after the last, hence the `+ 1`.
        if e.line > lines.saturating_add(1) {
            return Err(format!("line {} of a {lines}-line text: {msg}", e.line));
        }
    }
    Ok(())
}

/// Explain a GET for up to four hosts on each of up to four listeners.
fn explain_served_hosts(snap: &Snapshot) -> Result<(), String> {
    for l in snap.listeners.iter().take(4) {
        let (scheme, patterns): (&str, Vec<String>) = match l.protocol {
            PortProtocol::Tls => (
                "https",
                snap.tls.get(&l.port).map_or_else(Vec::new, |t| {
                    t.by_sni.iter().map(|(p, _)| p).take(4).collect()
                }),
            ),
            _ => (
                "http",
                snap.table(l.port).map_or_else(Vec::new, |t| {
                    t.hosts.iter().map(|(p, _)| p).take(4).collect()
                }),
            ),
        };
        for p in patterns {
            let url = format!("{scheme}://{}/", p.replace('*', "w"));
            let Ok(req) = ExplainRequest::try_new(&url, None, [], None, Some(l.port)) else {
                continue;
            };
            let ex = explain(snap, &req);
            let _ = ex.to_string();
            serde_json::to_string(&ex).map_err(|e| format!("explanation for {url}: {e}"))?;
        }
    }
    Ok(())
}

// === route ===

/// The routes [`route`] looks requests up in: one Gateway on ports 8080 and 9090, and rules
/// using every kind of match condition, including pairs where an earlier rule covers (or
/// seems to cover) a later one, so the unreachable-rule analysis is checked against the
/// matcher.
pub const ROUTE_CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 9090, name: admin, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop.example.com]
  gateways: [gw]
  http:
  - name: login
    match: [{uri: {exact: /login}, method: {exact: POST}}]
    directResponse: {status: 200}
  - name: api-v1
    match: [{uri: {prefix: /api/v1}, headers: {x-version: {exact: "1"}}}]
    directResponse: {status: 200}
  - name: api-v1-users
    match: [{uri: {prefix: /api/v1/users}, headers: {x-version: {exact: "1"}, x-user: {}}}]
    directResponse: {status: 200}
  - name: static
    match: [{uri: {prefix: /Static}, ignoreUriCase: true}]
    directResponse: {status: 200}
  - name: static-app
    match: [{uri: {exact: /static/app.js}}]
    directResponse: {status: 200}
  - name: img
    match: [{uri: {regex: "/img/[a-z]+\\.png"}, ignoreUriCase: true}]
    directResponse: {status: 200}
  - name: img-logo
    match: [{uri: {exact: /img/logo.png}, ignoreUriCase: true}]
    directResponse: {status: 200}
  - name: search
    match: [{uri: {prefix: /search}, queryParams: {debug: {exact: "1"}, q: {}}}]
    directResponse: {status: 200}
  - name: page
    match: [{queryParams: {page: {regex: "[0-9]+"}}}]
    directResponse: {status: 200}
  - name: admin-port
    match: [{port: 9090, uri: {prefix: /admin}}]
    directResponse: {status: 200}
  - name: items-write
    match: [{method: {regex: "PUT|PATCH"}, uri: {prefix: /items}}]
    directResponse: {status: 200}
  - name: private
    match: [{withoutHeaders: {x-user: {}}, uri: {prefix: /private}}]
    directResponse: {status: 401}
  - name: private-jason
    match: [{withoutHeaders: {x-user: {regex: ".*"}}, uri: {prefix: /private/jason}}]
    directResponse: {status: 401}
  - name: two-blocks
    match: [{uri: {exact: /a}}, {uri: {exact: /b}, authority: {prefix: "shop.example.com:"}}]
    directResponse: {status: 200}
  - name: tenant-any
    match: [{headers: {x-tenant: {regex: ".*"}}}]
    directResponse: {status: 200}
  - name: tenant-present
    match: [{headers: {x-tenant: {}}}]
    directResponse: {status: 200}
  - name: tls-only
    match: [{scheme: {exact: https}}]
    directResponse: {status: 200}
  - name: root
    match: [{uri: {prefix: /}}]
    directResponse: {status: 200}
  - name: fallback
    directResponse: {status: 404}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop-extra}
spec:
  hosts: [shop.example.com]
  gateways: [gw]
  http:
  - name: merged-late
    match: [{uri: {prefix: /late}}]
    directResponse: {status: 200}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wild}
spec:
  hosts: ["*.example.com"]
  gateways: [gw]
  http:
  - name: old
    match: [{uri: {prefix: /old}}, {uri: {regex: "/legacy/.*"}}]
    redirect: {uri: /new, redirectCode: 308}
  - name: caps
    match: [{authority: {regex: "[a-z]+\\.example\\.com(:[0-9]+)?"}, headers: {accept: {prefix: text/}}}]
    directResponse: {status: 200}
  - name: everything
    match: [{uri: {regex: "/.*"}}]
    directResponse: {status: 200}
  - name: after-everything
    directResponse: {status: 404}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: any}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - name: health
    match: [{uri: {exact: /healthz}, method: {exact: GET}}]
    directResponse: {status: 200}
  - name: any-fallback
    directResponse: {status: 404}
"#;

/// `ROUTE_CONFIG`, compiled once.
fn route_snapshot() -> Result<&'static Snapshot, String> {
    static SNAP: OnceLock<Result<Snapshot, String>> = OnceLock::new();
    SNAP.get_or_init(|| compile_yaml(ROUTE_CONFIG, None).map_err(|e| format!("ROUTE_CONFIG: {e}")))
        .as_ref()
        .map_err(Clone::clone)
}

/// Compile one YAML text the way the gateway compiles its config files.
fn compile_yaml(yaml: &str, creds: Option<&FuzzCredentials>) -> Result<Snapshot, String> {
    let none = FuzzCredentials {
        cert: Vec::new(),
        key: Vec::new(),
    };
    let creds = creds.unwrap_or(&none);
    let raw = config::source::file::parse_str(CONFIG_FILE, yaml).map_err(join_errors)?;
    let opts = CompileOptions {
        selector: BTreeMap::new(),
        workload_labels: None,
        mesh_port: None,
        registry: registry(),
        credentials: creds,
    };
    config::compile(&raw, &opts).map_err(|f| join_errors(f.errors))
}

fn join_errors(errors: Vec<ConfigError>) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Look one request up in `ROUTE_CONFIG` as `Proxy::handle` does, and check that routing
/// agrees with itself: host lookup ignores case, every match block's `first_mismatch`
/// (explain's reason) agrees with `matches`, `explain` picks the same rule, and the rule
/// that took the request is not one `explain` reports as unreachable.
///
/// Input lines (LF-separated): method, request target, listener port (`9090`, else 8080),
/// then `name: value` headers. A request hyper or the proxy would refuse before routing is
/// skipped.
pub fn route(data: &[u8]) -> Result<(), String> {
    let snap = route_snapshot()?;
    let Some(req) = RouteRequest::parse(data) else {
        return Ok(());
    };
    let Some(table) = snap.table(req.port) else {
        return Err(format!("no route table on port {}", req.port));
    };
    let view = crate::route::RequestView {
        method: req.method.as_str(),
        scheme: "http",
        authority: &req.authority,
        path: &req.path,
        query: req.query.as_deref(),
        headers: &req.headers,
        port: req.port,
    };
    let host = host_of(&req.authority);
    let vhost = table.hosts.lookup(host);
    let lower = table.hosts.lookup(&host.to_ascii_lowercase());
    // fuzz/regressions/route/host-long-mixed-case: a host longer than 255 bytes with an
    // uppercase letter went to the `*` virtual host (fixed).
    if vhost.map(|v| &v.name) != lower.map(|v| &v.name) {
        return Err(format!(
            "host {host:?} selects {:?}, its lowercase form {:?}",
            vhost.map(|v| &v.name),
            lower.map(|v| &v.name)
        ));
    }
    let found = table.lookup(&view).ok();
    let chosen = match (vhost, found) {
        (Some(v), Some((r, _))) => v.routes.iter().position(|x| std::ptr::eq(x, r)),
        _ => None,
    };
    if let Some(v) = vhost {
        for (i, r) in v.routes.iter().enumerate() {
            for (b, block) in r.matches.iter().enumerate() {
                let reason = block.first_mismatch(&view);
                if reason.is_none() != block.matches(&view) {
                    return Err(format!(
                        "rule {} match[{b}]: matches() is {}, first_mismatch says {reason:?}",
                        r.name,
                        block.matches(&view)
                    ));
                }
            }
            if Some(i) == chosen {
                break;
            }
        }
    }
    if req.method == Method::CONNECT {
        // Never routed by HTTP rules; explain says so instead of naming a rule.
        return Ok(());
    }
    let ex = explain(snap, &req.explain_request());
    let _ = ex.to_string();
    serde_json::to_string(&ex).map_err(|e| format!("explanation: {e}"))?;
    let explained = ex.route.as_ref().map(|r| (r.rule.position, r.block));
    let looked_up = chosen.zip(found.map(|(_, b)| b));
    if explained != looked_up {
        return Err(format!(
            "lookup chose (rule, block) {looked_up:?}, explain {explained:?}"
        ));
    }
    if let Some(rr) = &ex.route {
        if let Some(s) = ex
            .shadowed
            .iter()
            .find(|s| s.rule.position == rr.rule.position)
        {
            let by: Vec<&str> = s.by.iter().map(|b| b.name.as_str()).collect();
            return Err(format!(
                "rule {} is reported unreachable (shadowed by {by:?}), yet this request \
                 reaches it",
                rr.rule.name
            ));
        }
    }
    Ok(())
}

/// A request as `Proxy::handle` sees it once hyper has parsed it.
struct RouteRequest {
    method: Method,
    authority: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    port: u16,
}

impl RouteRequest {
    fn parse(data: &[u8]) -> Option<Self> {
        let mut lines = data.split(|b| *b == b'\n');
        let method = Method::from_bytes(lines.next()?).ok()?;
        let uri = Uri::try_from(lines.next().unwrap_or(b"/")).ok()?;
        let port = match lines.next() {
            Some(b"9090") => 9090,
            _ => 8080,
        };
        let mut headers = HeaderMap::new();
        for line in lines {
            let colon = line.iter().position(|b| *b == b':')?;
            let name = HeaderName::from_bytes(&line[..colon]).ok()?;
            let value = HeaderValue::from_bytes(trim(&line[colon + 1..])).ok()?;
            headers.append(name, value);
        }
        // `strict::check`'s Host rules: exactly one Host, not empty, no list.
        let mut hosts = headers.get_all(HOST).iter();
        match (hosts.next(), hosts.next()) {
            (Some(h), None) if !h.is_empty() && !h.as_bytes().contains(&b',') => {}
            (None, None) if uri.authority().is_some() => {}
            _ => return None,
        }
        let authority = match uri.authority() {
            Some(a) => a.as_str().to_owned(),
            None => headers.get(HOST)?.to_str().ok()?.to_owned(),
        };
        if authority.is_empty() {
            return None;
        }
        Some(Self {
            method,
            path: crate::http::strict::normalize_path(uri.path()).into_owned(),
            query: uri.query().map(str::to_owned),
            authority,
            headers,
            port,
        })
    }

    fn explain_request(&self) -> ExplainRequest {
        ExplainRequest {
            url: String::new(),
            method: self.method.clone(),
            scheme: "http",
            authority: self.authority.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            headers: self.headers.clone(),
            sni: None,
            port: self.port,
            port_given: true,
        }
    }
}

/// `s` without leading and trailing spaces and tabs, as hyper reads a field value.
fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

// === framing ===

/// The connection bytes of a [`framing`] or [`http1`] input and where to split them into
/// two reads: the first byte scales the cut from 0 (all in the second read) to 255 (all in
/// the first).
pub fn split_input(data: &[u8]) -> (&[u8], usize) {
    match data.split_first() {
        Some((sel, rest)) => (rest, rest.len() * usize::from(*sel) / 255),
        None => (data, 0),
    }
}

/// How one run of the framing guard over a connection's bytes ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Nothing refused.
    Clean,
    /// A request head was made invalid for hyper to refuse.
    Poisoned,
    /// A read failed (a violation after its head was released).
    Failed,
}

/// Run `Framing::scan` over `parts` as successive reads; the verdict and the bytes handed on.
fn scan_parts(parts: &[&[u8]]) -> (Verdict, Vec<u8>) {
    let mut f = Framing::new();
    let mut out = Vec::new();
    let mut verdict = Verdict::Clean;
    for part in parts {
        let mut buf = part.to_vec();
        match f.scan(&mut buf) {
            Ok(false) => {}
            Ok(true) => verdict = Verdict::Poisoned,
            Err(_) => return (Verdict::Failed, out),
        }
        out.extend_from_slice(&buf);
    }
    (verdict, out)
}

/// Check the HTTP/1 framing guard on one connection's bytes, read whole and in two reads:
/// a clean scan hands the bytes on unchanged, a refusal changes exactly one LF into NUL,
/// and whether the connection is refused does not depend on how the bytes were segmented.
pub fn framing(data: &[u8]) -> Result<(), String> {
    let (stream, cut) = split_input(data);
    let (first, second) = stream.split_at(cut);
    for (name, parts) in [("whole", vec![stream]), ("split", vec![first, second])] {
        let (verdict, out) = scan_parts(&parts);
        match verdict {
            Verdict::Clean if out != stream => {
                return Err(format!("{name}: a clean scan changed the bytes"));
            }
            Verdict::Poisoned => {
                let changed: Vec<usize> = (0..stream.len())
                    .filter(|i| out.get(*i) != stream.get(*i))
                    .collect();
                let ok = out.len() == stream.len()
                    && matches!(changed.as_slice(), [i] if stream[*i] == b'\n' && out[*i] == 0);
                if !ok {
                    return Err(format!(
                        "{name}: refusing a head changed bytes {changed:?}, not one LF"
                    ));
                }
            }
            _ => {}
        }
    }
    let whole = scan_parts(&[stream]).0;
    let split = scan_parts(&[first, second]).0;
    if (whole == Verdict::Clean) != (split == Verdict::Clean) {
        return Err(format!(
            "read whole: {whole:?}; split after {cut} bytes: {split:?}"
        ));
    }
    Ok(())
}

// === http1 ===

/// The config [`Http1Gateway`] serves on port 8080: directResponse, redirect, CORS and
/// fault-abort rules, so every request is answered without an upstream.
pub const HTTP1_CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 8080, name: http-secure, protocol: HTTP}
    hosts: [secure.test]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend}
spec:
  hosts: [backend.svc]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: 9}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: [app.test]
  gateways: [gw]
  http:
  - name: admin
    match: [{uri: {prefix: /admin}}]
    directResponse: {status: 403, body: {string: admin-denied}}
  - name: old
    match: [{uri: {prefix: /old}}]
    redirect: {uri: /new}
  - name: versioned
    match: [{uri: {regex: "/v[0-9]+/.*"}, headers: {x-user: {exact: jason}}}]
    directResponse: {status: 200, body: {string: versioned}}
  - name: cors
    match: [{uri: {prefix: /cors}}]
    corsPolicy:
      allowOrigins: [{exact: "https://a.example"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-user]
      maxAge: 1h
    directResponse: {status: 200, body: {string: cors}}
  - name: fault
    match: [{uri: {prefix: /fault}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: backend.svc}}]
  - name: empty
    match: [{uri: {exact: /empty}}]
    directResponse: {status: 204}
  - name: fallback
    directResponse: {status: 404, body: {string: no-route}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: any}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - directResponse: {status: 200, body: {string: any}}
"#;

/// The listener port [`Http1Gateway`] serves.
const HTTP1_PORT: u16 = 8080;

/// The gateway's HTTP pipeline serving `HTTP1_CONFIG`, built the way `app::start` builds
/// it, with tight limits (so the 414 / 431 paths are reachable by short inputs) and a short
/// header read timeout; connections come from [`Http1Gateway::exchange`] instead of a
/// socket.
#[derive(Debug)]
pub struct Http1Gateway {
    proxy: Arc<Proxy>,
    settings: ServerSettings,
}

impl Http1Gateway {
    /// Compile `HTTP1_CONFIG` and build the proxy.
    pub fn new() -> Result<Self, String> {
        let boot = Bootstrap {
            header_read_timeout: Duration::from_millis(500),
            access_log: AccessLog::Text,
            trace_sampling: 100.0,
            http_limits: HttpLimits {
                max_request_target: 512,
                max_request_headers: 32,
                ..HttpLimits::default()
            },
            ..Bootstrap::default()
        };
        let store = Arc::new(ConfigStore::new());
        store.publish(compile_yaml(HTTP1_CONFIG, None)?);
        let metrics = Arc::new(Metrics::new().map_err(|e| e.to_string())?);
        let proxy = Arc::new(Proxy {
            store,
            metrics,
            max_replay_body: boot.max_replay_body,
            access_log: boot.access_log,
            forward_client_cert: boot.forward_client_cert,
            mirrors: Default::default(),
            trace_sampling: boot.trace_sampling,
            max_request_target: boot.http_limits.max_request_target,
            stream_idle_timeout: Some(boot.stream_idle_timeout).filter(|t| !t.is_zero()),
        });
        let settings = ServerSettings {
            header_read_timeout: boot.header_read_timeout,
            limits: boot.http_limits,
            h2_idle_timeout: boot.h2_idle_timeout,
            preserve_header_case: boot.pool.preserve_header_case,
        };
        Ok(Self { proxy, settings })
    }

    /// Serve one connection whose client sends `first`, then `second`, then reads what
    /// comes back; once nothing has come for `QUIET` it closes its write side (a client
    /// that closes at once would see hyper drop the answers in flight). Returns all the
    /// gateway wrote before closing, or `Err` when it has not closed within `limit`. Must
    /// run inside a tokio runtime.
    pub async fn exchange(
        &self,
        first: &[u8],
        second: &[u8],
        limit: Duration,
    ) -> Result<Vec<u8>, String> {
        let (client, io) = tokio::io::duplex(64 * 1024);
        let stop = CancellationToken::new();
        let conn = ConnInfo {
            client: SocketAddr::from(([192, 0, 2, 1], 40_000)),
            port: HTTP1_PORT,
            scheme: "http",
            sni: None,
            peer_cert: None,
            forwarded_for: http::HeaderValue::from_static("192.0.2.1"),
        };
        let served = tokio::spawn({
            let (proxy, settings, stop) = (self.proxy.clone(), self.settings, stop.clone());
            async move { server::serve(io, proxy, conn, settings, &stop).await }
        });
        let (mut rd, mut wr) = tokio::io::split(client);
        let quiet = tokio::sync::Notify::new();
        let write = async {
            // The gateway may close early (after a 400); later writes then fail, as they
            // would on a socket.
            if wr.write_all(first).await.is_ok() {
                // Let the server read `first` on its own before `second` arrives.
                for _ in 0..8 {
                    tokio::task::yield_now().await;
                }
                let _ = wr.write_all(second).await;
            }
            quiet.notified().await;
            let _ = wr.shutdown().await;
        };
        let read = async {
            let mut out = Vec::new();
            let mut buf = vec![0; 16 * 1024];
            let res = loop {
                match tokio::time::timeout(QUIET, rd.read(&mut buf)).await {
                    Ok(Ok(0)) => break Ok(out),
                    Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                    Ok(Err(e)) => break Err(e),
                    Err(_) => quiet.notify_one(),
                }
            };
            // The gateway closed first: the writer has nothing left to wait for.
            quiet.notify_one();
            res
        };
        let reply = tokio::time::timeout(limit, async { tokio::join!(write, read).1 }).await;
        stop.cancel();
        served.abort();
        match reply {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(format!("reading the reply: {e}")),
            Err(_) => Err(format!("the connection was still open after {limit:?}")),
        }
    }
}

/// How long the client of [`Http1Gateway::exchange`] waits for more of the reply before it
/// closes its write side.
const QUIET: Duration = Duration::from_millis(100);

/// The HTTP/2 prior-knowledge preface; after it the reply is HTTP/2, not checked here.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serve one [`http1`]-format input through `gw` (and the framing checks of [`framing`]):
/// the gateway closes within `limit` and what it wrote is a sequence of well-formed
/// HTTP/1 responses (or nothing).
pub async fn http1(gw: &Http1Gateway, data: &[u8], limit: Duration) -> Result<(), String> {
    framing(data)?;
    let (stream, cut) = split_input(data);
    let (first, second) = stream.split_at(cut);
    let reply = gw.exchange(first, second, limit).await?;
    if stream.starts_with(H2_PREFACE) {
        return Ok(());
    }
    check_http1_reply(&reply).map_err(|e| {
        format!(
            "{e}; reply: {:?}",
            String::from_utf8_lossy(&reply[..reply.len().min(400)])
        )
    })
}

/// Whether `reply` is empty or a sequence of complete HTTP/1 responses. A response without
/// a body although it has a Content-Length is taken as the answer to a HEAD request.
pub fn check_http1_reply(reply: &[u8]) -> Result<(), String> {
    let mut rest = reply;
    while !rest.is_empty() {
        let head_len = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("the reply ends inside a response head")?
            + 4;
        let head = std::str::from_utf8(&rest[..head_len - 4])
            .map_err(|_| "a response head is not UTF-8".to_owned())?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = parse_status_line(status_line)
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let mut length = None;
        let mut chunked = false;
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("bad header line {line:?}"))?;
            if name.is_empty() || !name.bytes().all(is_token) {
                return Err(format!("bad header name {name:?}"));
            }
            let value = value.trim_matches([' ', '\t']);
            if name.eq_ignore_ascii_case("content-length") {
                let n: usize = value
                    .parse()
                    .map_err(|_| format!("bad content-length {value:?}"))?;
                if length.replace(n).is_some_and(|m| m != n) {
                    return Err("conflicting content-length headers".to_owned());
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
        if chunked && length.is_some() {
            return Err("content-length with transfer-encoding".to_owned());
        }
        rest = &rest[head_len..];
        if status == 101 {
            return Ok(()); // the connection now speaks another protocol
        }
        if (100..200).contains(&status) || status == 204 || status == 304 {
            continue;
        }
        if chunked {
            rest = skip_chunked(rest)?;
        } else if let Some(n) = length {
            if rest.is_empty() || rest.starts_with(b"HTTP/1.") {
                continue; // a HEAD response
            }
            rest = rest
                .get(n..)
                .ok_or_else(|| format!("body shorter than content-length {n}"))?;
        } else {
            return Ok(()); // delimited by the close
        }
    }
    Ok(())
}

/// The status of `HTTP/1.x NNN reason`.
fn parse_status_line(line: &str) -> Option<u16> {
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?;
    let code = rest.get(..3)?;
    if !code.bytes().all(|b| b.is_ascii_digit())
        || !matches!(rest.as_bytes().get(3), None | Some(b' '))
    {
        return None;
    }
    code.parse().ok().filter(|s| (100..600).contains(s))
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `body` after one chunked body (chunks, last chunk, trailers).
fn skip_chunked(mut body: &[u8]) -> Result<&[u8], String> {
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("the reply ends inside a chunk size")?;
        let size_field = std::str::from_utf8(&body[..eol]).unwrap_or_default();
        let hex = size_field.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(hex, 16).map_err(|_| format!("bad chunk size {size_field:?}"))?;
        body = &body[eol + 2..];
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let eol = body
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .ok_or("the reply ends inside the trailers")?;
                body = &body[eol + 2..];
                if eol == 0 {
                    return Ok(body);
                }
            }
        }
        let after = body
            .get(size..size + 2)
            .ok_or("the reply ends inside a chunk")?;
        if after != b"\r\n" {
            return Err("chunk data does not end with CRLF".to_owned());
        }
        body = &body[size + 2..];
    }
}
