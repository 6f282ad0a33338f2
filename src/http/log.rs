//! What is recorded when a request ends: Istio metrics and the access log line. Runs from
//! the response body's completion hook, so durations and byte counts cover the whole body.
//!
//! Depends on: `metrics`, `body`, `upstream::PooledConn`, tracing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method};

use crate::body::Completion;
use crate::config::AccessLog;
use crate::metrics::Metrics;
use crate::upstream::{Admitted, Cluster, InFlight, PooledConn};

/// Everything the end-of-request record needs.
pub(crate) struct RequestRecord {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) start: Instant,
    pub(crate) access_log: AccessLog,
    /// What Envoy's default text line needs beyond the rest (text access log only).
    pub(crate) envoy: Option<Box<EnvoyFields>>,
    pub(crate) client: SocketAddr,
    pub(crate) method: Method,
    /// The request's authority (`:authority` or Host), empty when it had none.
    pub(crate) authority: HeaderValue,
    /// The request path; empty unless an access log prints it.
    pub(crate) path: String,
    pub(crate) protocol: &'static str,
    pub(crate) request_id: HeaderValue,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) cluster: Option<Arc<Cluster>>,
    pub(crate) upstream: Option<Arc<str>>,
    pub(crate) status: u16,
    pub(crate) grpc_status: Option<u32>,
    pub(crate) flags: &'static str,
    /// A `fault.delay` held the request (response flag `DI`, added to the others).
    pub(crate) fault_delayed: bool,
    pub(crate) request_bytes: RequestBytes,
    pub(crate) conn: Option<PooledConn>,
    /// Counts the request against its endpoint (LEAST_REQUEST) until the body ends.
    pub(crate) in_flight: Option<InFlight>,
    /// Holds the request's slot under the cluster's connectionPool limits until the body ends.
    pub(crate) admitted: Option<Admitted>,
    /// An HTTP/2 stream under the stream idle timeout: an expiry is flagged `SI`.
    pub(crate) stream: Option<Arc<super::idle::StreamActivity>>,
}

/// Request details only Envoy's default access log line prints.
pub(crate) struct EnvoyFields {
    pub(crate) start: std::time::SystemTime,
    pub(crate) version: http::Version,
    pub(crate) query: Option<String>,
    pub(crate) forwarded_for: Option<HeaderValue>,
    pub(crate) user_agent: Option<HeaderValue>,
}

/// Request body size: known up front, or counted while streaming.
pub(crate) enum RequestBytes {
    Known(u64),
    Counted(Arc<AtomicU64>),
}

impl RequestBytes {
    fn get(&self) -> u64 {
        match self {
            RequestBytes::Known(n) => *n,
            RequestBytes::Counted(c) => c.load(Ordering::Relaxed) & !crate::body::DOWNSTREAM_FAILED,
        }
    }
}

