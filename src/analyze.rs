//! `meshgate validate`'s analyzer, in the spirit of `istioctl analyze`: findings beyond what
//! makes a config invalid, each with a code, a severity and the file:line it points at.
//! Compile errors and warnings are classified into codes too, so every line `validate`
//! prints has one.
//!
//! Codes: MG0001 invalid (other), MG0002 warning (other), MG0101 unknown gateway, MG0102
//! destination host without ServiceEntry, MG0103 undefined subset, MG0104 weights not
//! summing to 100, MG0105 rule shadowed by an earlier one, MG0106 the same host on one port
//! in two Gateways of one workload, MG0201 certificate missing or unreadable, MG0202
//! certificate expired or expiring within 30 days, MG0203 certificate does not cover a
//! server host.
//!
//! Depends on: `config` (raw set, snapshot, errors), `explain::shadow`, `tls`, x509-parser.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::config::{ConfigError, RawSet, Snapshot};
use crate::tls::identity::Identity;
use crate::tls::server::Credentials;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The config is rejected, or will fail at run time.
    Error,
    /// Probably not what was meant.
    Warning,
}

/// One analyzer finding.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Stable code, `MG0104`.
    pub code: &'static str,
    /// Severity.
    pub severity: Severity,
    /// Where, and what.
    pub at: ConfigError,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{s}[{}] {}", self.code, self.at)
    }
}

/// Certificates expiring sooner than this are reported.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// A compile error or warning with its code.
pub fn classify(e: &ConfigError, severity: Severity) -> Finding {
    let m = e.message.as_str();
    let code = if m.starts_with("unknown gateway") {
        "MG0101"
    } else if m.contains("no ServiceEntry declares it") {
        "MG0102"
    } else if m.starts_with("unknown subset") {
        "MG0103"
    } else if severity == Severity::Error {
        "MG0001"
    } else {
        "MG0002"
    };
    Finding {
        code,
        severity,
        at: e.clone(),
    }
}

/// Findings about `raw` beyond validity; `snap` (when it compiled) enables the rule checks.
pub fn analyze(
    raw: &RawSet,
    snap: Option<&Snapshot>,
    credentials: &dyn Credentials,
    now: SystemTime,
) -> Vec<Finding> {
    let mut out = Vec::new();
    weights(raw, &mut out);
    if let Some(snap) = snap {
        shadowed_rules(raw, snap, &mut out);
    }
    host_conflicts(raw, &mut out);
    certificates(raw, credentials, now, &mut out);
    out
}

fn warn(code: &'static str, at: ConfigError) -> Finding {
    Finding {
        code,
        severity: Severity::Warning,
        at,
    }
}

/// MG0104: several destinations whose weights do not add up to 100 (Istio's convention;
/// meshgate, like Envoy, treats them as relative, so this is only a warning).
fn weights(raw: &RawSet, out: &mut Vec<Finding>) {
    for vs in &raw.virtual_services {
        let sections = vs
            .spec
            .http
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    format!("http[{i}].route"),
                    r.route.iter().map(|d| d.weight).collect::<Vec<_>>(),
                )
            })
            .chain(vs.spec.tcp.iter().enumerate().map(|(i, r)| {
                (
                    format!("tcp[{i}].route"),
                    r.route.iter().map(|d| d.weight).collect(),
                )
            }))
            .chain(vs.spec.tls.iter().enumerate().map(|(i, r)| {
                (
                    format!("tls[{i}].route"),
                    r.route.iter().map(|d| d.weight).collect(),
                )
            }));
        for (field, ws) in sections {
            if ws.len() < 2 && ws.iter().all(Option::is_none) {
                continue;
            }
            let sum: i64 = ws.iter().map(|w| w.unwrap_or(0)).sum();
            if sum != 100 {
                out.push(warn(
                    "MG0104",
                    vs.error(
                        field,
                        format!("destination weights sum to {sum}, not 100: they are used as relative shares"),
                    ),
                ));
            }
        }
    }
}

