//! VirtualService delegation (`http[].delegate`): a rule of a root VirtualService hands its
//! traffic to the rules of another VirtualService (no hosts, no gateways), which are
//! evaluated in place of the delegating rule, each with its match merged into the root's as
//! Istio merges them (the delegate's fields win, unset ones come from the root; a delegate
//! match that cannot be inside the root's, such as a prefix outside the root prefix, is
//! dropped). One level only, as in Istio: a delegate that delegates again is an error, which
//! also rules out cycles.
//!
//! Depends on: `config::{raw, istio, error}`, `compile::routes`.

use std::collections::HashSet;

use super::routes::{CompiledRule, RuleCompiler};
use super::services::Services;
use crate::config::error::ConfigError;
use crate::config::istio::{HttpMatchRequest, HttpRoute, StringMatch, VirtualService};
use crate::config::raw::{RawSet, Res};

/// `namespace/name` of every VirtualService some rule delegates to.
pub(super) fn targets(raw: &RawSet) -> HashSet<String> {
    raw.virtual_services
        .iter()
        .flat_map(|vs| {
            vs.spec.http.iter().filter_map(move |r| {
                r.delegate.as_ref().map(|d| {
                    format!(
                        "{}/{}",
                        d.namespace.as_deref().unwrap_or(&vs.namespace),
                        d.name
                    )
                })
            })
        })
        .collect()
}

/// Compile the `http[]` rules of root `vs`, expanding delegating rules in place.
pub(super) fn rules(
    raw: &RawSet,
    vs: &Res<VirtualService>,
    services: &mut Services<'_>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Vec<CompiledRule> {
    let mut out = Vec::new();
    for (i, r) in vs.spec.http.iter().enumerate() {
        let Some(d) = &r.delegate else {
            let mut rc = RuleCompiler {
                vs,
                services,
                errors,
                warnings,
            };
            out.extend(rc.rule(i, r));
            continue;
        };
        let f = format!("http[{i}]");
        if !r.route.is_empty() || r.redirect.is_some() || r.direct_response.is_some() {
            errors.push(vs.error(
                &f,
                "delegate cannot be combined with route, redirect or directResponse",
            ));
            continue;
        }
        let ns = d.namespace.as_deref().unwrap_or(&vs.namespace);
        let Some(child) = raw
            .virtual_services
            .iter()
            .find(|c| c.namespace == ns && c.name == d.name)
        else {
            errors.push(vs.error(
                format!("{f}.delegate.name"),
                format!("unknown VirtualService {ns}/{}", d.name),
            ));
            continue;
        };
        if !child.spec.hosts.is_empty() {
            errors.push(vs.error(
                format!("{f}.delegate.name"),
                format!(
                    "{} has hosts: a delegate VirtualService must not set hosts",
                    child.id()
                ),
            ));
            continue;
        }
        for (j, cr) in child.spec.http.iter().enumerate() {
            if cr.delegate.is_some() {
                errors.push(child.error(
                    format!("http[{j}].delegate"),
                    format!(
                        "delegation is one level only: {} is already a delegate of {}",
                        child.id(),
                        vs.id()
                    ),
                ));
                continue;
            }
            let Some(matches) = merged_matches(&r.matches, &cr.matches) else {
                warnings.push(child.error(
                    format!("http[{j}].match"),
                    format!(
                        "no match block fits inside {} http[{i}]'s match: rule never used",
                        vs.id()
                    ),
                ));
                continue;
            };
            let merged = HttpRoute {
                matches,
                delegate: None,
                ..cr.clone()
            };
            let mut rc = RuleCompiler {
                vs: child,
                services,
                errors,
                warnings,
            };
            out.extend(rc.rule(j, &merged));
        }
    }
    out
}

/// The match blocks of a delegate rule inside a root rule; `None` when every combination
/// conflicts.
fn merged_matches(
    root: &[HttpMatchRequest],
    leaf: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    match (root.is_empty(), leaf.is_empty()) {
        (true, _) => Some(leaf.to_vec()),
        (false, true) => Some(root.to_vec()),
        (false, false) => {
            let out: Vec<HttpMatchRequest> = root
                .iter()
                .flat_map(|r| leaf.iter().map(move |l| (r, l)))
                .filter(|(r, l)| !conflict(r, l))
                .map(|(r, l)| merge(r, l))
                .collect();
            (!out.is_empty()).then_some(out)
        }
    }
}

