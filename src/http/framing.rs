//! A byte-level HTTP/1.1 framing guard between the socket and hyper. hyper normalises some
//! ambiguous framing before the application sees a request (it drops `Content-Length` when
//! `Transfer-Encoding` is present, merges repeated identical `Content-Length` lines) and
//! accepts bare LF inside chunk trailers; RFC 9112 lets a server do that, but a gateway that
//! forwards such a request disagrees with some upstream about where it ends (request
//! smuggling). The guard watches the request bytes as hyper reads them and refuses these.
//!
//! A violation found while the offending request's head is still in the bytes being handed
//! to hyper is turned into a head hyper itself refuses (its terminating LF becomes NUL), so
//! hyper answers 400 and closes without the request ever being routed; this covers the
//! whole request, body included, when it arrives in one read. A violation found after the
//! head was released (a body that arrives later) fails the read: hyper ends the body with
//! an error, the upstream exchange is aborted, and the client gets 400 and a close.
//!
//! The guard stops watching (and only passes bytes through) for HTTP/2 prior knowledge, and
//! after a request that may switch protocols (`Upgrade`, `CONNECT`), whose later bytes are
//! not HTTP/1.
//!
//! Depends on: tokio.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest request head the guard follows; hyper refuses longer ones itself (431).
const MAX_HEAD: usize = 64 * 1024;

/// Where the scanner is in the request byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading request head lines.
    Head,
    /// A `Content-Length` body with this many bytes left.
    Fixed(u64),
    /// Chunk size digits (value so far, digits seen).
    Size(u64, u8),
    /// Whitespace after the chunk size.
    SizeLws(u64),
    /// A chunk extension, up to its CR.
    Ext(u64),
    /// The LF ending a chunk-size line.
    SizeLf(u64),
    /// Chunk data, this many bytes left.
    Data(u64),
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// The LF ending a trailer line.
    TrailerLf,
    /// The LF of the final empty line.
    EndLf,
    /// Not HTTP/1 framing any more (h2 prior knowledge, upgrade), or already refused.
    Off,
}

/// What the head of the current request said about framing.
#[derive(Debug, Default, Clone, Copy)]
struct Head {
    /// The request line has been seen.
    started: bool,
    /// Number of `Content-Length` field lines.
    cl_lines: u32,
    /// The `Content-Length` value, when it is a single well-formed number.
    cl: Option<u64>,
    /// A `Content-Length` value that is not one plain decimal number.
    cl_malformed: bool,
    /// A `Transfer-Encoding` field was present.
    te: bool,
    /// The last transfer coding named is `chunked`.
    te_final_chunked: bool,
    /// The request may switch protocols after its head.
    switches: bool,
}

/// The framing scanner of one downstream HTTP/1 connection.
#[derive(Debug)]
pub struct Framing {
    state: State,
    head: Head,
    /// A head line split across reads.
    carry: Vec<u8>,
}

impl Default for Framing {
    fn default() -> Self {
        Self::new()
    }
}

/// A framing violation: what was wrong.
pub type Violation = &'static str;

impl Framing {
    /// A scanner at the start of a connection.
    pub fn new() -> Self {
        Self {
            state: State::Head,
            head: Head::default(),
            carry: Vec::new(),
        }
    }

    /// Whether the scanner still follows the stream.
    pub fn active(&self) -> bool {
        self.state != State::Off
    }

    /// Whether everything scanned so far is complete requests (the next byte would start a
    /// new one), while the scanner still follows the stream.
    pub fn between_requests(&self) -> bool {
        self.state == State::Head && !self.head.started && self.carry.is_empty()
    }

