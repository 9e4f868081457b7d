//! Self-critical sequence training (Rennie et al., "Self-critical Sequence Training for Image
//! Captioning", CVPR 2017; reward as in ruotianluo/self-critical.pytorch's `CiderD` over the
//! training corpus): one step of the policy-gradient fine-tuning that [`crate::train`] runs when
//! the preset has an `[scst]` section.
//!
//! For a batch of `B` images, one step
//! 1. samples `K` captions per image with `captioner_generate`'s sampler (softmax at the
//!    temperature, no top-k / top-p, up to `max_words` words or `<end>`; dropout is off, as
//!    in every generation), the random streams seeded from the run's per-step generator;
//! 2. rewards each with its CIDEr-D against all of the image's training references, document
//!    frequencies from every training image's references ([`captioner_metrics::CiderD`]), plus
//!    `bleu_weight` times its BLEU-n and `meteor_weight` times its METEOR against them when the
//!    preset mixes those in; an end token closes every reference and every finished sample for
//!    CIDEr-D and BLEU, so endings are rewarded too;
//! 3. subtracts the baseline: the reward of the image's greedy caption, or the mean reward of
//!    its other `K - 1` samples;
//! 4. feeds the samples back through the decoder's teacher-forced pass with the advantages
//!    `r - b` as per-caption weights ([`TeacherBatch::weights`]), which minimises
//!    `-Σ_i (r_i - b_i) Σ_t log p(w_{i,t})` (`<end>` included when sampled) divided by the number
//!    of sampled tokens. By default that pass runs without dropout too; with `[scst] dropout` it
//!    applies the decoder's dropout, as phase 1's cross-entropy pass does, and so maximises the
//!    advantage-weighted log-likelihood averaged over dropout masks. With `[scst]
//!    tempered_log_probs` (the default) and no dropout, its log-probabilities are exactly those
//!    the samples were drawn from, `log softmax(logits / temperature)`; with it off they are the
//!    untempered `log softmax(logits)`, which differ whenever the temperature is not 1. It never
//!    adds `sat`'s attention regulariser (weighted passes leave it out).

use crate::preset::{Baseline, ScstConfig};
use crate::TrainError;
use captioner_data::{Dataset, Vocab};
use captioner_decode::model::{END_ID, PAD_ID, START_ID};
use captioner_decode::{Decoder, Features, PassOptions, PassStats, TeacherBatch};
use captioner_generate::{generate, GenerateConfig, Hypothesis, Strategy};
use captioner_metrics::meteor::{Meteor, MeteorReferences};
use captioner_metrics::tokenizer::{tokenize, tokenize_all};
use captioner_metrics::{BleuReferences, CiderD, PreparedRefs};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::Path;

/// The end-of-caption token in rewarded text. As in ruotianluo's `array_to_str`, both the samples
/// and the references end with it, so that n-grams ending a caption count: without it, a caption
/// cut after "in a blue" loses almost nothing and SCST learns such truncated endings. The
/// tokenizer never produces it from words, so it can match nothing else.
const EOS: &str = "<eos>";

/// The reward model: CIDEr-D with the training references' document frequencies (plus BLEU-n
/// when `bleu_weight > 0`), and every training image's references prepared once.
pub(crate) struct Scst {
    cfg: ScstConfig,
    cider: CiderD,
    refs: Vec<PreparedRefs>,
    /// Empty unless the reward mixes in BLEU.
    bleu_refs: Vec<BleuReferences>,
    /// The scorer and every training image's references (tokenised, no end token, prepared
    /// once), when the reward mixes in METEOR.
    meteor: Option<(Meteor, Vec<MeteorReferences>)>,
    pooled: Vec<f32>,
    spatial: Vec<f32>,
}

/// What one step measured, besides the pass itself.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ScstStats {
    /// The weighted pass (its `loss` is the policy-gradient objective).
    pub pass: PassStats,
    /// Mean CIDEr-D of the samples.
    pub reward: f64,
    /// Mean baseline.
    pub baseline: f64,
    /// Mean CIDEr-D of the greedy captions (greedy baseline only).
    pub greedy_reward: Option<f64>,
    /// Captions sampled.
    pub samples: usize,
}

