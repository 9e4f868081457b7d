//! `captioner train`.

use std::path::PathBuf;

use anyhow::Context;
use captioner_train::{EpochReport, Observer, Preset, RunOptions, StepReport};
use indicatif::ProgressBar;

use crate::progress;

/// Train a decoder on cached image features, as a preset describes.
///
/// A preset (`configs/*.toml`) names the dataset, the feature cache, the decoder and its
/// hyper-parameters. Extract the features first, e.g.
/// `captioner extract --dataset flickr8k:../shared/data/flickr8k --spatial --out features/flickr8k-lite0`.
///
/// Each epoch ends with validation (teacher-forced loss, greedy BLEU-4 and CIDEr-D on the
/// validation split); the best epoch by CIDEr-D is kept as the bundle `OUT/best/`, ready for
/// `captioner caption --model OUT/best`. `OUT/last/` is a checkpoint written every
/// `checkpoint_every` steps: after a crash or a kill, run the same command with `--resume`
/// and training continues exactly where the checkpoint left it. `OUT/log.jsonl` records every
/// metric; `OUT/loss.png` and `OUT/metrics.png` chart them. With `keep_epochs = true` in the
/// preset's `[train]`, each epoch's weights also stay as `OUT/epoch-N/`; `captioner export`
/// averages several of them into one model.
///
/// A preset with an `[scst]` section fine-tunes a trained model (`init`) by self-critical
/// sequence training with a CIDEr-D reward instead (see `configs/default-scst.toml`): the loss
/// shown is then the policy-gradient objective, and each epoch also reports the mean reward of
/// the sampled captions (every step's is in `log.jsonl`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Training preset (TOML), e.g. configs/sat.toml.
    #[arg(long, value_name = "TOML")]
    preset: PathBuf,
    /// Run directory for checkpoints, logs and charts.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Continue the run in OUT from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Feature cache to use instead of the preset's `[data] features`.
    #[arg(long, value_name = "DIR")]
    features: Option<PathBuf>,
    /// Dataset spec to use instead of the preset's `[data] dataset`.
    #[arg(long, value_name = "SPEC")]
    dataset: Option<String>,
    /// Train for this many epochs instead of the preset's.
    #[arg(long, value_name = "N")]
    epochs: Option<u32>,
    /// Validate on only the first N validation images (quicker epochs).
    #[arg(long, value_name = "N")]
    val_images: Option<usize>,
    /// Seed instead of the preset's.
    #[arg(long)]
    seed: Option<u64>,
}

struct Bars {
    bar: Option<ProgressBar>,
}

impl Observer for Bars {
    fn note(&mut self, message: &str) {
        match &self.bar {
            Some(b) => b.println(message),
            None => eprintln!("{message}"),
        }
    }

    fn epoch_started(&mut self, epoch: u32, epochs: u32, batches: usize, from_batch: usize) {
        let bar = progress::bar(batches as u64, "steps");
        bar.set_position(from_batch as u64);
        bar.set_message(format!("epoch {epoch}/{epochs}"));
        self.bar = Some(bar);
    }

    fn step(&mut self, r: &StepReport) {
        if let Some(b) = &self.bar {
            b.set_position(r.batch as u64);
            b.set_message(format!(
                "epoch {}/{} loss {:.3} {:.0} tok/s",
                r.epoch, r.epochs, r.loss, r.tokens_per_s
            ));
        }
    }

    fn validating(&mut self, images: usize) {
        if let Some(b) = &self.bar {
            b.set_message(format!("validating on {images} images"));
        }
    }

    fn epoch_finished(&mut self, r: &EpochReport) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        eprintln!(
            "epoch {:>2}: train loss {:.3}{}  val loss {:.3}  BLEU-1 {:.1}  BLEU-4 {:.1}  CIDEr-D {:.1}  lr {:.2e}  {:.0}s{}",
            r.epoch,
            r.train_loss,
            r.train_reward
                .map(|x| format!("  reward {x:.3}"))
                .unwrap_or_default(),
            r.val_loss,
            r.bleu1,
            r.bleu4,
            r.cider_d,
            r.lr,
            r.seconds,
            if r.is_best { "  (best)" } else { "" }
        );
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut preset = Preset::load(&args.preset)?;
    if let Some(f) = args.features {
        preset.data.features = f.to_string_lossy().into_owned();
    }
    if let Some(d) = args.dataset {
        preset.data.dataset = d;
    }
    if let Some(e) = args.epochs {
        preset.train.epochs = e.max(1);
    }
    if let Some(n) = args.val_images {
        preset.data.val_images = n;
    }
    if let Some(s) = args.seed {
        preset.train.seed = s;
    }
    let options = RunOptions {
        run_dir: args.out.clone(),
        resume: args.resume,
        kill_after_steps: None,
    };
    let mut bars = Bars { bar: None };
    let outcome = captioner_train::train(&preset, &options, &mut bars)
        .with_context(|| format!("training into {}", args.out.display()))?;
    let s = &outcome.state;
    let best = match (s.best_epoch, s.best_cider) {
        (Some(e), Some(c)) => format!("best epoch {e} (validation CIDEr-D {c:.1})"),
        _ => "no epoch finished".into(),
    };
    eprintln!(
        "done: {} steps in {:.1} min{}; {best}\n  model: {}\n  checkpoint: {}\n  log: {}",
        s.global_step,
        s.seconds / 60.0,
        if outcome.stopped_early {
            " (stopped early)"
        } else {
            ""
        },
        outcome.best_dir.display(),
        outcome.last_dir.display(),
        args.out.join("log.jsonl").display()
    );
    Ok(())
}
