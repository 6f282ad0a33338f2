//! The gateway's own HTTP/1.1 upstream client (src/upstream/h1.rs) against a scripted raw
//! TCP upstream: what it writes on the wire, every response framing (length, chunked with
//! trailers, to EOF, none for HEAD/204), interim 1xx, connection reuse and when it must not
//! happen, and broken upstream responses.
//!
//! Every test starts its own gateway and upstream on ephemeral loopback ports.

// Tests (and the shared harness they include) fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use support::gateway::http_gateway;
use support::{Client, TestGateway};

const HOST: &str = "app.test";

/// What the scripted upstream does with one request.
#[derive(Clone)]
struct Answer {
    bytes: &'static [u8],
    /// Close the connection's sending side after writing; requests that still arrive on it
    /// are recorded, never answered.
    close: bool,
}

fn answer(bytes: &'static [u8]) -> Answer {
    Answer {
        bytes,
        close: false,
    }
}

/// A raw TCP upstream answering request `i` with `script[min(i, len-1)]`.
struct Scripted {
    port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    async fn start(script: Vec<Answer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (c, r) = (connections.clone(), requests.clone());
        let script = Arc::new(script);
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (r, script) = (r.clone(), script.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut shut = false;
                    loop {
                        // One request: the head, then a Content-Length body.
                        let head_end = loop {
                            if let Some(i) = find(&buf, b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        while buf.len() < head_end + len {
                            let mut chunk = [0u8; 4096];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let whole = String::from_utf8_lossy(&buf[..head_end + len]).into_owned();
                        buf.drain(..head_end + len);
                        let i = {
                            let mut r = r.lock().unwrap();
                            r.push(whole);
                            r.len() - 1
                        };
                        if shut {
                            continue;
                        }
                        let a = &script[i.min(script.len() - 1)];
                        if s.write_all(a.bytes).await.is_err() {
                            return;
                        }
                        if a.close {
                            let _ = s.shutdown().await;
                            shut = true;
                        }
                    }
                });
            }
        });
        Self {
            port,
            connections,
            requests,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn request(&self, i: usize) -> String {
        self.requests.lock().unwrap()[i].clone()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn gateway(up: &Scripted) -> TestGateway {
    let yaml = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: app\nspec:\n  hosts: [app.svc]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: app\nspec:\n  hosts: [{HOST}]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {{host: app.svc}}\n    retries: {{attempts: 0}}\n",
        http_gateway("gw", 8080, &[HOST]),
        up.port
    );
    TestGateway::start(&yaml).await
}

#[tokio::test]
async fn request_goes_out_as_one_http11_head_with_the_buffered_body() {
    let up = Scripted::start(vec![answer(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    )])
    .await;
    let gw = gateway(&up).await;
    let r = Client::new(gw.port(8080), HOST)
        .method("POST")
        .header("X-Mixed-Case", "v")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .body("hello")
        .send("/p/a?q=1&r=2")
        .await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "ok"));
    let req = up.request(0);
    assert!(
        req.starts_with("POST /p/a?q=1&r=2 HTTP/1.1\r\nhost: app.test\r\n"),
        "{req}"
    );
    assert!(req.contains("\r\nx-mixed-case: v\r\n"), "{req}");
    assert!(req.contains("\r\ncontent-length: 5\r\n"), "{req}");
    assert!(req.ends_with("\r\n\r\nhello"), "{req}");
    assert_eq!(req.matches("content-length").count(), 1, "{req}");
    assert!(
        !req.contains("x-hop") && !req.contains("connection:"),
        "{req}"
    );
}

