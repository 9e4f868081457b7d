//! Fused LSTM layer over a whole sequence, forward and backward through time.
//!
//! Weights use `torch.nn.LSTM`'s layout so checkpoints map 1:1: `w_ih` is `weight_ih_l0`
//! `[4H, I]`, `w_hh` is `weight_hh_l0` `[4H, H]`, biases `[4H]`, gate order `i, f, g, o`.
//!
//! Forward does the input projection of all `T` steps as one `[T*B, I] x [I, 4H]` GEMM, then one
//! `[B, H] x [H, 4H]` GEMM per step followed by one fused pass of gate math. Backward keeps the
//! pre-activation gradients of all steps so the weight gradients are again single big GEMMs.

use super::act::{multiversion, sigmoid, tanh};
use super::gemm::{gemm, Trans};
use super::{add_col_sums, check_len, KernelError, RecurrentWeights};

/// Shape of one LSTM/GRU layer call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqDims {
    /// Time steps `T`.
    pub seq_len: usize,
    /// Batch size `B`.
    pub batch: usize,
    /// Input features `I`.
    pub input: usize,
    /// Hidden size `H`.
    pub hidden: usize,
}

impl SeqDims {
    pub(crate) fn validate(&self) -> Result<(), KernelError> {
        if self.seq_len == 0 || self.batch == 0 || self.input == 0 || self.hidden == 0 {
            return Err(KernelError::Invalid(format!("zero dimension in {self:?}")));
        }
        Ok(())
    }
}

/// Borrowed LSTM parameters in PyTorch layout (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct LstmParams<'a> {
    /// `weight_ih_l0`, `[4H, I]`.
    pub w_ih: &'a [f32],
    /// `weight_hh_l0`, `[4H, H]`.
    pub w_hh: &'a [f32],
    /// `bias_ih_l0`, `[4H]`.
    pub b_ih: &'a [f32],
    /// `bias_hh_l0`, `[4H]`.
    pub b_hh: &'a [f32],
}

/// Gradient accumulators for [`LstmParams`]; the backward pass adds into them (`+=`), so a layer
/// used twice, or gradient accumulation over micro-batches, needs no extra buffers.
#[derive(Debug)]
pub struct LstmParamGrads<'a> {
    /// `d weight_ih_l0`, `[4H, I]`.
    pub w_ih: &'a mut [f32],
    /// `d weight_hh_l0`, `[4H, H]`.
    pub w_hh: &'a mut [f32],
    /// `d bias_ih_l0`, `[4H]`.
    pub b_ih: &'a mut [f32],
    /// `d bias_hh_l0`, `[4H]`.
    pub b_hh: &'a mut [f32],
}

impl LstmParams<'_> {
    fn check(&self, d: &SeqDims) -> Result<(), KernelError> {
        let g = 4 * d.hidden;
        check_len("lstm w_ih", self.w_ih.len(), g * d.input)?;
        check_len("lstm w_hh", self.w_hh.len(), g * d.hidden)?;
        check_len("lstm b_ih", self.b_ih.len(), g)?;
        check_len("lstm b_hh", self.b_hh.len(), g)
    }
}

impl LstmParamGrads<'_> {
    fn check(&self, d: &SeqDims) -> Result<(), KernelError> {
        let g = 4 * d.hidden;
        check_len("lstm dw_ih", self.w_ih.len(), g * d.input)?;
        check_len("lstm dw_hh", self.w_hh.len(), g * d.hidden)?;
        check_len("lstm db_ih", self.b_ih.len(), g)?;
        check_len("lstm db_hh", self.b_hh.len(), g)
    }
}

/// What the forward pass saves for backward, reused across calls to avoid re-allocation.
#[derive(Debug, Default, Clone)]
pub struct LstmCache {
    dims: Option<SeqDims>,
    /// Post-activation gates `[T, B, 4H]` (`i, f, g, o`).
    gates: Vec<f32>,
    /// Cell states `[T+1, B, H]`, `c[0] = c0`.
    c: Vec<f32>,
    /// `tanh(c_t)` for `t = 1..=T`, `[T, B, H]`.
    tanh_c: Vec<f32>,
    /// Hidden states `[T+1, B, H]`, `h[0] = h0`; `h[1..]` is the layer output.
    h: Vec<f32>,
    /// Pre-activation gate gradients `[T, B, 4H]` (backward workspace).
    d_gates: Vec<f32>,
    /// `w_hh` prepared for the per-step products (forward workspace).
    w_hh_op: RecurrentWeights,
}

