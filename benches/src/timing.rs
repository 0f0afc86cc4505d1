//! Timing helpers: run a workload long enough to measure it.

use std::time::{Duration, Instant};

/// Runs `f` over `items` repeatedly until at least `min` has passed (at most
/// `max_rounds` rounds, and stopping inside a round once `budget` is spent);
/// returns operations per second and how many items ran.
pub fn throughput<T>(
    items: &[T],
    min: Duration,
    budget: Duration,
    max_rounds: usize,
    mut f: impl FnMut(&T),
) -> (f64, usize) {
    let start = Instant::now();
    let mut ops = 0usize;
    'rounds: for _ in 0..max_rounds {
        for item in items {
            f(item);
            ops += 1;
            if start.elapsed() > budget && ops >= 10 {
                break 'rounds;
            }
        }
        if start.elapsed() >= min {
            break;
        }
    }
    (
        ops as f64 / start.elapsed().as_secs_f64(),
        ops.min(items.len()),
    )
}

/// Median of a sample.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    if xs.is_empty() {
        return f64::NAN;
    }
    xs[xs.len() / 2]
}

/// The `p`-th percentile (0..=100) of a sample, nearest rank.
pub fn percentile(mut xs: Vec<f64>, p: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    if xs.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * xs.len() as f64).ceil() as usize;
    xs[rank.clamp(1, xs.len()) - 1]
}
