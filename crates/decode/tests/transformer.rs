//! `transformer` decoder: gradients against finite differences (f64 graph) and against the f32
//! graph with the fused loss, teacher forcing against step-wise generation, the causal mask,
//! `select`, attention output, dropout replay, and a tiny training run.

use candle_core::DType;
use captioner_decode::models::transformer::{Transformer, TransformerConfig};
use captioner_decode::optim::{Adam, AdamConfig, Optimizer};
use captioner_decode::{Decoder, DecoderConfig, Features, ModelDims, PassOptions, TeacherBatch};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;

const V: usize = 7;
const F: usize = 6;
const P: usize = 4;
const B: usize = 3;
const T: usize = 5;

fn dims() -> ModelDims {
    ModelDims {
        vocab: V,
        feature_dim: F,
        cells: P,
    }
}

fn tiny(dropout: f32) -> TransformerConfig {
    TransformerConfig {
        d_model: 8,
        heads: 2,
        layers: 2,
        ff: 16,
        dropout,
        max_len: 8,
    }
}

fn model(dropout: f32, seed: u64) -> Transformer {
    Transformer::new(&tiny(dropout), dims(), seed).unwrap()
}

/// Spatial features `[n, P, F]` (pooled = mean over cells).
struct Img {
    n: usize,
    pooled: Vec<f32>,
    spatial: Vec<f32>,
}

impl Img {
    fn random(n: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let spatial: Vec<f32> = (0..n * P * F)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        Self::from_spatial(n, spatial)
    }

    fn from_spatial(n: usize, spatial: Vec<f32>) -> Self {
        let mut pooled = vec![0f32; n * F];
        for i in 0..n {
            for c in 0..P {
                for f in 0..F {
                    pooled[i * F + f] += spatial[(i * P + c) * F + f] / P as f32;
                }
            }
        }
        Self { n, pooled, spatial }
    }

    /// A new set whose image `i` is this set's image `rows[i]`.
    fn gather(&self, rows: &[usize]) -> Self {
        let mut s = Vec::new();
        for &r in rows {
            s.extend_from_slice(&self.spatial[r * P * F..(r + 1) * P * F]);
        }
        Self::from_spatial(rows.len(), s)
    }

    fn feats(&self) -> Features<'_> {
        Features {
            batch: self.n,
            dim: F,
            pooled: &self.pooled,
            spatial: Some(&self.spatial),
            cells: P,
        }
    }
}

/// Captions `<start> w w w ...` with some padding at the end of row 1.
fn tokens() -> (Vec<u32>, Vec<u32>) {
    let inputs = vec![
        1, 4, 5, 6, 3, //
        1, 3, 2, 0, 0, //
        1, 6, 6, 4, 5,
    ];
    let targets = vec![
        4, 5, 6, 3, 2, //
        3, 2, 0, 0, 0, //
        6, 6, 4, 5, 2,
    ];
    (inputs, targets)
}

fn teacher<'a>(inputs: &'a [u32], targets: &'a [u32]) -> TeacherBatch<'a> {
    TeacherBatch {
        batch: inputs.len() / T,
        time: T,
        inputs,
        targets,
        weights: None,
        loss_scale: 1.0,
    }
}

fn loss_of(m: &mut Transformer, img: &Img, tb: &TeacherBatch, opts: &PassOptions) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let l = m.loss_f64(&img.feats(), tb, opts, &mut rng).unwrap();
    let st = m.forward(&img.feats(), tb, opts, false, &mut rng).unwrap();
    assert_eq!(st.loss, l as f32);
    l
}

