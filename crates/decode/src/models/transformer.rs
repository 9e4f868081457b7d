//! Pre-LN Transformer decoder with cross-attention over the spatial grid.
//!
//! Memory: `LayerNorm(mem_proj(spatial) + mem_pos)` over the `P` grid cells. Tokens:
//! `embed(ids) * sqrt(d_model) + pos`, then `layers` blocks of pre-LN causal self-attention,
//! pre-LN cross-attention over the memory and a pre-LN ReLU feed-forward (the layout and the
//! parameter names of `torch.nn.TransformerDecoderLayer(norm_first=True)`), a final LayerNorm and
//! the vocabulary projection `fc`.
//!
//! Training runs through candle autograd: every pass builds candle tensors (`Var`s when gradients
//! are wanted) from the flat [`ParamSet`], and after `backward()` each parameter's gradient is
//! added into the set's gradient buffer, so the fused optimisers, checkpoints and bundles treat
//! this decoder like the others. Three small custom ops with hand-written backward keep the hot
//! pieces cheap: a linear layer on the crate's GEMM (with an input-gradient-free variant for the
//! projection of the fixed image features), LayerNorm and a last-dimension softmax (candle-nn's own
//! versions have no backward). The loss is the fused [`ops::linear_cross_entropy`].
//!
//! Dropout (inverted, masks drawn from the pass's `rng`) is applied to the embedded tokens, after
//! every sub-layer before its residual add, and after the feed-forward activation; attention
//! weights are not dropped. Generation feeds one token per step with a self-attention key/value
//! cache; the memory and the cross-attention keys/values of every layer are computed once in
//! [`Decoder::start`], and `select` gathers all of them.
//!
//! The graph can run in `f64` ([`Transformer::set_precision`]); the fused loss is `f32`-only, so
//! the `f64` graph uses a plain log-softmax loss. It exists for finite-difference tests.

use crate::config::ModelDims;
use crate::kernels::gemm::{gemm, Trans};
use crate::kernels::softmax_xent::XentConfig;
use crate::model::{
    log_softmax_rows, DecodeState, Decoder, Features, PassOptions, PassStats, TeacherBatch, PAD_ID,
};
use crate::ops;
use crate::params::{ParamId, ParamSet};
use crate::DecodeError;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp3, DType, Device, Error, Layout, Shape, Storage, StorageRef,
    Tensor, Var, WithDType, D,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Hyper-parameters of [`Transformer`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransformerConfig {
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Feed-forward width.
    pub ff: usize,
    /// Dropout.
    pub dropout: f32,
    /// Longest caption (positions), `<start>` included.
    pub max_len: usize,
}

impl Default for TransformerConfig {
    fn default() -> Self {
        Self {
            d_model: 512,
            heads: 8,
            layers: 3,
            ff: 2048,
            dropout: 0.1,
            max_len: 40,
        }
    }
}

const LN_EPS: f64 = 1e-5;

/// Weight and bias indices (into [`Transformer::ids`]) of a linear or norm layer.
#[derive(Clone, Copy, Debug)]
struct Lin {
    w: usize,
    b: usize,
}

#[derive(Clone, Copy, Debug)]
struct LayerIdx {
    sa_in: Lin,
    sa_out: Lin,
    ca_in: Lin,
    ca_out: Lin,
    ff1: Lin,
    ff2: Lin,
    n1: Lin,
    n2: Lin,
    n3: Lin,
}

#[derive(Clone, Debug)]
struct Index {
    embed: usize,
    pos: usize,
    mem_proj: Lin,
    mem_pos: usize,
    mem_norm: Lin,
    layers: Vec<LayerIdx>,
    norm: Lin,
    fc: Lin,
}

/// The decoder.
pub struct Transformer {
    cfg: TransformerConfig,
    params: ParamSet,
    ids: Vec<ParamId>,
    idx: Index,
    dims: ModelDims,
    dtype: DType,
}

/// Registers parameters and remembers their ids in order.
struct Builder<'a> {
    params: &'a mut ParamSet,
    ids: &'a mut Vec<ParamId>,
    rng: ChaCha8Rng,
}

