//! Recursive text splitting under a token budget, with overlap and exact byte spans.
//!
//! The text is cut into pieces at the coarsest boundary that makes each piece fit
//! the budget: paragraphs (blank lines), then lines, then sentences, then words, then
//! characters. Consecutive pieces are then packed into chunks of at most
//! `max_tokens`, each new chunk starting with up to `overlap_tokens` of the previous
//! one's tail. Every chunk is a trimmed byte span of the source, so a citation points
//! at exactly the text the chunk holds; offsets always fall on UTF-8 boundaries.

use std::ops::Range;
use std::sync::Arc;

use rag_core::ChunkId;
use rag_core::{Chunk, Document, Span};
use rag_core::{Chunker, TokenCounter};
use rag_core::{InvalidInput, Result};

/// Splits documents recursively under a token budget; see the [module](self) docs.
#[derive(Clone)]
pub struct RecursiveChunker {
    max_tokens: usize,
    overlap_tokens: usize,
    counter: Arc<dyn TokenCounter>,
}

impl std::fmt::Debug for RecursiveChunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecursiveChunker")
            .field("max_tokens", &self.max_tokens)
            .field("overlap_tokens", &self.overlap_tokens)
            .finish_non_exhaustive()
    }
}

/// Ranges longer than this many bytes per budget token are split before counting.
const COUNT_LIMIT_BYTES_PER_TOKEN: usize = 64;

/// Characters per piece when a single word is over the budget (a WordPiece token
/// covers at least one character, so this many characters fit any budget ≥ this).
const MIN_CUT_CHARS: usize = 16;

impl RecursiveChunker {
    /// Chunks of at most `max_tokens` tokens as `counter` counts them, overlapping by
    /// up to `overlap_tokens`; the overlap must be less than half the budget.
    pub fn new(
        max_tokens: usize,
        overlap_tokens: usize,
        counter: Arc<dyn TokenCounter>,
    ) -> Result<Self> {
        if max_tokens == 0 || overlap_tokens * 2 >= max_tokens {
            return Err(InvalidInput::Config {
                reason: format!(
                    "chunk budget {max_tokens} tokens with overlap {overlap_tokens}: \
                     the budget must be positive and more than twice the overlap"
                ),
            }
            .into());
        }
        Ok(Self {
            max_tokens,
            overlap_tokens,
            counter,
        })
    }

    /// The token budget per chunk.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Byte ranges of the chunks of `text`, in order.
    pub fn split(&self, text: &str) -> Result<Vec<Range<usize>>> {
        if text.len() <= self.max_tokens {
            // At most one token per byte: the whole text fits without tokenizing.
            let r = trimmed(text, 0..text.len());
            return Ok(if r.is_empty() { Vec::new() } else { vec![r] });
        }
        let mut pieces = Vec::new();
        self.pieces(text, 0..text.len(), 0, &mut pieces)?;
        Ok(self.pack(text, &pieces))
    }

    /// Appends the pieces of `text[range]` that fit the budget, with their token counts.
    fn pieces(
        &self,
        text: &str,
        range: Range<usize>,
        level: usize,
        out: &mut Vec<(Range<usize>, usize)>,
    ) -> Result<()> {
        // A range far over any budget is split without being counted, so a huge
        // document is never tokenized whole (bounded memory).
        let tokens = if range.len() > self.max_tokens.saturating_mul(COUNT_LIMIT_BYTES_PER_TOKEN) {
            usize::MAX
        } else {
            self.counter.count(&text[range.clone()])?
        };
        if tokens <= self.max_tokens {
            if !text[range.clone()].trim().is_empty() {
                out.push((range, tokens));
            }
            return Ok(());
        }
        let parts = match level {
            0 => split_after(text, range.clone(), |s, i| s[i..].starts_with("\n\n")),
            1 => split_after(text, range.clone(), |s, i| s.as_bytes()[i] == b'\n'),
            2 => split_after(text, range.clone(), sentence_end),
            3 => split_after(text, range.clone(), |s, i| {
                s[i..].chars().next().is_some_and(char::is_whitespace)
            }),
            _ => {
                return self.cut_chars(text, range, out);
            }
        };
        if parts.len() == 1 {
            return self.pieces(text, range, level + 1, out);
        }
        for part in parts {
            self.pieces(text, part, level + 1, out)?;
        }
        Ok(())
    }

