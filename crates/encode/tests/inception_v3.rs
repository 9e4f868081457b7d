//! The candle Inception-v3 against torchvision's `inception_v3` at full size on a 107x99 input,
//! with the synthetic weights both sides build from tensor names (no 100 MB file); the expected
//! outputs are in `tests/fixtures/inception_v3_expected.safetensors`. Regenerate with
//! `/work/venvs/torch/bin/python scripts/encoder_fixtures.py`.

#[path = "fixtures/synthetic_weights.rs"]
mod synthetic_weights;

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use captioner_encode::models::inception_v3::{Config, InceptionV3};
use captioner_encode::EncodeError;
use synthetic_weights::{compare, synthetic_var_builder};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(name)
}

#[test]
fn inception_v3_matches_torchvision() {
    let expected =
        candle_core::safetensors::load(fixture("inception_v3_expected.safetensors"), &Device::Cpu)
            .expect("expected outputs");
    let model = InceptionV3::new(&Config::inception_v3(), synthetic_var_builder()).expect("build");
    let out = model.forward_all(&expected["input"]).expect("forward");
    assert_eq!(out.spatial.dims(), [2, 2048, 2, 1]);
    for (name, ours) in [
        ("spatial", &out.spatial),
        ("pooled", &out.pooled),
        ("logits", &out.logits),
    ] {
        let (_, rel) = compare(name, ours, &expected[name]);
        assert!(rel < 1e-4, "{name}: relative error {rel}");
    }

    // torchvision's transform_input=True, as used with the pretrained weights.
    let pretrained =
        InceptionV3::new(&Config::pretrained(), synthetic_var_builder()).expect("build");
    let logits = pretrained
        .forward_all(&expected["input"])
        .expect("forward")
        .logits;
    let (_, rel) = compare(
        "logits_transform_input",
        &logits,
        &expected["logits_transform_input"],
    );
    assert!(rel < 1e-4, "transform_input logits: relative error {rel}");

    let small = Tensor::zeros((1, 3, 74, 299), DType::F32, &Device::Cpu).expect("input");
    let err = model.forward_all(&small).expect_err("74 rows are too few");
    assert!(err.to_string().contains("at least 75x75"), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    // A DenseNet state dict has none of Inception's names.
    let path = fixture("tiny_densenet.safetensors");
    let err = InceptionV3::load(&Config::inception_v3(), &path).expect_err("wrong file");
    assert!(matches!(err, EncodeError::Weights { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("Conv2d_1a_3x3.conv.weight"), "{msg}");
    assert!(msg.contains("tiny_densenet.safetensors"), "{msg}");
}
