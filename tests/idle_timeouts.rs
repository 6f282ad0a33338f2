//! Idle bounds over real sockets: the stream idle timeout (`--stream-idle-timeout`, Envoy's
//! `stream_idle_timeout`, off by default as on Istio's gateway) for a silent upstream, a
//! stalled request body (buffered and streamed) and a body that trickles but keeps moving;
//! and the HTTP/2 connection idle timeout (`--h2-idle-timeout`, Envoy's `idle_timeout`),
//! which closes a connection only once no stream is open.
//!
//! Every test starts its own gateway and upstreams on ephemeral loopback ports, with limits
//! of a few hundred milliseconds, and every wait is bounded.

// Tests (and the shared harness they include) fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::client::read_until;
use support::gateway::{http_gateway, service_entry};
use support::{within, Client, TestGateway, Upstream, UpstreamHandle};

const HOST: &str = "app.test";
const LIMIT: Duration = Duration::from_millis(500);

fn config(up: &UpstreamHandle) -> String {
    format!(
        "{}{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: app\nspec:\n  hosts: [{HOST}]\n  gateways: [gw]\n  http:\n  - route: [{{destination: {{host: app.svc}}}}]\n",
        http_gateway("gw", 8080, &[HOST]),
        service_entry("app.svc", 80, "HTTP", &[(up, "v1")])
    )
}

async fn start(up: &UpstreamHandle, stream_idle: Duration, h2_idle: Duration) -> TestGateway {
    TestGateway::start_with(&config(up), |b| {
        b.stream_idle_timeout = stream_idle;
        b.h2_idle_timeout = h2_idle;
    })
    .await
}

async fn metrics(gw: &TestGateway) -> String {
    Client::new(gw.admin(), "admin").send("/metrics").await.body
}

/// Whether `istio_requests_total` has a series with this code and flag.
fn counted(m: &str, code: u16, flag: &str) -> bool {
    m.lines().any(|l| {
        l.starts_with("istio_requests_total{")
            && l.contains(&format!("response_code=\"{code}\""))
            && l.contains(&format!("response_flags=\"{flag}\""))
    })
}

#[tokio::test]
async fn a_silent_upstream_gets_504_stream_timeout_over_h1_and_h2() {
    let up = Upstream::new("app")
        .delay(Duration::from_secs(60))
        .run()
        .await;
    let gw = start(&up, LIMIT, Duration::ZERO).await;
    for h2 in [false, true] {
        let mut c = Client::new(gw.port(8080), HOST);
        if h2 {
            c = c.h2();
        }
        let t0 = Instant::now();
        let r = within(c.send("/")).await;
        let took = t0.elapsed();
        assert_eq!(r.status, 504, "h2={h2}");
        assert_eq!(r.body, "stream timeout", "h2={h2}");
        // Fires at the limit after the last activity (the request), not before.
        assert!(took >= LIMIT, "h2={h2}: answered after {took:?}");
        assert!(took < LIMIT * 4, "h2={h2}: answered after {took:?}");
    }
    assert_eq!(up.hits(), 2);
    assert!(counted(&metrics(&gw).await, 504, "SI"));
}

#[tokio::test]
async fn without_the_flag_a_silent_upstream_is_waited_for_as_on_istio() {
    let up = Upstream::new("app")
        .delay(Duration::from_millis(1500))
        .run()
        .await;
    let gw = start(&up, Duration::ZERO, Duration::ZERO).await;
    // Three times the limit the other tests use, and still the upstream's answer.
    let r = within(Client::new(gw.port(8080), HOST).send("/")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "app");
}

#[tokio::test]
async fn a_stalled_small_body_gets_408_and_the_connection_closes() {
    let up = Upstream::new("app").run().await;
    let gw = start(&up, LIMIT, Duration::ZERO).await;
    let mut s = TcpStream::connect(gw.port(8080)).await.unwrap();
    // 100 bytes announced (buffered for replay), 10 sent.
    s.write_all(
        format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100\r\n\r\n0123456789")
            .as_bytes(),
    )
    .await
    .unwrap();
    let t0 = Instant::now();
    let reply = within(read_until(&mut s, "")).await;
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
    assert!(reply.ends_with("stream timeout"), "{reply}");
    assert!(t0.elapsed() >= LIMIT, "after {:?}", t0.elapsed());
    assert_eq!(up.hits(), 0, "a partial body reached the upstream");
    assert!(counted(&metrics(&gw).await, 408, "SI"));
}

