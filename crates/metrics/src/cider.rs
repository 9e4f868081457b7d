//! CIDEr-D as `pycocoevalcap/cider/cider_scorer.py` (pycocoevalcap 1.2; Vedantam et al., CVPR
//! 2015) computes it: 1..4-gram tf-idf vectors, document frequency over the reference sets,
//! clipped cosine similarity (`min(hyp, ref) * ref`), the Gaussian length penalty with
//! sigma 6, the mean over n and references, times 10.
//!
//! The length in the penalty is the reference code's: the number of *bigrams* of a caption
//! (`if n == 1: length += term_freq` with 0-based `n`), i.e. words minus one. Copied as is
//! because it changes scores.
//!
//! [`CiderD`] is the incremental form: document frequencies fixed once (for example from the
//! training references, for a reward or for model selection), captions scored one at a time.

use crate::words::{lookup, ngram_counts, order, split_whitespace, FxHashMap, NGram, Vocab, MAX_N};
use crate::MetricsError;

const SIGMA: f64 = 6.0;

/// A caption's tf-idf vector (`counts2vec`): sorted `(n-gram, weight)`, norms per order, and
/// its length as the reference defines it.
#[derive(Clone, Debug)]
struct TfIdf {
    weights: Vec<(NGram, f64)>,
    norms: [f64; MAX_N],
    length: f64,
}

/// References of one image, turned into tf-idf vectors once so that many candidates (beam
/// hypotheses, samples, epochs) can be scored against them cheaply.
#[derive(Clone, Debug)]
pub struct PreparedRefs {
    vectors: Vec<TfIdf>,
    /// Ids for words the document frequencies have never seen; shared with the candidate so
    /// that an unseen word still matches itself.
    unseen: FxHashMap<String, u32>,
}

impl PreparedRefs {
    /// Number of references.
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    /// True when there are no references (every candidate then scores 0).
    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }
}

/// CIDEr-D with fixed document frequencies.
#[derive(Clone, Debug)]
pub struct CiderD {
    vocab: Vocab,
    doc_freq: FxHashMap<NGram, f64>,
    /// `log(number of reference sets)`, the reference's `ref_len`.
    log_docs: f64,
    num_docs: usize,
}

impl CiderD {
    /// Document frequencies from reference sets: each inner list is one image's *tokenised*
    /// references (see [`crate::tokenizer`]), and an n-gram counts once per image that has it.
    pub fn from_references<S: AsRef<str>>(references: &[Vec<S>]) -> Result<Self, MetricsError> {
        if references.is_empty() {
            return Err(MetricsError::Empty);
        }
        let mut vocab = Vocab::default();
        let mut doc_freq: FxHashMap<NGram, f64> = FxHashMap::default();
        let mut seen: Vec<NGram> = Vec::new();
        for refs in references {
            seen.clear();
            for r in refs {
                let ids = vocab.ids(r.as_ref());
                seen.extend(ngram_counts(&ids).into_iter().map(|(g, _)| g));
            }
            seen.sort_unstable();
            seen.dedup();
            for &g in &seen {
                *doc_freq.entry(g).or_insert(0.0) += 1.0;
            }
        }
        Ok(Self {
            vocab,
            doc_freq,
            log_docs: (references.len() as f64).ln(),
            num_docs: references.len(),
        })
    }

    /// How many reference sets the document frequencies come from.
    pub fn num_documents(&self) -> usize {
        self.num_docs
    }

    fn word_ids(&self, text: &str, unseen: &mut FxHashMap<String, u32>) -> Vec<u32> {
        let base = self.vocab.len() as u32;
        split_whitespace(text)
            .map(|w| match self.vocab.get(w) {
                Some(id) => id,
                None => {
                    let next = base + 1 + unseen.len() as u32;
                    *unseen.entry(w.to_owned()).or_insert(next)
                }
            })
            .collect()
    }

    fn vector(&self, words: &[u32]) -> TfIdf {
        let mut norms = [0.0; MAX_N];
        let mut length = 0.0;
        let weights: Vec<(NGram, f64)> = ngram_counts(words)
            .into_iter()
            .map(|(g, tf)| {
                let df = self.doc_freq.get(&g).copied().unwrap_or(0.0);
                let n = order(g);
                let w = f64::from(tf) * (self.log_docs - df.max(1.0).ln());
                norms[n] += w * w;
                if n == 1 {
                    length += f64::from(tf);
                }
                (g, w)
            })
            .collect();
        TfIdf {
            weights,
            norms: norms.map(f64::sqrt),
            length,
        }
    }

    /// Turn one image's tokenised references into vectors for [`CiderD::score`].
    pub fn prepare<S: AsRef<str>>(&self, references: &[S]) -> PreparedRefs {
        let mut unseen = FxHashMap::default();
        let vectors = references
            .iter()
            .map(|r| {
                let ids = self.word_ids(r.as_ref(), &mut unseen);
                self.vector(&ids)
            })
            .collect();
        PreparedRefs { vectors, unseen }
    }

    /// CIDEr-D of one tokenised candidate against prepared references (0 without references).
    pub fn score(&self, candidate: &str, references: &PreparedRefs) -> f64 {
        if references.vectors.is_empty() {
            return 0.0;
        }
        let mut unseen = references.unseen.clone();
        let ids = self.word_ids(candidate, &mut unseen);
        self.score_ids(&ids, references)
    }

    fn score_ids(&self, candidate: &[u32], references: &PreparedRefs) -> f64 {
        let hyp = self.vector(candidate);
        let mut total = [0.0; MAX_N];
        for r in &references.vectors {
            let sim = similarity(&hyp, r);
            for n in 0..MAX_N {
                total[n] += sim[n];
            }
        }
        let mean = total.iter().sum::<f64>() / MAX_N as f64;
        mean / references.vectors.len() as f64 * 10.0
    }

    /// Convenience: [`CiderD::prepare`] then [`CiderD::score`].
    pub fn score_against<S: AsRef<str>>(&self, candidate: &str, references: &[S]) -> f64 {
        self.score(candidate, &self.prepare(references))
    }
}

/// `sim` in the reference: clipped cosine per order times the length penalty.
fn similarity(hyp: &TfIdf, r: &TfIdf) -> [f64; MAX_N] {
    let mut val = [0.0; MAX_N];
    for &(g, wh) in &hyp.weights {
        if let Some(wr) = lookup(&r.weights, g) {
            val[order(g)] += wh.min(wr) * wr;
        }
    }
    let delta = hyp.length - r.length;
    let penalty = std::f64::consts::E.powf(-(delta * delta) / (2.0 * SIGMA * SIGMA));
    for (n, v) in val.iter_mut().enumerate() {
        if hyp.norms[n] != 0.0 && r.norms[n] != 0.0 {
            *v /= hyp.norms[n] * r.norms[n];
        }
        *v *= penalty;
    }
    val
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unseen_words_match_themselves() {
        let cider = CiderD::from_references(&[vec!["a b c"], vec!["d e f"], vec!["g h"]]).unwrap();
        let refs = cider.prepare(&["zebra quagga okapi"]);
        assert!(cider.score("zebra quagga okapi", &refs) > 0.0);
        assert_eq!(cider.score("lion tiger bear", &refs), 0.0);
    }

    #[test]
    fn empty_candidate_scores_zero() {
        let cider = CiderD::from_references(&[vec!["a b c"], vec!["d e f"]]).unwrap();
        assert_eq!(cider.score_against("", &["a b c"]), 0.0);
    }
}
