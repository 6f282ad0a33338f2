//! HTTP/1.1 connections between requests. hyper keeps a read buffer, a write buffer and the
//! box of the request state for as long as its connection object lives: about 27 KiB
//! resident on every idle keep-alive connection. So a connection is served in rounds: a
//! hyper connection serves requests for as long as they keep coming; once the connection
//! has been at rest for a full `PARK_AFTER` tick (no request started, every response
//! written and flushed, no partial request read), the driver takes the socket back from
//! hyper and drops hyper's state, and the connection waits for the client's next bytes
//! holding only the socket. Those bytes start a fresh round. A busy connection pays one
//! timer tick per `PARK_AFTER`, not anything per request.
//!
//! An idle connection is closed once it was silent for the header timeout after being
//! parked; within a round hyper's own header timeout applies to a request head.
//!
//! Plain requests (see `http::h1`) never start a hyper round: they are served by the fast
//! path in bursts, one boxed state per burst, dropped once the connection has rested for
//! `PARK_AFTER`, by the same rule. A request the fast path leaves alone starts a round.
//!
//! Depends on: hyper (http1), tokio, `http::framing`, `http::h1`, `http::upgrade`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::framing::Guarded;
use super::h1::{Fast, Next};
use super::idle::{QuietTicks, StreamActivity};
use super::proxy::ConnInfo;
use super::upgrade::{Handover, Io};
use crate::inplace::pin_boxed;

/// How long a connection must be at rest before it is parked (checked once per tick, so a
/// connection is parked between one and two ticks after its last exchange).
pub(super) const PARK_AFTER: Duration = Duration::from_secs(1);

/// How long closing a connection may take (a TLS close_notify to a client not reading).
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// One HTTP/1.1 connection as its requests and its driver share it.
pub(super) struct Round {
    /// Who and where the client is.
    pub(super) conn: ConnInfo,
    /// Set by the connection's `Guarded` while it is at rest (`Guarded::at_rest`).
    rest: Arc<AtomicBool>,
    /// Requests handed to the proxy.
    started: AtomicU32,
    /// Responses the proxy handed back to hyper.
    responded: AtomicU32,
    /// Response bodies hyper has finished with (written, or abandoned).
    finished: AtomicU32,
    /// The stream idle timeout (`None`: off) and the activity of the latest request.
    idle: Option<Duration>,
    current: Mutex<Option<Arc<StreamActivity>>>,
    /// Rounds that ended with the connection parked.
    parks: AtomicU64,
    /// The response to an upgrade request was 101.
    switched: AtomicBool,
    /// Where the connection goes after a 101 (only for requests that may upgrade).
    handover: Mutex<Option<oneshot::Sender<Box<dyn Io>>>>,
}

impl Round {
    /// The shared state of a new connection from `conn`; `idle`: the stream idle timeout.
    pub(super) fn new(conn: ConnInfo, idle: Option<Duration>) -> Arc<Self> {
        Arc::new(Self {
            conn,
            rest: Arc::new(AtomicBool::new(false)),
            started: AtomicU32::new(0),
            responded: AtomicU32::new(0),
            finished: AtomicU32::new(0),
            idle,
            current: Mutex::new(None),
            parks: AtomicU64::new(0),
            switched: AtomicBool::new(false),
            handover: Mutex::new(None),
        })
    }

    /// The flag the connection's `Guarded` keeps up to date.
    pub(super) fn rest_flag(&self) -> Arc<AtomicBool> {
        self.rest.clone()
    }

    /// Note a request hyper is about to hand to the proxy: one that may switch protocols
    /// gets a slot through which the driver hands the connection over after the 101.
    pub(super) fn request(&self, req: &mut Request<Incoming>) {
        self.started.fetch_add(1, Relaxed);
        if self.idle.is_some() {
            let act = Arc::new(StreamActivity::default());
            req.extensions_mut().insert(act.clone());
            if let Ok(mut current) = self.current.lock() {
                *current = Some(act);
            }
        }
        // hyper marks the requests that may switch protocols (`Upgrade`, `CONNECT`); looking
        // at the extensions is cheaper than a header lookup on every request.
        if req.extensions().get::<OnUpgrade>().is_some() {
            let (tx, rx) = oneshot::channel();
            if let Ok(mut slot) = self.handover.lock() {
                *slot = Some(tx);
                req.extensions_mut().insert(Handover::new(rx));
            }
        }
    }

