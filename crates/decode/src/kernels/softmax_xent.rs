//! Fused vocabulary projection + softmax + cross-entropy, forward and gradient in one pass.
//!
//! For `N = B*T` rows of hidden states `x` `[N, D]`, a projection `w` `[V, D]` (PyTorch
//! `nn.Linear.weight` layout) and bias `[V]`, the loss is PyTorch's
//! `cross_entropy(x @ w.T + b, targets, ignore_index, label_smoothing)` with mean reduction over
//! the rows that are not ignored. Rows are processed in chunks: a chunk's logits are computed,
//! turned into their gradient in place, and consumed by the two backward GEMMs before the next
//! chunk, so the `[N, V]` logits never exist in full (with the default chunk size they exist once
//! per chunk, in cache-sized pieces). Ignored (padding) rows are skipped entirely, like
//! `pack_padded_sequence` does in PyTorch.
//!
//! [`linear_xent_weighted`] also takes optional per-row weights `w_r` (policy-gradient training:
//! `w_r` is a sequence's advantage): the objective becomes `Σ_r w_r·loss_r / n_valid`, i.e. each
//! row's loss and gradient are scaled by its weight while the mean is still over the rows that
//! are not ignored. Without weights it is [`linear_xent`], bit for bit.

use super::act::{exp, multiversion};
use super::gemm::{gemm, Trans};
use super::{check_len, KernelError};
use rayon::prelude::*;

/// Loss options.
#[derive(Clone, Copy, Debug)]
pub struct XentConfig {
    /// PyTorch `label_smoothing` in `[0, 1)`: the target distribution is
    /// `(1 - ε)·onehot + ε/V`.
    pub label_smoothing: f32,
    /// Softmax temperature `T > 0`: the loss is that of the logits divided by `T`, and the
    /// gradients are those of the raw logits (so they carry the factor `1/T`). Self-critical
    /// training scores its samples with the distribution they were drawn from, which at a
    /// sampling temperature below 1 is not the plain softmax. 1 changes nothing, bit for bit.
    pub temperature: f32,
    /// Rows whose target equals this id (the padding token) contribute neither loss nor gradient.
    pub ignore_index: Option<u32>,
    /// Rows per chunk at most; bounds the logits workspace to `chunk_rows * V` floats. The rows
    /// are split into chunks of equal size, so no small last chunk runs at a poor GEMM rate.
    pub chunk_rows: usize,
}

impl Default for XentConfig {
    fn default() -> Self {
        Self {
            label_smoothing: 0.0,
            temperature: 1.0,
            ignore_index: None,
            // Measured on the issue-5 shapes (V = 8,000, D = 512): the three GEMMs run at 100-140
            // GFLOP/s on 128-256 rows and 175-198 on 1,024-1,280 (2 threads), so a training batch
            // (64 captions x ~20 words) is best done in one chunk: 2,048 rows is a 64 MB workspace.
            chunk_rows: 2048,
        }
    }
}

/// Shapes of a fused-loss call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XentDims {
    /// Rows `N` (tokens).
    pub rows: usize,
    /// Hidden features `D`.
    pub dim: usize,
    /// Vocabulary `V`.
    pub vocab: usize,
}

/// Result of a fused-loss call.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct XentStats {
    /// Mean loss over non-ignored rows (0 when all rows are ignored); with row weights, the
    /// weighted objective `Σ_r w_r·loss_r / n_valid`.
    pub loss: f32,
    /// Sum of per-row losses, weighted when weights are given (for averaging over several
    /// batches exactly).
    pub loss_sum: f64,
    /// Rows that were not ignored.
    pub n_valid: usize,
}

/// Gradient outputs: `x` is overwritten (ignored rows get zeros), `w`/`b` are accumulated.
#[derive(Debug)]
pub struct XentGrads<'a> {
    /// `d x`, `[N, D]`.
    pub x: &'a mut [f32],
    /// `d w`, `[V, D]` (`+=`).
    pub w: &'a mut [f32],
    /// `d b`, `[V]` (`+=`).
    pub b: &'a mut [f32],
}

