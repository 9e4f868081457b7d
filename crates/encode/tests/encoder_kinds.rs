//! Every `--encoder` kind through `load_encoder` and `Encoder::encode` at full size, on real
//! Flickr8k photos, from safetensors files of the deterministic synthetic weights (the rule in
//! `fixtures/synthetic_weights.rs`, written under the names each candle model asks for): output
//! shapes, the fast and candle ResNet-50 agreeing, pooled features being the average of the
//! spatial map, and Inception-v3 getting torchvision's `transform_input`.
//!
//! VGG16 (138M parameters, a 550 MB file) is `#[ignore]`d; run it on purpose with
//! `cargo test -p captioner-encode --test encoder_kinds -- --ignored`.

mod common;
// `compare` is not used here.
#[allow(dead_code)]
#[path = "fixtures/synthetic_weights.rs"]
mod synthetic_weights;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use captioner_encode::encoder::pipeline::{check_options, ExtractOptions};
use captioner_encode::encoder::{load_encoder, Backend};
use captioner_encode::models::{densenet201, inception_v3, resnet50, vgg16};
use captioner_encode::{Encoder, EncoderKind, Features, Layout, Want};
use synthetic_weights::{synthetic_tensor, synthetic_var_builder};

const IMAGES: [&str; 2] = ["1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg"];
const ALL: Want = Want {
    spatial: true,
    logits: true,
};

/// Synthetic tensors for whatever the model asks, remembered so they can be saved.
#[derive(Clone, Default)]
struct Recording(Arc<Mutex<HashMap<String, Tensor>>>);

impl SimpleBackend for Recording {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = Tensor::from_vec(synthetic_tensor(name, s.dims()), s, dev)?;
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(name.to_string(), t.clone());
        t.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("synthetic weights need a shape for {name}")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Builds a model with `build` on synthetic weights and saves every tensor it read to `path`.
fn write_weights<T>(path: &Path, build: impl FnOnce(VarBuilder) -> candle_core::Result<T>) {
    let rec = Recording::default();
    let vb = VarBuilder::from_backend(Box::new(rec.clone()), DType::F32, Device::Cpu);
    drop(build(vb).expect("build on synthetic weights"));
    let map = rec.0.lock().unwrap_or_else(|e| e.into_inner());
    candle_core::safetensors::save(&map, path).expect("save safetensors");
}

/// The first `n` test images, preprocessed for `encoder`.
fn pixels(encoder: &dyn Encoder, n: usize) -> Vec<f32> {
    let loader = encoder.kind().image_loader(encoder.input_layout());
    let dir = common::shared_data().join("flickr8k/images");
    IMAGES[..n]
        .iter()
        .flat_map(|name| loader.load(&dir.join(name)).expect("image").data)
        .collect()
}

fn encode(encoder: &dyn Encoder, n: usize) -> Features {
    let t = std::time::Instant::now();
    let out = encoder.encode(&pixels(encoder, n), n, ALL).expect("encode");
    eprintln!(
        "{} ({:?} input): {n} images in {:.2?}",
        encoder.kind(),
        encoder.input_layout(),
        t.elapsed()
    );
    out
}

/// Output sizes as `kind` promises them, finite, and different for different photos.
fn check_shapes(kind: EncoderKind, out: &Features, n: usize) {
    let (rows, cols) = kind.spatial_grid();
    let dim = kind.feature_dim();
    assert_eq!(out.batch, n);
    assert_eq!(out.pooled.len(), n * dim, "{kind} pooled");
    let spatial = out.spatial.as_ref().expect("spatial");
    assert_eq!(
        spatial.len(),
        n * rows * cols * kind.spatial_dim(),
        "{kind} spatial"
    );
    let logits = out.logits.as_ref().expect("logits");
    assert_eq!(logits.len(), n * kind.num_classes(), "{kind} logits");
    for v in [&out.pooled, spatial, logits] {
        assert!(v.iter().all(|x| x.is_finite()), "{kind}: non-finite output");
    }
    if n > 1 {
        assert_ne!(out.pooled[..dim], out.pooled[dim..2 * dim], "{kind}");
    }
}

/// Each pooled vector is the mean of its image's grid cells.
fn check_pooled_is_mean(kind: EncoderKind, out: &Features) {
    let (dim, cells) = (
        kind.feature_dim(),
        kind.spatial_grid().0 * kind.spatial_grid().1,
    );
    let spatial = out.spatial.as_ref().expect("spatial");
    for (img, pooled) in out.pooled.chunks(dim).enumerate() {
        let grid = &spatial[img * cells * dim..(img + 1) * cells * dim];
        for (c, &p) in pooled.iter().enumerate() {
            let mean = grid.iter().skip(c).step_by(dim).sum::<f32>() / cells as f32;
            assert!(
                (mean - p).abs() <= 1e-4 * (1.0 + p.abs()),
                "{kind} image {img} channel {c}: {mean} vs {p}"
            );
        }
    }
}

/// Largest difference relative to the largest magnitude of `b`.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

#[test]
fn resnet50_fast_and_candle_agree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("resnet50.safetensors");
    write_weights(&path, |vb| {
        resnet50::ResNet::new(&resnet50::Config::resnet50(), vb)
    });
    let kind = EncoderKind::Resnet50;
    let fast = load_encoder(kind, Backend::Fast, &path).unwrap_or_else(|e| panic!("{e}"));
    let candle = load_encoder(kind, Backend::Candle, &path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((fast.kind(), fast.input_layout()), (kind, Layout::Hwc));
    assert_eq!((candle.kind(), candle.input_layout()), (kind, Layout::Chw));
    let (a, b) = (encode(fast.as_ref(), 2), encode(candle.as_ref(), 2));
    check_shapes(kind, &a, 2);
    check_shapes(kind, &b, 2);
    check_pooled_is_mean(kind, &a);
    for (name, x, y) in [
        ("pooled", &a.pooled, &b.pooled),
        (
            "spatial",
            a.spatial.as_ref().expect("s"),
            b.spatial.as_ref().expect("s"),
        ),
        (
            "logits",
            a.logits.as_ref().expect("l"),
            b.logits.as_ref().expect("l"),
        ),
    ] {
        let rel = rel_diff(x, y);
        eprintln!("resnet50 fast vs candle {name}: relative {rel:.2e}");
        assert!(rel < 1e-3, "{name}: fast and candle differ by {rel}");
    }
}

#[test]
fn densenet201_runs_on_candle_whatever_the_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("densenet201.safetensors");
    write_weights(&path, |vb| {
        densenet201::DenseNet::new(&densenet201::Config::densenet201(), vb)
    });
    let kind = EncoderKind::DenseNet201;
    // No fast DenseNet: the default backend must still give the candle model.
    let encoder = load_encoder(kind, Backend::Fast, &path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (encoder.kind(), encoder.input_layout()),
        (kind, Layout::Chw)
    );
    let out = encode(encoder.as_ref(), 2);
    check_shapes(kind, &out, 2);
    check_pooled_is_mean(kind, &out);
}

