//! Differential hardening (issue 7): the same malformed HTTP/1.1 inputs sent to meshgate and
//! to nginx, each proxying to its own recording upstream, in one test run. meshgate must
//! refuse every input (4xx or a close, nothing forwarded), which makes it at least as strict
//! as nginx on each; the table of both answers is printed, and the cases where nginx accepts
//! what meshgate refuses are listed in the README ("Differences from nginx").
//!
//! Needs the Debian package `nginx` (installed with apt-get when missing, as the other tests
//! that need a Debian package do).

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use support::gateway::{http_gateway, service_entry};
use support::nginx::{self, Nginx};
use support::{TestGateway, Upstream, UpstreamHandle};

const HOST: &str = "app.test";

/// nginx proxying everything to `up`, as a reverse proxy is usually configured.
fn start_nginx(up: &UpstreamHandle) -> Nginx {
    nginx::start("", |port, dir| {
        let d = dir.display();
        format!(
            "http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://{up}; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}
  }}
}}
",
            up = up.addr
        )
    })
}

/// Send `raw`, read for up to 1 s or until closed; the first status code (0: none).
async fn answer(addr: SocketAddr, raw: &[u8]) -> u16 {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return 0;
    };
    let _ = s.write_all(raw).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let until = Instant::now() + Duration::from_secs(1);
    while let Ok(Ok(n)) = tokio::time::timeout_at(until, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /x HTTP/1.1\r\nHost: {HOST}\r\n{headers}\r\n{body}").into_bytes()
}

fn cases() -> Vec<(&'static str, Vec<u8>)> {
    let smuggled = format!("0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    vec![
        (
            "Content-Length with Transfer-Encoding",
            post(
                &format!(
                    "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                    smuggled.len()
                ),
                &smuggled,
            ),
        ),
        (
            "two identical Content-Length lines",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
        ),
        ("Content-Length list \"5, 5\"", post("Content-Length: 5, 5\r\n", "hello")),
        ("Content-Length \"+5\"", post("Content-Length: +5\r\n", "hello")),
        (
            "Transfer-Encoding gzip, chunked",
            post("Transfer-Encoding: gzip, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!(
                "POST /x HTTP/1.0\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            )
            .into_bytes(),
        ),
        (
            "bare LF after chunk data",
            post("Transfer-Encoding: chunked\r\n", "5\r\nhello\n0\r\n\r\n"),
        ),
        (
            "bare LF in a trailer",
            post(
                "Transfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\nX-T: 1\n\r\n",
            ),
        ),
        (
            "chunk longer than its size",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("1\r\nhGET /smuggled HTTP/1.1\r\nHost: {HOST}\r\n\r\n0\r\n\r\n"),
            ),
        ),
        (
            "obsolete line folding",
            format!("GET /x HTTP/1.1\r\nHost: {HOST}\r\nX-A: 1\r\n  folded\r\n\r\n").into_bytes(),
        ),
        (
            "whitespace before colon",
            format!("GET /x HTTP/1.1\r\nHost: {HOST}\r\nX-A : 1\r\n\r\n").into_bytes(),
        ),
        (
            "two Host headers",
            format!("GET /x HTTP/1.1\r\nHost: {HOST}\r\nHost: other.test\r\n\r\n").into_bytes(),
        ),
        ("no Host", b"GET /x HTTP/1.1\r\n\r\n".to_vec()),
        ("HTTP/0.9", b"GET /x\r\n".to_vec()),
        (
            "NUL in a header value",
            format!("GET /x HTTP/1.1\r\nHost: {HOST}\r\nX-A: a\0b\r\n\r\n").into_bytes(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshgate_refuses_everything_nginx_refuses_and_more() {
    let mg_up = Upstream::new("mg-up").run().await;
    let ngx_up = Upstream::new("nginx-up").run().await;
    let yaml = [
        http_gateway("gw", 8080, &["*"]),
        service_entry("backend.svc", 80, "HTTP", &[(&mg_up, "v1")]),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: app\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  http:\n  - route: [{destination: {host: backend.svc}}]\n---\n"
            .to_owned(),
    ]
    .concat();
    let gw = TestGateway::start_with(&yaml, |b| {
        b.header_read_timeout = Duration::from_millis(500);
    })
    .await;
    let nginx = start_nginx(&ngx_up);
    // Both proxies forward a well-formed request.
    let ok = format!("GET /x HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    assert_eq!(answer(gw.port(8080), ok.as_bytes()).await, 200);
    assert_eq!(answer(nginx.addr, ok.as_bytes()).await, 200);
    let (mg_base, ngx_base) = (mg_up.hits(), ngx_up.hits());

    let mut table = vec![format!(
        "{:<40} {:>9} {:>9} {:>9} {:>9}",
        "input", "meshgate", "forwarded", "nginx", "forwarded"
    )];
    let mut failures = Vec::new();
    for (name, raw) in cases() {
        let (m0, n0) = (mg_up.hits(), ngx_up.hits());
        let mg = answer(gw.port(8080), &raw).await;
        let ngx = answer(nginx.addr, &raw).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (mf, nf) = (mg_up.hits() - m0, ngx_up.hits() - n0);
        let show = |s: u16| {
            if s == 0 {
                "close".to_owned()
            } else {
                s.to_string()
            }
        };
        table.push(format!(
            "{name:<40} {:>9} {mf:>9} {:>9} {nf:>9}",
            show(mg),
            show(ngx)
        ));
        let refused = mg == 0 || (400..500).contains(&mg);
        if !refused || mf > 0 {
            failures.push(format!("{name}: meshgate answered {mg}, forwarded {mf}"));
        }
    }
    println!("{}", table.join("\n"));
    assert!(
        failures.is_empty(),
        "meshgate accepted inputs it must refuse:\n{}\n{}",
        failures.join("\n"),
        table.join("\n")
    );
    assert!(mg_up.hits() >= mg_base && ngx_up.hits() >= ngx_base);
}
