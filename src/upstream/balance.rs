//! Endpoint choice. Round robin when every endpoint has the same weight, otherwise a
//! weighted random pick (smooth over many requests, no shared state to contend on).
//!
//! Depends on: std, fastrand.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Endpoint choice state for one cluster.
#[derive(Debug)]
pub struct Balancer {
    /// Cumulative weights when weights differ; empty for plain round robin.
    cumulative: Vec<u32>,
    cursor: AtomicUsize,
}

impl Balancer {
    /// A balancer for endpoints with these weights.
    pub fn new(weights: &[u32], cursor: AtomicUsize) -> Self {
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
        Self { cumulative, cursor }
    }

    /// Index of the next endpoint among `n`, not `avoid` when `n > 1`.
    pub fn pick(&self, n: usize, avoid: Option<usize>) -> Option<usize> {
        if n == 0 {
            return None;
        }
        let i = self.pick_once(n);
        match avoid {
            Some(a) if a == i && n > 1 => Some(if self.cumulative.is_empty() {
                (i + 1) % n
            } else {
                // Re-draw a few times; weights can make the same endpoint very likely.
                (0..4)
                    .map(|_| self.pick_once(n))
                    .find(|j| *j != a)
                    .unwrap_or((i + 1) % n)
            }),
            _ => Some(i),
        }
    }

    fn pick_once(&self, n: usize) -> usize {
        match self.cumulative.last() {
            Some(&total) if total > 0 => {
                let r = fastrand::u32(..total);
                self.cumulative.partition_point(|c| *c <= r).min(n - 1)
            }
            _ => self.cursor.fetch_add(1, Ordering::Relaxed) % n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_and_avoid() {
        let b = Balancer::new(&[1, 1, 1], AtomicUsize::new(0));
        let picks: Vec<_> = (0..6).map(|_| b.pick(3, None).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        for _ in 0..10 {
            assert_ne!(b.pick(3, Some(0)), Some(0));
        }
        assert_eq!(b.pick(1, Some(0)), Some(0));
        assert_eq!(b.pick(0, None), None);
    }

    #[test]
    fn weighted_distribution() {
        let b = Balancer::new(&[3, 1], AtomicUsize::new(0));
        let n = 20_000;
        let zeros = (0..n).filter(|_| b.pick(2, None) == Some(0)).count();
        let share = zeros as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.03, "{share}");
    }
}