/// Every parameter's analytic gradient (f64 graph) against central finite differences.
#[test]
fn gradients_match_finite_differences() {
    let mut m = model(0.0, 3);
    m.set_precision(DType::F64).unwrap();
    // Larger random values than the init so every path (LayerNorm gains, biases) matters.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for v in m.params_mut().values.iter_mut() {
        *v += rng.random_range(-0.3..0.3);
    }
    let img = Img::random(B, 5);
    let (inputs, targets) = tokens();
    let tb = teacher(&inputs, &targets);
    let opts = PassOptions {
        label_smoothing: 0.1,
        train: false,
        ..PassOptions::default()
    };
    m.params_mut().zero_grads();
    let mut r0 = ChaCha8Rng::seed_from_u64(0);
    let st = m.forward(&img.feats(), &tb, &opts, true, &mut r0).unwrap();
    assert_eq!(st.tokens, 12);
    let analytic = m.params().grads.clone();
    let names: Vec<(String, Vec<usize>)> = m
        .params()
        .names()
        .map(|(n, s)| (n.to_string(), s.to_vec()))
        .collect();
    let mut worst = 0f64;
    let mut checked = 0;
    for (name, _) in &names {
        let id = m.params().id(name).unwrap();
        let range = m.params().range(id);
        let n = range.len();
        // Up to 6 entries per tensor, spread over it.
        let picks: Vec<usize> = if n <= 6 {
            (0..n).collect()
        } else {
            (0..6).map(|k| (k * n) / 6 + (k * 7) % (n / 6)).collect()
        };
        let mut any_nonzero = false;
        for j in picks {
            let i = range.start + j;
            let x0 = m.params().values[i];
            let (xp, xm) = (x0 + 1e-3, x0 - 1e-3);
            m.params_mut().values[i] = xp;
            let lp = loss_of(&mut m, &img, &tb, &opts);
            m.params_mut().values[i] = xm;
            let lm = loss_of(&mut m, &img, &tb, &opts);
            m.params_mut().values[i] = x0;
            let numeric = (lp - lm) / (xp as f64 - xm as f64);
            let a = analytic[i] as f64;
            let err = (a - numeric).abs();
            assert!(
                err <= 1e-5 * (1.0 + numeric.abs()),
                "{name}[{j}]: analytic {a} numeric {numeric}"
            );
            any_nonzero |= a.abs() > 1e-6;
            worst = worst.max(err);
            checked += 1;
        }
        // Every tensor except rows of unused embeddings / positions must get some gradient.
        if !name.starts_with("embed") && !name.starts_with("pos") {
            assert!(any_nonzero, "{name}: all sampled gradients are zero");
        }
    }
    eprintln!("checked {checked} entries, worst |analytic - numeric| = {worst:.2e}");
}

/// The f32 graph (fused loss, crate GEMM) gives the f64 graph's loss and gradients; dropout off.
#[test]
fn f32_graph_matches_f64_graph() {
    let img = Img::random(B, 5);
    let (inputs, targets) = tokens();
    let tb = teacher(&inputs, &targets);
    let opts = PassOptions {
        label_smoothing: 0.1,
        train: false,
        ..PassOptions::default()
    };
    let run = |dt: DType| {
        let mut m = model(0.0, 4);
        m.set_precision(dt).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // Non-zero gradients already in the buffer must be kept (accumulation).
        m.params_mut().grads.fill(0.5);
        let st = m.forward(&img.feats(), &tb, &opts, true, &mut rng).unwrap();
        let g: Vec<f32> = m.params().grads.iter().map(|g| g - 0.5).collect();
        (st.loss, g)
    };
    let (l32, g32) = run(DType::F32);
    let (l64, g64) = run(DType::F64);
    assert!((l32 - l64).abs() < 1e-5 * l64.abs(), "loss {l32} vs {l64}");
    let scale = g64.iter().fold(0f32, |a, g| a.max(g.abs()));
    let worst = g32
        .iter()
        .zip(&g64)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    eprintln!("f32 vs f64 gradients: worst {worst:.2e} (max |g| {scale:.2e})");
    assert!(
        worst < 1e-4 * (1.0 + scale),
        "worst gradient difference {worst}"
    );
}

