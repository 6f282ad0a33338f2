//! Renders a snapshot as the JSON `/config_dump` serves: listeners, per host the ordered
//! routes, clusters with their endpoints, and warnings. Rendered per request rather than
//! kept in the snapshot: the tree is larger than the routes it describes (25 MB for 10,000
//! hosts) and is rarely asked for.
//!
//! Depends on: `config::snapshot`, `route`, serde_json.

use serde_json::{json, Value};

use crate::config::snapshot::{L4Route, ListenerKind, Snapshot, TlsMode};
use crate::route::{Action, HeaderMatch, MatchBlock, Route, StrMatch};

/// The `/config_dump` body of `s` (without the generation and last errors).
pub fn render(s: &Snapshot) -> Value {
    let listeners: Vec<Value> = s
        .listeners
        .iter()
        .map(|l| {
            let hosts: serde_json::Map<String, Value> = s
                .table(l.port)
                .map(|t| {
                    t.hosts
                        .iter()
                        .map(|(pattern, vh)| (pattern, Value::Array(vh.routes.iter().map(|r| route(s, r)).collect())))
                        .collect()
                })
                .unwrap_or_default();
            let mut o = json!({
                "port": l.port,
                "kind": match l.kind { ListenerKind::Gateway => "gateway", ListenerKind::Mesh => "mesh" },
                "protocol": format!("{:?}", l.protocol),
                "servers": l.servers,
                "hosts": hosts,
            });
            if let Some(tp) = s.tls.get(&l.port) {
                o["tlsServers"] = tp
                    .servers
                    .iter()
                    .map(|srv| {
                        let (mode, hosts) = match &srv.mode {
                            TlsMode::Passthrough => ("passthrough", serde_json::Map::new()),
                            TlsMode::TerminateTcp { routes, .. } => (
                                "terminate-tcp",
                                std::iter::once(("*".to_owned(), routes.iter().map(|r| l4(s, r)).collect()))
                                    .collect(),
                            ),
                            TlsMode::Terminate { table, .. } => (
                                "terminate",
                                table
                                    .hosts
                                    .iter()
                                    .map(|(p, vh)| (p, Value::Array(vh.routes.iter().map(|r| route(s, r)).collect())))
                                    .collect(),
                            ),
                        };
                        json!({ "server": srv.id, "hosts": srv.hosts, "mode": mode, "routes": hosts })
                    })
                    .collect();
                o["passthrough"] = tp
                    .passthrough
                    .iter()
                    .map(|(sni, routes)| (sni, Value::Array(routes.iter().map(|r| l4(s, r)).collect())))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
            }
            if let Some(routes) = s.tcp.get(&l.port) {
                o["tcp"] = routes.iter().map(|r| l4(s, r)).collect();
            }
            o
        })
        .collect();
    let clusters: Vec<Value> = s
        .clusters
        .iter()
        .map(|c| {
            json!({
                "name": &*c.name,
                "service": &*c.service,
                "subset": &*c.subset,
                "port": c.port,
                "protocol": format!("{:?}", c.protocol),
                "endpoints": c.endpoints.iter().map(|e| json!({
                    "address": e.pool.target().to_string(),
                    "weight": e.weight,
                    "labels": e.labels,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "files": s.files,
        "listeners": listeners,
        "clusters": clusters,
        "warnings": s.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

fn route(s: &Snapshot, r: &Route) -> Value {
    let action = match &r.action {
        Action::Forward(f) => json!({
            "route": f.destinations.iter().map(|d| json!({
                "cluster": s.clusters.get(d.cluster).map(|c| c.name.to_string()),
                "weight": d.weight,
            })).collect::<Vec<_>>(),
        }),
        Action::Redirect(rd) => json!({
            "redirect": {
                "uri": rd.uri.as_deref(),
                "authority": rd.authority.as_deref(),
                "port": rd.port,
                "scheme": rd.scheme.as_deref(),
                "code": rd.code.as_u16(),
            }
        }),
        Action::Respond(d) => json!({
            "directResponse": { "status": d.status.as_u16(), "bodyBytes": d.body.len() }
        }),
    };
    json!({
        "name": &*r.name,
        "virtualService": &*r.virtual_service,
        "index": r.index,
        "match": r.matches.iter().map(block).collect::<Vec<_>>(),
        "action": action,
        "timeout": r.timeout.map(|t| format!("{}ms", t.as_millis())),
        "retries": {
            "attempts": r.retry.attempts,
            "perTryTimeout": r.retry.per_try_timeout.map(|t| format!("{}ms", t.as_millis())),
            "explicit": r.retry.explicit,
        },
    })
}

fn l4(s: &Snapshot, r: &L4Route) -> Value {
    json!({
        "name": &*r.name,
        "route": r.forward.destinations.iter().map(|d| json!({
            "cluster": s.clusters.get(d.cluster).map(|c| c.name.to_string()),
            "weight": d.weight,
        })).collect::<Vec<_>>(),
    })
}

fn block(m: &MatchBlock) -> Value {
    let mut o = serde_json::Map::new();
    let mut put = |k: &str, v: &Option<StrMatch>| {
        if let Some(v) = v {
            o.insert(k.to_owned(), sm(v));
        }
    };
    put("uri", &m.uri);
    put("scheme", &m.scheme);
    put("method", &m.method);
    put("authority", &m.authority);
    let hm = |hs: &[HeaderMatch]| -> Value {
        hs.iter()
            .map(|h| (h.name.as_str().to_owned(), sm(&h.value)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    if !m.headers.is_empty() {
        o.insert("headers".into(), hm(&m.headers));
    }
    if !m.without_headers.is_empty() {
        o.insert("withoutHeaders".into(), hm(&m.without_headers));
    }
    if !m.query.is_empty() {
        let q: serde_json::Map<_, _> = m
            .query
            .iter()
            .map(|(k, v)| (k.to_string(), sm(v)))
            .collect();
        o.insert("queryParams".into(), q.into());
    }
    if let Some(p) = m.port {
        o.insert("port".into(), p.into());
    }
    if m.ignore_uri_case {
        o.insert("ignoreUriCase".into(), true.into());
    }
    o.into()
}

fn sm(m: &StrMatch) -> Value {
    match m {
        StrMatch::Exact(e) => json!({ "exact": &**e }),
        StrMatch::Prefix(p) => json!({ "prefix": &**p }),
        StrMatch::Regex(r) => {
            let s = r.as_str();
            let inner = s
                .strip_prefix("^(?:")
                .and_then(|x| x.strip_suffix(")$"))
                .unwrap_or(s);
            json!({ "regex": inner })
        }
        StrMatch::Present => json!({}),
    }
}
