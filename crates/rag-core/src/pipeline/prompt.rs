//! Prompt assembly within the generator's context window, citation markers, and
//! the extractive fallback answer.

use crate::answer::{Answer, ChatMessage, Citation, Role};
use crate::error::Result;
use crate::hit::Hit;
use crate::traits::Generator;

/// Tokens kept free for the chat template's own markers.
const TEMPLATE_RESERVE: usize = 32;
/// Characters of a chunk quoted in an extractive answer.
const EXTRACT_CHARS: usize = 400;

/// The messages for the generator and the chunks they hold, in marker order.
#[derive(Debug)]
pub(crate) struct Context {
    pub messages: Vec<ChatMessage>,
    pub used: Vec<Hit>,
}

/// Puts the most relevant chunks first, each as `[n] text`, as many as fit the
/// window after the system prompt, the question and the answer's tokens.
pub(crate) fn build(
    generator: &dyn Generator,
    system: &str,
    question: &str,
    hits: &[Hit],
    answer_tokens: usize,
) -> Result<Context> {
    let fixed = generator.count_tokens(system)? + generator.count_tokens(question)?;
    let mut left = generator
        .context_window()
        .saturating_sub(fixed + answer_tokens + TEMPLATE_RESERVE);
    let mut body = String::from("Context:\n");
    let mut used = Vec::new();
    for hit in hits {
        let passage = format!("[{}] {}\n\n", used.len() + 1, hit.text.trim());
        let cost = generator.count_tokens(&passage)?;
        if cost > left {
            continue;
        }
        left -= cost;
        body.push_str(&passage);
        used.push(hit.clone());
    }
    body.push_str("Question: ");
    body.push_str(question);
    Ok(Context {
        messages: vec![
            ChatMessage {
                role: Role::System,
                content: system.to_owned(),
            },
            ChatMessage {
                role: Role::User,
                content: body,
            },
        ],
        used,
    })
}

/// Every chunk that reached the prompt.
pub(crate) fn provenance(used: &[Hit]) -> Vec<Citation> {
    used.iter().map(citation).collect()
}

fn citation(hit: &Hit) -> Citation {
    Citation {
        doc_id: hit.doc_id.clone(),
        doc_version: hit.doc_version,
        chunk_id: hit.chunk_id,
        span: hit.span,
    }
}

/// The chunks an answer cites: those whose `[n]` markers it contains, or every
/// chunk it was given when it contains none.
pub(crate) fn citations(text: &str, used: &[Hit]) -> Vec<Citation> {
    let marked: Vec<Citation> = used
        .iter()
        .enumerate()
        .filter(|(i, _)| text.contains(&format!("[{}]", i + 1)))
        .map(|(_, h)| citation(h))
        .collect();
    if marked.is_empty() {
        used.iter().map(citation).collect()
    } else {
        marked
    }
}

/// An answer quoting the top chunks, each cited, for when generation is not possible.
pub(crate) fn extractive(hits: &[Hit], count: usize) -> Answer {
    let mut text = String::from("The most relevant passages you have access to:\n");
    let top: Vec<&Hit> = hits.iter().take(count).collect();
    for (i, h) in top.iter().enumerate() {
        let quote = h.text.trim();
        let cut = quote
            .char_indices()
            .nth(EXTRACT_CHARS)
            .map_or(quote.len(), |(b, _)| b);
        let more = if cut < quote.len() { "…" } else { "" };
        text.push_str(&format!("[{}] {}{more}\n", i + 1, &quote[..cut]));
    }
    let citations: Vec<Citation> = top.into_iter().map(citation).collect();
    Answer {
        text,
        provenance: citations.clone(),
        citations,
    }
}

/// The answer when the caller may see nothing relevant.
pub(crate) fn nothing_found() -> Answer {
    Answer {
        text: "No documents you have access to match this question.".into(),
        citations: Vec::new(),
        provenance: Vec::new(),
    }
}
