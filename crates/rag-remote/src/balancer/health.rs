//! Per-backend state: admission (admitted, ejected, on probation), the peak-EWMA
//! latency estimate, outstanding requests and counters.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Whether a backend receives requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Receives requests.
    Admitted,
    /// Receives none until `until`, then goes on probation.
    Ejected {
        /// When probation may start.
        until: Instant,
    },
    /// Half-open: one trial request (or a passing probe) at a time decides whether
    /// it is admitted again or ejected for longer.
    Probation {
        /// Whether a trial is running.
        trial_in_flight: bool,
    },
}

/// A backend's health and load, behind one lock per concern.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) name: String,
    pub(crate) health: Mutex<Health>,
    pub(crate) outstanding: AtomicUsize,
    pub(crate) ewma: Mutex<Ewma>,
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) ejections: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Health {
    pub(crate) admission: Admission,
    pub(crate) consecutive_failures: u32,
    /// Ejections since the backend was last admitted; doubles the next period.
    pub(crate) ejections_in_row: u32,
    pub(crate) last_error: Option<String>,
}

/// Peak-EWMA round-trip estimate: a sample above the estimate replaces it at once
/// (so a backend turning slow is avoided immediately); lower samples pull it down
/// with weight `1 - exp(-elapsed / tau)`; unused, it decays toward zero so a backend
/// once slow is tried again.
#[derive(Debug)]
pub(crate) struct Ewma {
    rtt_s: f64,
    stamp: Instant,
    seeded: bool,
}

impl Ewma {
    pub(crate) fn new() -> Self {
        Self {
            rtt_s: 0.0,
            stamp: Instant::now(),
            seeded: false,
        }
    }

    pub(crate) fn observe(&mut self, sample: Duration, tau: Duration, now: Instant) {
        let sample = sample.as_secs_f64();
        if !self.seeded || sample > self.rtt_s {
            self.rtt_s = sample;
        } else {
            let w = decay(now.saturating_duration_since(self.stamp), tau);
            self.rtt_s = self.rtt_s * w + sample * (1.0 - w);
        }
        self.seeded = true;
        self.stamp = now;
    }

    /// The estimate now, or `default` before the first sample.
    pub(crate) fn estimate(&self, default: Duration, tau: Duration, now: Instant) -> f64 {
        if !self.seeded {
            return default.as_secs_f64();
        }
        self.rtt_s * decay(now.saturating_duration_since(self.stamp), tau)
    }
}

fn decay(elapsed: Duration, tau: Duration) -> f64 {
    let tau = tau.as_secs_f64().max(1e-9);
    (-elapsed.as_secs_f64() / tau).exp()
}

impl Slot {
    pub(crate) fn new(name: String) -> Self {
        Self {
            name,
            health: Mutex::new(Health {
                admission: Admission::Admitted,
                consecutive_failures: 0,
                ejections_in_row: 0,
                last_error: None,
            }),
            outstanding: AtomicUsize::new(0),
            ewma: Mutex::new(Ewma::new()),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
        }
    }

    /// Counts a request as outstanding until the guard drops (after its last token).
    pub(crate) fn start(&self) -> Outstanding<'_> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let now = self.outstanding.fetch_add(1, Ordering::AcqRel) + 1;
        metrics::counter!(super::REQUESTS, "backend" => self.name.clone()).increment(1);
        metrics::gauge!(super::OUTSTANDING, "backend" => self.name.clone()).set(now as f64);
        Outstanding(self)
    }
}

/// Decrements a slot's outstanding count on drop.
pub(crate) struct Outstanding<'a>(&'a Slot);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        let now = self
            .0
            .outstanding
            .fetch_sub(1, Ordering::AcqRel)
            .saturating_sub(1);
        metrics::gauge!(super::OUTSTANDING, "backend" => self.0.name.clone()).set(now as f64);
    }
}

impl Health {
    /// Moves an ejection whose period is over to probation.
    pub(crate) fn refresh(&mut self, now: Instant) {
        if let Admission::Ejected { until } = self.admission
            && now >= until
        {
            self.admission = Admission::Probation {
                trial_in_flight: false,
            };
        }
    }

    pub(crate) fn is_out(&self) -> bool {
        !matches!(self.admission, Admission::Admitted)
    }
}