    /// Cuts a run without boundaries into pieces of fixed character counts, halving
    /// the count until each piece fits.
    fn cut_chars(
        &self,
        text: &str,
        range: Range<usize>,
        out: &mut Vec<(Range<usize>, usize)>,
    ) -> Result<()> {
        let mut per = (self.max_tokens * 4).max(MIN_CUT_CHARS);
        let mut start = range.start;
        while start < range.end {
            let mut end = start;
            for (n, (i, c)) in text[start..range.end].char_indices().enumerate() {
                if n == per {
                    break;
                }
                end = start + i + c.len_utf8();
            }
            let tokens = self.counter.count(&text[start..end])?;
            if tokens > self.max_tokens && per > 1 {
                per /= 2;
                continue;
            }
            if !text[start..end].trim().is_empty() {
                out.push((start..end, tokens));
            }
            start = end;
        }
        Ok(())
    }

    /// Packs consecutive pieces into chunks, each after the first starting with the
    /// tail of its predecessor up to the overlap budget.
    fn pack(&self, text: &str, pieces: &[(Range<usize>, usize)]) -> Vec<Range<usize>> {
        let mut chunks = Vec::new();
        let mut start = 0;
        while start < pieces.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < pieces.len() && (end == start || tokens + pieces[end].1 <= self.max_tokens)
            {
                tokens += pieces[end].1;
                end += 1;
            }
            let span = trimmed(text, pieces[start].0.start..pieces[end - 1].0.end);
            if !span.is_empty() {
                chunks.push(span);
            }
            if end == pieces.len() {
                break;
            }
            // Step back over whole pieces while they fit the overlap, always moving on.
            let mut next = end;
            let mut carried = 0;
            while next > start + 1 && carried + pieces[next - 1].1 <= self.overlap_tokens {
                carried += pieces[next - 1].1;
                next -= 1;
            }
            start = next;
        }
        chunks
    }
}

impl Chunker for RecursiveChunker {
    fn max_tokens(&self) -> Option<usize> {
        Some(self.max_tokens)
    }

    fn chunk(&self, doc: &Document) -> Result<Vec<Chunk>> {
        let key = doc.key();
        Ok(self
            .split(&doc.text)?
            .into_iter()
            .enumerate()
            .map(|(i, r)| Chunk {
                id: ChunkId::derive(&key, i as u32),
                ordinal: i as u32,
                span: Span::new(r.start, r.end),
                text: doc.text[r].to_owned(),
                context: None,
            })
            .collect())
    }
}

/// Markdown-aware splitting: each chunk stays under one heading, carries the path of
/// headings above it (`Guide > Install`) as its [`Chunk::context`], and a fenced code
/// block is never split unless it alone is over the budget (then it is cut between
/// lines). Prose between headings and code is split like [`RecursiveChunker`].
#[derive(Debug, Clone)]
pub struct MarkdownChunker {
    inner: RecursiveChunker,
}

impl MarkdownChunker {
    /// A markdown chunker with the budget and overlap of `inner`.
    pub fn new(inner: RecursiveChunker) -> Self {
        Self { inner }
    }

    /// Chunk spans of `text`, each with its heading path.
    pub fn split(&self, text: &str) -> Result<Vec<(Range<usize>, String)>> {
        let mut out = Vec::new();
        for (section, path) in sections(text) {
            let mut pieces = Vec::new();
            for (block, code) in blocks(text, section) {
                if code {
                    let tokens = self.inner.counter.count(&text[block.clone()])?;
                    if tokens <= self.inner.max_tokens {
                        pieces.push((block, tokens));
                    } else {
                        self.inner.pieces(text, block, 1, &mut pieces)?;
                    }
                } else {
                    self.inner.pieces(text, block, 0, &mut pieces)?;
                }
            }
            out.extend(
                self.inner
                    .pack(text, &pieces)
                    .into_iter()
                    .map(|r| (r, path.clone())),
            );
        }
        Ok(out)
    }
}

impl Chunker for MarkdownChunker {
    fn max_tokens(&self) -> Option<usize> {
        Some(self.inner.max_tokens)
    }

    fn chunk(&self, doc: &Document) -> Result<Vec<Chunk>> {
        let key = doc.key();
        Ok(self
            .split(&doc.text)?
            .into_iter()
            .enumerate()
            .map(|(i, (r, path))| Chunk {
                id: ChunkId::derive(&key, i as u32),
                ordinal: i as u32,
                span: Span::new(r.start, r.end),
                text: doc.text[r].to_owned(),
                context: (!path.is_empty()).then_some(path),
            })
            .collect())
    }
}

/// Byte ranges of the lines of `text`, each with its newline.
fn lines(text: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut start = 0;
    text.split_inclusive('\n').map(move |l| {
        let r = start..start + l.len();
        start = r.end;
        r
    })
}

