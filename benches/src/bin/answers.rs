//! Answer-quality report on a SQuAD-layout dataset: its paragraphs are ingested
//! through the public pipeline (MiniLM, the HNSW index), a fixed, seeded sample of
//! its questions is asked of each system, and the answers are scored with the
//! official SQuAD v1.1 exact match and token F1, side by side in one run.
//!
//! `cargo run --release -p rag-benches --bin answers -- --dataset ../shared/datasets/squad-dev-open
//!  --json PATH [--limit N] [--unanswerable N] [--systems a,b,c] [--seed S]`
//!
//! Systems: `smollm2-plain` (SmolLM2-135M decoded without loop controls and without
//! abstention, as before issue 11), `smollm2` (the default decoding: repetition
//! penalty, no repeated token 4-gram, loop cut; the grounded prompt; abstention),
//! `smollm2-brief` (the same with a system prompt asking for a few words copied from
//! the passages), `qwen` and `qwen-brief` (the same two on Qwen2.5-Coder-0.5B,
//! fetched with `tools/assets.py fetch --generator qwen`) and `extractive` (the
//! sentence of the top passage sharing the most words with the question).
//!
//! Per system: `exact_match` and `f1` (0–100, the dataset's definition);
//! `gold_recall_at_k` (the gold paragraph among the passages the answer was made
//! from); `citation_precision` (cited passages that are the gold paragraph or contain
//! a gold answer); `repeated_4gram_rate` (answers in which a word 4-gram occurs more
//! than twice); `abstain_answerable` and `abstain_unanswerable` (answers that decline,
//! on the sample and on the first `--unanswerable` questions asked again after every
//! paragraph of their article was deleted); `ttft_ms_p50` and `decode_tokens_per_s`.
#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Parser;
use rag_benches::recording::Recording;
use rag_benches::squad::{self, Paragraph, Question};
use rag_benches::timing::median;
use rag_core::{
    Acl, DocId, DocKey, Document, Embedder, EmbedderTokens, Generator, Metadata, Principal,
    SamplingParams, VectorIndex,
};
use rag_index::{HnswIndex, IndexConfig};
use rag_infer::{EmbedderConfig, LocalGenerator, OnnxEmbedder, OnnxGenerator, assets};
use rag_pipeline::RecursiveChunker;
use rag_pipeline::{Pipeline, PipelineConfig, QueryOptions};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

/// Answer quality on a SQuAD-layout dataset.
#[derive(Debug, Parser)]
struct Cli {
    /// The dataset directory (corpus.jsonl, questions.jsonl).
    #[arg(long, default_value = "../shared/datasets/squad-dev-open")]
    dataset: PathBuf,
    /// Questions asked (a seeded sample).
    #[arg(long, default_value_t = 300)]
    limit: usize,
    /// Of those, how many are asked again with their article removed.
    #[arg(long, default_value_t = 100)]
    unanswerable: usize,
    /// Systems to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "extractive,smollm2-plain,smollm2"
    )]
    systems: Vec<String>,
    /// Sample seed.
    #[arg(long, default_value_t = 11)]
    seed: u64,
    /// Chunks retrieved per question.
    #[arg(long, default_value_t = 4)]
    top_k: usize,
    /// Abstain below this dense top score (cosine), in every system but
    /// `smollm2-plain`; defaults to MiniLM's calibrated floor.
    #[arg(long, default_value_t = EmbedderConfig::MINILM_DENSE_FLOOR)]
    abstain_dense: f32,
    /// Most tokens of passages in each prompt (prefill time grows with it: the
    /// budget that keeps the slowest generator, Qwen2.5-Coder, within 30 minutes for
    /// 300 questions on 2 cores).
    #[arg(long, default_value_t = 256)]
    context_tokens: usize,
    /// Where to write the JSON report.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where to write every answer, one JSON line each (system, question, gold
    /// answers, answer text, cited passages and whether each is good), to read
    /// what the systems said.
    #[arg(long)]
    answers: Option<PathBuf>,
}

/// One answer, as `--answers` writes it.
#[derive(Debug, Serialize)]
struct AnswerLine<'a> {
    system: &'a str,
    question: &'a str,
    gold: &'a [String],
    gold_paragraph: &'a str,
    answer: &'a str,
    f1: f64,
    cited: Vec<(&'a str, bool)>,
    abstained: bool,
}