    /// Scan bytes just read, in order, before hyper sees them. On a violation whose request
    /// head ends inside `buf`, that head is made invalid in place and `Ok(true)` is returned
    /// (hyper refuses it); on one whose head was released by an earlier read, `Err`.
    pub fn scan(&mut self, buf: &mut [u8]) -> Result<bool, Violation> {
        // Where the current request's head ended inside `buf`, if it did.
        let mut head_end: Option<usize> = None;
        let mut i = 0;
        while i < buf.len() {
            let step = match self.state {
                State::Off => return Ok(false),
                State::Head => self.head_bytes(buf, i, &mut head_end),
                State::Fixed(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(buf.len() - i);
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        self.next_request(&mut head_end)
                    } else {
                        State::Fixed(left)
                    };
                    Ok(i + take)
                }
                State::Data(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(buf.len() - i);
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    Ok(i + take)
                }
                _ => self.chunk_byte(buf[i], &mut head_end).map(|()| i + 1),
            };
            match step {
                Ok(next) => i = next,
                Err(v) => {
                    self.state = State::Off;
                    return match head_end {
                        Some(at) => {
                            buf[at] = 0;
                            tracing::debug!(violation = v, "ambiguous framing: head refused");
                            Ok(true)
                        }
                        None => Err(v),
                    };
                }
            }
        }
        Ok(false)
    }

    /// Consume head bytes from `buf[i..]`; returns where scanning continues.
    fn head_bytes(
        &mut self,
        buf: &[u8],
        i: usize,
        head_end: &mut Option<usize>,
    ) -> Result<usize, Violation> {
        let Some(nl) = buf[i..].iter().position(|&b| b == b'\n') else {
            if self.carry.len() + (buf.len() - i) > MAX_HEAD {
                // hyper answers 431; nothing to follow any more.
                self.state = State::Off;
            } else {
                self.carry.extend_from_slice(&buf[i..]);
            }
            return Ok(buf.len());
        };
        let end = i + nl;
        let mut carry = std::mem::take(&mut self.carry);
        let line: &[u8] = if carry.is_empty() {
            &buf[i..end]
        } else {
            carry.extend_from_slice(&buf[i..end]);
            &carry
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let done = self.head_line(line);
        carry.clear();
        self.carry = carry;
        if done {
            *head_end = Some(end);
            self.end_of_head(head_end)?;
        }
        Ok(end + 1)
    }

    /// Note one head line; true at the empty line ending the head.
    fn head_line(&mut self, line: &[u8]) -> bool {
        if !self.head.started {
            // Empty lines before the request line are tolerated (RFC 9112 §2.2).
            if line.is_empty() {
                return false;
            }
            self.head.started = true;
            if line == b"PRI * HTTP/2.0" {
                // HTTP/2 prior knowledge: hyper serves it, nothing HTTP/1 follows.
                self.state = State::Off;
            } else if line.starts_with(b"CONNECT ") {
                self.head.switches = true;
            }
            return false;
        }
        if line.is_empty() {
            return true;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return false;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            self.head.cl_lines += 1;
            match parse_decimal(value) {
                Some(n) => self.head.cl = Some(n),
                None => self.head.cl_malformed = true,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.head.te = true;
            if let Some(last) = value.rsplit(|&b| b == b',').next() {
                self.head.te_final_chunked = trim(last).eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.head.switches = true;
        }
        false
    }

    /// The head is complete: refuse ambiguous framing, then follow the body.
    fn end_of_head(&mut self, head_end: &mut Option<usize>) -> Result<(), Violation> {
        if self.state == State::Off {
            return Ok(());
        }
        let h = self.head;
        if h.te && h.cl_lines > 0 {
            return Err("content-length with transfer-encoding");
        }
        if h.cl_lines > 1 {
            return Err("several content-length fields");
        }
        if h.cl_malformed {
            return Err("malformed content-length");
        }
        if h.te && !h.te_final_chunked {
            return Err("transfer-encoding not ending in chunked");
        }
        self.state = if h.switches {
            State::Off
        } else if h.te {
            State::Size(0, 0)
        } else {
            match h.cl {
                Some(n) if n > 0 => State::Fixed(n),
                _ => self.next_request(head_end),
            }
        };
        Ok(())
    }

    /// The current request ended: the next one starts with a fresh head.
    fn next_request(&mut self, head_end: &mut Option<usize>) -> State {
        self.head = Head::default();
        *head_end = None;
        State::Head
    }

    /// One byte of chunked framing.
    fn chunk_byte(&mut self, b: u8, head_end: &mut Option<usize>) -> Result<(), Violation> {
        self.state = match (self.state, b) {
            (State::Size(n, d), b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                if d >= 16 {
                    return Err("chunk size overflows");
                }
                let digit = match b {
                    b'0'..=b'9' => b - b'0',
                    b'a'..=b'f' => b - b'a' + 10,
                    _ => b - b'A' + 10,
                };
                State::Size((n << 4) | u64::from(digit), d + 1)
            }
            (State::Size(_, 0), _) => return Err("chunk size is not hex"),
            (State::Size(n, _) | State::SizeLws(n), b' ' | b'\t') => State::SizeLws(n),
            (State::Size(n, _) | State::SizeLws(n) | State::Ext(n), b'\r') => State::SizeLf(n),
            (State::Size(n, _) | State::SizeLws(n), b';') => State::Ext(n),
            (State::Size(..) | State::SizeLws(_), _) => return Err("chunk size is not hex"),
            (State::Ext(_), b'\n') => return Err("bare LF in a chunk-size line"),
            (State::Ext(n), _) => State::Ext(n),
            (State::SizeLf(0), b'\n') => State::TrailerStart,
            (State::SizeLf(n), b'\n') => State::Data(n),
            (State::SizeLf(_), _) => return Err("bare CR in a chunk-size line"),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Size(0, 0),
            (State::DataCr | State::DataLf, _) => {
                return Err("chunk data does not end where its size says")
            }
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::TrailerStart | State::Trailer, b'\n') => {
                return Err("bare LF in the trailer section")
            }
            (State::Trailer, b'\r') => State::TrailerLf,
            (State::TrailerStart | State::Trailer, _) => State::Trailer,
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::EndLf, b'\n') => self.next_request(head_end),
            (State::TrailerLf | State::EndLf, _) => return Err("bare CR in the trailer section"),
            (State::Head | State::Fixed(_) | State::Data(_) | State::Off, _) => self.state,
        };
        Ok(())
    }
}

