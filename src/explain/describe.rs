//! Turns compiled actions into the explanation's data: weighted destinations with their
//! clusters (endpoints, load balancing, connection pool, outlier detection) and a route's
//! policies (timeout, retries, rewrite, headers, fault, mirrors, CORS).
//!
//! Depends on: `route`, `upstream`, `config::Snapshot`, `explain::model`.

use std::collections::BTreeMap;
use std::time::Duration;

use http::HeaderMap;

use super::model::{
    ClusterInfo, DestinationInfo, EndpointInfo, ForwardInfo, HeaderOpsInfo, PolicyInfo, RetryInfo,
    RewriteInfo,
};
use crate::config::Snapshot;
use crate::route::{
    AbortStatus, CorsDecision, Forward, HeaderEdits, HeaderOps, RetryOn, RetryPolicy, Route,
};
use crate::upstream::balance::Algorithm;
use crate::upstream::hash::HashKey;
use crate::upstream::{Cluster, Protocol};

/// Envoy's `retry_on` vocabulary, in the order it is printed.
const RETRY_ON: [&str; 13] = [
    "connect-failure",
    "refused-stream",
    "reset",
    "5xx",
    "gateway-error",
    "retriable-4xx",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
    "envoy-ratelimited",
];

/// The destinations of `forward` with their share of requests.
pub(super) fn destinations(snap: &Snapshot, forward: &Forward) -> Vec<DestinationInfo> {
    let total = f64::from(forward.total_weight.max(1));
    forward
        .destinations
        .iter()
        .map(|d| DestinationInfo {
            weight: d.weight,
            percent: (f64::from(d.weight) * 10_000.0 / total).round() / 100.0,
            cluster: snap
                .clusters
                .get(d.cluster)
                .map_or_else(|| missing_cluster(d.cluster), |c| cluster(c)),
            headers: header_ops(&d.headers),
        })
        .collect()
}

/// What `Proxy::forward` would do for `route`, matched by block `block`, on `req`.
pub(super) fn forward(
    snap: &Snapshot,
    route: &Route,
    forward: &Forward,
    block: usize,
    path: &str,
    method: &http::Method,
    headers: &HeaderMap,
) -> ForwardInfo {
    ForwardInfo {
        destinations: destinations(snap, forward),
        policy: policy(snap, route, block, path, method, headers),
    }
}

fn policy(
    snap: &Snapshot,
    route: &Route,
    block: usize,
    path: &str,
    method: &http::Method,
    headers: &HeaderMap,
) -> PolicyInfo {
    PolicyInfo {
        timeout: route.timeout.map(duration),
        retries: retries(&route.retry),
        rewrite: route.rewrite.as_ref().map(|rw| {
            // The same computation as `Proxy::forward`: the part of the path a `rewrite.uri`
            // replaces comes from the block that matched.
            let prefix = route
                .matches
                .get(block)
                .and_then(|m| m.uri.as_ref())
                .map_or("/", |u| u.rewritten_part(path));
            RewriteInfo {
                path: rw.path(path, prefix),
                authority: rw
                    .authority
                    .as_ref()
                    .map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned()),
            }
        }),
        headers: header_ops(&route.headers),
        fault: route.fault.as_deref().map_or_else(Vec::new, |f| {
            let delay = f
                .delay
                .as_ref()
                .map(|d| format!("delay {} for {}% of requests", duration(d.fixed), d.percent));
            let abort = f.abort.as_ref().map(|a| {
                let status = match a.status {
                    AbortStatus::Grpc(code) => format!("grpc-status {code}"),
                    AbortStatus::Http(s) => format!("HTTP {}", s.as_u16()),
                };
                format!(
                    "abort with {status} for {}% of requests, before the upstream",
                    a.percent
                )
            });
            delay.into_iter().chain(abort).collect()
        }),
        mirrors: route
            .mirrors
            .iter()
            .map(|m| {
                let name = snap
                    .clusters
                    .get(m.cluster)
                    .map_or_else(|| format!("cluster #{}", m.cluster), |c| c.name.to_string());
                format!("{}% of requests copied to {name}", m.percent)
            })
            .collect(),
        cors: route.cors.as_deref().map(|c| {
            let decision = match c.decide(method, headers) {
                CorsDecision::Pass if headers.contains_key(http::header::ORIGIN) => {
                    "origin not allowed: no CORS headers"
                }
                CorsDecision::Pass => "no Origin header: not a CORS request",
                CorsDecision::Decorate(_) => "origin allowed: CORS headers added to the response",
                CorsDecision::Preflight(_) => "preflight answered by the gateway",
            };
            let origins: Vec<String> = c.origins.iter().map(ToString::to_string).collect();
            format!("allowOrigins [{}]: {decision}", origins.join(", "))
        }),
    }
}

fn retries(r: &RetryPolicy) -> RetryInfo {
    RetryInfo {
        attempts: r.attempts,
        per_try_timeout: r.per_try_timeout.map(duration),
        retry_on: RETRY_ON
            .iter()
            .copied()
            .filter(|n| RetryOn::from_name(n).is_some_and(|c| r.on.any(c)))
            .collect(),
        status_codes: if r.on.any(RetryOn::RETRIABLE_STATUS_CODES) {
            r.status_codes.clone()
        } else {
            Vec::new()
        },
        explicit: r.explicit,
    }
}

