//! Layers the candle encoder models share.

use candle_core::{Module, Result, Tensor};
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