impl Scst {
    /// Prepares the references of `train` (the split the batcher's image indices point into).
    pub fn new(cfg: &ScstConfig, train: &Dataset) -> Result<Self, TrainError> {
        let meteor = if cfg.meteor_weight > 0.0 {
            let dir = (!cfg.meteor_data.is_empty()).then(|| Path::new(&cfg.meteor_data));
            Some(
                Meteor::load_default(dir)
                    .map_err(|e| TrainError::Data(format!("[scst] meteor_weight: {e}")))?,
            )
        } else {
            None
        };
        Self::with_meteor(cfg, train, meteor)
    }

    /// [`Scst::new`] with the METEOR scorer given (used when `meteor` is `Some`).
    fn with_meteor(
        cfg: &ScstConfig,
        train: &Dataset,
        meteor: Option<Meteor>,
    ) -> Result<Self, TrainError> {
        let tokenized: Vec<Vec<String>> = train
            .images
            .iter()
            .map(|i| tokenize_all(&i.captions))
            .collect();
        let refs: Vec<Vec<String>> = tokenized
            .iter()
            .map(|r| r.iter().map(|r| format!("{r} {EOS}")).collect())
            .collect();
        let meteor = meteor.map(|m| {
            let prepared = tokenized.iter().map(|r| m.prepare(r)).collect();
            (m, prepared)
        });
        let cider = CiderD::from_references(&refs)
            .map_err(|e| TrainError::Data(format!("[scst] CIDEr-D document frequencies: {e}")))?;
        let bleu_refs = if cfg.bleu_weight > 0.0 {
            refs.iter().map(|r| BleuReferences::new(r)).collect()
        } else {
            Vec::new()
        };
        let refs = refs.iter().map(|r| cider.prepare(r)).collect();
        Ok(Self {
            cfg: cfg.clone(),
            cider,
            refs,
            bleu_refs,
            meteor,
            pooled: Vec::new(),
            spatial: Vec::new(),
        })
    }

    /// CIDEr-D (plus the weighted BLEU-n and METEOR) of a caption (word ids) against the
    /// references of training image `image`; for CIDEr-D and BLEU, `finished` captions (ended by
    /// `<end>`) carry the end token, as the references do.
    fn reward(
        &self,
        vocab: &Vocab,
        tokens: &[u32],
        finished: bool,
        image: usize,
    ) -> Result<f64, TrainError> {
        let refs = self.refs.get(image).ok_or_else(|| {
            TrainError::Data(format!("training image index {image} out of range"))
        })?;
        let mut text = tokenize(&vocab.decode(tokens));
        let meteor = match &self.meteor {
            Some((scorer, all)) => all.get(image).map_or(0.0, |refs| {
                self.cfg.meteor_weight * scorer.score_prepared(refs, &text)
            }),
            None => 0.0,
        };
        if finished {
            text.push(' ');
            text.push_str(EOS);
        }
        let bleu = match self.bleu_refs.get(image) {
            Some(bleu) => self.cfg.bleu_weight * bleu.score(&text)[self.cfg.bleu_order - 1],
            None => 0.0,
        };
        Ok(self.cider.score(&text, refs) + bleu + meteor)
    }

