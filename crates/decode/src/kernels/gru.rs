//! Fused GRU layer over a whole sequence, forward and backward through time.
//!
//! PyTorch's convention and layout, so `torch.nn.GRU` weights map 1:1: gates `r, z, n`,
//! `w_ih` = `weight_ih_l0` `[3H, I]`, `w_hh` = `weight_hh_l0` `[3H, H]`, biases `[3H]`, and
//!
//! ```text
//! r = σ(W_ir x + b_ir + W_hr h + b_hr)      z = σ(W_iz x + b_iz + W_hz h + b_hz)
//! n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))      h' = (1 - z) ⊙ n + z ⊙ h
//! ```
//!
//! Unlike the LSTM the two biases cannot be folded (`b_hn` sits inside `r ⊙ ...`), so the
//! recurrent GEMM writes into its own `[B, 3H]` buffer and the cell reads both.

use super::act::{multiversion, sigmoid, tanh};
use super::gemm::{gemm, Trans};
use super::lstm::SeqDims;
use super::{add_col_sums, check_len, KernelError, RecurrentWeights};

/// Borrowed GRU parameters in PyTorch layout (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct GruParams<'a> {
    /// `weight_ih_l0`, `[3H, I]`.
    pub w_ih: &'a [f32],
    /// `weight_hh_l0`, `[3H, H]`.
    pub w_hh: &'a [f32],
    /// `bias_ih_l0`, `[3H]`.
    pub b_ih: &'a [f32],
    /// `bias_hh_l0`, `[3H]`.
    pub b_hh: &'a [f32],
}

/// Gradient accumulators for [`GruParams`] (`+=`).
#[derive(Debug)]
pub struct GruParamGrads<'a> {
    /// `d weight_ih_l0`, `[3H, I]`.
    pub w_ih: &'a mut [f32],
    /// `d weight_hh_l0`, `[3H, H]`.
    pub w_hh: &'a mut [f32],
    /// `d bias_ih_l0`, `[3H]`.
    pub b_ih: &'a mut [f32],
    /// `d bias_hh_l0`, `[3H]`.
    pub b_hh: &'a mut [f32],
}

impl GruParams<'_> {
    fn check(&self, d: &SeqDims) -> Result<(), KernelError> {
        let g = 3 * d.hidden;
        check_len("gru w_ih", self.w_ih.len(), g * d.input)?;
        check_len("gru w_hh", self.w_hh.len(), g * d.hidden)?;
        check_len("gru b_ih", self.b_ih.len(), g)?;
        check_len("gru b_hh", self.b_hh.len(), g)
    }
}

impl GruParamGrads<'_> {
    fn check(&self, d: &SeqDims) -> Result<(), KernelError> {
        let g = 3 * d.hidden;
        check_len("gru dw_ih", self.w_ih.len(), g * d.input)?;
        check_len("gru dw_hh", self.w_hh.len(), g * d.hidden)?;
        check_len("gru db_ih", self.b_ih.len(), g)?;
        check_len("gru db_hh", self.b_hh.len(), g)
    }
}

/// What the GRU forward saves for backward, reused across calls.
#[derive(Debug, Default, Clone)]
pub struct GruCache {
    dims: Option<SeqDims>,
    /// `[T, B, 3H]`: input projections on entry, post-activation `r, z, n` after the step.
    gates: Vec<f32>,
    /// `W_hn h + b_hn` per step, `[T, B, H]` (needed for `dr`).
    hn: Vec<f32>,
    /// Hidden states `[T+1, B, H]`, `h[0] = h0`.
    h: Vec<f32>,
    /// Recurrent projection of the current step, `[B, 3H]`.
    gh: Vec<f32>,
    /// Pre-activation gradients w.r.t. the input projections, `[T, B, 3H]`.
    d_gx: Vec<f32>,
    /// Pre-activation gradients w.r.t. the recurrent projections, `[T, B, 3H]`.
    d_gh: Vec<f32>,
    /// `w_hh` prepared for the per-step products (forward workspace).
    w_hh_op: RecurrentWeights,
}

