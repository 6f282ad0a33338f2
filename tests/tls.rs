//! TLS at the edge, end to end over real sockets: termination (SIMPLE, MUTUAL,
//! OPTIONAL_MUTUAL) with the certificate chosen by SNI, 421 for a Host outside the SNI's
//! server, protocol versions and cipher suites, httpsRedirect, TLS config errors, SNI
//! passthrough to TLS backends run here (tokio-rustls), TCP routes and their metrics, and a
//! few cases driven by the real `curl` binary.
//!
//! Certificates come from `support::pki`, minted per run; no key is checked in.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{AlertDescription, CipherSuite, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::client::raw_exchange;
use support::gateway::service_entry;
use support::pki::{Ca, Leaf, TlsClient, Version};
use support::{within, within_for, Client, Reply, TestGateway, Upstream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

// ---------------------------------------------------------------------------------------
// YAML
// ---------------------------------------------------------------------------------------

/// A Gateway `name` with these servers (each from `server`).
fn gateway(name: &str, servers: &[String]) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n{}---\n",
        servers.concat()
    )
}

/// One Gateway server; `tls` is the inside of a flow mapping (`mode: SIMPLE, ...`) or "".
fn server(port: u16, protocol: &str, hosts: &[&str], tls: &str) -> String {
    let name = format!(
        "{}-{}",
        protocol.to_ascii_lowercase(),
        hosts[0].replace('*', "any").replace('.', "-")
    );
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    let mut s = format!(
        "  - port: {{number: {port}, name: {name}, protocol: {protocol}}}\n    hosts: [{}]\n",
        hosts.join(", ")
    );
    if !tls.is_empty() {
        s.push_str(&format!("    tls: {{{tls}}}\n"));
    }
    s
}

/// `tls` for SIMPLE termination with `leaf`'s files.
fn simple(leaf: &Leaf) -> String {
    format!("mode: SIMPLE, {}", files(leaf))
}

/// `serverCertificate` and `privateKey` of `leaf`.
fn files(leaf: &Leaf) -> String {
    format!(
        "serverCertificate: \"{}\", privateKey: \"{}\"",
        leaf.cert_path.display(),
        leaf.key_path.display()
    )
}

/// A VirtualService bound to `gw` for `hosts` answering 200 with `body`.
fn vs_direct(name: &str, gw: &str, hosts: &[&str], body: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: [{}]\n  gateways: [{gw}]\n  http:\n  - directResponse: {{status: 200, body: {{string: \"{body}\"}}}}\n---\n",
        hosts.join(", ")
    )
}

/// A VirtualService bound to `gw` for `hosts` forwarding everything to `dest`.
fn vs_route(name: &str, gw: &str, hosts: &[&str], dest: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: [{}]\n  gateways: [{gw}]\n  http:\n  - route:\n    - destination:\n        host: {dest}\n---\n",
        hosts.join(", ")
    )
}

/// A VirtualService with one `tls[]` rule: `sni` on `port` to weighted `(host, port, weight)`.
fn vs_tls(name: &str, gw: &str, port: u16, sni: &str, dests: &[(&str, u16, u32)]) -> String {
    let route: String = dests
        .iter()
        .map(|(h, p, w)| {
            format!("    - destination:\n        host: {h}\n        port:\n          number: {p}\n      weight: {w}\n")
        })
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: [\"{sni}\"]\n  gateways: [{gw}]\n  tls:\n  - match:\n    - port: {port}\n      sniHosts: [\"{sni}\"]\n    route:\n{route}---\n"
    )
}

/// A STATIC ServiceEntry `host` with one port (`protocol`) served at 127.0.0.1:`target`.
fn se_static(host: &str, port: u16, protocol: &str, target: u16) -> String {
    let name = host.replace('.', "-");
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\nspec:\n  hosts: [{host}]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: {port}, name: p{port}, protocol: {protocol}}}\n  endpoints:\n  - address: 127.0.0.1\n    ports: {{p{port}: {target}}}\n---\n"
    )
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// Send one request over an established stream (h2 when `h2`), reading the whole reply.
async fn request<IO>(io: IO, h2: bool, host: &str, path: &str) -> Result<Reply, BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let req = if h2 {
        Request::get(format!("https://{host}{path}"))
    } else {
        Request::get(path).header("host", host)
    }
    .body(Full::new(Bytes::new()))?;
    let resp = if h2 {
        let (mut tx, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        tx.send_request(req).await?
    } else {
        let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        tx.send_request(req).await?
    };
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Handshake with `sni`, then GET `path` with `Host: host` (h2 when ALPN chose it).
/// Any TLS or HTTP failure is an `Err` with its text.
async fn https_get(
    client: &TlsClient,
    addr: SocketAddr,
    sni: &str,
    host: &str,
    path: &str,
) -> Result<Reply, String> {
    let hs = client.connect(addr, sni).await;
    let h2 = hs.alpn.as_deref() == Some(b"h2");
    let stream = hs.stream.map_err(|e| format!("handshake: {e}"))?;
    within(request(stream, h2, host, path))
        .await
        .map_err(|e| format!("request: {e:?}"))
}

/// The gateway's Prometheus text (admin `/metrics`).
async fn scrape(gw: &TestGateway) -> String {
    let r = Client::new(gw.admin(), "admin").send("/metrics").await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body
}

/// The sum of the samples of `name` whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Scrape until `ok` holds for the metrics text (the gateway records some metrics just
/// after the connection ends); returns the last text.
async fn scrape_until(gw: &TestGateway, ok: impl Fn(&str) -> bool) -> String {
    within(async {
        loop {
            let text = scrape(gw).await;
            if ok(&text) {
                return text;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

/// Write `data` (then shut down the write side) while reading everything back.
async fn roundtrip<IO>(io: IO, data: &[u8]) -> Vec<u8>
where
    IO: AsyncRead + AsyncWrite,
{
    let (mut r, mut w) = tokio::io::split(io);
    let write = async {
        w.write_all(data).await.expect("write");
        w.shutdown().await.expect("shutdown");
    };
    let read = async {
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.expect("read");
        out
    };
    let ((), out) = within(async { tokio::join!(write, read) }).await;
    out
}

/// Pseudo-random bytes (so that a shifted or duplicated chunk is noticed).
fn payload(len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(42);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// Whether `curl` can be run; says so on stderr when not.
fn have_curl() -> bool {
    match std::process::Command::new("curl").arg("--version").output() {
        Ok(o) if o.status.success() => true,
        _ => {
            eprintln!("curl is not on PATH: skipping the curl-driven checks of this test");
            false
        }
    }
}

/// What one curl run printed.
#[derive(Debug)]
struct Curl {
    code: Option<i32>,
    stdout: String,
    #[allow(dead_code)] // shown through Debug when an assertion fails
    stderr: String,
}

/// `curl -s --max-time 5 --resolve host:port:127.0.0.1 --cacert ca <extra> https://host:port<path>`.
async fn curl(addr: SocketAddr, host: &str, ca: &Ca, path: &str, extra: &[&str]) -> Curl {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-s", "-S", "--max-time", "5"])
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", addr.port()))
        .arg("--cacert")
        .arg(&ca.pem_path)
        .args(extra)
        .arg(format!("https://{host}:{}{path}", addr.port()));
    let out = within(tokio::task::spawn_blocking(move || cmd.output()))
        .await
        .expect("join")
        .expect("run curl");
    Curl {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------

/// What a test backend does with each connection.
#[derive(Debug, Clone)]
enum Behaviour {
    /// Echo until EOF, then close.
    Echo,
    /// Write this and close.
    Say(&'static str),
    /// Read until EOF, then write `got <n>` and close.
    Collect,
    /// Read an HTTP/1.1 request head and answer 200 with this body.
    Http(&'static str),
}

/// A backend on 127.0.0.1:0: TLS with `leaf` when given, else plain TCP.
#[derive(Debug, Clone)]
struct Backend {
    addr: SocketAddr,
    /// TCP connections accepted.
    accepted: Arc<AtomicUsize>,
}

impl Backend {
    async fn start(leaf: Option<&Leaf>, behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let acceptor = leaf.map(|l| l.acceptor(&[]));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let behaviour = behaviour.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                serve(tls, &behaviour).await;
                            }
                        }
                        None => serve(tcp, &behaviour).await,
                    }
                });
            }
        });
        Self { addr, accepted }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn serve<IO: AsyncRead + AsyncWrite + Unpin>(io: IO, behaviour: &Behaviour) {
    let (mut r, mut w) = tokio::io::split(io);
    match behaviour {
        Behaviour::Echo => {
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
        Behaviour::Say(s) => {
            let _ = w.write_all(s.as_bytes()).await;
        }
        Behaviour::Collect => {
            let mut buf = Vec::new();
            if r.read_to_end(&mut buf).await.is_err() {
                return;
            }
            let _ = w.write_all(format!("got {}", buf.len()).as_bytes()).await;
        }
        Behaviour::Http(body) => {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = w.write_all(resp.as_bytes()).await;
        }
    }
    let _ = w.shutdown().await;
}

/// Connect to `addr` through a relay task: the first `chunked` bytes the client writes go
/// out in 10-byte TCP writes, each flushed and followed by a yield to the runtime (so the
/// gateway reads them in pieces); the rest, both ways, is copied as is, half-closes too.
/// Returns the client's end and the number of small writes made.
async fn chunked_pipe(
    addr: SocketAddr,
    chunked: usize,
) -> (tokio::io::DuplexStream, Arc<AtomicUsize>) {
    let tcp = within(TcpStream::connect(addr)).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (client, relay) = tokio::io::duplex(64 * 1024);
    let writes = Arc::new(AtomicUsize::new(0));
    let count = writes.clone();
    tokio::spawn(async move {
        let (mut tr, mut tw) = tcp.into_split();
        let (mut rr, mut rw) = tokio::io::split(relay);
        let up = async {
            let mut left = chunked;
            let mut buf = [0u8; 10];
            while left > 0 {
                let n = rr.read(&mut buf[..left.min(10)]).await?;
                if n == 0 {
                    break;
                }
                tw.write_all(&buf[..n]).await?;
                tw.flush().await?;
                count.fetch_add(1, Ordering::SeqCst);
                left -= n;
                tokio::task::yield_now().await;
            }
            tokio::io::copy(&mut rr, &mut tw).await?;
            tw.shutdown().await
        };
        let down = async {
            tokio::io::copy(&mut tr, &mut rw).await?;
            rw.shutdown().await
        };
        let _: (std::io::Result<()>, std::io::Result<()>) = tokio::join!(up, down);
    });
    (client, writes)
}

// ---------------------------------------------------------------------------------------
// Termination
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn terminates_https_http1_and_h2_to_direct_response_and_upstream() {
    let ca = Ca::new("gateway-ca");
    let cert = ca.server("app", &["app.example.com"]);
    let up = Upstream::new("up").run().await;
    let yaml = format!(
        "{}{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: app\nspec:\n  hosts: [app.example.com]\n  gateways: [gw]\n  http:\n  - match:\n    - uri: {{prefix: /direct}}\n    directResponse: {{status: 200, body: {{string: direct}}}}\n  - route:\n    - destination:\n        host: app.svc\n",
        gateway("gw", &[server(8443, "HTTPS", &["app.example.com"], &simple(&cert))]),
        service_entry("app.svc", 80, "HTTP", &[(&up, "v1")]),
    );
    let gw = TestGateway::start(&yaml).await;
    let addr = gw.port(8443);

    // HTTP/1.1 (ALPN http/1.1).
    let hs = TlsClient::new(&ca)
        .alpn(&["http/1.1"])
        .connect(addr, "app.example.com")
        .await;
    assert!(hs.presented(&cert), "wrong certificate");
    assert_eq!(hs.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(hs.version, Some(ProtocolVersion::TLSv1_3));
    let r = within(request(hs.ok(), false, "app.example.com", "/direct"))
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "direct"),
        "{r:?}"
    );

    let client = TlsClient::new(&ca).alpn(&["http/1.1"]);
    let r = https_get(
        &client,
        addr,
        "app.example.com",
        "app.example.com",
        "/x?y=1",
    )
    .await
    .unwrap();
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "up"), "{r:?}");
    let seen = up.last();
    assert_eq!(seen.uri, "/x?y=1");
    assert_eq!(seen.headers["host"], "app.example.com");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");

    // HTTP/2: ALPN h2 negotiated, an h2 request over the TLS stream.
    let hs = TlsClient::new(&ca)
        .alpn(&["h2", "http/1.1"])
        .connect(addr, "app.example.com")
        .await;
    assert_eq!(hs.alpn.as_deref(), Some(&b"h2"[..]), "ALPN h2 not chosen");
    let r = within(request(hs.ok(), true, "app.example.com", "/h2?z=2"))
        .await
        .unwrap();
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "up"), "{r:?}");
    assert_eq!(up.last().uri, "/h2?z=2");
    assert_eq!(up.last().headers["x-forwarded-proto"], "https");
    assert_eq!(up.hits(), 2);

    let hs = TlsClient::new(&ca)
        .alpn(&["h2"])
        .connect(addr, "app.example.com")
        .await;
    let r = within(request(hs.ok(), true, "app.example.com", "/direct/h2"))
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "direct"),
        "{r:?}"
    );

    // No ALPN at all still speaks HTTP/1.1; a client that does not trust the CA fails.
    let r = https_get(
        &TlsClient::new(&ca),
        addr,
        "app.example.com",
        "app.example.com",
        "/direct",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let other = Ca::new("other-ca");
    let hs = TlsClient::new(&other)
        .connect(addr, "app.example.com")
        .await;
    assert!(
        !hs.is_ok(),
        "a certificate from an untrusted CA was accepted"
    );
}