impl Completion for RequestRecord {
    fn finish(&mut self, bytes: u64, complete: bool) {
        self.in_flight = None;
        self.admitted = None;
        if let Some(conn) = self.conn.take() {
            // An unfinished body leaves the connection mid-message: let it close.
            if complete {
                conn.release();
            }
        }
        let elapsed_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let code = itoa(self.status);
        let (service, name, ns, subset, cluster) = match &self.cluster {
            Some(c) => (
                &*c.service,
                &*c.service_name,
                &*c.namespace,
                &*c.subset,
                &*c.name,
            ),
            None => ("unknown", "unknown", "unknown", "", "unknown"),
        };
        let base = if !complete && self.stream.as_ref().is_some_and(|s| s.is_expired()) {
            "SI"
        } else if !complete && self.flags == "-" {
            "DC"
        } else {
            self.flags
        };
        let flags: std::borrow::Cow<'static, str> = match (self.fault_delayed, base) {
            (false, f) => f.into(),
            (true, "-") => "DI".into(),
            (true, f) => format!("DI,{f}").into(),
        };
        let flags = &*flags;
        let m = &self.metrics;
        let resolve = || {
            let grpc = self.grpc_status.map(|g| g.to_string()).unwrap_or_default();
            m.request_stats(&[
                "source",
                "meshgate",
                "",
                service,
                name,
                ns,
                subset,
                cluster,
                self.protocol,
                &code,
                &grpc,
                flags,
                "none",
            ])
        };
        let cache = match &self.cluster {
            Some(c) => &c.stats,
            None => &*m.unrouted_stats,
        };
        let slot = cache.slot(
            self.status,
            self.protocol == "grpc",
            self.grpc_status,
            flags,
        );
        let uncached;
        let stats = match slot {
            Some(slot) => slot.get_or_init(resolve),
            None => {
                uncached = resolve();
                &uncached
            }
        };
        stats.requests.inc();
        stats.duration.observe(elapsed_ms);
        let req_bytes = self.request_bytes.get();
        stats.request_bytes.observe(req_bytes as f64);
        stats.response_bytes.observe(bytes as f64);
        if let (AccessLog::Text, Some(e)) = (self.access_log, &self.envoy) {
            let line = envoy_line(self, e, flags, req_bytes, bytes, elapsed_ms as u64);
            tracing::info!(target: "meshgate::access", "{line}");
        } else if self.access_log == AccessLog::Json {
            tracing::info!(
                target: "meshgate::access",
                method = %self.method,
                authority = self.authority.to_str().unwrap_or_default(),
                path = %self.path,
                protocol = self.protocol,
                response_code = self.status,
                response_flags = flags,
                bytes_received = req_bytes,
                bytes_sent = bytes,
                duration_ms = elapsed_ms as u64,
                upstream_host = self.upstream.as_deref().unwrap_or("-"),
                upstream_cluster = cluster,
                route_name = self.route.as_deref().unwrap_or("-"),
                request_id = self.request_id.to_str().unwrap_or("-"),
                downstream_remote_address = %self.client,
            );
        }
    }
}

/// The status as a metric label without allocating for the common codes.
fn itoa(n: u16) -> std::borrow::Cow<'static, str> {
    match n {
        200 => "200".into(),
        201 => "201".into(),
        204 => "204".into(),
        301 => "301".into(),
        302 => "302".into(),
        304 => "304".into(),
        400 => "400".into(),
        401 => "401".into(),
        403 => "403".into(),
        404 => "404".into(),
        500 => "500".into(),
        502 => "502".into(),
        503 => "503".into(),
        504 => "504".into(),
        other => other.to_string().into(),
    }
}

/// Envoy's default access log format:
/// `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
/// %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
/// %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
/// "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"`.
fn envoy_line(
    r: &RequestRecord,
    e: &EnvoyFields,
    flags: &str,
    received: u64,
    sent: u64,
    duration_ms: u64,
) -> String {
    let dash = |v: Option<&HeaderValue>| {
        v.and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty())
            .unwrap_or("-")
            .to_owned()
    };
    let path = match &e.query {
        Some(q) => format!("{}?{q}", r.path),
        None => r.path.clone(),
    };
    let protocol = match e.version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    };
    format!(
        "[{}] \"{} {} {}\" {} {} {} {} {} - \"{}\" \"{}\" \"{}\" \"{}\" \"{}\"",
        rfc3339_millis(e.start),
        r.method,
        path,
        protocol,
        r.status,
        flags,
        received,
        sent,
        duration_ms,
        dash(e.forwarded_for.as_ref()),
        dash(e.user_agent.as_ref()),
        dash(Some(&r.request_id)),
        r.authority.to_str().unwrap_or_default(),
        r.upstream.as_deref().unwrap_or("-"),
    )
}

/// `2016-04-15T20:17:00.310Z` (UTC, milliseconds), as Envoy prints `%START_TIME%`.
fn rfc3339_millis(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_format() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_460_751_420_310);
        assert_eq!(rfc3339_millis(t), "2016-04-15T20:17:00.310Z");
        let leap = std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
    }
}
