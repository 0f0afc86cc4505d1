//! A test collection in the BEIR layout: `corpus.jsonl` (`_id`, `title`, `text`),
//! `queries.jsonl` (`_id`, `text`) and `qrels/<split>.tsv` (`query-id`, `corpus-id`,
//! `score`, with a header line).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// One document of the corpus.
#[derive(Debug, Clone, Deserialize)]
pub struct CorpusDoc {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub text: String,
}

impl CorpusDoc {
    /// The text indexed for the document: title, a space, then the text.
    pub fn full_text(&self) -> String {
        match (self.title.trim().is_empty(), self.text.trim().is_empty()) {
            (true, _) => self.text.clone(),
            (false, true) => self.title.clone(),
            (false, false) => format!("{} {}", self.title, self.text),
        }
    }
}

#[derive(Deserialize)]
struct QueryLine {
    #[serde(rename = "_id")]
    id: String,
    text: String,
}

/// Graded judgments: query id → document id → grade.
pub type Qrels = BTreeMap<String, HashMap<String, u32>>;

/// A loaded collection.
#[derive(Debug)]
pub struct Collection {
    pub name: String,
    pub corpus: Vec<CorpusDoc>,
    /// Judged queries only, in id order: (id, text).
    pub queries: Vec<(String, String)>,
    pub qrels: Qrels,
}

fn lines(path: &Path) -> Result<impl Iterator<Item = (usize, std::io::Result<String>)>> {
    let file = fs_err::File::open(path)?;
    Ok(BufReader::new(file).lines().enumerate())
}

/// One JSON value per non-blank line.
fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for (n, line) in lines(path)? {
        let line = line.with_context(|| format!("{}:{}", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line).with_context(|| format!("{}:{}", path.display(), n + 1))?,
        );
    }
    Ok(out)
}

/// Reads the collection in `dir` with the judgments of `split` (e.g. `test`).
pub fn load(dir: &Path, split: &str) -> Result<Collection> {
    let corpus: Vec<CorpusDoc> = read_jsonl(&dir.join("corpus.jsonl"))?;
    let path = dir.join("qrels").join(format!("{split}.tsv"));
    let mut qrels = Qrels::new();
    for (n, line) in lines(&path)? {
        let line = line.with_context(|| format!("{}:{}", path.display(), n + 1))?;
        let cols: Vec<&str> = line.split('\t').collect();
        if n == 0 && cols.first().is_some_and(|c| c.starts_with("query")) {
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let [q, d, g] = cols[..] else {
            bail!(
                "{}:{}: expected 3 tab-separated columns",
                path.display(),
                n + 1
            );
        };
        let grade: i64 = g
            .trim()
            .parse()
            .with_context(|| format!("{}:{}: grade {g:?}", path.display(), n + 1))?;
        qrels
            .entry(q.to_owned())
            .or_default()
            .insert(d.to_owned(), grade.max(0) as u32);
    }
    let texts: HashMap<String, String> = read_jsonl::<QueryLine>(&dir.join("queries.jsonl"))?
        .into_iter()
        .map(|q| (q.id, q.text))
        .collect();
    let mut queries = Vec::new();
    for id in qrels.keys() {
        let text = texts
            .get(id)
            .with_context(|| format!("judged query {id} is not in queries.jsonl"))?;
        queries.push((id.clone(), text.clone()));
    }
    let name = dir
        .file_name()
        .map_or_else(|| "collection".into(), |n| n.to_string_lossy().into_owned());
    Ok(Collection {
        name,
        corpus,
        queries,
        qrels,
    })
}
