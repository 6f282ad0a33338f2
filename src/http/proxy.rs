//! The per-request pipeline: snapshot -> route -> action -> upstream (with retries) -> reply.
//!
//! One snapshot is loaded at the start of a request and used to its end, so a config swap
//! never changes a request half-way. Every failure becomes a `ProxyError` answered by
//! `respond`; metrics and the access log are recorded once, when the response body ends.
//!
//! Depends on: `config::{ConfigStore, Snapshot}`, `route`, `upstream`, `error`, `body`,
//! `metrics`, `http::{headers, respond, log}`.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};

use super::headers;
use super::idle::{earliest, IdleWatch, Stalled, StreamActivity, Watched};
use super::log::{RequestBytes, RequestRecord};
use super::respond;
use super::strict;
use super::upgrade::Downstream;
use crate::body::{DownBody, ProxyBody, Streamed, UpBody};
use crate::config::{ConfigStore, Snapshot, TlsMode, TlsServer};
use crate::error::{ErrorKind, ProxyError};
use crate::inplace::{boxed, pin_boxed};
use crate::metrics::Metrics;
use crate::route::{
    host_of, pattern_matches, roll, Action, CorsDecision, RequestView, Route, WeightedDestination,
};
use crate::tls::identity::Identity;
use crate::upstream::h1::RawHead;
use crate::upstream::outlier::Outcome;
use crate::upstream::{retry, Cluster};

/// Shared, per-process request handling state.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// The active config.
    pub store: Arc<ConfigStore>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Largest body buffered for replay on retry (bytes).
    pub max_replay_body: usize,
    /// Access log format (off, Envoy's text line, JSON).
    pub access_log: crate::config::AccessLog,
    /// `x-forwarded-client-cert` handling.
    pub forward_client_cert: headers::ForwardClientCert,
    /// Bound on mirrored copies in flight.
    pub mirrors: super::mirror::Mirrors,
    /// Percent of requests sampled when meshgate starts their trace context.
    pub trace_sampling: f64,
    /// Longest request target accepted (bytes); longer gets 414.
    pub max_request_target: usize,
    /// Longest silence while a request waits for its response head (`--stream-idle-timeout`;
    /// `None`: unbounded, as on Istio's gateway).
    pub stream_idle_timeout: Option<std::time::Duration>,
}

/// What the request's connection tells about it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Client address.
    pub client: SocketAddr,
    /// The Gateway server port (or mesh port) the connection arrived on.
    pub port: u16,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The SNI of a terminated TLS connection (picks the Gateway server and its routes).
    pub sni: Option<Arc<str>>,
    /// The verified client certificate of a mutual TLS connection.
    pub peer_cert: Option<Arc<Identity>>,
    /// The client's `x-forwarded-for` element (`headers::forwarded_for`).
    pub forwarded_for: HeaderValue,
}

/// The request body as the retry loop sees it.
enum BodySlot {
    Empty,
    Buffered(Bytes),
    /// Streamed from the client; `sent` once an attempt has taken it.
    Stream {
        src: Arc<Streamed>,
        sent: bool,
    },
}

/// Longest a retry waits for the rest of a small streamed body before giving up the retry.
const REPLAY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl BodySlot {
    /// Whether another try can send the body: buffered, never sent, or streamed but small
    /// and complete (reading what the failed attempt left unread). Switches to the copy.
    async fn replayable(&mut self) -> bool {
        match self {
            BodySlot::Stream { src, sent: true } => match src.replay(REPLAY_WAIT).await {
                Some(b) => {
                    *self = BodySlot::Buffered(b);
                    true
                }
                None => false,
            },
            _ => true,
        }
    }

    /// The body when it needs no streaming: `Some(None)` for none, `Some(Some(bytes))` when
    /// buffered; `None` for a streamed body.
    fn buffered(&self) -> Option<Option<&Bytes>> {
        match self {
            BodySlot::Empty => Some(None),
            BodySlot::Buffered(b) => Some(Some(b)),
            BodySlot::Stream { .. } => None,
        }
    }

    fn take(&mut self) -> UpBody {
        match self {
            BodySlot::Empty => UpBody::Empty,
            BodySlot::Buffered(b) => UpBody::Full(Some(b.clone())),
            BodySlot::Stream { src, sent } => {
                *sent = true;
                UpBody::Stream(src.clone())
            }
        }
    }
}