#[tokio::test]
async fn a_stalled_streamed_body_gets_408_while_the_upstream_waits_for_it() {
    let up = Upstream::new("app").run().await;
    let gw = start(&up, LIMIT, Duration::ZERO).await;
    let mut s = TcpStream::connect(gw.port(8080)).await.unwrap();
    // Larger than the replay buffer (64 KiB): streamed to the upstream as it comes.
    let head = format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1000000\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[b'x'; 100_000]).await.unwrap();
    let t0 = Instant::now();
    let reply = within(read_until(&mut s, "stream timeout")).await;
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
    assert!(t0.elapsed() >= LIMIT, "after {:?}", t0.elapsed());
}

#[tokio::test]
async fn a_body_that_trickles_for_longer_than_the_limit_is_not_idle() {
    let up = Upstream::new("app").run().await;
    let gw = start(&up, LIMIT, Duration::ZERO).await;
    let mut s = TcpStream::connect(gw.port(8080)).await.unwrap();
    let head = format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    // 70 KiB at once (past the replay buffer: streamed), then a chunk every LIMIT/3 for
    // four limits in all.
    let big = vec![b'y'; 70 * 1024];
    s.write_all(format!("{:x}\r\n", big.len()).as_bytes())
        .await
        .unwrap();
    s.write_all(&big).await.unwrap();
    s.write_all(b"\r\n").await.unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < LIMIT * 4 {
        tokio::time::sleep(LIMIT / 3).await;
        s.write_all(b"5\r\nhello\r\n").await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let reply = within(read_until(&mut s, "\r\n\r\napp")).await;
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert_eq!(up.hits(), 1);
    assert!(up.last().body.len() > 70 * 1024);
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_only_once_no_stream_is_open() {
    let up = Upstream::new("app").delay(LIMIT * 3).run().await;
    let gw = start(&up, Duration::ZERO, LIMIT).await;
    let tcp = TcpStream::connect(gw.port(8080)).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    // A request that takes three limits: its open stream keeps the connection.
    let req = Request::get(format!("http://{HOST}/"))
        .body(Empty::new())
        .unwrap();
    let resp = within(tx.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "app");
    // Then nothing: the gateway sends GOAWAY and closes about one limit later.
    let t0 = Instant::now();
    let ended = within(conn).await.unwrap();
    let took = t0.elapsed();
    assert!(ended.is_ok(), "{ended:?}");
    assert!(took >= LIMIT / 2, "closed after only {took:?}");
    assert!(took < LIMIT * 6, "closed after {took:?}");
}

#[tokio::test]
async fn h2_connections_stay_open_without_the_idle_timeout() {
    let up = Upstream::new("app").run().await;
    let gw = start(&up, Duration::ZERO, Duration::ZERO).await;
    let tcp = TcpStream::connect(gw.port(8080)).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
        .await
        .unwrap();
    let mut conn = tokio::spawn(conn);
    let req = || {
        Request::get(format!("http://{HOST}/"))
            .body(Empty::new())
            .unwrap()
    };
    assert_eq!(within(tx.send_request(req())).await.unwrap().status(), 200);
    assert!(
        tokio::time::timeout(LIMIT * 3, &mut conn).await.is_err(),
        "the connection closed with the idle timeout off"
    );
    assert_eq!(within(tx.send_request(req())).await.unwrap().status(), 200);
}

/// An HTTP/1.1 upstream that answers every request with a head announcing `len` bytes,
/// then sends `pieces` pieces of 10 bytes, one every `gap` (all at once for no gap), and
/// then stays silent.
async fn trickling_upstream(len: usize, pieces: usize, gap: Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                read_until(&mut s, "\r\n\r\n").await;
                // One response per connection: a finished one is not reused for the next.
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                );
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                if gap.is_zero() {
                    if s.write_all(&b"0123456789".repeat(pieces)).await.is_err() {
                        return;
                    }
                } else {
                    for _ in 0..pieces {
                        if s.write_all(b"0123456789").await.is_err() {
                            return;
                        }
                        tokio::time::sleep(gap).await;
                    }
                }
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    port
}

fn trickle_config(port: u16) -> String {
    format!(
        "{}apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: trickle\nspec:\n  hosts: [trickle.svc]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: app\nspec:\n  hosts: [{HOST}]\n  gateways: [gw]\n  http:\n  - route: [{{destination: {{host: trickle.svc}}}}]\n",
        http_gateway("gw", 8080, &[HOST])
    )
}

/// An h2c client to the gateway with RFC 9113's default 64 KiB windows (hyper's client
/// would take 2 MiB per stream).
async fn h2c(gw: &TestGateway) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let tcp = TcpStream::connect(gw.port(8080)).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

/// The response to GET / on `tx`: its head first, then (after `pause`) its whole body.
async fn get_after(
    tx: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    pause: Duration,
) -> (u16, Result<Bytes, hyper::Error>) {
    let req = Request::get(format!("http://{HOST}/"))
        .body(Empty::new())
        .unwrap();
    let resp = within(tx.send_request(req)).await.unwrap();
    let status = resp.status().as_u16();
    tokio::time::sleep(pause).await;
    let body = within(resp.into_body().collect())
        .await
        .map(|c| c.to_bytes());
    (status, body)
}

#[tokio::test]
async fn an_h2_response_whose_upstream_stalls_is_reset_after_the_limit() {
    let port = trickling_upstream(1000, 2, Duration::ZERO).await;
    let gw = TestGateway::start_with(&trickle_config(port), |b| {
        b.stream_idle_timeout = LIMIT;
    })
    .await;
    let mut tx = h2c(&gw).await;
    let t0 = Instant::now();
    let (status, body) = get_after(&mut tx, Duration::ZERO).await;
    let took = t0.elapsed();
    assert_eq!(status, 200);
    assert!(body.is_err(), "a stalled body ended normally: {body:?}");
    assert!(took >= LIMIT, "reset after only {took:?}");
    assert!(took < LIMIT * 4, "reset after {took:?}");
    // The connection carries on; the stream was logged with SI.
    let (status, _) = get_after(&mut tx, Duration::ZERO).await;
    assert_eq!(status, 200);
    assert!(counted(&metrics(&gw).await, 200, "SI"));
}

#[tokio::test]
async fn an_h2_response_that_keeps_moving_is_not_idle() {
    // 40 pieces, one every LIMIT/5: eight limits in all.
    let port = trickling_upstream(400, 40, LIMIT / 5).await;
    let gw = TestGateway::start_with(&trickle_config(port), |b| {
        b.stream_idle_timeout = LIMIT;
    })
    .await;
    let mut tx = h2c(&gw).await;
    let (status, body) = within_for_long(get_after(&mut tx, Duration::ZERO)).await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap().len(), 400);
}

