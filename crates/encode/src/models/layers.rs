//! Layers the candle encoder models share.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// Inference BatchNorm as a per-channel affine map: `x * scale + shift`, with
/// `scale = gamma / sqrt(var + eps)` and `shift = beta - mean * scale`.
#[derive(Debug, Clone)]
pub(crate) struct FrozenBatchNorm {
    scale: Tensor,
    shift: Tensor,
}

impl FrozenBatchNorm {
    pub(crate) fn new(channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let gamma = vb.get(channels, "weight")?;
        let beta = vb.get(channels, "bias")?;
        let mean = vb.get(channels, "running_mean")?;
        let var = vb.get(channels, "running_var")?;
        let scale = gamma.div(&(var + eps)?.sqrt()?)?;
        let shift = beta.sub(&mean.mul(&scale)?)?;
        Ok(Self {
            scale: scale.reshape((1, channels, 1, 1))?,
            shift: shift.reshape((1, channels, 1, 1))?,
        })
    }
}

impl Module for FrozenBatchNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.broadcast_mul(&self.scale)?.broadcast_add(&self.shift)
    }
}

/// The three outputs of one forward pass of a CNN whose features are the global average of its
/// last feature map.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// The last feature map, `[n, channels, h, w]` (see each model for its size).
    pub spatial: Tensor,
    /// Global average of `spatial`, `[n, channels]`.
    pub pooled: Tensor,
    /// ImageNet class scores before softmax, `[n, num_classes]`.
    pub logits: Tensor,
}

impl Outputs {
    /// Pools `spatial` and classifies the result with `classify`.
    pub(crate) fn from_spatial(
        spatial: Tensor,
        classify: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<Self> {
        let pooled = spatial.mean(D::Minus1)?.mean(D::Minus1)?;
        let logits = classify(&pooled)?;
        Ok(Self {
            spatial,
            pooled,
            logits,
        })
    }
}