#[test]
fn teacher_forcing_matches_stepwise_generation() {
    let mut m = model(0.2, 5);
    let img = Img::random(B, 6);
    let (inputs, targets) = tokens();
    let tb = teacher(&inputs, &targets);
    let loss = loss_of(&mut m, &img, &tb, &PassOptions::default());
    let tempered = PassOptions {
        temperature: 0.5,
        ..PassOptions::default()
    };
    let loss_t = loss_of(&mut m, &img, &tb, &tempered);
    let mut st = m.start(&img.feats()).unwrap();
    assert_eq!(st.rows(), B);
    let mut lp = vec![0f32; B * V];
    let mut att = vec![0f32; B * P];
    let (mut sum, mut sum_t, mut n) = (0f64, 0f64, 0usize);
    for t in 0..T {
        let toks: Vec<u32> = (0..B).map(|b| inputs[b * T + t]).collect();
        st.step(&toks, &mut lp, Some(&mut att)).unwrap();
        for b in 0..B {
            let row = &lp[b * V..(b + 1) * V];
            let z: f64 = row.iter().map(|v| (*v as f64).exp()).sum();
            assert!((z - 1.0).abs() < 1e-5, "log-probs do not normalise: {z}");
            let a = &att[b * P..(b + 1) * P];
            let s: f32 = a.iter().sum();
            assert!((s - 1.0).abs() < 1e-5 && a.iter().all(|&x| x >= 0.0));
            let y = targets[b * T + t];
            if y != 0 {
                sum -= row[y as usize] as f64;
                sum_t += common::tempered_nll(row, y as usize, 0.5);
                n += 1;
            }
        }
    }
    let stepwise = sum / n as f64;
    assert!(
        (stepwise - loss).abs() <= 1e-4 * loss.abs(),
        "step-wise NLL {stepwise} vs forward loss {loss}"
    );
    let stepwise_t = sum_t / n as f64;
    assert!(
        (stepwise_t - loss_t).abs() <= 1e-4 * loss_t.abs(),
        "tempered step-wise NLL {stepwise_t} vs forward loss {loss_t}"
    );
    // Past max_len the state refuses to step.
    let mut st = m.start(&img.feats()).unwrap();
    for _ in 0..8 {
        st.step(&[1, 1, 1], &mut lp, None).unwrap();
    }
    assert!(st.step(&[1, 1, 1], &mut lp, None).is_err());
}

/// Later input tokens do not change earlier positions' predictions.
#[test]
fn causal_mask_hides_future_tokens() {
    let mut m = model(0.0, 6);
    let img = Img::random(B, 7);
    let (inputs, mut targets) = tokens();
    // Only the first two positions count.
    for b in 0..B {
        for t in 2..T {
            targets[b * T + t] = 0;
        }
    }
    let base = loss_of(
        &mut m,
        &img,
        &teacher(&inputs, &targets),
        &PassOptions::default(),
    );
    let mut changed = inputs.clone();
    for b in 0..B {
        for t in 2..T {
            changed[b * T + t] = (changed[b * T + t] + 3) % V as u32;
        }
    }
    let after = loss_of(
        &mut m,
        &img,
        &teacher(&changed, &targets),
        &PassOptions::default(),
    );
    assert!((base - after).abs() < 1e-6, "{base} vs {after}");
    // ... while an earlier input does.
    let mut early = inputs.clone();
    early[1] = 5;
    early[T + 1] = 6;
    let moved = loss_of(
        &mut m,
        &img,
        &teacher(&early, &targets),
        &PassOptions::default(),
    );
    assert!((base - moved).abs() > 1e-4, "{base} vs {moved}");
}

#[test]
fn select_reorders_and_duplicates_rows() {
    let m = model(0.0, 7);
    let img = Img::random(2, 8);
    let mut a = m.start(&img.feats()).unwrap();
    let mut la = vec![0f32; 3 * V];
    a.step(&[1, 1], &mut la[..2 * V], None).unwrap();
    a.step(&[4, 5], &mut la[..2 * V], None).unwrap();
    a.select(&[1, 0, 0]).unwrap();
    assert_eq!(a.rows(), 3);
    // Reference: start directly on the reordered images with the reordered prefixes.
    let img_b = img.gather(&[1, 0, 0]);
    let mut b = m.start(&img_b.feats()).unwrap();
    let mut lb = vec![0f32; 3 * V];
    b.step(&[1, 1, 1], &mut lb, None).unwrap();
    b.step(&[5, 4, 4], &mut lb, None).unwrap();
    let (mut aa, mut ab) = (vec![0f32; 3 * P], vec![0f32; 3 * P]);
    for toks in [[3u32, 6, 2], [2, 2, 5]] {
        a.step(&toks, &mut la, Some(&mut aa)).unwrap();
        b.step(&toks, &mut lb, Some(&mut ab)).unwrap();
        for (x, y) in la.iter().zip(&lb).chain(aa.iter().zip(&ab)) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }
    assert!(a.select(&[3]).is_err());
    assert!(a.step(&[1, 1], &mut la, None).is_err());
}