#[tokio::test]
async fn sni_selects_the_server_exact_then_longest_wildcard_then_catch_all() {
    let ca = Ca::new("gateway-ca");
    let exact = ca.server("exact", &["a.example.com"]);
    let wild = ca.server("wild", &["*.example.com"]);
    let deeper = ca.server("deeper", &["*.b.example.com"]);
    let fallback = ca.server("fallback", &["fallback.test", "unknown.test"]);
    // Config order is the reverse of specificity: lookup must not be first-match.
    let yaml = format!(
        "{}{}{}{}{}",
        gateway(
            "gw",
            &[
                server(8443, "HTTPS", &["*"], &simple(&fallback)),
                server(8443, "HTTPS", &["*.example.com"], &simple(&wild)),
                server(8443, "HTTPS", &["*.b.example.com"], &simple(&deeper)),
                server(8443, "HTTPS", &["a.example.com"], &simple(&exact)),
            ]
        ),
        // VirtualServices for one host merge in source order (Istio), and `*` intersects
        // every server: list the most specific first so each host's first rule is its own.
        vs_direct("exact", "gw", &["a.example.com"], "exact"),
        vs_direct("deeper", "gw", &["*.b.example.com"], "deeper"),
        vs_direct("wild", "gw", &["*.example.com"], "wild"),
        vs_direct("any", "gw", &["*"], "fallback"),
    );
    let gw = TestGateway::start(&yaml).await;
    let addr = gw.port(8443);
    let client = TlsClient::new(&ca);

    for (sni, want, body) in [
        ("a.example.com", &exact, "exact"),
        ("c.example.com", &wild, "wild"),
        ("b.example.com", &wild, "wild"),
        ("x.b.example.com", &deeper, "deeper"),
        ("unknown.test", &fallback, "fallback"),
    ] {
        let hs = client.connect(addr, sni).await;
        assert!(
            hs.presented(want),
            "SNI {sni}: expected the {} certificate ({})",
            want.name,
            hs.error()
        );
        let r = within(request(hs.ok(), false, sni, "/")).await.unwrap();
        assert_eq!(
            (r.status.as_u16(), r.body.as_str()),
            (200, body),
            "SNI {sni}: {r:?}"
        );
    }

    // No SNI at all: the `*` server.
    let hs = client.clone().no_sni().connect(addr, "fallback.test").await;
    assert!(
        hs.presented(&fallback),
        "no SNI: expected the fallback certificate ({})",
        hs.error()
    );
    let r = within(request(hs.ok(), false, "fallback.test", "/"))
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "fallback"),
        "{r:?}"
    );
}

