//! Load balancers: given a cluster's hosts, pick the one the next upstream
//! connection goes to. Per core (`Cell` state, no locks); weights honoured.

use std::cell::Cell;

use crate::config::LbKind;

/// Largest round-robin schedule precomputed for unequal weights; beyond it the
/// weights are scaled down, keeping their proportions roughly.
const MAX_SCHEDULE: u64 = 4096;

pub enum LoadBalancer {
    /// Hosts in turn; with unequal weights, a smooth weighted schedule.
    RoundRobin { schedule: Vec<u32>, next: Cell<usize> },
    /// Weighted random over cumulative weights.
    Random { cumulative: Vec<u64>, rng: Rng },
}

impl LoadBalancer {
    pub fn new(kind: LbKind, weights: &[u32], seed: u64) -> Self {
        match kind {
            LbKind::RoundRobin => {
                let schedule = smooth_schedule(weights);
                // Start cores at different offsets so they do not all hit host 0.
                let start = if schedule.is_empty() { 0 } else { (seed as usize) % schedule.len() };
                LoadBalancer::RoundRobin { schedule, next: Cell::new(start) }
            }
            LbKind::Random => {
                let mut total = 0u64;
                let cumulative = weights
                    .iter()
                    .map(|&w| {
                        total += u64::from(w.max(1));
                        total
                    })
                    .collect();
                LoadBalancer::Random { cumulative, rng: Rng::new(seed) }
            }
        }
    }

    /// The index of the host to use next, or `None` when there are no hosts.
    pub fn pick(&self) -> Option<usize> {
        match self {
            LoadBalancer::RoundRobin { schedule, next } => {
                if schedule.is_empty() {
                    return None;
                }
                let i = next.get() % schedule.len();
                next.set(i + 1);
                Some(schedule[i] as usize)
            }
            LoadBalancer::Random { cumulative, rng } => {
                let total = *cumulative.last()?;
                let r = rng.below(total);
                Some(cumulative.partition_point(|&c| c <= r))
            }
        }
    }
}

/// Nginx-style smooth weighted round robin, precomputed: weights 5,1,1 give
/// a a b a c a a rather than a a a a a b c.
fn smooth_schedule(weights: &[u32]) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    if weights.iter().all(|&w| w == weights[0]) {
        return (0..weights.len() as u32).collect();
    }
    let total: u64 = weights.iter().map(|&w| u64::from(w.max(1))).sum();
    let scale = total.div_ceil(MAX_SCHEDULE).max(1);
    let weights: Vec<i64> = weights.iter().map(|&w| (u64::from(w.max(1)) / scale).max(1) as i64).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..weights.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best as u32);
    }
    schedule
}

/// xorshift64*: a small, fast, per-core generator; not for secrets.
pub struct Rng(Cell<u64>);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(Cell::new(seed | 1))
    }

    /// A seed that differs per thread and per run.
    pub fn seed() -> u64 {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let local = 0u8;
        t ^ ((&local as *const u8 as u64).rotate_left(32))
    }

    pub fn next_u64(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    pub fn below(&self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(lb: &LoadBalancer, hosts: usize, n: usize) -> Vec<usize> {
        let mut c = vec![0; hosts];
        for _ in 0..n {
            c[lb.pick().unwrap()] += 1;
        }
        c
    }

    #[test]
    fn round_robin_cycles_and_honours_weights() {
        let lb = LoadBalancer::new(LbKind::RoundRobin, &[1, 1, 1], 0);
        assert_eq!(counts(&lb, 3, 300), vec![100, 100, 100]);
        let lb = LoadBalancer::new(LbKind::RoundRobin, &[5, 1, 1], 0);
        assert_eq!(counts(&lb, 3, 700), vec![500, 100, 100]);
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn random_follows_weights() {
        let lb = LoadBalancer::new(LbKind::Random, &[3, 1], 42);
        let c = counts(&lb, 2, 40_000);
        assert!((28_000..32_000).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn no_hosts_no_pick() {
        assert_eq!(LoadBalancer::new(LbKind::RoundRobin, &[], 0).pick(), None);
        assert_eq!(LoadBalancer::new(LbKind::Random, &[], 0).pick(), None);
    }

    #[test]
    fn huge_weights_stay_bounded() {
        let s = smooth_schedule(&[u32::MAX, 1]);
        assert!(s.len() as u64 <= MAX_SCHEDULE + 2);
    }
}
