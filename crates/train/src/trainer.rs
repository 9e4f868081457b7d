//! The epoch loop.

use crate::charts;
use crate::checkpoint::{self, TrainerState};
use crate::data::{open_cache, FeatureRows, FeatureSource, TrainData};
use crate::predict::{caption_cached, features};
use crate::preset::{OptimizerKind, Preset, Sampling, Schedule};
use crate::schedule::lr_at;
use crate::scheduled_sampling::{mix_inputs, replace_prob};
use crate::scst::Scst;
use crate::{io_err, TrainError};
use captioner_data::{Batch, Batcher, Vocab};
use captioner_decode::bundle::{self, BundleConfig, EncoderInfo, WeightDtype, BUNDLE_FORMAT};
use captioner_decode::optim::{
    clip_grad_norm, Adam, AdamConfig, Optimizer, RmsProp, RmsPropConfig,
};
use captioner_decode::{Decoder, ModelDims, PassOptions, TeacherBatch};
use captioner_generate::{GenerateConfig, Strategy};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Images per generation batch during validation.
const VAL_GEN_BATCH: usize = 100;
/// Longest caption generated during validation.
const VAL_MAX_WORDS: usize = 20;
/// A `step` line goes to the log every this many steps.
const LOG_EVERY: u64 = 10;

/// How to run (beyond the preset).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The run directory (created if missing).
    pub run_dir: PathBuf,
    /// Continue from `run_dir/last` instead of starting over.
    pub resume: bool,
    /// Stop dead after this global step without saving anything, as a kill would (tests).
    pub kill_after_steps: Option<u64>,
}

/// Progress of one step, for progress bars.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    /// 1-based epoch.
    pub epoch: u32,
    /// Epochs planned.
    pub epochs: u32,
    /// Batches done in this epoch.
    pub batch: usize,
    /// Batches per epoch.
    pub batches: usize,
    /// Global step.
    pub step: u64,
    /// Mean token loss of the step.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f32,
    /// Target tokens per second over the step.
    pub tokens_per_s: f64,
}

/// The end of an epoch.
#[derive(Clone, Debug, Serialize)]
pub struct EpochReport {
    /// 1-based epoch.
    pub epoch: u32,
    /// Global step at its end.
    pub step: u64,
    /// Mean training token loss (SCST: the mean policy-gradient objective).
    pub train_loss: f64,
    /// SCST only: mean CIDEr-D reward of the epoch's sampled captions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_reward: Option<f64>,
    /// Mean validation token loss (teacher forced, no dropout).
    pub val_loss: f64,
    /// Greedy-decoded validation BLEU-1, in percent.
    pub bleu1: f64,
    /// Greedy-decoded validation BLEU-4, in percent.
    pub bleu4: f64,
    /// Greedy-decoded validation CIDEr-D, in percent.
    pub cider_d: f64,
    /// Learning rate at the end.
    pub lr: f32,
    /// Wall-clock seconds of the epoch (training and validation).
    pub seconds: f64,
    /// Whether this epoch is the new `best/`.
    pub is_best: bool,
    /// Peak resident memory of the process so far, MiB.
    pub peak_rss_mib: Option<f64>,
}

/// Receives progress; the CLI draws bars from it.
pub trait Observer {
    /// Free-form information (what was loaded, resumed from where).
    fn note(&mut self, _message: &str) {}
    /// An epoch starts (or resumes at `from_batch`).
    fn epoch_started(&mut self, _epoch: u32, _epochs: u32, _batches: usize, _from_batch: usize) {}
    /// A step finished.
    fn step(&mut self, _report: &StepReport) {}
    /// Validation starts on `images` images.
    fn validating(&mut self, _images: usize) {}
    /// An epoch finished.
    fn epoch_finished(&mut self, _report: &EpochReport) {}
}

/// An observer that ignores everything.
pub struct NullObserver;
impl Observer for NullObserver {}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// Final counters.
    pub state: TrainerState,
    /// Epoch reports of this process (resumed runs: only the new ones).
    pub epochs: Vec<EpochReport>,
    /// Whether early stopping ended it.
    pub stopped_early: bool,
    /// Whether `kill_after_steps` ended it.
    pub killed: bool,
    /// `best/` bundle.
    pub best_dir: PathBuf,
    /// `last/` checkpoint.
    pub last_dir: PathBuf,
}

