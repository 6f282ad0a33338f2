//! A plain HTTP connection's socket, which turns Nagle's algorithm off just before its
//! second write rather than at accept. Nagle holds a small segment back only while earlier
//! data is unacknowledged, so a connection's first write is never delayed by it: a
//! connection that answers one request and closes (`Connection: close`) then never needs
//! the `setsockopt` at all, a system call fewer per connection (nginx likewise sets
//! `TCP_NODELAY` only on keep-alive connections).
//!
//! Depends on: tokio.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream that sets `TCP_NODELAY` before its second write.
#[derive(Debug)]
pub(super) struct LateNoDelay {
    tcp: TcpStream,
    /// Writes attempted so far, counted up to 2.
    writes: u8,
}

impl LateNoDelay {
    /// Wrap an accepted stream (Nagle still on).
    pub(super) fn new(tcp: TcpStream) -> Self {
        Self { tcp, writes: 0 }
    }

    /// Whether `TCP_NODELAY` has been set.
    #[cfg(test)]
    fn nodelay(&self) -> bool {
        self.tcp.nodelay().unwrap_or(false)
    }

    fn before_write(&mut self) {
        if self.writes < 2 {
            self.writes += 1;
            if self.writes == 2 {
                // Best effort, as at accept: a failure only leaves Nagle on.
                let _ = self.tcp.set_nodelay(true);
            }
        }
    }
}

impl AsyncRead for LateNoDelay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for LateNoDelay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.before_write();
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.before_write();
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn nagle_is_turned_off_before_the_second_write_and_bytes_pass_unchanged() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let mut server = LateNoDelay::new(tcp);

        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");

        server.write_all(b"one").await.unwrap();
        assert!(
            !server.nodelay(),
            "the first write goes out with Nagle still on"
        );
        server.write_all(b"two").await.unwrap();
        assert!(server.nodelay(), "set before the second write");
        server.shutdown().await.unwrap();

        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"onetwo");
    }
}
