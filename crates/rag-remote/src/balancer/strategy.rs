//! Picking one backend among the admitted ones.

use std::sync::atomic::Ordering;
use std::time::Instant;

use rand::Rng;

use super::Balancer;

/// How the balancer picks among admitted backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Each in turn.
    RoundRobin,
    /// The one with the fewest requests in flight (ties go round robin).
    LeastOutstanding,
    /// Of two picked at random, the one with the lower peak-EWMA latency times
    /// (outstanding + 1).
    PeakEwma,
}

/// One of `admitted` (not empty, ascending).
pub(super) fn choose(b: &Balancer, admitted: &[usize], now: Instant) -> usize {
    let n = b.slots.len();
    let start = b.next.fetch_add(1, Ordering::Relaxed);
    // Candidates in rotation order from `start`.
    let rotated = || {
        (0..n)
            .map(move |k| (start + k) % n)
            .filter(|i| admitted.contains(i))
    };
    match b.config.strategy {
        Strategy::RoundRobin => rotated().next().unwrap_or(admitted[0]),
        Strategy::LeastOutstanding => rotated()
            .min_by_key(|&i| b.slots[i].outstanding.load(Ordering::Acquire))
            .unwrap_or(admitted[0]),
        Strategy::PeakEwma => {
            if admitted.len() == 1 {
                return admitted[0];
            }
            let (x, y) = {
                let mut rng = b.rng.lock();
                let x = rng.random_range(0..admitted.len());
                let mut y = rng.random_range(0..admitted.len() - 1);
                if y >= x {
                    y += 1;
                }
                (admitted[x], admitted[y])
            };
            if cost(b, x, now) <= cost(b, y, now) {
                x
            } else {
                y
            }
        }
    }
}

fn cost(b: &Balancer, i: usize, now: Instant) -> f64 {
    let s = &b.slots[i];
    let rtt = s
        .ewma
        .lock()
        .estimate(b.config.default_rtt, b.config.decay, now);
    rtt * (s.outstanding.load(Ordering::Acquire) + 1) as f64
}
