//! Fused optimisers over one flat parameter buffer (PyTorch semantics), and gradient clipping.
//!
//! Candle's optimisers issue several tensor ops per parameter tensor per step (~250 ms per step
//! for the issue-5 LSTM decoder); here each step is one pass over memory, split across threads.
//! All parameters of a model live in one `Vec<f32>` (and their gradients in another of the same
//! length), so "all tensors" is one slice.

use crate::kernels::act::multiversion;
use crate::kernels::{check_len, KernelError};
use rayon::prelude::*;

/// Elements per parallel task: large enough that scheduling is noise, small enough to balance.
const CHUNK: usize = 1 << 15;

/// A first-order optimiser over flat `f32` parameter and gradient buffers.
pub trait Optimizer {
    /// Applies one update to `params` from `grads` (same length as at construction).
    fn step(&mut self, params: &mut [f32], grads: &[f32]) -> Result<(), KernelError>;
    /// Current learning rate.
    fn lr(&self) -> f32;
    /// Changes the learning rate (schedules).
    fn set_lr(&mut self, lr: f32);
    /// A copy of the state (moment buffers, step count), for checkpoints.
    fn state(&self) -> OptimizerState;
    /// Restores a state taken by [`Optimizer::state`] from an optimiser of the same kind and size.
    fn load_state(&mut self, state: OptimizerState) -> Result<(), KernelError>;
}

/// An optimiser's state: named buffers the size of the parameters, and the steps taken.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerState {
    /// Steps taken.
    pub step: u32,
    /// Named state buffers (`exp_avg`, `exp_avg_sq`, `square_avg`...); disabled ones are empty.
    pub buffers: Vec<(String, Vec<f32>)>,
}

impl OptimizerState {
    fn restore(&mut self, name: &str, into: &mut Vec<f32>) -> Result<(), KernelError> {
        let pos = self
            .buffers
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| KernelError::Invalid(format!("optimizer state has no `{name}`")))?;
        let (_, buf) = self.buffers.swap_remove(pos);
        if buf.len() != into.len() {
            return Err(KernelError::Invalid(format!(
                "optimizer state `{name}` has {} values, the optimizer {}",
                buf.len(),
                into.len()
            )));
        }
        *into = buf;
        Ok(())
    }
}

/// Hyper-parameters of [`Adam`] (`torch.optim.Adam` / `AdamW`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to the bias-corrected `sqrt(v)`.
    pub eps: f32,
    /// L2 penalty (Adam: added to the gradient; AdamW: decoupled, `p *= 1 - lr*wd`).
    pub weight_decay: f32,
    /// `true` for AdamW's decoupled weight decay.
    pub decoupled: bool,
}

impl AdamConfig {
    /// `torch.optim.Adam` defaults with learning rate `lr`.
    pub fn adam(lr: f32) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }

    /// `torch.optim.AdamW` defaults (`weight_decay = 0.01`) with learning rate `lr`.
    pub fn adamw(lr: f32) -> Self {
        Self {
            weight_decay: 0.01,
            decoupled: true,
            ..Self::adam(lr)
        }
    }
}

/// Adam / AdamW with state for one flat buffer.
#[derive(Clone, Debug)]
pub struct Adam {
    /// Hyper-parameters; `lr` may be changed between steps.
    pub cfg: AdamConfig,
    m: Vec<f32>,
    v: Vec<f32>,
    step: u32,
}

