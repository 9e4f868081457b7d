//! The candle DenseNet against torchvision (`tests/fixtures/`, regenerate with
//! `/work/venvs/torch/bin/python scripts/encoder_fixtures.py`):
//! - full-size DenseNet-201 on a 64x56 input, with the synthetic weights both sides build from
//!   tensor names (no 80 MB file);
//! - a tiny DenseNet (growth 8, blocks (1,1,1,1), 16 initial features) loaded from the
//!   `safetensors.torch.save_file(model.state_dict())` file itself, i.e. the conversion path a
//!   user follows with the pretrained weights.

#[path = "fixtures/synthetic_weights.rs"]
mod synthetic_weights;

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use captioner_encode::models::densenet201::{Config, DenseNet, Outputs};
use captioner_encode::EncodeError;
use synthetic_weights::{compare, synthetic_var_builder};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(name)
}

fn tiny_config() -> Config {
    Config {
        growth_rate: 8,
        block_config: vec![1, 1, 1, 1],
        num_init_features: 16,
        num_classes: 10,
        ..Config::densenet201()
    }
}

fn check(model: &DenseNet, expected_file: &str) -> Outputs {
    let expected = candle_core::safetensors::load(fixture(expected_file), &Device::Cpu)
        .expect("expected outputs");
    let out = model.forward_all(&expected["input"]).expect("forward");
    for (name, ours) in [
        ("spatial", &out.spatial),
        ("pooled", &out.pooled),
        ("logits", &out.logits),
    ] {
        let (_, rel) = compare(name, ours, &expected[name]);
        assert!(rel < 1e-4, "{name}: relative error {rel}");
    }
    out
}

#[test]
fn densenet201_matches_torchvision() {
    let model = DenseNet::new(&Config::densenet201(), synthetic_var_builder()).expect("build");
    let out = check(&model, "densenet201_expected.safetensors");
    assert_eq!(out.spatial.dims(), [2, 1920, 2, 1]);
    assert_eq!(out.pooled.dims(), [2, 1920]);
    assert_eq!(out.logits.dims(), [2, 1000]);
}

#[test]
fn torchvision_state_dict_loads_directly() {
    let cfg = tiny_config();
    assert_eq!(cfg.feature_channels(), 17);
    let model = DenseNet::load(&cfg, &fixture("tiny_densenet.safetensors")).expect("load");
    let out = check(&model, "tiny_densenet_expected.safetensors");
    assert_eq!(out.spatial.dims(), [2, 17, 2, 1]);
}

#[test]
fn missing_tensor_is_named() {
    let cfg = Config {
        block_config: vec![1, 1, 1, 2],
        ..tiny_config()
    };
    let path = fixture("tiny_densenet.safetensors");
    let err = DenseNet::load(&cfg, &path).expect_err("denselayer2 of block 4 is not in the file");
    assert!(matches!(err, EncodeError::Weights { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("features.denseblock4.denselayer2."), "{msg}");
    assert!(msg.contains("tiny_densenet.safetensors"), "{msg}");

    // A misshapen file (wrong growth rate) is named too, and small inputs fail cleanly.
    let wrong = Config {
        growth_rate: 4,
        ..tiny_config()
    };
    let msg = DenseNet::load(&wrong, &path)
        .expect_err("shape")
        .to_string();
    assert!(msg.contains("features.denseblock1.denselayer1."), "{msg}");
    let model = DenseNet::load(&tiny_config(), &path).expect("load");
    let x = Tensor::zeros((1, 3, 12, 40), DType::F32, &Device::Cpu).expect("input");
    let err = model.forward_all(&x).expect_err("12 rows are too few");
    assert!(err.to_string().contains("too small"), "{err}");
}