impl GruCache {
    /// An empty cache; buffers grow on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Layer output `h_1..h_T`, `[T, B, H]`, valid after [`gru_forward`].
    pub fn output(&self) -> &[f32] {
        match self.dims {
            Some(d) => &self.h[d.batch * d.hidden..],
            None => &[],
        }
    }

    /// Final hidden state `h_T`, `[B, H]`.
    pub fn h_last(&self) -> &[f32] {
        match self.dims {
            Some(d) => &self.h[d.seq_len * d.batch * d.hidden..],
            None => &[],
        }
    }
}

fn resize(v: &mut Vec<f32>, n: usize) {
    v.clear();
    v.resize(n, 0.0);
}

multiversion! {
    /// Gate math of one step: `gx` holds `W_i x + b_i` on entry and `r, z, n` on exit.
    fn gru_cell_fwd(hidden: usize, gx: &mut [f32], gh: &[f32], h_prev: &[f32], hn: &mut [f32], h: &mut [f32]) {
        let it = gx
            .chunks_exact_mut(3 * hidden)
            .zip(gh.chunks_exact(3 * hidden))
            .zip(h_prev.chunks_exact(hidden))
            .zip(hn.chunks_exact_mut(hidden).zip(h.chunks_exact_mut(hidden)));
        for (((x, hh), hp), (hn, h)) in it {
            let (xr, rest) = x.split_at_mut(hidden);
            let (xz, xn) = rest.split_at_mut(hidden);
            let (hr, rest) = hh.split_at(hidden);
            let (hz, hnn) = rest.split_at(hidden);
            gru_row_fwd(xr, xz, xn, [hr, hz, hnn], hp, hn, h);
        }
    }
}

/// One row of [`gru_cell_fwd`]. Separate slice arguments tell LLVM the gate blocks do not
/// overlap: for blocks of one slice split at a run-time offset it left the loop scalar, and so it
/// did with the three read-and-written blocks passed inside an array (the GRU forward of the
/// issue-5 bench took 47-49 ms that way, 33-34 ms with them as separate parameters).
#[inline(always)]
fn gru_row_fwd(
    xr: &mut [f32],
    xz: &mut [f32],
    xn: &mut [f32],
    [hr, hz, hnn]: [&[f32]; 3],
    hp: &[f32],
    hn: &mut [f32],
    h: &mut [f32],
) {
    let n = h.len();
    let (xr, xz, xn) = (&mut xr[..n], &mut xz[..n], &mut xn[..n]);
    let (hr, hz, hnn, hp, hn) = (&hr[..n], &hz[..n], &hnn[..n], &hp[..n], &mut hn[..n]);
    for j in 0..n {
        let r = sigmoid(xr[j] + hr[j]);
        let z = sigmoid(xz[j] + hz[j]);
        let nv = tanh(xn[j] + r * hnn[j]);
        xr[j] = r;
        xz[j] = z;
        xn[j] = nv;
        hn[j] = hnn[j];
        h[j] = (1.0 - z) * nv + z * hp[j];
    }
}

multiversion! {
    /// Backward gate math of one step. `dh` enters as the gradient on `h_t` from later steps and
    /// leaves as the direct part of the gradient on `h_{t-1}` (`dh ⊙ z`); the recurrent GEMM adds
    /// the rest.
    fn gru_cell_bwd(
        hidden: usize,
        gates: &[f32],
        hn: &[f32],
        h_prev: &[f32],
        dh_out: &[f32],
        dh: &mut [f32],
        dgx: &mut [f32],
        dgh: &mut [f32],
    ) {
        let it = gates
            .chunks_exact(3 * hidden)
            .zip(hn.chunks_exact(hidden).zip(h_prev.chunks_exact(hidden)))
            .zip(dh_out.chunks_exact(hidden).zip(dh.chunks_exact_mut(hidden)))
            .zip(dgx.chunks_exact_mut(3 * hidden).zip(dgh.chunks_exact_mut(3 * hidden)));
        for (((g, (hn, hp)), (dho, dh)), (dx, dhh)) in it {
            let (gr, rest) = g.split_at(hidden);
            let (gz, gn) = rest.split_at(hidden);
            let (dxr, rest) = dx.split_at_mut(hidden);
            let (dxz, dxn) = rest.split_at_mut(hidden);
            let (dhr, rest) = dhh.split_at_mut(hidden);
            let (dhz, dhn) = rest.split_at_mut(hidden);
            gru_row_bwd([gr, gz, gn], [dxr, dxz, dxn], [dhr, dhz, dhn], hn, hp, dho, dh);
        }
    }
}

