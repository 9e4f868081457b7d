//! `gru-init`: the image sets the initial state of a stack of GRUs (Hvass-Labs TensorFlow
//! tutorial #22, "Image Captioning").
//!
//! ```text
//! init   = tanh(Linear(F -> H)(pooled))            [B, H], the h0 of EVERY layer
//! x_0    = dropout(embedding(tokens))              [T, B, E]
//! x_k+1  = dropout(GRU_k(x_k, h0 = init))          [T, B, H]   (k = 0 .. layers-1)
//! logits = Linear(H -> V)(GRU_top output)          (fused with the loss: `linear_xent`)
//! ```
//!
//! Dropout (`dropout`, default 0 as in the tutorial) is applied to the embeddings and between
//! layers, not to the top layer's output. Parameter names follow a PyTorch module with
//! `init = nn.Linear`, `embedding = nn.Embedding`, `rnn = nn.GRU(num_layers=layers)`,
//! `fc = nn.Linear`.
//!
//! Training is the explicit engine: one GRU kernel call per layer over the whole sequence, the
//! backward through the layers in reverse, and the `h0` gradients of all layers summed before
//! the `tanh` backward.

use super::common::{dropout, embed, linear, time_major_into, zeroed};
use crate::config::ModelDims;
use crate::kernels::act;
use crate::kernels::add_col_sums;
use crate::kernels::gemm::{gemm, Trans};
use crate::kernels::gru::{
    gru_backward, gru_forward, GruCache, GruInputGrads, GruParamGrads, GruParams,
};
use crate::kernels::lstm::SeqDims;
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

/// Hyper-parameters of [`GruInit`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GruInitConfig {
    /// Word embedding size.
    pub embed: usize,
    /// GRU state size (every layer).
    pub hidden: usize,
    /// Stacked GRU layers, all starting from the image state.
    pub layers: usize,
    /// Dropout on the embeddings and between layers (0 = none, as in the seed).
    pub dropout: f32,
}

