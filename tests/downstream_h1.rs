//! The downstream HTTP/1.1 fast path (src/http/h1) as a client sees it on the wire: raw
//! client sockets against the gateway, a scripted raw TCP upstream behind it. Covers
//! pipelining across the fast path and hyper on one connection, `Connection: close`, HEAD
//! framing, streamed responses, upstream bodies cut short, chunked trailers and `date`.
//!
//! Every test starts its own gateway and upstream on ephemeral loopback ports, and every
//! wait is bounded.

// Tests (and the shared harness they include) fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::gateway::http_gateway;
use support::TestGateway;

const HOST: &str = "app.test";

/// Bound on every single wait in these tests.
const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// The scripted upstream
// ---------------------------------------------------------------------------------------

/// One thing the scripted upstream does while answering a request.
#[derive(Clone, Copy)]
enum Step {
    /// Write these bytes (and flush).
    Write(&'static [u8]),
    /// Wait this many milliseconds.
    Sleep(u64),
    /// Close the connection.
    Close,
}

/// A request as the upstream received it.
#[derive(Debug, Clone)]
struct Seen {
    /// The head, up to and including the empty line.
    head: String,
    /// The body, de-chunked when it came chunked.
    body: Vec<u8>,
}

/// A raw TCP upstream answering request `i` (counted over all its connections) with
/// `script[min(i, len-1)]`.
struct Scripted {
    port: u16,
    requests: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    async fn start(script: Vec<Vec<Step>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let r = requests.clone();
        let script = Arc::new(script);
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve_upstream(s, r.clone(), script.clone()));
            }
        });
        Self { port, requests }
    }

    fn seen(&self) -> Vec<Seen> {
        self.requests.lock().unwrap().clone()
    }
}

/// Serve requests on one upstream connection until it closes or a script closes it.
async fn serve_upstream(
    mut s: TcpStream,
    requests: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Vec<Vec<Step>>>,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !read_more(&mut s, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let chunked = header_values(&head, "transfer-encoding")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("chunked"));
        let (used, body) = if chunked {
            loop {
                if let Some((used, body)) = dechunk(&buf[head_end..]) {
                    break (used, body);
                }
                if !read_more(&mut s, &mut buf).await {
                    return;
                }
            }
        } else {
            let len = header_values(&head, "content-length")
                .first()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < head_end + len {
                if !read_more(&mut s, &mut buf).await {
                    return;
                }
            }
            (len, buf[head_end..head_end + len].to_vec())
        };
        buf.drain(..head_end + used);
        let i = {
            let mut r = requests.lock().unwrap();
            r.push(Seen { head, body });
            r.len() - 1
        };
        for step in &script[i.min(script.len() - 1)] {
            match *step {
                Step::Write(bytes) => {
                    if s.write_all(bytes).await.is_err() || s.flush().await.is_err() {
                        return;
                    }
                }
                Step::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                Step::Close => return,
            }
        }
    }
}

/// Read more bytes into `buf`; false when the peer closed (or failed).
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// A complete chunked body at the start of `buf`: the bytes it takes (trailers and final
/// empty line included) and its data. `None` when incomplete.
fn dechunk(buf: &[u8]) -> Option<(usize, Vec<u8>)> {
    let (used, body, _) = dechunk_with_trailers(buf)?;
    Some((used, body))
}

