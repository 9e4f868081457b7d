//! The interface every caption decoder implements, for training (teacher forcing with an explicit
//! backward into a flat [`ParamSet`]) and for generation (one step at a time over a batch of rows
//! that beam search can reorder).
//!
//! Conventions shared by all decoders:
//! - token batches are row-major `[batch, time]` as [`captioner_data::Batch`] gives them; a
//!   target equal to [`PAD_ID`] contributes nothing to the loss;
//! - the loss is the *sum* of token cross-entropies (plus any regulariser) divided by the number
//!   of valid target tokens, so gradients are of the mean token loss, as in PyTorch's
//!   `CrossEntropyLoss(ignore_index=0)`;
//! - gradients are *accumulated* into the parameter set's gradient buffer; the trainer zeroes it;
//! - with [`TeacherBatch::weights`] (policy-gradient training, e.g. self-critical sequence
//!   training), every token loss of row `b` is multiplied by `weights[b]` before the same
//!   division by the number of valid target tokens, and regularisers that only make sense for
//!   reference captions (`sat`'s doubly-stochastic attention penalty) are left out.

use crate::params::ParamSet;
use crate::DecodeError;
use rand_chacha::ChaCha8Rng;

/// Id of `<pad>`: targets equal to it are ignored by the loss.
pub const PAD_ID: u32 = 0;
/// Id of `<start>`, the first input token of every caption.
pub const START_ID: u32 = 1;
/// Id of `<end>`, which finishes a caption.
pub const END_ID: u32 = 2;
/// Id of `<unk>`.
pub const UNK_ID: u32 = 3;

/// Image features of a batch of images.
#[derive(Clone, Copy, Debug)]
pub struct Features<'a> {
    /// Images `B`.
    pub batch: usize,
    /// Feature channels `F`.
    pub dim: usize,
    /// Pooled vector per image, `[B, F]`.
    pub pooled: &'a [f32],
    /// Spatial grid per image, `[B, P, F]` (cells row-major), for attention decoders.
    pub spatial: Option<&'a [f32]>,
    /// Grid cells `P` (0 without a grid).
    pub cells: usize,
}

impl<'a> Features<'a> {
    /// Checks that the slices have the declared sizes.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.pooled.len() != self.batch * self.dim {
            return Err(DecodeError::Shape(format!(
                "pooled features: {} values for {} images of {}",
                self.pooled.len(),
                self.batch,
                self.dim
            )));
        }
        if let Some(s) = self.spatial {
            if s.len() != self.batch * self.cells * self.dim {
                return Err(DecodeError::Shape(format!(
                    "spatial features: {} values for {} images of {}x{}",
                    s.len(),
                    self.batch,
                    self.cells,
                    self.dim
                )));
            }
        }
        Ok(())
    }

    /// The spatial grid, or an error naming the decoder that needs it.
    pub fn require_spatial(&self, who: &str) -> Result<&'a [f32], DecodeError> {
        self.spatial.ok_or_else(|| {
            DecodeError::Shape(format!(
                "{who} attends over the spatial grid, but the features have none \
                 (extract them with `captioner extract --spatial`)"
            ))
        })
    }
}

/// A teacher-forced batch: `inputs[b][t]` is fed, `targets[b][t]` is predicted.
#[derive(Clone, Copy, Debug)]
pub struct TeacherBatch<'a> {
    /// Rows `B` (one caption each; `Features` has the same `B`, one image per row).
    pub batch: usize,
    /// Steps `T`.
    pub time: usize,
    /// `[B, T]` row-major; starts with [`START_ID`].
    pub inputs: &'a [u32],
    /// `[B, T]` row-major; [`PAD_ID`] marks positions the loss ignores.
    pub targets: &'a [u32],
    /// Optional per-row (per-caption) weights `[B]`, finite, possibly negative or zero: the
    /// loss and gradient of every token of row `b` are multiplied by `weights[b]` (the
    /// advantage `r - baseline` of a sampled caption in self-critical training); the sum is
    /// still divided by the number of valid target tokens. `None` is weight 1 everywhere and
    /// gives exactly the unweighted pass.
    pub weights: Option<&'a [f32]>,
    /// Multiplies the whole cross-entropy (loss and gradient; not regularisers such as the
    /// doubly-stochastic attention penalty), positive and finite; 1 gives exactly the unscaled
    /// pass. The trainer sets it to a length-sorted batch's share of an epoch's tokens, so that
    /// every token weighs the same whatever the length of its batch's captions.
    pub loss_scale: f32,
}