impl Default for GruInitConfig {
    fn default() -> Self {
        Self {
            embed: 128,
            hidden: 512,
            layers: 3,
            dropout: 0.0,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct LayerIds {
    w_ih: ParamId,
    w_hh: ParamId,
    b_ih: ParamId,
    b_hh: ParamId,
}

#[derive(Clone, Debug)]
struct Ids {
    init_w: ParamId,
    init_b: ParamId,
    emb: ParamId,
    layers: Vec<LayerIds>,
    fc_w: ParamId,
    fc_b: ParamId,
}

/// Buffers reused between training passes.
#[derive(Debug, Default)]
struct Work {
    /// Time-major input tokens and targets, `[T, B]`.
    tokens: Vec<u32>,
    targets: Vec<u32>,
    /// `init`, `[B, H]` (after the tanh).
    h0: Vec<f32>,
    /// Input of every layer (after dropout), `[T, B, I_k]`.
    xs: Vec<Vec<f32>>,
    /// Dropout multipliers of every layer's input (empty when dropout is off).
    masks: Vec<Vec<f32>>,
    /// One cache per layer.
    caches: Vec<GruCache>,
    /// Gradient on the current layer's output / input, swapped while going down the stack.
    d_out: Vec<f32>,
    d_in: Vec<f32>,
    /// `d h0` of one layer and the sum over layers.
    dh0: Vec<f32>,
    dh0_sum: Vec<f32>,
    ws: XentWorkspace,
}

/// The decoder.
pub struct GruInit {
    cfg: GruInitConfig,
    params: ParamSet,
    dims: ModelDims,
    ids: Ids,
    work: Work,
}

impl GruInit {
    /// A decoder with fresh parameters (PyTorch default initialisation, embeddings
    /// `U(-0.1, 0.1)`), deterministic in `seed`.
    pub fn new(cfg: &GruInitConfig, dims: ModelDims, seed: u64) -> Result<Self, DecodeError> {
        if cfg.embed == 0 || cfg.hidden == 0 || cfg.layers == 0 {
            return Err(DecodeError::Config(format!(
                "gru-init needs embed, hidden and layers > 0, got {cfg:?}"
            )));
        }
        if !(0.0..1.0).contains(&cfg.dropout) {
            return Err(DecodeError::Config(format!(
                "gru-init dropout must be in [0, 1), got {}",
                cfg.dropout
            )));
        }
        if dims.vocab == 0 || dims.feature_dim == 0 {
            return Err(DecodeError::Config(format!(
                "gru-init needs a vocabulary and features, got {dims:?}"
            )));
        }
        let (e, h, f, v) = (cfg.embed, cfg.hidden, dims.feature_dim, dims.vocab);
        let mut ps = ParamSet::new();
        let init_w = ps.add("init.weight", &[h, f])?;
        let init_b = ps.add("init.bias", &[h])?;
        let emb = ps.add("embedding.weight", &[v, e])?;
        let mut layers = Vec::with_capacity(cfg.layers);
        for k in 0..cfg.layers {
            let input = if k == 0 { e } else { h };
            layers.push(LayerIds {
                w_ih: ps.add(&format!("rnn.weight_ih_l{k}"), &[3 * h, input])?,
                w_hh: ps.add(&format!("rnn.weight_hh_l{k}"), &[3 * h, h])?,
                b_ih: ps.add(&format!("rnn.bias_ih_l{k}"), &[3 * h])?,
                b_hh: ps.add(&format!("rnn.bias_hh_l{k}"), &[3 * h])?,
            });
        }
        let fc_w = ps.add("fc.weight", &[v, h])?;
        let fc_b = ps.add("fc.bias", &[v])?;

        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let kf = 1.0 / (f as f32).sqrt();
        let kh = 1.0 / (h as f32).sqrt();
        ps.init_uniform(init_w, kf, &mut rng);
        ps.init_uniform(init_b, kf, &mut rng);
        ps.init_uniform(emb, 0.1, &mut rng);
        for l in &layers {
            for id in [l.w_ih, l.w_hh, l.b_ih, l.b_hh] {
                ps.init_uniform(id, kh, &mut rng);
            }
        }
        ps.init_uniform(fc_w, kh, &mut rng);
        ps.init_uniform(fc_b, kh, &mut rng);

        let ids = Ids {
            init_w,
            init_b,
            emb,
            layers,
            fc_w,
            fc_b,
        };
        let work = Work {
            xs: vec![Vec::new(); cfg.layers],
            masks: vec![Vec::new(); cfg.layers],
            caches: vec![GruCache::new(); cfg.layers],
            ..Work::default()
        };
        Ok(Self {
            cfg: cfg.clone(),
            params: ps,
            dims,
            ids,
            work,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &GruInitConfig {
        &self.cfg
    }

    fn check_features(&self, feats: &Features) -> Result<(), DecodeError> {
        feats.validate()?;
        if feats.dim != self.dims.feature_dim {
            return Err(DecodeError::Shape(format!(
                "gru-init was built for {}-dimensional features, got {}",
                self.dims.feature_dim, feats.dim
            )));
        }
        Ok(())
    }
}

impl Decoder for GruInit {
    fn kind(&self) -> &'static str {
        "gru-init"
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
        let (e, h, f, v, n_layers) = (
            cfg.embed,
            cfg.hidden,
            dims.feature_dim,
            dims.vocab,
            cfg.layers,
        );
        let (bh, tb) = (b * h, t_len * b);
        let p_drop = if opts.train { cfg.dropout } else { 0.0 };
        time_major_into(batch.inputs, b, t_len, &mut w.tokens);
        time_major_into(batch.targets, b, t_len, &mut w.targets);

        let (vals, mut gv) = params.split();

        // init = tanh(Linear(pooled)), shared by every layer.
        zeroed(&mut w.h0, bh);
        linear(
            b,
            f,
            h,
            feats.pooled,
            vals.get(ids.init_w),
            vals.get(ids.init_b),
            &mut w.h0,
        )?;
        act::tanh_inplace(&mut w.h0);

        // Layer inputs and the stack.
        let layer_dims = |k: usize| SeqDims {
            seq_len: t_len,
            batch: b,
            input: if k == 0 { e } else { h },
            hidden: h,
        };
        zeroed(&mut w.xs[0], tb * e);
        embed(vals.get(ids.emb), e, &w.tokens, &mut w.xs[0]);
        for k in 0..n_layers {
            if p_drop > 0.0 {
                dropout(&mut w.xs[k], &mut w.masks[k], p_drop, rng);
            } else {
                w.masks[k].clear();
            }
            let l = ids.layers[k];
            let p = GruParams {
                w_ih: vals.get(l.w_ih),
                w_hh: vals.get(l.w_hh),
                b_ih: vals.get(l.b_ih),
                b_hh: vals.get(l.b_hh),
            };
            gru_forward(&layer_dims(k), &p, &w.xs[k], Some(&w.h0), &mut w.caches[k])?;
            if k + 1 < n_layers {
                let next = &mut w.xs[k + 1];
                next.clear();
                next.extend_from_slice(w.caches[k].output());
            }
        }

        // Vocabulary projection fused with the loss.
        let top = &w.caches[n_layers - 1];
        let row_weights = batch.time_major_weights();
        let xdims = XentDims {
            rows: tb,
            dim: h,
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
                top.output(),
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
        zeroed(&mut w.d_out, tb * h);
        let st = linear_xent_weighted(
            &xdims,
            top.output(),
            fc_w,
            fc_b,
            &w.targets,
            row_weights.as_deref(),
            &xcfg,
            Some(XentGrads {
                x: &mut w.d_out,
                w: gv.take(ids.fc_w)?,
                b: gv.take(ids.fc_b)?,
            }),
            &mut w.ws,
        )?;

        // Backward down the stack; `d_out` holds the gradient on layer k's output.
        zeroed(&mut w.dh0_sum, bh);
        zeroed(&mut w.dh0, bh);
        for k in (0..n_layers).rev() {
            let d = layer_dims(k);
            let l = ids.layers[k];
            let p = GruParams {
                w_ih: vals.get(l.w_ih),
                w_hh: vals.get(l.w_hh),
                b_ih: vals.get(l.b_ih),
                b_hh: vals.get(l.b_hh),
            };
            let mut g = GruParamGrads {
                w_ih: gv.take(l.w_ih)?,
                w_hh: gv.take(l.w_hh)?,
                b_ih: gv.take(l.b_ih)?,
                b_hh: gv.take(l.b_hh)?,
            };
            zeroed(&mut w.d_in, tb * d.input);
            gru_backward(
                &d,
                &p,
                &w.xs[k],
                &mut w.caches[k],
                &w.d_out,
                None,
                &mut g,
                GruInputGrads {
                    x: Some(&mut w.d_in),
                    h0: Some(&mut w.dh0),
                },
            )?;
            for (s, x) in w.dh0_sum.iter_mut().zip(&w.dh0) {
                *s += x;
            }
            if !w.masks[k].is_empty() {
                for (x, m) in w.d_in.iter_mut().zip(&w.masks[k]) {
                    *x *= m;
                }
            }
            std::mem::swap(&mut w.d_out, &mut w.d_in);
        }
        // `d_out` is now the gradient on the (pre-dropout) embeddings.
        let d_emb = gv.take(ids.emb)?;
        for (src, &tok) in w.d_out.chunks_exact(e).zip(&w.tokens) {
            let t = tok as usize;
            for (a, x) in d_emb[t * e..(t + 1) * e].iter_mut().zip(src) {
                *a += x;
            }
        }
        // init = tanh(pre): d pre = d init * (1 - init^2).
        for (d, y) in w.dh0_sum.iter_mut().zip(&w.h0) {
            *d *= 1.0 - y * y;
        }
        gemm(
            h,
            f,
            b,
            1.0,
            &w.dh0_sum,
            Trans::Yes,
            feats.pooled,
            Trans::No,
            gv.take(ids.init_w)?,
            true,
        )?;
        add_col_sums(&w.dh0_sum, h, gv.take(ids.init_b)?);
        Ok(PassStats {
            loss: st.loss,
            regulariser: 0.0,
            tokens: st.n_valid,
        })
    }

    fn start<'s>(&'s self, feats: &Features) -> Result<Box<dyn DecodeState + 's>, DecodeError> {
        self.check_features(feats)?;
        let (rows, h) = (feats.batch, self.cfg.hidden);
        let mut init = vec![0.0; rows * h];
        linear(
            rows,
            self.dims.feature_dim,
            h,
            feats.pooled,
            self.params.value(self.ids.init_w),
            self.params.value(self.ids.init_b),
            &mut init,
        )?;
        act::tanh_inplace(&mut init);
        let mut state = Vec::with_capacity(self.cfg.layers * rows * h);
        for _ in 0..self.cfg.layers {
            state.extend_from_slice(&init);
        }
        Ok(Box::new(GruInitState {
            m: self,
            rows,
            h: state,
            x: Vec::new(),
            cache: GruCache::new(),
        }))
    }
}

/// Generation state: the hidden state of every layer for every row, `[layers, rows, H]`.
struct GruInitState<'s> {
    m: &'s GruInit,
    rows: usize,
    h: Vec<f32>,
    /// Embedded tokens of the current step, `[rows, E]`.
    x: Vec<f32>,
    cache: GruCache,
}

impl DecodeState for GruInitState<'_> {
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
        let (rows, e, h, v) = (self.rows, m.cfg.embed, m.cfg.hidden, m.dims.vocab);
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
        let rh = rows * h;
        for (k, l) in m.ids.layers.iter().enumerate() {
            let d = SeqDims {
                seq_len: 1,
                batch: rows,
                input: if k == 0 { e } else { h },
                hidden: h,
            };
            let p = GruParams {
                w_ih: ps.value(l.w_ih),
                w_hh: ps.value(l.w_hh),
                b_ih: ps.value(l.b_ih),
                b_hh: ps.value(l.b_hh),
            };
            let (below, here) = self.h.split_at_mut(k * rh);
            let here = &mut here[..rh];
            let input = if k == 0 {
                &self.x[..]
            } else {
                &below[(k - 1) * rh..]
            };
            gru_forward(&d, &p, input, Some(here), &mut self.cache)?;
            here.copy_from_slice(self.cache.h_last());
        }
        let top = &self.h[(m.cfg.layers - 1) * rh..];
        linear(
            rows,
            h,
            v,
            top,
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
        let h = self.m.cfg.hidden;
        let rh = self.rows * h;
        let mut out = Vec::with_capacity(self.m.cfg.layers * rows.len() * h);
        for layer in self.h.chunks_exact(rh.max(1)) {
            for &r in rows {
                out.extend_from_slice(&layer[r * h..(r + 1) * h]);
            }
        }
        self.h = out;
        self.rows = rows.len();
        Ok(())
    }
}
