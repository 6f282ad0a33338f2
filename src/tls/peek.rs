//! Reading the ClientHello off a fresh connection without losing it: bytes are read into a
//! bounded buffer under a deadline, parsed with `sni::parse`, and handed back with a
//! `Rewind` IO that replays them, so the connection can go to rustls (termination) or be
//! forwarded byte for byte (passthrough).
//!
//! Policy for an inconclusive peek is fail-closed: a timeout, an oversized or malformed
//! hello, or a connection that closes first is an error and the caller drops it.
//!
//! Depends on: tokio, bytes, `tls::sni`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::sni::{self, ClientHello, Hello};

/// Why no ClientHello could be read.
#[derive(Debug, thiserror::Error)]
pub enum PeekError {
    /// The deadline passed first.
    #[error("client hello timeout")]
    Timeout,
    /// The bytes are not TLS.
    #[error("not TLS")]
    NotTls,
    /// Malformed or larger than the limit.
    #[error("invalid client hello")]
    Invalid,
    /// The peer closed before sending a whole ClientHello.
    #[error("closed before client hello")]
    Closed,
    /// Socket error.
    #[error("read: {0}")]
    Io(#[from] io::Error),
}

impl PeekError {
    /// A bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            PeekError::Timeout => "hello_timeout",
            PeekError::NotTls => "not_tls",
            PeekError::Invalid => "invalid_hello",
            PeekError::Closed => "closed",
            PeekError::Io(_) => "io",
        }
    }
}

/// Read from `io` until a complete ClientHello is buffered, or fail by `deadline`.
pub async fn read_hello<I: AsyncRead + Unpin>(
    io: &mut I,
    deadline: Instant,
) -> Result<(Hello, Bytes), PeekError> {
    let mut buf = BytesMut::with_capacity(1024);
    let read = async {
        loop {
            if buf.capacity() - buf.len() < 512 {
                buf.reserve(4096);
            }
            if io.read_buf(&mut buf).await? == 0 {
                return Err(PeekError::Closed);
            }
            match sni::parse(&buf) {
                ClientHello::NeedMore => continue,
                ClientHello::NotTls => return Err(PeekError::NotTls),
                ClientHello::Invalid => return Err(PeekError::Invalid),
                ClientHello::Hello(h) => return Ok(h),
            }
        }
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(h)) => Ok((h, buf.freeze())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(PeekError::Timeout),
    }
}

/// An IO that yields `prefix` before reading from `inner`; writes go straight to `inner`.
#[derive(Debug)]
pub struct Rewind<I> {
    prefix: Bytes,
    inner: I,
}

impl<I> Rewind<I> {
    /// Replay `prefix`, then continue with `inner`.
    pub fn new(prefix: Bytes, inner: I) -> Self {
        Self { prefix, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn rewind_replays_then_reads_on() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut r = Rewind::new(Bytes::from_static(b"hello"), b);
        let mut s = String::new();
        r.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }

    #[tokio::test]
    async fn garbage_is_not_tls_and_silence_times_out() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(1);
        assert!(matches!(
            read_hello(&mut b, deadline).await,
            Err(PeekError::NotTls)
        ));
        let (_a, mut b) = tokio::io::duplex(64);
        let deadline = Instant::now() + std::time::Duration::from_millis(50);
        assert!(matches!(
            read_hello(&mut b, deadline).await,
            Err(PeekError::Timeout)
        ));
    }
}
