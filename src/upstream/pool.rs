//! Upstream connections: connect with a timeout, HTTP/1.1 keep-alive pools and one shared
//! HTTP/2 connection per endpoint.
//!
//! Pools live in a `Registry` outside the snapshot, keyed by endpoint target and protocol,
//! so a reload that keeps an endpoint keeps its warm connections. Each endpoint has its own
//! small mutex-guarded idle list, held only to push or pop (never across an await), so there
//! is no global lock on the request path. Idle HTTP/1.1 connections are used LIFO and dropped
//! after `idle_timeout`, which defaults below common backend keep-alive timeouts so we rarely
//! race a backend closing an idle connection.
//!
//! Depends on: hyper, tokio, `error`, `body`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::body::{UpBody, UpstreamBody};
use crate::error::{ErrorKind, ProxyError};
use crate::tls::client::ClientTls;

use super::dns::{Cached, Resolver, Spread};
use super::h1::{H1Conn, RawHead, UpIo};

/// Where an endpoint lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A fixed socket address.
    Addr(SocketAddr),
    /// A name, resolved asynchronously and cached for its TTL (see `dns`).
    Dns(Arc<str>, u16, Spread),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Dns(h, p, _) => write!(f, "{h}:{p}"),
        }
    }
}

/// Upstream HTTP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive.
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
}

/// Connection settings shared by every pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// How long an idle HTTP/1.1 connection is kept.
    pub idle_timeout: Duration,
    /// Idle HTTP/1.1 connections kept per endpoint.
    pub max_idle: usize,
    /// Requests in flight per destination when no DestinationRule sets `http2MaxRequests`
    /// (`--max-requests-per-destination`; default 10,000; None: unbounded, Istio's).
    pub max_requests: Option<usize>,
    /// Write HTTP/1.1 request header names to upstreams in the case the client used
    /// (`--preserve-header-case`); off: lowercase, as Envoy and Istio do.
    pub preserve_header_case: bool,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(4),
            max_idle: 128,
            max_requests: Some(10_000),
            preserve_header_case: false,
        }
    }
}

type Names = HashMap<(Arc<str>, Spread), Weak<Cached>>;

/// All endpoint pools, surviving reloads.
#[derive(Debug)]
pub struct Registry {
    settings: PoolSettings,
    resolver: Arc<Resolver>,
    pools: Mutex<HashMap<(Target, Protocol, u64), Weak<EndpointPool>>>,
    /// DNS answers per name, shared by every pool (and port) of that name.
    names: Mutex<Names>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new(PoolSettings::default())
    }
}

impl Registry {
    /// The settings every pool of this registry uses.
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// A registry whose pools use `settings`, resolving names with the system's resolver.
    pub fn new(settings: PoolSettings) -> Self {
        Self::with_resolver(
            settings,
            Arc::new(Resolver::system(super::dns::DnsSettings::default())),
        )
    }

    /// A registry whose pools use `settings`, resolving names with `resolver`.
    pub fn with_resolver(settings: PoolSettings, resolver: Arc<Resolver>) -> Self {
        Self {
            settings,
            resolver,
            pools: Mutex::default(),
            names: Mutex::default(),
        }
    }

    fn cached(&self, host: &Arc<str>, spread: Spread) -> Arc<Cached> {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if names.len() > 64 {
            names.retain(|_, w| w.strong_count() > 0);
        }
        let key = (host.clone(), spread);
        if let Some(c) = names.get(&key).and_then(Weak::upgrade) {
            return c;
        }
        let c = Arc::new(Cached::new(host.clone(), spread));
        names.insert(key, Arc::downgrade(&c));
        c
    }

    /// The pool for `target` over `protocol` (through `tls` when set), shared with any live
    /// snapshot that has the same endpoint and settings.
    pub fn pool(
        &self,
        target: Target,
        protocol: Protocol,
        tls: Option<Arc<ClientTls>>,
    ) -> Arc<EndpointPool> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if pools.len() > 64 {
            pools.retain(|_, w| w.strong_count() > 0);
        }
        let key = (target, protocol, tls.as_ref().map_or(0, |t| t.id));
        if let Some(p) = pools.get(&key).and_then(Weak::upgrade) {
            return p;
        }
        let dns = match &key.0 {
            Target::Dns(host, _, spread) => Some(self.cached(host, *spread)),
            Target::Addr(_) => None,
        };
        let pool = Arc::new(EndpointPool {
            label: key.0.to_string().into(),
            target: key.0.clone(),
            dns,
            resolver: self.resolver.clone(),
            protocol,
            tls,
            settings: self.settings,
            idle: Mutex::default(),
            shared_h2: Mutex::default(),
        });
        pools.insert(key, Arc::downgrade(&pool));
        pool
    }
}

