//! Scheduled sampling (Bengio et al., NeurIPS 2015) in its parallel, two-pass form (Duckworth et
//! al. 2019, "Parallel Scheduled Sampling"): a teacher-forced pass without gradients predicts
//! every position from the reference prefix, and some reference input tokens are then replaced by
//! words sampled from those predictions before the ordinary teacher-forced training pass.
//!
//! The one-pass form would feed each step the word sampled at the previous step, which needs the
//! vocabulary projection inside the recurrence; the fused kernels project all steps at once
//! after it. The first pass runs through the generation interface ([`Decoder::start`]), so every
//! decoder gets scheduled sampling without a kernel of its own, with dropout off, as the words
//! are the model's predictions rather than training noise.

use crate::preset::ScheduledSampling;
use crate::TrainError;
use captioner_decode::model::{PAD_ID, UNK_ID};
use captioner_decode::{Decoder, Features, TeacherBatch};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::borrow::Cow;

/// The probability of replacing a reference input token at `step` (0-based) of `total_steps`,
/// `steps_per_epoch` steps an epoch: 0 through the warm-up epochs, then rising linearly to
/// `max_prob` at the last step.
pub(crate) fn replace_prob(
    cfg: &ScheduledSampling,
    step: u64,
    steps_per_epoch: u64,
    total_steps: u64,
) -> f32 {
    let warmup = cfg.warmup_epochs as u64 * steps_per_epoch;
    if step < warmup || total_steps <= warmup {
        return 0.0;
    }
    let progress = (step - warmup + 1) as f64 / (total_steps - warmup) as f64;
    cfg.max_prob * progress.min(1.0) as f32
}

/// The batch's input tokens (`[B, T]` row-major) with each non-padding input after the first
/// replaced, with probability `prob`, by a word drawn from the model's prediction for that
/// position given the reference words before it. `<pad>` is never drawn. With `prob == 0` the
/// inputs are borrowed unchanged (no copy on the plain training path) and neither the model nor
/// `rng` is used.
pub(crate) fn mix_inputs<'a>(
    decoder: &dyn Decoder,
    feats: &Features,
    batch: &TeacherBatch<'a>,
    prob: f32,
    rng: &mut ChaCha8Rng,
) -> Result<Cow<'a, [u32]>, TrainError> {
    let (rows, time) = (batch.batch, batch.time);
    if prob <= 0.0 || time < 2 {
        return Ok(Cow::Borrowed(batch.inputs));
    }
    // Which positions to replace is drawn first, so the model runs only as far as it must.
    let replace: Vec<bool> = (0..rows * time)
        .map(|i| i % time != 0 && batch.inputs[i] != PAD_ID && rng.random::<f32>() < prob)
        .collect();
    let Some(last) = (0..rows * time)
        .filter(|&i| replace[i])
        .map(|i| i % time)
        .max()
    else {
        return Ok(Cow::Borrowed(batch.inputs));
    };
    let mut mixed = batch.inputs.to_vec();
    let vocab = decoder.vocab_size();
    let mut state = decoder.start(feats)?;
    let mut log_probs = vec![0.0f32; rows * vocab];
    let mut column = vec![0u32; rows];
    for t in 0..last {
        for (b, c) in column.iter_mut().enumerate() {
            // Padding rows still need a valid token; their predictions are never used.
            *c = match batch.inputs[b * time + t] {
                PAD_ID => batch.inputs[b * time],
                tok => tok,
            };
        }
        state.step(&column, &mut log_probs, None)?;
        for b in 0..rows {
            let at = b * time + t + 1;
            if replace[at] {
                mixed[at] = draw(&log_probs[b * vocab..(b + 1) * vocab], rng);
            }
        }
    }
    Ok(Cow::Owned(mixed))
}

