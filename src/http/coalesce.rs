//! What an HTTP/2 connection writes during one turn of its task leaves in one system call.
//!
//! h2 sends a DATA frame of 256 bytes or more (with vectored I/O) straight from the body's
//! buffer, and must flush it before it can encode the next frame: a turn that finishes
//! several streams made one `writev` per response, 1.0 per request under h2load with ten
//! streams per connection. Here small writes land in a buffer and h2's flushes return at
//! once; the connection's driver (`h2streams::Driven`) drains the buffer when the turn ends,
//! after the connection and every ready stream have run, so the bytes of all the responses
//! finished in that turn go out together. A write too big to copy goes out at once, with
//! what is buffered in front of it, in one vectored write.
//!
//! Must not: keep bytes past the end of a turn (the driver drains before its task sleeps),
//! buffer more than `CAP` bytes, copy a write bigger than `COPY_MAX`, or hold a buffer
//! between turns.
//!
//! Depends on: tokio.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes held between drains; a write that would pass it writes what is held first.
const CAP: usize = 16 * 1024;

/// Largest single write that is copied; bigger ones (16 KiB DATA frames of a large body)
/// go to the socket without a copy.
const COPY_MAX: usize = 4 * 1024;

/// What a turn's buffer starts with.
const START: usize = 4 * 1024;

/// Slices in one vectored write: the buffered bytes and the caller's first few.
const SLICES: usize = 8;

/// The end of a connection task's turn: write what the turn buffered.
pub(super) trait TurnEnd: Send + Sync {
    /// Write the buffered bytes. While the socket is full this registers the task for its
    /// writability and returns; a failure is kept for the connection's next read or write
    /// and the task is woken to meet it.
    fn drain(&self, cx: &mut Context<'_>);
}

/// Split `io` into the stream handed to hyper and the drain kept by the driver.
pub(super) fn pair<I>(io: I) -> (Coalesced<I>, Arc<dyn TurnEnd>)
where
    I: AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::new(Mutex::new(Shared {
        io,
        buf: Vec::new(),
        pos: 0,
        unflushed: false,
        failed: None,
    }));
    (
        Coalesced {
            shared: shared.clone(),
        },
        shared,
    )
}

/// The connection's stream as hyper sees it (see the module docs).
pub(super) struct Coalesced<I> {
    shared: Arc<Mutex<Shared<I>>>,
}

struct Shared<I> {
    io: I,
    /// Bytes written by h2 and not yet sent; `buf[pos..]` is what is left.
    buf: Vec<u8>,
    pos: usize,
    /// Something reached `io` since its last flush (TLS may hold records until flushed).
    unflushed: bool,
    /// A write to the socket failed at the end of a turn, when nobody could be told.
    failed: Option<io::ErrorKind>,
}

fn lock<I>(m: &Mutex<Shared<I>>) -> MutexGuard<'_, Shared<I>> {
    // Every method leaves `Shared` consistent between its awaits; a panic in one (there is
    // none to expect) cannot leave it half-updated for the next.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl Shared ===

impl<I> Shared<I> {
    /// The failure kept from a turn's end, if any.
    fn check(&self) -> io::Result<()> {
        match self.failed {
            Some(kind) => Err(kind.into()),
            None => Ok(()),
        }
    }
}

impl<I: AsyncWrite + Unpin> Shared<I> {
    /// Send every buffered byte.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pos < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.unflushed = true;
            self.pos += n;
        }
        self.buf.clear();
        self.pos = 0;
        Poll::Ready(Ok(()))
    }

    /// Send every buffered byte and flush the stream under it.
    fn poll_send_all(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        if self.unflushed {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_bufs(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total <= COPY_MAX && self.buf.len() + total <= CAP {
            if self.buf.capacity() == 0 {
                // Room for a few responses at once, not a reallocation for each.
                self.buf.reserve(START.max(total));
            }
            for b in bufs {
                self.buf.extend_from_slice(b);
            }
            return Poll::Ready(Ok(total));
        }
        loop {
            let held = self.buf.len() - self.pos;
            if held == 0 {
                self.buf.clear();
                self.pos = 0;
                let n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, bufs))?;
                self.unflushed = true;
                return Poll::Ready(Ok(n));
            }
            // The held bytes first, then as many of the caller's as fit in one call.
            let mut slices = [IoSlice::new(&[]); SLICES];
            slices[0] = IoSlice::new(&self.buf[self.pos..]);
            let k = bufs.len().min(SLICES - 1);
            slices[1..=k].copy_from_slice(&bufs[..k]);
            let n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..=k]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.unflushed = true;
            if n < held {
                self.pos += n;
                continue;
            }
            self.buf.clear();
            self.pos = 0;
            if n > held {
                return Poll::Ready(Ok(n - held));
            }
        }
    }
}

