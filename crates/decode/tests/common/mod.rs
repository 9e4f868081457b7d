//! The contract every decoder over pooled image vectors (`gru-init`, `merge-lstm`) must keep:
//! gradients against finite differences, gradient accumulation, teacher forcing against step-wise
//! generation, `select` for beams, and a tiny training run that learns its captions. Each test
//! file builds its own model and calls these; the attention decoders' tests use only
//! [`tempered_nll`].

#![allow(dead_code)] // Each test file uses a different subset.

use captioner_decode::optim::{Adam, AdamConfig, Optimizer};
use captioner_decode::{Decoder, Features, ModelDims, PassOptions, TeacherBatch};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const V: usize = 11;
pub const F: usize = 6;
pub const B: usize = 3;
pub const T: usize = 5;

pub fn dims() -> ModelDims {
    ModelDims {
        vocab: V,
        feature_dim: F,
        cells: 0,
    }
}

pub fn feats(pooled: &[f32]) -> Features<'_> {
    Features {
        batch: pooled.len() / F,
        dim: F,
        pooled,
        spatial: None,
        cells: 0,
    }
}

/// Random features and a `[B, T]` batch starting with `<start>`, with padded tails.
pub fn data(seed: u64) -> (Vec<f32>, Vec<u32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pooled: Vec<f32> = (0..B * F).map(|_| rng.random_range(-1.0..1.0)).collect();
    let lens = [T, T - 2, T - 1];
    let (mut inputs, mut targets) = (vec![0u32; B * T], vec![0u32; B * T]);
    for b in 0..B {
        let words: Vec<u32> = (0..lens[b])
            .map(|_| rng.random_range(3..V as u32))
            .collect();
        inputs[b * T] = 1;
        for t in 0..lens[b] {
            if t + 1 < T {
                inputs[b * T + t + 1] = words[t];
            }
            targets[b * T + t] = if t + 1 == lens[b] { 2 } else { words[t] };
        }
    }
    (pooled, inputs, targets)
}

pub fn teacher<'a>(inputs: &'a [u32], targets: &'a [u32]) -> TeacherBatch<'a> {
    TeacherBatch {
        batch: inputs.len() / T,
        time: T,
        inputs,
        targets,
        weights: None,
        loss_scale: 1.0,
    }
}

pub fn loss_of(
    m: &mut dyn Decoder,
    pooled: &[f32],
    inputs: &[u32],
    targets: &[u32],
    opts: &PassOptions,
    grads: bool,
) -> f32 {
    // The same seed every call, so dropout masks repeat and finite differences stay valid.
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    m.forward(
        &feats(pooled),
        &teacher(inputs, targets),
        opts,
        grads,
        &mut rng,
    )
    .unwrap()
    .loss
}

/// Analytic gradients of every parameter tensor against central differences of the loss.
pub fn gradcheck(m: &mut dyn Decoder, opts: PassOptions) {
    let (pooled, inputs, targets) = data(3);
    // Larger weights than the default init so every gradient is well above rounding noise.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for v in m.params_mut().values.iter_mut() {
        *v = rng.random_range(-0.5..0.5);
    }
    m.params_mut().zero_grads();
    let l0 = loss_of(m, &pooled, &inputs, &targets, &opts, true);
    let analytic = m.params().grads.clone();
    // `grads = false` must leave the gradient buffer alone and give the same loss.
    let l1 = loss_of(m, &pooled, &inputs, &targets, &opts, false);
    assert_eq!(l0, l1);
    assert_eq!(m.params().grads, analytic);

    let entries: Vec<(String, std::ops::Range<usize>)> = m
        .params()
        .names()
        .map(|(n, _)| n.to_string())
        .collect::<Vec<_>>()
        .into_iter()
        .map(|n| {
            let id = m.params().id(&n).unwrap();
            (n, m.params().range(id))
        })
        .collect();
    let (mut checked, mut kinks) = (0, 0);
    for (name, range) in entries {
        let n = range.len();
        let idx: Vec<usize> = if n <= 30 {
            range.clone().collect()
        } else {
            (0..30)
                .map(|_| range.start + rng.random_range(0..n))
                .collect()
        };
        let mut worst = 0f64;
        let mut max_grad = 0f64;
        for i in idx {
            let x0 = m.params().values[i];
            let eps = 2e-3f32;
            m.params_mut().values[i] = x0 + eps;
            let lp = loss_of(m, &pooled, &inputs, &targets, &opts, false) as f64;
            m.params_mut().values[i] = x0 - eps;
            let lm = loss_of(m, &pooled, &inputs, &targets, &opts, false) as f64;
            m.params_mut().values[i] = x0;
            let step = (x0 + eps) as f64 - (x0 - eps) as f64;
            let numeric = (lp - lm) / step;
            let a = analytic[i] as f64;
            let mut err = (a - numeric).abs();
            if err > 3e-4 + 1e-2 * numeric.abs() {
                // A relu kink inside [x - eps, x + eps] spoils the central difference; the
                // analytic gradient must then match one of the one-sided differences.
                let l0 = loss_of(m, &pooled, &inputs, &targets, &opts, false) as f64;
                let fwd = (lp - l0) / ((x0 + eps) as f64 - x0 as f64);
                let bwd = (l0 - lm) / (x0 as f64 - (x0 - eps) as f64);
                let one_sided = (a - fwd).abs().min((a - bwd).abs());
                eprintln!(
                    "{name} entry {}: central {numeric}, one-sided {fwd} / {bwd}, analytic {a}",
                    i - range.start
                );
                assert!(
                    one_sided <= 3e-4 + 1e-2 * a.abs(),
                    "{name} entry {}: analytic {a} numeric {numeric} (one-sided {fwd} / {bwd})",
                    i - range.start
                );
                kinks += 1;
                err = one_sided;
            }
            worst = worst.max(err);
            max_grad = max_grad.max(a.abs());
            checked += 1;
        }
        eprintln!("{name}: worst abs err {worst:.2e} (largest gradient {max_grad:.2e})");
        assert!(max_grad > 1e-4, "{name} gets no gradient at all");
    }
    assert!(checked > 100);
    eprintln!("{kinks} of {checked} entries needed a one-sided difference");
    assert!(
        kinks * 4 <= checked,
        "{kinks} of {checked} entries sit on a relu kink"
    );
}

