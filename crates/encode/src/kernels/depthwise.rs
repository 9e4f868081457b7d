//! Depthwise k x k convolution in NHWC with fused bias + activation, computed directly.
//!
//! NHWC puts the channels of one pixel next to each other, so the kernel vectorises over channels:
//! for a block of 16 channels it keeps all k*k weight vectors in registers and slides along the
//! output row. Interior pixels take a branch-free path; only the few border pixels check bounds.

use rayon::prelude::*;

use super::{check_len, Activation, Conv2dGeom, Nhwc, Result};

/// Depthwise convolution, weight `[kh, kw, c]`, bias `[c]`; returns the output shape.
pub fn depthwise_conv(
    input: &[f32],
    shape: Nhwc,
    weight: &[f32],
    bias: &[f32],
    geom: &Conv2dGeom,
    act: Activation,
    out: &mut [f32],
) -> Result<Nhwc> {
    check_len("depthwise input", shape.len(), input.len())?;
    check_len(
        "depthwise weight",
        geom.kernel_h * geom.kernel_w * shape.c,
        weight.len(),
    )?;
    check_len("depthwise bias", shape.c, bias.len())?;
    let o = geom.output_shape(shape, shape.c)?;
    check_len("depthwise output", o.len(), out.len())?;
    if o.is_empty() {
        return Ok(o);
    }
    let row_len = o.w * o.c;
    let p = Params {
        s: shape,
        o,
        geom: *geom,
        act,
    };
    let use_avx512 = avx512::available() && geom.kernel_h == geom.kernel_w;
    out.par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(row, dst)| {
            let (n, oy) = (row / o.h, row % o.h);
            if use_avx512 {
                avx512::row(&p, input, weight, bias, n, oy, dst);
            } else {
                generic_row(&p, input, weight, bias, n, oy, dst);
            }
        });
    Ok(o)
}

/// Everything a row kernel needs besides the buffers.
pub(crate) struct Params {
    s: Nhwc,
    o: Nhwc,
    geom: Conv2dGeom,
    act: Activation,
}

impl Params {
    /// Input row for tap `ky` of output row `oy`, or `None` when it falls in the padding.
    fn input_row(&self, n: usize, oy: usize, ky: usize) -> Option<usize> {
        let iy = (oy * self.geom.stride + ky).checked_sub(self.geom.pad.top)?;
        (iy < self.s.h).then_some(iy + n * self.s.h)
    }

    /// Range of output columns whose whole window lies inside the input (no bounds checks needed).
    fn interior(&self) -> (usize, usize) {
        let g = &self.geom;
        let lo = g.pad.left.div_ceil(g.stride).min(self.o.w);
        let hi = if self.s.w + g.pad.left >= g.kernel_w {
            ((self.s.w + g.pad.left - g.kernel_w) / g.stride + 1).min(self.o.w)
        } else {
            0
        };
        (lo, hi.max(lo))
    }
}

