//! "Show, Attend and Tell" soft-attention LSTM decoder (Xu et al. 2015), after sgrvinod's
//! `DecoderWithAttention` (a-PyTorch-Tutorial-to-Image-Captioning, `models.py`).
//!
//! For spatial features `S` `[B, P, F]`, at every step `t` with previous state `(h, c)`:
//! - `alpha = softmax_p(full_att(relu(encoder_att(S) + decoder_att(h))))` (`encoder_att(S)` is
//!   computed once per batch),
//! - `awe = sigmoid(f_beta(h)) * Σ_p alpha_p S_p`,
//! - `(h, c) = LSTMCell([embedding(x_t); awe], (h, c))`, `logits = fc(dropout(h))`,
//!
//! with `h0 = init_h(mean_p S)`, `c0 = init_c(mean_p S)`. With `deep_output` the vocabulary
//! projection reads the paper's deep output layer (its eq. 7, with the `tanh` of its code,
//! arctic-captions' `ctx2out` and `prev2out`) instead of `h`:
//! `logits = fc(dropout(tanh(deep_output.lstm(h) + deep_output.ctx(awe) + embedding(x_t))))`,
//! a direct path from the attended image region and the previous word to the word scores. The
//! objective is the mean token cross-entropy plus the doubly-stochastic penalty
//! `alpha_c · mean_{b,p} (1 - Σ_{t valid} alpha_{t,b,p})²` (a step is valid when its target is not
//! padding), averaged over cells as sgrvinod's `train.py` does; the paper's sum over cells is
//! `P` times larger and, at `alpha_c = 1` over 49 cells, outweighs the caption loss. Unlike
//! sgrvinod, rows are not sorted by length: padding targets are masked instead.
//!
//! Forward and backward are written out explicitly over time-major buffers kept in the struct:
//! the embedding half of the LSTM input projection is one GEMM for all steps up front, only the
//! attention-context half and the recurrent GEMMs run per step, and every weight gradient is one
//! GEMM over all steps after the backward loop (the per-step pre-activation gradients are kept).
//! The vocabulary projection of all steps is one fused [`linear_xent`] call.
//!
//! [`linear_xent`]: crate::kernels::softmax_xent::linear_xent

use super::common::{sized, zeroed};
use crate::config::ModelDims;
use crate::kernels::act::{multiversion, sigmoid};
use crate::kernels::few_rows::FewRowsLinear;
use crate::kernels::gemm::{gemm, Trans};
use crate::kernels::lstm::{lstm_cell_bwd, lstm_cell_fwd};
use crate::kernels::packed_gemm::{PackedWeights, WeightView};
use crate::kernels::softmax_xent::{
    linear_xent_weighted, XentConfig, XentDims, XentGrads, XentWorkspace,
};
use crate::kernels::{add_col_sums, KernelError};
use crate::model::{
    log_softmax_rows, DecodeState, Decoder, Features, PassOptions, PassStats, TeacherBatch, PAD_ID,
};
use crate::params::{ParamId, ParamSet};
use crate::DecodeError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// Hyper-parameters of [`Sat`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SatConfig {
    /// Word embedding size.
    pub embed: usize,
    /// LSTM state size.
    pub hidden: usize,
    /// Attention MLP size.
    pub attention: usize,
    /// Dropout before the vocabulary projection.
    pub dropout: f32,
    /// Weight of the doubly-stochastic attention regulariser.
    pub alpha_c: f32,
    /// Xu et al.'s deep output layer in front of the vocabulary projection (see the module
    /// documentation); off in sgrvinod's model and in bundles made before it existed.
    #[serde(skip_serializing_if = "is_false")]
    pub deep_output: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for SatConfig {
    fn default() -> Self {
        Self {
            embed: 512,
            hidden: 512,
            attention: 512,
            dropout: 0.5,
            alpha_c: 1.0,
            deep_output: false,
        }
    }
}

/// All sizes of one model.
#[derive(Clone, Copy, Debug)]
struct Sz {
    v: usize,
    e: usize,
    h: usize,
    a: usize,
    f: usize,
    p: usize,
    /// Width of what the vocabulary projection reads: `h`, or the deep output (`e`).
    o: usize,
}

impl Sz {
    /// Width of the LSTM input `[embedding; awe]`.
    fn x(&self) -> usize {
        self.e + self.f
    }
}

struct Ids {
    enc_w: ParamId,
    enc_b: ParamId,
    dec_w: ParamId,
    dec_b: ParamId,
    full_w: ParamId,
    full_b: ParamId,
    emb: ParamId,
    w_ih: ParamId,
    w_hh: ParamId,
    b_ih: ParamId,
    b_hh: ParamId,
    init_h_w: ParamId,
    init_h_b: ParamId,
    init_c_w: ParamId,
    init_c_b: ParamId,
    fb_w: ParamId,
    fb_b: ParamId,
    fc_w: ParamId,
    fc_b: ParamId,
    deep: Option<DeepIds>,
}

/// The deep output layer's parameters: `deep_output.lstm` (`[E, H]` with bias) and
/// `deep_output.ctx` (`[E, F]`, no bias: the first has one).
struct DeepIds {
    h_w: ParamId,
    h_b: ParamId,
    ctx_w: ParamId,
}

struct DeepW<'a> {
    h_w: &'a [f32],
    h_b: &'a [f32],
    ctx_w: &'a [f32],
}

/// Borrowed parameter values.
struct W<'a> {
    enc_w: &'a [f32],
    enc_b: &'a [f32],
    dec_w: &'a [f32],
    dec_b: &'a [f32],
    full_w: &'a [f32],
    full_b: f32,
    emb: &'a [f32],
    w_ih: &'a [f32],
    w_hh: &'a [f32],
    b_ih: &'a [f32],
    b_hh: &'a [f32],
    init_h_w: &'a [f32],
    init_h_b: &'a [f32],
    init_c_w: &'a [f32],
    init_c_b: &'a [f32],
    fb_w: &'a [f32],
    fb_b: &'a [f32],
    fc_w: &'a [f32],
    fc_b: &'a [f32],
    deep: Option<DeepW<'a>>,
}

impl Ids {
    fn weights<'a>(&self, get: impl Fn(ParamId) -> &'a [f32]) -> W<'a> {
        W {
            enc_w: get(self.enc_w),
            enc_b: get(self.enc_b),
            dec_w: get(self.dec_w),
            dec_b: get(self.dec_b),
            full_w: get(self.full_w),
            full_b: get(self.full_b).first().copied().unwrap_or(0.0),
            emb: get(self.emb),
            w_ih: get(self.w_ih),
            w_hh: get(self.w_hh),
            b_ih: get(self.b_ih),
            b_hh: get(self.b_hh),
            init_h_w: get(self.init_h_w),
            init_h_b: get(self.init_h_b),
            init_c_w: get(self.init_c_w),
            init_c_b: get(self.init_c_b),
            fb_w: get(self.fb_w),
            fb_b: get(self.fb_b),
            fc_w: get(self.fc_w),
            fc_b: get(self.fc_b),
            deep: self.deep.as_ref().map(|d| DeepW {
                h_w: get(d.h_w),
                h_b: get(d.h_b),
                ctx_w: get(d.ctx_w),
            }),
        }
    }
}

