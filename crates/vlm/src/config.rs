//! `config.json` and `preprocessor_config.json` of a Hugging Face model folder.
//!
//! Every field has the default of the `transformers` config class it mirrors, because
//! `save_pretrained` leaves out values equal to the defaults in some versions.

use crate::error::{Result, VlmError};
use candle_nn::Activation;
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// `BlipTextConfig`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct BlipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub encoder_hidden_size: usize,
    pub intermediate_size: usize,
    pub projection_dim: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub bos_token_id: u32,
    pub pad_token_id: u32,
    pub sep_token_id: u32,
}

impl Default for BlipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 30524,
            hidden_size: 768,
            encoder_hidden_size: 768,
            intermediate_size: 3072,
            projection_dim: 768,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 512,
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-12,
            bos_token_id: 30522,
            pad_token_id: 0,
            sep_token_id: 102,
        }
    }
}

/// `BlipVisionConfig`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct BlipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub projection_dim: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl Default for BlipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            projection_dim: 512,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            image_size: 384,
            patch_size: 16,
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-5,
        }
    }
}

/// `BlipConfig` (model_type `blip`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct BlipConfig {
    pub text_config: BlipTextConfig,
    pub vision_config: BlipVisionConfig,
    pub projection_dim: Option<usize>,
    pub image_text_hidden_size: Option<usize>,
}

impl BlipConfig {
    /// The same sizes as candle-transformers' config, whose vision tower we run.
    pub fn to_candle(&self) -> candle_transformers::models::blip::Config {
        use candle_transformers::models::{blip, blip_text};
        let t = &self.text_config;
        let v = &self.vision_config;
        blip::Config {
            text_config: blip_text::Config {
                vocab_size: t.vocab_size,
                hidden_size: t.hidden_size,
                encoder_hidden_size: t.encoder_hidden_size,
                intermediate_size: t.intermediate_size,
                projection_dim: t.projection_dim,
                num_hidden_layers: t.num_hidden_layers,
                num_attention_heads: t.num_attention_heads,
                max_position_embeddings: t.max_position_embeddings,
                hidden_act: t.hidden_act,
                layer_norm_eps: t.layer_norm_eps,
                is_decoder: true,
            },
            vision_config: blip::VisionConfig {
                hidden_size: v.hidden_size,
                intermediate_size: v.intermediate_size,
                projection_dim: v.projection_dim,
                num_hidden_layers: v.num_hidden_layers,
                num_attention_heads: v.num_attention_heads,
                image_size: v.image_size,
                patch_size: v.patch_size,
                hidden_act: v.hidden_act,
                layer_norm_eps: v.layer_norm_eps,
            },
            projection_dim: self.projection_dim.unwrap_or(512),
            image_text_hidden_size: self.image_text_hidden_size.unwrap_or(256),
        }
    }
}

/// `ViTConfig`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct VitConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub qkv_bias: bool,
}

impl Default for VitConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-12,
            image_size: 224,
            patch_size: 16,
            num_channels: 3,
            qkv_bias: true,
        }
    }
}

impl VitConfig {
    pub fn to_candle(&self) -> candle_transformers::models::vit::Config {
        candle_transformers::models::vit::Config {
            hidden_size: self.hidden_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            hidden_act: self.hidden_act,
            layer_norm_eps: self.layer_norm_eps,
            image_size: self.image_size,
            patch_size: self.patch_size,
            num_channels: self.num_channels,
            qkv_bias: self.qkv_bias,
        }
    }
}

/// `GPT2Config`, decoder half of a vision-encoder-decoder.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_inner: Option<usize>,
    pub activation_function: Activation,
    pub layer_norm_epsilon: f64,
    pub add_cross_attention: bool,
    pub scale_attn_weights: bool,
    pub scale_attn_by_inverse_layer_idx: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

impl Default for Gpt2Config {
    fn default() -> Self {
        Self {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: None,
            activation_function: Activation::NewGelu,
            layer_norm_epsilon: 1e-5,
            add_cross_attention: false,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            bos_token_id: Some(50256),
            eos_token_id: Some(50256),
            pad_token_id: None,
        }
    }
}

/// `VisionEncoderDecoderConfig` with a ViT encoder and a GPT-2 decoder.
#[derive(Clone, Debug)]
pub struct VitGpt2Config {
    pub encoder: VitConfig,
    pub decoder: Gpt2Config,
    pub decoder_start_token_id: u32,
    pub eos_token_id: u32,
    pub pad_token_id: u32,
}

/// The architectures we run.
#[derive(Clone, Debug)]
pub enum ModelConfig {
    Blip(BlipConfig),
    VitGpt2(VitGpt2Config),
}

