//! `captioner eval`: score captions against reference captions with BLEU-1..4, METEOR, ROUGE-L
//! and CIDEr-D, numbers identical to the COCO caption evaluation code (pycocoevalcap 1.2).
//! METEOR needs pycocoevalcap's METEOR data files (`--meteor-data`); without them it is skipped.
//!
//! The work happens in `captioner-metrics`; references come from `captioner-data`'s readers.
//!
//! How bad input is handled (mirrors what pycocoevalcap accepts, but never panics):
//! - malformed results JSON, an entry without `image_id`/`caption`, a non-string caption:
//!   error naming the file and the entry;
//! - a result for an image that is not in the annotations (after `--split`): error (pycocoevalcap
//!   refuses such results too);
//! - two results for one image: error naming the id;
//! - an annotated image without a result: warning; scores are over the images that have a
//!   result, as pycocoevalcap does (`--require-all` makes it an error);
//! - an empty caption: warning; it is scored (0 on every metric).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use captioner_data::{DatasetSpec, ImageId, Split};
use captioner_metrics::{tokenizer, MetricScores};
use serde_json::{json, Value};

/// Score a results file against reference captions.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  captioner eval --annotations coco:captions_val2017.json --results results.json
  captioner eval --annotations flickr8k:data/flickr8k --split test --results results.json --per-image scores.jsonl
  captioner eval --annotations data/flickr8k/Flickr8k.token.txt --split test --results results.json
  captioner eval --annotations flickr8k:../shared/data/flickr8k --split test --model models/default --features features/flickr8k-lite0 --beam 3 --save-results test-beam3.json
  captioner eval --annotations flickr8k:../shared/data/flickr8k --split dev --model runs/a/best --model runs/b/best --features features/flickr8k-lite0")]
pub struct Args {
    /// Reference captions: a dataset spec (`coco:<captions.json>`, `flickr8k:<dir>`, ...), a COCO
    /// caption JSON file, a Flickr8k folder, or a Flickr8k token file (its folder must hold the
    /// split files when --split is given).
    #[arg(long, value_name = "SPEC|PATH")]
    annotations: String,

    /// Only the images of this split (train, val/dev, test, restval).
    #[arg(long)]
    split: Option<Split>,

    /// Captions to score, COCO results format: `[{"image_id": ..., "caption": ...}, ...]`.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "model",
        conflicts_with = "model"
    )]
    results: Option<PathBuf>,

    /// Instead of --results: caption every annotated image (after --split) with this model
    /// bundle, reading image features from --features. Given more than once, the bundles caption
    /// as an ensemble: at each word their probabilities are averaged (separate runs or
    /// architectures of one vocabulary and encoder; unlike `captioner export`'s weight averaging).
    #[arg(long, value_name = "DIR", requires = "features")]
    model: Vec<PathBuf>,

    /// Feature cache (from `captioner extract`, with --spatial for attention decoders) holding
    /// the annotated images, for --model.
    #[arg(long, value_name = "DIR")]
    features: Option<PathBuf>,

    /// Beam width for --model (1 = greedy).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    beam: u16,

    /// Longest caption for --model, in words.
    #[arg(long, default_value_t = 20)]
    max_words: usize,

    /// Shortest caption for --model, in words.
    #[arg(long, default_value_t = 1)]
    min_words: usize,

    /// Beam length normalisation for --model: none, average (log-prob per word) or gnmt:<alpha>
    /// [default: the one the (first) bundle was tuned with, else none].
    #[arg(long)]
    length_penalty: Option<captioner_generate::LengthPenalty>,

    /// For --model: never repeat an n-gram of this size (0 = off).
    #[arg(long, default_value_t = 0)]
    no_repeat_ngram: usize,

    /// For --model: let captions contain `<unk>` (suppressed by default, as in `captioner caption`).
    #[arg(long)]
    allow_unk: bool,

    /// Write the captions --model generated here (COCO results format).
    #[arg(long, value_name = "FILE")]
    save_results: Option<PathBuf>,

    /// Where to write the corpus scores as JSON [default: <results>.scores.json].
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// Also write one JSON line of scores per image here.
    #[arg(long, value_name = "FILE")]
    per_image: Option<PathBuf>,

    /// Fail when an annotated image has no result (default: warn and score the others).
    #[arg(long)]
    require_all: bool,

    /// METEOR data folder (pycocoevalcap's `meteor/` folder with meteor-1.5.jar and
    /// data/paraphrase-en.gz); without it METEOR is skipped with a note on how to get it.
    #[arg(long, value_name = "DIR", env = "CAPTIONER_METEOR_DATA")]
    meteor_data: Option<PathBuf>,

    /// Print how long loading, tokenising and scoring took (to stderr).
    #[arg(long)]
    timings: bool,
}

