//! The `last/` checkpoint: a model bundle plus the optimiser state and the trainer's counters,
//! written as one directory swap so a run killed at any moment resumes from a consistent state.

use crate::{io_err, TrainError};
use captioner_data::Vocab;
use captioner_decode::bundle::{self, BundleConfig, WeightDtype};
use captioner_decode::optim::OptimizerState;
use captioner_decode::Decoder;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_FILE: &str = "trainer.json";

/// Counters that, with the weights and the optimiser state, determine the rest of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimiser steps taken.
    pub global_step: u64,
    /// Epoch in progress (0-based).
    pub epoch: u32,
    /// Batches of that epoch already trained on.
    pub batch_in_epoch: usize,
    /// Product of the plateau schedule's cuts so far.
    pub plateau_scale: f32,
    /// Epochs since the plateau schedule last improved or cut.
    pub plateau_wait: u32,
    /// Best validation CIDEr-D so far, and its epoch (1-based).
    pub best_cider: Option<f64>,
    /// See `best_cider`.
    pub best_epoch: Option<u32>,
    /// Epochs since the best one.
    pub epochs_since_best: u32,
    /// Training seconds before this process (resumed runs add up).
    pub seconds: f64,
    /// Sum of training losses and tokens in the current epoch (for the epoch's mean loss).
    pub epoch_loss_sum: f64,
    /// See `epoch_loss_sum`.
    pub epoch_tokens: u64,
    /// SCST: sum of the current epoch's sample rewards, and the number of samples.
    #[serde(default)]
    pub epoch_reward_sum: f64,
    /// See `epoch_reward_sum`.
    #[serde(default)]
    pub epoch_samples: u64,
    /// Whether the run ended (all epochs or early stopping).
    pub finished: bool,
}

/// Where `last/` lives, and the fallback left by a swap that was interrupted.
pub(crate) fn last_dir(run: &Path) -> PathBuf {
    run.join("last")
}

pub(crate) fn save_last(
    run: &Path,
    config: &BundleConfig,
    decoder: &dyn Decoder,
    vocab: &Vocab,
    optimizer: &OptimizerState,
    state: &TrainerState,
) -> Result<(), TrainError> {
    bundle::replace_dir_atomically(&last_dir(run), |tmp| {
        bundle::write_files(tmp, config, decoder, vocab, WeightDtype::F32)?;
        let opt_bytes = optimizer_bytes(optimizer)
            .map_err(|m| captioner_decode::DecodeError::Config(format!("optimizer state: {m}")))?;
        let p = tmp.join(OPTIMIZER_FILE);
        std::fs::write(&p, opt_bytes).map_err(|source| captioner_decode::DecodeError::Io {
            path: p.clone(),
            source,
        })?;
        let p = tmp.join(STATE_FILE);
        let json = serde_json::to_string_pretty(state)
            .map_err(|e| captioner_decode::DecodeError::Config(e.to_string()))?;
        std::fs::write(&p, json).map_err(|source| captioner_decode::DecodeError::Io {
            path: p.clone(),
            source,
        })
    })?;
    Ok(())
}

/// The checkpoint directory to resume from: `last/`, or the old copy a killed swap left behind.
pub(crate) fn find_last(run: &Path) -> Option<PathBuf> {
    let last = last_dir(run);
    if last.join(STATE_FILE).is_file() {
        return Some(last);
    }
    let old = run.join(".last.old");
    old.join(STATE_FILE).is_file().then_some(old)
}

/// Loads `trainer.json` and `optimizer.safetensors` from a checkpoint directory.
pub(crate) fn load_state(dir: &Path) -> Result<(TrainerState, OptimizerState), TrainError> {
    let p = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
    let state: TrainerState = serde_json::from_str(&text)
        .map_err(|e| TrainError::Resume(format!("{}: {e}", p.display())))?;
    let p = dir.join(OPTIMIZER_FILE);
    let bytes = std::fs::read(&p).map_err(io_err(&p))?;
    let opt =
        parse_optimizer(&bytes).map_err(|m| TrainError::Resume(format!("{}: {m}", p.display())))?;
    Ok((state, opt))
}

fn optimizer_bytes(state: &OptimizerState) -> Result<Vec<u8>, String> {
    let bufs: Vec<(String, Vec<u8>, usize)> = state
        .buffers
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, v)| {
            (
                n.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                v.len(),
            )
        })
        .collect();
    let views = bufs
        .iter()
        .map(|(n, b, len)| {
            safetensors::tensor::TensorView::new(Dtype::F32, vec![*len], b)
                .map(|v| (n.clone(), v))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let meta = std::collections::HashMap::from([("step".to_string(), state.step.to_string())]);
    safetensors::serialize(views, Some(meta)).map_err(|e| e.to_string())
}

fn parse_optimizer(bytes: &[u8]) -> Result<OptimizerState, String> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let step = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("step"))
        .and_then(|s| s.parse().ok())
        .ok_or("no step count in the metadata")?;
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let mut buffers = Vec::new();
    for (name, view) in tensors.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(format!("`{name}` is not f32"));
        }
        let v = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        buffers.push((name, v));
    }
    Ok(OptimizerState { step, buffers })
}

/// Restores an optimiser state that skipped empty (disabled) buffers when saved.
pub(crate) fn fill_missing(mut loaded: OptimizerState, fresh: &OptimizerState) -> OptimizerState {
    for (name, buf) in &fresh.buffers {
        if !loaded.buffers.iter().any(|(n, _)| n == name) {
            loaded.buffers.push((name.clone(), vec![0.0; buf.len()]));
        }
    }
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimizer_state_round_trips_bit_exactly() {
        let state = OptimizerState {
            step: 17,
            buffers: vec![
                ("exp_avg".into(), vec![1.0, -2.5, f32::MIN_POSITIVE]),
                ("exp_avg_sq".into(), vec![0.1, 0.2, 0.3]),
                ("unused".into(), vec![]),
            ],
        };
        let back = parse_optimizer(&optimizer_bytes(&state).unwrap()).unwrap();
        assert_eq!(back.step, 17);
        let mut names: Vec<_> = back.buffers.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        assert_eq!(names, ["exp_avg", "exp_avg_sq"]);
        let filled = fill_missing(back, &state);
        let get = |n: &str| {
            filled
                .buffers
                .iter()
                .find(|(k, _)| k == n)
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(get("exp_avg"), state.buffers[0].1);
        assert_eq!(get("unused"), Vec::<f32>::new());
    }
}