/// Buffers of one teacher-forced pass, kept between calls (time-major, `N = T*B` rows).
#[derive(Default)]
struct Work {
    inputs: Vec<u32>,
    targets: Vec<u32>,
    /// Mean feature per image `[B, F]`.
    fm: Vec<f32>,
    /// `encoder_att(S)`, `[B, P, A]`.
    ea: Vec<f32>,
    /// LSTM inputs `[N, E+F]`: embedding, then the gated context `awe`.
    xcat: Vec<f32>,
    /// LSTM gates `[N, 4H]` (pre-activations, then activations).
    gates: Vec<f32>,
    /// Cell states `[T+1, B, H]`.
    c: Vec<f32>,
    /// `tanh(c_t)`, `[N, H]`.
    tanh_c: Vec<f32>,
    /// Hidden states `[T+1, B, H]`; `h[0] = h0`.
    h: Vec<f32>,
    /// `decoder_att(h_t)`, `[N, A]`.
    da: Vec<f32>,
    /// Attention weights `[N, P]`.
    alpha: Vec<f32>,
    /// Context before the gate `[N, F]`.
    ctx: Vec<f32>,
    /// `sigmoid(f_beta(h_t))`, `[N, F]`.
    gate: Vec<f32>,
    /// The deep output `tanh(..)`, `[N, E]` (with `deep_output`).
    deep_o: Vec<f32>,
    /// Dropout mask (already scaled by `1/(1-p)`) and dropped outputs, `[N, O]`.
    mask: Vec<f32>,
    hd: Vec<f32>,
    /// `Σ_{t valid} alpha`, `[B, P]`; then the regulariser's gradient per unit alpha.
    cover: Vec<f32>,
    // Backward.
    d_out: Vec<f32>,
    dgates: Vec<f32>,
    dgp: Vec<f32>,
    dda: Vec<f32>,
    dea: Vec<f32>,
    dwfa: Vec<f32>,
    dbfa: Vec<f32>,
    dalpha: Vec<f32>,
    dawe: Vec<f32>,
    dh: Vec<f32>,
    dc: Vec<f32>,
    dx: Vec<f32>,
    /// The deep output's gradients into `h_t` (`[N, H]`) and `awe_t` (`[N, F]`).
    dh_deep: Vec<f32>,
    dawe_deep: Vec<f32>,
    xent: XentWorkspace,
    /// The per-step products' weights, packed once per pass (they change only between passes).
    step: StepWeights,
}

/// Weights of the products inside the recurrence, packed for [`PackedWeights`]: each is used
/// at every one of the `T` steps with `B` rows, where re-packing per call cost more than the
/// product.
#[derive(Default)]
struct StepWeights {
    /// `decoder_att`, `f_beta`, the context block of `weight_ih`, `weight_hh`.
    dec: PackedWeights,
    fb: PackedWeights,
    awe: PackedWeights,
    hh: PackedWeights,
    /// Their transposes, for the gradients of the step inputs.
    dec_t: PackedWeights,
    fb_t: PackedWeights,
    awe_t: PackedWeights,
    hh_t: PackedWeights,
    /// The gated context of one step as a contiguous `[B, F]` block.
    awe_rows: Vec<f32>,
    scratch: Vec<f32>,
}

impl StepWeights {
    fn pack_forward(&mut self, sz: &Sz, w: &W) -> Result<(), KernelError> {
        let (h, a, f, xw) = (sz.h, sz.a, sz.f, sz.x());
        self.dec.repack(a, h, WeightView::rows(w.dec_w, h))?;
        self.fb.repack(f, h, WeightView::rows(w.fb_w, h))?;
        let awe = WeightView {
            data: w.w_ih,
            off: sz.e,
            rs: xw,
            cs: 1,
        };
        self.awe.repack(4 * h, f, awe)?;
        self.hh.repack(4 * h, h, WeightView::rows(w.w_hh, h))
    }

    fn pack_backward(&mut self, sz: &Sz, w: &W) -> Result<(), KernelError> {
        let (h, a, f, xw) = (sz.h, sz.a, sz.f, sz.x());
        let transposed = |data, cols| WeightView {
            data,
            off: 0,
            rs: 1,
            cs: cols,
        };
        self.dec_t.repack(h, a, transposed(w.dec_w, h))?;
        self.fb_t.repack(h, f, transposed(w.fb_w, h))?;
        let awe_t = WeightView {
            data: w.w_ih,
            off: sz.e,
            rs: 1,
            cs: xw,
        };
        self.awe_t.repack(f, 4 * h, awe_t)?;
        self.hh_t.repack(h, 4 * h, transposed(w.w_hh, h))
    }
}

/// The decoder.
pub struct Sat {
    params: ParamSet,
    dims: ModelDims,
    cfg: SatConfig,
    sz: Sz,
    ids: Ids,
    work: Work,
    /// Weights rearranged for generation, built on first use and dropped whenever the parameters
    /// may change ([`Decoder::params_mut`]).
    infer: OnceLock<Infer>,
}

/// The per-step products of generation, each one pass over its weights. Two are fused because
/// they share their input: `decoder_att` and `f_beta` both read `h`, and the LSTM's input and
/// recurrent products both feed the gates.
struct Infer {
    /// `[decoder_att; f_beta]` over `h`: outputs `[da (A), gate pre-activation (F)]`.
    hproj: FewRowsLinear,
    /// `[weight_ih | weight_hh]` with bias `bias_ih + bias_hh`, over `[embedding; awe; h]`.
    lstm: FewRowsLinear,
    /// `[deep_output.ctx | deep_output.lstm]` over `[awe; new h]` (with `deep_output`).
    deep: Option<FewRowsLinear>,
    /// `fc` over the new `h`, or over the deep output.
    fc: FewRowsLinear,
}

impl Infer {
    fn new(sz: &Sz, w: &W) -> Result<Self, KernelError> {
        let b_gates: Vec<f32> = w.b_ih.iter().zip(w.b_hh).map(|(x, y)| x + y).collect();
        Ok(Self {
            hproj: FewRowsLinear::stack(sz.h, &[(w.dec_w, w.dec_b), (w.fb_w, w.fb_b)])?,
            lstm: FewRowsLinear::concat_cols(
                4 * sz.h,
                &[(w.w_ih, sz.x()), (w.w_hh, sz.h)],
                b_gates,
            )?,
            deep: match &w.deep {
                Some(d) => Some(FewRowsLinear::concat_cols(
                    sz.e,
                    &[(d.ctx_w, sz.f), (d.h_w, sz.h)],
                    d.h_b.to_vec(),
                )?),
                None => None,
            },
            fc: FewRowsLinear::stack(sz.o, &[(w.fc_w, w.fc_b)])?,
        })
    }
}