/// Reusable buffers so repeated calls do not fault in fresh pages for the logits every step.
#[derive(Debug, Default, Clone)]
pub struct XentWorkspace {
    logits: Vec<f32>,
    xc: Vec<f32>,
    dxc: Vec<f32>,
    rows: Vec<usize>,
    row_loss: Vec<f64>,
    /// One bias-gradient partial per row block, `[blocks, V]`.
    db_partials: Vec<f32>,
}

/// Row blocks of the softmax pass, each summing its own part of the bias gradient: enough to
/// keep two to eight threads busy, few enough that the partials (`V` floats each) stay small.
const DB_BLOCKS: usize = 16;

impl XentWorkspace {
    /// Empty workspace; grows on first use.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Lanes of the independent accumulators below: float reductions only vectorise when written
/// with explicit parallel partial sums (the compiler may not reassociate `+`).
const LANES: usize = 16;

multiversion! {
    /// One row: logits without the bias in (the bias is added here, in the pass that reads the
    /// row anyway, and the sum scaled by `inv_temperature`), (unweighted) loss out; with `grad`
    /// the row becomes `grad_scale * (softmax - target_distribution)` and is added into `db` (the
    /// bias gradient, summed here while the row is in cache instead of in another pass over all
    /// the logits). The caller folds `1/T` into `grad_scale`.
    fn row_xent(row: &mut [f32], bias: &[f32], target: usize, smoothing: f32, inv_temperature: f32, grad: bool, grad_scale: f32, db: &mut [f32]) -> f64 {
        let v = row.len() as f32;
        let bias = &bias[..row.len()];
        let l_y = (row[target] + bias[target]) * inv_temperature;
        let mut mx = [f32::NEG_INFINITY; LANES];
        let mut sl = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        let mut bias_chunks = bias.chunks_exact(LANES);
        for (c, b) in (&mut chunks).zip(&mut bias_chunks) {
            for k in 0..LANES {
                let l = (c[k] + b[k]) * inv_temperature;
                c[k] = l;
                mx[k] = mx[k].max(l);
                sl[k] += l;
            }
        }
        let mut m = mx.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut sum_l: f32 = sl.iter().sum();
        for (l, b) in chunks.into_remainder().iter_mut().zip(bias_chunks.remainder()) {
            *l = (*l + b) * inv_temperature;
            m = m.max(*l);
            sum_l += *l;
        }
        let mut acc = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for k in 0..LANES {
                let e = exp(c[k] - m);
                acc[k] += e;
                c[k] = e;
            }
        }
        let mut s: f32 = acc.iter().sum();
        for l in chunks.into_remainder() {
            let e = exp(*l - m);
            s += e;
            *l = e;
        }
        let lse = m + s.ln();
        // (1-ε)(lse - l_y) + ε/V Σ_j (lse - l_j)
        let loss = (1.0 - smoothing) * (lse - l_y) + smoothing * (lse - sum_l / v);
        if grad {
            let inv = grad_scale / s;
            let off = grad_scale * smoothing / v;
            let db = &mut db[..row.len()];
            for (e, acc) in row.iter_mut().zip(db.iter_mut()) {
                *e = *e * inv - off;
                *acc += *e;
            }
            let target_grad = grad_scale * (1.0 - smoothing);
            row[target] -= target_grad;
            db[target] -= target_grad;
        }
        loss as f64
    }
}

/// Fused `cross_entropy(x @ w.T + b, targets)`; computes gradients of the mean loss when `grads`
/// is given (the training path) and only the loss otherwise (evaluation).
#[allow(clippy::too_many_arguments)]
pub fn linear_xent(
    dims: &XentDims,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    targets: &[u32],
    cfg: &XentConfig,
    grads: Option<XentGrads>,
    ws: &mut XentWorkspace,
) -> Result<XentStats, KernelError> {
    linear_xent_weighted(dims, x, w, b, targets, None, cfg, grads, ws)
}

