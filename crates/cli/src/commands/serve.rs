//! `captioner serve`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use captioner_encode::encoder::Backend;
use captioner_serve::{Model, ServeConfig};
use captioner_vlm::HfCaptioner;

use super::caption::{choose_models, load_bundles, ModelChoice, MODEL_ENV};

/// Serve a web page and a JSON API for captioning.
///
/// Opens http://HOST:PORT/ : a page to choose, drop or paste a photo and read its caption (with
/// per-word attention heat-maps for attention models). The API: POST /v1/captions (multipart
/// field `image`, or the raw image as the body; query options beam, max_len, top_k,
/// attention=true), GET /v1/models, /healthz, /metrics (Prometheus), /openapi.json.
///
/// Concurrent requests are captioned together in batches of up to --max-batch; when --queue
/// images are already waiting, requests are answered 503 with Retry-After. Ctrl-C or SIGTERM
/// stops the server after the requests in flight are answered.
///
/// Examples:
///   captioner serve
///   captioner serve --model runs/sat/best --port 9000
///   captioner serve --model runs/sat/best --model runs/transformer/best
///   curl -F image=@photo.jpg 'http://127.0.0.1:8080/v1/captions?beam=5&top_k=3'
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model bundle directory (config.json, model.safetensors, tokenizer.json), or a Hugging Face
    /// BLIP / ViT-GPT2 folder; default: the shipped models/default. Bundles given more than once
    /// caption as an ensemble (as in `captioner caption`), served under one id joined by `+`.
    #[arg(long, value_name = "DIR", env = MODEL_ENV)]
    model: Vec<PathBuf>,
    /// Encoder weights file (.safetensors or .pth).
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Encoder implementation: fast or candle.
    #[arg(long, default_value = "fast")]
    backend: Backend,
    /// Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Most images captioned together in one encoder/decoder batch.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=256))]
    max_batch: u16,
    /// Longest wait, in milliseconds, for more images after the first of a batch.
    #[arg(long, default_value_t = 5)]
    max_wait_ms: u64,
    /// Most images waiting for the model; further requests are answered 503.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    queue: u32,
    /// Largest request body in megabytes (MiB); larger ones are answered 413.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1024))]
    body_limit_mb: u32,
    /// Longest a caption request may take, in seconds; slower ones are answered 504.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_s: u64,
    /// Beam width when a request does not say; 1 is greedy decoding.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    beam: u16,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model: Model = match choose_models(&args.model)? {
        ModelChoice::HuggingFace(dir) => HfCaptioner::load(&dir)
            .with_context(|| format!("loading Hugging Face model {}", dir.display()))?
            .into(),
        ModelChoice::Bundles(dirs) => {
            load_bundles(&dirs, args.weights.as_deref(), args.backend)?.into()
        }
    };
    let config = ServeConfig {
        max_batch: args.max_batch as usize,
        max_wait: Duration::from_millis(args.max_wait_ms),
        queue: args.queue as usize,
        body_limit: args.body_limit_mb as usize * 1024 * 1024,
        timeout: Duration::from_secs(args.timeout_s),
        default_beam: args.beam as usize,
        model_id: None,
    };
    // The library logs the address it listens on (with --port 0, the port it was given).
    captioner_serve::run(model, config, &args.host, args.port)
        .with_context(|| format!("serving on {}:{}", args.host, args.port))?;
    Ok(())
}
