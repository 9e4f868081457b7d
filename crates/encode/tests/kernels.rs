//! Every fast kernel against its plain reference in `kernels::reference`, on random shapes with
//! odd sizes, strides, asymmetric paddings and channel counts that are not multiples of 16.

use captioner_encode::kernels::{
    self, reference, Activation, Conv2dGeom, Epilogue, KernelError, Nhwc, Padding,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (self.next() % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

const ACTS: [Activation; 3] = [Activation::Identity, Activation::Relu, Activation::Relu6];

#[test]
fn matmul_matches_reference() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    // Includes shapes large enough to be split into row blocks across threads.
    for &(m, k, n) in &[
        (1, 1, 1),
        (3, 5, 7),
        (17, 33, 9),
        (600, 17, 33),
        (2100, 40, 24),
        (5, 300, 1000),
    ] {
        let a = rng.vec(m * k);
        let b = rng.vec(k * n);
        let bias = rng.vec(n);
        let res = rng.vec(m * n);
        for (i, act) in ACTS.into_iter().enumerate() {
            let with_res = i % 2 == 1;
            let mut ep = Epilogue::new(Some(&bias), act);
            if with_res {
                ep = ep.with_residual(&res);
            }
            let mut out = vec![f32::NAN; m * n];
            kernels::matmul(&a, &b, &mut out, m, k, n, &ep).unwrap();
            let want = reference::matmul(
                &a,
                &b,
                m,
                k,
                n,
                Some(&bias),
                with_res.then_some(&res[..]),
                act,
            );
            assert_close(&out, &want, 1e-5, &format!("matmul {m}x{k}x{n} {act:?}"));
        }
    }
}

#[test]
fn conv2d_matches_reference() {
    let mut rng = Rng(42);
    let cases = [
        // (n, h, w, cin, cout, kernel, stride, padding)
        (1, 7, 9, 3, 5, 3, 2, Padding::tf_same(7, 9, 3, 2)),
        (2, 8, 8, 3, 32, 3, 2, Padding::tf_same(8, 8, 3, 2)),
        (1, 11, 10, 3, 16, 7, 2, Padding::symmetric(3)),
        (2, 6, 5, 8, 12, 3, 1, Padding::symmetric(1)),
        (1, 9, 9, 6, 10, 1, 2, Padding::default()),
        (3, 4, 5, 20, 7, 1, 1, Padding::default()),
        (
            1,
            5,
            6,
            4,
            4,
            5,
            1,
            Padding {
                top: 1,
                bottom: 2,
                left: 2,
                right: 1,
            },
        ),
        (1, 40, 40, 16, 24, 3, 1, Padding::symmetric(1)),
    ];
    for &(n, h, w, cin, cout, k, stride, pad) in &cases {
        let s = Nhwc::new(n, h, w, cin);
        let geom = Conv2dGeom::new(k, stride, pad);
        let x = rng.vec(s.len());
        let wt = rng.vec(k * k * cin * cout);
        let bias = rng.vec(cout);
        for act in ACTS {
            let (want, o) = reference::conv2d(&x, s, &wt, Some(&bias), cout, 1, &geom, act);
            let mut out = vec![f32::NAN; o.len()];
            let got = kernels::conv2d(
                &x,
                s,
                &wt,
                cout,
                &geom,
                &Epilogue::new(Some(&bias), act),
                &mut out,
            )
            .unwrap();
            assert_eq!(got, o);
            assert_close(
                &out,
                &want,
                1e-5,
                &format!("conv2d {s:?} k{k} s{stride} {pad:?} {act:?}"),
            );
        }
    }
}

#[test]
fn conv2d_residual_epilogue() {
    let mut rng = Rng(7);
    let s = Nhwc::new(2, 9, 7, 12);
    let geom = Conv2dGeom::new(3, 1, Padding::symmetric(1));
    let (x, wt, bias) = (rng.vec(s.len()), rng.vec(9 * 12 * 20), rng.vec(20));
    let o = geom.output_shape(s, 20).unwrap();
    let res = rng.vec(o.len());
    let (plain, _) = reference::conv2d(&x, s, &wt, Some(&bias), 20, 1, &geom, Activation::Identity);
    let want: Vec<f32> = plain
        .iter()
        .zip(&res)
        .map(|(a, r)| (a + r).max(0.0))
        .collect();
    let mut out = vec![0.0; o.len()];
    let ep = Epilogue::new(Some(&bias), Activation::Relu).with_residual(&res);
    kernels::conv2d(&x, s, &wt, 20, &geom, &ep, &mut out).unwrap();
    assert_close(&out, &want, 1e-5, "conv2d + residual");
}

#[test]
fn depthwise_matches_reference() {
    let mut rng = Rng(1234);
    let mut cases = Vec::new();
    for &k in &[3usize, 5, 2, 7] {
        for &stride in &[1usize, 2] {
            for &(h, w) in &[(7usize, 9usize), (8, 8), (1, 1), (12, 5)] {
                for &c in &[16usize, 20, 32, 7] {
                    if k > h + 2 || k > w + 2 {
                        continue;
                    }
                    cases.push((2, h, w, c, k, stride, Padding::tf_same(h, w, k, stride)));
                }
            }
        }
    }
    cases.push((1, 10, 11, 48, 3, 1, Padding::symmetric(1)));
    cases.push((
        1,
        10,
        11,
        48,
        5,
        2,
        Padding {
            top: 0,
            bottom: 2,
            left: 2,
            right: 0,
        },
    ));
    for (n, h, w, c, k, stride, pad) in cases {
        let s = Nhwc::new(n, h, w, c);
        let geom = Conv2dGeom::new(k, stride, pad);
        let (x, wt, bias) = (rng.vec(s.len()), rng.vec(k * k * c), rng.vec(c));
        for act in ACTS {
            let (want, o) = reference::conv2d(&x, s, &wt, Some(&bias), c, c, &geom, act);
            let mut out = vec![f32::NAN; o.len()];
            kernels::depthwise_conv(&x, s, &wt, &bias, &geom, act, &mut out).unwrap();
            assert_close(
                &out,
                &want,
                1e-5,
                &format!("depthwise {s:?} k{k} s{stride} {pad:?} {act:?}"),
            );
        }
    }
}

#[test]
fn pools_match_reference() {
    let mut rng = Rng(99);
    for &(n, h, w, c) in &[(1, 7, 7, 1280), (2, 5, 3, 17), (3, 1, 1, 4)] {
        let s = Nhwc::new(n, h, w, c);
        let x = rng.vec(s.len());
        let mut out = vec![0.0; n * c];
        kernels::global_avg_pool(&x, s, &mut out).unwrap();
        assert_close(&out, &reference::global_avg_pool(&x, s), 1e-5, "avg pool");
    }
    for &(n, h, w, c) in &[(1, 112, 112, 16), (2, 7, 9, 5), (1, 2, 2, 3)] {
        let s = Nhwc::new(n, h, w, c);
        let geom = Conv2dGeom::new(3, 2, Padding::symmetric(1));
        let x = rng.vec(s.len());
        let (want, o) = reference::max_pool2d(&x, s, &geom);
        let mut out = vec![0.0; o.len()];
        kernels::max_pool2d(&x, s, &geom, &mut out).unwrap();
        assert_eq!(out, want);
    }
}

#[test]
fn shape_mismatches_are_errors() {
    let s = Nhwc::new(1, 4, 4, 8);
    let x = vec![0.0; s.len()];
    let geom = Conv2dGeom::new(3, 1, Padding::symmetric(1));
    let mut out = vec![0.0; s.len()];
    let ep = Epilogue::new(None, Activation::Identity);
    assert!(matches!(
        kernels::conv2d(&x[1..], s, &[0.0; 9 * 8 * 8], 8, &geom, &ep, &mut out),
        Err(KernelError::Length { .. })
    ));
    assert!(kernels::conv2d(&x, s, &[0.0; 10], 8, &geom, &ep, &mut out).is_err());
    assert!(kernels::depthwise_conv(
        &x,
        s,
        &[0.0; 72],
        &[0.0; 7],
        &geom,
        Activation::Relu6,
        &mut out
    )
    .is_err());
    assert!(kernels::matmul(
        &[0.0; 6],
        &[0.0; 6],
        &mut [0.0; 4],
        2,
        3,
        2,
        &Epilogue::new(Some(&[0.0; 3]), Activation::Relu)
    )
    .is_err());
    // A window larger than the padded input.
    let big = Conv2dGeom::new(7, 1, Padding::default());
    assert!(kernels::max_pool2d(&x, s, &big, &mut out).is_err());
}

#[test]
fn tf_same_padding_matches_readme() {
    // ../shared/data/README.md: stride 2 on even input: 3x3 pads 0/1, 5x5 pads 1/2.
    assert_eq!(
        Padding::tf_same(224, 224, 3, 2),
        Padding {
            top: 0,
            bottom: 1,
            left: 0,
            right: 1
        }
    );
    assert_eq!(
        Padding::tf_same(112, 112, 5, 2),
        Padding {
            top: 1,
            bottom: 2,
            left: 1,
            right: 2
        }
    );
    assert_eq!(Padding::tf_same(14, 14, 5, 1), Padding::symmetric(2));
}