impl Builder<'_> {
    fn add(&mut self, name: &str, shape: &[usize], bound: f32) -> Result<usize, DecodeError> {
        let id = self.params.add(name, shape)?;
        if bound > 0.0 {
            self.params.init_uniform(id, bound, &mut self.rng);
        }
        self.ids.push(id);
        Ok(self.ids.len() - 1)
    }

    fn fill(&mut self, i: usize, v: f32) {
        self.params.value_mut(self.ids[i]).fill(v);
    }

    /// `nn.Linear(fan_in, out)`: weight and bias `U(+-1/sqrt(fan_in))`.
    fn linear(&mut self, name: &str, out: usize, fan_in: usize) -> Result<Lin, DecodeError> {
        let bound = 1.0 / (fan_in as f32).sqrt();
        let w = self.add(&format!("{name}.weight"), &[out, fan_in], bound)?;
        let b = self.add(&format!("{name}.bias"), &[out], bound)?;
        Ok(Lin { w, b })
    }

    /// `nn.LayerNorm(d)`: weight 1, bias 0.
    fn norm(&mut self, name: &str, d: usize) -> Result<Lin, DecodeError> {
        let w = self.add(&format!("{name}.weight"), &[d], 0.0)?;
        self.fill(w, 1.0);
        let b = self.add(&format!("{name}.bias"), &[d], 0.0)?;
        Ok(Lin { w, b })
    }

    /// `nn.MultiheadAttention(d)`: in-projection Xavier-uniform with zero bias, out-projection
    /// weight like `nn.Linear`, zero bias.
    fn mha(&mut self, name: &str, d: usize) -> Result<(Lin, Lin), DecodeError> {
        let xavier = (6.0 / (4 * d) as f32).sqrt();
        let w = self.add(&format!("{name}.in_proj_weight"), &[3 * d, d], xavier)?;
        let b = self.add(&format!("{name}.in_proj_bias"), &[3 * d], 0.0)?;
        let ow = self.add(
            &format!("{name}.out_proj.weight"),
            &[d, d],
            1.0 / (d as f32).sqrt(),
        )?;
        let ob = self.add(&format!("{name}.out_proj.bias"), &[d], 0.0)?;
        Ok((Lin { w, b }, Lin { w: ow, b: ob }))
    }
}

