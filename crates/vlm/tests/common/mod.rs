//! Fixtures made by `scripts/vlm_fixtures.py` and what `transformers` said of them.

#![allow(dead_code)]

use captioner_vlm::{EarlyStopping, HfCaptioner, HfGenerateOptions};
use serde::Deserialize;
use std::path::PathBuf;

pub const MODELS: [&str; 2] = ["blip-tiny", "vit-gpt2-tiny"];

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

#[derive(Deserialize)]
pub struct Expected {
    pub images: Vec<String>,
    pub pixel_values: Vec<Vec<f32>>,
    pub forced_ids: Vec<u32>,
    pub logits: Vec<Vec<f32>>,
    pub cases: Vec<Case>,
}

#[derive(Deserialize)]
pub struct Case {
    pub name: String,
    pub options: Options,
    pub expected: Vec<Vec<Hyp>>,
}

#[derive(Deserialize)]
pub struct Options {
    pub max_new_tokens: usize,
    #[serde(default)]
    pub min_new_tokens: usize,
    #[serde(default)]
    pub no_repeat_ngram: usize,
    #[serde(default)]
    pub beams: Option<usize>,
    #[serde(default)]
    pub length_penalty: Option<f32>,
    #[serde(default)]
    pub early_stopping: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
}

impl Options {
    pub fn to_hf(&self) -> HfGenerateOptions {
        let beams = self.beams.unwrap_or(1);
        HfGenerateOptions {
            num_beams: beams,
            num_return_sequences: beams,
            max_new_tokens: self.max_new_tokens,
            min_new_tokens: self.min_new_tokens,
            no_repeat_ngram_size: self.no_repeat_ngram,
            length_penalty: self.length_penalty.unwrap_or(1.0),
            early_stopping: match self.early_stopping.as_deref() {
                Some("true") => EarlyStopping::Immediate,
                Some("never") => EarlyStopping::Never,
                _ => EarlyStopping::Heuristic,
            },
            prompt: self.prompt.clone(),
            ..Default::default()
        }
    }
}

#[derive(Deserialize)]
pub struct Hyp {
    pub tokens: Vec<u32>,
    pub score: Option<f32>,
}

pub fn expected(model: &str) -> Expected {
    let path = fixture(model).join("expected.json");
    let text = std::fs::read_to_string(&path).expect("expected.json of the fixture");
    serde_json::from_str(&text).expect("expected.json parses")
}

pub fn load(model: &str) -> HfCaptioner {
    HfCaptioner::load(fixture(model)).expect("fixture model loads")
}

pub fn images(exp: &Expected) -> Vec<image::RgbImage> {
    exp.images
        .iter()
        .map(|f| {
            image::open(fixture("images").join(f))
                .expect("fixture image")
                .to_rgb8()
        })
        .collect()
}

/// The processor's pixel values, `[N, 3, H, W]`.
pub fn pixels(exp: &Expected, side: usize) -> candle_core::Tensor {
    let n = exp.pixel_values.len();
    let flat: Vec<f32> = exp.pixel_values.iter().flatten().copied().collect();
    candle_core::Tensor::from_vec(flat, (n, 3, side, side), &candle_core::Device::Cpu)
        .expect("pixel tensor")
}
