//! DenseNet-201 (and any DenseNet-BC), a candle implementation with torchvision's parameter names.
//!
//! Paper: Gao Huang, Zhuang Liu, Laurens van der Maaten, Kilian Q. Weinberger, "Densely Connected
//! Convolutional Networks", CVPR 2017 (arXiv:1608.06993). The layout is that of
//! `torchvision.models.densenet201`: `features.conv0`/`norm0`, then
//! `features.denseblockB.denselayerL.{norm1,conv1,norm2,conv2}` and
//! `features.transitionB.{norm,conv}` between the blocks, `features.norm5` and `classifier`. A
//! torchvision `state_dict` saved with `safetensors.torch.save_file` loads as is (torchvision
//! itself renames the legacy `norm.1` keys of its checkpoint when loading it, so `state_dict()`
//! already has these names).
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
    pub in_channels: usize,
    /// Channels each dense layer adds (`k` in the paper).
    pub growth_rate: usize,
    /// Dense layers per block.
    pub block_config: Vec<usize>,
    /// Channels of the stem convolution.
    pub num_init_features: usize,
    /// The bottleneck 1x1 conv has `bn_size * growth_rate` channels.
    pub bn_size: usize,
    pub num_classes: usize,
    pub bn_eps: f64,
    pub image_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self::densenet201()
    }
}

impl Config {
    /// DenseNet-201: growth 32, blocks (6, 12, 48, 32), 64 initial features, 224x224 input.
    pub fn densenet201() -> Self {
        Config {
            in_channels: 3,
            growth_rate: 32,
            block_config: vec![6, 12, 48, 32],
            num_init_features: 64,
            bn_size: 4,
            num_classes: 1000,
            bn_eps: 1e-5,
            image_size: 224,
        }
    }

    /// Channels of the final feature map (1920 for DenseNet-201): each block adds
    /// `layers * growth_rate`, each transition halves.
    pub fn feature_channels(&self) -> usize {
        let mut c = self.num_init_features;
        for (b, &layers) in self.block_config.iter().enumerate() {
            c += layers * self.growth_rate;
            if b + 1 != self.block_config.len() {
                c /= 2;
            }
        }
        c
    }
}

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

/// Fail (rather than underflow inside candle) when a `k`-wide pool does not fit.
fn check_pool(xs: &Tensor, k: usize, what: &str) -> Result<()> {
    let (_, _, h, w) = xs.dims4()?;
    if h < k || w < k {
        candle_core::bail!("DenseNet input too small: {what} gets a {h}x{w} map, needs {k}x{k}");
    }
    Ok(())
}

/// BN-ReLU-Conv(1x1) bottleneck, BN-ReLU-Conv(3x3) to `growth_rate` new channels.
#[derive(Debug, Clone)]
struct DenseLayer {
    norm1: FrozenBatchNorm,
    conv1: candle_nn::Conv2d,
    norm2: FrozenBatchNorm,
    conv2: candle_nn::Conv2d,
}

impl DenseLayer {
    fn new(c_in: usize, cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let mid = cfg.bn_size * cfg.growth_rate;
        Ok(Self {
            norm1: FrozenBatchNorm::new(c_in, cfg.bn_eps, vb.pp("norm1"))?,
            conv1: conv(c_in, mid, 1, 1, vb.pp("conv1"))?,
            norm2: FrozenBatchNorm::new(mid, cfg.bn_eps, vb.pp("norm2"))?,
            conv2: conv(mid, cfg.growth_rate, 3, 1, vb.pp("conv2"))?,
        })
    }
}

impl Module for DenseLayer {
    /// The `growth_rate` new channels only; the block concatenates them.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward(xs)?.relu()?)?;
        self.conv2.forward(&self.norm2.forward(&h)?.relu()?)
    }
}

/// BN-ReLU-Conv(1x1) halving the channels, then a 2x2 average pool of stride 2.
#[derive(Debug, Clone)]
struct Transition {
    norm: FrozenBatchNorm,
    conv: candle_nn::Conv2d,
}

impl Module for Transition {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.conv.forward(&self.norm.forward(xs)?.relu()?)?;
        check_pool(&h, 2, "a transition's average pool")?;
        h.avg_pool2d(2)
    }
}