#[tokio::test]
async fn hop_by_hop_response_fields_never_reach_the_client() {
    let up = Scripted::start(vec![
        // Only standard tokens: dropped while parsing.
        answer(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nx-end: 1\r\ncontent-length: 2\r\n\r\nok"),
        // A field named in Connection goes too, with Connection and Keep-Alive themselves.
        answer(b"HTTP/1.1 200 OK\r\nconnection: keep-alive, X-Private\r\nx-private: secret\r\nkeep-alive: timeout=5\r\nx-end: 2\r\ncontent-length: 2\r\n\r\nok"),
    ])
    .await;
    let gw = gateway(&up).await;
    let c = Client::new(gw.port(8080), HOST);
    for i in 1..=2 {
        let r = c.send("/").await;
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "ok"), "{i}");
        assert_eq!(r.header("x-end"), i.to_string(), "{i}");
        for hop in ["connection", "keep-alive", "x-private"] {
            assert!(r.headers.get(hop).is_none(), "response {i} kept {hop}");
        }
    }
    // Both answers kept the upstream connection (keep-alive was read before dropping).
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn keep_alive_connection_is_reused_across_framings() {
    let up = Scripted::start(vec![
        answer(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none"),
        answer(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n"),
        answer(b"HTTP/1.1 204 No Content\r\n\r\n"),
        answer(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"), // answer to HEAD
        answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nfive"),
    ])
    .await;
    let gw = gateway(&up).await;
    let c = Client::new(gw.port(8080), HOST);
    assert_eq!(c.send("/1").await.body, "one");
    assert_eq!(c.send("/2").await.body, "two");
    assert_eq!(c.send("/3").await.status.as_u16(), 204);
    let head = c.clone().method("HEAD").send("/4").await;
    assert_eq!(
        (head.status.as_u16(), head.header("content-length")),
        (200, "5")
    );
    let last = c.send("/5").await;
    assert_eq!((last.status.as_u16(), last.body.as_str()), (200, "five"));
    assert!(last.header("link").is_empty(), "interim 103 headers leaked");
    assert_eq!(up.connections(), 1, "every response allowed reuse");
}

#[tokio::test]
async fn chunked_trailers_reach_an_h2_client() {
    let up = Scripted::start(vec![answer(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\nx-checksum: 42\r\n\r\n",
    )])
    .await;
    let gw = gateway(&up).await;
    let stream = tokio::net::TcpStream::connect(gw.port(8080)).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://{HOST}/t"))
        .header("te", "trailers")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = support::within(tx.send_request(req)).await.unwrap();
    use http_body_util::BodyExt;
    let collected = support::within(resp.into_body().collect()).await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    assert_eq!(collected.to_bytes(), "body");
    assert_eq!(trailers.get("x-checksum").unwrap(), "42");
}

#[tokio::test]
async fn connections_that_cannot_be_reused_are_not() {
    let up = Scripted::start(vec![
        // Body delimited by the close.
        Answer {
            bytes: b"HTTP/1.1 200 OK\r\n\r\nuntil close",
            close: true,
        },
        // The upstream says close (and does).
        Answer {
            bytes: b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nc2",
            close: true,
        },
        // HTTP/1.0 without keep-alive.
        Answer {
            bytes: b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nc3",
            close: true,
        },
        answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nc4"),
    ])
    .await;
    let gw = gateway(&up).await;
    let c = Client::new(gw.port(8080), HOST);
    assert_eq!(c.send("/1").await.body, "until close");
    assert_eq!(c.send("/2").await.body, "c2");
    assert_eq!(c.send("/3").await.body, "c3");
    assert_eq!(c.send("/4").await.body, "c4");
    assert_eq!(up.connections(), 4);
}

#[tokio::test]
async fn extra_bytes_after_a_response_retire_the_connection() {
    let up = Scripted::start(vec![
        answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nspoof"),
        answer(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nreal"),
    ])
    .await;
    let gw = gateway(&up).await;
    let c = Client::new(gw.port(8080), HOST);
    assert_eq!(c.send("/1").await.body, "ok");
    assert_eq!(
        c.send("/2").await.body,
        "real",
        "a smuggled response was served"
    );
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn upstream_closing_an_idle_connection_is_noticed_before_reuse() {
    let up = Scripted::start(vec![
        Answer {
            bytes: b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nc1",
            close: true, // closes without saying so: the pooled connection is dead
        },
        answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nc2"),
    ])
    .await;
    let gw = gateway(&up).await;
    let c = Client::new(gw.port(8080), HOST);
    assert_eq!(c.send("/1").await.body, "c1");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Written to the half-closed connection, the request would reach the upstream (which
    // never answers there) before the gateway fell back to a new connection.
    let r = c.clone().method("POST").body("x").send("/2").await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "c2"));
    assert_eq!(up.connections(), 2);
    assert_eq!(up.request_count(), 2, "the dead connection was used");
}

#[tokio::test]
async fn broken_response_heads_get_503_and_the_gateway_keeps_serving() {
    for bad in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n",
    ] {
        let bad: &'static [u8] = Box::leak(bad.to_vec().into_boxed_slice());
        let up = Scripted::start(vec![
            Answer {
                bytes: bad,
                close: true,
            },
            answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
        ])
        .await;
        let gw = gateway(&up).await;
        let c = Client::new(gw.port(8080), HOST);
        let r = c.send("/bad").await;
        assert_eq!(r.status.as_u16(), 503, "{}", String::from_utf8_lossy(bad));
        assert_eq!(c.send("/good").await.body, "ok");
    }
}

#[tokio::test]
async fn body_cut_short_by_the_upstream_is_not_passed_off_as_complete() {
    let up = Scripted::start(vec![Answer {
        bytes: b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten..",
        close: true,
    }])
    .await;
    let gw = gateway(&up).await;
    let err = support::within(Client::new(gw.port(8080), HOST).try_send("/")).await;
    assert!(err.is_err(), "a truncated body looked complete: {err:?}");
}

/// Send `GET path` on a raw connection and return the response head and body (the body read
/// to its `content-length`).
async fn raw_get(port: std::net::SocketAddr, path: &str) -> (String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(port).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("a content-length")
        .parse()
        .unwrap();
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (head, buf[head_end..].to_vec())
}

#[tokio::test]
async fn response_fields_reach_the_client_in_order_in_lowercase() {
    let up = Scripted::start(vec![
        answer(b"HTTP/1.1 200 OK\r\nServer: up\r\nSet-Cookie: a=1\r\nX-A: 1\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nset-cookie: b=2\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\n\r\nok"),
        // Rarer hop-by-hop fields: still stripped.
        answer(b"HTTP/1.1 200 OK\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nConnection: X-Private\r\nX-Private: secret\r\nX-B: 2\r\nContent-Length: 2\r\n\r\nok"),
    ])
    .await;
    let gw = gateway(&up).await;
    let (head, body) = raw_get(gw.port(8080), "/1").await;
    assert_eq!(body, b"ok");
    // One field per line as it came (the wire order, each `set-cookie` on its own line),
    // names in lowercase as Envoy writes them, hop-by-hop fields gone, the upstream's date.
    assert_eq!(
        head,
        "HTTP/1.1 200 OK\r\nserver: up\r\nset-cookie: a=1\r\nx-a: 1\r\nset-cookie: b=2\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 2\r\n\r\n"
    );
    let (head, body) = raw_get(gw.port(8080), "/2").await;
    assert_eq!(body, b"ok");
    let lower = head.to_ascii_lowercase();
    for hop in ["proxy-connection", "upgrade", "connection", "x-private"] {
        assert!(
            !lower.contains(&format!("\r\n{hop}:")),
            "{hop} kept: {head}"
        );
    }
    assert!(head.contains("\r\nx-b: 2\r\n"), "{head}");
}

#[tokio::test]
async fn a_grpc_status_field_in_a_plain_head_is_retried_on() {
    let up = Scripted::start(vec![
        answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\nGrpc-Status: 14\r\nContent-Length: 0\r\n\r\n"),
        answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
    ])
    .await;
    let yaml = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: app\nspec:\n  hosts: [app.svc]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: app\nspec:\n  hosts: [{HOST}]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {{host: app.svc}}\n    retries: {{attempts: 2, retryOn: unavailable}}\n",
        http_gateway("gw", 8080, &[HOST]),
        up.port
    );
    let gw = TestGateway::start(&yaml).await;
    let (_, body) = raw_get(gw.port(8080), "/").await;
    assert_eq!(body, b"ok");
    assert_eq!(up.request_count(), 2, "status 14 was retried");
}
