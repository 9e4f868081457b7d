//! Per-row weights of the fused vocabulary loss (self-critical training): the kernel against its
//! `f64` reference and finite differences, weight 1 against the unweighted kernel bit for bit,
//! weight 0 against an ignored row, and every decoder's weighted teacher-forced pass against a
//! combination of unweighted single-caption passes.

use captioner_decode::kernels::softmax_xent::{
    linear_xent, linear_xent_weighted, linear_xent_weighted_ref, XentConfig, XentDims, XentGrads,
    XentWorkspace,
};
use captioner_decode::{
    Decoder, DecoderConfig, Features, ModelDims, PassOptions, PassStats, TeacherBatch,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rand_vec(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

struct Problem {
    dims: XentDims,
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    targets: Vec<u32>,
}

fn problem(seed: u64) -> Problem {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dims = XentDims {
        rows: 11,
        dim: 7,
        vocab: 13,
    };
    let mut targets: Vec<u32> = (0..dims.rows)
        .map(|_| rng.random_range(1..dims.vocab as u32))
        .collect();
    targets[2] = 0;
    targets[7] = 0;
    Problem {
        x: rand_vec(&mut rng, dims.rows * dims.dim, 1.0),
        w: rand_vec(&mut rng, dims.vocab * dims.dim, 1.0),
        b: rand_vec(&mut rng, dims.vocab, 1.0),
        targets,
        dims,
    }
}

/// `(stats, dx, dw, db)` of the kernel with gradients.
fn run(
    p: &Problem,
    weights: Option<&[f32]>,
    cfg: &XentConfig,
) -> (
    captioner_decode::kernels::softmax_xent::XentStats,
    Vec<f32>,
    Vec<f32>,
    Vec<f32>,
) {
    let (mut dx, mut dw, mut db) = (
        vec![9f32; p.x.len()],
        vec![0f32; p.w.len()],
        vec![0f32; p.b.len()],
    );
    let mut ws = XentWorkspace::new();
    let grads = XentGrads {
        x: &mut dx,
        w: &mut dw,
        b: &mut db,
    };
    let st = linear_xent_weighted(
        &p.dims,
        &p.x,
        &p.w,
        &p.b,
        &p.targets,
        weights,
        cfg,
        Some(grads),
        &mut ws,
    )
    .unwrap();
    (st, dx, dw, db)
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y).abs())
        .fold(0.0, f64::max)
}

/// (smoothing, chunk rows, temperature): the last two score the logits at a sampling temperature.
fn configs() -> [XentConfig; 4] {
    [(0.0, 256, 1.0), (0.1, 3, 1.0), (0.3, 1, 0.5), (0.0, 4, 2.0)].map(
        |(label_smoothing, chunk_rows, temperature)| XentConfig {
            label_smoothing,
            temperature,
            ignore_index: Some(0),
            chunk_rows,
        },
    )
}