#[tokio::test]
async fn unknown_sni_without_catch_all_gets_unrecognized_name() {
    let ca = Ca::new("gateway-ca");
    let a = ca.server("a", &["a.example.com"]);
    let b = ca.server("b", &["*.b.example.com", "nosni.test"]);
    let yaml = format!(
        "{}{}",
        gateway(
            "gw",
            &[
                server(8443, "HTTPS", &["a.example.com"], &simple(&a)),
                server(8443, "HTTPS", &["*.b.example.com"], &simple(&b)),
            ]
        ),
        vs_direct("vs", "gw", &["a.example.com", "*.b.example.com"], "ok"),
    );
    let gw = TestGateway::start(&yaml).await;
    let addr = gw.port(8443);
    let client = TlsClient::new(&ca);

    let hs = client.connect(addr, "other.example.org").await;
    assert!(!hs.is_ok(), "unknown SNI was served");
    assert_eq!(
        hs.alert(),
        Some(AlertDescription::UnrecognisedName),
        "{}",
        hs.error()
    );
    assert!(hs.leaf.is_none(), "a certificate was presented");

    let hs = client.clone().no_sni().connect(addr, "nosni.test").await;
    assert!(!hs.is_ok(), "a ClientHello without SNI was served");
    assert_eq!(
        hs.alert(),
        Some(AlertDescription::UnrecognisedName),
        "{}",
        hs.error()
    );

    // Known names still work.
    let hs = client.connect(addr, "x.b.example.com").await;
    assert!(hs.presented(&b), "{}", hs.error());
    let text = scrape(&gw).await;
    assert_eq!(
        metric(
            &text,
            "meshgate_tls_rejected_total",
            &[("listener", "8443"), ("reason", "unknown_sni")]
        ),
        2.0,
        "{text}"
    );
}

#[tokio::test]
async fn host_outside_the_sni_server_gets_421() {
    let ca = Ca::new("gateway-ca");
    let ca_cert = ca.server("a", &["a.example.com"]);
    let cb_cert = ca.server("b", &["b.example.com"]);
    let a = Upstream::new("a").run().await;
    let b = Upstream::new("b").run().await;
    let yaml = format!(
        "{}{}{}{}{}",
        gateway(
            "gw",
            &[
                server(8443, "HTTPS", &["a.example.com"], &simple(&ca_cert)),
                server(8443, "HTTPS", &["b.example.com"], &simple(&cb_cert)),
            ]
        ),
        vs_route("a", "gw", &["a.example.com"], "a.svc"),
        vs_route("b", "gw", &["b.example.com"], "b.svc"),
        service_entry("a.svc", 80, "HTTP", &[(&a, "v1")]),
        service_entry("b.svc", 80, "HTTP", &[(&b, "v1")]),
    );
    let gw = TestGateway::start(&yaml).await;
    let addr = gw.port(8443);

    for alpn in ["http/1.1", "h2"] {
        let client = TlsClient::new(&ca).alpn(&[alpn]);
        let r = https_get(&client, addr, "a.example.com", "b.example.com", "/steal")
            .await
            .unwrap();
        assert_eq!(r.status, 421, "{alpn}: {r:?}");
        let r = https_get(&client, addr, "a.example.com", "a.example.com", "/mine")
            .await
            .unwrap();
        assert_eq!(
            (r.status.as_u16(), r.body.as_str()),
            (200, "a"),
            "{alpn}: {r:?}"
        );
    }
    assert_eq!(
        b.hits(),
        0,
        "b's upstream saw a request meant for a's server"
    );
    assert_eq!(a.hits(), 2);

    // b is reachable with its own SNI.
    let client = TlsClient::new(&ca);
    let r = https_get(&client, addr, "b.example.com", "b.example.com", "/")
        .await
        .unwrap();
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "b"), "{r:?}");
    assert_eq!(b.hits(), 1);
}

// ---------------------------------------------------------------------------------------
// Client certificates
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let ca = Ca::new("gateway-ca");
    let clients = Ca::new("client-ca");
    let rogue = Ca::new("rogue-ca");
    let cert = ca.server("m", &["m.example.com"]);
    let good = clients.client("good", &["good.client"]);
    let bad = rogue.client("bad", &["good.client"]);
    let yaml = format!(
        "{}{}",
        gateway(
            "gw",
            &[server(
                8443,
                "HTTPS",
                &["m.example.com"],
                &format!(
                    "mode: MUTUAL, {}, caCertificates: \"{}\"",
                    files(&cert),
                    clients.pem_path.display()
                )
            )]
        ),
        vs_direct("vs", "gw", &["m.example.com"], "secret"),
    );
    let gw = TestGateway::start(&yaml).await;
    let addr = gw.port(8443);
    let get = |c: TlsClient| async move {
        https_get(&c, addr, "m.example.com", "m.example.com", "/").await
    };

    for v in [Version::Tls13, Version::Tls12] {
        let r = get(TlsClient::new(&ca).only(v)).await;
        assert!(
            r.is_err(),
            "{v:?}: no client certificate was accepted: {r:?}"
        );
        let r = get(TlsClient::new(&ca).only(v).cert(&bad)).await;
        assert!(
            r.is_err(),
            "{v:?}: a certificate from another CA was accepted: {r:?}"
        );
        let r = get(TlsClient::new(&ca).only(v).cert(&good)).await.unwrap();
        assert_eq!(
            (r.status.as_u16(), r.body.as_str()),
            (200, "secret"),
            "{v:?}: {r:?}"
        );
    }
    let text = scrape(&gw).await;
    assert_eq!(
        metric(
            &text,
            "meshgate_tls_rejected_total",
            &[("listener", "8443"), ("reason", "handshake")]
        ),
        4.0,
        "{text}"
    );
}

/// Sessions resume (TLS 1.3 stateless tickets, TLS 1.2 tickets or IDs), but only on
/// servers with the same client-authentication policy: a session from a SIMPLE server never
/// lets a client without a certificate into a MUTUAL server for the same name.
#[tokio::test]
async fn sessions_resume_within_a_client_auth_policy_only() {
    let ca = Ca::new("gateway-ca");
    let clients = Ca::new("client-ca");
    let cert = ca.server("r", &["r.example.com"]);
    let yaml = format!(
        "{}{}",
        gateway(
            "gw",
            &[
                server(8443, "HTTPS", &["r.example.com"], &simple(&cert)),
                server(
                    9443,
                    "HTTPS",
                    &["r.example.com"],
                    &format!(
                        "mode: MUTUAL, {}, caCertificates: \"{}\"",
                        files(&cert),
                        clients.pem_path.display()
                    )
                ),
            ]
        ),
        vs_direct("vs", "gw", &["r.example.com"], "resumed"),
    );
    let gw = TestGateway::start(&yaml).await;
    for v in [Version::Tls13, Version::Tls12] {
        // One connector: one client session cache across the connections.
        let connector = TlsClient::new(&ca).only(v).connector();
        let get = |port: u16| {
            let connector = connector.clone();
            let addr = gw.port(port);
            async move {
                let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                let name = rustls::pki_types::ServerName::try_from("r.example.com").unwrap();
                // Boxed: a rustls connection is large.
                let tls = within(Box::pin(connector.connect(name, tcp)))
                    .await
                    .map(Box::new)
                    .map_err(|e| format!("handshake: {e}"))?;
                let kind = tls.get_ref().1.handshake_kind();
                // Reading the answer also takes in the TLS 1.3 tickets sent after the handshake.
                let r = within(Box::pin(request(tls, false, "r.example.com", "/")))
                    .await
                    .map_err(|e| format!("request: {e:?}"))?;
                Ok::<_, String>((kind, r.status.as_u16()))
            }
        };
        let first = Box::pin(get(8443)).await.unwrap();
        assert_eq!(first, (Some(rustls::HandshakeKind::Full), 200), "{v:?}");
        let again = Box::pin(get(8443)).await.unwrap();
        assert_eq!(again, (Some(rustls::HandshakeKind::Resumed), 200), "{v:?}");
        let other_policy = Box::pin(get(9443)).await;
        assert!(
            other_policy.is_err(),
            "{v:?}: a SIMPLE server's session got a client without a certificate through \
             MUTUAL: {other_policy:?}"
        );
    }
}

