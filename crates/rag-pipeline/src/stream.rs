//! Streaming an answer: the events a caller sees, and the incremental cleaner that
//! makes the streamed pieces add up to exactly the final answer's text.

use rag_core::Citation;

use crate::prompt;

/// What a streamed query reports, in this order: [`QueryEvent::Retrieved`] once,
/// then [`QueryEvent::Token`]s whose concatenation is the final answer's text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QueryEvent<'a> {
    /// Retrieval finished: the passages the answer is built from (every one the
    /// caller may read), before any text. Empty when nothing is visible or the
    /// pipeline abstains.
    Retrieved {
        /// The passages, in prompt order.
        sources: &'a [Citation],
    },
    /// The next piece of the answer's text.
    Token(&'a str),
}

/// The longest prefix of `raw` no later text can change the cleaning of: it stops
/// before a `[` that may still become a citation marker (`[` and up to six digits
/// at the end).
fn stable_prefix(raw: &str) -> usize {
    let bytes = raw.as_bytes();
    let tail_digits = bytes
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let open = bytes.len() - tail_digits;
    if tail_digits <= 6 && open > 0 && bytes[open - 1] == b'[' {
        open - 1
    } else {
        raw.len()
    }
}

/// Turns generated pieces into the pieces a caller sees: out-of-range `[n]`
/// markers dropped, leading and trailing whitespace trimmed, so that the pieces
/// emitted concatenate to the final text ([`TextFilter::text`]).
#[derive(Debug)]
pub(crate) struct TextFilter {
    passages: usize,
    raw: String,
    emitted: String,
}

impl TextFilter {
    pub(crate) fn new(passages: usize) -> Self {
        Self {
            passages,
            raw: String::new(),
            emitted: String::new(),
        }
    }

    /// The raw text pushed so far.
    pub(crate) fn raw(&self) -> &str {
        &self.raw
    }

    /// Whether any text was emitted.
    pub(crate) fn emitted_any(&self) -> bool {
        !self.emitted.is_empty()
    }

    /// Adds a generated piece; returns what may be shown now.
    pub(crate) fn push(&mut self, piece: &str) -> Option<String> {
        self.raw.push_str(piece);
        let upto = stable_prefix(&self.raw);
        let clean = prompt::strip_markers(&self.raw[..upto], self.passages);
        self.advance(clean.trim())
    }

    /// Ends the text; returns the rest to show.
    pub(crate) fn finish(&mut self) -> Option<String> {
        let clean = prompt::strip_markers(&self.raw, self.passages);
        self.advance(clean.trim())
    }

    /// The text emitted so far: after [`TextFilter::finish`], the answer's text.
    pub(crate) fn text(&self) -> &str {
        &self.emitted
    }

    fn advance(&mut self, visible: &str) -> Option<String> {
        match visible.strip_prefix(self.emitted.as_str()) {
            Some(new) if !new.is_empty() => {
                let new = new.to_owned();
                self.emitted.push_str(&new);
                Some(new)
            }
            Some(_) => None,
            None => {
                // Cannot happen for a stable prefix; never take shown text back.
                tracing::debug!("streamed text diverged from its cleaning");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn run(pieces: &[&str], passages: usize) -> (Vec<String>, String) {
        let mut f = TextFilter::new(passages);
        let mut out: Vec<String> = pieces.iter().filter_map(|p| f.push(p)).collect();
        out.extend(f.finish());
        (out, f.text().to_owned())
    }

    #[test]
    fn markers_split_across_pieces_are_held_back_then_kept_or_dropped() {
        let (out, text) = run(&[" From", " [", "1", "] and [", "7", "] we", " know. "], 3);
        assert_eq!(text, "From [1] and  we know.");
        assert_eq!(out.concat(), text);
        assert!(!out.iter().any(|p| p.contains("[7")), "{out:?}");
    }

    proptest! {
        /// However the text is cut into pieces, the pieces shown concatenate to
        /// the final text, which is the whole text cleaned at once.
        #[test]
        fn pieces_concatenate_to_the_cleaned_whole(
            parts in proptest::collection::vec("[ a\\[\\]0-9\\n]{0,6}", 0..24),
            passages in 0usize..4,
        ) {
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            let (out, text) = run(&refs, passages);
            let whole = prompt::strip_markers(&parts.concat(), passages);
            prop_assert_eq!(out.concat(), text.clone());
            prop_assert_eq!(text.as_str(), whole.trim());
        }
    }
}