#[test]
fn weighted_gradient_matches_reference_and_finite_differences() {
    let p = problem(5);
    // Positive, negative and zero advantages; ignored rows get junk that must not matter.
    let weights: Vec<f32> = vec![
        0.7,
        -1.3,
        1e9,
        2.0,
        0.0,
        -0.2,
        1.1,
        f32::NAN,
        0.5,
        -2.5,
        1.0,
    ];
    let mut clean = weights.clone();
    clean[2] = 3.0;
    clean[7] = 3.0;
    for cfg in configs() {
        // Non-finite weights on ignored rows are skipped; on a valid row they are an error.
        let (st, dx, dw, db) = run(&p, Some(&clean), &cfg);
        let mut junk = clean.clone();
        junk[7] = f32::NAN;
        let (st_j, dx_j, dw_j, db_j) = run(&p, Some(&junk), &cfg);
        assert_eq!(
            (st.loss, &dx, &dw, &db),
            (st_j.loss, &dx_j, &dw_j, &db_j),
            "weights of ignored rows changed the result"
        );
        let (obj, dx_r, dw_r, db_r) =
            linear_xent_weighted_ref(&p.dims, &p.x, &p.w, &p.b, &p.targets, Some(&clean), &cfg);
        assert!((st.loss as f64 - obj).abs() < 1e-5, "{} vs {obj}", st.loss);
        assert!((st.loss_sum - obj * st.n_valid as f64).abs() < 1e-4);
        assert!(max_abs_diff(&dx, &dx_r) < 1e-5);
        assert!(max_abs_diff(&dw, &dw_r) < 1e-5);
        assert!(max_abs_diff(&db, &db_r) < 1e-5);
        // The kernel's gradient against central differences of the weighted objective.
        let f = |x: &[f32], w: &[f32], b: &[f32]| {
            linear_xent_weighted_ref(&p.dims, x, w, b, &p.targets, Some(&clean), &cfg).0
        };
        let h = 1e-3f32;
        let mut worst = 0f64;
        for i in 0..p.x.len() {
            let (mut xp, mut xm) = (p.x.clone(), p.x.clone());
            xp[i] += h;
            xm[i] -= h;
            let num = (f(&xp, &p.w, &p.b) - f(&xm, &p.w, &p.b)) / (2.0 * h as f64);
            worst = worst.max((dx[i] as f64 - num).abs());
        }
        for i in 0..p.w.len() {
            let (mut wp, mut wm) = (p.w.clone(), p.w.clone());
            wp[i] += h;
            wm[i] -= h;
            let num = (f(&p.x, &wp, &p.b) - f(&p.x, &wm, &p.b)) / (2.0 * h as f64);
            worst = worst.max((dw[i] as f64 - num).abs());
        }
        for i in 0..p.b.len() {
            let (mut bp, mut bm) = (p.b.clone(), p.b.clone());
            bp[i] += h;
            bm[i] -= h;
            let num = (f(&p.x, &p.w, &bp) - f(&p.x, &p.w, &bm)) / (2.0 * h as f64);
            worst = worst.max((db[i] as f64 - num).abs());
        }
        assert!(worst < 1e-3, "weighted xent vs finite differences: {worst}");
        // The loss-only path reports the same objective.
        let mut ws = XentWorkspace::new();
        let st2 = linear_xent_weighted(
            &p.dims,
            &p.x,
            &p.w,
            &p.b,
            &p.targets,
            Some(&clean),
            &cfg,
            None,
            &mut ws,
        )
        .unwrap();
        assert!((st2.loss - st.loss).abs() < 1e-6);
    }
    // A non-finite weight on a valid row is refused.
    let mut ws = XentWorkspace::new();
    let err = linear_xent_weighted(
        &p.dims,
        &p.x,
        &p.w,
        &p.b,
        &p.targets,
        Some(&weights),
        &XentConfig::default(),
        None,
        &mut ws,
    );
    assert!(err.is_err());
}

#[test]
fn weight_one_is_bit_identical_to_the_unweighted_kernel() {
    let p = problem(6);
    let ones = vec![1.0f32; p.dims.rows];
    for cfg in configs() {
        let (st_w, dx_w, dw_w, db_w) = run(&p, Some(&ones), &cfg);
        let (st_n, dx_n, dw_n, db_n) = run(&p, None, &cfg);
        // `linear_xent` is the same call without weights.
        let (mut dx, mut dw, mut db) = (
            vec![0f32; p.x.len()],
            vec![0f32; p.w.len()],
            vec![0f32; p.b.len()],
        );
        let mut ws = XentWorkspace::new();
        let st = linear_xent(
            &p.dims,
            &p.x,
            &p.w,
            &p.b,
            &p.targets,
            &cfg,
            Some(XentGrads {
                x: &mut dx,
                w: &mut dw,
                b: &mut db,
            }),
            &mut ws,
        )
        .unwrap();
        assert_eq!(st, st_n);
        assert_eq!((&dx, &dw, &db), (&dx_n, &dw_n, &db_n));
        assert_eq!(st_w, st_n);
        assert_eq!(dx_w, dx_n);
        assert_eq!(dw_w, dw_n);
        assert_eq!(db_w, db_n);
    }
}