fn make_optimizer(preset: &Preset, n: usize) -> Box<dyn Optimizer> {
    let t = &preset.train;
    match t.optimizer {
        OptimizerKind::Adam => Box::new(Adam::new(
            n,
            AdamConfig {
                weight_decay: t.weight_decay,
                ..AdamConfig::adam(t.lr)
            },
        )),
        OptimizerKind::AdamW => Box::new(Adam::new(
            n,
            AdamConfig {
                weight_decay: t.weight_decay,
                ..AdamConfig::adamw(t.lr)
            },
        )),
        OptimizerKind::RmsProp => Box::new(RmsProp::new(
            n,
            RmsPropConfig {
                weight_decay: t.weight_decay,
                ..RmsPropConfig::new(t.lr)
            },
        )),
    }
}

/// Where `keep_epochs` puts the weights of 1-based `epoch`.
pub fn epoch_dir(run: &Path, epoch: u32) -> PathBuf {
    run.join(format!("epoch-{epoch}"))
}

/// Dropout randomness of a step depends only on the seed and the step, so a resumed run
/// draws the same masks as an uninterrupted one without storing generator state.
fn step_rng(seed: u64, step: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(step.wrapping_add(1));
    rng
}

/// Which feature view each of a step's `rows` reads, uniform over `view_count`. A stream of its
/// own, so that a run without augmentation draws exactly what it drew before augmentation
/// existed, and a resumed run draws what the uninterrupted one would.
fn draw_views(view_count: usize, seed: u64, step: u64, rows: usize, out: &mut Vec<usize>) {
    out.clear();
    if view_count > 1 {
        let mut rng = step_rng(seed ^ VIEW_SEED, step);
        out.extend((0..rows).map(|_| rng.random_range(0..view_count)));
    }
}

/// Mixed into the run's seed for [`draw_views`] ("views" in ASCII).
const VIEW_SEED: u64 = 0x0076_6965_7773;

/// Peak resident set size (`VmHWM`), MiB; `None` off Linux.
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

struct Log {
    path: PathBuf,
    records: Vec<serde_json::Value>,
}

impl Log {
    /// Opens the log, keeping only records up to `step` (a resumed run replays what follows).
    fn open(path: PathBuf, keep_until_step: Option<u64>) -> Result<Self, TrainError> {
        let mut records = Vec::new();
        if let Some(limit) = keep_until_step {
            if let Ok(text) = std::fs::read_to_string(&path) {
                for line in text.lines() {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                        if v.get("step")
                            .and_then(|s| s.as_u64())
                            .is_some_and(|s| s <= limit)
                        {
                            records.push(v);
                        }
                    }
                }
            }
        }
        let mut text = String::new();
        for r in &records {
            text.push_str(&r.to_string());
            text.push('\n');
        }
        bundle::write_atomic(&path, text.as_bytes())?;
        Ok(Self { path, records })
    }

    fn push(&mut self, record: serde_json::Value) -> Result<(), TrainError> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        writeln!(f, "{record}").map_err(io_err(&self.path))?;
        self.records.push(record);
        Ok(())
    }
}

fn teacher(batch: &Batch) -> TeacherBatch<'_> {
    TeacherBatch {
        batch: batch.batch,
        time: batch.time,
        inputs: &batch.inputs,
        targets: &batch.targets,
        weights: None,
        loss_scale: 1.0,
    }
}

/// A length-sorted batch's cross-entropy scale: its target tokens over those of an average batch
/// of as many rows. A sorted batch of short captions holds few tokens, and its per-token mean
/// would weigh each of them more than a random batch does; the scale makes every token of an
/// epoch weigh the same. `None` (random batches) is 1.
fn token_share(batch: &TeacherBatch, mean_row_tokens: Option<f64>) -> f32 {
    mean_row_tokens.map_or(1.0, |mean| {
        (batch.valid_targets() as f64 / (mean * batch.batch as f64)) as f32
    })
}

struct Validation {
    loss: f64,
    bleu1: f64,
    bleu4: f64,
    cider_d: f64,
}