/// `dechunk`, also returning the raw trailer section (field lines, without the final empty
/// line).
fn dechunk_with_trailers(buf: &[u8]) -> Option<(usize, Vec<u8>, String)> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let line_end = pos + find(&buf[pos..], b"\r\n")?;
        let line = std::str::from_utf8(&buf[pos..line_end]).unwrap();
        let size_text = line.split(';').next().unwrap().trim();
        let size = usize::from_str_radix(size_text, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        pos = line_end + 2;
        if size == 0 {
            // Trailer fields, then the empty line.
            let start = pos;
            loop {
                let end = pos + find(&buf[pos..], b"\r\n")?;
                if end == pos {
                    let trailers = String::from_utf8_lossy(&buf[start..pos]).into_owned();
                    return Some((end + 2, body, trailers));
                }
                pos = end + 2;
            }
        }
        if buf.len() < pos + size + 2 {
            return None;
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        assert_eq!(
            &buf[pos + size..pos + size + 2],
            b"\r\n",
            "chunk not ended by CRLF"
        );
        pos += size + 2;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The values of every `name` field in `head` (a raw head; names compared ignoring case).
fn header_values(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
        .collect()
}

async fn gateway(up: &Scripted) -> TestGateway {
    let yaml = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: app\nspec:\n  hosts: [app.svc]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: app\nspec:\n  hosts: [{HOST}]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {{host: app.svc}}\n    retries: {{attempts: 0}}\n",
        http_gateway("gw", 8080, &[HOST]),
        up.port
    );
    TestGateway::start(&yaml).await
}

/// A scripted answer: write `bytes`, keep the connection.
fn reply(bytes: &'static [u8]) -> Vec<Step> {
    vec![Step::Write(bytes)]
}

// ---------------------------------------------------------------------------------------
// The raw client
// ---------------------------------------------------------------------------------------

/// A response as read off the wire.
#[derive(Debug)]
struct Resp {
    status: u16,
    /// The raw head, status line to the empty line.
    head: String,
    /// The body (de-chunked).
    body: Vec<u8>,
    /// The raw trailer section of a chunked body.
    trailers: String,
}

impl Resp {
    fn headers(&self, name: &str) -> Vec<String> {
        header_values(&self.head, name)
    }

    /// The single value of `name`; fails when it is absent or repeated.
    fn header(&self, name: &str) -> String {
        let v = self.headers(name);
        assert_eq!(v.len(), 1, "want exactly one {name}:\n{}", self.head);
        v[0].clone()
    }

    fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw client connection and the bytes read but not yet consumed.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        let s = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .unwrap();
        s.set_nodelay(true).unwrap();
        Self { s, buf: Vec::new() }
    }

    async fn send(&mut self, raw: &[u8]) {
        tokio::time::timeout(WAIT, self.s.write_all(raw))
            .await
            .expect("write timed out")
            .unwrap();
    }

    /// Read more bytes (bounded by `WAIT`); the count, 0 once the gateway closed (or reset).
    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        let read = tokio::time::timeout(WAIT, self.s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no bytes within {WAIT:?}; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                )
            });
        let n = read.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Read until `buf` holds a complete head; take it (with its status).
    async fn read_head(&mut self) -> (u16, String) {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill().await > 0,
                "closed before a response head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let status = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP/1.1 status line: {head:?}"));
        (status, head)
    }

    /// Read one whole response; `bodiless`: it answers a HEAD (no body follows).
    async fn read_response(&mut self, bodiless: bool) -> Resp {
        let (status, head) = self.read_head().await;
        let mut resp = Resp {
            status,
            head,
            body: Vec::new(),
            trailers: String::new(),
        };
        if bodiless || status == 204 || status == 304 || (100..200).contains(&status) {
            return resp;
        }
        let te = resp.headers("transfer-encoding");
        if !te.is_empty() {
            assert_eq!(te, ["chunked"], "{}", resp.head);
            assert!(
                resp.headers("content-length").is_empty(),
                "both framings: {}",
                resp.head
            );
            loop {
                if let Some((used, body, trailers)) = dechunk_with_trailers(&self.buf) {
                    self.buf.drain(..used);
                    resp.body = body;
                    resp.trailers = trailers;
                    return resp;
                }
                assert!(
                    self.fill().await > 0,
                    "closed inside a chunked body: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
        let len: usize = resp
            .header("content-length")
            .parse()
            .unwrap_or_else(|_| panic!("bad content-length: {}", resp.head));
        while self.buf.len() < len {
            assert!(
                self.fill().await > 0,
                "closed after {} of {len} body bytes",
                self.buf.len()
            );
        }
        resp.body = self.buf.drain(..len).collect();
        resp
    }

    /// Read until the gateway closes the connection (bounded: fails after `WAIT` without
    /// the close); everything read after what was already consumed.
    async fn read_until_closed(&mut self) -> Vec<u8> {
        while self.fill().await > 0 {}
        std::mem::take(&mut self.buf)
    }

    /// True when the gateway neither sends anything nor closes for `d`.
    async fn quiet_for(&mut self, d: Duration) -> bool {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(d, self.s.read(&mut chunk)).await {
            Err(_) => true,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                false
            }
            Ok(Err(_)) => false,
        }
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n")
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn pipelined_requests_alternate_between_fast_path_and_hyper_on_one_connection() {
    let up = Scripted::start(vec![
        reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nr1"),
        reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nr2"),
        reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nr3"),
        reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nr4"),
        reply(b"HTTP/1.1 299 Whatever\r\ncontent-length: 2\r\n\r\nr5"),
        reply(b"HTTP/1.1 299 Whatever\r\ncontent-length: 2\r\n\r\nr6"),
    ])
    .await;
    let gw = gateway(&up).await;
    let mut c = Conn::open(gw.port(8080)).await;
    // Fast path, fast path (whole Content-Length body), hyper (chunked), then a GET that
    // hyper (now owning the connection) serves from its buffer.
    let all = format!(
        "{}POST /2 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello\
         POST /3 HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nchunk\r\n3\r\ned!\r\n0\r\n\r\n\
         {}",
        get("/1"),
        get("/4")
    );
    c.send(all.as_bytes()).await;
    for i in 1..=4 {
        let r = c.read_response(false).await;
        assert_eq!(r.status, 200, "response {i}: {}", r.head);
        assert_eq!(r.body_str(), format!("r{i}"), "response {i}: {}", r.head);
        assert!(r.headers("connection").is_empty(), "{}", r.head);
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 4, "{seen:?}");
    for (s, (line, body)) in seen.iter().zip([
        ("GET /1 HTTP/1.1\r\n", ""),
        ("POST /2 HTTP/1.1\r\n", "hello"),
        ("POST /3 HTTP/1.1\r\n", "chunked!"),
        ("GET /4 HTTP/1.1\r\n", ""),
    ]) {
        assert!(s.head.starts_with(line), "{:?} is not {line:?}", s.head);
        assert_eq!(String::from_utf8_lossy(&s.body), body, "{}", s.head);
    }
    // Which code wrote a response shows in the reason phrase of a status code without a
    // canonical one: the fast path always writes "Unknown", hyper writes the upstream's
    // phrase (or "<none>").
    // Right away, hyper still holds the connection (it parks only after a whole idle tick)...
    c.send(get("/5").as_bytes()).await;
    let r = c.read_response(false).await;
    assert_eq!(r.body_str(), "r5", "{}", r.head);
    assert!(
        r.head.starts_with("HTTP/1.1 299 ") && !r.head.starts_with("HTTP/1.1 299 Unknown\r\n"),
        "not served by hyper: {}",
        r.head
    );
    // ...nothing more arrives and the connection stays open while hyper goes idle and gives
    // the connection back (parked after one to two 1 s ticks)...
    assert!(
        c.quiet_for(Duration::from_millis(2500)).await,
        "unexpected bytes or close: {:?}",
        String::from_utf8_lossy(&c.buf)
    );
    // ...and the next request on it is served by the fast path again.
    c.send(get("/6").as_bytes()).await;
    let r = c.read_response(false).await;
    assert_eq!(r.body_str(), "r6", "{}", r.head);
    assert!(
        r.head.starts_with("HTTP/1.1 299 Unknown\r\n"),
        "not served by the fast path: {}",
        r.head
    );
    let seen = up.seen();
    assert!(seen[4].head.starts_with("GET /5 HTTP/1.1\r\n"), "{seen:?}");
    assert!(seen[5].head.starts_with("GET /6 HTTP/1.1\r\n"), "{seen:?}");
}

#[tokio::test]
async fn connection_close_from_the_client_is_announced_once_and_obeyed() {
    let up = Scripted::start(vec![reply(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    )])
    .await;
    let gw = gateway(&up).await;
    let mut c = Conn::open(gw.port(8080)).await;
    // A second request pipelined behind the close must not be served.
    let raw = format!(
        "GET /a HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n{}",
        get("/b")
    );
    c.send(raw.as_bytes()).await;
    let r = c.read_response(false).await;
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok"), "{}", r.head);
    assert_eq!(r.headers("connection"), ["close"], "{}", r.head);
    assert_eq!(
        r.head.to_ascii_lowercase().matches("connection:").count(),
        1,
        "{}",
        r.head
    );
    let rest = c.read_until_closed().await;
    assert!(
        rest.is_empty(),
        "bytes after the last response: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(up.seen().len(), 1, "served after Connection: close");
}

#[tokio::test]
async fn head_keeps_the_upstream_length_and_sends_no_body() {
    let up = Scripted::start(vec![
        reply(b"HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n"),
        reply(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nafter"),
    ])
    .await;
    let gw = gateway(&up).await;
    let mut c = Conn::open(gw.port(8080)).await;
    c.send(format!("HEAD /h HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await;
    let r = c.read_response(true).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("content-length"), "42", "{}", r.head);
    assert!(r.headers("transfer-encoding").is_empty(), "{}", r.head);
    // No body: nothing follows the head.
    assert!(
        c.quiet_for(Duration::from_millis(200)).await,
        "bytes after a HEAD response: {:?}",
        String::from_utf8_lossy(&c.buf)
    );
    c.send(get("/g").as_bytes()).await;
    let r = c.read_response(false).await;
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "after"),
        "{}",
        r.head
    );
    let seen = up.seen();
    assert!(seen[0].head.starts_with("HEAD /h HTTP/1.1\r\n"), "{seen:?}");
    assert!(seen[1].head.starts_with("GET /g HTTP/1.1\r\n"), "{seen:?}");
}

#[tokio::test]
async fn a_streamed_response_reaches_the_client_before_it_ends() {
    let up = Scripted::start(vec![vec![
        Step::Write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n"),
        Step::Sleep(1000),
        Step::Write(b"6\r\nsecond\r\n0\r\n\r\n"),
    ]])
    .await;
    let gw = gateway(&up).await;
    let mut c = Conn::open(gw.port(8080)).await;
    let sent = Instant::now();
    c.send(get("/stream").as_bytes()).await;
    let (status, head) = c.read_head().await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(header_values(&head, "transfer-encoding"), ["chunked"]);
    while find(&c.buf, b"first").is_none() {
        assert!(c.fill().await > 0, "closed before the first chunk");
    }
    let first = sent.elapsed();
    assert!(
        first < Duration::from_millis(500),
        "first chunk only after {first:?}"
    );
    assert!(
        find(&c.buf, b"second").is_none(),
        "the second chunk came with the first"
    );
    // The rest follows once the upstream sends it, and the body ends properly.
    let (body, trailers) = loop {
        if let Some((used, body, trailers)) = dechunk_with_trailers(&c.buf) {
            c.buf.drain(..used);
            break (body, trailers);
        }
        assert!(c.fill().await > 0, "closed inside the streamed body");
    };
    assert!(
        sent.elapsed() >= Duration::from_millis(900),
        "the upstream's pause did not happen"
    );
    assert_eq!(String::from_utf8_lossy(&body), "firstsecond");
    assert!(trailers.is_empty(), "{trailers:?}");
    // Still usable.
    c.send(get("/again").as_bytes()).await;
    let r = c.read_response(false).await;
    assert_eq!(r.status, 200, "{}", r.head);
}

#[tokio::test]
async fn a_body_cut_short_upstream_closes_the_client_connection() {
    let up = Scripted::start(vec![vec![
        Step::Write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"),
        Step::Close,
    ]])
    .await;
    let gw = gateway(&up).await;
    let mut c = Conn::open(gw.port(8080)).await;
    let sent = Instant::now();
    c.send(get("/cut").as_bytes()).await;
    // `read_until_closed` fails the test if the close does not come within WAIT.
    let got = c.read_until_closed().await;
    assert!(sent.elapsed() < WAIT);
    // Closing before any byte of the response is fine too (hyper does that); what was sent
    // must not look like a complete response.
    if !got.is_empty() {
        let text = String::from_utf8_lossy(&got);
        let end =
            find(&got, b"\r\n\r\n").unwrap_or_else(|| panic!("cut inside the head: {text:?}"));
        let head = String::from_utf8_lossy(&got[..end + 4]);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
        assert_eq!(header_values(&head, "content-length"), ["10"], "{text:?}");
        assert!(
            header_values(&head, "transfer-encoding").is_empty(),
            "{text:?}"
        );
        let body = &got[end + 4..];
        assert!(body.len() < 10, "a complete-looking body: {text:?}");
        assert!(b"hello".starts_with(body), "unexpected bytes: {text:?}");
    }
}

#[tokio::test]
async fn only_announced_trailers_are_forwarded_in_a_chunked_body() {
    let up = Scripted::start(vec![reply(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n4\r\nbody\r\n0\r\nx-checksum: abc\r\nx-other: no\r\n\r\n",
    )])
    .await;
    let gw = gateway(&up).await;
    let mut c = Conn::open(gw.port(8080)).await;
    c.send(format!("GET /t HTTP/1.1\r\nHost: {HOST}\r\nTE: trailers\r\n\r\n").as_bytes())
        .await;
    let r = c.read_response(false).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("transfer-encoding"), "chunked", "{}", r.head);
    assert_eq!(r.header("trailer"), "x-checksum", "{}", r.head);
    assert_eq!(r.body_str(), "body");
    assert_eq!(
        header_values(&format!("\r\n{}", r.trailers), "x-checksum"),
        ["abc"]
    );
    assert!(
        !r.trailers.to_ascii_lowercase().contains("x-other"),
        "unannounced trailer forwarded: {:?}",
        r.trailers
    );
    // The body ended cleanly: the connection serves the next request.
    c.send(get("/next").as_bytes()).await;
    let r = c.read_response(false).await;
    assert_eq!(r.status, 200, "{}", r.head);
}

#[tokio::test]
async fn date_is_added_once_and_an_upstream_date_is_kept() {
    let up = Scripted::start(vec![
        reply(b"HTTP/1.1 200 OK\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 2\r\n\r\nd1"),
        reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nd2"),
    ])
    .await;
    let gw = gateway(&up).await;
    let mut c = Conn::open(gw.port(8080)).await;
    // The gateway's own answer: no route for this host.
    c.send(b"GET /x HTTP/1.1\r\nHost: unknown.test\r\n\r\n")
        .await;
    let r = c.read_response(false).await;
    assert_eq!(r.status, 404, "{}", r.head);
    let date = r.header("date");
    assert!(
        date.len() == 29 && date.ends_with(" GMT"),
        "not an IMF-fixdate: {date:?}"
    );
    assert!(up.seen().is_empty());
    // The upstream's own date is passed, not doubled.
    c.send(get("/with-date").as_bytes()).await;
    let r = c.read_response(false).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("date"), "Sun, 06 Nov 1994 08:49:37 GMT");
    // None from the upstream: the gateway adds one.
    c.send(get("/without-date").as_bytes()).await;
    let r = c.read_response(false).await;
    assert_eq!(r.status, 200, "{}", r.head);
    let date = r.header("date");
    assert!(
        date.len() == 29 && date.ends_with(" GMT"),
        "not an IMF-fixdate: {date:?}"
    );
}
