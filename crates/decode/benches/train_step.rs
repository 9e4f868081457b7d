//! One full training step (forward, backward, Adam) of the issue-5 benchmark decoders, built from
//! the fused kernels with an explicit forward/backward (no autograd graph).
//!
//! Shapes (same as `train_step_torch.py`): batch 64, 20 steps, vocabulary 8,000, embedding 256,
//! hidden 512, image feature 2048, Adam (lr 1e-3), all 1,280 target tokens valid.
//! - `lstm`: `h0 = Linear(2048, 512)(f)`, `c0 = Linear(2048, 512)(f)`, `LSTM(256, 512)`,
//!   `Linear(512, 8000)`, cross-entropy.
//! - `gru`: `h0 = tanh(Linear(2048, 512)(f))`, `GRU(256, 512)`, `Linear(512, 8000)`, cross-entropy.
//! - `sat` (only when named): the `Sat` decoder (`models::sat`, "Show, Attend and Tell") through
//!   the `Decoder` trait, over a 7x7 grid of 1,280 features (`[64, 49, 1280]`), embedding,
//!   hidden and attention 512, dropout 0.5, `alpha_c` 1, batch 64, 20 steps, vocabulary 8,000.
//!
//! The `lstm` step is 44.1 GFLOP of matrix products: 31.5 in the vocabulary projection's three
//! (1,280 x 512 x 8,000 each), 12.1 in the LSTM's six, 0.5 in the two initial-state linears. At
//! the two-thread AVX-512 FMA peak of the machine it was tuned on (AMD EPYC Zen 4, 222 GFLOP/s)
//! those alone take 199 ms, so `f32` cannot go much below ~215 ms however the rest is fused.
//! On an AMD EPYC Zen 5 (2 vCPUs, full-width AVX-512 FMA) the same peak loop measures ~505
//! GFLOP/s and the step takes ~125 ms (floor ~87 ms). There PyTorch's MKL takes its AVX2 path
//! unless forced onto its Intel one (`TORCH_MKL_INTEL_PATH=1 scripts/bench_train.sh`).
//!
//! Run: `cargo bench -p captioner-decode --bench train_step -- [iters] [lstm] [gru] [sat] [bf16]`
//! (no model named: `lstm` and `gru`); prints the median ms/step and the forward+loss /
//! backward / optimiser split.
//! `bf16` runs the large GEMMs in bf16 on AMX tiles (`MatmulPrecision::Bf16`).

use captioner_decode::kernels::gemm::{gemm, set_matmul_precision, MatmulPrecision, Trans};
use captioner_decode::kernels::gru::*;
use captioner_decode::kernels::lstm::*;
use captioner_decode::kernels::softmax_xent::*;
use captioner_decode::kernels::{act, KernelError};
use captioner_decode::optim::{Adam, AdamConfig, Optimizer};
use captioner_decode::params::{ParamId, ParamSet};
use rand::{Rng, SeedableRng};
use std::time::Instant;

const B: usize = 64;
const T: usize = 20;
const V: usize = 8000;
const E: usize = 256;
const H: usize = 512;
const F: usize = 2048;

#[derive(Clone, Copy, PartialEq)]
enum Cell {
    Lstm,
    Gru,
}

struct Ids {
    emb: ParamId,
    init_h_w: ParamId,
    init_h_b: ParamId,
    init_c: Option<(ParamId, ParamId)>,
    w_ih: ParamId,
    w_hh: ParamId,
    b_ih: ParamId,
    b_hh: ParamId,
    fc_w: ParamId,
    fc_b: ParamId,
}

struct Model {
    cell: Cell,
    ps: ParamSet,
    ids: Ids,
    lstm: LstmCache,
    gru: GruCache,
    ws: XentWorkspace,
    x: Vec<f32>,
    dx: Vec<f32>,
    h0: Vec<f32>,
    c0: Vec<f32>,
    d_out: Vec<f32>,
    dh0: Vec<f32>,
    dc0: Vec<f32>,
}

