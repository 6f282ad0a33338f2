//! `meshgate explain`: why a request goes where it goes, or why it gets a 404, without
//! sending anything. A pure function of a `Snapshot` and a described request.
//!
//! It walks the path `listen::tls` and `http::proxy::Proxy::handle` take, calling the same
//! functions: `Snapshot::listener`, `TlsPort::server_for`, `Snapshot::table`,
//! `HostTable::lookup`, `VirtualHost::find`, `Cors::decide`, `Redirect::location_at`,
//! `Rewrite::path`. What those functions do not expose (why a rule failed, which rules
//! are unreachable) comes from explain-only helpers: `MatchBlock::first_mismatch` and
//! `shadow`. Must not change routing; must not allocate on the request path (it is never on
//! it).
//!
//! Depends on: `config::snapshot`, `route`, `upstream` (read-only), serde.

mod describe;
mod display;
mod model;
mod request;
pub(crate) mod shadow;

use crate::config::{ListenerKind, PortProtocol, Snapshot, TlsMode, TlsPort};
use crate::route::{
    host_of, pattern_matches, Action, CorsDecision, Route, RouteTable, VirtualHost,
};

pub use model::{
    ClusterInfo, DestinationInfo, EndpointInfo, Explanation, ForwardInfo, HeaderOpsInfo,
    ListenerInfo, Outcome, PolicyInfo, RequestSummary, RetryInfo, RewriteInfo, RouteRef, RuleRef,
    RuleTrace, Shadowed, TlsInfo, VirtualHostInfo,
};
pub use request::{ExplainError, ExplainRequest};

/// Longest direct-response body shown, in characters.
const MAX_BODY_SHOWN: usize = 200;

/// Explain what the gateway serving `snap` does with `req`.
pub fn explain(snap: &Snapshot, req: &ExplainRequest) -> Explanation {
    let mut ex = Explanation {
        request: summary(req),
        listener: None,
        tls: None,
        virtual_host: None,
        exposed_hosts: Vec::new(),
        rules: Vec::new(),
        shadowed: Vec::new(),
        route: None,
        outcome: Outcome::Rejected {
            status: None,
            reason: String::new(),
        },
        notes: Vec::new(),
    };
    ex.outcome = walk(snap, req, &mut ex);
    ex
}

fn reject(status: Option<u16>, reason: impl Into<String>) -> Outcome {
    Outcome::Rejected {
        status,
        reason: reason.into(),
    }
}

/// Listener, then TLS server or plain table, then HTTP routing.
fn walk(snap: &Snapshot, req: &ExplainRequest, ex: &mut Explanation) -> Outcome {
    let Some(listener) = listener(snap, req, ex) else {
        let ports: Vec<String> = snap.listeners.iter().map(|l| l.port.to_string()).collect();
        return reject(
            None,
            format!(
                "no listener on port {}: connection refused (listening on: {})",
                req.port,
                if ports.is_empty() {
                    "nothing".to_owned()
                } else {
                    ports.join(", ")
                }
            ),
        );
    };
    let port = listener.port;
    ex.request.port = port;
    ex.listener = Some(ListenerInfo {
        port,
        kind: match listener.kind {
            ListenerKind::Gateway => "gateway",
            ListenerKind::Mesh => "mesh",
        },
        protocol: match listener.protocol {
            PortProtocol::Http => "http",
            PortProtocol::Tls => "tls",
            PortProtocol::Tcp => "tcp",
        },
        servers: listener.servers.clone(),
    });
    match listener.protocol {
        PortProtocol::Tcp => {
            ex.notes.push(format!(
                "port {port} is a TCP port: bytes are forwarded along its first TCP route, HTTP \
                 rules do not apply"
            ));
            match snap.tcp.get(&port).and_then(|r| r.first()) {
                Some(r) => l4("tcp", snap, r),
                None => reject(
                    None,
                    format!("no TCP route on port {port}: connection closed"),
                ),
            }
        }
        PortProtocol::Http if req.scheme == "https" => reject(
            None,
            format!("port {port} serves plain HTTP: a TLS handshake there fails"),
        ),
        PortProtocol::Http => match snap.table(port) {
            Some(t) => http(snap, req, port, t, ex),
            None => reject(Some(404), format!("no HTTP routes on port {port}")),
        },
        PortProtocol::Tls if req.scheme == "http" => reject(
            None,
            format!("port {port} serves TLS: a plain-text HTTP request there fails the handshake"),
        ),
        PortProtocol::Tls => match snap.tls.get(&port) {
            Some(tp) => tls(snap, req, port, tp, ex),
            None => reject(None, format!("no TLS servers on port {port}")),
        },
    }
}

