//! The fused kernels as candle custom ops with backward, so decoders written with `candle_nn`
//! pieces (embeddings, linear layers, attention) get gradients through `Tensor::backward()`.
//!
//! candle's custom ops take at most three tensors, which shapes the signatures: the recurrent
//! ops take the input projection of all steps (`x_proj`, one candle matmul over `[T*B, I]`, whose
//! backward candle already does well), the recurrent weight, and the stacked initial state. The
//! loss op holds the targets itself and computes its gradient during the forward pass (training
//! always needs it, and it is what lets the logits be dropped chunk by chunk); `bwd` only scales.
//!
//! All tensors are `f32` on the CPU; sequences are time-major `[T, B, ...]`.

use crate::kernels::gru::{
    gru_recurrent_backward, gru_recurrent_forward, GruCache, GruRecurrentGrads,
};
use crate::kernels::lstm::{
    lstm_recurrent_backward, lstm_recurrent_forward, LstmCache, LstmStateGrads, SeqDims,
};
use crate::kernels::softmax_xent::{linear_xent, XentConfig, XentDims, XentGrads, XentWorkspace};
use candle_core::{CpuStorage, CustomOp3, Error, Layout, Result, Shape, Tensor};
use std::sync::Mutex;

/// The contiguous `f32` data a layout addresses.
fn data<'a>(s: &'a CpuStorage, l: &Layout, op: &'static str) -> Result<&'a [f32]> {
    let all = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&all[a..b]),
        None => Err(Error::RequiresContiguous { op }),
    }
}

fn dims3(t: &Tensor, what: &str) -> Result<(usize, usize, usize)> {
    t.dims3().map_err(|_| {
        Error::msg(format!(
            "{what}: expected a rank-3 tensor, got {:?}",
            t.shape()
        ))
    })
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| Error::msg("fused op cache poisoned by an earlier panic"))
}

struct LstmOp {
    dims: SeqDims,
    cache: Mutex<LstmCache>,
}

impl CustomOp3 for LstmOp {
    fn name(&self) -> &'static str {
        "fused-lstm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = self.dims;
        let (x_proj, w_hh, state) = (
            data(s1, l1, "lstm")?,
            data(s2, l2, "lstm")?,
            data(s3, l3, "lstm")?,
        );
        let bh = d.batch * d.hidden;
        let mut cache = lock(&self.cache)?;
        lstm_recurrent_forward(
            &d,
            w_hh,
            x_proj,
            Some(&state[..bh]),
            Some(&state[bh..]),
            &mut cache,
        )
        .map_err(Error::wrap)?;
        let out = cache.output().to_vec();
        Ok((
            CpuStorage::F32(out),
            Shape::from((d.seq_len, d.batch, d.hidden)),
        ))
    }

    fn bwd(
        &self,
        x_proj: &Tensor,
        w_hh: &Tensor,
        state: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = self.dims;
        let d_out = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let w = w_hh.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let bh = d.batch * d.hidden;
        let mut dw_hh = vec![0f32; w.len()];
        let mut d_state = vec![0f32; 2 * bh];
        let (dh0, dc0) = d_state.split_at_mut(bh);
        let mut cache = lock(&self.cache)?;
        let states = LstmStateGrads {
            d_h_last: None,
            d_c_last: None,
            dh0: Some(dh0),
            dc0: Some(dc0),
        };
        let d_proj = lstm_recurrent_backward(&d, &w, &mut cache, &d_out, states, &mut dw_hh)
            .map_err(Error::wrap)?;
        let dev = x_proj.device();
        Ok((
            Some(Tensor::from_slice(d_proj, x_proj.shape(), dev)?),
            Some(Tensor::from_vec(dw_hh, w_hh.shape(), dev)?),
            Some(Tensor::from_vec(d_state, state.shape(), dev)?),
        ))
    }
}

