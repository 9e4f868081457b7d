//! VGG16, a candle implementation with torchvision's parameter names.
//!
//! Paper: Karen Simonyan, Andrew Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
//! Recognition", ICLR 2015 (arXiv:1409.1556), configuration D. The layout is that of
//! `torchvision.models.vgg16` (no BatchNorm): `features.N` are the convolutions at the indices of
//! its `nn.Sequential` (ReLU and max-pool layers take indices but no weights), then an adaptive
//! average pool to 7x7 and `classifier.{0,3,6}`, the three linear layers. A torchvision
//! `state_dict` saved with `safetensors.torch.save_file` loads as is.
//!
//! Eval mode only: dropout is the identity. The adaptive pool makes any input of at least 32x32
//! work (at 32x32 the single 1x1 cell is repeated 49 times, as torchvision does).

use std::path::Path;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::encoder::{build_from_weights, EncodeError};

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct Config {
    pub in_channels: usize,
    /// Output channels of the 3x3 convolutions, one list per block; each block ends with a 2x2
    /// max-pool of stride 2.
    pub blocks: Vec<Vec<usize>>,
    /// Width of the two hidden fully connected layers.
    pub hidden: usize,
    pub num_classes: usize,
    pub image_size: usize,
}

impl Config {
    /// VGG16 (configuration D), 224x224 input.
    pub fn vgg16() -> Self {
        Config {
            in_channels: 3,
            blocks: vec![
                vec![64, 64],
                vec![128, 128],
                vec![256, 256, 256],
                vec![512, 512, 512],
                vec![512, 512, 512],
            ],
            hidden: 4096,
            num_classes: 1000,
            image_size: 224,
        }
    }

    /// Channels of the last feature map.
    pub fn feature_channels(&self) -> usize {
        self.blocks
            .iter()
            .rev()
            .find_map(|b| b.last().copied())
            .unwrap_or(self.in_channels)
    }

    /// Smallest input side the max-pools accept.
    pub fn min_input_size(&self) -> usize {
        1 << self.blocks.len()
    }
}

/// Side of torchvision's `AdaptiveAvgPool2d` output before the classifier.
pub const POOLED_GRID: usize = 7;

/// PyTorch's adaptive average pool to `(out_h, out_w)`: cell `i` averages input rows
/// `floor(i * h / out_h) .. ceil((i + 1) * h / out_h)`, and likewise for columns.
pub fn adaptive_avg_pool2d(xs: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (_, _, h, w) = xs.dims4()?;
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        candle_core::bail!("adaptive average pool of {h}x{w} to {out_h}x{out_w}");
    }
    if (h, w) == (out_h, out_w) {
        return Ok(xs.clone());
    }
    if h % out_h == 0 && w % out_w == 0 {
        return xs.avg_pool2d((h / out_h, w / out_w));
    }
    let range = |i: usize, n: usize, out: usize| (i * n / out, ((i + 1) * n).div_ceil(out));
    let mut rows = Vec::with_capacity(out_h);
    for i in 0..out_h {
        let (r0, r1) = range(i, h, out_h);
        let band = xs.narrow(2, r0, r1 - r0)?;
        let mut cells = Vec::with_capacity(out_w);
        for j in 0..out_w {
            let (c0, c1) = range(j, w, out_w);
            cells.push(band.narrow(3, c0, c1 - c0)?.mean_keepdim((2, 3))?);
        }
        rows.push(Tensor::cat(&cells, 3)?);
    }
    Tensor::cat(&rows, 2)
}

/// All outputs of one forward pass.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// The last max-pool's output, `[n, 512, h/32, w/32]` (7x7 at 224; Keras' `block5_pool`).
    pub spatial: Tensor,
    /// The second fully connected layer after its ReLU, `[n, hidden]` (Keras' `fc2`).
    pub fc2: Tensor,
    /// ImageNet class scores before softmax, `[n, num_classes]`.
    pub logits: Tensor,
}

#[derive(Debug, Clone)]
pub struct Vgg {
    /// `(conv, last of its block)`: a max-pool follows the last conv of each block.
    convs: Vec<(candle_nn::Conv2d, bool)>,
    fc1: candle_nn::Linear,
    fc2: candle_nn::Linear,
    fc3: candle_nn::Linear,
    config: Config,
}

