//! Egress, end to end over real sockets: TLS origination from DestinationRule `tls`
//! (SIMPLE, MUTUAL from files and from `credentialName`), the SNI sent (the service host by
//! default, `tls.sni` when set), certificate verification (`caCertificates`,
//! `subjectAltNames`, `insecureSkipVerify`) and its failure (503 `TLS error`, flag `UF`),
//! `portLevelSettings` and subset policies, HTTP/2 over TLS with ALPN h2 for `HTTP2`/`GRPC`
//! ports (gRPC trailers through), the mesh port (Host routing and forward proxy to
//! ServiceEntry hosts without a VirtualService), and the related config errors.
//!
//! TLS backends are started here (tokio-rustls, ring) and record what each handshake and
//! request looked like; certificates come from `support::pki`, minted per run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, Version};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use support::client::raw_exchange;
use support::gateway::http_gateway;
use support::pki::{provider, Ca, Leaf};
use support::{within, Client, TestGateway, Upstream};

// ---------------------------------------------------------------------------------------
// TLS backends
// ---------------------------------------------------------------------------------------

/// What a backend learnt from the TLS handshake of a connection.
#[derive(Debug, Clone, Default)]
struct Peer {
    /// The SNI the client sent.
    sni: Option<String>,
    /// The negotiated ALPN protocol.
    alpn: Option<String>,
    /// The client certificate presented (MUTUAL).
    client_cert: Option<CertificateDer<'static>>,
}

/// A request as a TLS backend saw it, with its connection's handshake.
#[derive(Debug, Clone)]
struct Seen {
    peer: Peer,
    version: Version,
    method: String,
    uri: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Debug)]
struct Records {
    /// Every request served.
    seen: watch::Sender<Vec<Seen>>,
    /// Every failed handshake, as text.
    failed: watch::Sender<Vec<String>>,
}

/// A TLS backend on 127.0.0.1:0 serving HTTP/2 when ALPN chose h2, HTTP/1.1 otherwise.
/// It answers 200 with its name, or for `content-type: application/grpc` a gRPC reply
/// (message `pong`) with trailers `grpc-status: 0`.
#[derive(Debug, Clone)]
struct TlsBackend {
    addr: SocketAddr,
    rec: Arc<Records>,
}

impl TlsBackend {
    /// Present `leaf`, offer `alpn`, ask for no client certificate.
    async fn start(name: &'static str, leaf: &Leaf, alpn: &[&str]) -> Self {
        Self::serve(name, leaf.server_config(alpn)).await
    }

    /// Present `leaf`, offer `alpn`, require a client certificate issued by `client_ca`.
    async fn start_mutual(name: &'static str, leaf: &Leaf, client_ca: &Ca, alpn: &[&str]) -> Self {
        let mut roots = RootCertStore::empty();
        roots.add(client_ca.der()).unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(leaf.chain(), leaf.key())
            .unwrap();
        cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Self::serve(name, Arc::new(cfg)).await
    }

    async fn serve(name: &'static str, cfg: Arc<ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rec = Arc::new(Records {
            seen: watch::channel(Vec::new()).0,
            failed: watch::channel(Vec::new()).0,
        });
        let acceptor = TlsAcceptor::from(cfg);
        let records = rec.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(connection(name, acceptor.clone(), tcp, records.clone()));
            }
        });
        Self { addr, rec }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests served so far.
    fn seen(&self) -> Vec<Seen> {
        self.rec.seen.borrow().clone()
    }

    /// The last request served.
    fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the TLS backend served no request")
    }

    /// Failed handshakes so far.
    fn failures(&self) -> Vec<String> {
        self.rec.failed.borrow().clone()
    }

    /// Wait until at least `n` handshakes have failed; returns their errors.
    async fn wait_failures(&self, n: usize) -> Vec<String> {
        let mut rx = self.rec.failed.subscribe();
        within(async {
            rx.wait_for(|f| f.len() >= n)
                .await
                .expect("backend records")
                .clone()
        })
        .await
    }
}

async fn connection(name: &'static str, acceptor: TlsAcceptor, tcp: TcpStream, rec: Arc<Records>) {
    // Boxed: a rustls connection is large, and so is every future holding one.
    let tls = match Box::pin(acceptor.accept(tcp)).await {
        Ok(s) => s,
        Err(e) => {
            rec.failed.send_modify(|f| f.push(e.to_string()));
            return;
        }
    };
    let conn = tls.get_ref().1;
    let peer = Peer {
        sni: conn.server_name().map(str::to_owned),
        alpn: conn
            .alpn_protocol()
            .map(|a| String::from_utf8_lossy(a).into_owned()),
        client_cert: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned()),
    };
    let h2 = peer.alpn.as_deref() == Some("h2");
    let svc = service_fn(move |req: Request<Incoming>| {
        let rec = rec.clone();
        let peer = peer.clone();
        async move { Ok::<_, Infallible>(answer(name, &rec, peer, req).await) }
    });
    let io = TokioIo::new(tls);
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, svc)
            .await;
    }
}

