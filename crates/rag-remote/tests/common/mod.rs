//! What the balancer and HTTP tests share: the scripted generator, a request, and
//! a way to hammer a balancer from several threads.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use rag_core::{ChatMessage, GenerationRequest, Role, SamplingParams};
pub use rag_pipeline::testing::ScriptedGenerator as Scripted;

pub fn request() -> GenerationRequest {
    GenerationRequest::new(
        vec![ChatMessage {
            role: Role::User,
            content: "What is in the passage?".into(),
        }],
        SamplingParams {
            max_new_tokens: 64,
            ..Default::default()
        },
    )
}

/// Runs `f` on `threads` threads `each` times and returns how many calls failed.
pub fn hammer(threads: usize, each: usize, f: impl Fn(usize) -> bool + Sync) -> usize {
    let failures = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..threads {
            let f = &f;
            let failures = &failures;
            s.spawn(move || {
                for k in 0..each {
                    if !f(t * each + k) {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    failures.into_inner()
}