/// A kept-alive HTTP/1.1 connection: ours, or one handed to hyper for a request that
/// needed it (it stays with hyper from then on).
enum IdleConn {
    Raw(H1Conn),
    Hyper(http1::SendRequest<UpBody>),
}

impl IdleConn {
    fn usable(&mut self) -> bool {
        match self {
            IdleConn::Raw(c) => c.is_alive(),
            IdleConn::Hyper(tx) => tx.is_ready(),
        }
    }
}

struct Idle {
    conn: IdleConn,
    since: Instant,
    /// When the connection was established.
    born: Instant,
    /// Requests this connection has carried.
    served: u32,
}

/// Connections to one endpoint.
pub struct EndpointPool {
    target: Target,
    /// `target` rendered once, for logs (formatting it per request cost 3% of the CPU).
    label: Arc<str>,
    dns: Option<Arc<Cached>>,
    resolver: Arc<Resolver>,
    protocol: Protocol,
    tls: Option<Arc<ClientTls>>,
    settings: PoolSettings,
    idle: Mutex<Vec<Idle>>,
    /// The endpoint's HTTP/2 connection and when it was established.
    shared_h2: Mutex<Option<(http2::SendRequest<UpBody>, Instant)>>,
}

impl std::fmt::Debug for EndpointPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointPool")
            .field("target", &self.target)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

/// A sent request's outcome: the response, and for HTTP/1.1 the connection to give back
/// once the response body is done.
pub struct Sent {
    /// The upstream response head and streaming body.
    pub response: Response<UpstreamBody>,
    /// Hand this back with `release` when the body has been read to the end.
    pub conn: Option<PooledConn>,
}

/// An HTTP/1.1 connection on loan from its pool.
pub struct PooledConn {
    pool: Arc<EndpointPool>,
    tx: http1::SendRequest<UpBody>,
    born: Instant,
    served: u32,
    max_per_conn: Option<u32>,
}

impl PooledConn {
    /// Return the connection to its pool once it can take another request.
    pub fn release(self) {
        let PooledConn {
            pool,
            mut tx,
            born,
            served,
            max_per_conn,
        } = self;
        if max_per_conn.is_some_and(|m| served >= m) {
            return; // connectionPool.http.maxRequestsPerConnection: let it close
        }
        if tx.is_ready() {
            pool.put(IdleConn::Hyper(tx), served, born);
        } else if !tx.is_closed() {
            // The connection task has not yet seen the end of the response; wait briefly.
            tokio::spawn(async move {
                let ready = tokio::time::timeout(Duration::from_secs(1), tx.ready()).await;
                if matches!(ready, Ok(Ok(()))) {
                    pool.put(IdleConn::Hyper(tx), served, born);
                }
            });
        }
    }
}

impl EndpointPool {
    /// The endpoint's address.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The endpoint's address as text (`ip:port` or `host:port`).
    pub fn label(&self) -> &Arc<str> {
        &self.label
    }

    fn put(&self, conn: IdleConn, served: u32, born: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.settings.max_idle {
            idle.push(Idle {
                conn,
                since: Instant::now(),
                born,
                served,
            });
        }
    }

    /// Keep a connection whose response has ended, for the next request.
    pub(super) fn put_raw(&self, conn: H1Conn, served: u32) {
        let born = conn.born();
        self.put(IdleConn::Raw(conn), served, born);
    }

