//! The downstream HTTP/2 connection as a client sees it on the wire: many streams at once,
//! response bodies of every size around the write path's thresholds (h2's 256-byte chaining,
//! the 4 KiB copy limit and 16 KiB buffer of `http::coalesce`, 16 KiB frames, flow-control
//! windows), over h2c and over TLS, and a client that stops reading while the gateway has
//! megabytes to send it.
//!
//! Every test starts its own gateway and upstream on ephemeral loopback ports, and every
//! wait is bounded.

// Tests (and the shared harness they include) fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http2::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use support::gateway::http_gateway;
use support::pki::{Ca, TlsClient};
use support::{within_for, TestGateway};

const HOST: &str = "app.test";

/// Bound on each test's exchanges.
const WAIT: Duration = Duration::from_secs(20);

/// Body sizes on both sides of every threshold on the way out.
const SIZES: &[usize] = &[
    0,
    1,
    255,
    256,
    257,
    1024,
    4095,
    4096,
    4097,
    8 * 1024,
    16 * 1024 - 9,
    16 * 1024,
    16 * 1024 + 1,
    40 * 1024,
    100 * 1024,
    1024 * 1024 + 3,
];

/// The byte at `i` of a body of `len` bytes: differs between sizes and positions, so a byte
/// from another stream or a shifted offset shows.
fn byte(len: usize, i: usize) -> u8 {
    ((i * 7 + len) % 251) as u8
}

fn body_of(len: usize) -> Bytes {
    (0..len).map(|i| byte(len, i)).collect::<Vec<u8>>().into()
}

/// An HTTP/1.1 upstream answering `/bytes/N` with `N` bytes of `body_of(N)`, after
/// `?delay=MS` milliseconds when asked.
async fn sized_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let uri = req.uri();
                    let len: usize = uri
                        .path()
                        .strip_prefix("/bytes/")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    let delay: u64 = uri
                        .query()
                        .and_then(|q| q.strip_prefix("delay="))
                        .and_then(|d| d.parse().ok())
                        .unwrap_or(0);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(body_of(len))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    port
}

/// The config: `gateway` plus a route for HOST to the sized upstream on `port`.
fn config(gateway: &str, port: u16) -> String {
    format!(
        "{gateway}apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: sized\nspec:\n  hosts: [sized.svc]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: app\nspec:\n  hosts: [{HOST}]\n  gateways: [gw]\n  http:\n  - route: [{{destination: {{host: sized.svc}}}}]\n"
    )
}

/// An h2 client on `io` with windows large enough that the gateway is never held back by
/// flow control, only by the socket.
async fn h2_client<IO>(io: IO) -> SendRequest<Empty<Bytes>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(16 * 1024 * 1024)
        .initial_connection_window_size(64 * 1024 * 1024)
        .handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

