//! ResNet-50, a candle implementation with torchvision's parameter names.
//!
//! Paper: Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun, "Deep Residual Learning for Image
//! Recognition", CVPR 2016 (arXiv:1512.03385). The layout is that of
//! `torchvision.models.resnet50` (v1.5: the stride of a downsampling bottleneck sits on its 3x3
//! conv): `conv1`, `bn1`, `layerL.B.{conv1,bn1,conv2,bn2,conv3,bn3}`, `layerL.0.downsample.{0,1}`
//! and `fc`. A torchvision `state_dict` (as `.safetensors` or the original `.pth`) loads as is.
//!
//! This is the readable reference (and the `.pth` reader) beside the fast kernels'
//! [`crate::fast::FastResNet50`], which computes the same function several times faster.
//!
//! Eval mode only: BatchNorm uses its running statistics.

use std::path::Path;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::FrozenBatchNorm;
pub use super::layers::Outputs;

use crate::encoder::{build_from_weights, EncodeError};

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct Config {
    /// Bottleneck blocks per stage.
    pub layers: Vec<usize>,
    pub num_classes: usize,
    pub bn_eps: f64,
    pub image_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self::resnet50()
    }
}

impl Config {
    /// ResNet-50: stages of (3, 4, 6, 3) bottlenecks, 224x224 input.
    pub fn resnet50() -> Self {
        Config {
            layers: vec![3, 4, 6, 3],
            num_classes: 1000,
            bn_eps: 1e-5,
            image_size: 224,
        }
    }

    /// Channels of the last feature map (2048 for four stages).
    pub fn feature_channels(&self) -> usize {
        (BASE_WIDTH << self.layers.len().saturating_sub(1)) * EXPANSION
    }
}

/// Bottleneck width of the first stage; each later stage doubles it.
const BASE_WIDTH: usize = 64;
/// A bottleneck's output has this many times its width.
const EXPANSION: usize = 4;

fn conv(
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    vb: VarBuilder,
) -> Result<candle_nn::Conv2d> {
    let cfg = candle_nn::Conv2dConfig {
        padding: k / 2,
        stride,
        ..Default::default()
    };
    candle_nn::conv2d_no_bias(c_in, c_out, k, cfg, vb)
}

/// A conv and the BatchNorm after it.
#[derive(Debug, Clone)]
struct ConvBn {
    conv: candle_nn::Conv2d,
    bn: FrozenBatchNorm,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        eps: f64,
        conv_vb: VarBuilder,
        bn_vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            conv: conv(c_in, c_out, k, stride, conv_vb)?,
            bn: FrozenBatchNorm::new(c_out, eps, bn_vb)?,
        })
    }
}

impl Module for ConvBn {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.bn.forward(&self.conv.forward(xs)?)
    }
}

/// 1x1 reduce, 3x3 (carrying the stride), 1x1 expand; ReLU after the residual add.
#[derive(Debug, Clone)]
struct Bottleneck {
    c1: ConvBn,
    c2: ConvBn,
    c3: ConvBn,
    downsample: Option<ConvBn>,
}

impl Bottleneck {
    fn new(c_in: usize, width: usize, stride: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let c_out = width * EXPANSION;
        let downsample = if stride != 1 || c_in != c_out {
            let vb_d = vb.pp("downsample");
            Some(ConvBn::new(
                c_in,
                c_out,
                1,
                stride,
                eps,
                vb_d.pp(0),
                vb_d.pp(1),
            )?)
        } else {
            None
        };
        Ok(Self {
            c1: ConvBn::new(c_in, width, 1, 1, eps, vb.pp("conv1"), vb.pp("bn1"))?,
            c2: ConvBn::new(width, width, 3, stride, eps, vb.pp("conv2"), vb.pp("bn2"))?,
            c3: ConvBn::new(width, c_out, 1, 1, eps, vb.pp("conv3"), vb.pp("bn3"))?,
            downsample,
        })
    }
}

impl Module for Bottleneck {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.c1.forward(xs)?.relu()?;
        let h = self.c2.forward(&h)?.relu()?;
        let h = self.c3.forward(&h)?;
        let identity = match &self.downsample {
            Some(d) => d.forward(xs)?,
            None => xs.clone(),
        };
        (h + identity)?.relu()
    }
}

#[derive(Debug, Clone)]
pub struct ResNet {
    stem: ConvBn,
    blocks: Vec<Bottleneck>,
    fc: candle_nn::Linear,
    config: Config,
}

impl ResNet {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let eps = cfg.bn_eps;
        let stem_conv = candle_nn::conv2d_no_bias(
            3,
            BASE_WIDTH,
            7,
            candle_nn::Conv2dConfig {
                padding: 3,
                stride: 2,
                ..Default::default()
            },
            vb.pp("conv1"),
        )?;
        let stem = ConvBn {
            conv: stem_conv,
            bn: FrozenBatchNorm::new(BASE_WIDTH, eps, vb.pp("bn1"))?,
        };
        let mut blocks = Vec::new();
        let mut c_in = BASE_WIDTH;
        for (l, &n) in cfg.layers.iter().enumerate() {
            let width = BASE_WIDTH << l;
            let vb_l = vb.pp(format!("layer{}", l + 1));
            for b in 0..n {
                let stride = if b == 0 && l > 0 { 2 } else { 1 };
                blocks.push(Bottleneck::new(c_in, width, stride, eps, vb_l.pp(b))?);
                c_in = width * EXPANSION;
            }
        }
        let fc = candle_nn::linear(c_in, cfg.num_classes, vb.pp("fc"))?;
        Ok(Self {
            stem,
            blocks,
            fc,
            config: cfg.clone(),
        })
    }

    /// Load from a `.safetensors` or `.pth` torchvision `state_dict`, on the CPU. A missing or
    /// misshapen tensor is an [`EncodeError::Weights`] naming the file and the tensor.
    pub fn load(cfg: &Config, path: &Path) -> std::result::Result<Self, EncodeError> {
        build_from_weights(path, &candle_core::Device::Cpu, |vb| Self::new(cfg, vb))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `layer4`'s output (`[n, 2048, h/32, w/32]`, 7x7 at 224) from normalised NCHW input.
    pub fn spatial_features(&self, xs: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = xs.dims4()?;
        if c != 3 || h < 2 || w < 2 {
            candle_core::bail!("ResNet needs 3-channel input of at least 2x2, got {c}x{h}x{w}");
        }
        let h = self.stem.forward(&xs.to_dtype(DType::F32)?)?.relu()?;
        // Max pool 3x3, stride 2, padding 1: the input is a ReLU output, so zero padding is the
        // same as PyTorch's -inf padding.
        let h = h.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
        let mut h = h.max_pool2d_with_stride(3, 2)?;
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        Ok(h)
    }

    /// ImageNet logits from pooled features.
    pub fn classify(&self, pooled: &Tensor) -> Result<Tensor> {
        self.fc.forward(pooled)
    }

    /// Spatial features, their global average and the logits.
    pub fn forward_all(&self, xs: &Tensor) -> Result<Outputs> {
        Outputs::from_spatial(self.spatial_features(xs)?, |pooled| self.classify(pooled))
    }
}

impl Module for ResNet {
    /// ImageNet logits, like torchvision's `forward`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(self.forward_all(xs)?.logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet50_has_2048_features() {
        assert_eq!(Config::resnet50().feature_channels(), 2048);
    }
}