/// The metric names pycocoevalcap reports, in its order.
const METRICS: [&str; 6] = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"];

fn values(s: &MetricScores) -> [f64; 6] {
    [
        s.bleu[0], s.bleu[1], s.bleu[2], s.bleu[3], s.rouge_l, s.cider_d,
    ]
}

pub fn run(args: Args) -> Result<()> {
    let start = Instant::now();
    let spec = annotations_spec(&args.annotations)?;
    let (dataset, _report) = spec
        .load()
        .with_context(|| format!("loading annotations {}", args.annotations))?;
    let dataset = dataset.filtered(args.split);
    if dataset.is_empty() {
        match args.split {
            Some(split) => bail!("{}: no images in split {split}", args.annotations),
            None => bail!("{}: no annotated images", args.annotations),
        }
    }
    let (results, source) = match (&args.results, args.model.first()) {
        (Some(path), _) => (read_results(path)?, path.clone()),
        (None, Some(model)) => {
            let features = args
                .features
                .as_deref()
                .context("--model needs --features <cache dir>")?;
            let results = generate_results(&args.model, features, &dataset, &args)?;
            let source = args
                .save_results
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{}-results.json", model.display())));
            if let Some(path) = &args.save_results {
                let entries: Vec<Value> = results
                    .iter()
                    .map(|(id, caption)| json!({"image_id": id, "caption": caption}))
                    .collect();
                write_file(path, &serde_json::to_string_pretty(&entries)?)?;
                println!("captions written to {}", path.display());
            }
            (results, source)
        }
        (None, None) => bail!("give --results <file> or --model <dir>"),
    };
    let loaded = start.elapsed();

    // Pair every result with its image's references, in results order (pycocoevalcap's order).
    let index: HashMap<&ImageId, usize> = dataset
        .images
        .iter()
        .enumerate()
        .map(|(k, img)| (&img.id, k))
        .collect();
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut references: Vec<&[String]> = Vec::with_capacity(results.len());
    for (k, (id, _)) in results.iter().enumerate() {
        let Some(image) = lookup(&index, id) else {
            bail!(
                "{}: entry {k}: image_id {id} is not in the annotations{}",
                source.display(),
                args.split
                    .map(|s| format!(" (split {s})"))
                    .unwrap_or_default()
            );
        };
        if let Some(first) = seen.insert(image, k) {
            bail!(
                "{}: entries {first} and {k} both give a caption for image_id {id}; one caption per image is expected",
                source.display()
            );
        }
        references.push(&dataset.images[image].captions);
    }
    let missing = dataset.len() - seen.len();
    if missing > 0 {
        if args.require_all {
            bail!(
                "{}: {missing} of {} annotated images have no result (--require-all)",
                source.display(),
                dataset.len()
            );
        }
        tracing::warn!(
            "{missing} of {} annotated images have no result; scoring the {} that do",
            dataset.len(),
            results.len()
        );
    }
    let empty = results.iter().filter(|(_, c)| c.trim().is_empty()).count();
    if empty > 0 {
        tracing::warn!("{empty} empty caption(s) in the results; they score 0");
    }

    // Tokenise exactly as pycocoevalcap: references in one call, candidates in another.
    let t_tok = Instant::now();
    let flat: Vec<&str> = references
        .iter()
        .flat_map(|r| r.iter())
        .map(String::as_str)
        .collect();
    let mut tokens = tokenizer::tokenize_all(&flat).into_iter();
    let ref_tokens: Vec<Vec<String>> = references
        .iter()
        .map(|r| tokens.by_ref().take(r.len()).collect())
        .collect();
    let candidates: Vec<&str> = results.iter().map(|(_, c)| c.as_str()).collect();
    let cand_tokens = tokenizer::tokenize_all(&candidates);
    let tokenized = t_tok.elapsed();

    let t_score = Instant::now();
    let scores = captioner_metrics::evaluate_tokenized(&ref_tokens, &cand_tokens)
        .context("scoring the results")?;
    let meteor = match captioner_metrics::meteor::Meteor::load_default(args.meteor_data.as_deref())
    {
        Ok(m) => Some(
            m.evaluate_tokenized(&ref_tokens, &cand_tokens)
                .context("scoring METEOR")?,
        ),
        Err(e) => {
            eprintln!("METEOR skipped: {e}");
            None
        }
    };
    let scored = t_score.elapsed();

    print!(
        "{}",
        table(
            &scores.corpus,
            meteor.as_ref().map(|m| m.corpus),
            results.len()
        )
    );

    let output = args
        .output
        .clone()
        .unwrap_or_else(|| source.with_extension("scores.json"));
    let mut corpus = serde_json::Map::new();
    for (name, v) in METRICS.iter().zip(values(&scores.corpus)) {
        corpus.insert((*name).to_owned(), json!(v));
    }
    if let Some(m) = &meteor {
        corpus.insert("METEOR".to_owned(), json!(m.corpus));
    }
    corpus.insert("images".to_owned(), json!(results.len()));
    write_file(
        &output,
        &serde_json::to_string_pretty(&Value::Object(corpus))?,
    )?;
    println!("scores written to {}", output.display());

    if let Some(path) = &args.per_image {
        let mut text = String::new();
        for (k, ((id, caption), s)) in results.iter().zip(&scores.per_image).enumerate() {
            let mut line = serde_json::Map::new();
            line.insert("image_id".to_owned(), serde_json::to_value(id)?);
            line.insert("caption".to_owned(), json!(caption));
            for (name, v) in METRICS.iter().zip(values(s)) {
                line.insert((*name).to_owned(), json!(v));
            }
            if let Some(m) = meteor.as_ref().and_then(|m| m.per_image.get(k)) {
                line.insert("METEOR".to_owned(), json!(m));
            }
            writeln!(text, "{}", Value::Object(line))?;
        }
        write_file(path, &text)?;
        println!("per-image scores written to {}", path.display());
    }

    if args.timings {
        eprintln!(
            "timings: load {:.3} s, tokenise {:.3} s, score {:.3} s, total {:.3} s ({} images)",
            loaded.as_secs_f64(),
            tokenized.as_secs_f64(),
            scored.as_secs_f64(),
            start.elapsed().as_secs_f64(),
            results.len()
        );
    }
    Ok(())
}