/// The listener: `--port`, else the URL's port; when that has no listener and the mesh
/// port exists, the mesh port (the URL then names a mesh service, as a sidecar client's
/// would).
fn listener<'s>(
    snap: &'s Snapshot,
    req: &ExplainRequest,
    ex: &mut Explanation,
) -> Option<&'s crate::config::Listener> {
    if let Some(l) = snap.listener(req.port) {
        return Some(l);
    }
    if req.port_given {
        return None;
    }
    let mesh = snap
        .listeners
        .iter()
        .find(|l| l.kind == ListenerKind::Mesh)?;
    ex.notes.push(format!(
        "no listener on port {}: explained on the mesh port {} (use --port to choose)",
        req.port, mesh.port
    ));
    Some(mesh)
}

/// A TLS port: the server chosen by SNI, then passthrough, TLS->TCP, or HTTP routing with
/// that server's own table.
fn tls(
    snap: &Snapshot,
    req: &ExplainRequest,
    port: u16,
    tp: &TlsPort,
    ex: &mut Explanation,
) -> Outcome {
    let sni = req.sni.as_deref();
    let Some(server) = tp.server_for(sni) else {
        let names: Vec<String> = tp.by_sni.iter().map(|(p, _)| p).collect();
        let sni = sni.map_or_else(|| "no SNI".to_owned(), |s| format!("SNI {s}"));
        return reject(
            None,
            format!(
                "{sni} matches no server on port {port} and there is no catch-all `*` server: \
                 TLS alert unrecognized_name (served: {})",
                names.join(", ")
            ),
        );
    };
    let index = tp.servers.iter().position(|s| std::ptr::eq(s, server));
    // `server_for` looked the SNI up in `by_sni`; its iteration order (exact, longest
    // wildcard, `*`) finds the same pattern first.
    let matched = tp
        .by_sni
        .iter()
        .find(|(p, i)| Some(**i) == index && pattern_matches(p, sni.unwrap_or_default()))
        .map_or_else(|| "*".to_owned(), |(p, _)| p);
    ex.tls = Some(TlsInfo {
        sni: sni.map(str::to_owned),
        server: server.id.clone(),
        matched,
        hosts: server.hosts.clone(),
        mode: match server.mode {
            TlsMode::Passthrough => "passthrough",
            TlsMode::TerminateTcp { .. } => "terminate-tcp",
            TlsMode::Terminate { .. } => "terminate",
        },
    });
    match &server.mode {
        TlsMode::Passthrough => {
            let route = sni
                .and_then(|s| tp.passthrough.lookup(s))
                .and_then(|routes| routes.first());
            match route {
                Some(r) => l4("tls-passthrough", snap, r),
                None => {
                    ex.exposed_hosts = tp.passthrough.iter().map(|(p, _)| p).collect();
                    reject(
                        None,
                        format!(
                            "no passthrough route for {}: connection closed",
                            sni.map_or_else(
                                || "a ClientHello without SNI".to_owned(),
                                |s| format!("SNI {s}")
                            )
                        ),
                    )
                }
            }
        }
        TlsMode::TerminateTcp { routes, .. } => match routes.first() {
            Some(r) => l4("tls-terminate-tcp", snap, r),
            None => reject(None, "no TCP route for this TLS server: connection closed"),
        },
        TlsMode::Terminate { table, .. } => {
            let host = host_of(&req.authority);
            // Proxy::handle: a Host outside the SNI server's hosts must not reach another
            // server's routes (HTTP/2 coalescing, forged Host).
            if !server.hosts.iter().any(|h| pattern_matches(h, host)) {
                return reject(
                    Some(421),
                    format!(
                        "Host {host} is not among the hosts of {} ({}), which the SNI chose: \
                         421 Misdirected Request",
                        server.id,
                        server.hosts.join(", ")
                    ),
                );
            }
            http(snap, req, port, table, ex)
        }
    }
}