    /// One SCST step over the images `images` (training split indices) whose features are
    /// `feats`; accumulates the gradients into the decoder's parameter set.
    pub fn step(
        &mut self,
        decoder: &mut dyn Decoder,
        vocab: &Vocab,
        feats: &Features,
        images: &[usize],
        rng: &mut ChaCha8Rng,
    ) -> Result<ScstStats, TrainError> {
        let (b, k) = (feats.batch, self.cfg.samples);
        if images.len() != b {
            return Err(TrainError::Data(format!(
                "{} images for {b} feature rows",
                images.len()
            )));
        }
        // Every image K times: row i * K + j is sample j of image i.
        repeat_rows(feats.pooled, b, k, &mut self.pooled);
        if let Some(s) = feats.spatial {
            repeat_rows(s, b, k, &mut self.spatial);
        }
        let rep = Features {
            batch: b * k,
            dim: feats.dim,
            pooled: &self.pooled,
            spatial: feats.spatial.map(|_| self.spatial.as_slice()),
            cells: feats.cells,
        };
        let base_cfg = GenerateConfig {
            strategy: Strategy::Greedy,
            // Pure multinomial sampling: `<end>` may come first.
            min_words: 0,
            max_words: self.cfg.max_words,
            ..GenerateConfig::default()
        };
        let sample_cfg = GenerateConfig {
            strategy: Strategy::Sample {
                temperature: self.cfg.temperature,
                top_k: 0,
                top_p: 1.0,
                seed: rng.random::<u64>(),
            },
            ..base_cfg.clone()
        };
        let samples: Vec<Hypothesis> = generate(&*decoder, &rep, &sample_cfg)?
            .into_iter()
            .map(|h| h.into_iter().next().unwrap_or_else(empty_hypothesis))
            .collect();
        // Each reward is independent of the others (METEOR's alignment is the costly part).
        let rewards = samples
            .par_iter()
            .enumerate()
            .map(|(row, h)| self.reward(vocab, &h.tokens, h.finished, images[row / k]))
            .collect::<Result<Vec<f64>, TrainError>>()?;
        let mut greedy_mean = None;
        let baselines: Vec<f64> = match self.cfg.baseline {
            Baseline::Greedy => {
                let greedy = generate(&*decoder, feats, &base_cfg)?;
                let mut g = Vec::with_capacity(b);
                for (i, hyps) in greedy.iter().enumerate() {
                    let (tokens, finished) = hyps
                        .first()
                        .map_or((&[][..], false), |h| (h.tokens.as_slice(), h.finished));
                    g.push(self.reward(vocab, tokens, finished, images[i])?);
                }
                greedy_mean = Some(mean(&g));
                (0..b * k).map(|row| g[row / k]).collect()
            }
            Baseline::Mean => (0..b * k)
                .map(|row| {
                    let img = &rewards[row / k * k..(row / k + 1) * k];
                    (img.iter().sum::<f64>() - rewards[row]) / (k - 1) as f64
                })
                .collect(),
        };
        let weights: Vec<f32> = rewards
            .iter()
            .zip(&baselines)
            .map(|(r, b)| (r - b) as f32)
            .collect();

        // The samples as a teacher-forced batch: `<start> w1..wL` -> `w1..wL <end>` (no `<end>`
        // for a caption cut at `max_words`).
        let time = samples
            .iter()
            .map(|h| h.tokens.len() + usize::from(h.finished))
            .max()
            .unwrap_or(0)
            .max(1);
        let (mut inputs, mut targets) = (vec![PAD_ID; b * k * time], vec![PAD_ID; b * k * time]);
        for (row, h) in samples.iter().enumerate() {
            let mut seq: Vec<u32> = h.tokens.clone();
            if h.finished {
                seq.push(END_ID);
            }
            for (t, &tok) in seq.iter().enumerate() {
                targets[row * time + t] = tok;
                inputs[row * time + t] = if t == 0 { START_ID } else { seq[t - 1] };
            }
        }
        let batch = TeacherBatch {
            batch: b * k,
            time,
            inputs: &inputs,
            targets: &targets,
            weights: Some(&weights),
            loss_scale: 1.0,
        };
        let opts = PassOptions {
            label_smoothing: 0.0,
            train: self.cfg.dropout,
            temperature: if self.cfg.tempered_log_probs {
                self.cfg.temperature
            } else {
                1.0
            },
        };
        let pass = decoder.forward(&rep, &batch, &opts, true, rng)?;
        Ok(ScstStats {
            pass,
            reward: mean(&rewards),
            baseline: mean(&baselines),
            greedy_reward: greedy_mean,
            samples: b * k,
        })
    }
}

