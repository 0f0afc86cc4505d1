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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn collection(corpus: &str, queries: &str, qrels: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(dir.path().join("corpus.jsonl"), corpus).unwrap();
        fs_err::write(dir.path().join("queries.jsonl"), queries).unwrap();
        fs_err::create_dir(dir.path().join("qrels")).unwrap();
        fs_err::write(dir.path().join("qrels/test.tsv"), qrels).unwrap();
        dir
    }

    const CORPUS: &str = "{\"_id\": \"d1\", \"title\": \"T\", \"text\": \"x\"}\n";
    const QUERIES: &str = "{\"_id\": \"q1\", \"text\": \"x?\"}\n";

    #[test]
    fn loads_a_well_formed_collection() {
        let dir = collection(CORPUS, QUERIES, "query-id\tcorpus-id\tscore\nq1\td1\t2\n");
        let c = load(dir.path(), "test").unwrap();
        assert_eq!(c.corpus[0].full_text(), "T x");
        assert_eq!(c.queries, vec![("q1".to_owned(), "x?".to_owned())]);
        assert_eq!(c.qrels["q1"]["d1"], 2);
    }

    #[test]
    fn malformed_files_are_errors_naming_the_line() {
        let bad_json = collection("{\"_id\": \"d1\"}\nnot json\n", QUERIES, "q1\td1\t1\n");
        let e = load(bad_json.path(), "test").unwrap_err();
        assert!(format!("{e:#}").contains("corpus.jsonl:2"), "{e:#}");
        let bad_qrels = collection(CORPUS, QUERIES, "query-id\tcorpus-id\tscore\nq1\td1\n");
        let e = load(bad_qrels.path(), "test").unwrap_err();
        assert!(format!("{e:#}").contains("test.tsv:2"), "{e:#}");
        let bad_grade = collection(CORPUS, QUERIES, "q1\td1\thigh\n");
        assert!(load(bad_grade.path(), "test").is_err());
        let unknown_query = collection(CORPUS, QUERIES, "q9\td1\t1\n");
        let e = load(unknown_query.path(), "test").unwrap_err();
        assert!(format!("{e:#}").contains("q9"), "{e:#}");
        assert!(load(Path::new("/nonexistent/collection"), "test").is_err());
    }
}