/// One row of [`gru_cell_bwd`]; separate slices for the gate blocks, as in [`gru_row_fwd`].
#[inline(always)]
fn gru_row_bwd(
    [gr, gz, gn]: [&[f32]; 3],
    [dxr, dxz, dxn]: [&mut [f32]; 3],
    [dhr, dhz, dhn]: [&mut [f32]; 3],
    hn: &[f32],
    hp: &[f32],
    dho: &[f32],
    dh: &mut [f32],
) {
    let len = dh.len();
    let (gr, gz, gn) = (&gr[..len], &gz[..len], &gn[..len]);
    let (dxr, dxz, dxn) = (&mut dxr[..len], &mut dxz[..len], &mut dxn[..len]);
    let (dhr, dhz, dhn) = (&mut dhr[..len], &mut dhz[..len], &mut dhn[..len]);
    let (hn, hp, dho) = (&hn[..len], &hp[..len], &dho[..len]);
    for j in 0..len {
        let (r, z, n) = (gr[j], gz[j], gn[j]);
        let dhv = dho[j] + dh[j];
        let dan = dhv * (1.0 - z) * (1.0 - n * n);
        let daz = dhv * (hp[j] - n) * z * (1.0 - z);
        let dar = dan * hn[j] * r * (1.0 - r);
        dxr[j] = dar;
        dxz[j] = daz;
        dxn[j] = dan;
        dhr[j] = dar;
        dhz[j] = daz;
        dhn[j] = dan * r;
        dh[j] = dhv * z;
    }
}

/// Runs the layer over `x` (`[T, B, I]`, time-major) from `h0` (`[B, H]`, zeros if `None`).
pub fn gru_forward(
    d: &SeqDims,
    p: &GruParams,
    x: &[f32],
    h0: Option<&[f32]>,
    cache: &mut GruCache,
) -> Result<(), KernelError> {
    d.validate()?;
    p.check(d)?;
    let (t_len, b, i_sz, g) = (d.seq_len, d.batch, d.input, 3 * d.hidden);
    check_len("gru x", x.len(), t_len * b * i_sz)?;
    resize(&mut cache.gates, t_len * b * g);
    for row in cache.gates.chunks_exact_mut(g) {
        row.copy_from_slice(p.b_ih);
    }
    gemm(
        t_len * b,
        g,
        i_sz,
        1.0,
        x,
        Trans::No,
        p.w_ih,
        Trans::Yes,
        &mut cache.gates,
        true,
    )?;
    recurrence(d, p.w_hh, p.b_hh, h0, cache)
}

/// The recurrent part alone: `x_proj` (`[T, B, 3H]`) is `x W_ih^T + b_ih` for every step,
/// computed by the caller (e.g. one candle matmul). Used by the candle op.
pub fn gru_recurrent_forward(
    d: &SeqDims,
    w_hh: &[f32],
    b_hh: &[f32],
    x_proj: &[f32],
    h0: Option<&[f32]>,
    cache: &mut GruCache,
) -> Result<(), KernelError> {
    d.validate()?;
    let g = 3 * d.hidden;
    check_len("gru w_hh", w_hh.len(), g * d.hidden)?;
    check_len("gru b_hh", b_hh.len(), g)?;
    check_len("gru x_proj", x_proj.len(), d.seq_len * d.batch * g)?;
    cache.gates.clear();
    cache.gates.extend_from_slice(x_proj);
    recurrence(d, w_hh, b_hh, h0, cache)
}