impl LstmCache {
    /// An empty cache; buffers grow on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Layer output `h_1..h_T`, `[T, B, H]`, valid after [`lstm_forward`].
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

    /// Final cell state `c_T`, `[B, H]`.
    pub fn c_last(&self) -> &[f32] {
        match self.dims {
            Some(d) => &self.c[d.seq_len * d.batch * d.hidden..],
            None => &[],
        }
    }

    fn expect(&self, d: &SeqDims) -> Result<(), KernelError> {
        if self.dims == Some(*d) {
            Ok(())
        } else {
            Err(KernelError::CacheMismatch {
                cached: format!("{:?}", self.dims),
                requested: format!("{d:?}"),
            })
        }
    }
}

fn resize(v: &mut Vec<f32>, n: usize) {
    v.clear();
    v.resize(n, 0.0);
}

multiversion! {
    /// Gate math of one step for all rows: `gates` holds pre-activations on entry.
    pub(crate) fn lstm_cell_fwd(
        hidden: usize,
        gates: &mut [f32],
        c_prev: &[f32],
        c: &mut [f32],
        tanh_c: &mut [f32],
        h: &mut [f32],
    ) {
        let rows = gates.chunks_exact_mut(4 * hidden).zip(c_prev.chunks_exact(hidden));
        let outs = c.chunks_exact_mut(hidden).zip(tanh_c.chunks_exact_mut(hidden)).zip(h.chunks_exact_mut(hidden));
        for ((g, cp), ((c, tc), h)) in rows.zip(outs) {
            let (gi, rest) = g.split_at_mut(hidden);
            let (gf, rest) = rest.split_at_mut(hidden);
            let (gg, go) = rest.split_at_mut(hidden);
            lstm_row_fwd(gi, gf, gg, go, cp, c, tc, h);
        }
    }
}

/// One row of [`lstm_cell_fwd`]. Separate slice arguments tell LLVM the gate blocks do not
/// overlap; for four blocks of one slice split at a run-time offset it left the loop scalar (the
/// gate math of the issue-5 bench's 20 steps took 21.5 ms that way, 4.3 ms vectorised).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn lstm_row_fwd(
    gi: &mut [f32],
    gf: &mut [f32],
    gg: &mut [f32],
    go: &mut [f32],
    cp: &[f32],
    c: &mut [f32],
    tc: &mut [f32],
    h: &mut [f32],
) {
    let n = h.len();
    let (gi, gf, gg, go) = (&mut gi[..n], &mut gf[..n], &mut gg[..n], &mut go[..n]);
    let (cp, c, tc) = (&cp[..n], &mut c[..n], &mut tc[..n]);
    for j in 0..n {
        let i = sigmoid(gi[j]);
        let f = sigmoid(gf[j]);
        let gv = tanh(gg[j]);
        let o = sigmoid(go[j]);
        let cv = f * cp[j] + i * gv;
        let t = tanh(cv);
        gi[j] = i;
        gf[j] = f;
        gg[j] = gv;
        go[j] = o;
        c[j] = cv;
        tc[j] = t;
        h[j] = o * t;
    }
}

multiversion! {
    /// Backward gate math of one step. On entry `dh_out` is the loss gradient on this step's
    /// output, `dh` (when given) the gradient reaching `h_t` from later steps, and `dc` the one
    /// reaching `c_t`. On exit `dc` holds the gradient for `c_{t-1}` and `dg` the pre-activation
    /// gate gradients.
    pub(crate) fn lstm_cell_bwd(
        hidden: usize,
        gates: &[f32],
        c_prev: &[f32],
        tanh_c: &[f32],
        dh_out: &[f32],
        dh: Option<&[f32]>,
        dc: &mut [f32],
        dg: &mut [f32],
    ) {
        let it = gates
            .chunks_exact(4 * hidden)
            .zip(dg.chunks_exact_mut(4 * hidden))
            .zip(c_prev.chunks_exact(hidden).zip(tanh_c.chunks_exact(hidden)))
            .zip(dh_out.chunks_exact(hidden))
            .zip(dc.chunks_exact_mut(hidden))
            .enumerate();
        for (r, ((((g, d), (cp, tc)), dho), dc)) in it {
            let (gi, rest) = g.split_at(hidden);
            let (gf, rest) = rest.split_at(hidden);
            let (gg, go) = rest.split_at(hidden);
            let (di, rest) = d.split_at_mut(hidden);
            let (df, rest) = rest.split_at_mut(hidden);
            let (dgg, dgo) = rest.split_at_mut(hidden);
            let (gates, dgates) = ([gi, gf, gg, go], [di, df, dgg, dgo]);
            let dho = &dho[..hidden];
            match dh {
                Some(dh) => {
                    let dhr = &dh[r * hidden..(r + 1) * hidden];
                    lstm_row_bwd(gates, dgates, cp, tc, |j| dho[j] + dhr[j], dc);
                }
                None => lstm_row_bwd(gates, dgates, cp, tc, |j| dho[j], dc),
            }
        }
    }
}

