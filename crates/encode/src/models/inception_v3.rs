//! Inception-v3, a candle implementation with torchvision's parameter names.
//!
//! Paper: Christian Szegedy, Vincent Vanhoucke, Sergey Ioffe, Jonathon Shlens, Zbigniew Wojna,
//! "Rethinking the Inception Architecture for Computer Vision", CVPR 2016 (arXiv:1512.00567). The
//! layout is that of `torchvision.models.inception_v3`: `Conv2d_1a_3x3` ... `Conv2d_4a_3x3`,
//! `Mixed_5b` ... `Mixed_7c` (each branch a `BasicConv2d`: `conv` without bias, `bn` with eps
//! 1e-3, ReLU) and `fc`. A torchvision `state_dict` saved with `safetensors.torch.save_file` loads
//! as is; the auxiliary classifier (`AuxLogits.*`, training only) is neither needed nor read.
//!
//! Input: torchvision builds the pretrained model with `transform_input=True`, which maps
//! ImageNet-normalised input to the `(x - 0.5) / 0.5` scaling the Google weights were trained
//! with. [`Config::transform_input`] does the same; [`Config::inception_v3`] leaves it off
//! (torchvision's constructor default), so either feed `(x - 0.5) / 0.5` pixels or turn it on
//! with [`Config::pretrained`].
//!
//! Eval mode only: BatchNorm uses its running statistics, dropout is the identity. At 299x299
//! the spatial map is 8x8; any input of at least 75x75 works.

use std::path::Path;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::FrozenBatchNorm;
pub use super::layers::Outputs;

use crate::encoder::{build_from_weights, EncodeError};

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct Config {
    pub num_classes: usize,
    /// Convert ImageNet-normalised input to `(x - 0.5) / 0.5` first, as torchvision's
    /// `transform_input=True`.
    pub transform_input: bool,
    pub bn_eps: f64,
    pub image_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self::inception_v3()
    }
}

impl Config {
    /// Inception-v3 with `transform_input=False`, 299x299 input.
    pub fn inception_v3() -> Self {
        Config {
            num_classes: 1000,
            transform_input: false,
            bn_eps: 1e-3,
            image_size: 299,
        }
    }

    /// As torchvision's `inception_v3(weights="IMAGENET1K_V1")`: ImageNet-normalised input.
    pub fn pretrained() -> Self {
        Config {
            transform_input: true,
            ..Self::inception_v3()
        }
    }
}

/// Channels of the last feature map.
pub const FEATURE_CHANNELS: usize = 2048;
/// Smallest input side (torchvision's `min_size`).
pub const MIN_INPUT_SIZE: usize = 75;

/// torchvision's `BasicConv2d`: bias-free conv with a `(kh, kw)` kernel and `(ph, pw)` zero
/// padding, BatchNorm, ReLU.
#[derive(Debug, Clone)]
struct BasicConv {
    weight: Tensor,
    padding: (usize, usize),
    stride: usize,
    bn: FrozenBatchNorm,
}

impl BasicConv {
    fn new(
        c_in: usize,
        c_out: usize,
        kernel: (usize, usize),
        padding: (usize, usize),
        stride: usize,
        eps: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb
            .pp("conv")
            .get((c_out, c_in, kernel.0, kernel.1), "weight")?;
        Ok(Self {
            weight,
            padding,
            stride,
            bn: FrozenBatchNorm::new(c_out, eps, vb.pp("bn"))?,
        })
    }
}

impl Module for BasicConv {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (ph, pw) = self.padding;
        let ys = if (ph, pw) == (0, 0) {
            xs.conv2d(&self.weight, 0, self.stride, 1, 1)?
        } else if ph == pw {
            xs.conv2d(&self.weight, ph, self.stride, 1, 1)?
        } else {
            // candle's conv2d pads both dimensions alike; the 1x7 / 7x1 convs pad one.
            xs.pad_with_zeros(2, ph, ph)?
                .pad_with_zeros(3, pw, pw)?
                .conv2d(&self.weight, 0, self.stride, 1, 1)?
        };
        self.bn.forward(&ys)?.relu()
    }
}

/// Builds the `BasicConv2d`s of one module, all with the model's BatchNorm eps.
struct Convs<'a> {
    vb: VarBuilder<'a>,
    eps: f64,
}