#[test]
fn inception_v3_at_299_with_transform_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("inception-v3.safetensors");
    write_weights(&path, |vb| {
        inception_v3::InceptionV3::new(&inception_v3::Config::pretrained(), vb)
    });
    let kind = EncoderKind::InceptionV3;
    let encoder = load_encoder(kind, Backend::Fast, &path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (encoder.kind(), encoder.input_layout()),
        (kind, Layout::Chw)
    );
    let input = pixels(encoder.as_ref(), 1);
    assert_eq!(input.len(), 3 * 299 * 299);
    let out = encoder.encode(&input, 1, ALL).expect("encode");
    check_shapes(kind, &out, 1);
    check_pooled_is_mean(kind, &out);

    // The same network built as torchvision's pretrained model (transform_input=True) gives the
    // same features; without the transform they would differ.
    let reference = inception_v3::InceptionV3::new(
        &inception_v3::Config::pretrained(),
        synthetic_var_builder(),
    )
    .expect("build");
    let xs = Tensor::from_vec(input, (1, 3, 299, 299), &Device::Cpu).expect("input");
    let want = reference.forward_all(&xs).expect("forward").pooled;
    let want = want
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("pooled");
    let rel = rel_diff(&out.pooled, &want);
    assert!(rel < 1e-4, "encoder vs pretrained-config model: {rel}");
}

#[test]
fn vgg16_spatial_cannot_be_cached() {
    let spatial = ExtractOptions {
        spatial: true,
        ..ExtractOptions::default()
    };
    let msg = check_options(EncoderKind::Vgg16, spatial)
        .expect_err("512 != 4096")
        .to_string();
    assert!(
        msg.contains("vgg16") && msg.contains("7x7x512") && msg.contains("4096"),
        "{msg}"
    );
    check_options(EncoderKind::Vgg16, ExtractOptions::default()).expect("pooled only is fine");
    for &kind in EncoderKind::ALL {
        if kind != EncoderKind::Vgg16 {
            check_options(kind, spatial).unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
    }
}

#[test]
#[ignore = "VGG16 is 138M parameters (a 550 MB weights file, ~2 GB of memory); run with --ignored"]
fn vgg16_fc2_and_conv5_map() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vgg16.safetensors");
    write_weights(&path, |vb| vgg16::Vgg::new(&vgg16::Config::vgg16(), vb));
    let kind = EncoderKind::Vgg16;
    let encoder = load_encoder(kind, Backend::Fast, &path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (encoder.kind(), encoder.input_layout()),
        (kind, Layout::Chw)
    );
    let out = encode(encoder.as_ref(), 2);
    check_shapes(kind, &out, 2);
    // fc2 comes after a ReLU.
    assert!(out.pooled.iter().all(|&x| x >= 0.0));
}