async fn answer(
    name: &'static str,
    rec: &Records,
    peer: Peer,
    req: Request<Incoming>,
) -> Response<ReplyBody> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let grpc = is_grpc(&parts.headers);
    rec.seen.send_modify(|s| {
        s.push(Seen {
            peer,
            version: parts.version,
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: parts.headers.clone(),
            body,
        });
    });
    let resp = Response::builder().header("x-backend", name);
    if grpc {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("grpc-message", HeaderValue::from_static("ok"));
        resp.header("content-type", "application/grpc")
            .body(ReplyBody {
                data: Some(grpc_frame(b"pong")),
                trailers: Some(trailers),
            })
            .unwrap()
    } else {
        resp.header("content-type", "text/plain")
            .body(ReplyBody {
                data: Some(Bytes::from_static(name.as_bytes())),
                trailers: None,
            })
            .unwrap()
    }
}

fn is_grpc(h: &HeaderMap) -> bool {
    h.get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// A response body: one data frame, then the trailers if any.
struct ReplyBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let frame = match this.data.take() {
            Some(d) => Some(Frame::data(d)),
            None => this.trailers.take().map(Frame::trailers),
        };
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let len = self.data.as_ref().map_or(0, |d| d.len() as u64);
        if self.trailers.is_none() {
            http_body::SizeHint::with_exact(len)
        } else {
            let mut h = http_body::SizeHint::new();
            h.set_lower(len);
            h
        }
    }
}

/// A gRPC length-prefixed message (uncompressed).
fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(u32::try_from(msg.len()).unwrap());
    b.put_slice(msg);
    b.freeze()
}

// ---------------------------------------------------------------------------------------
// Clients and gateway helpers
// ---------------------------------------------------------------------------------------

/// A gRPC-shaped exchange, fully read, trailers included.
#[derive(Debug)]
struct GrpcReply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl GrpcReply {
    fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers.as_ref()?.get(name)?.to_str().ok()
    }
}

