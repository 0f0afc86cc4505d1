//! A bounded memo of recent question embeddings, so that a repeated question
//! reaches the answer cache (and retrieval) without running the embedding model.
//!
//! Keys are the question's normalised text (trimmed, whitespace runs collapsed to one
//! space; the embedder is always given that same text, so a hit returns exactly what
//! the model would) under the asker's access filter. Scoping by access set means a
//! hit tells a caller nothing the answer cache does not already: how fast a
//! question is answered never depends on what a principal with other rights asked.
//! One memo belongs to one pipeline, hence to one embedding model; a stored vector
//! of another model is never returned.

use std::num::NonZeroUsize;

use lru::LruCache;
use parking_lot::Mutex;
use rag_core::{AccessFilter, Embedding, ModelId};

/// The text the embedder is given for `question`: trimmed, with every run of
/// whitespace replaced by one space.
pub(crate) fn normalise(question: &str) -> String {
    let mut out = String::with_capacity(question.len());
    for word in question.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Recent question embeddings, least recently used evicted first.
pub(crate) struct QuestionMemo {
    model: ModelId,
    entries: Option<Mutex<LruCache<(AccessFilter, String), Embedding>>>,
}

impl QuestionMemo {
    /// A memo of up to `capacity` embeddings of `model` (0: none kept).
    pub fn new(model: ModelId, capacity: usize) -> Self {
        Self {
            model,
            entries: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
        }
    }

    /// The embedding of `text` (normalised) asked under `scope`, if remembered.
    pub fn get(&self, scope: &AccessFilter, text: &str) -> Option<Embedding> {
        let entries = self.entries.as_ref()?;
        let mut entries = entries.lock();
        // The key is built only to look up; the strings are short.
        let hit = entries.get(&(scope.clone(), text.to_owned()))?;
        (hit.model() == self.model).then(|| hit.clone())
    }

    /// Remembers the embedding of `text` (normalised) asked under `scope`.
    pub fn put(&self, scope: &AccessFilter, text: String, embedding: &Embedding) {
        if embedding.model() != self.model {
            return;
        }
        if let Some(entries) = &self.entries {
            entries.lock().put((scope.clone(), text), embedding.clone());
        }
    }

    /// Embeddings held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, |e| e.lock().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rag_core::Principal;

    fn emb(model: ModelId, x: f32) -> Embedding {
        Embedding::new(model, vec![x, 1.0]).unwrap()
    }

    #[test]
    fn normalising_collapses_whitespace_only() {
        assert_eq!(normalise("  What is\tRAG?\n\n "), "What is RAG?");
        assert_eq!(normalise("what is rag?"), "what is rag?");
        assert_ne!(normalise("What is RAG?"), normalise("what is rag?"));
    }

    #[test]
    fn a_hit_needs_the_same_text_scope_and_model() {
        let model = ModelId(1);
        let memo = QuestionMemo::new(model, 2);
        let alice = AccessFilter::for_principal(&Principal::new("acme", "a").with_group("g"));
        let bob = AccessFilter::for_principal(&Principal::new("acme", "b").with_group("h"));
        let other_tenant =
            AccessFilter::for_principal(&Principal::new("evil", "a").with_group("g"));
        memo.put(&alice, "q one".into(), &emb(model, 0.5));
        assert_eq!(memo.get(&alice, "q one"), Some(emb(model, 0.5)));
        assert_eq!(memo.get(&alice, "q two"), None);
        assert_eq!(memo.get(&bob, "q one"), None);
        assert_eq!(memo.get(&other_tenant, "q one"), None);
        // Another model's vector is neither stored nor returned.
        memo.put(&alice, "q two".into(), &emb(ModelId(2), 0.1));
        assert_eq!(memo.get(&alice, "q two"), None);
    }

    #[test]
    fn it_is_bounded_and_evicts_the_least_recent() {
        let model = ModelId(1);
        let memo = QuestionMemo::new(model, 2);
        let s = AccessFilter::for_principal(&Principal::new("acme", "a"));
        memo.put(&s, "a".into(), &emb(model, 0.1));
        memo.put(&s, "b".into(), &emb(model, 0.2));
        assert!(memo.get(&s, "a").is_some());
        memo.put(&s, "c".into(), &emb(model, 0.3));
        assert_eq!(memo.len(), 2);
        assert!(memo.get(&s, "b").is_none(), "b was the least recently used");
        assert!(memo.get(&s, "a").is_some() && memo.get(&s, "c").is_some());
        let off = QuestionMemo::new(model, 0);
        off.put(&s, "a".into(), &emb(model, 0.1));
        assert_eq!((off.get(&s, "a"), off.len()), (None, 0));
    }
}
