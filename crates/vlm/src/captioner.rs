//! [`HfCaptioner`]: a Hugging Face model folder loaded and ready to caption.

use crate::config::{read_json, ModelConfig, Preprocessor};
use crate::error::{Result, VlmError};
use crate::models::blip_text::BlipTextDecoder;
use crate::models::gpt2::Gpt2Decoder;
use crate::models::{KvCache, TextDecoder};
use crate::search::{self, Generated, HfGenerateOptions, Special, Stepper};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};
use candle_transformers::models::{blip, vit};
use image::RgbImage;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// Which architecture a folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HfArchitecture {
    /// `BlipForConditionalGeneration` (`Salesforce/blip-image-captioning-base`, `-large`).
    Blip,
    /// `VisionEncoderDecoderModel` with a ViT encoder and a GPT-2 decoder
    /// (`nlpconnect/vit-gpt2-image-captioning`).
    VitGpt2,
}

impl HfArchitecture {
    /// A short name for logs and APIs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Blip => "blip",
            Self::VitGpt2 => "vit-gpt2",
        }
    }
}

/// One caption of one image.
#[derive(Clone, Debug, PartialEq)]
pub struct HfCaption {
    /// The decoded text, special tokens dropped; starts with the prompt when one was given.
    pub text: String,
    /// The generated token ids (after the prompt), the end token included when emitted.
    pub tokens: Vec<u32>,
    /// Summed log-probability of the generated tokens.
    pub log_prob: f32,
    /// The ranking score: `log_prob` for greedy search and sampling, the length-penalised
    /// score for beam search.
    pub score: f32,
    /// Whether the model ended the caption itself (else it was cut at `max_new_tokens`).
    pub finished: bool,
}

enum Vision {
    Blip(blip::VisionModel),
    Vit {
        embeddings: vit::Embeddings,
        encoder: vit::Encoder,
        layernorm: LayerNorm,
    },
}

/// A pretrained Hugging Face vision-language captioner on the CPU.
pub struct HfCaptioner {
    arch: HfArchitecture,
    dir: PathBuf,
    vision: Vision,
    /// `enc_to_dec_proj` of a vision-encoder-decoder whose sizes differ.
    enc_to_dec: Option<Linear>,
    decoder: Box<dyn TextDecoder>,
    tokenizer: Tokenizer,
    preprocessor: Preprocessor,
    /// The token every caption starts from (BLIP's `[DEC]`, GPT-2's `decoder_start_token_id`).
    start: u32,
    special: Special,
    device: Device,
}

fn malformed(path: &Path, message: impl Into<String>) -> VlmError {
    VlmError::Malformed {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// All tensors of the folder's weights, as f32: `model.safetensors`, the shards listed in
/// `model.safetensors.index.json`, or a PyTorch `pytorch_model.bin`.
fn load_weights(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let pth = dir.join("pytorch_model.bin");
    let mut map = HashMap::new();
    if single.is_file() {
        map = candle_core::safetensors::load(&single, device)
            .map_err(|e| malformed(&single, without_backtrace(e).to_string()))?;
    } else if index.is_file() {
        let v = read_json(&index, "the weights index")?;
        let files: std::collections::BTreeSet<String> = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| malformed(&index, "no \"weight_map\""))?
            .values()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        for f in files {
            let path = dir.join(&f);
            if !path.is_file() {
                return Err(VlmError::Missing {
                    path,
                    what: "a weights shard that model.safetensors.index.json names",
                });
            }
            let part = candle_core::safetensors::load(&path, device)
                .map_err(|e| malformed(&path, without_backtrace(e).to_string()))?;
            map.extend(part);
        }
    } else if pth.is_file() {
        for (name, t) in candle_core::pickle::read_all(&pth)
            .map_err(|e| malformed(&pth, without_backtrace(e).to_string()))?
        {
            map.insert(name, t.to_device(device)?);
        }
    } else {
        return Err(VlmError::Missing {
            path: single,
            what: "the model weights: model.safetensors, its shards with model.safetensors.index.json, or pytorch_model.bin",
        });
    }
    for t in map.values_mut() {
        if t.dtype() != DType::F32 {
            *t = t.to_dtype(DType::F32)?;
        }
    }
    Ok(map)
}

/// Names a weight the model needs but the file lacks, with the file it should be in.
fn weights_error(dir: &Path, e: candle_core::Error) -> VlmError {
    malformed(
        &dir.join("model.safetensors"),
        without_backtrace(e).to_string(),
    )
}

/// candle attaches a backtrace to its errors when `RUST_BACKTRACE` is set; a user needs the
/// message only.
pub(crate) fn without_backtrace(e: candle_core::Error) -> candle_core::Error {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => without_backtrace(*inner),
        e => e,
    }
}