#[tokio::test]
async fn optional_mutual_and_mutual_with_credential_name_ca() {
    let ca = Ca::new("gateway-ca");
    let clients = Ca::new("client-ca");
    let rogue = Ca::new("rogue-ca");
    let opt = ca.server("opt", &["opt.example.com"]);
    let must = ca.server("must", &["must.example.com"]);
    let good = clients.client("good", &["good.client"]);
    let bad = rogue.client("bad", &["good.client"]);
    let certs = tempfile::tempdir().unwrap();
    opt.write_credential(certs.path(), "opt-cred", Some(&clients));
    must.write_credential(certs.path(), "must-cred", Some(&clients));
    let yaml = format!(
        "{}{}{}",
        gateway(
            "gw",
            &[
                server(
                    8443,
                    "HTTPS",
                    &["opt.example.com"],
                    "mode: OPTIONAL_MUTUAL, credentialName: opt-cred"
                ),
                server(
                    8443,
                    "HTTPS",
                    &["must.example.com"],
                    "mode: MUTUAL, credentialName: must-cred"
                ),
            ]
        ),
        vs_direct("opt", "gw", &["opt.example.com"], "optional"),
        vs_direct("must", "gw", &["must.example.com"], "required"),
    );
    let dir = certs.path().to_owned();
    let gw = TestGateway::start_with(&yaml, |b| b.certs_dir = dir).await;
    let addr = gw.port(8443);
    let get = |c: TlsClient, host: &'static str| async move {
        https_get(&c, addr, host, host, "/").await
    };

    // OPTIONAL_MUTUAL: none passes, a valid one passes, an invalid one fails.
    let hs = TlsClient::new(&ca).connect(addr, "opt.example.com").await;
    assert!(hs.presented(&opt), "{}", hs.error());
    let r = get(TlsClient::new(&ca), "opt.example.com").await.unwrap();
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "optional"),
        "{r:?}"
    );
    let r = get(TlsClient::new(&ca).cert(&good), "opt.example.com")
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "optional"),
        "{r:?}"
    );
    let r = get(TlsClient::new(&ca).cert(&bad), "opt.example.com").await;
    assert!(
        r.is_err(),
        "OPTIONAL_MUTUAL accepted an invalid certificate: {r:?}"
    );

    // MUTUAL with the CA from the credential's ca.crt.
    let r = get(TlsClient::new(&ca), "must.example.com").await;
    assert!(
        r.is_err(),
        "MUTUAL accepted a client without certificate: {r:?}"
    );
    let r = get(TlsClient::new(&ca).cert(&bad), "must.example.com").await;
    assert!(
        r.is_err(),
        "MUTUAL accepted a certificate from another CA: {r:?}"
    );
    let r = get(TlsClient::new(&ca).cert(&good), "must.example.com")
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "required"),
        "{r:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Protocol versions and cipher suites
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn protocol_versions_and_cipher_suites() {
    let ca = Ca::new("gateway-ca");
    let v13 = ca.server("v13", &["v13.example.com"]);
    let v12 = ca.server("v12", &["v12.example.com"]);
    let cs = ca.server("cs", &["cs.example.com"]);
    let yaml = format!(
        "{}{}",
        gateway(
            "gw",
            &[
                server(
                    8443,
                    "HTTPS",
                    &["v13.example.com"],
                    &format!("{}, minProtocolVersion: TLSV1_3", simple(&v13))
                ),
                server(
                    8443,
                    "HTTPS",
                    &["v12.example.com"],
                    &format!("{}, maxProtocolVersion: TLSV1_2", simple(&v12))
                ),
                server(
                    8443,
                    "HTTPS",
                    &["cs.example.com"],
                    &format!(
                        "{}, maxProtocolVersion: TLSV1_2, cipherSuites: [ECDHE-ECDSA-CHACHA20-POLY1305]",
                        simple(&cs)
                    )
                ),
            ]
        ),
        vs_direct(
            "vs",
            "gw",
            &["v13.example.com", "v12.example.com", "cs.example.com"],
            "ok"
        ),
    );
    let gw = TestGateway::start(&yaml).await;
    let addr = gw.port(8443);

    let hs = TlsClient::new(&ca)
        .only(Version::Tls12)
        .connect(addr, "v13.example.com")
        .await;
    assert!(
        !hs.is_ok(),
        "minProtocolVersion TLSV1_3 accepted a TLS 1.2 client"
    );
    let hs = TlsClient::new(&ca).connect(addr, "v13.example.com").await;
    assert_eq!(hs.version, Some(ProtocolVersion::TLSv1_3), "{}", hs.error());

    let hs = TlsClient::new(&ca).connect(addr, "v12.example.com").await;
    assert!(hs.presented(&v12), "{}", hs.error());
    assert_eq!(hs.version, Some(ProtocolVersion::TLSv1_2));
    let r = within(request(hs.ok(), false, "v12.example.com", "/"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let hs = TlsClient::new(&ca)
        .only(Version::Tls13)
        .connect(addr, "v12.example.com")
        .await;
    assert!(
        !hs.is_ok(),
        "maxProtocolVersion TLSV1_2 accepted a TLS 1.3-only client"
    );

    // The client prefers AES-256-GCM; the server allows only CHACHA20 for TLS 1.2.
    let hs = TlsClient::new(&ca).connect(addr, "cs.example.com").await;
    assert_eq!(hs.version, Some(ProtocolVersion::TLSv1_2), "{}", hs.error());
    assert_eq!(
        hs.suite,
        Some(CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
    );

    // An unsupported suite name is a config error naming the field.
    let yaml = gateway(
        "gw",
        &[server(
            8443,
            "HTTPS",
            &["cs.example.com"],
            &format!("{}, cipherSuites: [AES128-SHA]", simple(&cs)),
        )],
    );
    let e = TestGateway::start_err(&yaml).await;
    assert!(e.contains("servers[0].tls.cipherSuites"), "{e}");
    assert!(e.contains("AES128-SHA"), "{e}");
}

// ---------------------------------------------------------------------------------------
// httpsRedirect
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn https_redirect_answers_301_for_every_host_of_the_server() {
    let yaml = format!(
        "{}{}",
        gateway(
            "gw",
            &[
                server(
                    8080,
                    "HTTP",
                    &["a.example.com", "*.w.example.com"],
                    "httpsRedirect: true"
                ),
                server(8081, "HTTP", &["a.example.com"], ""),
            ]
        ),
        // A route for a.example.com: the redirect still wins on port 8080.
        vs_direct("vs", "gw", &["a.example.com"], "plain"),
    );
    let gw = TestGateway::start(&yaml).await;
    for (host, path, loc) in [
        (
            "a.example.com",
            "/p/q?x=1&y=two",
            "https://a.example.com/p/q?x=1&y=two",
        ),
        ("a.example.com", "/", "https://a.example.com/"),
        ("x.w.example.com", "/no/vs", "https://x.w.example.com/no/vs"),
        (
            "deep.x.w.example.com",
            "/d?q",
            "https://deep.x.w.example.com/d?q",
        ),
    ] {
        let r = Client::new(gw.port(8080), host).send(path).await;
        assert_eq!(r.status, 301, "{host}{path}: {r:?}");
        assert_eq!(r.header("location"), loc, "{host}{path}");
    }
    let r = Client::new(gw.port(8080), "a.example.com")
        .h2()
        .send("/h2c?k=v")
        .await;
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(r.header("location"), "https://a.example.com/h2c?k=v");
    // A host the server does not serve is not redirected.
    let r = Client::new(gw.port(8080), "other.test").send("/").await;
    assert_eq!(r.status, 404, "{r:?}");
    // The redirect belongs to the server, not to the host.
    let r = Client::new(gw.port(8081), "a.example.com").send("/").await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "plain"),
        "{r:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Config errors
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn tls_config_errors_name_the_field() {
    let ca = Ca::new("gateway-ca");
    let cert = ca.server("c", &["c.example.com"]);
    let one = |tls: &str| gateway("gw", &[server(8443, "HTTPS", &["c.example.com"], tls)]);

    let e = TestGateway::start_err(&one("")).await;
    assert!(e.contains("servers[0].tls"), "{e}");
    assert!(e.contains("tls block"), "{e}");

    let missing = "/nonexistent/meshgate-test/cert.pem";
    let e = TestGateway::start_err(&one(&format!(
        "mode: SIMPLE, serverCertificate: \"{missing}\", privateKey: \"{}\"",
        cert.key_path.display()
    )))
    .await;
    assert!(e.contains("servers[0].tls.serverCertificate"), "{e}");
    assert!(e.contains(missing), "{e}");

    let missing_key = "/nonexistent/meshgate-test/key.pem";
    let e = TestGateway::start_err(&one(&format!(
        "mode: SIMPLE, serverCertificate: \"{}\", privateKey: \"{missing_key}\"",
        cert.cert_path.display()
    )))
    .await;
    assert!(e.contains("servers[0].tls.privateKey"), "{e}");
    assert!(e.contains(missing_key), "{e}");

    let missing_ca = "/nonexistent/meshgate-test/ca.pem";
    let e = TestGateway::start_err(&one(&format!(
        "mode: MUTUAL, {}, caCertificates: \"{missing_ca}\"",
        files(&cert)
    )))
    .await;
    assert!(e.contains("servers[0].tls.caCertificates"), "{e}");
    assert!(e.contains(missing_ca), "{e}");

    let e = TestGateway::start_err(&one("mode: SIMPLE, credentialName: no-such-credential")).await;
    assert!(e.contains("servers[0].tls.credentialName"), "{e}");
    assert!(e.contains("no-such-credential"), "{e}");

    let e = TestGateway::start_err(&one("mode: ISTIO_MUTUAL")).await;
    assert!(e.contains("servers[0].tls.mode"), "{e}");
    assert!(e.contains("ISTIO_MUTUAL"), "{e}");

    let e = TestGateway::start_err(&one(&format!(
        "mode: MUTUAL, {}, subjectAltNames: [good.client]",
        files(&cert),
    )))
    .await;
    assert!(e.contains("servers[0].tls.caCertificates"), "{e}");

    // The second server of the Gateway is named by its index.
    let yaml = gateway(
        "gw",
        &[
            server(8443, "HTTPS", &["c.example.com"], &simple(&cert)),
            server(8443, "HTTPS", &["d.example.com"], ""),
        ],
    );
    let e = TestGateway::start_err(&yaml).await;
    assert!(e.contains("servers[1].tls"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Passthrough
// ---------------------------------------------------------------------------------------

/// A gateway passing `backend.example.com` on port 8443 (`protocol`, plus `tls`) through to
/// `backend`.
async fn passthrough_gateway(
    protocol: &str,
    backend: &Backend,
    adjust: impl FnOnce(&mut meshgate::Bootstrap),
) -> TestGateway {
    let yaml = format!(
        "{}{}{}",
        gateway(
            "gw",
            &[server(
                8443,
                protocol,
                &["backend.example.com"],
                "mode: PASSTHROUGH"
            )]
        ),
        vs_tls(
            "pt",
            "gw",
            8443,
            "backend.example.com",
            &[("backend.svc", 443, 100)]
        ),
        se_static("backend.svc", 443, "TLS", backend.port()),
    );
    TestGateway::start_with(&yaml, adjust).await
}

#[tokio::test]
async fn passthrough_presents_the_backend_certificate_and_echoes_1mib() {
    let backend_ca = Ca::new("backend-ca");
    let gateway_ca = Ca::new("gateway-ca");
    let leaf = backend_ca.server("backend", &["backend.example.com"]);
    let backend = Backend::start(Some(&leaf), Behaviour::Echo).await;
    let gw = passthrough_gateway("TLS", &backend, |_| {}).await;
    let addr = gw.port(8443);

    let hs = TlsClient::new(&backend_ca)
        .alpn(&["h2", "http/1.1"])
        .connect(addr, "backend.example.com")
        .await;
    assert!(
        hs.presented(&leaf),
        "not the backend's certificate: {}",
        hs.error()
    );
    assert_eq!(
        hs.alpn, None,
        "ALPN was answered by someone other than the backend"
    );
    let data = payload(1 << 20);
    let echoed = roundtrip(hs.ok(), &data).await;
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "echoed bytes differ");

    // The gateway's own CA does not vouch for the backend: the gateway did not terminate.
    let hs = TlsClient::new(&gateway_ca)
        .connect(addr, "backend.example.com")
        .await;
    assert!(!hs.is_ok());
    assert!(hs.presented(&leaf));

    let text = scrape_until(&gw, |t| {
        metric(
            t,
            "istio_tcp_connections_closed_total",
            &[("destination_service", "backend.svc")],
        ) >= 2.0
    })
    .await;
    assert_eq!(
        metric(
            &text,
            "istio_tcp_connections_opened_total",
            &[("destination_service", "backend.svc")]
        ),
        2.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "istio_tcp_sent_bytes_total",
            &[("destination_service", "backend.svc")]
        ) > f64::from(1u32 << 20),
        "{text}"
    );
}

#[tokio::test]
async fn passthrough_client_hello_in_small_writes() {
    let backend_ca = Ca::new("backend-ca");
    let leaf = backend_ca.server("backend", &["backend.example.com"]);
    let backend = Backend::start(Some(&leaf), Behaviour::Echo).await;
    let gw = passthrough_gateway("TLS", &backend, |_| {}).await;

    let (io, writes) = chunked_pipe(gw.port(8443), 512).await;
    let hs = TlsClient::new(&backend_ca)
        .handshake(io, "backend.example.com")
        .await;
    assert!(hs.presented(&leaf), "{}", hs.error());
    // A ClientHello is a few hundred bytes: dozens of writes.
    assert!(
        writes.load(Ordering::SeqCst) > 10,
        "the ClientHello was not split"
    );
    let data = payload(64 * 1024);
    assert!(roundtrip(hs.ok(), &data).await == data, "echo differs");
}

#[tokio::test]
async fn tls_port_drops_garbage_silence_and_stalled_handshakes() {
    let gateway_ca = Ca::new("gateway-ca");
    let backend_ca = Ca::new("backend-ca");
    let app = gateway_ca.server("app", &["app.example.com"]);
    let leaf = backend_ca.server("backend", &["backend.example.com"]);
    let backend = Backend::start(Some(&leaf), Behaviour::Echo).await;
    let yaml = format!(
        "{}{}{}{}",
        gateway(
            "gw",
            &[
                server(8443, "HTTPS", &["app.example.com"], &simple(&app)),
                server(8443, "HTTPS", &["backend.example.com"], "mode: PASSTHROUGH"),
            ]
        ),
        vs_direct("app", "gw", &["app.example.com"], "app"),
        vs_tls(
            "pt",
            "gw",
            8443,
            "backend.example.com",
            &[("backend.svc", 443, 100)]
        ),
        se_static("backend.svc", 443, "TLS", backend.port()),
    );
    let timeout = Duration::from_millis(300);
    let gw = TestGateway::start_with(&yaml, |b| b.tls_handshake_timeout = timeout).await;
    let addr = gw.port(8443);

    // Two connections opened now must outlive the handshake timeout that follows.
    let early_pt = TlsClient::new(&backend_ca)
        .connect(addr, "backend.example.com")
        .await
        .ok();
    let early_term = TlsClient::new(&gateway_ca)
        .connect(addr, "app.example.com")
        .await
        .ok();

    // Plain HTTP on a TLS port: closed without an answer.
    let reply = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: backend.example.com\r\n\r\n",
        "",
    )
    .await;
    assert_eq!(reply, "", "garbage got an answer");

    // A client that sends nothing: closed once the handshake timeout passes.
    let start = Instant::now();
    let mut s = within(TcpStream::connect(addr)).await.unwrap();
    let mut buf = [0u8; 64];
    let n = within_for(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "silent client got bytes");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}, before the handshake timeout"
    );

    // A ClientHello for a terminated server, then nothing: closed at the same deadline.
    let start = Instant::now();
    let hello = TlsClient::new(&gateway_ca).client_hello("app.example.com");
    let mut s = within(TcpStream::connect(addr)).await.unwrap();
    within(s.write_all(&hello)).await.unwrap();
    let mut sink = Vec::new();
    let _ = within_for(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
    assert!(!sink.is_empty(), "no ServerHello for a stalled handshake");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "stalled handshake closed after {waited:?}"
    );

    let text = scrape(&gw).await;
    for reason in ["not_tls", "hello_timeout", "handshake_timeout"] {
        assert_eq!(
            metric(
                &text,
                "meshgate_tls_rejected_total",
                &[("listener", "8443"), ("reason", reason)]
            ),
            1.0,
            "{reason}: {text}"
        );
    }

    // The early connections still work: the deadline covered only their handshakes.
    assert!(roundtrip(early_pt, b"ping").await == b"ping");
    let r = within(request(early_term, false, "app.example.com", "/"))
        .await
        .unwrap();
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "app"), "{r:?}");
    // A new client gets through too; garbage and silence never reached the backend.
    let hs = TlsClient::new(&backend_ca)
        .connect(addr, "backend.example.com")
        .await;
    assert!(roundtrip(hs.ok(), b"pong").await == b"pong");
    assert_eq!(
        backend.accepted(),
        2,
        "garbage or silence reached the backend"
    );
}

