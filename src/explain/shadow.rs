//! Unreachable rules: a rule is shadowed when every request one of its match blocks accepts
//! is already taken by an earlier rule (first match wins), typically by a catch-all placed
//! first, or by `prefix: /api` before `prefix: /api/v2`.
//!
//! The analysis is conservative: it reports a rule only when coverage is certain from the
//! conditions' shapes (equal or implied strings, same headers), never by guessing at
//! regexes. Explain-only; may allocate.
//!
//! Depends on: `route`.

use crate::route::{HeaderMatch, MatchBlock, StrMatch};

/// For each rule (given by its match blocks, in virtual-host order, on listener `port`) that
/// can never match: its position and the positions of the earlier rules that take its
/// requests.
pub(crate) fn shadowed(rules: &[&[MatchBlock]], port: u16) -> Vec<(usize, Vec<usize>)> {
    let any = MatchBlock::default();
    let mut out = Vec::new();
    for (j, later) in rules.iter().enumerate() {
        // A rule without blocks behaves as one block without conditions.
        let blocks: Vec<&MatchBlock> = if later.is_empty() {
            vec![&any]
        } else {
            later.iter().collect()
        };
        let mut by = Vec::new();
        let all_covered = blocks.iter().all(|lb| {
            let coverer = rules[..j].iter().position(|earlier| {
                earlier.is_empty() || earlier.iter().any(|eb| covers(eb, lb, port))
            });
            if let Some(i) = coverer {
                if !by.contains(&i) {
                    by.push(i);
                }
            }
            coverer.is_some()
        });
        if all_covered {
            by.sort_unstable();
            out.push((j, by));
        }
    }
    out
}

/// Whether a rule with these match blocks accepts every request on listener `port`.
pub(super) fn is_catch_all(blocks: &[MatchBlock], port: u16) -> bool {
    blocks.is_empty()
        || blocks
            .iter()
            .any(|b| covers(b, &MatchBlock::default(), port))
}

/// Whether every request on listener `port` that `inner` accepts is accepted by `outer`.
fn covers(outer: &MatchBlock, inner: &MatchBlock, port: u16) -> bool {
    let port_ok = match outer.port {
        None => true,
        // Every request on this listener carries its port.
        Some(p) => p == port || inner.port == Some(p),
    };
    port_ok
        && field(outer.method.as_ref(), inner.method.as_ref())
        && uri(outer, inner)
        && field(outer.scheme.as_ref(), inner.scheme.as_ref())
        && field(outer.authority.as_ref(), inner.authority.as_ref())
        && outer.headers.iter().all(|oh| {
            inner
                .headers
                .iter()
                .any(|ih| ih.name == oh.name && str_covers(&oh.value, &ih.value))
        })
        && outer
            .without_headers
            .iter()
            .all(|ow| excluded(ow, &inner.without_headers))
        && outer.query.iter().all(|(name, om)| {
            inner
                .query
                .iter()
                .any(|(n, im)| n == name && str_covers(om, im))
        })
}

/// `inner` forbids at least every value `outer`'s `withoutHeaders` entry `ow` forbids.
fn excluded(ow: &HeaderMatch, inner: &[HeaderMatch]) -> bool {
    inner
        .iter()
        .any(|iw| iw.name == ow.name && str_covers(&iw.value, &ow.value))
}

fn uri(outer: &MatchBlock, inner: &MatchBlock) -> bool {
    match (&outer.uri, &inner.uri) {
        (None, _) => true,
        (Some(o), _) if is_universal(o) => true,
        (Some(_), None) => false,
        (Some(o), Some(i)) => match (outer.ignore_uri_case, inner.ignore_uri_case) {
            // `ignoreUriCase` applies to exact and prefix values only (as in Istio): a regex
            // is matched as written, and `inner` accepts other cases it may refuse.
            (_, true) if matches!(o, StrMatch::Regex(_)) => false,
            (false, false) => str_covers(o, i),
            (true, _) => str_covers_ignore_case(o, i),
            // `inner` accepts other cases that a case-sensitive `outer` may refuse.
            (false, true) => false,
        },
    }
}

/// An optional condition: absent accepts everything.
fn field(outer: Option<&StrMatch>, inner: Option<&StrMatch>) -> bool {
    match (outer, inner) {
        (None, _) => true,
        (Some(o), None) => is_universal(o),
        (Some(o), Some(i)) => str_covers(o, i),
    }
}

/// Whether `m` accepts every text value. Not `prefix: /` or `regex: /.*` for a path:
/// `OPTIONS *` and authority-form requests have the paths `*` and ``, and reach later rules.
fn is_universal(m: &StrMatch) -> bool {
    match m {
        StrMatch::Present => true,
        StrMatch::Prefix(p) => p.is_empty(),
        StrMatch::Regex(_) => m.to_string() == "regex .*",
        StrMatch::Exact(_) => false,
    }
}

/// Every value `inner` accepts, `outer` accepts.
fn str_covers(outer: &StrMatch, inner: &StrMatch) -> bool {
    // A header value with bytes outside visible ASCII is not text: only presence matches
    // it, so `prefix: ""` and `regex: .*` cover every condition but presence.
    if matches!(outer, StrMatch::Present)
        || (is_universal(outer) && !matches!(inner, StrMatch::Present))
    {
        return true;
    }
    match (outer, inner) {
        (StrMatch::Exact(o), StrMatch::Exact(i)) => o == i,
        (StrMatch::Prefix(o), StrMatch::Exact(i) | StrMatch::Prefix(i)) => i.starts_with(&**o),
        (StrMatch::Regex(o), StrMatch::Exact(i)) => o.is_match(i),
        (StrMatch::Regex(o), StrMatch::Regex(i)) => o.as_str() == i.as_str(),
        _ => false,
    }
}

