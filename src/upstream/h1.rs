//! HTTP/1.1 to upstreams, driven inside the request's own task.
//!
//! The request head (and a buffered body) goes out in one write, the response head is parsed
//! from the connection's buffer, and the response body is read by whoever polls it (the
//! downstream connection), which then puts the connection straight back in its pool.
//!
//! Why not hyper's client here: hyper runs each upstream connection as a task of its own fed
//! through a channel, so every request paid a task hand-off each way, the channel, and a
//! second copy of its headers; callgrind put that connection task at 30% of a proxied
//! keep-alive request. Requests that need more (a streamed body, a protocol upgrade,
//! preserved header case) still go through hyper on the same pooled connection (`pool`).
//!
//! Framing follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; chunked when it is
//! the final transfer coding; else Content-Length (all copies must agree); else the body
//! runs to the end of the connection. Interim 1xx responses are skipped.
//!
//! Depends on: tokio, tokio-rustls, httparse, http, `pool` (to give connections back).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::pool::EndpointPool;
use crate::error::{ErrorKind, ProxyError};
use crate::http::framing::{parse_decimal, push_decimal, trim, ConnTokens};
use crate::http::headers::TraceContext;
use crate::http::names::Field;

/// Longest response head (or trailer block) accepted, as Envoy's default 60 KiB.
const MAX_HEAD: usize = 64 * 1024;
/// Most response header fields accepted (Envoy's default `max_headers_count`).
const MAX_HEADERS: usize = 100;
// `parse_head` marks fields in a u128.
const _: () = assert!(MAX_HEADERS <= 128);
/// Longest chunk-size line (size, extensions and CRLF).
const MAX_CHUNK_LINE: usize = 4096;
/// Bodies up to this size are copied behind the head so the request is one write.
const COALESCE: usize = 16 * 1024;

/// The byte stream under an upstream HTTP/1.1 connection.
pub enum UpIo {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS originated by the gateway.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for UpIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpIo::Plain(s) => s.is_write_vectored(),
            UpIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An idle or busy upstream HTTP/1.1 connection with its buffers.
pub struct H1Conn {
    io: UpIo,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// Where each response header's name and value sit in `rbuf`, kept between requests
    /// (a fresh zeroed array per response cost more than the parse).
    idx: Vec<(u32, u32, u32, u32)>,
    /// When the connection was established (`tcp.maxConnectionDuration`).
    born: std::time::Instant,
}

/// The request head as the proxy has it, borrowed.
pub struct RawHead<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Origin-form target.
    pub path_and_query: &'a str,
    /// The `Host` value (replaces any in `headers`).
    pub host: &'a HeaderValue,
    /// Header fields to send, hop-by-hop ones already removed.
    pub headers: &'a HeaderMap,
    /// A trace context the gateway started: its fields are sent, replacing those in
    /// `headers`.
    pub trace: Option<&'a TraceContext>,
    /// The caller writes the response's header fields from [`RawFields`] and edits none of
    /// them: they need not be put in a `HeaderMap`.
    pub raw_response: bool,
}

/// A response's header fields as they arrived, hop-by-hop ones left out: slices of its
/// head, in order, names in their original case. Building a `HeaderMap` (parsing each
/// name, hashing it, and dropping the map later) was a third of a proxied keep-alive
/// request's instructions spent on the upstream's response head, for fields that are only
/// copied to the client.
#[derive(Debug)]
pub struct RawFields {
    head: Bytes,
    idx: Vec<(u32, u32, u32, u32)>,
}

impl RawFields {
    /// Fields parsed from a complete response head (tests of the writers that take them).
    #[cfg(test)]
    pub(crate) fn parse(head: &'static [u8]) -> Self {
        let mut fields = [httparse::EMPTY_HEADER; 16];
        let mut res = httparse::Response::new(&mut fields);
        assert!(res.parse(head).is_ok_and(|s| s.is_complete()));
        let base = head.as_ptr() as usize;
        let idx = res
            .headers
            .iter()
            .map(|f| {
                let n = (f.name.as_ptr() as usize - base) as u32;
                let v = (f.value.as_ptr() as usize - base) as u32;
                (n, n + f.name.len() as u32, v, v + f.value.len() as u32)
            })
            .collect();
        Self {
            head: Bytes::from_static(head),
            idx,
        }
    }

