//! The fast ResNet-50 against torchvision. No ResNet weights ship with the project (100 MB), so
//! the fixture is regenerated from a fixed seed:
//!
//!   /work/venvs/torch/bin/python scripts/bench_encoders_torch.py --export-resnet /tmp/resnet50_fixture
//!   CAPTIONER_RESNET_FIXTURE=/tmp/resnet50_fixture cargo test -p captioner-encode --test fast_resnet50 -- --ignored
//!
//! The torchvision comparison needs that 100 MB fixture, so it is `#[ignore]`d and run on purpose
//! (`-- --ignored`); the random-weight smoke test always runs.

use std::path::PathBuf;

use captioner_encode::fast::{FastResNet50, SafetensorsFile, WeightSource};

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
#[ignore = "needs the regenerated torchvision fixture in CAPTIONER_RESNET_FIXTURE (see the module docs)"]
fn fast_resnet50_matches_torchvision() {
    let dir = std::env::var_os("CAPTIONER_RESNET_FIXTURE")
        .map(PathBuf::from)
        .expect(
            "set CAPTIONER_RESNET_FIXTURE to the exported fixture folder (see the module docs)",
        );
    let model = FastResNet50::from_safetensors(&dir.join("resnet50_random.safetensors")).unwrap();
    let io = SafetensorsFile::open(&dir.join("resnet50_io.safetensors")).unwrap();
    let (shape, input) = io.tensor("input").unwrap();
    let out = model
        .forward_nchw(&input, shape[0], shape[2], shape[3])
        .unwrap();
    let (fshape, features) = io.tensor("features").unwrap();
    assert_eq!(
        [
            out.spatial_shape.n,
            out.spatial_shape.c,
            out.spatial_shape.h,
            out.spatial_shape.w
        ],
        [fshape[0], fshape[1], fshape[2], fshape[3]]
    );
    let scale = features.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let d_feat = max_abs_diff(&out.spatial_nchw(), &features) / scale.max(1.0);
    let d_pool = max_abs_diff(&out.pooled, &io.tensor("pooled").unwrap().1);
    let d_logit = max_abs_diff(&out.logits, &io.tensor("logits").unwrap().1);
    eprintln!("relative features {d_feat:.2e}, pooled {d_pool:.2e}, logits {d_logit:.2e} (feature scale {scale})");
    assert!(d_feat < 1e-4, "features differ: {d_feat}");
    assert!(d_pool < 1e-3 * scale.max(1.0), "pooled differ: {d_pool}");
    assert!(d_logit < 1e-3 * scale.max(1.0), "logits differ: {d_logit}");
}

#[test]
fn fast_resnet50_random_weights_run() {
    let model = FastResNet50::random(1, 10).unwrap();
    let (h, w) = (64, 48);
    let x: Vec<f32> = (0..2 * 3 * h * w)
        .map(|i| ((i % 97) as f32 - 48.0) / 40.0)
        .collect();
    let out = model.forward_nchw(&x, 2, h, w).unwrap();
    assert_eq!(out.spatial_shape.c, 2048);
    assert_eq!((out.spatial_shape.h, out.spatial_shape.w), (2, 2));
    assert_eq!(out.logits.len(), 20);
    assert!(out.logits.iter().all(|v| v.is_finite()));
    // Same image twice in a batch gives the same answer as alone.
    let single = model.forward_nchw(&x[..3 * h * w], 1, h, w).unwrap();
    assert!(max_abs_diff(&single.logits, &out.logits[..10]) < 1e-3);
    assert!(model.flops(8, 224, 224).unwrap() > 32_000_000_000);
}