/// `str_covers` where `outer` compares exact and prefix values ignoring ASCII case.
fn str_covers_ignore_case(outer: &StrMatch, inner: &StrMatch) -> bool {
    match (outer, inner) {
        (StrMatch::Exact(o), StrMatch::Exact(i)) => o.eq_ignore_ascii_case(i),
        (StrMatch::Prefix(o), StrMatch::Exact(i) | StrMatch::Prefix(i)) => {
            i.len() >= o.len() && i.as_bytes()[..o.len()].eq_ignore_ascii_case(o.as_bytes())
        }
        _ => str_covers(outer, inner),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderName;

    use super::*;

    fn rule(matches: Vec<MatchBlock>) -> Vec<MatchBlock> {
        matches
    }

    fn check(rules: &[Vec<MatchBlock>], port: u16) -> Vec<(usize, Vec<usize>)> {
        let slices: Vec<&[MatchBlock]> = rules.iter().map(Vec::as_slice).collect();
        shadowed(&slices, port)
    }

    fn uri(m: StrMatch) -> MatchBlock {
        MatchBlock {
            uri: Some(m),
            ..Default::default()
        }
    }

    fn user(value: StrMatch) -> MatchBlock {
        MatchBlock {
            headers: vec![HeaderMatch {
                name: HeaderName::from_static("end-user"),
                value,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn fuzzing_findings_f1_to_f3_are_not_reported_as_shadowed() {
        // F1: `prefix: /` does not take `OPTIONS *` from a later rule without a path match.
        let routes = [
            rule(vec![uri(StrMatch::Prefix("/".into()))]),
            rule(vec![user(StrMatch::Exact("jason".into()))]),
            rule(vec![uri(StrMatch::Prefix("/api".into()))]),
        ];
        assert_eq!(check(&routes, 80), [(2, vec![0])]);
        // F3: `regex: .*` on a header does not match a value that is not text; presence does.
        let routes = [
            rule(vec![user(StrMatch::regex(".*").unwrap())]),
            rule(vec![user(StrMatch::Present)]),
            rule(vec![user(StrMatch::Exact("jason".into()))]),
        ];
        assert_eq!(check(&routes, 80), [(2, vec![0])]);
        // F2: a regex is matched as written even under `ignoreUriCase`.
        let nocase = |m: StrMatch| MatchBlock {
            uri: Some(m),
            ignore_uri_case: true,
            ..Default::default()
        };
        let re = || StrMatch::regex("/a.*").unwrap();
        let routes = [
            rule(vec![nocase(re())]),
            rule(vec![nocase(StrMatch::Exact("/abc".into()))]),
            rule(vec![uri(StrMatch::Exact("/abc".into()))]),
        ];
        assert_eq!(check(&routes, 80), [(2, vec![0])]);
    }

    #[test]
    fn catch_all_first_shadows_everything_after_it() {
        let routes = [
            rule(vec![]),
            rule(vec![user(StrMatch::Exact("jason".into()))]),
            rule(vec![]),
        ];
        assert_eq!(check(&routes, 80), [(1, vec![0]), (2, vec![0])]);
        assert!(is_catch_all(&routes[0], 80));
        // `OPTIONS *` and authority-form targets have the paths `*` and ``.
        assert!(!is_catch_all(
            &rule(vec![uri(StrMatch::Prefix("/".into()))]),
            80
        ));
        assert!(is_catch_all(
            &rule(vec![uri(StrMatch::Prefix("".into()))]),
            80
        ));
        let on_port = MatchBlock {
            port: Some(80),
            ..Default::default()
        };
        assert!(is_catch_all(&rule(vec![on_port.clone()]), 80));
        assert!(!is_catch_all(&rule(vec![on_port]), 81));
    }

    #[test]
    fn specific_rules_first_shadow_nothing() {
        let routes = [
            rule(vec![user(StrMatch::Exact("jason".into()))]),
            rule(vec![uri(StrMatch::Prefix("/api".into()))]),
            rule(vec![]),
        ];
        assert!(check(&routes, 80).is_empty());
    }

    #[test]
    fn broader_prefix_first_shadows_narrower_blocks() {
        let routes = [
            rule(vec![uri(StrMatch::Prefix("/api".into()))]),
            rule(vec![
                uri(StrMatch::Prefix("/api/v2".into())),
                uri(StrMatch::Exact("/api".into())),
            ]),
            // One block escapes: the rule is reachable.
            rule(vec![
                uri(StrMatch::Prefix("/api/v3".into())),
                uri(StrMatch::Prefix("/web".into())),
            ]),
            // Narrower in another dimension still covered: /api + header.
            rule(vec![MatchBlock {
                uri: Some(StrMatch::Prefix("/api/x".into())),
                ..user(StrMatch::Present)
            }]),
        ];
        assert_eq!(check(&routes, 80), [(1, vec![0]), (3, vec![0])]);
    }

    #[test]
    fn headers_and_case_are_respected() {
        let routes = [
            rule(vec![user(StrMatch::Present)]),
            rule(vec![user(StrMatch::Exact("jason".into()))]),
            rule(vec![uri(StrMatch::Exact("/A".into()))]),
            rule(vec![MatchBlock {
                ignore_uri_case: true,
                ..uri(StrMatch::Exact("/a".into()))
            }]),
        ];
        // jason is taken by "any end-user"; a case-insensitive /a is not covered by /A.
        assert_eq!(check(&routes, 80), [(1, vec![0])]);
    }
}