#[derive(Debug, Clone)]
pub struct DenseNet {
    conv0: candle_nn::Conv2d,
    norm0: FrozenBatchNorm,
    blocks: Vec<Vec<DenseLayer>>,
    transitions: Vec<Transition>,
    norm5: FrozenBatchNorm,
    classifier: candle_nn::Linear,
    config: Config,
}

impl DenseNet {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let vb_f = vb.pp("features");
        let eps = cfg.bn_eps;
        let conv0 = candle_nn::conv2d_no_bias(
            cfg.in_channels,
            cfg.num_init_features,
            7,
            candle_nn::Conv2dConfig {
                padding: 3,
                stride: 2,
                ..Default::default()
            },
            vb_f.pp("conv0"),
        )?;
        let norm0 = FrozenBatchNorm::new(cfg.num_init_features, eps, vb_f.pp("norm0"))?;
        let mut c = cfg.num_init_features;
        let mut blocks = Vec::new();
        let mut transitions = Vec::new();
        for (b, &layers) in cfg.block_config.iter().enumerate() {
            let vb_b = vb_f.pp(format!("denseblock{}", b + 1));
            let mut block = Vec::with_capacity(layers);
            for l in 0..layers {
                let vb_l = vb_b.pp(format!("denselayer{}", l + 1));
                block.push(DenseLayer::new(c + l * cfg.growth_rate, cfg, vb_l)?);
            }
            blocks.push(block);
            c += layers * cfg.growth_rate;
            if b + 1 != cfg.block_config.len() {
                let vb_t = vb_f.pp(format!("transition{}", b + 1));
                transitions.push(Transition {
                    norm: FrozenBatchNorm::new(c, eps, vb_t.pp("norm"))?,
                    conv: conv(c, c / 2, 1, 1, vb_t.pp("conv"))?,
                });
                c /= 2;
            }
        }
        let norm5 = FrozenBatchNorm::new(c, eps, vb_f.pp("norm5"))?;
        let classifier = candle_nn::linear(c, cfg.num_classes, vb.pp("classifier"))?;
        Ok(Self {
            conv0,
            norm0,
            blocks,
            transitions,
            norm5,
            classifier,
            config: cfg.clone(),
        })
    }

    /// Load from a `.safetensors` (or `.pth`) torchvision `state_dict`, on the CPU. A missing or
    /// misshapen tensor is an [`EncodeError::Weights`] naming the file and the tensor.
    pub fn load(cfg: &Config, path: &Path) -> std::result::Result<Self, EncodeError> {
        build_from_weights(path, &candle_core::Device::Cpu, |vb| Self::new(cfg, vb))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The last feature map, after `norm5` and ReLU, from normalised NCHW input.
    pub fn spatial_features(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = xs.to_dtype(DType::F32)?;
        check_pool(&xs, 7, "the stem convolution")?;
        let h = self.norm0.forward(&self.conv0.forward(&xs)?)?.relu()?;
        // Max pool 3x3, stride 2, padding 1: the input is a ReLU output, so zero padding is the
        // same as PyTorch's -inf padding.
        let h = h.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
        check_pool(&h, 3, "the stem max-pool")?;
        let mut h = h.max_pool2d_with_stride(3, 2)?;
        for (b, block) in self.blocks.iter().enumerate() {
            for layer in block {
                let new = layer.forward(&h)?;
                h = Tensor::cat(&[&h, &new], 1)?;
            }
            if let Some(transition) = self.transitions.get(b) {
                h = transition.forward(&h)?;
            }
        }
        self.norm5.forward(&h)?.relu()
    }

    /// ImageNet logits from pooled features.
    pub fn classify(&self, pooled: &Tensor) -> Result<Tensor> {
        self.classifier.forward(pooled)
    }

    /// Spatial features (after `norm5` and ReLU, `[n, 1920, h/32, w/32]`, 7x7 at 224), their
    /// global average and the logits.
    pub fn forward_all(&self, xs: &Tensor) -> Result<Outputs> {
        Outputs::from_spatial(self.spatial_features(xs)?, |pooled| self.classify(pooled))
    }
}

impl Module for DenseNet {
    /// ImageNet logits, like torchvision's `forward`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(self.forward_all(xs)?.logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn densenet201_has_1920_features() {
        assert_eq!(Config::densenet201().feature_channels(), 1920);
        assert_eq!(Config::default(), Config::densenet201());
    }
}
