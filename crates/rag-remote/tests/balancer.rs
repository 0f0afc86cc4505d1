//! The balancer's strategies, ejection, probation and failover, over generator
//! doubles (the same properties over real HTTP are in `http.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Scripted, hammer, request};
use parking_lot::{Condvar, Mutex};
use rag_core::{Error, Generation, GenerationRequest, Generator, Result, TokenControl};
use rag_remote::{Admission, Backend, Balancer, BalancerConfig, Strategy};

fn config(strategy: Strategy) -> BalancerConfig {
    BalancerConfig {
        strategy,
        ejection: Duration::from_millis(100),
        max_ejection: Duration::from_millis(400),
        ..BalancerConfig::default()
    }
}

fn balancer(gens: &[Arc<Scripted>], strategy: Strategy) -> Balancer {
    let backends = gens
        .iter()
        .map(|g| Backend::new(g.label.clone(), Arc::clone(g) as Arc<dyn Generator>))
        .collect();
    Balancer::new("scripted", backends, config(strategy)).unwrap()
}

fn ask(b: &Balancer) -> Result<Generation> {
    b.generate(&request(), &mut |_| TokenControl::Continue)
}

fn admission(b: &Balancer, name: &str) -> Admission {
    b.status()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap()
        .admission
}

#[test]
fn round_robin_takes_each_in_turn() {
    let gens: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| Scripted::named(n, 4).shared())
        .collect();
    let b = balancer(&gens, Strategy::RoundRobin);
    let mut order = Vec::new();
    for _ in 0..9 {
        let before: Vec<usize> = gens.iter().map(|g| g.calls()).collect();
        ask(&b).unwrap();
        let served = (0..3).find(|&i| gens[i].calls() > before[i]).unwrap();
        order.push(served);
    }
    assert_eq!(order, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
}

/// A generator that blocks until its gate opens.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
    served: AtomicUsize,
}

impl Gate {
    fn open(&self) {
        *self.open.lock() = true;
        self.cv.notify_all();
    }
}

impl Generator for Gate {
    fn name(&self) -> &str {
        "gate"
    }
    fn context_window(&self) -> usize {
        4096
    }
    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(text.len())
    }
    fn generate(
        &self,
        _: &GenerationRequest,
        on_token: &mut dyn FnMut(&str) -> TokenControl,
    ) -> Result<Generation> {
        let mut open = self.open.lock();
        while !*open {
            self.cv.wait(&mut open);
        }
        drop(open);
        self.served.fetch_add(1, Ordering::SeqCst);
        on_token(" ok");
        Ok(Generation {
            text: " ok".into(),
            finish: rag_core::FinishReason::EndOfText,
            prompt_tokens: 1,
            generated_tokens: 1,
            time_to_first_token_s: 0.0,
            tokens_per_s: 0.0,
        })
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

#[test]
fn least_outstanding_sends_to_the_idle_backend() {
    let gates: Vec<Arc<Gate>> = (0..3).map(|_| Arc::new(Gate::default())).collect();
    let backends = gates
        .iter()
        .enumerate()
        .map(|(i, g)| Backend::new(format!("g{i}"), Arc::clone(g) as Arc<dyn Generator>))
        .collect();
    let b = Arc::new(Balancer::new("gates", backends, config(Strategy::LeastOutstanding)).unwrap());
    let outstanding = |b: &Balancer| b.status().iter().map(|s| s.outstanding).collect::<Vec<_>>();
    std::thread::scope(|s| {
        for held in 1..=2 {
            let b2 = Arc::clone(&b);
            s.spawn(move || ask(&b2).unwrap());
            wait_until("the request is in flight", || {
                outstanding(&b).iter().sum::<usize>() == held
            });
        }
        let busy = outstanding(&b);
        assert_eq!(busy.iter().filter(|&&o| o == 1).count(), 2, "{busy:?}");
        let idle = busy.iter().position(|&o| o == 0).unwrap();
        gates[idle].open();
        ask(&b).unwrap();
        assert_eq!(gates[idle].served.load(Ordering::SeqCst), 1);
        for g in &gates {
            g.open();
        }
    });
}

#[test]
fn a_failing_backend_is_ejected_after_5_failures_and_readmitted_after_it_recovers() {
    let gens: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| Scripted::named(n, 4).shared())
        .collect();
    let b = balancer(&gens, Strategy::RoundRobin);
    gens[2].set_failing(true);
    let mut failures_seen = 0;
    for _ in 0..30 {
        // Every request succeeds: c's failures fail over to a or b.
        ask(&b).unwrap();
        if gens[2].calls() > failures_seen {
            failures_seen = gens[2].calls();
            let admitted = admission(&b, "c") == Admission::Admitted;
            assert_eq!(
                admitted,
                failures_seen < 5,
                "after {failures_seen} failures"
            );
        }
    }
    assert_eq!(failures_seen, 5, "c kept getting requests while ejected");
    gens[2].set_failing(false);
    wait_until("c is re-admitted", || {
        ask(&b).unwrap();
        admission(&b, "c") == Admission::Admitted
    });
    let st = b.status().into_iter().find(|s| s.name == "c").unwrap();
    assert_eq!(st.ejections, 1);
    assert!(st.last_error.is_some());
}