/// `s` without leading and trailing spaces and tabs.
pub(crate) fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// One plain decimal number (no sign, no list), as `Content-Length` must be.
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// What `Connection` fields say (RFC 9110 §7.6.1).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ConnTokens {
    /// `close`: the connection ends after this message.
    pub(crate) close: bool,
    /// `keep-alive` (what keeps an HTTP/1.0 connection open).
    pub(crate) keep_alive: bool,
    /// A token other than close, keep-alive and upgrade: a field to strip by name.
    pub(crate) other: bool,
}

impl ConnTokens {
    /// Note the tokens of one `Connection` field value; true when it holds only `close`
    /// and `keep-alive` (nothing a proxy strips by name or hands over).
    pub(crate) fn note(&mut self, value: &[u8]) -> bool {
        // The values nearly every message carries, without the split and trims (called for
        // a request and for its upstream response).
        if value.eq_ignore_ascii_case(b"keep-alive") {
            self.keep_alive = true;
            return true;
        }
        if value.eq_ignore_ascii_case(b"close") {
            self.close = true;
            return true;
        }
        let mut plain = true;
        for t in value.split(|&b| b == b',').map(trim) {
            if t.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if t.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if !t.is_empty() {
                plain = false;
                if !t.eq_ignore_ascii_case(b"upgrade") {
                    self.other = true;
                }
            }
        }
        plain
    }

    /// The tokens of every `Connection` field value in `values`.
    pub(crate) fn of<'a>(values: impl Iterator<Item = &'a [u8]>) -> Self {
        let mut c = Self::default();
        for v in values {
            c.note(v);
        }
        c
    }
}

/// Append `n` in decimal.
pub(crate) fn push_decimal(w: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    w.extend_from_slice(&digits[i..]);
}

