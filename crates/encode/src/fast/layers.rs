//! A convolution with its BatchNorm folded in, plus the activation after it: the one layer type
//! both fast encoders are built from.

use super::weights::{fold_conv_bn, WeightSource};
use super::{Act, BufferPool, FastError};
use crate::kernels::{self, Activation, Conv2dGeom, Epilogue, Nhwc, Padding};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dense,
    Depthwise,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pad {
    /// TensorFlow "SAME" (EfficientNet's TF-trained weights): depends on the input size.
    TfSame,
    /// PyTorch-style symmetric padding.
    Fixed(usize),
}

/// Static description of a conv + BN + activation layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub kind: Kind,
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: Pad,
    pub act: Activation,
}

pub(crate) struct ConvBn {
    spec: Spec,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl ConvBn {
    pub fn load(
        src: &dyn WeightSource,
        conv: &str,
        bn: &str,
        spec: Spec,
        eps: f32,
    ) -> Result<Self, FastError> {
        let cin_per_group = match spec.kind {
            Kind::Dense => spec.cin,
            Kind::Depthwise => 1,
        };
        let shape = [spec.cout, cin_per_group, spec.kernel, spec.kernel];
        let folded = fold_conv_bn(src, conv, bn, shape, eps)?;
        Ok(Self {
            spec,
            weight: folded.weight,
            bias: folded.bias,
        })
    }

    pub fn geom(&self, input: Nhwc) -> Conv2dGeom {
        let s = &self.spec;
        let pad = match s.pad {
            Pad::TfSame => Padding::tf_same(input.h, input.w, s.kernel, s.stride),
            Pad::Fixed(p) => Padding::symmetric(p),
        };
        Conv2dGeom::new(s.kernel, s.stride, pad)
    }

    pub fn out_shape(&self, input: Nhwc) -> Result<Nhwc, FastError> {
        if input.c != self.spec.cin {
            return Err(FastError::Input(format!(
                "layer expects {} channels, got {}",
                self.spec.cin, input.c
            )));
        }
        Ok(self.geom(input).output_shape(input, self.spec.cout)?)
    }

    /// Floating-point operations (2 per multiply-add) for this input shape.
    pub fn flops(&self, input: Nhwc) -> Result<(u64, Nhwc), FastError> {
        let o = self.out_shape(input)?;
        let taps = (self.spec.kernel * self.spec.kernel) as u64;
        let per_out = match self.spec.kind {
            Kind::Dense => taps * self.spec.cin as u64,
            Kind::Depthwise => taps,
        };
        Ok((2 * per_out * o.len() as u64, o))
    }

    /// Runs the layer; `residual` (same shape as the output) is added before the activation.
    pub fn forward(
        &self,
        x: &Act,
        residual: Option<&Act>,
        pool: &BufferPool,
    ) -> Result<Act, FastError> {
        let o = self.out_shape(x.shape)?;
        let geom = self.geom(x.shape);
        let mut out = pool.take(o);
        let s = &self.spec;
        match s.kind {
            Kind::Dense => {
                let mut ep = Epilogue::new(Some(&self.bias), s.act);
                if let Some(r) = residual {
                    ep = ep.with_residual(r.data());
                }
                kernels::conv2d(
                    x.data(),
                    x.shape,
                    &self.weight,
                    s.cout,
                    &geom,
                    &ep,
                    out.data_mut(),
                )?;
            }
            Kind::Depthwise => {
                if residual.is_some() {
                    return Err(FastError::Input(
                        "depthwise layers take no residual".to_string(),
                    ));
                }
                kernels::depthwise_conv(
                    x.data(),
                    x.shape,
                    &self.weight,
                    &self.bias,
                    &geom,
                    s.act,
                    out.data_mut(),
                )?;
            }
        }
        Ok(out)
    }
}