#[tokio::test]
async fn passthrough_by_wildcard_sni_and_sni_without_route_is_dropped() {
    let backend_ca = Ca::new("backend-ca");
    let leaf = backend_ca.server("backend", &["*.pt.example.com"]);
    let backend = Backend::start(Some(&leaf), Behaviour::Say("wild")).await;
    let yaml = format!(
        "{}{}{}",
        gateway(
            "gw",
            &[server(8443, "TLS", &["*.example.com"], "mode: PASSTHROUGH")]
        ),
        vs_tls(
            "pt",
            "gw",
            8443,
            "*.pt.example.com",
            &[("backend.svc", 443, 100)]
        ),
        se_static("backend.svc", 443, "TLS", backend.port()),
    );
    let gw = TestGateway::start(&yaml).await;
    let addr = gw.port(8443);
    let client = TlsClient::new(&backend_ca);

    let hs = client.connect(addr, "x.pt.example.com").await;
    assert!(hs.presented(&leaf), "{}", hs.error());
    let mut out = String::new();
    within(hs.ok().read_to_string(&mut out)).await.unwrap();
    assert_eq!(out, "wild");

    // The server admits other.example.com, but no tls route matches it.
    let hs = client.connect(addr, "other.example.com").await;
    assert!(!hs.is_ok(), "an SNI without route was served");
    assert!(hs.leaf.is_none());
    let text = scrape(&gw).await;
    assert_eq!(
        metric(
            &text,
            "meshgate_tls_rejected_total",
            &[("listener", "8443"), ("reason", "no_route")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(backend.accepted(), 1);
}

#[tokio::test]
async fn auto_passthrough_routes_istio_sni_to_service_port_and_subset() {
    let backend_ca = Ca::new("backend-ca");
    let leaf = backend_ca.server(
        "backend",
        &[
            "outbound_.9443_._.reviews.default.svc.cluster.local",
            "outbound_.9443_.v2_.reviews.default.svc.cluster.local",
        ],
    );
    let v1 = Backend::start(Some(&leaf), Behaviour::Say("v1")).await;
    let v2 = Backend::start(Some(&leaf), Behaviour::Say("v2")).await;
    let yaml = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 9443, name: tls, protocol: TLS}}\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{tls: {}}}, labels: {{version: v1}}}}\n  - {{address: 127.0.0.1, ports: {{tls: {}}}, labels: {{version: v2}}}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\nspec:\n  host: reviews\n  subsets:\n  - {{name: v2, labels: {{version: v2}}}}\n---\n",
        gateway(
            "eastwest",
            &[server(15443, "TLS", &["*.local"], "mode: AUTO_PASSTHROUGH")]
        ),
        v1.port(),
        v2.port(),
    );
    let gw = TestGateway::start(&yaml).await;
    let addr = gw.port(15443);
    let client = TlsClient::new(&backend_ca);
    // The v2 subset always lands on v2; the whole service on either.
    for _ in 0..4 {
        let hs = client
            .connect(
                addr,
                "outbound_.9443_.v2_.reviews.default.svc.cluster.local",
            )
            .await;
        assert!(hs.presented(&leaf), "{}", hs.error());
        let mut out = String::new();
        within(hs.ok().read_to_string(&mut out)).await.unwrap();
        assert_eq!(out, "v2");
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let hs = client
            .connect(addr, "outbound_.9443_._.reviews.default.svc.cluster.local")
            .await;
        let mut out = String::new();
        within(hs.ok().read_to_string(&mut out)).await.unwrap();
        seen.insert(out);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // An unknown port or subset, or an SNI outside the server's hosts, gets nothing.
    for sni in [
        "outbound_.9080_._.reviews.default.svc.cluster.local",
        "outbound_.9443_.v9_.reviews.default.svc.cluster.local",
    ] {
        let hs = client.connect(addr, sni).await;
        assert!(!hs.is_ok(), "{sni} was served");
    }
}