/// One row of [`lstm_cell_bwd`], with `dh_at(j)` the whole gradient reaching `h_t[j]`; separate
/// slices for the gate blocks, as in [`lstm_row_fwd`].
#[inline(always)]
fn lstm_row_bwd(
    [gi, gf, gg, go]: [&[f32]; 4],
    [di, df, dgg, dgo]: [&mut [f32]; 4],
    cp: &[f32],
    tc: &[f32],
    dh_at: impl Fn(usize) -> f32,
    dc: &mut [f32],
) {
    let n = dc.len();
    let (gi, gf, gg, go) = (&gi[..n], &gf[..n], &gg[..n], &go[..n]);
    let (di, df, dgg, dgo) = (&mut di[..n], &mut df[..n], &mut dgg[..n], &mut dgo[..n]);
    let (cp, tc) = (&cp[..n], &tc[..n]);
    for j in 0..n {
        let (i, f, gv, o, t) = (gi[j], gf[j], gg[j], go[j], tc[j]);
        let dhv = dh_at(j);
        let dcv = dc[j] + dhv * o * (1.0 - t * t);
        di[j] = dcv * gv * i * (1.0 - i);
        df[j] = dcv * cp[j] * f * (1.0 - f);
        dgg[j] = dcv * i * (1.0 - gv * gv);
        dgo[j] = dhv * t * o * (1.0 - o);
        dc[j] = dcv * f;
    }
}

/// Runs the layer over `x` (`[T, B, I]`, time-major) from `h0`/`c0` (`[B, H]`, zeros if `None`),
/// filling `cache` with the outputs ([`LstmCache::output`]) and what backward needs.
pub fn lstm_forward(
    d: &SeqDims,
    p: &LstmParams,
    x: &[f32],
    h0: Option<&[f32]>,
    c0: Option<&[f32]>,
    cache: &mut LstmCache,
) -> Result<(), KernelError> {
    d.validate()?;
    p.check(d)?;
    let (t_len, b, i_sz, g) = (d.seq_len, d.batch, d.input, 4 * d.hidden);
    check_len("lstm x", x.len(), t_len * b * i_sz)?;
    resize(&mut cache.gates, t_len * b * g);
    // Both biases enter every pre-activation identically, so fold them into one row added once.
    let bias: Vec<f32> = p.b_ih.iter().zip(p.b_hh).map(|(a, b)| a + b).collect();
    for row in cache.gates.chunks_exact_mut(g) {
        row.copy_from_slice(&bias);
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
    recurrence(d, p.w_hh, h0, c0, cache)
}

/// The recurrent part alone: `x_proj` (`[T, B, 4H]`) is the input projection of every step
/// *including both biases*, computed by the caller (e.g. one candle matmul). Used by the candle op.
pub fn lstm_recurrent_forward(
    d: &SeqDims,
    w_hh: &[f32],
    x_proj: &[f32],
    h0: Option<&[f32]>,
    c0: Option<&[f32]>,
    cache: &mut LstmCache,
) -> Result<(), KernelError> {
    d.validate()?;
    check_len("lstm w_hh", w_hh.len(), 4 * d.hidden * d.hidden)?;
    check_len(
        "lstm x_proj",
        x_proj.len(),
        d.seq_len * d.batch * 4 * d.hidden,
    )?;
    cache.gates.clear();
    cache.gates.extend_from_slice(x_proj);
    recurrence(d, w_hh, h0, c0, cache)
}

/// Steps through time; `cache.gates` holds the input projections on entry.
fn recurrence(
    d: &SeqDims,
    w_hh: &[f32],
    h0: Option<&[f32]>,
    c0: Option<&[f32]>,
    cache: &mut LstmCache,
) -> Result<(), KernelError> {
    let (t_len, b, h_sz) = (d.seq_len, d.batch, d.hidden);
    let (g, bh) = (4 * h_sz, b * h_sz);
    resize(&mut cache.c, (t_len + 1) * bh);
    resize(&mut cache.h, (t_len + 1) * bh);
    resize(&mut cache.tanh_c, t_len * bh);
    if let Some(h0) = h0 {
        check_len("lstm h0", h0.len(), bh)?;
        cache.h[..bh].copy_from_slice(h0);
    }
    if let Some(c0) = c0 {
        check_len("lstm c0", c0.len(), bh)?;
        cache.c[..bh].copy_from_slice(c0);
    }
    cache.dims = Some(*d);
    cache.w_hh_op.prepare(w_hh, g, h_sz, b, t_len)?;
    for t in 0..t_len {
        let gates = &mut cache.gates[t * b * g..(t + 1) * b * g];
        cache
            .w_hh_op
            .product(w_hh, &cache.h[t * bh..(t + 1) * bh], b, None, gates)?;
        let (c_lo, c_hi) = cache.c.split_at_mut((t + 1) * bh);
        let h_next = &mut cache.h[(t + 1) * bh..(t + 2) * bh];
        lstm_cell_fwd(
            h_sz,
            gates,
            &c_lo[t * bh..],
            &mut c_hi[..bh],
            &mut cache.tanh_c[t * bh..(t + 1) * bh],
            h_next,
        );
    }
    Ok(())
}

/// Optional gradient outputs of [`lstm_backward`] besides the parameter gradients. Each, when
/// given, is overwritten (not accumulated).
#[derive(Debug, Default)]
pub struct LstmInputGrads<'a> {
    /// `d x`, `[T, B, I]`.
    pub x: Option<&'a mut [f32]>,
    /// `d h0`, `[B, H]`.
    pub h0: Option<&'a mut [f32]>,
    /// `d c0`, `[B, H]`.
    pub c0: Option<&'a mut [f32]>,
}

