//! Copying bytes both ways between two streams (passthrough, TCP routes, upgraded HTTP).
//!
//! Each direction reads up to 64 KiB per syscall, eight times tokio's `copy_bidirectional`,
//! so a 100 KiB passthrough response takes two reads and two writes instead of thirteen of
//! each; but a direction holds that buffer only while bytes are moving: when its source has
//! nothing to read and nothing is left to write, the buffer is freed, so an idle spliced
//! connection costs no buffer memory at all. Reads go into uninitialised capacity
//! (`BytesMut`), never zeroing the 64 KiB.
//!
//! Semantics are `copy_bidirectional`'s: end of stream on one side shuts down the write
//! half of the other (half-close passed on); the copy ends when both directions have, or
//! at the first error.
//!
//! Depends on: tokio, tokio-util, bytes.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

/// Most bytes one read takes from a socket.
const CHUNK: usize = 64 * 1024;

/// Copy `a` -> `b` and `b` -> `a` until both directions reach end of stream; returns the
/// bytes moved each way.
pub(crate) async fn copy_both<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut ab = Leg::default();
    let mut ba = Leg::default();
    poll_fn(|cx| {
        let there = ab.poll(cx, &mut *a, &mut *b)?;
        let back = ba.poll(cx, &mut *b, &mut *a)?;
        match (there, back) {
            (Poll::Ready(()), Poll::Ready(())) => Poll::Ready(Ok((ab.moved, ba.moved))),
            _ => Poll::Pending,
        }
    })
    .await
}

/// One direction: bytes read from the source wait in `buf` until written to the sink.
#[derive(Default)]
struct Leg {
    buf: BytesMut,
    /// The source reached end of stream.
    eof: bool,
    /// The sink's write half has been shut down: this direction is finished.
    done: bool,
    /// Bytes written since the last flush (TLS streams buffer until flushed).
    unflushed: bool,
    moved: u64,
}

impl Leg {
    fn poll<R, W>(&mut self, cx: &mut Context<'_>, r: &mut R, w: &mut W) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if !self.buf.is_empty() {
                let n = ready!(Pin::new(&mut *w).poll_write(cx, &self.buf))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.buf.advance(n);
                self.moved += n as u64;
                self.unflushed = true;
                continue;
            }
            if self.eof {
                // Shutdown flushes first.
                ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
                self.done = true;
                self.buf = BytesMut::new();
                continue;
            }
            // Empty: `reserve` reclaims the whole capacity without allocating when the
            // buffer is still held.
            self.buf.reserve(CHUNK);
            match tokio_util::io::poll_read_buf(Pin::new(&mut *r), cx, &mut self.buf) {
                Poll::Ready(Ok(0)) => self.eof = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Nothing to read and nothing to write: flush what the sink holds, and
                    // hold no buffer while idle.
                    self.buf = BytesMut::new();
                    if self.unflushed {
                        ready!(Pin::new(&mut *w).poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_and_passes_half_close_on() {
        let (mut client, mut near) = tokio::io::duplex(1024);
        let (mut far, mut server) = tokio::io::duplex(1024);
        let copy = tokio::spawn(async move { copy_both(&mut near, &mut far).await });
        // 300 KiB through 1 KiB pipes: many partial reads and writes.
        let big: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
        let sent = big.clone();
        let up = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(got == big, "client -> server bytes differ");
        server.write_all(b"answer after half-close").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(up.await.unwrap(), b"answer after half-close");
        let (there, back) = copy.await.unwrap().unwrap();
        assert_eq!((there, back), (big.len() as u64, 23));
    }

    #[tokio::test]
    async fn idle_directions_hold_no_buffer() {
        let (mut client, mut near) = tokio::io::duplex(1024);
        let (mut far, mut server) = tokio::io::duplex(1024);
        let mut ab = Leg::default();
        let mut ba = Leg::default();
        client.write_all(b"ping").await.unwrap();
        poll_fn(|cx| {
            let _ = ab.poll(cx, &mut near, &mut far);
            let _ = ba.poll(cx, &mut far, &mut near);
            Poll::Ready(())
        })
        .await;
        let mut four = [0u8; 4];
        server.read_exact(&mut four).await.unwrap();
        assert_eq!(&four, b"ping");
        assert_eq!((ab.buf.capacity(), ba.buf.capacity()), (0, 0));
        assert_eq!(ab.moved, 4);
    }

    #[tokio::test]
    async fn write_error_ends_the_copy() {
        let (mut client, mut near) = tokio::io::duplex(1024);
        let (mut far, server) = tokio::io::duplex(1024);
        drop(server);
        client.write_all(b"to nowhere").await.unwrap();
        let r = copy_both(&mut near, &mut far).await;
        assert!(r.is_err(), "{r:?}");
    }
}
