//! A generator wrapper that records what reached the model and how fast it answered.

use std::sync::{Arc, Mutex, PoisonError};

use rag_core::{Generation, GenerationRequest, Generator, TokenControl};

/// Records every prompt (its messages' text, concatenated) and every generation's
/// (time to first token in ms, decode tokens/s), then delegates.
pub struct Recording {
    inner: Arc<dyn Generator>,
    prompts: Mutex<Vec<String>>,
    runs: Mutex<Vec<(f64, f64)>>,
}

impl Recording {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Generator>) -> Self {
        Self {
            inner,
            prompts: Mutex::new(Vec::new()),
            runs: Mutex::new(Vec::new()),
        }
    }

    /// Takes the prompts recorded so far.
    pub fn take_prompts(&self) -> Vec<String> {
        std::mem::take(&mut *self.prompts.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The (ttft ms, tokens/s) of every generation so far.
    pub fn runs(&self) -> Vec<(f64, f64)> {
        self.runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Generator for Recording {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn context_window(&self) -> usize {
        self.inner.context_window()
    }
    fn count_tokens(&self, text: &str) -> rag_core::Result<usize> {
        self.inner.count_tokens(text)
    }
    fn generate(
        &self,
        request: &GenerationRequest,
        on_token: &mut dyn FnMut(&str) -> TokenControl,
    ) -> rag_core::Result<Generation> {
        let prompt: String = request
            .messages
            .iter()
            .map(|m| m.content.as_str())
            .collect();
        self.prompts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(prompt);
        let g = self.inner.generate(request, on_token)?;
        self.runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((g.time_to_first_token_s * 1e3, g.tokens_per_s));
        Ok(g)
    }
}
