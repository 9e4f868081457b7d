//! BLEU-1..4 as `pycocoevalcap/bleu/bleu_scorer.py` (pycocoevalcap 1.2, after David Chiang's
//! scorer) computes it with `option='closest'`: clipped n-gram counts, the reference length
//! closest to the candidate's (ties to the shorter), the `1e-15` / `1e-9` smoothing constants,
//! and a brevity penalty per image and once over the corpus totals.

use crate::words::{lookup, order, split_whitespace, Cooked, NGram, Vocab, MAX_N};

const TINY: f64 = 1e-15;
const SMALL: f64 = 1e-9;

/// What BLEU needs from one image (`cook_test` in the reference).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BleuStats {
    pub test_len: usize,
    pub ref_len: usize,
    pub guess: [usize; MAX_N],
    pub correct: [usize; MAX_N],
}

/// Statistics for one candidate against its references, from word counts and n-gram counts
/// (Python `split()` words) computed once per caption.
pub(crate) fn stats(candidate: &Cooked, references: &[Cooked]) -> BleuStats {
    let mut all: Vec<(NGram, u32)> = references
        .iter()
        .flat_map(|r| r.counts.iter().copied())
        .collect();
    all.sort_unstable();
    // Keep the maximum count of each n-gram over the references.
    let mut merged: Vec<(NGram, u32)> = Vec::with_capacity(all.len());
    for (g, c) in all {
        match merged.last_mut() {
            Some((last, m)) if *last == g => *m = (*m).max(c),
            _ => merged.push((g, c)),
        }
    }
    let test_len = candidate.len;
    // `min((abs(l - testlen), l) for l in reflen)[1]`: closest, ties to the shorter.
    let ref_len = references
        .iter()
        .map(|r| (r.len.abs_diff(test_len), r.len))
        .min()
        .map_or(0, |(_, l)| l);
    let mut guess = [0; MAX_N];
    for (k, g) in guess.iter_mut().enumerate() {
        *g = test_len.saturating_sub(k);
    }
    let mut correct = [0; MAX_N];
    for &(g, c) in &candidate.counts {
        let clip = lookup(&merged, g).unwrap_or(0);
        correct[order(g)] += c.min(clip) as usize;
    }
    BleuStats {
        test_len,
        ref_len,
        guess,
        correct,
    }
}

/// BLEU-1..4 from (summed) statistics, exactly as the reference's `compute_score` does it.
fn score(test_len: f64, ref_len: f64, guess: &[f64; MAX_N], correct: &[f64; MAX_N]) -> [f64; 4] {
    let mut out = [0.0; MAX_N];
    let mut bleu = 1.0;
    for k in 0..MAX_N {
        bleu *= (correct[k] + TINY) / (guess[k] + SMALL);
        out[k] = bleu.powf(1.0 / (k as f64 + 1.0));
    }
    let ratio = (test_len + TINY) / (ref_len + SMALL);
    if ratio < 1.0 {
        let penalty = (1.0 - 1.0 / ratio).exp();
        for v in &mut out {
            *v *= penalty;
        }
    }
    out
}

/// Per-image BLEU-1..4 for one image's statistics.
pub(crate) fn image_score(s: &BleuStats) -> [f64; 4] {
    let f = |a: [usize; MAX_N]| a.map(|v| v as f64);
    score(
        s.test_len as f64,
        s.ref_len as f64,
        &f(s.guess),
        &f(s.correct),
    )
}

/// Corpus BLEU-1..4: n-gram counts and lengths summed over images, then one brevity penalty.
pub(crate) fn corpus_score(all: &[BleuStats]) -> [f64; 4] {
    let mut test_len = 0usize;
    let mut ref_len = 0usize;
    let mut guess = [0usize; MAX_N];
    let mut correct = [0usize; MAX_N];
    for s in all {
        test_len += s.test_len;
        ref_len += s.ref_len;
        for k in 0..MAX_N {
            guess[k] += s.guess[k];
            correct[k] += s.correct[k];
        }
    }
    let f = |a: [usize; MAX_N]| a.map(|v| v as f64);
    score(test_len as f64, ref_len as f64, &f(guess), &f(correct))
}

/// One image's references, split and counted once, for scoring many candidates against them
/// one at a time, as a self-critical reward does. Each score is the per-image BLEU-1..4 that
/// pycocoevalcap reports for that image (`Bleu(4).compute_score`'s second value), brevity
/// penalty included.
///
/// ```
/// use captioner_metrics::BleuReferences;
/// let refs = BleuReferences::new(&["a dog runs on the grass", "a brown dog is running"]);
/// let [b1, _, _, b4] = refs.score("a dog runs on the grass");
/// assert!((b1 - 1.0).abs() < 1e-9 && (b4 - 1.0).abs() < 1e-9);
/// assert!(refs.score("a cat")[0] < 0.5);
/// ```
#[derive(Clone, Debug)]
pub struct BleuReferences {
    vocab: Vocab,
    references: Vec<Cooked>,
}

/// The id of every word no reference has: such words match nothing, so one id serves them all.
const UNSEEN: u32 = u32::MAX;

impl BleuReferences {
    /// Splits (Python `str.split()`) and counts already tokenised references.
    pub fn new<S: AsRef<str>>(references: &[S]) -> Self {
        let mut vocab = Vocab::default();
        let references = references
            .iter()
            .map(|r| Cooked::new(&vocab.ids(r.as_ref())))
            .collect();
        Self { vocab, references }
    }

    /// BLEU-1..4 of one tokenised candidate (all zero without references).
    pub fn score(&self, candidate: &str) -> [f64; 4] {
        if self.references.is_empty() {
            return [0.0; 4];
        }
        let ids: Vec<u32> = split_whitespace(candidate)
            .map(|w| self.vocab.get(w).unwrap_or(UNSEEN))
            .collect();
        image_score(&stats(&Cooked::new(&ids), &self.references))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(c: &[u32], refs: &[Vec<u32>]) -> BleuStats {
        let refs: Vec<Cooked> = refs.iter().map(|r| Cooked::new(r)).collect();
        super::stats(&Cooked::new(c), &refs)
    }

    #[test]
    fn identical_is_one() {
        let s = stats(&[1, 2, 3, 4, 5], &[vec![1, 2, 3, 4, 5]]);
        for v in image_score(&s) {
            assert!((v - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn closest_length_ties_to_shorter() {
        let s = stats(&[1, 2, 3], &[vec![1, 2], vec![1, 2, 3, 4]]);
        assert_eq!(s.ref_len, 2);
    }

    #[test]
    fn prepared_references_score_as_one_image_of_an_evaluation() {
        let refs = ["a dog runs on the grass", "a brown dog is running fast"];
        let candidates = [
            "a dog runs",
            "a zebra a zebra runs on grass",
            "a dog is running fast",
        ];
        let prepared = BleuReferences::new(&refs);
        for c in candidates {
            let whole = crate::evaluate_tokenized(&[refs.to_vec()], &[c]).unwrap();
            assert_eq!(prepared.score(c), whole.per_image[0].bleu, "{c}");
        }
        assert_eq!(BleuReferences::new::<&str>(&[]).score("a dog"), [0.0; 4]);
    }

    #[test]
    fn clipping() {
        let s = stats(&[1, 1, 1], &[vec![1, 2]]);
        assert_eq!(s.correct[0], 1);
    }
}