#[test]
fn a_failed_probation_trial_ejects_again_for_longer() {
    let gens: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| Scripted::named(n, 2).shared())
        .collect();
    let b = balancer(&gens, Strategy::RoundRobin);
    gens[1].set_failing(true);
    wait_until("b is ejected", || {
        ask(&b).unwrap();
        matches!(admission(&b, "b"), Admission::Ejected { .. })
    });
    let Admission::Ejected { until: first } = admission(&b, "b") else {
        unreachable!()
    };
    wait_until("b's trial fails", || {
        ask(&b).unwrap();
        matches!(admission(&b, "b"), Admission::Ejected { until } if until > first)
    });
    let Admission::Ejected { until: second } = admission(&b, "b") else {
        unreachable!()
    };
    // Twice the first 100 ms period, counted from the failed trial.
    assert!(second.duration_since(first) >= Duration::from_millis(100));
    assert_eq!(b.status()[1].ejections, 2);
}

#[test]
fn ejection_is_capped_so_backends_are_never_all_out() {
    let gens: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| Scripted::named(n, 2).shared())
        .collect();
    for g in &gens {
        g.set_failing(true);
    }
    let b = balancer(&gens, Strategy::RoundRobin);
    for _ in 0..40 {
        assert!(ask(&b).is_err());
        let out = b
            .status()
            .iter()
            .filter(|s| s.admission != Admission::Admitted)
            .count();
        assert!(out <= 1, "{out} of 3 out at once");
    }
    // With one healthy again, nothing fails.
    gens[0].set_failing(false);
    for _ in 0..10 {
        ask(&b).unwrap();
    }
}

#[test]
fn peak_ewma_avoids_a_slow_backend_and_survives_one_failing_mid_run() {
    let a = Scripted::named("a", 6)
        .delays(Duration::from_millis(4), Duration::from_micros(200))
        .shared();
    let slow = Scripted::named("slow", 6)
        .delays(Duration::from_millis(120), Duration::from_millis(2))
        .shared();
    let c = Scripted::named("c", 6)
        .delays(Duration::from_millis(4), Duration::from_micros(200))
        .shared();
    let gens = [Arc::clone(&a), Arc::clone(&slow), Arc::clone(&c)];
    let b = balancer(&gens, Strategy::PeakEwma);
    let done = AtomicUsize::new(0);
    let failures = hammer(4, 60, |_| {
        let n = done.fetch_add(1, Ordering::SeqCst);
        if n == 60 {
            c.set_failing(true);
        }
        if n == 150 {
            c.set_failing(false);
        }
        let r = ask(&b);
        match &r {
            Ok(g) => assert_eq!(g.text, a.full_text()),
            Err(e) => eprintln!("request failed: {e}"),
        }
        r.is_ok()
    });
    assert_eq!(
        failures, 0,
        "no request may fail while a healthy backend remains"
    );
    let total = 240.0;
    let share = slow.calls() as f64 / total;
    assert!(
        share <= 0.10,
        "the slow backend got {:.1}% of requests",
        share * 100.0
    );
    let st = b.status();
    assert!(st[2].ejections >= 1, "{st:?}");
    wait_until("c is re-admitted", || {
        ask(&b).unwrap();
        admission(&b, "c") == Admission::Admitted
    });
    eprintln!(
        "calls a={} slow={} c={}; status {st:?}",
        a.calls(),
        slow.calls(),
        c.calls()
    );
}