/// MG0105: rules no request can reach because earlier rules take all their traffic.
fn shadowed_rules(raw: &RawSet, snap: &Snapshot, out: &mut Vec<Finding>) {
    let mut seen = HashSet::new();
    let tables = snap
        .tables
        .iter()
        .map(|(p, t)| (*p, t))
        .chain(snap.tls.iter().flat_map(|(p, tp)| {
            tp.servers.iter().filter_map(move |s| match &s.mode {
                crate::config::TlsMode::Terminate { table, .. } => Some((*p, table)),
                _ => None,
            })
        }));
    for (port, table) in tables {
        for (host, vh) in table.hosts.iter() {
            let blocks: Vec<&[crate::route::MatchBlock]> =
                vh.routes.iter().map(|r| r.matches.as_slice()).collect();
            for (j, by) in crate::explain::shadow::shadowed(&blocks, port) {
                let Some(route) = vh.routes.get(j) else {
                    continue;
                };
                if !seen.insert((route.virtual_service.clone(), route.index)) {
                    continue;
                }
                let Some(vs) = raw
                    .virtual_services
                    .iter()
                    .find(|v| v.key() == *route.virtual_service)
                else {
                    continue;
                };
                let earlier: Vec<String> = by
                    .iter()
                    .filter_map(|k| vh.routes.get(*k))
                    .map(|r| format!("{} http[{}]", r.virtual_service, r.index))
                    .collect();
                out.push(warn(
                    "MG0105",
                    vs.error(
                        format!("http[{}]", route.index),
                        format!(
                            "rule can never match on host {host} port {port}: {} take all its requests",
                            earlier.join(", ")
                        ),
                    ),
                ));
            }
        }
    }
}

/// MG0106: the same host on the same port in two Gateways that select the same workload.
fn host_conflicts(raw: &RawSet, out: &mut Vec<Finding>) {
    let mut claimed: Vec<(usize, u32, String)> = Vec::new();
    for (gi, gw) in raw.gateways.iter().enumerate() {
        for (si, s) in gw.spec.servers.iter().enumerate() {
            let Some(port) = s.port.as_ref().map(|p| p.number) else {
                continue;
            };
            for (hi, h) in s.hosts.iter().enumerate() {
                let host = h.rsplit('/').next().unwrap_or(h).to_ascii_lowercase();
                let clash = claimed.iter().find(|(other, p, oh)| {
                    *other != gi
                        && *p == port
                        && *oh == host
                        && raw.gateways[*other].spec.selector == gw.spec.selector
                });
                if let Some((other, _, _)) = clash {
                    out.push(warn(
                        "MG0106",
                        gw.error(
                            format!("servers[{si}].hosts[{hi}]"),
                            format!(
                                "host {host} on port {port} is also served by {} (same selector): which one answers depends on file order",
                                raw.gateways[*other].id()
                            ),
                        ),
                    ));
                } else {
                    claimed.push((gi, port, host));
                }
            }
        }
    }
}

