//! Training presets: one TOML file says what data, which decoder and how to train it
//! (`configs/*.toml`). Every field but `[model] kind` has a default, and unknown fields are
//! errors, so a typo cannot silently fall back to a default.

use crate::TrainError;
use captioner_data::Normalizer;
use captioner_decode::DecoderConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A whole preset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// What to train on.
    #[serde(default)]
    pub data: DataConfig,
    /// The decoder.
    pub model: DecoderConfig,
    /// How.
    #[serde(default)]
    pub train: TrainConfig,
    /// Self-critical sequence training: fine-tune a trained model on its own sampled captions
    /// with a CIDEr-D reward instead of on the references (absent: ordinary training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scst: Option<ScstConfig>,
}

/// What a sampled caption's reward is compared with (Rennie et al. 2017 use the greedy one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Baseline {
    /// The reward of the image's greedy caption (self-critical proper).
    Greedy,
    /// The mean reward of the image's other samples (needs `samples >= 2`).
    Mean,
}

/// `[scst]`: self-critical sequence training (Rennie et al., CVPR 2017) as a fine-tuning mode.
///
/// Each step takes `train.batch_size` images, samples `samples` captions per image from the model
/// (dropout off, softmax at `temperature`, up to `max_words` words or `<end>`), rewards each with
/// its CIDEr-D against the image's training references (document frequencies from all training
/// references), and minimises `-Σ_i (r_i - b_i) Σ_t log p_T(w_{i,t})` over the sampled tokens
/// (`<end>` included), divided by their number, where `p_T` is the softmax at the sampling
/// temperature (see `tempered_log_probs`). The model, its config and its vocabulary come
/// from `init`; `[model]` must name the same decoder kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScstConfig {
    /// Model bundle or checkpoint directory to start from (e.g. `runs/default/best`); relative
    /// paths are relative to the working directory.
    pub init: String,
    /// Captions sampled per image.
    pub samples: usize,
    /// Baseline subtracted from each sample's reward.
    pub baseline: Baseline,
    /// Longest sampled caption in words (`<end>` not counted).
    pub max_words: usize,
    /// Softmax temperature of the sampling.
    pub temperature: f32,
    /// Weight of a BLEU term added to each caption's CIDEr-D reward (0 = CIDEr-D alone), as
    /// ruotianluo/self-critical.pytorch's `bleu_reward_weight`. CIDEr-D's tf-idf weighting
    /// makes frequent words nearly free; BLEU counts every word a caption adds that no reference
    /// has, so the mixed reward trades some of CIDEr-D's preference for stock phrases for
    /// precision.
    pub bleu_weight: f64,
    /// Which BLEU-n (1-4) that term is: the image's own pycocoevalcap BLEU-n score, brevity
    /// penalty included.
    pub bleu_order: usize,
    /// Weight of a METEOR term added to the reward (0 = none). METEOR weighs recall nine times
    /// precision, so it pulls towards the longer captions that a BLEU-1 term pulls away from.
    /// Needs pycocoevalcap's METEOR data (`meteor_data`).
    pub meteor_weight: f64,
    /// That data folder (pycocoevalcap's `meteor/`); empty means `$CAPTIONER_METEOR_DATA`.
    pub meteor_data: String,
    /// Apply the decoder's dropout in the policy-gradient pass, as phase 1 does in its
    /// cross-entropy pass (sampling always runs without it). Off, the fine-tune has no
    /// regulariser at all.
    pub dropout: bool,
    /// Weight of a cross-entropy term on one reference caption of each image (with dropout, as
    /// in phase 1) added to the policy-gradient objective (0 = none): the "mixed" objective of
    /// Paulus et al. (ICLR 2018), which keeps the fine-tuned model near the references' language.
    pub xe_weight: f32,
    /// Take the policy gradient of the tempered distribution the samples were drawn from,
    /// `log softmax(logits / temperature)` (the default), instead of the model's own
    /// `log softmax(logits)`. `false` is the update of every preset before session 24 (set it
    /// to retrain or resume one of those as it ran then): for samples drawn at temperature 0.5
    /// it moves the untempered distribution, whose tail the samples hardly ever visit, and in
    /// three epochs its dev loss rose four times as much as with the tempered update
    /// (models/README.md, session 24). At temperature 1 both are the same.
    pub tempered_log_probs: bool,
}