#[test]
fn a_failure_after_the_first_token_is_not_failed_over() {
    let mut broken = Scripted::named("a", 6);
    broken.fail_after = Some(2);
    let broken = broken.shared();
    broken.set_failing(true);
    let other = Scripted::named("b", 6).shared();
    let b = balancer(
        &[Arc::clone(&broken), Arc::clone(&other)],
        Strategy::RoundRobin,
    );
    let mut seen = String::new();
    let r = b.generate(&request(), &mut |p| {
        seen.push_str(p);
        TokenControl::Continue
    });
    assert!(r.is_err());
    assert_eq!(seen, " w0 w1");
    assert_eq!(
        other.calls(),
        0,
        "text was already out; no other backend may add to it"
    );
}

#[test]
fn caller_errors_are_neither_failed_over_nor_held_against_the_backend() {
    let mut bad = Scripted::named("a", 2);
    bad.invalid_input = true;
    let bad = bad.shared();
    let other = Scripted::named("b", 2).shared();
    let b = balancer(
        &[Arc::clone(&bad), Arc::clone(&other)],
        Strategy::RoundRobin,
    );
    for _ in 0..10 {
        let _ = ask(&b);
    }
    assert_eq!(bad.calls(), 5);
    assert_eq!(other.calls(), 5);
    assert_eq!(b.status()[0].errors, 0);
    assert_eq!(admission(&b, "a"), Admission::Admitted);
}

#[test]
fn a_spent_deadline_is_a_typed_error_without_touching_a_backend() {
    let g = Scripted::named("a", 2).shared();
    let b = balancer(&[Arc::clone(&g)], Strategy::PeakEwma);
    let mut r = request();
    r.deadline = Some(Instant::now());
    let err = b.generate(&r, &mut |_| TokenControl::Continue).unwrap_err();
    assert!(matches!(err, Error::Transient { .. }), "{err:?}");
    assert_eq!(g.calls(), 0);
}

#[test]
fn probes_readmit_an_ejected_backend_without_risking_a_request() {
    let gens: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| Scripted::named(n, 2).shared())
        .collect();
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h2 = Arc::clone(&healthy);
    let backends = vec![
        Backend::new("a", Arc::clone(&gens[0]) as Arc<dyn Generator>),
        Backend::new("b", Arc::clone(&gens[1]) as Arc<dyn Generator>).with_probe(Arc::new(
            move || {
                if h2.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(Error::Transient {
                        stage: rag_core::Stage::Generate,
                        source: "loading".into(),
                    })
                }
            },
        )),
    ];
    let b = Balancer::new("scripted", backends, config(Strategy::RoundRobin)).unwrap();
    for _ in 0..5 {
        b.probe_all();
    }
    assert!(
        matches!(admission(&b, "b"), Admission::Ejected { .. }),
        "5 failed probes eject"
    );
    healthy.store(true, Ordering::SeqCst);
    wait_until("b's ejection ends and its probe passes", || {
        b.probe_all();
        admission(&b, "b") == Admission::Admitted
    });
    assert_eq!(gens[1].calls(), 0, "b was re-admitted by probes alone");
}