#[tokio::test]
async fn an_h2_client_that_stops_reading_is_reset_only_with_the_stream_idle_timeout() {
    // 100,000 pieces of 10 bytes sent back to back: the client's 64 KiB window fills at
    // once and it reads nothing more for three limits.
    for on in [true, false] {
        let port = trickling_upstream(1_000_000, 100_000, Duration::ZERO).await;
        let gw = TestGateway::start_with(&trickle_config(port), |b| {
            if on {
                b.stream_idle_timeout = LIMIT;
            }
        })
        .await;
        let mut tx = h2c(&gw).await;
        // The head, then no reading for three limits.
        let (status, body) = get_after(&mut tx, LIMIT * 3).await;
        assert_eq!(status, 200);
        if on {
            assert!(body.is_err(), "a stalled client's stream was kept");
        } else {
            assert_eq!(
                body.unwrap().len(),
                1_000_000,
                "the stream was cut with the timeout off"
            );
        }
    }
}

async fn within_for_long<T>(fut: impl std::future::Future<Output = T>) -> T {
    support::within_for(Duration::from_secs(20), fut).await
}

/// An HTTP/1.1 upstream that answers a chunked request's head at once, then waits for the
/// request body to end before it ends its response with `done`.
async fn answer_first_upstream() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        read_until(&mut s, "\r\n\r\n").await;
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        s.write_all(head.as_bytes()).await.unwrap();
        // The last chunk (and no trailers) ends the request body.
        read_until(&mut s, "\r\n0\r\n\r\n").await;
        let _ = s.write_all(b"4\r\ndone\r\n0\r\n\r\n").await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    port
}

#[tokio::test]
async fn an_answered_h2_stream_whose_request_body_still_moves_is_not_idle() {
    use http_body_util::combinators::UnsyncBoxBody;
    use http_body_util::StreamBody;
    type Streamed = UnsyncBoxBody<Bytes, std::convert::Infallible>;
    let port = answer_first_upstream().await;
    let gw = TestGateway::start_with(&trickle_config(port), |b| {
        b.stream_idle_timeout = LIMIT;
    })
    .await;
    let tcp = TcpStream::connect(gw.port(8080)).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Streamed>(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (body_tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let b = rx.recv().await?;
        Some((Ok(hyper::body::Frame::data(b)), rx))
    });
    let body: Streamed = StreamBody::new(frames).boxed_unsync();
    let req = Request::post(format!("http://{HOST}/")).body(body).unwrap();
    let sent = tokio::spawn(async move { tx.send_request(req).await });
    // Past the replay buffer (64 KiB): streamed upstream as it comes.
    body_tx
        .send(Bytes::from(vec![b'z'; 70 * 1024]))
        .await
        .unwrap();
    let resp = within(sent).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    // The response head is out and its body silent; only the request body moves, a piece
    // every LIMIT/3 for four limits.
    let t0 = Instant::now();
    while t0.elapsed() < LIMIT * 4 {
        tokio::time::sleep(LIMIT / 3).await;
        body_tx.send(Bytes::from_static(b"hello")).await.unwrap();
    }
    drop(body_tx);
    let body = within(resp.into_body().collect()).await.unwrap().to_bytes();
    assert_eq!(body, "done");
}

