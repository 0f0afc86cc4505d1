//! JSON shapes shared by the routes.

use rag::Citation;
use rag::pipeline::{AnswerKind, QueryAnswer};
use serde_json::{Value, json};

/// A citation as JSON: document, version, chunk and byte span.
pub(crate) fn citation(c: &Citation) -> Value {
    json!({
        "document": c.doc_id.as_str(),
        "version": c.doc_version,
        "chunk": c.chunk_id.to_string(),
        "start": c.span.start,
        "end": c.span.end,
    })
}

pub(crate) fn citations<'a>(cs: impl IntoIterator<Item = &'a Citation>) -> Value {
    Value::Array(cs.into_iter().map(citation).collect())
}

pub(crate) fn kind(k: AnswerKind) -> &'static str {
    match k {
        AnswerKind::Generated => "answered",
        AnswerKind::Extractive => "extractive",
        AnswerKind::Abstained => "abstained",
        AnswerKind::NothingVisible => "nothing_visible",
        AnswerKind::Cancelled => "cancelled",
    }
}

/// The whole answer as JSON.
pub(crate) fn answer(a: &QueryAnswer) -> Value {
    let timings: serde_json::Map<String, Value> = a
        .timings
        .iter()
        .map(|t| (t.stage.to_owned(), json!(t.duration.as_secs_f64() * 1e3)))
        .collect();
    json!({
        "answer": a.answer.text,
        "kind": kind(a.kind),
        "citations": citations(&a.answer.citations),
        "from_cache": a.from_cache,
        "top_score": a.top_score,
        "timings_ms": timings,
        "degradations": a.degradations.iter().map(|d| d.label()).collect::<Vec<_>>(),
    })
}