/// Fused LSTM recurrence: `x_proj` `[T, B, 4H]` is `x W_ih^T + b_ih + b_hh` for all steps
/// (gate order `i, f, g, o` as in `torch.nn.LSTM`), `w_hh` `[4H, H]`, `h0`/`c0` `[B, H]`.
/// Returns the hidden states `[T, B, H]`; differentiable w.r.t. all four inputs.
pub fn lstm(x_proj: &Tensor, w_hh: &Tensor, h0: &Tensor, c0: &Tensor) -> Result<Tensor> {
    let (seq_len, batch, g) = dims3(x_proj, "lstm x_proj")?;
    if g % 4 != 0
        || w_hh.dims() != [g, g / 4]
        || h0.dims() != [batch, g / 4]
        || c0.dims() != [batch, g / 4]
    {
        return Err(Error::msg(format!(
            "lstm: x_proj {:?}, w_hh {:?}, h0 {:?}, c0 {:?} do not fit [T,B,4H], [4H,H], [B,H], [B,H]",
            x_proj.shape(), w_hh.shape(), h0.shape(), c0.shape()
        )));
    }
    let hidden = g / 4;
    let op = LstmOp {
        dims: SeqDims {
            seq_len,
            batch,
            input: hidden,
            hidden,
        },
        cache: Mutex::new(LstmCache::new()),
    };
    let state = Tensor::stack(&[h0, c0], 0)?;
    x_proj
        .contiguous()?
        .apply_op3(&w_hh.contiguous()?, &state, op)
}

struct GruOp {
    dims: SeqDims,
    cache: Mutex<GruCache>,
}

/// Splits `[3H, H+1]` rows (recurrent weight with its bias as the last column) back apart.
fn split_aug(w_aug: &[f32], hidden: usize) -> (Vec<f32>, Vec<f32>) {
    let mut w = Vec::with_capacity(3 * hidden * hidden);
    let mut b = Vec::with_capacity(3 * hidden);
    for row in w_aug.chunks_exact(hidden + 1) {
        w.extend_from_slice(&row[..hidden]);
        b.push(row[hidden]);
    }
    (w, b)
}

impl CustomOp3 for GruOp {
    fn name(&self) -> &'static str {
        "fused-gru"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = self.dims;
        let (x_proj, w_aug, h0) = (
            data(s1, l1, "gru")?,
            data(s2, l2, "gru")?,
            data(s3, l3, "gru")?,
        );
        let (w_hh, b_hh) = split_aug(w_aug, d.hidden);
        let mut cache = lock(&self.cache)?;
        gru_recurrent_forward(&d, &w_hh, &b_hh, x_proj, Some(h0), &mut cache)
            .map_err(Error::wrap)?;
        let out = cache.output().to_vec();
        Ok((
            CpuStorage::F32(out),
            Shape::from((d.seq_len, d.batch, d.hidden)),
        ))
    }

    fn bwd(
        &self,
        x_proj: &Tensor,
        w_aug: &Tensor,
        h0: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = self.dims;
        let h = d.hidden;
        let d_out = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let (w_hh, _) = split_aug(&w_aug.contiguous()?.flatten_all()?.to_vec1::<f32>()?, h);
        let (mut dw, mut db) = (vec![0f32; 3 * h * h], vec![0f32; 3 * h]);
        let mut dh0 = vec![0f32; d.batch * h];
        let mut cache = lock(&self.cache)?;
        let grads = GruRecurrentGrads {
            w_hh: &mut dw,
            b_hh: &mut db,
            h0: Some(&mut dh0),
        };
        let d_proj = gru_recurrent_backward(&d, &w_hh, &mut cache, &d_out, None, grads)
            .map_err(Error::wrap)?;
        let mut d_aug = Vec::with_capacity(3 * h * (h + 1));
        for (row, bias) in dw.chunks_exact(h).zip(&db) {
            d_aug.extend_from_slice(row);
            d_aug.push(*bias);
        }
        let dev = x_proj.device();
        Ok((
            Some(Tensor::from_slice(d_proj, x_proj.shape(), dev)?),
            Some(Tensor::from_vec(d_aug, w_aug.shape(), dev)?),
            Some(Tensor::from_vec(dh0, h0.shape(), dev)?),
        ))
    }
}

