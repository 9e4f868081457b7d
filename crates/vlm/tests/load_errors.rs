//! Loading: what counts as a Hugging Face folder, and errors that name the file at fault.

mod common;

use captioner_vlm::{HfCaptioner, HfGenerateOptions, VlmError};
use common::*;
use std::path::Path;

/// A scratch copy of a fixture model folder.
fn copy(model: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(model)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}

fn load_err(dir: &Path) -> String {
    match HfCaptioner::load(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => {
            eprintln!("{e}");
            e.to_string()
        }
    }
}

#[test]
fn a_captioner_can_be_shared_between_threads() {
    // The server keeps one model behind an `Arc` for all its workers.
    fn shared<T: Send + Sync>() {}
    shared::<HfCaptioner>();
}

#[test]
fn is_hf_dir_tells_hugging_face_folders_apart() {
    for model in MODELS {
        assert!(HfCaptioner::is_hf_dir(fixture(model)));
    }
    assert!(!HfCaptioner::is_hf_dir(fixture("images")));
    assert!(!HfCaptioner::is_hf_dir(fixture("no-such-folder")));
    let tmp = tempfile::tempdir().unwrap();
    // One of our own bundles has a config.json too, without a Hugging Face model_type.
    std::fs::write(tmp.path().join("config.json"), r#"{"decoder": "sat"}"#).unwrap();
    assert!(!HfCaptioner::is_hf_dir(tmp.path()));
}

#[test]
fn a_missing_file_is_named() {
    for model in MODELS {
        for file in [
            "config.json",
            "preprocessor_config.json",
            "tokenizer.json",
            "model.safetensors",
        ] {
            let tmp = copy(model);
            std::fs::remove_file(tmp.path().join(file)).unwrap();
            let msg = load_err(tmp.path());
            assert!(msg.contains(file), "{model} without {file}: {msg}");
            assert!(msg.contains("missing"), "{model} without {file}: {msg}");
        }
    }
}

#[test]
fn a_malformed_file_is_named() {
    let cases: [(&str, &[u8]); 4] = [
        ("config.json", b"{ not json"),
        ("preprocessor_config.json", br#"{"image_mean": [0.5, 0.5]}"#),
        ("tokenizer.json", br#"{"model": 3}"#),
        (
            "model.safetensors",
            b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage",
        ),
    ];
    for model in MODELS {
        for (file, bytes) in cases {
            let tmp = copy(model);
            std::fs::write(tmp.path().join(file), bytes).unwrap();
            let msg = load_err(tmp.path());
            assert!(msg.contains(file), "{model} with a bad {file}: {msg}");
        }
    }
}

#[test]
fn missing_weights_and_unsupported_models_are_explained() {
    let tmp = copy("vit-gpt2-tiny");
    // A checkpoint without one of its tensors.
    let weights = candle_core::safetensors::load(
        fixture("vit-gpt2-tiny").join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let kept: std::collections::HashMap<_, _> = weights
        .into_iter()
        .filter(|(k, _)| !k.contains("h.1.crossattention.q_attn"))
        .collect();
    candle_core::safetensors::save(&kept, tmp.path().join("model.safetensors")).unwrap();
    let msg = load_err(tmp.path());
    assert!(msg.contains("model.safetensors"), "{msg}");
    assert!(msg.contains("q_attn"), "{msg}");

    let tmp = copy("blip-tiny");
    std::fs::write(tmp.path().join("config.json"), r#"{"model_type": "llava"}"#).unwrap();
    let err = HfCaptioner::load(tmp.path()).err().unwrap();
    assert!(matches!(err, VlmError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("config.json") && err.to_string().contains("llava"));
}

#[test]
fn bad_options_are_refused() {
    let m = load("blip-tiny");
    let img = image::RgbImage::new(32, 32);
    for opts in [
        HfGenerateOptions {
            num_beams: 0,
            ..Default::default()
        },
        HfGenerateOptions {
            num_beams: 2,
            num_return_sequences: 3,
            ..Default::default()
        },
        HfGenerateOptions {
            do_sample: true,
            num_beams: 2,
            ..Default::default()
        },
        HfGenerateOptions {
            max_new_tokens: 1000,
            ..Default::default()
        },
    ] {
        let err = m.caption(std::slice::from_ref(&img), &opts).err();
        assert!(
            matches!(err, Some(VlmError::Options(_))),
            "{opts:?}: {err:?}"
        );
    }
}

#[test]
fn sampling_is_reproducible_with_a_seed() {
    for model in MODELS {
        let m = load(model);
        let exp = expected(model);
        let imgs = images(&exp);
        let opts = |seed| HfGenerateOptions {
            do_sample: true,
            temperature: 1.5,
            top_k: 20,
            top_p: 0.9,
            seed,
            max_new_tokens: 10,
            ..Default::default()
        };
        let a = m.caption(&imgs, &opts(7)).unwrap();
        let b = m.caption(&imgs, &opts(7)).unwrap();
        assert_eq!(a, b, "{model}");
        let others: Vec<_> = (0..5)
            .map(|s| m.caption(&imgs, &opts(100 + s)).unwrap())
            .collect();
        assert!(
            others.iter().any(|o| *o != a),
            "{model}: the seed changes nothing"
        );
        for caps in &a {
            assert_eq!(caps.len(), 1);
            assert!(caps[0].tokens.len() <= 10 && caps[0].log_prob.is_finite());
        }
    }
}

#[test]
fn images_of_any_size_are_resized() {
    let m = load("vit-gpt2-tiny");
    let imgs = vec![
        image::RgbImage::from_pixel(50, 20, image::Rgb([200, 10, 10])),
        image::RgbImage::from_pixel(7, 90, image::Rgb([10, 200, 10])),
    ];
    let caps = m
        .caption(
            &imgs,
            &HfGenerateOptions {
                num_beams: 2,
                num_return_sequences: 2,
                max_new_tokens: 5,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(caps.len(), 2);
    assert!(caps
        .iter()
        .all(|c| c.len() == 2 && c[0].score >= c[1].score));
    assert!(m
        .caption(&[], &HfGenerateOptions::default())
        .unwrap()
        .is_empty());
}