impl Sat {
    /// A decoder with fresh parameters.
    pub fn new(cfg: &SatConfig, dims: ModelDims, seed: u64) -> Result<Self, DecodeError> {
        if cfg.embed == 0 || cfg.hidden == 0 || cfg.attention == 0 {
            return Err(DecodeError::Config(format!(
                "sat sizes must be positive: {cfg:?}"
            )));
        }
        if !(0.0..1.0).contains(&cfg.dropout) {
            return Err(DecodeError::Config(format!(
                "sat dropout {} is outside [0, 1)",
                cfg.dropout
            )));
        }
        if !(cfg.alpha_c >= 0.0 && cfg.alpha_c.is_finite()) {
            return Err(DecodeError::Config(format!(
                "sat alpha_c {} must be finite and >= 0",
                cfg.alpha_c
            )));
        }
        if dims.cells == 0 || dims.feature_dim == 0 || dims.vocab == 0 {
            return Err(DecodeError::Config(format!(
                "sat needs a spatial grid, features and a vocabulary: {dims:?}"
            )));
        }
        let sz = Sz {
            v: dims.vocab,
            e: cfg.embed,
            h: cfg.hidden,
            a: cfg.attention,
            f: dims.feature_dim,
            p: dims.cells,
            o: if cfg.deep_output {
                cfg.embed
            } else {
                cfg.hidden
            },
        };
        let (v, e, h, a, f) = (sz.v, sz.e, sz.h, sz.a, sz.f);
        let mut ps = ParamSet::new();
        // Registration order and names follow `DecoderWithAttention.state_dict()`.
        let enc_w = ps.add("attention.encoder_att.weight", &[a, f])?;
        let enc_b = ps.add("attention.encoder_att.bias", &[a])?;
        let dec_w = ps.add("attention.decoder_att.weight", &[a, h])?;
        let dec_b = ps.add("attention.decoder_att.bias", &[a])?;
        let full_w = ps.add("attention.full_att.weight", &[1, a])?;
        let full_b = ps.add("attention.full_att.bias", &[1])?;
        let emb = ps.add("embedding.weight", &[v, e])?;
        let w_ih = ps.add("decode_step.weight_ih", &[4 * h, e + f])?;
        let w_hh = ps.add("decode_step.weight_hh", &[4 * h, h])?;
        let b_ih = ps.add("decode_step.bias_ih", &[4 * h])?;
        let b_hh = ps.add("decode_step.bias_hh", &[4 * h])?;
        let init_h_w = ps.add("init_h.weight", &[h, f])?;
        let init_h_b = ps.add("init_h.bias", &[h])?;
        let init_c_w = ps.add("init_c.weight", &[h, f])?;
        let init_c_b = ps.add("init_c.bias", &[h])?;
        let fb_w = ps.add("f_beta.weight", &[f, h])?;
        let fb_b = ps.add("f_beta.bias", &[f])?;
        let deep = if cfg.deep_output {
            Some(DeepIds {
                h_w: ps.add("deep_output.lstm.weight", &[e, h])?,
                h_b: ps.add("deep_output.lstm.bias", &[e])?,
                ctx_w: ps.add("deep_output.ctx.weight", &[e, f])?,
            })
        } else {
            None
        };
        let fc_w = ps.add("fc.weight", &[v, sz.o])?;
        let fc_b = ps.add("fc.bias", &[v])?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let k = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
        // PyTorch defaults (Linear: U(±1/sqrt(fan_in)); LSTMCell: U(±1/sqrt(H))), then
        // sgrvinod's `init_weights`: embedding and fc.weight U(±0.1), fc.bias 0.
        for (id, bound) in [
            (enc_w, k(f)),
            (enc_b, k(f)),
            (dec_w, k(h)),
            (dec_b, k(h)),
            (full_w, k(a)),
            (full_b, k(a)),
            (emb, 0.1),
            (w_ih, k(h)),
            (w_hh, k(h)),
            (b_ih, k(h)),
            (b_hh, k(h)),
            (init_h_w, k(f)),
            (init_h_b, k(f)),
            (init_c_w, k(f)),
            (init_c_b, k(f)),
            (fb_w, k(h)),
            (fb_b, k(h)),
        ] {
            ps.init_uniform(id, bound, &mut rng);
        }
        ps.init_uniform(fc_w, 0.1, &mut rng);
        // After every other parameter, so that a model without it initialises as before.
        if let Some(d) = &deep {
            ps.init_uniform(d.h_w, k(h), &mut rng);
            ps.init_uniform(d.h_b, k(h), &mut rng);
            ps.init_uniform(d.ctx_w, k(f), &mut rng);
        }
        let ids = Ids {
            enc_w,
            enc_b,
            dec_w,
            dec_b,
            full_w,
            full_b,
            emb,
            w_ih,
            w_hh,
            b_ih,
            b_hh,
            init_h_w,
            init_h_b,
            init_c_w,
            init_c_b,
            fb_w,
            fb_b,
            fc_w,
            fc_b,
            deep,
        };
        Ok(Self {
            params: ps,
            dims,
            cfg: cfg.clone(),
            sz,
            ids,
            work: Work::default(),
            infer: OnceLock::new(),
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &SatConfig {
        &self.cfg
    }

    /// Checks the features against the model and returns the spatial grid.
    fn check_feats<'f>(&self, feats: &Features<'f>) -> Result<&'f [f32], DecodeError> {
        feats.validate()?;
        let s = feats.require_spatial("sat")?;
        if feats.dim != self.sz.f || feats.cells != self.sz.p || feats.batch == 0 {
            return Err(DecodeError::Shape(format!(
                "sat was built for {} cells of {} features, got {} images of {}x{}",
                self.sz.p, self.sz.f, feats.batch, feats.cells, feats.dim
            )));
        }
        Ok(s)
    }
}

/// `encoder_att(S)`, the mean feature per image and `(h0, c0)` for `nb` images.
#[allow(clippy::too_many_arguments)]
fn encode(
    sz: &Sz,
    w: &W,
    s: &[f32],
    nb: usize,
    ea: &mut Vec<f32>,
    fm: &mut Vec<f32>,
    h0: &mut [f32],
    c0: &mut [f32],
) -> Result<(), KernelError> {
    let (p, f, a, h) = (sz.p, sz.f, sz.a, sz.h);
    sized(ea, nb * p * a);
    for row in ea.chunks_exact_mut(a) {
        row.copy_from_slice(w.enc_b);
    }
    gemm(
        nb * p,
        a,
        f,
        1.0,
        s,
        Trans::No,
        w.enc_w,
        Trans::Yes,
        ea,
        true,
    )?;
    zeroed(fm, nb * f);
    let inv = 1.0 / p as f32;
    for (m, img) in fm.chunks_exact_mut(f).zip(s.chunks_exact(p * f)) {
        for cell in img.chunks_exact(f) {
            axpy(m, inv, cell);
        }
    }
    for (out, wt, b) in [(h0, w.init_h_w, w.init_h_b), (c0, w.init_c_w, w.init_c_b)] {
        for row in out.chunks_exact_mut(h) {
            row.copy_from_slice(b);
        }
        gemm(nb, h, f, 1.0, fm, Trans::No, wt, Trans::Yes, out, true)?;
    }
    Ok(())
}

/// A matrix inside a buffer: element `(i, j)` at `data[off + i * rs + j * cs]`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    off: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// A whole row-major buffer of `cols` columns, as it is.
    fn row_major(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            off: 0,
            rs: cols,
            cs: 1,
        }
    }

    /// A whole row-major buffer of `cols` columns, transposed (`[cols, rows]`).
    fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            off: 0,
            rs: 1,
            cs: cols,
        }
    }

    fn check(&self, what: &str, rows: usize, cols: usize) -> Result<(), KernelError> {
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let last = (rows - 1)
            .checked_mul(self.rs)
            .and_then(|r| (cols - 1).checked_mul(self.cs).map(|c| (r, c)))
            .and_then(|(r, c)| r.checked_add(c))
            .and_then(|x| x.checked_add(self.off));
        match last {
            Some(l) if l < self.data.len() && self.rs <= isize::MAX as usize => Ok(()),
            _ => Err(KernelError::Invalid(format!(
                "{what}: a {rows}x{cols} view (offset {}, strides {}, {}) does not fit {} values",
                self.off,
                self.rs,
                self.cs,
                self.data.len()
            ))),
        }
    }
}