fn cluster(c: &Cluster) -> ClusterInfo {
    let l = &c.limits;
    let mut pool = BTreeMap::new();
    let mut put = |k: &'static str, v: Option<String>| {
        if let Some(v) = v {
            pool.insert(k, v);
        }
    };
    put(
        "tcp.maxConnections",
        l.max_connections.map(|n| n.to_string()),
    );
    put("tcp.connectTimeout", l.conn.connect_timeout.map(duration));
    put(
        "http.http1MaxPendingRequests",
        l.max_pending.map(|n| n.to_string()),
    );
    put(
        "http.http2MaxRequests",
        l.max_requests.map(|n| n.to_string()),
    );
    put("http.maxRetries", l.max_retries.map(|n| n.to_string()));
    put("http.idleTimeout", l.conn.idle_timeout.map(duration));
    put(
        "tcp.idleTimeout",
        l.conn.tcp_idle_timeout.map(|d| {
            if d.is_zero() {
                "off".to_owned()
            } else {
                duration(d)
            }
        }),
    );
    put(
        "tcp.maxConnectionDuration",
        l.conn.max_connection_duration.map(duration),
    );
    put(
        "http.maxRequestsPerConnection",
        l.conn.max_requests_per_connection.map(|n| n.to_string()),
    );
    put(
        "tcp.tcpKeepalive",
        l.conn.keepalive.map(|k| {
            let part = |name: &str, v: Option<String>| v.map(|v| format!("{name} {v}"));
            let parts: Vec<String> = [
                part("time", k.time.map(duration)),
                part("interval", k.interval.map(duration)),
                part("probes", k.probes.map(|p| p.to_string())),
            ]
            .into_iter()
            .flatten()
            .collect();
            if parts.is_empty() {
                "on".to_owned()
            } else {
                parts.join(", ")
            }
        }),
    );
    ClusterInfo {
        name: c.name.to_string(),
        service: c.service.to_string(),
        subset: c.subset.to_string(),
        port: c.port,
        protocol: match c.protocol {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
        },
        load_balancer: match c.balancer.algorithm() {
            Algorithm::LeastRequest => "LEAST_REQUEST".to_owned(),
            Algorithm::Maglev(n) => format!("consistentHash maglev (table size {n})"),
            Algorithm::Random => "RANDOM".to_owned(),
            Algorithm::RingHash(n) => format!("consistentHash ringHash (minimum ring size {n})"),
            Algorithm::RoundRobin => "ROUND_ROBIN".to_owned(),
        },
        hash_key: c.hash_key.as_ref().map(|k| match k {
            HashKey::Cookie(ck) => format!("cookie {}", ck.name),
            HashKey::Header(h) => format!("header {h}"),
            HashKey::Query(q) => format!("query parameter {q}"),
            HashKey::SourceIp => "source IP".to_owned(),
        }),
        connection_pool: pool,
        outlier_detection: l.outlier.map(|o| {
            let mut s = Vec::new();
            if let Some(n) = o.consecutive_5xx {
                s.push(format!("consecutive5xxErrors {n}"));
            }
            if let Some(n) = o.consecutive_gateway {
                s.push(format!("consecutiveGatewayErrors {n}"));
            }
            s.push(format!("baseEjectionTime {}", duration(o.base_ejection)));
            s.push(format!("maxEjectionPercent {}", o.max_ejection_percent));
            s.push(format!("minHealthPercent {}", o.min_health_percent));
            s.join(", ")
        }),
        endpoints: c
            .endpoints
            .iter()
            .map(|e| EndpointInfo {
                address: e.pool.target().to_string(),
                weight: e.weight,
                labels: e.labels.clone(),
            })
            .collect(),
    }
}

/// A destination whose cluster index is out of range: the proxy answers 500 for it.
fn missing_cluster(index: usize) -> ClusterInfo {
    ClusterInfo {
        name: format!("<missing cluster #{index}>"),
        service: String::new(),
        subset: String::new(),
        port: 0,
        protocol: "http1",
        load_balancer: String::new(),
        hash_key: None,
        connection_pool: BTreeMap::new(),
        outlier_detection: None,
        endpoints: Vec::new(),
    }
}

fn header_ops(h: &HeaderOps) -> HeaderOpsInfo {
    HeaderOpsInfo {
        request: edits(&h.request),
        response: edits(&h.response),
    }
}

fn edits(e: &HeaderEdits) -> Vec<String> {
    let value = |v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    // Envoy's order, which `HeaderEdits::apply` follows: remove, set, add.
    e.remove
        .iter()
        .map(|n| format!("remove {n}"))
        .chain(e.set.iter().map(|(n, v)| format!("set {n}: {}", value(v))))
        .chain(e.add.iter().map(|(n, v)| format!("add {n}: {}", value(v))))
        .collect()
}

/// `1s`, `250ms`, `1.5s` style.
pub(super) fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 && !d.is_zero() {
        format!("{}us", d.as_micros())
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms > 1000 {
        format!("{}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_istio() {
        assert_eq!(duration(Duration::from_secs(1)), "1s");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration(Duration::from_micros(5)), "5us");
    }

    #[test]
    fn retry_conditions_are_named() {
        let r = retries(&RetryPolicy::default());
        assert_eq!(
            r.retry_on,
            [
                "connect-failure",
                "refused-stream",
                "retriable-status-codes",
                "cancelled",
                "unavailable"
            ]
        );
        assert_eq!((r.attempts, r.status_codes.as_slice()), (2, &[503][..]));
        assert!(!r.explicit);
    }

    #[test]
    fn header_edits_in_apply_order() {
        let e = HeaderEdits {
            set: vec![("x-a".parse().unwrap(), "1".parse().unwrap())],
            add: vec![("x-b".parse().unwrap(), "2".parse().unwrap())],
            remove: vec!["x-c".parse().unwrap()],
        };
        assert_eq!(edits(&e), ["remove x-c", "set x-a: 1", "add x-b: 2"]);
    }
}