#[derive(Debug, Default, Serialize)]
struct SystemReport {
    system: String,
    questions: usize,
    exact_match: f64,
    f1: f64,
    gold_recall_at_k: f64,
    citation_precision: f64,
    repeated_4gram_rate: f64,
    abstain_answerable: f64,
    abstain_unanswerable: f64,
    unanswerable_questions: usize,
    ttft_ms_p50: f64,
    decode_tokens_per_s: f64,
    seconds: f64,
}

/// A system prompt asking for the shortest answer.
const BRIEF: &str = "Answer with a few words copied from the numbered passages, then the \
                     passage number like [1]. If the passages do not contain the answer, \
                     say that you do not know.";

const STOPWORDS: &[&str] = &[
    "the", "a", "an", "of", "in", "on", "at", "to", "is", "was", "were", "are", "what", "which",
    "who", "whom", "when", "where", "why", "how", "did", "do", "does", "for", "by", "with", "and",
    "or", "as", "that", "this", "from", "be", "it", "its", "his", "her", "their",
];

fn content_words(s: &str) -> Vec<String> {
    squad::normalize(s)
        .split(' ')
        .filter(|w| !w.is_empty() && !STOPWORDS.contains(w))
        .map(str::to_owned)
        .collect()
}

/// The sentence of `passage` sharing the most content words with `question`.
fn best_sentence(passage: &str, question: &str) -> String {
    let q = content_words(question);
    let mut best = (0usize, passage.trim());
    let mut start = 0;
    let bytes = passage.as_bytes();
    let mut sentences = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        let end = matches!(b, b'.' | b'!' | b'?')
            && bytes.get(i + 1).is_none_or(|n| n.is_ascii_whitespace());
        if end {
            sentences.push(&passage[start..=i]);
            start = i + 1;
        }
    }
    if start < passage.len() {
        sentences.push(&passage[start..]);
    }
    for s in sentences {
        let words = content_words(s);
        let overlap = q.iter().filter(|w| words.contains(w)).count();
        if overlap > best.0 {
            best = (overlap, s.trim());
        }
    }
    best.1.to_owned()
}

/// Whether an answer declines to answer.
fn abstains(text: &str, served: usize) -> bool {
    let t = text.to_lowercase();
    served == 0
        || [
            "do not know",
            "don't know",
            "do not contain",
            "does not contain",
            "doesn't contain",
            "not mentioned",
            "no documents you have access to",
            "cannot answer",
            "can't answer",
        ]
        .iter()
        .any(|p| t.contains(p))
}

struct Outcome {
    text: String,
    served: Vec<String>,
    cited: Vec<String>,
    top_score: Option<f32>,
    abstained: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let (paragraphs, questions) = squad::load(&cli.dataset)?;
    let by_id: HashMap<&str, &Paragraph> = paragraphs.iter().map(|p| (p.id.as_str(), p)).collect();