/// The protocol an HTTP/1.1 request asked to upgrade to, noted before its hop-by-hop
/// fields (`Upgrade`, `Connection: upgrade`) are dropped for routing.
#[derive(Clone)]
struct UpgradeProtocol(HeaderValue);

impl Proxy {
    /// Handle one request; never fails (errors become responses).
    pub async fn handle(&self, req: Request<DownBody>, conn: &ConnInfo) -> Response<ProxyBody> {
        let start = Instant::now();
        let snap = self.store.load();
        let (mut parts, body) = req.into_parts();
        // Room for what the gateway adds (request id, trace context, x-forwarded-*, host):
        // one growth of the map here instead of several rehashes as they go in.
        parts.headers.reserve(10);
        let target_len = parts.uri.path_and_query().map_or(0, |p| p.as_str().len())
            + parts.uri.authority().map_or(0, |a| a.as_str().len());
        // Match and forward the normalised path, as Envoy does for Istio.
        let normalized = match strict::normalize_path(parts.uri.path()) {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(p) => Some(match parts.uri.query() {
                Some(q) => format!("{p}?{q}"),
                None => p,
            }),
        };
        if let Some(pq) = normalized {
            let mut up = parts.uri.clone().into_parts();
            up.path_and_query = pq.parse().ok();
            if let Ok(uri) = Uri::from_parts(up) {
                parts.uri = uri;
            }
        }
        let request_id = headers::ensure_request_id(&mut parts.headers);
        let trace = headers::TraceContext::start(&parts.headers, self.trace_sampling);
        let grpc = parts
            .headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        // Kept as a header value: Host (HTTP/1.1) is a slice of the request's bytes, so
        // holding it costs a reference count where a String cost an allocation and a copy,
        // and it goes upstream as the Host header unchanged.
        let authority = match parts.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => parts
                .headers
                .get(HOST)
                .filter(|h| h.to_str().is_ok())
                .cloned(),
        }
        .unwrap_or_else(|| HeaderValue::from_static(""));
        // Boxed from the start: the record goes with the response body as its completion
        // anyway, and a box moves as a pointer where the record itself (hundreds of bytes)
        // was copied at each hand-over, to `forward` and into the body.
        let mut rec = boxed!(RequestRecord {
            metrics: self.metrics.clone(),
            start,
            access_log: self.access_log,
            envoy: (self.access_log == crate::config::AccessLog::Text).then(|| {
                Box::new(super::log::EnvoyFields {
                    start: std::time::SystemTime::now(),
                    version: parts.version,
                    query: parts.uri.query().map(str::to_owned),
                    forwarded_for: parts.headers.get("x-forwarded-for").cloned(),
                    user_agent: parts.headers.get(http::header::USER_AGENT).cloned(),
                })
            }),
            client: conn.client,
            method: parts.method.clone(),
            authority,
            // Only the access log prints the path.
            path: if self.access_log == crate::config::AccessLog::Off {
                String::new()
            } else {
                parts.uri.path().to_owned()
            },
            protocol: if grpc { "grpc" } else { "http" },
            request_id,
            route: None,
            cluster: None,
            upstream: None,
            status: 0,
            grpc_status: None,
            flags: "-",
            fault_delayed: false,
            request_bytes: RequestBytes::Known(0),
            conn: None,
            in_flight: None,
            admitted: None,
            stream: parts.extensions.get::<Arc<StreamActivity>>().cloned(),
        });
        if let Err(r) = strict::check(
            parts.version,
            &parts.headers,
            parts.uri.authority().is_some(),
            target_len,
            self.max_request_target,
        ) {
            tracing::debug!(reason = r.reason, "request rejected before routing");
            let mut resp = respond::text(r.status, r.reason);
            if parts.version != Version::HTTP_2 {
                // Framing we refuse to interpret leaves the connection unusable.
                resp.headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            return finish(rec, resp, "DPE");
        }
        // Hop-by-hop fields describe the client's connection, not the request: Envoy drops
        // them before routing, and so do we, so a header match sees the same request whether
        // the HTTP/1.1 fast path (which never stores a plain `Connection: close`) or hyper
        // read it. An upgrade's protocol is kept aside first (rare: one extension insert).
        if let Some(proto) = headers::upgrade_request(&parts.headers, parts.version) {
            parts.extensions.insert(UpgradeProtocol(proto));
        }
        headers::strip_hop_by_hop(&mut parts.headers);
        // Only ever built from values that are valid strings.
        let authority = rec.authority.to_str().unwrap_or_default();
        if authority.is_empty() {
            return finish_error(rec, &ProxyError::new(ErrorKind::BadRequest));
        }
        // HTTP/2 extended CONNECT (RFC 8441, WebSocket over h2) is routed like the GET it
        // stands for; a plain CONNECT is not routed (no tunnelling to arbitrary hosts).
        let extended_connect = parts.method == Method::CONNECT
            && parts.extensions.get::<hyper::ext::Protocol>().is_some();
        let view = RequestView {
            method: if extended_connect {
                "GET"
            } else {
                parts.method.as_str()
            },
            scheme: conn.scheme,
            authority,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            port: conn.port,
        };
        let host = host_of(authority);
        let table = if conn.scheme == "https" {
            // Routes come from the server the SNI chose; a Host outside its hosts (HTTP/2
            // coalescing, a forged Host) must not reach another server's routes.
            let server = snap
                .tls
                .get(&conn.port)
                .and_then(|t| t.server_for(conn.sni.as_deref()));
            match server {
                Some(TlsServer {
                    mode: TlsMode::Terminate { table, .. },
                    hosts,
                    ..
                }) if hosts.iter().any(|h| pattern_matches(h, host)) => Some(table),
                _ => return finish_error(rec, &ProxyError::new(ErrorKind::Misdirected)),
            }
        } else {
            snap.table(conn.port)
        };
        let vhost = table.and_then(|t| t.hosts.lookup(host));
        if vhost.is_some_and(|v| v.https_redirect) {
            let loc = match parts.uri.query() {
                Some(q) => format!("https://{host}{}?{q}", parts.uri.path()),
                None => format!("https://{host}{}", parts.uri.path()),
            };
            return finish(
                rec,
                respond::redirect(http::StatusCode::MOVED_PERMANENTLY, &loc),
                "-",
            );
        }
        let found = if parts.method == Method::CONNECT && !extended_connect {
            None
        } else {
            vhost.and_then(|v| v.find(&view))
        };
        let Some((route, block)) = found else {
            return finish_error(rec, &ProxyError::new(ErrorKind::NoRoute));
        };
        rec.route = Some(route.name.clone());
        // CORS runs before the router, as Envoy's filter does: a preflight never reaches
        // the upstream, and allowed requests get their headers on whatever answers.
        let mut cors = None;
        if let Some(c) = &route.cors {
            match c.decide(&parts.method, &parts.headers) {
                CorsDecision::Pass => {}
                CorsDecision::Preflight(h) => return finish(rec, respond::preflight(h), "-"),
                CorsDecision::Decorate(h) => cors = Some(h),
            }
        }
        let mut resp = match &route.action {
            // Envoy applies a route's response header operations to its direct responses and
            // redirects as well (Istio users set HSTS and friends this way).
            Action::Respond(d) => {
                let mut resp = respond::direct(d);
                route.headers.response.apply(resp.headers_mut());
                finish(rec, resp, "-")
            }
            Action::Redirect(r) => {
                let loc = r.location_at(
                    conn.scheme,
                    authority,
                    parts.uri.path(),
                    parts.uri.query(),
                    Some(conn.port),
                );
                let mut resp = respond::redirect(r.code, &loc);
                route.headers.response.apply(resp.headers_mut());
                finish(rec, resp, "-")
            }
            Action::Forward(f) => {
                // Fault injection happens before the upstream is contacted: an aborted
                // request never reaches it.
                if let Some(fault) = &route.fault {
                    if let Some(d) = fault.delay.as_ref().filter(|d| roll(d.percent)) {
                        tokio::time::sleep(d.fixed).await;
                        rec.fault_delayed = true;
                    }
                    if let Some(a) = fault.abort.as_ref().filter(|a| roll(a.percent)) {
                        let (resp, grpc) = respond::fault_abort(a.status);
                        rec.grpc_status = grpc;
                        return with_headers(finish(rec, resp, "FI"), cors);
                    }
                }
                let pick = if f.destinations.len() == 1 {
                    0
                } else {
                    fastrand::u32(..f.total_weight)
                };
                let Some(dest) = f.pick(pick) else {
                    return finish_error(rec, &ProxyError::new(ErrorKind::NoHealthyEndpoint));
                };
                // Only the HTTP/1.1 fast path makes `Full` bodies, and its writer copies an
                // upstream's raw header fields; CORS edits the response's map.
                let raw_response = matches!(body, DownBody::Full(_)) && cors.is_none();
                self.forward(
                    &snap,
                    route,
                    block,
                    dest,
                    parts,
                    body,
                    trace,
                    conn,
                    rec,
                    raw_response,
                )
                .await
            }
        };
        if let Some(h) = cors {
            resp.headers_mut().extend(h);
        }
        resp
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        snap: &Arc<Snapshot>,
        route: &Route,
        block: usize,
        dest: &WeightedDestination,
        mut parts: Parts,
        body: DownBody,
        trace: Option<headers::TraceContext>,
        conn: &ConnInfo,
        mut rec: Box<RequestRecord>,
        raw_response: bool,
    ) -> Response<ProxyBody> {
        let Some(cluster) = snap.clusters.get(dest.cluster).cloned() else {
            return finish_error(rec, &ProxyError::new(ErrorKind::Internal));
        };
        rec.cluster = Some(cluster.clone());

        // Upstream request head.
        let prefix = route
            .matches
            .get(block)
            .and_then(|m| m.uri.as_ref())
            .map_or("/", |u| u.rewritten_part(parts.uri.path()));
        let rewritten = route
            .rewrite
            .as_ref()
            .and_then(|rw| rw.path(parts.uri.path(), prefix));
        // Borrowed from the request unless rewritten: no copy of the common case. An
        // absolute-form target with an empty path (`http://h?q`) still goes out as `/?q`.
        let path = rewritten.as_deref().unwrap_or(parts.uri.path());
        let path_and_query: std::borrow::Cow<'_, str> =
            match (&rewritten, parts.uri.path_and_query(), parts.uri.query()) {
                (None, Some(pq), _) if pq.as_str().starts_with(path) => pq.as_str().into(),
                (_, _, Some(q)) => format!("{path}?{q}").into(),
                (_, _, None) => path.into(),
            };
        let host_header = route
            .rewrite
            .as_ref()
            .and_then(|rw| rw.authority.as_ref())
            .filter(|a| a.to_str().is_ok())
            .unwrap_or(&rec.authority)
            .clone();
        let authority = host_header.to_str().unwrap_or_default();
        let downstream_version = parts.version;
        // An HTTP/1.1 protocol upgrade (WebSocket): the Upgrade header and the client's end
        // of the upgraded connection are kept aside; hop-by-hop stripping would lose them.
        // Extended CONNECT becomes an HTTP/1.1 upgrade to the upstream, and its 101 a 200.
        let h2_protocol = parts
            .extensions
            .remove::<hyper::ext::Protocol>()
            .filter(|_| parts.method == Method::CONNECT)
            .and_then(|p| HeaderValue::from_str(p.as_str()).ok());
        let extended_connect = h2_protocol.is_some();
        let mut upgrade = h2_protocol
            .or_else(|| parts.extensions.remove::<UpgradeProtocol>().map(|u| u.0))
            .and_then(|proto| Some((proto, Downstream::take(&mut parts.extensions)?)));
        if extended_connect {
            parts.method = Method::GET;
            if upgrade
                .as_ref()
                .is_some_and(|(p, _)| p.as_bytes().eq_ignore_ascii_case(b"websocket"))
                && !parts.headers.contains_key("sec-websocket-key")
            {
                // RFC 8441 clients send no key; an HTTP/1.1 WebSocket server needs one.
                use base64::Engine as _;
                let key = base64::engine::general_purpose::STANDARD
                    .encode(fastrand::u128(..).to_le_bytes());
                if let Ok(v) = HeaderValue::from_str(&key) {
                    parts.headers.insert("sec-websocket-key", v);
                }
            }
        }
        if let Some((proto, _)) = &upgrade {
            parts.headers.insert(http::header::UPGRADE, proto.clone());
            parts.headers.insert(
                http::header::CONNECTION,
                HeaderValue::from_static("upgrade"),
            );
        }
        headers::set_forwarded(&mut parts.headers, &conn.forwarded_for, conn.scheme);
        headers::forward_client_cert(
            &mut parts.headers,
            self.forward_client_cert,
            conn.peer_cert.as_deref(),
        );
        dest.headers.request.apply(&mut parts.headers);
        route.headers.request.apply(&mut parts.headers);
        // Request body: buffered when small enough to replay, streamed otherwise.
        let policy = &route.retry;
        let content_length = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // An upgrade's bytes flow through the tunnel after the 101, never as a body.
        let mut streamed: Option<Arc<AtomicU64>> = None;
        let mut streamed_src: Option<Arc<Streamed>> = None;
        let mut slot = if body.is_end_stream() || upgrade.is_some() {
            BodySlot::Empty
        } else if content_length.is_some_and(|n| n <= self.max_replay_body as u64) {
            // Small bodies are buffered even without retries: the transparent resend after
            // the keep-alive race needs them too.
            let collected = match self.stream_idle_timeout.filter(|t| !t.is_zero()) {
                None => Limited::new(body, self.max_replay_body).collect().await,
                Some(t) => {
                    Limited::new(Watched::new(body, t), self.max_replay_body)
                        .collect()
                        .await
                }
            };
            match collected {
                Ok(c) => {
                    let b = c.to_bytes();
                    rec.request_bytes = RequestBytes::Known(b.len() as u64);
                    BodySlot::Buffered(b)
                }
                Err(e) if e.is::<Stalled>() => {
                    let e = ProxyError::new(ErrorKind::RequestIdle);
                    if rec.protocol == "grpc" {
                        return finish_error(rec, &e);
                    }
                    let resp = close_if_body_due(respond::error(&e), &e, downstream_version);
                    return finish(rec, resp, e.flag());
                }
                Err(e) => {
                    tracing::debug!(error = %e, "client request body failed");
                    return finish_error(rec, &ProxyError::new(ErrorKind::DownstreamClosed));
                }
            }
        } else {
            let count = Arc::new(AtomicU64::new(0));
            if let Some(act) = &rec.stream {
                act.watch_body(count.clone());
            }
            streamed = Some(count.clone());
            rec.request_bytes = RequestBytes::Counted(count.clone());
            let src = Arc::new(Streamed::new(body, count, self.max_replay_body));
            streamed_src = Some(src.clone());
            BodySlot::Stream { src, sent: false }
        };

        for m in route.mirrors.iter().filter(|m| roll(m.percent)) {
            let Some(mc) = snap.clusters.get(m.cluster).cloned() else {
                continue;
            };
            let body = match &slot {
                BodySlot::Empty => Bytes::new(),
                BodySlot::Buffered(b) => b.clone(),
                // A streamed body is not held twice: the copy is dropped (Envoy would stream
                // it; we bound memory instead).
                BodySlot::Stream { .. } => {
                    self.metrics
                        .mirrors
                        .with_label_values(&[&mc.name, "dropped"])
                        .inc();
                    continue;
                }
            };
            self.mirrors.send(
                mc,
                super::mirror::Copy {
                    method: &parts.method,
                    headers: &parts.headers,
                    authority,
                    path_and_query: &path_and_query,
                    body,
                    trace: trace.as_ref(),
                },
                &self.metrics,
            );
        }
        let admitted = match cluster.admit().await {
            Ok(a) => a,
            Err(_) => return finish_error(rec, &ProxyError::new(ErrorKind::Overflow)),
        };
        // Activity so far: the head, and a buffered body that has fully arrived.
        let mut idle = IdleWatch::new(
            self.stream_idle_timeout,
            streamed.as_deref(),
            Instant::now(),
        );
        let mut retry_slot = None;
        let idempotent = retry::is_idempotent(&parts.method);
        let deadline = route.timeout.map(|t| rec.start + t);
        let mut tries: u32 = 0;
        let mut avoid = None;
        let mut fresh_used = false;
        let mut fresh = false;
        let hashed = cluster
            .hash_key
            .as_ref()
            .map(|k| k.hash(&parts.headers, parts.uri.query(), conn.client.ip()))
            .unwrap_or_default();
        // The response's fields may stay raw when nothing here edits them.
        let raw_response = raw_response
            && upgrade.is_none()
            && dest.headers.response.is_empty()
            && route.headers.response.is_empty()
            && hashed.set_cookie.is_none();
        loop {
            tries += 1;
            let Some((idx, ep)) = cluster.pick(avoid, hashed.hash) else {
                return finish_error(rec, &ProxyError::new(ErrorKind::NoHealthyEndpoint));
            };
            let in_flight = cluster.start(idx);
            // Boxed: held in a local and then moved into `timeout_at`, an unboxed attempt
            // would take room twice in this future's state (~1.5 KiB each), and that state
            // is copied whenever hyper moves the request future (several times per HTTP/2
            // stream).
            let mut attempt = pin_boxed!(async {
                let co = ep.pool.checkout(fresh, &cluster.limits.conn).await?;
                if upgrade.is_some() && co.is_h2() {
                    // Upgrades need HTTP/1.1 to the upstream (h2 has extended CONNECT instead).
                    return Err(ProxyError::new(ErrorKind::UpgradeUnsupported));
                }
                // The common case: HTTP/1.1, a buffered or no body, no upgrade; written
                // straight from the request's headers, no copy of them, no URI to build.
                if co.is_raw() && upgrade.is_none() {
                    if let Some(body) = slot.buffered() {
                        let head = RawHead {
                            method: &parts.method,
                            path_and_query: &path_and_query,
                            host: &host_header,
                            headers: &parts.headers,
                            trace: trace.as_ref(),
                            raw_response,
                        };
                        return co.send_raw(&head, body).await;
                    }
                }
                let mut headers = parts.headers.clone();
                if let Some(t) = &trace {
                    t.insert_into(&mut headers);
                }
                // HTTP/2 carries the authority in the URI; HTTP/1.1 in Host, origin-form.
                let (uri, version) = if co.is_h2() {
                    headers.remove(HOST);
                    let scheme = if co.is_tls() { "https" } else { "http" };
                    (
                        format!("{scheme}://{authority}{path_and_query}").parse::<Uri>(),
                        Version::HTTP_2,
                    )
                } else {
                    headers.insert(HOST, host_header.clone());
                    (path_and_query.parse::<Uri>(), Version::HTTP_11)
                };
                let uri = uri.map_err(|e| ProxyError::with(ErrorKind::BadRequest, e))?;
                let mut req = Request::new(slot.take());
                *req.method_mut() = parts.method.clone();
                *req.uri_mut() = uri;
                *req.version_mut() = version;
                *req.headers_mut() = headers;
                *req.extensions_mut() = parts.extensions.clone();
                co.send(req).await
            });
            let per_try = policy.per_try_timeout.map(|p| Instant::now() + p);
            let limit = earliest(per_try, deadline);
            let result = loop {
                let Some(at) = earliest(limit, idle.as_ref().map(IdleWatch::next_check)) else {
                    break (&mut attempt).await;
                };
                match tokio::time::timeout_at(at.into(), &mut attempt).await {
                    Ok(r) => break r,
                    Err(_) => {
                        let now = Instant::now();
                        if deadline.is_some_and(|d| now >= d) {
                            break Err(ProxyError::new(ErrorKind::RouteTimeout));
                        }
                        if per_try.is_some_and(|p| now >= p) {
                            break Err(ProxyError::new(ErrorKind::PerTryTimeout));
                        }
                        if idle.as_mut().is_some_and(|w| w.expired(now)) {
                            let whole = streamed_src.as_ref().is_none_or(|s| s.finished());
                            break Err(ProxyError::new(if whole {
                                ErrorKind::StreamIdle
                            } else {
                                ErrorKind::RequestIdle
                            }));
                        }
                    }
                }
            };
            drop(attempt);
            fresh = false;
            rec.upstream = Some(ep.pool.label().clone());
            match result {
                Ok(sent) => {
                    let status = sent.response.status().as_u16();
                    cluster.report(idx, Outcome::Status(status));
                    let grpc_status = grpc_status(&sent.response);
                    if retry::on_status(policy, status, grpc_status, idempotent, tries)
                        && slot.replayable().await
                    {
                        drop(sent);
                        self.note_retry(&cluster);
                        if !backoff(tries, deadline).await {
                            return finish_error(rec, &ProxyError::new(ErrorKind::RouteTimeout));
                        }
                        avoid = Some(idx);
                        continue;
                    }
                    let exhausted = tries > 1 && policy.retries_status(status, grpc_status);
                    let mut sent = sent;
                    let switched = match upgrade.take() {
                        Some((proto, downstream))
                            if sent.response.status() == http::StatusCode::SWITCHING_PROTOCOLS =>
                        {
                            let upstream = hyper::upgrade::on(&mut sent.response);
                            // The connection now belongs to the tunnel, never to the pool.
                            sent.conn = None;
                            super::upgrade::tunnel(
                                downstream,
                                upstream,
                                cluster.clone(),
                                self.metrics.clone(),
                            );
                            Some(proto)
                        }
                        _ => None,
                    };
                    let (mut rparts, rbody) = sent.response.into_parts();
                    headers::strip_hop_by_hop(&mut rparts.headers);
                    match switched {
                        Some(_) if extended_connect => {
                            // RFC 8441: the h2 stream is the tunnel; success is a 200.
                            rparts.status = http::StatusCode::OK;
                            rparts.headers.remove("sec-websocket-accept");
                        }
                        Some(proto) => {
                            rparts.headers.insert(http::header::UPGRADE, proto);
                            rparts.headers.insert(
                                http::header::CONNECTION,
                                HeaderValue::from_static("upgrade"),
                            );
                        }
                        None => {}
                    }
                    dest.headers.response.apply(&mut rparts.headers);
                    route.headers.response.apply(&mut rparts.headers);
                    if let Some(c) = &hashed.set_cookie {
                        rparts.headers.append(http::header::SET_COOKIE, c.clone());
                    }
                    // hyper writes an HTTP/1.0 status line for an HTTP/1.0 client whatever
                    // this says, but keeps that client's connection alive (when it asked
                    // with `Connection: keep-alive`) only for a response marked HTTP/1.1.
                    rparts.version = match downstream_version {
                        Version::HTTP_10 => Version::HTTP_11,
                        v => v,
                    };
                    rec.status = rparts.status.as_u16();
                    rec.grpc_status = grpc_status;
                    rec.flags = if exhausted { "URX" } else { "-" };
                    rec.conn = sent.conn;
                    rec.in_flight = Some(in_flight);
                    rec.admitted = Some(admitted);
                    let body = ProxyBody::upstream(rbody).on_complete(rec);
                    return Response::from_parts(rparts, body);
                }
                Err(e) => {
                    let client_broke = streamed.as_ref().is_some_and(|c| {
                        c.load(std::sync::atomic::Ordering::Relaxed)
                            & crate::body::DOWNSTREAM_FAILED
                            != 0
                    });
                    if client_broke {
                        // Malformed or aborted request body: the client's fault, 400 and close
                        // (Envoy's downstream protocol error); never retried.
                        let mut resp =
                            respond::text(http::StatusCode::BAD_REQUEST, "invalid request body");
                        if downstream_version != Version::HTTP_2 {
                            resp.headers_mut().insert(
                                http::header::CONNECTION,
                                HeaderValue::from_static("close"),
                            );
                        }
                        return finish(rec, resp, "DPE");
                    }
                    if e.side() == crate::error::Side::Upstream {
                        cluster.report(idx, Outcome::Failure);
                    }
                    if matches!(e.kind, ErrorKind::ConnectFailed | ErrorKind::ConnectTimeout) {
                        self.metrics
                            .connect_errors
                            .with_label_values(&[&*cluster.name])
                            .inc();
                    }
                    tracing::debug!(cluster = %cluster.name, upstream = ?rec.upstream, error = %e, try_ = tries, "upstream attempt failed");
                    // The keep-alive race: a pooled connection the upstream had closed.
                    // Send again once on a fresh connection; not an Istio retry.
                    if e.reused
                        && !fresh_used
                        && matches!(e.kind, ErrorKind::UpstreamReset | ErrorKind::RefusedStream)
                        && slot.replayable().await
                    {
                        fresh_used = true;
                        fresh = true;
                        tries -= 1;
                        avoid = None;
                        continue;
                    }
                    if retry::on_error(policy, &e, idempotent, tries)
                        && slot.replayable().await
                        && take_retry_slot(&cluster, &mut retry_slot)
                    {
                        self.note_retry(&cluster);
                        if !backoff(tries, deadline).await {
                            return finish_error(rec, &ProxyError::new(ErrorKind::RouteTimeout));
                        }
                        avoid = Some(idx);
                        continue;
                    }
                    let mut rec = rec;
                    let flags = if tries > 1 {
                        with_urx(e.flag())
                    } else {
                        e.flag()
                    };
                    let resp = if rec.protocol == "grpc" {
                        let (resp, code) = respond::grpc_error(&e);
                        rec.grpc_status = Some(code);
                        resp
                    } else {
                        respond::error(&e)
                    };
                    rec.flags = flags;
                    return finish_response(rec, close_if_body_due(resp, &e, downstream_version));
                }
            }
        }
    }