/// MG0201..MG0203: server certificates that are missing, expiring, or do not cover the hosts.
fn certificates(
    raw: &RawSet,
    credentials: &dyn Credentials,
    now: SystemTime,
    out: &mut Vec<Finding>,
) {
    for gw in &raw.gateways {
        for (si, s) in gw.spec.servers.iter().enumerate() {
            let Some(tls) = &s.tls else {
                continue;
            };
            let mode = tls.mode.as_deref().unwrap_or("SIMPLE");
            if !matches!(mode, "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL") || tls.https_redirect {
                continue;
            }
            let f = format!("servers[{si}].tls");
            let pem =
                match (&tls.credential_name, &tls.server_certificate) {
                    (Some(name), _) => credentials
                        .load(&gw.namespace, name)
                        .map(|p| p.cert)
                        .map_err(|e| (format!("{f}.credentialName"), e)),
                    (None, Some(path)) => credentials
                        .read_file(std::path::Path::new(path))
                        .map_err(|e| {
                            (
                                format!("{f}.serverCertificate"),
                                format!("cannot read {path}: {e}"),
                            )
                        }),
                    (None, None) => continue,
                };
            let pem = match pem {
                Ok(p) => p,
                Err((field, msg)) => {
                    out.push(Finding {
                        code: "MG0201",
                        severity: Severity::Error,
                        at: gw.error(field, msg),
                    });
                    continue;
                }
            };
            let Some(Ok(leaf)) = CertificateDer::pem_slice_iter(&pem).next() else {
                out.push(Finding {
                    code: "MG0201",
                    severity: Severity::Error,
                    at: gw.error(&f, "no certificate in the PEM"),
                });
                continue;
            };
            if let Ok((_, cert)) = x509_parser::parse_x509_certificate(&leaf) {
                let not_after = cert.validity().not_after.timestamp();
                let now_s = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                let soon = i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(0);
                if not_after <= now_s {
                    out.push(Finding {
                        code: "MG0202",
                        severity: Severity::Error,
                        at: gw.error(
                            &f,
                            format!("certificate expired on {}", cert.validity().not_after),
                        ),
                    });
                } else if not_after - now_s < soon {
                    out.push(warn(
                        "MG0202",
                        gw.error(
                            &f,
                            format!(
                                "certificate expires on {} (within 30 days)",
                                cert.validity().not_after
                            ),
                        ),
                    ));
                }
            }
            let names = Identity::from_der(&leaf).map(|i| i.dns).unwrap_or_default();
            for (hi, h) in s.hosts.iter().enumerate() {
                let host = h.rsplit('/').next().unwrap_or(h).to_ascii_lowercase();
                if host == "*" || names.iter().any(|n| covers(n, &host)) {
                    continue;
                }
                out.push(warn(
                    "MG0203",
                    gw.error(
                        format!("servers[{si}].hosts[{hi}]"),
                        format!(
                            "certificate does not cover {host} (it names {})",
                            names.join(", ")
                        ),
                    ),
                ));
            }
        }
    }
}

/// Whether certificate name `name` (possibly `*.x`) is valid for host pattern `host`.
fn covers(name: &str, host: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if name == host {
        return true;
    }
    match (name.strip_prefix("*."), host.strip_prefix("*.")) {
        // A wildcard certificate covers one label: a.x, not a.b.x, and not the `*.x` pattern
        // unless it is the same wildcard (handled above).
        (Some(suffix), None) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_expiring_within_30_days_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        p.not_after = rcgen::date_time_ymd(2030, 6, 30);
        let cert = p.self_signed(&key).unwrap();
        let cred = dir.path().join("c");
        std::fs::create_dir_all(&cred).unwrap();
        std::fs::write(cred.join("tls.crt"), cert.pem()).unwrap();
        std::fs::write(cred.join("tls.key"), key.serialize_pem()).unwrap();
        let raw = crate::config::source::file::parse_str(
            "g.yaml",
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.example]\n    tls: {mode: SIMPLE, credentialName: c}\n",
        )
        .unwrap();
        let creds = crate::tls::server::CertsDir(dir.path().to_owned());
        // 2030-06-20: ten days left.
        let ten_days_before = SystemTime::UNIX_EPOCH + Duration::from_secs(1_908_230_400);
        let f = analyze(&raw, None, &creds, ten_days_before);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].code, f[0].severity), ("MG0202", Severity::Warning));
        assert!(f[0].at.message.contains("within 30 days"), "{}", f[0]);
        // A year earlier: nothing to say.
        let year_before = ten_days_before - Duration::from_secs(365 * 86_400);
        assert!(analyze(&raw, None, &creds, year_before).is_empty());
    }

    #[test]
    fn certificate_name_coverage() {
        assert!(covers("a.example.com", "a.example.com"));
        assert!(covers("*.example.com", "a.example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(covers("*.example.com", "*.example.com"));
        assert!(!covers("a.example.com", "*.example.com"));
        assert!(!covers("*.example.com", "example.com"));
    }
}
