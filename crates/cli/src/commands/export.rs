//! `captioner export`.

use std::path::PathBuf;

use anyhow::Context;
use captioner_decode::bundle::{self, WeightDtype};

/// Copy a model bundle (e.g. a run's `best/`) to a new folder, optionally with half-precision
/// weights (half the size, same captions up to rounding).
///
/// Example: captioner export --model runs/default/best --out models/default --f16
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle to read.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Where to write the copy (replaced if it exists).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Store the weights as f16.
    #[arg(long)]
    f16: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let b = bundle::load(&args.model)
        .with_context(|| format!("loading model {}", args.model.display()))?;
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
        "{} ({} decoder, {} parameters) written to {} ({:.1} MB)",
        args.model.display(),
        b.config.decoder.kind(),
        b.decoder.params().len(),
        args.out.display(),
        size as f64 / 1e6
    );
    Ok(())
}
