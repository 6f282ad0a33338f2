//! A rule's `fault`, `corsPolicy` and `mirror` / `mirrors` into the route filters of
//! `route::filter`. Every invalid value is an error naming its field.
//!
//! Depends on: `config::{istio, duration}`, `route`, `compile::routes`.

use std::sync::Arc;

use http::{HeaderValue, StatusCode};

use super::routes::RuleCompiler;
use crate::config::duration;
use crate::config::istio::{CorsPolicy, HttpFaultInjection, HttpRoute, Percent};
use crate::route::{grpc_code, AbortStatus, Cors, Fault, FaultAbort, FaultDelay, Mirror};

impl RuleCompiler<'_, '_> {
    /// A percentage field (0..=100), 100 when absent (Istio: "all requests").
    fn percent(&mut self, f: &str, p: Option<&Percent>, legacy: Option<u32>) -> Option<f64> {
        let v = match (p, legacy) {
            (Some(p), _) => p.value,
            (None, Some(l)) => f64::from(l),
            (None, None) => 100.0,
        };
        if !(0.0..=100.0).contains(&v) || v.is_nan() {
            self.errors.push(
                self.vs
                    .error(f, format!("percentage {v} is not within 0..=100")),
            );
            return None;
        }
        Some(v)
    }

    /// Compile `fault` at `f`.
    pub(super) fn fault(&mut self, f: &str, fi: &HttpFaultInjection) -> Option<Arc<Fault>> {
        let before = self.errors.len();
        let mut fault = Fault::default();
        if let Some(d) = &fi.delay {
            let df = format!("{f}.delay");
            if d.exponential_delay.is_some() {
                self.errors.push(self.vs.error(
                    format!("{df}.exponentialDelay"),
                    "exponentialDelay is not supported (Istio does not implement it either): use fixedDelay",
                ));
            }
            let fixed = match d.fixed_delay.as_deref().map(|t| (t, duration::parse(t))) {
                Some((_, Some(dur))) => Some(dur),
                Some((t, None)) => {
                    self.errors.push(self.vs.error(
                        format!("{df}.fixedDelay"),
                        format!("invalid duration {t:?}"),
                    ));
                    None
                }
                None => {
                    if d.exponential_delay.is_none() {
                        self.errors.push(
                            self.vs
                                .error(format!("{df}.fixedDelay"), "fixedDelay is required"),
                        );
                    }
                    None
                }
            };
            let percent = self.percent(
                &format!("{df}.percentage"),
                d.percentage.as_ref(),
                d.percent,
            );
            if let (Some(fixed), Some(percent)) = (fixed, percent) {
                fault.delay = Some(FaultDelay { fixed, percent });
            }
        }
        if let Some(a) = &fi.abort {
            let af = format!("{f}.abort");
            let status = match (&a.http_status, &a.grpc_status, &a.http2_error) {
                (Some(code), None, None) => match u16::try_from(*code)
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .filter(|c| c.as_u16() >= 200)
                {
                    Some(c) => Some(AbortStatus::Http(c)),
                    None => {
                        self.errors.push(self.vs.error(
                            format!("{af}.httpStatus"),
                            format!("{code} is not an HTTP status code (200..=599)"),
                        ));
                        None
                    }
                },
                (None, Some(name), None) => match grpc_code(name) {
                    Some(c) => Some(AbortStatus::Grpc(c)),
                    None => {
                        self.errors.push(self.vs.error(
                            format!("{af}.grpcStatus"),
                            format!("unknown gRPC status {name:?}"),
                        ));
                        None
                    }
                },
                (None, None, Some(_)) => {
                    self.errors.push(self.vs.error(
                        format!("{af}.http2Error"),
                        "http2Error is not supported (Istio does not implement it either)",
                    ));
                    None
                }
                _ => {
                    self.errors.push(
                        self.vs
                            .error(&af, "exactly one of httpStatus or grpcStatus is required"),
                    );
                    None
                }
            };
            let percent = self.percent(&format!("{af}.percentage"), a.percentage.as_ref(), None);
            if let (Some(status), Some(percent)) = (status, percent) {
                fault.abort = Some(FaultAbort { status, percent });
            }
        }
        (self.errors.len() == before).then(|| Arc::new(fault))
    }