fn build(cell: Cell) -> Result<Model, KernelError> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut ps = ParamSet::new();
    let g = if cell == Cell::Lstm { 4 * H } else { 3 * H };
    let emb = ps.add("embedding.weight", &[V, E])?;
    let init_h_w = ps.add("init_h.weight", &[H, F])?;
    let init_h_b = ps.add("init_h.bias", &[H])?;
    let init_c = if cell == Cell::Lstm {
        Some((
            ps.add("init_c.weight", &[H, F])?,
            ps.add("init_c.bias", &[H])?,
        ))
    } else {
        None
    };
    let w_ih = ps.add("rnn.weight_ih_l0", &[g, E])?;
    let w_hh = ps.add("rnn.weight_hh_l0", &[g, H])?;
    let b_ih = ps.add("rnn.bias_ih_l0", &[g])?;
    let b_hh = ps.add("rnn.bias_hh_l0", &[g])?;
    let fc_w = ps.add("fc.weight", &[V, H])?;
    let fc_b = ps.add("fc.bias", &[V])?;
    ps.init_uniform(emb, 1.0, &mut rng);
    let kf = 1.0 / (F as f32).sqrt();
    let kh = 1.0 / (H as f32).sqrt();
    for id in [init_h_w, init_h_b] {
        ps.init_uniform(id, kf, &mut rng);
    }
    if let Some((a, b)) = init_c {
        ps.init_uniform(a, kf, &mut rng);
        ps.init_uniform(b, kf, &mut rng);
    }
    for id in [w_ih, w_hh, b_ih, b_hh, fc_w, fc_b] {
        ps.init_uniform(id, kh, &mut rng);
    }
    let ids = Ids {
        emb,
        init_h_w,
        init_h_b,
        init_c,
        w_ih,
        w_hh,
        b_ih,
        b_hh,
        fc_w,
        fc_b,
    };
    Ok(Model {
        cell,
        ps,
        ids,
        lstm: LstmCache::new(),
        gru: GruCache::new(),
        ws: XentWorkspace::new(),
        x: vec![0.0; T * B * E],
        dx: vec![0.0; T * B * E],
        h0: vec![0.0; B * H],
        c0: vec![0.0; B * H],
        d_out: vec![0.0; T * B * H],
        dh0: vec![0.0; B * H],
        dc0: vec![0.0; B * H],
    })
}

/// `out = feats · w^T + b`, `[B, H]`.
fn linear(feats: &[f32], w: &[f32], b: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    for row in out.chunks_exact_mut(H) {
        row.copy_from_slice(b);
    }
    gemm(B, H, F, 1.0, feats, Trans::No, w, Trans::Yes, out, true)
}

/// Gradient of [`linear`] w.r.t. its weight and bias from `d_out` `[B, H]`.
fn linear_bwd(
    feats: &[f32],
    d_out: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
) -> Result<(), KernelError> {
    gemm(H, F, B, 1.0, d_out, Trans::Yes, feats, Trans::No, dw, true)?;
    for row in d_out.chunks_exact(H) {
        for (a, v) in db.iter_mut().zip(row) {
            *a += v;
        }
    }
    Ok(())
}