#[test]
fn a_row_of_weight_zero_contributes_nothing() {
    let p = problem(7);
    let row = 4;
    for cfg in configs() {
        let mut weights = vec![1.0f32; p.dims.rows];
        weights[row] = 0.0;
        let (st, dx, dw, db) = run(&p, Some(&weights), &cfg);
        assert!(dx[row * p.dims.dim..(row + 1) * p.dims.dim]
            .iter()
            .all(|&g| g == 0.0));
        // Same as ignoring the row, except that it still counts in the mean's denominator.
        let mut ignored = Problem {
            targets: p.targets.clone(),
            x: p.x.clone(),
            w: p.w.clone(),
            b: p.b.clone(),
            dims: p.dims,
        };
        ignored.targets[row] = 0;
        let (st_i, dx_i, dw_i, db_i) = run(&ignored, None, &cfg);
        assert_eq!(st.n_valid, st_i.n_valid + 1);
        let k = st_i.n_valid as f64 / st.n_valid as f64;
        assert!((st.loss_sum - st_i.loss_sum).abs() < 1e-6);
        let scaled = |v: &[f32]| v.iter().map(|&g| g as f64 * k).collect::<Vec<f64>>();
        assert!(max_abs_diff(&dx, &scaled(&dx_i)) < 1e-6);
        assert!(max_abs_diff(&dw, &scaled(&dw_i)) < 1e-6);
        assert!(max_abs_diff(&db, &scaled(&db_i)) < 1e-6);
        // And a weight that is not zero does contribute (the check can fail).
        weights[row] = 0.5;
        let (_, dx2, _, _) = run(&p, Some(&weights), &cfg);
        assert!(dx2[row * p.dims.dim..(row + 1) * p.dims.dim]
            .iter()
            .any(|&g| g != 0.0));
    }
}

// ---------------------------------------------------------------------------------------------
// Decoders.

const V: usize = 9;
const F: usize = 6;
const P: usize = 4;
const B: usize = 3;
const T: usize = 5;

struct Caps {
    pooled: Vec<f32>,
    spatial: Vec<f32>,
    inputs: Vec<u32>,
    targets: Vec<u32>,
}

fn caps(seed: u64) -> Caps {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let spatial = rand_vec(&mut rng, B * P * F, 1.0);
    let pooled = rand_vec(&mut rng, B * F, 1.0);
    let lens = [T, 2, T - 1];
    let (mut inputs, mut targets) = (vec![0u32; B * T], vec![0u32; B * T]);
    for b in 0..B {
        inputs[b * T] = 1;
        for t in 0..lens[b] {
            let w = if t + 1 == lens[b] {
                2
            } else {
                rng.random_range(3..V as u32)
            };
            targets[b * T + t] = w;
            if t + 1 < T {
                inputs[b * T + t + 1] = w;
            }
        }
    }
    Caps {
        pooled,
        spatial,
        inputs,
        targets,
    }
}

/// `(loss, tokens, gradients)` of one pass over rows `rows` of `c` with `weights`, the loss taken
/// of the softmax at `temperature`.
fn pass(
    m: &mut dyn Decoder,
    c: &Caps,
    rows: &[usize],
    weights: Option<&[f32]>,
    temperature: f32,
) -> (f64, usize, Vec<f32>) {
    let (st, grads) = scaled_pass(m, c, rows, weights, 1.0, temperature);
    (st.loss as f64 + st.regulariser as f64, st.tokens, grads)
}

/// `(stats, gradients)` of one pass with `loss_scale`.
fn scaled_pass(
    m: &mut dyn Decoder,
    c: &Caps,
    rows: &[usize],
    weights: Option<&[f32]>,
    loss_scale: f32,
    temperature: f32,
) -> (PassStats, Vec<f32>) {
    let pick = |src: &[f32], w: usize| -> Vec<f32> {
        rows.iter()
            .flat_map(|&r| src[r * w..(r + 1) * w].iter().copied())
            .collect()
    };
    let pick_u = |src: &[u32]| -> Vec<u32> {
        rows.iter()
            .flat_map(|&r| src[r * T..(r + 1) * T].iter().copied())
            .collect()
    };
    let (pooled, spatial) = (pick(&c.pooled, F), pick(&c.spatial, P * F));
    let (inputs, targets) = (pick_u(&c.inputs), pick_u(&c.targets));
    let feats = Features {
        batch: rows.len(),
        dim: F,
        pooled: &pooled,
        spatial: m.needs_spatial().then_some(spatial.as_slice()),
        cells: if m.needs_spatial() { P } else { 0 },
    };
    let batch = TeacherBatch {
        batch: rows.len(),
        time: T,
        inputs: &inputs,
        targets: &targets,
        weights,
        loss_scale,
    };
    let opts = PassOptions {
        label_smoothing: 0.0,
        train: false,
        temperature,
    };
    m.params_mut().zero_grads();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let st = m.forward(&feats, &batch, &opts, true, &mut rng).unwrap();
    (st, m.params().grads.clone())
}

