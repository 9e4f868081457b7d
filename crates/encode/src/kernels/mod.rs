//! Hand-written CPU kernels for frozen CNN encoders over plain `f32` NHWC buffers.
//!
//! Every kernel takes slices plus explicit shapes and returns [`KernelError`] on a shape mismatch
//! instead of panicking. Each fast kernel has a plain loop implementation in [`reference`] that the
//! tests compare it against. Threads come from rayon's global pool, so `RAYON_NUM_THREADS` applies.
//!
//! Layouts: activations are NHWC; convolution weights are HWIO (`[kh, kw, cin, cout]`, which is the
//! column order of im2col, so the weight is the GEMM's right-hand side as stored); depthwise weights
//! are `[kh, kw, c]`.

mod conv;
mod depthwise;
mod gemm;
mod pool;
pub mod reference;

pub use conv::{conv2d, pointwise_conv};
pub use depthwise::depthwise_conv;
pub use gemm::{matmul, Epilogue};
pub use pool::{global_avg_pool, max_pool2d};

/// Errors from the kernels: always a caller's shape mistake, never a numeric failure.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    #[error("{what}: expected {expected} elements, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{0}")]
    Shape(String),
}

pub type Result<T> = std::result::Result<T, KernelError>;

pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(KernelError::Length {
            what,
            expected,
            got,
        })
    }
}

/// Activation applied in a kernel's epilogue, while the output is still in cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Relu,
    Relu6,
}

impl Activation {
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            Activation::Relu => x.max(0.0),
            Activation::Relu6 => x.clamp(0.0, 6.0),
        }
    }
}

/// Shape of an NHWC activation tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nhwc {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Nhwc {
    pub fn new(n: usize, h: usize, w: usize, c: usize) -> Self {
        Self { n, h, w, c }
    }

    pub fn len(&self) -> usize {
        self.n * self.h * self.w * self.c
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows of the `[n*h*w, c]` matrix view used by pointwise convolutions.
    pub fn pixels(&self) -> usize {
        self.n * self.h * self.w
    }
}

/// Explicit per-side zero padding; TensorFlow "SAME" padding is asymmetric, so one number is not enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Padding {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Padding {
    pub fn symmetric(p: usize) -> Self {
        Self {
            top: p,
            bottom: p,
            left: p,
            right: p,
        }
    }

    /// TensorFlow "SAME": output is `ceil(in / stride)` and the odd pixel of padding goes after.
    pub fn tf_same(in_h: usize, in_w: usize, kernel: usize, stride: usize) -> Self {
        let split = |len: usize| {
            let out = len.div_ceil(stride);
            let total = ((out.saturating_sub(1)) * stride + kernel).saturating_sub(len);
            (total / 2, total - total / 2)
        };
        let (top, bottom) = split(in_h);
        let (left, right) = split(in_w);
        Self {
            top,
            bottom,
            left,
            right,
        }
    }
}

/// Geometry of a 2-D convolution or pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dGeom {
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: usize,
    pub pad: Padding,
}

impl Conv2dGeom {
    pub fn new(kernel: usize, stride: usize, pad: Padding) -> Self {
        Self {
            kernel_h: kernel,
            kernel_w: kernel,
            stride,
            pad,
        }
    }

    /// Output spatial size for an input of `h x w`, or an error when the window does not fit.
    pub fn output_hw(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        if self.stride == 0 || self.kernel_h == 0 || self.kernel_w == 0 {
            return Err(KernelError::Shape(
                "kernel and stride must be positive".into(),
            ));
        }
        let ph = h + self.pad.top + self.pad.bottom;
        let pw = w + self.pad.left + self.pad.right;
        if ph < self.kernel_h || pw < self.kernel_w {
            return Err(KernelError::Shape(format!(
                "{}x{} window does not fit a padded {ph}x{pw} input",
                self.kernel_h, self.kernel_w
            )));
        }
        Ok((
            (ph - self.kernel_h) / self.stride + 1,
            (pw - self.kernel_w) / self.stride + 1,
        ))
    }

    /// Output shape of a convolution with `out_c` channels.
    pub fn output_shape(&self, input: Nhwc, out_c: usize) -> Result<Nhwc> {
        let (oh, ow) = self.output_hw(input.h, input.w)?;
        Ok(Nhwc::new(input.n, oh, ow, out_c))
    }
}

/// Threads the kernels split work over: rayon's global pool (honours `RAYON_NUM_THREADS`).
pub fn num_threads() -> usize {
    rayon::current_num_threads().max(1)
}
