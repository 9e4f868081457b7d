//! Gradient checks of every fused kernel against central finite differences of the `f64`
//! reference forwards, and of the optimisers against element-wise reference steps.

use captioner_decode::kernels::gru::*;
use captioner_decode::kernels::lstm::*;
use captioner_decode::kernels::softmax_xent::*;
use captioner_decode::optim::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rand_vec(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

fn dot(a: &[f64], w: &[f32]) -> f64 {
    a.iter().zip(w).map(|(x, y)| x * *y as f64).sum()
}

/// Central difference of `f` w.r.t. `buf[i]`, using the step actually representable in `f32`.
fn fd(buf: &mut [f32], i: usize, f: &mut dyn FnMut(&[f32]) -> f64) -> f64 {
    let x0 = buf[i];
    let (xp, xm) = (x0 + 1e-3, x0 - 1e-3);
    buf[i] = xp;
    let lp = f(buf);
    buf[i] = xm;
    let lm = f(buf);
    buf[i] = x0;
    (lp - lm) / (xp as f64 - xm as f64)
}

/// Asserts analytic and numeric gradients agree; returns the worst absolute error.
fn assert_close(what: &str, analytic: &[f32], numeric: &[f64], tol: f64) -> f64 {
    assert_eq!(analytic.len(), numeric.len(), "{what}");
    let mut worst = 0f64;
    for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
        let err = (*a as f64 - n).abs();
        assert!(
            err <= tol * (1.0 + n.abs()),
            "{what}[{i}]: analytic {a} numeric {n}"
        );
        worst = worst.max(err);
    }
    worst
}

#[test]
fn lstm_forward_matches_reference_and_gradients_match_finite_differences() {
    check_lstm(6);
}

/// 37 = two 16-lane vectors and a tail: the vectorised gate loops run, not only their tails.
#[test]
fn lstm_gradients_match_finite_differences_across_vector_lanes() {
    check_lstm(37);
}