/// `got` matches `expected` to 1e-4 of the largest expected gradient, which must not be tiny.
fn assert_gradients_close(what: &str, got: &[f32], expected: &[f64]) {
    let largest = expected.iter().fold(0f64, |a, g| a.max(g.abs()));
    assert!(largest > 1e-3, "{what}: no gradient to compare");
    let worst = max_abs_diff(got, expected);
    assert!(
        worst < 1e-4 * (1.0 + largest),
        "{what} gradients off by {worst} (largest {largest})"
    );
}

/// The weighted pass of `weighted` equals `Σ_b w_b n_b (pass of row b alone) / N` computed with
/// `plain` (the same weights; for `sat` without the attention regulariser, which weighted passes
/// leave out), at the model's own temperature and at the sampling temperature 0.5 that
/// self-critical training scores its samples with.
fn check_weighted_pass(weighted: &mut dyn Decoder, plain: &mut dyn Decoder) {
    let c = caps(3);
    let w = [0.8f32, -1.7, 0.0];
    let kind = weighted.kind();
    let mut losses = Vec::new();
    for temperature in [1.0, 0.5] {
        let (loss, n, grads) = pass(weighted, &c, &[0, 1, 2], Some(&w), temperature);
        let (mut exp_loss, mut exp_grads) = (0f64, vec![0f64; grads.len()]);
        for (b, &wb) in w.iter().enumerate() {
            let (l, nb, g) = pass(plain, &c, &[b], None, temperature);
            exp_loss += wb as f64 * l * nb as f64 / n as f64;
            for (e, &gi) in exp_grads.iter_mut().zip(&g) {
                *e += wb as f64 * gi as f64 * nb as f64 / n as f64;
            }
        }
        assert!(
            (loss - exp_loss).abs() < 1e-4 * (1.0 + exp_loss.abs()),
            "{kind} T {temperature}: weighted loss {loss} vs {exp_loss}"
        );
        assert_gradients_close(
            &format!("{kind} T {temperature}: weighted"),
            &grads,
            &exp_grads,
        );
        // Unweighted passes are unchanged by the new field: weights of 1 give the same numbers.
        let (l1, _, g1) = pass(weighted, &c, &[0, 1, 2], Some(&[1.0; B]), temperature);
        let (l0, _, g0) = pass(plain, &c, &[0, 1, 2], None, temperature);
        assert!((l1 - l0).abs() < 1e-5, "{kind}: {l1} vs {l0}");
        let g0: Vec<f64> = g0.iter().map(|&g| g as f64).collect();
        assert!(
            max_abs_diff(&g1, &g0) < 1e-5,
            "{kind}: weight 1 changed gradients"
        );
        losses.push(loss);
    }
    assert_ne!(
        losses[0], losses[1],
        "{kind}: the temperature changed nothing"
    );
}

fn build(json: &str) -> Box<dyn Decoder> {
    let cfg: DecoderConfig = serde_json::from_str(json).unwrap();
    let dims = ModelDims {
        vocab: V,
        feature_dim: F,
        cells: if cfg.needs_spatial() { P } else { 0 },
    };
    cfg.build(dims, 4).unwrap()
}