/// Backward through time for the last [`lstm_forward`] held in `cache`.
///
/// `d_out` is the loss gradient on every output `h_1..h_T` (`[T, B, H]`); `d_h_last`/`d_c_last`
/// optionally add gradient on the final state. Parameter gradients are accumulated into `grads`.
#[allow(clippy::too_many_arguments)]
pub fn lstm_backward(
    d: &SeqDims,
    p: &LstmParams,
    x: &[f32],
    cache: &mut LstmCache,
    d_out: &[f32],
    d_h_last: Option<&[f32]>,
    d_c_last: Option<&[f32]>,
    grads: &mut LstmParamGrads,
    inputs: LstmInputGrads,
) -> Result<(), KernelError> {
    p.check(d)?;
    grads.check(d)?;
    let (tb, i_sz, g) = (d.seq_len * d.batch, d.input, 4 * d.hidden);
    check_len("lstm x", x.len(), tb * i_sz)?;
    let states = LstmStateGrads {
        d_h_last,
        d_c_last,
        dh0: inputs.h0,
        dc0: inputs.c0,
    };
    let dgs = lstm_recurrent_backward(d, p.w_hh, cache, d_out, states, grads.w_hh)?;
    gemm(
        g,
        i_sz,
        tb,
        1.0,
        dgs,
        Trans::Yes,
        x,
        Trans::No,
        grads.w_ih,
        true,
    )?;
    // Both biases enter every pre-activation alike, so they share one pass over the gradients.
    let mut d_bias = vec![0f32; g];
    add_col_sums(dgs, g, &mut d_bias);
    for bias_grad in [&mut *grads.b_ih, &mut *grads.b_hh] {
        for (acc, v) in bias_grad.iter_mut().zip(&d_bias) {
            *acc += v;
        }
    }
    if let Some(dx) = inputs.x {
        check_len("lstm dx", dx.len(), tb * i_sz)?;
        gemm(
            tb,
            i_sz,
            g,
            1.0,
            dgs,
            Trans::No,
            p.w_ih,
            Trans::No,
            dx,
            false,
        )?;
    }
    Ok(())
}

/// State-gradient plumbing of [`lstm_recurrent_backward`]: optional incoming gradients on the
/// final state, optional outputs (overwritten) for the initial state.
#[derive(Debug, Default)]
pub struct LstmStateGrads<'a> {
    /// Extra gradient on `h_T`, `[B, H]`.
    pub d_h_last: Option<&'a [f32]>,
    /// Extra gradient on `c_T`, `[B, H]`.
    pub d_c_last: Option<&'a [f32]>,
    /// Output `d h0`, `[B, H]`.
    pub dh0: Option<&'a mut [f32]>,
    /// Output `d c0`, `[B, H]`.
    pub dc0: Option<&'a mut [f32]>,
}

