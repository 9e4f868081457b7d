//! Pooling over NHWC activations.

use rayon::prelude::*;

use super::{check_len, Conv2dGeom, Nhwc, Result};

/// Mean over `h x w` for each image and channel: `[n, h, w, c] -> [n, c]`.
pub fn global_avg_pool(input: &[f32], shape: Nhwc, out: &mut [f32]) -> Result<()> {
    check_len("avg-pool input", shape.len(), input.len())?;
    check_len("avg-pool output", shape.n * shape.c, out.len())?;
    let c = shape.c;
    if c == 0 {
        return Ok(());
    }
    let hw = shape.h * shape.w;
    let scale = 1.0 / hw.max(1) as f32;
    for (img, dst) in out.chunks_exact_mut(c).enumerate() {
        dst.fill(0.0);
        for px in input[img * hw * c..(img + 1) * hw * c].chunks_exact(c) {
            dst.iter_mut().zip(px).for_each(|(d, &x)| *d += x);
        }
        dst.iter_mut().for_each(|d| *d *= scale);
    }
    Ok(())
}

/// Max pooling; padding taps are ignored (as PyTorch does), so a window is never all padding
/// when `pad < kernel`, which the geometry check enforces.
pub fn max_pool2d(input: &[f32], shape: Nhwc, geom: &Conv2dGeom, out: &mut [f32]) -> Result<Nhwc> {
    check_len("max-pool input", shape.len(), input.len())?;
    let o = geom.output_shape(shape, shape.c)?;
    check_len("max-pool output", o.len(), out.len())?;
    let c = shape.c;
    if o.is_empty() {
        return Ok(o);
    }
    out.par_chunks_mut(o.w * c)
        .enumerate()
        .for_each(|(row, dst)| {
            let (n, oy) = (row / o.h, row % o.h);
            for (ox, acc) in dst.chunks_exact_mut(c).enumerate() {
                acc.fill(f32::NEG_INFINITY);
                for ky in 0..geom.kernel_h {
                    let Some(iy) = (oy * geom.stride + ky).checked_sub(geom.pad.top) else {
                        continue;
                    };
                    if iy >= shape.h {
                        continue;
                    }
                    for kx in 0..geom.kernel_w {
                        let Some(ix) = (ox * geom.stride + kx).checked_sub(geom.pad.left) else {
                            continue;
                        };
                        if ix >= shape.w {
                            continue;
                        }
                        let at = ((n * shape.h + iy) * shape.w + ix) * c;
                        acc.iter_mut()
                            .zip(&input[at..at + c])
                            .for_each(|(a, &x)| *a = a.max(x));
                    }
                }
            }
        });
    Ok(o)
}
