//! Filtered search report: this index against usearch `filtered_search`, post-filtering
//! and an exact scan, at selectivities from 100% to 0.01%, in one run on one corpus.
//! Also snapshot write/read throughput beside a bare arrow-rs Parquet write.
//!
//! `cargo run --release -p rag-benches --bin filtered -- --n 200000 --dim 384 --json PATH
//!  [--queries Q] [--oversample X] [--max-beam B] [--exact-fraction F] [--peers PYTHON]`
//!
//! With `--peers`, the corpus is written to a temporary directory and
//! `benches/peers/filtered_peers.py` is run with that interpreter (it needs
//! `faiss-cpu`, `lancedb`, `numpy` and `pyarrow`): FAISS and LanceDB on the same
//! vectors, filters and graph parameters, their QPS and recall in each row.

#![allow(clippy::print_stdout)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, StringArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rag_benches::args::Args;
use rag_benches::corpus::{Corpus, LEVELS, bare_usearch_options, exact_top_k};
use rag_benches::timing::{median, throughput};
use rag_core::Embedding;
use rag_index::{HnswIndex, IndexConfig};
use serde::Serialize;
use usearch::Index;

const K: usize = 10;

#[derive(Serialize)]
struct Row {
    selectivity: f64,
    visible: usize,
    ours_strategy: String,
    ours_qps: f64,
    ours_recall: f64,
    /// This index with post-filtering off: the filter checked at each node of the walk.
    ours_node_filter_strategy: String,
    ours_node_filter_qps: f64,
    ours_node_filter_recall: f64,
    usearch_filtered_qps: f64,
    usearch_filtered_recall: f64,
    usearch_filtered_queries: usize,

    /// FAISS `IndexHNSWFlat` with an `IDSelectorBitmap` (with `--peers`).
    faiss_qps: Option<f64>,
    faiss_recall: Option<f64>,
    /// LanceDB's prefiltered search over an IVF_HNSW_SQ index (with `--peers`).
    lancedb_qps: Option<f64>,
    lancedb_recall: Option<f64>,
    postfilter_qps: f64,
    postfilter_recall: f64,
    exact_qps: f64,
    unfiltered_ours_qps: f64,
    bare_usearch_qps: f64,
    unfiltered_ours_restored_qps: f64,
    speedup_vs_usearch_filtered: f64,
}

#[derive(Serialize)]
struct SnapshotRow {
    chunks: usize,
    ours_bytes: u64,
    ours_write_mb_s: f64,
    ours_restore_mb_s: f64,
    bare_parquet_bytes: u64,
    bare_parquet_write_mb_s: f64,
    bare_parquet_read_mb_s: f64,
}

#[derive(Serialize)]
struct Report {
    n: usize,
    dim: usize,
    k: usize,
    queries: usize,
    connectivity: usize,
    expansion_add: usize,
    expansion_search: usize,
    post_filter_oversample: f64,
    post_filter_max_beam: usize,
    build_s_ours: f64,
    baseline_graph: &'static str,
    results: Vec<Row>,
    /// What the peers script reported about itself (versions, build times).
    peers: Option<serde_json::Value>,
    snapshot: SnapshotRow,
}