/// Steps through time; `cache.gates` holds the input projections on entry.
fn recurrence(
    d: &SeqDims,
    w_hh: &[f32],
    b_hh: &[f32],
    h0: Option<&[f32]>,
    cache: &mut GruCache,
) -> Result<(), KernelError> {
    let (t_len, b, h_sz) = (d.seq_len, d.batch, d.hidden);
    let (g, bh) = (3 * h_sz, b * h_sz);
    resize(&mut cache.hn, t_len * bh);
    resize(&mut cache.h, (t_len + 1) * bh);
    resize(&mut cache.gh, b * g);
    if let Some(h0) = h0 {
        check_len("gru h0", h0.len(), bh)?;
        cache.h[..bh].copy_from_slice(h0);
    }
    cache.dims = Some(*d);
    cache.w_hh_op.prepare(w_hh, g, h_sz, b, t_len)?;
    for t in 0..t_len {
        let (h_lo, h_hi) = cache.h.split_at_mut((t + 1) * bh);
        let h_prev = &h_lo[t * bh..];
        cache
            .w_hh_op
            .product(w_hh, h_prev, b, Some(b_hh), &mut cache.gh)?;
        gru_cell_fwd(
            h_sz,
            &mut cache.gates[t * b * g..(t + 1) * b * g],
            &cache.gh,
            h_prev,
            &mut cache.hn[t * bh..(t + 1) * bh],
            &mut h_hi[..bh],
        );
    }
    Ok(())
}

/// Optional input gradients of [`gru_backward`], overwritten when given.
#[derive(Debug, Default)]
pub struct GruInputGrads<'a> {
    /// `d x`, `[T, B, I]`.
    pub x: Option<&'a mut [f32]>,
    /// `d h0`, `[B, H]`.
    pub h0: Option<&'a mut [f32]>,
}

/// Backward through time for the last [`gru_forward`] held in `cache`; `d_out` is `[T, B, H]`,
/// `d_h_last` optional extra gradient on `h_T`. Parameter gradients accumulate into `grads`.
#[allow(clippy::too_many_arguments)]
pub fn gru_backward(
    d: &SeqDims,
    p: &GruParams,
    x: &[f32],
    cache: &mut GruCache,
    d_out: &[f32],
    d_h_last: Option<&[f32]>,
    grads: &mut GruParamGrads,
    inputs: GruInputGrads,
) -> Result<(), KernelError> {
    p.check(d)?;
    grads.check(d)?;
    let (tb, i_sz, g) = (d.seq_len * d.batch, d.input, 3 * d.hidden);
    check_len("gru x", x.len(), tb * i_sz)?;
    let rec = GruRecurrentGrads {
        w_hh: &mut *grads.w_hh,
        b_hh: &mut *grads.b_hh,
        h0: inputs.h0,
    };
    let d_gx = gru_recurrent_backward(d, p.w_hh, cache, d_out, d_h_last, rec)?;
    gemm(
        g,
        i_sz,
        tb,
        1.0,
        d_gx,
        Trans::Yes,
        x,
        Trans::No,
        grads.w_ih,
        true,
    )?;
    add_col_sums(d_gx, g, grads.b_ih);
    if let Some(dx) = inputs.x {
        check_len("gru dx", dx.len(), tb * i_sz)?;
        gemm(
            tb,
            i_sz,
            g,
            1.0,
            d_gx,
            Trans::No,
            p.w_ih,
            Trans::No,
            dx,
            false,
        )?;
    }
    Ok(())
}

/// Gradient outputs of [`gru_recurrent_backward`]: `w_hh`/`b_hh` accumulate, `h0` is overwritten.
#[derive(Debug)]
pub struct GruRecurrentGrads<'a> {
    /// `d weight_hh_l0` (`+=`).
    pub w_hh: &'a mut [f32],
    /// `d bias_hh_l0` (`+=`).
    pub b_hh: &'a mut [f32],
    /// `d h0`, `[B, H]`.
    pub h0: Option<&'a mut [f32]>,
}

