//! Tests of the "Show, Attend and Tell" decoder: gradients against finite differences (with the
//! attention regulariser and dropout), teacher forcing against step-by-step generation, `select`,
//! and that training lowers the loss.

use captioner_decode::models::sat::{Sat, SatConfig};
use captioner_decode::optim::{Adam, AdamConfig, Optimizer};
use captioner_decode::{Decoder, Features, ModelDims, PassOptions, TeacherBatch};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;

const V: usize = 7;
const P: usize = 4;
const F: usize = 6;
const B: usize = 3;
const T: usize = 4;

fn tiny_cfg(dropout: f32, alpha_c: f32) -> SatConfig {
    SatConfig {
        embed: 4,
        hidden: 5,
        attention: 3,
        dropout,
        alpha_c,
        deep_output: false,
    }
}

/// With the deep output layer, whose width (the embedding's 4) differs from the LSTM's 5.
fn tiny_deep_cfg(dropout: f32, alpha_c: f32) -> SatConfig {
    SatConfig {
        deep_output: true,
        ..tiny_cfg(dropout, alpha_c)
    }
}

fn dims() -> ModelDims {
    ModelDims {
        vocab: V,
        feature_dim: F,
        cells: P,
    }
}

struct Data {
    spatial: Vec<f32>,
    pooled: Vec<f32>,
    inputs: Vec<u32>,
    targets: Vec<u32>,
}

impl Data {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let spatial: Vec<f32> = (0..B * P * F).map(|_| rng.random_range(0.0..2.0)).collect();
        let pooled = mean_cells(&spatial, B);
        // Row 0 full, row 1 ends early (padding), row 2 has a single valid target.
        let targets: Vec<u32> = vec![4, 5, 6, 2, 3, 2, 0, 0, 2, 0, 0, 0];
        let mut inputs = vec![0u32; B * T];
        for b in 0..B {
            inputs[b * T] = 1;
            for t in 1..T {
                inputs[b * T + t] = targets[b * T + t - 1];
            }
        }
        Self {
            spatial,
            pooled,
            inputs,
            targets,
        }
    }

    fn feats(&self) -> Features<'_> {
        Features {
            batch: B,
            dim: F,
            pooled: &self.pooled,
            spatial: Some(&self.spatial),
            cells: P,
        }
    }

    fn batch(&self) -> TeacherBatch<'_> {
        TeacherBatch {
            batch: B,
            time: T,
            inputs: &self.inputs,
            targets: &self.targets,
            weights: None,
            loss_scale: 1.0,
        }
    }
}

fn mean_cells(spatial: &[f32], batch: usize) -> Vec<f32> {
    let mut out = vec![0.0; batch * F];
    for b in 0..batch {
        for p in 0..P {
            for j in 0..F {
                out[b * F + j] += spatial[(b * P + p) * F + j] / P as f32;
            }
        }
    }
    out
}

/// Objective (`loss + regulariser`) of a pass without gradients; dropout masks replay from
/// `seed`.
fn objective(m: &mut Sat, d: &Data, opts: &PassOptions, seed: u64) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let st = m
        .forward(&d.feats(), &d.batch(), opts, false, &mut rng)
        .unwrap();
    st.loss as f64 + st.regulariser as f64
}