fn recall(found: &[u32], truth: &[u32]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    let t: HashSet<u32> = truth.iter().copied().collect();
    found.iter().filter(|f| t.contains(f)).count() as f64 / truth.len() as f64
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

fn doc_index(id: &str) -> u32 {
    id.trim_start_matches('d').parse().unwrap_or(u32::MAX)
}

fn main() -> Result<()> {
    let args = Args::parse()?;
    let n: usize = args.get("n", 200_000)?;
    let dim: usize = args.get("dim", 384)?;
    let nq: usize = args.get("queries", 200)?;
    let batch: usize = args.get("batch", 20_000)?;
    let json = args.opt("json").map(str::to_owned);
    let defaults = IndexConfig::default();
    let config = IndexConfig::builder()
        .max_concurrency(8)
        .post_filter_oversample(args.get("oversample", defaults.post_filter_oversample)?)
        .post_filter_max_beam(args.get("max-beam", defaults.post_filter_max_beam)?)
        .exact_scan_fraction(args.get("exact-fraction", defaults.exact_scan_fraction)?)
        .build()?;

    eprintln!("generating {n} clustered vectors of {dim} dims");
    let corpus = Corpus::clustered(n, dim, nq, 42);
    let model = corpus.fingerprint();

    eprintln!("building this index");
    let t = Instant::now();
    let index = HnswIndex::new(model.clone(), config.clone())?;
    for start in (0..n).step_by(batch) {
        index.upsert_documents(corpus.updates(start..(start + batch).min(n)))?;
    }
    let build_ours = t.elapsed().as_secs_f64();
    eprintln!("  {build_ours:.1} s");

    let dir = tempfile::tempdir()?;
    let (snapshot, graph_file) = snapshot_throughput(&index, &corpus, &config, dir.path())?;
    eprintln!(
        "snapshot: ours {} MB written at {:.0} MB/s, restored at {:.0} MB/s; bare arrow-rs parquet {} MB written at {:.0} MB/s, read at {:.0} MB/s",
        snapshot.ours_bytes / 1_000_000,
        snapshot.ours_write_mb_s,
        snapshot.ours_restore_mb_s,
        snapshot.bare_parquet_bytes / 1_000_000,
        snapshot.bare_parquet_write_mb_s,
        snapshot.bare_parquet_read_mb_s
    );

    // The baselines search this index's own graph, loaded into a bare usearch index
    // from the snapshot: same parameters, same graph, so only the search differs.
    let load_bare = || -> Result<Index> {
        let bare = Index::new(&bare_usearch_options(dim, &config))?;
        bare.load(graph_file.to_str().context("graph path is not UTF-8")?)?;
        bare.reserve_capacity_and_threads(n, 8)?;
        bare.change_expansion_search(config.expansion_search);
        Ok(bare)
    };
    let bare = load_bare()?;
    // This index restored from the same snapshot: the same graph in the same memory
    // layout as `bare`, so the gap between the two is this crate's own overhead.
    let restored = HnswIndex::restore(dir.path(), Some(&model), config.clone())?;
    let mut v = vec![0f32; dim];
    for i in (0..n).step_by(997) {
        anyhow::ensure!(bare.get(i as u64, &mut v)? == 1, "graph lacks key {i}");
        let d = v
            .iter()
            .zip(corpus.vector(i))
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        anyhow::ensure!(d < 1e-5, "graph key {i} holds another vector");
    }

    let queries: Vec<Embedding> = corpus
        .queries
        .iter()
        .map(|q| Embedding::new(model.id(), q.clone()))
        .collect::<Result<_, _>>()?;
    let min = Duration::from_millis(500);
    let budget = Duration::from_secs(10);

    // Unfiltered: ours with a filter that sees everything against bare usearch search.
    let everyone = Corpus::filter("all");
    // Interleaved rounds, medians reported: the machine's speed drifts between runs.
    let (mut ours_rounds, mut bare_rounds, mut restored_rounds) =
        (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..7 {
        ours_rounds.push(
            throughput(&queries, min / 2, budget, 50, |q| {
                let _ = index.search_filtered(q, K, &everyone);
            })
            .0,
        );
        bare_rounds.push(
            throughput(&corpus.queries, min / 2, budget, 50, |q| {
                let _ = bare.search(q, K);
            })
            .0,
        );
        restored_rounds.push(
            throughput(&queries, min / 2, budget, 50, |q| {
                let _ = restored.search_filtered(q, K, &everyone);
            })
            .0,
        );
    }
    let unfiltered_ours_qps = median(ours_rounds);
    let bare_usearch_qps = median(bare_rounds);
    let unfiltered_ours_restored_qps = median(restored_rounds);
    drop(restored);
    // The same snapshot with post-filtering off: the walk that checks the filter at
    // each node, as before, beside the planner's choice in the same run.
    let node_filter = HnswIndex::restore(
        dir.path(),
        Some(&model),
        IndexConfig {
            post_filter_oversample: 0.0,
            ..config.clone()
        },
    )?;
    eprintln!(
        "unfiltered: ours {unfiltered_ours_qps:.0} qps, bare usearch {bare_usearch_qps:.0} qps, ours restored from the snapshot {unfiltered_ours_restored_qps:.0} qps"
    );

    let mut results = Vec::new();
    for (sel, group) in LEVELS {
        let allowed: Vec<u32> = (0..n as u32)
            .filter(|&i| corpus.visible(i as usize, sel))
            .collect();
        let mut bits = vec![0u64; n / 64 + 1];
        for &i in &allowed {
            bits[i as usize / 64] |= 1 << (i % 64);
        }
        let is_allowed = |k: u64| (k as usize) < n && bits[k as usize / 64] & (1 << (k % 64)) != 0;
        let filter = Corpus::filter(group);
        let truth: Vec<Vec<u32>> = corpus
            .queries
            .iter()
            .map(|q| exact_top_k(&corpus, &allowed, q, K))
            .collect();
        let idx: Vec<usize> = (0..nq).collect();

        let measure = |index: &HnswIndex| -> Result<(String, f64)> {
            let mut strategies = std::collections::BTreeSet::new();
            let mut rec = Vec::new();
            for (q, t) in queries.iter().zip(&truth) {
                let r = index.search_filtered(q, K, &filter)?;
                strategies.insert(r.strategy.to_string());
                let found: Vec<u32> = r
                    .hits
                    .iter()
                    .map(|h| doc_index(h.doc_id.as_str()))
                    .collect();
                rec.push(recall(&found, t));
            }
            let strategies: Vec<String> = strategies.into_iter().collect();
            Ok((strategies.join("+"), mean(&rec)))
        };
        let (strategy, ours_recall) = measure(&index)?;
        let (node_strategy, node_recall) = measure(&node_filter)?;
        // Interleaved rounds, medians: the two planners side by side.
        let (mut ours_rounds, mut node_rounds) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            for (index, rounds) in [(&index, &mut ours_rounds), (&node_filter, &mut node_rounds)] {
                let (qps, _) = throughput(&queries, min / 2, budget / 3, 100, |q| {
                    let _ = index.search_filtered(q, K, &filter);
                });
                rounds.push(qps);
            }
        }
        let (ours_qps, node_qps) = (median(ours_rounds), median(node_rounds));

        let mut urec = Vec::new();
        let (usearch_filtered_qps, uq) = throughput(&idx, Duration::ZERO, budget, 1, |&i| {
            let m = bare.filtered_search(&corpus.queries[i], K, is_allowed);
            let found: Vec<u32> = m
                .map(|m| m.keys.iter().map(|&k| k as u32).collect())
                .unwrap_or_default();
            urec.push(recall(&found, &truth[i]));
        });

        let mut prec = Vec::new();
        let (postfilter_qps, _) = throughput(&idx, Duration::ZERO, budget, 1, |&i| {
            let found: Vec<u32> = bare
                .search(&corpus.queries[i], K * 10)
                .map(|m| {
                    m.keys
                        .iter()
                        .filter(|&&k| is_allowed(k))
                        .take(K)
                        .map(|&k| k as u32)
                        .collect()
                })
                .unwrap_or_default();
            prec.push(recall(&found, &truth[i]));
        });
        let (exact_qps, _) = throughput(&corpus.queries, min, budget, 50, |q| {
            let _ = exact_top_k(&corpus, &allowed, q, K);
        });
        let row = Row {
            selectivity: sel,
            visible: allowed.len(),
            ours_strategy: strategy,
            ours_qps,
            ours_recall,
            ours_node_filter_strategy: node_strategy,
            ours_node_filter_qps: node_qps,
            ours_node_filter_recall: node_recall,
            usearch_filtered_qps,
            usearch_filtered_recall: mean(&urec),
            usearch_filtered_queries: uq,

            faiss_qps: None,
            faiss_recall: None,
            lancedb_qps: None,
            lancedb_recall: None,
            postfilter_qps,
            postfilter_recall: mean(&prec),
            exact_qps,
            unfiltered_ours_qps,
            bare_usearch_qps,
            unfiltered_ours_restored_qps,
            speedup_vs_usearch_filtered: ours_qps / usearch_filtered_qps,
        };
        eprintln!(
            "sel {:>7}: visible {:>6}  ours {:>9.0} qps r={:.3} ({})  node-filter walk {:>8.0} qps r={:.3} ({})  usearch_filtered {:>8.0} qps r={:.3} [{} q]  postfilter {:>8.0} qps r={:.3}  exact {:>8.0} qps  => {:.1}x",
            sel,
            row.visible,
            row.ours_qps,
            row.ours_recall,
            row.ours_strategy,
            row.ours_node_filter_qps,
            row.ours_node_filter_recall,
            row.ours_node_filter_strategy,
            row.usearch_filtered_qps,
            row.usearch_filtered_recall,
            row.usearch_filtered_queries,
            row.postfilter_qps,
            row.postfilter_recall,
            row.exact_qps,
            row.speedup_vs_usearch_filtered
        );
        results.push(row);
    }
    drop(bare);
    drop(node_filter);
    let peers = match args.opt("peers") {
        Some(python) => Some(run_peers(python, &corpus, &config, &mut results)?),
        None => None,
    };

    let report = Report {
        n,
        dim,
        k: K,
        queries: nq,
        connectivity: config.connectivity,
        expansion_add: config.expansion_add,
        expansion_search: config.expansion_search,
        post_filter_oversample: config.post_filter_oversample,
        post_filter_max_beam: config.post_filter_max_beam,
        build_s_ours: build_ours,
        baseline_graph: "this index's graph, loaded from its snapshot into a bare usearch index",
        results,
        peers,
        snapshot,
    };
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(path) = json {
        fs_err::write(&path, &text).with_context(|| format!("writing {path}"))?;
    }
    println!("{text}");
    Ok(())
}

/// Writes the corpus for the peers script, runs it, and merges its figures into
/// `rows` by selectivity.
fn run_peers(
    python: &str,
    corpus: &Corpus,
    config: &IndexConfig,
    rows: &mut [Row],
) -> Result<serde_json::Value> {
    use std::io::Write;
    let dir = tempfile::tempdir()?;
    let write = |name: &str, bytes: &mut dyn Iterator<Item = u8>| -> Result<()> {
        let mut f = std::io::BufWriter::new(fs_err::File::create(dir.path().join(name))?);
        for b in bytes {
            f.write_all(&[b])?;
        }
        f.flush()?;
        Ok(())
    };
    write(
        "vectors.f32",
        &mut corpus.data.iter().flat_map(|x| x.to_le_bytes()),
    )?;
    write(
        "queries.f32",
        &mut corpus
            .queries
            .iter()
            .flatten()
            .flat_map(|x| x.to_le_bytes()),
    )?;
    write(
        "draw.f64",
        &mut corpus.draw.iter().flat_map(|x| x.to_le_bytes()),
    )?;
    let meta = serde_json::json!({
        "n": corpus.len(),
        "dim": corpus.dims,
        "queries": corpus.queries.len(),
        "selectivities": rows.iter().map(|r| r.selectivity).collect::<Vec<_>>(),
    });
    fs_err::write(dir.path().join("meta.json"), meta.to_string())?;
    let out = dir.path().join("peers.json");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/filtered_peers.py");
    eprintln!("peers: running {script} with {python}");
    let status = std::process::Command::new(python)
        .arg(script)
        .arg("--dump")
        .arg(dir.path())
        .arg("--json")
        .arg(&out)
        .args(["--k", &K.to_string()])
        .args(["--m", &config.connectivity.to_string()])
        .args(["--ef-construction", &config.expansion_add.to_string()])
        .args(["--ef-search", &config.expansion_search.to_string()])
        .status()
        .with_context(|| format!("running {python}"))?;
    anyhow::ensure!(status.success(), "the peers script failed: {status}");
    let mut peers: serde_json::Value = serde_json::from_str(&fs_err::read_to_string(&out)?)?;
    let results = peers
        .get_mut("results")
        .and_then(|r| r.as_array_mut())
        .map(std::mem::take)
        .unwrap_or_default();
    for p in results {
        let sel = p.get("selectivity").and_then(serde_json::Value::as_f64);
        let Some(row) = rows.iter_mut().find(|r| Some(r.selectivity) == sel) else {
            continue;
        };
        let f = |k: &str| p.get(k).and_then(serde_json::Value::as_f64);
        row.faiss_qps = f("faiss_qps");
        row.faiss_recall = f("faiss_recall");
        row.lancedb_qps = f("lancedb_qps");
        row.lancedb_recall = f("lancedb_recall");
        eprintln!(
            "sel {:>7}: faiss {:>8.0} qps r={:.3}  lancedb {:>8.0} qps r={:.3}  ours {:>8.0} qps r={:.3}",
            row.selectivity,
            row.faiss_qps.unwrap_or(f64::NAN),
            row.faiss_recall.unwrap_or(f64::NAN),
            row.lancedb_qps.unwrap_or(f64::NAN),
            row.lancedb_recall.unwrap_or(f64::NAN),
            row.ours_qps,
            row.ours_recall
        );
    }
    Ok(peers)
}

/// Our snapshot write and restore, beside a bare arrow-rs write and read of the same
/// chunk columns (ids, doc ids, versions, text, ACL tags, embeddings).
fn snapshot_throughput(
    index: &HnswIndex,
    corpus: &Corpus,
    config: &IndexConfig,
    dir: &std::path::Path,
) -> Result<(SnapshotRow, std::path::PathBuf)> {
    let t = Instant::now();
    let report = index.snapshot(dir)?;
    let write_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let restored = HnswIndex::restore(dir, Some(&corpus.fingerprint()), config.clone())?;
    let restore_s = t.elapsed().as_secs_f64();
    drop(restored);

    let n = corpus.len();
    let dims = corpus.dims;
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let schema = Arc::new(Schema::new(vec![
        Field::new("chunk_id", DataType::UInt64, false),
        Field::new("doc_id", DataType::Utf8, false),
        Field::new("version", DataType::UInt64, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("acl", DataType::Utf8, false),
        Field::new(
            "embedding",
            DataType::FixedSizeList(item.clone(), dims as i32),
            false,
        ),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(0..n as u64)),
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| format!("d{i}")),
        )),
        Arc::new(UInt64Array::from_iter_values(std::iter::repeat_n(1, n))),
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| format!("document {i} of the clustered corpus")),
        )),
        Arc::new(StringArray::from_iter_values((0..n).map(|i| {
            let a = corpus.acl(i);
            a.allow
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }))),
        Arc::new(FixedSizeListArray::try_new(
            item,
            dims as i32,
            Arc::new(Float32Array::from(corpus.data.clone())),
            None,
        )?),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let path = dir.join("bare.parquet");
    let t = Instant::now();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_max_row_group_row_count(Some(65_536))
        .build();
    let file = fs_err::File::create(&path)?;
    let mut w = ArrowWriter::try_new(file.into_file(), schema, Some(props))?;
    for start in (0..n).step_by(65_536) {
        w.write(&batch.slice(start, 65_536.min(n - start)))?;
    }
    w.close()?;
    let bare_write_s = t.elapsed().as_secs_f64();
    let bare_bytes = fs_err::metadata(&path)?.len();
    let t = Instant::now();
    let reader = ParquetRecordBatchReaderBuilder::try_new(fs_err::File::open(&path)?.into_file())?
        .build()?;
    let mut rows = 0;
    for b in reader {
        rows += b?.num_rows();
    }
    anyhow::ensure!(rows == n, "bare parquet read {rows} rows of {n}");
    let bare_read_s = t.elapsed().as_secs_f64();
    let mb = |b: u64, s: f64| b as f64 / 1e6 / s;
    fs_err::remove_file(&path)?;
    let graph = dir.join(&report.manifest.file("graph")?.name);
    Ok((
        SnapshotRow {
            chunks: n,
            ours_bytes: report.bytes,
            ours_write_mb_s: mb(report.bytes, write_s),
            ours_restore_mb_s: mb(report.bytes, restore_s),
            bare_parquet_bytes: bare_bytes,
            bare_parquet_write_mb_s: mb(bare_bytes, bare_write_s),
            bare_parquet_read_mb_s: mb(bare_bytes, bare_read_s),
        },
        graph,
    ))
}
