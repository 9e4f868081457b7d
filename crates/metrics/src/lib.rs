//! Caption evaluation identical to the COCO caption evaluation code (pycocoevalcap 1.2,
//! <https://github.com/salaniz/pycocoevalcap>), in pure Rust with no Java: PTB tokenisation,
//! BLEU-1..4, ROUGE-L and CIDEr-D, at corpus level and per image, and METEOR 1.5 ([`meteor`],
//! which needs pycocoevalcap's METEOR data files at run time).
//!
//! ```
//! let references = vec![
//!     vec!["A dog runs on the grass.", "A brown dog is running."],
//!     vec!["Two children play in a fountain.", "Kids splash in the water."],
//! ];
//! let candidates = vec!["A dog is running on grass.", "Two kids play in the water."];
//! let scores = captioner_metrics::evaluate(&references, &candidates).unwrap();
//! assert!(scores.corpus.cider_d > 0.0 && scores.corpus.bleu[0] <= 1.0);
//! assert_eq!(scores.per_image.len(), 2);
//! ```
//!
//! Every number is checked against fixtures written by pycocoevalcap itself
//! (`scripts/metrics_fixtures.py`) to 1e-9.

mod bleu;
pub mod cider;
pub mod meteor;
mod rouge;
pub mod tokenizer;
mod words;

pub use bleu::BleuReferences;
pub use cider::{CiderD, PreparedRefs};

use rayon::prelude::*;
use serde::Serialize;

/// Errors from the metrics API. User data never makes the library panic.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetricsError {
    #[error("{references} reference sets but {candidates} candidates: they must pair up by index")]
    LengthMismatch {
        references: usize,
        candidates: usize,
    },
    #[error("image #{index} has no reference captions")]
    NoReferences { index: usize },
    #[error("nothing to evaluate: no images")]
    Empty,
}

/// The scores of one image, or the corpus scores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct MetricScores {
    /// BLEU-1..4 (`Bleu_1` .. `Bleu_4` in pycocoevalcap).
    pub bleu: [f64; 4],
    /// ROUGE-L (`ROUGE_L`).
    pub rouge_l: f64,
    /// CIDEr-D (`CIDEr`).
    pub cider_d: f64,
}

/// Corpus scores and per-image scores (in the order of the input).
///
/// Corpus BLEU is computed from counts summed over the corpus (not a mean of per-image BLEU);
/// corpus ROUGE-L and CIDEr-D are means over images, as in pycocoevalcap.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Scores {
    pub corpus: MetricScores,
    pub per_image: Vec<MetricScores>,
}

/// Tokenise raw captions as pycocoevalcap does (references in one tokenizer call, candidates
/// in another, both in image order) and score them. `references[i]` are the references of the
/// image whose candidate is `candidates[i]`. An empty candidate is scored (0), not an error.
pub fn evaluate<R: AsRef<str> + Sync, C: AsRef<str> + Sync>(
    references: &[Vec<R>],
    candidates: &[C],
) -> Result<Scores, MetricsError> {
    let (refs, cands) = tokenize_pairs(references, candidates)?;
    evaluate_tokenized(&refs, &cands)
}

/// Checks the shapes and tokenises as pycocoevalcap does: all references in one tokenizer
/// call, all candidates in another, both in image order.
#[allow(clippy::type_complexity)]
pub(crate) fn tokenize_pairs<R: AsRef<str> + Sync, C: AsRef<str> + Sync>(
    references: &[Vec<R>],
    candidates: &[C],
) -> Result<(Vec<Vec<String>>, Vec<String>), MetricsError> {
    check_shapes(
        references.iter().map(Vec::len),
        references.len(),
        candidates.len(),
    )?;
    let flat: Vec<&str> = references.iter().flatten().map(AsRef::as_ref).collect();
    let mut tokenized = tokenizer::tokenize_all(&flat).into_iter();
    let refs: Vec<Vec<String>> = references
        .iter()
        .map(|r| tokenized.by_ref().take(r.len()).collect())
        .collect();
    Ok((refs, tokenizer::tokenize_all(candidates)))
}

/// Score captions that are already tokenised (tokens joined by spaces, as
/// [`tokenizer::tokenize`] returns them).
pub fn evaluate_tokenized<R: AsRef<str> + Sync, C: AsRef<str> + Sync>(
    references: &[Vec<R>],
    candidates: &[C],
) -> Result<Scores, MetricsError> {
    check_shapes(
        references.iter().map(Vec::len),
        references.len(),
        candidates.len(),
    )?;
    // Each caption is split and counted once; BLEU and CIDEr-D share the n-gram counts.
    let mut vocab = words::Vocab::default();
    let ids: Vec<Vec<Vec<u32>>> = references
        .iter()
        .map(|refs| refs.iter().map(|r| vocab.ids(r.as_ref())).collect())
        .collect();
    let cooked: Vec<Vec<words::Cooked>> = ids
        .par_iter()
        .map(|refs| refs.iter().map(|r| words::Cooked::new(r)).collect())
        .collect();
    let cider = CiderD::from_cooked(vocab, &cooked)?;
    // Images are independent once the document frequencies are known.
    let (per_image, bleu_stats): (Vec<MetricScores>, Vec<bleu::BleuStats>) = references
        .par_iter()
        .zip(&cooked)
        .zip(candidates)
        .map(|((refs, ref_cooked), cand)| {
            let cand = cand.as_ref();
            let mut unseen = Default::default();
            let cand_cooked = words::Cooked::new(&cider.word_ids(cand, &mut unseen));
            let stats = bleu::stats(&cand_cooked, ref_cooked);
            let ref_spaced: Vec<Vec<u32>> = refs
                .iter()
                .map(|r| cider.space_word_ids(r.as_ref(), &mut unseen))
                .collect();
            let cand_spaced = cider.space_word_ids(cand, &mut unseen);
            let scores = MetricScores {
                bleu: bleu::image_score(&stats),
                rouge_l: rouge::score(&cand_spaced, &ref_spaced),
                cider_d: cider.score_cooked(&cand_cooked, &cider.prepare_cooked(ref_cooked)),
            };
            (scores, stats)
        })
        .unzip();
    let n = per_image.len() as f64;
    let corpus = MetricScores {
        bleu: bleu::corpus_score(&bleu_stats),
        rouge_l: per_image.iter().map(|s| s.rouge_l).sum::<f64>() / n,
        cider_d: per_image.iter().map(|s| s.cider_d).sum::<f64>() / n,
    };
    Ok(Scores { corpus, per_image })
}

fn check_shapes(
    ref_counts: impl Iterator<Item = usize>,
    references: usize,
    candidates: usize,
) -> Result<(), MetricsError> {
    if references != candidates {
        return Err(MetricsError::LengthMismatch {
            references,
            candidates,
        });
    }
    if references == 0 {
        return Err(MetricsError::Empty);
    }
    for (index, count) in ref_counts.enumerate() {
        if count == 0 {
            return Err(MetricsError::NoReferences { index });
        }
    }
    Ok(())
}
