//! gRPC streaming through the gateway over h2c: a bidirectional stream where the client
//! sends its next message only after the previous reply came back (so nothing may be
//! buffered end to end), trailers (`grpc-status`, a custom trailer) passed through, and
//! `retryOn: unavailable` retrying a unary call answered trailers-only with status 14.

// Tests (and the shared harness they include) fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use support::gateway::http_gateway;
use support::{within, TestGateway};

type Chan = StreamBody<tokio_stream_shim::Receiver<Result<Frame<Bytes>, Infallible>>>;

/// A tiny `Stream` over an mpsc receiver, so the test needs no extra crate.
mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub(crate) struct Receiver<T>(pub(crate) tokio::sync::mpsc::Receiver<T>);

    impl<T> futures_util::Stream for Receiver<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}

fn frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.put_slice(msg);
    b.freeze()
}

/// Pull one length-prefixed gRPC message out of `buf`, if complete.
fn take_message(buf: &mut BytesMut) -> Option<Bytes> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    buf.advance(5);
    Some(buf.split_to(len).freeze())
}

/// An h2c gRPC server: `/echo.Echo/Chat` answers each message with `echo: <msg>` as soon as
/// it arrives, then trailers; `/echo.Echo/Flaky` fails its first `fail` calls with a
/// trailers-only UNAVAILABLE, then answers `ok`.
async fn grpc_server(fail: usize) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let calls = counter.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let calls = calls.clone();
                    async move {
                        let n = calls.fetch_add(1, Ordering::SeqCst);
                        if req.uri().path().ends_with("/Flaky") && n < fail {
                            // Trailers-only: grpc-status in the response head, END_STREAM.
                            let (_tx, rx) = mpsc::channel(1);
                            let mut resp =
                                Response::new(StreamBody::new(tokio_stream_shim::Receiver(rx)));
                            let h = resp.headers_mut();
                            h.insert("content-type", HeaderValue::from_static("application/grpc"));
                            h.insert("grpc-status", HeaderValue::from_static("14"));
                            return Ok::<_, Infallible>(resp);
                        }
                        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(8);
                        let path = req.uri().path().to_owned();
                        let mut body = req.into_body();
                        tokio::spawn(async move {
                            if path.ends_with("/Flaky") {
                                let mut t = HeaderMap::new();
                                let _ = tx.send(Ok(Frame::data(frame(b"ok")))).await;
                                t.insert("grpc-status", HeaderValue::from_static("0"));
                                while body.frame().await.is_some() {}
                                let _ = tx.send(Ok(Frame::trailers(t))).await;
                                return;
                            }
                            let mut buf = BytesMut::new();
                            while let Some(Ok(f)) = body.frame().await {
                                if let Ok(d) = f.into_data() {
                                    buf.extend_from_slice(&d);
                                    while let Some(m) = take_message(&mut buf) {
                                        let mut reply = b"echo: ".to_vec();
                                        reply.extend_from_slice(&m);
                                        let _ = tx.send(Ok(Frame::data(frame(&reply)))).await;
                                    }
                                }
                            }
                            let mut t = HeaderMap::new();
                            t.insert("grpc-status", HeaderValue::from_static("0"));
                            t.insert("x-served-by", HeaderValue::from_static("echo"));
                            let _ = tx.send(Ok(Frame::trailers(t))).await;
                        });
                        let mut resp =
                            Response::new(StreamBody::new(tokio_stream_shim::Receiver(rx)));
                        resp.headers_mut()
                            .insert("content-type", HeaderValue::from_static("application/grpc"));
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (port, calls)
}

fn config(port: u16, retries: &str) -> String {
    format!(
        "{}apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: echo\nspec:\n  hosts: [echo.svc]\n  resolution: STATIC\n  ports:\n  - {{number: 8333, name: grpc, protocol: GRPC}}\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{grpc: {port}}}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: echo\nspec:\n  hosts: [echo.test]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {{host: echo.svc}}\n{retries}---\n",
        http_gateway("gw", 8080, &["*"])
    )
}

async fn h2_client(gw: &TestGateway) -> hyper::client::conn::http2::SendRequest<Chan> {
    let tcp = TcpStream::connect(gw.port(8080)).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

fn call(
    path: &str,
) -> (
    mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
    Request<Chan>,
) {
    let (tx, rx) = mpsc::channel(8);
    let req = Request::post(format!("http://echo.test{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(StreamBody::new(tokio_stream_shim::Receiver(rx)))
        .unwrap();
    (tx, req)
}

#[tokio::test]
async fn bidirectional_stream_flows_message_by_message_with_trailers() {
    let (port, _) = grpc_server(0).await;
    let gw = TestGateway::start(&config(port, "")).await;
    let mut client = h2_client(&gw).await;
    let (tx, req) = call("/echo.Echo/Chat");
    let resp = within(client.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    for msg in ["one", "two", "three"] {
        tx.send(Ok(Frame::data(frame(msg.as_bytes()))))
            .await
            .unwrap();
        // The next message is sent only after this reply arrived: any buffering on the way
        // would deadlock here (and `within` would fail the test).
        let reply = within(async {
            loop {
                if let Some(m) = take_message(&mut buf) {
                    return m;
                }
                let f = body.frame().await.unwrap().unwrap();
                if let Ok(d) = f.into_data() {
                    buf.extend_from_slice(&d);
                }
            }
        })
        .await;
        assert_eq!(&reply[..], format!("echo: {msg}").as_bytes());
    }
    drop(tx);
    let trailers = within(async {
        loop {
            match body.frame().await {
                Some(Ok(f)) if f.is_trailers() => return f.into_trailers().ok().unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("stream ended without trailers: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-served-by"], "echo");
}

#[tokio::test]
async fn retry_on_unavailable_retries_a_trailers_only_failure() {
    let (port, calls) = grpc_server(2).await;
    let gw = TestGateway::start(&config(
        port,
        "    retries: {attempts: 3, retryOn: unavailable}\n",
    ))
    .await;
    let mut client = h2_client(&gw).await;
    let (tx, req) = call("/echo.Echo/Flaky");
    tx.send(Ok(Frame::data(frame(b"hi")))).await.unwrap();
    drop(tx);
    let resp = within(client.send_request(req)).await.unwrap();
    let collected = within(resp.into_body().collect()).await.unwrap();
    let trailers = collected.trailers().cloned().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    let mut data = BytesMut::from(&collected.to_bytes()[..]);
    assert_eq!(&take_message(&mut data).unwrap()[..], b"ok");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "two failures, then success"
    );
}