impl Adam {
    /// State for `n` parameters.
    pub fn new(n: usize, cfg: AdamConfig) -> Self {
        Self {
            cfg,
            m: vec![0.0; n],
            v: vec![0.0; n],
            step: 0,
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u32 {
        self.step
    }
}

#[derive(Clone, Copy)]
struct AdamScalars {
    lr: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    wd: f32,
    decoupled: bool,
    step_size: f32,
    inv_bc2_sqrt: f32,
}

multiversion! {
    fn adam_chunk(k: &AdamScalars, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let decay = if k.decoupled { 1.0 - k.lr * k.wd } else { 1.0 };
        let l2 = if k.decoupled { 0.0 } else { k.wd };
        for i in 0..p.len() {
            let pv = p[i] * decay;
            let gv = g[i] + l2 * p[i];
            let mv = m[i] + (1.0 - k.b1) * (gv - m[i]);
            let vv = k.b2 * v[i] + (1.0 - k.b2) * gv * gv;
            m[i] = mv;
            v[i] = vv;
            p[i] = pv - k.step_size * mv / (vv.sqrt() * k.inv_bc2_sqrt + k.eps);
        }
    }
}

impl Optimizer for Adam {
    fn step(&mut self, params: &mut [f32], grads: &[f32]) -> Result<(), KernelError> {
        check_len("adam params", params.len(), self.m.len())?;
        check_len("adam grads", grads.len(), self.m.len())?;
        self.step += 1;
        let c = self.cfg;
        let t = self.step as i32;
        let k = AdamScalars {
            lr: c.lr,
            b1: c.beta1,
            b2: c.beta2,
            eps: c.eps,
            wd: c.weight_decay,
            decoupled: c.decoupled,
            step_size: c.lr / (1.0 - c.beta1.powi(t)),
            inv_bc2_sqrt: 1.0 / (1.0 - c.beta2.powi(t)).sqrt(),
        };
        params
            .par_chunks_mut(CHUNK)
            .zip(grads.par_chunks(CHUNK))
            .zip(
                self.m
                    .par_chunks_mut(CHUNK)
                    .zip(self.v.par_chunks_mut(CHUNK)),
            )
            .for_each(|((p, g), (m, v))| adam_chunk(&k, p, g, m, v));
        Ok(())
    }

    fn lr(&self) -> f32 {
        self.cfg.lr
    }

    fn set_lr(&mut self, lr: f32) {
        self.cfg.lr = lr;
    }

    fn state(&self) -> OptimizerState {
        OptimizerState {
            step: self.step,
            buffers: vec![
                ("exp_avg".into(), self.m.clone()),
                ("exp_avg_sq".into(), self.v.clone()),
            ],
        }
    }

    fn load_state(&mut self, mut state: OptimizerState) -> Result<(), KernelError> {
        state.restore("exp_avg", &mut self.m)?;
        state.restore("exp_avg_sq", &mut self.v)?;
        self.step = state.step;
        Ok(())
    }
}

/// Hyper-parameters of [`RmsProp`] (`torch.optim.RMSprop`: `eps` is added *outside* the square
/// root, `alpha` is the smoothing constant; Keras puts `eps` inside and calls `alpha` `rho`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RmsPropConfig {
    /// Learning rate.
    pub lr: f32,
    /// Smoothing constant of the squared-gradient average.
    pub alpha: f32,
    /// Added to `sqrt(avg)`.
    pub eps: f32,
    /// L2 penalty added to the gradient.
    pub weight_decay: f32,
    /// Momentum factor (0 disables the buffer).
    pub momentum: f32,
    /// Normalise by the centred second moment (an estimate of the variance).
    pub centered: bool,
}

impl RmsPropConfig {
    /// `torch.optim.RMSprop` defaults (`alpha = 0.99`, `eps = 1e-8`) with learning rate `lr`.
    pub fn new(lr: f32) -> Self {
        Self {
            lr,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
        }
    }
}

/// RMSprop with state for one flat buffer.
#[derive(Clone, Debug)]
pub struct RmsProp {
    /// Hyper-parameters; `lr` may be changed between steps.
    pub cfg: RmsPropConfig,
    square_avg: Vec<f32>,
    grad_avg: Vec<f32>,
    momentum_buf: Vec<f32>,
}

impl RmsProp {
    /// State for `n` parameters.
    pub fn new(n: usize, cfg: RmsPropConfig) -> Self {
        let opt = |on: bool| if on { vec![0.0; n] } else { Vec::new() };
        Self {
            cfg,
            square_avg: vec![0.0; n],
            grad_avg: opt(cfg.centered),
            momentum_buf: opt(cfg.momentum > 0.0),
        }
    }
}

multiversion! {
    fn rmsprop_chunk(c: &RmsPropConfig, p: &mut [f32], g: &[f32], sq: &mut [f32], ga: &mut [f32], mb: &mut [f32]) {
        let centered = !ga.is_empty();
        let momentum = !mb.is_empty();
        for i in 0..p.len() {
            let gv = g[i] + c.weight_decay * p[i];
            let s = c.alpha * sq[i] + (1.0 - c.alpha) * gv * gv;
            sq[i] = s;
            let var = if centered {
                let a = ga[i] + (1.0 - c.alpha) * (gv - ga[i]);
                ga[i] = a;
                s - a * a
            } else {
                s
            };
            let upd = gv / (var.sqrt() + c.eps);
            if momentum {
                let bv = c.momentum * mb[i] + upd;
                mb[i] = bv;
                p[i] -= c.lr * bv;
            } else {
                p[i] -= c.lr * upd;
            }
        }
    }
}

impl Optimizer for RmsProp {
    fn step(&mut self, params: &mut [f32], grads: &[f32]) -> Result<(), KernelError> {
        let n = self.square_avg.len();
        check_len("rmsprop params", params.len(), n)?;
        check_len("rmsprop grads", grads.len(), n)?;
        let c = self.cfg;
        let ga = split_optional(&mut self.grad_avg, n);
        let mb = split_optional(&mut self.momentum_buf, n);
        params
            .par_chunks_mut(CHUNK)
            .zip(grads.par_chunks(CHUNK))
            .zip(self.square_avg.par_chunks_mut(CHUNK))
            .zip(ga.into_par_iter().zip(mb.into_par_iter()))
            .for_each(|(((p, g), sq), (ga, mb))| rmsprop_chunk(&c, p, g, sq, ga, mb));
        Ok(())
    }