/// Send a unary gRPC-shaped request (POST, `content-type: application/grpc`,
/// `te: trailers`, message `msg`) over h2c prior knowledge to `addr` with `:authority`
/// `authority`, reading the body and its trailers.
async fn grpc_call(addr: SocketAddr, authority: &str, path: &str, msg: &[u8]) -> GrpcReply {
    within(async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut tx, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = Request::post(format!("http://{authority}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(grpc_frame(msg)))
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        GrpcReply {
            status: parts.status,
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        }
    })
    .await
}

/// The status code and body of a raw HTTP/1.1 response text.
fn parse_raw(raw: &str) -> (u16, String) {
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {raw:?}"));
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Wait until `/metrics` has an `istio_requests_total` sample containing every needle;
/// returns that line (metrics are recorded as the response body ends).
async fn requests_metric(gw: &TestGateway, needles: &[&str]) -> String {
    within(async {
        loop {
            let r = Client::new(gw.admin(), "admin").send("/metrics").await;
            assert_eq!(r.status, 200, "{r:?}");
            let line = r
                .body
                .lines()
                .find(|l| {
                    l.starts_with("istio_requests_total{") && needles.iter().all(|n| l.contains(n))
                })
                .map(str::to_owned);
            if let Some(line) = line {
                return line;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

/// Start, expecting a configuration error; returns its text.
async fn start_err(yaml: &str, mesh: bool) -> String {
    let started = TestGateway::try_start_with(yaml, |b| {
        if mesh {
            b.mesh_port = Some(15001);
        }
    })
    .await;
    match started {
        Ok(_) => panic!("the gateway started, but the config is invalid:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// YAML
// ---------------------------------------------------------------------------------------

/// A path as a YAML double-quoted string.
fn q(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// `caCertificates: <ca.pem of ca>`.
fn ca_of(ca: &Ca) -> String {
    format!("caCertificates: {}", q(&ca.pem_path))
}

/// A STATIC, MESH_EXTERNAL ServiceEntry for `host`. `ports`: `(number, name, protocol)`;
/// `endpoints`: one 127.0.0.1 endpoint each, `(version label or "", [(port name, port)])`.
fn service_entry(
    host: &str,
    ports: &[(u16, &str, &str)],
    endpoints: &[(&str, &[(&str, u16)])],
) -> String {
    let ports: String = ports
        .iter()
        .map(|(n, name, p)| format!("  - {{number: {n}, name: {name}, protocol: {p}}}\n"))
        .collect();
    let eps: String = endpoints
        .iter()
        .map(|(version, map)| {
            let map: Vec<String> = map.iter().map(|(n, p)| format!("{n}: {p}")).collect();
            let mut e = format!(
                "  - address: 127.0.0.1\n    ports: {{{}}}\n",
                map.join(", ")
            );
            if !version.is_empty() {
                e.push_str(&format!("    labels: {{version: {version}}}\n"));
            }
            e
        })
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {}\nspec:\n  hosts: [{host}]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports:\n{ports}  endpoints:\n{eps}---\n",
        host.replace('.', "-")
    )
}

/// A ServiceEntry for `host` with one port (`number`, `protocol`) served at
/// 127.0.0.1:`target`.
fn one_port_se(host: &str, number: u16, protocol: &str, target: u16) -> String {
    service_entry(
        host,
        &[(number, "egress", protocol)],
        &[("", &[("egress", target)])],
    )
}

/// A DestinationRule for `host`; `spec` is the rest of its spec, indented by two.
fn destination_rule(host: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {}\nspec:\n  host: {host}\n{spec}---\n",
        host.replace('.', "-")
    )
}

/// A DestinationRule for `host` whose `trafficPolicy.tls` is the flow mapping `{tls}`.
fn dr_tls(host: &str, tls: &str) -> String {
    destination_rule(host, &format!("  trafficPolicy:\n    tls: {{{tls}}}\n"))
}

/// A VirtualService on Gateway `gw` for `host`: one `http` rule per `(prefix, destination)`
/// (no match when the prefix is ""), the destination inside a flow mapping.
fn virtual_service(name: &str, host: &str, rules: &[(&str, &str)]) -> String {
    let mut http = String::new();
    for (prefix, dest) in rules {
        http.push_str("  - ");
        if !prefix.is_empty() {
            http.push_str(&format!(
                "match:\n    - uri: {{prefix: \"{prefix}\"}}\n    "
            ));
        }
        http.push_str(&format!("route:\n    - destination: {{{dest}}}\n"));
    }
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: [\"{host}\"]\n  gateways: [gw]\n  http:\n{http}---\n"
    )
}

/// Both backends offer h2 and http/1.1; only an HTTP2/GRPC port should make us use h2.
const ALPN: &[&str] = &["h2", "http/1.1"];

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// SIMPLE origination behind a Gateway route: the plain HTTP request reaches the TLS
/// backend, verified against `caCertificates`, with SNI = the service host by default and
/// `tls.sni` when set.
#[tokio::test]
async fn simple_origination_sends_service_host_or_configured_sni() {
    let ca = Ca::new("egress-root");
    let leaf = ca.server("api", &["api.external.test", "custom.sni.test"]);
    let backend = TlsBackend::start("tls-backend", &leaf, ALPN).await;
    let yaml = [
        http_gateway("gw", 8080, &["*"]),
        one_port_se("api.external.test", 443, "HTTP", backend.port()),
        one_port_se("named.external.test", 443, "HTTP", backend.port()),
        dr_tls(
            "api.external.test",
            &format!("mode: SIMPLE, {}", ca_of(&ca)),
        ),
        dr_tls(
            "named.external.test",
            &format!("mode: SIMPLE, sni: custom.sni.test, {}", ca_of(&ca)),
        ),
        virtual_service(
            "default-sni",
            "default-sni.example.com",
            &[("", "host: api.external.test, port: {number: 443}")],
        ),
        virtual_service(
            "custom-sni",
            "custom-sni.example.com",
            &[("", "host: named.external.test")],
        ),
    ]
    .concat();
    let gw = TestGateway::start(&yaml).await;

    let r = Client::new(gw.port(8080), "default-sni.example.com")
        .send("/hello?x=1")
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "tls-backend"),
        "{r:?}"
    );
    let seen = backend.last();
    assert_eq!(
        seen.peer.sni.as_deref(),
        Some("api.external.test"),
        "default SNI must be the destination service host: {seen:?}"
    );
    assert_eq!(seen.uri, "/hello?x=1");
    assert_eq!(
        seen.version,
        Version::HTTP_11,
        "an HTTP port stays HTTP/1.1"
    );
    assert_eq!(seen.headers["host"], "default-sni.example.com");
    assert!(seen.peer.client_cert.is_none(), "SIMPLE presents no cert");

    let r = Client::new(gw.port(8080), "custom-sni.example.com")
        .send("/named")
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "tls-backend"),
        "{r:?}"
    );
    let seen = backend.last();
    assert_eq!(seen.uri, "/named");
    assert_eq!(
        seen.peer.sni.as_deref(),
        Some("custom.sni.test"),
        "tls.sni must be sent: {seen:?}"
    );
    assert_eq!(backend.seen().len(), 2);
    assert!(backend.failures().is_empty(), "{:?}", backend.failures());
}

/// Verification: an untrusted certificate gives 503 `TLS error` with flag UF and never
/// reaches the backend's HTTP layer; a name mismatch fails unless `subjectAltNames` lists
/// the certificate's name (which then replaces the SNI for verification);
/// `insecureSkipVerify` accepts an untrusted certificate.
#[tokio::test]
async fn verification_failures_subject_alt_names_and_insecure_skip_verify() {
    let ca = Ca::new("trusted-root");
    let rogue = Ca::new("rogue-root");
    let untrusted_leaf = rogue.server(
        "untrusted",
        &["untrusted.external.test", "insecure.external.test"],
    );
    let untrusted = TlsBackend::start("untrusted-backend", &untrusted_leaf, ALPN).await;
    let named_leaf = ca.server("named", &["real-name.test", "strict.external.test"]);
    let named = TlsBackend::start("named-backend", &named_leaf, ALPN).await;
    let yaml = [
        http_gateway("gw", 8080, &["*"]),
        one_port_se("untrusted.external.test", 443, "HTTP", untrusted.port()),
        dr_tls(
            "untrusted.external.test",
            &format!("mode: SIMPLE, {}", ca_of(&ca)),
        ),
        one_port_se("insecure.external.test", 443, "HTTP", untrusted.port()),
        dr_tls(
            "insecure.external.test",
            "mode: SIMPLE, insecureSkipVerify: true",
        ),
        one_port_se("mismatch.external.test", 443, "HTTP", named.port()),
        dr_tls(
            "mismatch.external.test",
            &format!("mode: SIMPLE, {}", ca_of(&ca)),
        ),
        one_port_se("san.external.test", 443, "HTTP", named.port()),
        dr_tls(
            "san.external.test",
            &format!(
                "mode: SIMPLE, subjectAltNames: [real-name.test], {}",
                ca_of(&ca)
            ),
        ),
        one_port_se("strict.external.test", 443, "HTTP", named.port()),
        dr_tls(
            "strict.external.test",
            &format!(
                "mode: SIMPLE, subjectAltNames: [someone-else.test], {}",
                ca_of(&ca)
            ),
        ),
        virtual_service(
            "egress",
            "egress.example.com",
            &[
                ("/untrusted", "host: untrusted.external.test"),
                ("/insecure", "host: insecure.external.test"),
                ("/mismatch", "host: mismatch.external.test"),
                ("/san", "host: san.external.test"),
                ("/strict", "host: strict.external.test"),
            ],
        ),
    ]
    .concat();
    let gw = TestGateway::start(&yaml).await;
    let get = |path: &'static str| {
        let addr = gw.port(8080);
        async move { Client::new(addr, "egress.example.com").send(path).await }
    };

    // Wrong CA.
    let r = get("/untrusted").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("TLS error"), "{r:?}");
    assert!(untrusted.seen().is_empty(), "{:?}", untrusted.seen());
    untrusted.wait_failures(1).await;
    let line = requests_metric(&gw, &["untrusted.external.test", "response_code=\"503\""]).await;
    assert!(line.contains("response_flags=\"UF"), "{line}");

    // insecureSkipVerify accepts the very same untrusted certificate.
    let r = get("/insecure").await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "untrusted-backend"),
        "{r:?}"
    );
    assert_eq!(
        untrusted.last().peer.sni.as_deref(),
        Some("insecure.external.test")
    );

    // Trusted CA, but the certificate names real-name.test, not the SNI.
    let r = get("/mismatch").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("TLS error"), "{r:?}");
    assert!(named.seen().is_empty(), "{:?}", named.seen());

    // subjectAltNames lists the certificate's name: accepted; the SNI is still the host.
    let r = get("/san").await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "named-backend"),
        "{r:?}"
    );
    assert_eq!(named.last().peer.sni.as_deref(), Some("san.external.test"));

    // subjectAltNames replaces the SNI check: a certificate valid for the SNI but for none
    // of the listed names is rejected.
    let r = get("/strict").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("TLS error"), "{r:?}");
    assert_eq!(named.seen().len(), 1, "{:?}", named.seen());
}