/// HTTP routing in one table: virtual host by Host, httpsRedirect, then the rules in order.
fn http(
    snap: &Snapshot,
    req: &ExplainRequest,
    port: u16,
    table: &RouteTable,
    ex: &mut Explanation,
) -> Outcome {
    if req.authority.is_empty() {
        return reject(Some(400), "empty Host header: 400 Bad Request");
    }
    let host = host_of(&req.authority);
    let Some(vhost) = table.hosts.lookup(host) else {
        ex.exposed_hosts = table.hosts.iter().map(|(p, _)| p).collect();
        return reject(
            Some(404),
            format!(
                "host {host} is not served on port {port}: a host is served where a Gateway \
                 server's hosts and those of a VirtualService bound to it meet, and none \
                 covers it"
            ),
        );
    };
    ex.virtual_host = Some(VirtualHostInfo {
        host: host.to_owned(),
        pattern: vhost.name.to_string(),
        rules: vhost.routes.len(),
        https_redirect: vhost.https_redirect,
    });
    ex.shadowed = shadowed(vhost, port);
    if vhost.https_redirect {
        // The Location `Proxy::handle` builds for httpsRedirect.
        let location = match &req.query {
            Some(q) => format!("https://{host}{}?{q}", req.path),
            None => format!("https://{host}{}", req.path),
        };
        return Outcome::HttpsRedirect {
            status: 301,
            location,
        };
    }
    if req.method == http::Method::CONNECT {
        return reject(
            Some(404),
            "CONNECT is never routed by HTTP rules: 404 Not Found",
        );
    }
    let view = req.view(port);
    let found = vhost.find(&view);
    ex.rules = trace(vhost, found.map(|(r, _)| r), &view);
    let Some((route, block)) = found else {
        return reject(
            Some(404),
            format!(
                "no rule of virtual host {} matched ({} tried): 404 Not Found",
                vhost.name,
                vhost.routes.len()
            ),
        );
    };
    let position = vhost
        .routes
        .iter()
        .position(|r| std::ptr::eq(r, route))
        .unwrap_or_default();
    let later = vhost.routes.len() - position - 1;
    if later > 0 {
        ex.notes.push(format!(
            "{later} later rule(s) not evaluated: the first match wins"
        ));
    }
    ex.route = Some(RouteRef {
        rule: rule_ref(position, route),
        block,
        block_name: route
            .matches
            .get(block)
            .and_then(|m| m.name.as_deref())
            .map(str::to_owned),
    });
    action(snap, req, port, route, block, ex)
}

/// The rules tried, up to the one `find` chose (`chosen`), with the reasons the others
/// failed.
fn trace(
    vhost: &VirtualHost,
    chosen: Option<&Route>,
    view: &crate::route::RequestView<'_>,
) -> Vec<RuleTrace> {
    let mut out = Vec::new();
    for (position, route) in vhost.routes.iter().enumerate() {
        let is_chosen = chosen.is_some_and(|c| std::ptr::eq(c, route));
        let reasons = if is_chosen {
            Vec::new()
        } else {
            route
                .matches
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let why = b
                        .first_mismatch(view)
                        .unwrap_or_else(|| "did not match".to_owned());
                    if route.matches.len() == 1 {
                        why
                    } else {
                        format!("match[{i}]: {why}")
                    }
                })
                .collect()
        };
        out.push(RuleTrace {
            rule: rule_ref(position, route),
            matched: is_chosen,
            block: if is_chosen {
                route.matching_block(view)
            } else {
                None
            },
            reasons,
        });
        if is_chosen {
            break;
        }
    }
    out
}

