//! Bounded everything (issue 7), over real sockets: the HTTP/2 settings the gateway
//! advertises, HTTP/2 rapid reset, CONTINUATION flood and oversized header lists, the
//! per-listener connection cap, and many idle connections not slowing a new client.
//!
//! HTTP/2 abuse is written as raw frames (a client library would refuse to misbehave): a
//! minimal frame writer and HPACK literal encoder live at the bottom of this file.

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use support::gateway::{http_gateway, service_entry};
use support::{within, Client, TestGateway, Upstream, UpstreamHandle};

const HOST: &str = "app.test";

fn config(up: &UpstreamHandle) -> String {
    let vs = format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: app
spec:
  hosts: [\"{HOST}\"]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: /direct}}}}]
    directResponse: {{status: 200, body: {{string: direct}}}}
  - route: [{{destination: {{host: backend.svc}}}}]
---
"
    );
    [
        http_gateway("gw", 8080, &["*"]),
        service_entry("backend.svc", 80, "HTTP", &[(up, "v1")]),
        vs,
    ]
    .concat()
}

async fn start(adjust: impl FnOnce(&mut meshgate::Bootstrap)) -> (TestGateway, UpstreamHandle) {
    let up = Upstream::new("up").run().await;
    let gw = TestGateway::start_with(&config(&up), adjust).await;
    (gw, up)
}

// === HTTP/2 ===

/// The server's SETTINGS carry the documented defaults, and the connection window is raised
/// to 2 MiB right away.
#[tokio::test]
async fn h2_settings_advertise_the_limits() {
    let (gw, _up) = start(|_| {}).await;
    let mut c = H2::connect(gw.port(8080)).await;
    let settings = c.server_settings().await;
    let get = |id: u16| settings.iter().find(|(k, _)| *k == id).map(|(_, v)| *v);
    assert_eq!(get(0x3), Some(256), "MAX_CONCURRENT_STREAMS: {settings:?}");
    assert_eq!(
        get(0x4),
        Some(1024 * 1024),
        "INITIAL_WINDOW_SIZE: {settings:?}"
    );
    assert_eq!(
        get(0x6),
        Some(64 * 1024),
        "MAX_HEADER_LIST_SIZE: {settings:?}"
    );
    let window = c.connection_window_increment().await;
    assert_eq!(window, Some(2 * 1024 * 1024 - 65_535));
}

/// Flags change what is advertised.
#[tokio::test]
async fn h2_settings_follow_the_bootstrap() {
    let (gw, _up) = start(|b| {
        b.http_limits.h2_max_concurrent_streams = 7;
        b.http_limits.h2_stream_window = 100_000;
        b.http_limits.max_request_head = 20_000;
    })
    .await;
    let mut c = H2::connect(gw.port(8080)).await;
    let settings = c.server_settings().await;
    let get = |id: u16| settings.iter().find(|(k, _)| *k == id).map(|(_, v)| *v);
    assert_eq!(get(0x3), Some(7));
    assert_eq!(get(0x4), Some(100_000));
    assert_eq!(get(0x6), Some(20_000));
}

/// CVE-2023-44487: streams opened and reset at once, in one burst. The connection is closed
/// with GOAWAY `ENHANCE_YOUR_CALM` long before the burst is through, and the gateway keeps
/// serving others.
#[tokio::test]
async fn h2_rapid_reset_closes_the_connection() {
    let (gw, up) = start(|_| {}).await;
    let mut c = H2::connect(gw.port(8080)).await;
    let mut burst = Vec::new();
    for i in 0..500u32 {
        let id = 2 * i + 1;
        burst.extend(frame(0x1, 0x4 | 0x1, id, &request_block("/direct", &[])));
        burst.extend(frame(0x3, 0, id, &8u32.to_be_bytes())); // RST_STREAM CANCEL
    }
    let _ = c.s.write_all(&burst).await;
    let goaway = c.read_until_goaway(Duration::from_secs(5)).await;
    assert_eq!(
        goaway,
        Some(0xb),
        "expected GOAWAY ENHANCE_YOUR_CALM (0xb), got {goaway:?}"
    );
    assert!(
        up.hits() < 50,
        "{} requests reached the upstream",
        up.hits()
    );
    let r = Client::new(gw.port(8080), HOST).h2().send("/direct").await;
    assert_eq!(r.status, 200);
}

