//! Host tables: exact names, `*.suffix` wildcards (longest suffix wins) and `*`.
//!
//! Lookup costs one hash probe per label of the request host, never a scan of the table,
//! so it stays flat as the number of hosts grows. Keys are lowercased at compile time; the
//! request host is lowercased into a stack buffer when needed.
//!
//! Depends on: std, foldhash (through `FastMap`).

use super::FastMap;

/// Longest host name we look up; longer names (invalid per RFC 1035) match only `*`.
const MAX_HOST: usize = 255;

/// A set of host patterns mapping to values.
#[derive(Debug, Clone)]
pub struct HostTable<T> {
    exact: FastMap<Box<str>, T>,
    /// `*.example.com` is stored under `.example.com`.
    suffix: FastMap<Box<str>, T>,
    any: Option<T>,
}

impl<T> Default for HostTable<T> {
    fn default() -> Self {
        Self {
            exact: FastMap::default(),
            suffix: FastMap::default(),
            any: None,
        }
    }
}

impl<T> HostTable<T> {
    /// The entry for `pattern` (`name`, `*.suffix` or `*`), created with `make` if absent.
    pub fn entry_or_insert_with(&mut self, pattern: &str, make: impl FnOnce() -> T) -> &mut T {
        let p = pattern.to_ascii_lowercase();
        if p == "*" {
            self.any.get_or_insert_with(make)
        } else if let Some(s) = p.strip_prefix('*') {
            self.suffix.entry(s.into()).or_insert_with(make)
        } else {
            self.exact.entry(p.into()).or_insert_with(make)
        }
    }

    /// The value for `host` (no port): exact, then the longest wildcard suffix, then `*`.
    pub fn lookup(&self, host: &str) -> Option<&T> {
        let mut buf = [0u8; MAX_HOST];
        let long;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            if host.len() > MAX_HOST {
                // Longer than any DNS name, but it must match as its lowercase form does
                // (falling through to `*` would skip a stricter wildcard's rules); rare
                // enough to allocate.
                long = host.to_ascii_lowercase();
                return self.lookup_lower(&long);
            }
            let b = &mut buf[..host.len()];
            b.copy_from_slice(host.as_bytes());
            b.make_ascii_lowercase();
            // Lowercasing ASCII bytes keeps UTF-8 valid.
            match std::str::from_utf8(b) {
                Ok(s) => s,
                Err(_) => return self.any.as_ref(),
            }
        } else {
            host
        };
        self.lookup_lower(host)
    }

    /// `lookup` for a host already in lowercase.
    fn lookup_lower(&self, host: &str) -> Option<&T> {
        if let Some(v) = self.exact.get(host) {
            return Some(v);
        }
        if !self.suffix.is_empty() {
            // Suffixes start at each '.', longest first; `*.a.com` needs at least one char
            // before `.a.com`, so start after the first byte.
            for (i, _) in host.match_indices('.').filter(|(i, _)| *i > 0) {
                if let Some(v) = self.suffix.get(&host[i..]) {
                    return Some(v);
                }
            }
        }
        self.any.as_ref()
    }

    /// Every (pattern, value), for dumps: exact first, then wildcards, then `*`.
    pub fn iter(&self) -> impl Iterator<Item = (String, &T)> {
        let mut exact: Vec<_> = self.exact.iter().map(|(k, v)| (k.to_string(), v)).collect();
        exact.sort_by(|a, b| a.0.cmp(&b.0));
        let mut wild: Vec<_> = self
            .suffix
            .iter()
            .map(|(k, v)| (format!("*{k}"), v))
            .collect();
        wild.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        exact
            .into_iter()
            .chain(wild)
            .chain(self.any.iter().map(|v| ("*".to_owned(), v)))
    }

    /// Every value, mutably, in no particular order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.exact
            .values_mut()
            .chain(self.suffix.values_mut())
            .chain(self.any.iter_mut())
    }

    /// Number of patterns.
    pub fn len(&self) -> usize {
        self.exact.len() + self.suffix.len() + usize::from(self.any.is_some())
    }

    /// Whether the table has no patterns.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether host pattern `pattern` (`name`, `*.suffix`, `*`) covers host name `host`.