#[test]
fn dropout_replays_from_the_rng_and_accumulates_gradients() {
    let mut m = model(0.3, 8);
    let img = Img::random(B, 9);
    let (inputs, targets) = tokens();
    let tb = teacher(&inputs, &targets);
    let train = PassOptions {
        label_smoothing: 0.0,
        train: true,
        ..PassOptions::default()
    };
    let run = |m: &mut Transformer, seed: u64| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        m.params_mut().zero_grads();
        let st = m
            .forward(&img.feats(), &tb, &train, true, &mut rng)
            .unwrap();
        (st.loss, m.params().grads.clone())
    };
    let (l1, g1) = run(&mut m, 42);
    let (l2, g2) = run(&mut m, 42);
    let (l3, _) = run(&mut m, 43);
    assert_eq!(l1, l2);
    assert_eq!(g1, g2);
    assert_ne!(l1, l3);
    let eval = loss_of(&mut m, &img, &tb, &PassOptions::default()) as f32;
    assert_ne!(l1, eval);
    // A second pass adds to the gradient buffer.
    run(&mut m, 42);
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    m.forward(&img.feats(), &tb, &train, true, &mut rng)
        .unwrap();
    for (g, g1) in m.params().grads.iter().zip(&g1) {
        assert!((g - 2.0 * g1).abs() <= 1e-5 * (1.0 + g1.abs()));
    }
    // grads == false leaves the buffer alone.
    let before = m.params().grads.clone();
    m.forward(&img.feats(), &tb, &train, false, &mut rng)
        .unwrap();
    assert_eq!(before, m.params().grads);
}

#[test]
fn builds_through_config_with_pytorch_names_and_checks_inputs() {
    let cfg: DecoderConfig = serde_json::from_str(
        r#"{"kind":"transformer","d_model":8,"heads":2,"layers":2,"ff":16,"dropout":0.1,"max_len":8}"#,
    )
    .unwrap();
    let d = cfg.build(dims(), 1).unwrap();
    assert_eq!(d.kind(), "transformer");
    assert!(d.needs_spatial() && d.has_attention());
    let names: Vec<&str> = d.params().names().map(|(n, _)| n).collect();
    for n in [
        "embed.weight",
        "pos.weight",
        "mem_proj.weight",
        "mem_proj.bias",
        "mem_pos.weight",
        "layers.1.self_attn.in_proj_weight",
        "layers.1.self_attn.out_proj.bias",
        "layers.0.multihead_attn.in_proj_bias",
        "layers.0.linear1.weight",
        "layers.1.norm3.bias",
        "norm.weight",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(names.contains(&n), "missing {n}");
    }
    let (a, b) = (model(0.1, 9), model(0.1, 9));
    assert_eq!(a.params().values, b.params().values);
    assert_ne!(a.params().values, model(0.1, 10).params().values);
    // Bad configurations and inputs are errors, not panics.
    let mut bad = tiny(0.0);
    bad.heads = 3;
    assert!(Transformer::new(&bad, dims(), 0).is_err());
    let mut m = model(0.0, 1);
    let img = Img::random(B, 1);
    let no_grid = Features {
        spatial: None,
        cells: 0,
        ..img.feats()
    };
    let (inputs, targets) = tokens();
    let tb = teacher(&inputs, &targets);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let o = PassOptions::default();
    assert!(m.forward(&no_grid, &tb, &o, false, &mut rng).is_err());
    assert!(m.start(&no_grid).is_err());
    let long_in = vec![1u32; B * 9];
    let long = TeacherBatch {
        batch: B,
        time: 9,
        inputs: &long_in,
        targets: &long_in,
        weights: None,
        loss_scale: 1.0,
    };
    assert!(m.forward(&img.feats(), &long, &o, false, &mut rng).is_err());
}

