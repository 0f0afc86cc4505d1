//! A [`Generator`] over several generator backends: round robin, least outstanding
//! requests, or peak-EWMA response time with the power of two choices (as tower's
//! `p2c` balancer and the vLLM router do), with passive ejection, half-open
//! probation, active health probes and failover before the first token.
//!
//! - A request counts as outstanding on its backend until its **last** token.
//! - A backend failing [`BalancerConfig::eject_after_failures`] requests (or probes)
//!   in a row is ejected for [`BalancerConfig::ejection`], doubled on each ejection in
//!   a row up to [`BalancerConfig::max_ejection`]; then it is on probation: one trial
//!   request at a time, which re-admits it or ejects it again.
//! - At most [`BalancerConfig::max_ejected_fraction`] of the backends (and never the
//!   last one) are out at once; past the cap a failing backend stays in.
//! - A failure before the first token fails over to another backend; the caller sees
//!   nothing of it. After the first token it is the caller's error: the text so far
//!   cannot be taken back.
//! - Errors the caller caused ([`Error::InvalidInput`]) neither fail over nor count
//!   against the backend.

mod health;
mod strategy;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rag_core::{Error, Generation, GenerationRequest, Generator, Result, Stage, TokenControl};
use rand::SeedableRng;
use rand::rngs::SmallRng;

pub use health::Admission;
use health::Slot;
pub use strategy::Strategy;

use crate::error::RemoteError;
use crate::openai::OpenAiGenerator;

/// `rag_generator_requests_total{backend}`: requests sent to a backend.
pub const REQUESTS: &str = "rag_generator_requests_total";
/// `rag_generator_errors_total{backend}`: requests or probes that failed.
pub const ERRORS: &str = "rag_generator_errors_total";
/// `rag_generator_ejections_total{backend}`: times a backend was ejected.
pub const EJECTIONS: &str = "rag_generator_ejections_total";
/// `rag_generator_first_token_seconds{backend}`: time to the first token.
pub const FIRST_TOKEN: &str = "rag_generator_first_token_seconds";
/// `rag_generator_outstanding{backend}`: requests in flight.
pub const OUTSTANDING: &str = "rag_generator_outstanding";

/// A health probe: `Ok` when the backend is up and serving.
pub type Probe = Arc<dyn Fn() -> Result<()> + Send + Sync>;

/// One generator behind the balancer.
#[derive(Clone)]
pub struct Backend {
    name: String,
    generator: Arc<dyn Generator>,
    probe: Option<Probe>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// A backend without an active health probe.
    pub fn new(name: impl Into<String>, generator: Arc<dyn Generator>) -> Self {
        Self {
            name: name.into(),
            generator,
            probe: None,
        }
    }

    /// An OpenAI-compatible server, probed with `GET /v1/models`.
    pub fn openai(name: impl Into<String>, client: OpenAiGenerator) -> Self {
        let client = Arc::new(client);
        let probe_client = Arc::clone(&client);
        Self {
            name: name.into(),
            generator: client,
            probe: Some(Arc::new(move || probe_client.probe().map_err(Error::from))),
        }
    }

    /// Sets the active health probe.
    pub fn with_probe(mut self, probe: Probe) -> Self {
        self.probe = Some(probe);
        self
    }

    /// The backend's name in metrics and status.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// How the balancer picks, ejects and re-admits.
#[derive(Debug, Clone, PartialEq)]
pub struct BalancerConfig {
    /// How a backend is picked among those admitted.
    pub strategy: Strategy,
    /// Consecutive failures that eject a backend.
    pub eject_after_failures: u32,
    /// The first ejection's length.
    pub ejection: Duration,
    /// The longest ejection.
    pub max_ejection: Duration,
    /// The largest share of backends out at once (never all: one always stays).
    pub max_ejected_fraction: f32,
    /// How often [`Balancer::spawn_prober`] probes each backend.
    pub probe_interval: Duration,
    /// The peak-EWMA decay time.
    pub decay: Duration,
    /// The latency assumed of a backend before its first answer.
    pub default_rtt: Duration,
    /// The most backends one request is tried on.
    pub max_attempts: usize,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::PeakEwma,
            eject_after_failures: 5,
            ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(120),
            max_ejected_fraction: 0.5,
            probe_interval: Duration::from_secs(2),
            decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(100),
            max_attempts: 3,
        }
    }
}

/// What the balancer knows of one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendStatus {
    /// The backend's name.
    pub name: String,
    /// Whether it receives requests.
    pub admission: Admission,
    /// Requests in flight.
    pub outstanding: usize,
    /// The peak-EWMA time-to-first-token estimate, in seconds.
    pub latency_s: f64,
    /// Requests sent.
    pub requests: u64,
    /// Requests and probes that failed.
    pub errors: u64,
    /// Times ejected.
    pub ejections: u64,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// The last failure's summary, kept after recovery as a health reason.
    pub last_error: Option<String>,
}

