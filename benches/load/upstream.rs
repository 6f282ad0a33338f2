//! The fixed upstream every system proxies to: a hyper server (HTTP/1.1 and h2c, or TLS with
//! ALPN h2/http1.1) on its own thread with a current-thread runtime, pinned to the load core,
//! answering 200 with a fixed body: 100 KiB when the path ends in `100k`, else 1 KiB. It
//! sets `x-upstream: a|b` so a test can tell the two endpoints apart.
//!
//! Must not: allocate per response (the bodies are static) or log.

use std::convert::Infallible;
use std::net::TcpListener;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio_rustls::TlsAcceptor;

use crate::pki::Pki;
use crate::procs;

/// Size of the default body.
pub const SMALL: usize = 1024;
/// Size of the body for paths ending in `100k`.
pub const BIG: usize = 100 * 1024;

static SMALL_BODY: [u8; SMALL] = [b'x'; SMALL];
static BIG_BODY: [u8; BIG] = [b'y'; BIG];

/// The ports of the running upstreams: two endpoints each.
#[derive(Debug, Clone, Copy)]
pub struct Upstreams {
    /// Plain HTTP/1.1 + h2c.
    pub plain: [u16; 2],
    /// TLS (the bench leaf certificate), HTTP/1.1 or h2 by ALPN.
    pub tls: [u16; 2],
    /// The serving thread, for its CPU time.
    pub tid: Option<u32>,
}

/// Start the upstreams on a thread pinned to `core` (when given).
pub fn start(pki: &Pki, core: Option<usize>) -> Upstreams {
    let listeners: Vec<TcpListener> = (0..4)
        .map(|_| {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
            l.set_nonblocking(true).expect("nonblocking");
            l
        })
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect();
    let acceptor = TlsAcceptor::from(pki.server_config());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("upstream".into())
        .spawn(move || {
            if let Some(c) = core {
                procs::pin_current_thread(c);
            }
            let _ = tx.send(procs::current_tid());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("upstream runtime");
            rt.block_on(async move {
                for (i, l) in listeners.into_iter().enumerate() {
                    let l = tokio::net::TcpListener::from_std(l).expect("tokio listener");
                    let tls = (i >= 2).then(|| acceptor.clone());
                    let name = if i % 2 == 0 { "a" } else { "b" };
                    tokio::spawn(serve(l, tls, name));
                }
                std::future::pending::<()>().await;
            });
        })
        .expect("upstream thread");
    let tid = rx.recv().ok().flatten();
    Upstreams {
        plain: [ports[0], ports[1]],
        tls: [ports[2], ports[3]],
        tid,
    }
}

async fn serve(l: tokio::net::TcpListener, tls: Option<TlsAcceptor>, name: &'static str) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let _ = s.set_nodelay(true);
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| async move {
                Ok::<_, Infallible>(respond(&req, name))
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            match tls {
                Some(acc) => {
                    if let Ok(s) = acc.accept(s).await {
                        let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                }
            }
        });
    }
}

fn respond(req: &Request<Incoming>, name: &'static str) -> Response<Full<Bytes>> {
    let body: &'static [u8] = if req.uri().path().ends_with("100k") {
        &BIG_BODY
    } else {
        &SMALL_BODY
    };
    Response::builder()
        .header("content-type", "text/plain")
        .header("x-upstream", name)
        .body(Full::new(Bytes::from_static(body)))
        .expect("static response")
}