    /// The most recently used idle connection that is neither idle for `idle_timeout` nor
    /// older than `max_age`, with its requests served and its birth.
    fn take_idle(
        &self,
        idle_timeout: Duration,
        max_age: Option<Duration>,
    ) -> Option<(IdleConn, u32, Instant)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Expired connections sit at the front (oldest first): drop them in one go.
        let fresh_from = idle
            .iter()
            .position(|c| now.duration_since(c.since) < idle_timeout)
            .unwrap_or(idle.len());
        idle.drain(..fresh_from);
        while let Some(mut c) = idle.pop() {
            let too_old = max_age.is_some_and(|m| now.duration_since(c.born) >= m);
            if !too_old && c.conn.usable() {
                return Some((c.conn, c.served, c.born));
            }
        }
        None
    }

    /// A new TCP connection to the endpoint: each resolved address in turn until one
    /// accepts, all within `timeout`; TCP keepalive as the DestinationRule asks.
    pub async fn connect_tcp(
        &self,
        timeout: Duration,
        keepalive: Option<Keepalive>,
    ) -> Result<TcpStream, ProxyError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let addrs = match (&self.target, &self.dns) {
            (Target::Addr(a), _) => vec![*a],
            (Target::Dns(_, port, _), Some(cached)) => {
                match tokio::time::timeout_at(deadline, cached.addresses(&self.resolver, *port))
                    .await
                {
                    Err(_) => return Err(ProxyError::new(ErrorKind::ConnectTimeout)),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "upstream name did not resolve");
                        return Err(ProxyError::with(ErrorKind::NoHealthyEndpoint, e));
                    }
                    Ok(Ok(a)) => a,
                }
            }
            (Target::Dns(..), None) => return Err(ProxyError::new(ErrorKind::NoHealthyEndpoint)),
        };
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
                Err(_) => return Err(ProxyError::new(ErrorKind::ConnectTimeout)),
                Ok(Err(e)) => {
                    tracing::debug!(upstream = %addr, error = %e, "upstream connect failed");
                    last = Some(e);
                }
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    if let Some(k) = keepalive {
                        k.apply(&s);
                    }
                    return Ok(s);
                }
            }
        }
        Err(match last {
            Some(e) => ProxyError::with(ErrorKind::ConnectFailed, e),
            None => ProxyError::new(ErrorKind::NoHealthyEndpoint),
        })
    }

    /// A connection to send one request on: an idle one unless `fresh`, else a new one.
    pub async fn checkout(
        self: &Arc<Self>,
        fresh: bool,
        limits: &ConnLimits,
    ) -> Result<Checkout, ProxyError> {
        if !fresh {
            let max_age = limits.max_connection_duration;
            let shared = {
                let mut shared = self.shared_h2.lock().unwrap_or_else(|p| p.into_inner());
                // Past `maxConnectionDuration`, new requests go to a new connection; the
                // old one closes once its last stream ends (hyper drops it with its
                // last sender).
                if shared.as_ref().is_some_and(|(_, born)| {
                    max_age.is_some_and(|m| Instant::now().duration_since(*born) >= m)
                }) {
                    *shared = None;
                }
                shared.clone()
            };
            if let Some((tx, born)) = shared.filter(|(tx, _)| !tx.is_closed()) {
                return Ok(self.checked(Sender::H2(tx), true, born));
            }
            let idle_timeout = limits.idle_timeout.unwrap_or(self.settings.idle_timeout);
            if let Some((conn, served, born)) = self.take_idle(idle_timeout, max_age) {
                let sender = match conn {
                    IdleConn::Raw(c) => Sender::Raw(c),
                    IdleConn::Hyper(tx) => Sender::H1(tx),
                };
                return Ok(self.checked(sender, true, born).served(served, limits));
            }
        }
        // A new connection. Its futures (DNS, TCP, TLS and HTTP handshakes) are large and
        // rarely needed; boxed, they do not inflate the state of every request (and of every
        // idle keep-alive connection, where hyper keeps the request future's box).
        Box::pin(self.connect_new(limits)).await
    }

    /// Open, secure and hand-shake a new connection.
    async fn connect_new(self: &Arc<Self>, limits: &ConnLimits) -> Result<Checkout, ProxyError> {
        let connect_timeout = limits
            .connect_timeout
            .unwrap_or(self.settings.connect_timeout);
        let deadline = tokio::time::Instant::now() + connect_timeout;
        let tcp = self.connect_tcp(connect_timeout, limits.keepalive).await?;
        match &self.tls {
            None => self
                .handshake(UpIo::Plain(tcp), self.protocol == Protocol::Http2)
                .await
                .map(|c| c.served(0, limits)),
            Some(t) => {
                let connector = tokio_rustls::TlsConnector::from(t.config.clone());
                let tls = match tokio::time::timeout_at(
                    deadline,
                    connector.connect(t.server_name.clone(), tcp),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::warn!(upstream = %self.target, error = %e, "upstream TLS handshake failed");
                        return Err(ProxyError::with(ErrorKind::UpstreamTls, e));
                    }
                    Err(_) => return Err(ProxyError::new(ErrorKind::ConnectTimeout)),
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                self.handshake(UpIo::Tls(Box::new(tls)), h2)
                    .await
                    .map(|c| c.served(0, limits))
            }
        }
    }

    fn checked(self: &Arc<Self>, sender: Sender, reused: bool, born: Instant) -> Checkout {
        Checkout {
            pool: self.clone(),
            sender,
            reused,
            born,
            served: 0,
            max_per_conn: None,
        }
    }

    /// A new connection ready for requests: HTTP/2 through hyper, HTTP/1.1 our own.
    async fn handshake(self: &Arc<Self>, io: UpIo, h2: bool) -> Result<Checkout, ProxyError> {
        if h2 {
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .handshake(TokioIo::new(io))
                .await
                .map_err(|e| ProxyError::with(ErrorKind::ConnectFailed, e))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream h2 connection closed with error");
                }
            });
            let born = Instant::now();
            *self.shared_h2.lock().unwrap_or_else(|p| p.into_inner()) = Some((tx.clone(), born));
            Ok(self.checked(Sender::H2(tx), false, born))
        } else {
            let conn = H1Conn::new(io);
            let born = conn.born();
            Ok(self.checked(Sender::Raw(conn), false, born))
        }
    }

    /// Hand an HTTP/1.1 connection to hyper, for a request our own client does not carry.
    async fn to_hyper(&self, conn: H1Conn) -> Result<http1::SendRequest<UpBody>, ProxyError> {
        let (tx, conn) = http1::Builder::new()
            .preserve_header_case(self.settings.preserve_header_case)
            .handshake(TokioIo::new(conn.into_io()))
            .await
            .map_err(|e| ProxyError::with(ErrorKind::ConnectFailed, e))?;
        // with_upgrades: a 101 hands the connection to the WebSocket tunnel.
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection closed with error");
            }
        });
        Ok(tx)
    }

    /// The upstream HTTP version of this pool.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
}