/// Backward of [`gru_recurrent_forward`]: returns the gradient w.r.t. `x_proj` (`[T, B, 3H]`,
/// borrowed from the cache; also the per-row gradient of `b_ih`).
pub fn gru_recurrent_backward<'c>(
    d: &SeqDims,
    w_hh: &[f32],
    cache: &'c mut GruCache,
    d_out: &[f32],
    d_h_last: Option<&[f32]>,
    grads: GruRecurrentGrads,
) -> Result<&'c [f32], KernelError> {
    if cache.dims != Some(*d) {
        return Err(KernelError::CacheMismatch {
            cached: format!("{:?}", cache.dims),
            requested: format!("{d:?}"),
        });
    }
    let (t_len, b, h_sz) = (d.seq_len, d.batch, d.hidden);
    let (g, bh) = (3 * h_sz, b * h_sz);
    check_len("gru w_hh", w_hh.len(), g * h_sz)?;
    check_len("gru dw_hh", grads.w_hh.len(), g * h_sz)?;
    check_len("gru db_hh", grads.b_hh.len(), g)?;
    check_len("gru d_out", d_out.len(), t_len * bh)?;
    let mut dh = vec![0f32; bh];
    if let Some(v) = d_h_last {
        check_len("gru d_h_last", v.len(), bh)?;
        dh.copy_from_slice(v);
    }
    resize(&mut cache.d_gx, t_len * b * g);
    resize(&mut cache.d_gh, t_len * b * g);
    for t in (0..t_len).rev() {
        let span = t * b * g..(t + 1) * b * g;
        gru_cell_bwd(
            h_sz,
            &cache.gates[span.clone()],
            &cache.hn[t * bh..(t + 1) * bh],
            &cache.h[t * bh..(t + 1) * bh],
            &d_out[t * bh..(t + 1) * bh],
            &mut dh,
            &mut cache.d_gx[span.clone()],
            &mut cache.d_gh[span.clone()],
        );
        gemm(
            b,
            h_sz,
            g,
            1.0,
            &cache.d_gh[span],
            Trans::No,
            w_hh,
            Trans::No,
            &mut dh,
            true,
        )?;
    }
    let tb = t_len * b;
    gemm(
        g,
        h_sz,
        tb,
        1.0,
        &cache.d_gh,
        Trans::Yes,
        &cache.h[..tb * h_sz],
        Trans::No,
        grads.w_hh,
        true,
    )?;
    add_col_sums(&cache.d_gh, g, grads.b_hh);
    if let Some(dh0) = grads.h0 {
        check_len("gru dh0", dh0.len(), bh)?;
        dh0.copy_from_slice(&dh);
    }
    Ok(&cache.d_gx)
}

/// Reference forward in `f64` straight from the equations; returns `h_1..h_T`.
pub fn gru_forward_ref(d: &SeqDims, p: &GruParams, x: &[f32], h0: &[f32]) -> Vec<f64> {
    let (hs, is) = (d.hidden, d.input);
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let mut h: Vec<f64> = h0.iter().map(|&v| v as f64).collect();
    let mut out = Vec::with_capacity(d.seq_len * d.batch * hs);
    for t in 0..d.seq_len {
        let mut hn = vec![0f64; d.batch * hs];
        for bi in 0..d.batch {
            let xr = &x[(t * d.batch + bi) * is..][..is];
            let hr = &h[bi * hs..(bi + 1) * hs];
            let wi = |r: usize| {
                let mut s = p.b_ih[r] as f64;
                for (w, v) in p.w_ih[r * is..(r + 1) * is].iter().zip(xr) {
                    s += *w as f64 * *v as f64;
                }
                s
            };
            let wh = |r: usize| {
                let mut s = p.b_hh[r] as f64;
                for (w, v) in p.w_hh[r * hs..(r + 1) * hs].iter().zip(hr) {
                    s += *w as f64 * v;
                }
                s
            };
            for j in 0..hs {
                let r = sig(wi(j) + wh(j));
                let z = sig(wi(hs + j) + wh(hs + j));
                let n = (wi(2 * hs + j) + r * wh(2 * hs + j)).tanh();
                hn[bi * hs + j] = (1.0 - z) * n + z * hr[j];
            }
        }
        out.extend_from_slice(&hn);
        h = hn;
    }
    out
}
