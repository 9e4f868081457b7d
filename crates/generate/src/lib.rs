//! Step four of the pipeline: captions from any [`Decoder`].
//!
//! [`generate`] runs greedy search, beam search or sampling over a batch of images and returns,
//! per image, its best hypotheses (word ids without `<start>` / `<end>`, summed log-probability,
//! length-penalised score and, for attention decoders, the attention map behind every word).
//! Beam search is batched: the beams of all images are the rows of one [`DecodeState`], reordered
//! with [`DecodeState::select`] after each step, so the decoder runs one batched step per word.
//! Every strategy honours the same constraints ([`GenerateConfig`]): `min_words`, `max_words`,
//! `no_repeat_ngram`, `suppress_unk`; `<pad>` and `<start>` are never generated.
//!
//! [`heatmap`] draws the attention maps over the image, one panel per word.
//!
//! [`DecodeState`]: captioner_decode::DecodeState
//! [`DecodeState::select`]: captioner_decode::DecodeState::select

mod beam;
mod config;
mod constraints;
mod error;
pub mod font;
pub mod heatmap;
pub mod pipeline;
mod single;
mod topk;

pub use config::{GenerateConfig, LengthPenalty, Strategy};
pub use error::GenerateError;
pub use heatmap::{attention_panel, inferno, overlay_heatmap, upsample_bilinear};

use captioner_decode::model::{END_ID, UNK_ID};
use captioner_decode::{DecodeState, Decoder, Features};
use serde::{Deserialize, Serialize};

/// One generated caption.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hypothesis {
    /// Word ids, without `<start>` and `<end>`.
    pub tokens: Vec<u32>,
    /// Summed log-probability of the scored tokens: the words, plus `<end>` when `finished`.
    pub log_prob: f32,
    /// The score hypotheses are ranked by: `log_prob` after the beam's [`LengthPenalty`]
    /// (`log_prob` itself for greedy search and sampling).
    pub score: f32,
    /// `true` when the decoder emitted `<end>`; `false` when the caption was cut at `max_words`
    /// (or, in a degenerate vocabulary, when every possible next word was banned).
    pub finished: bool,
    /// With [`GenerateConfig::return_attention`]: per word, the attention weights over the `P`
    /// grid cells of the step that produced it.
    pub attention: Option<Vec<Vec<f32>>>,
}

/// What every strategy needs about one call.
pub(crate) struct Run<'a, 'f> {
    decoder: &'a dyn Decoder,
    feats: &'a Features<'f>,
    images: usize,
    vocab: usize,
    /// Grid cells when attention is returned, else 0.
    cells: usize,
    max_words: usize,
    bans: constraints::Bans,
}

impl Run<'_, '_> {
    fn start(&self) -> Result<Box<dyn DecodeState + '_>, GenerateError> {
        let state = self.decoder.start(self.feats)?;
        if state.rows() != self.images {
            return Err(GenerateError::Shape(format!(
                "the {} decoder started {} rows for {} images",
                self.decoder.kind(),
                state.rows(),
                self.images
            )));
        }
        Ok(state)
    }
}

/// Generates captions for every image of `feats`: one `Vec` per image, best first (one hypothesis
/// for greedy search and sampling, up to `top_k_hypotheses` for beam search; never empty).
///
/// A hypothesis that never emits `<end>` is returned cut at `max_words` words. Errors come from
/// the decoder, from settings out of range, from NaN log-probabilities, or from asking attention
/// of a decoder without it.
pub fn generate(
    decoder: &dyn Decoder,
    feats: &Features,
    cfg: &GenerateConfig,
) -> Result<Vec<Vec<Hypothesis>>, GenerateError> {
    cfg.validate()?;
    feats.validate()?;
    let vocab = decoder.vocab_size();
    if vocab <= END_ID.max(UNK_ID) as usize {
        return Err(GenerateError::Shape(format!(
            "a vocabulary of {vocab} has no room for words after the special tokens"
        )));
    }
    let cells = if cfg.return_attention {
        if !decoder.has_attention() || feats.spatial.is_none() || feats.cells == 0 {
            return Err(GenerateError::NoAttention(decoder.kind()));
        }
        feats.cells
    } else {
        0
    };
    if feats.batch == 0 {
        return Ok(Vec::new());
    }
    let run = Run {
        decoder,
        feats,
        images: feats.batch,
        vocab,
        cells,
        max_words: cfg.max_words,
        bans: constraints::Bans {
            min_words: cfg.min_words,
            no_repeat_ngram: cfg.no_repeat_ngram,
            suppress_unk: cfg.suppress_unk,
        },
    };
    match cfg.strategy {
        Strategy::Greedy => single::single_path(&run, &mut single::Greedy),
        Strategy::Beam {
            size,
            length_penalty,
            top_k_hypotheses,
        } => beam::beam_search(
            &run,
            &beam::BeamOptions {
                size,
                penalty: length_penalty,
                top_k: top_k_hypotheses,
            },
        ),
        Strategy::Sample {
            temperature,
            top_k,
            top_p,
            seed,
        } => single::single_path(
            &run,
            &mut single::Sampler::new(feats.batch, temperature, top_k, top_p, seed),
        ),
    }
}