/// [`linear_xent`] with optional per-row weights `row_weights` (`N` finite values; rows whose
/// target is ignored may hold anything): row `r`'s loss and gradient are multiplied by
/// `row_weights[r]`, and the result is still divided by the number of non-ignored rows. A row of
/// weight 0 contributes nothing (its `d x` row is zero); weights may be negative. `None` is
/// exactly [`linear_xent`].
#[allow(clippy::too_many_arguments)]
pub fn linear_xent_weighted(
    dims: &XentDims,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    targets: &[u32],
    row_weights: Option<&[f32]>,
    cfg: &XentConfig,
    mut grads: Option<XentGrads>,
    ws: &mut XentWorkspace,
) -> Result<XentStats, KernelError> {
    let XentDims {
        rows: n,
        dim: d,
        vocab: v,
    } = *dims;
    check_len("xent x", x.len(), n * d)?;
    check_len("xent w", w.len(), v * d)?;
    check_len("xent b", b.len(), v)?;
    check_len("xent targets", targets.len(), n)?;
    if let Some(rw) = row_weights {
        check_len("xent row weights", rw.len(), n)?;
    }
    let temperature_ok = cfg.temperature.is_finite() && cfg.temperature > 0.0;
    if !(0.0..1.0).contains(&cfg.label_smoothing)
        || !temperature_ok
        || cfg.chunk_rows == 0
        || v == 0
    {
        return Err(KernelError::Invalid(format!(
            "xent config {cfg:?} with vocab {v}"
        )));
    }
    if let Some(g) = grads.as_ref() {
        check_len("xent dx", g.x.len(), n * d)?;
        check_len("xent dw", g.w.len(), v * d)?;
        check_len("xent db", g.b.len(), v)?;
    }
    ws.rows.clear();
    for (row, &t) in targets.iter().enumerate() {
        if Some(t) == cfg.ignore_index {
            continue;
        }
        if t as usize >= v {
            return Err(KernelError::Target {
                row,
                target: t,
                vocab: v,
            });
        }
        if let Some(wt) = row_weights.map(|rw| rw[row]) {
            if !wt.is_finite() {
                return Err(KernelError::Invalid(format!(
                    "xent row {row} has the weight {wt}; weights must be finite"
                )));
            }
        }
        ws.rows.push(row);
    }
    let n_valid = ws.rows.len();
    if let Some(g) = grads.as_mut() {
        g.x.fill(0.0);
    }
    if n_valid == 0 {
        return Ok(XentStats::default());
    }
    let want_grad = grads.is_some();
    let inv_temperature = 1.0 / cfg.temperature;
    let grad_scale = if want_grad {
        inv_temperature / n_valid as f32
    } else {
        0.0
    };
    let chunk = n_valid.div_ceil(n_valid.div_ceil(cfg.chunk_rows));
    ws.logits.resize(chunk * v, 0.0);
    ws.xc.resize(chunk * d, 0.0);
    ws.dxc.resize(chunk * d, 0.0);
    ws.row_loss.resize(chunk, 0.0);
    let mut loss_sum = 0f64;
    for start in (0..n_valid).step_by(chunk) {
        let rows = &ws.rows[start..(start + chunk).min(n_valid)];
        let c = rows.len();
        let (xc, logits) = (&mut ws.xc[..c * d], &mut ws.logits[..c * v]);
        for (dst, &r) in xc.chunks_exact_mut(d).zip(rows) {
            dst.copy_from_slice(&x[r * d..(r + 1) * d]);
        }
        gemm(c, v, d, 1.0, xc, Trans::No, w, Trans::Yes, logits, false)?;
        let smoothing = cfg.label_smoothing;
        // A fixed number of row blocks, each with its own bias-gradient partial, summed below in
        // block order: the result does not depend on the thread count.
        let block_rows = c.div_ceil(DB_BLOCKS);
        let blocks = c.div_ceil(block_rows);
        // Without gradients each block still gets a (never touched) one-float partial, so the
        // zip below has one item per block.
        let db_len = if want_grad { v } else { 1 };
        ws.db_partials.clear();
        ws.db_partials.resize(blocks * db_len, 0.0);
        logits
            .par_chunks_mut(block_rows * v)
            .zip(ws.row_loss[..c].par_chunks_mut(block_rows))
            .zip(rows.par_chunks(block_rows))
            .zip(ws.db_partials.par_chunks_mut(db_len))
            .for_each(|(((block, out), rows), db)| {
                for ((row, out), &r) in block.chunks_exact_mut(v).zip(out).zip(rows) {
                    let wt = row_weights.map_or(1.0, |rw| rw[r]);
                    let l = row_xent(
                        row,
                        b,
                        targets[r] as usize,
                        smoothing,
                        inv_temperature,
                        want_grad,
                        grad_scale * wt,
                        db,
                    );
                    *out = if row_weights.is_some() {
                        l * wt as f64
                    } else {
                        l
                    };
                }
            });
        loss_sum += ws.row_loss[..c].iter().sum::<f64>();
        if let Some(g) = grads.as_mut() {
            let dxc = &mut ws.dxc[..c * d];
            gemm(c, d, v, 1.0, logits, Trans::No, w, Trans::No, dxc, false)?;
            for (src, &r) in dxc.chunks_exact(d).zip(rows) {
                g.x[r * d..(r + 1) * d].copy_from_slice(src);
            }
            gemm(v, d, c, 1.0, logits, Trans::Yes, xc, Trans::No, g.w, true)?;
            for partial in ws.db_partials.chunks_exact(v) {
                for (acc, p) in g.b.iter_mut().zip(partial) {
                    *acc += p;
                }
            }
        }
    }
    Ok(XentStats {
        loss: (loss_sum / n_valid as f64) as f32,
        loss_sum,
        n_valid,
    })
}