/// Fused GRU recurrence (PyTorch convention, gates `r, z, n`): `x_proj` `[T, B, 3H]` is
/// `x W_ih^T + b_ih` for all steps, `w_hh` `[3H, H]`, `b_hh` `[3H]`, `h0` `[B, H]`. Returns the
/// hidden states `[T, B, H]`; differentiable w.r.t. all four inputs.
pub fn gru(x_proj: &Tensor, w_hh: &Tensor, b_hh: &Tensor, h0: &Tensor) -> Result<Tensor> {
    let (seq_len, batch, g) = dims3(x_proj, "gru x_proj")?;
    if g % 3 != 0 || w_hh.dims() != [g, g / 3] || b_hh.dims() != [g] || h0.dims() != [batch, g / 3]
    {
        return Err(Error::msg(format!(
            "gru: x_proj {:?}, w_hh {:?}, b_hh {:?}, h0 {:?} do not fit [T,B,3H], [3H,H], [3H], [B,H]",
            x_proj.shape(), w_hh.shape(), b_hh.shape(), h0.shape()
        )));
    }
    let hidden = g / 3;
    let op = GruOp {
        dims: SeqDims {
            seq_len,
            batch,
            input: hidden,
            hidden,
        },
        cache: Mutex::new(GruCache::new()),
    };
    // Three-input limit: carry b_hh as an extra column of w_hh; `cat`'s backward splits it again.
    let w_aug = Tensor::cat(&[w_hh, &b_hh.unsqueeze(1)?], 1)?;
    x_proj
        .contiguous()?
        .apply_op3(&w_aug, &h0.contiguous()?, op)
}

type XentSaved = Option<(Vec<f32>, Vec<f32>, Vec<f32>)>;

struct XentOp {
    dims: XentDims,
    targets: Vec<u32>,
    cfg: XentConfig,
    with_grad: bool,
    grads: Mutex<XentSaved>,
}

impl CustomOp3 for XentOp {
    fn name(&self) -> &'static str {
        "fused-linear-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (
            data(s1, l1, "xent")?,
            data(s2, l2, "xent")?,
            data(s3, l3, "xent")?,
        );
        let XentDims { rows, dim, vocab } = self.dims;
        let mut ws = XentWorkspace::new();
        let stats = if self.with_grad {
            let (mut dx, mut dw, mut db) = (
                vec![0f32; rows * dim],
                vec![0f32; vocab * dim],
                vec![0f32; vocab],
            );
            let g = XentGrads {
                x: &mut dx,
                w: &mut dw,
                b: &mut db,
            };
            let st = linear_xent(
                &self.dims,
                x,
                w,
                b,
                &self.targets,
                &self.cfg,
                Some(g),
                &mut ws,
            )
            .map_err(Error::wrap)?;
            *lock(&self.grads)? = Some((dx, dw, db));
            st
        } else {
            linear_xent(&self.dims, x, w, b, &self.targets, &self.cfg, None, &mut ws)
                .map_err(Error::wrap)?
        };
        Ok((CpuStorage::F32(vec![stats.loss]), Shape::from(())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let scale = grad.to_scalar::<f32>()?;
        let Some((mut dx, mut dw, mut db)) = lock(&self.grads)?.take() else {
            return Err(Error::msg(
                "fused cross-entropy: backward called twice or without gradients",
            ));
        };
        if scale != 1.0 {
            for v in dx.iter_mut().chain(dw.iter_mut()).chain(db.iter_mut()) {
                *v *= scale;
            }
        }
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, w.shape(), dev)?),
            Some(Tensor::from_vec(db, b.shape(), dev)?),
        ))
    }
}

/// Fused `cross_entropy(x @ w.T + b, targets)` with PyTorch semantics (mean over rows whose target
/// is not `cfg.ignore_index`, optional label smoothing): `x` `[N, D]`, `w` `[V, D]`, `b` `[V]`,
/// `targets` `N` ids. Returns a scalar. Gradients are computed in the forward pass when any input
/// tracks gradients, so the `[N, V]` logits are never stored.
pub fn linear_cross_entropy(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    targets: &[u32],
    cfg: XentConfig,
) -> Result<Tensor> {
    let (rows, dim) = x.dims2()?;
    let (vocab, wd) = w.dims2()?;
    if wd != dim || b.dims() != [vocab] || targets.len() != rows {
        return Err(Error::msg(format!(
            "linear_cross_entropy: x {:?}, w {:?}, b {:?}, {} targets do not fit [N,D], [V,D], [V], N",
            x.shape(), w.shape(), b.shape(), targets.len()
        )));
    }
    let op = XentOp {
        dims: XentDims { rows, dim, vocab },
        targets: targets.to_vec(),
        cfg,
        with_grad: x.track_op() || w.track_op() || b.track_op(),
        grads: Mutex::new(None),
    };
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, op)
}
