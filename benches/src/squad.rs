//! The official SQuAD v1.1 answer metrics (exact match and token F1), as the
//! dataset's README defines them, and the dataset's files.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

/// `normalize(s)`: lower-case, drop ASCII punctuation, drop the words `a`, `an`,
/// `the`, collapse whitespace (Python's `str.split()` whitespace).
pub fn normalize(s: &str) -> String {
    let lowered: String = s
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    // Replace the whole words a/an/the by a space; a word character is `_` or
    // alphanumeric, as in Python's Unicode `\b`.
    let word = |c: char| c == '_' || c.is_alphanumeric();
    let mut out = String::with_capacity(lowered.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if matches!(run.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in lowered.chars() {
        if word(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    tokens(&out).join(" ")
}

fn tokens(s: &str) -> Vec<&str> {
    s.split(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
        .filter(|t| !t.is_empty())
        .collect()
}

/// Exact match of one prediction against one gold answer.
pub fn exact(prediction: &str, gold: &str) -> f64 {
    f64::from(u8::from(normalize(prediction) == normalize(gold)))
}

/// Token F1 of one prediction against one gold answer.
pub fn f1(prediction: &str, gold: &str) -> f64 {
    let (p, g) = (normalize(prediction), normalize(gold));
    let (p, g) = (tokens(&p), tokens(&g));
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for t in &g {
        *counts.entry(t).or_default() += 1;
    }
    let mut same = 0i64;
    for t in &p {
        if let Some(c) = counts.get_mut(t)
            && *c > 0
        {
            *c -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / p.len() as f64;
    let recall = same as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// The best (EM, F1) of a prediction over all gold answers.
pub fn score(prediction: &str, golds: &[String]) -> (f64, f64) {
    golds.iter().fold((0.0, 0.0), |(em, f), g| {
        (em.max(exact(prediction, g)), f.max(f1(prediction, g)))
    })
}

/// One paragraph of the corpus.
#[derive(Debug, Clone, Deserialize)]
pub struct Paragraph {
    /// `<title>#<i>`.
    #[serde(rename = "_id")]
    pub id: String,
    /// The article's title.
    pub title: String,
    /// The paragraph.
    pub text: String,
}

/// One question.
#[derive(Debug, Clone, Deserialize)]
pub struct Question {
    /// The SQuAD id.
    #[serde(rename = "_id")]
    pub id: String,
    /// The question, verbatim.
    pub question: String,
    /// The gold answers.
    pub answers: Vec<String>,
    /// The gold paragraph's `_id`.
    pub paragraph_id: String,
}

fn jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    fs_err::read_to_string(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{} line {}", path.display(), i + 1))
        })
        .collect()
}

/// The corpus and questions of a SQuAD-layout dataset directory.
pub fn load(dir: &Path) -> Result<(Vec<Paragraph>, Vec<Question>)> {
    Ok((
        jsonl(&dir.join("corpus.jsonl"))?,
        jsonl(&dir.join("questions.jsonl"))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-4
    }

    /// The test vectors of the dataset's README.
    #[test]
    fn the_readme_test_vectors() {
        let s =
            |p: &str, g: &[&str]| score(p, &g.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>());
        assert_eq!(s("the Denver Broncos.", &["Denver Broncos"]), (1.0, 1.0));
        let (em, f) = s("Denver", &["Denver Broncos"]);
        assert!(em == 0.0 && close(f, 0.6667));
        assert_eq!(s("x y y z", &["y y y w"]), (0.0, 0.5));
        assert_eq!(s("24-10", &["24\u{2013}10"]), (0.0, 0.0));
        assert_eq!(s("the", &["."]), (1.0, 0.0));
        let (em, f) = s(
            "Santa Clara",
            &["Santa Clara, California", "Levi's Stadium"],
        );
        assert!(em == 0.0 && close(f, 0.8));
        assert_eq!(normalize("a-b"), "ab");
        assert_eq!(normalize("New\u{a0}York\u{2009}City"), "new york city");
        assert_eq!(normalize("theater a\u{e9}"), "theater a\u{e9}");
    }
}