fn gradcheck(cfg: &SatConfig, opts: PassOptions, tol: f64) {
    let d = Data::new(11);
    let mut m = Sat::new(cfg, dims(), 3).unwrap();
    // Larger weights than the default init, so every path carries a visible gradient.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for v in m.params_mut().values.iter_mut() {
        *v += rng.random_range(-0.3..0.3);
    }
    m.params_mut().zero_grads();
    // Gradients accumulate: two passes give twice the gradient.
    for _ in 0..2 {
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        let st = m
            .forward(&d.feats(), &d.batch(), &opts, true, &mut rng)
            .unwrap();
        assert!(st.regulariser > 0.0 || cfg.alpha_c == 0.0);
        assert_eq!(st.tokens, 7);
    }
    let analytic: Vec<f32> = m.params().grads.iter().map(|g| g / 2.0).collect();
    let entries: Vec<(String, std::ops::Range<usize>)> = {
        let ps = m.params();
        ps.names()
            .map(|(name, _)| {
                let id = ps.id(name).unwrap();
                (name.to_string(), ps.range(id))
            })
            .collect()
    };
    assert_eq!(entries.len(), if cfg.deep_output { 22 } else { 19 });
    for (name, range) in entries {
        let mut worst = 0f64;
        let mut max_grad = 0f64;
        // Every entry of the small tensors, a strided sample of the bigger ones.
        let step = (range.len() / 24).max(1);
        for i in range.clone().step_by(step) {
            let x0 = m.params().values[i];
            let (xp, xm) = (x0 + 3e-3, x0 - 3e-3);
            m.params_mut().values[i] = xp;
            let lp = objective(&mut m, &d, &opts, 99);
            m.params_mut().values[i] = xm;
            let lm = objective(&mut m, &d, &opts, 99);
            m.params_mut().values[i] = x0;
            let numeric = (lp - lm) / (xp as f64 - xm as f64);
            let a = analytic[i] as f64;
            let err = (a - numeric).abs();
            assert!(
                err <= 1e-4 + tol * numeric.abs(),
                "{name}[{}]: analytic {a} numeric {numeric}",
                i - range.start
            );
            worst = worst.max(err);
            max_grad = max_grad.max(a.abs());
        }
        eprintln!("d {name}: worst abs err {worst:.2e} (max |grad| {max_grad:.2e})");
        if name != "attention.full_att.bias" {
            // A bias before a softmax has no gradient; everything else must be exercised.
            assert!(max_grad > 1e-4, "{name} got no gradient");
        }
    }
}

/// Label smoothing without dropout, as validation with smoothing runs.
fn smoothed_eval() -> PassOptions {
    PassOptions {
        label_smoothing: 0.1,
        train: false,
        ..PassOptions::default()
    }
}

/// Dropout on, no smoothing, as phase 1 trains.
fn dropout_training() -> PassOptions {
    PassOptions {
        label_smoothing: 0.0,
        train: true,
        ..PassOptions::default()
    }
}

#[test]
fn gradients_match_finite_differences_with_regulariser() {
    gradcheck(&tiny_cfg(0.0, 0.7), smoothed_eval(), 2e-2);
}

#[test]
fn gradients_match_finite_differences_with_dropout() {
    gradcheck(&tiny_cfg(0.3, 1.0), dropout_training(), 2e-2);
}

#[test]
fn gradients_match_finite_differences_with_the_deep_output() {
    gradcheck(&tiny_deep_cfg(0.3, 1.0), dropout_training(), 2e-2);
    gradcheck(&tiny_deep_cfg(0.0, 0.7), smoothed_eval(), 2e-2);
}

#[test]
fn teacher_forcing_matches_step_by_step_generation() {
    teacher_forcing_matches_steps(&tiny_cfg(0.5, 1.0));
}

#[test]
fn teacher_forcing_matches_step_by_step_generation_with_the_deep_output() {
    teacher_forcing_matches_steps(&tiny_deep_cfg(0.5, 1.0));
}

fn teacher_forcing_matches_steps(cfg: &SatConfig) {
    let d = Data::new(12);
    let mut m = Sat::new(cfg, dims(), 4).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for v in m.params_mut().values.iter_mut() {
        *v += rng.random_range(-0.2..0.2);
    }
    let opts = PassOptions::default();
    let st = m
        .forward(&d.feats(), &d.batch(), &opts, false, &mut rng)
        .unwrap();
    // At a sampling temperature the pass scores the same steps' tempered distribution.
    let tempered = PassOptions {
        temperature: 0.5,
        ..PassOptions::default()
    };
    let st_t = m
        .forward(&d.feats(), &d.batch(), &tempered, false, &mut rng)
        .unwrap();
    let mut state = m.start(&d.feats()).unwrap();
    assert_eq!(state.rows(), B);
    let (mut nll, mut tempered_nll, mut count) = (0f64, 0f64, 0usize);
    let mut cover = [0f64; B * P];
    let mut lp = vec![0f32; B * V];
    let mut att = vec![0f32; B * P];
    for t in 0..T {
        let toks: Vec<u32> = (0..B).map(|b| d.inputs[b * T + t]).collect();
        state.step(&toks, &mut lp, Some(&mut att)).unwrap();
        for b in 0..B {
            let s: f32 = att[b * P..(b + 1) * P].iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "attention sums to {s}");
            let z: f64 = lp[b * V..(b + 1) * V]
                .iter()
                .map(|&l| (l as f64).exp())
                .sum();
            assert!((z - 1.0).abs() < 1e-4, "probabilities sum to {z}");
            let tg = d.targets[b * T + t];
            if tg != 0 {
                nll -= lp[b * V + tg as usize] as f64;
                tempered_nll += common::tempered_nll(&lp[b * V..(b + 1) * V], tg as usize, 0.5);
                count += 1;
                for p in 0..P {
                    cover[b * P + p] += att[b * P + p] as f64;
                }
            }
        }
    }
    assert_eq!(count, st.tokens);
    let mean = nll / count as f64;
    let rel = (mean - st.loss as f64).abs() / mean.abs();
    assert!(rel < 1e-4, "steps give {mean}, forward gives {}", st.loss);
    let mean_t = tempered_nll / count as f64;
    let rel = (mean_t - st_t.loss as f64).abs() / mean_t.abs();
    assert!(
        rel < 1e-4,
        "tempered steps give {mean_t}, forward gives {}",
        st_t.loss
    );
    let reg: f64 = cover.iter().map(|c| (1.0 - c) * (1.0 - c)).sum::<f64>() / (B * P) as f64;
    let rel = (reg - st.regulariser as f64).abs() / reg;
    assert!(
        rel < 1e-4,
        "steps give regulariser {reg}, forward {}",
        st.regulariser
    );
}