/// Reference for [`linear_xent`] in `f64` with the full logits matrix. Returns
/// `(mean loss, dx, dw, db)` of the mean loss.
#[allow(clippy::type_complexity)]
pub fn linear_xent_ref(
    dims: &XentDims,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    targets: &[u32],
    cfg: &XentConfig,
) -> (f64, Vec<f64>, Vec<f64>, Vec<f64>) {
    linear_xent_weighted_ref(dims, x, w, b, targets, None, cfg)
}

/// Reference for [`linear_xent_weighted`] in `f64`: `(objective, dx, dw, db)`.
#[allow(clippy::type_complexity)]
pub fn linear_xent_weighted_ref(
    dims: &XentDims,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    targets: &[u32],
    row_weights: Option<&[f32]>,
    cfg: &XentConfig,
) -> (f64, Vec<f64>, Vec<f64>, Vec<f64>) {
    let XentDims {
        rows: n,
        dim: d,
        vocab: v,
    } = *dims;
    let eps = cfg.label_smoothing as f64;
    let inv_t = 1.0 / cfg.temperature as f64;
    let valid: Vec<usize> = (0..n)
        .filter(|&r| Some(targets[r]) != cfg.ignore_index)
        .collect();
    let nv = valid.len().max(1) as f64;
    let (mut dx, mut dw, mut db) = (vec![0f64; n * d], vec![0f64; v * d], vec![0f64; v]);
    let mut total = 0f64;
    for &r in &valid {
        let logits: Vec<f64> = (0..v)
            .map(|j| {
                (b[j] as f64
                    + (0..d)
                        .map(|k| x[r * d + k] as f64 * w[j * d + k] as f64)
                        .sum::<f64>())
                    * inv_t
            })
            .collect();
        let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = mx + logits.iter().map(|l| (l - mx).exp()).sum::<f64>().ln();
        let y = targets[r] as usize;
        let wt = row_weights.map_or(1.0, |rw| rw[r] as f64);
        for (j, &l) in logits.iter().enumerate() {
            let q = eps / v as f64 + if j == y { 1.0 - eps } else { 0.0 };
            total += wt * q * (lse - l);
            let g = wt * inv_t * ((l - lse).exp() - q) / nv;
            db[j] += g;
            for k in 0..d {
                dw[j * d + k] += g * x[r * d + k] as f64;
                dx[r * d + k] += g * w[j * d + k] as f64;
            }
        }
    }
    (total / nv, dx, dw, db)
}
