//! Consistent hashing for `loadBalancer.consistentHash`: the request's hash key (header,
//! cookie, source IP or query parameter, as Envoy computes them) and the two tables that map
//! a hash to an endpoint, ring hash (Karger) and Maglev. Both are built from endpoint
//! addresses, not indices, so adding or removing one endpoint moves only the keys that
//! belonged to it (ring) or about that share (Maglev).
//!
//! Depends on: xxhash-rust, http, fastrand.

use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use xxhash_rust::xxh64::xxh64;

/// Envoy's default `maximum_ring_size`.
pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Istio's default `minimumRingSize`.
pub const DEFAULT_RING_SIZE: u64 = 1024;
/// Envoy's default Maglev table size (a prime).
pub const DEFAULT_MAGLEV_SIZE: u64 = 65537;

/// What a request is hashed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `httpCookie`.
    Cookie(Cookie),
    /// `httpHeaderName`.
    Header(HeaderName),
    /// `httpQueryParameterName`.
    Query(String),
    /// `useSourceIp`.
    SourceIp,
}

/// `httpCookie`: hash on this cookie; when it is absent and `ttl` is set, make one up and
/// set it on the response so the client sticks from then on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    /// Cookie name.
    pub name: String,
    /// `Path` attribute of a generated cookie.
    pub path: Option<String>,
    /// Lifetime of a generated cookie; zero makes a session cookie; `None` never generates.
    pub ttl: Option<Duration>,
}

/// A request's hash, and the cookie to set when one was generated.
#[derive(Debug, Default)]
pub struct RequestHash {
    /// The hash; `None` when the request lacks the key (a random endpoint is used, as Envoy
    /// does).
    pub hash: Option<u64>,
    /// `Set-Cookie` value for the response.
    pub set_cookie: Option<HeaderValue>,
}

impl HashKey {
    /// The hash of one request.
    pub fn hash(&self, headers: &HeaderMap, query: Option<&str>, client: IpAddr) -> RequestHash {
        match self {
            HashKey::Header(name) => {
                let mut it = headers.get_all(name).iter().peekable();
                if it.peek().is_none() {
                    return RequestHash::default();
                }
                // Several values hash as one, in order, like Envoy.
                let mut h = 0u64;
                for v in it {
                    h = xxh64(v.as_bytes(), h);
                }
                with_hash(h)
            }
            HashKey::SourceIp => with_hash(xxh64(client.to_string().as_bytes(), 0)),
            HashKey::Query(name) => match query_param(query, name) {
                Some(v) => with_hash(xxh64(v.as_bytes(), 0)),
                None => RequestHash::default(),
            },
            HashKey::Cookie(c) => match cookie(headers, &c.name) {
                Some(v) => with_hash(xxh64(v.as_bytes(), 0)),
                None => match c.ttl {
                    None => RequestHash::default(),
                    Some(ttl) => {
                        let value = format!("{:016x}", fastrand::u64(..));
                        let mut s = format!("{}=\"{value}\"", c.name);
                        if !ttl.is_zero() {
                            s.push_str(&format!("; Max-Age={}", ttl.as_secs().max(1)));
                        }
                        if let Some(p) = &c.path {
                            s.push_str(&format!("; Path={p}"));
                        }
                        s.push_str("; HttpOnly");
                        RequestHash {
                            hash: Some(xxh64(value.as_bytes(), 0)),
                            set_cookie: HeaderValue::from_str(&s).ok(),
                        }
                    }
                },
            },
        }
    }
}

fn with_hash(h: u64) -> RequestHash {
    RequestHash {
        hash: Some(h),
        set_cookie: None,
    }
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// The value of cookie `name`, quotes removed.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"'))
        })
}

/// A hash → endpoint table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Table {
    /// Maglev lookup table: slot → endpoint index.
    Maglev(Vec<u32>),
    /// Ring points sorted by hash.
    Ring(Vec<(u64, u32)>),
}

