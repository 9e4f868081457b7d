//! The candle VGG16 against torchvision's `vgg16` at full size on a 32x32 input, with the
//! synthetic weights both sides build from tensor names (no 528 MB file); the expected outputs
//! are in `tests/fixtures/vgg16_expected.safetensors`. Regenerate with
//! `/work/venvs/torch/bin/python scripts/encoder_fixtures.py`.

#[path = "fixtures/synthetic_weights.rs"]
mod synthetic_weights;

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use captioner_encode::models::vgg16::{Config, Vgg};
use captioner_encode::EncodeError;
use synthetic_weights::{compare, synthetic_var_builder};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(name)
}

#[test]
fn vgg16_matches_torchvision() {
    let model = Vgg::new(&Config::vgg16(), synthetic_var_builder()).expect("build");
    let expected =
        candle_core::safetensors::load(fixture("vgg16_expected.safetensors"), &Device::Cpu)
            .expect("expected outputs");
    let out = model.forward_all(&expected["input"]).expect("forward");
    assert_eq!(out.spatial.dims(), [2, 512, 1, 1]);
    assert_eq!(out.fc2.dims(), [2, 4096]);
    for (name, ours) in [
        ("spatial", &out.spatial),
        ("fc2", &out.fc2),
        ("logits", &out.logits),
    ] {
        let (_, rel) = compare(name, ours, &expected[name]);
        assert!(rel < 1e-4, "{name}: relative error {rel}");
    }
}

/// torchvision's names are what is looked up: a file without `classifier.6` fails naming it.
#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vgg_small.safetensors");
    let cfg = Config {
        in_channels: 3,
        blocks: vec![vec![4], vec![4]],
        hidden: 6,
        num_classes: 5,
        image_size: 8,
    };
    let dev = Device::Cpu;
    let mut tensors = std::collections::HashMap::new();
    for (name, shape) in [
        ("features.0.weight", vec![4, 3, 3, 3]),
        ("features.0.bias", vec![4]),
        ("features.3.weight", vec![4, 4, 3, 3]),
        ("features.3.bias", vec![4]),
        ("classifier.0.weight", vec![6, 4 * 49]),
        ("classifier.0.bias", vec![6]),
        ("classifier.3.weight", vec![6, 6]),
        ("classifier.3.bias", vec![6]),
    ] {
        let t = Tensor::ones(shape, DType::F32, &dev).expect("ones");
        tensors.insert(name.to_string(), t);
    }
    candle_core::safetensors::save(&tensors, &path).expect("save");
    let err = Vgg::load(&cfg, &path).expect_err("classifier.6 is missing");
    assert!(matches!(err, EncodeError::Weights { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("classifier.6.weight"), "{msg}");
    assert!(msg.contains("vgg_small.safetensors"), "{msg}");

    // With it, the small model runs, and a too-small input is an error, not a panic.
    let mut vb_tensors = tensors.clone();
    vb_tensors.insert(
        "classifier.6.weight".into(),
        Tensor::ones((5, 6), DType::F32, &dev).expect("ones"),
    );
    vb_tensors.insert(
        "classifier.6.bias".into(),
        Tensor::zeros(5, DType::F32, &dev).expect("zeros"),
    );
    let model =
        Vgg::new(&cfg, VarBuilder::from_tensors(vb_tensors, DType::F32, &dev)).expect("build");
    let x = Tensor::ones((1, 3, 9, 7), DType::F32, &dev).expect("input");
    assert_eq!(
        model.forward_all(&x).expect("forward").logits.dims(),
        [1, 5]
    );
    let tiny = Tensor::ones((1, 3, 3, 8), DType::F32, &dev).expect("input");
    let err = model
        .forward_all(&tiny)
        .expect_err("3 rows cannot be pooled twice");
    assert!(err.to_string().contains("at least 4x4"), "{err}");
}