/// A word drawn from `log_probs` (one row of `log_softmax`), `<pad>` excluded.
fn draw(log_probs: &[f32], rng: &mut ChaCha8Rng) -> u32 {
    let weight = |i: usize, lp: f32| if i == PAD_ID as usize { 0.0 } else { lp.exp() };
    let total: f32 = log_probs
        .iter()
        .enumerate()
        .map(|(i, &lp)| weight(i, lp))
        .sum();
    let mut left = rng.random::<f32>() * total;
    let mut pick = None;
    for (i, &lp) in log_probs.iter().enumerate() {
        let w = weight(i, lp);
        if w > 0.0 {
            pick = Some(i);
            left -= w;
            if left <= 0.0 {
                break;
            }
        }
    }
    // Rounding can leave `left` a hair above 0 after the last word: that word is the pick. When
    // every probability underflowed, `<unk>`, which every vocabulary has.
    pick.map_or(UNK_ID, |i| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use captioner_decode::params::ParamSet;
    use captioner_decode::{DecodeError, DecodeState, PassOptions, PassStats};
    use rand::SeedableRng;
    use std::sync::Mutex;

    const VOCAB: usize = 9;

    /// Predicts, with certainty, the word after the one it is fed (`8` wraps to `1`, never
    /// `<pad>`), and records every column it is fed.
    struct Successor {
        params: ParamSet,
        fed: Mutex<Vec<Vec<u32>>>,
    }

    struct SuccessorState<'a>(&'a Successor, usize);

    impl Decoder for Successor {
        fn kind(&self) -> &'static str {
            "successor"
        }
        fn vocab_size(&self) -> usize {
            VOCAB
        }
        fn needs_spatial(&self) -> bool {
            false
        }
        fn params(&self) -> &ParamSet {
            &self.params
        }
        fn params_mut(&mut self) -> &mut ParamSet {
            &mut self.params
        }
        fn forward(
            &mut self,
            _: &Features,
            _: &TeacherBatch,
            _: &PassOptions,
            _: bool,
            _: &mut ChaCha8Rng,
        ) -> Result<PassStats, DecodeError> {
            Err(DecodeError::Config("not trained".into()))
        }
        fn start<'s>(&'s self, f: &Features) -> Result<Box<dyn DecodeState + 's>, DecodeError> {
            Ok(Box::new(SuccessorState(self, f.batch)))
        }
    }

    impl DecodeState for SuccessorState<'_> {
        fn rows(&self) -> usize {
            self.1
        }
        fn step(
            &mut self,
            tokens: &[u32],
            lp: &mut [f32],
            _: Option<&mut [f32]>,
        ) -> Result<(), DecodeError> {
            self.0
                .fed
                .lock()
                .map_err(|_| DecodeError::Config("poisoned".into()))?
                .push(tokens.to_vec());
            lp.fill(f32::NEG_INFINITY);
            for (row, &tok) in lp.chunks_exact_mut(VOCAB).zip(tokens) {
                row[tok as usize % (VOCAB - 1) + 1] = 0.0;
            }
            Ok(())
        }
        fn select(&mut self, _: &[usize]) -> Result<(), DecodeError> {
            Ok(())
        }
    }

    fn mix(inputs: &[u32], rows: usize, prob: f32, fed: &mut Vec<Vec<u32>>) -> Vec<u32> {
        let decoder = Successor {
            params: ParamSet::new(),
            fed: Mutex::new(Vec::new()),
        };
        let pooled = vec![0.0; rows];
        let feats = Features {
            batch: rows,
            dim: 1,
            pooled: &pooled,
            spatial: None,
            cells: 0,
        };
        let time = inputs.len() / rows;
        let batch = TeacherBatch::new(rows, time, inputs, inputs);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let out = mix_inputs(&decoder, &feats, &batch, prob, &mut rng)
            .expect("mixes")
            .into_owned();
        *fed = decoder.fed.into_inner().expect("not poisoned");
        out
    }

    #[test]
    fn replaced_inputs_are_the_predictions_from_the_reference_prefix() {
        // Two captions, the second one padded; the successor of each reference word is never the
        // next reference word, so every replacement shows.
        let inputs = [1, 5, 5, 7, 4, 1, 8, 0, 0, 0];
        let mut fed = Vec::new();
        let mixed = mix(&inputs, 2, 1.0, &mut fed);
        assert_eq!(mixed, [1, 2, 6, 6, 8, 1, 2, 0, 0, 0]);
        // The model saw the reference prefix, never its own words, and stopped after the last
        // position it had to predict.
        assert_eq!(fed, [vec![1, 1], vec![5, 8], vec![5, 1], vec![7, 1]]);
    }

    #[test]
    fn without_sampling_the_inputs_and_the_model_are_untouched() {
        let inputs = [1, 5, 5, 7, 4, 1, 8, 0, 0, 0];
        let mut fed = Vec::new();
        assert_eq!(mix(&inputs, 2, 0.0, &mut fed), inputs);
        assert!(fed.is_empty());
    }

    #[test]
    fn a_share_of_the_positions_near_the_probability_is_replaced() {
        let rows = 200;
        let inputs: Vec<u32> = (0..rows).flat_map(|_| [1, 4, 4, 4, 4, 4]).collect();
        let mut fed = Vec::new();
        let mixed = mix(&inputs, rows, 0.3, &mut fed);
        let replaced = mixed.iter().filter(|&&t| t == 5).count();
        let share = replaced as f64 / (rows * 5) as f64;
        assert!((share - 0.3).abs() < 0.05, "{share}");
        assert!(mixed.iter().step_by(6).all(|&t| t == 1));
    }

    fn cfg(max_prob: f32, warmup_epochs: u32) -> ScheduledSampling {
        ScheduledSampling {
            max_prob,
            warmup_epochs,
        }
    }

    #[test]
    fn probability_waits_for_the_warm_up_then_rises_to_the_maximum() {
        let c = cfg(0.25, 2);
        assert_eq!(replace_prob(&c, 0, 10, 50), 0.0);
        assert_eq!(replace_prob(&c, 19, 10, 50), 0.0);
        assert!((replace_prob(&c, 20, 10, 50) - 0.25 / 30.0).abs() < 1e-7);
        assert!((replace_prob(&c, 34, 10, 50) - 0.125).abs() < 1e-7);
        assert_eq!(replace_prob(&c, 49, 10, 50), 0.25);
        // A warm-up as long as the run never samples.
        assert_eq!(replace_prob(&cfg(0.25, 5), 49, 10, 50), 0.0);
    }

    #[test]
    fn draws_follow_the_distribution_and_never_pad() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // <pad> holds most of the mass and must still never come out.
        let probs = [0.7f32, 0.0, 0.2, 0.1];
        let log_probs: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        let mut counts = [0usize; 4];
        for _ in 0..30_000 {
            counts[draw(&log_probs, &mut rng) as usize] += 1;
        }
        assert_eq!(counts[0], 0);
        assert_eq!(counts[1], 0);
        let share = counts[2] as f64 / 30_000.0;
        assert!((share - 2.0 / 3.0).abs() < 0.02, "{counts:?}");
    }

    #[test]
    fn all_underflowed_rows_fall_back_to_unk() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(
            draw(&[0.0, f32::NEG_INFINITY, f32::NEG_INFINITY], &mut rng),
            3
        );
    }
}