/// MUTUAL: the backend requires a client certificate from its client CA and gets the one
/// named by `clientCertificate`/`privateKey`, or by `credentialName` (whose `ca.crt` also
/// verifies the server); SIMPLE to the same backend fails its handshake: 503.
#[tokio::test]
async fn mutual_presents_client_certificate_from_files_and_credential() {
    let server_ca = Ca::new("server-root");
    let client_ca = Ca::new("client-root");
    let leaf = server_ca.server(
        "mtls",
        &[
            "files.external.test",
            "cred.external.test",
            "simple.external.test",
        ],
    );
    let from_files = client_ca.client("files-client", &["files.client.test"]);
    let from_cred = client_ca.client("cred-client", &["cred.client.test"]);
    let certs = tempfile::tempdir().unwrap();
    from_cred.write_credential(certs.path(), "egress-client", Some(&server_ca));
    let backend = TlsBackend::start_mutual("mtls-backend", &leaf, &client_ca, ALPN).await;
    let yaml = [
        http_gateway("gw", 8080, &["*"]),
        one_port_se("files.external.test", 443, "HTTP", backend.port()),
        dr_tls(
            "files.external.test",
            &format!(
                "mode: MUTUAL, clientCertificate: {}, privateKey: {}, {}",
                q(&from_files.cert_path),
                q(&from_files.key_path),
                ca_of(&server_ca)
            ),
        ),
        one_port_se("cred.external.test", 443, "HTTP", backend.port()),
        dr_tls(
            "cred.external.test",
            "mode: MUTUAL, credentialName: egress-client",
        ),
        one_port_se("simple.external.test", 443, "HTTP", backend.port()),
        dr_tls(
            "simple.external.test",
            &format!("mode: SIMPLE, {}", ca_of(&server_ca)),
        ),
        virtual_service(
            "egress",
            "egress.example.com",
            &[
                ("/files", "host: files.external.test"),
                ("/cred", "host: cred.external.test"),
                ("/simple", "host: simple.external.test"),
            ],
        ),
    ]
    .concat();
    let dir = certs.path().to_owned();
    let gw = TestGateway::start_with(&yaml, |b| b.certs_dir = dir).await;
    let get = |path: &'static str| {
        let addr = gw.port(8080);
        async move { Client::new(addr, "egress.example.com").send(path).await }
    };

    let r = get("/files").await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "mtls-backend"),
        "{r:?}"
    );
    let seen = backend.last();
    assert_eq!(seen.uri, "/files");
    assert_eq!(seen.peer.sni.as_deref(), Some("files.external.test"));
    assert!(
        seen.peer.client_cert.as_ref() == Some(&from_files.der),
        "the backend did not get clientCertificate: {seen:?}"
    );

    let r = get("/cred").await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "mtls-backend"),
        "{r:?}"
    );
    let seen = backend.last();
    assert_eq!(seen.uri, "/cred");
    assert_eq!(seen.peer.sni.as_deref(), Some("cred.external.test"));
    assert!(
        seen.peer.client_cert.as_ref() == Some(&from_cred.der),
        "the backend did not get the credentialName certificate: {seen:?}"
    );
    assert!(backend.failures().is_empty(), "{:?}", backend.failures());

    // Without MUTUAL no certificate is presented: the backend rejects the handshake.
    let r = get("/simple").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(backend.seen().len(), 2, "{:?}", backend.seen());
    let failures = backend.wait_failures(1).await;
    assert!(!failures.is_empty());
}