fn malformed(path: &Path, message: impl Into<String>) -> VlmError {
    VlmError::Malformed {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

pub(crate) fn read_json(path: &Path, what: &'static str) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            VlmError::Missing {
                path: path.to_path_buf(),
                what,
            }
        } else {
            VlmError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    serde_json::from_str(&text).map_err(|e| malformed(path, format!("invalid JSON: {e}")))
}

fn field<T: for<'de> Deserialize<'de>>(path: &Path, v: &Value, name: &str) -> Result<T> {
    T::deserialize(v).map_err(|e| malformed(path, format!("{name}: {e}")))
}

/// A token id that `transformers` may write as a number or as a list of numbers.
fn token_id(v: Option<&Value>) -> Option<u32> {
    match v? {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::Array(a) => token_id(a.first()),
        _ => None,
    }
}

impl ModelConfig {
    /// Reads `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let v = read_json(path, "the model config")?;
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed(path, "no \"model_type\""))?;
        match model_type {
            "blip" => Ok(Self::Blip(field(path, &v, "BLIP config")?)),
            "vision-encoder-decoder" => {
                let enc = v
                    .get("encoder")
                    .ok_or_else(|| malformed(path, "no \"encoder\""))?;
                let dec = v
                    .get("decoder")
                    .ok_or_else(|| malformed(path, "no \"decoder\""))?;
                let enc_type = enc.get("model_type").and_then(Value::as_str).unwrap_or("");
                let dec_type = dec.get("model_type").and_then(Value::as_str).unwrap_or("");
                if enc_type != "vit" || dec_type != "gpt2" {
                    return Err(VlmError::Unsupported {
                        path: path.to_path_buf(),
                        model_type: format!("vision-encoder-decoder ({enc_type} + {dec_type})"),
                    });
                }
                let encoder: VitConfig = field(path, enc, "encoder")?;
                let decoder: Gpt2Config = field(path, dec, "decoder")?;
                if !decoder.add_cross_attention {
                    return Err(malformed(
                        path,
                        "decoder.add_cross_attention is false: the GPT-2 decoder cannot see the image",
                    ));
                }
                let start = token_id(v.get("decoder_start_token_id"))
                    .or(decoder.bos_token_id)
                    .ok_or_else(|| malformed(path, "no decoder_start_token_id"))?;
                let eos = token_id(v.get("eos_token_id"))
                    .or(decoder.eos_token_id)
                    .ok_or_else(|| malformed(path, "no eos_token_id"))?;
                let pad = token_id(v.get("pad_token_id"))
                    .or(decoder.pad_token_id)
                    .unwrap_or(eos);
                Ok(Self::VitGpt2(VitGpt2Config {
                    encoder,
                    decoder,
                    decoder_start_token_id: start,
                    eos_token_id: eos,
                    pad_token_id: pad,
                }))
            }
            other => Err(VlmError::Unsupported {
                path: path.to_path_buf(),
                model_type: other.to_string(),
            }),
        }
    }

    /// The square input side the vision tower was built for.
    pub fn image_size(&self) -> usize {
        match self {
            Self::Blip(c) => c.vision_config.image_size,
            Self::VitGpt2(c) => c.encoder.image_size,
        }
    }
}

/// `preprocessor_config.json`: how an image becomes pixel values.
#[derive(Clone, Debug)]
pub struct Preprocessor {
    pub do_resize: bool,
    pub height: usize,
    pub width: usize,
    /// PIL resample code: 2 bilinear, 3 bicubic, 0 nearest, 1 Lanczos.
    pub resample: u32,
    pub do_rescale: bool,
    pub rescale_factor: f32,
    pub do_normalize: bool,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocessor {
    /// Reads `preprocessor_config.json`; `image_size` (from `config.json`) fills a missing size.
    pub fn load(path: &Path, image_size: usize) -> Result<Self> {
        let v = read_json(path, "the image preprocessor config")?;
        let get_bool = |k: &str, d: bool| v.get(k).and_then(Value::as_bool).unwrap_or(d);
        let triple = |k: &str| -> Result<Option<[f32; 3]>> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => {
                    let xs: Vec<f32> = field(path, x, k)?;
                    match xs.as_slice() {
                        [a] => Ok(Some([*a; 3])),
                        [a, b, c] => Ok(Some([*a, *b, *c])),
                        _ => Err(malformed(path, format!("{k}: expected 3 values"))),
                    }
                }
            }
        };
        // `size` is an int in older files, {"height", "width"} or {"shortest_edge"} in newer.
        let (height, width) = match v.get("size") {
            None | Some(Value::Null) => (image_size, image_size),
            Some(Value::Number(n)) => {
                let s = n
                    .as_u64()
                    .ok_or_else(|| malformed(path, "size: not a positive integer"))?
                    as usize;
                (s, s)
            }
            Some(Value::Object(o)) => {
                let g = |k: &str| o.get(k).and_then(Value::as_u64).map(|x| x as usize);
                match (g("height"), g("width"), g("shortest_edge")) {
                    (Some(h), Some(w), _) => (h, w),
                    (_, _, Some(s)) => (s, s),
                    _ => return Err(malformed(path, "size: expected height and width")),
                }
            }
            Some(_) => return Err(malformed(path, "size: expected a number or an object")),
        };
        if height == 0 || width == 0 {
            return Err(malformed(path, "size: zero"));
        }
        let default_mean = [0.5; 3];
        Ok(Self {
            do_resize: get_bool("do_resize", true),
            height,
            width,
            resample: v.get("resample").and_then(Value::as_u64).unwrap_or(2) as u32,
            do_rescale: get_bool("do_rescale", true),
            rescale_factor: v
                .get("rescale_factor")
                .and_then(Value::as_f64)
                .unwrap_or(1.0 / 255.0) as f32,
            do_normalize: get_bool("do_normalize", true),
            mean: triple("image_mean")?.unwrap_or(default_mean),
            std: triple("image_std")?.unwrap_or(default_mean),
        })
    }
}