/// `c = (accumulate ? c : 0) + alpha · a · b` for strided views `a` (`[m, k]`) and `b`
/// (`[k, n]`) and a contiguous row-major `c` (`[m, n]`). Lets the two column blocks of
/// `decode_step.weight_ih` (`[4H, E+F]`) be used without copying them apart.
#[allow(clippy::too_many_arguments)]
fn gemm_view(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Mat,
    b: Mat,
    c: &mut [f32],
    accumulate: bool,
) -> Result<(), KernelError> {
    a.check("gemm_view a", m, k)?;
    b.check("gemm_view b", k, n)?;
    crate::kernels::check_len("gemm_view c", c.len(), m * n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return Ok(());
    }
    // SAFETY: `check` proved that every element the views address, `off + i*rs + j*cs` for
    // `i < rows`, `j < cols`, lies inside its slice, and `c` holds exactly `m*n` values addressed
    // with row stride `n`. `c` is a unique borrow, so it aliases neither `a` nor `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr().add(a.off),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr().add(b.off),
            b.cs as isize,
            b.rs as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
    Ok(())
}

const LANES: usize = 16;

multiversion! {
    /// `Σ_i relu(e_i + d_i) · w_i`.
    fn relu_dot(e: &[f32], d: &[f32], w: &[f32]) -> f32 {
        let n = e.len();
        let (d, w) = (&d[..n], &w[..n]);
        let mut acc = [0f32; LANES];
        let mut ec = e.chunks_exact(LANES);
        let mut dc = d.chunks_exact(LANES);
        let mut wc = w.chunks_exact(LANES);
        for ((e, d), w) in (&mut ec).zip(&mut dc).zip(&mut wc) {
            for k in 0..LANES {
                acc[k] += (e[k] + d[k]).max(0.0) * w[k];
            }
        }
        let mut s: f32 = acc.iter().sum();
        for ((e, d), w) in ec.remainder().iter().zip(dc.remainder()).zip(wc.remainder()) {
            s += (e + d).max(0.0) * w;
        }
        s
    }
}

multiversion! {
    /// `Σ_i a_i b_i`.
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let b = &b[..a.len()];
        let mut acc = [0f32; LANES];
        let mut ac = a.chunks_exact(LANES);
        let mut bc = b.chunks_exact(LANES);
        for (a, b) in (&mut ac).zip(&mut bc) {
            for k in 0..LANES {
                acc[k] += a[k] * b[k];
            }
        }
        let mut s: f32 = acc.iter().sum();
        for (a, b) in ac.remainder().iter().zip(bc.remainder()) {
            s += a * b;
        }
        s
    }
}

multiversion! {
    /// `y += alpha · x`.
    fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
        let x = &x[..y.len()];
        for (y, x) in y.iter_mut().zip(x) {
            *y += alpha * x;
        }
    }
}

multiversion! {
    /// Backward of `relu_dot` for one cell with score gradient `ds`: accumulates into the
    /// gradients of `e`, `d` and `w`.
    fn relu_dot_bwd(e: &[f32], d: &[f32], w: &[f32], ds: f32, de: &mut [f32], dd: &mut [f32], dw: &mut [f32]) {
        let n = e.len();
        let (d, w, de, dd, dw) = (&d[..n], &w[..n], &mut de[..n], &mut dd[..n], &mut dw[..n]);
        for i in 0..n {
            let z = e[i] + d[i];
            let on = if z > 0.0 { 1.0 } else { 0.0 };
            let g = ds * w[i] * on;
            de[i] += g;
            dd[i] += g;
            dw[i] += ds * z * on;
        }
    }
}

multiversion! {
    /// `gate <- sigmoid(gate)`, `awe = gate · ctx`.
    fn gate_fwd(gate: &mut [f32], ctx: &[f32], awe: &mut [f32]) {
        let n = gate.len();
        let (ctx, awe) = (&ctx[..n], &mut awe[..n]);
        for j in 0..n {
            let g = sigmoid(gate[j]);
            gate[j] = g;
            awe[j] = g * ctx[j];
        }
    }
}

multiversion! {
    /// Backward of [`gate_fwd`]: `dawe` (in) becomes `d ctx`; `dgp` gets the gradient of the
    /// gate's pre-activation.
    fn gate_bwd(dawe: &mut [f32], gate: &[f32], ctx: &[f32], dgp: &mut [f32]) {
        let n = dawe.len();
        let (gate, ctx, dgp) = (&gate[..n], &ctx[..n], &mut dgp[..n]);
        for j in 0..n {
            let g = gate[j];
            dgp[j] = dawe[j] * ctx[j] * g * (1.0 - g);
            dawe[j] *= g;
        }
    }
}