impl Transformer {
    /// A decoder with fresh parameters (deterministic in `seed`).
    pub fn new(cfg: &TransformerConfig, dims: ModelDims, seed: u64) -> Result<Self, DecodeError> {
        let bad = |m: String| Err(DecodeError::Config(format!("transformer: {m}")));
        if cfg.d_model == 0 || cfg.heads == 0 || !cfg.d_model.is_multiple_of(cfg.heads) {
            return bad(format!(
                "d_model {} must be a positive multiple of heads {}",
                cfg.d_model, cfg.heads
            ));
        }
        if cfg.layers == 0 || cfg.ff == 0 || cfg.max_len == 0 {
            return bad(format!(
                "layers {}, ff {} and max_len {} must be positive",
                cfg.layers, cfg.ff, cfg.max_len
            ));
        }
        if !(0.0..1.0).contains(&cfg.dropout) {
            return bad(format!("dropout {} must be in [0, 1)", cfg.dropout));
        }
        if dims.cells == 0 || dims.feature_dim == 0 || dims.vocab == 0 {
            return bad(format!(
                "needs a spatial grid, features and a vocabulary (got {dims:?})"
            ));
        }
        let d = cfg.d_model;
        let mut params = ParamSet::new();
        let mut ids = Vec::new();
        let mut b = Builder {
            params: &mut params,
            ids: &mut ids,
            rng: ChaCha8Rng::seed_from_u64(seed),
        };
        let embed = b.add("embed.weight", &[dims.vocab, d], 0.1)?;
        let pos = b.add("pos.weight", &[cfg.max_len, d], 0.1)?;
        let mem_proj = b.linear("mem_proj", d, dims.feature_dim)?;
        let mem_pos = b.add("mem_pos.weight", &[dims.cells, d], 0.1)?;
        let mem_norm = b.norm("mem_norm", d)?;
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let (sa_in, sa_out) = b.mha(&format!("layers.{i}.self_attn"), d)?;
            let (ca_in, ca_out) = b.mha(&format!("layers.{i}.multihead_attn"), d)?;
            let ff1 = b.linear(&format!("layers.{i}.linear1"), cfg.ff, d)?;
            let ff2 = b.linear(&format!("layers.{i}.linear2"), d, cfg.ff)?;
            let n1 = b.norm(&format!("layers.{i}.norm1"), d)?;
            let n2 = b.norm(&format!("layers.{i}.norm2"), d)?;
            let n3 = b.norm(&format!("layers.{i}.norm3"), d)?;
            layers.push(LayerIdx {
                sa_in,
                sa_out,
                ca_in,
                ca_out,
                ff1,
                ff2,
                n1,
                n2,
                n3,
            });
        }
        let norm = b.norm("norm", d)?;
        let fc = b.linear("fc", dims.vocab, d)?;
        let idx = Index {
            embed,
            pos,
            mem_proj,
            mem_pos,
            mem_norm,
            layers,
            norm,
            fc,
        };
        Ok(Self {
            cfg: cfg.clone(),
            params,
            ids,
            idx,
            dims,
            dtype: DType::F32,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &TransformerConfig {
        &self.cfg
    }

    /// Runs the candle graph in `F32` (default, fused loss) or `F64` (plain loss; for
    /// finite-difference tests). Parameters and gradients stay `f32` either way.
    pub fn set_precision(&mut self, dtype: DType) -> Result<(), DecodeError> {
        match dtype {
            DType::F32 | DType::F64 => {
                self.dtype = dtype;
                Ok(())
            }
            other => Err(DecodeError::Config(format!(
                "transformer runs in F32 or F64, not {other:?}"
            ))),
        }
    }

    /// The loss of a pass without gradients, as computed (`f64` in the `F64` graph), for
    /// finite-difference tests; [`Decoder::forward`] reports it rounded to `f32`.
    pub fn loss_f64(
        &mut self,
        feats: &Features,
        batch: &TeacherBatch,
        opts: &PassOptions,
        rng: &mut ChaCha8Rng,
    ) -> Result<f64, DecodeError> {
        Ok(self.pass(feats, batch, opts, false, rng)?.1)
    }

    /// One teacher-forced pass: statistics and the unrounded loss.
    fn pass(
        &mut self,
        feats: &Features,
        batch: &TeacherBatch,
        opts: &PassOptions,
        grads: bool,
        rng: &mut ChaCha8Rng,
    ) -> Result<(PassStats, f64), DecodeError> {
        batch.validate(self.dims.vocab)?;
        let feats_t = self.check_feats(feats)?;
        if feats.batch != batch.batch {
            return Err(DecodeError::Shape(format!(
                "{} images for {} captions",
                feats.batch, batch.batch
            )));
        }
        if batch.time > self.cfg.max_len {
            return Err(DecodeError::Shape(format!(
                "captions of {} steps are longer than max_len {}",
                batch.time, self.cfg.max_len
            )));
        }
        if !(0.0..1.0).contains(&opts.label_smoothing) {
            return Err(DecodeError::Config(format!(
                "label smoothing {} must be in [0, 1)",
                opts.label_smoothing
            )));
        }
        if !(opts.temperature.is_finite() && opts.temperature > 0.0) {
            return Err(DecodeError::Config(format!(
                "softmax temperature {} must be finite and > 0",
                opts.temperature
            )));
        }
        let (b, t) = (batch.batch, batch.time);
        let valid = batch.valid_targets();
        let (net, vars) = self.net(grads)?;
        let mut dropout = (opts.train && self.cfg.dropout > 0.0).then_some(Dropout {
            p: self.cfg.dropout,
            rng,
        });
        let mem = net.memory(&feats_t, b)?;
        let kv = net.cross_kv(&mem, b)?;
        let (h, _) = net.decode(batch.inputs, b, t, &kv, &mut dropout)?;
        let row_weights = batch.row_major_weights();
        let (loss, loss_value) = if self.dtype == DType::F32 && row_weights.is_none() {
            let cfg = XentConfig {
                label_smoothing: opts.label_smoothing,
                temperature: opts.temperature,
                ignore_index: Some(PAD_ID),
                ..XentConfig::default()
            };
            let fc = self.idx.fc;
            let loss = ops::linear_cross_entropy(&h, net.t(fc.w), net.t(fc.b), batch.targets, cfg)?;
            let v = loss.to_scalar::<f32>()? as f64;
            (loss, v)
        } else if valid == 0 {
            (Tensor::zeros((), self.dtype, &Device::Cpu)?, 0.0f64)
        } else {
            // Weighted (policy-gradient) batches take the plain candle loss in either dtype: the
            // fused op has no per-row weights.
            let loss = net.plain_loss(&h, batch.targets, opts, valid, row_weights.as_deref())?;
            let v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            (loss, v)
        };
        if grads && valid > 0 {
            let store = loss.backward()?;
            for (i, var) in vars.iter().enumerate() {
                let Some(g) = store.get(var.as_tensor()) else {
                    continue;
                };
                let g = g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                let r = self.params.range(self.ids[i]);
                for (acc, v) in self.params.grads[r].iter_mut().zip(&g) {
                    *acc += v;
                }
            }
        }
        let stats = PassStats {
            loss: loss_value as f32,
            regulariser: 0.0,
            tokens: valid,
        };
        Ok((stats, loss_value))
    }

    /// Candle tensors of every parameter (and the `Var`s behind them when `vars`).
    fn net(&self, vars: bool) -> Result<(Net, Vec<Var>), DecodeError> {
        let dev = Device::Cpu;
        let mut p = Vec::with_capacity(self.ids.len());
        let mut vs = Vec::new();
        let shapes: Vec<&[usize]> = self.params.names().map(|(_, s)| s).collect();
        for (i, &id) in self.ids.iter().enumerate() {
            let t =
                Tensor::from_slice(self.params.value(id), shapes[i], &dev)?.to_dtype(self.dtype)?;
            if vars {
                let v = Var::from_tensor(&t)?;
                p.push(v.as_tensor().clone());
                vs.push(v);
            } else {
                p.push(t);
            }
        }
        Ok((
            Net {
                p,
                idx: self.idx.clone(),
                d: self.cfg.d_model,
                heads: self.cfg.heads,
                cells: self.dims.cells,
                dtype: self.dtype,
            },
            vs,
        ))
    }

    fn check_feats(&self, feats: &Features) -> Result<Tensor, DecodeError> {
        feats.validate()?;
        let spatial = feats.require_spatial("transformer")?;
        if feats.dim != self.dims.feature_dim || feats.cells != self.dims.cells {
            return Err(DecodeError::Shape(format!(
                "transformer built for {} cells of {} features, got {} of {}",
                self.dims.cells, self.dims.feature_dim, feats.cells, feats.dim
            )));
        }
        Ok(Tensor::from_slice(
            spatial,
            (feats.batch * feats.cells, feats.dim),
            &Device::Cpu,
        )?
        .to_dtype(self.dtype)?)
    }
}

/// Inverted dropout with masks drawn from the pass's rng.
struct Dropout<'r> {
    p: f32,
    rng: &'r mut ChaCha8Rng,
}

impl Dropout<'_> {
    fn apply(&mut self, x: &Tensor) -> Result<Tensor, DecodeError> {
        let n = x.elem_count();
        let keep = 1.0 / (1.0 - self.p);
        let p = self.p;
        let mask: Vec<f32> = (0..n)
            .map(|_| {
                if self.rng.random::<f32>() < p {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        Ok(x.mul(&mask)?)
    }
}

fn maybe_drop(x: Tensor, dropout: &mut Option<Dropout>) -> Result<Tensor, DecodeError> {
    match dropout {
        Some(d) => d.apply(&x),
        None => Ok(x),
    }
}

/// The model as candle tensors.
struct Net {
    p: Vec<Tensor>,
    idx: Index,
    d: usize,
    heads: usize,
    cells: usize,
    dtype: DType,
}

/// Cross-attention keys and values of one layer, `[B, H, P, dh]` each.
#[derive(Clone)]
struct Kv {
    k: Tensor,
    v: Tensor,
}

impl Net {
    fn t(&self, i: usize) -> &Tensor {
        &self.p[i]
    }

    fn linear(&self, x: &Tensor, l: Lin) -> candle_core::Result<Tensor> {
        linear(x, self.t(l.w), self.t(l.b))
    }

    fn norm(&self, x: &Tensor, l: Lin) -> candle_core::Result<Tensor> {
        layer_norm(x, self.t(l.w), self.t(l.b))
    }

    /// `[B*P, F]` features -> normalised memory `[B*P, d]`.
    fn memory(&self, feats: &Tensor, batch: usize) -> Result<Tensor, DecodeError> {
        let (d, p) = (self.d, self.cells);
        let m = linear_no_dx(
            feats,
            self.t(self.idx.mem_proj.w),
            self.t(self.idx.mem_proj.b),
        )?;
        let m = m
            .reshape((batch, p, d))?
            .broadcast_add(self.t(self.idx.mem_pos))?
            .reshape((batch * p, d))?;
        Ok(self.norm(&m, self.idx.mem_norm)?)
    }

    /// `[rows, d]` -> `[B, H, len, dh]` (rows = B * len).
    fn heads_of(&self, x: &Tensor, batch: usize, len: usize) -> candle_core::Result<Tensor> {
        let dh = self.d / self.heads;
        x.reshape((batch, len, self.heads, dh))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Keys and values of every layer's cross-attention over the memory.
    fn cross_kv(&self, mem: &Tensor, batch: usize) -> Result<Vec<Kv>, DecodeError> {
        let d = self.d;
        let mut out = Vec::with_capacity(self.idx.layers.len());
        for l in &self.idx.layers {
            let w = self.t(l.ca_in.w).narrow(0, d, 2 * d)?;
            let b = self.t(l.ca_in.b).narrow(0, d, 2 * d)?;
            let kv = linear(mem, &w, &b)?;
            let k = self.heads_of(&kv.narrow(1, 0, d)?, batch, self.cells)?;
            let v = self.heads_of(&kv.narrow(1, d, d)?, batch, self.cells)?;
            out.push(Kv { k, v });
        }
        Ok(out)
    }

    /// Scaled dot-product attention: `q` `[B,H,Tq,dh]`, `k`/`v` `[B,H,S,dh]`, optional additive
    /// `mask` `[Tq,S]`. Returns the output `[B*Tq, d]` and the weights `[B,H,Tq,S]`.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (batch, _, tq, dh) = q.dims4()?;
        let q = q.affine(1.0 / (dh as f64).sqrt(), 0.0)?;
        let mut s = q.matmul(&k.t()?)?;
        if let Some(m) = mask {
            s = s.broadcast_add(m)?;
        }
        let a = softmax(&s)?;
        let o = a
            .matmul(v)?
            .transpose(1, 2)?
            .reshape((batch * tq, self.d))?;
        Ok((o, a))
    }

    /// Runs the decoder over `ids` (`[B*T]`, row-major) and returns the final-normed hidden
    /// states `[B*T, d]` and the last layer's cross-attention weights `[B,H,T,P]`.
    fn decode(
        &self,
        ids: &[u32],
        batch: usize,
        time: usize,
        kv: &[Kv],
        dropout: &mut Option<Dropout>,
    ) -> Result<(Tensor, Tensor), DecodeError> {
        let (d, dev) = (self.d, Device::Cpu);
        let ids_t = Tensor::from_slice(ids, ids.len(), &dev)?;
        let x = self
            .t(self.idx.embed)
            .index_select(&ids_t, 0)?
            .affine((d as f64).sqrt(), 0.0)?
            .reshape((batch, time, d))?
            .broadcast_add(&self.t(self.idx.pos).narrow(0, 0, time)?)?
            .reshape((batch * time, d))?;
        let mut x = maybe_drop(x, dropout)?;
        let causal: Vec<f32> = (0..time * time)
            .map(|i| {
                if i % time > i / time {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let causal = Tensor::from_vec(causal, (time, time), &dev)?.to_dtype(self.dtype)?;
        let mut last_att = None;
        for (l, kv) in self.idx.layers.iter().zip(kv) {
            // Causal self-attention.
            let h = self.norm(&x, l.n1)?;
            let qkv = self.linear(&h, l.sa_in)?;
            let q = self.heads_of(&qkv.narrow(1, 0, d)?, batch, time)?;
            let k = self.heads_of(&qkv.narrow(1, d, d)?, batch, time)?;
            let v = self.heads_of(&qkv.narrow(1, 2 * d, d)?, batch, time)?;
            let (o, _) = self.attend(&q, &k, &v, Some(&causal))?;
            let o = maybe_drop(self.linear(&o, l.sa_out)?, dropout)?;
            x = (x + o)?;
            // Cross-attention over the memory.
            let h = self.norm(&x, l.n2)?;
            let wq = self.t(l.ca_in.w).narrow(0, 0, d)?;
            let bq = self.t(l.ca_in.b).narrow(0, 0, d)?;
            let q = self.heads_of(&linear(&h, &wq, &bq)?, batch, time)?;
            let (o, a) = self.attend(&q, &kv.k, &kv.v, None)?;
            last_att = Some(a);
            let o = maybe_drop(self.linear(&o, l.ca_out)?, dropout)?;
            x = (x + o)?;
            // Feed-forward.
            let h = self.norm(&x, l.n3)?;
            let f = maybe_drop(self.linear(&h, l.ff1)?.relu()?, dropout)?;
            let f = maybe_drop(self.linear(&f, l.ff2)?, dropout)?;
            x = (x + f)?;
        }
        let att =
            last_att.ok_or_else(|| DecodeError::Config("transformer has no layers".into()))?;
        Ok((self.norm(&x, self.idx.norm)?, att))
    }

    /// One generation step with cached self-attention keys/values: `tokens` (one per row) at
    /// position `pos`; `cache` holds each layer's keys/values of the earlier positions
    /// (`[rows, H, pos, dh]`, empty before the first step) and gets this step's appended.
    /// Returns the final-normed hidden state `[rows, d]` and the last layer's cross-attention
    /// weights `[rows, H, 1, P]`.
    fn step(
        &self,
        tokens: &[u32],
        pos: usize,
        kv: &[Kv],
        cache: &mut Vec<Kv>,
    ) -> Result<(Tensor, Tensor), DecodeError> {
        let (d, rows) = (self.d, tokens.len());
        let ids_t = Tensor::from_slice(tokens, rows, &Device::Cpu)?;
        let mut x = self
            .t(self.idx.embed)
            .index_select(&ids_t, 0)?
            .affine((d as f64).sqrt(), 0.0)?
            .broadcast_add(&self.t(self.idx.pos).narrow(0, pos, 1)?)?;
        let mut last_att = None;
        for (i, (l, kv)) in self.idx.layers.iter().zip(kv).enumerate() {
            let h = self.norm(&x, l.n1)?;
            let qkv = self.linear(&h, l.sa_in)?;
            let q = self.heads_of(&qkv.narrow(1, 0, d)?, rows, 1)?;
            let k = self.heads_of(&qkv.narrow(1, d, d)?, rows, 1)?;
            let v = self.heads_of(&qkv.narrow(1, 2 * d, d)?, rows, 1)?;
            let past = if let Some(c) = cache.get(i) {
                Kv {
                    k: Tensor::cat(&[&c.k, &k], 2)?,
                    v: Tensor::cat(&[&c.v, &v], 2)?,
                }
            } else {
                Kv { k, v }
            };
            let (o, _) = self.attend(&q, &past.k, &past.v, None)?;
            if i < cache.len() {
                cache[i] = past;
            } else {
                cache.push(past);
            }
            x = (x + self.linear(&o, l.sa_out)?)?;
            let h = self.norm(&x, l.n2)?;
            let wq = self.t(l.ca_in.w).narrow(0, 0, d)?;
            let bq = self.t(l.ca_in.b).narrow(0, 0, d)?;
            let q = self.heads_of(&linear(&h, &wq, &bq)?, rows, 1)?;
            let (o, a) = self.attend(&q, &kv.k, &kv.v, None)?;
            last_att = Some(a);
            x = (x + self.linear(&o, l.ca_out)?)?;
            let h = self.norm(&x, l.n3)?;
            let f = self.linear(&self.linear(&h, l.ff1)?.relu()?, l.ff2)?;
            x = (x + f)?;
        }
        let att =
            last_att.ok_or_else(|| DecodeError::Config("transformer has no layers".into()))?;
        Ok((self.norm(&x, self.idx.norm)?, att))
    }

    /// Mean cross-entropy over valid targets of `h @ fc.T + b` (plain candle ops, any dtype).
    fn plain_loss(
        &self,
        h: &Tensor,
        targets: &[u32],
        opts: &PassOptions,
        valid: usize,
        row_weights: Option<&[f32]>,
    ) -> Result<Tensor, DecodeError> {
        let mut logits = self.linear(h, self.idx.fc)?;
        if opts.temperature != 1.0 {
            logits = logits.affine(1.0 / opts.temperature as f64, 0.0)?;
        }
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let tg = Tensor::from_slice(targets, (targets.len(), 1), &Device::Cpu)?;
        let picked = logp.gather(&tg, 1)?.squeeze(1)?;
        let eps = opts.label_smoothing as f64;
        let mean_all = logp.mean(1)?;
        // -(1-eps) logp[y] - eps * mean_v logp[v]  (PyTorch's smoothing: eps/V on every class).
        let nll =
            ((picked.affine(1.0 - eps, 0.0)? + mean_all.affine(eps, 0.0)?)?.affine(-1.0, 0.0))?;
        let wts: Vec<f32> = targets
            .iter()
            .enumerate()
            .map(|(r, &t)| {
                if t == PAD_ID {
                    0.0
                } else {
                    row_weights.map_or(1.0, |rw| rw[r]) / valid as f32
                }
            })
            .collect();
        let wts = Tensor::from_vec(wts, targets.len(), &Device::Cpu)?.to_dtype(self.dtype)?;
        Ok((nll * wts)?.sum_all()?)
    }
}

impl Decoder for Transformer {
    fn kind(&self) -> &'static str {
        "transformer"
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
        Ok(self.pass(feats, batch, opts, grads, rng)?.0)
    }

    fn start<'s>(&'s self, feats: &Features) -> Result<Box<dyn DecodeState + 's>, DecodeError> {
        let feats_t = self.check_feats(feats)?;
        let (net, _) = self.net(false)?;
        let mem = net.memory(&feats_t, feats.batch)?;
        let kv = net.cross_kv(&mem, feats.batch)?;
        Ok(Box::new(State {
            net,
            kv,
            rows: feats.batch,
            len: 0,
            cache: Vec::new(),
            max_len: self.cfg.max_len,
            vocab: self.dims.vocab,
        }))
    }
}

/// Generation state: every row's token prefix and the per-layer cross-attention keys/values.
struct State {
    net: Net,
    kv: Vec<Kv>,
    rows: usize,
    /// Tokens fed so far.
    len: usize,
    /// Self-attention keys/values of the tokens fed so far, per layer.
    cache: Vec<Kv>,
    max_len: usize,
    vocab: usize,
}

impl DecodeState for State {
    fn rows(&self) -> usize {
        self.rows
    }

    fn step(
        &mut self,
        tokens: &[u32],
        log_probs: &mut [f32],
        attention: Option<&mut [f32]>,
    ) -> Result<(), DecodeError> {
        let (rows, v, p) = (self.rows, self.vocab, self.net.cells);
        if tokens.len() != rows || log_probs.len() != rows * v {
            return Err(DecodeError::Shape(format!(
                "step over {rows} rows: {} tokens, {} log-probs (vocab {v})",
                tokens.len(),
                log_probs.len()
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= v) {
            return Err(DecodeError::Shape(format!(
                "token id {bad} is outside the vocabulary of {v}"
            )));
        }
        if self.len >= self.max_len {
            return Err(DecodeError::Shape(format!(
                "caption longer than max_len {}",
                self.max_len
            )));
        }
        if let Some(a) = &attention {
            if a.len() != rows * p {
                return Err(DecodeError::Shape(format!(
                    "attention buffer of {} for {rows} rows of {p} cells",
                    a.len()
                )));
            }
        }
        if rows == 0 {
            self.len += 1;
            return Ok(());
        }
        let (h, att) = self.net.step(tokens, self.len, &self.kv, &mut self.cache)?;
        self.len += 1;
        let logits = self
            .net
            .linear(&h, self.net.idx.fc)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        log_probs.copy_from_slice(&logits);
        log_softmax_rows(log_probs, v);
        if let Some(a) = attention {
            let w = att
                .mean(1)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            a.copy_from_slice(&w);
        }
        Ok(())
    }

    fn select(&mut self, rows: &[usize]) -> Result<(), DecodeError> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.rows) {
            return Err(DecodeError::Shape(format!(
                "select row {bad} of {}",
                self.rows
            )));
        }
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let idx = Tensor::from_vec(idx, rows.len(), &Device::Cpu)?;
        for kv in self.kv.iter_mut().chain(self.cache.iter_mut()) {
            kv.k = kv.k.index_select(&idx, 0)?;
            kv.v = kv.v.index_select(&idx, 0)?;
        }
        self.rows = rows.len();
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Custom candle ops with backward.

/// `f32` (the crate's GEMM) or `f64` (a plain loop, tests only) matrix products.
trait Real: WithDType {
    /// `c = op(a) op(b)`, `op(a)` `[m, k]`, `op(b)` `[k, n]`, `c` `[m, n]` (overwritten).
    #[allow(clippy::too_many_arguments)]
    fn mm(
        m: usize,
        n: usize,
        k: usize,
        a: &[Self],
        ta: Trans,
        b: &[Self],
        tb: Trans,
        c: &mut [Self],
    ) -> candle_core::Result<()>;
}

impl Real for f32 {
    fn mm(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        ta: Trans,
        b: &[f32],
        tb: Trans,
        c: &mut [f32],
    ) -> candle_core::Result<()> {
        gemm(m, n, k, 1.0, a, ta, b, tb, c, false).map_err(Error::wrap)
    }
}

impl Real for f64 {
    fn mm(
        m: usize,
        n: usize,
        k: usize,
        a: &[f64],
        ta: Trans,
        b: &[f64],
        tb: Trans,
        c: &mut [f64],
    ) -> candle_core::Result<()> {
        if a.len() != m * k || b.len() != k * n || c.len() != m * n {
            return Err(Error::msg("mm: sizes do not fit"));
        }
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for l in 0..k {
                    let av = if ta == Trans::No {
                        a[i * k + l]
                    } else {
                        a[l * m + i]
                    };
                    let bv = if tb == Trans::No {
                        b[l * n + j]
                    } else {
                        b[j * k + l]
                    };
                    s += av * bv;
                }
                c[i * n + j] = s;
            }
        }
        Ok(())
    }
}

fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [T]> {
    let all = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&all[a..b]),
        None => Err(Error::RequiresContiguous { op: "transformer" }),
    }
}

/// A read guard on a tensor's CPU storage and its layout.
fn guard(t: &Tensor) -> candle_core::Result<(StorageRef<'_>, &Layout)> {
    let (st, l) = t.storage_and_layout();
    if !matches!(&*st, Storage::Cpu(_)) {
        return Err(Error::msg("transformer ops run on the CPU only"));
    }
    Ok((st, l))
}

fn cpu(st: &Storage) -> candle_core::Result<&CpuStorage> {
    match st {
        Storage::Cpu(c) => Ok(c),
        _ => Err(Error::msg("transformer ops run on the CPU only")),
    }
}

/// `y = x @ w.T + b` with `x` `[N, K]`, `w` `[M, K]`, `b` `[M]`.
struct LinearOp {
    need_dx: bool,
}

impl LinearOp {
    fn fwd<T: Real>(
        x: &[T],
        w: &[T],
        b: &[T],
        n: usize,
        k: usize,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let m = b.len();
        let mut y = vec![T::zero(); n * m];
        T::mm(n, m, k, x, Trans::No, w, Trans::Yes, &mut y)?;
        for row in y.chunks_exact_mut(m) {
            for (v, bb) in row.iter_mut().zip(b) {
                *v += *bb;
            }
        }
        Ok((T::to_cpu_storage_owned(y), Shape::from((n, m))))
    }

    fn bwd_t<T: Real>(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, k) = x.dims2()?;
        let m = w.dim(0)?;
        let grad = grad.contiguous()?;
        let (gs, gl) = guard(&grad)?;
        let (xs, xl) = guard(x)?;
        let (ws, wl) = guard(w)?;
        let g = slice::<T>(cpu(&gs)?, gl)?;
        let xv = slice::<T>(cpu(&xs)?, xl)?;
        let wv = slice::<T>(cpu(&ws)?, wl)?;
        let dev = x.device();
        let dx = if self.need_dx {
            let mut dx = vec![T::zero(); n * k];
            T::mm(n, k, m, g, Trans::No, wv, Trans::No, &mut dx)?;
            Some(Tensor::from_vec(dx, (n, k), dev)?)
        } else {
            None
        };
        let mut dw = vec![T::zero(); m * k];
        T::mm(m, k, n, g, Trans::Yes, xv, Trans::No, &mut dw)?;
        let mut db = vec![T::zero(); m];
        for row in g.chunks_exact(m) {
            for (acc, v) in db.iter_mut().zip(row) {
                *acc += *v;
            }
        }
        Ok((
            dx,
            Some(Tensor::from_vec(dw, w.shape(), dev)?),
            Some(Tensor::from_vec(db, b.shape(), dev)?),
        ))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "transformer-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, k) = l1.shape().dims2()?;
        match s1 {
            CpuStorage::F32(_) => {
                Self::fwd::<f32>(slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?, n, k)
            }
            CpuStorage::F64(_) => {
                Self::fwd::<f64>(slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?, n, k)
            }
            _ => Err(Error::msg("transformer-linear: F32 or F64 only")),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        match x.dtype() {
            DType::F32 => self.bwd_t::<f32>(x, w, b, grad),
            DType::F64 => self.bwd_t::<f64>(x, w, b, grad),
            other => Err(Error::msg(format!("transformer-linear: {other:?}"))),
        }
    }
}

fn check_linear(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<()> {
    let (_, k) = x.dims2()?;
    let (m, wk) = w.dims2()?;
    if wk != k || b.dims() != [m] {
        return Err(Error::msg(format!(
            "linear: x {:?}, w {:?}, b {:?} do not fit [N,K], [M,K], [M]",
            x.shape(),
            w.shape(),
            b.shape()
        )));
    }
    Ok(())
}

/// `x @ w.T + b`, differentiable in all three.
fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    check_linear(x, w, b)?;
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &b.contiguous()?,
        LinearOp { need_dx: true },
    )
}

/// `x @ w.T + b` without a gradient for `x` (the fixed image features).
fn linear_no_dx(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    check_linear(x, w, b)?;
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &b.contiguous()?,
        LinearOp { need_dx: false },
    )
}

