//! Inference-only encoders on the [`crate::kernels`]: BatchNorm folded into the convolutions at
//! load time, NHWC activations, fused bias + activation (+ residual) epilogues, recycled buffers.
//! They compute the same functions as the candle reference models, several times faster on CPU.

mod efficientnet_lite0;
mod layers;
mod resnet50;
pub mod weights;

use std::path::PathBuf;
use std::sync::Mutex;

pub use efficientnet_lite0::{FastEfficientNetLite0, DEFAULT_SUB_BATCH};
pub use resnet50::FastResNet50;
pub use weights::{SafetensorsFile, TensorMap, WeightSource};

use crate::kernels::{KernelError, Nhwc};

#[derive(Debug, thiserror::Error)]
pub enum FastError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("weights {path}: {msg}")]
    Weights { path: PathBuf, msg: String },
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    WeightShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("input: {0}")]
    Input(String),
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// What an encoder returns for a batch.
#[derive(Debug, Clone)]
pub struct FastOutput {
    /// Last feature map, NHWC.
    pub spatial: Vec<f32>,
    pub spatial_shape: Nhwc,
    /// Global average of `spatial`, `[n, c]`.
    pub pooled: Vec<f32>,
    /// Classifier output, `[n, classes]`.
    pub logits: Vec<f32>,
}

impl FastOutput {
    /// `spatial` as NCHW, the layout of PyTorch and the candle models.
    pub fn spatial_nchw(&self) -> Vec<f32> {
        nhwc_to_nchw(&self.spatial, self.spatial_shape)
    }
}

/// `[n, c, h, w] -> [n, h, w, c]`.
pub fn nchw_to_nhwc(x: &[f32], s: Nhwc) -> Vec<f32> {
    let mut out = vec![0.0; s.len()];
    let hw = s.h * s.w;
    for n in 0..s.n {
        for c in 0..s.c {
            let src = &x[(n * s.c + c) * hw..(n * s.c + c + 1) * hw];
            for (p, &v) in src.iter().enumerate() {
                out[(n * hw + p) * s.c + c] = v;
            }
        }
    }
    out
}

/// `[n, h, w, c] -> [n, c, h, w]`.
pub fn nhwc_to_nchw(x: &[f32], s: Nhwc) -> Vec<f32> {
    let mut out = vec![0.0; s.len()];
    let hw = s.h * s.w;
    for n in 0..s.n {
        for p in 0..hw {
            for c in 0..s.c {
                out[(n * s.c + c) * hw + p] = x[(n * hw + p) * s.c + c];
            }
        }
    }
    out
}

/// Checks an NCHW batch against its claimed shape before converting it.
pub(crate) fn input_from_nchw(
    input: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
) -> Result<(Vec<f32>, Nhwc), FastError> {
    let s = Nhwc::new(n, h, w, c);
    if input.len() != s.len() {
        return Err(FastError::Input(format!(
            "{} values for a [{n}, {c}, {h}, {w}] batch",
            input.len()
        )));
    }
    Ok((nchw_to_nhwc(input, s), s))
}

/// An activation: a pooled buffer (possibly longer than needed) and the NHWC shape it holds.
pub(crate) struct Act {
    buf: Vec<f32>,
    pub shape: Nhwc,
}

impl Act {
    pub fn data(&self) -> &[f32] {
        &self.buf[..self.shape.len()]
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        let len = self.shape.len();
        &mut self.buf[..len]
    }
}

/// Recycles activation buffers across layers and calls: fresh multi-megabyte allocations are
/// mmap'd and page-faulted on every use, which costs as much as a small layer. Buffers keep
/// their full initialised length so reuse never re-zeroes memory.
#[derive(Default)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<f32>>>,
}

impl BufferPool {
    /// A buffer for `shape` (contents unspecified: every kernel overwrites its output).
    pub fn take(&self, shape: Nhwc) -> Act {
        let len = shape.len();
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.len() >= len)
            .min_by_key(|(_, b)| b.len())
            .map(|(i, _)| i);
        let buf = match best {
            Some(i) => free.swap_remove(i),
            None => vec![0.0; len],
        };
        Act { buf, shape }
    }

    pub fn give(&self, act: Act) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.push(act.buf);
        // A forward pass has a handful of live buffers; drop the smallest beyond that.
        if free.len() > 12 {
            free.sort_by_key(|b| std::cmp::Reverse(b.len()));
            free.truncate(12);
        }
    }
}

/// Global average pool + linear classifier, shared by both encoders' heads.
pub(crate) fn pool_and_classify(
    spatial: &Act,
    fc: &weights::Folded,
    classes: usize,
) -> Result<FastOutput, FastError> {
    let s = spatial.shape;
    let mut pooled = vec![0.0; s.n * s.c];
    crate::kernels::global_avg_pool(spatial.data(), s, &mut pooled)?;
    let mut logits = vec![0.0; s.n * classes];
    let ep = crate::kernels::Epilogue::new(Some(&fc.bias), crate::kernels::Activation::Identity);
    crate::kernels::matmul(&pooled, &fc.weight, &mut logits, s.n, s.c, classes, &ep)?;
    Ok(FastOutput {
        spatial: spatial.data().to_vec(),
        spatial_shape: s,
        pooled,
        logits,
    })
}

/// Checks that `input` is an RGB NHWC batch of `shape`, then runs `forward` on slices of at most
/// `sub_batch` images and concatenates the outputs, so a big batch's activations stay in cache;
/// per-image results do not depend on the slicing.
pub(crate) fn in_slices(
    input: &[f32],
    shape: Nhwc,
    sub_batch: usize,
    forward: impl Fn(&[f32], Nhwc) -> Result<FastOutput, FastError>,
) -> Result<FastOutput, FastError> {
    if input.len() != shape.len() || shape.c != 3 {
        return Err(FastError::Input(format!(
            "{} values for an NHWC batch of shape {shape:?} (3 channels expected)",
            input.len()
        )));
    }
    let sub_batch = sub_batch.max(1);
    if shape.n <= sub_batch {
        return forward(input, shape);
    }
    let per_image = shape.h * shape.w * shape.c;
    let mut all: Option<FastOutput> = None;
    for chunk in input.chunks(per_image * sub_batch) {
        let s = Nhwc::new(chunk.len() / per_image, shape.h, shape.w, shape.c);
        let out = forward(chunk, s)?;
        match &mut all {
            None => all = Some(out),
            Some(a) => {
                a.spatial.extend_from_slice(&out.spatial);
                a.spatial_shape.n += out.spatial_shape.n;
                a.pooled.extend_from_slice(&out.pooled);
                a.logits.extend_from_slice(&out.logits);
            }
        }
    }
    all.ok_or_else(|| FastError::Input("empty batch".into()))
}
