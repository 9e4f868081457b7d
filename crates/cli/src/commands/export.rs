//! `captioner export`.

use std::path::PathBuf;

use anyhow::Context;
use captioner_decode::bundle::{self, WeightDtype};
use captioner_decode::LengthPenalty;

/// Copy a model bundle (e.g. a run's `best/`) to a new folder, optionally with half-precision
/// weights (half the size, same captions up to rounding), or average several checkpoints of one
/// run into one model.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  captioner export --model runs/default/best --out models/default --f16
  captioner export --model runs/x/epoch-2 --model runs/x/epoch-3 --out models/x --f16
  captioner export --model runs/x/best --out models/x --f16 --length-penalty average")]
pub struct Args {
    /// The bundle to read. Give it more than once to average the weights of several checkpoints
    /// of one run (same architecture and vocabulary), e.g. the `epoch-N/` folders that
    /// `keep_epochs = true` in a preset's `[train]` leaves: the mean of the last few epochs often
    /// scores a little better than any one of them.
    #[arg(long, value_name = "DIR", required = true)]
    model: Vec<PathBuf>,
    /// Where to write the copy (replaced if it exists).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Store the weights as f16.
    #[arg(long)]
    f16: bool,
    /// Record this beam length normalisation (none, average or gnmt:<alpha>) as the bundle's
    /// default, used by `caption`, `eval` and `serve` unless they are told otherwise; choose it
    /// on the validation split (`captioner eval --split dev --length-penalty ...`). Default: keep
    /// the first source's.
    #[arg(long)]
    length_penalty: Option<LengthPenalty>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let sources = args
        .model
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ");
    let mut b = bundle::load_average(&args.model).with_context(|| format!("loading {sources}"))?;
    if args.length_penalty.is_some() {
        b.config.length_penalty = args.length_penalty;
    }
    let dtype = if args.f16 {
        WeightDtype::F16
    } else {
        WeightDtype::F32
    };
    bundle::save(&args.out, &b.config, b.decoder.as_ref(), &b.vocab, dtype)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let size: u64 = std::fs::read_dir(&args.out)
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    eprintln!(
        "{} ({} decoder, {} parameters, length penalty {}) written to {} ({:.1} MB)",
        sources,
        b.config.decoder.kind(),
        b.decoder.params().len(),
        b.config.length_penalty.unwrap_or_default(),
        args.out.display(),
        size as f64 / 1e6
    );
    Ok(())
}