impl Default for ScstConfig {
    fn default() -> Self {
        Self {
            init: String::new(),
            samples: 5,
            baseline: Baseline::Greedy,
            max_words: 16,
            temperature: 1.0,
            bleu_weight: 0.0,
            bleu_order: 4,
            meteor_weight: 0.0,
            meteor_data: String::new(),
            dropout: false,
            xe_weight: 0.0,
            tempered_log_probs: true,
        }
    }
}

/// `[data]`: dataset, feature cache, vocabulary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Dataset spec (`flickr8k:<dir>`, `coco:<json>@<images>`, ...); relative paths are relative
    /// to the working directory.
    pub dataset: String,
    /// Feature cache written by `captioner extract` for the dataset's images.
    pub features: String,
    /// Other feature caches of the same images (e.g. `captioner extract --flip`'s mirrored
    /// view): each training caption reads its image's features from one of `features` and these,
    /// drawn uniformly and seeded by the step. Validation reads `features` only. Captions are
    /// kept as written: a mirrored view's "left" and "right" (in 0.4% of Flickr8k's captions)
    /// are not swapped.
    pub augment_features: Vec<String>,
    /// Split trained on.
    pub train_split: String,
    /// Split validated on each epoch (model selection).
    pub val_split: String,
    /// Validate on at most this many images of the split (0 = all).
    pub val_images: usize,
    /// Vocabulary: words seen at least this often in the training captions.
    pub vocab_min_count: u64,
    /// Vocabulary: at most this many words (0 = no limit).
    pub vocab_max_words: usize,
    /// Training captions longer than this many words are cut.
    pub max_words: usize,
    /// Caption cleaning.
    pub normalizer: Normalizer,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: "flickr8k:../shared/data/flickr8k".into(),
            features: "features/flickr8k-lite0".into(),
            augment_features: Vec::new(),
            train_split: "train".into(),
            val_split: "val".into(),
            val_images: 0,
            vocab_min_count: 5,
            vocab_max_words: 0,
            max_words: 30,
            normalizer: Normalizer::default(),
        }
    }
}

/// Which optimiser.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// `torch.optim.Adam`.
    Adam,
    /// `torch.optim.AdamW` (decoupled weight decay).
    AdamW,
    /// `torch.optim.RMSprop` (the seeds' Keras default).
    RmsProp,
}

/// How the learning rate changes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Schedule {
    /// Fixed.
    Constant,
    /// Multiply by `factor` when the validation CIDEr-D has not improved for `patience` epochs.
    Plateau {
        /// Multiplier, `0 < factor < 1`.
        factor: f32,
        /// Epochs without improvement before a cut.
        patience: u32,
        /// Never below this.
        min_lr: f32,
    },
    /// Linear warm-up over `warmup_steps`, then cosine decay to `min_lr` at the last step.
    Cosine {
        /// Warm-up steps.
        warmup_steps: u64,
        /// Final learning rate.
        min_lr: f32,
    },
}

/// How training captions are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// Every (image, caption) pair once per epoch.
    AllPairs,
    /// One random caption per image per epoch.
    OnePerImage,
}

/// `[train]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Epochs at most.
    pub epochs: u32,
    /// Rows (captions) per step.
    pub batch_size: usize,
    /// How captions are drawn.
    pub sampling: Sampling,
    /// Group captions of similar length into batches: the epoch's shuffled captions are cut into
    /// windows of this many batches, each sorted by length, and the batches shuffled (0 = off).
    /// A batch is padded to its longest caption; random batches of Flickr8k captions are about
    /// half padding, and a step's time grows with the padded length. Each sorted batch's
    /// cross-entropy is scaled by its tokens over an average batch's, so that every token
    /// weighs what it does in random batches.
    pub length_sort_window: usize,
    /// Optimiser.
    pub optimizer: OptimizerKind,
    /// Peak learning rate.
    pub lr: f32,
    /// L2 (Adam, RMSprop) or decoupled (AdamW) weight decay.
    pub weight_decay: f32,
    /// Clip the global gradient norm to this (0 = off).
    pub grad_clip: f32,
    /// Label smoothing of the cross-entropy.
    pub label_smoothing: f32,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Stop after this many epochs without a better validation CIDEr-D (0 = never).
    pub early_stopping: u32,
    /// Also save `last` every this many steps within an epoch (0 = only at epoch ends), so a
    /// killed run loses little.
    pub checkpoint_every: u64,
    /// Seed of initialisation, data order and dropout.
    pub seed: u64,
    /// Also keep each epoch's weights as a model bundle `epoch-N/` in the run folder, e.g. to
    /// average the last few with `captioner export --model run/epoch-2 --model run/epoch-3`.
    pub keep_epochs: bool,
    /// Scheduled sampling: train on some of the model's own words as inputs (absent: pure
    /// teacher forcing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_sampling: Option<ScheduledSampling>,
}