/// A few Adam steps on a tiny task (caption depends on the image) lower the loss a lot.
#[test]
fn training_lowers_the_loss() {
    let mut m = model(0.1, 12);
    let img = Img::random(4, 13);
    // Image i is captioned `<start> (3+i) (3+i+1)%V <end>`.
    let mut inputs = Vec::new();
    let mut targets = Vec::new();
    for i in 0..4u32 {
        let (a, b) = (3 + i, (4 + i) % V as u32);
        let b = b.max(3);
        inputs.extend_from_slice(&[1, a, b, 2, 0]);
        targets.extend_from_slice(&[a, b, 2, 0, 0]);
    }
    let tb = TeacherBatch {
        batch: 4,
        time: T,
        inputs: &inputs,
        targets: &targets,
        weights: None,
        loss_scale: 1.0,
    };
    let eval = PassOptions::default();
    let train = PassOptions {
        label_smoothing: 0.0,
        train: true,
        ..PassOptions::default()
    };
    let before = loss_of(&mut m, &img, &tb, &eval);
    let mut opt = Adam::new(m.params().len(), AdamConfig::adam(1e-2));
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for _ in 0..60 {
        m.params_mut().zero_grads();
        m.forward(&img.feats(), &tb, &train, true, &mut rng)
            .unwrap();
        let (p, g) = m.params_mut().flat_mut();
        opt.step(p, g).unwrap();
    }
    let after = loss_of(&mut m, &img, &tb, &eval);
    eprintln!("loss {before:.4} -> {after:.4}");
    assert!(after < 0.3 * before, "loss {before} -> {after}");
    // Greedy decoding then reproduces image 2's caption.
    let one = img.gather(&[2]);
    let mut st = m.start(&one.feats()).unwrap();
    let mut lp = vec![0f32; V];
    let mut tok = 1u32;
    let mut out = Vec::new();
    for _ in 0..3 {
        st.step(&[tok], &mut lp, None).unwrap();
        tok = (0..V).max_by(|&x, &y| lp[x].total_cmp(&lp[y])).unwrap() as u32;
        out.push(tok);
    }
    assert_eq!(out, vec![5, 6, 2]);
}

/// Rough timing of one training step on the real shapes; run with
/// `cargo test --release -p captioner-decode --test transformer -- --ignored --nocapture`.
#[test]
#[ignore]
fn time_training_step() {
    let cfg = TransformerConfig {
        d_model: 256,
        heads: 8,
        layers: 3,
        ff: 1024,
        dropout: 0.1,
        max_len: 40,
    };
    let (b, t, v, p, f) = (64usize, 20usize, 2500usize, 49usize, 1280usize);
    let dims = ModelDims {
        vocab: v,
        feature_dim: f,
        cells: p,
    };
    let mut m = Transformer::new(&cfg, dims, 0).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let spatial: Vec<f32> = (0..b * p * f).map(|_| rng.random_range(0.0..1.0)).collect();
    let pooled = vec![0f32; b * f];
    let feats = Features {
        batch: b,
        dim: f,
        pooled: &pooled,
        spatial: Some(&spatial),
        cells: p,
    };
    let inputs: Vec<u32> = (0..b * t).map(|_| rng.random_range(1..v as u32)).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..v as u32)).collect();
    let tb = TeacherBatch {
        batch: b,
        time: t,
        inputs: &inputs,
        targets: &targets,
        weights: None,
        loss_scale: 1.0,
    };
    let opts = PassOptions {
        label_smoothing: 0.1,
        train: true,
        ..PassOptions::default()
    };
    let mut opt = Adam::new(m.params().len(), AdamConfig::adam(1e-4));
    let mut times = Vec::new();
    for _ in 0..4 {
        let t0 = std::time::Instant::now();
        m.params_mut().zero_grads();
        m.forward(&feats, &tb, &opts, true, &mut rng).unwrap();
        let (pv, g) = m.params_mut().flat_mut();
        opt.step(pv, g).unwrap();
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let t0 = std::time::Instant::now();
    let mut st = m.start(&feats).unwrap();
    let mut lp = vec![0f32; b * v];
    for _ in 0..t {
        st.step(&vec![1; b], &mut lp, None).unwrap();
    }
    let gen = t0.elapsed().as_secs_f64() * 1e3;
    eprintln!(
        "training step ms (first is warm-up): {times:?}; greedy {t} steps x {b} rows: {gen:.0} ms"
    );
}