impl<'a> TeacherBatch<'a> {
    /// An unweighted batch.
    pub fn new(batch: usize, time: usize, inputs: &'a [u32], targets: &'a [u32]) -> Self {
        Self {
            batch,
            time,
            inputs,
            targets,
            weights: None,
            loss_scale: 1.0,
        }
    }

    /// Row `b`'s weight times [`TeacherBatch::loss_scale`]; `None` when both are 1.
    fn scaled_row_weights(&self) -> Option<Vec<f32>> {
        if self.weights.is_none() && self.loss_scale == 1.0 {
            return None;
        }
        Some(match self.weights {
            Some(w) => w.iter().map(|&x| x * self.loss_scale).collect(),
            None => vec![self.loss_scale; self.batch],
        })
    }

    /// Per-token-position weights in time-major order (`[T, B]`, position `t * B + b` gets
    /// `weights[b] * loss_scale`), as the recurrent decoders lay out their rows; `None` when
    /// unweighted and unscaled.
    pub fn time_major_weights(&self) -> Option<Vec<f32>> {
        let w = self.scaled_row_weights()?;
        Some((0..self.time).flat_map(|_| w.iter().copied()).collect())
    }

    /// Per-token-position weights in row-major order (`[B, T]`); `None` when unweighted and
    /// unscaled.
    pub fn row_major_weights(&self) -> Option<Vec<f32>> {
        let w = self.scaled_row_weights()?;
        Some(
            w.iter()
                .flat_map(|&x| std::iter::repeat_n(x, self.time))
                .collect(),
        )
    }
}

impl TeacherBatch<'_> {
    /// Checks sizes, weights and that every id is inside a vocabulary of `vocab`.
    pub fn validate(&self, vocab: usize) -> Result<(), DecodeError> {
        let n = self.batch * self.time;
        if self.inputs.len() != n || self.targets.len() != n || n == 0 {
            return Err(DecodeError::Shape(format!(
                "token batch {}x{}: {} inputs, {} targets",
                self.batch,
                self.time,
                self.inputs.len(),
                self.targets.len()
            )));
        }
        if let Some(w) = self.weights {
            if w.len() != self.batch {
                return Err(DecodeError::Shape(format!(
                    "{} sequence weights for {} captions",
                    w.len(),
                    self.batch
                )));
            }
            if let Some(bad) = w.iter().find(|x| !x.is_finite()) {
                return Err(DecodeError::Shape(format!(
                    "sequence weight {bad} is not finite"
                )));
            }
        }
        if !(self.loss_scale.is_finite() && self.loss_scale > 0.0) {
            return Err(DecodeError::Shape(format!(
                "loss scale {} is not a positive finite number",
                self.loss_scale
            )));
        }
        if let Some(&bad) = self
            .inputs
            .iter()
            .chain(self.targets)
            .find(|&&t| t as usize >= vocab)
        {
            return Err(DecodeError::Shape(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        Ok(())
    }

    /// Valid (non-pad) targets.
    pub fn valid_targets(&self) -> usize {
        self.targets.iter().filter(|&&t| t != PAD_ID).count()
    }
}

/// Options of one teacher-forced pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PassOptions {
    /// Label smoothing of the cross-entropy (0 = none).
    pub label_smoothing: f32,
    /// Apply dropout (training) or not (validation).
    pub train: bool,
    /// Softmax temperature of the log-probabilities the loss is taken of (1 = the model's own
    /// distribution). Self-critical training sets it to its sampling temperature, so that the
    /// policy gradient is that of the distribution its samples came from.
    pub temperature: f32,
}

impl Default for PassOptions {
    fn default() -> Self {
        Self {
            label_smoothing: 0.0,
            train: false,
            temperature: 1.0,
        }
    }
}

/// What one teacher-forced pass measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PassStats {
    /// Mean cross-entropy per valid target token (without regularisers).
    pub loss: f32,
    /// Regulariser term added to the objective (e.g. the doubly-stochastic attention penalty).
    pub regulariser: f32,
    /// Valid target tokens.
    pub tokens: usize,
}