/// `[train] scheduled_sampling = { max_prob = 0.25, warmup_epochs = 2 }`: after `warmup_epochs`
/// epochs of teacher forcing, each reference input word after `<start>` is replaced, with a
/// probability rising linearly to `max_prob` at the last step, by a word sampled from the model's
/// prediction at that position (parallel scheduled sampling; see `scheduled_sampling.rs`). The
/// targets stay the references. It costs one extra forward pass a step without gradients.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduledSampling {
    /// Replacement probability reached at the last step, in [0, 1].
    pub max_prob: f32,
    /// Epochs of pure teacher forcing first.
    pub warmup_epochs: u32,
}

impl Default for ScheduledSampling {
    fn default() -> Self {
        Self {
            max_prob: 0.25,
            warmup_epochs: 1,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 20,
            batch_size: 64,
            sampling: Sampling::AllPairs,
            length_sort_window: 0,
            optimizer: OptimizerKind::Adam,
            lr: 4e-4,
            weight_decay: 0.0,
            grad_clip: 5.0,
            label_smoothing: 0.0,
            schedule: Schedule::Constant,
            early_stopping: 5,
            checkpoint_every: 200,
            seed: 42,
            keep_epochs: false,
            scheduled_sampling: None,
        }
    }
}

impl Preset {
    /// Parses a preset; errors name the file, the line and the field.
    pub fn from_toml(text: &str, source: &Path) -> Result<Self, TrainError> {
        let preset: Preset = toml::from_str(text).map_err(|e| TrainError::Preset {
            path: source.to_path_buf(),
            message: e.to_string(),
        })?;
        preset.validate().map_err(|message| TrainError::Preset {
            path: source.to_path_buf(),
            message,
        })?;
        Ok(preset)
    }