    fn lr(&self) -> f32 {
        self.cfg.lr
    }

    fn set_lr(&mut self, lr: f32) {
        self.cfg.lr = lr;
    }

    fn state(&self) -> OptimizerState {
        OptimizerState {
            step: 0,
            buffers: vec![
                ("square_avg".into(), self.square_avg.clone()),
                ("grad_avg".into(), self.grad_avg.clone()),
                ("momentum_buffer".into(), self.momentum_buf.clone()),
            ],
        }
    }

    fn load_state(&mut self, mut state: OptimizerState) -> Result<(), KernelError> {
        state.restore("square_avg", &mut self.square_avg)?;
        state.restore("grad_avg", &mut self.grad_avg)?;
        state.restore("momentum_buffer", &mut self.momentum_buf)
    }
}

/// Optional state buffers are empty when disabled; every task then gets an empty slice.
fn split_optional(v: &mut [f32], n: usize) -> Vec<&mut [f32]> {
    if v.is_empty() {
        (0..n.div_ceil(CHUNK)).map(|_| &mut [][..]).collect()
    } else {
        v.chunks_mut(CHUNK).collect()
    }
}

/// `torch.nn.utils.clip_grad_norm_`: scales `grads` so their global L2 norm is at most
/// `max_norm`; returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    // Chunk sums are added in a fixed order (rayon's own reduction tree depends on work
    // stealing), so the norm, and a resumed run, is bit-identical from run to run.
    let partial: Vec<f64> = grads
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|&g| (g as f64) * (g as f64)).sum::<f64>())
        .collect();
    let sq: f64 = partial.iter().sum();
    let norm = sq.sqrt() as f32;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        grads
            .par_chunks_mut(CHUNK)
            .for_each(|c| c.iter_mut().for_each(|g| *g *= coef));
    }
    norm
}

/// Reference Adam/AdamW step in `f64`, element by element from the PyTorch docs' pseudo-code.
pub fn adam_step_ref(
    cfg: &AdamConfig,
    t: u32,
    p: &mut [f64],
    g: &[f64],
    m: &mut [f64],
    v: &mut [f64],
) {
    let (b1, b2, lr, wd) = (
        cfg.beta1 as f64,
        cfg.beta2 as f64,
        cfg.lr as f64,
        cfg.weight_decay as f64,
    );
    for i in 0..p.len() {
        let mut gv = g[i];
        if cfg.decoupled {
            p[i] *= 1.0 - lr * wd;
        } else {
            gv += wd * p[i];
        }
        m[i] = b1 * m[i] + (1.0 - b1) * gv;
        v[i] = b2 * v[i] + (1.0 - b2) * gv * gv;
        let mh = m[i] / (1.0 - b1.powi(t as i32));
        let vh = v[i] / (1.0 - b2.powi(t as i32));
        p[i] -= lr * mh / (vh.sqrt() + cfg.eps as f64);
    }
}

/// Reference RMSprop step in `f64` from the PyTorch docs' pseudo-code; `ga`/`mb` are ignored
/// unless centred/momentum are on.
pub fn rmsprop_step_ref(
    c: &RmsPropConfig,
    p: &mut [f64],
    g: &[f64],
    sq: &mut [f64],
    ga: &mut [f64],
    mb: &mut [f64],
) {
    let (alpha, lr) = (c.alpha as f64, c.lr as f64);
    for i in 0..p.len() {
        let gv = g[i] + c.weight_decay as f64 * p[i];
        sq[i] = alpha * sq[i] + (1.0 - alpha) * gv * gv;
        let mut avg = sq[i];
        if c.centered {
            ga[i] = alpha * ga[i] + (1.0 - alpha) * gv;
            avg -= ga[i] * ga[i];
        }
        let avg = avg.sqrt() + c.eps as f64;
        if c.momentum > 0.0 {
            mb[i] = c.momentum as f64 * mb[i] + gv / avg;
            p[i] -= lr * mb[i];
        } else {
            p[i] -= lr * gv / avg;
        }
    }
}