#[test]
fn select_reorders_and_duplicates_rows() {
    let d = Data::new(13);
    let m = Sat::new(&tiny_cfg(0.0, 1.0), dims(), 5).unwrap();
    let two = Features {
        batch: 2,
        dim: F,
        pooled: &d.pooled[..2 * F],
        spatial: Some(&d.spatial[..2 * P * F]),
        cells: P,
    };
    let run = |first: [u32; 2], second: [u32; 2]| {
        let mut s = m.start(&two).unwrap();
        let mut lp = vec![0f32; 2 * V];
        s.step(&first, &mut lp, None).unwrap();
        let mut att = vec![0f32; 2 * P];
        s.step(&second, &mut lp, Some(&mut att)).unwrap();
        (lp, att)
    };
    let mut s = m.start(&two).unwrap();
    let mut lp = vec![0f32; 2 * V];
    s.step(&[1, 1], &mut lp, None).unwrap();
    s.select(&[1, 0, 0]).unwrap();
    assert_eq!(s.rows(), 3);
    let mut lp3 = vec![0f32; 3 * V];
    let mut att3 = vec![0f32; 3 * P];
    s.step(&[4, 5, 6], &mut lp3, Some(&mut att3)).unwrap();
    // Row 0 is old row 1 fed 4; rows 1 and 2 are old row 0 fed 5 and 6.
    let (lp_a, att_a) = run([1, 1], [5, 4]);
    let (lp_b, att_b) = run([1, 1], [6, 6]);
    let same = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(a, b)| (a - b).abs() < 1e-6);
    assert!(same(&lp3[..V], &lp_a[V..]));
    assert!(same(&lp3[V..2 * V], &lp_a[..V]));
    assert!(same(&lp3[2 * V..], &lp_b[..V]));
    assert!(same(&att3[..P], &att_a[P..]));
    assert!(same(&att3[P..2 * P], &att_a[..P]));
    assert!(same(&att3[2 * P..], &att_b[..P]));
    // Rows really differ, so the comparison above can fail.
    assert!(!same(&lp3[..V], &lp3[V..2 * V]));
    assert!(s.select(&[3]).is_err());
}