/// Captions every image of `dataset` with the bundle in `models` (an ensemble of them when there
/// are several), from the cached features.
fn generate_results(
    models: &[PathBuf],
    features: &Path,
    dataset: &captioner_data::Dataset,
    args: &Args,
) -> Result<Vec<(ImageId, String)>> {
    let names = models
        .iter()
        .map(|m| m.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let bundle = captioner_decode::bundle::load_ensemble(models)
        .with_context(|| format!("loading model {names}"))?;
    let cache = captioner_train::open_cache(features)?;
    if cache.meta().encoder != bundle.config.encoder.name {
        bail!(
            "{}: features come from {}, the model was trained on {}",
            features.display(),
            cache.meta().encoder,
            bundle.config.encoder.name
        );
    }
    if cache.meta().normalization.name() != bundle.config.encoder.normalization {
        bail!(
            "{}: features were extracted with {} input normalization, the model was trained on \
             {} (run `captioner extract --normalization {}` into a new folder)",
            features.display(),
            cache.meta().normalization,
            bundle.config.encoder.normalization,
            bundle.config.encoder.normalization
        );
    }
    let ids: Vec<String> = dataset.images.iter().map(|i| i.id.to_string()).collect();
    let source =
        captioner_train::FeatureSource::from_ids(&cache, ids, bundle.decoder.needs_spatial())?;
    let length_penalty = args
        .length_penalty
        .or(bundle.config.length_penalty)
        .unwrap_or_default();
    let strategy = if args.beam <= 1 {
        captioner_generate::Strategy::Greedy
    } else {
        captioner_generate::Strategy::Beam {
            size: args.beam as usize,
            length_penalty,
            top_k_hypotheses: 1,
        }
    };
    let config = captioner_generate::GenerateConfig {
        strategy,
        max_words: args.max_words.max(1),
        min_words: args.min_words.min(args.max_words.max(1)),
        no_repeat_ngram: args.no_repeat_ngram,
        suppress_unk: !args.allow_unk,
        return_attention: false,
    };
    let bar = crate::progress::bar(dataset.len() as u64, "images");
    bar.set_message(if args.beam <= 1 {
        "captioning (greedy)".to_string()
    } else {
        format!(
            "captioning (beam {}, length penalty {length_penalty})",
            args.beam
        )
    });
    let captions = captioner_train::caption_cached(
        bundle.decoder.as_ref(),
        &bundle.vocab,
        &source,
        &config,
        50,
        &mut |n| bar.inc(n as u64),
    )?;
    bar.finish_and_clear();
    Ok(dataset
        .images
        .iter()
        .map(|i| i.id.clone())
        .zip(captions)
        .collect())
}

/// A dataset spec, or a plain path whose kind is guessed from what it is.
fn annotations_spec(arg: &str) -> Result<DatasetSpec> {
    let path = Path::new(arg);
    if !path.exists() {
        if let Ok(spec) = arg.parse::<DatasetSpec>() {
            return Ok(spec);
        }
    }
    if path.is_dir() {
        return Ok(DatasetSpec::Flickr8k {
            dir: path.to_path_buf(),
        });
    }
    if path.is_file() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if name.ends_with(".json") {
            return Ok(DatasetSpec::Coco {
                captions: path.to_path_buf(),
                images: None,
            });
        }
        if name.contains("token") && name.ends_with(".txt") {
            // A Flickr8k token file: the Flickr8k reader wants its folder (split files beside it).
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            return Ok(DatasetSpec::Flickr8k {
                dir: dir.unwrap_or(Path::new(".")).to_path_buf(),
            });
        }
        bail!("{arg}: cannot tell the annotation format from the file name; use a spec such as coco:{arg}");
    }
    arg.parse::<DatasetSpec>().with_context(|| {
        format!("--annotations {arg}: no such file or directory, and not a dataset spec")
    })
}