/// What an image without any hypothesis counts as: an empty, unfinished caption (reward 0, no
/// tokens in the loss).
fn empty_hypothesis() -> Hypothesis {
    Hypothesis {
        tokens: Vec::new(),
        log_prob: 0.0,
        score: 0.0,
        finished: false,
        attention: None,
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// `out` = every row of `src` (`rows` equal rows) repeated `k` times in place.
fn repeat_rows(src: &[f32], rows: usize, k: usize, out: &mut Vec<f32>) {
    out.clear();
    let width = src.len() / rows.max(1);
    for row in src.chunks_exact(width.max(1)).take(rows) {
        for _ in 0..k {
            out.extend_from_slice(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use captioner_data::{ImageEntry, ImageId};

    const CAPTIONS: [&str; 3] = [
        "a man in a blue shirt is running",
        "a man in a blue shirt runs down the street",
        "a man wearing a blue shirt is running outside",
    ];

    /// Image 0 has `CAPTIONS`, image 1 one unrelated caption.
    fn two_images() -> Dataset {
        let image = |id: &str| ImageEntry {
            id: ImageId::from(id),
            file: id.into(),
            split: None,
            captions: CAPTIONS.iter().map(|c| c.to_string()).collect(),
        };
        let other = ImageEntry {
            captions: vec!["two dogs play in the snow".into()],
            ..image("b")
        };
        Dataset {
            images_dir: None,
            images: vec![image("a"), other],
        }
    }

    #[test]
    fn a_caption_cut_before_its_natural_end_earns_less_than_the_whole_one() {
        let train = two_images();
        let captions = CAPTIONS;
        let scst = Scst::new(&ScstConfig::default(), &train).unwrap();
        let vocab = Vocab::from_words(captions.iter().flat_map(|c| c.split(' ')));
        let whole = vocab.encode("a man in a blue shirt is running");
        let cut = vocab.encode("a man in a blue");
        let r_whole = scst.reward(&vocab, &whole, true, 0).unwrap();
        let r_cut = scst.reward(&vocab, &cut, true, 0).unwrap();
        // Only a finished caption carries the end token, so one cut at the word limit does not
        // collect the references' ending n-grams.
        let r_unfinished = scst.reward(&vocab, &whole, false, 0).unwrap();
        assert!(r_whole > r_cut, "{r_whole} vs {r_cut}");
        assert!(r_whole > r_unfinished, "{r_whole} vs {r_unfinished}");
        assert!(scst.reward(&vocab, &whole, true, 2).is_err());
    }

    #[test]
    fn a_mixed_reward_adds_the_weighted_bleu_of_the_finished_caption() {
        let train = two_images();
        let words = CAPTIONS.iter().flat_map(|c| c.split(' '));
        let vocab = Vocab::from_words(words.chain(["with", "dog"]));
        let cider_only = Scst::new(&ScstConfig::default(), &train).unwrap();
        let cfg = ScstConfig {
            bleu_weight: 0.5,
            bleu_order: 1,
            ..ScstConfig::default()
        };
        let mixed = Scst::new(&cfg, &train).unwrap();
        let refs: Vec<String> = CAPTIONS.iter().map(|c| format!("{c} {EOS}")).collect();
        for caption in ["a man in a blue shirt", "a man in a blue shirt is running"] {
            let tokens = vocab.encode(caption);
            let bleu1 = BleuReferences::new(&refs).score(&format!("{caption} {EOS}"))[0];
            let cider = cider_only.reward(&vocab, &tokens, true, 0).unwrap();
            let r = mixed.reward(&vocab, &tokens, true, 0).unwrap();
            assert!(bleu1 > 0.5, "{caption}: {bleu1}");
            assert!((r - (cider + 0.5 * bleu1)).abs() < 1e-12, "{caption}: {r}");
        }
        // A word no reference has costs BLEU-1 precision, which CIDEr-D alone barely notices.
        let plain = vocab.encode("a man in a blue shirt is running");
        let padded = vocab.encode("a man in a blue shirt is running with a dog");
        let bleu_loss = |s: &Scst| {
            s.reward(&vocab, &plain, true, 0).unwrap() - s.reward(&vocab, &padded, true, 0).unwrap()
        };
        assert!(bleu_loss(&mixed) > bleu_loss(&cider_only));
    }

    #[test]
    fn a_meteor_term_scores_the_caption_without_the_end_token() {
        let train = two_images();
        let vocab = Vocab::from_words(CAPTIONS.iter().flat_map(|c| c.split(' ')));
        let tables =
            || Meteor::from_tables("a\nin\nis\nthe\n", "", "", "", "").expect("tiny tables");
        let cfg = ScstConfig {
            meteor_weight: 2.0,
            ..ScstConfig::default()
        };
        let cider_only = Scst::new(&ScstConfig::default(), &train).unwrap();
        let mixed = Scst::with_meteor(&cfg, &train, Some(tables())).unwrap();
        for (caption, finished) in [("a man in a blue shirt", true), ("a man is running", false)] {
            let tokens = vocab.encode(caption);
            let meteor = tables().score(&CAPTIONS, caption);
            let cider = cider_only.reward(&vocab, &tokens, finished, 0).unwrap();
            let r = mixed.reward(&vocab, &tokens, finished, 0).unwrap();
            assert!(meteor > 0.2, "{caption}: {meteor}");
            assert!((r - (cider + 2.0 * meteor)).abs() < 1e-12, "{caption}: {r}");
        }
        // Without data the preset's METEOR term is an error that says what is missing.
        let cfg = ScstConfig {
            meteor_weight: 1.0,
            meteor_data: "/nonexistent/meteor".into(),
            ..ScstConfig::default()
        };
        let e = Scst::new(&cfg, &train).err().expect("no data").to_string();
        assert!(
            e.contains("meteor_weight") && e.contains("/nonexistent/meteor"),
            "{e}"
        );
    }

    /// One step of a tiny `sat` decoder (dropout 0.5) on [`two_images`], seeded the same way
    /// every call.
    fn tiny_sat_step(cfg: &ScstConfig) -> ScstStats {
        use captioner_decode::{DecoderConfig, ModelDims};
        use rand::SeedableRng;
        let train = two_images();
        let vocab = Vocab::from_words(CAPTIONS.iter().flat_map(|c| c.split(' ')));
        let dims = ModelDims {
            vocab: vocab.len(),
            feature_dim: 6,
            cells: 4,
        };
        let model: DecoderConfig = toml::from_str(
            "kind = \"sat\"\nembed = 8\nhidden = 10\nattention = 6\ndropout = 0.5\nalpha_c = 1.0",
        )
        .unwrap();
        let mut init = ChaCha8Rng::seed_from_u64(3);
        let pooled: Vec<f32> = (0..12).map(|_| init.random_range(-1.0..1.0)).collect();
        let spatial: Vec<f32> = (0..48).map(|_| init.random_range(-1.0..1.0)).collect();
        let feats = Features {
            batch: 2,
            dim: 6,
            pooled: &pooled,
            spatial: Some(&spatial),
            cells: 4,
        };
        let mut scst = Scst::new(cfg, &train).unwrap();
        let mut decoder = model.build(dims, 1).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        scst.step(&mut *decoder, &vocab, &feats, &[0, 1], &mut rng)
            .unwrap()
    }

    #[test]
    fn dropout_changes_the_policy_gradient_pass_but_not_the_samples() {
        let run = |dropout: bool| {
            let cfg = ScstConfig {
                baseline: Baseline::Mean,
                dropout,
                ..ScstConfig::default()
            };
            tiny_sat_step(&cfg)
        };
        let (plain, again, dropped) = (run(false), run(true), run(true));
        let plain_again = run(false);
        // Sampling never uses dropout: the same samples earn the same rewards either way.
        assert_eq!(plain.reward, dropped.reward);
        assert_eq!(plain.baseline, dropped.baseline);
        // The weighted pass does: with dropout its loss differs from the plain one, and each
        // setting is reproducible from the same seed.
        assert_eq!(plain.pass.loss, plain_again.pass.loss);
        assert_eq!(again.pass.loss, dropped.pass.loss);
        assert_ne!(plain.pass.loss, dropped.pass.loss);
    }

    #[test]
    fn tempered_log_probs_change_the_policy_gradient_pass_but_not_the_samples() {
        let run = |tempered_log_probs: bool, temperature: f32| {
            let cfg = ScstConfig {
                baseline: Baseline::Mean,
                temperature,
                tempered_log_probs,
                ..ScstConfig::default()
            };
            tiny_sat_step(&cfg)
        };
        let (plain, tempered) = (run(false, 0.5), run(true, 0.5));
        assert_eq!(plain.reward, tempered.reward);
        assert_eq!(plain.samples, tempered.samples);
        assert_ne!(plain.pass.loss, tempered.pass.loss);
        // At temperature 1 both are the model's own distribution.
        assert_eq!(run(false, 1.0).pass.loss, run(true, 1.0).pass.loss);
    }

    #[test]
    fn rows_repeat_in_place() {
        let mut out = Vec::new();
        repeat_rows(&[1.0, 2.0, 3.0, 4.0], 2, 3, &mut out);
        assert_eq!(
            out,
            [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0, 3.0, 4.0]
        );
    }
}