fn is_fence(line: &str) -> bool {
    let t = line.trim_start_matches(' ');
    line.len() - t.len() <= 3 && (t.starts_with("```") || t.starts_with("~~~"))
}

/// A heading line's level and title.
fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.bytes().take_while(|b| *b == b'#').count();
    let rest = &line[level..];
    ((1..=6).contains(&level) && (rest.starts_with(' ') || rest.trim().is_empty()))
        .then(|| (level, rest.trim()))
}

/// Sections between headings (outside code fences), each with its heading path.
fn sections(text: &str) -> Vec<(Range<usize>, String)> {
    let mut out = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut start = 0;
    let mut path = String::new();
    let mut fenced = false;
    for line in lines(text) {
        let l = &text[line.clone()];
        if is_fence(l) {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        if let Some((level, title)) = heading(l) {
            if line.start > start {
                out.push((start..line.start, path.clone()));
            }
            start = line.start;
            stack.retain(|(lv, _)| *lv < level);
            stack.push((level, title.to_owned()));
            path = stack
                .iter()
                .map(|(_, t)| t.as_str())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join(" > ");
        }
    }
    if start < text.len() {
        out.push((start..text.len(), path));
    }
    out
}

/// Prose runs and fenced code blocks (fences included) of a section.
fn blocks(text: &str, section: Range<usize>) -> Vec<(Range<usize>, bool)> {
    let mut out = Vec::new();
    let mut start = section.start;
    let mut fence_start: Option<usize> = None;
    for line in lines(&text[..section.end]).filter(|l| l.start >= section.start) {
        if !is_fence(&text[line.clone()]) {
            continue;
        }
        match fence_start {
            None => {
                if line.start > start {
                    out.push((start..line.start, false));
                }
                fence_start = Some(line.start);
            }
            Some(f) => {
                out.push((f..line.end, true));
                fence_start = None;
                start = line.end;
            }
        }
    }
    // An unclosed fence runs to the end of the section.
    let tail = fence_start.unwrap_or(start);
    if tail < section.end {
        out.push((tail..section.end, fence_start.is_some()));
    }
    out
}

/// Splits `range` into parts that end just after each position where `is_cut`
/// holds (the separator stays with the part before it).
fn split_after(
    text: &str,
    range: Range<usize>,
    is_cut: impl Fn(&str, usize) -> bool,
) -> Vec<Range<usize>> {
    let mut parts = Vec::new();
    let mut start = range.start;
    let bytes = text.as_bytes();
    let mut i = range.start;
    while i < range.end {
        if text.is_char_boundary(i) && is_cut(&text[..range.end], i) {
            // Take the whole run of whitespace after the cut with this part.
            let mut end = i + 1;
            while end < range.end && bytes[end].is_ascii_whitespace() {
                end += 1;
            }
            while !text.is_char_boundary(end) {
                end += 1;
            }
            parts.push(start..end);
            start = end;
            i = end;
        } else {
            i += 1;
        }
    }
    if start < range.end {
        parts.push(start..range.end);
    }
    parts
}

/// A sentence ends at `.`, `!` or `?` followed by whitespace.
fn sentence_end(s: &str, i: usize) -> bool {
    let b = s.as_bytes();
    matches!(b[i], b'.' | b'!' | b'?') && b.get(i + 1).is_some_and(|c| c.is_ascii_whitespace())
}

/// `range` without leading and trailing whitespace.
fn trimmed(text: &str, range: Range<usize>) -> Range<usize> {
    let s = &text[range.clone()];
    let start = range.start + (s.len() - s.trim_start().len());
    let end = range.end - (s.len() - s.trim_end().len());
    start..end.max(start)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use rag_core::{DocId, WordCounter};

    fn words(max: usize, overlap: usize) -> RecursiveChunker {
        RecursiveChunker::new(max, overlap, Arc::new(WordCounter)).unwrap()
    }

    fn doc(text: &str) -> Document {
        Document {
            tenant: "t".into(),
            id: DocId::new("d"),
            version: 1,
            text: text.to_owned(),
            metadata: Default::default(),
            acl: None,
        }
    }

    #[test]
    fn prefers_paragraphs_then_sentences() {
        let text = "One two three.\n\nFour five six. Seven eight nine ten eleven.";
        let c = words(5, 0).chunk(&doc(text)).unwrap();
        let texts: Vec<&str> = c.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "One two three.",
                "Four five six.",
                "Seven eight nine ten eleven."
            ]
        );
        for c in &c {
            assert_eq!(&text[c.span.start..c.span.end], c.text);
        }
    }

    #[test]
    fn overlap_repeats_the_tail() {
        let text = "a b. c d. e f. g h.";
        let spans = words(5, 2).split(text).unwrap();
        let texts: Vec<&str> = spans.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(texts, vec!["a b. c d.", "c d. e f.", "e f. g h."]);
    }

    #[test]
    fn a_word_over_the_budget_is_cut_on_char_boundaries() {
        let text = "é".repeat(100);
        let counter = |s: &str| s.chars().count();
        struct Chars<F>(F);
        impl<F: Fn(&str) -> usize + Send + Sync> TokenCounter for Chars<F> {
            fn count(&self, text: &str) -> Result<usize> {
                Ok((self.0)(text))
            }
        }
        let c = RecursiveChunker::new(10, 0, Arc::new(Chars(counter))).unwrap();
        let spans = c.split(&text).unwrap();
        assert_eq!(spans.len(), 10);
        assert!(spans.iter().all(|r| text[r.clone()].chars().count() == 10));
    }

    #[test]
    fn a_huge_document_is_never_counted_whole() {
        struct Bounded(usize);
        impl TokenCounter for Bounded {
            fn count(&self, text: &str) -> Result<usize> {
                assert!(text.len() <= self.0, "counted {} bytes at once", text.len());
                Ok(text.split_whitespace().count())
            }
        }
        let text = "word and more words. ".repeat(200_000); // 4.2 MB
        let c = RecursiveChunker::new(100, 10, Arc::new(Bounded(100 * 64))).unwrap();
        let spans = c.split(&text).unwrap();
        assert!(spans.len() > 7_000);
        assert!(
            spans
                .iter()
                .all(|r| text[r.clone()].split_whitespace().count() <= 100)
        );
    }

    #[test]
    fn rejects_bad_budgets_and_skips_blank_text() {
        assert!(RecursiveChunker::new(0, 0, Arc::new(WordCounter)).is_err());
        assert!(RecursiveChunker::new(4, 2, Arc::new(WordCounter)).is_err());
        assert!(words(4, 0).split(" \n\n \t").unwrap().is_empty());
    }

    #[test]
    fn markdown_keeps_heading_paths_and_code_blocks_whole() {
        let text = "# Guide\n\nIntro words here.\n\n## Install\n\nRun the tool now.\n\n```sh\ncargo build --release\ncargo test\n```\n\nAfter code text.\n\n# Other\n\nLast part.\n";
        let c = MarkdownChunker::new(words(8, 0));
        let chunks = c.chunk(&doc(text)).unwrap();
        let got: Vec<(&str, Option<&str>)> = chunks
            .iter()
            .map(|c| (c.text.as_str(), c.context.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("# Guide\n\nIntro words here.", Some("Guide")),
                ("## Install\n\nRun the tool now.", Some("Guide > Install")),
                (
                    "```sh\ncargo build --release\ncargo test\n```",
                    Some("Guide > Install")
                ),
                ("After code text.", Some("Guide > Install")),
                ("# Other\n\nLast part.", Some("Other")),
            ]
        );
        for ch in &chunks {
            assert_eq!(&text[ch.span.start..ch.span.end], ch.text);
        }
        assert!(
            chunks[2]
                .embedding_text()
                .starts_with("Guide > Install\n\n```sh")
        );
        // A '#' inside a code block is not a heading.
        let code = "# A\n```\n# not a heading\n```\n";
        let c = MarkdownChunker::new(words(20, 0));
        let chunks = c.chunk(&doc(code)).unwrap();
        assert!(chunks.iter().all(|c| c.context.as_deref() == Some("A")));
    }

    proptest! {
        #[test]
        fn spans_are_in_order_fit_and_cover_every_word(
            text in "[a-zé. \n]{0,300}",
            max in 2usize..12,
            overlap in 0usize..3,
        ) {
            prop_assume!(overlap * 2 < max);
            let spans = words(max, overlap).split(&text).unwrap();
            let mut covered = vec![false; text.len()];
            let mut last_start = None;
            for r in &spans {
                let s = &text[r.clone()];
                prop_assert!(!s.trim().is_empty());
                prop_assert_eq!(s.trim(), s);
                prop_assert!(s.split_whitespace().count() <= max, "{:?}", s);
                prop_assert!(last_start.is_none_or(|l| r.start > l));
                last_start = Some(r.start);
                for c in covered.iter_mut().take(r.end).skip(r.start) {
                    *c = true;
                }
            }
            for (i, ch) in text.char_indices() {
                if !ch.is_whitespace() {
                    prop_assert!(covered[i], "byte {} of {:?} is in no chunk", i, text);
                }
            }
        }
    }
}
