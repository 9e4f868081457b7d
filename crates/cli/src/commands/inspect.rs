//! `captioner inspect`: sanity checks on images, models and feature caches.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use captioner_encode::cache::FeatureCache;
use captioner_encode::encoder::{load_encoder, locate_weights, Backend, EncoderKind, Want};
use captioner_encode::image::{NormalizationKind, ResizeMode, DEFAULT_MAX_PIXELS};

/// Look inside images, models and feature caches.
///
/// `--classify` runs the ImageNet classifier on images and prints the top classes: if a photo
/// of a dog comes out as a dog, the weights, the decoding and the normalisation are right.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["classify", "cache"])))]
pub struct Args {
    /// Images to classify with the encoder's ImageNet head.
    #[arg(long, value_name = "IMAGE", num_args = 1..)]
    classify: Vec<PathBuf>,

    /// A feature cache directory (from `captioner extract`) to summarise.
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,

    /// The CNN to use (input size, pooled dims, grid): efficientnet-lite0 (224, 1280, 7x7),
    /// resnet50 (224, 2048, 7x7), vgg16 (224, 4096 from fc2, no cached grid), densenet201 (224,
    /// 1920, 7x7), inception-v3 (299, 2048, 8x8).
    #[arg(long, default_value = "efficientnet-lite0", value_parser = super::encoder_parser())]
    encoder: EncoderKind,

    /// `fast` (hand-written kernels: efficientnet-lite0, resnet50) or `candle` (the reference
    /// models, every encoder; also reads .pth). Encoders without a fast path use candle.
    #[arg(long, default_value = "fast")]
    backend: Backend,

    /// Weights file (.safetensors or .pth); default: $CAPTIONER_WEIGHTS_DIR, then
    /// ../shared/data/models/<encoder>/ (see README.md, "Encoder weights").
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,

    /// Class names, one per line in index order; default: imagenet_classes.txt beside the weights.
    #[arg(long, value_name = "FILE")]
    classes: Option<PathBuf>,

    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    top: usize,

    /// Resize the shorter side and cut the centre, instead of squashing to a square.
    #[arg(long)]
    crop: bool,

    /// Input statistics for `--classify`: `inception` or `imagenet`; default: the encoder's own
    /// (see `captioner extract --help`).
    #[arg(long, value_name = "NAME")]
    normalization: Option<NormalizationKind>,

    /// Refuse images with more pixels than this (checked before decoding).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(dir) = &args.cache {
        inspect_cache(dir)?;
    }
    if !args.classify.is_empty() {
        classify(&args)?;
    }
    Ok(())
}

fn classify(args: &Args) -> anyhow::Result<()> {
    let kind = args.encoder;
    let weights = locate_weights(kind, args.weights.as_deref())?;
    let names = class_names(args.classes.as_deref(), &weights, kind.num_classes())?;
    let encoder = load_encoder(kind, args.backend, &weights)?;
    let resize = if args.crop {
        ResizeMode::CenterCrop
    } else {
        ResizeMode::Squash
    };
    let normalization = args.normalization.unwrap_or(kind.normalization());
    let loader = kind
        .image_loader(encoder.input_layout())
        .with_normalization(normalization.stats())
        .with_resize(resize)
        .with_max_pixels(args.max_pixels);
    let want = Want {
        spatial: false,
        logits: true,
    };
    let mut failed = 0;
    for path in &args.classify {
        // One image at a time: a broken file is reported and the others still get classified.
        let image = match loader.load(path) {
            Ok(image) => image,
            Err(err) => {
                eprintln!("error: {err}");
                failed += 1;
                continue;
            }
        };
        let out = encoder
            .encode(&image.data, 1, want)
            .with_context(|| format!("classifying {}", path.display()))?;
        let logits = out.logits.unwrap_or_default();
        println!("{}", path.display());
        for (rank, (class, prob)) in top_k(&logits, args.top).into_iter().enumerate() {
            let name = names.get(class).map_or("?", String::as_str);
            println!(
                "  {}. {:<30} {:6.2}%  (class {class})",
                rank + 1,
                name,
                prob * 100.0
            );
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} images could not be read",
            args.classify.len()
        );
    }
    Ok(())
}

/// The `k` most probable classes as `(index, softmax probability)`.
fn top_k(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order
        .into_iter()
        .take(k)
        .map(|i| (i, (logits[i] - max).exp() / sum))
        .collect()
}

fn class_names(
    explicit: Option<&Path>,
    weights: &Path,
    expected: usize,
) -> anyhow::Result<Vec<String>> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let beside = weights.with_file_name("imagenet_classes.txt");
            if !beside.is_file() {
                tracing::warn!(
                    "no class names at {} (use --classes); printing indices",
                    beside.display()
                );
                return Ok(Vec::new());
            }
            beside
        }
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading class names {}", path.display()))?;
    let names: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    if names.len() != expected {
        bail!(
            "{}: {} class names, the model has {expected} classes",
            path.display(),
            names.len()
        );
    }
    Ok(names)
}

fn inspect_cache(dir: &Path) -> anyhow::Result<()> {
    let cache = FeatureCache::open(dir)
        .with_context(|| format!("opening feature cache {}", dir.display()))?;
    let meta = cache.meta();
    println!("feature cache {}", dir.display());
    println!(
        "  encoder:  {} ({} resize, {} normalization)",
        meta.encoder, meta.resize, meta.normalization
    );
    println!(
        "  images:   {} in {} shards",
        cache.len(),
        cache.index().shards.len()
    );
    println!("  pooled:   {} x f16", meta.feature_dim);
    match meta.spatial_cells {
        Some(cells) => println!("  spatial:  {cells} x {} x f16", meta.feature_dim),
        None => println!("  spatial:  not stored"),
    }
    let failures = &cache.index().failures;
    println!("  failures: {}", failures.len());
    for failure in failures {
        println!("    {}: {}", failure.id, failure.error);
    }
    Ok(())
}