    /// Each field's name and value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone + '_ {
        self.idx.iter().map(|&(ns, ne, vs, ve)| {
            (
                &self.head[ns as usize..ne as usize],
                &self.head[vs as usize..ve as usize],
            )
        })
    }

    /// The first value of the field `name` (lowercase).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// A parsed response head.
struct Head {
    parts: http::response::Parts,
    framing: Framing,
    /// The framing allows the connection to carry another request.
    keep_alive: bool,
    /// The header fields, when they were left out of `parts` (`RawHead::raw_response`).
    fields: Option<RawFields>,
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    Eof,
}

fn protocol(msg: &'static str) -> ProxyError {
    ProxyError::with(ErrorKind::UpstreamReset, msg)
}

impl H1Conn {
    /// A connection over `io`, nothing buffered.
    pub fn new(io: UpIo) -> Self {
        Self {
            io,
            rbuf: BytesMut::new(),
            wbuf: Vec::new(),
            idx: Vec::new(),
            born: std::time::Instant::now(),
        }
    }

    /// When the connection was established.
    pub fn born(&self) -> std::time::Instant {
        self.born
    }

    /// The stream, for handing the connection to hyper (only between exchanges, when
    /// nothing is buffered).
    pub fn into_io(self) -> UpIo {
        self.io
    }

