//! The whole captioning job for images on disk or in memory: decode, resize and normalise, run
//! the bundle's encoder, then the decoder with a [`GenerateConfig`]. Shared by `captioner
//! caption` and `captioner serve`.

use crate::{generate, GenerateConfig, GenerateError, Hypothesis};
use captioner_decode::bundle::{self, Bundle};
use captioner_decode::{DecodeError, Features};
use captioner_encode::encoder::{load_encoder, locate_weights, Backend, EncoderKind};
use captioner_encode::{
    EncodeError, Encoder, ImageError, ImageLoader, NormalizationKind, ResizeMode, Want,
};
use image::RgbImage;
use std::path::{Path, PathBuf};

/// Errors of the captioning pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The model bundle.
    #[error(transparent)]
    Bundle(#[from] DecodeError),
    /// The encoder or its weights.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// One image (the message names the file).
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Generation.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// A bundle's `config.json` names a setting this build does not know.
    #[error("{0}")]
    Config(String),
}

/// One image's result.
#[derive(Debug, Clone)]
pub struct Captioned {
    /// Best caption as text.
    pub caption: String,
    /// Its words (the tokens the attention maps refer to).
    pub words: Vec<String>,
    /// All returned hypotheses, best first: `(text, summed log-probability)`.
    pub hypotheses: Vec<(String, f32)>,
    /// Per generated word, attention over the grid cells (attention decoders, when asked).
    pub attention: Option<Vec<Vec<f32>>>,
    /// The resized image the encoder saw (for drawing attention over it).
    pub image: RgbImage,
}

/// A loaded model bundle with its encoder.
pub struct Captioner {
    bundle: Bundle,
    encoder: Box<dyn Encoder>,
    loader: ImageLoader,
    grid: (usize, usize),
    /// The bundle directories, one per ensemble member.
    model_dirs: Vec<PathBuf>,
}

impl Captioner {
    /// Loads the bundle in `model_dir` and the encoder it was trained with (weights from
    /// `weights`, or found by [`locate_weights`]).
    pub fn load(
        model_dir: &Path,
        weights: Option<&Path>,
        backend: Backend,
    ) -> Result<Self, PipelineError> {
        Self::load_ensemble(&[model_dir.to_path_buf()], weights, backend)
    }

    /// Loads several bundles trained on the same vocabulary and image features as one
    /// [`captioner_decode::Ensemble`] that averages their word probabilities at each step
    /// ([`bundle::load_ensemble`]; one directory is a plain [`Captioner::load`]). Attention maps
    /// come from the first member that has them.
    pub fn load_ensemble(
        model_dirs: &[PathBuf],
        weights: Option<&Path>,
        backend: Backend,
    ) -> Result<Self, PipelineError> {
        let bundle = bundle::load_ensemble(model_dirs)?;
        let kind: EncoderKind = bundle.config.encoder.name.parse()?;
        let weights = locate_weights(kind, weights)?;
        let encoder = load_encoder(kind, backend, &weights)?;
        let resize = if bundle.config.encoder.resize.contains("crop") {
            ResizeMode::CenterCrop
        } else {
            ResizeMode::Squash
        };
        let normalization: NormalizationKind =
            bundle.config.encoder.normalization.parse().map_err(|e| {
                let config = model_dirs[0].join(bundle::CONFIG_FILE);
                PipelineError::Config(format!("{}: {e}", config.display()))
            })?;
        let loader = kind
            .image_loader(encoder.input_layout())
            .with_normalization(normalization.stats())
            .with_resize(resize);
        Ok(Self {
            grid: kind.spatial_grid(),
            bundle,
            encoder,
            loader,
            model_dirs: model_dirs.to_vec(),
        })
    }

    /// The bundle (config, decoder, vocabulary).
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// Where the bundle was loaded from (an ensemble's first member).
    pub fn model_dir(&self) -> &Path {
        self.model_dirs
            .first()
            .map_or(Path::new(""), PathBuf::as_path)
    }

    /// Every bundle directory: one, or an ensemble's members in order.
    pub fn model_dirs(&self) -> &[PathBuf] {
        &self.model_dirs
    }

    /// Rows and columns of the encoder's grid (what attention weights cover).
    pub fn grid(&self) -> (usize, usize) {
        self.grid
    }

    /// The image loader (size limits, resizing) used for every image.
    pub fn loader(&self) -> &ImageLoader {
        &self.loader
    }

    /// Decodes and resizes one file; errors name it.
    pub fn load_image(&self, path: &Path) -> Result<RgbImage, PipelineError> {
        Ok(self.loader.load_rgb(path)?)
    }

    /// Decodes and resizes image bytes; `name` is used in error messages.
    pub fn decode_image(&self, bytes: &[u8], name: &str) -> Result<RgbImage, PipelineError> {
        Ok(self.loader.decode_bytes(bytes, Path::new(name))?)
    }

    /// Captions a batch of already decoded and resized images in one encoder and one decoder
    /// pass.
    pub fn caption_images(
        &self,
        images: Vec<RgbImage>,
        config: &GenerateConfig,
    ) -> Result<Vec<Captioned>, PipelineError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let n = images.len();
        let mut pixels = Vec::new();
        for img in &images {
            pixels.extend_from_slice(&self.loader.normalize(img).data);
        }
        let decoder = &self.bundle.decoder;
        let want = Want {
            spatial: decoder.needs_spatial(),
            logits: false,
        };
        let out = self.encoder.encode(&pixels, n, want)?;
        let dim = out.pooled.len() / n;
        let cells = self.grid.0 * self.grid.1;
        let feats = Features {
            batch: n,
            dim,
            pooled: &out.pooled,
            spatial: out.spatial.as_deref(),
            cells: if out.spatial.is_some() { cells } else { 0 },
        };
        let mut config = config.clone();
        config.return_attention &= decoder.has_attention();
        let results = generate(decoder.as_ref(), &feats, &config)?;
        let vocab = &self.bundle.vocab;
        Ok(results
            .into_iter()
            .zip(images)
            .map(|(hyps, image)| {
                let best: Option<&Hypothesis> = hyps.first();
                let words: Vec<String> = best
                    .map(|h| {
                        h.tokens
                            .iter()
                            .map(|&t| vocab.word(t).unwrap_or("<unk>").to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                Captioned {
                    caption: words.join(" "),
                    attention: best.and_then(|h| h.attention.clone()),
                    hypotheses: hyps
                        .iter()
                        .map(|h| (vocab.decode(&h.tokens), h.log_prob))
                        .collect(),
                    words,
                    image,
                }
            })
            .collect())
    }
}
