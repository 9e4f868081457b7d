//! Plain-loop reference implementations: the definition the fast kernels are tested against.
//! Slow on purpose; no blocking, no SIMD, no threads. Inputs are assumed well-formed (tests only).

use super::{Activation, Conv2dGeom, Nhwc};

/// `act(a @ b + bias + residual)`, row-major, accumulating in f64 for a tight reference.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    act: Activation,
) -> Vec<f32> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                acc += a[i * k + p] as f64 * b[p * n + j] as f64;
            }
            let mut v = acc as f32 + bias.map_or(0.0, |b| b[j]);
            v += residual.map_or(0.0, |r| r[i * n + j]);
            out[i * n + j] = act.apply(v);
        }
    }
    out
}

/// Direct NHWC convolution with HWIO weight `[kh, kw, cin / groups, cout]` and `groups` groups
/// (`groups == cin == cout` is a depthwise convolution, whose weight is then `[kh, kw, c]`).
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    input: &[f32],
    s: Nhwc,
    weight: &[f32],
    bias: Option<&[f32]>,
    out_c: usize,
    groups: usize,
    geom: &Conv2dGeom,
    act: Activation,
) -> (Vec<f32>, Nhwc) {
    let o = geom
        .output_shape(s, out_c)
        .expect("reference conv geometry");
    let cin_g = s.c / groups;
    let cout_g = out_c / groups;
    let mut out = vec![0.0; o.len()];
    for n in 0..o.n {
        for oy in 0..o.h {
            for ox in 0..o.w {
                for co in 0..out_c {
                    let g = co / cout_g;
                    let mut acc = 0.0f64;
                    for ky in 0..geom.kernel_h {
                        let iy = (oy * geom.stride + ky) as isize - geom.pad.top as isize;
                        if iy < 0 || iy >= s.h as isize {
                            continue;
                        }
                        for kx in 0..geom.kernel_w {
                            let ix = (ox * geom.stride + kx) as isize - geom.pad.left as isize;
                            if ix < 0 || ix >= s.w as isize {
                                continue;
                            }
                            for ci in 0..cin_g {
                                let x = input[((n * s.h + iy as usize) * s.w + ix as usize) * s.c
                                    + g * cin_g
                                    + ci];
                                // HWIO with the per-group input slice; `co` indexes all outputs.
                                let w =
                                    weight[((ky * geom.kernel_w + kx) * cin_g + ci) * out_c + co];
                                acc += x as f64 * w as f64;
                            }
                        }
                    }
                    let v = acc as f32 + bias.map_or(0.0, |b| b[co]);
                    out[((n * o.h + oy) * o.w + ox) * out_c + co] = act.apply(v);
                }
            }
        }
    }
    (out, o)
}

/// Mean over the spatial axes.
pub fn global_avg_pool(input: &[f32], s: Nhwc) -> Vec<f32> {
    let mut out = vec![0.0; s.n * s.c];
    for n in 0..s.n {
        for c in 0..s.c {
            let mut acc = 0.0f64;
            for p in 0..s.h * s.w {
                acc += input[(n * s.h * s.w + p) * s.c + c] as f64;
            }
            out[n * s.c + c] = (acc / (s.h * s.w) as f64) as f32;
        }
    }
    out
}

/// Max pooling that skips padding taps.
pub fn max_pool2d(input: &[f32], s: Nhwc, geom: &Conv2dGeom) -> (Vec<f32>, Nhwc) {
    let o = geom.output_shape(s, s.c).expect("reference pool geometry");
    let mut out = vec![f32::NEG_INFINITY; o.len()];
    for n in 0..o.n {
        for oy in 0..o.h {
            for ox in 0..o.w {
                for ky in 0..geom.kernel_h {
                    for kx in 0..geom.kernel_w {
                        let iy = (oy * geom.stride + ky) as isize - geom.pad.top as isize;
                        let ix = (ox * geom.stride + kx) as isize - geom.pad.left as isize;
                        if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                            continue;
                        }
                        for c in 0..s.c {
                            let x = input[((n * s.h + iy as usize) * s.w + ix as usize) * s.c + c];
                            let d = &mut out[((n * o.h + oy) * o.w + ox) * s.c + c];
                            *d = d.max(x);
                        }
                    }
                }
            }
        }
    }
    (out, o)
}
