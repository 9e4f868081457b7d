//! What the server captions with: one of our bundles (encoder + trained decoder), or a pretrained
//! Hugging Face BLIP / ViT-GPT2 folder (`captioner-vlm`), behind the same endpoints.

use std::path::Path;

use captioner_encode::image::{decode_rgb, DEFAULT_MAX_PIXELS};
use captioner_generate::pipeline::{Captioned, Captioner};
use captioner_generate::{GenerateConfig, LengthPenalty, Strategy};
use captioner_vlm::{HfCaptioner, HfGenerateOptions};
use image::RgbImage;

use crate::error::ApiError;

/// A served model.
pub enum Model {
    /// A bundle trained by `captioner train` (boxed, like the other variant, to keep the enum a
    /// pointer wide).
    Bundle(Box<Captioner>),
    /// A Hugging Face BLIP or ViT-GPT2 folder (boxed).
    Hf(Box<HfCaptioner>),
}

impl From<Captioner> for Model {
    fn from(c: Captioner) -> Self {
        Model::Bundle(Box::new(c))
    }
}

impl From<HfCaptioner> for Model {
    fn from(c: HfCaptioner) -> Self {
        Model::Hf(Box::new(c))
    }
}

/// What `GET /v1/models` says about a model besides the server settings.
pub(crate) struct Description {
    /// One folder, or an ensemble's members in order.
    pub folders: Vec<std::path::PathBuf>,
    pub decoder: String,
    pub encoder: String,
    pub resize: String,
    pub vocab_size: usize,
    pub attention: bool,
}

impl Model {
    /// Decodes an upload (refusing pixel bombs before decoding) into what
    /// [`Model::caption_images`] takes: resized for a bundle's encoder; as is for a Hugging Face
    /// model, whose own preprocessing resizes.
    pub fn decode_image(&self, bytes: &[u8], name: &str) -> Result<RgbImage, ApiError> {
        match self {
            Model::Bundle(c) => Ok(c.decode_image(bytes, name)?),
            Model::Hf(_) => Ok(decode_rgb(bytes, Path::new(name), DEFAULT_MAX_PIXELS)?),
        }
    }

    /// The beam length normalisation used when a request does not choose one: the bundle's own
    /// (`length_penalty` in its config.json, else none); a Hugging Face model's default, average.
    pub fn length_penalty(&self) -> LengthPenalty {
        match self {
            Model::Bundle(c) => c.bundle().config.length_penalty.unwrap_or_default(),
            Model::Hf(_) => LengthPenalty::Average,
        }
    }

    /// The attention grid `(rows, columns)`; `(0, 0)` without attention.
    pub fn grid(&self) -> (usize, usize) {
        match self {
            Model::Bundle(c) => c.grid(),
            Model::Hf(_) => (0, 0),
        }
    }

    /// Captions a batch of images decoded by [`Model::decode_image`] with one setting.
    pub fn caption_images(
        &self,
        images: Vec<RgbImage>,
        config: &GenerateConfig,
    ) -> Result<Vec<Captioned>, ApiError> {
        match self {
            Model::Bundle(c) => Ok(c.caption_images(images, config)?),
            Model::Hf(hf) => {
                let opts = hf_options(config);
                let captions = hf
                    .caption(&images, &opts)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                Ok(captions
                    .into_iter()
                    .zip(images)
                    .map(|(hyps, image)| {
                        let hypotheses: Vec<(String, f32)> =
                            hyps.into_iter().map(|h| (h.text, h.log_prob)).collect();
                        let caption = hypotheses.first().map(|h| h.0.clone()).unwrap_or_default();
                        Captioned {
                            words: caption.split_whitespace().map(str::to_string).collect(),
                            caption,
                            hypotheses,
                            attention: None,
                            image,
                        }
                    })
                    .collect())
            }
        }
    }

    pub(crate) fn describe(&self) -> Description {
        match self {
            Model::Bundle(c) => {
                let bundle = c.bundle();
                Description {
                    folders: c.model_dirs().to_vec(),
                    // `ensemble` for several bundles, else the architecture.
                    decoder: bundle.decoder.kind().to_string(),
                    encoder: bundle.config.encoder.name.clone(),
                    resize: if bundle.config.encoder.resize.contains("crop") {
                        "crop".into()
                    } else {
                        "squash".into()
                    },
                    vocab_size: bundle.vocab.len(),
                    attention: bundle.decoder.has_attention(),
                }
            }
            Model::Hf(hf) => Description {
                folders: vec![hf.dir().to_path_buf()],
                decoder: hf.architecture().name().to_string(),
                encoder: "vit".into(),
                resize: "squash".into(),
                vocab_size: hf.tokenizer().get_vocab_size(true),
                attention: false,
            },
        }
    }
}

/// The request settings as `generate`'s arguments. Hugging Face models divide a beam's
/// log-probability by length^p: none and average both become their default p = 1, which these
/// models' beam settings assume.
fn hf_options(config: &GenerateConfig) -> HfGenerateOptions {
    let mut opts = HfGenerateOptions {
        max_new_tokens: config.max_words.max(1),
        min_new_tokens: config.min_words,
        no_repeat_ngram_size: config.no_repeat_ngram,
        ..HfGenerateOptions::default()
    };
    match config.strategy {
        Strategy::Greedy => {}
        Strategy::Beam {
            size,
            length_penalty,
            top_k_hypotheses,
        } => {
            opts.num_beams = size.max(1);
            opts.num_return_sequences = top_k_hypotheses.clamp(1, opts.num_beams);
            opts.length_penalty = match length_penalty {
                LengthPenalty::None | LengthPenalty::Average => 1.0,
                LengthPenalty::Gnmt(alpha) => alpha,
            };
        }
        Strategy::Sample {
            temperature,
            top_k,
            top_p,
            seed,
        } => {
            opts.do_sample = true;
            opts.temperature = temperature;
            opts.top_k = top_k;
            opts.top_p = top_p;
            opts.seed = seed;
        }
    }
    opts
}