pub fn pattern_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            host.len() > suffix.len()
                && host.as_bytes()[host.len() - suffix.len()..]
                    .eq_ignore_ascii_case(suffix.as_bytes())
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// The intersection of two host patterns as Istio computes it for a VirtualService host
/// against a Gateway server host: the more specific of the two when one covers the other.
pub fn intersect(a: &str, b: &str) -> Option<String> {
    if covers(a, b) {
        Some(b.to_ascii_lowercase())
    } else if covers(b, a) {
        Some(a.to_ascii_lowercase())
    } else {
        None
    }
}

/// Whether pattern `outer` covers every host pattern `inner` covers.
fn covers(outer: &str, inner: &str) -> bool {
    if outer == "*" {
        return true;
    }
    if inner == "*" {
        return false;
    }
    match (outer.strip_prefix('*'), inner.strip_prefix('*')) {
        (Some(o), Some(i)) => {
            i.len() >= o.len()
                && i.as_bytes()[i.len() - o.len()..].eq_ignore_ascii_case(o.as_bytes())
        }
        (Some(_), None) => pattern_matches(outer, inner),
        (None, Some(_)) => false,
        (None, None) => outer.eq_ignore_ascii_case(inner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_beats_wildcard_longest_suffix_wins() {
        let mut t = HostTable::default();
        *t.entry_or_insert_with("*", || 0) = 1;
        *t.entry_or_insert_with("*.com", || 0) = 2;
        *t.entry_or_insert_with("*.example.com", || 0) = 3;
        *t.entry_or_insert_with("api.example.com", || 0) = 4;
        assert_eq!(t.lookup("api.example.com"), Some(&4));
        assert_eq!(t.lookup("API.Example.COM"), Some(&4));
        assert_eq!(t.lookup("www.example.com"), Some(&3));
        assert_eq!(t.lookup("a.b.example.com"), Some(&3));
        assert_eq!(t.lookup("example.com"), Some(&2));
        assert_eq!(t.lookup("localhost"), Some(&1));
        assert_eq!(t.len(), 4);
        let order: Vec<_> = t.iter().map(|(k, _)| k).collect();
        assert_eq!(order, ["api.example.com", "*.example.com", "*.com", "*"]);
    }

    /// Found by the `route` fuzz target: a Host longer than 255 bytes with a capital letter
    /// went to `*` while its lowercase form matched the stricter wildcard.
    #[test]
    fn long_mixed_case_host_matches_as_its_lowercase_form() {
        let mut t = HostTable::default();
        *t.entry_or_insert_with("*", || 0) = 1;
        *t.entry_or_insert_with("*.example.com", || 0) = 2;
        let long = format!("{}.example.com", "a".repeat(300));
        assert_eq!(t.lookup(&long), Some(&2));
        assert_eq!(t.lookup(&long.replacen('a', "A", 1)), Some(&2));
        assert_eq!(t.lookup(&long.to_ascii_uppercase()), Some(&2));
    }

    #[test]
    fn wildcard_needs_a_label() {
        let mut t = HostTable::default();
        t.entry_or_insert_with("*.example.com", || ());
        assert!(t.lookup("example.com").is_none());
        assert!(t.lookup(".example.com").is_none());
    }

    #[test]
    fn intersections() {
        assert_eq!(
            intersect("*", "*.yourdomain").as_deref(),
            Some("*.yourdomain")
        );
        assert_eq!(
            intersect("application.yourdomain", "*.yourdomain").as_deref(),
            Some("application.yourdomain")
        );
        assert_eq!(
            intersect("*.yourdomain", "a.yourdomain").as_deref(),
            Some("a.yourdomain")
        );
        assert_eq!(intersect("*.a.com", "*.com").as_deref(), Some("*.a.com"));
        assert_eq!(intersect("a.com", "b.com"), None);
        assert_eq!(intersect("*.a.com", "*.b.com"), None);
        assert_eq!(intersect("A.com", "a.COM").as_deref(), Some("a.com"));
    }
}