/// A generator that spreads requests over backends; see the module docs.
pub struct Balancer {
    name: String,
    backends: Vec<Backend>,
    slots: Vec<Slot>,
    config: BalancerConfig,
    next: AtomicUsize,
    rng: Mutex<SmallRng>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("name", &self.name)
            .field("backends", &self.backends)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Balancer {
    /// A balancer named `name` (its [`Generator::name`], part of cache keys: every
    /// backend should serve the same model with the same settings).
    pub fn new(
        name: impl Into<String>,
        backends: Vec<Backend>,
        config: BalancerConfig,
    ) -> std::result::Result<Self, RemoteError> {
        if backends.is_empty() {
            return Err(RemoteError::Config("a balancer needs a backend".into()));
        }
        if config.eject_after_failures == 0
            || config.max_attempts == 0
            || !(0.0..=1.0).contains(&config.max_ejected_fraction)
        {
            return Err(RemoteError::Config(
                "eject_after_failures and max_attempts must be positive and \
                 max_ejected_fraction in 0..=1"
                    .into(),
            ));
        }
        let mut names: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(RemoteError::Config("backend names must be unique".into()));
        }
        let seed = Instant::now().elapsed().as_nanos() as u64 ^ 0x9e37_79b9_7f4a_7c15;
        Ok(Self {
            name: name.into(),
            slots: backends.iter().map(|b| Slot::new(b.name.clone())).collect(),
            backends,
            config,
            next: AtomicUsize::new(0),
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BalancerConfig {
        &self.config
    }

    /// Every backend's health, load and counters.
    pub fn status(&self) -> Vec<BackendStatus> {
        let now = Instant::now();
        self.slots
            .iter()
            .map(|s| {
                let h = s.health.lock();
                BackendStatus {
                    name: s.name.clone(),
                    admission: h.admission.clone(),
                    outstanding: s.outstanding.load(Ordering::Acquire),
                    latency_s: s.ewma.lock().estimate(
                        self.config.default_rtt,
                        self.config.decay,
                        now,
                    ),
                    requests: s.requests.load(Ordering::Relaxed),
                    errors: s.errors.load(Ordering::Relaxed),
                    ejections: s.ejections.load(Ordering::Relaxed),
                    consecutive_failures: h.consecutive_failures,
                    last_error: h.last_error.clone(),
                }
            })
            .collect()
    }

    /// Probes every backend that has a probe once, now.
    pub fn probe_all(&self) {
        for (i, b) in self.backends.iter().enumerate() {
            if let Some(probe) = &b.probe {
                match probe() {
                    Ok(()) => self.probe_passed(i),
                    Err(e) => self.failed(i, &e),
                }
            }
        }
    }

    /// Starts a thread probing every backend each [`BalancerConfig::probe_interval`];
    /// it stops when the returned handle drops.
    pub fn spawn_prober(self: &Arc<Self>) -> std::io::Result<Prober> {
        let (stop, wait) = std::sync::mpsc::channel::<()>();
        let me = Arc::clone(self);
        let interval = self.config.probe_interval;
        let thread = std::thread::Builder::new()
            .name("rag-balancer-probe".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    wait.recv_timeout(interval)
                {
                    me.probe_all();
                }
            })?;
        Ok(Prober {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn ejection_cap(&self) -> usize {
        let n = self.slots.len();
        if n <= 1 {
            return 0;
        }
        let frac = (n as f32 * self.config.max_ejected_fraction).floor() as usize;
        frac.max(1).min(n - 1)
    }

    fn succeeded(&self, i: usize, first_token: Duration) {
        let slot = &self.slots[i];
        slot.ewma
            .lock()
            .observe(first_token, self.config.decay, Instant::now());
        metrics::histogram!(FIRST_TOKEN, "backend" => slot.name.clone())
            .record(first_token.as_secs_f64());
        let mut h = slot.health.lock();
        h.consecutive_failures = 0;
        if matches!(h.admission, Admission::Probation { .. }) {
            tracing::info!(backend = %slot.name, "backend re-admitted after probation");
            h.admission = Admission::Admitted;
            h.ejections_in_row = 0;
        }
    }

    fn probe_passed(&self, i: usize) {
        let mut h = self.slots[i].health.lock();
        h.refresh(Instant::now());
        if let Admission::Probation { .. } = h.admission {
            tracing::info!(backend = %self.slots[i].name, "backend re-admitted by its probe");
            h.admission = Admission::Admitted;
            h.ejections_in_row = 0;
            h.consecutive_failures = 0;
        }
    }

    /// A trial that ended without a verdict (a caller error) frees the probation slot.
    fn neutral(&self, i: usize) {
        let mut h = self.slots[i].health.lock();
        if let Admission::Probation { trial_in_flight } = &mut h.admission {
            *trial_in_flight = false;
        }
    }

    fn failed(&self, i: usize, error: &Error) {
        let slot = &self.slots[i];
        slot.errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(ERRORS, "backend" => slot.name.clone()).increment(1);
        let cap = self.ejection_cap();
        // Count the others out before locking this one (one lock at a time).
        let others_out = self
            .slots
            .iter()
            .enumerate()
            .filter(|(j, s)| *j != i && s.health.lock().is_out())
            .count();
        let now = Instant::now();
        let mut h = slot.health.lock();
        h.refresh(now);
        h.consecutive_failures = h.consecutive_failures.saturating_add(1);
        h.last_error = Some(error.summary());
        let eject = match h.admission {
            Admission::Probation { .. } => true,
            Admission::Admitted => {
                h.consecutive_failures >= self.config.eject_after_failures && others_out < cap
            }
            Admission::Ejected { .. } => false,
        };
        if eject {
            let factor = 2u32.saturating_pow(h.ejections_in_row.min(16));
            let period = self
                .config
                .ejection
                .saturating_mul(factor)
                .min(self.config.max_ejection);
            h.admission = Admission::Ejected {
                until: now + period,
            };
            h.ejections_in_row = h.ejections_in_row.saturating_add(1);
            slot.ejections.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(EJECTIONS, "backend" => slot.name.clone()).increment(1);
            tracing::warn!(backend = %slot.name, ?period, reason = %error.summary(), "backend ejected");
        } else if let Admission::Probation { trial_in_flight } = &mut h.admission {
            *trial_in_flight = false;
        }
    }
}

/// Stops the probe thread of [`Balancer::spawn_prober`] on drop.
#[derive(Debug)]
pub struct Prober {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Generator for Balancer {
    fn name(&self) -> &str {
        &self.name
    }

    fn context_window(&self) -> usize {
        self.backends
            .iter()
            .map(|b| b.generator.context_window())
            .min()
            .unwrap_or(0)
    }

    fn count_tokens(&self, text: &str) -> Result<usize> {
        let mut most = 0;
        for b in &self.backends {
            most = most.max(b.generator.count_tokens(text)?);
        }
        Ok(most)
    }

    fn generate(
        &self,
        request: &GenerationRequest,
        on_token: &mut dyn FnMut(&str) -> TokenControl,
    ) -> Result<Generation> {
        if request.time_left().is_some_and(|t| t.is_zero()) {
            return Err(RemoteError::DeadlineExceeded.into());
        }
        let mut tried = vec![false; self.slots.len()];
        let mut last: Option<Error> = None;
        for _ in 0..self.config.max_attempts.min(self.slots.len()) {
            let Some(i) = self.pick(&tried) else { break };
            tried[i] = true;
            let slot = &self.slots[i];
            let _outstanding = slot.start();
            let started = Instant::now();
            let mut first: Option<Duration> = None;
            let result = self.backends[i].generator.generate(request, &mut |piece| {
                first.get_or_insert_with(|| started.elapsed());
                on_token(piece)
            });
            match result {
                Ok(out) => {
                    self.succeeded(i, first.unwrap_or_else(|| started.elapsed()));
                    return Ok(out);
                }
                Err(e @ Error::InvalidInput(_)) => {
                    self.neutral(i);
                    return Err(e);
                }
                Err(e) => {
                    tracing::debug!(backend = %slot.name, error = %e, "backend failed");
                    self.failed(i, &e);
                    if first.is_some() {
                        // Text already reached the caller: no failover.
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Transient {
            stage: Stage::Generate,
            source: "no generator backend is available".into(),
        }))
    }
}

impl Balancer {
    fn pick(&self, tried: &[bool]) -> Option<usize> {
        let now = Instant::now();
        // A backend on probation whose trial slot is free gets the next request.
        for (i, s) in self.slots.iter().enumerate() {
            if tried[i] {
                continue;
            }
            let mut h = s.health.lock();
            h.refresh(now);
            if let Admission::Probation { trial_in_flight } = &mut h.admission
                && !*trial_in_flight
            {
                *trial_in_flight = true;
                return Some(i);
            }
        }
        let admitted: Vec<usize> = (0..self.slots.len())
            .filter(|&i| !tried[i] && !self.slots[i].health.lock().is_out())
            .collect();
        if admitted.is_empty() {
            // Nothing admitted is left untried: any untried backend beats failing.
            return (0..self.slots.len()).find(|&i| !tried[i]);
        }
        Some(strategy::choose(self, &admitted, now))
    }
}
