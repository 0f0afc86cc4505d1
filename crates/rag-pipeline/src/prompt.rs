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
    /// The question asked (its words are not evidence of where an answer came
    /// from).
    pub question: String,
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
        question: question.to_owned(),
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

/// The chunks an answer cites and its text with out-of-range markers removed.
///
/// A marker `[n]` names passage `n` when `1 <= n <= used.len()`; any other `[n]` is
/// dropped from the text and names nothing (never another passage). What is cited
/// is then checked against the text: a named passage is cited when it holds at
/// least half of the answer's own words ([`Evidence`]). When none of the named
/// passages does, or nothing is named, the answer cites the passages it was taken
/// from (those holding the largest share of its words, at least half), and none
/// when no passage holds half of them: an answer that is not in its passages
/// claims no source. An answer with no words of its own (it only repeats the
/// question) cites what it names.
pub(crate) fn citations(text: &str, question: &str, used: &[Hit]) -> (String, Vec<Citation>) {
    let mut named: Vec<usize> = markers(text)
        .into_iter()
        .map(|(_, n)| n)
        .filter(|n| (1..=used.len()).contains(n))
        .map(|n| n - 1)
        .collect();
    named.sort_unstable();
    named.dedup();
    let chosen = match Evidence::new(text, question, used) {
        None => named,
        Some(evidence) => {
            let supported: Vec<usize> = named
                .into_iter()
                .filter(|&i| evidence.shares[i] >= SUPPORTED)
                .collect();
            if supported.is_empty() {
                evidence.sources()
            } else {
                supported
            }
        }
    };
    (
        strip_markers(text, used.len()),
        chosen.into_iter().map(|i| citation(&used[i])).collect(),
    )
}

/// The share of an answer's own words a passage must hold to be its source.
const SUPPORTED: f64 = 0.5;

/// Lower-cased words of at least three letters or any digits: the words an
/// answer can share with a passage by more than chance.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3 || w.chars().any(|c| c.is_ascii_digit()))
        .map(str::to_lowercase)
        .collect()
}

/// How much of an answer's own words each passage holds.
struct Evidence {
    /// Per passage, the share of the answer's own words found in it.
    shares: Vec<f64>,
}

impl Evidence {
    /// The answer's own words are its words (markers left out) that are not in the
    /// question and, given two passages or more, not in every passage (those say
    /// nothing about which one it came from: stop words, the topic). `None` when
    /// the answer has no such word.
    fn new(text: &str, question: &str, used: &[Hit]) -> Option<Self> {
        use std::collections::HashSet;
        let mut unmarked = String::with_capacity(text.len());
        let mut at = 0;
        for (range, _) in markers(text) {
            unmarked.push_str(&text[at..range.start]);
            unmarked.push(' ');
            at = range.end;
        }
        unmarked.push_str(&text[at..]);
        let asked: HashSet<String> = words(question).into_iter().collect();
        let passages: Vec<HashSet<String>> = used
            .iter()
            .map(|h| words(&h.text).into_iter().collect())
            .collect();
        let mut answer: Vec<String> = words(&unmarked)
            .into_iter()
            .filter(|w| !asked.contains(w))
            .collect();
        answer.sort_unstable();
        answer.dedup();
        let everywhere = |w: &String| passages.len() >= 2 && passages.iter().all(|p| p.contains(w));
        let own: Vec<&String> = answer.iter().filter(|w| !everywhere(w)).collect();
        let own = if own.is_empty() {
            answer.iter().collect()
        } else {
            own
        };
        if own.is_empty() {
            return None;
        }
        let shares = passages
            .iter()
            .map(|p| {
                own.iter().filter(|w| p.contains(w.as_str())).count() as f64 / own.len() as f64
            })
            .collect();
        Some(Self { shares })
    }

    /// The passages holding the largest share, when it is at least half (ties all
    /// cited); none otherwise.
    fn sources(&self) -> Vec<usize> {
        let best = self.shares.iter().copied().fold(0.0, f64::max);
        if best < SUPPORTED {
            return Vec::new();
        }
        (0..self.shares.len())
            .filter(|&i| self.shares[i] >= best)
            .collect()
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

    fn with(id: &str, text: &str) -> Hit {
        Hit {
            text: text.to_owned().into(),
            ..hit(id)
        }
    }

    fn ids(c: &[Citation]) -> Vec<String> {
        c.iter().map(|c| c.doc_id.to_string()).collect()
    }

    #[test]
    fn markers_beyond_the_passages_are_dropped_never_remapped() {
        let used = [
            with("a", "alpha one"),
            with("bb", "beta two and also"),
            with("ccc", "gamma three and also"),
        ];
        let (text, c) = citations("Beta and also [2] [7], gamma and also [3].", "", &used);
        assert_eq!(ids(&c), ["bb", "ccc"]);
        assert_eq!(text, "Beta and also [2] , gamma and also [3].");
        // Only out-of-range markers: nothing named, so attributed from the words.
        let (text, c) = citations("Alpha one [4] and [10].", "", &used);
        assert_eq!(ids(&c), ["a"]);
        assert_eq!(text, "Alpha one  and .");
        // [0] is not a passage either; "[1]" inside "[10]" is not a marker.
        let (_, c) = citations("[0] [10]", "", &used);
        assert!(c.is_empty());
    }

    #[test]
    fn an_answer_without_markers_cites_the_passages_it_was_taken_from() {
        let used = [
            with("a", "The Broncos beat the Panthers 24-10 in Super Bowl 50."),
            with("bb", "Levi's Stadium is in Santa Clara, California."),
            with("ccc", "Santa Clara hosted the game in February 2016."),
        ];
        assert_eq!(
            ids(&citations("The Denver Broncos won 24-10.", "", &used).1),
            ["a"]
        );
        // Ties are all cited.
        assert_eq!(ids(&citations("Santa Clara", "", &used).1), ["bb", "ccc"]);
        // Not in any passage: no source claimed (it used to cite all of them).
        assert!(
            citations("I do not know who won the game.", "", &used)
                .1
                .is_empty()
        );
        // A marker naming a passage that holds the answer decides.
        assert_eq!(ids(&citations("Santa Clara [3]", "", &used).1), ["ccc"]);
    }

    #[test]
    fn a_named_passage_that_does_not_hold_the_answer_is_not_cited() {
        let used = [
            with("a", "The Broncos beat the Panthers 24-10 in Super Bowl 50."),
            with("bb", "Levi's Stadium is in Santa Clara, California."),
            with("ccc", "Santa Clara hosted the game in February 2016."),
        ];
        let q = "Where was Super Bowl 50 played?";
        // The model names [1], but the place is in [2] and [3]: those are cited.
        let (text, c) = citations("Super Bowl 50 was played in Santa Clara [1].", q, &used);
        assert_eq!(ids(&c), ["bb", "ccc"]);
        assert_eq!(text, "Super Bowl 50 was played in Santa Clara [1].");
        // Of two named passages, the one holding the answer is cited.
        let (_, c) = citations("It was in February 2016 [1][3].", "When was it?", &used);
        assert_eq!(ids(&c), ["ccc"]);
        // The question's words are no evidence: "Super Bowl 50" alone would point
        // at [1]; the answer's own words, the date, are in [3].
        let (_, c) = citations("Super Bowl 50 was in February 2016.", q, &used);
        assert_eq!(ids(&c), ["ccc"]);
        // An answer that only repeats the question cites what it names.
        let (_, c) = citations("Super Bowl 50 was played [2].", q, &used);
        assert_eq!(ids(&c), ["bb"]);
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
