//! Decoder hyper-parameters, read from the `[model]` table of a preset (`configs/*.toml`) and
//! stored in every model bundle.

use crate::model::Decoder;
use crate::models::{gru_init, merge_lstm, sat, transformer};
use crate::DecodeError;
use serde::{Deserialize, Serialize};

/// Sizes that come from the data rather than the preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDims {
    /// Vocabulary size, specials included.
    pub vocab: usize,
    /// Image feature channels (1280 for EfficientNet-Lite0).
    pub feature_dim: usize,
    /// Spatial grid cells (49 for a 7x7 grid; 0 without a grid).
    pub cells: usize,
}

/// One of the four decoder architectures with its hyper-parameters; `kind` selects it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DecoderConfig {
    /// Image -> initial state of stacked GRUs (Hvass-Labs tutorial #22).
    GruInit(gru_init::GruInitConfig),
    /// "Merge" CNN + LSTM (image added to the LSTM output).
    MergeLstm(merge_lstm::MergeLstmConfig),
    /// "Show, Attend and Tell" soft attention LSTM.
    Sat(sat::SatConfig),
    /// Pre-LN Transformer decoder with cross-attention over the grid.
    Transformer(transformer::TransformerConfig),
}

impl DecoderConfig {
    /// The architecture's name as written in presets.
    pub fn kind(&self) -> &'static str {
        match self {
            DecoderConfig::GruInit(_) => "gru-init",
            DecoderConfig::MergeLstm(_) => "merge-lstm",
            DecoderConfig::Sat(_) => "sat",
            DecoderConfig::Transformer(_) => "transformer",
        }
    }

    /// Whether the architecture attends over the spatial grid (needs `extract --spatial`).
    pub fn needs_spatial(&self) -> bool {
        matches!(self, DecoderConfig::Sat(_) | DecoderConfig::Transformer(_))
    }

    /// A decoder with freshly initialised parameters (deterministic in `seed`).
    pub fn build(&self, dims: ModelDims, seed: u64) -> Result<Box<dyn Decoder>, DecodeError> {
        if dims.vocab < 5 || dims.feature_dim == 0 {
            return Err(DecodeError::Config(format!(
                "vocabulary of {} and feature size {} are too small",
                dims.vocab, dims.feature_dim
            )));
        }
        if self.needs_spatial() && dims.cells == 0 {
            return Err(DecodeError::Config(format!(
                "`{}` attends over a spatial grid, but the features have none \
                 (extract them with `captioner extract --spatial`)",
                self.kind()
            )));
        }
        Ok(match self {
            DecoderConfig::GruInit(c) => Box::new(gru_init::GruInit::new(c, dims, seed)?),
            DecoderConfig::MergeLstm(c) => Box::new(merge_lstm::MergeLstm::new(c, dims, seed)?),
            DecoderConfig::Sat(c) => Box::new(sat::Sat::new(c, dims, seed)?),
            DecoderConfig::Transformer(c) => {
                Box::new(transformer::Transformer::new(c, dims, seed)?)
            }
        })
    }
}

/// How beam search turns a hypothesis' summed log-probability into its score. Lives here, not in
/// `captioner-generate`, because a bundle records the one it was tuned with
/// ([`crate::bundle::BundleConfig::length_penalty`]).
///
/// The length `L` is the number of scored tokens: the words plus `<end>` for a finished caption,
/// the words alone for one cut at `max_words`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LengthPenalty {
    /// Score = summed log-probability (favours short captions).
    #[default]
    None,
    /// Score = mean log-probability per token, `log_prob / L`.
    Average,
    /// Wu et al. (2016, GNMT): `log_prob / ((5 + L) / 6)^alpha`, `alpha >= 0` (0.6 to 1 usual).
    Gnmt(f32),
}

impl LengthPenalty {
    /// The score of a hypothesis with summed log-probability `log_prob` over `len` tokens.
    pub fn score(self, log_prob: f32, len: usize) -> f32 {
        let len = len.max(1) as f32;
        match self {
            LengthPenalty::None => log_prob,
            LengthPenalty::Average => log_prob / len,
            LengthPenalty::Gnmt(alpha) => log_prob / ((5.0 + len) / 6.0).powf(alpha),
        }
    }

    /// Upper bound of the score of any hypothesis extending one with summed log-probability
    /// `log_prob`, finished with between `min_len` and `max_len` tokens (log-probabilities only
    /// decrease, and the penalty's divisor grows with the length).
    pub fn best_future(self, log_prob: f32, min_len: usize, max_len: usize) -> f32 {
        self.score(log_prob, min_len)
            .max(self.score(log_prob, max_len.max(min_len)))
    }
}

/// As `captioner caption --length-penalty` takes it: `none`, `average` or `gnmt:<alpha>`.
impl std::fmt::Display for LengthPenalty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LengthPenalty::None => f.write_str("none"),
            LengthPenalty::Average => f.write_str("average"),
            LengthPenalty::Gnmt(alpha) => write!(f, "gnmt:{alpha}"),
        }
    }
}

/// Reads what [`Display`](std::fmt::Display) writes (`avg` is accepted for `average`); `alpha`
/// must not be negative.
impl std::str::FromStr for LengthPenalty {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(LengthPenalty::None),
            "average" | "avg" => Ok(LengthPenalty::Average),
            _ => match s.strip_prefix("gnmt:").map(str::parse::<f32>) {
                Some(Ok(alpha)) if alpha >= 0.0 => Ok(LengthPenalty::Gnmt(alpha)),
                _ => Err(format!(
                    "`{s}`: expected none, average or gnmt:<alpha> (e.g. gnmt:0.7)"
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_reads_back() {
        for p in [
            LengthPenalty::None,
            LengthPenalty::Average,
            LengthPenalty::Gnmt(0.7),
        ] {
            assert_eq!(p.to_string().parse::<LengthPenalty>(), Ok(p));
        }
        assert_eq!("avg".parse(), Ok(LengthPenalty::Average));
        for bad in ["gnmt:-1", "gnmt:", "longest"] {
            let err = bad.parse::<LengthPenalty>().unwrap_err();
            assert!(
                err.contains("expected none, average or gnmt:<alpha>"),
                "{err}"
            );
        }
    }

    #[test]
    fn penalties() {
        assert_eq!(LengthPenalty::None.score(-6.0, 3), -6.0);
        assert_eq!(LengthPenalty::Average.score(-6.0, 3), -2.0);
        assert_eq!(LengthPenalty::Gnmt(1.0).score(-6.0, 1), -6.0);
        assert!((LengthPenalty::Gnmt(1.0).score(-6.0, 7) + 3.0).abs() < 1e-6);
        // The bound is never below the score at any length in range.
        for p in [
            LengthPenalty::None,
            LengthPenalty::Average,
            LengthPenalty::Gnmt(0.7),
        ] {
            for lp in [-3.0f32, 0.0, 1e-6] {
                let b = p.best_future(lp, 2, 9);
                for len in 2..=9 {
                    assert!(p.score(lp, len) <= b);
                }
            }
        }
    }
}