/// Portable path (and fallback): autovectorises over the channel loop.
fn generic_row(
    p: &Params,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    n: usize,
    oy: usize,
    dst: &mut [f32],
) {
    let c = p.s.c;
    let g = &p.geom;
    for (ox, acc) in dst.chunks_exact_mut(c).enumerate() {
        acc.copy_from_slice(bias);
        for ky in 0..g.kernel_h {
            let Some(irow) = p.input_row(n, oy, ky) else {
                continue;
            };
            for kx in 0..g.kernel_w {
                let Some(ix) = (ox * g.stride + kx).checked_sub(g.pad.left) else {
                    continue;
                };
                if ix >= p.s.w {
                    continue;
                }
                let x = &input[(irow * p.s.w + ix) * c..][..c];
                let w = &weight[(ky * g.kernel_w + kx) * c..][..c];
                for ((a, &x), &w) in acc.iter_mut().zip(x).zip(w) {
                    *a += x * w;
                }
            }
        }
        acc.iter_mut().for_each(|a| *a = p.act.apply(*a));
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Activation, Params};

    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// Computes one output row; dispatches on the kernel size so the weights live in registers.
    pub fn row(
        p: &Params,
        input: &[f32],
        weight: &[f32],
        bias: &[f32],
        n: usize,
        oy: usize,
        dst: &mut [f32],
    ) {
        // SAFETY: `available()` was checked by the caller before choosing this path, and the
        // row kernels only index inside the slices they are given (see `row_k`).
        unsafe {
            match p.geom.kernel_h {
                3 => row_k::<3>(p, input, weight, bias, n, oy, dst),
                5 => row_k::<5>(p, input, weight, bias, n, oy, dst),
                _ => row_dyn(p, input, weight, bias, n, oy, dst),
            }
        }
    }

    #[inline(always)]
    unsafe fn finish(acc: __m512, act: Activation) -> __m512 {
        match act {
            Activation::Identity => acc,
            Activation::Relu => _mm512_max_ps(acc, _mm512_setzero_ps()),
            Activation::Relu6 => {
                _mm512_min_ps(_mm512_max_ps(acc, _mm512_setzero_ps()), _mm512_set1_ps(6.0))
            }
        }
    }

    /// K x K window with weights held in registers. Every load is a masked load of channels
    /// `cb..cb + lanes` from an element offset that the loops keep inside the input / weight /
    /// output slices: `irow < n*h`, `ix < w`, `ox < out_w`, `cb + lanes <= c` (mask covers tails).
    #[target_feature(enable = "avx512f")]
    unsafe fn row_k<const K: usize>(
        p: &Params,
        input: &[f32],
        weight: &[f32],
        bias: &[f32],
        n: usize,
        oy: usize,
        dst: &mut [f32],
    ) {
        let c = p.s.c;
        let stride = p.geom.stride;
        let pad_l = p.geom.pad.left;
        let rows: [Option<usize>; K] = std::array::from_fn(|ky| p.input_row(n, oy, ky));
        let row_ptr: [Option<*const f32>; K] = std::array::from_fn(|ky| {
            rows[ky].map(|r| input[r * p.s.w * c..(r + 1) * p.s.w * c].as_ptr())
        });
        let (lo, hi) = p.interior();
        let wp = weight.as_ptr();
        let mut cb = 0;
        while cb < c {
            let lanes = (c - cb).min(16);
            let mask: __mmask16 = if lanes == 16 {
                0xffff
            } else {
                (1u16 << lanes) - 1
            };
            let mut w = [[_mm512_setzero_ps(); K]; K];
            for (ky, wrow) in w.iter_mut().enumerate() {
                for (kx, wv) in wrow.iter_mut().enumerate() {
                    *wv = _mm512_maskz_loadu_ps(mask, wp.add((ky * K + kx) * c + cb));
                }
            }
            let b = _mm512_maskz_loadu_ps(mask, bias.as_ptr().add(cb));
            let pixel = |ox: usize, checked: bool| -> __m512 {
                let mut acc = b;
                for (src, wrow) in row_ptr.iter().zip(&w) {
                    let Some(src) = *src else { continue };
                    for (kx, &wv) in wrow.iter().enumerate() {
                        let ix = ox * stride + kx;
                        if checked && (ix < pad_l || ix - pad_l >= p.s.w) {
                            continue;
                        }
                        let x = _mm512_maskz_loadu_ps(mask, src.add((ix - pad_l) * c + cb));
                        acc = _mm512_fmadd_ps(x, wv, acc);
                    }
                }
                finish(acc, p.act)
            };
            let out = dst.as_mut_ptr();
            for ox in (0..lo).chain(hi..p.o.w) {
                _mm512_mask_storeu_ps(out.add(ox * c + cb), mask, pixel(ox, true));
            }
            for ox in lo..hi {
                _mm512_mask_storeu_ps(out.add(ox * c + cb), mask, pixel(ox, false));
            }
            cb += 16;
        }
    }

    /// Any other window size: same structure, weights loaded per tap.
    #[target_feature(enable = "avx512f")]
    unsafe fn row_dyn(
        p: &Params,
        input: &[f32],
        weight: &[f32],
        bias: &[f32],
        n: usize,
        oy: usize,
        dst: &mut [f32],
    ) {
        let c = p.s.c;
        let g = &p.geom;
        let mut cb = 0;
        while cb < c {
            let lanes = (c - cb).min(16);
            let mask: __mmask16 = if lanes == 16 {
                0xffff
            } else {
                (1u16 << lanes) - 1
            };
            for ox in 0..p.o.w {
                let mut acc = _mm512_maskz_loadu_ps(mask, bias.as_ptr().add(cb));
                for ky in 0..g.kernel_h {
                    let Some(irow) = p.input_row(n, oy, ky) else {
                        continue;
                    };
                    for kx in 0..g.kernel_w {
                        let ix = ox * g.stride + kx;
                        if ix < g.pad.left || ix - g.pad.left >= p.s.w {
                            continue;
                        }
                        let at = (irow * p.s.w + ix - g.pad.left) * c + cb;
                        let x = _mm512_maskz_loadu_ps(mask, input.as_ptr().add(at));
                        let wv = _mm512_maskz_loadu_ps(
                            mask,
                            weight.as_ptr().add((ky * g.kernel_w + kx) * c + cb),
                        );
                        acc = _mm512_fmadd_ps(x, wv, acc);
                    }
                }
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(ox * c + cb), mask, finish(acc, p.act));
            }
            cb += 16;
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx512 {
    use super::Params;

    pub fn available() -> bool {
        false
    }

    pub fn row(_: &Params, _: &[f32], _: &[f32], _: &[f32], _: usize, _: usize, _: &mut [f32]) {}
}
