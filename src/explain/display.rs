//! The text form of an explanation: one labelled line per step, in the order the gateway
//! takes them, then the outcome. Meant for a terminal; `--json` gives the data.
//!
//! Depends on: `explain::model`.

use std::fmt::{self, Display, Formatter, Write as _};

use super::model::{
    ClusterInfo, DestinationInfo, Explanation, HeaderOpsInfo, Outcome, PolicyInfo, RuleRef,
};

impl Display for RuleRef {
    /// `#2 ns/vs http[1] "name"`; the name is left out when it is the default `vs[1]`.
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        // The mesh port's implicit route to a ServiceEntry host (see `compile::mesh_defaults`).
        if self.name.starts_with("default|") {
            return write!(
                f,
                "#{} ServiceEntry {} default route \"{}\"",
                self.position, self.virtual_service, self.name
            );
        }
        write!(
            f,
            "#{} {} http[{}]",
            self.position, self.virtual_service, self.index
        )?;
        let short = self
            .virtual_service
            .rsplit_once('/')
            .map_or(&*self.virtual_service, |(_, n)| n);
        if self.name != format!("{short}[{}]", self.index) {
            write!(f, " \"{}\"", self.name)?;
        }
        Ok(())
    }
}

impl Display for Explanation {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let r = &self.request;
        write!(f, "request   {} {}", r.method, r.url)?;
        if let Some(sni) = &r.sni {
            write!(f, " (SNI {sni})")?;
        }
        writeln!(f)?;
        writeln!(f, "          Host: {}", r.authority)?;
        for (name, value) in &r.headers {
            writeln!(f, "          {name}: {value}")?;
        }
        if let Some(l) = &self.listener {
            write!(
                f,
                "listener  port {} ({}, {})",
                l.port,
                l.kind,
                l.protocol.to_ascii_uppercase()
            )?;
            if !l.servers.is_empty() {
                write!(f, ": {}", l.servers.join("; "))?;
            }
            writeln!(f)?;
        }
        if let Some(t) = &self.tls {
            let sni = t.sni.as_deref().unwrap_or("(none)");
            writeln!(
                f,
                "server    {} chosen by SNI {sni} (pattern {}), mode {}",
                t.server, t.matched, t.mode
            )?;
        }
        if let Some(v) = &self.virtual_host {
            writeln!(
                f,
                "host      {} -> virtual host {} ({} rule(s){})",
                v.host,
                v.pattern,
                v.rules,
                if v.https_redirect {
                    ", httpsRedirect"
                } else {
                    ""
                }
            )?;
        }
        if !self.exposed_hosts.is_empty() {
            writeln!(f, "served    {}", self.exposed_hosts.join(", "))?;
        }
        if !self.rules.is_empty() {
            writeln!(f, "rules     (first match wins)")?;
            for t in &self.rules {
                if t.matched {
                    writeln!(
                        f,
                        "  {}: MATCHED (match[{}])",
                        t.rule,
                        t.block.unwrap_or_default()
                    )?;
                } else if t.reasons.is_empty() {
                    writeln!(f, "  {}: no match", t.rule)?;
                } else if let [only] = t.reasons.as_slice() {
                    writeln!(f, "  {}: no match: {only}", t.rule)?;
                } else {
                    writeln!(f, "  {}: no match:", t.rule)?;
                    for reason in &t.reasons {
                        writeln!(f, "      {reason}")?;
                    }
                }
            }
        }
        for s in &self.shadowed {
            let by: Vec<String> = s.by.iter().map(ToString::to_string).collect();
            writeln!(
                f,
                "shadowed  {} can never match: {} {} takes every request it would",
                s.rule,
                if s.catch_all {
                    "the catch-all"
                } else {
                    "earlier"
                },
                by.join(", ")
            )?;
        }
        if let Some(route) = &self.route {
            write!(f, "route     {} match[{}]", route.rule, route.block)?;
            if let Some(n) = &route.block_name {
                write!(f, " \"{n}\"")?;
            }
            writeln!(f)?;
        }
        outcome(f, &self.outcome)?;
        for n in &self.notes {
            writeln!(f, "note      {n}")?;
        }
        Ok(())
    }
}