impl Convs<'_> {
    /// Square `k`x`k` kernel, padding `pad`, stride 1.
    fn sq(&self, name: &str, c_in: usize, c_out: usize, k: usize, pad: usize) -> Result<BasicConv> {
        self.full(name, c_in, c_out, (k, k), (pad, pad), 1)
    }

    /// Square `k`x`k` kernel, no padding, stride 2.
    fn down(&self, name: &str, c_in: usize, c_out: usize, k: usize) -> Result<BasicConv> {
        self.full(name, c_in, c_out, (k, k), (0, 0), 2)
    }

    /// A `(kh, kw)` kernel with "same" padding, stride 1 (the 1x7, 7x1, 1x3, 3x1 convs).
    fn rect(
        &self,
        name: &str,
        c_in: usize,
        c_out: usize,
        kh: usize,
        kw: usize,
    ) -> Result<BasicConv> {
        self.full(name, c_in, c_out, (kh, kw), (kh / 2, kw / 2), 1)
    }

    fn full(
        &self,
        name: &str,
        c_in: usize,
        c_out: usize,
        kernel: (usize, usize),
        padding: (usize, usize),
        stride: usize,
    ) -> Result<BasicConv> {
        BasicConv::new(
            c_in,
            c_out,
            kernel,
            padding,
            stride,
            self.eps,
            self.vb.pp(name),
        )
    }
}

/// 3x3 average pool, stride 1, padding 1, counting the padding (PyTorch's default).
fn avg_pool_3x3_same(xs: &Tensor) -> Result<Tensor> {
    xs.pad_with_zeros(2, 1, 1)?
        .pad_with_zeros(3, 1, 1)?
        .avg_pool2d_with_stride(3, 1)
}

/// 3x3 max pool, stride 2, no padding.
fn max_pool_3x3_down(xs: &Tensor) -> Result<Tensor> {
    xs.max_pool2d_with_stride(3, 2)
}

fn chain(xs: &Tensor, convs: &[BasicConv]) -> Result<Tensor> {
    convs.iter().try_fold(xs.clone(), |h, c| c.forward(&h))
}

/// Mixed_5b/c/d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1.
#[derive(Debug, Clone)]
struct InceptionA {
    branch1x1: BasicConv,
    branch5x5: [BasicConv; 2],
    branch3x3dbl: [BasicConv; 3],
    branch_pool: BasicConv,
}

