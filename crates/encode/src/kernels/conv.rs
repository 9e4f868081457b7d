//! Dense (groups = 1) convolutions in NHWC: 1x1 convolutions are one GEMM over `[pixels, cin]`;
//! everything else is im2col + GEMM, built one block of output rows at a time so the im2col buffer
//! stays in L2 instead of growing to `pixels * kh * kw * cin` floats.

use std::cell::RefCell;

use rayon::prelude::*;

use super::gemm::{check_weight, gemm_block, matmul, rows_per_task, Epilogue};
use super::{check_len, num_threads, Conv2dGeom, Nhwc, Result};

/// 1x1 stride-1 convolution: `out[p, :] = epilogue(input[p, :] @ weight)`, weight `[cin, cout]`.
pub fn pointwise_conv(
    input: &[f32],
    shape: Nhwc,
    weight: &[f32],
    out_c: usize,
    epilogue: &Epilogue,
    out: &mut [f32],
) -> Result<Nhwc> {
    check_len("pointwise input", shape.len(), input.len())?;
    check_weight("pointwise conv", shape.c, out_c, weight.len())?;
    let m = shape.pixels();
    matmul(input, weight, out, m, shape.c, out_c, epilogue)?;
    Ok(Nhwc::new(shape.n, shape.h, shape.w, out_c))
}

thread_local! {
    static IM2COL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// General convolution, weight HWIO `[kh, kw, cin, cout]`; returns the output shape.
pub fn conv2d(
    input: &[f32],
    shape: Nhwc,
    weight: &[f32],
    out_c: usize,
    geom: &Conv2dGeom,
    epilogue: &Epilogue,
    out: &mut [f32],
) -> Result<Nhwc> {
    check_len("conv2d input", shape.len(), input.len())?;
    let k = geom.kernel_h * geom.kernel_w * shape.c;
    check_weight("conv2d", k, out_c, weight.len())?;
    let oshape = geom.output_shape(shape, out_c)?;
    check_len("conv2d output", oshape.len(), out.len())?;
    let m = oshape.pixels();
    epilogue.check(m, out_c)?;
    let trivial = geom.kernel_h == 1
        && geom.kernel_w == 1
        && geom.stride == 1
        && geom.pad == Default::default();
    if trivial {
        return pointwise_conv(input, shape, weight, out_c, epilogue, out);
    }
    if m == 0 || out_c == 0 {
        return Ok(oshape);
    }
    let run_block = |row0: usize, chunk: &mut [f32], par: bool| {
        let rows = chunk.len() / out_c;
        IM2COL.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.resize(rows * k, 0.0);
            im2col_rows(input, shape, geom, oshape, row0, rows, &mut buf);
            gemm_block(&buf, weight, chunk, rows, k, out_c, par);
        });
        epilogue.apply(chunk, out_c, row0);
    };
    match rows_per_task(m, k, num_threads()) {
        None => run_block(0, out, true),
        Some(rows) => out
            .par_chunks_mut(rows * out_c)
            .enumerate()
            .for_each(|(i, chunk)| run_block(i * rows, chunk, false)),
    }
    Ok(oshape)
}

/// Writes the im2col rows `row0..row0 + rows` (one per output pixel, columns in `(ky, kx, ci)`
/// order to match HWIO weights) into `buf`; padding taps are zeros.
fn im2col_rows(
    input: &[f32],
    s: Nhwc,
    geom: &Conv2dGeom,
    o: Nhwc,
    row0: usize,
    rows: usize,
    buf: &mut [f32],
) {
    let c = s.c;
    let row_len = geom.kernel_h * geom.kernel_w * c;
    for (r, dst) in buf.chunks_exact_mut(row_len).take(rows).enumerate() {
        let p = row0 + r;
        let ox = p % o.w;
        let oy = (p / o.w) % o.h;
        let n = p / (o.w * o.h);
        for ky in 0..geom.kernel_h {
            let iy = (oy * geom.stride + ky) as isize - geom.pad.top as isize;
            let dst_row = &mut dst[ky * geom.kernel_w * c..(ky + 1) * geom.kernel_w * c];
            if iy < 0 || iy >= s.h as isize {
                dst_row.fill(0.0);
                continue;
            }
            let src_row = (n * s.h + iy as usize) * s.w * c;
            for kx in 0..geom.kernel_w {
                let ix = (ox * geom.stride + kx) as isize - geom.pad.left as isize;
                let d = &mut dst_row[kx * c..(kx + 1) * c];
                if ix < 0 || ix >= s.w as isize {
                    d.fill(0.0);
                } else {
                    let at = src_row + ix as usize * c;
                    d.copy_from_slice(&input[at..at + c]);
                }
            }
        }
    }
}