fn validate(
    decoder: &mut dyn Decoder,
    data: &TrainData,
    batcher: &Batcher,
    source: &FeatureSource,
    smoothing: f32,
) -> Result<Validation, TrainError> {
    let mut rows = FeatureRows::default();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (mut loss_sum, mut tokens) = (0f64, 0usize);
    let opts = PassOptions {
        label_smoothing: smoothing,
        train: false,
        ..PassOptions::default()
    };
    for batch in batcher.epoch(0) {
        source.gather(&batch.images, &mut rows)?;
        let feats = features(&rows, batch.batch, source);
        let stats = decoder.forward(&feats, &teacher(&batch), &opts, false, &mut rng)?;
        loss_sum += stats.loss as f64 * stats.tokens as f64;
        tokens += stats.tokens;
    }
    let cfg = GenerateConfig {
        strategy: Strategy::Greedy,
        max_words: VAL_MAX_WORDS,
        ..GenerateConfig::default()
    };
    let hyps = caption_cached(
        &*decoder,
        &data.vocab,
        source,
        &cfg,
        VAL_GEN_BATCH,
        &mut |_| {},
    )?;
    let refs: Vec<Vec<&str>> = data
        .val
        .images
        .iter()
        .map(|i| i.captions.iter().map(String::as_str).collect())
        .collect();
    let scores = captioner_metrics::evaluate(&refs, &hyps)
        .map_err(|e| TrainError::Data(format!("validation metrics: {e}")))?;
    Ok(Validation {
        loss: loss_sum / tokens.max(1) as f64,
        bleu1: scores.corpus.bleu[0] * 100.0,
        bleu4: scores.corpus.bleu[3] * 100.0,
        cider_d: scores.corpus.cider_d * 100.0,
    })
}