/// Phase times in ms: (forward, fused loss + its gradient, backward, optimiser).
fn step(
    m: &mut Model,
    opt: &mut Adam,
    feats: &[f32],
    tokens_tm: &[u32],
    targets_tm: &[u32],
) -> Result<[f64; 4], KernelError> {
    let t0 = Instant::now();
    let ids = &m.ids;
    let d = SeqDims {
        seq_len: T,
        batch: B,
        input: E,
        hidden: H,
    };
    m.ps.zero_grads();
    {
        let emb = m.ps.value(ids.emb);
        for (dst, &tok) in m.x.chunks_exact_mut(E).zip(tokens_tm) {
            dst.copy_from_slice(&emb[tok as usize * E..(tok as usize + 1) * E]);
        }
    }
    linear(
        feats,
        m.ps.value(ids.init_h_w),
        m.ps.value(ids.init_h_b),
        &mut m.h0,
    )?;
    if let Some((w, b)) = ids.init_c {
        linear(feats, m.ps.value(w), m.ps.value(b), &mut m.c0)?;
    } else {
        act::tanh_inplace(&mut m.h0);
    }
    let (vals, mut grads) = m.ps.split();
    let (fc_w, fc_b) = (vals.get(ids.fc_w), vals.get(ids.fc_b));
    let (w_ih, w_hh, b_ih, b_hh) = (
        vals.get(ids.w_ih),
        vals.get(ids.w_hh),
        vals.get(ids.b_ih),
        vals.get(ids.b_hh),
    );
    match m.cell {
        Cell::Lstm => {
            let p = LstmParams {
                w_ih,
                w_hh,
                b_ih,
                b_hh,
            };
            lstm_forward(&d, &p, &m.x, Some(&m.h0), Some(&m.c0), &mut m.lstm)?;
        }
        Cell::Gru => {
            let p = GruParams {
                w_ih,
                w_hh,
                b_ih,
                b_hh,
            };
            gru_forward(&d, &p, &m.x, Some(&m.h0), &mut m.gru)?;
        }
    }
    let t_rnn = Instant::now();
    let out = if m.cell == Cell::Lstm {
        m.lstm.output()
    } else {
        m.gru.output()
    };
    let dims = XentDims {
        rows: T * B,
        dim: H,
        vocab: V,
    };
    let chunk_rows = std::env::var("XENT_CHUNK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(XentConfig::default().chunk_rows);
    let cfg = XentConfig {
        ignore_index: Some(0),
        chunk_rows,
        ..XentConfig::default()
    };
    let xg = XentGrads {
        x: &mut m.d_out,
        w: grads.take(ids.fc_w)?,
        b: grads.take(ids.fc_b)?,
    };
    let st = linear_xent(
        &dims,
        out,
        fc_w,
        fc_b,
        targets_tm,
        &cfg,
        Some(xg),
        &mut m.ws,
    )?;
    std::hint::black_box(st.loss);
    let t1 = Instant::now();

    let (gw_ih, gw_hh, gb_ih, gb_hh) = (
        grads.take(ids.w_ih)?,
        grads.take(ids.w_hh)?,
        grads.take(ids.b_ih)?,
        grads.take(ids.b_hh)?,
    );
    match m.cell {
        Cell::Lstm => {
            let p = LstmParams {
                w_ih,
                w_hh,
                b_ih,
                b_hh,
            };
            let mut g = LstmParamGrads {
                w_ih: gw_ih,
                w_hh: gw_hh,
                b_ih: gb_ih,
                b_hh: gb_hh,
            };
            let inputs = LstmInputGrads {
                x: Some(&mut m.dx),
                h0: Some(&mut m.dh0),
                c0: Some(&mut m.dc0),
            };
            lstm_backward(
                &d,
                &p,
                &m.x,
                &mut m.lstm,
                &m.d_out,
                None,
                None,
                &mut g,
                inputs,
            )?;
        }
        Cell::Gru => {
            let p = GruParams {
                w_ih,
                w_hh,
                b_ih,
                b_hh,
            };
            let mut g = GruParamGrads {
                w_ih: gw_ih,
                w_hh: gw_hh,
                b_ih: gb_ih,
                b_hh: gb_hh,
            };
            let inputs = GruInputGrads {
                x: Some(&mut m.dx),
                h0: Some(&mut m.dh0),
            };
            gru_backward(&d, &p, &m.x, &mut m.gru, &m.d_out, None, &mut g, inputs)?;
            // h0 = tanh(pre): d pre = d h0 * (1 - h0^2).
            for (dh, h) in m.dh0.iter_mut().zip(&m.h0) {
                *dh *= 1.0 - h * h;
            }
        }
    }
    linear_bwd(
        feats,
        &m.dh0,
        grads.take(ids.init_h_w)?,
        grads.take(ids.init_h_b)?,
    )?;
    if let Some((w, b)) = ids.init_c {
        linear_bwd(feats, &m.dc0, grads.take(w)?, grads.take(b)?)?;
    }
    let d_emb = grads.take(ids.emb)?;
    for (src, &tok) in m.dx.chunks_exact(E).zip(tokens_tm) {
        for (a, v) in d_emb[tok as usize * E..(tok as usize + 1) * E]
            .iter_mut()
            .zip(src)
        {
            *a += v;
        }
    }
    let t2 = Instant::now();
    let (params, g) = m.ps.flat_mut();
    opt.step(params, g)?;
    let t3 = Instant::now();
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    Ok([ms(t0, t_rnn), ms(t_rnn, t1), ms(t1, t2), ms(t2, t3)])
}

/// The same LSTM decoder written with candle pieces (`candle_nn` embedding and linear layers, the
/// fused ops from `captioner_decode::ops`) trained through candle's `backward()`, with the fused
/// Adam applied per variable. Measures what the autograd route costs over the explicit engine.
fn candle_lstm(
    iters: usize,
    feats: &[f32],
    tokens_tm: &[u32],
    targets_tm: &[u32],
) -> candle_core::Result<[f64; 3]> {
    use candle_core::{DType, Device, Module, Tensor};
    use candle_nn::{Init, VarBuilder, VarMap};
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let emb = candle_nn::embedding(V, E, vb.pp("embedding"))?;
    let init_h = candle_nn::linear(F, H, vb.pp("init_h"))?;
    let init_c = candle_nn::linear(F, H, vb.pp("init_c"))?;
    let k = 1.0 / (H as f64).sqrt();
    let u = Init::Uniform { lo: -k, up: k };
    let w_ih = vb.get_with_hints((4 * H, E), "rnn.weight_ih_l0", u)?;
    let w_hh = vb.get_with_hints((4 * H, H), "rnn.weight_hh_l0", u)?;
    let b_ih = vb.get_with_hints(4 * H, "rnn.bias_ih_l0", u)?;
    let b_hh = vb.get_with_hints(4 * H, "rnn.bias_hh_l0", u)?;
    let fc = candle_nn::linear(H, V, vb.pp("fc"))?;
    let fc_b = fc
        .bias()
        .cloned()
        .ok_or_else(|| candle_core::Error::msg("fc has no bias"))?;
    let mut opts: Vec<(candle_core::Var, Adam)> = varmap
        .all_vars()
        .into_iter()
        .map(|v| {
            let n = v.elem_count();
            (v, Adam::new(n, AdamConfig::adam(1e-3)))
        })
        .collect();
    let tok = Tensor::from_slice(tokens_tm, T * B, &dev)?;
    let f = Tensor::from_slice(feats, (B, F), &dev)?;
    let cfg = XentConfig {
        ignore_index: Some(0),
        ..XentConfig::default()
    };
    let mut times: [Vec<f64>; 3] = Default::default();
    for it in 0..iters + 3 {
        let t0 = Instant::now();
        let x = emb.forward(&tok)?;
        let (h0, c0) = (init_h.forward(&f)?, init_c.forward(&f)?);
        let bias = (&b_ih + &b_hh)?;
        let xp = x
            .matmul(&w_ih.t()?)?
            .broadcast_add(&bias)?
            .reshape((T, B, 4 * H))?;
        let out = captioner_decode::ops::lstm(&xp, &w_hh, &h0, &c0)?.reshape((T * B, H))?;
        let loss =
            captioner_decode::ops::linear_cross_entropy(&out, fc.weight(), &fc_b, targets_tm, cfg)?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        let t2 = Instant::now();
        for (var, opt) in opts.iter_mut() {
            if let Some(g) = grads.get(var.as_tensor()) {
                let mut p = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                let g = g.flatten_all()?.to_vec1::<f32>()?;
                opt.step(&mut p, &g).map_err(candle_core::Error::wrap)?;
                var.set(&Tensor::from_vec(p, var.shape(), &dev)?)?;
            }
        }
        let t3 = Instant::now();
        if it >= 3 {
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
            for (acc, v) in times.iter_mut().zip([ms(t0, t1), ms(t1, t2), ms(t2, t3)]) {
                acc.push(v);
            }
        }
    }
    Ok(times.map(|mut v| median(&mut v)))
}

/// One training step of the `Sat` decoder through the `Decoder` trait: zero the gradients,
/// forward with dropout and backward, one fused Adam step over the flat parameters.
fn sat_bench(iters: usize) -> Result<(), captioner_decode::DecodeError> {
    use captioner_decode::models::sat::{Sat, SatConfig};
    use captioner_decode::{Decoder, Features, ModelDims, PassOptions, TeacherBatch};
    const P: usize = 49;
    const SF: usize = 1280;
    let cfg = SatConfig {
        embed: 512,
        hidden: 512,
        attention: 512,
        dropout: 0.5,
        alpha_c: 1.0,
        deep_output: false,
    };
    let dims = ModelDims {
        vocab: V,
        feature_dim: SF,
        cells: P,
    };
    let mut m = Sat::new(&cfg, dims, 0)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let spatial: Vec<f32> = (0..B * P * SF)
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    let mut pooled = vec![0f32; B * SF];
    for (m, img) in pooled
        .chunks_exact_mut(SF)
        .zip(spatial.chunks_exact(P * SF))
    {
        for cell in img.chunks_exact(SF) {
            for (a, v) in m.iter_mut().zip(cell) {
                *a += v / P as f32;
            }
        }
    }
    // Batch-first, as the data loader gives them; all 1,280 targets valid.
    let inputs: Vec<u32> = (0..B * T).map(|_| rng.random_range(1..V as u32)).collect();
    let targets: Vec<u32> = (0..B * T).map(|_| rng.random_range(1..V as u32)).collect();
    let feats = Features {
        batch: B,
        dim: SF,
        pooled: &pooled,
        spatial: Some(&spatial),
        cells: P,
    };
    let batch = TeacherBatch {
        batch: B,
        time: T,
        inputs: &inputs,
        targets: &targets,
        weights: None,
        loss_scale: 1.0,
    };
    let opts = PassOptions {
        label_smoothing: 0.0,
        train: true,
        ..PassOptions::default()
    };
    let mut opt = Adam::new(m.params().len(), AdamConfig::adam(1e-3));
    let (mut fb, mut ad, mut tot) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = Default::default();
    for it in 0..iters + 3 {
        let t0 = Instant::now();
        m.params_mut().zero_grads();
        last = m.forward(&feats, &batch, &opts, true, &mut rng)?;
        let t1 = Instant::now();
        let (p, g) = m.params_mut().flat_mut();
        opt.step(p, g)?;
        let t2 = Instant::now();
        if it >= 3 {
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
            fb.push(ms(t0, t1));
            ad.push(ms(t1, t2));
            tot.push(ms(t0, t2));
        }
    }
    let last: captioner_decode::PassStats = last;
    println!(
        "sat ms/step: {:.1}  (forward+loss+backward {:.1}, adam {:.1}; {} params, {iters} iters; \
         loss {:.3}, regulariser {:.3})",
        median(&mut tot),
        median(&mut fb),
        median(&mut ad),
        m.params().len(),
        last.loss,
        last.regulariser
    );
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn gates2() -> Vec<f32> {
    vec![0.1; B * 4 * H]
}

/// GFLOP/s of the loss's three GEMM shapes, to compare with `torch.matmul` on the same machine.
fn gemm_report() -> Result<(), KernelError> {
    let (n, d, v) = (B * T, H, V);
    let a = vec![0.5f32; n * d];
    let w = vec![0.25f32; v * d];
    let mut logits = vec![0f32; n * v];
    let mut dx = vec![0f32; n * d];
    let mut dw = vec![0f32; v * d];
    let dl = vec![0.1f32; n * v];
    type Case<'a> = (&'a str, Box<dyn FnMut() -> Result<(), KernelError> + 'a>);
    let cases: Vec<Case> = vec![
        (
            "logits = x w^T ",
            Box::new(|| {
                gemm(
                    n,
                    v,
                    d,
                    1.0,
                    &a,
                    Trans::No,
                    &w,
                    Trans::Yes,
                    &mut logits,
                    false,
                )
            }),
        ),
        (
            "dx = dl w       ",
            Box::new(|| gemm(n, d, v, 1.0, &dl, Trans::No, &w, Trans::No, &mut dx, false)),
        ),
        (
            "dw += dl^T x    ",
            Box::new(|| gemm(v, d, n, 1.0, &dl, Trans::Yes, &a, Trans::No, &mut dw, true)),
        ),
    ];
    let (h, g) = (vec![0.5f32; B * H], vec![0.25f32; 4 * H * H]);
    let (mut gates, mut gates_b) = (vec![0f32; B * 4 * H], vec![0f32; B * 4 * H]);
    let mut dh = vec![0f32; B * H];
    let mut rnn: Vec<Case> = vec![
        (
            "step h w_hh^T  ",
            Box::new(|| {
                gemm(
                    B,
                    4 * H,
                    H,
                    1.0,
                    &h,
                    Trans::No,
                    &g,
                    Trans::Yes,
                    &mut gates,
                    true,
                )
            }),
        ),
        (
            "step h w_hh' (pre-transposed)",
            Box::new(|| {
                gemm(
                    B,
                    4 * H,
                    H,
                    1.0,
                    &h,
                    Trans::No,
                    &g,
                    Trans::No,
                    &mut gates_b,
                    true,
                )
            }),
        ),
        (
            "step dg w_hh   ",
            Box::new(|| {
                gemm(
                    B,
                    H,
                    4 * H,
                    1.0,
                    &gates2(),
                    Trans::No,
                    &g,
                    Trans::No,
                    &mut dh,
                    false,
                )
            }),
        ),
    ];
    for (name, f) in rnn.iter_mut() {
        f()?;
        let t = Instant::now();
        for _ in 0..20 {
            f()?;
        }
        let t = t.elapsed().as_secs_f64() / 20.0;
        println!(
            "{name}: {:.3} ms, {:.0} GFLOP/s",
            t * 1e3,
            2.0 * (B * H * 4 * H) as f64 / t / 1e9
        );
    }
    drop(rnn);
    for (name, mut f) in cases {
        f()?;
        let mut ts: Vec<f64> = (0..9)
            .map(|_| {
                let t = Instant::now();
                f().map(|_| t.elapsed().as_secs_f64())
            })
            .collect::<Result<_, _>>()?;
        let t = median(&mut ts);
        let best = ts[0];
        println!(
            "{name} {n}x{v}x{d}: {:.1} ms, {:.0} GFLOP/s (best {:.1} ms)",
            t * 1e3,
            2.0 * (n * v * d) as f64 / t / 1e9,
            best * 1e3
        );
    }
    Ok(())
}

fn main() -> Result<(), KernelError> {
    let iters: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| ["lstm", "gru", "sat", "candle"].contains(&a.as_str()))
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let feats: Vec<f32> = (0..B * F).map(|_| rng.random_range(0.0..1.0)).collect();
    // Batch-first tokens as a data loader yields them, re-laid time-major for the kernels.
    let tokens: Vec<u32> = (0..B * T).map(|_| rng.random_range(1..V as u32)).collect();
    let targets: Vec<u32> = (0..B * T).map(|_| rng.random_range(1..V as u32)).collect();
    let tm = |v: &[u32]| {
        (0..T * B)
            .map(|i| v[(i % B) * T + i / B])
            .collect::<Vec<u32>>()
    };
    let (tokens_tm, targets_tm) = (tm(&tokens), tm(&targets));
    // `bf16`: large GEMMs in bf16 on AMX tiles (f32 accumulation), like torch's bf16 autocast.
    let precision = if std::env::args().any(|a| a == "bf16") {
        set_matmul_precision(MatmulPrecision::Bf16)
    } else {
        MatmulPrecision::F32
    };
    println!(
        "threads: {}, matmul precision: {precision:?}",
        rayon::current_num_threads()
    );
    if std::env::args().any(|a| a == "gemm") {
        return gemm_report();
    }
    for (name, cell) in [("lstm", Cell::Lstm), ("gru", Cell::Gru)] {
        if !which.is_empty() && !which.iter().any(|w| w == name) {
            continue;
        }
        let mut m = build(cell)?;
        let mut opt = Adam::new(m.ps.len(), AdamConfig::adam(1e-3));
        for _ in 0..3 {
            step(&mut m, &mut opt, &feats, &tokens_tm, &targets_tm)?;
        }
        let mut phases: [Vec<f64>; 4] = Default::default();
        let mut totals = Vec::new();
        for _ in 0..iters {
            let p = step(&mut m, &mut opt, &feats, &tokens_tm, &targets_tm)?;
            totals.push(p.iter().sum());
            for (acc, v) in phases.iter_mut().zip(p) {
                acc.push(v);
            }
        }
        let [f, l, b, o] = phases.map(|mut v| median(&mut v));
        println!(
            "{name} ms/step: {:.1}  (forward {f:.1}, loss fwd+bwd {l:.1}, backward {b:.1}, adam {o:.1}; {} params, {iters} iters)",
            median(&mut totals),
            m.ps.len()
        );
    }
    if which.iter().any(|w| w == "sat") {
        sat_bench(iters).map_err(|e| KernelError::Invalid(e.to_string()))?;
    }
    if which.iter().any(|w| w == "candle") {
        let [f, b, o] = candle_lstm(iters, &feats, &tokens_tm, &targets_tm)
            .map_err(|e| KernelError::Invalid(e.to_string()))?;
        println!(
            "lstm-candle-autograd ms/step: {:.1}  (forward+fused loss {f:.1}, backward() {b:.1}, adam per var {o:.1}; {iters} iters)",
            f + b + o
        );
    }
    Ok(())
}
