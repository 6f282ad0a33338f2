//! A small test client over real sockets: one connection per request (HTTP/1.1 or h2c prior
//! knowledge), any Host header, and raw-bytes exchanges for wire-level assertions.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::within;

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// A header's value as a string ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Client {
    addr: SocketAddr,
    host: String,
    method: Method,
    headers: Vec<(String, String)>,
    body: Bytes,
    h2: bool,
}

impl Client {
    /// `GET` to `addr` with `Host: host`.
    pub fn new(addr: SocketAddr, host: &str) -> Self {
        Self {
            addr,
            host: host.to_owned(),
            method: Method::GET,
            headers: Vec::new(),
            body: Bytes::new(),
            h2: false,
        }
    }

    pub fn method(mut self, m: &str) -> Self {
        self.method = Method::from_bytes(m.as_bytes()).unwrap();
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }

    pub fn body(mut self, b: impl Into<Bytes>) -> Self {
        self.body = b.into();
        self
    }

    /// Use HTTP/2 with prior knowledge.
    pub fn h2(mut self) -> Self {
        self.h2 = true;
        self
    }

    /// Send to `path` (with query) and read the whole response.
    pub async fn send(&self, path: &str) -> Reply {
        within(self.try_send(path)).await.expect("request failed")
    }

    /// Like `send`, returning transport errors instead of panicking.
    pub async fn try_send(
        &self,
        path: &str,
    ) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
        let stream = TcpStream::connect(self.addr).await?;
        let io = TokioIo::new(stream);
        let mut req = Request::builder().method(self.method.clone());
        if self.h2 {
            req = req.uri(format!("http://{}{}", self.host, path));
        } else {
            req = req.uri(path).header("host", &self.host);
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(self.body.clone()))?;
        let resp = if self.h2 {
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
}

/// Write `raw` to `addr` and read until the peer closes or `until` appears in the reply.
pub async fn raw_exchange(addr: SocketAddr, raw: &[u8], until: &str) -> String {
    within(async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        read_until(&mut s, until).await
    })
    .await
}

/// Read from `s` until the peer closes (or the read fails) or `until`, when not empty,
/// appears in what arrived; what arrived, as text.
pub async fn read_until(s: &mut TcpStream, until: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if !until.is_empty() && String::from_utf8_lossy(&out).contains(until) {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