fn check_lstm(hidden: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let d = SeqDims {
        seq_len: 4,
        batch: 3,
        input: 5,
        hidden,
    };
    let g = 4 * d.hidden;
    let (bh, n_x) = (d.batch * d.hidden, d.seq_len * d.batch * d.input);
    let mut w_ih = rand_vec(&mut rng, g * d.input, 0.5);
    let mut w_hh = rand_vec(&mut rng, g * d.hidden, 0.5);
    let mut b_ih = rand_vec(&mut rng, g, 0.5);
    let mut b_hh = rand_vec(&mut rng, g, 0.5);
    let mut x = rand_vec(&mut rng, n_x, 1.0);
    let mut h0 = rand_vec(&mut rng, bh, 0.5);
    let mut c0 = rand_vec(&mut rng, bh, 0.5);
    // Loss = <w_out, outputs> + <w_h, h_T> + <w_c, c_T> with random weights.
    let w_out = rand_vec(&mut rng, d.seq_len * bh, 1.0);
    let w_h = rand_vec(&mut rng, bh, 1.0);
    let w_c = rand_vec(&mut rng, bh, 1.0);

    let p = LstmParams {
        w_ih: &w_ih,
        w_hh: &w_hh,
        b_ih: &b_ih,
        b_hh: &b_hh,
    };
    let mut cache = LstmCache::new();
    lstm_forward(&d, &p, &x, Some(&h0), Some(&c0), &mut cache).unwrap();
    let (out_ref, c_ref) = lstm_forward_ref(&d, &p, &x, &h0, &c0);
    for (a, b) in cache.output().iter().zip(&out_ref) {
        assert!((*a as f64 - b).abs() < 1e-5);
    }
    for (a, b) in cache.c_last().iter().zip(&c_ref) {
        assert!((*a as f64 - b).abs() < 1e-5);
    }

    let (mut dw_ih, mut dw_hh) = (vec![0f32; w_ih.len()], vec![0f32; w_hh.len()]);
    let (mut db_ih, mut db_hh) = (vec![0f32; g], vec![0f32; g]);
    let (mut dx, mut dh0, mut dc0) = (vec![0f32; n_x], vec![0f32; bh], vec![0f32; bh]);
    let mut grads = LstmParamGrads {
        w_ih: &mut dw_ih,
        w_hh: &mut dw_hh,
        b_ih: &mut db_ih,
        b_hh: &mut db_hh,
    };
    let inputs = LstmInputGrads {
        x: Some(&mut dx),
        h0: Some(&mut dh0),
        c0: Some(&mut dc0),
    };
    lstm_backward(
        &d,
        &p,
        &x,
        &mut cache,
        &w_out,
        Some(&w_h),
        Some(&w_c),
        &mut grads,
        inputs,
    )
    .unwrap();

    let loss = |w_ih: &[f32],
                w_hh: &[f32],
                b_ih: &[f32],
                b_hh: &[f32],
                x: &[f32],
                h0: &[f32],
                c0: &[f32]| {
        let p = LstmParams {
            w_ih,
            w_hh,
            b_ih,
            b_hh,
        };
        let (out, c_t) = lstm_forward_ref(&d, &p, x, h0, c0);
        let h_t = &out[(d.seq_len - 1) * bh..];
        dot(&out, &w_out) + dot(h_t, &w_h) + dot(&c_t, &w_c)
    };
    macro_rules! check {
        ($name:literal, $buf:ident, $grad:expr) => {{
            let numeric: Vec<f64> = (0..$buf.len())
                .map(|i| {
                    let mut b = $buf.clone();
                    fd(&mut b, i, &mut |v: &[f32]| {
                        let mut all =
                            [&w_ih, &w_hh, &b_ih, &b_hh, &x, &h0, &c0].map(|s| s.as_slice());
                        let idx = ["w_ih", "w_hh", "b_ih", "b_hh", "x", "h0", "c0"]
                            .iter()
                            .position(|n| *n == $name)
                            .unwrap();
                        all[idx] = v;
                        loss(all[0], all[1], all[2], all[3], all[4], all[5], all[6])
                    })
                })
                .collect();
            let worst = assert_close($name, $grad, &numeric, 2e-3);
            eprintln!("lstm d{}: worst abs err {worst:.2e}", $name);
        }};
    }
    check!("w_ih", w_ih, &dw_ih);
    check!("w_hh", w_hh, &dw_hh);
    check!("b_ih", b_ih, &db_ih);
    check!("b_hh", b_hh, &db_hh);
    check!("x", x, &dx);
    check!("h0", h0, &dh0);
    check!("c0", c0, &dc0);
    // Silence "unused mut" on buffers only perturbed through clones.
    let _ = (
        &mut w_ih, &mut w_hh, &mut b_ih, &mut b_hh, &mut x, &mut h0, &mut c0,
    );
}

#[test]
fn gru_forward_matches_reference_and_gradients_match_finite_differences() {
    check_gru(6);
}

/// As [`lstm_gradients_match_finite_differences_across_vector_lanes`].
#[test]
fn gru_gradients_match_finite_differences_across_vector_lanes() {
    check_gru(37);
}

