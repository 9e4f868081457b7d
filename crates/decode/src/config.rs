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