    /// Reads and parses a preset file.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Serialises back to TOML (stored in every run directory).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# not serialisable: {e}\n"))
    }

    fn validate(&self) -> Result<(), String> {
        let t = &self.train;
        if t.epochs == 0 || t.batch_size == 0 {
            return Err("[train] epochs and batch_size must be at least 1".into());
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(format!("[train] lr must be positive, got {}", t.lr));
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            return Err("[train] label_smoothing must be in [0, 1)".into());
        }
        if let Some(ss) = t.scheduled_sampling {
            if !(0.0..=1.0).contains(&ss.max_prob) {
                return Err(format!(
                    "[train] scheduled_sampling.max_prob must be in [0, 1], got {}",
                    ss.max_prob
                ));
            }
            if self.scst.is_some() {
                return Err(
                    "[train] scheduled_sampling does not apply to [scst] fine-tuning, \
                            which already trains on the model's own samples"
                        .into(),
                );
            }
        }
        if let Schedule::Plateau { factor, .. } = t.schedule {
            if !(factor > 0.0 && factor < 1.0) {
                return Err("[train.schedule] factor must be in (0, 1)".into());
            }
        }
        if self.data.max_words == 0 {
            return Err("[data] max_words must be at least 1".into());
        }
        if let Some(s) = &self.scst {
            if s.init.trim().is_empty() {
                return Err("[scst] init must name the model directory to fine-tune \
                            (e.g. init = \"runs/default/best\")"
                    .into());
            }
            if s.samples == 0 {
                return Err("[scst] samples must be at least 1".into());
            }
            if s.baseline == Baseline::Mean && s.samples < 2 {
                return Err(format!(
                    "[scst] baseline = \"mean\" averages the image's other samples, so samples \
                     must be at least 2 (got {})",
                    s.samples
                ));
            }
            if s.max_words == 0 {
                return Err("[scst] max_words must be at least 1".into());
            }
            if !(s.bleu_weight.is_finite() && s.bleu_weight >= 0.0) {
                return Err(format!(
                    "[scst] bleu_weight must be finite and >= 0, got {}",
                    s.bleu_weight
                ));
            }
            if !(s.xe_weight.is_finite() && s.xe_weight >= 0.0) {
                return Err(format!(
                    "[scst] xe_weight must be finite and >= 0, got {}",
                    s.xe_weight
                ));
            }
            if !(s.meteor_weight.is_finite() && s.meteor_weight >= 0.0) {
                return Err(format!(
                    "[scst] meteor_weight must be finite and >= 0, got {}",
                    s.meteor_weight
                ));
            }
            if !(1..=4).contains(&s.bleu_order) {
                return Err(format!(
                    "[scst] bleu_order must be 1, 2, 3 or 4 (BLEU-1..4), got {}",
                    s.bleu_order
                ));
            }
            if !(s.temperature.is_finite() && s.temperature > 0.0) {
                return Err(format!(
                    "[scst] temperature must be finite and > 0, got {}",
                    s.temperature
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_preset_takes_defaults() {
        let p = Preset::from_toml("[model]\nkind = \"gru-init\"\n", Path::new("x.toml")).unwrap();
        assert_eq!(p.model.kind(), "gru-init");
        assert_eq!(p.train, TrainConfig::default());
        let again = Preset::from_toml(&p.to_toml(), Path::new("y.toml")).unwrap();
        assert_eq!(again, p);
    }

    #[test]
    fn augment_features_parse_and_round_trip() {
        let p = Preset::from_toml(
            "[data]\naugment_features = [\"f/flip\"]\n[model]\nkind = \"sat\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(p.data.augment_features, ["f/flip"]);
        let again = Preset::from_toml(&p.to_toml(), Path::new("y.toml")).unwrap();
        assert_eq!(again, p);
        assert!(DataConfig::default().augment_features.is_empty());
    }

    #[test]
    fn typos_and_bad_values_are_errors_naming_the_file_and_field() {
        let e = Preset::from_toml(
            "[model]\nkind = \"sat\"\n[train]\nlearning_rate = 0.1\n",
            Path::new("p.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("p.toml") && e.contains("learning_rate"), "{e}");
        let e = Preset::from_toml("[model]\nkind = \"sat\"\nhiden = 3\n", Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("hiden"), "{e}");
        let e = Preset::from_toml(
            "[model]\nkind = \"sat\"\n[train]\nlr = -1.0\n",
            Path::new("p.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("lr must be positive"), "{e}");
        let e = Preset::from_toml("[model]\nkind = \"lstm9\"\n", Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lstm9"), "{e}");
    }

    const SCST: &str = "[model]\nkind = \"sat\"\n[scst]\ninit = \"runs/default/best\"\n";

    #[test]
    fn length_sort_window_parses_and_defaults_to_off() {
        let text = "[model]\nkind = \"sat\"\n[train]\nlength_sort_window = 50\n";
        let p = Preset::from_toml(text, Path::new("l.toml")).unwrap();
        assert_eq!(p.train.length_sort_window, 50);
        let back = Preset::from_toml(&p.to_toml(), Path::new("l.toml")).unwrap();
        assert_eq!(back.train.length_sort_window, 50);
        let off = Preset::from_toml("[model]\nkind = \"sat\"\n", Path::new("l.toml")).unwrap();
        assert_eq!(off.train.length_sort_window, 0);
    }

    #[test]
    fn scheduled_sampling_parses_round_trips_and_checks_its_values() {
        let text = "[model]\nkind = \"sat\"\n[train]\nscheduled_sampling = { max_prob = 0.3 }\n";
        let p = Preset::from_toml(text, Path::new("s.toml")).unwrap();
        assert_eq!(
            p.train.scheduled_sampling,
            Some(ScheduledSampling {
                max_prob: 0.3,
                warmup_epochs: 1
            })
        );
        assert_eq!(
            Preset::from_toml(&p.to_toml(), Path::new("t.toml")).unwrap(),
            p
        );
        let e = Preset::from_toml(&text.replace("0.3", "1.5"), Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.toml") && e.contains("max_prob"), "{e}");
        let e = Preset::from_toml(
            &format!("{SCST}[train]\nscheduled_sampling = {{}}\n"),
            Path::new("s.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("scheduled_sampling") && e.contains("[scst]"),
            "{e}"
        );
    }

    #[test]
    fn scst_section_parses_with_defaults_and_round_trips() {
        let p = Preset::from_toml(SCST, Path::new("s.toml")).unwrap();
        let s = p.scst.clone().unwrap();
        assert_eq!(s.init, "runs/default/best");
        assert_eq!(
            (s.samples, s.baseline, s.max_words, s.temperature),
            (5, Baseline::Greedy, 16, 1.0)
        );
        assert_eq!(
            (s.bleu_weight, s.bleu_order, s.dropout, s.xe_weight),
            (0.0, 4, false, 0.0)
        );
        assert!(s.tempered_log_probs);
        let again = Preset::from_toml(&p.to_toml(), Path::new("t.toml")).unwrap();
        assert_eq!(again, p);
        let p = Preset::from_toml(
            &format!(
                "{SCST}samples = 3\nbaseline = \"mean\"\nmax_words = 12\ntemperature = 0.7\n\
                 bleu_weight = 0.5\nbleu_order = 1\nmeteor_weight = 2.0\nmeteor_data = \"m\"\n\
                 dropout = true\nxe_weight = 0.1\ntempered_log_probs = false\n"
            ),
            Path::new("s.toml"),
        )
        .unwrap();
        let s = p.scst.unwrap();
        assert_eq!(
            (s.samples, s.baseline, s.max_words, s.temperature),
            (3, Baseline::Mean, 12, 0.7)
        );
        assert_eq!((s.bleu_weight, s.bleu_order), (0.5, 1));
        assert_eq!((s.meteor_weight, s.meteor_data.as_str()), (2.0, "m"));
        assert!(s.dropout);
        assert_eq!(s.xe_weight, 0.1);
        assert!(!s.tempered_log_probs);
        for (bad, key) in [
            ("bleu_order = 5", "bleu_order"),
            ("bleu_order = 0", "bleu_order"),
            ("bleu_weight = -1.0", "bleu_weight"),
            ("meteor_weight = nan", "meteor_weight"),
            ("xe_weight = -0.1", "xe_weight"),
        ] {
            let e = Preset::from_toml(&format!("{SCST}{bad}\n"), Path::new("s.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
        // Without the section there is no SCST, and the serialised preset has no `[scst]`.
        let p = Preset::from_toml("[model]\nkind = \"sat\"\n", Path::new("x.toml")).unwrap();
        assert!(p.scst.is_none() && !p.to_toml().contains("scst"));
    }

    #[test]
    fn the_committed_scst_preset_fine_tunes_the_default_model() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/default-scst.toml");
        let p = Preset::load(&path).unwrap();
        let s = p.scst.unwrap();
        assert_eq!(s.init, "runs/default/best");
        assert_eq!(p.model.kind(), "sat");
    }

    #[test]
    fn the_shipped_model_was_fine_tuned_with_the_committed_scst_preset() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let committed = Preset::load(&root.join("configs/default-scst.toml")).unwrap();
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("models/default/config.json")).unwrap(),
        )
        .unwrap();
        let recorded: Preset =
            serde_json::from_value(config["training"]["first"]["preset"].clone()).unwrap();
        let (mut c, r) = (committed.scst.unwrap(), recorded.scst.unwrap());
        // Only where phase 1's checkpoint was differs.
        c.init.clone_from(&r.init);
        assert_eq!(c, r);
        assert_eq!(committed.train, recorded.train);
        assert_eq!(committed.model, recorded.model);
    }

    #[test]
    fn scst_bad_values_are_clear_errors() {
        let err = |extra: &str| {
            Preset::from_toml(&format!("{SCST}{extra}"), Path::new("s.toml"))
                .unwrap_err()
                .to_string()
        };
        let e = err("baseline = \"average\"\n");
        assert!(
            e.contains("s.toml")
                && e.contains("average")
                && e.contains("greedy")
                && e.contains("mean"),
            "{e}"
        );
        let e = err("baseline = \"mean\"\nsamples = 1\n");
        assert!(e.contains("samples must be at least 2"), "{e}");
        let e = err("temperature = 0.0\n");
        assert!(e.contains("temperature"), "{e}");
        let e = err("sample = 4\n");
        assert!(e.contains("sample"), "{e}");
        let e = Preset::from_toml(
            "[model]\nkind = \"sat\"\n[scst]\nsamples = 2\n",
            Path::new("s.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("[scst] init"), "{e}");
    }
}
