//! A clustered vector corpus with tag ACLs of known selectivity.

use rag_core::{
    AccessFilter, Acl, Chunk, DocId, DocKey, DocumentUpdate, EmbeddedChunk, Embedding, Metadata,
    ModelFingerprint, Principal,
};
use rag_index::IndexConfig;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

/// Selectivities the reports measure, with the group that grants each.
pub const LEVELS: [(f64, &str); 7] = [
    (1.0, "all"),
    (0.3, "s30"),
    (0.1, "s10"),
    (0.03, "s3"),
    (0.01, "s1"),
    (0.001, "s01"),
    (0.0001, "s001"),
];

pub struct Corpus {
    pub dims: usize,
    /// Unit vectors, row-major.
    pub data: Vec<f32>,
    /// Per document, the uniform draw that decides its ACL.
    pub draw: Vec<f64>,
    /// Queries: unit vectors near cluster centres.
    pub queries: Vec<Vec<f32>>,
}

fn unit(v: &mut [f32]) {
    let n = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= n);
}

impl Corpus {
    /// `n` vectors in `n / 200` Gaussian clusters (not uniform noise), and `queries`
    /// queries drawn from the same clusters.
    pub fn clustered(n: usize, dims: usize, queries: usize, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let normal = Normal::new(0f32, 1.0).unwrap_or_else(|_| unreachable!());
        let noise =
            Normal::new(0f32, 0.9 / (dims as f32).sqrt()).unwrap_or_else(|_| unreachable!());
        let clusters = (n / 200).max(1);
        let centres: Vec<Vec<f32>> = (0..clusters)
            .map(|_| {
                let mut c: Vec<f32> = (0..dims).map(|_| normal.sample(&mut rng)).collect();
                unit(&mut c);
                c
            })
            .collect();
        let point = |rng: &mut SmallRng| {
            let c = &centres[rng.random_range(0..clusters)];
            let mut v: Vec<f32> = c.iter().map(|x| x + noise.sample(rng)).collect();
            unit(&mut v);
            v
        };
        let mut data = Vec::with_capacity(n * dims);
        for _ in 0..n {
            data.extend(point(&mut rng));
        }
        let draw = (0..n).map(|_| rng.random::<f64>()).collect();
        let queries = (0..queries).map(|_| point(&mut rng)).collect();
        Self {
            dims,
            data,
            draw,
            queries,
        }
    }

    pub fn len(&self) -> usize {
        self.draw.len()
    }

    pub fn is_empty(&self) -> bool {
        self.draw.is_empty()
    }

    pub fn vector(&self, i: usize) -> &[f32] {
        &self.data[i * self.dims..(i + 1) * self.dims]
    }

    pub fn fingerprint(&self) -> ModelFingerprint {
        ModelFingerprint::new("clustered-synthetic", self.dims, "bench")
            .unwrap_or_else(|_| unreachable!())
    }

    /// Document `i`'s ACL: group `all`, each selectivity group its draw falls under,
    /// and one of 20 department groups.
    pub fn acl(&self, i: usize) -> Acl {
        let mut acl = Acl::new("acme")
            .allow_group(format!("dept{}", i % 20))
            .deny_user("mallory");
        for (sel, group) in LEVELS {
            if self.draw[i] < sel {
                acl = acl.allow_group(group);
            }
        }
        acl
    }

    /// Whether document `i` is visible at selectivity level `sel`.
    pub fn visible(&self, i: usize, sel: f64) -> bool {
        self.draw[i] < sel
    }

    pub fn filter(group: &str) -> AccessFilter {
        AccessFilter::for_principal(&Principal::new("acme", "bench").with_group(group))
    }

    /// Documents `range` as one-chunk updates.
    pub fn updates(&self, range: std::ops::Range<usize>) -> Vec<DocumentUpdate> {
        let model = self.fingerprint().id();
        range
            .map(|i| {
                let doc_id = DocId::new(format!("d{i}"));
                let text = format!("document {i} of the clustered corpus");
                let key = DocKey::new("acme", doc_id.clone());
                DocumentUpdate {
                    tenant: key.tenant.clone(),
                    doc_id,
                    version: 1,
                    acl: Some(self.acl(i)),
                    metadata: Metadata::default(),
                    content_hash: None,
                    chunks: vec![EmbeddedChunk {
                        chunk: Chunk::whole(&key, text),
                        embedding: Embedding::new(model, self.vector(i).to_vec())
                            .unwrap_or_else(|_| unreachable!()),
                    }],
                }
            })
            .collect()
    }
}

/// A plain dot product with eight running sums (what compilers vectorize by default).
pub fn plain_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// Brute-force top-`k` over the documents in `allowed`.
pub fn exact_top_k(corpus: &Corpus, allowed: &[u32], q: &[f32], k: usize) -> Vec<u32> {
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    for &i in allowed {
        let s = plain_dot(q, corpus.vector(i as usize));
        if best.len() < k || s > best[best.len() - 1].0 {
            let pos = best.partition_point(|(b, _)| *b >= s);
            best.insert(pos, (s, i));
            best.truncate(k);
        }
    }
    best.into_iter().map(|(_, i)| i).collect()
}

/// Options of a bare usearch index with the same HNSW settings as `config`.
pub fn bare_usearch_options(dims: usize, config: &IndexConfig) -> usearch::IndexOptions {
    usearch::IndexOptions {
        dimensions: dims,
        metric: usearch::MetricKind::IP,
        quantization: usearch::ScalarKind::F32,
        connectivity: config.connectivity,
        expansion_add: config.expansion_add,
        expansion_search: config.expansion_search,
        multi: false,
    }
}
