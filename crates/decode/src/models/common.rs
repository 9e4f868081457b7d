//! Building blocks the explicit-engine decoders (`gru-init`, `merge-lstm`) share.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::kernels::gemm::{gemm, Trans};
use crate::kernels::KernelError;
use crate::model::PAD_ID;

/// `out = x · w^T + b` for `rows` rows: `x` `[rows, n_in]`, `w` `[n_out, n_in]`.
pub(crate) fn linear(
    rows: usize,
    n_in: usize,
    n_out: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    out: &mut [f32],
) -> Result<(), KernelError> {
    for row in out.chunks_exact_mut(n_out) {
        row.copy_from_slice(b);
    }
    gemm(
        rows,
        n_out,
        n_in,
        1.0,
        x,
        Trans::No,
        w,
        Trans::Yes,
        out,
        true,
    )
}

/// Clears and zero-fills `v` to `n` elements (keeps its allocation).
pub(crate) fn zeroed(v: &mut Vec<f32>, n: usize) {
    v.clear();
    v.resize(n, 0.0);
}

/// `n` elements whose values do not matter because every one is written before it is read:
/// large step buffers (tens of MB) are reused as they are instead of being cleared first.
pub(crate) fn sized(v: &mut Vec<f32>, n: usize) {
    v.resize(n, 0.0);
}

/// Row-major `[B, T]` to time-major `[T, B]` into a reused buffer.
pub(crate) fn time_major_into(src: &[u32], batch: usize, time: usize, dst: &mut Vec<u32>) {
    dst.clear();
    dst.resize(src.len(), PAD_ID);
    for b in 0..batch {
        for t in 0..time {
            dst[t * batch + b] = src[b * time + t];
        }
    }
}

/// Draws an inverted-dropout mask (`0` or `1/(1-p)`) of `n` entries and applies it to `x`.
pub(crate) fn dropout(x: &mut [f32], mask: &mut Vec<f32>, p: f32, rng: &mut ChaCha8Rng) {
    let keep = 1.0 / (1.0 - p);
    mask.clear();
    mask.extend((0..x.len()).map(|_| if rng.random::<f32>() < p { 0.0 } else { keep }));
    for (v, m) in x.iter_mut().zip(mask.iter()) {
        *v *= m;
    }
}

/// Copies the embedding rows of `tokens` into `out` (`[tokens, E]`).
pub(crate) fn embed(emb: &[f32], e: usize, tokens: &[u32], out: &mut [f32]) {
    for (dst, &tok) in out.chunks_exact_mut(e).zip(tokens) {
        let t = tok as usize;
        dst.copy_from_slice(&emb[t * e..(t + 1) * e]);
    }
}