fn check_gru(hidden: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let d = SeqDims {
        seq_len: 4,
        batch: 3,
        input: 5,
        hidden,
    };
    let g = 3 * d.hidden;
    let (bh, n_x) = (d.batch * d.hidden, d.seq_len * d.batch * d.input);
    let w_ih = rand_vec(&mut rng, g * d.input, 0.5);
    let w_hh = rand_vec(&mut rng, g * d.hidden, 0.5);
    let b_ih = rand_vec(&mut rng, g, 0.5);
    let b_hh = rand_vec(&mut rng, g, 0.5);
    let x = rand_vec(&mut rng, n_x, 1.0);
    let h0 = rand_vec(&mut rng, bh, 0.5);
    let w_out = rand_vec(&mut rng, d.seq_len * bh, 1.0);
    let w_h = rand_vec(&mut rng, bh, 1.0);

    let p = GruParams {
        w_ih: &w_ih,
        w_hh: &w_hh,
        b_ih: &b_ih,
        b_hh: &b_hh,
    };
    let mut cache = GruCache::new();
    gru_forward(&d, &p, &x, Some(&h0), &mut cache).unwrap();
    let out_ref = gru_forward_ref(&d, &p, &x, &h0);
    for (a, b) in cache.output().iter().zip(&out_ref) {
        assert!((*a as f64 - b).abs() < 1e-5);
    }
    let (mut dw_ih, mut dw_hh) = (vec![0f32; w_ih.len()], vec![0f32; w_hh.len()]);
    let (mut db_ih, mut db_hh) = (vec![0f32; g], vec![0f32; g]);
    let (mut dx, mut dh0) = (vec![0f32; n_x], vec![0f32; bh]);
    let mut grads = GruParamGrads {
        w_ih: &mut dw_ih,
        w_hh: &mut dw_hh,
        b_ih: &mut db_ih,
        b_hh: &mut db_hh,
    };
    let inputs = GruInputGrads {
        x: Some(&mut dx),
        h0: Some(&mut dh0),
    };
    gru_backward(
        &d,
        &p,
        &x,
        &mut cache,
        &w_out,
        Some(&w_h),
        &mut grads,
        inputs,
    )
    .unwrap();

    let names = ["w_ih", "w_hh", "b_ih", "b_hh", "x", "h0"];
    let bufs = [&w_ih, &w_hh, &b_ih, &b_hh, &x, &h0];
    let analytic = [&dw_ih, &dw_hh, &db_ih, &db_hh, &dx, &dh0];
    for (k, name) in names.iter().enumerate() {
        let numeric: Vec<f64> = (0..bufs[k].len())
            .map(|i| {
                let mut b = bufs[k].clone();
                fd(&mut b, i, &mut |v: &[f32]| {
                    let mut all = bufs.map(|s| s.as_slice());
                    all[k] = v;
                    let p = GruParams {
                        w_ih: all[0],
                        w_hh: all[1],
                        b_ih: all[2],
                        b_hh: all[3],
                    };
                    let out = gru_forward_ref(&d, &p, all[4], all[5]);
                    dot(&out, &w_out) + dot(&out[(d.seq_len - 1) * bh..], &w_h)
                })
            })
            .collect();
        let worst = assert_close(name, analytic[k], &numeric, 2e-3);
        eprintln!("gru d{name}: worst abs err {worst:.2e}");
    }
}

/// Random inputs for the fused loss: `x`, `w`, `b` (scaled by `bias_scale`) and targets, with
/// the rows in `ignored` set to the ignored index 0.
fn xent_inputs(
    rng: &mut ChaCha8Rng,
    dims: &XentDims,
    bias_scale: f32,
    ignored: &[usize],
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<u32>) {
    let x = rand_vec(rng, dims.rows * dims.dim, 1.0);
    let w = rand_vec(rng, dims.vocab * dims.dim, 1.0);
    let b = rand_vec(rng, dims.vocab, bias_scale);
    let mut targets: Vec<u32> = (0..dims.rows)
        .map(|_| rng.random_range(1..dims.vocab as u32))
        .collect();
    for &r in ignored {
        targets[r] = 0;
    }
    (x, w, b, targets)
}

