//! The candle EfficientNet-Lite0 against outputs of the PyTorch original
//! (`lite0_reference_4imgs.safetensors`), and the image path against the reference `input`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use captioner_encode::encoder::fast::FastLite0;
use captioner_encode::encoder::{CandleLite0, Encoder, EncoderKind, Want};
use captioner_encode::image::{Layout, Normalization};
use captioner_encode::models::efficientnet_lite0::Outputs;

fn shared_data() -> PathBuf {
    let dir = std::env::var_os("CAPTIONER_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
        });
    assert!(
        dir.join("models/efficientnet-lite0").is_dir(),
        "shared data not found at {} (set CAPTIONER_SHARED_DATA)",
        dir.display()
    );
    dir
}

fn model_dir() -> PathBuf {
    shared_data().join("models/efficientnet-lite0")
}

fn reference() -> HashMap<String, Tensor> {
    let path = model_dir().join("lite0_reference_4imgs.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Top-5 class names per image from the reference json.
fn reference_top5() -> Vec<Vec<String>> {
    let path = model_dir().join("lite0_reference_4imgs.json");
    let text = std::fs::read_to_string(&path).expect("reference json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    json["top5"]
        .as_array()
        .expect("top5 array")
        .iter()
        .map(|img| {
            img.as_array()
                .expect("per-image list")
                .iter()
                .map(|pair| pair[0].as_str().expect("class name").to_string())
                .collect()
        })
        .collect()
}

fn class_names() -> Vec<String> {
    let text = std::fs::read_to_string(model_dir().join("imagenet_classes.txt")).expect("classes");
    text.lines().map(str::to_string).collect()
}

fn top5_names(logits: &[f32], names: &[String]) -> Vec<String> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order[..5].iter().map(|&i| names[i].clone()).collect()
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

fn load_model() -> CandleLite0 {
    let path = model_dir().join("efficientnet-lite0.safetensors");
    CandleLite0::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn reproduces_pytorch_reference_from_its_input() {
    let model = load_model();
    let reference = reference();
    let Outputs {
        spatial,
        pooled,
        logits,
    } = model
        .model()
        .forward_all(&reference["input"])
        .expect("forward");
    let d_spatial = max_abs_diff(&spatial, &reference["features_7x7"]);
    let d_pooled = max_abs_diff(&pooled, &reference["pooled"]);
    let d_logits = max_abs_diff(&logits, &reference["logits"]);
    eprintln!(
        "max abs diff: features_7x7 {d_spatial:.2e}, pooled {d_pooled:.2e}, logits {d_logits:.2e}"
    );
    assert!(d_spatial < 1e-3, "features_7x7 differ by {d_spatial}");
    assert!(d_pooled < 1e-3, "pooled differ by {d_pooled}");
    assert!(d_logits < 1e-3, "logits differ by {d_logits}");

    let names = class_names();
    let logits = logits.to_vec2::<f32>().expect("logits");
    for (i, (row, want)) in logits.iter().zip(reference_top5()).enumerate() {
        assert_eq!(top5_names(row, &names), want, "image {i}");
    }
}

#[test]
fn encoder_trait_gives_the_same_features_channel_last() {
    let model = load_model();
    let reference = reference();
    let input = reference["input"]
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("input");
    let want = Want {
        spatial: true,
        logits: true,
    };
    let out = model.encode(&input, 4, want).expect("encode");
    let pooled = Tensor::from_vec(out.pooled, (4, 1280), &Device::Cpu).expect("pooled");
    assert!(max_abs_diff(&pooled, &reference["pooled"]) < 1e-3);
    // Reference is NCHW [4, 1280, 7, 7]; ours is [4, 49, 1280].
    let spatial = Tensor::from_vec(out.spatial.expect("spatial"), (4, 49, 1280), &Device::Cpu)
        .and_then(|t| t.transpose(1, 2))
        .and_then(|t| t.reshape((4, 1280, 7, 7)))
        .expect("spatial");
    assert!(max_abs_diff(&spatial, &reference["features_7x7"]) < 1e-3);
    let logits = Tensor::from_vec(out.logits.expect("logits"), (4, 1000), &Device::Cpu).expect("l");
    assert!(max_abs_diff(&logits, &reference["logits"]) < 1e-3);
}

#[test]
fn fast_encoder_behind_the_trait_matches_the_reference() {
    let path = model_dir().join("efficientnet-lite0.safetensors");
    let model = FastLite0::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(model.input_layout(), Layout::Hwc);
    let reference = reference();
    let input = reference["input"]
        .permute((0, 2, 3, 1))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .expect("input");
    let want = Want {
        spatial: true,
        logits: true,
    };
    let out = model.encode(&input, 4, want).expect("encode");
    let pooled = Tensor::from_vec(out.pooled, (4, 1280), &Device::Cpu).expect("pooled");
    let spatial = Tensor::from_vec(out.spatial.expect("spatial"), (4, 49, 1280), &Device::Cpu)
        .and_then(|t| t.transpose(1, 2))
        .and_then(|t| t.reshape((4, 1280, 7, 7)))
        .expect("spatial");
    let logits = Tensor::from_vec(out.logits.expect("logits"), (4, 1000), &Device::Cpu).expect("l");
    assert!(max_abs_diff(&pooled, &reference["pooled"]) < 1e-3);
    assert!(max_abs_diff(&spatial, &reference["features_7x7"]) < 1e-3);
    assert!(max_abs_diff(&logits, &reference["logits"]) < 1e-3);
}

fn first_four_images() -> Vec<PathBuf> {
    let dir = shared_data().join("flickr8k/images");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    files.truncate(4);
    files
}

#[test]
fn image_path_reproduces_reference_input_and_top5() {
    let files = first_four_images();
    let names: Vec<_> = files
        .iter()
        .map(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "1000268201_693b08cb0e.jpg",
            "1001773457_577c3a7d70.jpg",
            "1002674143_1b742ab4b8.jpg",
            "1003163366_44323f5815.jpg"
        ]
    );
    // The reference input was made with ImageNet statistics, not the Lite0 default.
    let loader = EncoderKind::EfficientNetLite0
        .image_loader(Layout::Chw)
        .with_normalization(Normalization::IMAGENET);
    let mut pixels = Vec::new();
    for path in &files {
        pixels.extend(loader.load(Path::new(path)).expect("load").data);
    }
    let ours = Tensor::from_vec(pixels.clone(), (4, 3, 224, 224), &Device::Cpu).expect("tensor");
    let reference = reference();
    let d_input = max_abs_diff(&ours, &reference["input"]);
    // In units of one 8-bit level: 1 / (255 * std), std >= 0.224 -> one level is <= 0.0175.
    let level = 1.0 / (255.0 * 0.224);
    let mean_abs = (&ours - &reference["input"])
        .and_then(|d| d.abs())
        .and_then(|d| d.mean_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("mean");
    eprintln!(
        "image path vs reference input: max {d_input:.3e} ({:.2} levels), mean {mean_abs:.3e}",
        d_input / level
    );
    // JPEG decoders may differ in IDCT rounding and chroma upsampling by a few 8-bit levels on
    // some pixels; a systematic error (wrong channel order, normalisation, orientation) would be
    // tens of levels everywhere and show in the mean.
    assert!(
        d_input <= 8.0 * level,
        "max diff {d_input} is more than 8 levels"
    );
    assert!(
        mean_abs <= 0.5 * level,
        "mean diff {mean_abs} is more than half a level"
    );

    let model = load_model();
    let out = model
        .encode(
            &pixels,
            4,
            Want {
                spatial: false,
                logits: true,
            },
        )
        .expect("encode");
    let class_names = class_names();
    for (i, want) in reference_top5().into_iter().enumerate() {
        let row = &out.logits.as_ref().expect("logits")[i * 1000..(i + 1) * 1000];
        assert_eq!(
            top5_names(row, &class_names),
            want,
            "image {i} ({})",
            names[i]
        );
    }
}