/// Attention of one row: `alpha` over the `P` cells from `ea` (`[P, A]`) and `da` (`[A]`), and
/// the context `Σ_p alpha_p S_p` into `ctx`.
fn attend_row(
    sz: &Sz,
    w: &W,
    ea: &[f32],
    da: &[f32],
    s: &[f32],
    alpha: &mut [f32],
    ctx: &mut [f32],
) {
    let (a, f) = (sz.a, sz.f);
    for (al, e) in alpha.iter_mut().zip(ea.chunks_exact(a)) {
        *al = w.full_b + relu_dot(e, da, w.full_w);
    }
    let mx = alpha.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in alpha.iter_mut() {
        *v = (*v - mx).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in alpha.iter_mut() {
        *v *= inv;
    }
    ctx.fill(0.0);
    for (&al, cell) in alpha.iter().zip(s.chunks_exact(f)) {
        axpy(ctx, al, cell);
    }
}

/// The embedding (`embed == true`) or attention-context column block (`[rows, E or F]`) of a
/// row-major `[rows, E+F]` buffer: the LSTM inputs `[embedding; awe]`, or
/// `decode_step.weight_ih` (`[4H, E+F]`).
fn input_block<'a>(data: &'a [f32], sz: &Sz, embed: bool) -> Mat<'a> {
    Mat {
        data,
        off: if embed { 0 } else { sz.e },
        rs: sz.x(),
        cs: 1,
    }
}

/// The same block transposed (`[E or F, rows]`), e.g. `weight_ih` as `op(b)` for the LSTM
/// input product.
fn input_block_t<'a>(data: &'a [f32], sz: &Sz, embed: bool) -> Mat<'a> {
    Mat {
        data,
        off: if embed { 0 } else { sz.e },
        rs: 1,
        cs: sz.x(),
    }
}