enum Sender {
    /// Our own HTTP/1.1 exchange (`h1`).
    Raw(H1Conn),
    H1(http1::SendRequest<UpBody>),
    H2(http2::SendRequest<UpBody>),
}

/// A connection checked out for one request.
pub struct Checkout {
    pool: Arc<EndpointPool>,
    sender: Sender,
    /// Whether the connection had served requests before.
    pub reused: bool,
    /// When the connection was established.
    born: Instant,
    served: u32,
    max_per_conn: Option<u32>,
}

/// Per-cluster connection settings (DestinationRule `connectionPool`), applied at checkout.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnLimits {
    /// `tcp.connectTimeout`; the bootstrap default when unset.
    pub connect_timeout: Option<Duration>,
    /// `http.idleTimeout`; the bootstrap default when unset.
    pub idle_timeout: Option<Duration>,
    /// `http.maxRequestsPerConnection`.
    pub max_requests_per_connection: Option<u32>,
    /// `tcp.tcpKeepalive`.
    pub keepalive: Option<Keepalive>,
    /// `tcp.idleTimeout`: a TCP-proxied connection with no byte either way for this long is
    /// closed (zero: never); the listener's default when unset. (For HTTP pools it is
    /// `idle_timeout`'s fallback, applied at compile time.)
    pub tcp_idle_timeout: Option<Duration>,
    /// `tcp.maxConnectionDuration`: an upstream HTTP connection is not reused past this age,
    /// and a TCP-proxied connection is closed at it.
    pub max_connection_duration: Option<Duration>,
}

/// `tcp.tcpKeepalive`: probes on idle upstream connections; unset parts keep the OS default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub time: Option<Duration>,
    /// Time between probes.
    pub interval: Option<Duration>,
    /// Unanswered probes before the connection is dropped.
    pub probes: Option<u32>,
}

