//! `captioner extract`: encode a dataset's images once and cache the features on disk.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use captioner_data::{DatasetSpec, Split};
use captioner_encode::cache::{CacheMeta, CacheWriter};
use captioner_encode::encoder::pipeline::{check_options, extract, ExtractItem, ExtractOptions};
use captioner_encode::encoder::{load_encoder, locate_weights, Backend, EncoderKind};
use captioner_encode::image::{NormalizationKind, ResizeMode, DEFAULT_MAX_PIXELS};

/// File extensions `--images` picks up (case-insensitive).
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "bmp"];

/// Compute CNN features for every image of a dataset (or folder) and cache them in `--out`.
///
/// Re-running with the same `--out` skips images already cached, so an interrupted run resumes.
/// Images that cannot be decoded are listed at the end and in `<out>/index.json`, and skipped.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Dataset to read image ids and files from, e.g. `flickr8k:../shared/data/flickr8k`.
    #[arg(long, value_name = "SPEC", required_unless_present = "images")]
    dataset: Option<DatasetSpec>,

    /// Encode all images in this folder instead (ids are the file names).
    #[arg(long, value_name = "DIR", conflicts_with = "dataset")]
    images: Option<PathBuf>,

    /// Only this split of the dataset (train, val/dev, test).
    #[arg(long, requires = "dataset")]
    split: Option<Split>,

    /// The CNN to use (input size, pooled dims, grid): efficientnet-lite0 (224, 1280, 7x7),
    /// resnet50 (224, 2048, 7x7), vgg16 (224, 4096 from fc2, no cached grid), densenet201 (224,
    /// 1920, 7x7), inception-v3 (299, 2048, 8x8).
    #[arg(long, default_value = "efficientnet-lite0", value_parser = super::encoder_parser())]
    encoder: EncoderKind,

    /// Also store the spatial feature grid (7x7x<dims>, 8x8 for inception-v3), for attention
    /// decoders; not available for vgg16.
    #[arg(long)]
    spatial: bool,

    /// Output directory for the feature cache (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// `fast` (hand-written kernels: efficientnet-lite0, resnet50) or `candle` (the reference
    /// models, every encoder; also reads .pth). Encoders without a fast path use candle.
    #[arg(long, default_value = "fast")]
    backend: Backend,

    /// Weights file (.safetensors or .pth); default: $CAPTIONER_WEIGHTS_DIR, then
    /// ../shared/data/models/<encoder>/ (see README.md, "Encoder weights").
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,

    /// Resize the shorter side and cut the centre, instead of squashing to a square.
    #[arg(long)]
    crop: bool,

    /// Input statistics: `inception` (mean 127, std 128 on 0-255 pixels, what Google trained
    /// EfficientNet-Lite with) or `imagenet` (torchvision's). Default: the encoder's own,
    /// inception for efficientnet-lite0 and imagenet for the others. Caches and models record
    /// it; `imagenet` reproduces Lite0 caches made before it was recorded.
    #[arg(long, value_name = "NAME")]
    normalization: Option<NormalizationKind>,

    /// Mirror every image left-right before encoding: a second view of the training images for
    /// `[data] augment_features` in a training preset (a cache of its own, e.g.
    /// `features/flickr8k-lite0-flip`).
    #[arg(long)]
    flip: bool,

    /// Images per forward pass.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    batch_size: u16,

    /// Images per cache shard; a killed run loses at most one shard of work.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    shard_size: u32,

    /// Refuse images with more pixels than this (checked before decoding).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
    max_pixels: u64,

    /// Only the first N images (for a quick try or a benchmark).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut items = match (&args.dataset, &args.images) {
        (Some(spec), _) => dataset_items(spec, args.split)?,
        (None, Some(dir)) => folder_items(dir)?,
        (None, None) => bail!("give --dataset <spec> or --images <dir>"),
    };
    if let Some(limit) = args.limit {
        items.truncate(limit);
    }
    if items.is_empty() {
        bail!("no images to encode");
    }

    let kind = args.encoder;
    let options = ExtractOptions {
        batch_size: usize::from(args.batch_size),
        spatial: args.spatial,
    };
    check_options(kind, options)?;
    let weights = locate_weights(kind, args.weights.as_deref())?;
    tracing::info!("loading {kind} weights from {}", weights.display());
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
        .with_flip(args.flip)
        .with_max_pixels(args.max_pixels);

    let (rows, cols) = kind.spatial_grid();
    let meta = CacheMeta {
        encoder: kind.name().to_string(),
        feature_dim: kind.feature_dim(),
        spatial_cells: args.spatial.then_some(rows * cols),
        resize: format!(
            "{}{}",
            if args.crop { "center-crop" } else { "squash" },
            if args.flip { CacheMeta::MIRRORED } else { "" }
        ),
        normalization,
    };
    let mut cache = CacheWriter::open(&args.out, meta, args.shard_size as usize)
        .with_context(|| format!("opening feature cache {}", args.out.display()))?;

    let bar = crate::progress::bar(items.len() as u64, "images");
    bar.set_message(kind.name());
    let report = extract(
        &items,
        &loader,
        encoder.as_ref(),
        &mut cache,
        options,
        &mut |n| bar.inc(n as u64),
    )
    .with_context(|| format!("extracting features into {}", args.out.display()))?;
    bar.finish_and_clear();

    for (_, error) in &report.failed {
        eprintln!("skipped: {error}");
    }
    let secs = report.elapsed.as_secs_f64();
    println!(
        "{}: encoded {} images, skipped {} already cached, {} failed, in {secs:.1}s \
         ({:.1} images/s, {:.1}s in the encoder)",
        args.out.display(),
        report.encoded,
        report.skipped,
        report.failed.len(),
        report.images_per_sec(),
        report.encode_time.as_secs_f64(),
    );
    if !report.failed.is_empty() {
        println!(
            "failed images are listed in {}",
            args.out.join(captioner_encode::cache::INDEX_FILE).display()
        );
    }
    Ok(())
}

fn dataset_items(spec: &DatasetSpec, split: Option<Split>) -> anyhow::Result<Vec<ExtractItem>> {
    let (dataset, report) = spec
        .load()
        .with_context(|| format!("loading dataset {spec}"))?;
    if !report.missing_images.is_empty() {
        tracing::warn!(
            "{} images named by {} have no file (skipped)",
            report.missing_images.len(),
            report.source
        );
    }
    let dataset = dataset.filtered(split);
    let Some(_) = &dataset.images_dir else {
        bail!("dataset {spec} has no images directory; give one in the spec (`...@<images dir>`)");
    };
    Ok(dataset
        .images
        .iter()
        .filter_map(|entry| {
            dataset.image_path(entry).map(|path| ExtractItem {
                id: entry.id.to_string(),
                path,
            })
        })
        .collect())
}

fn folder_items(dir: &Path) -> anyhow::Result<Vec<ExtractItem>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading image folder {}", dir.display()))?;
    let mut items = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading image folder {}", dir.display()))?
            .path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)));
        if !is_image || !path.is_file() {
            continue;
        }
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            items.push(ExtractItem {
                id: name.to_string(),
                path: path.clone(),
            });
        }
    }
    // Sorted so ids land in the same shards on every run and machine.
    items.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(items)
}