/// Running the same batch twice with gradients on adds them up.
pub fn check_gradients_accumulate(m: &mut dyn Decoder) {
    let (pooled, inputs, targets) = data(4);
    let opts = PassOptions::default();
    loss_of(m, &pooled, &inputs, &targets, &opts, true);
    let once = m.params().grads.clone();
    loss_of(m, &pooled, &inputs, &targets, &opts, true);
    for (a, b) in m.params().grads.iter().zip(&once) {
        assert!((a - 2.0 * b).abs() <= 1e-6 * (1.0 + b.abs()));
    }
}

/// `-log softmax(row / temperature)[target]` of a row of log-probabilities (`log softmax(l)`
/// differs from the logits `l` by a constant, so it gives the tempered softmax of `l` too).
pub fn tempered_nll(row: &[f32], target: usize, temperature: f64) -> f64 {
    let z: Vec<f64> = row.iter().map(|&x| x as f64 / temperature).collect();
    let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = mx + z.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
    lse - z[target]
}

/// The teacher-forced loss equals the mean NLL of the same tokens fed one step at a time, at
/// the model's own temperature and at a sampling temperature.
pub fn check_stepwise_matches_teacher_forcing(m: &mut dyn Decoder) {
    let (pooled, inputs, targets) = data(7);
    for temperature in [1.0, 0.5] {
        let opts = PassOptions {
            temperature,
            ..PassOptions::default()
        };
        let loss = loss_of(m, &pooled, &inputs, &targets, &opts, false) as f64;
        let mut st = m.start(&feats(&pooled)).unwrap();
        assert_eq!(st.rows(), B);
        let mut lp = vec![0f32; B * V];
        let (mut sum, mut n) = (0f64, 0usize);
        for t in 0..T {
            let toks: Vec<u32> = (0..B).map(|b| inputs[b * T + t]).collect();
            st.step(&toks, &mut lp, None).unwrap();
            for b in 0..B {
                let row = &lp[b * V..(b + 1) * V];
                let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
                assert!((z - 1.0).abs() < 1e-4, "log_softmax row sums to {z}");
                let y = targets[b * T + t];
                if y != 0 {
                    sum += tempered_nll(row, y as usize, temperature as f64);
                    n += 1;
                }
            }
        }
        let stepped = sum / n as f64;
        assert!(
            (stepped - loss).abs() <= 1e-4 * loss.abs(),
            "T {temperature}: step-wise NLL {stepped} vs teacher-forced loss {loss}"
        );
    }
}

