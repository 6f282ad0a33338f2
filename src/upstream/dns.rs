//! Name resolution for endpoints given by name (`resolution: DNS`, `DNS_ROUND_ROBIN`, and
//! `NONE` at a gateway): asynchronous lookups (hickory, reading the system's resolv.conf and
//! hosts file), cached per endpoint for the answer's TTL clamped to [min, max], refreshed in
//! the background when stale while the stale answer keeps serving, and a failed refresh keeps
//! the last good addresses. Only the first connection to a name ever waits for DNS.
//!
//! Must not: block a runtime thread (no getaddrinfo on the request path), or hold a lock
//! across a lookup.
//!
//! Depends on: hickory-resolver, arc-swap, tokio.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use hickory_resolver::TokioResolver;

/// Bounds applied to record TTLs.
#[derive(Debug, Clone, Copy)]
pub struct DnsSettings {
    /// Shortest time an answer is used before it is refreshed (default 5 s, Envoy's
    /// `dns_refresh_rate`), so a zero TTL cannot turn into a lookup per connection.
    pub min_ttl: Duration,
    /// Longest time an answer is used without a refresh (default 5 min).
    pub max_ttl: Duration,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(300),
        }
    }
}

/// The process's resolver.
#[derive(Debug)]
pub struct Resolver {
    inner: Inner,
    settings: DnsSettings,
}

#[derive(Debug)]
enum Inner {
    Hickory(Box<TokioResolver>),
    /// No usable resolv.conf: the OS resolver on tokio's blocking pool, with `min_ttl`.
    System,
}

/// Why a name did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {reason}")]
pub struct ResolveError {
    host: String,
    reason: String,
}

impl Resolver {
    /// The system's resolver (resolv.conf + hosts file), or the OS fallback.
    pub fn system(settings: DnsSettings) -> Self {
        let inner = match TokioResolver::builder_tokio() {
            Ok(mut b) => {
                // Our own cache holds answers for their TTL; hickory's would only add a
                // second copy.
                b.options_mut().cache_size = 0;
                b.options_mut().use_hosts_file = hickory_resolver::config::ResolveHosts::Always;
                Inner::Hickory(Box::new(b.build()))
            }
            Err(e) => {
                tracing::warn!(error = %e, "no usable resolv.conf: using the OS resolver");
                Inner::System
            }
        };
        Self { inner, settings }
    }

    /// The addresses of `host` and how long to use them.
    pub async fn lookup(&self, host: &str) -> Result<(Vec<IpAddr>, Duration), ResolveError> {
        let err = |reason: String| ResolveError {
            host: host.to_owned(),
            reason,
        };
        let (addrs, ttl) = match &self.inner {
            Inner::Hickory(r) => {
                let lookup = r.lookup_ip(host).await.map_err(|e| err(e.to_string()))?;
                let ttl = lookup
                    .valid_until()
                    .saturating_duration_since(Instant::now());
                (lookup.iter().collect::<Vec<_>>(), ttl)
            }
            Inner::System => {
                let addrs = tokio::net::lookup_host((host, 0))
                    .await
                    .map_err(|e| err(e.to_string()))?;
                (addrs.map(|a| a.ip()).collect(), self.settings.min_ttl)
            }
        };
        if addrs.is_empty() {
            return Err(err("no addresses".to_owned()));
        }
        Ok((
            addrs,
            ttl.clamp(self.settings.min_ttl, self.settings.max_ttl),
        ))
    }
}

/// How a name's addresses are used for new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Spread {
    /// Every resolved address in turn (`resolution: DNS`, Envoy's STRICT_DNS).
    All,
    /// The first address only (`DNS_ROUND_ROBIN`, Envoy's LOGICAL_DNS: the DNS server
    /// rotates the answer).
    First,
}

struct Answer {
    addrs: Vec<IpAddr>,
    expires: Instant,
}

/// The cached addresses of one endpoint name.
pub struct Cached {
    host: Arc<str>,
    spread: Spread,
    answer: ArcSwapOption<Answer>,
    refreshing: AtomicBool,
    cursor: AtomicUsize,
}

impl std::fmt::Debug for Cached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cached")
            .field("host", &self.host)
            .field("spread", &self.spread)
            .finish_non_exhaustive()
    }
}

impl Cached {
    /// An empty cache for `host`.
    pub fn new(host: Arc<str>, spread: Spread) -> Self {
        Self {
            host,
            spread,
            answer: ArcSwapOption::empty(),
            refreshing: AtomicBool::new(false),
            cursor: AtomicUsize::new(0),
        }
    }