impl Decoder for Sat {
    fn kind(&self) -> &'static str {
        "sat"
    }
    fn vocab_size(&self) -> usize {
        self.dims.vocab
    }
    fn needs_spatial(&self) -> bool {
        true
    }
    fn has_attention(&self) -> bool {
        true
    }
    fn params(&self) -> &ParamSet {
        &self.params
    }
    fn params_mut(&mut self) -> &mut ParamSet {
        self.infer = OnceLock::new();
        &mut self.params
    }

    fn forward(
        &mut self,
        feats: &Features,
        batch: &TeacherBatch,
        opts: &PassOptions,
        grads: bool,
        rng: &mut ChaCha8Rng,
    ) -> Result<PassStats, DecodeError> {
        let s = self.check_feats(feats)?;
        batch.validate(self.sz.v)?;
        if batch.batch != feats.batch {
            return Err(DecodeError::Shape(format!(
                "{} captions for {} images",
                batch.batch, feats.batch
            )));
        }
        let sz = self.sz;
        let (e, h, a, f, p, xw, o) = (sz.e, sz.h, sz.a, sz.f, sz.p, sz.x(), sz.o);
        let (b, t_len) = (batch.batch, batch.time);
        let n = b * t_len;
        let (bh, g4) = (b * h, 4 * h);
        // The doubly-stochastic penalty regularises attention over reference captions; for
        // weighted (policy-gradient) batches of sampled captions it does not apply.
        let alpha_c = if batch.weights.is_some() {
            0.0
        } else {
            self.cfg.alpha_c
        };
        let row_weights = batch.time_major_weights();
        let dropout = if opts.train { self.cfg.dropout } else { 0.0 };
        let Sat {
            params, ids, work, ..
        } = self;
        let wk = work;
        let (vals, mut gv) = params.split();
        let w = ids.weights(|id| vals.get(id));

        // Time-major tokens.
        wk.inputs.clear();
        wk.targets.clear();
        for t in 0..t_len {
            for r in 0..b {
                wk.inputs.push(batch.inputs[r * t_len + t]);
                wk.targets.push(batch.targets[r * t_len + t]);
            }
        }

        // Per-batch precomputation.
        sized(&mut wk.h, (t_len + 1) * bh);
        sized(&mut wk.c, (t_len + 1) * bh);
        encode(
            &sz,
            &w,
            s,
            b,
            &mut wk.ea,
            &mut wk.fm,
            &mut wk.h[..bh],
            &mut wk.c[..bh],
        )?;
        sized(&mut wk.xcat, n * xw);
        for (row, &tok) in wk.xcat.chunks_exact_mut(xw).zip(&wk.inputs) {
            let tok = tok as usize;
            row[..e].copy_from_slice(&w.emb[tok * e..(tok + 1) * e]);
        }
        sized(&mut wk.gates, n * g4);
        for row in wk.gates.chunks_exact_mut(g4) {
            for ((o, x), y) in row.iter_mut().zip(w.b_ih).zip(w.b_hh) {
                *o = x + y;
            }
        }
        let xe = input_block(&wk.xcat, &sz, true);
        gemm_view(
            n,
            g4,
            e,
            1.0,
            xe,
            input_block_t(w.w_ih, &sz, true),
            &mut wk.gates,
            true,
        )?;
        wk.step.pack_forward(&sz, &w)?;
        sized(&mut wk.tanh_c, n * h);
        sized(&mut wk.da, n * a);
        sized(&mut wk.alpha, n * p);
        sized(&mut wk.ctx, n * f);
        sized(&mut wk.gate, n * f);

        // Recurrence.
        for t in 0..t_len {
            let hp = &wk.h[t * bh..(t + 1) * bh];
            let sw = &mut wk.step;
            let da = &mut wk.da[t * b * a..(t + 1) * b * a];
            sw.dec.forward(hp, b, w.dec_b, da, &mut sw.scratch)?;
            let gate = &mut wk.gate[t * b * f..(t + 1) * b * f];
            sw.fb.forward(hp, b, w.fb_b, gate, &mut sw.scratch)?;
            let da = &wk.da[t * b * a..(t + 1) * b * a];
            let ea = &wk.ea;
            let wr = &w;
            wk.alpha[t * b * p..(t + 1) * b * p]
                .par_chunks_mut(p)
                .zip(wk.ctx[t * b * f..(t + 1) * b * f].par_chunks_mut(f))
                .zip(gate.par_chunks_mut(f))
                .zip(wk.xcat[t * b * xw..(t + 1) * b * xw].par_chunks_mut(xw))
                .enumerate()
                .for_each(|(r, (((al, ctx), gt), x))| {
                    attend_row(
                        &sz,
                        wr,
                        &ea[r * p * a..(r + 1) * p * a],
                        &da[r * a..(r + 1) * a],
                        &s[r * p * f..(r + 1) * p * f],
                        al,
                        ctx,
                    );
                    gate_fwd(gt, ctx, &mut x[e..]);
                });
            let gates = &mut wk.gates[t * b * g4..(t + 1) * b * g4];
            let sw = &mut wk.step;
            sw.awe_rows.clear();
            for row in wk.xcat[t * b * xw..(t + 1) * b * xw].chunks_exact(xw) {
                sw.awe_rows.extend_from_slice(&row[e..]);
            }
            sw.awe.accumulate(&sw.awe_rows, b, gates, &mut sw.scratch)?;
            sw.hh.accumulate(hp, b, gates, &mut sw.scratch)?;
            let (c_lo, c_hi) = wk.c.split_at_mut((t + 1) * bh);
            let (_, h_hi) = wk.h.split_at_mut((t + 1) * bh);
            lstm_cell_fwd(
                h,
                gates,
                &c_lo[t * bh..],
                &mut c_hi[..bh],
                &mut wk.tanh_c[t * bh..(t + 1) * bh],
                &mut h_hi[..bh],
            );
        }

        // Doubly-stochastic regulariser over the valid steps.
        zeroed(&mut wk.cover, b * p);
        for (i, (al, &tg)) in wk.alpha.chunks_exact(p).zip(&wk.targets).enumerate() {
            if tg != PAD_ID {
                let r = i % b;
                axpy(&mut wk.cover[r * p..(r + 1) * p], 1.0, al);
            }
        }
        let reg_sum: f64 = wk
            .cover
            .iter()
            .map(|&c| (1.0 - c as f64) * (1.0 - c as f64))
            .sum();
        let regulariser = (alpha_c as f64 * reg_sum / (b * p) as f64) as f32;

        // The deep output: `tanh(deep_output.lstm(h_t) + deep_output.ctx(awe_t) + embedding(x_t))`.
        if let Some(dw) = &w.deep {
            sized(&mut wk.deep_o, n * e);
            for (row, x) in wk.deep_o.chunks_exact_mut(e).zip(wk.xcat.chunks_exact(xw)) {
                for ((u, xv), bv) in row.iter_mut().zip(&x[..e]).zip(dw.h_b) {
                    *u = xv + bv;
                }
            }
            gemm(
                n,
                e,
                h,
                1.0,
                &wk.h[bh..],
                Trans::No,
                dw.h_w,
                Trans::Yes,
                &mut wk.deep_o,
                true,
            )?;
            let awe = input_block(&wk.xcat, &sz, false);
            let ctx_w_t = Mat::transposed(dw.ctx_w, f);
            gemm_view(n, e, f, 1.0, awe, ctx_w_t, &mut wk.deep_o, true)?;
            for u in wk.deep_o.iter_mut() {
                *u = u.tanh();
            }
        }
        let read: &[f32] = if w.deep.is_some() {
            &wk.deep_o
        } else {
            &wk.h[bh..]
        };

        // Dropout and the fused vocabulary loss.
        let use_mask = dropout > 0.0;
        if use_mask {
            let scale = 1.0 / (1.0 - dropout);
            sized(&mut wk.mask, n * o);
            for m in wk.mask.iter_mut() {
                *m = if rng.random::<f32>() < dropout {
                    0.0
                } else {
                    scale
                };
            }
            sized(&mut wk.hd, n * o);
            for ((d, x), m) in wk.hd.iter_mut().zip(read).zip(&wk.mask) {
                *d = x * m;
            }
        }
        let out: &[f32] = if use_mask { &wk.hd } else { read };
        let xdims = XentDims {
            rows: n,
            dim: o,
            vocab: sz.v,
        };
        let xcfg = XentConfig {
            label_smoothing: opts.label_smoothing,
            temperature: opts.temperature,
            ignore_index: Some(PAD_ID),
            ..XentConfig::default()
        };
        if !grads {
            let st = linear_xent_weighted(
                &xdims,
                out,
                w.fc_w,
                w.fc_b,
                &wk.targets,
                row_weights.as_deref(),
                &xcfg,
                None,
                &mut wk.xent,
            )?;
            return Ok(PassStats {
                loss: st.loss,
                regulariser,
                tokens: st.n_valid,
            });
        }
        sized(&mut wk.d_out, n * o);
        let st = linear_xent_weighted(
            &xdims,
            out,
            w.fc_w,
            w.fc_b,
            &wk.targets,
            row_weights.as_deref(),
            &xcfg,
            Some(XentGrads {
                x: &mut wk.d_out,
                w: gv.take(ids.fc_w)?,
                b: gv.take(ids.fc_b)?,
            }),
            &mut wk.xent,
        )?;
        if use_mask {
            for (d, m) in wk.d_out.iter_mut().zip(&wk.mask) {
                *d *= m;
            }
        }
        // Through the deep output: `d_out` becomes the gradient of its pre-activation, which
        // reaches `h_t`, `awe_t` (inside the recurrence) and the embedding (below).
        if let (Some(dw), Some(ids_deep)) = (&w.deep, &ids.deep) {
            for (d, y) in wk.d_out.iter_mut().zip(&wk.deep_o) {
                *d *= 1.0 - y * y;
            }
            sized(&mut wk.dh_deep, n * h);
            gemm(
                n,
                h,
                e,
                1.0,
                &wk.d_out,
                Trans::No,
                dw.h_w,
                Trans::No,
                &mut wk.dh_deep,
                false,
            )?;
            sized(&mut wk.dawe_deep, n * f);
            gemm(
                n,
                f,
                e,
                1.0,
                &wk.d_out,
                Trans::No,
                dw.ctx_w,
                Trans::No,
                &mut wk.dawe_deep,
                false,
            )?;
            let gw = gv.take(ids_deep.h_w)?;
            gemm(
                e,
                h,
                n,
                1.0,
                &wk.d_out,
                Trans::Yes,
                &wk.h[bh..],
                Trans::No,
                gw,
                true,
            )?;
            add_col_sums(&wk.d_out, e, gv.take(ids_deep.h_b)?);
            let du_t = Mat::transposed(&wk.d_out, e);
            let awe = input_block(&wk.xcat, &sz, false);
            gemm_view(e, f, n, 1.0, du_t, awe, gv.take(ids_deep.ctx_w)?, true)?;
        }
        let deep = w.deep.is_some();
        // d regulariser / d alpha_{t,b,p} for a valid step.
        let k = 2.0 * alpha_c / (b * p) as f32;
        for c in wk.cover.iter_mut() {
            *c = k * (*c - 1.0);
        }

        // Backward through time.
        wk.step.pack_backward(&sz, &w)?;
        sized(&mut wk.dgates, n * g4);
        sized(&mut wk.dgp, n * f);
        zeroed(&mut wk.dda, n * a);
        zeroed(&mut wk.dea, b * p * a);
        zeroed(&mut wk.dwfa, b * a);
        zeroed(&mut wk.dbfa, b);
        zeroed(&mut wk.dalpha, b * p);
        zeroed(&mut wk.dawe, b * f);
        zeroed(&mut wk.dh, bh);
        zeroed(&mut wk.dc, bh);
        for t in (0..t_len).rev() {
            // Whole gradient on h_{t+1}: from the loss and from step t+1.
            let from_loss = if deep { &wk.dh_deep } else { &wk.d_out };
            for (d, g) in wk.dh.iter_mut().zip(&from_loss[t * bh..(t + 1) * bh]) {
                *d += g;
            }
            let dg = &mut wk.dgates[t * b * g4..(t + 1) * b * g4];
            lstm_cell_bwd(
                h,
                &wk.gates[t * b * g4..(t + 1) * b * g4],
                &wk.c[t * bh..(t + 1) * bh],
                &wk.tanh_c[t * bh..(t + 1) * bh],
                &wk.dh,
                None,
                &mut wk.dc,
                dg,
            );
            let dg = &wk.dgates[t * b * g4..(t + 1) * b * g4];
            let sw = &mut wk.step;
            wk.dh.fill(0.0);
            sw.hh_t.accumulate(dg, b, &mut wk.dh, &mut sw.scratch)?;
            wk.dawe.fill(0.0);
            sw.awe_t.accumulate(dg, b, &mut wk.dawe, &mut sw.scratch)?;
            if deep {
                axpy(&mut wk.dawe, 1.0, &wk.dawe_deep[t * b * f..(t + 1) * b * f]);
            }
            let (gate, ctx) = (
                &wk.gate[t * b * f..(t + 1) * b * f],
                &wk.ctx[t * b * f..(t + 1) * b * f],
            );
            let alpha = &wk.alpha[t * b * p..(t + 1) * b * p];
            let da = &wk.da[t * b * a..(t + 1) * b * a];
            let (ea, cover, targets) = (&wk.ea, &wk.cover, &wk.targets[t * b..(t + 1) * b]);
            let wr = &w;
            wk.dawe
                .par_chunks_mut(f)
                .zip(wk.dgp[t * b * f..(t + 1) * b * f].par_chunks_mut(f))
                .zip(wk.dda[t * b * a..(t + 1) * b * a].par_chunks_mut(a))
                .zip(wk.dea.par_chunks_mut(p * a))
                .zip(wk.dwfa.par_chunks_mut(a))
                .zip(wk.dbfa.par_iter_mut())
                .zip(wk.dalpha.par_chunks_mut(p))
                .enumerate()
                .for_each(|(r, ((((((dawe, dgp), dda), dea), dwfa), dbfa), dal))| {
                    let valid = targets[r] != PAD_ID;
                    gate_bwd(
                        dawe,
                        &gate[r * f..(r + 1) * f],
                        &ctx[r * f..(r + 1) * f],
                        dgp,
                    );
                    let srow = &s[r * p * f..(r + 1) * p * f];
                    let al = &alpha[r * p..(r + 1) * p];
                    for (q, (d, cell)) in dal.iter_mut().zip(srow.chunks_exact(f)).enumerate() {
                        *d = dot(dawe, cell) + if valid { cover[r * p + q] } else { 0.0 };
                    }
                    let mean: f32 = al.iter().zip(dal.iter()).map(|(x, y)| x * y).sum();
                    let ear = &ea[r * p * a..(r + 1) * p * a];
                    let dar = &da[r * a..(r + 1) * a];
                    for q in 0..p {
                        let ds = al[q] * (dal[q] - mean);
                        *dbfa += ds;
                        relu_dot_bwd(
                            &ear[q * a..(q + 1) * a],
                            dar,
                            wr.full_w,
                            ds,
                            &mut dea[q * a..(q + 1) * a],
                            dda,
                            dwfa,
                        );
                    }
                });
            let sw = &mut wk.step;
            let dgp = &wk.dgp[t * b * f..(t + 1) * b * f];
            sw.fb_t.accumulate(dgp, b, &mut wk.dh, &mut sw.scratch)?;
            let dda = &wk.dda[t * b * a..(t + 1) * b * a];
            sw.dec_t.accumulate(dda, b, &mut wk.dh, &mut sw.scratch)?;
        }

        // Weight gradients, one GEMM each over all steps.
        let h_prev = &wk.h[..n * h];
        {
            let gw = gv.take(ids.w_hh)?;
            gemm(
                g4,
                h,
                n,
                1.0,
                &wk.dgates,
                Trans::Yes,
                h_prev,
                Trans::No,
                gw,
                true,
            )?;
            let gw = gv.take(ids.w_ih)?;
            gemm(
                g4,
                xw,
                n,
                1.0,
                &wk.dgates,
                Trans::Yes,
                &wk.xcat,
                Trans::No,
                gw,
                true,
            )?;
            add_col_sums(&wk.dgates, g4, gv.take(ids.b_ih)?);
            add_col_sums(&wk.dgates, g4, gv.take(ids.b_hh)?);
            let gw = gv.take(ids.fb_w)?;
            gemm(
                f,
                h,
                n,
                1.0,
                &wk.dgp,
                Trans::Yes,
                h_prev,
                Trans::No,
                gw,
                true,
            )?;
            add_col_sums(&wk.dgp, f, gv.take(ids.fb_b)?);
            let gw = gv.take(ids.dec_w)?;
            gemm(
                a,
                h,
                n,
                1.0,
                &wk.dda,
                Trans::Yes,
                h_prev,
                Trans::No,
                gw,
                true,
            )?;
            add_col_sums(&wk.dda, a, gv.take(ids.dec_b)?);
            let gw = gv.take(ids.enc_w)?;
            gemm(
                a,
                f,
                b * p,
                1.0,
                &wk.dea,
                Trans::Yes,
                s,
                Trans::No,
                gw,
                true,
            )?;
            add_col_sums(&wk.dea, a, gv.take(ids.enc_b)?);
            add_col_sums(&wk.dwfa, a, gv.take(ids.full_w)?);
            gv.take(ids.full_b)?[0] += wk.dbfa.iter().sum::<f32>();
            for (dst, gsrc, bsrc) in [
                (ids.init_h_w, ids.init_h_b, &wk.dh),
                (ids.init_c_w, ids.init_c_b, &wk.dc),
            ] {
                let gw = gv.take(dst)?;
                gemm(h, f, b, 1.0, bsrc, Trans::Yes, &wk.fm, Trans::No, gw, true)?;
                add_col_sums(bsrc, h, gv.take(gsrc)?);
            }
        }
        sized(&mut wk.dx, n * e);
        let dgm = Mat::row_major(&wk.dgates, g4);
        gemm_view(
            n,
            e,
            g4,
            1.0,
            dgm,
            input_block(w.w_ih, &sz, true),
            &mut wk.dx,
            false,
        )?;
        if deep {
            axpy(&mut wk.dx, 1.0, &wk.d_out);
        }
        let d_emb = gv.take(ids.emb)?;
        for (src, &tok) in wk.dx.chunks_exact(e).zip(&wk.inputs) {
            let tok = tok as usize;
            axpy(&mut d_emb[tok * e..(tok + 1) * e], 1.0, src);
        }
        Ok(PassStats {
            loss: st.loss,
            regulariser,
            tokens: st.n_valid,
        })
    }

    fn start<'s>(&'s self, feats: &Features) -> Result<Box<dyn DecodeState + 's>, DecodeError> {
        let s = self.check_feats(feats)?;
        let sz = self.sz;
        let nb = feats.batch;
        let w = self.ids.weights(|id| self.params.value(id));
        let (mut ea, mut fm) = (Vec::new(), Vec::new());
        let mut hs = vec![0.0; nb * sz.h];
        let mut cs = vec![0.0; nb * sz.h];
        encode(&sz, &w, s, nb, &mut ea, &mut fm, &mut hs, &mut cs)?;
        Ok(Box::new(SatState {
            m: self,
            img: (0..nb).collect(),
            feats: s.to_vec(),
            ea,
            h: hs,
            c: cs,
            scratch: Vec::new(),
            out_t: Vec::new(),
            deep_in: Vec::new(),
            deep_o: Vec::new(),
        }))
    }
}