impl<I: AsyncWrite + Unpin + Send> TurnEnd for Mutex<Shared<I>> {
    fn drain(&self, cx: &mut Context<'_>) {
        let mut s = lock(self);
        if s.failed.is_some() {
            return;
        }
        match s.poll_send_all(cx) {
            // An idle connection (HTTP/2 clients keep theirs open) holds no buffer: the next
            // turn that writes allocates one, which costs less than a system call.
            Poll::Ready(Ok(())) => s.buf = Vec::new(),
            Poll::Ready(Err(e)) => {
                s.failed = Some(e.kind());
                cx.waker().wake_by_ref();
            }
            Poll::Pending => {}
        }
    }
}

// === impl Coalesced ===

impl<I: AsyncRead + Unpin> AsyncRead for Coalesced<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut s = lock(&self.shared);
        s.check()?;
        Pin::new(&mut s.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Coalesced<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        lock(&self.shared).poll_write_bufs(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        lock(&self.shared).poll_write_bufs(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Done at the end of the turn (see the module docs): h2 flushes after each big DATA
    /// frame, which is what this module exists to batch.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(lock(&self.shared).check())
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = lock(&self.shared);
        s.check()?;
        ready!(s.poll_send_all(cx))?;
        Pin::new(&mut s.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// A socket that records each write call and accepts `room` more bytes in all (`Pending`
    /// once it is used up, with nothing to wake: the tests poll again by hand).
    #[derive(Default)]
    struct Sink {
        writes: Vec<Vec<u8>>,
        room: Option<usize>,
        flushes: usize,
        fail: bool,
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            if self.fail {
                return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
            }
            let mut out = Vec::new();
            for b in bufs {
                out.extend_from_slice(b);
            }
            let n = self.room.map_or(out.len(), |r| r.min(out.len()));
            if n == 0 {
                return Poll::Pending;
            }
            out.truncate(n);
            self.writes.push(out);
            if let Some(r) = &mut self.room {
                *r -= n;
            }
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for Sink {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    fn write(c: &mut Coalesced<Sink>, bufs: &[&[u8]]) -> Poll<io::Result<usize>> {
        let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        Pin::new(c).poll_write_vectored(&mut cx(), &slices)
    }

    fn flush(c: &mut Coalesced<Sink>) -> Poll<io::Result<()>> {
        Pin::new(c).poll_flush(&mut cx())
    }

    fn sink(c: &Coalesced<Sink>) -> MutexGuard<'_, Shared<Sink>> {
        lock(&c.shared)
    }

    #[test]
    fn a_turn_of_small_writes_and_flushes_is_one_write_at_its_end() {
        let (mut c, end) = pair(Sink::default());
        for i in 0..5u8 {
            let head = [i; 9];
            let data = [i; 1024];
            assert!(matches!(
                write(&mut c, &[&head, &data]),
                Poll::Ready(Ok(1033))
            ));
            assert!(matches!(flush(&mut c), Poll::Ready(Ok(()))));
        }
        assert!(
            sink(&c).io.writes.is_empty(),
            "nothing sent before the turn ends"
        );
        end.drain(&mut cx());
        let s = sink(&c);
        assert_eq!(s.io.writes.len(), 1);
        assert_eq!(s.io.writes[0].len(), 5 * 1033);
        assert_eq!(&s.io.writes[0][1033..1042], &[1u8; 9]);
        assert_eq!(s.io.flushes, 1);
    }

    #[test]
    fn a_big_write_goes_out_at_once_behind_the_held_bytes_in_one_call() {
        let (mut c, end) = pair(Sink::default());
        assert!(matches!(write(&mut c, &[b"headers"]), Poll::Ready(Ok(7))));
        let big = vec![7u8; 16 * 1024];
        assert!(
            matches!(write(&mut c, &[b"frame-hd!", &big]), Poll::Ready(Ok(n)) if n == 9 + big.len())
        );
        {
            let s = sink(&c);
            assert_eq!(s.io.writes.len(), 1);
            assert_eq!(&s.io.writes[0][..16], b"headersframe-hd!");
            assert_eq!(s.io.writes[0].len(), 7 + 9 + big.len());
        }
        // Nothing held: the turn's end only flushes.
        end.drain(&mut cx());
        assert_eq!(sink(&c).io.writes.len(), 1);
        assert_eq!(sink(&c).io.flushes, 1);
    }

    #[test]
    fn the_buffer_never_passes_its_cap() {
        let (mut c, _end) = pair(Sink::default());
        let chunk = [1u8; COPY_MAX];
        for _ in 0..(CAP / COPY_MAX) {
            assert!(matches!(
                write(&mut c, &[&chunk]),
                Poll::Ready(Ok(COPY_MAX))
            ));
        }
        assert!(sink(&c).io.writes.is_empty());
        // One more would pass CAP: held bytes and this one leave together.
        assert!(matches!(
            write(&mut c, &[&chunk]),
            Poll::Ready(Ok(COPY_MAX))
        ));
        let s = sink(&c);
        assert_eq!(s.io.writes.len(), 1);
        assert_eq!(s.io.writes[0].len(), CAP + COPY_MAX);
        assert!(s.buf.is_empty());
    }

    #[test]
    fn a_short_socket_write_keeps_the_rest_in_order() {
        let (mut c, end) = pair(Sink::default());
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        assert!(matches!(write(&mut c, &[&data]), Poll::Ready(Ok(3000))));
        sink(&c).io.room = Some(1000);
        end.drain(&mut cx());
        sink(&c).io.room = Some(0);
        end.drain(&mut cx());
        assert_eq!(sink(&c).io.flushes, 0, "not flushed while bytes are left");
        sink(&c).io.room = None;
        end.drain(&mut cx());
        let s = sink(&c);
        assert_eq!(s.io.writes.concat(), data);
        assert_eq!(s.io.flushes, 1);
    }

    #[test]
    fn a_big_write_behind_a_short_socket_reports_only_its_own_bytes() {
        let (mut c, _end) = pair(Sink::default());
        assert!(matches!(
            write(&mut c, &[&[1u8; 100]]),
            Poll::Ready(Ok(100))
        ));
        sink(&c).io.room = Some(150);
        let big = vec![2u8; 8 * 1024];
        // 100 held bytes and 50 of the caller's went out.
        assert!(matches!(write(&mut c, &[&big]), Poll::Ready(Ok(50))));
        sink(&c).io.room = Some(60);
        // Only held bytes are gone and none are left: the next call writes the caller's.
        assert!(matches!(write(&mut c, &[&big[50..]]), Poll::Ready(Ok(60))));
        let s = sink(&c);
        let all = s.io.writes.concat();
        assert_eq!(&all[..100], &[1u8; 100]);
        assert_eq!(&all[100..], &[2u8; 110]);
    }

    #[test]
    fn a_failure_at_the_turn_end_reaches_the_next_read_and_write() {
        let (mut c, end) = pair(Sink::default());
        assert!(matches!(write(&mut c, &[b"x"]), Poll::Ready(Ok(1))));
        sink(&c).io.fail = true;
        end.drain(&mut cx());
        let mut buf = [0u8; 8];
        let mut rb = ReadBuf::new(&mut buf);
        let read = Pin::new(&mut c).poll_read(&mut cx(), &mut rb);
        assert!(
            matches!(read, Poll::Ready(Err(ref e)) if e.kind() == io::ErrorKind::ConnectionReset)
        );
        assert!(matches!(write(&mut c, &[b"y"]), Poll::Ready(Err(_))));
        assert!(matches!(flush(&mut c), Poll::Ready(Err(_))));
    }

    #[test]
    fn a_drained_connection_holds_no_buffer() {
        let (mut c, end) = pair(Sink::default());
        assert!(matches!(
            write(&mut c, &[&[1u8; 1000]]),
            Poll::Ready(Ok(1000))
        ));
        assert!(sink(&c).buf.capacity() >= START);
        end.drain(&mut cx());
        assert_eq!(sink(&c).buf.capacity(), 0);
        // A drain the socket cannot take yet keeps the bytes.
        assert!(matches!(write(&mut c, &[&[2u8; 10]]), Poll::Ready(Ok(10))));
        sink(&c).io.room = Some(0);
        end.drain(&mut cx());
        assert_eq!(sink(&c).buf.len(), 10);
    }

    #[test]
    fn shutdown_sends_what_is_held_first() {
        let (mut c, _end) = pair(Sink::default());
        assert!(matches!(write(&mut c, &[b"goaway"]), Poll::Ready(Ok(6))));
        assert!(matches!(
            Pin::new(&mut c).poll_shutdown(&mut cx()),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(sink(&c).io.writes.concat(), b"goaway");
    }
}