/// A caption decoder with its parameters.
pub trait Decoder: Send + Sync {
    /// Short name of the architecture (`gru-init`, `merge-lstm`, `sat`, `transformer`).
    fn kind(&self) -> &'static str;
    /// Vocabulary size the output layer predicts over.
    fn vocab_size(&self) -> usize;
    /// Whether the decoder needs [`Features::spatial`].
    fn needs_spatial(&self) -> bool;
    /// Whether [`DecodeState::step`] can report attention weights over the grid cells.
    fn has_attention(&self) -> bool {
        false
    }
    /// The parameters (names follow PyTorch's `state_dict` of the same model).
    fn params(&self) -> &ParamSet;
    /// Mutable parameters, for the optimiser and for loading checkpoints.
    fn params_mut(&mut self) -> &mut ParamSet;

    /// Teacher-forced forward pass; with `grads`, also the backward pass, accumulating parameter
    /// gradients into [`ParamSet`]'s gradient buffer. `rng` drives dropout when
    /// `opts.train` is set (and must then be the only source of randomness, so runs replay).
    fn forward(
        &mut self,
        feats: &Features,
        batch: &TeacherBatch,
        opts: &PassOptions,
        grads: bool,
        rng: &mut ChaCha8Rng,
    ) -> Result<PassStats, DecodeError>;

    /// Starts generation for a batch of images: one row per image.
    fn start<'s>(&'s self, feats: &Features) -> Result<Box<dyn DecodeState + 's>, DecodeError>;
}

/// Generation state over a set of rows (images, or beams of images).
pub trait DecodeState: Send {
    /// Rows held.
    fn rows(&self) -> usize;
    /// Feeds one token per row (the first call gets [`START_ID`]) and writes the next-token
    /// log-probabilities (`log_softmax`, `[rows, V]`) and, for attention decoders when asked, the
    /// attention weights used for this step (`[rows, P]`).
    fn step(
        &mut self,
        tokens: &[u32],
        log_probs: &mut [f32],
        attention: Option<&mut [f32]>,
    ) -> Result<(), DecodeError>;
    /// Keeps, reorders or duplicates rows: afterwards row `i` is the old row `rows[i]`.
    fn select(&mut self, rows: &[usize]) -> Result<(), DecodeError>;
}

/// Builds a new array whose row `i` is `src` row `rows[i]` (rows of `width` values); the helper
/// every [`DecodeState::select`] needs.
pub fn gather_rows(src: &[f32], width: usize, rows: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * width);
    for &r in rows {
        out.extend_from_slice(&src[r * width..(r + 1) * width]);
    }
    out
}

/// In-place `log_softmax` of each row of `x` (`[rows, width]`).
pub fn log_softmax_rows(x: &mut [f32], width: usize) {
    for row in x.chunks_exact_mut(width) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
        let log_z = max + sum.ln();
        for v in row.iter_mut() {
            *v -= log_z;
        }
    }
}

/// Transposes a row-major `[B, T]` token array to time-major `[T, B]`.
pub fn to_time_major(tokens: &[u32], batch: usize, time: usize) -> Vec<u32> {
    let mut out = vec![0; tokens.len()];
    for b in 0..batch {
        for t in 0..time {
            out[t * batch + b] = tokens[b * time + t];
        }
    }
    out
}
