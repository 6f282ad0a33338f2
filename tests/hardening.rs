//! HTTP hardening over raw sockets (issue 7): strict HTTP/1.1 framing and header syntax
//! (RFC 9112), pipelining, `Expect: 100-continue`, path normalisation before matching, the
//! request-line / header-block / header-count limits and the header read timeout.
//!
//! Every test starts its own gateway in-process on 127.0.0.1 in front of real recording
//! upstreams, writes bytes no well-behaved client library would produce, and asserts three
//! things for each rejected input: the status the issue requires (or a close where the issue
//! allows one), that no upstream saw any request, and that the gateway then serves a normal
//! request. Table-driven tests run every case (each against a fresh gateway, concurrently)
//! and report all failing cases at once, with what was observed.
//!
//! The header read timeout is set to 300 ms and every read has a deadline, so no test can
//! hang and the file runs in a few seconds.

// Test code: failing loudly is the point (clippy.toml only allows these inside `#[test]` fns,
// not in the helpers below).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use support::gateway::{http_gateway, service_entry};
use support::{within, within_for, Client, TestGateway, Upstream, UpstreamHandle};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// The header read timeout every gateway here runs with.
const HEADER_TIMEOUT: Duration = Duration::from_millis(300);

/// How long to wait for an expected response before calling the connection stuck.
const READ_LIMIT: Duration = Duration::from_millis(1500);

/// How long to wait, after the expected responses arrived, for the gateway to close.
const CLOSE_GRACE: Duration = Duration::from_millis(300);

/// How long a forward that raced the gateway's answer may take to reach the upstream.
const SETTLE: Duration = Duration::from_millis(100);

/// The Host every routed request uses.
const HOST: &str = "app.test";

/// Routes for `app.test` on Gateway port 8080, first match wins:
/// - `/admin` answers 403 `admin-denied` directly (the rule `/public/../admin` must not bypass),
/// - `/direct` answers 200 `direct` directly (limit controls that must not depend on the
///   upstream's own limits),
/// - `/other` forwards to the upstream `other`,
/// - `/public` forwards to the upstream `up`,
/// - anything else answers 404 `no-route` directly.
fn config(up: &UpstreamHandle, other: &UpstreamHandle) -> String {
    let vs = format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: app
spec:
  hosts: [\"{HOST}\"]
  gateways: [gw]
  http:
  - name: admin
    match: [{{uri: {{prefix: /admin}}}}]
    directResponse: {{status: 403, body: {{string: admin-denied}}}}
  - name: direct
    match: [{{uri: {{prefix: /direct}}}}]
    directResponse: {{status: 200, body: {{string: direct}}}}
  - name: other
    match: [{{uri: {{prefix: /other}}}}]
    route: [{{destination: {{host: other.svc}}}}]
  - name: public
    match: [{{uri: {{prefix: /public}}}}]
    route: [{{destination: {{host: backend.svc}}}}]
  - name: fallback
    directResponse: {{status: 404, body: {{string: no-route}}}}
---
"
    );
    [
        http_gateway("gw", 8080, &["*"]),
        service_entry("backend.svc", 80, "HTTP", &[(up, "v1")]),
        service_entry("other.svc", 80, "HTTP", &[(other, "v1")]),
        vs,
    ]
    .concat()
}

/// A gateway (header timeout `HEADER_TIMEOUT`) in front of upstreams `up` and `other`.
struct Harness {
    gw: TestGateway,
    up: UpstreamHandle,
    other: UpstreamHandle,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(Upstream::new("up")).await
    }

    /// Start with `up` built from the given builder (named "up").
    async fn start_with(up: Upstream) -> Self {
        let up = up.run().await;
        let other = Upstream::new("other").run().await;
        let gw = TestGateway::start_with(&config(&up, &other), |b| {
            b.header_read_timeout = HEADER_TIMEOUT;
        })
        .await;
        Self { gw, up, other }
    }

    fn addr(&self) -> SocketAddr {
        self.gw.port(8080)
    }

    /// Requests received by both upstreams so far.
    fn hits(&self) -> usize {
        self.up.hits() + self.other.hits()
    }

    /// A well-formed request on a new connection is still forwarded and answered.
    async fn check_still_serving(&self) -> Result<(), String> {
        let before = self.hits();
        let client = Client::new(self.addr(), HOST);
        let reply = tokio::time::timeout(READ_LIMIT, client.try_send("/public/after"))
            .await
            .map_err(|_| "then a normal request got no answer in time".to_owned())?
            .map_err(|e| format!("then a normal request failed: {e}"))?;
        if reply.status != 200 || reply.body != "up" {
            return Err(format!(
                "then a normal request got {} {:?} instead of 200 \"up\"",
                reply.status, reply.body
            ));
        }
        let after = self.hits();
        if after != before + 1 {
            return Err(format!(
                "then a normal request was forwarded {} times instead of once",
                after - before
            ));
        }
        Ok(())
    }

    /// Send `raw` on a new connection and check the answer against `want`, that no upstream
    /// saw anything, and that the gateway then serves a normal request.
    async fn check_rejected(&self, raw: &[u8], want: Want) -> Result<(), String> {
        let before = self.hits();
        let ex = exchange(self.addr(), raw, 1).await;
        // A forward races the answer (the upstream counts a request once its head arrives):
        // let it land so that it is blamed on this case, not on the next request.
        tokio::time::sleep(SETTLE).await;
        let seen = self.hits() - before;
        let mut problems = Vec::new();
        let first = ex.first_final();
        match want {
            Want::Status(code) | Want::StatusAndClose(code) => {
                if first.as_ref().map(|r| r.status) != Some(code) {
                    problems.push(format!("expected {code}"));
                }
                if matches!(want, Want::StatusAndClose(_)) && !ex.closed {
                    problems.push("expected the connection closed".to_owned());
                }
            }
            Want::Refusal => {
                let refused = match &first {
                    Some(r) => r.status >= 400,
                    None => ex.closed && ex.bytes.is_empty(),
                };
                if !refused {
                    problems.push("expected a 4xx/5xx answer or a close".to_owned());
                }
            }
        }
        if seen != 0 {
            problems.push("expected the upstream to see nothing".to_owned());
        }
        let observed = format!(
            "observed: {}, connection {}, upstream saw {seen} request(s)",
            ex.summary(),
            if ex.closed { "closed" } else { "left open" },
        );
        let serving = self.check_still_serving().await;
        if let Err(e) = serving {
            problems.push(e);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("{}; {observed}", problems.join("; ")))
        }
    }
}