/// CVE-2024-27316 and friends: a header block that never ends (CONTINUATION frames without
/// END_HEADERS). The connection is closed before the client has sent 4 MiB, and the
/// gateway keeps serving others.
#[tokio::test]
async fn h2_continuation_flood_is_cut_off() {
    let (gw, up) = start(|_| {}).await;
    let mut c = H2::connect(gw.port(8080)).await;
    let _ = c.server_settings().await;
    let (mut rd, mut wr) = c.s.into_split();
    let writer = tokio::spawn(async move {
        let first = request_block("/direct", &[]);
        wr.write_all(&frame(0x1, 0x1, 1, &first)).await?; // HEADERS, END_STREAM only
        let junk = literal(b"x-junk", &[b'a'; 4000]);
        let mut sent = 0usize;
        while sent < 4 * 1024 * 1024 {
            wr.write_all(&frame(0x9, 0, 1, &junk)).await?;
            sent += junk.len();
        }
        Ok::<usize, std::io::Error>(sent)
    });
    // The reader sees GOAWAY or the close; the writer then fails on the closed socket.
    let mut buf = vec![0u8; 64 * 1024];
    let closed = within(async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed);
    let sent = within(writer).await.unwrap();
    assert!(
        sent.is_err(),
        "the whole 4 MiB header block was accepted: {sent:?}"
    );
    assert_eq!(up.hits(), 0);
    let r = Client::new(gw.port(8080), HOST).h2().send("/direct").await;
    assert_eq!(r.status, 200);
}

/// A header list over the limit in a complete block: that stream is refused (431 or a
/// stream reset), the upstream sees nothing, and the connection still serves a normal
/// request.
#[tokio::test]
async fn h2_header_list_over_the_limit_is_refused() {
    let (gw, up) = start(|_| {}).await;
    let mut c = H2::connect(gw.port(8080)).await;
    let _ = c.server_settings().await;
    let big = vec![b'a'; 70 * 1024];
    let block = request_block("/", &[(b"x-big", &big)]);
    // Split into 16 KiB frames: HEADERS then CONTINUATIONs, the last with END_HEADERS.
    let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let (ty, mut flags) = if i == 0 { (0x1, 0x1) } else { (0x9, 0) };
        if last {
            flags |= 0x4;
        }
        out.extend(frame(ty, flags, 1, chunk));
    }
    c.s.write_all(&out).await.unwrap();
    let answer = c.stream_answer(1, Duration::from_secs(3)).await;
    assert!(
        matches!(answer, StreamAnswer::Status(431))
            || matches!(answer, StreamAnswer::Reset(code) if code != 0),
        "{answer:?}"
    );
    assert_eq!(up.hits(), 0);
    c.s.write_all(&frame(0x1, 0x5, 3, &request_block("/direct", &[])))
        .await
        .unwrap();
    let answer = c.stream_answer(3, Duration::from_secs(3)).await;
    assert!(matches!(answer, StreamAnswer::Status(200)), "{answer:?}");
}

// === Connections ===

