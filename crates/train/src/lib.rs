//! Step three of the pipeline, continued: training decoders on cached image features.
//!
//! [`Preset`] (a TOML file in `configs/`) says what to train; [`train`] runs the epoch loop with
//! validation, checkpoints and resume, reporting to an [`Observer`] (the CLI's progress bar) and
//! to `log.jsonl` + `loss.png` / `metrics.png` in the run directory.
//!
//! A run directory holds:
//! - `preset.toml`, the preset as run;
//! - `last/`, a model bundle plus `optimizer.safetensors` and `trainer.json` (written every
//!   `checkpoint_every` steps and at each epoch end, atomically), from which `--resume` goes on;
//! - `best/`, the bundle with the best validation CIDEr-D so far;
//! - `log.jsonl`, `loss.png`, `metrics.png`.
//!
//! With an `[scst]` section the same loop fine-tunes a trained model by self-critical sequence
//! training (sampled captions, CIDEr-D reward, REINFORCE with a baseline; see `scst.rs`). With
//! `[train] scheduled_sampling` ordinary training feeds some of the model's own predicted words
//! as inputs (see `scheduled_sampling.rs`).

mod charts;
mod checkpoint;
mod data;
mod predict;
pub mod preset;
mod schedule;
mod scheduled_sampling;
mod scst;
mod trainer;

pub use data::{open_cache, FeatureRows, FeatureSource, TrainData};
pub use predict::caption_cached;
pub use preset::{
    Baseline, DataConfig, OptimizerKind, Preset, Sampling, Schedule, ScheduledSampling, ScstConfig,
    TrainConfig,
};
pub use trainer::{
    epoch_dir, train, EpochReport, NullObserver, Observer, RunOptions, RunOutcome, StepReport,
};

use std::path::PathBuf;

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A preset that does not parse or has values out of range.
    #[error("preset {path}: {message}")]
    Preset {
        /// The preset file.
        path: PathBuf,
        /// What is wrong, with line and field.
        message: String,
    },
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Dataset, cache or vocabulary problems.
    #[error("{0}")]
    Data(String),
    /// From the decoder.
    #[error(transparent)]
    Decode(#[from] captioner_decode::DecodeError),
    /// From the optimiser.
    #[error(transparent)]
    Kernel(#[from] captioner_decode::KernelError),
    /// From generation during validation.
    #[error(transparent)]
    Generate(#[from] captioner_generate::GenerateError),
    /// The loss stopped being a number.
    #[error(
        "the training loss became {value} at step {step} (epoch {epoch}); stopped. The last good \
         checkpoint is kept in {last}; lower the learning rate or enable grad_clip and resume"
    )]
    NonFinite {
        /// Global step.
        step: u64,
        /// Epoch (1-based).
        epoch: u32,
        /// The loss value.
        value: f32,
        /// The kept checkpoint.
        last: PathBuf,
    },
    /// `--resume` without a checkpoint, or a checkpoint that does not match the preset.
    #[error("cannot resume: {0}")]
    Resume(String),
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}