/// `select` reorders and duplicates rows of a decoding state, as beam search needs.
pub fn check_select(m: &dyn Decoder) {
    let (pooled, _, _) = data(8);
    let pooled = &pooled[..2 * F];
    let mut a = m.start(&feats(pooled)).unwrap();
    let mut b = m.start(&feats(pooled)).unwrap();
    let mut la = vec![0f32; 3 * V];
    let mut lb = vec![0f32; 2 * V];
    a.step(&[1, 1], &mut la[..2 * V], None).unwrap();
    b.step(&[1, 1], &mut lb, None).unwrap();
    a.select(&[1, 0, 0]).unwrap();
    assert_eq!(a.rows(), 3);
    // Two more steps: row 0 of `a` is old row 1, rows 1 and 2 are old row 0.
    for (ta, tb) in [([5u32, 7, 7], [7u32, 5]), ([4, 9, 9], [9, 4])] {
        a.step(&ta, &mut la, None).unwrap();
        b.step(&tb, &mut lb, None).unwrap();
        for (ra, rb) in [(0, 1), (1, 0), (2, 0)] {
            for j in 0..V {
                let (x, y) = (la[ra * V + j], lb[rb * V + j]);
                assert!((x - y).abs() < 1e-5, "row {ra} vs {rb}: {x} vs {y}");
            }
        }
    }
    assert!(a.select(&[3]).is_err());
    assert!(a.step(&[1, 1], &mut la, None).is_err());
}

/// Four images with a fixed caption each: `m` (whose feature size is `F` and vocabulary `V`)
/// must lower its loss by 5x in 150 Adam steps and then greedily decode every caption.
pub fn check_learns_captions(m: &mut dyn Decoder) {
    // Four images, each with its own fixed caption.
    let n_img = 4;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let pooled: Vec<f32> = (0..n_img * F)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let (mut inputs, mut targets) = (vec![0u32; n_img * T], vec![0u32; n_img * T]);
    for i in 0..n_img {
        let words: Vec<u32> = (0..T - 1).map(|_| rng.random_range(3..V as u32)).collect();
        inputs[i * T] = 1;
        for t in 0..T - 1 {
            inputs[i * T + t + 1] = words[t];
            targets[i * T + t] = words[t];
        }
        targets[i * T + T - 1] = 2;
    }
    let eval = PassOptions::default();
    let train = PassOptions {
        label_smoothing: 0.0,
        train: true,
        ..PassOptions::default()
    };
    let before = loss_of(m, &pooled, &inputs, &targets, &eval, false);
    let mut opt = Adam::new(m.params().len(), AdamConfig::adam(2e-2));
    let mut drng = ChaCha8Rng::seed_from_u64(12);
    for _ in 0..150 {
        m.params_mut().zero_grads();
        m.forward(
            &feats(&pooled),
            &teacher(&inputs, &targets),
            &train,
            true,
            &mut drng,
        )
        .unwrap();
        let (p, g) = m.params_mut().flat_mut();
        opt.step(p, g).unwrap();
    }
    let after = loss_of(m, &pooled, &inputs, &targets, &eval, false);
    eprintln!("loss {before} -> {after}");
    assert!(after < 0.2 * before, "loss {before} -> {after}");
    // Greedy decoding now reproduces every caption.
    let mut st = m.start(&feats(&pooled)).unwrap();
    let mut lp = vec![0f32; n_img * V];
    let mut toks: Vec<u32> = vec![1; n_img];
    for t in 0..T {
        st.step(&toks, &mut lp, None).unwrap();
        for i in 0..n_img {
            let row = &lp[i * V..(i + 1) * V];
            let best = (0..V).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            assert_eq!(best as u32, targets[i * T + t], "image {i} step {t}");
            toks[i] = best as u32;
        }
    }
}

/// Median time of one training step (forward + backward + Adam) of `m`, built for vocabulary `v`
/// and `f` features, with batch 64 and 20 steps; for the `#[ignore]`d timing tests.
pub fn time_training_step(name: &str, m: &mut dyn Decoder, v: usize, f: usize) {
    let (b, t) = (64, 20);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let pooled: Vec<f32> = (0..b * f).map(|_| rng.random_range(0.0..1.0)).collect();
    let inputs: Vec<u32> = (0..b * t).map(|_| rng.random_range(1..v as u32)).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.random_range(1..v as u32)).collect();
    let fe = Features {
        batch: b,
        dim: f,
        pooled: &pooled,
        spatial: None,
        cells: 0,
    };
    let tb = TeacherBatch {
        batch: b,
        time: t,
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
    let mut times = Vec::new();
    for _ in 0..8 {
        let t0 = std::time::Instant::now();
        m.params_mut().zero_grads();
        m.forward(&fe, &tb, &opts, true, &mut rng).unwrap();
        let (p, g) = m.params_mut().flat_mut();
        opt.step(p, g).unwrap();
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    eprintln!(
        "{name} train step: median {:.1} ms ({} params)",
        times[times.len() / 2],
        m.params().len()
    );
}