#[tokio::test]
async fn passthrough_weighted_destinations_spread_connections() {
    let backend_ca = Ca::new("backend-ca");
    let leaf = backend_ca.server("backend", &["backend.example.com"]);
    let one = Backend::start(Some(&leaf), Behaviour::Say("one")).await;
    let two = Backend::start(Some(&leaf), Behaviour::Say("two")).await;
    let yaml = format!(
        "{}{}{}{}",
        gateway(
            "gw",
            &[server(
                8443,
                "TLS",
                &["backend.example.com"],
                "mode: PASSTHROUGH"
            )]
        ),
        vs_tls(
            "pt",
            "gw",
            8443,
            "backend.example.com",
            &[("one.svc", 443, 50), ("two.svc", 443, 50)]
        ),
        se_static("one.svc", 443, "TLS", one.port()),
        se_static("two.svc", 443, "TLS", two.port()),
    );
    let gw = TestGateway::start(&yaml).await;
    let client = TlsClient::new(&backend_ca);
    let (mut ones, mut twos) = (0, 0);
    for _ in 0..30 {
        let hs = client.connect(gw.port(8443), "backend.example.com").await;
        let mut s = hs.ok();
        let mut out = String::new();
        within(s.read_to_string(&mut out)).await.unwrap();
        match out.as_str() {
            "one" => ones += 1,
            "two" => twos += 1,
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert!(ones > 0 && twos > 0, "one: {ones}, two: {twos}");
    assert_eq!(one.accepted() + two.accepted(), 30);
}

#[tokio::test]
async fn passthrough_half_close_still_reads_the_reply() {
    let backend_ca = Ca::new("backend-ca");
    let leaf = backend_ca.server("backend", &["backend.example.com"]);
    let backend = Backend::start(Some(&leaf), Behaviour::Collect).await;
    // HTTPS with tls.mode PASSTHROUGH, the other spelling.
    let gw = passthrough_gateway("HTTPS", &backend, |_| {}).await;
    let hs = TlsClient::new(&backend_ca)
        .connect(gw.port(8443), "backend.example.com")
        .await;
    assert!(hs.presented(&leaf), "{}", hs.error());
    let mut s = hs.ok();
    let data = payload(100 * 1024);
    within(async {
        s.write_all(&data).await.unwrap();
        s.shutdown().await.unwrap();
    })
    .await;
    let mut out = String::new();
    within(s.read_to_string(&mut out)).await.unwrap();
    assert_eq!(out, format!("got {}", data.len()));
}

// ---------------------------------------------------------------------------------------
// TCP routes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn tcp_routes_forward_bytes_and_report_istio_tcp_metrics() {
    let echo = Backend::start(None, Behaviour::Echo).await;
    let collect = Backend::start(None, Behaviour::Collect).await;
    let rule = |port: u16, host: &str| {
        format!("  - match:\n    - port: {port}\n    route:\n    - destination:\n        host: {host}\n        port:\n          number: {port}\n")
    };
    let yaml = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: tcp\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  tcp:\n{}{}---\n{}{}",
        gateway(
            "gw",
            &[
                server(9000, "TCP", &["*"], ""),
                server(9001, "TCP", &["*"], "")
            ]
        ),
        rule(9000, "echo.svc"),
        rule(9001, "collect.svc"),
        se_static("echo.svc", 9000, "TCP", echo.port()),
        se_static("collect.svc", 9001, "TCP", collect.port()),
    );
    let gw = TestGateway::start(&yaml).await;
    let data = payload(64 * 1024);

    // Both backends read until EOF: the client's half-close has to be passed on.
    let s = within(TcpStream::connect(gw.port(9000))).await.unwrap();
    let out = roundtrip(s, &data).await;
    assert_eq!(out.len(), data.len());
    assert!(out == data, "echo differs");
    let s = within(TcpStream::connect(gw.port(9001))).await.unwrap();
    let reply = format!("got {}", data.len());
    assert_eq!(roundtrip(s, &data).await, reply.as_bytes());

    let labels = |svc: &'static str, name: &'static str| {
        [
            ("reporter", "source"),
            ("destination_service", svc),
            ("destination_service_name", name),
            ("destination_service_namespace", "default"),
            ("response_flags", "-"),
        ]
    };
    let echo_labels = labels("echo.svc", "echo");
    let collect_labels = labels("collect.svc", "collect");
    let text = scrape_until(&gw, |t| {
        metric(t, "istio_tcp_connections_closed_total", &echo_labels) >= 1.0
            && metric(t, "istio_tcp_connections_closed_total", &collect_labels) >= 1.0
    })
    .await;
    let len = data.len() as f64;
    // sent: towards the upstream; received: from it.
    for (labels, sent, received) in [
        (&echo_labels, len, len),
        (&collect_labels, len, reply.len() as f64),
    ] {
        for (name, want) in [
            ("istio_tcp_connections_opened_total", 1.0),
            ("istio_tcp_connections_closed_total", 1.0),
            ("istio_tcp_sent_bytes_total", sent),
            ("istio_tcp_received_bytes_total", received),
        ] {
            assert_eq!(
                metric(&text, name, labels),
                want,
                "{name} {labels:?}:\n{text}"
            );
        }
    }
}