/// LayerNorm over the last dimension of `[N, D]`.
struct LayerNormOp;

impl LayerNormOp {
    fn fwd<T: WithDType>(x: &[T], g: &[T], b: &[T]) -> Vec<T> {
        let d = g.len();
        let mut y = Vec::with_capacity(x.len());
        for row in x.chunks_exact(d) {
            let (mean, rstd) = moments(row);
            for ((v, gg), bb) in row.iter().zip(g).zip(b) {
                let xh = (v.to_f64() - mean) * rstd;
                y.push(T::from_f64(xh * gg.to_f64() + bb.to_f64()));
            }
        }
        y
    }

    fn bwd_t<T: WithDType>(
        x: &Tensor,
        g: &Tensor,
        b: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (gs, gl) = guard(&grad)?;
        let (xs, xl) = guard(x)?;
        let (ws, wl) = guard(g)?;
        let dy = slice::<T>(cpu(&gs)?, gl)?;
        let xv = slice::<T>(cpu(&xs)?, xl)?;
        let gamma = slice::<T>(cpu(&ws)?, wl)?;
        let d = gamma.len();
        let mut dx = Vec::with_capacity(xv.len());
        let mut dg = vec![0f64; d];
        let mut db = vec![0f64; d];
        let mut xh = vec![0f64; d];
        let mut gy = vec![0f64; d];
        for (row, dyr) in xv.chunks_exact(d).zip(dy.chunks_exact(d)) {
            let (mean, rstd) = moments(row);
            let (mut s1, mut s2) = (0f64, 0f64);
            for j in 0..d {
                xh[j] = (row[j].to_f64() - mean) * rstd;
                let dyj = dyr[j].to_f64();
                dg[j] += dyj * xh[j];
                db[j] += dyj;
                gy[j] = dyj * gamma[j].to_f64();
                s1 += gy[j];
                s2 += gy[j] * xh[j];
            }
            let (m1, m2) = (s1 / d as f64, s2 / d as f64);
            for j in 0..d {
                dx.push(T::from_f64(rstd * (gy[j] - m1 - xh[j] * m2)));
            }
        }
        let dev = x.device();
        let conv = |v: Vec<f64>| v.into_iter().map(T::from_f64).collect::<Vec<T>>();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(conv(dg), g.shape(), dev)?),
            Some(Tensor::from_vec(conv(db), b.shape(), dev)?),
        ))
    }
}

