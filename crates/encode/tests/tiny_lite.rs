//! A two-block EfficientNet-Lite with random weights (tests/data, made by make_tiny_lite.py):
//! the `.pth` loader, the config-driven construction and SAME padding on odd sizes, against an
//! independent PyTorch forward pass.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use captioner_encode::encoder::load_weights;
use captioner_encode::models::efficientnet_lite0::{Config, EfficientNetLite, StageConfig};

fn data(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data")).join(name)
}

fn tiny_config() -> Config {
    let stage = |repeats, kernel, stride, expand_ratio, out_channels| StageConfig {
        repeats,
        kernel,
        stride,
        expand_ratio,
        out_channels,
    };
    Config {
        in_channels: 3,
        stem_channels: 4,
        stages: vec![stage(1, 3, 1, 1, 4), stage(1, 5, 2, 2, 6)],
        head_channels: 8,
        num_classes: 5,
        bn_eps: 1e-3,
        image_size: 16,
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("diff")
}

#[test]
fn pth_weights_reproduce_pytorch_on_odd_sizes() {
    let dev = Device::Cpu;
    let vb = load_weights(&data("tiny_lite.pth"), &dev).expect("load .pth");
    let model = EfficientNetLite::new(&tiny_config(), vb).expect("build");
    let expected = candle_core::safetensors::load(data("tiny_lite_expected.safetensors"), &dev)
        .expect("expected outputs");
    let out = model.forward_all(&expected["input"]).expect("forward");
    assert_eq!(out.spatial.dims(), [2, 8, 4, 3]);
    for (name, ours) in [
        ("spatial", &out.spatial),
        ("pooled", &out.pooled),
        ("logits", &out.logits),
    ] {
        let d = max_abs_diff(ours, &expected[name]);
        assert!(d < 1e-5, "{name} differs by {d}");
    }
}

#[test]
fn missing_tensor_names_the_file() {
    let mut cfg = tiny_config();
    cfg.stages.push(StageConfig {
        repeats: 1,
        kernel: 3,
        stride: 1,
        expand_ratio: 6,
        out_channels: 6,
    });
    let vb = load_weights(&data("tiny_lite.pth"), &Device::Cpu).expect("load .pth");
    let err = EfficientNetLite::new(&cfg, vb).expect_err("block 2 is not in the file");
    assert!(err.to_string().contains("_blocks.2"), "{err}");
}