#[tokio::test]
async fn destination_rule_idle_timeout_and_max_duration_close_tcp_connections() {
    let echo = Backend::start(None, Behaviour::Echo).await;
    // Three services on the same echo backend, each with its own connectionPool.tcp; the
    // listener's own idle timeout is 300 ms.
    let dr = |host: &str, tcp: &str| {
        let name = host.replace('.', "-");
        format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\nspec:\n  host: {host}\n  trafficPolicy:\n    connectionPool:\n      tcp: {tcp}\n---\n")
    };
    let rule = |port: u16, host: &str| {
        format!("  - match:\n    - port: {port}\n    route:\n    - destination:\n        host: {host}\n        port:\n          number: 9000\n")
    };
    let yaml = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: tcp\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  tcp:\n{}{}{}---\n{}{}{}{}{}{}",
        gateway(
            "gw",
            &[
                server(9000, "TCP", &["*"], ""),
                server(9001, "TCP", &["*"], ""),
                server(9002, "TCP", &["*"], ""),
            ]
        ),
        rule(9000, "short.svc"),
        rule(9001, "aged.svc"),
        rule(9002, "forever.svc"),
        se_static("short.svc", 9000, "TCP", echo.port()),
        se_static("aged.svc", 9000, "TCP", echo.port()),
        se_static("forever.svc", 9000, "TCP", echo.port()),
        dr("short.svc", "{idleTimeout: 150ms}"),
        dr("aged.svc", "{idleTimeout: 0s, maxConnectionDuration: 700ms}"),
        dr("forever.svc", "{idleTimeout: 0s}"),
    );
    let gw = TestGateway::start_with(&yaml, |b| {
        b.tcp_idle_timeout = Duration::from_millis(300);
    })
    .await;
    let open = |port: u16| {
        let addr = gw.port(port);
        async move {
            let mut s = within(TcpStream::connect(addr)).await.unwrap();
            within(s.write_all(b"ping")).await.unwrap();
            let mut got = [0u8; 4];
            within(s.read_exact(&mut got)).await.unwrap();
            assert_eq!(&got, b"ping");
            s
        }
    };
    // Until the gateway closes `s` (the echo sends nothing unasked), or `limit`.
    let closed_within = |mut s: TcpStream, limit: Duration| async move {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(limit, s.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    };
    // The destination's 150 ms, not the listener's 300 ms.
    let s = open(9000).await;
    let t0 = Instant::now();
    assert!(closed_within(s, Duration::from_secs(5)).await);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(290),
        "idle connection closed after {took:?}"
    );
    // `0s`: no idle timeout, even past the listener's.
    let s = open(9002).await;
    assert!(!closed_within(s, Duration::from_millis(900)).await);
    // An age limit closes even a busy connection.
    let mut s = open(9001).await;
    let t0 = Instant::now();
    let cut = loop {
        let mut got = [0u8; 4];
        let ok = s.write_all(b"ping").await.is_ok()
            && matches!(
                tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut got)).await,
                Ok(Ok(_))
            );
        if !ok {
            break t0.elapsed();
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "never cut off");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        cut >= Duration::from_millis(600) && cut < Duration::from_millis(2000),
        "busy connection cut after {cut:?}"
    );
}

/// nginx as a PROXY protocol peer: a stream server that reads the header and answers with
/// the client and server address it announced.
fn nginx_proxy_peer() -> support::nginx::Nginx {
    let module = "/usr/lib/nginx/modules/ngx_stream_module.so";
    support::ensure_debian_package("nginx", "-v", "nginx");
    if !std::path::Path::new(module).exists() {
        // Debian's nginx ships its stream module separately.
        let ok = std::process::Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300", "-qq", "install", "-y"])
            .arg("libnginx-mod-stream")
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "missing {module}: apt-get install libnginx-mod-stream failed"
        );
    }
    support::nginx::start(&format!("load_module {module};"), |port, _| {
        format!(
            "stream {{
  server {{
    listen 127.0.0.1:{port} proxy_protocol;
    return \"$proxy_protocol_addr $proxy_protocol_port $proxy_protocol_server_addr $proxy_protocol_server_port\\n\";
  }}
}}
"
        )
    })
}

#[tokio::test]
async fn destination_proxy_protocol_tells_nginx_the_client_address() {
    let nginx = nginx_proxy_peer();
    let dr = |host: &str, pp: &str| {
        let name = host.replace('.', "-");
        format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\nspec:\n  host: {host}\n  trafficPolicy:\n    proxyProtocol: {pp}\n---\n")
    };
    let rule = |port: u16, host: &str| {
        format!("  - match:\n    - port: {port}\n    route:\n    - destination:\n        host: {host}\n        port:\n          number: 9000\n")
    };
    let yaml = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: tcp\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  tcp:\n{}{}---\n{}{}{}{}",
        gateway(
            "gw",
            &[server(9000, "TCP", &["*"], ""), server(9001, "TCP", &["*"], "")]
        ),
        rule(9000, "v1.svc"),
        rule(9001, "v2.svc"),
        se_static("v1.svc", 9000, "TCP", nginx.addr.port()),
        se_static("v2.svc", 9000, "TCP", nginx.addr.port()),
        dr("v1.svc", "{}"),
        dr("v2.svc", "{version: V2}"),
    );
    let gw = TestGateway::start(&yaml).await;
    for port in [9000, 9001] {
        let addr = gw.port(port);
        let mut s = within(TcpStream::connect(addr)).await.unwrap();
        let me = s.local_addr().unwrap();
        let mut line = String::new();
        within(s.read_to_string(&mut line)).await.unwrap();
        assert_eq!(
            line,
            format!("{} {} {} {}\n", me.ip(), me.port(), addr.ip(), addr.port()),
            "port {port}"
        );
    }
    // Istio's versions only.
    let bad = yaml.replace("{version: V2}", "{version: V3}");
    let errors = TestGateway::start_err(&bad).await;
    assert!(
        errors.contains("trafficPolicy.proxyProtocol.version") && errors.contains("V3"),
        "{errors}"
    );
}