impl InceptionA {
    fn new(c_in: usize, pool_features: usize, b: &Convs) -> Result<Self> {
        Ok(Self {
            branch1x1: b.sq("branch1x1", c_in, 64, 1, 0)?,
            branch5x5: [
                b.sq("branch5x5_1", c_in, 48, 1, 0)?,
                b.sq("branch5x5_2", 48, 64, 5, 2)?,
            ],
            branch3x3dbl: [
                b.sq("branch3x3dbl_1", c_in, 64, 1, 0)?,
                b.sq("branch3x3dbl_2", 64, 96, 3, 1)?,
                b.sq("branch3x3dbl_3", 96, 96, 3, 1)?,
            ],
            branch_pool: b.sq("branch_pool", c_in, pool_features, 1, 0)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Tensor::cat(
            &[
                self.branch1x1.forward(xs)?,
                chain(xs, &self.branch5x5)?,
                chain(xs, &self.branch3x3dbl)?,
                self.branch_pool.forward(&avg_pool_3x3_same(xs)?)?,
            ],
            1,
        )
    }
}

/// Mixed_6a (grid 35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2.
#[derive(Debug, Clone)]
struct InceptionB {
    branch3x3: BasicConv,
    branch3x3dbl: [BasicConv; 3],
}

impl InceptionB {
    fn new(c_in: usize, b: &Convs) -> Result<Self> {
        Ok(Self {
            branch3x3: b.down("branch3x3", c_in, 384, 3)?,
            branch3x3dbl: [
                b.sq("branch3x3dbl_1", c_in, 64, 1, 0)?,
                b.sq("branch3x3dbl_2", 64, 96, 3, 1)?,
                b.down("branch3x3dbl_3", 96, 96, 3)?,
            ],
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Tensor::cat(
            &[
                self.branch3x3.forward(xs)?,
                chain(xs, &self.branch3x3dbl)?,
                max_pool_3x3_down(xs)?,
            ],
            1,
        )
    }
}

/// Mixed_6b..e: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1.
#[derive(Debug, Clone)]
struct InceptionC {
    branch1x1: BasicConv,
    branch7x7: [BasicConv; 3],
    branch7x7dbl: [BasicConv; 5],
    branch_pool: BasicConv,
}

impl InceptionC {
    fn new(c_in: usize, c7: usize, b: &Convs) -> Result<Self> {
        Ok(Self {
            branch1x1: b.sq("branch1x1", c_in, 192, 1, 0)?,
            branch7x7: [
                b.sq("branch7x7_1", c_in, c7, 1, 0)?,
                b.rect("branch7x7_2", c7, c7, 1, 7)?,
                b.rect("branch7x7_3", c7, 192, 7, 1)?,
            ],
            branch7x7dbl: [
                b.sq("branch7x7dbl_1", c_in, c7, 1, 0)?,
                b.rect("branch7x7dbl_2", c7, c7, 7, 1)?,
                b.rect("branch7x7dbl_3", c7, c7, 1, 7)?,
                b.rect("branch7x7dbl_4", c7, c7, 7, 1)?,
                b.rect("branch7x7dbl_5", c7, 192, 1, 7)?,
            ],
            branch_pool: b.sq("branch_pool", c_in, 192, 1, 0)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Tensor::cat(
            &[
                self.branch1x1.forward(xs)?,
                chain(xs, &self.branch7x7)?,
                chain(xs, &self.branch7x7dbl)?,
                self.branch_pool.forward(&avg_pool_3x3_same(xs)?)?,
            ],
            1,
        )
    }
}

/// Mixed_7a (grid 17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2.
#[derive(Debug, Clone)]
struct InceptionD {
    branch3x3: [BasicConv; 2],
    branch7x7x3: [BasicConv; 4],
}

impl InceptionD {
    fn new(c_in: usize, b: &Convs) -> Result<Self> {
        Ok(Self {
            branch3x3: [
                b.sq("branch3x3_1", c_in, 192, 1, 0)?,
                b.down("branch3x3_2", 192, 320, 3)?,
            ],
            branch7x7x3: [
                b.sq("branch7x7x3_1", c_in, 192, 1, 0)?,
                b.rect("branch7x7x3_2", 192, 192, 1, 7)?,
                b.rect("branch7x7x3_3", 192, 192, 7, 1)?,
                b.down("branch7x7x3_4", 192, 192, 3)?,
            ],
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Tensor::cat(
            &[
                chain(xs, &self.branch3x3)?,
                chain(xs, &self.branch7x7x3)?,
                max_pool_3x3_down(xs)?,
            ],
            1,
        )
    }
}

/// Mixed_7b/c: 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | avgpool-1x1.
#[derive(Debug, Clone)]
struct InceptionE {
    branch1x1: BasicConv,
    branch3x3_1: BasicConv,
    branch3x3_2: [BasicConv; 2],
    branch3x3dbl: [BasicConv; 2],
    branch3x3dbl_3: [BasicConv; 2],
    branch_pool: BasicConv,
}

impl InceptionE {
    fn new(c_in: usize, b: &Convs) -> Result<Self> {
        Ok(Self {
            branch1x1: b.sq("branch1x1", c_in, 320, 1, 0)?,
            branch3x3_1: b.sq("branch3x3_1", c_in, 384, 1, 0)?,
            branch3x3_2: [
                b.rect("branch3x3_2a", 384, 384, 1, 3)?,
                b.rect("branch3x3_2b", 384, 384, 3, 1)?,
            ],
            branch3x3dbl: [
                b.sq("branch3x3dbl_1", c_in, 448, 1, 0)?,
                b.sq("branch3x3dbl_2", 448, 384, 3, 1)?,
            ],
            branch3x3dbl_3: [
                b.rect("branch3x3dbl_3a", 384, 384, 1, 3)?,
                b.rect("branch3x3dbl_3b", 384, 384, 3, 1)?,
            ],
            branch_pool: b.sq("branch_pool", c_in, 192, 1, 0)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let split = |h: Tensor, pair: &[BasicConv; 2]| -> Result<[Tensor; 2]> {
            Ok([pair[0].forward(&h)?, pair[1].forward(&h)?])
        };
        let [a, b] = split(self.branch3x3_1.forward(xs)?, &self.branch3x3_2)?;
        let [c, d] = split(chain(xs, &self.branch3x3dbl)?, &self.branch3x3dbl_3)?;
        Tensor::cat(
            &[
                self.branch1x1.forward(xs)?,
                a,
                b,
                c,
                d,
                self.branch_pool.forward(&avg_pool_3x3_same(xs)?)?,
            ],
            1,
        )
    }
}

#[derive(Debug, Clone)]
enum Mixed {
    A(InceptionA),
    B(InceptionB),
    C(InceptionC),
    D(InceptionD),
    E(InceptionE),
}

impl Module for Mixed {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Mixed::A(m) => m.forward(xs),
            Mixed::B(m) => m.forward(xs),
            Mixed::C(m) => m.forward(xs),
            Mixed::D(m) => m.forward(xs),
            Mixed::E(m) => m.forward(xs),
        }
    }
}

#[derive(Debug, Clone)]
pub struct InceptionV3 {
    /// Conv2d_1a_3x3, 2a, 2b, (maxpool), 3b, 4a, (maxpool).
    stem: [BasicConv; 5],
    mixed: Vec<Mixed>,
    fc: candle_nn::Linear,
    config: Config,
}

impl InceptionV3 {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let b = Convs {
            vb: vb.clone(),
            eps: cfg.bn_eps,
        };
        let stem = [
            b.down("Conv2d_1a_3x3", 3, 32, 3)?,
            b.sq("Conv2d_2a_3x3", 32, 32, 3, 0)?,
            b.sq("Conv2d_2b_3x3", 32, 64, 3, 1)?,
            b.sq("Conv2d_3b_1x1", 64, 80, 1, 0)?,
            b.sq("Conv2d_4a_3x3", 80, 192, 3, 0)?,
        ];
        let at = |name: &str| Convs {
            vb: vb.pp(name),
            eps: cfg.bn_eps,
        };
        let mixed = vec![
            Mixed::A(InceptionA::new(192, 32, &at("Mixed_5b"))?),
            Mixed::A(InceptionA::new(256, 64, &at("Mixed_5c"))?),
            Mixed::A(InceptionA::new(288, 64, &at("Mixed_5d"))?),
            Mixed::B(InceptionB::new(288, &at("Mixed_6a"))?),
            Mixed::C(InceptionC::new(768, 128, &at("Mixed_6b"))?),
            Mixed::C(InceptionC::new(768, 160, &at("Mixed_6c"))?),
            Mixed::C(InceptionC::new(768, 160, &at("Mixed_6d"))?),
            Mixed::C(InceptionC::new(768, 192, &at("Mixed_6e"))?),
            Mixed::D(InceptionD::new(768, &at("Mixed_7a"))?),
            Mixed::E(InceptionE::new(1280, &at("Mixed_7b"))?),
            Mixed::E(InceptionE::new(2048, &at("Mixed_7c"))?),
        ];
        let fc = candle_nn::linear(FEATURE_CHANNELS, cfg.num_classes, vb.pp("fc"))?;
        Ok(Self {
            stem,
            mixed,
            fc,
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

    /// torchvision's `_transform_input`: ImageNet normalisation to `(x - 0.5) / 0.5`.
    fn transform_input(xs: &Tensor) -> Result<Tensor> {
        let std = [0.229f32, 0.224, 0.225];
        let mean = [0.485f32, 0.456, 0.406];
        let scale: Vec<f32> = std.iter().map(|s| s / 0.5).collect();
        let shift: Vec<f32> = mean.iter().map(|m| (m - 0.5) / 0.5).collect();
        let dev = xs.device();
        let scale = Tensor::from_vec(scale, (1, 3, 1, 1), dev)?;
        let shift = Tensor::from_vec(shift, (1, 3, 1, 1), dev)?;
        xs.broadcast_mul(&scale)?.broadcast_add(&shift)
    }

    /// `Mixed_7c`'s output from NCHW input (scaled as [`Config::transform_input`] says).
    pub fn spatial_features(&self, xs: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = xs.dims4()?;
        if c != 3 || h < MIN_INPUT_SIZE || w < MIN_INPUT_SIZE {
            candle_core::bail!(
                "Inception-v3 needs 3-channel input of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}, \
                 got {c} channels of {h}x{w}"
            );
        }
        let mut h = xs.to_dtype(DType::F32)?;
        if self.config.transform_input {
            h = Self::transform_input(&h)?;
        }
        let [c1a, c2a, c2b, c3b, c4a] = &self.stem;
        h = c2b.forward(&c2a.forward(&c1a.forward(&h)?)?)?;
        h = c4a.forward(&c3b.forward(&max_pool_3x3_down(&h)?)?)?;
        h = max_pool_3x3_down(&h)?;
        for m in &self.mixed {
            h = m.forward(&h)?;
        }
        Ok(h)
    }

    /// ImageNet logits from pooled features.
    pub fn classify(&self, pooled: &Tensor) -> Result<Tensor> {
        self.fc.forward(pooled)
    }

    /// Spatial features (`Mixed_7c`'s output, `[n, 2048, 8, 8]` at 299x299), their global average
    /// and the logits.
    pub fn forward_all(&self, xs: &Tensor) -> Result<Outputs> {
        Outputs::from_spatial(self.spatial_features(xs)?, |pooled| self.classify(pooled))
    }
}

impl Module for InceptionV3 {
    /// ImageNet logits, like torchvision's `forward` in eval mode.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(self.forward_all(xs)?.logits)
    }
}