    fn note_retry(&self, cluster: &Cluster) {
        self.metrics
            .retries
            .with_label_values(&[&*cluster.name])
            .inc();
    }
}

/// Count one more retry against the cluster's `maxRetries` (the slot is held until the
/// request ends); false when the limit is reached.
fn take_retry_slot(cluster: &Arc<Cluster>, slot: &mut Option<crate::upstream::RetrySlot>) -> bool {
    if slot.is_some() {
        return true;
    }
    *slot = cluster.retry_slot();
    slot.is_some()
}

/// Sleep the back-off before retry `tries`; false when the route deadline comes first.
async fn backoff(tries: u32, deadline: Option<Instant>) -> bool {
    let wait = retry::backoff(tries);
    match deadline {
        Some(d) if Instant::now() + wait >= d => false,
        _ => {
            tokio::time::sleep(wait).await;
            true
        }
    }
}

fn grpc_status(r: &Response<crate::body::UpstreamBody>) -> Option<u32> {
    // A constant name: looking up by `&str` parses and lowercases the name every time.
    const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
    let value = match r.body().raw_fields() {
        Some(f) => f.get(b"grpc-status")?,
        None => r.headers().get(&GRPC_STATUS)?.as_bytes(),
    };
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn with_urx(flag: &'static str) -> &'static str {
    match flag {
        "UF" => "UF,URX",
        "UC" => "UC,URX",
        "UR" => "UR,URX",
        "UT" => "UT,URX",
        "UH" => "UH,URX",
        other => other,
    }
}

fn with_headers(mut resp: Response<ProxyBody>, h: Option<http::HeaderMap>) -> Response<ProxyBody> {
    if let Some(h) = h {
        resp.headers_mut().extend(h);
    }
    resp
}

/// An HTTP/1.1 connection whose request body was cut short by the stream idle timeout
/// cannot carry another request: its framing is mid-body.
fn close_if_body_due(
    mut resp: Response<ProxyBody>,
    e: &ProxyError,
    version: Version,
) -> Response<ProxyBody> {
    if e.kind == ErrorKind::RequestIdle && version != Version::HTTP_2 {
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

fn finish_error(mut rec: Box<RequestRecord>, e: &ProxyError) -> Response<ProxyBody> {
    rec.flags = e.flag();
    if rec.protocol == "grpc" {
        // gRPC clients read errors from grpc-status, not the HTTP status (Envoy does this too).
        let (resp, code) = respond::grpc_error(e);
        rec.grpc_status = Some(code);
        return finish_response(rec, resp);
    }
    finish_response(rec, respond::error(e))
}

fn finish(
    mut rec: Box<RequestRecord>,
    resp: Response<ProxyBody>,
    flags: &'static str,
) -> Response<ProxyBody> {
    rec.flags = flags;
    finish_response(rec, resp)
}

fn finish_response(mut rec: Box<RequestRecord>, resp: Response<ProxyBody>) -> Response<ProxyBody> {
    rec.status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, body.on_complete(rec))
}