    /// Note the response the proxy hands to hyper; its body reports back when hyper is done
    /// with it.
    pub(super) fn response<B>(self: Arc<Self>, resp: Response<B>) -> Response<Tracked<B>> {
        self.responded.fetch_add(1, Relaxed);
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            self.switched.store(true, Relaxed);
        }
        resp.map(|body| Tracked { body, round: self })
    }

    /// Every request has its response and hyper is done with every response body.
    fn settled(&self) -> bool {
        self.started.load(Relaxed) == self.finished.load(Relaxed)
    }

    /// A response is being written: its head is with hyper, its body not yet done.
    fn writing(&self) -> bool {
        self.responded.load(Relaxed) != self.finished.load(Relaxed)
    }

    fn take_handover(&self) -> Option<oneshot::Sender<Box<dyn Io>>> {
        self.handover.lock().ok().and_then(|mut s| s.take())
    }
}

/// A response body that tells its connection's driver when hyper has dropped it.
pub(super) struct Tracked<B> {
    body: B,
    round: Arc<Round>,
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.round.finished.fetch_add(1, Relaxed);
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What hyper needs to serve rounds on a connection. Made on the first request the fast path
/// leaves to hyper: a connection the fast path serves throughout never allocates it.
pub(super) struct HyperSide<S> {
    /// The connection's state shared with its service.
    pub(super) round: Arc<Round>,
    /// The service hyper hands the connection's requests to.
    pub(super) service: S,
    /// hyper's connection settings.
    pub(super) builder: http1::Builder,
}

/// A connection's side that serves requests the fast path leaves alone: not yet made, or
/// made.
enum Side<S, M> {
    /// Only the fast path has served so far; `M` makes the hyper side from the `ConnInfo`.
    Plain(ConnInfo, M),
    /// hyper has served at least one round.
    Hyper(HyperSide<S>),
}

impl<S, M> Side<S, M> {
    fn conn(&self) -> &ConnInfo {
        match self {
            Side::Plain(conn, _) => conn,
            Side::Hyper(h) => &h.round.conn,
        }
    }
}

/// Serve HTTP/1.1 rounds on `io` (which holds the first request bytes) until the client
/// closes, stays silent for `idle` once parked, or `stop` fires. `make_hyper` makes what
/// hyper needs the first time a request is left to it.
pub(super) async fn serve<I, S, M>(
    mut io: Guarded<I>,
    conn: ConnInfo,
    make_hyper: M,
    fast: Option<&Fast>,
    idle: Duration,
    stop: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming> + Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    M: FnOnce(ConnInfo) -> HyperSide<S>,
{
    let mut side = Side::Plain(conn, make_hyper);
    let cancelled = stop.cancelled();
    tokio::pin!(cancelled);
    // Made when a wait first finds no bytes: a connection whose every read finds its
    // bytes waiting (one request per connection, typically) never makes one.
    let timer: Option<tokio::time::Sleep> = None;
    tokio::pin!(timer);
    // The fast path's last burst ended with the connection at rest for this long already.
    let mut rested = Duration::ZERO;
    loop {
        if io.unread().is_empty() {
            let wait = idle.saturating_sub(rested);
            match wait_bytes(&mut io, timer.as_mut(), wait, cancelled.as_mut()).await {
                Waited::Bytes => {}
                Waited::Closed => {
                    close(io).await;
                    return;
                }
                Waited::TimedOut => {
                    tracing::debug!("no request bytes within the header timeout: closing");
                    close(io).await;
                    return;
                }
            }
        }
        rested = Duration::ZERO;
        if let Some(fast) = fast {
            // Boxed, and once per burst of requests rather than per request: a resting
            // connection's task then holds none of a request's state, and a busy one
            // allocates (and moves) that state once. Boxed in the statement that makes it:
            // a local still in scope across the await below would keep its storage in this
            // future even once moved from (in release builds, where `Box::pin` is inlined),
            // which put the burst's 3.4 KiB into every connection's task.
            let rest = PARK_AFTER.min(idle);
            let burst = pin_boxed!(fast_burst(
                fast,
                &mut io,
                side.conn(),
                stop,
                rest,
                timer.as_mut(),
                cancelled.as_mut(),
            ));
            match burst.await {
                Burst::Rested => {
                    rested = rest;
                    continue;
                }
                Burst::Close => {
                    close(io).await;
                    return;
                }
                Burst::Hyper => {}
            }
        }
        let HyperSide {
            round,
            service,
            builder,
        } = match side {
            Side::Plain(conn, make) => {
                let h = make(conn);
                io.report_rest(h.round.rest_flag());
                h
            }
            Side::Hyper(h) => h,
        };
        // Boxed: the task of a parked connection then holds none of hyper's state.
        let ended = pin_boxed!(serve_round(
            io,
            service,
            &builder,
            &round,
            stop,
            cancelled.as_mut(),
        ))
        .await;
        match ended {
            Some((back, service)) => {
                io = back;
                side = Side::Hyper(HyperSide {
                    round,
                    service,
                    builder,
                });
            }
            None => return,
        }
    }
}

/// How a fast-path burst ended.
enum Burst {
    /// No request for a whole rest period: the connection waits without the burst's state.
    Rested,
    /// The connection is to close.
    Close,
    /// A request the fast path does not serve waits in the buffer: hyper's turn.
    Hyper,
}

/// Serve requests on the fast path while they keep coming less than `rest` apart.
async fn fast_burst<I: AsyncRead + AsyncWrite + Unpin>(
    fast: &Fast,
    io: &mut Guarded<I>,
    conn: &ConnInfo,
    stop: &CancellationToken,
    rest: Duration,
    mut timer: Pin<&mut Option<tokio::time::Sleep>>,
    mut cancelled: Pin<&mut (impl Future<Output = ()> + Send)>,
) -> Burst {
    loop {
        match fast.serve_one(io, conn, stop).await {
            Next::Continue => {}
            Next::Close => return Burst::Close,
            Next::Hyper => return Burst::Hyper,
        }
        if io.unread().is_empty() {
            match wait_bytes(io, timer.as_mut(), rest, cancelled.as_mut()).await {
                Waited::Bytes => {}
                Waited::Closed => return Burst::Close,
                Waited::TimedOut => return Burst::Rested,
            }
        }
    }
}

/// What a wait for the client's next bytes ended with.
#[derive(Debug, PartialEq, Eq)]
enum Waited {
    /// Bytes arrived (kept in the connection's unread buffer).
    Bytes,
    /// The client closed, the read failed, or the gateway is stopping.
    Closed,
    /// Nothing came within the wait.
    TimedOut,
}

/// Wait, holding no buffer, for the client's next bytes; false if it closed, stayed silent
/// for `idle` or `cancelled` fired first.
pub(super) async fn next_bytes<I: AsyncRead + Unpin>(
    io: &mut Guarded<I>,
    idle: Duration,
    cancelled: Pin<&mut (impl Future<Output = ()> + Send)>,
) -> bool {
    let timer: Option<tokio::time::Sleep> = None;
    tokio::pin!(timer);
    match wait_bytes(io, timer, idle, cancelled).await {
        Waited::Bytes => true,
        Waited::Closed => false,
        Waited::TimedOut => {
            tracing::debug!("no request bytes within the header timeout: closing");
            false
        }
    }
}

/// A wait for the next bytes with a timer the caller keeps across waits: re-arming a
/// registered timer to a later deadline is one atomic update, where a new one is a
/// timer-wheel insertion and removal per request. The timer is made (on first use) and armed
/// only once a read finds nothing: bytes already there (a new connection's first request,
/// usually) then cost no timer, no insertion and no wake-up of the runtime's driver, which
/// tokio unparks (an eventfd write) whenever a timer is registered earlier than its next
/// wake-up.
async fn wait_bytes<I: AsyncRead + Unpin>(
    io: &mut Guarded<I>,
    mut timer: Pin<&mut Option<tokio::time::Sleep>>,
    wait: Duration,
    mut cancelled: Pin<&mut (impl Future<Output = ()> + Send)>,
) -> Waited {
    let mut armed = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = io.poll_fill(cx) {
            return Poll::Ready(if matches!(r, Ok(n) if n > 0) {
                Waited::Bytes
            } else {
                Waited::Closed
            });
        }
        if cancelled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Waited::Closed);
        }
        if !armed {
            armed = true;
            let deadline = tokio::time::Instant::now() + wait;
            match timer.as_mut().as_pin_mut() {
                Some(t) => t.reset(deadline),
                None => timer.set(Some(tokio::time::sleep_until(deadline))),
            }
        }
        match timer.as_mut().as_pin_mut() {
            Some(t) => t.poll(cx).map(|()| Waited::TimedOut),
            // Not reached: arming above always leaves a timer. Without one there is no
            // deadline, and the bytes or the cancellation wake this wait.
            None => Poll::Pending,
        }
    })
    .await
}