/// Results ids are matched by value; a COCO id written as a string ("397133") still finds the
/// integer image.
fn lookup(index: &HashMap<&ImageId, usize>, id: &ImageId) -> Option<usize> {
    if let Some(&k) = index.get(id) {
        return Some(k);
    }
    let alt = match id {
        ImageId::Name(s) => s.parse::<u64>().ok().map(ImageId::Int),
        ImageId::Int(n) => Some(ImageId::Name(n.to_string())),
    }?;
    index.get(&alt).copied()
}

/// Reads `[{"image_id": ..., "caption": ...}, ...]`; other fields (`score`, ...) are ignored.
fn read_results(path: &Path) -> Result<Vec<(ImageId, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading results {}", path.display()))?;
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let Value::Array(entries) = value else {
        bail!(
            "{}: expected a JSON array of {{\"image_id\": ..., \"caption\": ...}} objects",
            path.display()
        );
    };
    if entries.is_empty() {
        bail!("{}: no results (empty array)", path.display());
    }
    let mut out = Vec::with_capacity(entries.len());
    for (k, entry) in entries.iter().enumerate() {
        let id = entry
            .get("image_id")
            .with_context(|| format!("{}: entry {k}: no \"image_id\"", path.display()))?;
        let id: ImageId = serde_json::from_value(id.clone()).with_context(|| {
            format!(
                "{}: entry {k}: image_id must be a non-negative integer or a string, got {id}",
                path.display()
            )
        })?;
        let caption = match entry.get("caption") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => {
                bail!(
                    "{}: entry {k} (image_id {id}): no \"caption\"",
                    path.display()
                )
            }
            Some(other) => bail!(
                "{}: entry {k} (image_id {id}): caption must be a string, got {other}",
                path.display()
            ),
        };
        out.push((id, caption));
    }
    Ok(out)
}

fn table(s: &MetricScores, meteor: Option<f64>, images: usize) -> String {
    let mut out = format!("{:<8} {:>8}\n", "metric", "score");
    for (name, v) in METRICS.iter().zip(values(s)) {
        let _ = writeln!(out, "{name:<8} {v:>8.4}");
        if *name == "Bleu_4" {
            if let Some(m) = meteor {
                let _ = writeln!(out, "{:<8} {m:>8.4}", "METEOR");
            }
        }
    }
    let _ = writeln!(out, "({images} images)");
    out
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
