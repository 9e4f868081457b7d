//! The candle custom ops against candle's own autograd on the equivalent unfused graph.

use candle_core::{Device, Tensor, Var, D};
use captioner_decode::kernels::softmax_xent::XentConfig;
use captioner_decode::ops;

fn var(shape: &[usize], seed: u64) -> Var {
    // Deterministic pseudo-random values in [-0.5, 0.5) without pulling an RNG into the graph.
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| {
            let x = (i as u64 + 1)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xBF58_476D_1CE4_E5B9));
            ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    Var::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn sigmoid(x: &Tensor) -> Tensor {
    (x.neg().unwrap().exp().unwrap() + 1.0)
        .unwrap()
        .recip()
        .unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn assert_grads_match(vars: &[(&str, &Var)], fused: &Tensor, plain: &Tensor) {
    let (gf, gp) = (fused.backward().unwrap(), plain.backward().unwrap());
    for (name, v) in vars {
        let (a, b) = (
            gf.get(v.as_tensor()).unwrap(),
            gp.get(v.as_tensor()).unwrap(),
        );
        let d = max_diff(a, b);
        eprintln!("d{name}: max |fused - autograd| = {d:.2e}");
        assert!(d < 2e-5, "d{name} differs by {d}");
    }
}

#[test]
fn lstm_op_matches_candle_autograd() {
    let (t, b, i, h) = (3, 2, 4, 5);
    let (w_ih, w_hh, b_ih, b_hh) = (
        var(&[4 * h, i], 1),
        var(&[4 * h, h], 2),
        var(&[4 * h], 3),
        var(&[4 * h], 4),
    );
    let (x, h0, c0) = (var(&[t, b, i], 5), var(&[b, h], 6), var(&[b, h], 7));
    let w_out = var(&[t, b, h], 8).as_tensor().detach();

    let x_proj = x.flatten_to(1).unwrap().matmul(&w_ih.t().unwrap()).unwrap();
    let x_proj = x_proj
        .broadcast_add(&(b_ih.as_tensor() + b_hh.as_tensor()).unwrap())
        .unwrap()
        .reshape((t, b, 4 * h))
        .unwrap();
    let out = ops::lstm(&x_proj, &w_hh, &h0, &c0).unwrap();
    let fused = (&out * &w_out).unwrap().sum_all().unwrap();

    let (mut hs, mut cs) = (h0.as_tensor().clone(), c0.as_tensor().clone());
    let mut outs = Vec::new();
    for step in 0..t {
        let xt = x.get(step).unwrap();
        let g = xt
            .matmul(&w_ih.t().unwrap())
            .unwrap()
            .broadcast_add(&b_ih)
            .unwrap();
        let g = (g + hs
            .matmul(&w_hh.t().unwrap())
            .unwrap()
            .broadcast_add(&b_hh)
            .unwrap())
        .unwrap();
        let gs = g.chunk(4, 1).unwrap();
        let (ig, fg, gg, og) = (
            sigmoid(&gs[0]),
            sigmoid(&gs[1]),
            gs[2].tanh().unwrap(),
            sigmoid(&gs[3]),
        );
        cs = ((fg * &cs).unwrap() + (ig * gg).unwrap()).unwrap();
        hs = (og * cs.tanh().unwrap()).unwrap();
        outs.push(hs.clone());
    }
    let plain_out = Tensor::stack(&outs, 0).unwrap();
    assert!(max_diff(&out, &plain_out) < 1e-5);
    let plain = (&plain_out * &w_out).unwrap().sum_all().unwrap();
    let vars = [
        ("w_ih", &w_ih),
        ("w_hh", &w_hh),
        ("b_ih", &b_ih),
        ("b_hh", &b_hh),
        ("x", &x),
        ("h0", &h0),
        ("c0", &c0),
    ];
    assert_grads_match(&vars, &fused, &plain);
}

#[test]
fn gru_op_matches_candle_autograd() {
    let (t, b, i, h) = (3, 2, 4, 5);
    let (w_ih, w_hh, b_ih, b_hh) = (
        var(&[3 * h, i], 11),
        var(&[3 * h, h], 12),
        var(&[3 * h], 13),
        var(&[3 * h], 14),
    );
    let (x, h0) = (var(&[t, b, i], 15), var(&[b, h], 16));
    let w_out = var(&[t, b, h], 18).as_tensor().detach();

    let x_proj = x.flatten_to(1).unwrap().matmul(&w_ih.t().unwrap()).unwrap();
    let x_proj = x_proj
        .broadcast_add(&b_ih)
        .unwrap()
        .reshape((t, b, 3 * h))
        .unwrap();
    let out = ops::gru(&x_proj, &w_hh, &b_hh, &h0).unwrap();
    let fused = (&out * &w_out).unwrap().sum_all().unwrap();

    let mut hs = h0.as_tensor().clone();
    let mut outs = Vec::new();
    for step in 0..t {
        let gi = x
            .get(step)
            .unwrap()
            .matmul(&w_ih.t().unwrap())
            .unwrap()
            .broadcast_add(&b_ih)
            .unwrap();
        let gh = hs
            .matmul(&w_hh.t().unwrap())
            .unwrap()
            .broadcast_add(&b_hh)
            .unwrap();
        let (gi, gh) = (gi.chunk(3, 1).unwrap(), gh.chunk(3, 1).unwrap());
        let r = sigmoid(&(&gi[0] + &gh[0]).unwrap());
        let z = sigmoid(&(&gi[1] + &gh[1]).unwrap());
        let n = (&gi[2] + (r * &gh[2]).unwrap()).unwrap().tanh().unwrap();
        let one_minus_z = z.affine(-1.0, 1.0).unwrap();
        hs = ((one_minus_z * n).unwrap() + (z * &hs).unwrap()).unwrap();
        outs.push(hs.clone());
    }
    let plain_out = Tensor::stack(&outs, 0).unwrap();
    assert!(max_diff(&out, &plain_out) < 1e-5);
    let plain = (&plain_out * &w_out).unwrap().sum_all().unwrap();
    let vars = [
        ("w_ih", &w_ih),
        ("w_hh", &w_hh),
        ("b_ih", &b_ih),
        ("b_hh", &b_hh),
        ("x", &x),
        ("h0", &h0),
    ];
    assert_grads_match(&vars, &fused, &plain);
}

#[test]
fn linear_cross_entropy_op_matches_candle_autograd() {
    let (n, d, v) = (7, 6, 11);
    let (x, w, b) = (var(&[n, d], 21), var(&[v, d], 22), var(&[v], 23));
    let targets: Vec<u32> = vec![3, 0, 10, 1, 0, 7, 2];
    let eps = 0.1f32;
    let cfg = XentConfig {
        label_smoothing: eps,
        ignore_index: Some(0),
        chunk_rows: 2,
        ..XentConfig::default()
    };
    // Scale by 2 so the op's handling of the upstream gradient is exercised.
    let fused = (ops::linear_cross_entropy(&x, &w, &b, &targets, cfg).unwrap() * 2.0).unwrap();

    let logits = x
        .matmul(&w.t().unwrap())
        .unwrap()
        .broadcast_add(&b)
        .unwrap();
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
    let n_valid = targets.iter().filter(|&&t| t != 0).count() as f64;
    let mut q = vec![0f32; n * v];
    for (r, &t) in targets.iter().enumerate() {
        if t == 0 {
            continue;
        }
        for j in 0..v {
            q[r * v + j] = eps / v as f32 + if j == t as usize { 1.0 - eps } else { 0.0 };
        }
    }
    let q = Tensor::from_vec(q, (n, v), &Device::Cpu).unwrap();
    let plain = ((q * logp).unwrap().sum_all().unwrap() * (-2.0 / n_valid)).unwrap();
    let (lf, lp) = (
        fused.to_scalar::<f32>().unwrap(),
        plain.to_scalar::<f32>().unwrap(),
    );
    assert!((lf - lp).abs() < 1e-5, "{lf} vs {lp}");
    assert_grads_match(&[("x", &x), ("w", &w), ("b", &b)], &fused, &plain);
}

#[test]
fn ops_reject_bad_shapes() {
    let x = Tensor::zeros((2, 3, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((8, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    let h = Tensor::zeros((3, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(ops::lstm(&x, &w, &h, &h).is_err());
    let xs = Tensor::zeros((4, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    let b = Tensor::zeros(5, candle_core::DType::F32, &Device::Cpu).unwrap();
    let wv = Tensor::zeros((5, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(ops::linear_cross_entropy(&xs, &wv, &b, &[1, 2, 3], XentConfig::default()).is_err());
    assert!(ops::linear_cross_entropy(&xs, &wv, &b, &[1, 2, 3, 9], XentConfig::default()).is_err());
}