/// A downstream connection with its request bytes watched by [`Framing`].
#[derive(Debug)]
pub struct Guarded<I> {
    io: I,
    framing: Framing,
    /// Bytes already read that the next reader gets first: what a wait for the next
    /// request read (not scanned yet: scanned when handed to hyper, or parsed by the fast
    /// path, which takes only unambiguous requests, whole), or what a parser handed back.
    unread: Bytes,
    /// How many bytes at the front of `unread` were handed back by a parser, and so were
    /// scanned already.
    scanned: usize,
    /// Something was written (or a write had to wait) since the last completed flush.
    unflushed: bool,
    /// Where `at_rest` is published after every read, write and flush, for an owner that
    /// cannot reach this connection while hyper holds it.
    rest: Option<Arc<AtomicBool>>,
    /// Dropping the stream closes it as well as a shutdown would (see `close_by_drop`).
    drop_closes: bool,
}

/// The most a parked connection reads at once (on the stack, copied out exactly).
const PARKED_READ: usize = 2048;

impl<I> Guarded<I> {
    /// Watch the HTTP/1 requests read from `io`.
    pub fn new(io: I) -> Self {
        Self {
            io,
            framing: Framing::new(),
            unread: Bytes::new(),
            scanned: 0,
            unflushed: false,
            rest: None,
            drop_closes: false,
        }
    }

    /// Declare that dropping the stream ends the connection as well as shutting it down
    /// first would: true of a TCP socket, whose `close` sends the same FIN as `shutdown`
    /// (a system call fewer per connection, as nginx closes), not of TLS, whose shutdown
    /// sends close_notify.
    pub fn close_by_drop(&mut self) {
        self.drop_closes = true;
    }

    /// Whether dropping the stream is how it is closed (`close_by_drop`).
    pub fn drop_closes(&self) -> bool {
        self.drop_closes
    }

    /// Publish `at_rest` to `flag` from now on.
    pub fn report_rest(&mut self, flag: Arc<AtomicBool>) {
        flag.store(self.at_rest(), Relaxed);
        self.rest = Some(flag);
    }

    fn publish(&self) {
        if let Some(flag) = &self.rest {
            flag.store(self.at_rest(), Relaxed);
        }
    }

    /// Whether the connection is at rest: every byte read so far belongs to complete
    /// requests, nothing is waiting to be read again, and everything written was flushed.
    pub fn at_rest(&self) -> bool {
        self.unread.is_empty() && !self.unflushed && self.framing.between_requests()
    }

    /// Bytes waiting to be read again.
    pub fn unread(&self) -> &[u8] {
        &self.unread
    }

    /// The bytes waiting to be read, shared (a parser can keep slices of them).
    pub fn unread_bytes(&self) -> Bytes {
        self.unread.clone()
    }

    /// Drop the first `n` waiting bytes: the fast path parsed them as complete requests with
    /// unambiguous framing, so the scanner, which is between requests, need not see them.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.unread.len());
        self.unread.advance(n);
        self.scanned = self.scanned.saturating_sub(n);
        self.publish();
    }

    /// Put `buffered` (bytes a parser read but did not use) back in front of the stream.
    pub fn rewind(&mut self, buffered: &[u8]) {
        if !buffered.is_empty() {
            self.unread = [buffered, &self.unread[..]].concat().into();
            self.scanned += buffered.len();
        }
    }
}

impl<I: AsyncRead + Unpin> Guarded<I> {
    /// Read and scan the next bytes from the socket into `buf`; true when a head in them
    /// was refused and needs a blank line after it (see `poll_read`).
    fn poll_scanned(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<bool>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        Poll::Ready(self.scan_from(buf, before))
    }

    /// Scan what `buf` holds after `from`; true when a head in it was refused.
    fn scan_from(&mut self, buf: &mut ReadBuf<'_>, from: usize) -> io::Result<bool> {
        if !self.framing.active() {
            return Ok(false);
        }
        self.framing
            .scan(&mut buf.filled_mut()[from..])
            .map_err(|v| {
                tracing::debug!(violation = v, "ambiguous framing in a request body");
                io::Error::new(io::ErrorKind::InvalidData, v)
            })
    }