/// `portLevelSettings` applies to its port only: the other port of the same ServiceEntry
/// stays plain HTTP to a plain backend. A subset's `trafficPolicy.tls` overrides the
/// rule-level one (another SNI, or DISABLE to a plain endpoint); a subset without one
/// inherits it.
#[tokio::test]
async fn port_level_settings_and_subset_overrides() {
    let ca = Ca::new("egress-root");
    let leaf = ca.server(
        "multi",
        &["multi.external.test", "rule.sni.test", "subset.sni.test"],
    );
    let backend = TlsBackend::start("tls-backend", &leaf, ALPN).await;
    let plain = Upstream::new("plain-backend").run().await;
    let yaml = [
        http_gateway("gw", 8080, &["*"]),
        service_entry(
            "multi.external.test",
            &[(8443, "tls-port", "HTTP"), (8080, "plain-port", "HTTP")],
            &[(
                "",
                &[("tls-port", backend.port()), ("plain-port", plain.port())],
            )],
        ),
        destination_rule(
            "multi.external.test",
            &format!(
                "  trafficPolicy:\n    portLevelSettings:\n    - port: {{number: 8443}}\n      tls: {{mode: SIMPLE, {}}}\n",
                ca_of(&ca)
            ),
        ),
        service_entry(
            "subsets.external.test",
            &[(443, "https", "HTTP")],
            &[
                ("v1", &[("https", backend.port())]),
                ("v2", &[("https", backend.port())]),
                ("plain", &[("https", plain.port())]),
            ],
        ),
        destination_rule(
            "subsets.external.test",
            &format!(
                "  trafficPolicy:\n    tls: {{mode: SIMPLE, sni: rule.sni.test, {ca}}}\n  subsets:\n  - name: v1\n    labels: {{version: v1}}\n  - name: v2\n    labels: {{version: v2}}\n    trafficPolicy:\n      tls: {{mode: SIMPLE, sni: subset.sni.test, {ca}}}\n  - name: plain\n    labels: {{version: plain}}\n    trafficPolicy:\n      tls: {{mode: DISABLE}}\n",
                ca = ca_of(&ca)
            ),
        ),
        virtual_service(
            "ports",
            "ports.example.com",
            &[
                ("/tls", "host: multi.external.test, port: {number: 8443}"),
                ("/plain", "host: multi.external.test, port: {number: 8080}"),
            ],
        ),
        virtual_service(
            "subsets",
            "subsets.example.com",
            &[
                ("/v1", "host: subsets.external.test, subset: v1"),
                ("/v2", "host: subsets.external.test, subset: v2"),
                ("/off", "host: subsets.external.test, subset: plain"),
            ],
        ),
    ]
    .concat();
    let gw = TestGateway::start(&yaml).await;
    let get = |host: &'static str, path: &'static str| {
        let addr = gw.port(8080);
        async move { Client::new(addr, host).send(path).await }
    };

    // Port 8443: TLS per its portLevelSettings.
    let r = get("ports.example.com", "/tls").await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "tls-backend"),
        "{r:?}"
    );
    let seen = backend.last();
    assert_eq!(seen.uri, "/tls");
    assert_eq!(seen.peer.sni.as_deref(), Some("multi.external.test"));

    // Port 8080: no TLS settings apply, plain HTTP to the plain backend.
    let r = get("ports.example.com", "/plain").await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "plain-backend"),
        "{r:?}"
    );
    assert_eq!(plain.last().uri, "/plain");
    assert_eq!(plain.hits(), 1);
    assert_eq!(backend.seen().len(), 1);

    // Subset v1 has no policy: the rule-level tls (sni rule.sni.test) applies.
    let r = get("subsets.example.com", "/v1").await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "tls-backend"),
        "{r:?}"
    );
    let seen = backend.last();
    assert_eq!(seen.uri, "/v1");
    assert_eq!(seen.peer.sni.as_deref(), Some("rule.sni.test"));

    // Subset v2 overrides it.
    let r = get("subsets.example.com", "/v2").await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "tls-backend"),
        "{r:?}"
    );
    let seen = backend.last();
    assert_eq!(seen.uri, "/v2");
    assert_eq!(seen.peer.sni.as_deref(), Some("subset.sni.test"));

    // Subset plain disables TLS for its (plain) endpoint.
    let r = get("subsets.example.com", "/off").await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "plain-backend"),
        "{r:?}"
    );
    assert_eq!(plain.last().uri, "/off");
    assert_eq!(plain.hits(), 2);
    assert!(backend.failures().is_empty(), "{:?}", backend.failures());
}