fn moments<T: WithDType>(row: &[T]) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let var = row
        .iter()
        .map(|v| {
            let c = v.to_f64() - mean;
            c * c
        })
        .sum::<f64>()
        / n;
    (mean, 1.0 / (var + LN_EPS).sqrt())
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "transformer-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = l1.shape().clone();
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(Self::fwd::<f32>(
                slice(s1, l1)?,
                slice(s2, l2)?,
                slice(s3, l3)?,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(Self::fwd::<f64>(
                slice(s1, l1)?,
                slice(s2, l2)?,
                slice(s3, l3)?,
            )),
            _ => return Err(Error::msg("transformer-layer-norm: F32 or F64 only")),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        g: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        match x.dtype() {
            DType::F32 => Self::bwd_t::<f32>(x, g, b, grad),
            DType::F64 => Self::bwd_t::<f64>(x, g, b, grad),
            other => Err(Error::msg(format!("transformer-layer-norm: {other:?}"))),
        }
    }
}

fn layer_norm(x: &Tensor, g: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let d = g.dim(0)?;
    if x.rank() != 2 || x.dim(1)? != d || b.dims() != [d] {
        return Err(Error::msg(format!(
            "layer_norm: x {:?}, gamma {:?}, beta {:?}",
            x.shape(),
            g.shape(),
            b.shape()
        )));
    }
    x.contiguous()?
        .apply_op3(&g.contiguous()?, &b.contiguous()?, LayerNormOp)
}