/// Generation state: per row the image it belongs to and its LSTM state; the features and
/// `encoder_att(S)` are kept once per image, so [`DecodeState::select`] only moves `(h, c)`.
struct SatState<'s> {
    m: &'s Sat,
    img: Vec<usize>,
    feats: Vec<f32>,
    ea: Vec<f32>,
    h: Vec<f32>,
    c: Vec<f32>,
    scratch: Vec<f32>,
    /// Scratch of the [`FewRowsLinear`] products.
    out_t: Vec<f32>,
    /// The deep output's input `[awe; h]` and output (with `deep_output`).
    deep_in: Vec<f32>,
    deep_o: Vec<f32>,
}

impl DecodeState for SatState<'_> {
    fn rows(&self) -> usize {
        self.img.len()
    }

    fn step(
        &mut self,
        tokens: &[u32],
        log_probs: &mut [f32],
        attention: Option<&mut [f32]>,
    ) -> Result<(), DecodeError> {
        let sz = self.m.sz;
        let (e, h, a, f, p, xw, v) = (sz.e, sz.h, sz.a, sz.f, sz.p, sz.x(), sz.v);
        let r = self.rows();
        if tokens.len() != r || log_probs.len() != r * v {
            return Err(DecodeError::Shape(format!(
                "sat step over {r} rows: {} tokens, {} log-probs (vocabulary {v})",
                tokens.len(),
                log_probs.len()
            )));
        }
        if let Some(att) = attention.as_ref() {
            if att.len() != r * p {
                return Err(DecodeError::Shape(format!(
                    "sat attention output: {} values for {r} rows of {p} cells",
                    att.len()
                )));
            }
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= v) {
            return Err(DecodeError::Shape(format!(
                "token id {bad} is outside the vocabulary of {v}"
            )));
        }
        let w = self.m.ids.weights(|id| self.m.params.value(id));
        let iw = match self.m.infer.get() {
            Some(iw) => iw,
            None => {
                let built = Infer::new(&sz, &w)?;
                self.m.infer.get_or_init(|| built)
            }
        };
        // Scratch layout: hproj [r, A+F] (`decoder_att(h)`, then the gate), ctx [r, F],
        // alpha [r, P], the LSTM input [r, E+F+H] (`[embedding; awe; h]`), gates [r, 4H],
        // c [r, H], tanh_c [r, H], h [r, H].
        let (af, xh) = (a + f, xw + h);
        let sizes = [af, f, p, xh, 4 * h, h, h, h].map(|k| k * r);
        zeroed(&mut self.scratch, sizes.iter().sum());
        let (hp, rest) = self.scratch.split_at_mut(sizes[0]);
        let (ctx, rest) = rest.split_at_mut(sizes[1]);
        let (alpha, rest) = rest.split_at_mut(sizes[2]);
        let (xin, rest) = rest.split_at_mut(sizes[3]);
        let (gates, rest) = rest.split_at_mut(sizes[4]);
        let (c_new, rest) = rest.split_at_mut(sizes[5]);
        let (tanh_c, h_new) = rest.split_at_mut(sizes[6]);
        iw.hproj.forward(&self.h, r, hp, &mut self.out_t)?;
        for (i, &im) in self.img.iter().enumerate() {
            let x = &mut xin[i * xh..(i + 1) * xh];
            let tok = tokens[i] as usize;
            x[..e].copy_from_slice(&w.emb[tok * e..(tok + 1) * e]);
            x[xw..].copy_from_slice(&self.h[i * h..(i + 1) * h]);
            let (da, gate) = hp[i * af..(i + 1) * af].split_at_mut(a);
            let ctx = &mut ctx[i * f..(i + 1) * f];
            attend_row(
                &sz,
                &w,
                &self.ea[im * p * a..(im + 1) * p * a],
                da,
                &self.feats[im * p * f..(im + 1) * p * f],
                &mut alpha[i * p..(i + 1) * p],
                ctx,
            );
            gate_fwd(gate, ctx, &mut x[e..xw]);
        }
        iw.lstm.forward(xin, r, gates, &mut self.out_t)?;
        lstm_cell_fwd(h, gates, &self.c, c_new, tanh_c, h_new);
        self.c.copy_from_slice(c_new);
        self.h.copy_from_slice(h_new);
        match &iw.deep {
            Some(deep) => {
                // `[awe; h]` rows, then `tanh(.. + embedding)`.
                self.deep_in.clear();
                for (x, hr) in xin.chunks_exact(xh).zip(self.h.chunks_exact(h)) {
                    self.deep_in.extend_from_slice(&x[e..xw]);
                    self.deep_in.extend_from_slice(hr);
                }
                sized(&mut self.deep_o, r * e);
                deep.forward(&self.deep_in, r, &mut self.deep_o, &mut self.out_t)?;
                for (row, x) in self.deep_o.chunks_exact_mut(e).zip(xin.chunks_exact(xh)) {
                    for (u, xv) in row.iter_mut().zip(&x[..e]) {
                        *u = (*u + xv).tanh();
                    }
                }
                iw.fc.forward(&self.deep_o, r, log_probs, &mut self.out_t)?;
            }
            None => iw.fc.forward(&self.h, r, log_probs, &mut self.out_t)?,
        }
        log_softmax_rows(log_probs, v);
        if let Some(att) = attention {
            att.copy_from_slice(alpha);
        }
        Ok(())
    }

    fn select(&mut self, rows: &[usize]) -> Result<(), DecodeError> {
        let n = self.rows();
        if let Some(&bad) = rows.iter().find(|&&r| r >= n) {
            return Err(DecodeError::Shape(format!(
                "select row {bad} of a state with {n} rows"
            )));
        }
        let h = self.m.sz.h;
        self.h = crate::model::gather_rows(&self.h, h, rows);
        self.c = crate::model::gather_rows(&self.c, h, rows);
        self.img = rows.iter().map(|&r| self.img[r]).collect();
        Ok(())
    }
}