/// HTTP2 and GRPC ports: ALPN offers h2 and the request goes out as HTTP/2 over TLS; a
/// gRPC call from an h2c client gets the backend's message and `grpc-status` trailer.
#[tokio::test]
async fn http2_and_grpc_ports_use_h2_over_tls() {
    let ca = Ca::new("egress-root");
    let leaf = ca.server("h2", &["h2.external.test", "grpc.external.test"]);
    let backend = TlsBackend::start("h2-backend", &leaf, ALPN).await;
    let yaml = [
        http_gateway("gw", 8080, &["*"]),
        one_port_se("h2.external.test", 443, "HTTP2", backend.port()),
        dr_tls("h2.external.test", &format!("mode: SIMPLE, {}", ca_of(&ca))),
        one_port_se("grpc.external.test", 443, "GRPC", backend.port()),
        dr_tls(
            "grpc.external.test",
            &format!("mode: SIMPLE, {}", ca_of(&ca)),
        ),
        virtual_service("h2", "h2.example.com", &[("", "host: h2.external.test")]),
        virtual_service(
            "grpc",
            "grpc.example.com",
            &[("", "host: grpc.external.test")],
        ),
    ]
    .concat();
    let gw = TestGateway::start(&yaml).await;

    // An HTTP/1.1 client; the upstream leg is HTTP/2 over TLS.
    let r = Client::new(gw.port(8080), "h2.example.com")
        .send("/over-h2?q=1")
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "h2-backend"),
        "{r:?}"
    );
    let seen = backend.last();
    assert_eq!(seen.version, Version::HTTP_2, "{seen:?}");
    assert_eq!(seen.peer.alpn.as_deref(), Some("h2"), "{seen:?}");
    assert_eq!(seen.peer.sni.as_deref(), Some("h2.external.test"));
    assert!(seen.uri.ends_with("/over-h2?q=1"), "{seen:?}");

    // gRPC from an h2c client.
    let reply = grpc_call(
        gw.port(8080),
        "grpc.example.com",
        "/echo.Echo/Ping",
        b"ping",
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.headers.get("content-type").map(HeaderValue::as_bytes),
        Some(&b"application/grpc"[..]),
        "{reply:?}"
    );
    assert_eq!(reply.body, grpc_frame(b"pong"), "{reply:?}");
    assert_eq!(reply.trailer("grpc-status"), Some("0"), "{reply:?}");
    assert_eq!(reply.trailer("grpc-message"), Some("ok"), "{reply:?}");
    let seen = backend.last();
    assert_eq!(seen.version, Version::HTTP_2, "{seen:?}");
    assert_eq!(seen.peer.alpn.as_deref(), Some("h2"), "{seen:?}");
    assert_eq!(seen.peer.sni.as_deref(), Some("grpc.external.test"));
    assert_eq!(seen.method, "POST");
    assert!(seen.uri.ends_with("/echo.Echo/Ping"), "{seen:?}");
    assert!(is_grpc(&seen.headers), "{seen:?}");
    assert_eq!(
        seen.headers.get("te").map(HeaderValue::as_bytes),
        Some(&b"trailers"[..]),
        "{seen:?}"
    );
    assert_eq!(seen.body, grpc_frame(b"ping"));
}

