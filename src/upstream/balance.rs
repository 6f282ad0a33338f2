//! Endpoint choice for Istio's `loadBalancer.simple`: ROUND_ROBIN (weighted when weights
//! differ), RANDOM (weighted), LEAST_REQUEST (power of two choices over active requests,
//! Envoy's algorithm), and the consistent-hash algorithms (RING_HASH, MAGLEV; tables in
//! `hash`). Pure apart from an atomic cursor and the caller's active counts.
//!
//! Depends on: std, fastrand, `upstream::hash`.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::hash::Table;

/// The algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Fewest active requests of two random endpoints.
    LeastRequest,
    /// `consistentHash.maglev` with this table size (prime).
    Maglev(u64),
    /// Uniform (or weighted) random.
    Random,
    /// `consistentHash.ringHash` with this minimum ring size.
    RingHash(u64),
    /// Rotate through endpoints (weighted random when weights differ).
    #[default]
    RoundRobin,
}

/// Endpoint choice state for one cluster.
#[derive(Debug)]
pub struct Balancer {
    algorithm: Algorithm,
    /// Cumulative weights when weights differ; empty when all are equal.
    cumulative: Vec<u32>,
    cursor: AtomicUsize,
    /// The consistent-hash table, for RING_HASH and MAGLEV.
    table: Option<Table>,
}

impl Balancer {
    /// A balancer for endpoints given as (weight, address).
    pub fn new(algorithm: Algorithm, endpoints: &[(u32, String)]) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|(w, _)| *w).collect();
        let table = match algorithm {
            Algorithm::RingHash(min) => Some(Table::ring(endpoints, min)),
            Algorithm::Maglev(size) => Some(Table::maglev(endpoints, size)),
            _ => None,
        };
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        let cumulative = if uniform {
            Vec::new()
        } else {
            weights
                .iter()
                .scan(0u32, |acc, w| {
                    *acc = acc.saturating_add(*w);
                    Some(*acc)
                })
                .collect()
        };
        Self {
            algorithm,
            cumulative,
            cursor: AtomicUsize::new(fastrand::usize(..1024)),
            table,
        }
    }

    /// The consistent-hash table, when the algorithm hashes.
    pub fn table(&self) -> Option<&Table> {
        self.table.as_ref()
    }

    /// The algorithm in use.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Index of the next endpoint among `n`, not `avoid` when `n > 1`. `active(i)` is the
    /// number of requests in flight to endpoint `i` (for LEAST_REQUEST).
    pub fn pick(
        &self,
        n: usize,
        avoid: Option<usize>,
        active: impl Fn(usize) -> usize,
    ) -> Option<usize> {
        if n == 0 {
            return None;
        }
        let i = self.pick_once(n, &active);
        match avoid {
            Some(a) if a == i && n > 1 => Some(
                (0..4)
                    .map(|_| self.pick_once(n, &active))
                    .find(|j| *j != a)
                    .unwrap_or((i + 1) % n),
            ),
            _ => Some(i),
        }
    }

    fn weighted(&self, n: usize) -> Option<usize> {
        match self.cumulative.last() {
            Some(&total) if total > 0 => {
                let r = fastrand::u32(..total);
                Some(self.cumulative.partition_point(|c| *c <= r).min(n - 1))
            }
            _ => None,
        }
    }

    fn pick_once(&self, n: usize, active: &impl Fn(usize) -> usize) -> usize {
        match self.algorithm {
            Algorithm::RoundRobin => self
                .weighted(n)
                .unwrap_or_else(|| self.cursor.fetch_add(1, Ordering::Relaxed) % n),
            // Hashing algorithms pick at random when the request has no hash (Envoy).
            Algorithm::Random | Algorithm::RingHash(_) | Algorithm::Maglev(_) => {
                self.weighted(n).unwrap_or_else(|| fastrand::usize(..n))
            }
            Algorithm::LeastRequest => {
                let a = self.weighted(n).unwrap_or_else(|| fastrand::usize(..n));
                let b = self.weighted(n).unwrap_or_else(|| fastrand::usize(..n));
                if active(b) < active(a) {
                    b
                } else {
                    a
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(weights: &[u32]) -> Vec<(u32, String)> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| (*w, format!("10.0.0.{i}:80")))
            .collect()
    }

    #[test]
    fn round_robin_and_avoid() {
        let b = Balancer::new(Algorithm::RoundRobin, &eps(&[1, 1, 1]));
        let first = b.pick(3, None, |_| 0).unwrap();
        let picks: Vec<_> = (0..5).map(|_| b.pick(3, None, |_| 0).unwrap()).collect();
        let want: Vec<_> = (1..6).map(|k| (first + k) % 3).collect();
        assert_eq!(picks, want);
        for _ in 0..10 {
            assert_ne!(b.pick(3, Some(0), |_| 0), Some(0));
        }
        assert_eq!(b.pick(1, Some(0), |_| 0), Some(0));
        assert_eq!(b.pick(0, None, |_| 0), None);
    }

    #[test]
    fn weighted_distribution() {
        for alg in [Algorithm::RoundRobin, Algorithm::Random] {
            let b = Balancer::new(alg, &eps(&[3, 1]));
            let n = 20_000;
            let zeros = (0..n).filter(|_| b.pick(2, None, |_| 0) == Some(0)).count();
            let share = zeros as f64 / n as f64;
            assert!((share - 0.75).abs() < 0.03, "{alg:?} {share}");
        }
    }

    #[test]
    fn least_request_prefers_idle_endpoints() {
        let b = Balancer::new(Algorithm::LeastRequest, &eps(&[1, 1, 1, 1]));
        let busy = |i: usize| if i == 0 { 100 } else { 0 };
        let hits = (0..10_000)
            .filter(|_| b.pick(4, None, busy) == Some(0))
            .count();
        // Endpoint 0 wins only when both draws are 0: 1/16 of the time.
        assert!(hits < 1000, "{hits}");
    }
}