/// Send `req` on a new connection and read until the gateway closes it (or 10 s pass);
/// what arrived and when the close came.
async fn h1_until_close(gw: &TestGateway, req: &str) -> (String, Duration) {
    let mut s = TcpStream::connect(gw.port(8080)).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let t0 = Instant::now();
    let got = within(read_until(&mut s, "")).await;
    (got, t0.elapsed())
}

#[tokio::test]
async fn an_h1_response_whose_upstream_stalls_closes_the_connection_on_both_paths() {
    let port = trickling_upstream(1000, 2, Duration::ZERO).await;
    let gw = TestGateway::start_with(&trickle_config(port), |b| {
        b.stream_idle_timeout = LIMIT;
    })
    .await;
    // A plain GET (the fast path), then one with a chunked body (served by hyper).
    let plain = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let chunked =
        format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    for req in [plain, chunked] {
        let (got, took) = h1_until_close(&gw, &req).await;
        assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
        assert!(got.ends_with("01234567890123456789"), "{got}");
        assert!(took >= LIMIT, "closed after only {took:?}");
        assert!(took < LIMIT * 4, "closed after {took:?}");
    }
    let m = metrics(&gw).await;
    assert!(
        m.lines().any(|l| l.starts_with("istio_requests_total{")
            && l.contains("response_code=\"200\"")
            && l.contains("response_flags=\"SI\"")
            && l.ends_with(" 2")),
        "{m}"
    );
}

#[tokio::test]
async fn an_h1_response_that_keeps_moving_is_not_idle_on_both_paths() {
    let port = trickling_upstream(400, 40, LIMIT / 5).await;
    let gw = TestGateway::start_with(&trickle_config(port), |b| {
        b.stream_idle_timeout = LIMIT;
    })
    .await;
    let plain = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    for req in [chunked, plain] {
        let mut s = TcpStream::connect(gw.port(8080)).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let got = within_for_long(read_until(&mut s, "")).await;
        let body = got.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        assert_eq!(body.len(), 400, "{got}");
    }
}

#[tokio::test]
async fn an_h1_client_that_stops_reading_is_cut_off_only_with_the_stream_idle_timeout() {
    // A multiple of the upstream's 10-byte pieces.
    const BIG: usize = 32_000_000;
    for on in [true, false] {
        let port = trickling_upstream(BIG, BIG / 10, Duration::ZERO).await;
        let gw = TestGateway::start_with(&trickle_config(port), |b| {
            if on {
                b.stream_idle_timeout = LIMIT;
            }
        })
        .await;
        let mut s = TcpStream::connect(gw.port(8080)).await.unwrap();
        s.write_all(
            format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut first = [0u8; 1024];
        let n = within(s.read(&mut first)).await.unwrap();
        assert!(first[..n].starts_with(b"HTTP/1.1 200 "));
        // Socket buffers fill; then three limits without reading.
        tokio::time::sleep(LIMIT * 3).await;
        let mut rest = Vec::new();
        within_for_long(s.read_to_end(&mut rest)).await.unwrap_or(0);
        let total = n + rest.len();
        if on {
            assert!(
                total < BIG,
                "a client that stopped reading got everything ({total})"
            );
        } else {
            assert!(total > BIG, "cut off with the timeout off: {total} bytes");
        }
    }
}

#[tokio::test]
async fn a_moving_h1_response_is_not_cut_while_the_gateway_drains() {
    // 60 pieces, one every LIMIT/5: six seconds, past the round's one-second park tick.
    let port = trickling_upstream(600, 60, LIMIT / 5).await;
    let gw = TestGateway::start_with(&trickle_config(port), |b| {
        b.stream_idle_timeout = LIMIT;
    })
    .await;
    // A chunked request: served by a hyper round.
    let mut s = TcpStream::connect(gw.port(8080)).await.unwrap();
    let req =
        format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let head = within(read_until(&mut s, "\r\n\r\n")).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    // Drain: the response in flight may finish (the drain timeout is 30 s).
    let TestGateway { running, dir: _dir } = gw;
    let stopping = tokio::spawn(running.shutdown());
    let rest = within_for_long(read_until(&mut s, "")).await;
    let body = head.split_once("\r\n\r\n").map_or("", |(_, b)| b).len() + rest.len();
    assert_eq!(body, 600, "cut off while draining: {rest:?}");
    within_for_long(stopping).await.unwrap();
}