/// Softmax over the last dimension (rows may hold `-inf`, not all of a row).
struct SoftmaxOp;

impl SoftmaxOp {
    fn fwd<T: WithDType>(x: &[T], d: usize) -> Vec<T> {
        let mut y = Vec::with_capacity(x.len());
        for row in x.chunks_exact(d) {
            let m = row
                .iter()
                .map(|v| v.to_f64())
                .fold(f64::NEG_INFINITY, f64::max);
            let start = y.len();
            let mut s = 0f64;
            for v in row {
                let e = (v.to_f64() - m).exp();
                s += e;
                y.push(e);
            }
            for v in &mut y[start..] {
                *v /= s;
            }
        }
        y.into_iter().map(T::from_f64).collect()
    }
}

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "transformer-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = l.shape().clone();
        let d = shape.dims().last().copied().unwrap_or(1).max(1);
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(Self::fwd::<f32>(slice(s, l)?, d)),
            CpuStorage::F64(_) => CpuStorage::F64(Self::fwd::<f64>(slice(s, l)?, d)),
            _ => return Err(Error::msg("transformer-softmax: F32 or F64 only")),
        };
        Ok((out, shape))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let gy = grad.mul(y)?;
        let s = gy.sum_keepdim(D::Minus1)?;
        Ok(Some(gy.sub(&y.broadcast_mul(&s)?)?))
    }
}

fn softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(SoftmaxOp)
}