    /// Compile `corsPolicy` at `f`.
    pub(super) fn cors(&mut self, f: &str, c: &CorsPolicy) -> Option<Arc<Cors>> {
        let before = self.errors.len();
        let mut origins = Vec::new();
        for (i, sm) in c.allow_origins.iter().enumerate() {
            if let Some(m) = self.string_match(&format!("{f}.allowOrigins[{i}]"), sm) {
                origins.push(m);
            }
        }
        origins.extend(
            c.allow_origin
                .iter()
                .map(|o| crate::route::StrMatch::Exact(o.as_str().into())),
        );
        let mut joined = |field: &str, items: &[String]| -> Option<HeaderValue> {
            if items.is_empty() {
                return None;
            }
            match HeaderValue::from_str(&items.join(",")) {
                Ok(v) => Some(v),
                Err(_) => {
                    self.errors.push(
                        self.vs
                            .error(format!("{f}.{field}"), "invalid header value"),
                    );
                    None
                }
            }
        };
        let allow_methods = joined("allowMethods", &c.allow_methods);
        let allow_headers = joined("allowHeaders", &c.allow_headers);
        let expose_headers = joined("exposeHeaders", &c.expose_headers);
        let max_age = c.max_age.as_deref().and_then(|t| match duration::parse(t) {
            Some(d) => HeaderValue::from_str(&d.as_secs().to_string()).ok(),
            None => {
                self.errors.push(
                    self.vs
                        .error(format!("{f}.maxAge"), format!("invalid duration {t:?}")),
                );
                None
            }
        });
        let ignore = match c.unmatched_preflights.as_deref() {
            None | Some("FORWARD" | "UNSPECIFIED") => false,
            Some("IGNORE") => true,
            Some(other) => {
                self.errors.push(self.vs.error(
                    format!("{f}.unmatchedPreflights"),
                    format!("unknown value {other} (FORWARD or IGNORE)"),
                ));
                false
            }
        };
        (self.errors.len() == before).then(|| {
            Arc::new(Cors {
                origins,
                allow_methods,
                allow_headers,
                expose_headers,
                max_age,
                allow_credentials: c.allow_credentials.unwrap_or(false),
                ignore_unmatched_preflights: ignore,
            })
        })
    }

    /// Compile `mirror` (+ `mirrorPercentage`) and `mirrors[]` of rule `r` at `f`.
    pub(super) fn mirrors(&mut self, f: &str, r: &HttpRoute) -> Option<Arc<[Mirror]>> {
        let before = self.errors.len();
        let mut out = Vec::new();
        if r.mirror.is_some() && !r.mirrors.is_empty() {
            self.errors
                .push(self.vs.error(f, "set mirror or mirrors, not both"));
            return None;
        }
        if let Some(dest) = &r.mirror {
            let percent = self.percent(
                &format!("{f}.mirrorPercentage"),
                r.mirror_percentage.as_ref(),
                r.mirror_percent,
            );
            let cluster = self.services.cluster_for(
                self.vs,
                &format!("{f}.mirror"),
                dest,
                self.errors,
                self.warnings,
            );
            if let (Some(cluster), Some(percent)) = (cluster, percent) {
                out.push(Mirror { cluster, percent });
            }
        }
        for (i, m) in r.mirrors.iter().enumerate() {
            let mf = format!("{f}.mirrors[{i}]");
            let Some(dest) = &m.destination else {
                self.errors.push(
                    self.vs
                        .error(format!("{mf}.destination"), "destination is required"),
                );
                continue;
            };
            let percent = self.percent(&format!("{mf}.percentage"), m.percentage.as_ref(), None);
            let cluster = self.services.cluster_for(
                self.vs,
                &format!("{mf}.destination"),
                dest,
                self.errors,
                self.warnings,
            );
            if let (Some(cluster), Some(percent)) = (cluster, percent) {
                out.push(Mirror { cluster, percent });
            }
        }
        (self.errors.len() == before).then(|| out.into())
    }
}