    /// Wait for the client's next bytes holding no buffer while waiting; what arrives is
    /// kept to be read again (and scanned then). Ready with the number of bytes (0: the
    /// client closed).
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // Uninitialised: zeroing 2 KiB before every read (twice per keep-alive request, the
        // read that finds the next request and the one that finds nothing yet) was 1% of a
        // request's instructions; `ReadBuf` only ever exposes what the read filled.
        let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); PARKED_READ];
        let mut buf = ReadBuf::uninit(&mut stack);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let got = buf.filled();
        if got.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // What was read comes after anything already waiting.
        self.unread = if self.unread.is_empty() {
            Bytes::copy_from_slice(got)
        } else {
            [&self.unread[..], got].concat().into()
        };
        Poll::Ready(Ok(got.len()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            let chunk = self.unread.split_to(n);
            let before = buf.filled().len();
            buf.put_slice(&chunk);
            // Bytes a parser handed back were scanned when it first read them.
            let skip = self.scanned.min(n);
            self.scanned -= skip;
            let refused = self.scan_from(buf, before + skip)?;
            if refused && buf.remaining() >= 4 {
                buf.put_slice(b"\r\n\r\n");
            }
            self.publish();
            return Poll::Ready(Ok(()));
        }
        // After a partial read hyper only parses again once it sees a blank line (a fast
        // completeness check), and a refused head's own blank line was just broken: give
        // it one so it parses, fails and answers 400 at once. The connection is closed
        // after that answer; these bytes are never forwarded.
        let refused = ready!(self.poll_scanned(cx, buf))?;
        if refused && buf.remaining() >= 4 {
            buf.put_slice(b"\r\n\r\n");
        }
        self.publish();
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.unflushed = true;
        self.publish();
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.unflushed = true;
        self.publish();
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        self.unflushed = false;
        self.publish();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scan `input` split at every position in `cuts`; the outcome and the bytes handed on.
    fn run(input: &[u8], cuts: &[usize]) -> (Result<(), Violation>, Vec<u8>) {
        let mut f = Framing::new();
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            let mut part = input[at..cut].to_vec();
            let r = f.scan(&mut part);
            out.extend_from_slice(&part);
            if let Err(v) = r {
                return (Err(v), out);
            }
            at = cut;
        }
        (Ok(()), out)
    }

    fn poisoned(out: &[u8]) -> bool {
        out.contains(&0)
    }

    const POST: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\n";

    fn req(headers: &str, body: &[u8]) -> Vec<u8> {
        let mut v = POST.to_vec();
        v.extend_from_slice(headers.as_bytes());
        v.extend_from_slice(b"\r\n");
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn clean_requests_pass_untouched_at_any_split() {
        let mut input = req("Content-Length: 5\r\n", b"hello");
        input.extend(req(
            "Transfer-Encoding: chunked\r\n",
            b"5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
        ));
        input.extend_from_slice(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        for cut in 0..input.len() {
            let (r, out) = run(&input, &[cut]);
            assert_eq!(r, Ok(()), "cut at {cut}");
            assert_eq!(out, input, "cut at {cut}");
        }
    }

    #[test]
    fn ambiguous_heads_are_poisoned_at_any_split() {
        let bad = [
            req("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b""),
            req("Transfer-Encoding: chunked\r\nContent-Length: 0\r\n", b""),
            req("Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
            req("Content-Length: 5, 5\r\n", b"hello"),
            req("Content-Length: +5\r\n", b"hello"),
            req("Transfer-Encoding: chunked, gzip\r\n", b""),
        ];
        for input in bad {
            for cut in 0..input.len() {
                let (r, out) = run(&input, &[cut]);
                assert_eq!(r, Ok(()));
                assert!(
                    poisoned(&out),
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }

    #[test]
    fn bad_chunked_bodies_poison_the_head_when_read_with_it() {
        let bodies: [&[u8]; 8] = [
            b"5\nhello\r\n0\r\n\r\n",
            b"5;e=1\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhel\r\n0\r\n\r\n",
            b"0\r\nX-T: 1\n\r\n",
            b"0\r\nX-T: 1\r\n\n",
            b"0\r\n\n",
            b"10000000000000005\r\n",
        ];
        for body in bodies {
            let input = req("Transfer-Encoding: chunked\r\n", body);
            let (r, out) = run(&input, &[]);
            assert_eq!(r, Ok(()));
            assert!(poisoned(&out), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn bad_chunked_bodies_fail_the_read_after_the_head_was_released() {
        let input = req("Transfer-Encoding: chunked\r\n", b"0\r\nX-T: 1\n\r\n");
        let (r, out) = run(&input, &[POST.len() + 30]);
        assert!(r.is_err());
        assert!(!poisoned(&out));
    }

    #[test]
    fn pipelined_requests_after_a_body_are_followed() {
        let mut input = req("Content-Length: 3\r\n", b"abc");
        input.extend(req("Content-Length: 1\r\nContent-Length: 1\r\n", b"x"));
        let (_, out) = run(&input, &[]);
        // The first request is untouched, the second refused.
        let first = req("Content-Length: 3\r\n", b"abc");
        assert_eq!(&out[..first.len()], &first[..]);
        assert!(poisoned(&out[first.len()..]));
    }

    #[test]
    fn h2_prior_knowledge_and_upgrades_are_not_followed() {
        let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0, 0x0a, 0x0a]);
        assert_eq!(run(&h2, &[]), (Ok(()), h2.clone()));
        let mut ws =
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
                .to_vec();
        ws.extend_from_slice(b"\x81\x05hello\n\n\n");
        assert_eq!(run(&ws, &[]), (Ok(()), ws.clone()));
    }

    #[test]
    fn only_complete_requests_are_between_requests() {
        let mut input = req("Content-Length: 5\r\n", b"hello");
        let first = input.len();
        input.extend(req(
            "Transfer-Encoding: chunked\r\n",
            b"3\r\nabc\r\n0\r\n\r\n",
        ));
        let second = input.len();
        input.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let ends = [first, second, input.len()];
        for at in 1..=input.len() {
            let mut f = Framing::new();
            assert_eq!(f.scan(&mut input[..at].to_vec()), Ok(false));
            assert_eq!(f.between_requests(), ends.contains(&at), "after {at} bytes");
        }
    }

    /// Read everything from `g` in reads of at most `step` bytes.
    async fn read_all<I: AsyncRead + Unpin>(g: &mut Guarded<I>, step: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt as _;
        let mut out = Vec::new();
        let mut buf = vec![0u8; step];
        loop {
            let n = g.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn at_rest_only_between_requests_and_rewound_bytes_come_first() {
        let mut input = req("Content-Length: 5\r\n", b"hello");
        let first = input.len();
        input.extend_from_slice(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut g = Guarded::new(std::io::Cursor::new(input[..first - 2].to_vec()));
        read_all(&mut g, 7).await;
        // Inside the body.
        assert!(!g.at_rest());
        let mut g = Guarded::new(std::io::Cursor::new(input.clone()));
        assert_eq!(read_all(&mut g, 7).await, input);
        assert!(g.at_rest());
        // Bytes handed back are read again, first, and the connection is not at rest
        // while they wait.
        g.rewind(&input[first..]);
        assert!(!g.at_rest());
        assert_eq!(g.unread(), &input[first..]);
        assert_eq!(read_all(&mut g, 4).await, &input[first..]);
        assert!(g.at_rest());
    }

    #[tokio::test]
    async fn a_parked_wait_keeps_what_arrives_and_sees_a_close() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        let mut g = Guarded::new(std::io::Cursor::new(input.clone()));
        let n = std::future::poll_fn(|cx| g.poll_fill(cx))
            .await
            .unwrap_or(0);
        assert_eq!(n, input.len());
        assert_eq!(g.unread(), &input[..]);
        assert_eq!(read_all(&mut g, 64).await, input);
        assert_eq!(
            std::future::poll_fn(|cx| g.poll_fill(cx))
                .await
                .unwrap_or(9),
            0
        );
        // The request was scanned once, when read from the wait's bytes: it ends where it
        // should.
        assert!(g.at_rest());
    }

    #[test]
    fn decimal_parsing_is_strict() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"123"), Some(123));
        for bad in [
            &b""[..],
            b"-1",
            b"1 2",
            b"0x1",
            b"99999999999999999999",
            b"1,1",
        ] {
            assert_eq!(parse_decimal(bad), None);
        }
    }
}
