//! Ranking metrics with the definitions of `trec_eval` (as BEIR computes them through
//! pytrec_eval): graded gains, a log2 discount, the ideal ranking built from the
//! judgments; a document judged 0 or not judged gains nothing.

use std::collections::HashMap;

/// nDCG at `k`: `DCG = Σ grade(d_i) / log2(i + 1)` over ranks `i = 1..=k`, divided by
/// the DCG of the judged documents sorted by grade. 0 when nothing is relevant.
pub fn ndcg_at(ranking: &[String], judged: &HashMap<String, u32>, k: usize) -> f64 {
    let dcg: f64 = ranking
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| f64::from(judged.get(d).copied().unwrap_or(0)) / ((i + 2) as f64).log2())
        .sum();
    let mut ideal: Vec<u32> = judged.values().copied().filter(|g| *g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, g)| f64::from(*g) / ((i + 2) as f64).log2())
        .sum();
    if idcg == 0.0 { 0.0 } else { dcg / idcg }
}

/// Recall at `k`: the share of relevant (grade > 0) documents in the first `k`.
pub fn recall_at(ranking: &[String], judged: &HashMap<String, u32>, k: usize) -> f64 {
    let relevant = judged.values().filter(|g| **g > 0).count();
    if relevant == 0 {
        return 0.0;
    }
    let found = ranking
        .iter()
        .take(k)
        .filter(|d| judged.get(*d).is_some_and(|g| *g > 0))
        .count();
    found as f64 / relevant as f64
}

/// Reciprocal rank of the first relevant document within the first `k`, else 0.
pub fn mrr_at(ranking: &[String], judged: &HashMap<String, u32>, k: usize) -> f64 {
    ranking
        .iter()
        .take(k)
        .position(|d| judged.get(d).is_some_and(|g| *g > 0))
        .map_or(0.0, |i| 1.0 / (i + 1) as f64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ids(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| (*s).to_owned()).collect()
    }

    fn judged(xs: &[(&str, u32)]) -> HashMap<String, u32> {
        xs.iter().map(|(d, g)| ((*d).to_owned(), *g)).collect()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    /// Worked by hand. Judgments: a=2, b=1, c=0, e=1 (three relevant, under 10).
    /// Ranking: x, a, c, b, y.
    /// DCG@10  = 2/log2(3) + 1/log2(5) = 1.261859507 + 0.430676558 = 1.692536065
    /// IDCG@10 = 2/log2(2) + 1/log2(3) + 1/log2(4) = 2 + 0.630929754 + 0.5 = 3.130929754
    /// nDCG@10 = 0.5405858; Recall@100 = 2/3 (a, b; e missed; c is judged 0);
    /// MRR@10 = 1/2 (first relevant, a, at rank 2).
    #[test]
    fn hand_computed_example() {
        let q = judged(&[("a", 2), ("b", 1), ("c", 0), ("e", 1)]);
        let r = ids(&["x", "a", "c", "b", "y"]);
        let dcg = 2.0 / 3f64.log2() + 1.0 / 5f64.log2();
        let idcg = 2.0 + 1.0 / 3f64.log2() + 0.5;
        close(ndcg_at(&r, &q, 10), dcg / idcg);
        close(ndcg_at(&r, &q, 10), 0.540_585_767_9);
        close(recall_at(&r, &q, 100), 2.0 / 3.0);
        close(mrr_at(&r, &q, 10), 0.5);
        // A cut-off before the first relevant document.
        close(ndcg_at(&r, &q, 1), 0.0);
        close(mrr_at(&r, &q, 1), 0.0);
        close(recall_at(&r, &q, 2), 1.0 / 3.0);
    }

    #[test]
    fn perfect_ranking_scores_one() {
        let q = judged(&[("a", 2), ("b", 1)]);
        let r = ids(&["a", "b", "z"]);
        close(ndcg_at(&r, &q, 10), 1.0);
        close(recall_at(&r, &q, 100), 1.0);
        close(mrr_at(&r, &q, 10), 1.0);
    }

    #[test]
    fn a_query_with_no_relevant_hit_scores_zero() {
        let q = judged(&[("a", 1)]);
        let r = ids(&["x", "y", "z"]);
        close(ndcg_at(&r, &q, 10), 0.0);
        close(recall_at(&r, &q, 100), 0.0);
        close(mrr_at(&r, &q, 10), 0.0);
        // Nothing relevant judged at all: every metric is 0, none divides by zero.
        let none = judged(&[("a", 0)]);
        close(ndcg_at(&r, &none, 10), 0.0);
        close(recall_at(&r, &none, 100), 0.0);
        close(mrr_at(&ids(&[]), &none, 10), 0.0);
    }
}
