//! Generation settings: the search strategy and the constraints every strategy honours.

pub use captioner_decode::LengthPenalty;

use crate::GenerateError;
use serde::{Deserialize, Serialize};

/// How captions are generated, and the constraints on them.
///
/// Serialises as (JSON) `{"strategy": {"beam": {"size": 3, "length_penalty": "none",
/// "top_k_hypotheses": 1}}, "min_words": 1, "max_words": 20, ...}`; every field has a default, so
/// `{"strategy": "greedy"}` or (TOML) `[strategy.beam]` + `size = 5` are complete settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateConfig {
    /// Search strategy.
    pub strategy: Strategy,
    /// `<end>` is forbidden until the caption has this many words.
    pub min_words: usize,
    /// Longest caption in words (`<end>` not counted). A hypothesis still running after this many
    /// words is returned as it is, with [`crate::Hypothesis::finished`] `false`.
    pub max_words: usize,
    /// Forbids any token that would repeat an n-gram of this size already in the caption
    /// (0 = off; 1 = no word twice; 3 is a common choice). `<start>` is not part of the n-grams.
    pub no_repeat_ngram: usize,
    /// Never generate `<unk>`.
    pub suppress_unk: bool,
    /// Return, per generated word, the attention weights over the grid cells (attention decoders
    /// only: asking another decoder is an error).
    pub return_attention: bool,
}

impl Default for GenerateConfig {
    /// Beam search of width 3 with no length penalty, 1 to 20 words.
    fn default() -> Self {
        Self {
            strategy: Strategy::default(),
            min_words: 1,
            max_words: 20,
            no_repeat_ngram: 0,
            suppress_unk: false,
            return_attention: false,
        }
    }
}

/// The search strategy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Strategy {
    /// The most likely next word at every step.
    Greedy,
    /// Beam search over all images of the batch at once.
    Beam {
        /// Beam width (hypotheses kept alive per image).
        #[serde(default = "default_beam_size")]
        size: usize,
        /// How finished hypotheses of different lengths are compared.
        #[serde(default)]
        length_penalty: LengthPenalty,
        /// Hypotheses returned per image, best first (1 ..= `size`).
        #[serde(default = "one")]
        top_k_hypotheses: usize,
    },
    /// Ancestral sampling, one caption per image.
    Sample {
        /// Divides the log-probabilities before sampling (< 1 sharper, > 1 flatter); > 0.
        #[serde(default = "one_f32")]
        temperature: f32,
        /// Sample only among the `top_k` most likely words (0 = all).
        #[serde(default)]
        top_k: usize,
        /// Nucleus sampling: only among the most likely words whose probabilities (after
        /// temperature and top-k) add up to `top_p`; in (0, 1], 1 = off.
        #[serde(default = "one_f32")]
        top_p: f32,
        /// Seed: image `i` of a call draws from stream `i` of `ChaCha8Rng::seed_from_u64(seed)`,
        /// so a caption depends only on the seed, the decoder and the image's place in the batch.
        #[serde(default)]
        seed: u64,
    },
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy::Beam {
            size: default_beam_size(),
            length_penalty: LengthPenalty::None,
            top_k_hypotheses: 1,
        }
    }
}

fn default_beam_size() -> usize {
    3
}
fn one() -> usize {
    1
}
fn one_f32() -> f32 {
    1.0
}

impl GenerateConfig {
    /// Checks every value is in range.
    pub fn validate(&self) -> Result<(), GenerateError> {
        let bad = |m: String| Err(GenerateError::Config(m));
        if self.max_words == 0 {
            return bad("max_words must be at least 1".into());
        }
        if self.min_words > self.max_words {
            return bad(format!(
                "min_words ({}) is larger than max_words ({})",
                self.min_words, self.max_words
            ));
        }
        match self.strategy {
            Strategy::Greedy => {}
            Strategy::Beam {
                size,
                length_penalty,
                top_k_hypotheses,
            } => {
                if size == 0 {
                    return bad("the beam size must be at least 1".into());
                }
                if top_k_hypotheses == 0 || top_k_hypotheses > size {
                    return bad(format!(
                        "top_k_hypotheses must be in 1..={size} (the beam size), not {top_k_hypotheses}"
                    ));
                }
                if let LengthPenalty::Gnmt(alpha) = length_penalty {
                    if !(alpha.is_finite() && alpha >= 0.0) {
                        return bad(format!(
                            "the GNMT length penalty alpha must be finite and >= 0, not {alpha}"
                        ));
                    }
                }
            }
            Strategy::Sample {
                temperature, top_p, ..
            } => {
                if !(temperature.is_finite() && temperature > 0.0) {
                    return bad(format!(
                        "the sampling temperature must be finite and > 0, not {temperature}"
                    ));
                }
                if !(top_p > 0.0 && top_p <= 1.0) {
                    return bad(format!("top_p must be in (0, 1], not {top_p}"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_beam_3_max_20() {
        let c = GenerateConfig::default();
        assert_eq!(c.max_words, 20);
        assert!(matches!(c.strategy, Strategy::Beam { size: 3, .. }));
        c.validate().unwrap();
    }

    #[test]
    fn rejects_out_of_range() {
        let mut c = GenerateConfig {
            max_words: 0,
            ..Default::default()
        };
        assert!(c.validate().is_err());
        c.max_words = 3;
        c.min_words = 4;
        assert!(c.validate().is_err());
        c.min_words = 0;
        c.strategy = Strategy::Beam {
            size: 2,
            length_penalty: LengthPenalty::Gnmt(-1.0),
            top_k_hypotheses: 1,
        };
        assert!(c.validate().is_err());
        c.strategy = Strategy::Beam {
            size: 2,
            length_penalty: LengthPenalty::None,
            top_k_hypotheses: 3,
        };
        assert!(c.validate().is_err());
        c.strategy = Strategy::Sample {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        };
        assert!(c.validate().is_err());
        c.strategy = Strategy::Sample {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.0,
            seed: 0,
        };
        assert!(c.validate().is_err());
    }
}