/// [`linear_xent`] with gradients, checked against [`linear_xent_ref`]; returns the loss and the
/// gradients `(dx, dw, db)`. `dx` starts as garbage: the kernel must overwrite it.
fn xent_against_reference(
    dims: &XentDims,
    (x, w, b, targets): &(Vec<f32>, Vec<f32>, Vec<f32>, Vec<u32>),
    cfg: &XentConfig,
    loss_tol: f64,
) -> (XentStats, Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mut dx, mut dw, mut db) = (
        vec![9f32; x.len()],
        vec![0f32; w.len()],
        vec![0f32; b.len()],
    );
    let grads = XentGrads {
        x: &mut dx,
        w: &mut dw,
        b: &mut db,
    };
    let mut ws = XentWorkspace::new();
    let st = linear_xent(dims, x, w, b, targets, cfg, Some(grads), &mut ws).unwrap();
    let (loss_ref, dx_r, dw_r, db_r) = linear_xent_ref(dims, x, w, b, targets, cfg);
    assert!(
        (st.loss as f64 - loss_ref).abs() < loss_tol,
        "{} vs {loss_ref}",
        st.loss
    );
    assert_close("xent dx", &dx, &dx_r, 1e-5);
    assert_close("xent dw", &dw, &dw_r, 1e-5);
    assert_close("xent db", &db, &db_r, 1e-5);
    (st, dx, dw, db)
}

/// Rows wider than the 16-lane vectors (with a tail), and enough rows for several row blocks,
/// each summing its own part of the bias gradient.
#[test]
fn fused_xent_matches_reference_with_a_wide_vocabulary() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let dims = XentDims {
        rows: 70,
        dim: 9,
        vocab: 4011,
    };
    let inputs = xent_inputs(&mut rng, &dims, 2.0, &[5]);
    for (smoothing, chunk_rows, temperature) in [(0.0, 1024, 1.0), (0.1, 16, 0.5)] {
        let cfg = XentConfig {
            label_smoothing: smoothing,
            temperature,
            ignore_index: Some(0),
            chunk_rows,
        };
        let (st, dx, dw, db) = xent_against_reference(&dims, &inputs, &cfg, 1e-4);
        // The blocks are fixed, not one per thread: one thread gives the same bits.
        let single = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let (st1, dx1, dw1, db1) =
            single.install(|| xent_against_reference(&dims, &inputs, &cfg, 1e-4));
        assert_eq!((st.loss_sum, dx, dw, db), (st1.loss_sum, dx1, dw1, db1));
    }
}

#[test]
fn fused_xent_matches_reference_and_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let dims = XentDims {
        rows: 11,
        dim: 7,
        vocab: 13,
    };
    let inputs = xent_inputs(&mut rng, &dims, 1.0, &[2, 7]);
    let (x, w, b, targets) = &inputs;
    for (smoothing, chunk_rows, temperature) in
        [(0.0, 256, 1.0), (0.1, 3, 1.0), (0.3, 1, 0.5), (0.0, 5, 1.7)]
    {
        let cfg = XentConfig {
            label_smoothing: smoothing,
            temperature,
            ignore_index: Some(0),
            chunk_rows,
        };
        let (st, dx, dw, _) = xent_against_reference(&dims, &inputs, &cfg, 1e-5);
        assert_eq!(st.n_valid, 9);
        // And the analytic reference itself against finite differences of its loss.
        let loss_of =
            |x: &[f32], w: &[f32], b: &[f32]| linear_xent_ref(&dims, x, w, b, targets, &cfg).0;
        let num_dw: Vec<f64> = (0..w.len())
            .map(|i| fd(&mut w.clone(), i, &mut |v: &[f32]| loss_of(x, v, b)))
            .collect();
        let num_dx: Vec<f64> = (0..x.len())
            .map(|i| fd(&mut x.clone(), i, &mut |v: &[f32]| loss_of(v, w, b)))
            .collect();
        let worst = assert_close("xent dw (fd)", &dw, &num_dw, 1e-3).max(assert_close(
            "xent dx (fd)",
            &dx,
            &num_dx,
            1e-3,
        ));
        eprintln!(
            "xent smoothing {smoothing} chunk {chunk_rows} T {temperature}: \
             worst abs err vs fd {worst:.2e}"
        );
        // Evaluation path: same loss, no gradients.
        let mut ws = XentWorkspace::new();
        let st2 = linear_xent(&dims, x, w, b, targets, &cfg, None, &mut ws).unwrap();
        assert!((st2.loss - st.loss).abs() < 1e-6);
    }
}

