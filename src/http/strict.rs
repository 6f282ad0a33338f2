//! Request checks that hyper leaves to the application, applied before routing: ambiguous
//! HTTP/1.1 framing (RFC 9112 §6), Host rules (§3.2), request-line length, and path
//! normalisation as Istio configures Envoy (RFC 3986 dot-segment removal with `%2e` decoded
//! for that purpose, `%2F` left alone, slashes not merged), so `/public/../admin` can never
//! slip past a prefix rule. A rejected request is answered without contacting an upstream
//! and its connection is closed.
//!
//! Depends on: http.

use std::borrow::Cow;

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, StatusCode, Version};

/// Why a request is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    /// Status to answer.
    pub status: StatusCode,
    /// Short body.
    pub reason: &'static str,
}

const fn reject(status: StatusCode, reason: &'static str) -> Reject {
    Reject { status, reason }
}

/// Check framing and Host of a request head. `target_len` is the length of the request
/// target as received; over `max_target` is 414.
pub fn check(
    version: Version,
    headers: &HeaderMap,
    has_authority: bool,
    target_len: usize,
    max_target: usize,
) -> Result<(), Reject> {
    if target_len > max_target {
        return Err(reject(StatusCode::URI_TOO_LONG, "request target too long"));
    }
    if version == Version::HTTP_11 || version == Version::HTTP_10 {
        // One pass over the fields (a standard name compares as a number) instead of three
        // hashed lookups; the first two Host fields are all it takes to judge them.
        let (mut te, mut cl, mut hosts) = (0usize, 0usize, [None, None]);
        let mut host_count = 0usize;
        for (name, value) in headers {
            if *name == TRANSFER_ENCODING {
                te += 1;
            } else if *name == CONTENT_LENGTH {
                cl += 1;
            } else if *name == HOST {
                if let Some(slot) = hosts.get_mut(host_count) {
                    *slot = Some(value.as_bytes());
                }
                host_count += 1;
            }
        }
        // A message with both is a smuggling attempt or a broken client: never guess.
        if te > 0 && cl > 0 {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "content-length with transfer-encoding",
            ));
        }
        if cl > 1 {
            return Err(reject(StatusCode::BAD_REQUEST, "several content-length"));
        }
        if te > 0 {
            let codings: Vec<String> = headers
                .get_all(TRANSFER_ENCODING)
                .iter()
                .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
                .map(|t| t.trim().to_ascii_lowercase())
                .collect();
            if codings.as_slice() != ["chunked"] {
                return Err(reject(
                    StatusCode::BAD_REQUEST,
                    "transfer-encoding other than a single chunked",
                ));
            }
        }
        match (hosts[0], hosts[1]) {
            (None, _) if version == Version::HTTP_11 => {
                return Err(reject(StatusCode::BAD_REQUEST, "missing host"));
            }
            (None, _) => {
                if !has_authority {
                    return Err(reject(StatusCode::BAD_REQUEST, "missing host"));
                }
            }
            (Some(one), None) if one.contains(&b',') || one.is_empty() => {
                return Err(reject(StatusCode::BAD_REQUEST, "invalid host"));
            }
            (Some(_), None) => {}
            (Some(_), Some(_)) => {
                return Err(reject(StatusCode::BAD_REQUEST, "several host headers"))
            }
        }
    }
    Ok(())
}

/// `path` with `.` and `..` segments removed (RFC 3986 §5.2.4), `%2e` counted as a dot.
/// Borrowed when nothing changes (the common case: no allocation).
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    if !path.starts_with('/') || !needs_normalizing(path) {
        return Cow::Borrowed(path);
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match dot_kind(seg) {
            Some(1) => trailing_slash = i == last,
            Some(2) => {
                out.pop();
                trailing_slash = i == last;
            }
            _ => {
                out.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if trailing_slash || s.is_empty() {
        s.push('/');
    }
    Cow::Owned(s)
}

/// Whether `path` has a segment that is `.` or `..` (possibly percent-encoded). Most paths
/// have neither a dot nor a percent sign, and a byte scan settles them.
fn needs_normalizing(path: &str) -> bool {
    path.bytes().any(|b| b == b'.' || b == b'%')
        && path.split('/').any(|seg| dot_kind(seg).is_some())
}

/// 1 for a `.` segment, 2 for `..`, with `%2e` / `%2E` as dots; `None` otherwise.
fn dot_kind(seg: &str) -> Option<u8> {
    let b = seg.as_bytes();
    let mut i = 0;
    let mut dots = 0u8;
    while i < b.len() {
        if b[i] == b'.' {
            i += 1;
        } else if b[i] == b'%'
            && b.get(i + 1) == Some(&b'2')
            && matches!(b.get(i + 2), Some(b'e' | b'E'))
        {
            i += 3;
        } else {
            return None;
        }
        dots += 1;
        if dots > 2 {
            return None;
        }
    }
    (dots > 0).then_some(dots)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16 * 1024;

    #[test]
    fn dot_segments_are_removed() {
        for (input, want) in [
            ("/public/x", "/public/x"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/.%2E/admin", "/admin"),
            ("/public/x/../../admin", "/admin"),
            ("/public/./a/../b", "/public/b"),
            ("/public/%2e/a", "/public/a"),
            ("/../../etc", "/etc"),
            ("/a/..", "/"),
            ("/a/b/.", "/a/b/"),
            ("/a/%2F../b", "/a/%2F../b"),
            ("/a%2Fb/../c", "/c"),
            ("//a//b", "//a//b"),
            ("/...", "/..."),
            ("/a/.b", "/a/.b"),
            ("*", "*"),
        ] {
            assert_eq!(normalize_path(input), want, "{input}");
        }
        assert!(matches!(normalize_path("/plain/path"), Cow::Borrowed(_)));
    }

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn framing_and_host_rules() {
        let ok = |pairs| check(Version::HTTP_11, &h(pairs), false, 10, MAX);
        assert!(ok(&[("host", "a")]).is_ok());
        assert!(ok(&[("host", "a"), ("transfer-encoding", "chunked")]).is_ok());
        assert!(ok(&[("host", "a"), ("content-length", "5")]).is_ok());
        for bad in [
            &[
                ("host", "a"),
                ("content-length", "5"),
                ("transfer-encoding", "chunked"),
            ][..],
            &[
                ("host", "a"),
                ("content-length", "5"),
                ("content-length", "5"),
            ],
            &[("host", "a"), ("transfer-encoding", "gzip, chunked")],
            &[
                ("host", "a"),
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            &[],
            &[("host", "a"), ("host", "b")],
            &[("host", "a, b")],
        ] {
            assert_eq!(
                ok(bad).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad:?}"
            );
        }
        assert_eq!(
            check(Version::HTTP_11, &h(&[("host", "a")]), false, 20_000, MAX)
                .unwrap_err()
                .status,
            StatusCode::URI_TOO_LONG
        );
        assert!(check(Version::HTTP_10, &h(&[]), false, 1, MAX).is_err());
        assert!(check(Version::HTTP_10, &h(&[]), true, 1, MAX).is_ok());
        assert!(check(Version::HTTP_2, &h(&[]), true, 1, MAX).is_ok());
    }
}