/// At the per-listener cap, a new connection waits (unaccepted) until a slot frees, then is
/// served; the global cap is not what held it.
#[tokio::test]
async fn per_listener_cap_holds_new_connections_until_a_slot_frees() {
    let (gw, _up) = start(|b| b.max_connections_per_listener = Some(2)).await;
    let addr = gw.port(8080);
    // Two clients that send half a head and hold their slots.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /direct HTTP/1.1\r\n").await.unwrap();
        holders.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(format!("GET /direct HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
    assert!(early.is_err(), "served while the listener was at its cap");
    drop(holders.pop());
    let n = within(third.read(&mut buf)).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

/// 2,000 idle keep-alive connections (each served once) do not stop a new client from being
/// served, and each of them still works afterwards.
#[tokio::test]
async fn many_idle_connections_do_not_block_a_new_client() {
    let (gw, _up) = start(|_| {}).await;
    let addr = gw.port(8080);
    let req = format!("GET /direct HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let mut idle = Vec::new();
    within(async {
        for _ in 0..2000 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            idle.push(s);
        }
    })
    .await;
    let started = Instant::now();
    let r = Client::new(addr, HOST).send("/direct").await;
    assert_eq!(r.status, 200);
    // Generous: this only catches a gateway that serialises on its idle connections.
    assert!(started.elapsed() < Duration::from_secs(2));
    for s in idle.iter_mut().step_by(100) {
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = [0u8; 512];
        let n = within(s.read(&mut buf)).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
}

// === A raw HTTP/2 client ===

/// One HTTP/2 frame.
fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.push(ty);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix, `first` holding the bits above it.
fn hpack_int(first: u8, n: u32, mut v: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | u8::try_from(v).unwrap());
        return;
    }
    out.push(first | u8::try_from(max).unwrap());
    v -= max;
    while v >= 128 {
        out.push(u8::try_from(v % 128).unwrap() | 0x80);
        v /= 128;
    }
    out.push(u8::try_from(v).unwrap());
}

/// A literal header field without indexing, new name (no Huffman).
fn literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    hpack_int(0, 7, name.len(), &mut out);
    out.extend_from_slice(name);
    hpack_int(0, 7, value.len(), &mut out);
    out.extend_from_slice(value);
    out
}

/// GET `path` on `HOST` with extra headers, as an HPACK block.
fn request_block(path: &str, extra: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
    b.push(0x04); // :path, literal without indexing, indexed name 4
    hpack_int(0, 7, path.len(), &mut b);
    b.extend_from_slice(path.as_bytes());
    b.push(0x01); // :authority, literal without indexing, indexed name 1
    hpack_int(0, 7, HOST.len(), &mut b);
    b.extend_from_slice(HOST.as_bytes());
    for (n, v) in extra {
        b.extend(literal(n, v));
    }
    b
}

/// Three decimal digits in HPACK's Huffman code (RFC 7541 Appendix B: `0`-`2` are the
/// 5-bit codes 0-2, `3`-`9` the 6-bit codes 0b011001-0b011111).
fn huffman_digits(bytes: &[u8]) -> u16 {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let take = |at: usize, n: usize| {
        bits.get(at..at + n)
            .map(|b| b.iter().fold(0u16, |v, &x| v << 1 | u16::from(x)))
    };
    let mut at = 0;
    let mut value = 0u16;
    for _ in 0..3 {
        let digit = match take(at, 5) {
            Some(d) if d < 3 => {
                at += 5;
                d
            }
            _ => match take(at, 6) {
                Some(c) if (0b01_1001..=0b01_1111).contains(&c) => {
                    at += 6;
                    c - 0b01_1001 + 3
                }
                _ => return 0,
            },
        };
        value = value * 10 + digit;
    }
    value
}

#[derive(Debug)]
enum StreamAnswer {
    /// A response HEADERS frame; the status from its first byte when it is a static-table
    /// `:status` (200, 204, 206, 304, 400, 404, 500), else from a literal.
    Status(u16),
    /// RST_STREAM with this code.
    Reset(u32),
    /// GOAWAY, closed, or nothing in time.
    Nothing,
}

struct H2 {
    s: TcpStream,
    buf: Vec<u8>,
}

impl H2 {
    async fn connect(addr: SocketAddr) -> Self {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        s.write_all(&frame(0x4, 0, 0, &[])).await.unwrap();
        Self { s, buf: Vec::new() }
    }

    /// The next frame (type, flags, stream, payload), or None on close/timeout.
    async fn next_frame(&mut self, until: Instant) -> Option<(u8, u8, u32, Vec<u8>)> {
        loop {
            if self.buf.len() >= 9 {
                let len = usize::from(self.buf[0]) << 16
                    | usize::from(self.buf[1]) << 8
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let head: Vec<u8> = self.buf.drain(..9).collect();
                    let payload: Vec<u8> = self.buf.drain(..len).collect();
                    let stream =
                        u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                    return Some((head[3], head[4], stream, payload));
                }
            }
            let mut chunk = vec![0u8; 16 * 1024];
            match tokio::time::timeout_at(until, self.s.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// The parameters of the server's first (non-ACK) SETTINGS frame.
    async fn server_settings(&mut self) -> Vec<(u16, u32)> {
        let until = Instant::now() + Duration::from_secs(3);
        while let Some((ty, flags, _, p)) = self.next_frame(until).await {
            if ty == 0x4 && flags & 0x1 == 0 {
                self.s.write_all(&frame(0x4, 0x1, 0, &[])).await.unwrap();
                return p
                    .chunks(6)
                    .map(|c| {
                        (
                            u16::from_be_bytes([c[0], c[1]]),
                            u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                        )
                    })
                    .collect();
            }
        }
        panic!("no SETTINGS from the server");
    }

    /// The increment of the first connection-level WINDOW_UPDATE.
    async fn connection_window_increment(&mut self) -> Option<u32> {
        let until = Instant::now() + Duration::from_secs(3);
        while let Some((ty, _, stream, p)) = self.next_frame(until).await {
            if ty == 0x8 && stream == 0 {
                return Some(u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff);
            }
        }
        None
    }

    /// The GOAWAY error code, reading frames until one arrives or the connection closes.
    async fn read_until_goaway(&mut self, limit: Duration) -> Option<u32> {
        let until = Instant::now() + limit;
        while let Some((ty, _, _, p)) = self.next_frame(until).await {
            if ty == 0x7 {
                return Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
            }
        }
        None
    }

    /// How the server answered `stream`.
    async fn stream_answer(&mut self, stream: u32, limit: Duration) -> StreamAnswer {
        let until = Instant::now() + limit;
        while let Some((ty, _, id, p)) = self.next_frame(until).await {
            match ty {
                0x1 if id == stream => {
                    let status = match p.first() {
                        Some(0x88) => 200,
                        Some(0x89) => 204,
                        Some(0x8a) => 206,
                        Some(0x8b) => 304,
                        Some(0x8c) => 400,
                        Some(0x8d) => 404,
                        Some(0x8e) => 500,
                        // Literal with indexed name 8 (:status): length, then three
                        // digits, plain or Huffman-coded.
                        Some(b) if b & 0x0f == 8 || *b == 0x48 => match p.get(1) {
                            Some(0x03) => p
                                .get(2..5)
                                .and_then(|d| std::str::from_utf8(d).ok())
                                .and_then(|d| d.parse().ok())
                                .unwrap_or(0),
                            Some(l) if l & 0x80 != 0 => {
                                let n = usize::from(l & 0x7f);
                                huffman_digits(p.get(2..2 + n).unwrap_or(&[]))
                            }
                            _ => 0,
                        },
                        _ => 0,
                    };
                    return StreamAnswer::Status(status);
                }
                0x3 if id == stream => {
                    return StreamAnswer::Reset(u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
                }
                0x7 => return StreamAnswer::Nothing,
                _ => {}
            }
        }
        StreamAnswer::Nothing
    }
}

/// Without a DestinationRule, requests in flight to one destination are still bounded
/// (`--max-requests-per-destination`): under a slow upstream the excess is shed with 503 `UO`
/// at once instead of queueing in memory.
#[tokio::test]
async fn slow_upstream_sheds_beyond_the_default_per_destination_bound() {
    let up = Upstream::new("up")
        .delay(Duration::from_millis(400))
        .run()
        .await;
    let gw = TestGateway::start_with(&config(&up), |b| b.pool.max_requests = Some(2)).await;
    let addr = gw.port(8080);
    let replies = futures_util::future::join_all(
        (0..5).map(|i| async move { Client::new(addr, HOST).send(&format!("/slow/{i}")).await }),
    )
    .await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let shed: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    assert_eq!(ok, 2, "{replies:?}");
    assert_eq!(shed.len(), 3, "{replies:?}");
    for r in shed {
        assert_eq!(r.header("x-envoy-overloaded"), "true", "{r:?}");
    }
}