/// Istio's `mergeHTTPMatchRequest`: the leaf's conditions, with the root's where the leaf
/// has none; header-like maps are unions (the leaf wins on a shared key).
fn merge(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = leaf.clone();
    out.name = match (&root.name, &leaf.name) {
        (Some(r), Some(l)) => Some(format!("{r}-{l}")),
        (r, l) => l.clone().or_else(|| r.clone()),
    };
    out.uri = leaf.uri.clone().or_else(|| root.uri.clone());
    out.scheme = leaf.scheme.clone().or_else(|| root.scheme.clone());
    out.method = leaf.method.clone().or_else(|| root.method.clone());
    out.authority = leaf.authority.clone().or_else(|| root.authority.clone());
    out.port = leaf.port.or(root.port);
    for (map, from) in [
        (&mut out.headers, &root.headers),
        (&mut out.without_headers, &root.without_headers),
        (&mut out.query_params, &root.query_params),
    ] {
        for (k, v) in from {
            map.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if out.gateways.is_empty() {
        out.gateways = root.gateways.clone();
    }
    out
}

/// Istio's `hasConflict`: a leaf block that cannot match inside the root block.
fn conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| string_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    let maps = [
        (&root.headers, &leaf.headers),
        (&root.without_headers, &leaf.without_headers),
        (&root.query_params, &leaf.query_params),
    ];
    if maps
        .iter()
        .any(|(r, l)| l.iter().any(|(k, lv)| string_conflict(r.get(k), Some(lv))))
    {
        return true;
    }
    root.ignore_uri_case != leaf.ignore_uri_case
        || matches!((root.port, leaf.port), (Some(a), Some(b)) if a != b)
}

fn string_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(r), Some(l)) = (root, leaf) else {
        return false;
    };
    let set = |m: &StringMatch| m.exact.is_some() || m.prefix.is_some() || m.regex.is_some();
    if r.regex.is_some() || l.regex.is_some() {
        return set(r) && set(l);
    }
    if let Some(exact) = &r.exact {
        return l.prefix.is_some() || l.exact.as_ref().is_some_and(|e| e != exact);
    }
    if let Some(prefix) = &r.prefix {
        if let Some(p) = &l.prefix {
            return !p.starts_with(prefix.as_str());
        }
        if let Some(e) = &l.exact {
            return !e.starts_with(prefix.as_str());
        }
        return false;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(exact: Option<&str>, prefix: Option<&str>) -> HttpMatchRequest {
        HttpMatchRequest {
            uri: Some(StringMatch {
                exact: exact.map(Into::into),
                prefix: prefix.map(Into::into),
                regex: None,
            }),
            ..HttpMatchRequest::default()
        }
    }

    #[test]
    fn conflicts_follow_istio() {
        let root = uri(None, Some("/productpage"));
        assert!(!conflict(&root, &uri(None, Some("/productpage/v1"))));
        assert!(!conflict(&root, &uri(Some("/productpage/x"), None)));
        assert!(conflict(&root, &uri(None, Some("/reviews"))));
        assert!(conflict(&uri(Some("/a"), None), &uri(None, Some("/a"))));
        assert!(!conflict(&uri(Some("/a"), None), &uri(Some("/a"), None)));
        assert!(!conflict(&root, &HttpMatchRequest::default()));
        let port = HttpMatchRequest {
            port: Some(80),
            ..HttpMatchRequest::default()
        };
        let other = HttpMatchRequest {
            port: Some(81),
            ..HttpMatchRequest::default()
        };
        assert!(conflict(&port, &other));
    }

    #[test]
    fn merge_takes_leaf_then_root() {
        let mut root = uri(None, Some("/api"));
        root.headers.insert("x-a".into(), StringMatch::default());
        root.gateways = vec!["gw".into()];
        let mut leaf = uri(None, Some("/api/v2"));
        leaf.headers.insert("x-b".into(), StringMatch::default());
        let m = merge(&root, &leaf);
        assert_eq!(m.uri.unwrap().prefix.as_deref(), Some("/api/v2"));
        assert_eq!(m.headers.len(), 2);
        assert_eq!(m.gateways, ["gw"]);
        assert_eq!(
            merged_matches(&[root.clone()], &[uri(None, Some("/other"))]),
            None
        );
        assert_eq!(merged_matches(&[], &[leaf.clone()]).unwrap().len(), 1);
        assert_eq!(
            merged_matches(&[root], &[]).unwrap()[0]
                .uri
                .as_ref()
                .unwrap()
                .prefix
                .as_deref(),
            Some("/api")
        );
    }
}