fn shadowed(vhost: &VirtualHost, port: u16) -> Vec<Shadowed> {
    let blocks: Vec<&[crate::route::MatchBlock]> =
        vhost.routes.iter().map(|r| r.matches.as_slice()).collect();
    shadow::shadowed(&blocks, port)
        .into_iter()
        .filter_map(|(j, by)| {
            let route = vhost.routes.get(j)?;
            Some(Shadowed {
                rule: rule_ref(j, route),
                catch_all: by.iter().any(|i| {
                    blocks
                        .get(*i)
                        .is_some_and(|b| shadow::is_catch_all(b, port))
                }),
                by: by
                    .iter()
                    .filter_map(|i| vhost.routes.get(*i).map(|r| rule_ref(*i, r)))
                    .collect(),
            })
        })
        .collect()
}

/// What the chosen rule does: CORS preflight first (as the proxy's CORS step runs before
/// the action), then the action.
fn action(
    snap: &Snapshot,
    req: &ExplainRequest,
    port: u16,
    route: &Route,
    block: usize,
    ex: &mut Explanation,
) -> Outcome {
    if let Some(cors) = &route.cors {
        if let CorsDecision::Preflight(h) = cors.decide(&req.method, &req.headers) {
            ex.notes.push(format!(
                "CORS preflight answered by the gateway with {} access-control header(s); \
                 the upstream is not contacted",
                h.len()
            ));
            return Outcome::DirectResponse {
                status: 200,
                body: String::new(),
            };
        }
    }
    match &route.action {
        Action::Respond(d) => {
            let full = String::from_utf8_lossy(&d.body);
            let mut body: String = full.chars().take(MAX_BODY_SHOWN).collect();
            if full.chars().count() > MAX_BODY_SHOWN {
                body.push_str("...");
            }
            Outcome::DirectResponse {
                status: d.status.as_u16(),
                body,
            }
        }
        Action::Redirect(r) => Outcome::Redirect {
            status: r.code.as_u16(),
            location: r.location_at(
                req.scheme,
                &req.authority,
                &req.path,
                req.query.as_deref(),
                Some(port),
            ),
        },
        Action::Forward(f) => {
            if let Some(a) = route.fault.as_ref().and_then(|f| f.abort.as_ref()) {
                if a.percent >= 100.0 {
                    ex.notes.push(
                        "fault.abort applies to every request: none reaches the upstream"
                            .to_owned(),
                    );
                }
            }
            Outcome::Forward(Box::new(describe::forward(
                snap,
                route,
                f,
                block,
                &req.path,
                &req.method,
                &req.headers,
            )))
        }
    }
}

fn l4(mode: &'static str, snap: &Snapshot, r: &crate::config::L4Route) -> Outcome {
    Outcome::L4 {
        mode,
        route: r.name.to_string(),
        destinations: describe::destinations(snap, &r.forward),
    }
}

fn rule_ref(position: usize, r: &Route) -> RuleRef {
    RuleRef {
        position,
        virtual_service: r.virtual_service.to_string(),
        index: r.index,
        name: r.name.to_string(),
    }
}

fn summary(req: &ExplainRequest) -> RequestSummary {
    RequestSummary {
        method: req.method.to_string(),
        url: req.url.clone(),
        scheme: req.scheme.to_owned(),
        authority: req.authority.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        port: req.port,
        sni: req.sni.clone(),
        headers: req
            .headers
            .iter()
            .filter(|(n, _)| *n != http::header::HOST)
            .map(|(n, v)| {
                let value = if matches!(
                    n.as_str(),
                    "authorization" | "proxy-authorization" | "cookie"
                ) {
                    "<hidden>".to_owned()
                } else {
                    String::from_utf8_lossy(v.as_bytes()).into_owned()
                };
                (n.to_string(), value)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