impl Vgg {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let conv_cfg = candle_nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let mut convs = Vec::new();
        // Index into torchvision's `features` Sequential: conv, ReLU per conv; one per max-pool.
        let mut index = 0;
        let mut c_in = cfg.in_channels;
        for block in &cfg.blocks {
            for (k, &c_out) in block.iter().enumerate() {
                let conv =
                    candle_nn::conv2d(c_in, c_out, 3, conv_cfg, vb.pp("features").pp(index))?;
                convs.push((conv, k + 1 == block.len()));
                index += 2;
                c_in = c_out;
            }
            index += 1;
        }
        let flat = c_in * POOLED_GRID * POOLED_GRID;
        let vb_c = vb.pp("classifier");
        Ok(Self {
            convs,
            fc1: candle_nn::linear(flat, cfg.hidden, vb_c.pp(0))?,
            fc2: candle_nn::linear(cfg.hidden, cfg.hidden, vb_c.pp(3))?,
            fc3: candle_nn::linear(cfg.hidden, cfg.num_classes, vb_c.pp(6))?,
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

    /// The last feature map (after the fifth max-pool) from normalised NCHW input.
    pub fn spatial_features(&self, xs: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        let min = self.config.min_input_size();
        if h < min || w < min {
            candle_core::bail!("VGG needs an input of at least {min}x{min}, got {h}x{w}");
        }
        let mut h = xs.to_dtype(DType::F32)?;
        for (conv, pool) in &self.convs {
            h = conv.forward(&h)?.relu()?;
            if *pool {
                h = h.max_pool2d(2)?;
            }
        }
        Ok(h)
    }

    /// `fc2` features (4096-d, after ReLU) from the last feature map.
    pub fn fc2_features(&self, spatial: &Tensor) -> Result<Tensor> {
        let pooled = adaptive_avg_pool2d(spatial, POOLED_GRID, POOLED_GRID)?;
        let flat = pooled.flatten_from(1)?;
        let h = self.fc1.forward(&flat)?.relu()?;
        self.fc2.forward(&h)?.relu()
    }

    /// ImageNet logits from `fc2` features.
    pub fn classify(&self, fc2: &Tensor) -> Result<Tensor> {
        self.fc3.forward(fc2)
    }

    pub fn forward_all(&self, xs: &Tensor) -> Result<Outputs> {
        let spatial = self.spatial_features(xs)?;
        let fc2 = self.fc2_features(&spatial)?;
        let logits = self.classify(&fc2)?;
        Ok(Outputs {
            spatial,
            fc2,
            logits,
        })
    }
}

impl Module for Vgg {
    /// ImageNet logits, like torchvision's `forward`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(self.forward_all(xs)?.logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adaptive_pool_matches_pytorch_bins() -> Result<()> {
        // 5 -> 3: bins [0,2), [1,4), [3,5) as in PyTorch.
        let xs = Tensor::arange(0f32, 5.0, &Device::Cpu)?.reshape((1, 1, 1, 5))?;
        let xs = xs.broadcast_as((1, 1, 3, 5))?.contiguous()?;
        let ys = adaptive_avg_pool2d(&xs, 1, 3)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(ys, [0.5, 2.0, 3.5]);
        // 1 -> 7 repeats the cell; 14 -> 7 is a 2x2 average.
        let one = Tensor::new(&[[[[2f32]]]], &Device::Cpu)?;
        let seven = adaptive_avg_pool2d(&one, 7, 7)?;
        assert_eq!(seven.dims(), [1, 1, 7, 7]);
        assert_eq!(seven.sum_all()?.to_scalar::<f32>()?, 98.0);
        let x14 = Tensor::ones((1, 2, 14, 14), DType::F32, &Device::Cpu)?;
        assert_eq!(adaptive_avg_pool2d(&x14, 7, 7)?.dims(), [1, 2, 7, 7]);
        Ok(())
    }

    #[test]
    fn vgg16_config_has_thirteen_convs() {
        let cfg = Config::vgg16();
        assert_eq!(cfg.blocks.iter().map(Vec::len).sum::<usize>(), 13);
        assert_eq!(cfg.feature_channels(), 512);
        assert_eq!(cfg.min_input_size(), 32);
    }
}