/// Backward of [`lstm_recurrent_forward`] (and the recurrent half of [`lstm_backward`]):
/// accumulates `d w_hh` and returns the gradient w.r.t. the input projections `x_proj`
/// (`[T, B, 4H]`, borrowed from the cache), which is also the gradient of both biases per row.
pub fn lstm_recurrent_backward<'c>(
    d: &SeqDims,
    w_hh: &[f32],
    cache: &'c mut LstmCache,
    d_out: &[f32],
    states: LstmStateGrads,
    dw_hh: &mut [f32],
) -> Result<&'c [f32], KernelError> {
    cache.expect(d)?;
    let (t_len, b, h_sz) = (d.seq_len, d.batch, d.hidden);
    let (g, bh) = (4 * h_sz, b * h_sz);
    check_len("lstm w_hh", w_hh.len(), g * h_sz)?;
    check_len("lstm dw_hh", dw_hh.len(), g * h_sz)?;
    check_len("lstm d_out", d_out.len(), t_len * bh)?;
    let mut dh = vec![0f32; bh];
    let mut dc = vec![0f32; bh];
    if let Some(v) = states.d_h_last {
        check_len("lstm d_h_last", v.len(), bh)?;
        dh.copy_from_slice(v);
    }
    if let Some(v) = states.d_c_last {
        check_len("lstm d_c_last", v.len(), bh)?;
        dc.copy_from_slice(v);
    }
    resize(&mut cache.d_gates, t_len * b * g);
    for t in (0..t_len).rev() {
        let dg = &mut cache.d_gates[t * b * g..(t + 1) * b * g];
        lstm_cell_bwd(
            h_sz,
            &cache.gates[t * b * g..(t + 1) * b * g],
            &cache.c[t * bh..(t + 1) * bh],
            &cache.tanh_c[t * bh..(t + 1) * bh],
            &d_out[t * bh..(t + 1) * bh],
            Some(&dh),
            &mut dc,
            dg,
        );
        gemm(
            b,
            h_sz,
            g,
            1.0,
            dg,
            Trans::No,
            w_hh,
            Trans::No,
            &mut dh,
            false,
        )?;
    }
    let tb = t_len * b;
    gemm(
        g,
        h_sz,
        tb,
        1.0,
        &cache.d_gates,
        Trans::Yes,
        &cache.h[..tb * h_sz],
        Trans::No,
        dw_hh,
        true,
    )?;
    if let Some(dh0) = states.dh0 {
        check_len("lstm dh0", dh0.len(), bh)?;
        dh0.copy_from_slice(&dh);
    }
    if let Some(dc0) = states.dc0 {
        check_len("lstm dc0", dc0.len(), bh)?;
        dc0.copy_from_slice(&dc);
    }
    Ok(&cache.d_gates)
}

/// Reference forward in `f64`, one step and one gate at a time straight from the LSTM equations.
/// Returns `(h_1..h_T, c_T)`.
pub fn lstm_forward_ref(
    d: &SeqDims,
    p: &LstmParams,
    x: &[f32],
    h0: &[f32],
    c0: &[f32],
) -> (Vec<f64>, Vec<f64>) {
    let (hs, is) = (d.hidden, d.input);
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let mut h: Vec<f64> = h0.iter().map(|&v| v as f64).collect();
    let mut c: Vec<f64> = c0.iter().map(|&v| v as f64).collect();
    let mut out = Vec::with_capacity(d.seq_len * d.batch * hs);
    for t in 0..d.seq_len {
        let mut hn = vec![0f64; d.batch * hs];
        let mut cn = vec![0f64; d.batch * hs];
        for bi in 0..d.batch {
            let xr = &x[(t * d.batch + bi) * is..][..is];
            let pre = |gate: usize, j: usize| {
                let r = gate * hs + j;
                let mut s = p.b_ih[r] as f64 + p.b_hh[r] as f64;
                for (w, v) in p.w_ih[r * is..(r + 1) * is].iter().zip(xr) {
                    s += *w as f64 * *v as f64;
                }
                for (w, v) in p.w_hh[r * hs..(r + 1) * hs]
                    .iter()
                    .zip(&h[bi * hs..(bi + 1) * hs])
                {
                    s += *w as f64 * v;
                }
                s
            };
            for j in 0..hs {
                let (i, f, g, o) = (
                    sig(pre(0, j)),
                    sig(pre(1, j)),
                    pre(2, j).tanh(),
                    sig(pre(3, j)),
                );
                let cv = f * c[bi * hs + j] + i * g;
                cn[bi * hs + j] = cv;
                hn[bi * hs + j] = o * cv.tanh();
            }
        }
        out.extend_from_slice(&hn);
        h = hn;
        c = cn;
    }
    (out, c)
}