    /// The addresses to try, in order, for one new connection to `port`. Waits for DNS only
    /// when nothing was ever resolved; a stale answer is used while a refresh runs.
    pub async fn addresses(
        self: &Arc<Self>,
        resolver: &Arc<Resolver>,
        port: u16,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        let answer = match self.answer.load_full() {
            Some(a) => {
                if a.expires <= Instant::now() {
                    self.refresh_in_background(resolver);
                }
                a
            }
            None => self.resolve_now(resolver).await?,
        };
        let n = answer.addrs.len();
        let start = match self.spread {
            Spread::All => self.cursor.fetch_add(1, Ordering::Relaxed) % n.max(1),
            Spread::First => 0,
        };
        Ok((0..n)
            .filter_map(|k| answer.addrs.get((start + k) % n))
            .map(|ip| SocketAddr::new(*ip, port))
            .collect())
    }

    async fn resolve_now(&self, resolver: &Resolver) -> Result<Arc<Answer>, ResolveError> {
        let (addrs, ttl) = resolver.lookup(&self.host).await?;
        let answer = Arc::new(Answer {
            addrs,
            expires: Instant::now() + ttl,
        });
        self.answer.store(Some(answer.clone()));
        Ok(answer)
    }

    fn refresh_in_background(self: &Arc<Self>, resolver: &Arc<Resolver>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (me, resolver) = (self.clone(), resolver.clone());
        tokio::spawn(async move {
            match me.resolve_now(&resolver).await {
                Ok(a) => tracing::debug!(host = %me.host, addrs = ?a.addrs, "dns refreshed"),
                Err(e) => {
                    // Keep serving the last good answer; try again after the minimum TTL.
                    tracing::warn!(error = %e, "dns refresh failed: keeping the last addresses");
                    if let Some(old) = me.answer.load_full() {
                        me.answer.store(Some(Arc::new(Answer {
                            addrs: old.addrs.clone(),
                            expires: Instant::now() + resolver.settings.min_ttl,
                        })));
                    }
                }
            }
            me.refreshing.store(false, Ordering::Release);
        });
    }

    /// The addresses last resolved (for dumps and tests).
    pub fn current(&self) -> Vec<IpAddr> {
        self.answer
            .load()
            .as_ref()
            .map(|a| a.addrs.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn localhost_resolves_and_is_cached() {
        let resolver = Arc::new(Resolver::system(DnsSettings::default()));
        let c = Arc::new(Cached::new("localhost".into(), Spread::All));
        let a = c.addresses(&resolver, 80).await.unwrap();
        assert!(a.iter().any(|s| s.ip().is_loopback()), "{a:?}");
        assert!(a.iter().all(|s| s.port() == 80));
        assert!(!c.current().is_empty());
    }

    #[tokio::test]
    async fn stale_answer_serves_while_a_failed_refresh_keeps_it() {
        let resolver = Arc::new(Resolver::system(DnsSettings {
            min_ttl: Duration::from_millis(10),
            max_ttl: Duration::from_millis(10),
        }));
        let c = Arc::new(Cached::new("no-such-host.invalid".into(), Spread::First));
        assert!(c.addresses(&resolver, 80).await.is_err());
        // Seed a last-good answer that has expired; the name itself no longer resolves.
        c.answer.store(Some(Arc::new(Answer {
            addrs: vec![IpAddr::from([192, 0, 2, 7])],
            expires: Instant::now(),
        })));
        for _ in 0..3 {
            let a = c.addresses(&resolver, 443).await.unwrap();
            assert_eq!(a, vec![SocketAddr::from(([192, 0, 2, 7], 443))]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(c.current(), vec![IpAddr::from([192, 0, 2, 7])]);
    }

    #[tokio::test]
    async fn spread_all_rotates_first_stays() {
        let resolver = Arc::new(Resolver::system(DnsSettings::default()));
        let addrs = vec![IpAddr::from([192, 0, 2, 1]), IpAddr::from([192, 0, 2, 2])];
        for (spread, want_second_first) in [(Spread::All, true), (Spread::First, false)] {
            let c = Arc::new(Cached::new("x".into(), spread));
            c.answer.store(Some(Arc::new(Answer {
                addrs: addrs.clone(),
                expires: Instant::now() + Duration::from_secs(60),
            })));
            let one = c.addresses(&resolver, 1).await.unwrap();
            let two = c.addresses(&resolver, 1).await.unwrap();
            assert_eq!(one.len(), 2);
            assert_eq!(one[0] != two[0], want_second_first, "{spread:?}");
        }
    }
}