/// Close `io` politely (FIN, or TLS close_notify), within a bound; a stream that
/// `close_by_drop` is just dropped.
pub(super) async fn close<I: AsyncWrite + Unpin>(mut io: Guarded<I>) {
    if io.drop_closes() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, io.shutdown()).await;
}

/// How a round's hyper connection stopped being polled.
enum Stop {
    /// hyper finished: closed, or switched protocols.
    Finished(hyper::Result<()>),
    /// The connection was at rest for a whole tick.
    AtRest,
    /// A response's writing was quiet for the stream idle timeout.
    Idle,
}

/// One hyper connection over `io`, until it finishes or the connection is at rest for a
/// whole `PARK_AFTER` tick; the socket and the service back in the second case.
async fn serve_round<I, S>(
    io: Guarded<I>,
    service: S,
    builder: &http1::Builder,
    round: &Round,
    stop: &CancellationToken,
    mut cancelled: Pin<&mut (impl Future<Output = ()> + Send)>,
) -> Option<(Guarded<I>, S)>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming> + Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = builder.serve_connection(TokioIo::new(io), service);
    let mut draining = false;
    let tick = tokio::time::sleep(PARK_AFTER);
    tokio::pin!(tick);
    // Under the stream idle timeout: a response whose writing stays quiet ends the
    // connection (see `idle`). Off, no timer.
    let mut quiet = round.idle.map(QuietTicks::new);
    let idle_tick = quiet.as_ref().map(|q| tokio::time::sleep(q.period()));
    tokio::pin!(idle_tick);
    // Requests started when the tick was last armed: any since means the connection was
    // not at rest for the whole tick.
    let mut seen = round.started.load(Relaxed);
    let stopped = std::future::poll_fn(|cx| loop {
        if let (Some(q), Some(t)) = (quiet.as_mut(), idle_tick.as_mut().as_pin_mut()) {
            // The park tick is re-armed after it fires unless draining (then it stays
            // elapsed and says nothing about this poll).
            let park_woke = !draining && tick.is_elapsed();
            if q.poll(t, cx, round.writing(), park_woke).is_ready() {
                return Poll::Ready(Stop::Idle);
            }
        }
        if let Poll::Ready(r) = Pin::new(&mut conn).poll(cx) {
            return Poll::Ready(Stop::Finished(r));
        }
        if !draining && cancelled.as_mut().poll(cx).is_ready() {
            // HTTP/1 closes after the request in flight (or at once when idle).
            draining = true;
            Pin::new(&mut conn).graceful_shutdown();
            continue;
        }
        if draining || tick.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let started = round.started.load(Relaxed);
        if started == seen && round.settled() && round.rest.load(Relaxed) {
            return Poll::Ready(Stop::AtRest);
        }
        seen = started;
        tick.as_mut()
            .reset(tokio::time::Instant::now() + PARK_AFTER);
    })
    .await;
    match stopped {
        Stop::Idle => {
            tracing::debug!("response stalled for the stream idle timeout: closing");
            if let Some(act) = round.current.lock().ok().and_then(|mut c| c.take()) {
                act.expire();
            }
            None
        }
        Stop::AtRest => {
            let parts = conn.into_parts();
            let io = parts.io.into_inner();
            // At rest, the guard saw only complete requests and hyper started each of them,
            // so hyper holds no unparsed byte; anything else and parsing cannot go on from
            // here.
            if parts.read_buf.is_empty() && io.at_rest() && !stop.is_cancelled() {
                round.parks.fetch_add(1, Relaxed);
                return Some((io, parts.service));
            }
            close(io).await;
            None
        }
        // Closed (the client closed or asked to, draining, a header timeout), or switched
        // protocols: hyper then leaves the connection to its owner.
        Stop::Finished(Ok(())) => {
            if round.switched.swap(false, Relaxed) {
                if let Some(tx) = round.take_handover() {
                    let parts = conn.into_parts();
                    let mut io = parts.io.into_inner();
                    io.rewind(&parts.read_buf);
                    let _ = tx.send(Box::new(io));
                }
            }
            None
        }
        Stop::Finished(Err(e)) => {
            tracing::debug!(error = %e, "connection ended with error");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{Either, Full};
    use hyper::service::service_fn;
    use tokio::io::{AsyncReadExt, DuplexStream};

    const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

    /// A connection served by `serve` (answers "ok" to everything) and the client's end.
    fn start() -> (DuplexStream, Arc<Round>, tokio::task::JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let round = Round::new(
            ConnInfo {
                client: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
                port: 8080,
                scheme: "http",
                sni: None,
                peer_cert: None,
                forwarded_for: http::HeaderValue::from_static("127.0.0.1"),
            },
            None,
        );
        let shared = round.clone();
        let task = tokio::spawn(async move {
            let round = shared;
            let mut io = Guarded::new(server);
            let stop = CancellationToken::new();
            if !next_bytes(&mut io, HEADER_TIMEOUT, std::pin::pin!(stop.cancelled())).await {
                return;
            }
            let noted = round.clone();
            let service = service_fn(move |mut req: Request<Incoming>| {
                let round = noted.clone();
                round.request(&mut req);
                let slow = req.uri().path() == "/slow";
                async move {
                    let body = if slow {
                        Either::Right(Slow::default())
                    } else {
                        Either::Left(Full::new(Bytes::from_static(b"ok")))
                    };
                    Ok::<_, Infallible>(round.response(Response::new(body)))
                }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true);
            let conn = round.conn.clone();
            let make = move |_: ConnInfo| HyperSide {
                round,
                service,
                builder,
            };
            serve(io, conn, make, None, HEADER_TIMEOUT, &stop).await;
        });
        (client, round, task)
    }

    /// A body that sends "o", then "k" 3 s later (a slow upstream, a stream of events).
    #[derive(Default)]
    struct Slow {
        step: u8,
        wait: Option<Pin<Box<tokio::time::Sleep>>>,
    }

    impl Body for Slow {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            match self.step {
                0 => {
                    self.step = 1;
                    self.wait = Some(Box::pin(tokio::time::sleep(Duration::from_secs(3))));
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"o")))))
                }
                1 => {
                    if let Some(w) = self.wait.as_mut() {
                        std::task::ready!(w.as_mut().poll(cx));
                    }
                    self.step = 2;
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"k")))))
                }
                _ => Poll::Ready(None),
            }
        }
    }

    /// Read one response (its body is "ok"); `None` if the connection closed first.
    async fn response(c: &mut DuplexStream) -> Option<String> {
        responses(c, 1).await
    }

    /// Read `n` responses; `None` if the connection closed first.
    async fn responses(c: &mut DuplexStream, n: usize) -> Option<String> {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while String::from_utf8_lossy(&got).matches("\r\n\r\nok").count() < n {
            let n = c.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            got.extend_from_slice(&buf[..n]);
        }
        Some(String::from_utf8_lossy(&got).into_owned())
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_parked_served_again_and_closed_after_the_timeout() {
        let (mut c, round, task) = start();
        for i in 0..3 {
            c.write_all(GET).await.unwrap_or_default();
            let r = response(&mut c).await.unwrap_or_default();
            assert!(r.starts_with("HTTP/1.1 200 OK"), "request {i}: {r}");
            assert!(!r.to_lowercase().contains("connection: close"), "{r}");
        }
        // Busy: no park yet. At rest for a whole tick: parked.
        assert_eq!(round.parks.load(Relaxed), 0);
        tokio::time::sleep(PARK_AFTER * 2 + Duration::from_millis(100)).await;
        assert_eq!(round.parks.load(Relaxed), 1);
        c.write_all(GET).await.unwrap_or_default();
        assert!(
            response(&mut c).await.is_some(),
            "not served after being parked"
        );
        // Silent for the whole header timeout: closed.
        tokio::time::sleep(HEADER_TIMEOUT + Duration::from_millis(100)).await;
        assert_eq!(response(&mut c).await, None);
        assert!(task.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_gets_the_whole_header_timeout_and_no_more() {
        let (mut c, round, _task) = start();
        // Over several ticks: a partial head is not at rest, so it is not parked.
        c.write_all(b"GET / HTTP/1.1\r\n").await.unwrap_or_default();
        tokio::time::sleep(Duration::from_secs(3)).await;
        c.write_all(b"Host: a\r\n\r\n").await.unwrap_or_default();
        assert!(
            response(&mut c).await.is_some(),
            "a head within the timeout was refused"
        );
        assert_eq!(round.parks.load(Relaxed), 0);
        // A head that dribbles for longer than the header timeout is cut off.
        c.write_all(b"GET / HTTP/1.1\r\n").await.unwrap_or_default();
        for _ in 0..11 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if c.write_all(b"X-Slow: 1\r\n").await.is_err() {
                break;
            }
        }
        assert_eq!(response(&mut c).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_still_streaming_is_never_cut_by_parking() {
        let (mut c, round, _task) = start();
        c.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap_or_default();
        // Chunked: "o" now, "k" 3 s later. Read up to the first chunk, let two ticks pass
        // while the body is still open, then read the rest.
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        for (until, pause) in [(&b"1\r\no\r\n"[..], true), (&b"0\r\n\r\n"[..], false)] {
            while !got.ends_with(until) {
                let n = c.read(&mut buf).await.unwrap_or(0);
                assert!(
                    n > 0,
                    "closed mid-body: {:?}",
                    String::from_utf8_lossy(&got)
                );
                got.extend_from_slice(&buf[..n]);
            }
            if pause {
                tokio::time::sleep(PARK_AFTER * 2 + Duration::from_millis(100)).await;
                assert_eq!(round.parks.load(Relaxed), 0, "parked mid-body");
            }
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("1\r\no\r\n1\r\nk\r\n0\r\n\r\n"), "{text}");
        tokio::time::sleep(PARK_AFTER * 2 + Duration::from_millis(100)).await;
        assert_eq!(round.parks.load(Relaxed), 1);
        c.write_all(GET).await.unwrap_or_default();
        assert!(response(&mut c).await.is_some());
    }

    #[tokio::test]
    async fn pipelined_requests_are_all_answered() {
        let (mut c, _round, _task) = start();
        c.write_all(&GET.repeat(5)).await.unwrap_or_default();
        let all = responses(&mut c, 5).await.unwrap_or_default();
        assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 5, "{all}");
    }
}
