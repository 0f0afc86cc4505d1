//! Prompt assembly within the generator's context window, citation markers, and
//! the extractive fallback answer.

use rag_core::Generator;
use rag_core::Hit;
use rag_core::Result;
use rag_core::{Answer, ChatMessage, Citation, Role};

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
/// window after the system prompt, the question and the answer's tokens, and the
/// passage budget (`context_tokens`) if there is one.
pub(crate) fn build(
    generator: &dyn Generator,
    system: &str,
    question: &str,
    hits: &[Hit],
    answer_tokens: usize,
    context_tokens: Option<usize>,
) -> Result<Context> {
    let fixed = generator.count_tokens(system)? + generator.count_tokens(question)?;
    let window = generator
        .context_window()
        .saturating_sub(fixed + answer_tokens + TEMPLATE_RESERVE);
    let mut left = context_tokens.map_or(window, |budget| budget.min(window));
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

/// `text` without the `[n]` markers that name no passage of `passages`.
pub(crate) fn strip_markers(text: &str, passages: usize) -> String {
    let mut clean = String::with_capacity(text.len());
    let mut at = 0;
    for (range, n) in markers(text) {
        if !(1..=passages).contains(&n) {
            clean.push_str(&text[at..range.start]);
            at = range.end;
        }
    }
    clean.push_str(&text[at..]);
    clean
}

/// The `[n]` markers in a text, in order of appearance (`n` as written).
fn markers(text: &str) -> Vec<(std::ops::Range<usize>, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'[' {
            let digits = bytes[i + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let close = i + 1 + digits;
            if digits > 0 && digits <= 6 && bytes.get(close) == Some(&b']') {
                if let Ok(n) = text[i + 1..close].parse::<usize>() {
                    out.push((i..close + 1, n));
                }
                i = close + 1;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// The chunks an answer cites and its text with out-of-range markers removed. A
/// marker `[n]` cites passage `n` when `1 <= n <= used.len()`; any other `[n]` is
/// dropped from the text and cites nothing (never another passage). An answer
/// with no marker at all cites the passages it was taken from ([`attributed`]).
pub(crate) fn citations(text: &str, used: &[Hit]) -> (String, Vec<Citation>) {
    let found = markers(text);
    if found.is_empty() {
        return (
            text.to_owned(),
            attributed(text, used)
                .into_iter()
                .map(|i| citation(&used[i]))
                .collect(),
        );
    }
    let mut cited: Vec<usize> = found
        .iter()
        .map(|(_, n)| *n)
        .filter(|n| (1..=used.len()).contains(n))
        .collect();
    let clean = strip_markers(text, used.len());
    cited.sort_unstable();
    cited.dedup();
    (
        clean,
        cited.into_iter().map(|n| citation(&used[n - 1])).collect(),
    )
}

/// Lower-cased words of at least three letters or any digits: the words an
/// answer can share with a passage by more than chance.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3 || w.chars().any(|c| c.is_ascii_digit()))
        .map(str::to_lowercase)
        .collect()
}

/// The passages (indices into `used`) an answer without markers was taken from:
/// those holding the largest share of the answer's words, when that share is at
/// least half (ties all cited); otherwise, with no passage clearly its source,
/// every passage it was given.
fn attributed(text: &str, used: &[Hit]) -> Vec<usize> {
    let answer = words(text);
    if answer.is_empty() || used.is_empty() {
        return (0..used.len()).collect();
    }
    let shares: Vec<f64> = used
        .iter()
        .map(|h| {
            let passage: std::collections::HashSet<String> = words(&h.text).into_iter().collect();
            answer.iter().filter(|w| passage.contains(*w)).count() as f64 / answer.len() as f64
        })
        .collect();
    let best = shares.iter().copied().fold(0.0, f64::max);
    if best < 0.5 {
        return (0..used.len()).collect();
    }
    (0..used.len()).filter(|&i| shares[i] >= best).collect()
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

/// The answer when the passages found are not relevant enough.
pub(crate) fn abstained() -> Answer {
    Answer {
        text: "The documents you have access to do not answer this question.".into(),
        citations: Vec::new(),
        provenance: Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use rag_core::Span;
    use rag_core::{ChunkId, DocId};

    fn hit(id: &str) -> Hit {
        Hit {
            chunk_id: ChunkId(id.len() as u64),
            doc_id: DocId::new(id),
            doc_version: 1,
            ordinal: 0,
            score: 1.0,
            text: format!("text of {id}").into(),
            span: Span::new(0, 1),
        }
    }

    #[test]
    fn markers_beyond_the_passages_are_dropped_never_remapped() {
        let used = [hit("a"), hit("bb"), hit("ccc")];
        let ids = |c: &[Citation]| c.iter().map(|c| c.doc_id.to_string()).collect::<Vec<_>>();
        let (text, c) = citations("From [2] and [7], also [2] and [3].", &used);
        assert_eq!(ids(&c), ["bb", "ccc"]);
        assert_eq!(text, "From [2] and , also [2] and [3].");
        // Only out-of-range markers: no citation at all.
        let (text, c) = citations("See [4] and [10].", &used);
        assert!(c.is_empty());
        assert_eq!(text, "See  and .");
        // [0] is not a passage either; "[1]" inside "[10]" is not a marker.
        let (_, c) = citations("[0] [10]", &used);
        assert!(c.is_empty());
        // No marker and no passage its clear source: every passage given.
        let (_, c) = citations("No markers here.", &used);
        assert_eq!(ids(&c), ["a", "bb", "ccc"]);
    }

    #[test]
    fn an_answer_without_markers_cites_the_passages_it_was_taken_from() {
        let with = |id: &str, text: &str| Hit {
            text: text.to_owned().into(),
            ..hit(id)
        };
        let used = [
            with("a", "The Broncos beat the Panthers 24-10 in Super Bowl 50."),
            with("bb", "Levi's Stadium is in Santa Clara, California."),
            with("ccc", "Santa Clara hosted the game in February 2016."),
        ];
        let ids = |c: &[Citation]| c.iter().map(|c| c.doc_id.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ids(&citations("The Denver Broncos won 24-10.", &used).1),
            ["a"]
        );
        // Ties are all cited.
        assert_eq!(ids(&citations("Santa Clara", &used).1), ["bb", "ccc"]);
        // Under half the words in any passage: all of them, as before.
        assert_eq!(
            ids(&citations("I do not know who won the game.", &used).1),
            ["a", "bb", "ccc"]
        );
        // Markers still decide when there are any.
        assert_eq!(ids(&citations("Santa Clara [1]", &used).1), ["a"]);
    }

    #[test]
    fn the_passage_budget_keeps_the_most_relevant_passages_that_fit() {
        struct Words;
        impl Generator for Words {
            fn name(&self) -> &str {
                "words"
            }
            fn context_window(&self) -> usize {
                2048
            }
            fn count_tokens(&self, text: &str) -> Result<usize> {
                Ok(text.split_whitespace().count())
            }
            fn generate(
                &self,
                _: &rag_core::GenerationRequest,
                _: &mut dyn FnMut(&str) -> rag_core::TokenControl,
            ) -> Result<rag_core::Generation> {
                unreachable!("not called by prompt building")
            }
        }
        let generator = Words;
        let used: Vec<Hit> = (0..4)
            .map(|i| Hit {
                text: "word ".repeat(50).into(),
                ..hit(&"d".repeat(i + 1))
            })
            .collect();
        let all = build(&generator, "system", "question", &used, 16, None).unwrap();
        let some = build(&generator, "system", "question", &used, 16, Some(120)).unwrap();
        assert_eq!(all.used.len(), 4);
        assert_eq!(some.used.len(), 2);
        assert_eq!(some.used[0].doc_id, used[0].doc_id);
    }
}
