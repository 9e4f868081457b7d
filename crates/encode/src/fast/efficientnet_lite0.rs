//! EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant drops squeeze-excitation and uses
//! ReLU6) on the fast kernels. Same weights and key names as the candle reference model
//! (`crate::models::efficientnet_lite0`), which is the readable definition of the network.

use std::path::Path;

use super::layers::{ConvBn, Kind, Pad, Spec};
use super::weights::{linear, Folded, SafetensorsFile, WeightSource};
use super::{
    in_slices, input_from_nchw, pool_and_classify, Act, BufferPool, FastError, FastOutput,
};
use crate::kernels::{Activation, Nhwc};

const BN_EPS: f32 = 1e-3;
const STEM: usize = 32;
const HEAD: usize = 1280;
const CLASSES: usize = 1000;
/// Stages: (repeats, kernel, stride, expand ratio, output channels).
const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];

/// Inverted-residual (MBConv) block without squeeze-excitation.
struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    skip: bool,
}

pub struct FastEfficientNetLite0 {
    stem: ConvBn,
    blocks: Vec<MbConv>,
    head: ConvBn,
    fc: Folded,
    pool: BufferPool,
    sub_batch: usize,
}

/// Images per internal pass; measured on a 2-core Sapphire Rapids (see `benches/encoders.rs`).
pub const DEFAULT_SUB_BATCH: usize = 4;

fn spec(
    kind: Kind,
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    act: Activation,
) -> Spec {
    Spec {
        kind,
        cin,
        cout,
        kernel,
        stride,
        pad: Pad::TfSame,
        act,
    }
}

impl FastEfficientNetLite0 {
    /// Loads `efficientnet-lite0.safetensors` (original PyTorch key names).
    pub fn from_safetensors(path: &Path) -> Result<Self, FastError> {
        Self::from_weights(&SafetensorsFile::open(path)?)
    }

    pub fn from_weights(src: &dyn WeightSource) -> Result<Self, FastError> {
        use Activation::{Identity, Relu6};
        let stem = ConvBn::load(
            src,
            "_conv_stem",
            "_bn0",
            spec(Kind::Dense, 3, STEM, 3, 2, Relu6),
            BN_EPS,
        )?;
        let mut blocks = Vec::new();
        let mut cin = STEM;
        for &(repeats, k, stride, ratio, cout) in &STAGES {
            for r in 0..repeats {
                let stride = if r == 0 { stride } else { 1 };
                let p = format!("_blocks.{}", blocks.len());
                let mid = cin * ratio;
                let expand = if ratio == 1 {
                    None
                } else {
                    Some(ConvBn::load(
                        src,
                        &format!("{p}._expand_conv"),
                        &format!("{p}._bn0"),
                        spec(Kind::Dense, cin, mid, 1, 1, Relu6),
                        BN_EPS,
                    )?)
                };
                let depthwise = ConvBn::load(
                    src,
                    &format!("{p}._depthwise_conv"),
                    &format!("{p}._bn1"),
                    spec(Kind::Depthwise, mid, mid, k, stride, Relu6),
                    BN_EPS,
                )?;
                let project = ConvBn::load(
                    src,
                    &format!("{p}._project_conv"),
                    &format!("{p}._bn2"),
                    spec(Kind::Dense, mid, cout, 1, 1, Identity),
                    BN_EPS,
                )?;
                blocks.push(MbConv {
                    expand,
                    depthwise,
                    project,
                    skip: stride == 1 && cin == cout,
                });
                cin = cout;
            }
        }
        let head = ConvBn::load(
            src,
            "_conv_head",
            "_bn1",
            spec(Kind::Dense, cin, HEAD, 1, 1, Relu6),
            BN_EPS,
        )?;
        let fc = linear(src, "_fc", CLASSES, HEAD)?;
        Ok(Self {
            stem,
            blocks,
            head,
            fc,
            pool: BufferPool::default(),
            sub_batch: DEFAULT_SUB_BATCH,
        })
    }

    /// Runs a normalised NCHW batch `[n, 3, h, w]` (the layout of the candle model and PyTorch).
    pub fn forward_nchw(
        &self,
        input: &[f32],
        n: usize,
        h: usize,
        w: usize,
    ) -> Result<FastOutput, FastError> {
        let (x, s) = input_from_nchw(input, n, 3, h, w)?;
        self.forward_nhwc(&x, s)
    }

    /// Images per internal pass (default [`DEFAULT_SUB_BATCH`]). Large batches run in slices
    /// this big so each layer's activations stay in cache instead of streaming through DRAM.
    pub fn with_sub_batch(mut self, images: usize) -> Self {
        self.sub_batch = images.max(1);
        self
    }

    /// Runs a normalised NHWC batch.
    pub fn forward_nhwc(&self, input: &[f32], shape: Nhwc) -> Result<FastOutput, FastError> {
        in_slices(input, shape, self.sub_batch, |x, s| {
            self.forward_slice(x, s)
        })
    }

    fn forward_slice(&self, input: &[f32], shape: Nhwc) -> Result<FastOutput, FastError> {
        let mut x = self.pool.take(shape);
        x.data_mut().copy_from_slice(input);
        let mut x = self.step(x, |x| self.stem.forward(x, None, &self.pool))?;
        for b in &self.blocks {
            let h = match &b.expand {
                Some(e) => {
                    let h = e.forward(&x, None, &self.pool)?;
                    self.step(h, |h| b.depthwise.forward(h, None, &self.pool))?
                }
                None => b.depthwise.forward(&x, None, &self.pool)?,
            };
            let residual = b.skip.then_some(&x);
            let out = b.project.forward(&h, residual, &self.pool)?;
            self.pool.give(h);
            self.pool.give(std::mem::replace(&mut x, out));
        }
        let x = self.step(x, |x| self.head.forward(x, None, &self.pool))?;
        let out = pool_and_classify(&x, &self.fc, CLASSES);
        self.pool.give(x);
        out
    }

    /// Applies `f` and returns `x`'s buffer to the pool.
    fn step(
        &self,
        x: Act,
        f: impl FnOnce(&Act) -> Result<Act, FastError>,
    ) -> Result<Act, FastError> {
        let out = f(&x);
        self.pool.give(x);
        out
    }

    /// Floating-point operations of one forward pass (convolutions and classifier).
    pub fn flops(&self, n: usize, h: usize, w: usize) -> Result<u64, FastError> {
        let mut s = Nhwc::new(n, h, w, 3);
        let mut total = 0;
        let mut add = |layer: &ConvBn, s: &mut Nhwc| -> Result<(), FastError> {
            let (f, o) = layer.flops(*s)?;
            total += f;
            *s = o;
            Ok(())
        };
        add(&self.stem, &mut s)?;
        for b in &self.blocks {
            if let Some(e) = &b.expand {
                add(e, &mut s)?;
            }
            add(&b.depthwise, &mut s)?;
            add(&b.project, &mut s)?;
        }
        add(&self.head, &mut s)?;
        Ok(total + 2 * (n * HEAD * CLASSES) as u64)
    }
}