impl Table {
    /// A ring of at least `min_size` points (at most `MAX_RING_SIZE`), `unit` points per
    /// unit of weight; `endpoints` are (weight, address). `unit` is rounded up to a power of
    /// two so that it rarely changes when an endpoint comes or goes: then only the keys of
    /// that endpoint move (Envoy's scaling moves every endpoint's points a little).
    pub fn ring(endpoints: &[(u32, String)], min_size: u64) -> Self {
        let total: u64 = endpoints
            .iter()
            .map(|(w, _)| u64::from(*w))
            .sum::<u64>()
            .max(1);
        let mut unit = min_size.div_ceil(total).max(1).next_power_of_two();
        while unit > 1 && unit * total > MAX_RING_SIZE {
            unit /= 2;
        }
        let mut ring = Vec::new();
        for (i, (w, key)) in endpoints.iter().enumerate() {
            for p in 0..unit * u64::from(*w) {
                let h = xxh64(format!("{key}_{p}").as_bytes(), 0);
                ring.push((h, u32::try_from(i).unwrap_or(u32::MAX)));
            }
        }
        ring.sort_unstable();
        Table::Ring(ring)
    }

    /// A Maglev table of `size` slots (a prime), endpoints filling slots in proportion to
    /// their weights.
    pub fn maglev(endpoints: &[(u32, String)], size: u64) -> Self {
        let m = usize::try_from(size)
            .unwrap_or(DEFAULT_MAGLEV_SIZE as usize)
            .max(1);
        if endpoints.is_empty() {
            return Table::Maglev(Vec::new());
        }
        let perms: Vec<(usize, usize)> = endpoints
            .iter()
            .map(|(_, key)| {
                let offset = (xxh64(key.as_bytes(), 0) % m as u64) as usize;
                let skip = (xxh64(key.as_bytes(), 1) % (m as u64 - 1).max(1)) as usize + 1;
                (offset, skip)
            })
            .collect();
        let max_w = endpoints.iter().map(|(w, _)| *w).max().unwrap_or(1).max(1);
        let mut next = vec![0usize; endpoints.len()];
        let mut credit = vec![0f64; endpoints.len()];
        let mut table: Vec<Option<u32>> = vec![None; m];
        let mut filled = 0;
        while filled < m {
            for (i, (w, _)) in endpoints.iter().enumerate() {
                credit[i] += f64::from(*w) / f64::from(max_w);
                while credit[i] >= 1.0 && filled < m {
                    credit[i] -= 1.0;
                    let (offset, skip) = perms[i];
                    // Every slot is reached within m steps because skip and m are coprime
                    // (m prime); the bound only guards a non-prime size.
                    for _ in 0..m {
                        let c = (offset + next[i] * skip) % m;
                        next[i] += 1;
                        if table[c].is_none() {
                            table[c] = Some(u32::try_from(i).unwrap_or(u32::MAX));
                            filled += 1;
                            break;
                        }
                    }
                }
            }
        }
        Table::Maglev(table.into_iter().map(|e| e.unwrap_or(0)).collect())
    }

    /// The endpoint for `hash`, passing over endpoints `skip` rejects (ejected, or the one a
    /// retry must avoid); `None` when every candidate was rejected.
    pub fn lookup(&self, hash: u64, skip: impl Fn(usize) -> bool) -> Option<usize> {
        match self {
            Table::Ring(ring) => {
                if ring.is_empty() {
                    return None;
                }
                let start = ring.partition_point(|(h, _)| *h < hash);
                (0..ring.len())
                    .filter_map(|k| ring.get((start + k) % ring.len()))
                    .map(|(_, i)| *i as usize)
                    .find(|i| !skip(*i))
            }
            Table::Maglev(table) => {
                if table.is_empty() {
                    return None;
                }
                // Rehash to move on from a rejected endpoint (Envoy does the same).
                let mut h = hash;
                for _ in 0..16 {
                    let i = table[(h % table.len() as u64) as usize] as usize;
                    if !skip(i) {
                        return Some(i);
                    }
                    h = xxh64(&h.to_le_bytes(), 2);
                }
                None
            }
        }
    }
}

