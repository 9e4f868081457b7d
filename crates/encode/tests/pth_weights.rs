//! PyTorch `.pth` weights on the candle path (fixtures from `scripts/pth_fixtures.py`): a real
//! training checkpoint of the tiny DenseNet (nested `state_dict`, `module.` prefixes, legacy
//! `norm.1` names) must give torchvision's outputs; a pre-1.6 file and a `.pth` handed to the
//! fast backend must fail saying why.

// Only `compare` is used here.
#[allow(dead_code)]
#[path = "fixtures/synthetic_weights.rs"]
mod synthetic_weights;

use std::path::PathBuf;

use candle_core::Device;
use captioner_encode::encoder::{load_encoder, Backend};
use captioner_encode::models::densenet201::{Config, DenseNet};
use captioner_encode::{EncodeError, EncoderKind};
use synthetic_weights::compare;

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

#[test]
fn checkpoint_with_legacy_names_matches_torchvision() {
    let model = DenseNet::load(&tiny_config(), &fixture("tiny_densenet_checkpoint.pth"))
        .unwrap_or_else(|e| panic!("{e}"));
    let expected =
        candle_core::safetensors::load(fixture("tiny_densenet_expected.safetensors"), &Device::Cpu)
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
}

#[test]
fn pre_zip_pth_says_how_to_convert() {
    let path = fixture("legacy_format.pth");
    let err = DenseNet::load(&tiny_config(), &path).expect_err("old format");
    assert!(matches!(err, EncodeError::LegacyPth { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("legacy_format.pth"), "{msg}");
    assert!(
        msg.contains("pre-1.6") && msg.contains("Encoder weights"),
        "{msg}"
    );
}

#[test]
fn pth_goes_to_candle_even_with_the_fast_backend() {
    // The fast ResNet-50 reads safetensors only; were the `.pth` handed to it, the error would
    // be a safetensors parse error instead of the missing torchvision tensor `conv1.weight`.
    let path = fixture("tiny_densenet_checkpoint.pth");
    let err = load_encoder(EncoderKind::Resnet50, Backend::Fast, &path)
        .err()
        .expect("a DenseNet is no ResNet");
    assert!(matches!(err, EncodeError::Weights { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("conv1.weight"), "{msg}");
    assert!(msg.contains("tiny_densenet_checkpoint.pth"), "{msg}");
}
