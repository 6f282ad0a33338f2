//! Test upstreams: `Upstream::new("a").fail_first(2, 503).delay(..).run()` starts a hyper
//! server on 127.0.0.1:0 that answers with its name and records every request it sees.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: hyper::Version,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

/// Builder for a test upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    name: String,
    fail_first: usize,
    fail_status: u16,
    delay: Duration,
    delay_first: usize,
    http2: bool,
    reset_first: usize,
}

/// A running upstream.
#[derive(Debug, Clone)]
pub struct UpstreamHandle {
    pub name: String,
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    conns: Arc<AtomicUsize>,
}

impl UpstreamHandle {
    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The last request received.
    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw no request")
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Upstream {
    /// An HTTP/1.1 upstream that answers 200 with body `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            fail_first: 0,
            fail_status: 503,
            delay: Duration::ZERO,
            delay_first: usize::MAX,
            http2: false,
            reset_first: 0,
        }
    }

    /// Answer the first `n` requests with `status`.
    pub fn fail_first(mut self, n: usize, status: u16) -> Self {
        self.fail_first = n;
        self.fail_status = status;
        self
    }

    /// Read the request on each of the first `n` connections, then close it unanswered.
    pub fn reset_first(mut self, n: usize) -> Self {
        self.reset_first = n;
        self
    }

    /// Wait `d` before answering every request.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self.delay_first = usize::MAX;
        self
    }

    /// Wait `d` before answering only the first `n` requests.
    pub fn delay_first(mut self, n: usize, d: Duration) -> Self {
        self.delay = d;
        self.delay_first = n;
        self
    }

    /// Serve HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1.
    pub fn http2(mut self) -> Self {
        self.http2 = true;
        self
    }

    /// Start serving on 127.0.0.1:0.
    pub async fn run(self) -> UpstreamHandle {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicUsize::new(0));
        let handle = UpstreamHandle {
            name: self.name.clone(),
            addr,
            hits: hits.clone(),
            seen: seen.clone(),
            conns: conns.clone(),
        };
        let cfg = Arc::new(self);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                if conns.fetch_add(1, Ordering::SeqCst) < cfg.reset_first {
                    let hits = hits.clone();
                    tokio::spawn(async move {
                        use tokio::io::AsyncReadExt;
                        let mut buf = [0u8; 4096];
                        let _ = stream.read(&mut buf).await;
                        hits.fetch_add(1, Ordering::SeqCst);
                        drop(stream);
                    });
                    continue;
                }
                let cfg = cfg.clone();
                let hits = hits.clone();
                let seen = seen.clone();
                let http2 = cfg.http2;
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let cfg = cfg.clone();
                        let hits = hits.clone();
                        let seen = seen.clone();
                        async move { Ok::<_, Infallible>(answer(&cfg, &hits, &seen, req).await) }
                    });
                    let io = TokioIo::new(stream);
                    if http2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .preserve_header_case(true)
                            .serve_connection(io, svc)
                            .await;
                    }
                });
            }
        });
        handle
    }
}

async fn answer(
    cfg: &Upstream,
    hits: &AtomicUsize,
    seen: &Mutex<Vec<Seen>>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let n = hits.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        version: parts.version,
        headers: parts.headers.clone(),
        body,
    });
    if !cfg.delay.is_zero() && n < cfg.delay_first {
        tokio::time::sleep(cfg.delay).await;
    }
    let status = if n < cfg.fail_first {
        StatusCode::from_u16(cfg.fail_status).unwrap()
    } else {
        StatusCode::OK
    };
    Response::builder()
        .status(status)
        .header("x-upstream", &cfg.name)
        .body(Full::new(Bytes::from(cfg.name.clone())))
        .unwrap()
}