impl HfCaptioner {
    /// Whether `path` is a folder with a `config.json` of an architecture this crate runs: how
    /// the CLI and the server tell a Hugging Face folder from one of our own bundles.
    pub fn is_hf_dir(path: impl AsRef<Path>) -> bool {
        let cfg = path.as_ref().join("config.json");
        let Ok(text) = std::fs::read_to_string(cfg) else {
            return false;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return false;
        };
        matches!(
            v.get("model_type").and_then(|m| m.as_str()),
            Some("blip" | "vision-encoder-decoder")
        )
    }

    /// Loads a model folder: `config.json`, `preprocessor_config.json`, `tokenizer.json` and
    /// the weights. Every error names the file it is about.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let device = Device::Cpu;
        let cfg_path = dir.join("config.json");
        let cfg = ModelConfig::load(&cfg_path)?;
        let preprocessor =
            Preprocessor::load(&dir.join("preprocessor_config.json"), cfg.image_size())?;
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(VlmError::Missing {
                path: tok_path,
                what: "the tokenizer",
            });
        }
        let tokenizer =
            Tokenizer::from_file(&tok_path).map_err(|e| malformed(&tok_path, e.to_string()))?;
        let mut weights = load_weights(dir, &device)?;
        let (arch, vision, enc_to_dec, decoder, start, special): (
            _,
            _,
            _,
            Box<dyn TextDecoder>,
            _,
            _,
        ) = match &cfg {
            ModelConfig::Blip(c) => {
                // candle's BLIP loads its own text decoder too, which wants the output
                // projection that tied checkpoints leave out: alias it before building.
                let tied = "text_decoder.cls.predictions.decoder.weight";
                if !weights.contains_key(tied) {
                    if let Some(w) =
                        weights.get("text_decoder.bert.embeddings.word_embeddings.weight")
                    {
                        weights.insert(tied.to_string(), w.clone());
                    }
                }
                let vb = VarBuilder::from_tensors(weights, DType::F32, &device);
                let full = blip::BlipForConditionalGeneration::new(&c.to_candle(), vb.clone())
                    .map_err(|e| weights_error(dir, e))?;
                // Keep the vision tower only; our text decoder shares the same tensors.
                let vision = Vision::Blip(full.vision_model().clone());
                drop(full);
                let decoder = BlipTextDecoder::new(&c.text_config, vb.pp("text_decoder"))
                    .map_err(|e| weights_error(dir, e))?;
                let t = &c.text_config;
                (
                    HfArchitecture::Blip,
                    vision,
                    None,
                    Box::new(decoder) as Box<dyn TextDecoder>,
                    t.bos_token_id,
                    Special {
                        eos: t.sep_token_id,
                        pad: t.pad_token_id,
                    },
                )
            }
            ModelConfig::VitGpt2(c) => {
                let vb = VarBuilder::from_tensors(weights, DType::F32, &device);
                let venc = vb.pp("encoder");
                let vcfg = c.encoder.to_candle();
                let load = || -> candle_core::Result<_> {
                    let embeddings = vit::Embeddings::new(&vcfg, false, venc.pp("embeddings"))?;
                    let encoder = vit::Encoder::new(&vcfg, venc.pp("encoder"))?;
                    let layernorm = candle_nn::layer_norm(
                        vcfg.hidden_size,
                        vcfg.layer_norm_eps,
                        venc.pp("layernorm"),
                    )?;
                    let proj = if vb.contains_tensor("enc_to_dec_proj.weight") {
                        Some(candle_nn::linear(
                            vcfg.hidden_size,
                            c.decoder.n_embd,
                            vb.pp("enc_to_dec_proj"),
                        )?)
                    } else if vcfg.hidden_size != c.decoder.n_embd {
                        candle_core::bail!(
                            "encoder width {} differs from decoder width {} and there is no enc_to_dec_proj",
                            vcfg.hidden_size,
                            c.decoder.n_embd
                        )
                    } else {
                        None
                    };
                    let decoder = Gpt2Decoder::new(&c.decoder, vb.pp("decoder"))?;
                    Ok((embeddings, encoder, layernorm, proj, decoder))
                };
                let (embeddings, encoder, layernorm, proj, decoder) =
                    load().map_err(|e| weights_error(dir, e))?;
                (
                    HfArchitecture::VitGpt2,
                    Vision::Vit {
                        embeddings,
                        encoder,
                        layernorm,
                    },
                    proj,
                    Box::new(decoder) as Box<dyn TextDecoder>,
                    c.decoder_start_token_id,
                    Special {
                        eos: c.eos_token_id,
                        pad: c.pad_token_id,
                    },
                )
            }
        };
        let vocab = decoder.vocab_size();
        for (what, id) in [("start", start), ("end", special.eos), ("pad", special.pad)] {
            if id as usize >= vocab {
                return Err(malformed(
                    &cfg_path,
                    format!("{what} token id {id} is outside the vocabulary of {vocab}"),
                ));
            }
        }
        Ok(Self {
            arch,
            dir: dir.to_path_buf(),
            vision,
            enc_to_dec,
            decoder,
            tokenizer,
            preprocessor,
            start,
            special,
            device,
        })
    }

    /// Downloads a hub repository's files (`config.json`, `preprocessor_config.json`,
    /// `tokenizer.json`, `model.safetensors`) into the hub cache and loads them.
    #[cfg(feature = "hub")]
    pub fn from_hub(repo: &str) -> Result<Self> {
        let api = hf_hub::api::sync::Api::new().map_err(|e| VlmError::Hub(e.to_string()))?;
        let repo = api.model(repo.to_string());
        let mut dir = None;
        for f in [
            "config.json",
            "preprocessor_config.json",
            "tokenizer.json",
            "model.safetensors",
        ] {
            let p = repo
                .get(f)
                .map_err(|e| VlmError::Hub(format!("{f}: {e}")))?;
            dir = p.parent().map(Path::to_path_buf);
        }
        let dir = dir.ok_or_else(|| VlmError::Hub("no files downloaded".into()))?;
        Self::load(dir)
    }

    /// The architecture loaded.
    pub fn architecture(&self) -> HfArchitecture {
        self.arch
    }

    /// The folder it was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tokenizer, for callers that decode token ids themselves.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The image preprocessing the folder asks for.
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// `[N, 3, H, W]` pixel values of `images`, as the model's image processor makes them.
    pub fn pixel_values(&self, images: &[RgbImage]) -> Result<Tensor> {
        Ok(self.preprocessor.batch(images, &self.device)?)
    }

    /// `[N, patches, dim]` image features the decoder cross-attends to.
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        let feats = match &self.vision {
            Vision::Blip(m) => m.forward(pixels)?,
            Vision::Vit {
                embeddings,
                encoder,
                layernorm,
            } => encoder
                .forward(&embeddings.forward(pixels, None, false)?)?
                .apply(layernorm)?,
        };
        Ok(match &self.enc_to_dec {
            Some(p) => feats.apply(p)?,
            None => feats,
        })
    }

    /// Teacher-forced logits, `[N, T, vocab]`: every image of `pixels` with the same token
    /// sequence `ids` (which starts with the start token).
    pub fn logits(&self, pixels: &Tensor, ids: &[u32]) -> Result<Tensor> {
        let feats = self.image_features(pixels)?;
        let n = feats.dim(0)?;
        let ids = Tensor::new(ids, &self.device)?
            .unsqueeze(0)?
            .repeat((n, 1))?;
        let mut cache = self.decoder.new_cache();
        Ok(self.decoder.forward(&ids, &feats, &mut cache)?)
    }

    /// The tokens every caption starts from: the start token, then the prompt's tokens
    /// without special tokens (what `BlipProcessor` + `generate` feed: `[DEC] a picture of`).
    pub fn prompt_ids(&self, prompt: Option<&str>) -> Result<Vec<u32>> {
        let mut ids = vec![self.start];
        if let Some(p) = prompt.filter(|p| !p.trim().is_empty()) {
            let enc = self
                .tokenizer
                .encode(p, false)
                .map_err(|e| VlmError::Tokenizer(e.to_string()))?;
            ids.extend_from_slice(enc.get_ids());
        }
        Ok(ids)
    }

    /// Generates token ids for every image of `pixels`: per image, up to
    /// `num_return_sequences` hypotheses, best first. Token-for-token what `transformers`'
    /// `model.generate(pixel_values, ...)` returns for greedy and beam search.
    pub fn generate_ids(
        &self,
        pixels: &Tensor,
        opts: &HfGenerateOptions,
    ) -> Result<Vec<Vec<Generated>>> {
        opts.validate()?;
        let prompt = self.prompt_ids(opts.prompt.as_deref())?;
        let longest = prompt.len() + opts.max_new_tokens;
        if longest > self.decoder.max_positions() {
            return Err(VlmError::Options(format!(
                "prompt plus max_new_tokens is {longest} tokens, more than the decoder's {} positions",
                self.decoder.max_positions()
            )));
        }
        let feats = self.image_features(pixels)?;
        let images = feats.dim(0)?;
        if images == 0 {
            return Ok(Vec::new());
        }
        let beams = opts.num_beams;
        let feats = if beams > 1 {
            // Each image's features repeated for its beams, rows b * beams + j.
            let idx: Vec<u32> = (0..images as u32)
                .flat_map(|b| std::iter::repeat_n(b, beams))
                .collect();
            feats.index_select(&Tensor::new(idx.as_slice(), &self.device)?, 0)?
        } else {
            feats
        };
        let mut session = Session {
            decoder: self.decoder.as_ref(),
            image: feats,
            cache: self.decoder.new_cache(),
            device: &self.device,
        };
        let vocab = self.decoder.vocab_size();
        if beams > 1 {
            search::beam_search(&mut session, images, vocab, &prompt, opts, self.special)
        } else {
            search::single_path(&mut session, images, vocab, &prompt, opts, self.special)
        }
    }

    /// Captions a batch of images: per image, up to `num_return_sequences` captions, best first.
    pub fn caption(
        &self,
        images: &[RgbImage],
        opts: &HfGenerateOptions,
    ) -> Result<Vec<Vec<HfCaption>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let pixels = self.pixel_values(images)?;
        let prompt = self.prompt_ids(opts.prompt.as_deref())?;
        self.generate_ids(&pixels, opts)?
            .into_iter()
            .map(|hyps| {
                hyps.into_iter()
                    .map(|g| {
                        // The prompt is part of the caption, as in `processor.decode(out[0])`.
                        let mut ids = prompt[1..].to_vec();
                        ids.extend_from_slice(&g.tokens);
                        Ok(HfCaption {
                            text: self.decode(&ids)?,
                            tokens: g.tokens,
                            log_prob: g.log_prob,
                            score: g.score,
                            finished: g.finished,
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// Token ids to text, special tokens dropped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map(|s| s.trim().to_string())
            .map_err(|e| VlmError::Tokenizer(e.to_string()))
    }
}

/// One generation call's decoder state: the image rows and their key/value cache.
struct Session<'a> {
    decoder: &'a dyn TextDecoder,
    image: Tensor,
    cache: KvCache,
    device: &'a Device,
}

impl Stepper for Session<'_> {
    fn step(&mut self, ids: &[u32], t: usize) -> Result<Vec<f32>> {
        let rows = self.image.dim(0)?;
        let ids = Tensor::from_slice(ids, (rows, t), self.device)?;
        let logits = self.decoder.forward(&ids, &self.image, &mut self.cache)?;
        Ok(logits
            .narrow(1, t - 1, 1)?
            .squeeze(1)?
            .contiguous()?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    fn select(&mut self, rows: &[usize]) -> Result<()> {
        // Beam search moves beams only within their image, whose rows of `image` and of the
        // cross-attention cache are all alike: leave those as they are.
        self.cache.select_within_images(rows)?;
        Ok(())
    }
}