impl Keepalive {
    fn apply(&self, s: &TcpStream) {
        let mut k = socket2::TcpKeepalive::new();
        if let Some(t) = self.time {
            k = k.with_time(t);
        }
        if let Some(i) = self.interval {
            k = k.with_interval(i);
        }
        #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
        if let Some(p) = self.probes {
            k = k.with_retries(p);
        }
        if let Err(e) = socket2::SockRef::from(s).set_tcp_keepalive(&k) {
            tracing::debug!(error = %e, "cannot set TCP keepalive");
        }
    }
}

impl Checkout {
    fn served(mut self, served: u32, limits: &ConnLimits) -> Self {
        self.served = served;
        self.max_per_conn = limits.max_requests_per_connection;
        self
    }

    /// Whether the request goes over HTTP/2 (absolute URI, no Host header).
    pub fn is_h2(&self) -> bool {
        matches!(self.sender, Sender::H2(_))
    }

    /// Whether `send_raw` can carry the request: an HTTP/1.1 connection of our own, and no
    /// header case to preserve (only hyper keeps it).
    pub fn is_raw(&self) -> bool {
        matches!(self.sender, Sender::Raw(_)) && !self.pool.settings.preserve_header_case
    }

    /// Send a request whose body is absent or buffered over our own HTTP/1.1 client (see
    /// `is_raw`) and wait for the response head.
    pub async fn send_raw(
        self,
        head: &RawHead<'_>,
        body: Option<&bytes::Bytes>,
    ) -> Result<Sent, ProxyError> {
        let Sender::Raw(conn) = self.sender else {
            return Err(ProxyError::new(ErrorKind::Internal));
        };
        match super::h1::send(
            conn,
            &self.pool,
            head,
            body,
            self.served + 1,
            self.max_per_conn,
        )
        .await
        {
            Ok(response) => Ok(Sent {
                response: response.map(|b| UpstreamBody::Raw(crate::inplace::boxed!(b))),
                conn: None,
            }),
            Err(e) => Err(ProxyError {
                reused: self.reused,
                ..e
            }),
        }
    }

    /// Whether the connection is TLS (the URI scheme for HTTP/2).
    pub fn is_tls(&self) -> bool {
        self.pool.tls.is_some()
    }

    /// Send `req` and wait for the response head.
    pub async fn send(self, req: Request<UpBody>) -> Result<Sent, ProxyError> {
        let reused = self.reused;
        let sender = match self.sender {
            Sender::Raw(conn) => {
                Sender::H1(self.pool.to_hyper(conn).await.map_err(|e| ProxyError {
                    reused,
                    ..ProxyError::with(ErrorKind::UpstreamReset, e)
                })?)
            }
            other => other,
        };
        match sender {
            Sender::Raw(_) => Err(ProxyError::new(ErrorKind::Internal)),
            Sender::H1(mut tx) => match tx.send_request(req).await {
                Ok(response) => Ok(Sent {
                    response: response.map(UpstreamBody::Hyper),
                    conn: Some(PooledConn {
                        pool: self.pool,
                        tx,
                        born: self.born,
                        served: self.served + 1,
                        max_per_conn: self.max_per_conn,
                    }),
                }),
                Err(e) => Err(map_send_error(e, reused)),
            },
            Sender::H2(mut tx) => {
                if tx.ready().await.is_err() {
                    return Err(ProxyError {
                        reused,
                        ..ProxyError::new(ErrorKind::UpstreamReset)
                    });
                }
                match tx.send_request(req).await {
                    Ok(response) => Ok(Sent {
                        response: response.map(UpstreamBody::Hyper),
                        conn: None,
                    }),
                    Err(e) => Err(map_send_error(e, reused)),
                }
            }
        }
    }
}

/// Classify a failed exchange: a refused stream or a request hyper never wrote are safe to
/// send again; anything else is a reset before the response head.
fn map_send_error(e: hyper::Error, reused: bool) -> ProxyError {
    let refused = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<h2::Error>())
        .and_then(h2::Error::reason)
        == Some(h2::Reason::REFUSED_STREAM);
    let kind = if refused || e.is_canceled() {
        ErrorKind::RefusedStream
    } else {
        ErrorKind::UpstreamReset
    };
    ProxyError {
        reused,
        ..ProxyError::with(kind, e)
    }
}