#[tokio::test]
async fn an_open_tcp_connection_does_not_keep_the_old_config_alive() {
    // A TCP connection can outlive many reloads; it keeps its cluster, never the whole
    // snapshot (every route and cluster of that generation: 50 MB at 10,000 hosts).
    let echo = Backend::start(None, Behaviour::Echo).await;
    let config = |ports: &[u16]| {
        let servers: Vec<String> = ports
            .iter()
            .map(|p| server(*p, "TCP", &["*"], ""))
            .collect();
        format!(
            "{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: tcp\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  tcp:\n  - route:\n    - destination:\n        host: echo.svc\n        port:\n          number: 9000\n---\n{}",
            gateway("gw", &servers),
            se_static("echo.svc", 9000, "TCP", echo.port()),
        )
    };
    let gw = TestGateway::start(&config(&[9000])).await;
    let mut s = within(TcpStream::connect(gw.port(9000))).await.unwrap();
    within(s.write_all(b"ping")).await.unwrap();
    let mut got = [0u8; 4];
    within(s.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"ping");

    let old = Arc::downgrade(&gw.running.store.load());
    gw.reload_with(&config(&[9000, 9001])).await.unwrap();
    // The replaced snapshot is freed on a blocking thread, shortly after the swap.
    let deadline = Instant::now() + Duration::from_secs(5);
    while old.upgrade().is_some() {
        assert!(
            Instant::now() < deadline,
            "the open connection still holds the old snapshot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And the connection itself goes on.
    within(s.write_all(b"pong")).await.unwrap();
    within(s.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"pong");
}

#[tokio::test]
async fn mutual_subject_alt_names_restrict_clients_and_xfcc_carries_the_identity() {
    let ca = Ca::new("gateway-ca");
    let clients = Ca::new("client-ca");
    let cert = ca.server("m", &["m.example.com"]);
    let allowed = clients.client("allowed", &["allowed.client"]);
    let other = clients.client("other", &["other.client"]);
    let up = Upstream::new("app").run().await;
    let yaml = format!(
        "{}{}{}",
        gateway(
            "gw",
            &[server(
                8443,
                "HTTPS",
                &["m.example.com"],
                &format!(
                    "mode: MUTUAL, {}, caCertificates: \"{}\", subjectAltNames: [allowed.client, spiffe://x/y]",
                    files(&cert),
                    clients.pem_path.display()
                )
            )]
        ),
        vs_route("vs", "gw", &["m.example.com"], "app.svc"),
        service_entry("app.svc", 80, "HTTP", &[(&up, "v1")]),
    );
    let gw = TestGateway::start_with(&yaml, |b| {
        b.forward_client_cert = meshgate::http::headers::ForwardClientCert::SanitizeSet;
    })
    .await;
    let addr = gw.port(8443);
    for v in [Version::Tls13, Version::Tls12] {
        let r = https_get(
            &TlsClient::new(&ca).only(v).cert(&other),
            addr,
            "m.example.com",
            "m.example.com",
            "/",
        )
        .await;
        assert!(
            r.is_err(),
            "{v:?}: a SAN outside subjectAltNames passed: {r:?}"
        );
        let r = https_get(
            &TlsClient::new(&ca).only(v).cert(&allowed),
            addr,
            "m.example.com",
            "m.example.com",
            "/",
        )
        .await
        .unwrap();
        assert_eq!(r.status.as_u16(), 200, "{v:?}: {r:?}");
        let xfcc = up.last().headers["x-forwarded-client-cert"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            xfcc.starts_with("Hash=")
                && xfcc.contains(";Subject=\"CN=allowed.client\"")
                && xfcc.ends_with(";DNS=allowed.client"),
            "{xfcc}"
        );
    }
    assert_eq!(up.hits(), 2, "the refused client reached the upstream");
}

#[tokio::test]
async fn forged_xfcc_is_removed_by_default() {
    let up = Upstream::new("app").run().await;
    let yaml = format!(
        "{}{}{}",
        support::gateway::http_gateway("gw", 8080, &["*"]),
        vs_route("vs", "gw", &["app.example.com"], "app.svc"),
        service_entry("app.svc", 80, "HTTP", &[(&up, "v1")]),
    );
    let gw = TestGateway::start(&yaml).await;
    let r = Client::new(gw.port(8080), "app.example.com")
        .header("x-forwarded-client-cert", "By=spiffe://forged;Hash=00")
        .send("/")
        .await;
    assert_eq!(r.status, 200);
    assert!(up.last().headers.get("x-forwarded-client-cert").is_none());
}

#[tokio::test]
async fn tls_server_with_simple_mode_terminates_into_tcp_routes() {
    let ca = Ca::new("gateway-ca");
    let cert = ca.server("db", &["db.example.com"]);
    let echo = Backend::start(None, Behaviour::Echo).await;
    let yaml = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: db\nspec:\n  hosts: [db.example.com]\n  gateways: [gw]\n  tcp:\n  - match:\n    - port: 9443\n    route:\n    - destination:\n        host: echo.svc\n        port:\n          number: 9000\n---\n{}",
        gateway("gw", &[server(9443, "TLS", &["db.example.com"], &simple(&cert))]),
        se_static("echo.svc", 9000, "TCP", echo.port()),
    );
    let gw = TestGateway::start(&yaml).await;
    let hs = TlsClient::new(&ca)
        .alpn(&["h2", "http/1.1"])
        .connect(gw.port(9443), "db.example.com")
        .await;
    assert_eq!(
        hs.alpn, None,
        "a TCP server must not negotiate an HTTP protocol"
    );
    let stream = hs.stream.unwrap();
    // The client sees the gateway's certificate and the plain bytes reach the echo backend.
    let data = payload(200 * 1024);
    let out = roundtrip(stream, &data).await;
    assert!(out == data, "echo through terminated TLS differs");
}

// ---------------------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn curl_termination_and_passthrough_on_one_port() {
    if !have_curl() {
        return;
    }
    let gateway_ca = Ca::new("gateway-ca");
    let backend_ca = Ca::new("backend-ca");
    let app = gateway_ca.server("app", &["app.example.com"]);
    let leaf = backend_ca.server("backend", &["backend.example.com"]);
    let backend = Backend::start(Some(&leaf), Behaviour::Http("hello from the backend")).await;
    let yaml = format!(
        "{}{}{}{}",
        gateway(
            "gw",
            &[
                server(8443, "HTTPS", &["app.example.com"], &simple(&app)),
                server(8443, "HTTPS", &["backend.example.com"], "mode: PASSTHROUGH"),
            ]
        ),
        vs_direct("app", "gw", &["app.example.com"], "hello from the gateway"),
        vs_tls(
            "pt",
            "gw",
            8443,
            "backend.example.com",
            &[("backend.svc", 443, 100)]
        ),
        se_static("backend.svc", 443, "TLS", backend.port()),
    );
    let gw = TestGateway::start(&yaml).await;
    let addr = gw.port(8443);
    let fmt = ["-w", "\n%{http_code} %{http_version}"];

    // Terminated by the gateway (curl offers h2 via ALPN).
    let c = curl(addr, "app.example.com", &gateway_ca, "/hi?x=1", &fmt).await;
    assert_eq!(c.code, Some(0), "{c:?}");
    assert_eq!(c.stdout, "hello from the gateway\n200 2", "{c:?}");
    let c = curl(
        addr,
        "app.example.com",
        &gateway_ca,
        "/hi",
        &["--http1.1", fmt[0], fmt[1]],
    )
    .await;
    assert_eq!(c.stdout, "hello from the gateway\n200 1.1", "{c:?}");
    let c = curl(addr, "app.example.com", &backend_ca, "/hi", &fmt).await;
    assert_eq!(c.code, Some(60), "trusted with the wrong CA: {c:?}");

    // Passed through to the backend, which holds its own certificate.
    let c = curl(addr, "backend.example.com", &backend_ca, "/pt", &fmt).await;
    assert_eq!(c.code, Some(0), "{c:?}");
    assert_eq!(c.stdout, "hello from the backend\n200 1.1", "{c:?}");
    let c = curl(addr, "backend.example.com", &gateway_ca, "/pt", &fmt).await;
    assert_eq!(
        c.code,
        Some(60),
        "the gateway terminated a passthrough SNI: {c:?}"
    );
    assert_eq!(backend.accepted(), 2);
}

/// HTTP ports hand a connection over only once its first bytes are in (TCP_DEFER_ACCEPT);
/// opaque TCP ports at once, as their protocol may have the server speak first; and a port
/// that turns from HTTP into TCP on reload stops deferring.
#[tokio::test]
async fn only_ports_whose_clients_speak_first_defer_accepting() {
    let echo = Backend::start(None, Behaviour::Echo).await;
    let tcp_rule = |port: u16| {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: tcp{port}\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  tcp:\n  - match:\n    - port: {port}\n    route:\n    - destination:\n        host: echo.svc\n        port:\n          number: 9000\n---\n")
    };
    let v1 = format!(
        "{}{}{}{}",
        gateway(
            "gw",
            &[
                server(8080, "HTTP", &["app.test"], ""),
                server(9000, "TCP", &["*"], "")
            ]
        ),
        vs_direct("app", "gw", &["app.test"], "ok"),
        tcp_rule(9000),
        se_static("echo.svc", 9000, "TCP", echo.port()),
    );
    let gw = TestGateway::start(&v1).await;
    let accepted = |text: &str, port: &str| {
        metric(
            text,
            "meshgate_downstream_connections_total",
            &[("listener", port)],
        )
    };
    let mut http = within(TcpStream::connect(gw.port(8080))).await.unwrap();
    let _tcp = within(TcpStream::connect(gw.port(9000))).await.unwrap();
    scrape_until(&gw, |t| accepted(t, "9000") == 1.0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        accepted(&scrape(&gw).await, "8080"),
        0.0,
        "silent HTTP connection accepted"
    );
    http.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    scrape_until(&gw, |t| accepted(t, "8080") == 1.0).await;

    // Port 8080 becomes a TCP port: a silent connection is accepted at once (deferred, the
    // kernel would hold it for a second).
    let v2 = format!(
        "{}{}{}",
        gateway(
            "gw",
            &[
                server(8080, "TCP", &["*"], ""),
                server(9000, "TCP", &["*"], "")
            ]
        ),
        tcp_rule(8080) + &tcp_rule(9000),
        se_static("echo.svc", 9000, "TCP", echo.port()),
    );
    gw.reload_with(&v2).await.unwrap();
    let _silent = within(TcpStream::connect(gw.port(8080))).await.unwrap();
    within_for(
        Duration::from_millis(700),
        Box::pin(scrape_until(&gw, |t| accepted(t, "8080") == 2.0)),
    )
    .await;
}
