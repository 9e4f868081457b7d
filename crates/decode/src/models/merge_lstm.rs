//! `merge-lstm`: the classic Keras "merge" captioner, with the image fed as the first LSTM step
//! and added again to the LSTM output.
//!
//! ```text
//! img    = relu(Linear(F -> E)(pooled))                          [B, E]
//! seq    = [img, emb(x_1), ..., emb(x_T)]                        [T+1, B, E]
//! out    = LSTM(E -> H)(seq, zero state), steps 1..T              [T, B, H]
//! merged = dropout(out) + img                                     (needs H == E)
//! a      = dropout(relu(Linear(H -> P)(merged)))                  [T, B, P]
//! logits = Linear(P -> V)(a)                                      (fused with the loss)
//! ```
//!
//! The output of step `t` (after the image and the words `x_1..x_t`) predicts target `t`.
//! Parameter names follow a PyTorch module with `img`, `embedding`, `lstm = nn.LSTM`, `proj`
//! and `fc` submodules. For generation, [`Decoder::start`] runs the image step and every
//! [`DecodeState::step`] feeds one word.

use super::common::{dropout, embed, linear, time_major_into, zeroed};
use crate::config::ModelDims;
use crate::kernels::act;
use crate::kernels::add_col_sums;
use crate::kernels::gemm::{gemm, Trans};
use crate::kernels::lstm::{
    lstm_backward, lstm_forward, LstmCache, LstmInputGrads, LstmParamGrads, LstmParams, SeqDims,
};
use crate::kernels::softmax_xent::{
    linear_xent_weighted, XentConfig, XentDims, XentGrads, XentWorkspace,
};
use crate::model::{
    log_softmax_rows, DecodeState, Decoder, Features, PassOptions, PassStats, TeacherBatch, PAD_ID,
};
use crate::params::{ParamId, ParamSet};
use crate::DecodeError;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Hyper-parameters of [`MergeLstm`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MergeLstmConfig {
    /// Image projection size (Dense + relu); also the word embedding and LSTM size.
    pub embed: usize,
    /// LSTM size.
    pub hidden: usize,
    /// Size of the Dense(relu) layer before the vocabulary projection.
    pub proj: usize,
    /// Dropout after the LSTM and after the projection.
    pub dropout: f32,
}

impl Default for MergeLstmConfig {
    fn default() -> Self {
        Self {
            embed: 256,
            hidden: 256,
            proj: 128,
            dropout: 0.5,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Ids {
    img_w: ParamId,
    img_b: ParamId,
    emb: ParamId,
    w_ih: ParamId,
    w_hh: ParamId,
    b_ih: ParamId,
    b_hh: ParamId,
    proj_w: ParamId,
    proj_b: ParamId,
    fc_w: ParamId,
    fc_b: ParamId,
}

/// Buffers reused between training passes.
#[derive(Debug, Default)]
struct Work {
    /// Time-major input tokens and targets, `[T, B]`.
    tokens: Vec<u32>,
    targets: Vec<u32>,
    /// `img` after the relu, `[B, E]`.
    img: Vec<f32>,
    /// LSTM input `[T+1, B, E]`.
    x: Vec<f32>,
    cache: LstmCache,
    /// Dropout multipliers on the LSTM output `[T, B, H]` (empty without dropout).
    mask_out: Vec<f32>,
    /// `dropout(out) + img`, `[T, B, H]`.
    merged: Vec<f32>,
    /// `relu(proj(merged))`, `[T, B, P]`, and its dropped-out copy with the mask.
    act: Vec<f32>,
    act_drop: Vec<f32>,
    mask_act: Vec<f32>,
    /// Gradients.
    d_act: Vec<f32>,
    d_lstm: Vec<f32>,
    d_x: Vec<f32>,
    d_img: Vec<f32>,
    ws: XentWorkspace,
}

/// The decoder.
pub struct MergeLstm {
    cfg: MergeLstmConfig,
    params: ParamSet,
    dims: ModelDims,
    ids: Ids,
    work: Work,
}

impl MergeLstm {
    /// A decoder with fresh parameters (PyTorch default initialisation, embeddings
    /// `U(-0.1, 0.1)`), deterministic in `seed`.
    pub fn new(cfg: &MergeLstmConfig, dims: ModelDims, seed: u64) -> Result<Self, DecodeError> {
        if cfg.embed == 0 || cfg.hidden == 0 || cfg.proj == 0 {
            return Err(DecodeError::Config(format!(
                "merge-lstm needs embed, hidden and proj > 0, got {cfg:?}"
            )));
        }
        if cfg.hidden != cfg.embed {
            return Err(DecodeError::Config(format!(
                "merge-lstm adds the image vector (embed = {}) to the LSTM output (hidden = {}): \
                 they must be equal",
                cfg.embed, cfg.hidden
            )));
        }
        if !(0.0..1.0).contains(&cfg.dropout) {
            return Err(DecodeError::Config(format!(
                "merge-lstm dropout must be in [0, 1), got {}",
                cfg.dropout
            )));
        }
        if dims.vocab == 0 || dims.feature_dim == 0 {
            return Err(DecodeError::Config(format!(
                "merge-lstm needs a vocabulary and features, got {dims:?}"
            )));
        }
        let (e, h, p, f, v) = (
            cfg.embed,
            cfg.hidden,
            cfg.proj,
            dims.feature_dim,
            dims.vocab,
        );
        let mut ps = ParamSet::new();
        let ids = Ids {
            img_w: ps.add("img.weight", &[e, f])?,
            img_b: ps.add("img.bias", &[e])?,
            emb: ps.add("embedding.weight", &[v, e])?,
            w_ih: ps.add("lstm.weight_ih_l0", &[4 * h, e])?,
            w_hh: ps.add("lstm.weight_hh_l0", &[4 * h, h])?,
            b_ih: ps.add("lstm.bias_ih_l0", &[4 * h])?,
            b_hh: ps.add("lstm.bias_hh_l0", &[4 * h])?,
            proj_w: ps.add("proj.weight", &[p, h])?,
            proj_b: ps.add("proj.bias", &[p])?,
            fc_w: ps.add("fc.weight", &[v, p])?,
            fc_b: ps.add("fc.bias", &[v])?,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let bound = |n: usize| 1.0 / (n as f32).sqrt();
        ps.init_uniform(ids.img_w, bound(f), &mut rng);
        ps.init_uniform(ids.img_b, bound(f), &mut rng);
        ps.init_uniform(ids.emb, 0.1, &mut rng);
        for id in [ids.w_ih, ids.w_hh, ids.b_ih, ids.b_hh] {
            ps.init_uniform(id, bound(h), &mut rng);
        }
        ps.init_uniform(ids.proj_w, bound(h), &mut rng);
        ps.init_uniform(ids.proj_b, bound(h), &mut rng);
        ps.init_uniform(ids.fc_w, bound(p), &mut rng);
        ps.init_uniform(ids.fc_b, bound(p), &mut rng);
        Ok(Self {
            cfg: cfg.clone(),
            params: ps,
            dims,
            ids,
            work: Work::default(),
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &MergeLstmConfig {
        &self.cfg
    }

    fn check_features(&self, feats: &Features) -> Result<(), DecodeError> {
        feats.validate()?;
        if feats.dim != self.dims.feature_dim {
            return Err(DecodeError::Shape(format!(
                "merge-lstm was built for {}-dimensional features, got {}",
                self.dims.feature_dim, feats.dim
            )));
        }
        Ok(())
    }

    fn lstm_params(&self) -> LstmParams<'_> {
        LstmParams {
            w_ih: self.params.value(self.ids.w_ih),
            w_hh: self.params.value(self.ids.w_hh),
            b_ih: self.params.value(self.ids.b_ih),
            b_hh: self.params.value(self.ids.b_hh),
        }
    }
}

/// `merged[r] += img[r % rows]` for every row block of `rows` rows.
fn add_img(merged: &mut [f32], img: &[f32]) {
    for block in merged.chunks_exact_mut(img.len().max(1)) {
        for (m, i) in block.iter_mut().zip(img) {
            *m += i;
        }
    }
}

impl Decoder for MergeLstm {
    fn kind(&self) -> &'static str {
        "merge-lstm"
    }
    fn vocab_size(&self) -> usize {
        self.dims.vocab
    }
    fn needs_spatial(&self) -> bool {
        false
    }
    fn params(&self) -> &ParamSet {
        &self.params
    }
    fn params_mut(&mut self) -> &mut ParamSet {
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
        self.check_features(feats)?;
        batch.validate(self.dims.vocab)?;
        if feats.batch != batch.batch {
            return Err(DecodeError::Shape(format!(
                "{} images for {} captions",
                feats.batch, batch.batch
            )));
        }
        let Self {
            cfg,
            params,
            dims,
            ids,
            work: w,
        } = self;
        let (b, t_len) = (batch.batch, batch.time);
        let (e, h, pj, f, v) = (
            cfg.embed,
            cfg.hidden,
            cfg.proj,
            dims.feature_dim,
            dims.vocab,
        );
        let (be, bh, tb) = (b * e, b * h, t_len * b);
        let p_drop = if opts.train { cfg.dropout } else { 0.0 };
        time_major_into(batch.inputs, b, t_len, &mut w.tokens);
        time_major_into(batch.targets, b, t_len, &mut w.targets);
        let (vals, mut gv) = params.split();

        // img = relu(Linear(pooled)).
        zeroed(&mut w.img, be);
        linear(
            b,
            f,
            e,
            feats.pooled,
            vals.get(ids.img_w),
            vals.get(ids.img_b),
            &mut w.img,
        )?;
        act::relu_inplace(&mut w.img);

        // LSTM over [img, emb(x_1..x_T)] from a zero state.
        zeroed(&mut w.x, (t_len + 1) * be);
        w.x[..be].copy_from_slice(&w.img);
        embed(vals.get(ids.emb), e, &w.tokens, &mut w.x[be..]);
        let d = SeqDims {
            seq_len: t_len + 1,
            batch: b,
            input: e,
            hidden: h,
        };
        let lp = LstmParams {
            w_ih: vals.get(ids.w_ih),
            w_hh: vals.get(ids.w_hh),
            b_ih: vals.get(ids.b_ih),
            b_hh: vals.get(ids.b_hh),
        };
        lstm_forward(&d, &lp, &w.x, None, None, &mut w.cache)?;

        // merged = dropout(out[1..]) + img.
        w.merged.clear();
        w.merged.extend_from_slice(&w.cache.output()[bh..]);
        if p_drop > 0.0 {
            dropout(&mut w.merged, &mut w.mask_out, p_drop, rng);
        } else {
            w.mask_out.clear();
        }
        add_img(&mut w.merged, &w.img);

        // a = dropout(relu(proj(merged))).
        zeroed(&mut w.act, tb * pj);
        linear(
            tb,
            h,
            pj,
            &w.merged,
            vals.get(ids.proj_w),
            vals.get(ids.proj_b),
            &mut w.act,
        )?;
        act::relu_inplace(&mut w.act);
        if p_drop > 0.0 {
            w.act_drop.clear();
            w.act_drop.extend_from_slice(&w.act);
            dropout(&mut w.act_drop, &mut w.mask_act, p_drop, rng);
        } else {
            w.mask_act.clear();
        }
        let a_in: &[f32] = if p_drop > 0.0 { &w.act_drop } else { &w.act };

        let row_weights = batch.time_major_weights();
        let xdims = XentDims {
            rows: tb,
            dim: pj,
            vocab: v,
        };
        let xcfg = XentConfig {
            label_smoothing: opts.label_smoothing,
            temperature: opts.temperature,
            ignore_index: Some(PAD_ID),
            ..XentConfig::default()
        };
        let (fc_w, fc_b) = (vals.get(ids.fc_w), vals.get(ids.fc_b));
        if !grads {
            let st = linear_xent_weighted(
                &xdims,
                a_in,
                fc_w,
                fc_b,
                &w.targets,
                row_weights.as_deref(),
                &xcfg,
                None,
                &mut w.ws,
            )?;
            return Ok(PassStats {
                loss: st.loss,
                regulariser: 0.0,
                tokens: st.n_valid,
            });
        }
        zeroed(&mut w.d_act, tb * pj);
        let st = linear_xent_weighted(
            &xdims,
            a_in,
            fc_w,
            fc_b,
            &w.targets,
            row_weights.as_deref(),
            &xcfg,
            Some(XentGrads {
                x: &mut w.d_act,
                w: gv.take(ids.fc_w)?,
                b: gv.take(ids.fc_b)?,
            }),
            &mut w.ws,
        )?;

        // Back through dropout and relu of the projection.
        if !w.mask_act.is_empty() {
            for (g, m) in w.d_act.iter_mut().zip(&w.mask_act) {
                *g *= m;
            }
        }
        for (g, a) in w.d_act.iter_mut().zip(&w.act) {
            if *a <= 0.0 {
                *g = 0.0;
            }
        }
        let proj_w = vals.get(ids.proj_w);
        gemm(
            pj,
            h,
            tb,
            1.0,
            &w.d_act,
            Trans::Yes,
            &w.merged,
            Trans::No,
            gv.take(ids.proj_w)?,
            true,
        )?;
        add_col_sums(&w.d_act, pj, gv.take(ids.proj_b)?);
        // d merged, written straight into steps 1..T of the LSTM output gradient.
        zeroed(&mut w.d_lstm, (t_len + 1) * bh);
        gemm(
            tb,
            h,
            pj,
            1.0,
            &w.d_act,
            Trans::No,
            proj_w,
            Trans::No,
            &mut w.d_lstm[bh..],
            false,
        )?;
        // The image was added to every step: its gradient is the sum over steps.
        zeroed(&mut w.d_img, be);
        for block in w.d_lstm[bh..].chunks_exact(bh) {
            for (a, g) in w.d_img.iter_mut().zip(block) {
                *a += g;
            }
        }
        if !w.mask_out.is_empty() {
            for (g, m) in w.d_lstm[bh..].iter_mut().zip(&w.mask_out) {
                *g *= m;
            }
        }
        let mut lg = LstmParamGrads {
            w_ih: gv.take(ids.w_ih)?,
            w_hh: gv.take(ids.w_hh)?,
            b_ih: gv.take(ids.b_ih)?,
            b_hh: gv.take(ids.b_hh)?,
        };
        zeroed(&mut w.d_x, (t_len + 1) * be);
        lstm_backward(
            &d,
            &lp,
            &w.x,
            &mut w.cache,
            &w.d_lstm,
            None,
            None,
            &mut lg,
            LstmInputGrads {
                x: Some(&mut w.d_x),
                h0: None,
                c0: None,
            },
        )?;
        // Step 0's input was the image.
        for (a, g) in w.d_img.iter_mut().zip(&w.d_x[..be]) {
            *a += g;
        }
        let d_emb = gv.take(ids.emb)?;
        for (src, &tok) in w.d_x[be..].chunks_exact(e).zip(&w.tokens) {
            let t = tok as usize;
            for (a, g) in d_emb[t * e..(t + 1) * e].iter_mut().zip(src) {
                *a += g;
            }
        }
        for (g, y) in w.d_img.iter_mut().zip(&w.img) {
            if *y <= 0.0 {
                *g = 0.0;
            }
        }
        gemm(
            e,
            f,
            b,
            1.0,
            &w.d_img,
            Trans::Yes,
            feats.pooled,
            Trans::No,
            gv.take(ids.img_w)?,
            true,
        )?;
        add_col_sums(&w.d_img, e, gv.take(ids.img_b)?);
        Ok(PassStats {
            loss: st.loss,
            regulariser: 0.0,
            tokens: st.n_valid,
        })
    }

    fn start<'s>(&'s self, feats: &Features) -> Result<Box<dyn DecodeState + 's>, DecodeError> {
        self.check_features(feats)?;
        let (rows, e) = (feats.batch, self.cfg.embed);
        let mut st = MergeLstmState {
            m: self,
            rows,
            img: vec![0.0; rows * e],
            h: Vec::new(),
            c: Vec::new(),
            x: Vec::new(),
            merged: Vec::new(),
            act: Vec::new(),
            cache: LstmCache::new(),
        };
        if rows == 0 {
            return Ok(Box::new(st));
        }
        linear(
            rows,
            self.dims.feature_dim,
            e,
            feats.pooled,
            self.params.value(self.ids.img_w),
            self.params.value(self.ids.img_b),
            &mut st.img,
        )?;
        act::relu_inplace(&mut st.img);
        // The image step, from a zero state.
        let d = SeqDims {
            seq_len: 1,
            batch: rows,
            input: e,
            hidden: self.cfg.hidden,
        };
        lstm_forward(&d, &self.lstm_params(), &st.img, None, None, &mut st.cache)?;
        st.h.extend_from_slice(st.cache.h_last());
        st.c.extend_from_slice(st.cache.c_last());
        Ok(Box::new(st))
    }
}

/// Generation state: LSTM `h`, `c` and the image vector of every row (`[rows, H]`, `[rows, H]`,
/// `[rows, E]`).
struct MergeLstmState<'s> {
    m: &'s MergeLstm,
    rows: usize,
    img: Vec<f32>,
    h: Vec<f32>,
    c: Vec<f32>,
    x: Vec<f32>,
    merged: Vec<f32>,
    act: Vec<f32>,
    cache: LstmCache,
}

impl DecodeState for MergeLstmState<'_> {
    fn rows(&self) -> usize {
        self.rows
    }

    fn step(
        &mut self,
        tokens: &[u32],
        log_probs: &mut [f32],
        _attention: Option<&mut [f32]>,
    ) -> Result<(), DecodeError> {
        let m = self.m;
        let (rows, e, h, pj, v) = (
            self.rows,
            m.cfg.embed,
            m.cfg.hidden,
            m.cfg.proj,
            m.dims.vocab,
        );
        if tokens.len() != rows || log_probs.len() != rows * v {
            return Err(DecodeError::Shape(format!(
                "step over {rows} rows got {} tokens and {} log-prob slots (vocabulary {v})",
                tokens.len(),
                log_probs.len()
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= v) {
            return Err(DecodeError::Shape(format!(
                "token id {bad} is outside the vocabulary of {v}"
            )));
        }
        if rows == 0 {
            return Ok(());
        }
        let ps = &m.params;
        zeroed(&mut self.x, rows * e);
        embed(ps.value(m.ids.emb), e, tokens, &mut self.x);
        let d = SeqDims {
            seq_len: 1,
            batch: rows,
            input: e,
            hidden: h,
        };
        lstm_forward(
            &d,
            &m.lstm_params(),
            &self.x,
            Some(&self.h),
            Some(&self.c),
            &mut self.cache,
        )?;
        self.h.copy_from_slice(self.cache.h_last());
        self.c.copy_from_slice(self.cache.c_last());
        self.merged.clear();
        self.merged.extend_from_slice(&self.h);
        add_img(&mut self.merged, &self.img);
        zeroed(&mut self.act, rows * pj);
        linear(
            rows,
            h,
            pj,
            &self.merged,
            ps.value(m.ids.proj_w),
            ps.value(m.ids.proj_b),
            &mut self.act,
        )?;
        act::relu_inplace(&mut self.act);
        linear(
            rows,
            pj,
            v,
            &self.act,
            ps.value(m.ids.fc_w),
            ps.value(m.ids.fc_b),
            log_probs,
        )?;
        log_softmax_rows(log_probs, v);
        Ok(())
    }

    fn select(&mut self, rows: &[usize]) -> Result<(), DecodeError> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.rows) {
            return Err(DecodeError::Shape(format!(
                "select row {bad} of {}",
                self.rows
            )));
        }
        let (e, h) = (self.m.cfg.embed, self.m.cfg.hidden);
        self.img = crate::model::gather_rows(&self.img, e, rows);
        self.h = crate::model::gather_rows(&self.h, h, rows);
        self.c = crate::model::gather_rows(&self.c, h, rows);
        self.rows = rows.len();
        Ok(())
    }
}