/// What a rejected request must get.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// This status; the connection may stay open.
    Status(u16),
    /// This status, then the connection closed.
    StatusAndClose(u16),
    /// Refused: any 4xx/5xx response, or a close without any response bytes.
    Refusal,
}

/// Run every `(name, raw request)` case against its own fresh gateway, concurrently, and fail
/// with the list of failing cases and what each observed.
async fn check_cases(want: Want, cases: Vec<(&str, Vec<u8>)>) {
    let total = cases.len();
    let results = join_all(cases.into_iter().map(|(name, raw)| async move {
        let h = Harness::start().await;
        h.check_rejected(&raw, want)
            .await
            .map_err(|e| format!("  - {name}: {e}"))
    }));
    let failures: Vec<String> = within(results)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {total} case(s) not rejected as required ({want:?}):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Raw exchanges
// ---------------------------------------------------------------------------------------------

/// The bytes one raw connection received, and whether the gateway closed it.
#[derive(Debug)]
struct Exchange {
    bytes: Vec<u8>,
    closed: bool,
}

/// One parsed response.
#[derive(Debug, Clone)]
struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn body(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Exchange {
    /// Every complete response received, 1xx included, in order.
    fn responses(&self) -> Vec<Resp> {
        parse_responses(&self.bytes, self.closed)
    }

    /// The first complete non-1xx response.
    fn first_final(&self) -> Option<Resp> {
        self.responses().into_iter().find(|r| r.status >= 200)
    }

    /// The first line received, for messages.
    fn summary(&self) -> String {
        if self.bytes.is_empty() {
            return "no response bytes".to_owned();
        }
        let text = String::from_utf8_lossy(&self.bytes);
        let line = text.lines().next().unwrap_or("");
        match self.first_final() {
            Some(r) => {
                let body: String = r.body().chars().take(60).collect();
                format!("{line:?} body {body:?}")
            }
            None => format!("{line:?}"),
        }
    }
}

/// Write `raw` on a new connection to `addr` and read until `finals` final responses arrived
/// and the gateway closed (or `CLOSE_GRACE` passed after them), or `READ_LIMIT` passed.
async fn exchange(addr: SocketAddr, raw: &[u8], finals: usize) -> Exchange {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The gateway may answer and close before reading everything (oversized heads).
    let _ = s.write_all(raw).await;
    read_replies(&mut s, finals).await
}

/// Read from `s` as `exchange` does.
async fn read_replies(s: &mut TcpStream, finals: usize) -> Exchange {
    let deadline = Instant::now() + READ_LIMIT;
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let have = parse_responses(&bytes, false)
            .iter()
            .filter(|r| r.status >= 200)
            .count();
        let until = if have >= finals {
            deadline.min(Instant::now() + CLOSE_GRACE)
        } else {
            deadline
        };
        match tokio::time::timeout_at(until, s.read(&mut buf)).await {
            Err(_) => {
                return Exchange {
                    bytes,
                    closed: false,
                }
            }
            Ok(Ok(0) | Err(_)) => {
                return Exchange {
                    bytes,
                    closed: true,
                }
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// The complete responses at the start of `bytes`; `closed` completes a close-delimited body.
fn parse_responses(bytes: &[u8], closed: bool) -> Vec<Resp> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(end) = find(rest, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let after = &rest[end + 4..];
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        if (100..200).contains(&status) || status == 204 || status == 304 {
            out.push(Resp {
                status,
                head,
                body: Vec::new(),
            });
            rest = after;
            continue;
        }
        let length = header_value(&head, "content-length").and_then(|v| v.parse::<usize>().ok());
        let chunked = header_value(&head, "transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let (body, used) = if let Some(n) = length {
            if after.len() < n {
                break;
            }
            (after[..n].to_vec(), n)
        } else if chunked {
            match dechunk(after) {
                Some(v) => v,
                None => break,
            }
        } else if closed {
            (after.to_vec(), after.len())
        } else {
            break;
        };
        out.push(Resp { status, head, body });
        rest = &after[used..];
    }
    out
}

/// A chunked body at the start of `bytes`: the data and the bytes used, or None if incomplete.
fn dechunk(bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let line_end = pos + find(&bytes[pos..], b"\r\n")?;
        let line = String::from_utf8_lossy(&bytes[pos..line_end]);
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        pos = line_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let end = pos + find(&bytes[pos..], b"\r\n")?;
                let empty = end == pos;
                pos = end + 2;
                if empty {
                    return Some((body, pos));
                }
            }
        }
        if bytes.len() < pos + size + 2 {
            return None;
        }
        body.extend_from_slice(&bytes[pos..pos + size]);
        pos += size + 2;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The value of header `name` in a response head.
fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `POST /public/x` to `app.test` with the extra header lines `headers` (each ending in CRLF)
/// and `body` after the blank line.
fn post(headers: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!("POST /public/x HTTP/1.1\r\nHost: {HOST}\r\n{headers}\r\n").into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// `POST /public/x` with `Transfer-Encoding: chunked` and the raw chunked `body`.
fn post_chunked(body: &[u8]) -> Vec<u8> {
    post("Transfer-Encoding: chunked\r\n", body)
}

/// `GET path` to `app.test` with the extra header lines `headers` (each ending in CRLF).
fn get(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{headers}\r\n").into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Controls: well-formed input is accepted
// ---------------------------------------------------------------------------------------------

/// The harness itself works, and what a well-behaved client sends (content-length and chunked
/// bodies with extensions and trailers, HTTP/1.0 with Host) is forwarded with its body.
#[tokio::test]
async fn well_formed_requests_are_forwarded() {
    let h = Harness::start().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "content-length body",
            post("Content-Length: 5\r\n", b"hello"),
        ),
        (
            "chunked body",
            post_chunked(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        ),
        (
            "chunked body with extension and trailer",
            post_chunked(b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"),
        ),
        (
            "http/1.0 with host and content-length",
            format!("POST /public/x HTTP/1.0\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello")
                .into_bytes(),
        ),
    ];
    for (name, raw) in cases {
        let before = h.up.hits();
        let ex = exchange(h.addr(), &raw, 1).await;
        let r = ex
            .first_final()
            .unwrap_or_else(|| panic!("{name}: no response, got {}", ex.summary()));
        assert_eq!(r.status, 200, "{name}: {}", r.head);
        assert_eq!(r.body(), "up", "{name}");
        assert_eq!(h.up.hits(), before + 1, "{name}: forwarded once");
        let body = String::from_utf8_lossy(&h.up.last().body).into_owned();
        assert!(body == "hello" || body == "hello world", "{name}: {body:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Ambiguous framing: 400 and close, never forwarded
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn content_length_with_transfer_encoding_is_rejected() {
    let smuggled =
        format!("0\r\n\r\nGET /public/smuggled HTTP/1.1\r\nHost: {HOST}\r\n\r\n").into_bytes();
    let te_then_cl = format!(
        "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
        smuggled.len()
    );
    let cl_then_te = format!(
        "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
        smuggled.len()
    );
    check_cases(
        Want::StatusAndClose(400),
        vec![
            (
                "content-length then chunked",
                post(
                    "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                    b"0\r\n\r\n",
                ),
            ),
            (
                "chunked then content-length: 0",
                post(
                    "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
                    b"5\r\nhello\r\n0\r\n\r\n",
                ),
            ),
            (
                "chunked then content-length, smuggling a second request",
                post(&te_then_cl, &smuggled),
            ),
            (
                "content-length then chunked, smuggling a second request",
                post(&cl_then_te, &smuggled),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn different_content_length_values_are_rejected() {
    check_cases(
        Want::StatusAndClose(400),
        vec![
            (
                "two lines 5 and 6",
                post("Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"),
            ),
            (
                "two lines 6 and 5",
                post("Content-Length: 6\r\nContent-Length: 5\r\n", b"hello!"),
            ),
            (
                "one line \"5, 6\"",
                post("Content-Length: 5, 6\r\n", b"hello!"),
            ),
        ],
    )
    .await;
}

/// The issue says "several ... Content-Length values" are rejected, not only differing ones.
#[tokio::test]
async fn repeated_identical_content_length_is_rejected() {
    check_cases(
        Want::StatusAndClose(400),
        vec![
            (
                "two lines 5 and 5",
                post("Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
            ),
            (
                "one line \"5, 5\"",
                post("Content-Length: 5, 5\r\n", b"hello"),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn malformed_content_length_is_rejected() {
    let cases = [
        "abc",
        "-5",
        "+5",
        "0x5",
        "5.0",
        "5a",
        "5 5",
        "",
        "99999999999999999999999",
    ];
    check_cases(
        Want::StatusAndClose(400),
        cases
            .iter()
            .map(|v| (*v, post(&format!("Content-Length: {v}\r\n"), b"hello")))
            .collect(),
    )
    .await;
}

/// Only a single, final `chunked` is accepted: any other coding, before or instead of it, is
/// refused (the gateway would otherwise forward coded bytes it cannot frame).
#[tokio::test]
async fn transfer_coding_other_than_final_chunked_is_rejected() {
    let body: &[u8] = b"5\r\nhello\r\n0\r\n\r\n";
    let values = [
        "gzip",
        "identity",
        "chunked, gzip",
        "gzip, chunked",
        "chunked, chunked",
        "xchunked",
        "chunkedx",
    ];
    let mut cases: Vec<(&str, Vec<u8>)> = values
        .iter()
        .map(|v| (*v, post(&format!("Transfer-Encoding: {v}\r\n"), body)))
        .collect();
    cases.push((
        "two lines gzip and chunked",
        post(
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            body,
        ),
    ));
    cases.push((
        "two lines chunked and chunked",
        post(
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            body,
        ),
    ));
    check_cases(Want::StatusAndClose(400), cases).await;
}

#[tokio::test]
async fn transfer_encoding_in_http_1_0_is_rejected() {
    let head = format!("POST /public/x HTTP/1.0\r\nHost: {HOST}\r\n");
    let with = |extra: &str| {
        let mut raw = format!("{head}{extra}\r\n").into_bytes();
        raw.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
        raw
    };
    check_cases(
        Want::StatusAndClose(400),
        vec![
            ("chunked", with("Transfer-Encoding: chunked\r\n")),
            (
                "chunked with content-length",
                with("Transfer-Encoding: chunked\r\nContent-Length: 15\r\n"),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn bad_chunk_sizes_are_rejected() {
    check_cases(
        Want::StatusAndClose(400),
        vec![
            ("non-hex", post_chunked(b"zz\r\nhello\r\n0\r\n\r\n")),
            ("0x prefix", post_chunked(b"0x5\r\nhello\r\n0\r\n\r\n")),
            ("negative", post_chunked(b"-5\r\nhello\r\n0\r\n\r\n")),
            ("plus sign", post_chunked(b"+5\r\nhello\r\n0\r\n\r\n")),
            ("leading space", post_chunked(b" 5\r\nhello\r\n0\r\n\r\n")),
            ("empty size", post_chunked(b"\r\nhello\r\n0\r\n\r\n")),
            (
                "overflows u64 (17 hex digits)",
                post_chunked(b"10000000000000005\r\nhello\r\n0\r\n\r\n"),
            ),
            (
                "overflows u64 (all f)",
                post_chunked(b"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn bare_lf_in_chunk_lines_and_trailers_is_rejected() {
    check_cases(
        Want::StatusAndClose(400),
        vec![
            ("size line", post_chunked(b"5\nhello\r\n0\r\n\r\n")),
            (
                "size line with extension",
                post_chunked(b"5;ext=1\nhello\r\n0\r\n\r\n"),
            ),
            ("after chunk data", post_chunked(b"5\r\nhello\n0\r\n\r\n")),
            ("last-chunk line", post_chunked(b"5\r\nhello\r\n0\n\r\n")),
            ("final empty line", post_chunked(b"5\r\nhello\r\n0\r\n\n")),
            (
                "trailer line",
                post_chunked(b"5\r\nhello\r\n0\r\nX-Trailer: 1\n\r\n"),
            ),
            (
                "empty line after a trailer",
                post_chunked(b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\n"),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn chunk_data_not_ending_where_the_size_says_is_rejected() {
    check_cases(
        Want::StatusAndClose(400),
        vec![
            (
                "data shorter than size",
                post_chunked(b"5\r\nhel\r\n0\r\n\r\n"),
            ),
            (
                "data longer than size",
                post_chunked(b"3\r\nhello\r\n0\r\n\r\n"),
            ),
            (
                "data longer than size, smuggling a request",
                post_chunked(
                    format!("1\r\nhGET /public/smuggled HTTP/1.1\r\nHost: {HOST}\r\n\r\n0\r\n\r\n")
                        .as_bytes(),
                ),
            ),
        ],
    )
    .await;
}

/// A chunked body that arrives after its head was forwarded and then breaks its framing gets
/// 400 and a close; the upstream exchange is aborted, and a request hidden in it never reaches
/// any upstream. (hyper itself accepts the bare LF in the trailer case.)
#[tokio::test]
async fn chunked_body_broken_after_the_head_was_forwarded_is_refused() {
    let smuggle = format!("1\r\nhGET /public/smuggled HTTP/1.1\r\nHost: {HOST}\r\n\r\n0\r\n\r\n");
    let bodies = [
        ("data longer than its size", smuggle.as_str()),
        (
            "bare LF in a trailer",
            "5\r\nhello\r\n0\r\nX-Trailer: 1\n\r\n",
        ),
        ("bare LF ending the trailers", "5\r\nhello\r\n0\r\n\n"),
    ];
    for (name, body) in bodies {
        let h = Harness::start().await;
        let mut s = TcpStream::connect(h.addr()).await.unwrap();
        let head = format!(
            "POST /public/stream HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        // Let the head travel on its own, as a streaming client's would.
        within(async {
            while h.up.hits() == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        s.write_all(body.as_bytes()).await.unwrap();
        let ex = read_replies(&mut s, 1).await;
        let status = ex.first_final().map(|r| r.status);
        assert_eq!(status, Some(400), "{name}: {}", ex.summary());
        assert!(ex.closed, "{name}: the connection must be closed");
        tokio::time::sleep(SETTLE).await;
        let smuggled =
            h.up.seen()
                .iter()
                .chain(h.other.seen().iter())
                .filter(|r| r.uri.contains("smuggled"))
                .count();
        assert_eq!(
            smuggled, 0,
            "{name}: the hidden request reached an upstream"
        );
        h.check_still_serving().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Header syntax: 400, never forwarded
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn obsolete_line_folding_is_rejected() {
    check_cases(
        Want::Status(400),
        vec![
            ("space fold", get("/public/x", "X-Folded: a\r\n b\r\n")),
            ("tab fold", get("/public/x", "X-Folded: a\r\n\tb\r\n")),
            (
                "fold of the host line",
                format!("GET /public/x HTTP/1.1\r\nHost: {HOST}\r\n .evil\r\n\r\n").into_bytes(),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn bare_cr_is_rejected() {
    check_cases(
        Want::Status(400),
        vec![
            ("inside a header value", get("/public/x", "X-A: a\rb\r\n")),
            (
                "ending a header line",
                get("/public/x", "X-A: a\rX-B: b\r\n"),
            ),
            (
                "ending the request line",
                format!("GET /public/x HTTP/1.1\rHost: {HOST}\r\n\r\n").into_bytes(),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn nul_is_rejected() {
    check_cases(
        Want::Status(400),
        vec![
            ("in a header value", get("/public/x", "X-A: a\0b\r\n")),
            ("in a header name", get("/public/x", "X-\0A: b\r\n")),
            ("in the path", get("/public/x\0y", "")),
        ],
    )
    .await;
}

#[tokio::test]
async fn whitespace_before_colon_is_rejected() {
    check_cases(
        Want::Status(400),
        vec![
            ("space", get("/public/x", "X-A : b\r\n")),
            ("tab", get("/public/x", "X-A\t: b\r\n")),
            (
                "on content-length",
                post("Content-Length : 5\r\n", b"hello"),
            ),
            (
                "on transfer-encoding",
                post(
                    "Transfer-Encoding : chunked\r\n",
                    b"5\r\nhello\r\n0\r\n\r\n",
                ),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn invalid_token_characters_in_method_or_header_name_are_rejected() {
    let method = |m: &str| format!("{m} /public/x HTTP/1.1\r\nHost: {HOST}\r\n\r\n").into_bytes();
    let name = |n: &str| get("/public/x", &format!("{n}: 1\r\n"));
    check_cases(
        Want::Status(400),
        vec![
            ("method with (", method("G(ET")),
            ("method with \"", method("GET\"")),
            ("method with @", method("G@T")),
            ("method with {", method("GE{T")),
            ("method with non-ascii", method("GÉT")),
            ("header name with (", name("X(A")),
            ("header name with \"", name("X\"A")),
            ("header name with @", name("X@A")),
            ("header name with ,", name("X,A")),
            ("header name with /", name("X/A")),
            ("header name with space", name("X A")),
            ("header name with non-ascii", name("X-É")),
            ("empty header name", name("")),
        ],
    )
    .await;
}

#[tokio::test]
async fn request_without_host_is_rejected() {
    check_cases(
        Want::Status(400),
        vec![
            ("origin-form", b"GET /public/x HTTP/1.1\r\n\r\n".to_vec()),
            (
                "absolute-form without host header",
                format!("GET http://{HOST}/public/x HTTP/1.1\r\n\r\n").into_bytes(),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn two_host_headers_are_rejected() {
    check_cases(
        Want::Status(400),
        vec![
            (
                "same value twice",
                get("/public/x", &format!("Host: {HOST}\r\n")),
            ),
            ("different values", get("/public/x", "Host: evil.test\r\n")),
            (
                "different values, routed host second",
                format!("GET /public/x HTTP/1.1\r\nHost: evil.test\r\nHost: {HOST}\r\n\r\n")
                    .into_bytes(),
            ),
            (
                "two values on one line",
                format!("GET /public/x HTTP/1.1\r\nHost: {HOST}, evil.test\r\n\r\n").into_bytes(),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn http_0_9_is_refused() {
    check_cases(
        Want::Refusal,
        vec![
            ("simple request", b"GET /public/x\r\n".to_vec()),
            (
                "simple request and blank line",
                b"GET /public/x\r\n\r\n".to_vec(),
            ),
            (
                "HTTP/0.9 version token",
                format!("GET /public/x HTTP/0.9\r\nHost: {HOST}\r\n\r\n").into_bytes(),
            ),
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Forwarding: pipelining and Expect
// ---------------------------------------------------------------------------------------------

/// Four pipelined requests in one write (one slow at the upstream, one with a body, one
/// answered by the gateway itself) are answered in order and each forwarded exactly once.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_forwarded_once() {
    let h =
        Harness::start_with(Upstream::new("up").delay_first(1, Duration::from_millis(200))).await;
    let raw = format!(
        "GET /public/1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n\
         POST /other/2 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello\
         GET /admin/3 HTTP/1.1\r\nHost: {HOST}\r\n\r\n\
         GET /public/4 HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
    );
    let ex = exchange(h.addr(), raw.as_bytes(), 4).await;
    let got: Vec<(u16, String)> = ex
        .responses()
        .iter()
        .filter(|r| r.status >= 200)
        .map(|r| (r.status, r.body()))
        .collect();
    let want: Vec<(u16, String)> = [
        (200, "up"),
        (200, "other"),
        (403, "admin-denied"),
        (200, "up"),
    ]
    .iter()
    .map(|(s, b)| (*s, (*b).to_owned()))
    .collect();
    assert_eq!(got, want, "responses out of order or missing: {ex:?}");
    // Give a duplicated or retried forward time to show up.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let up: Vec<String> = h.up.seen().iter().map(|s| s.uri.clone()).collect();
    let other: Vec<(String, String)> = h
        .other
        .seen()
        .iter()
        .map(|s| (s.uri.clone(), String::from_utf8_lossy(&s.body).into_owned()))
        .collect();
    assert_eq!(up, ["/public/1", "/public/4"], "upstream `up` saw");
    assert_eq!(
        other,
        [("/other/2".to_owned(), "hello".to_owned())],
        "upstream `other` saw"
    );
    h.check_still_serving().await.unwrap();
}

/// A client that sends `Expect: 100-continue` and waits gets `100 Continue` (not a deadlock),
/// then its body is forwarded once and the upstream's answer comes back.
#[tokio::test]
async fn expect_100_continue_does_not_deadlock() {
    let h = Harness::start().await;
    let mut s = TcpStream::connect(h.addr()).await.unwrap();
    s.write_all(
        format!(
            "POST /public/expect HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\
             Expect: 100-continue\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // Wait for the interim response only: read whatever arrives within the limit.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + READ_LIMIT;
    while !parse_responses(&got, false)
        .iter()
        .any(|r| r.status == 100 || r.status >= 200)
    {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            Ok(_) => panic!(
                "connection closed while the client waited for 100 Continue: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Err(_) => panic!(
                "no 100 Continue within {READ_LIMIT:?} while the client waits for it \
                 (deadlock); received {:?}, upstream saw {} request(s)",
                String::from_utf8_lossy(&got),
                h.up.hits()
            ),
        }
    }
    let first = parse_responses(&got, false).remove(0);
    assert_eq!(
        first.status, 100,
        "expected 100 Continue first: {}",
        first.head
    );
    s.write_all(b"hello").await.unwrap();
    let rest = read_replies(&mut s, 1).await;
    let mut all = got;
    all.extend_from_slice(&rest.bytes);
    let final_resp = parse_responses(&all, rest.closed)
        .into_iter()
        .find(|r| r.status >= 200)
        .unwrap_or_else(|| panic!("no final response: {:?}", String::from_utf8_lossy(&all)));
    assert_eq!(final_resp.status, 200, "{}", final_resp.head);
    assert_eq!(final_resp.body(), "up");
    assert_eq!(h.up.hits(), 1, "forwarded exactly once");
    assert_eq!(h.up.last().body.as_ref(), b"hello");
    h.check_still_serving().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Path normalisation
// ---------------------------------------------------------------------------------------------

/// `/public/../admin` and its encoded-dot spellings are matched as `/admin` (403 from the
/// `admin` rule), never forwarded by the `/public` prefix rule.
#[tokio::test]
async fn dot_segments_cannot_bypass_a_prefix_rule() {
    let paths = [
        "/public/../admin",
        "/public/../admin/secret",
        "/public/x/../../admin",
        "/public/./../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "/public/%2e./admin",
        "/public/%2e%2e/%2e%2e/admin",
    ];
    check_cases(
        Want::Status(403),
        paths.iter().map(|p| (*p, get(p, ""))).collect(),
    )
    .await;
}

/// Dot segments are removed (`%2e` decoded for that purpose) before matching and forwarding;
/// `%2F`, repeated slashes and the query are left alone.
#[tokio::test]
async fn paths_are_normalised_before_matching_and_forwarding() {
    let cases = [
        ("/public/./a/../b", "/public/b"),
        ("/public/%2e/a", "/public/a"),
        ("/public/a/%2e%2e/b", "/public/b"),
        ("/admin/../public/x", "/public/x"),
        ("/other/../public/y", "/public/y"),
        ("/public/..%2Fadmin", "/public/..%2Fadmin"),
        ("/public/a%2F..%2Fb", "/public/a%2F..%2Fb"),
        ("/public//x", "/public//x"),
        ("/public/x?q=/../admin", "/public/x?q=/../admin"),
    ];
    let results = join_all(cases.iter().map(|(sent, want)| async move {
        let h = Harness::start().await;
        let ex = exchange(h.addr(), &get(sent, ""), 1).await;
        let status = ex.first_final().map(|r| (r.status, r.body()));
        let seen: Vec<String> =
            h.up.seen()
                .iter()
                .chain(h.other.seen().iter())
                .map(|s| s.uri.clone())
                .collect();
        if status == Some((200, "up".to_owned())) && seen == [(*want).to_owned()] {
            Ok(())
        } else {
            Err(format!(
                "  - {sent}: expected 200 from `up` having seen [{want}]; observed: {}, \
                 upstreams saw {seen:?}",
                ex.summary()
            ))
        }
    }));
    let failures: Vec<String> = within(results)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} path(s) not normalised as required:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Size limits
// ---------------------------------------------------------------------------------------------

/// `n` header lines `X-Pad-<i>: <value_len bytes>` (each ending in CRLF).
fn pad_headers(n: usize, value_len: usize) -> String {
    (0..n)
        .map(|i| format!("X-Pad-{i}: {}\r\n", "v".repeat(value_len)))
        .collect()
}

/// Requests just inside every limit are answered (routed to a direct response, so the test
/// upstream's own limits play no part).
#[tokio::test]
async fn requests_within_size_limits_are_served() {
    let h = Harness::start().await;
    let long_path = format!("/direct/{}", "a".repeat(15 * 1024));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("15 KiB request line", get(&long_path, "")),
        // 60 lines of ~1 KiB: a 60 KiB header block.
        (
            "60 KiB header block",
            get("/direct", &pad_headers(60, 1000)),
        ),
        // Host plus 99 others: exactly 100 headers.
        ("100 headers", get("/direct", &pad_headers(99, 1))),
    ];
    for (name, raw) in cases {
        let ex = exchange(h.addr(), &raw, 1).await;
        let r = ex.first_final();
        assert_eq!(
            r.as_ref().map(|r| (r.status, r.body())),
            Some((200, "direct".to_owned())),
            "{name}: observed {}",
            ex.summary()
        );
    }
}

#[tokio::test]
async fn request_line_over_16_kib_is_414() {
    let path = format!("/public/{}", "a".repeat(16 * 1024));
    let query = format!("/public/x?q={}", "a".repeat(16 * 1024));
    check_cases(
        Want::Status(414),
        vec![
            ("16 KiB path", get(&path, "")),
            ("16 KiB query", get(&query, "")),
        ],
    )
    .await;
}

#[tokio::test]
async fn header_block_over_64_kib_is_431() {
    check_cases(
        Want::Status(431),
        vec![
            // 70 lines of ~1 KiB.
            (
                "70 headers of 1 KiB",
                get("/public/x", &pad_headers(70, 1000)),
            ),
            // One 70 KiB value.
            (
                "one 70 KiB header",
                get("/public/x", &pad_headers(1, 70 * 1024)),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn more_than_100_headers_is_431() {
    check_cases(
        Want::Status(431),
        vec![
            // Host plus 100 others: 101 headers.
            ("101 headers", get("/public/x", &pad_headers(100, 1))),
            ("200 headers", get("/public/x", &pad_headers(199, 1))),
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Header read timeout
// ---------------------------------------------------------------------------------------------

/// How long the gateway may take, past the header timeout, to give up on a slow client.
const TIMEOUT_SLACK: Duration = Duration::from_millis(700);

/// Read from `rd` until the gateway closes, for at most `limit`: the bytes and whether it
/// closed.
async fn read_until_close(rd: &mut tokio::net::tcp::OwnedReadHalf, limit: Duration) -> Exchange {
    let deadline = Instant::now() + limit;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Err(_) => {
                return Exchange {
                    bytes,
                    closed: false,
                }
            }
            Ok(Ok(0) | Err(_)) => {
                return Exchange {
                    bytes,
                    closed: true,
                }
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// A client dribbling header lines gets 408 or a close within the header timeout, its request
/// is never forwarded, and another client is served meanwhile.
#[tokio::test]
async fn slowloris_gets_408_or_close_within_header_timeout() {
    let h = Harness::start().await;
    let slow = TcpStream::connect(h.addr()).await.unwrap();
    let (mut rd, mut wr) = slow.into_split();
    let started = Instant::now();
    wr.write_all(format!("GET /public/slow HTTP/1.1\r\nHost: {HOST}\r\n").as_bytes())
        .await
        .unwrap();
    let dribble = tokio::spawn(async move {
        // One header line every 50 ms, for as long as the gateway takes them (up to 3 s).
        while started.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if wr.write_all(b"X-Slow: 1\r\n").await.is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = within_for(
        Duration::from_secs(2),
        Client::new(h.addr(), HOST).try_send("/public/fast"),
    )
    .await
    .expect("another client is served while the slow one dribbles");
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "up"));
    let ex = read_until_close(&mut rd, HEADER_TIMEOUT + TIMEOUT_SLACK).await;
    let took = started.elapsed();
    dribble.abort();
    let status = ex.first_final().map(|r| r.status);
    assert!(
        ex.closed && (ex.bytes.is_empty() || status == Some(408)),
        "slow client not given 408 or a close within {:?}: {}, connection {} after {took:?}",
        HEADER_TIMEOUT + TIMEOUT_SLACK,
        ex.summary(),
        if ex.closed { "closed" } else { "still open" },
    );
    assert_eq!(h.hits(), 1, "only the fast client's request is forwarded");
    h.check_still_serving().await.unwrap();
}

/// How long the kernel holds a connection that sends nothing before handing it to the
/// gateway anyway (TCP_DEFER_ACCEPT of 1 s, counted in SYN-ACK retransmissions: about 1 s
/// on loopback), with room for a slow machine.
const DEFER_LIMIT: Duration = Duration::from_secs(3);

/// A connection that sends nothing at all is closed too, while another client is served:
/// once the kernel stops deferring it, within the header timeout.
#[tokio::test]
async fn silent_connection_is_closed_within_header_timeout() {
    let h = Harness::start().await;
    let silent = TcpStream::connect(h.addr()).await.unwrap();
    let (mut rd, _wr) = silent.into_split();
    let started = Instant::now();
    let reply = within(Client::new(h.addr(), HOST).try_send("/public/fast"))
        .await
        .expect("another client is served while one connection stays silent");
    assert_eq!(reply.status, 200);
    let limit = DEFER_LIMIT + HEADER_TIMEOUT + TIMEOUT_SLACK;
    let ex = read_until_close(&mut rd, limit).await;
    assert!(
        ex.closed && (ex.bytes.is_empty() || ex.first_final().map(|r| r.status) == Some(408)),
        "silent connection not given 408 or a close within {:?}: {}, connection {} after {:?}",
        limit,
        ex.summary(),
        if ex.closed { "closed" } else { "still open" },
        started.elapsed(),
    );
    assert_eq!(h.hits(), 1);
}

// ---------------------------------------------------------------------------------------------
// Between requests: keep-alive connections are parked after each response
// ---------------------------------------------------------------------------------------------

/// A request body the gateway answered without reading (a direct response) is never parsed
/// as requests, even when it arrives after the answer and is made of requests.
#[tokio::test]
async fn an_unread_body_is_never_parsed_as_requests() {
    let h = Harness::start().await;
    let smuggled = format!("GET /public/smuggled HTTP/1.1\r\nHost: {HOST}\r\n\r\n").repeat(2000);
    let mut s = TcpStream::connect(h.addr()).await.unwrap();
    let head = format!(
        "POST /direct HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let first = next_response(&mut s, "the POST").await;
    assert_eq!((first.status, first.body()), (200, "direct".to_owned()));
    // The body, made of requests, arrives right after the answer.
    let _ = s.write_all(smuggled.as_bytes()).await;
    let rest = read_replies(&mut s, 1).await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        h.hits(),
        0,
        "a request inside the body reached the upstream"
    );
    assert!(
        rest.responses().is_empty(),
        "the body was answered as requests: {}",
        rest.summary()
    );
    h.check_still_serving().await.unwrap();
}

/// Read from `s` until one complete final response arrived, and return it at once (no grace
/// period for a close, unlike `read_replies`); panics if `s` closes first.
async fn next_response(s: &mut TcpStream, what: &str) -> Resp {
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    loop {
        let n = within(s.read(&mut buf)).await.unwrap();
        assert!(
            n > 0,
            "{what}: closed; got {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        if let Some(r) = parse_responses(&got, false)
            .into_iter()
            .find(|r| r.status >= 200)
        {
            return r;
        }
    }
}

/// A keep-alive connection serves requests after idle gaps (it is parked between them), with
/// no `Connection: close`, and is closed once it stays idle for the header timeout.
#[tokio::test]
async fn idle_keep_alive_connection_serves_again_then_closes_after_the_header_timeout() {
    let h = Harness::start().await;
    let mut s = TcpStream::connect(h.addr()).await.unwrap();
    for i in 0..3 {
        s.write_all(format!("GET /public/{i} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let r = next_response(&mut s, &format!("request {i}")).await;
        assert_eq!((r.status, r.body()), (200, "up".to_owned()), "request {i}");
        assert_eq!(
            header_value(&r.head, "connection"),
            None,
            "request {i}: {}",
            r.head
        );
        tokio::time::sleep(HEADER_TIMEOUT / 2).await;
    }
    let (mut rd, _wr) = s.into_split();
    let ex = read_until_close(&mut rd, HEADER_TIMEOUT + TIMEOUT_SLACK).await;
    assert!(
        ex.closed && ex.bytes.is_empty(),
        "idle connection: {}",
        ex.summary()
    );
    assert_eq!(h.hits(), 3);
}

/// A client that sends its next request the moment the previous answer is complete never
/// gets `Connection: close` (the next request must not start inside the ending round). Two
/// runtime threads, so the client writes while the gateway is still busy with the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_requests_keep_the_connection() {
    let h = Harness::start().await;
    let mut s = TcpStream::connect(h.addr()).await.unwrap();
    for i in 0..1000 {
        let path = if i % 2 == 0 { "/direct" } else { "/public/x" };
        let req = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let r = next_response(&mut s, &format!("request {i}")).await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(
            header_value(&r.head, "connection"),
            None,
            "request {i}: {}",
            r.head
        );
    }
}

/// `Connection: close` from an HTTP/1.1 client, and HTTP/1.0 without keep-alive, are answered
/// and closed; HTTP/1.0 with `Connection: keep-alive` keeps its connection.
#[tokio::test]
async fn connection_close_and_http_1_0_keep_alive_are_honoured() {
    let h = Harness::start().await;
    for raw in [
        format!("GET /public/c HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"),
        format!("GET /public/c HTTP/1.0\r\nHost: {HOST}\r\n\r\n"),
    ] {
        let ex = exchange(h.addr(), raw.as_bytes(), 1).await;
        let r = ex
            .first_final()
            .unwrap_or_else(|| panic!("{raw:?}: {ex:?}"));
        assert_eq!(r.status, 200, "{raw:?}");
        assert!(ex.closed, "{raw:?}: connection left open");
    }
    let mut s = TcpStream::connect(h.addr()).await.unwrap();
    for i in 0..3 {
        s.write_all(
            format!("GET /public/{i} HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let r = next_response(&mut s, &format!("HTTP/1.0 keep-alive request {i}")).await;
        assert_eq!(
            (r.status, r.body()),
            (200, "up".to_owned()),
            "HTTP/1.0 request {i}: {}",
            r.head
        );
    }
    assert_eq!(h.hits(), 5);
}

// ---------------------------------------------------------------------------------------------
// Never an open proxy
// ---------------------------------------------------------------------------------------------

/// Absolute-form targets, `CONNECT` and Host headers naming a live but undeclared address get
/// a 4xx on the Gateway port and on the mesh (forward-proxy) port, and no connection is ever
/// made to that address. The admin API listens on loopback unless told otherwise.
#[tokio::test]
async fn undeclared_destinations_are_never_contacted() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let bystander = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = bystander.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = bystander.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    let up = Upstream::new("up").run().await;
    let other = Upstream::new("other").run().await;
    let gw = TestGateway::start_with(&config(&up, &other), |b| {
        b.header_read_timeout = HEADER_TIMEOUT;
        b.mesh_port = Some(15001);
    })
    .await;
    let cases = [
        format!("GET http://{target}/ HTTP/1.1\r\nHost: {HOST}\r\n\r\n"),
        format!("GET http://{target}/public/x HTTP/1.1\r\nHost: {target}\r\n\r\n"),
        format!("GET /public/x HTTP/1.1\r\nHost: {target}\r\n\r\n"),
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
        format!("CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n"),
        "GET http://unknown.invalid/ HTTP/1.1\r\nHost: unknown.invalid\r\n\r\n".to_owned(),
    ];
    let mut failures = Vec::new();
    for port in [8080, 15001] {
        for raw in &cases {
            let ex = exchange(gw.port(port), raw.as_bytes(), 1).await;
            let status = ex.first_final().map(|r| r.status);
            if !matches!(status, Some(400..=499)) {
                failures.push(format!("port {port}: {raw:?}: {}", ex.summary()));
            }
        }
    }
    tokio::time::sleep(SETTLE).await;
    assert!(failures.is_empty(), "not refused:\n{}", failures.join("\n"));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "the bystander was contacted"
    );
    assert_eq!(up.hits() + other.hits(), 0, "a declared upstream was used");
    assert!(meshgate::Bootstrap::default().admin_addr.ip().is_loopback());
}