/// The seed example on the mesh port: a plain h2c gRPC client to
/// `application.yourdomain:8333` (no VirtualService) reaches the TLS h2 backend through
/// the port-level SIMPLE origination; an HTTP/1.1 forward-proxy request (absolute form) to
/// another ServiceEntry host is originated too, and sent upstream in origin form.
#[tokio::test]
async fn mesh_port_seed_example_and_forward_proxy() {
    let ca = Ca::new("egress-root");
    let grpc_leaf = ca.server("app", &["application.yourdomain"]);
    let grpc_backend = TlsBackend::start("grpc-backend", &grpc_leaf, ALPN).await;
    let web_leaf = ca.server("edition", &["edition.external.test"]);
    let web_backend = TlsBackend::start("web-backend", &web_leaf, ALPN).await;
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: external-grpc-service-entry
spec:
  hosts:
  - application.yourdomain
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - number: 8333
    name: grpc-ssl
    protocol:  GRPC
  endpoints:
  - address: 127.0.0.1
    ports: {{grpc-ssl: {grpc_port}}}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: originate-tls-grpc
spec:
  host: application.yourdomain
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    portLevelSettings:
    - port:
        number: 8333
      tls:
        mode: SIMPLE
        caCertificates: {ca}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: edition
spec:
  hosts: [edition.external.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {{number: 80, name: http-port, protocol: HTTP, targetPort: 443}}
  endpoints:
  - address: 127.0.0.1
    ports: {{http-port: {web_port}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: edition
spec:
  host: edition.external.test
  trafficPolicy:
    portLevelSettings:
    - port: {{number: 80}}
      tls: {{mode: SIMPLE, caCertificates: {ca}}}
"#,
        grpc_port = grpc_backend.port(),
        web_port = web_backend.port(),
        ca = q(&ca.pem_path),
    );
    let gw = TestGateway::start_with(&yaml, |b| b.mesh_port = Some(15001)).await;
    let mesh = gw.port(15001);

    // Seed example: plain h2c gRPC in, HTTP/2 over TLS out.
    let reply = grpc_call(
        mesh,
        "application.yourdomain:8333",
        "/acme.Orders/Get",
        b"ping",
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, grpc_frame(b"pong"), "{reply:?}");
    assert_eq!(reply.trailer("grpc-status"), Some("0"), "{reply:?}");
    let seen = grpc_backend.last();
    assert_eq!(seen.version, Version::HTTP_2, "{seen:?}");
    assert_eq!(seen.peer.alpn.as_deref(), Some("h2"), "{seen:?}");
    assert_eq!(seen.peer.sni.as_deref(), Some("application.yourdomain"));
    assert_eq!(seen.method, "POST");
    assert!(seen.uri.ends_with("/acme.Orders/Get"), "{seen:?}");
    assert_eq!(seen.body, grpc_frame(b"ping"));

    // Forward proxy, absolute form without and with the port.
    for (n, target) in [
        "http://edition.external.test/politics",
        "http://edition.external.test:80/politics?page=2",
    ]
    .into_iter()
    .enumerate()
    {
        let authority = target
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap();
        let raw = raw_exchange(
            mesh,
            format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
            "",
        )
        .await;
        let (status, body) = parse_raw(&raw);
        assert_eq!((status, body.as_str()), (200, "web-backend"), "{raw}");
        let seen = web_backend.seen();
        assert_eq!(seen.len(), n + 1, "{seen:?}");
        let seen = seen.last().unwrap();
        assert_eq!(seen.peer.sni.as_deref(), Some("edition.external.test"));
        assert_eq!(seen.version, Version::HTTP_11);
        let path = target.split_once(authority).unwrap().1;
        assert_eq!(seen.uri, path, "upstream request not in origin form");
        assert_eq!(seen.headers["host"], authority);
    }
    assert!(
        grpc_backend.failures().is_empty() && web_backend.failures().is_empty(),
        "{:?} {:?}",
        grpc_backend.failures(),
        web_backend.failures()
    );
}

/// Config errors: ISTIO_MUTUAL (at rule, port and subset level), a missing
/// `caCertificates` file, and MUTUAL without a client certificate are rejected with the
/// field named.
#[tokio::test]
async fn origination_config_errors_name_the_field() {
    let ca = Ca::new("egress-root");
    let routed = |dr: String| {
        [
            http_gateway("gw", 8080, &["*"]),
            one_port_se("api.external.test", 443, "HTTP", 1),
            dr,
            virtual_service(
                "egress",
                "egress.example.com",
                &[("", "host: api.external.test")],
            ),
        ]
        .concat()
    };

    let e = start_err(
        &routed(dr_tls("api.external.test", "mode: ISTIO_MUTUAL")),
        false,
    )
    .await;
    assert!(e.contains("trafficPolicy.tls.mode"), "{e}");
    assert!(e.contains("ISTIO_MUTUAL"), "{e}");
    assert!(e.contains("api-external-test"), "{e}");

    let e = start_err(
        &routed(destination_rule(
            "api.external.test",
            "  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 443}\n      tls: {mode: ISTIO_MUTUAL}\n",
        )),
        false,
    )
    .await;
    assert!(
        e.contains("trafficPolicy.portLevelSettings[0].tls.mode"),
        "{e}"
    );

    let e = start_err(
        &[
            http_gateway("gw", 8080, &["*"]),
            service_entry(
                "api.external.test",
                &[(443, "https", "HTTP")],
                &[("v1", &[("https", 1)])],
            ),
            destination_rule(
                "api.external.test",
                "  subsets:\n  - name: v1\n    labels: {version: v1}\n    trafficPolicy:\n      tls: {mode: ISTIO_MUTUAL}\n",
            ),
            virtual_service(
                "egress",
                "egress.example.com",
                &[("", "host: api.external.test, subset: v1")],
            ),
        ]
        .concat(),
        false,
    )
    .await;
    assert!(e.contains("subsets[0].trafficPolicy.tls.mode"), "{e}");

    // On the mesh port, without any VirtualService, the ServiceEntry's cluster is built
    // all the same, so the error is found.
    let e = start_err(
        &[
            one_port_se("api.external.test", 443, "HTTP", 1),
            dr_tls("api.external.test", "mode: ISTIO_MUTUAL"),
        ]
        .concat(),
        true,
    )
    .await;
    assert!(e.contains("trafficPolicy.tls.mode"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    let e = start_err(
        &routed(dr_tls(
            "api.external.test",
            &format!("mode: SIMPLE, caCertificates: {}", q(&missing)),
        )),
        false,
    )
    .await;
    assert!(e.contains("caCertificates"), "{e}");
    assert!(e.contains(&missing.display().to_string()), "{e}");

    let e = start_err(
        &routed(dr_tls(
            "api.external.test",
            &format!("mode: MUTUAL, {}", ca_of(&ca)),
        )),
        false,
    )
    .await;
    assert!(e.contains("trafficPolicy.tls"), "{e}");
    assert!(e.contains("clientCertificate"), "{e}");
}
