//! VirtualService `tls[]` (SNI passthrough) and `tcp[]` routes into `L4Route`s.
//!
//! Depends on: `config::{raw, istio, error}`, `route::Forward`, `compile::services`.

use crate::config::error::ConfigError;
use crate::config::istio::{L4Match, RouteDestination, VirtualService};
use crate::config::raw::Res;
use crate::config::snapshot::L4Route;
use crate::route::{Forward, HeaderOps, WeightedDestination};

use super::services::Services;

/// A compiled L4 rule with the match blocks it keeps (gateway and port are filtered by the
/// caller per server).
pub(super) struct L4Rule {
    pub(super) route: L4Route,
    pub(super) matches: Vec<L4Match>,
}

/// A rule's match blocks and destinations, whichever section it comes from.
type RuleParts<'a> = (&'a [L4Match], &'a [RouteDestination]);

/// Compile the `tls[]` (`tls = true`) or `tcp[]` rules of `vs`.
pub(super) fn rules(
    vs: &Res<VirtualService>,
    tls: bool,
    services: &mut Services<'_>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Vec<L4Rule> {
    let (section, list): (&str, Vec<RuleParts<'_>>) = if tls {
        (
            "tls",
            vs.spec
                .tls
                .iter()
                .map(|r| (r.matches.as_slice(), r.route.as_slice()))
                .collect(),
        )
    } else {
        (
            "tcp",
            vs.spec
                .tcp
                .iter()
                .map(|r| (r.matches.as_slice(), r.route.as_slice()))
                .collect(),
        )
    };
    let mut out = Vec::new();
    for (i, (matches, route)) in list.into_iter().enumerate() {
        let f = format!("{section}[{i}]");
        let before = errors.len();
        for (j, m) in matches.iter().enumerate() {
            if tls && m.sni_hosts.is_empty() {
                errors.push(vs.error(
                    format!("{f}.match[{j}].sniHosts"),
                    "sniHosts is required for TLS routes",
                ));
            }
            for (k, sni) in m.sni_hosts.iter().enumerate() {
                let covered = vs
                    .spec
                    .hosts
                    .iter()
                    .any(|h| crate::route::intersect(h, sni).is_some());
                if !covered {
                    errors.push(vs.error(
                        format!("{f}.match[{j}].sniHosts[{k}]"),
                        format!("{sni} is not covered by the VirtualService hosts"),
                    ));
                }
            }
            if !m.destination_subnets.is_empty()
                || m.source_labels.is_some()
                || m.source_namespace.is_some()
            {
                warnings.push(vs.error(
                    format!("{f}.match[{j}]"),
                    "destinationSubnets / sourceLabels / sourceNamespace are not supported: ignored",
                ));
            }
        }
        if tls && matches.is_empty() {
            errors.push(vs.error(
                format!("{f}.match"),
                "TLS routes need a match with sniHosts",
            ));
        }
        if route.is_empty() {
            errors.push(vs.error(format!("{f}.route"), "at least one destination is required"));
        }
        let single = route.len() == 1;
        let mut destinations = Vec::new();
        let mut total = 0u32;
        for (k, d) in route.iter().enumerate() {
            let field = format!("{f}.route[{k}]");
            let weight = match d.weight {
                None | Some(0) if single => 100,
                None => 0,
                Some(w @ 0..=100) => w as u32,
                Some(_) => {
                    errors.push(vs.error(format!("{field}.weight"), "must be 0..=100"));
                    continue;
                }
            };
            let Some(dest) = &d.destination else {
                errors.push(vs.error(format!("{field}.destination"), "destination is required"));
                continue;
            };
            let Some(cluster) =
                services.cluster_for(vs, &format!("{field}.destination"), dest, errors, warnings)
            else {
                continue;
            };
            total += weight;
            if weight > 0 {
                destinations.push(WeightedDestination {
                    weight,
                    cluster,
                    headers: HeaderOps::default(),
                });
            }
        }
        if errors.len() > before {
            continue;
        }
        if total == 0 {
            errors.push(vs.error(
                format!("{f}.route"),
                "the weights of the destinations sum to 0",
            ));
            continue;
        }
        out.push(L4Rule {
            route: L4Route {
                name: format!("{}.{section}[{i}]", vs.key()).into(),
                forward: Forward {
                    destinations,
                    total_weight: total,
                },
            },
            matches: matches.to_vec(),
        });
    }
    out
}