    /// Whether an idle connection can still carry a request: the upstream has neither
    /// closed it nor sent anything unasked. Costs no system call unless the socket has
    /// signalled readability since it was last drained.
    pub fn is_alive(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut rb = ReadBuf::new(&mut byte);
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut rb)
            .is_pending()
    }

    /// Send one request and read the response head. Returns the head, how the body is
    /// framed and whether the connection may carry another request afterwards.
    async fn exchange(
        &mut self,
        head: &RawHead<'_>,
        body: Option<&Bytes>,
    ) -> Result<Head, ProxyError> {
        self.encode(head, body);
        let big = body.filter(|b| b.len() > COALESCE);
        let write = async {
            self.io.write_all(&self.wbuf).await?;
            if let Some(b) = big {
                self.io.write_all(b).await?;
            }
            self.io.flush().await
        };
        write
            .await
            .map_err(|e| ProxyError::with(ErrorKind::UpstreamReset, e))?;
        if self.wbuf.capacity() > 16 * 1024 {
            self.wbuf = Vec::new(); // do not keep a large body's buffer on an idle connection
        }
        loop {
            if let Some(parsed) = self.parse_head(head.method, head.raw_response)? {
                return Ok(parsed);
            }
            if self.rbuf.len() >= MAX_HEAD {
                return Err(protocol("upstream response head too large"));
            }
            self.rbuf.reserve(8 * 1024);
            let n = self
                .io
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|e| ProxyError::with(ErrorKind::UpstreamReset, e))?;
            if n == 0 {
                return Err(protocol("upstream closed before a complete response head"));
            }
        }
    }

    /// The request head (and a small body) into `wbuf`.
    fn encode(&mut self, head: &RawHead<'_>, body: Option<&Bytes>) {
        let w = &mut self.wbuf;
        w.clear();
        w.extend_from_slice(head.method.as_str().as_bytes());
        w.push(b' ');
        w.extend_from_slice(head.path_and_query.as_bytes());
        w.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        w.extend_from_slice(head.host.as_bytes());
        w.extend_from_slice(b"\r\n");
        for (name, value) in head.headers {
            // A buffered body gets its own length below; without one the client's
            // `content-length` (zero) passes through.
            if *name == HOST
                || (body.is_some() && *name == CONTENT_LENGTH)
                || (head.trace.is_some() && TraceContext::sets(name))
            {
                continue;
            }
            w.extend_from_slice(name.as_str().as_bytes());
            w.extend_from_slice(b": ");
            w.extend_from_slice(value.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        if let Some(t) = head.trace {
            for (name, value) in t.fields() {
                w.extend_from_slice(name.as_str().as_bytes());
                w.extend_from_slice(b": ");
                w.extend_from_slice(value);
                w.extend_from_slice(b"\r\n");
            }
        }
        if let Some(b) = body {
            w.extend_from_slice(b"content-length: ");
            push_decimal(w, b.len() as u64);
            w.extend_from_slice(b"\r\n");
        }
        w.extend_from_slice(b"\r\n");
        if let Some(b) = body.filter(|b| b.len() <= COALESCE) {
            w.extend_from_slice(b);
        }
    }

    /// Parse a complete response head from `rbuf`, skipping interim 1xx responses;
    /// `None` when more bytes are needed. With `raw`, the fields stay slices of the head
    /// unless hop-by-hop stripping has work to do on them.
    fn parse_head(&mut self, method: &Method, raw: bool) -> Result<Option<Head>, ProxyError> {
        loop {
            if self.rbuf.is_empty() {
                return Ok(None);
            }
            // Offsets of each name and value in the buffer, so values can be slices of the
            // frozen head rather than copies.
            self.idx.clear();
            let (len, code, version) =
                {
                    let mut fields =
                        [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
                    let mut res = httparse::Response::new(&mut []);
                    let parsed = httparse::ParserConfig::default()
                        .parse_response_with_uninit_headers(&mut res, &self.rbuf, &mut fields);
                    let len = match parsed {
                        Ok(httparse::Status::Complete(n)) => n,
                        Ok(httparse::Status::Partial) => return Ok(None),
                        Err(httparse::Error::TooManyHeaders) => {
                            return Err(protocol("too many upstream response headers"))
                        }
                        Err(_) => return Err(protocol("malformed upstream response head")),
                    };
                    // The head is at most MAX_HEAD bytes (checked before reading more), so
                    // offsets fit in u32.
                    let base = self.rbuf.as_ptr() as usize;
                    for f in res.headers.iter() {
                        let n = (f.name.as_ptr() as usize - base) as u32;
                        let v = (f.value.as_ptr() as usize - base) as u32;
                        self.idx
                            .push((n, n + f.name.len() as u32, v, v + f.value.len() as u32));
                    }
                    (len, res.code.unwrap_or(0), res.version.unwrap_or(1))
                };
            let status =
                StatusCode::from_u16(code).map_err(|_| protocol("invalid upstream status"))?;
            let raw_head = self.rbuf.split_to(len).freeze();
            if status.is_informational() {
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(protocol("upstream switched protocols unasked"));
                }
                continue; // 100 Continue, 103 Early Hints: the final response follows
            }
            let version = if version == 0 {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            };
            // `Connection` is read here; when it carries only the standard tokens, it and
            // `Keep-Alive` (both hop-by-hop) are left out, so the proxy has nothing to
            // strip. One naming other fields is kept for the proxy's stripping to act on,
            // as are the rarer hop-by-hop fields (those take the map).
            let mut conn = ConnTokens::default();
            let mut rare_hop = false;
            let (mut transfer_encoding, mut length, mut lengths) = (None, None, 0);
            // Which fields are `Connection` or `Keep-Alive` (MAX_HEADERS fits in 128 bits).
            let mut hop: u128 = 0;
            for (i, &(ns, ne, vs, ve)) in self.idx.iter().enumerate() {
                match Field::of(&raw_head[ns as usize..ne as usize]) {
                    Field::Connection => {
                        conn.note(&raw_head[vs as usize..ve as usize]);
                        hop |= 1 << i;
                    }
                    Field::KeepAlive => hop |= 1 << i,
                    Field::Te | Field::Upgrade | Field::ProxyConnection => rare_hop = true,
                    Field::TransferEncoding => transfer_encoding = Some((vs, ve)),
                    Field::ContentLength => {
                        length = Some((vs, ve));
                        lengths += 1;
                    }
                    _ => {}
                }
            }
            if conn.other {
                hop = 0; // kept for the proxy's stripping, which also removes the named fields
            }
            let passed = |(i, _): &(usize, &(u32, u32, u32, u32))| hop & (1 << i) == 0;
            let mut parts = http::Response::new(()).into_parts().0;
            parts.status = status;
            parts.version = version;
            // The framing, from the offsets whichever form the fields take.
            let (framing, mut keep_alive) = framing(
                method,
                status,
                version,
                transfer_encoding.map(|(vs, ve)| &raw_head[vs as usize..ve as usize]),
                // Most heads have one length or none: no second pass for those.
                length
                    .filter(|_| lengths == 1)
                    .into_iter()
                    .chain(
                        self.idx[..if lengths > 1 { self.idx.len() } else { 0 }]
                            .iter()
                            .filter(|&&(ns, ne, _, _)| {
                                Field::of(&raw_head[ns as usize..ne as usize])
                                    == Field::ContentLength
                            })
                            .map(|&(_, _, vs, ve)| (vs, ve)),
                    )
                    .map(|(vs, ve)| &raw_head[vs as usize..ve as usize]),
                conn.keep_alive,
            )?;
            let fields = if raw && !conn.other && !rare_hop {
                let mut idx = Vec::with_capacity(self.idx.len());
                idx.extend(self.idx.iter().enumerate().filter(passed).map(|(_, f)| *f));
                Some(RawFields {
                    head: raw_head,
                    idx,
                })
            } else {
                let mut headers = HeaderMap::with_capacity(self.idx.len());
                for (_, &(ns, ne, vs, ve)) in self.idx.iter().enumerate().filter(passed) {
                    let (ns, ne, vs, ve) = (ns as usize, ne as usize, vs as usize, ve as usize);
                    let name = HeaderName::from_bytes(&raw_head[ns..ne])
                        .map_err(|_| protocol("invalid upstream header name"))?;
                    let value = HeaderValue::from_maybe_shared(raw_head.slice(vs..ve))
                        .map_err(|_| protocol("invalid upstream header value"))?;
                    headers.append(name, value);
                }
                parts.headers = headers;
                None
            };
            if conn.close {
                keep_alive = false;
            }
            return Ok(Some(Head {
                parts,
                framing,
                keep_alive,
                fields,
            }));
        }
    }
}

/// The body framing and whether the framing allows reuse (RFC 9112 §6.3, §9.3), from the
/// last `Transfer-Encoding` value (`None`: no such field) and every `Content-Length` value.
fn framing<'a>(
    method: &Method,
    status: StatusCode,
    version: Version,
    transfer_encoding: Option<&[u8]>,
    lengths: impl Iterator<Item = &'a [u8]>,
    keep_alive_token: bool,
) -> Result<(Framing, bool), ProxyError> {
    let mut lengths = lengths.peekable();
    let keep_alive = version == Version::HTTP_11 || keep_alive_token;
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Length(0), keep_alive));
    }
    if let Some(te) = transfer_encoding {
        let chunked = te
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|t| trim(t).eq_ignore_ascii_case(b"chunked"));
        // With both headers the length is ignored and the connection must not be reused.
        let reuse = keep_alive && chunked && lengths.peek().is_none();
        return Ok((
            if chunked {
                Framing::Chunked
            } else {
                Framing::Eof
            },
            reuse,
        ));
    }
    let mut length = None;
    for v in lengths {
        for part in v.split(|&b| b == b',') {
            let n = parse_decimal(trim(part)).ok_or_else(|| protocol("invalid content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(protocol("conflicting content-length"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), keep_alive),
        None => (Framing::Eof, false),
    })
}

/// Where a finished connection goes back to.
struct Release {
    pool: Arc<EndpointPool>,
    served: u32,
}

/// Chunked decoding state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunk),
    Eof,
    Done,
}