    rag_infer::load_runtime(&assets::runtime_library())?;
    let embedder = Arc::new(OnnxEmbedder::new(EmbedderConfig::pinned_minilm())?);
    let dyn_embedder: Arc<dyn Embedder> = embedder.clone();
    let index: Arc<dyn VectorIndex> = Arc::new(HnswIndex::new(
        embedder.fingerprint().clone(),
        IndexConfig::default(),
    )?);
    // Each generator loaded once, and only when a system asks for it.
    let mut generators: BTreeMap<&str, Arc<dyn Generator>> = BTreeMap::new();
    for name in &cli.systems {
        // `smollm2-plain` and `qwen-brief` run on `smollm2` and `qwen`;
        // `extractive` on none.
        let base = name.split('-').next().unwrap_or_default();
        let Ok(local) = LocalGenerator::from_name(base) else {
            continue;
        };
        if !generators.contains_key(local.name()) {
            generators.insert(local.name(), Arc::new(OnnxGenerator::new(local.config())?));
        }
    }
    let generator = |name: &str| -> Result<Arc<dyn Generator>> {
        generators
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("generator {name} not loaded"))
    };
    let build = |generated: Option<(Arc<dyn Generator>, SamplingParams)>,
                 system_prompt: Option<&str>,
                 abstain: bool|
     -> Result<(Pipeline, Option<Arc<Recording>>)> {
        let mut b = Pipeline::builder()
            .chunker(Arc::new(RecursiveChunker::new(
                200,
                16,
                Arc::new(EmbedderTokens(dyn_embedder.clone())),
            )?))
            .embedder(dyn_embedder.clone())
            .index(index.clone())
            .access(Arc::new(rag_acl::Directory::new(
                rag_acl::Registration::TrustClaims,
            )));
        let mut config = PipelineConfig {
            top_k: cli.top_k,
            max_answer_tokens: 64,
            context_tokens: Some(cli.context_tokens),
            latency_budget: std::time::Duration::from_secs(600),
            abstention: rag_pipeline::Abstention {
                dense: Some(cli.abstain_dense).filter(|_| abstain),
                ..rag_pipeline::Abstention::NEVER
            },
            ..PipelineConfig::default()
        };
        if let Some(p) = system_prompt {
            config.system_prompt = p.to_owned();
        }
        let mut timed = None;
        if let Some((generator, s)) = generated {
            config.sampling = s;
            let g = Arc::new(Recording::new(generator));
            b = b.generator(g.clone());
            timed = Some(g);
        }
        Ok((b.config(config).build()?, timed))
    };
    let doc = |p: &Paragraph| Document {
        tenant: "squad".into(),
        id: DocId::new(p.id.as_str()),
        version: 1,
        text: p.text.clone(),
        metadata: Metadata::default()
            .with_title(p.title.as_str())
            .with_source(p.title.as_str()),
        acl: Some(Acl::new("squad").allow_group("readers")),
    };
    let (ingest, _) = build(None, None, false)?;
    let t = Instant::now();
    for batch in paragraphs.chunks(64) {
        ingest.ingest(batch.iter().map(doc).collect())?;
    }
    eprintln!(
        "{} paragraphs in {} chunks, ingested in {:.0} s",
        paragraphs.len(),
        index.stats().chunks,
        t.elapsed().as_secs_f64()
    );

    let mut sample: Vec<&Question> = questions.iter().collect();
    sample.shuffle(&mut StdRng::seed_from_u64(cli.seed));
    sample.truncate(cli.limit);
    // Grouped by article, so that each article is removed once for its
    // unanswerable questions.
    sample.sort_by(|a, b| a.paragraph_id.cmp(&b.paragraph_id));
    let article = |q: &Question| q.paragraph_id.split('#').next().unwrap_or("").to_owned();
    let unanswerable: std::collections::HashSet<&str> = {
        let mut ids: Vec<&Question> = sample.clone();
        ids.shuffle(&mut StdRng::seed_from_u64(cli.seed + 1));
        ids.iter()
            .take(cli.unanswerable)
            .map(|q| q.id.as_str())
            .collect()
    };

    let principal = Principal::new("squad", "reader").with_group("readers");
    let mut systems: BTreeMap<String, (Pipeline, bool)> = BTreeMap::new();
    let mut timings: BTreeMap<String, Arc<Recording>> = BTreeMap::new();
    for name in &cli.systems {
        let ((p, timed), extractive) = match name.as_str() {
            "extractive" => (build(None, None, true)?, true),
            // As before issue 11: no loop controls, no abstention.
            "smollm2-plain" => (
                build(
                    Some((generator("smollm2")?, SamplingParams::default().unguarded())),
                    None,
                    false,
                )?,
                false,
            ),
            "smollm2" | "qwen" => (
                build(
                    Some((generator(name)?, SamplingParams::default())),
                    None,
                    true,
                )?,
                false,
            ),
            "smollm2-brief" | "qwen-brief" => {
                let base = name.trim_end_matches("-brief");
                (
                    build(
                        Some((generator(base)?, SamplingParams::default())),
                        Some(BRIEF),
                        true,
                    )?,
                    false,
                )
            }
            other => bail!("unknown system {other:?}"),
        };
        if let Some(t) = timed {
            timings.insert(name.clone(), t);
        }
        systems.insert(name.clone(), (p, extractive));
    }
    let ask = |p: &Pipeline, extractive: bool, q: &Question| -> Result<Outcome> {
        let a = p.query(&principal, q.question.trim(), &QueryOptions::default())?;
        let served: Vec<String> = a.answer.sources().map(|c| c.doc_id.to_string()).collect();
        let cited: Vec<String> = a
            .answer
            .citations
            .iter()
            .map(|c| c.doc_id.to_string())
            .collect();
        let text = if extractive {
            // The sentence of the top passage closest to the question.
            match a.answer.citations.first() {
                Some(top) => by_id
                    .get(top.doc_id.as_str())
                    .map(|p| {
                        let passage = &p.text
                            [top.span.start.min(p.text.len())..top.span.end.min(p.text.len())];
                        best_sentence(passage, &q.question)
                    })
                    .unwrap_or_default(),
                None => a.answer.text.clone(),
            }
        } else {
            a.answer.text.clone()
        };
        let cited = if extractive {
            cited.into_iter().take(1).collect()
        } else {
            cited
        };
        Ok(Outcome {
            abstained: a.kind == rag_pipeline::AnswerKind::Abstained
                || abstains(&text, served.len()),
            text,
            served,
            cited,
            top_score: a.top_score,
        })
    };

    #[derive(Default)]
    struct Tally {
        em: f64,
        f1: f64,
        recall: f64,
        cited: usize,
        cited_good: usize,
        repeated: usize,
        abstained: usize,
        un_asked: usize,
        un_abstained: usize,
        seconds: f64,
        scores: Vec<f32>,
        un_scores: Vec<f32>,
    }
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut dump = match &cli.answers {
        Some(path) => Some(std::io::BufWriter::new(fs_err::File::create(path)?)),
        None => None,
    };
    let mut i = 0;
    while i < sample.len() {
        let art = article(sample[i]);
        let mut j = i;
        while j < sample.len() && article(sample[j]) == art {
            j += 1;
        }
        let group = &sample[i..j];
        for (name, (p, extractive)) in &systems {
            let tally = tallies.entry(name.clone()).or_default();
            let t = Instant::now();
            for q in group {
                let o = ask(p, *extractive, q)?;
                let (em, f) = squad::score(&o.text, &q.answers);
                tally.em += em;
                tally.f1 += f;
                tally.recall += f64::from(u8::from(o.served.contains(&q.paragraph_id)));
                let mut cited = Vec::with_capacity(o.cited.len());
                for c in &o.cited {
                    tally.cited += 1;
                    let good = c == &q.paragraph_id
                        || by_id
                            .get(c.as_str())
                            .is_some_and(|p| q.answers.iter().any(|g| p.text.contains(g.as_str())));
                    tally.cited_good += usize::from(good);
                    cited.push((c.as_str(), good));
                }
                if let Some(out) = dump.as_mut() {
                    let line = AnswerLine {
                        system: name,
                        question: &q.question,
                        gold: &q.answers,
                        gold_paragraph: &q.paragraph_id,
                        answer: &o.text,
                        f1: f,
                        cited,
                        abstained: o.abstained,
                    };
                    serde_json::to_writer(&mut *out, &line)?;
                    out.write_all(b"\n")?;
                }
                tally.repeated += usize::from(rag_infer::repeats_ngram(&o.text, 4, 2));
                tally.abstained += usize::from(o.abstained);
                if let Some(s) = o.top_score {
                    tally.scores.push(s);
                }
            }
            tally.seconds += t.elapsed().as_secs_f64();
        }
        // The same article's chosen questions again, with the article gone.
        let gone: Vec<&&Question> = group
            .iter()
            .filter(|q| unanswerable.contains(q.id.as_str()))
            .collect();
        if !gone.is_empty() {
            let removed: Vec<&Paragraph> = paragraphs
                .iter()
                .filter(|p| p.id.starts_with(&format!("{art}#")))
                .collect();
            for p in &removed {
                index.delete(&DocKey::new("squad", p.id.as_str()))?;
            }
            for (name, (p, extractive)) in &systems {
                let tally = tallies.entry(name.clone()).or_default();
                let t = Instant::now();
                for q in &gone {
                    let o = ask(p, *extractive, q)?;
                    tally.un_asked += 1;
                    tally.un_abstained += usize::from(o.abstained);
                    if let Some(s) = o.top_score {
                        tally.un_scores.push(s);
                    }
                }
                tally.seconds += t.elapsed().as_secs_f64();
            }
            ingest.ingest(removed.iter().map(|p| doc(p)).collect())?;
        }
        eprint!("\r  {j}/{} questions", sample.len());
        i = j;
    }
    eprintln!();
    let n = sample.len().max(1) as f64;
    let mut reports = Vec::new();
    for name in &cli.systems {
        let Some(t) = tallies.get(name) else { continue };
        let runs = timings.get(name).map_or_else(Vec::new, |t| t.runs());
        let (ttft, tps) = if runs.is_empty() {
            (0.0, 0.0)
        } else {
            (
                median(runs.iter().map(|r| r.0).collect()),
                median(runs.iter().map(|r| r.1).collect()),
            )
        };
        reports.push(SystemReport {
            system: name.clone(),
            questions: sample.len(),
            exact_match: 100.0 * t.em / n,
            f1: 100.0 * t.f1 / n,
            gold_recall_at_k: t.recall / n,
            citation_precision: t.cited_good as f64 / t.cited.max(1) as f64,
            repeated_4gram_rate: t.repeated as f64 / n,
            abstain_answerable: t.abstained as f64 / n,
            abstain_unanswerable: t.un_abstained as f64 / t.un_asked.max(1) as f64,
            unanswerable_questions: t.un_asked,
            ttft_ms_p50: ttft,
            decode_tokens_per_s: tps,
            seconds: t.seconds,
        });
    }
    // Calibration: the top retrieved score (dense cosine) of the answerable
    // questions and of the same questions with their article removed. Retrieval
    // is the same in every system; the first one's scores are used.
    let calibration = cli.systems.first().and_then(|n| tallies.get(n)).map(|t| {
        let q = |v: &[f32], p: f64| -> f64 {
            let mut v: Vec<f64> = v.iter().map(|x| f64::from(*x)).collect();
            v.sort_by(f64::total_cmp);
            if v.is_empty() {
                return 0.0;
            }
            v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
        };
        let floor = q(&t.un_scores, 80.0);
        let below = |v: &[f32], floor: f64| v.iter().filter(|s| f64::from(**s) < floor).count() as f64 / v.len().max(1) as f64;
        let answerable_p5 = q(&t.scores, 5.0);
        serde_json::json!({
            "answerable_top_score": {"p5": q(&t.scores, 5.0), "p10": q(&t.scores, 10.0), "p25": q(&t.scores, 25.0), "p50": q(&t.scores, 50.0)},
            "unanswerable_top_score": {"p50": q(&t.un_scores, 50.0), "p80": q(&t.un_scores, 80.0), "p90": q(&t.un_scores, 90.0)},
            // The rule of docs/EVALUATION.md: abstain on at most 5% of answerable
            // questions; the share of unanswerable ones that floor catches.
            "floor_at_answerable_p5": answerable_p5,
            "unanswerable_below_answerable_p5": below(&t.un_scores, answerable_p5),
            "floor_at_unanswerable_p80": floor,
            "answerable_below_that_floor": below(&t.scores, floor),
            "unanswerable_below_that_floor": below(&t.un_scores, floor),
        })
    });
    eprintln!("calibration: {}", calibration.clone().unwrap_or_default());
    for r in &reports {
        eprintln!(
            "{:>14}: EM {:5.1}  F1 {:5.1}  gold@k {:.2}  cite-prec {:.2}  loops {:.2}  abstain {:.2}/{:.2}  {:.0} s",
            r.system,
            r.exact_match,
            r.f1,
            r.gold_recall_at_k,
            r.citation_precision,
            r.repeated_4gram_rate,
            r.abstain_answerable,
            r.abstain_unanswerable,
            r.seconds
        );
    }
    let json = serde_json::to_string_pretty(&serde_json::json!({
        "dataset": cli.dataset.display().to_string(),
        "seed": cli.seed,
        "top_k": cli.top_k,
        "context_tokens": cli.context_tokens,
        "abstain_dense": cli.abstain_dense,
        "calibration": calibration,
        "systems": reports,
    }))?;
    println!("{json}");
    if let Some(path) = &cli.json {
        fs_err::write(path, &json)?;
    }
    Ok(())
}