/// Runs (or resumes) the training described by `preset` in `options.run_dir`.
pub fn train(
    preset: &Preset,
    options: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<RunOutcome, TrainError> {
    let run = options.run_dir.as_path();
    std::fs::create_dir_all(run).map_err(io_err(run))?;
    let cache = open_cache(Path::new(&preset.data.features))?;
    // The bundle records how its images were prepared, and captioning does not mirror them.
    if cache.meta().is_mirrored() {
        return Err(TrainError::Data(format!(
            "[data] features: {} holds mirrored images (`captioner extract --flip`), which \
             captioning never sees; give the plain cache as `features` and this one in \
             `augment_features`",
            cache.dir().display()
        )));
    }
    let augment_caches = preset
        .data
        .augment_features
        .iter()
        .map(|dir| open_cache(Path::new(dir)))
        .collect::<Result<Vec<_>, _>>()?;
    let spatial = preset.model.needs_spatial();

    let resume_from = if options.resume {
        Some(checkpoint::find_last(run).ok_or_else(|| {
            TrainError::Resume(format!("no checkpoint in {}", run.join("last").display()))
        })?)
    } else {
        if checkpoint::find_last(run).is_some() {
            return Err(TrainError::Resume(format!(
                "{} already holds a run; pass --resume to continue it, or choose another --out",
                run.display()
            )));
        }
        None
    };
    let resumed = match &resume_from {
        Some(dir) => {
            let b = bundle::load(dir)?;
            // An SCST run's model comes from `[scst] init`, so only the kind must agree.
            let differs = if preset.scst.is_some() {
                b.config.decoder.kind() != preset.model.kind()
            } else {
                b.config.decoder != preset.model
            };
            if differs {
                return Err(TrainError::Resume(format!(
                    "the checkpoint's [model] differs from the preset's ({} vs {})",
                    b.config.decoder.kind(),
                    preset.model.kind()
                )));
            }
            let (state, opt) = checkpoint::load_state(dir)?;
            Some((b, state, opt))
        }
        None => None,
    };
    // SCST starts from a trained bundle: its decoder, config and vocabulary.
    let init = match (&preset.scst, &resumed) {
        (Some(s), None) => {
            let dir = Path::new(&s.init);
            let b = bundle::load(dir)?;
            if b.config.decoder.kind() != preset.model.kind() {
                return Err(TrainError::Data(format!(
                    "[scst] init {} holds a `{}` decoder, but [model] says `{}`",
                    dir.display(),
                    b.config.decoder.kind(),
                    preset.model.kind()
                )));
            }
            if b.config.decoder != preset.model {
                observer.note(&format!(
                    "[scst] the model's hyper-parameters come from {}, not from [model]",
                    dir.display()
                ));
            }
            Some(b)
        }
        _ => None,
    };
    let vocab_in: Option<Vocab> = match (&resumed, &init) {
        (Some((b, _, _)), _) | (None, Some(b)) => Some(b.vocab.clone()),
        (None, None) => None,
    };
    let (data, notes) = TrainData::load(&preset.data, &cache, vocab_in)?;
    for n in &notes {
        observer.note(n);
    }
    let train_src =
        FeatureSource::new(&cache, &data.train, spatial)?.with_views(&augment_caches)?;
    if train_src.view_count() > 1 {
        observer.note(&format!(
            "each training caption reads one of {} views of its image's features",
            train_src.view_count()
        ));
    }
    let mut views = Vec::new();
    let val_src = FeatureSource::new(&cache, &data.val, spatial)?;
    let t = &preset.train;
    // SCST steps are over images (each once per epoch); the batch's one caption per image is
    // used only by the `xe_weight` term.
    let sampling = if preset.scst.is_some() {
        Sampling::OnePerImage
    } else {
        t.sampling
    };
    let batcher = data.train_batcher(
        &preset.data,
        t.batch_size,
        sampling,
        t.seed,
        t.length_sort_window,
    )?;
    let mean_row_tokens = (t.length_sort_window > 1).then(|| batcher.mean_tokens_per_row());
    let mut scst = match &preset.scst {
        Some(s) => {
            let mut reward = "CIDEr-D".to_owned();
            if s.bleu_weight > 0.0 {
                reward += &format!(" + {} x BLEU-{}", s.bleu_weight, s.bleu_order);
            }
            if s.meteor_weight > 0.0 {
                reward += &format!(" + {} x METEOR", s.meteor_weight);
            }
            let mut extras = String::new();
            if s.xe_weight > 0.0 {
                extras += &format!(
                    "; plus {} x the cross-entropy of a reference caption per image",
                    s.xe_weight
                );
            }
            if s.dropout {
                extras += "; dropout in the policy-gradient pass";
            }
            observer.note(&format!(
                "self-critical fine-tuning of {}: {} samples per image (temperature {}, up to {} \
                 words), {:?} baseline, {reward} reward over {} training images{extras}",
                s.init,
                s.samples,
                s.temperature,
                s.max_words,
                s.baseline,
                data.train.images.len()
            ));
            Some(Scst::new(s, &data.train)?)
        }
        None => None,
    };
    let val_batcher = data.val_batcher(&preset.data, t.batch_size)?;
    let dims = ModelDims {
        vocab: data.vocab.len(),
        feature_dim: train_src.dim(),
        cells: if spatial {
            cache.meta().spatial_cells.unwrap_or(0)
        } else {
            0
        },
    };
    let model_config = match (&resumed, &init) {
        (Some((b, _, _)), _) if preset.scst.is_some() => b.config.decoder.clone(),
        (None, Some(b)) => b.config.decoder.clone(),
        _ => preset.model.clone(),
    };
    if let Some(b) = &init {
        let init_dir = preset.scst.as_ref().map_or("", |s| s.init.as_str());
        if b.config.dims != dims {
            return Err(TrainError::Data(format!(
                "[scst] init {} was trained on features of {} channels and {} cells with a \
                 vocabulary of {}; these features have {} channels and {} cells (vocabulary {})",
                init_dir,
                b.config.dims.feature_dim,
                b.config.dims.cells,
                b.config.dims.vocab,
                dims.feature_dim,
                dims.cells,
                dims.vocab
            )));
        }
        let meta = cache.meta();
        if b.config.encoder.name != meta.encoder
            || b.config.encoder.normalization != meta.normalization.name()
        {
            return Err(TrainError::Data(format!(
                "[scst] init {} was trained on {} features with {} input normalization; these \
                 are {} features with {} normalization",
                init_dir,
                b.config.encoder.name,
                b.config.encoder.normalization,
                meta.encoder,
                meta.normalization
            )));
        }
    }
    let bundle_config = BundleConfig {
        format: BUNDLE_FORMAT,
        decoder: model_config,
        dims,
        encoder: EncoderInfo {
            name: cache.meta().encoder.clone(),
            resize: cache.meta().resize.clone(),
            normalization: cache.meta().normalization.name().into(),
        },
        max_words: VAL_MAX_WORDS,
        length_penalty: None,
        training: serde_json::json!({ "preset": preset }),
    };
    let fine_tunes_init = init.is_some();
    let (mut decoder, mut state, opt_state) = match resumed {
        Some((b, mut state, opt)) => {
            // More epochs than the finished run had (`--epochs`) extend it; a run that stopped
            // early stays stopped.
            state.finished = state.epoch >= t.epochs
                || (t.early_stopping > 0 && state.epochs_since_best >= t.early_stopping);
            observer.note(&format!(
                "resuming from step {} (epoch {}, batch {})",
                state.global_step,
                state.epoch + 1,
                state.batch_in_epoch
            ));
            (b.decoder, state, Some(opt))
        }
        None => (
            match init {
                Some(b) => b.decoder,
                None => preset.model.build(dims, t.seed)?,
            },
            TrainerState {
                plateau_scale: 1.0,
                ..TrainerState::default()
            },
            None,
        ),
    };
    let mut optimizer = make_optimizer(preset, decoder.params().len());
    if let Some(opt) = opt_state {
        let filled = checkpoint::fill_missing(opt, &optimizer.state());
        optimizer.load_state(filled)?;
    }
    std::fs::write(run.join("preset.toml"), preset.to_toml()).map_err(io_err(run))?;
    let mut log = Log::open(
        run.join("log.jsonl"),
        resume_from.as_ref().map(|_| state.global_step),
    )?;
    observer.note(&format!(
        "{} decoder, {} parameters, vocabulary {}, {} training images ({} steps/epoch), {} validation images",
        preset.model.kind(),
        decoder.params().len(),
        data.vocab.len(),
        data.train.images.len(),
        batcher.batches_per_epoch(),
        data.val.images.len()
    ));

    let batches = batcher.batches_per_epoch();
    let total_steps = batches as u64 * t.epochs as u64;
    let opts = PassOptions {
        label_smoothing: t.label_smoothing,
        train: true,
        ..PassOptions::default()
    };
    let mut rows = FeatureRows::default();
    let mut reports = Vec::new();
    let mut stopped_early = false;
    let process_start = Instant::now();
    let seconds_before = state.seconds;
    let best_dir = run.join("best");
    let last_dir = checkpoint::last_dir(run);
    let save_last = |decoder: &dyn Decoder,
                     optimizer: &dyn Optimizer,
                     state: &mut TrainerState|
     -> Result<(), TrainError> {
        state.seconds = seconds_before + process_start.elapsed().as_secs_f64();
        checkpoint::save_last(
            run,
            &bundle_config,
            decoder,
            &data.vocab,
            &optimizer.state(),
            state,
        )
    };

    let run_validation = |decoder: &mut dyn Decoder| {
        validate(decoder, &data, &val_batcher, &val_src, t.label_smoothing)
    };
    let save_model = |dir: &Path, decoder: &dyn Decoder, epoch: u32, step: u64, v: &Validation| {
        let mut cfg = bundle_config.clone();
        cfg.training = serde_json::json!({
            "preset": preset, "epoch": epoch, "step": step,
            "val_bleu4": v.bleu4, "val_cider_d": v.cider_d,
        });
        bundle::save(dir, &cfg, decoder, &data.vocab, WeightDtype::F32)
    };

    // SCST must not make `best/` worse than the model it starts from: that model is validated
    // first, as epoch 0, and an SCST epoch becomes `best` only by beating it. (`init` is only
    // loaded for a fresh run, so its state is at step 0 with no best yet; a resumed run already
    // holds epoch 0's result in its checkpoint.)
    if fine_tunes_init {
        observer.validating(data.val.images.len());
        let v = run_validation(&mut *decoder)?;
        state.best_cider = Some(v.cider_d);
        state.best_epoch = Some(0);
        save_model(&best_dir, &*decoder, 0, 0, &v)?;
        log.push(serde_json::json!({
            "type": "epoch", "epoch": 0, "step": 0, "val_loss": v.loss, "bleu1": v.bleu1,
            "bleu4": v.bleu4, "cider_d": v.cider_d, "is_best": true,
        }))?;
        observer.note(&format!(
            "[scst] starting model: validation BLEU-4 {:.2}, CIDEr-D {:.2}",
            v.bleu4, v.cider_d
        ));
        save_last(&*decoder, &*optimizer, &mut state)?;
    }

    while !state.finished && state.epoch < t.epochs {
        let epoch_start = Instant::now();
        observer.epoch_started(state.epoch + 1, t.epochs, batches, state.batch_in_epoch);
        for batch in batcher.epoch_from(state.epoch as u64, state.batch_in_epoch) {
            let step_start = Instant::now();
            draw_views(
                train_src.view_count(),
                t.seed,
                state.global_step,
                batch.images.len(),
                &mut views,
            );
            train_src.gather_views(&batch.images, &views, &mut rows)?;
            let feats = features(&rows, batch.batch, &train_src);
            decoder.params_mut().zero_grads();
            let mut rng = step_rng(t.seed, state.global_step);
            let ss_prob = t.scheduled_sampling.map_or(0.0, |ss| {
                replace_prob(&ss, state.global_step, batches as u64, total_steps)
            });
            let (stats, rewards) = match scst.as_mut() {
                Some(sc) => {
                    let r = sc.step(&mut *decoder, &data.vocab, &feats, &batch.images, &mut rng)?;
                    let xe_weight = preset.scst.as_ref().map_or(0.0, |s| s.xe_weight);
                    if xe_weight > 0.0 {
                        // The batch holds one reference caption per image; its cross-entropy,
                        // scaled, accumulates into the same gradients.
                        let weights = vec![xe_weight; batch.batch];
                        let gold = TeacherBatch {
                            weights: Some(&weights),
                            ..teacher(&batch)
                        };
                        decoder.forward(&feats, &gold, &opts, true, &mut rng)?;
                    }
                    (r.pass, Some(r))
                }
                None => {
                    let gold = teacher(&batch);
                    let gold = TeacherBatch {
                        loss_scale: token_share(&gold, mean_row_tokens),
                        ..gold
                    };
                    let inputs = mix_inputs(&*decoder, &feats, &gold, ss_prob, &mut rng)?;
                    let mixed = TeacherBatch {
                        inputs: &inputs,
                        ..gold
                    };
                    let mut stats = decoder.forward(&feats, &mixed, &opts, true, &mut rng)?;
                    // Logged as the plain per-token mean.
                    stats.loss /= gold.loss_scale;
                    (stats, None)
                }
            };
            if !stats.loss.is_finite() {
                return Err(TrainError::NonFinite {
                    step: state.global_step + 1,
                    epoch: state.epoch + 1,
                    value: stats.loss,
                    last: last_dir.clone(),
                });
            }
            let grad_norm = if t.grad_clip > 0.0 {
                clip_grad_norm(decoder.params_mut().grads_mut(), t.grad_clip)
            } else {
                f32::NAN
            };
            let lr = lr_at(
                &t.schedule,
                t.lr,
                state.global_step,
                total_steps,
                state.plateau_scale,
            );
            optimizer.set_lr(lr);
            let (values, grads) = decoder.params_mut().flat_mut();
            optimizer.step(values, grads)?;
            state.global_step += 1;
            state.batch_in_epoch += 1;
            state.epoch_loss_sum += stats.loss as f64 * stats.tokens as f64;
            state.epoch_tokens += stats.tokens as u64;
            if let Some(r) = &rewards {
                state.epoch_reward_sum += r.reward * r.samples as f64;
                state.epoch_samples += r.samples as u64;
            }
            let report = StepReport {
                epoch: state.epoch + 1,
                epochs: t.epochs,
                batch: state.batch_in_epoch,
                batches,
                step: state.global_step,
                loss: stats.loss,
                lr,
                tokens_per_s: stats.tokens as f64 / step_start.elapsed().as_secs_f64().max(1e-9),
            };
            observer.step(&report);
            if state.global_step % LOG_EVERY == 0 || rewards.is_some() {
                let mut record = serde_json::json!({
                    "type": "step", "step": state.global_step, "epoch": state.epoch + 1,
                    "loss": stats.loss, "regulariser": stats.regulariser, "lr": lr,
                    "grad_norm": grad_norm, "tokens_per_s": report.tokens_per_s,
                });
                if let (Some(_), Some(obj)) = (t.scheduled_sampling, record.as_object_mut()) {
                    obj.insert("ss_prob".into(), ss_prob.into());
                }
                if let (Some(r), Some(obj)) = (&rewards, record.as_object_mut()) {
                    obj.insert("reward".into(), r.reward.into());
                    obj.insert("baseline".into(), r.baseline.into());
                    if let Some(g) = r.greedy_reward {
                        obj.insert("greedy_reward".into(), g.into());
                    }
                }
                log.push(record)?;
            }
            if options.kill_after_steps == Some(state.global_step) {
                return Ok(RunOutcome {
                    state,
                    epochs: reports,
                    stopped_early: false,
                    killed: true,
                    best_dir,
                    last_dir,
                });
            }
            if t.checkpoint_every > 0
                && state.global_step % t.checkpoint_every == 0
                && state.batch_in_epoch < batches
            {
                save_last(&*decoder, &*optimizer, &mut state)?;
            }
        }

        observer.validating(data.val.images.len());
        let v = run_validation(&mut *decoder)?;
        let epoch = state.epoch + 1;
        let improved = state.best_cider.is_none_or(|b| v.cider_d > b);
        if improved {
            state.best_cider = Some(v.cider_d);
            state.best_epoch = Some(epoch);
            state.epochs_since_best = 0;
            save_model(&best_dir, &*decoder, epoch, state.global_step, &v)?;
        } else {
            state.epochs_since_best += 1;
        }
        if t.keep_epochs {
            save_model(
                &epoch_dir(run, epoch),
                &*decoder,
                epoch,
                state.global_step,
                &v,
            )?;
        }
        if let Schedule::Plateau {
            factor, patience, ..
        } = t.schedule
        {
            if improved {
                state.plateau_wait = 0;
            } else {
                state.plateau_wait += 1;
                if state.plateau_wait >= patience {
                    state.plateau_scale *= factor;
                    state.plateau_wait = 0;
                    observer.note(&format!(
                        "validation CIDEr-D flat for {patience} epochs: learning rate x{factor}"
                    ));
                }
            }
        }
        let report = EpochReport {
            epoch,
            step: state.global_step,
            train_loss: state.epoch_loss_sum / state.epoch_tokens.max(1) as f64,
            train_reward: (state.epoch_samples > 0)
                .then(|| state.epoch_reward_sum / state.epoch_samples as f64),
            val_loss: v.loss,
            bleu1: v.bleu1,
            bleu4: v.bleu4,
            cider_d: v.cider_d,
            lr: lr_at(
                &t.schedule,
                t.lr,
                state.global_step,
                total_steps,
                state.plateau_scale,
            ),
            seconds: epoch_start.elapsed().as_secs_f64(),
            is_best: improved,
            peak_rss_mib: peak_rss_mib(),
        };
        let mut record = serde_json::to_value(&report).unwrap_or_default();
        if let Some(obj) = record.as_object_mut() {
            obj.insert("type".into(), "epoch".into());
        }
        log.push(record)?;
        observer.epoch_finished(&report);
        reports.push(report);
        state.epoch += 1;
        state.batch_in_epoch = 0;
        state.epoch_loss_sum = 0.0;
        state.epoch_tokens = 0;
        state.epoch_reward_sum = 0.0;
        state.epoch_samples = 0;
        if t.early_stopping > 0 && state.epochs_since_best >= t.early_stopping {
            observer.note(&format!(
                "no better validation CIDEr-D for {} epochs: stopping early",
                t.early_stopping
            ));
            stopped_early = true;
            state.finished = true;
        }
        if state.epoch >= t.epochs {
            state.finished = true;
        }
        save_last(&*decoder, &*optimizer, &mut state)?;
        if let Err(e) = charts::draw(run, &log.records) {
            observer.note(&format!("charts not drawn: {e}"));
        }
    }
    Ok(RunOutcome {
        state,
        epochs: reports,
        stopped_early,
        killed: false,
        best_dir,
        last_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_of(lengths: &[usize]) -> Batch {
        let caps: Vec<Vec<Vec<u32>>> = lengths.iter().map(|&n| vec![vec![4; n]]).collect();
        let cfg = captioner_data::BatchConfig {
            batch_size: lengths.len(),
            mode: captioner_data::SamplingMode::AllPairs,
            ..Default::default()
        };
        let b = Batcher::new(caps, cfg).unwrap();
        b.batch(0, 0).unwrap()
    }

    #[test]
    fn token_share_weighs_a_sorted_batch_by_its_tokens() {
        // 2 rows of 3 and 5 tokens (words + <end>) against rows of 2 tokens on average.
        let batch = batch_of(&[2, 4]);
        let batch = teacher(&batch);
        assert_eq!(token_share(&batch, Some(2.0)), 2.0);
        assert_eq!(token_share(&batch, Some(8.0)), 0.5);
        assert_eq!(token_share(&batch, None), 1.0);
    }
}