#[test]
fn training_lowers_the_loss() {
    // The caption word is the index of the cell that is "on" in the image.
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let nb = 12;
    let mut spatial = vec![0f32; nb * P * F];
    let mut inputs = vec![0u32; nb * T];
    let mut targets = vec![0u32; nb * T];
    for b in 0..nb {
        let hot = rng.random_range(0..P);
        for p in 0..P {
            for j in 0..F {
                let base = if p == hot { 1.0 } else { 0.0 };
                spatial[(b * P + p) * F + j] = base + rng.random_range(-0.1..0.1);
            }
        }
        let word = 3 + hot as u32;
        inputs[b * T..(b + 1) * T].copy_from_slice(&[1, word, 2, 0]);
        targets[b * T..(b + 1) * T].copy_from_slice(&[word, 2, 0, 0]);
    }
    let pooled = mean_cells(&spatial, nb);
    let feats = Features {
        batch: nb,
        dim: F,
        pooled: &pooled,
        spatial: Some(&spatial),
        cells: P,
    };
    let batch = TeacherBatch {
        batch: nb,
        time: T,
        inputs: &inputs,
        targets: &targets,
        weights: None,
        loss_scale: 1.0,
    };
    let mut m = Sat::new(&tiny_cfg(0.1, 0.5), dims(), 8).unwrap();
    let mut opt = Adam::new(m.params().len(), AdamConfig::adam(3e-2));
    let eval = PassOptions::default();
    let train = PassOptions {
        label_smoothing: 0.0,
        train: true,
        ..PassOptions::default()
    };
    let before = m.forward(&feats, &batch, &eval, false, &mut rng).unwrap();
    for _ in 0..60 {
        m.params_mut().zero_grads();
        m.forward(&feats, &batch, &train, true, &mut rng).unwrap();
        let (p, g) = m.params_mut().flat_mut();
        opt.step(p, g).unwrap();
    }
    let after = m.forward(&feats, &batch, &eval, false, &mut rng).unwrap();
    eprintln!(
        "loss {} -> {}, regulariser {} -> {}",
        before.loss, after.loss, before.regulariser, after.regulariser
    );
    assert!(after.loss < 0.5 * before.loss, "{before:?} -> {after:?}");
    assert!(after.loss + after.regulariser < before.loss + before.regulariser);
}

#[test]
fn the_deep_output_adds_three_parameters_and_leaves_the_others_as_they_were() {
    let dims = ModelDims {
        vocab: 100,
        feature_dim: 1280,
        cells: 49,
    };
    let plain_cfg = SatConfig {
        embed: 256,
        ..SatConfig::default()
    };
    let deep_cfg = SatConfig {
        deep_output: true,
        ..plain_cfg.clone()
    };
    let plain = Sat::new(&plain_cfg, dims, 8).unwrap();
    let deep = Sat::new(&deep_cfg, dims, 8).unwrap();
    let shapes = |m: &Sat| -> Vec<(String, Vec<usize>)> {
        m.params()
            .names()
            .map(|(n, s)| (n.to_string(), s.to_vec()))
            .collect()
    };
    let (ps, ds) = (shapes(&plain), shapes(&deep));
    let extra: Vec<_> = ds.iter().filter(|x| !ps.contains(x)).cloned().collect();
    let want = vec![
        ("deep_output.lstm.weight".to_string(), vec![256, 512]),
        ("deep_output.lstm.bias".to_string(), vec![256]),
        ("deep_output.ctx.weight".to_string(), vec![256, 1280]),
        // The vocabulary projection reads the deep output, of the embedding's width.
        ("fc.weight".to_string(), vec![100, 256]),
    ];
    assert_eq!(extra, want);
    // Every parameter the two share starts from the same values, so a plain model initialises
    // as it did before the option existed.
    for (name, shape) in &ps {
        if name == "fc.weight" {
            continue;
        }
        let (pi, di) = (
            plain.params().id(name).unwrap(),
            deep.params().id(name).unwrap(),
        );
        assert_eq!(
            plain.params().value(pi),
            deep.params().value(di),
            "{name} {shape:?}"
        );
    }
    // A plain configuration is written as before, without the new field.
    let json = serde_json::to_string(&plain_cfg).unwrap();
    assert!(!json.contains("deep_output"), "{json}");
    let back: SatConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, plain_cfg);
    let json = serde_json::to_string(&deep_cfg).unwrap();
    assert!(json.contains("\"deep_output\":true"), "{json}");
}