#[test]
fn xent_rejects_bad_targets_and_shapes() {
    let dims = XentDims {
        rows: 2,
        dim: 2,
        vocab: 3,
    };
    let mut ws = XentWorkspace::new();
    // Two rows of `x` (2 x 2), a 3-word projection, and the given targets and config.
    let mut loss = |x_len: usize, targets: &[u32], cfg: &XentConfig| {
        let x = vec![0.0; x_len];
        linear_xent(&dims, &x, &[0.0; 6], &[0.0; 3], targets, cfg, None, &mut ws)
    };
    let cfg = XentConfig::default();
    assert!(matches!(
        loss(4, &[1, 3], &cfg),
        Err(captioner_decode::KernelError::Target {
            row: 1,
            target: 3,
            ..
        })
    ));
    assert!(matches!(
        loss(3, &[1, 2], &cfg),
        Err(captioner_decode::KernelError::Len { .. })
    ));
    assert!(loss(4, &[1, 2], &cfg).is_ok());
    for temperature in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let cfg = XentConfig {
            temperature,
            ..XentConfig::default()
        };
        let err = loss(4, &[1, 2], &cfg);
        assert!(
            matches!(err, Err(captioner_decode::KernelError::Invalid(_))),
            "temperature {temperature}: {err:?}"
        );
    }
}

/// A reference step: `(step number, params, grads)`.
type RefStep<'a> = dyn FnMut(u32, &mut [f64], &[f64]) + 'a;

fn run_optimizer(opt: &mut dyn Optimizer, reference: &mut RefStep) {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    // Longer than one parallel chunk so the split is exercised.
    let n = 70_001;
    let mut p = rand_vec(&mut rng, n, 1.0);
    let mut p_ref: Vec<f64> = p.iter().map(|&v| v as f64).collect();
    for t in 1..=5 {
        let g = rand_vec(&mut rng, n, 1.0);
        let g_ref: Vec<f64> = g.iter().map(|&v| v as f64).collect();
        opt.step(&mut p, &g).unwrap();
        reference(t, &mut p_ref, &g_ref);
    }
    let worst = p
        .iter()
        .zip(&p_ref)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-5, "worst {worst}");
}

#[test]
fn optimizers_match_reference_steps() {
    let n = 70_001;
    for cfg in [
        AdamConfig::adam(1e-2),
        AdamConfig {
            weight_decay: 0.1,
            ..AdamConfig::adam(1e-2)
        },
        AdamConfig::adamw(1e-2),
    ] {
        let (mut m, mut v) = (vec![0f64; n], vec![0f64; n]);
        run_optimizer(&mut Adam::new(n, cfg), &mut |t, p, g| {
            adam_step_ref(&cfg, t, p, g, &mut m, &mut v)
        });
    }
    for cfg in [
        RmsPropConfig::new(1e-2),
        RmsPropConfig {
            centered: true,
            momentum: 0.9,
            weight_decay: 0.01,
            ..RmsPropConfig::new(1e-2)
        },
        RmsPropConfig {
            momentum: 0.5,
            ..RmsPropConfig::new(1e-3)
        },
    ] {
        let (mut sq, mut ga, mut mb) = (vec![0f64; n], vec![0f64; n], vec![0f64; n]);
        run_optimizer(&mut RmsProp::new(n, cfg), &mut |_, p, g| {
            rmsprop_step_ref(&cfg, p, g, &mut sq, &mut ga, &mut mb)
        });
    }
}

