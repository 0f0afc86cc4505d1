//! Choosing the next token: greedy, or temperature and nucleus (top-p) sampling with
//! a seeded generator.

/// A small, seedable generator (SplitMix64): reproducible samples without a
/// dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A uniform draw in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The highest-scoring token (the first on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// A token drawn from `softmax(logits / temperature)` restricted to the smallest set
/// of tokens whose probability reaches `top_p`. `temperature <= 0` is greedy.
pub fn sample(logits: &[f32], temperature: f32, top_p: f32, rng: &mut Rng) -> u32 {
    if temperature <= 0.0 || logits.is_empty() {
        return argmax(logits);
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, f64::from((l - max) / temperature).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top_p = f64::from(top_p.clamp(f32::MIN_POSITIVE, 1.0));
    let mut kept = 0;
    let mut mass = 0.0;
    for p in &probs {
        kept += 1;
        mass += p.1 / total;
        if mass >= top_p {
            break;
        }
    }
    let probs = &probs[..kept];
    let kept_mass: f64 = probs.iter().map(|p| p.1).sum();
    let mut r = rng.next_f64() * kept_mass;
    for p in probs {
        r -= p.1;
        if r <= 0.0 {
            return p.0;
        }
    }
    probs.last().map_or(0, |p| p.0)
}

/// Applies the repetition penalty to the tokens in `generated` (each once) and bans
/// every token that would complete an `ngram`-token n-gram already in `generated`.
pub fn guard(logits: &mut [f32], generated: &[u32], penalty: f32, ngram: usize) {
    if penalty > 0.0 && (penalty - 1.0).abs() > f32::EPSILON {
        let mut seen = std::collections::HashSet::new();
        for &t in generated {
            if seen.insert(t)
                && let Some(l) = logits.get_mut(t as usize)
            {
                *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
            }
        }
    }
    if ngram >= 1 && generated.len() >= ngram {
        // The last ngram-1 tokens, followed by the candidate, must not be an n-gram
        // seen before.
        let prefix = &generated[generated.len() + 1 - ngram..];
        for w in generated.windows(ngram) {
            if &w[..ngram - 1] == prefix
                && let Some(l) = logits.get_mut(w[ngram - 1] as usize)
            {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

/// The words of a text (runs of alphanumerics, lowercased) with their byte offsets.
pub fn words(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, text[s..i].to_lowercase()));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, text[s..].to_lowercase()));
    }
    out
}

/// Whether some `n`-word n-gram of `text` occurs more than `max` times (how loops
/// are counted in tests and reports).
pub fn repeats_ngram(text: &str, n: usize, max: usize) -> bool {
    let words = words(text);
    let mut seen: std::collections::HashMap<Vec<&str>, usize> = std::collections::HashMap::new();
    words.windows(n.max(1)).any(|w| {
        let count = seen
            .entry(w.iter().map(|(_, s)| s.as_str()).collect())
            .or_default();
        *count += 1;
        *count > max
    })
}

/// Where to cut `text` when some `n`-word n-gram occurs a third time: the byte
/// offset of that third occurrence's first word, or `None`.
pub fn loop_cut(text: &str, n: usize) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let words = words(text);
    let mut seen: std::collections::HashMap<Vec<&str>, usize> = std::collections::HashMap::new();
    for i in 0..words.len().saturating_sub(n - 1) {
        let gram: Vec<&str> = words[i..i + n].iter().map(|(_, w)| w.as_str()).collect();
        let count = seen.entry(gram).or_default();
        *count += 1;
        if *count == 3 {
            return Some(words[i].0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_penalty_lowers_generated_tokens_and_ngrams_are_banned() {
        let mut logits = vec![2.0, -1.0, 3.0, 0.5];
        guard(&mut logits, &[0, 1, 0], 2.0, 0);
        assert_eq!(logits, vec![1.0, -2.0, 3.0, 0.5]);
        // Generated 2 3 2: the 2-gram "2 3" exists, so after "2" token 3 is banned.
        let mut logits = vec![0.0; 4];
        guard(&mut logits, &[2, 3, 2], 1.0, 2);
        assert_eq!(logits[3], f32::NEG_INFINITY);
        assert!(logits[..3].iter().all(|l| l.is_finite()));
        assert_eq!(argmax(&logits), 0);
    }

    #[test]
    fn a_third_occurrence_of_a_word_ngram_is_cut() {
        let t = "The index filters. The index filters. The index filters again.";
        let cut = loop_cut(t, 3).unwrap();
        assert_eq!(&t[..cut], "The index filters. The index filters. ");
        assert_eq!(loop_cut("the index filters. the index filters.", 3), None);
        assert_eq!(loop_cut(t, 0), None);
        assert!(repeats_ngram(t, 3, 2));
        assert!(!repeats_ngram(t, 3, 3));
    }

    #[test]
    fn greedy_and_seeded_sampling() {
        let logits = [0.1, 3.0, 2.9, -1.0];
        assert_eq!(argmax(&logits), 1);
        assert_eq!(sample(&logits, 0.0, 1.0, &mut Rng::new(1)), 1);
        // A tiny nucleus keeps only the best token.
        for seed in 0..20 {
            assert_eq!(sample(&logits, 1.0, 0.01, &mut Rng::new(seed)), 1);
        }
        // Same seed, same draws; a wide nucleus reaches the second token sometimes.
        let draws = |seed| {
            (0..200)
                .map(|_| 0)
                .scan(Rng::new(seed), |r, _: i32| {
                    Some(sample(&logits, 1.0, 1.0, r))
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert!(draws(7).contains(&2));
        assert!(!draws(7).contains(&3) || draws(7).iter().filter(|&&t| t == 3).count() < 20);
    }
}