/// Whether `n` is prime (Maglev table sizes must be).
pub fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: usize) -> Vec<(u32, String)> {
        (0..n).map(|i| (1, format!("10.0.0.{i}:80"))).collect()
    }

    /// Share of keys whose endpoint differs between `a` and `b` (same indices).
    fn moved(a: &Table, b: &Table) -> f64 {
        let n = 20_000u64;
        let moved = (0..n)
            .map(|k| xxh64(&k.to_le_bytes(), 9))
            .filter(|h| a.lookup(*h, |_| false) != b.lookup(*h, |_| false))
            .count();
        moved as f64 / n as f64
    }

    #[test]
    fn ring_and_maglev_spread_evenly_and_respect_weights() {
        for t in [
            Table::ring(&eps(4), 1024),
            Table::maglev(&eps(4), DEFAULT_MAGLEV_SIZE),
        ] {
            let mut counts = [0usize; 4];
            for k in 0..40_000u64 {
                counts[t.lookup(xxh64(&k.to_le_bytes(), 3), |_| false).unwrap()] += 1;
            }
            for c in counts {
                assert!((7_000..13_000).contains(&c), "{counts:?}");
            }
        }
        let weighted = vec![(3, "a:1".to_owned()), (1, "b:1".to_owned())];
        for t in [
            Table::ring(&weighted, 4096),
            Table::maglev(&weighted, DEFAULT_MAGLEV_SIZE),
        ] {
            let zeros = (0..40_000u64)
                .filter(|k| t.lookup(xxh64(&k.to_le_bytes(), 3), |_| false) == Some(0))
                .count();
            let share = zeros as f64 / 40_000.0;
            assert!((share - 0.75).abs() < 0.05, "{share}");
        }
    }

    #[test]
    fn removing_one_endpoint_moves_only_its_share() {
        let five = eps(5);
        let four: Vec<_> = five[..4].to_vec();
        let ring = moved(&Table::ring(&five, 1024), &Table::ring(&four, 1024));
        // Only keys that were on the removed endpoint (~20%) move.
        assert!(ring < 0.25, "ring moved {ring}");
        let mag = moved(
            &Table::maglev(&five, DEFAULT_MAGLEV_SIZE),
            &Table::maglev(&four, DEFAULT_MAGLEV_SIZE),
        );
        assert!(mag < 0.30, "maglev moved {mag}");
    }

    #[test]
    fn lookup_skips_rejected_endpoints_deterministically() {
        for t in [Table::ring(&eps(3), 64), Table::maglev(&eps(3), 251)] {
            let h = 12345;
            let first = t.lookup(h, |_| false).unwrap();
            let other = t.lookup(h, |i| i == first).unwrap();
            assert_ne!(first, other);
            assert_eq!(t.lookup(h, |i| i == first), Some(other));
            assert_eq!(t.lookup(h, |_| true), None);
        }
    }

    #[test]
    fn keys_from_requests() {
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("alice"));
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_static("a=1; session=\"abc\""),
        );
        let ip = IpAddr::from([10, 0, 0, 1]);
        let header = HashKey::Header(HeaderName::from_static("x-user"));
        assert_eq!(
            header.hash(&h, None, ip).hash,
            header.hash(&h, None, ip).hash
        );
        assert!(HashKey::Header(HeaderName::from_static("x-none"))
            .hash(&h, None, ip)
            .hash
            .is_none());
        let q = HashKey::Query("u".into());
        assert_eq!(
            q.hash(&h, Some("a=1&u=bob"), ip).hash,
            Some(xxh64(b"bob", 0))
        );
        assert!(q.hash(&h, Some("uu=1"), ip).hash.is_none());
        let c = |ttl| {
            HashKey::Cookie(Cookie {
                name: "session".into(),
                path: Some("/".into()),
                ttl,
            })
        };
        assert_eq!(c(None).hash(&h, None, ip).hash, Some(xxh64(b"abc", 0)));
        let fresh = c(Some(Duration::from_secs(60))).hash(&HeaderMap::new(), None, ip);
        let set = fresh.set_cookie.unwrap();
        let set = set.to_str().unwrap();
        assert!(set.starts_with("session=\"") && set.ends_with("; Max-Age=60; Path=/; HttpOnly"));
        // The generated cookie hashes like the same cookie sent back.
        let value = set.split('"').nth(1).unwrap();
        assert_eq!(fresh.hash, Some(xxh64(value.as_bytes(), 0)));
        assert!(c(None).hash(&HeaderMap::new(), None, ip).hash.is_none());
        assert_eq!(
            HashKey::SourceIp.hash(&h, None, ip).hash,
            HashKey::SourceIp.hash(&HeaderMap::new(), None, ip).hash
        );
        assert!(is_prime(65537) && is_prime(251) && !is_prime(65536) && !is_prime(1));
    }
}