#[test]
fn names_shapes_and_errors() {
    let m = Sat::new(
        &SatConfig::default(),
        ModelDims {
            vocab: 100,
            feature_dim: 1280,
            cells: 49,
        },
        0,
    )
    .unwrap();
    assert!(m.needs_spatial() && m.has_attention());
    assert_eq!(m.kind(), "sat");
    let names: Vec<(String, Vec<usize>)> = m
        .params()
        .names()
        .map(|(n, s)| (n.to_string(), s.to_vec()))
        .collect();
    let want: Vec<(&str, Vec<usize>)> = vec![
        ("attention.encoder_att.weight", vec![512, 1280]),
        ("attention.encoder_att.bias", vec![512]),
        ("attention.decoder_att.weight", vec![512, 512]),
        ("attention.decoder_att.bias", vec![512]),
        ("attention.full_att.weight", vec![1, 512]),
        ("attention.full_att.bias", vec![1]),
        ("embedding.weight", vec![100, 512]),
        ("decode_step.weight_ih", vec![2048, 512 + 1280]),
        ("decode_step.weight_hh", vec![2048, 512]),
        ("decode_step.bias_ih", vec![2048]),
        ("decode_step.bias_hh", vec![2048]),
        ("init_h.weight", vec![512, 1280]),
        ("init_h.bias", vec![512]),
        ("init_c.weight", vec![512, 1280]),
        ("init_c.bias", vec![512]),
        ("f_beta.weight", vec![1280, 512]),
        ("f_beta.bias", vec![1280]),
        ("fc.weight", vec![100, 512]),
        ("fc.bias", vec![100]),
    ];
    assert_eq!(names.len(), want.len());
    for ((n, s), (wn, ws)) in names.iter().zip(&want) {
        assert_eq!((n.as_str(), s), (*wn, ws));
    }
    // Same seed, same parameters; another seed, others.
    let cfg = tiny_cfg(0.5, 1.0);
    let a = Sat::new(&cfg, dims(), 1).unwrap();
    let b = Sat::new(&cfg, dims(), 1).unwrap();
    let c = Sat::new(&cfg, dims(), 2).unwrap();
    assert_eq!(a.params().values, b.params().values);
    assert_ne!(a.params().values, c.params().values);

    let d = Data::new(1);
    let mut m = Sat::new(&cfg, dims(), 1).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let no_grid = Features {
        spatial: None,
        cells: 0,
        ..d.feats()
    };
    let opts = PassOptions::default();
    assert!(m
        .forward(&no_grid, &d.batch(), &opts, false, &mut rng)
        .is_err());
    assert!(m.start(&no_grid).is_err());
    let bad = vec![9u32; B * T];
    let bad_batch = TeacherBatch {
        targets: &bad,
        weights: None,
        ..d.batch()
    };
    assert!(m
        .forward(&d.feats(), &bad_batch, &opts, false, &mut rng)
        .is_err());
    assert!(Sat::new(&tiny_cfg(1.0, 1.0), dims(), 0).is_err());
    assert!(Sat::new(&tiny_cfg(0.1, -1.0), dims(), 0).is_err());
}

#[test]
fn a_pass_after_a_larger_batch_matches_a_fresh_model() {
    // The pass reuses its step buffers without clearing them; what a larger batch left there
    // must not leak into a smaller one (fewer captions, fewer steps).
    let cfg = tiny_cfg(0.5, 1.0);
    let opts = PassOptions {
        label_smoothing: 0.1,
        train: true,
        ..PassOptions::default()
    };
    let d = Data::new(21);
    let (b, t) = (2, 3);
    let inputs: Vec<u32> = (0..b)
        .flat_map(|r| d.inputs[r * T..r * T + t].to_vec())
        .collect();
    let targets: Vec<u32> = (0..b)
        .flat_map(|r| d.targets[r * T..r * T + t].to_vec())
        .collect();
    let small_feats = Features {
        batch: b,
        dim: F,
        pooled: &d.pooled[..b * F],
        spatial: Some(&d.spatial[..b * P * F]),
        cells: P,
    };
    let small = TeacherBatch {
        batch: b,
        time: t,
        inputs: &inputs,
        targets: &targets,
        weights: None,
        loss_scale: 1.0,
    };
    let run = |m: &mut Sat| {
        m.params_mut().zero_grads();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let st = m
            .forward(&small_feats, &small, &opts, true, &mut rng)
            .unwrap();
        (st.loss, st.regulariser, m.params().grads.clone())
    };
    let mut fresh = Sat::new(&cfg, dims(), 3).unwrap();
    let want = run(&mut fresh);
    let mut used = Sat::new(&cfg, dims(), 3).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    used.forward(&d.feats(), &d.batch(), &opts, true, &mut rng)
        .unwrap();
    let got = run(&mut used);
    assert_eq!(got.0.to_bits(), want.0.to_bits());
    assert_eq!(got.1.to_bits(), want.1.to_bits());
    assert_eq!(got.2, want.2);
    assert!(want.2.iter().any(|g| *g != 0.0));
}