/// GET `path` on `tx`; the status and the whole body.
async fn get(mut tx: SendRequest<Empty<Bytes>>, scheme: &str, path: String) -> (u16, Bytes) {
    let req = Request::get(format!("{scheme}://{HOST}{path}"))
        .body(Empty::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

/// A lone small response first (nothing after it pushes it out), then every size of
/// `SIZES` three times, all streams open at once on one connection (a third of them
/// answered 20 ms late, so responses finish in different turns); checks each body.
async fn every_size_at_once(tx: SendRequest<Empty<Bytes>>, scheme: &'static str) {
    let lone = get(tx.clone(), scheme, "/bytes/10".into());
    let (status, body) = within_for(Duration::from_secs(5), lone).await;
    assert_eq!((status, body), (200, body_of(10)));
    let mut set = tokio::task::JoinSet::new();
    for round in 0..3 {
        for &len in SIZES {
            let path = if round == 1 {
                format!("/bytes/{len}?delay=20")
            } else {
                format!("/bytes/{len}")
            };
            let tx = tx.clone();
            set.spawn(async move { (len, get(tx, scheme, path).await) });
        }
    }
    let mut done = 0;
    while let Some(r) = set.join_next().await {
        let (len, (status, body)) = r.unwrap();
        assert_eq!(status, 200, "size {len}");
        assert_eq!(body.len(), len, "size {len}");
        if let Some(i) = (0..len).find(|&i| body[i] != byte(len, i)) {
            panic!("size {len}: wrong byte at {i}");
        }
        done += 1;
    }
    assert_eq!(done, 3 * SIZES.len());
}

#[tokio::test]
async fn concurrent_streams_of_every_size_arrive_intact_over_h2c() {
    let up = sized_upstream().await;
    let gw = TestGateway::start(&config(&http_gateway("gw", 8080, &[HOST]), up)).await;
    let tcp = TcpStream::connect(gw.port(8080)).await.unwrap();
    let tx = h2_client(tcp).await;
    within_for(WAIT, every_size_at_once(tx, "http")).await;
}

#[tokio::test]
async fn concurrent_streams_of_every_size_arrive_intact_over_tls() {
    let up = sized_upstream().await;
    let ca = Ca::new("h2-ca");
    let cert = ca.server("app", &[HOST]);
    let gateway = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  servers:\n  - port: {{number: 8443, name: https, protocol: HTTPS}}\n    hosts: [{HOST}]\n    tls: {{mode: SIMPLE, serverCertificate: \"{}\", privateKey: \"{}\"}}\n---\n",
        cert.cert_path.display(),
        cert.key_path.display()
    );
    let gw = TestGateway::start(&config(&gateway, up)).await;
    let hs = TlsClient::new(&ca)
        .alpn(&["h2"])
        .connect(gw.port(8443), HOST)
        .await;
    assert_eq!(hs.alpn.as_deref(), Some(&b"h2"[..]));
    let tx = h2_client(hs.ok()).await;
    within_for(WAIT, every_size_at_once(tx, "https")).await;
}

/// A TCP stream whose reads can be held back by the test, as a client busy elsewhere.
struct Paused {
    io: TcpStream,
    paused: Arc<AtomicBool>,
    waiting: Arc<Mutex<Option<Waker>>>,
}

impl AsyncRead for Paused {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.paused.load(Ordering::SeqCst) {
            *self.waiting.lock().unwrap() = Some(cx.waker().clone());
            // Checked again: the test may have resumed between the load and the store.
            if self.paused.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Paused {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_gets_every_byte_once_it_reads_again() {
    let up = sized_upstream().await;
    let gw = TestGateway::start(&config(&http_gateway("gw", 8080, &[HOST]), up)).await;
    let tcp = TcpStream::connect(gw.port(8080)).await.unwrap();
    let paused = Arc::new(AtomicBool::new(false));
    let waiting = Arc::new(Mutex::new(None::<Waker>));
    let tx = h2_client(Paused {
        io: tcp,
        paused: paused.clone(),
        waiting: waiting.clone(),
    })
    .await;
    // 4 x 4 MiB and small ones between them: far more than loopback socket buffers hold,
    // so the gateway's writes, big and small, wait for the socket while the client sleeps.
    paused.store(true, Ordering::SeqCst);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..8 {
        let len = if i % 2 == 0 { 4 * 1024 * 1024 } else { 1024 };
        let tx = tx.clone();
        set.spawn(async move { (len, get(tx, "http", format!("/bytes/{len}")).await) });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        set.try_join_next().is_none(),
        "a response got through a paused client"
    );
    paused.store(false, Ordering::SeqCst);
    if let Some(w) = waiting.lock().unwrap().take() {
        w.wake();
    }
    within_for(WAIT, async {
        let mut done = 0;
        while let Some(r) = set.join_next().await {
            let (len, (status, body)) = r.unwrap();
            assert_eq!(status, 200, "size {len}");
            assert_eq!(body.len(), len, "size {len}");
            assert!(
                body.iter().enumerate().all(|(i, &b)| b == byte(len, i)),
                "size {len}: wrong bytes"
            );
            done += 1;
        }
        assert_eq!(done, 8);
    })
    .await;
}
