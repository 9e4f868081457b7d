//! The fast EfficientNet-Lite0 reproduces the PyTorch original's outputs on four Flickr8k images
//! (`../shared/data/models/efficientnet-lite0/lite0_reference_4imgs.safetensors`).
//! Override the folder with `CAPTIONER_LITE0_DIR`.

use std::path::PathBuf;

use captioner_encode::fast::{FastEfficientNetLite0, SafetensorsFile, WeightSource};

fn model_dir() -> PathBuf {
    std::env::var_os("CAPTIONER_LITE0_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/data/models/efficientnet-lite0")
        })
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn top5(logits: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx.truncate(5);
    idx
}

#[test]
fn fast_lite0_matches_pytorch_reference() {
    let dir = model_dir();
    let model =
        FastEfficientNetLite0::from_safetensors(&dir.join("efficientnet-lite0.safetensors"))
            .expect("load weights");
    let refs = SafetensorsFile::open(&dir.join("lite0_reference_4imgs.safetensors")).unwrap();
    let (shape, input) = refs.tensor("input").unwrap();
    assert_eq!(shape, [4, 3, 224, 224]);
    let out = model.forward_nchw(&input, 4, 224, 224).unwrap();

    let (_, features) = refs.tensor("features_7x7").unwrap();
    let (_, pooled) = refs.tensor("pooled").unwrap();
    let (_, logits) = refs.tensor("logits").unwrap();
    let d_feat = max_abs_diff(&out.spatial_nchw(), &features);
    let d_pool = max_abs_diff(&out.pooled, &pooled);
    let d_logit = max_abs_diff(&out.logits, &logits);
    eprintln!("max |diff|: features_7x7 {d_feat:.2e}, pooled {d_pool:.2e}, logits {d_logit:.2e}");
    assert!(d_feat < 1e-3, "features_7x7 differ by {d_feat}");
    assert!(d_pool < 1e-3, "pooled differ by {d_pool}");
    assert!(d_logit < 1e-3, "logits differ by {d_logit}");
    for i in 0..4 {
        let ours = top5(&out.logits[i * 1000..(i + 1) * 1000]);
        let theirs = top5(&logits[i * 1000..(i + 1) * 1000]);
        assert_eq!(ours, theirs, "top-5 of image {i}");
    }
}

#[test]
fn fast_lite0_rejects_bad_input() {
    let dir = model_dir();
    let model =
        FastEfficientNetLite0::from_safetensors(&dir.join("efficientnet-lite0.safetensors"))
            .unwrap();
    assert!(model.forward_nchw(&[0.0; 10], 1, 224, 224).is_err());
}

#[test]
fn fast_lite0_odd_input_size() {
    // TF-SAME padding must handle odd sizes; batch items must not interact.
    let dir = model_dir();
    let model =
        FastEfficientNetLite0::from_safetensors(&dir.join("efficientnet-lite0.safetensors"))
            .unwrap();
    let (h, w) = (97, 123);
    let one: Vec<f32> = (0..3 * h * w)
        .map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0)
        .collect();
    let two: Vec<f32> = one
        .iter()
        .chain(one.iter().map(|x| x * 0.5).collect::<Vec<_>>().iter())
        .copied()
        .collect();
    let a = model.forward_nchw(&one, 1, h, w).unwrap();
    let b = model.forward_nchw(&two, 2, h, w).unwrap();
    assert_eq!(a.spatial_shape.h, 4);
    assert_eq!(a.spatial_shape.w, 4);
    assert!(max_abs_diff(&a.logits, &b.logits[..1000]) < 1e-4);
}

#[test]
fn fast_lite0_sub_batches_give_the_same_outputs() {
    // Slices of 3 + 1 images must concatenate to the one-pass result.
    let dir = model_dir();
    let weights = dir.join("efficientnet-lite0.safetensors");
    let whole = FastEfficientNetLite0::from_safetensors(&weights)
        .unwrap()
        .with_sub_batch(4);
    let sliced = FastEfficientNetLite0::from_safetensors(&weights)
        .unwrap()
        .with_sub_batch(3);
    let refs = SafetensorsFile::open(&dir.join("lite0_reference_4imgs.safetensors")).unwrap();
    let (_, input) = refs.tensor("input").unwrap();
    let a = whole.forward_nchw(&input, 4, 224, 224).unwrap();
    let b = sliced.forward_nchw(&input, 4, 224, 224).unwrap();
    assert_eq!(a.spatial_shape, b.spatial_shape);
    assert!(max_abs_diff(&a.spatial, &b.spatial) < 1e-5);
    assert!(max_abs_diff(&a.pooled, &b.pooled) < 1e-5);
    assert!(max_abs_diff(&a.logits, &b.logits) < 1e-5);
}