#[test]
fn sat_honours_weights_without_the_attention_regulariser() {
    let mut weighted =
        build(r#"{"kind":"sat","embed":4,"hidden":5,"attention":3,"dropout":0.5,"alpha_c":1.0}"#);
    let mut plain =
        build(r#"{"kind":"sat","embed":4,"hidden":5,"attention":3,"dropout":0.5,"alpha_c":0.0}"#);
    check_weighted_pass(&mut *weighted, &mut *plain);
    // Without weights the regulariser is still there.
    let c = caps(3);
    let (l_reg, _, _) = pass(&mut *weighted, &c, &[0, 1, 2], None, 1.0);
    let (l_plain, _, _) = pass(&mut *plain, &c, &[0, 1, 2], None, 1.0);
    assert!(l_reg > l_plain);
}

#[test]
fn gru_init_honours_weights() {
    let j = r#"{"kind":"gru-init","embed":4,"hidden":5,"layers":2,"dropout":0.3}"#;
    check_weighted_pass(&mut *build(j), &mut *build(j));
}

#[test]
fn merge_lstm_honours_weights() {
    let j = r#"{"kind":"merge-lstm","embed":5,"hidden":5,"proj":3,"dropout":0.3}"#;
    check_weighted_pass(&mut *build(j), &mut *build(j));
}

#[test]
fn transformer_honours_weights() {
    let j = r#"{"kind":"transformer","d_model":8,"heads":2,"layers":1,"ff":16,"dropout":0.1,"max_len":8}"#;
    check_weighted_pass(&mut *build(j), &mut *build(j));
}

/// `loss_scale = 2.5` multiplies the cross-entropy's loss and gradient, whose gradient is that of
/// `xent_only` (the same weights without regularisers), and leaves any regulariser as it is.
fn check_loss_scale(m: &mut dyn Decoder, xent_only: &mut dyn Decoder) {
    let c = caps(5);
    let all = [0, 1, 2];
    let (one, g1) = scaled_pass(m, &c, &all, None, 1.0, 1.0);
    let (scaled, g2) = scaled_pass(m, &c, &all, None, 2.5, 1.0);
    let (_, gx) = scaled_pass(xent_only, &c, &all, None, 1.0, 1.0);
    let kind = m.kind();
    assert!(
        (scaled.loss - 2.5 * one.loss).abs() < 1e-5 * (1.0 + one.loss),
        "{kind}: loss {} vs 2.5 x {}",
        scaled.loss,
        one.loss
    );
    assert_eq!(scaled.regulariser, one.regulariser, "{kind}");
    // g(2.5) - g(1) = 1.5 g_xent.
    let diff: Vec<f32> = g2.iter().zip(&g1).map(|(a, b)| a - b).collect();
    let expected: Vec<f64> = gx.iter().map(|&g| 1.5 * g as f64).collect();
    assert_gradients_close(&format!("{kind}: scaled"), &diff, &expected);
}

#[test]
fn loss_scale_multiplies_the_cross_entropy_and_not_the_attention_regulariser() {
    let sat = |alpha_c: f32| {
        build(&format!(
            r#"{{"kind":"sat","embed":4,"hidden":5,"attention":3,"dropout":0.5,"alpha_c":{alpha_c}}}"#
        ))
    };
    let (mut with_reg, mut xent_only) = (sat(1.0), sat(0.0));
    check_loss_scale(&mut *with_reg, &mut *xent_only);
    for j in [
        r#"{"kind":"gru-init","embed":4,"hidden":5,"layers":2,"dropout":0.3}"#,
        r#"{"kind":"merge-lstm","embed":5,"hidden":5,"proj":3,"dropout":0.3}"#,
        r#"{"kind":"transformer","d_model":8,"heads":2,"layers":1,"ff":16,"dropout":0.1,"max_len":8}"#,
    ] {
        check_loss_scale(&mut *build(j), &mut *build(j));
    }
}

#[test]
fn bad_weights_are_shape_errors() {
    let mut m = build(r#"{"kind":"gru-init","embed":4,"hidden":5,"layers":1}"#);
    let c = caps(3);
    let feats = Features {
        batch: B,
        dim: F,
        pooled: &c.pooled,
        spatial: None,
        cells: 0,
    };
    let opts = PassOptions::default();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for w in [&[1.0f32, 2.0][..], &[1.0, f32::INFINITY, 0.0][..]] {
        let batch = TeacherBatch {
            batch: B,
            time: T,
            inputs: &c.inputs,
            targets: &c.targets,
            weights: Some(w),
            loss_scale: 1.0,
        };
        let e = m.forward(&feats, &batch, &opts, true, &mut rng);
        assert!(e.is_err());
    }
    for loss_scale in [0.0, -1.0, f32::NAN] {
        let batch = TeacherBatch {
            loss_scale,
            ..TeacherBatch::new(B, T, &c.inputs, &c.targets)
        };
        let e = m.forward(&feats, &batch, &opts, true, &mut rng);
        assert!(e.is_err(), "loss scale {loss_scale} accepted");
    }
}