/// A response body read from an upstream connection by whoever polls it.
pub struct RawBody {
    conn: Option<H1Conn>,
    state: State,
    release: Option<Release>,
    fields: Option<RawFields>,
}

impl std::fmt::Debug for RawBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawBody")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl RawBody {
    fn new(
        conn: H1Conn,
        framing: Framing,
        release: Option<Release>,
        fields: Option<RawFields>,
    ) -> Self {
        let mut body = Self {
            fields,
            conn: Some(conn),
            state: match framing {
                Framing::Length(n) => State::Length(n),
                Framing::Chunked => State::Chunked(Chunk::Size),
                Framing::Eof => State::Eof,
            },
            release,
        };
        if body.state == State::Length(0) {
            body.done();
        }
        body
    }

    /// The response's header fields, when they were left out of its head.
    pub fn fields(&self) -> Option<&RawFields> {
        self.fields.as_ref()
    }

    /// The body ended cleanly: give the connection back when it can carry another request.
    fn done(&mut self) {
        self.state = State::Done;
        let (Some(conn), Some(r)) = (self.conn.take(), self.release.take()) else {
            return;
        };
        // Bytes beyond the response are a protocol violation: never reuse such a connection.
        if conn.rbuf.is_empty() {
            let mut conn = conn;
            if conn.rbuf.capacity() > 16 * 1024 {
                // A large body's read buffer is not kept on an idle connection.
                conn.rbuf = BytesMut::new();
            }
            r.pool.put_raw(conn, r.served);
        }
    }

    /// Read more from the connection; `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        if conn.rbuf.capacity() - conn.rbuf.len() < 4096 {
            conn.rbuf.reserve(want.clamp(8 * 1024, 64 * 1024));
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.rbuf)
    }

    /// The connection's read buffer; the connection is only gone once the body is done.
    fn buffered(&mut self) -> io::Result<&mut BytesMut> {
        match self.conn.as_mut() {
            Some(c) => Ok(&mut c.rbuf),
            None => Err(invalid("upstream connection already released")),
        }
    }

    /// Take up to `max` buffered bytes as a data frame.
    fn take_data(&mut self, max: u64) -> io::Result<Bytes> {
        let buf = self.buffered()?;
        let n = buf.len().min(usize::try_from(max).unwrap_or(usize::MAX));
        Ok(buf.split_to(n).freeze())
    }
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            let have = this.conn.as_ref().map_or(0, |c| c.rbuf.len());
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Length(0) => {
                    this.done();
                    return Poll::Ready(None);
                }
                State::Length(rem) => {
                    if have > 0 {
                        let data = match this.take_data(rem) {
                            Ok(d) => d,
                            Err(e) => return Poll::Ready(Some(Err(e))),
                        };
                        let left = rem - data.len() as u64;
                        this.state = State::Length(left);
                        if left == 0 {
                            this.done();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    let want = usize::try_from(rem).unwrap_or(usize::MAX);
                    match std::task::ready!(this.poll_fill(cx, want)) {
                        Ok(0) => {
                            return Poll::Ready(Some(Err(invalid(
                                "upstream closed before the end of the body",
                            ))))
                        }
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    }
                }
                State::Eof => {
                    if have > 0 {
                        return Poll::Ready(Some(this.take_data(u64::MAX).map(Frame::data)));
                    }
                    match std::task::ready!(this.poll_fill(cx, 64 * 1024)) {
                        Ok(0) => {
                            this.state = State::Done;
                            this.conn = None;
                            return Poll::Ready(None);
                        }
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    }
                }
                State::Chunked(chunk) => match this.step_chunked(chunk) {
                    Err(e) => return Poll::Ready(Some(Err(e))),
                    Ok(Step::Frame(f)) => return Poll::Ready(Some(Ok(f))),
                    Ok(Step::End) => {
                        this.done();
                        return Poll::Ready(None);
                    }
                    Ok(Step::Again) => {}
                    Ok(Step::More) => match std::task::ready!(this.poll_fill(cx, 16 * 1024)) {
                        Ok(0) => {
                            return Poll::Ready(Some(Err(invalid(
                                "upstream closed inside a chunked body",
                            ))))
                        }
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    },
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// One step of chunked decoding over what is buffered.
enum Step {
    Frame(Frame<Bytes>),
    /// State advanced; step again.
    Again,
    /// Needs more bytes.
    More,
    /// The body ended (trailers, if any, were already returned).
    End,
}

impl RawBody {
    fn step_chunked(&mut self, chunk: Chunk) -> io::Result<Step> {
        let buf = self.buffered()?;
        match chunk {
            Chunk::Size => {
                let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                    return if buf.len() > MAX_CHUNK_LINE {
                        Err(invalid("chunk size line too long"))
                    } else {
                        Ok(Step::More)
                    };
                };
                if lf == 0 || buf[lf - 1] != b'\r' {
                    return Err(invalid("chunk size line without CRLF"));
                }
                let line = &buf[..lf - 1];
                let digits = line
                    .iter()
                    .position(|&b| !b.is_ascii_hexdigit())
                    .unwrap_or(line.len());
                // After the digits only optional whitespace and `;extensions` may follow.
                let rest = trim(&line[digits..]);
                if digits == 0 || digits > 15 || !(rest.is_empty() || rest[0] == b';') {
                    return Err(invalid("invalid chunk size"));
                }
                let size = line[..digits].iter().fold(0u64, |n, &b| {
                    n * 16 + u64::from((b as char).to_digit(16).unwrap_or(0))
                });
                buf.advance(lf + 1);
                self.state = State::Chunked(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                });
                Ok(Step::Again)
            }
            Chunk::Data(rem) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let data = self.take_data(rem)?;
                let left = rem - data.len() as u64;
                self.state = State::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                });
                Ok(Step::Frame(Frame::data(data)))
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Step::More);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(invalid("chunk data not followed by CRLF"));
                }
                buf.advance(2);
                self.state = State::Chunked(Chunk::Size);
                Ok(Step::Again)
            }
            Chunk::Trailers => {
                if buf.len() < 2 {
                    return Ok(Step::More);
                }
                if &buf[..2] == b"\r\n" {
                    buf.advance(2);
                    return Ok(Step::End);
                }
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let (len, trailers) = match httparse::parse_headers(buf, &mut fields) {
                    Ok(httparse::Status::Complete((len, fields))) => {
                        let mut map = HeaderMap::with_capacity(fields.len());
                        for f in fields.iter() {
                            if let (Ok(n), Ok(v)) = (
                                HeaderName::from_bytes(f.name.as_bytes()),
                                HeaderValue::from_bytes(f.value),
                            ) {
                                map.append(n, v);
                            }
                        }
                        (len, map)
                    }
                    Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => {
                        return Ok(Step::More)
                    }
                    _ => return Err(invalid("invalid chunked trailers")),
                };
                buf.advance(len);
                self.done();
                Ok(Step::Frame(Frame::trailers(trailers)))
            }
        }
    }
}

