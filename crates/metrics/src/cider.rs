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

use crate::words::{
    lookup, order, split_spaces, split_whitespace, Cooked, FxHashMap, NGram, Vocab, MAX_N,
};
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
///
/// All text is *tokenised* (tokens joined by spaces, as [`crate::tokenizer::tokenize`] returns
/// it). With document frequencies from the evaluated set's own references, scores equal
/// pycocoevalcap's `Cider` (that is what [`crate::evaluate`] does); from the training
/// references, it is the usual CIDEr-D reward of self-critical training.
///
/// ```
/// use captioner_metrics::{tokenizer::tokenize_all, CiderD};
/// let train: Vec<Vec<String>> = vec![
///     tokenize_all(&["A dog runs on the grass.", "A brown dog is running."]),
///     tokenize_all(&["Two children play in a fountain.", "Kids splash in the water."]),
///     tokenize_all(&["A man rides a bike.", "A cyclist on a road."]),
/// ];
/// let cider = CiderD::from_references(&train).unwrap();
/// let refs = cider.prepare(&train[0]); // once per image
/// let good = cider.score("a dog runs on the grass", &refs);
/// let bad = cider.score("a man rides a bike", &refs);
/// assert!(good > bad);
/// ```
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
        let mut vocab = Vocab::default();
        let cooked: Vec<Vec<Cooked>> = references
            .iter()
            .map(|refs| {
                refs.iter()
                    .map(|r| Cooked::new(&vocab.ids(r.as_ref())))
                    .collect()
            })
            .collect();
        Self::from_cooked(vocab, &cooked)
    }

    /// Document frequencies from references already turned into n-gram counts with `vocab`.
    pub(crate) fn from_cooked(
        vocab: Vocab,
        references: &[Vec<Cooked>],
    ) -> Result<Self, MetricsError> {
        if references.is_empty() {
            return Err(MetricsError::Empty);
        }
        let mut doc_freq: FxHashMap<NGram, f64> = FxHashMap::default();
        let mut seen: Vec<NGram> = Vec::new();
        for refs in references {
            seen.clear();
            seen.extend(refs.iter().flat_map(|r| r.counts.iter().map(|&(g, _)| g)));
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

    /// Word ids of Python `split()` words; words outside the vocabulary get ids from `unseen`
    /// (shared between a candidate and its references so that they still match each other).
    pub(crate) fn word_ids(&self, text: &str, unseen: &mut FxHashMap<String, u32>) -> Vec<u32> {
        split_whitespace(text)
            .map(|w| self.id_or_unseen(w, unseen))
            .collect()
    }

    /// Like [`CiderD::word_ids`] for ROUGE-L's `split(" ")` words.
    pub(crate) fn space_word_ids(
        &self,
        text: &str,
        unseen: &mut FxHashMap<String, u32>,
    ) -> Vec<u32> {
        split_spaces(text)
            .map(|w| self.id_or_unseen(w, unseen))
            .collect()
    }

    fn id_or_unseen(&self, w: &str, unseen: &mut FxHashMap<String, u32>) -> u32 {
        if let Some(id) = self.vocab.get(w) {
            return id;
        }
        if let Some(&id) = unseen.get(w) {
            return id;
        }
        let id = self.vocab.len() as u32 + 1 + unseen.len() as u32;
        unseen.insert(w.to_owned(), id);
        id
    }

    fn vector(&self, cooked: &Cooked) -> TfIdf {
        let mut norms = [0.0; MAX_N];
        let mut length = 0.0;
        let weights: Vec<(NGram, f64)> = cooked
            .counts
            .iter()
            .map(|&(g, tf)| {
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

    /// Prepared references from n-gram counts computed with this scorer's ids.
    pub(crate) fn prepare_cooked(&self, references: &[Cooked]) -> PreparedRefs {
        PreparedRefs {
            vectors: references.iter().map(|r| self.vector(r)).collect(),
            unseen: FxHashMap::default(),
        }
    }

    /// CIDEr-D of a cooked candidate (ids consistent with `references`).
    pub(crate) fn score_cooked(&self, candidate: &Cooked, references: &PreparedRefs) -> f64 {
        if references.vectors.is_empty() {
            return 0.0;
        }
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

    /// Turn one image's tokenised references into vectors for [`CiderD::score`].
    pub fn prepare<S: AsRef<str>>(&self, references: &[S]) -> PreparedRefs {
        let mut unseen = FxHashMap::default();
        let vectors = references
            .iter()
            .map(|r| {
                let ids = self.word_ids(r.as_ref(), &mut unseen);
                self.vector(&Cooked::new(&ids))
            })
            .collect();
        PreparedRefs { vectors, unseen }
    }

    /// CIDEr-D of one tokenised candidate against prepared references (0 without references).
    pub fn score(&self, candidate: &str, references: &PreparedRefs) -> f64 {
        let mut unseen = references.unseen.clone();
        let ids = self.word_ids(candidate, &mut unseen);
        self.score_cooked(&Cooked::new(&ids), references)
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