#[test]
fn clip_grad_norm_scales_to_max_norm() {
    let mut g = vec![3.0f32, 4.0];
    let norm = clip_grad_norm(&mut g, 1.0);
    assert!((norm - 5.0).abs() < 1e-6);
    assert!((g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5);
    let mut g = vec![0.3f32, 0.4];
    clip_grad_norm(&mut g, 1.0);
    assert_eq!(g, vec![0.3, 0.4]);
}

#[test]
fn lstm_and_gru_reject_mismatched_shapes() {
    let d = SeqDims {
        seq_len: 2,
        batch: 1,
        input: 2,
        hidden: 2,
    };
    let z = vec![0f32; 64];
    let p = LstmParams {
        w_ih: &z[..16],
        w_hh: &z[..16],
        b_ih: &z[..8],
        b_hh: &z[..7],
    };
    assert!(lstm_forward(&d, &p, &z[..4], None, None, &mut LstmCache::new()).is_err());
    let p = GruParams {
        w_ih: &z[..12],
        w_hh: &z[..12],
        b_ih: &z[..6],
        b_hh: &z[..6],
    };
    assert!(gru_forward(&d, &p, &z[..5], None, &mut GruCache::new()).is_err());
    let mut cache = GruCache::new();
    gru_forward(&d, &p, &z[..4], None, &mut cache).unwrap();
    let d2 = SeqDims { seq_len: 1, ..d };
    let (mut a, mut b, mut c, mut e) =
        (vec![0f32; 12], vec![0f32; 12], vec![0f32; 6], vec![0f32; 6]);
    let mut grads = GruParamGrads {
        w_ih: &mut a,
        w_hh: &mut b,
        b_ih: &mut c,
        b_hh: &mut e,
    };
    let err = gru_backward(
        &d2,
        &p,
        &z[..2],
        &mut cache,
        &z[..2],
        None,
        &mut grads,
        GruInputGrads::default(),
    );
    assert!(matches!(
        err,
        Err(captioner_decode::KernelError::CacheMismatch { .. })
    ));
}

/// The recurrences multiply by a transposed copy of `w_hh` for longer sequences and by a
/// transposed view for short ones (generation's one-step calls): both must give the reference.
#[test]
fn recurrences_match_the_reference_on_both_sides_of_the_transposed_copy() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for seq_len in [1, 2, 3, 4, 5, 9] {
        let d = SeqDims {
            seq_len,
            batch: 3,
            input: 5,
            hidden: 7,
        };
        let bh = d.batch * d.hidden;
        let x = rand_vec(&mut rng, seq_len * d.batch * d.input, 1.0);
        let (h0, c0) = (rand_vec(&mut rng, bh, 0.5), rand_vec(&mut rng, bh, 0.5));
        for gates in [4, 3] {
            let g = gates * d.hidden;
            let w_ih = rand_vec(&mut rng, g * d.input, 0.5);
            let w_hh = rand_vec(&mut rng, g * d.hidden, 0.5);
            let (b_ih, b_hh) = (rand_vec(&mut rng, g, 0.5), rand_vec(&mut rng, g, 0.5));
            let (got, want): (Vec<f32>, Vec<f64>) = if gates == 4 {
                let p = LstmParams {
                    w_ih: &w_ih,
                    w_hh: &w_hh,
                    b_ih: &b_ih,
                    b_hh: &b_hh,
                };
                let mut cache = LstmCache::new();
                lstm_forward(&d, &p, &x, Some(&h0), Some(&c0), &mut cache).unwrap();
                let got = cache.output().to_vec();
                (got, lstm_forward_ref(&d, &p, &x, &h0, &c0).0)
            } else {
                let p = GruParams {
                    w_ih: &w_ih,
                    w_hh: &w_hh,
                    b_ih: &b_ih,
                    b_hh: &b_hh,
                };
                let mut cache = GruCache::new();
                gru_forward(&d, &p, &x, Some(&h0), &mut cache).unwrap();
                let got = cache.output().to_vec();
                (got, gru_forward_ref(&d, &p, &x, &h0))
            };
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-5, "T={seq_len} gates={gates}");
            }
        }
    }
}