fn outcome(f: &mut Formatter<'_>, o: &Outcome) -> fmt::Result {
    match o {
        Outcome::DirectResponse { status, body } => {
            write!(f, "answer    {status} (directResponse)")?;
            if !body.is_empty() {
                write!(f, " body {body:?}")?;
            }
            writeln!(f)
        }
        Outcome::Forward(fw) => {
            writeln!(f, "forward   to one destination per request, by weight:")?;
            for d in &fw.destinations {
                destination(f, d)?;
            }
            policy(f, &fw.policy)
        }
        Outcome::HttpsRedirect { status, location } => {
            writeln!(
                f,
                "answer    {status} to {location} (server tls.httpsRedirect)"
            )
        }
        Outcome::L4 {
            mode,
            route,
            destinations,
        } => {
            writeln!(f, "forward   {mode} along {route}:")?;
            destinations.iter().try_for_each(|d| destination(f, d))
        }
        Outcome::Redirect { status, location } => {
            writeln!(f, "answer    {status} redirect to {location}")
        }
        Outcome::Rejected { status, reason } => match status {
            Some(s) => writeln!(f, "REJECTED  {s}: {reason}"),
            None => writeln!(f, "REJECTED  {reason}"),
        },
    }
}

fn destination(f: &mut Formatter<'_>, d: &DestinationInfo) -> fmt::Result {
    let c = &d.cluster;
    write!(f, "  {:>6}%  {}", d.percent, c.name)?;
    if !c.subset.is_empty() {
        write!(f, " (subset {})", c.subset)?;
    }
    writeln!(f)?;
    writeln!(f, "           {}", cluster_line(c))?;
    if let Some(o) = &c.outlier_detection {
        writeln!(f, "           outlierDetection: {o}")?;
    }
    if c.endpoints.is_empty() {
        writeln!(f, "           no endpoints: 503 no healthy upstream")?;
    }
    for e in &c.endpoints {
        let labels: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(f, "           endpoint {} weight {}", e.address, e.weight)?;
        if !labels.is_empty() {
            write!(f, " {{{}}}", labels.join(", "))?;
        }
        writeln!(f)?;
    }
    headers(f, "           headers", &d.headers)
}

fn cluster_line(c: &ClusterInfo) -> String {
    let mut s = format!("{} {}", c.load_balancer, c.protocol);
    if let Some(k) = &c.hash_key {
        let _ = write!(s, ", hash on {k}");
    }
    if c.connection_pool.is_empty() {
        s.push_str(", connectionPool defaults");
    } else {
        let pool: Vec<String> = c
            .connection_pool
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = write!(s, ", connectionPool {}", pool.join(", "));
    }
    s
}

fn policy(f: &mut Formatter<'_>, p: &PolicyInfo) -> fmt::Result {
    writeln!(
        f,
        "timeout   {}",
        p.timeout.as_deref().unwrap_or("none (Istio's default)")
    )?;
    let r = &p.retries;
    write!(
        f,
        "retries   {} attempt(s) on {}",
        r.attempts,
        r.retry_on.join(",")
    )?;
    if !r.status_codes.is_empty() {
        let codes: Vec<String> = r.status_codes.iter().map(ToString::to_string).collect();
        write!(f, " (status {})", codes.join(","))?;
    }
    if let Some(t) = &r.per_try_timeout {
        write!(f, ", perTryTimeout {t}")?;
    }
    writeln!(
        f,
        "{}",
        if r.explicit {
            ""
        } else {
            " (Istio's default policy)"
        }
    )?;
    if let Some(rw) = &p.rewrite {
        let mut parts = Vec::new();
        if let Some(path) = &rw.path {
            parts.push(format!("path sent {path}"));
        }
        if let Some(a) = &rw.authority {
            parts.push(format!("authority sent {a}"));
        }
        writeln!(f, "rewrite   {}", parts.join(", "))?;
    }
    headers(f, "headers  ", &p.headers)?;
    for fault in &p.fault {
        writeln!(f, "fault     {fault}")?;
    }
    for m in &p.mirrors {
        writeln!(f, "mirror    {m}")?;
    }
    if let Some(c) = &p.cors {
        writeln!(f, "cors      {c}")?;
    }
    Ok(())
}

fn headers(f: &mut Formatter<'_>, label: &str, h: &HeaderOpsInfo) -> fmt::Result {
    if !h.request.is_empty() {
        writeln!(f, "{label} request: {}", h.request.join("; "))?;
    }
    if !h.response.is_empty() {
        writeln!(f, "{label} response: {}", h.response.join("; "))?;
    }
    Ok(())
}