/// A checked-out connection's exchange: send, parse the head, and wrap the body, which
/// returns the connection to `pool` when it ends if it can be reused.
pub async fn send(
    mut conn: H1Conn,
    pool: &Arc<EndpointPool>,
    head: &RawHead<'_>,
    body: Option<&Bytes>,
    served: u32,
    max_per_conn: Option<u32>,
) -> Result<http::Response<RawBody>, ProxyError> {
    let head = conn.exchange(head, body).await?;
    let reuse = head.keep_alive && max_per_conn.is_none_or(|m| served < m);
    let release = reuse.then(|| Release {
        pool: pool.clone(),
        served,
    });
    Ok(http::Response::from_parts(
        head.parts,
        RawBody::new(conn, head.framing, release, head.fields),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::TRANSFER_ENCODING;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn connection_tokens_tell_close_keep_alive_and_named_fields() {
        let mut c = ConnTokens::default();
        // `upgrade` is not plain: the request must keep its `Connection` for the handover.
        assert!(!c.note(b"Keep-Alive, Upgrade"));
        assert!(c.keep_alive && !c.close && !c.other);
        assert!(c.note(b" close ,"));
        assert!(c.close && !c.other);
        assert!(!c.note(b"x-private"));
        assert!(c.other);
        // The one-token values take a shortcut, still case-insensitive.
        let mut c = ConnTokens::default();
        assert!(c.note(b"Keep-Alive") && c.keep_alive && !c.close);
        assert!(c.note(b"CLOSE") && c.close && !c.other);
    }

    #[test]
    fn framing_follows_rfc9112() {
        let get = Method::GET;
        let ok = StatusCode::OK;
        let v11 = Version::HTTP_11;
        let f = |m: &Method, s, v, h: &[(&str, &str)]| {
            let mut conn = ConnTokens::default();
            for (n, val) in h {
                if n.eq_ignore_ascii_case("connection") {
                    conn.note(val.as_bytes());
                }
            }
            let h = map(h);
            let te = h.get_all(TRANSFER_ENCODING).iter().next_back();
            let lengths = h.get_all(CONTENT_LENGTH).iter().map(HeaderValue::as_bytes);
            framing(
                m,
                s,
                v,
                te.map(HeaderValue::as_bytes),
                lengths,
                conn.keep_alive,
            )
            .ok()
        };
        assert_eq!(
            f(&get, ok, v11, &[("content-length", "5")]),
            Some((Framing::Length(5), true))
        );
        assert_eq!(
            f(&Method::HEAD, ok, v11, &[("content-length", "5")]),
            Some((Framing::Length(0), true))
        );
        assert_eq!(
            f(&get, StatusCode::NO_CONTENT, v11, &[]),
            Some((Framing::Length(0), true))
        );
        assert_eq!(
            f(
                &get,
                StatusCode::NOT_MODIFIED,
                v11,
                &[("content-length", "9")]
            ),
            Some((Framing::Length(0), true))
        );
        assert_eq!(
            f(&get, ok, v11, &[("transfer-encoding", "gzip, chunked")]),
            Some((Framing::Chunked, true))
        );
        assert_eq!(
            f(
                &get,
                ok,
                v11,
                &[("transfer-encoding", "chunked"), ("content-length", "3")]
            ),
            Some((Framing::Chunked, false))
        );
        assert_eq!(
            f(&get, ok, v11, &[("transfer-encoding", "gzip")]),
            Some((Framing::Eof, false))
        );
        assert_eq!(f(&get, ok, v11, &[]), Some((Framing::Eof, false)));
        assert_eq!(
            f(&get, ok, v11, &[("content-length", "7, 7")]),
            Some((Framing::Length(7), true))
        );
        assert_eq!(f(&get, ok, v11, &[("content-length", "7, 8")]), None);
        assert_eq!(f(&get, ok, v11, &[("content-length", "-1")]), None);
        assert_eq!(f(&get, ok, v11, &[("content-length", "+1")]), None);
        assert_eq!(
            f(&get, ok, Version::HTTP_10, &[("content-length", "1")]),
            Some((Framing::Length(1), false))
        );
        assert_eq!(
            f(
                &get,
                ok,
                Version::HTTP_10,
                &[("content-length", "1"), ("connection", "Keep-Alive")]
            ),
            Some((Framing::Length(1), true))
        );
    }

    /// A connection to a listener nobody answers, with `head` in its read buffer.
    async fn buffered(head: &[u8]) -> (H1Conn, tokio::net::TcpListener) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let mut conn = H1Conn::new(UpIo::Plain(s));
        conn.rbuf.extend_from_slice(head);
        (conn, listener)
    }

    #[tokio::test]
    async fn raw_fields_carry_what_the_map_would() {
        let heads: [&[u8]; 6] = [
            b"HTTP/1.1 200 OK\r\nServer: up\r\nSet-Cookie: a=1\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nset-cookie: b=2\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nX-A: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nConnection: close\r\nX-B: \t2 \r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n",
        ];
        for head in heads {
            let (mut a, _l1) = buffered(head).await;
            let (mut b, _l2) = buffered(head).await;
            let mapped = a.parse_head(&Method::GET, false).unwrap().unwrap();
            let raw = b.parse_head(&Method::GET, true).unwrap().unwrap();
            assert!(mapped.fields.is_none() && raw.parts.headers.is_empty());
            let fields = raw.fields.as_ref().unwrap();
            let from_map: Vec<(String, Vec<u8>)> = mapped
                .parts
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect();
            let mut from_raw: Vec<(String, Vec<u8>)> = fields
                .iter()
                .map(|(n, v)| (String::from_utf8_lossy(n).to_lowercase(), v.to_vec()))
                .collect();
            // The map groups a name's values at its first occurrence; the raw fields keep
            // the wire order.
            from_raw.sort_by_key(|(n, _)| from_map.iter().position(|(m, _)| m == n));
            assert_eq!(from_raw, from_map, "{}", String::from_utf8_lossy(head));
            assert_eq!(
                (raw.parts.status, raw.parts.version),
                (mapped.parts.status, mapped.parts.version)
            );
            assert_eq!(
                (raw.framing, raw.keep_alive),
                (mapped.framing, mapped.keep_alive),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        assert_eq!(
            (Framing::Chunked, false),
            {
                let (mut c, _l) = buffered(heads[2]).await;
                let h = c.parse_head(&Method::GET, true).unwrap().unwrap();
                (h.framing, h.keep_alive)
            },
            "both framing fields: chunked, never reused"
        );
    }

    #[tokio::test]
    async fn rarer_hop_by_hop_fields_put_the_head_in_a_map() {
        for head in [
            &b"HTTP/1.1 200 OK\r\nConnection: x-private\r\nx-private: 1\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nProxy-Connection: keep-alive\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTE: trailers\r\n\r\n",
        ] {
            let (mut c, _l) = buffered(head).await;
            let h = c.parse_head(&Method::GET, true).unwrap().unwrap();
            assert!(h.fields.is_none(), "{}", String::from_utf8_lossy(head));
            assert!(!h.parts.headers.is_empty());
        }
        let (mut c, _l) = buffered(b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n").await;
        assert!(
            c.parse_head(&Method::GET, true).is_err(),
            "conflicting lengths"
        );
    }

    #[test]
    fn decimals() {
        let mut w = Vec::new();
        push_decimal(&mut w, 0);
        w.push(b' ');
        push_decimal(&mut w, 18_446_744_073_709_551_615);
        assert_eq!(w, b"0 18446744073709551615");
        assert_eq!(parse_decimal(b"0012"), Some(12));
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"99999999999999999999"), None);
    }

    /// A body decoded from `wire` written by a peer in pieces of `step` bytes.
    async fn decode(wire: &'static [u8], step: usize, framing: Framing) -> io::Result<Vec<u8>> {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            for piece in wire.chunks(step) {
                s.write_all(piece).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        });
        let s = TcpStream::connect(addr).await.unwrap();
        let body = RawBody::new(H1Conn::new(UpIo::Plain(s)), framing, None, None);
        let mut out = Vec::new();
        let mut body = std::pin::pin!(body);
        while let Some(f) = body.frame().await {
            if let Ok(d) = f?.into_data() {
                out.extend_from_slice(&d);
            }
        }
        Ok(out)
    }

    #[tokio::test]
    async fn chunked_bodies_decode_across_reads() {
        let wire = b"5;ext=1\r\nhello\r\nA \r\n, world!!!\r\n0\r\nx-t: 1\r\n\r\n";
        for step in [1, 3, 7, wire.len()] {
            assert_eq!(
                decode(wire, step, Framing::Chunked).await.unwrap(),
                b"hello, world!!!"
            );
        }
        assert!(decode(b"5\r\nhelloXX0\r\n\r\n", 4, Framing::Chunked)
            .await
            .is_err());
        assert!(decode(b"zz\r\n", 4, Framing::Chunked).await.is_err());
        assert!(decode(b"5\r\nhel", 4, Framing::Chunked).await.is_err());
        assert_eq!(
            decode(b"abcdef", 2, Framing::Length(4)).await.unwrap(),
            b"abcd"
        );
        assert!(decode(b"ab", 2, Framing::Length(4)).await.is_err());
        assert_eq!(
            decode(b"to the end", 3, Framing::Eof).await.unwrap(),
            b"to the end"
        );
    }
}
