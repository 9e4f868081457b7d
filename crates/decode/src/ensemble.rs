//! Several trained decoders captioning as one. At each step every member predicts the next word
//! from the same image features and prefix, and the ensemble's distribution is the mean of their
//! probabilities: the log of the mean, as fairseq's `EnsembleModel` combines its members.
//!
//! Unlike weight averaging ([`crate::bundle::load_average`]), which only suits checkpoints of one
//! run, the members may be separate runs or architectures, as long as they share the vocabulary
//! and the image features. Captioning costs the sum of the members' steps.

use crate::model::{DecodeState, Decoder, Features, PassOptions, PassStats, TeacherBatch};
use crate::params::ParamSet;
use crate::DecodeError;
use rand_chacha::ChaCha8Rng;

/// Decoders of one vocabulary whose word probabilities are averaged at every step.
pub struct Ensemble {
    members: Vec<Box<dyn Decoder>>,
    /// Always empty: the members keep their own parameters.
    no_params: ParamSet,
}

impl Ensemble {
    /// Combines `members`; they must agree on the vocabulary size (and, for the caller to check,
    /// on the vocabulary itself and the encoder).
    pub fn new(members: Vec<Box<dyn Decoder>>) -> Result<Self, DecodeError> {
        let vocab = members
            .first()
            .ok_or_else(|| DecodeError::Config("an ensemble needs at least one decoder".into()))?
            .vocab_size();
        if let Some((i, other)) = members
            .iter()
            .enumerate()
            .find(|(_, m)| m.vocab_size() != vocab)
        {
            return Err(DecodeError::Config(format!(
                "ensemble member {} has a vocabulary of {} words, member 1 of {vocab}",
                i + 1,
                other.vocab_size()
            )));
        }
        Ok(Self {
            members,
            no_params: ParamSet::new(),
        })
    }

    /// The member decoders, in the order given.
    pub fn members(&self) -> &[Box<dyn Decoder>] {
        &self.members
    }
}

impl Decoder for Ensemble {
    fn kind(&self) -> &'static str {
        "ensemble"
    }

    fn vocab_size(&self) -> usize {
        self.members[0].vocab_size()
    }

    fn needs_spatial(&self) -> bool {
        self.members.iter().any(|m| m.needs_spatial())
    }

    /// Attention maps come from the first member that has them.
    fn has_attention(&self) -> bool {
        self.members.iter().any(|m| m.has_attention())
    }

    /// Empty: an ensemble cannot be trained or saved as one model.
    fn params(&self) -> &ParamSet {
        &self.no_params
    }

    fn params_mut(&mut self) -> &mut ParamSet {
        &mut self.no_params
    }

    fn forward(
        &mut self,
        _feats: &Features,
        _batch: &TeacherBatch,
        _opts: &PassOptions,
        _grads: bool,
        _rng: &mut ChaCha8Rng,
    ) -> Result<PassStats, DecodeError> {
        Err(DecodeError::Config(
            "an ensemble only generates captions; train its members one at a time".into(),
        ))
    }

    fn start<'s>(&'s self, feats: &Features) -> Result<Box<dyn DecodeState + 's>, DecodeError> {
        let states = self
            .members
            .iter()
            .map(|m| m.start(feats))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Box::new(EnsembleState {
            states,
            attention_member: self.members.iter().position(|m| m.has_attention()),
            member_log_probs: Vec::new(),
        }))
    }
}

struct EnsembleState<'s> {
    states: Vec<Box<dyn DecodeState + 's>>,
    attention_member: Option<usize>,
    member_log_probs: Vec<f32>,
}

impl DecodeState for EnsembleState<'_> {
    fn rows(&self) -> usize {
        self.states[0].rows()
    }

    fn step(
        &mut self,
        tokens: &[u32],
        log_probs: &mut [f32],
        mut attention: Option<&mut [f32]>,
    ) -> Result<(), DecodeError> {
        let attention_member = self.attention_member;
        let mut att_for = |i: usize| {
            if Some(i) == attention_member {
                attention.take()
            } else {
                None
            }
        };
        let (first, rest) = self
            .states
            .split_first_mut()
            .ok_or_else(|| DecodeError::Config("an ensemble needs at least one decoder".into()))?;
        first.step(tokens, log_probs, att_for(0))?;
        if rest.is_empty() {
            return Ok(());
        }
        self.member_log_probs.resize(log_probs.len(), 0.0);
        for (i, state) in rest.iter_mut().enumerate() {
            state.step(tokens, &mut self.member_log_probs, att_for(i + 1))?;
            for (acc, &lp) in log_probs.iter_mut().zip(&self.member_log_probs) {
                *acc = log_add_exp(*acc, lp);
            }
        }
        let log_members = (self.states.len() as f32).ln();
        for lp in log_probs.iter_mut() {
            *lp -= log_members;
        }
        Ok(())
    }

    fn select(&mut self, rows: &[usize]) -> Result<(), DecodeError> {
        self.states.iter_mut().try_for_each(|s| s.select(rows))
    }
}

/// `ln(e^a + e^b)` without overflow; a word one member rules out (`-inf`) keeps the other's mass.
fn log_add_exp(a: f32, b: f32) -> f32 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f32::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::gru_init::GruInitConfig;
    use crate::{DecoderConfig, ModelDims};

    const VOCAB: usize = 7;
    const FEATURE: usize = 3;

    fn member(seed: u64, vocab: usize) -> Box<dyn Decoder> {
        let config = DecoderConfig::GruInit(GruInitConfig {
            embed: 4,
            hidden: 5,
            layers: 1,
            dropout: 0.0,
        });
        let dims = ModelDims {
            vocab,
            feature_dim: FEATURE,
            cells: 0,
        };
        config.build(dims, seed).unwrap()
    }

    const POOLED: [f32; 2 * FEATURE] = [0.3, -0.2, 0.9, -0.5, 0.1, 0.4];

    fn features() -> Features<'static> {
        Features {
            batch: 2,
            dim: FEATURE,
            pooled: &POOLED,
            spatial: None,
            cells: 0,
        }
    }

    /// Log-probabilities of two steps (tokens 1 then 4, 5), with rows swapped between them.
    fn two_steps(d: &dyn Decoder) -> Vec<f32> {
        let mut state = d.start(&features()).unwrap();
        let mut out = vec![0.0; 2 * VOCAB];
        state.step(&[1, 1], &mut out, None).unwrap();
        state.select(&[1, 0]).unwrap();
        let mut second = vec![0.0; 2 * VOCAB];
        state.step(&[4, 5], &mut second, None).unwrap();
        out.extend(second);
        out
    }

    #[test]
    fn one_member_is_that_member() {
        let alone = two_steps(member(1, VOCAB).as_ref());
        let ensemble = Ensemble::new(vec![member(1, VOCAB)]).unwrap();
        assert_eq!(two_steps(&ensemble), alone);
    }

    #[test]
    fn probabilities_are_the_mean_of_the_members() {
        let seeds = [1, 2, 3];
        let each: Vec<Vec<f32>> = seeds
            .iter()
            .map(|&s| two_steps(member(s, VOCAB).as_ref()))
            .collect();
        assert_ne!(each[0], each[1], "members with other seeds must differ");
        let ensemble = Ensemble::new(seeds.iter().map(|&s| member(s, VOCAB)).collect()).unwrap();
        let got = two_steps(&ensemble);
        for (j, &g) in got.iter().enumerate() {
            let mean: f64 = each.iter().map(|m| (m[j] as f64).exp()).sum::<f64>() / 3.0;
            assert!(
                (g as f64 - mean.ln()).abs() < 1e-5,
                "entry {j}: {g} vs {}",
                mean.ln()
            );
        }
        for row in got.chunks_exact(VOCAB) {
            let total: f32 = row.iter().map(|lp| lp.exp()).sum();
            assert!((total - 1.0).abs() < 1e-5, "{total}");
        }
    }

    #[test]
    fn a_word_ruled_out_by_one_member_keeps_the_others_mass() {
        assert_eq!(log_add_exp(f32::NEG_INFINITY, -2.0), -2.0);
        assert_eq!(log_add_exp(-2.0, f32::NEG_INFINITY), -2.0);
        assert_eq!(
            log_add_exp(f32::NEG_INFINITY, f32::NEG_INFINITY),
            f32::NEG_INFINITY
        );
        assert!((log_add_exp(0.5f32.ln(), 0.25f32.ln()) - 0.75f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn members_must_share_the_vocabulary_and_exist() {
        let err = Ensemble::new(vec![member(1, VOCAB), member(2, VOCAB + 1)])
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("member 2 has a vocabulary of 8"),
            "{err}"
        );
        assert!(Ensemble::new(Vec::new()).is_err());
    }

    #[test]
    fn an_ensemble_does_not_train() {
        let mut ensemble = Ensemble::new(vec![member(1, VOCAB)]).unwrap();
        let batch = TeacherBatch::new(1, 1, &[1], &[2]);
        let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let err = ensemble
            .forward(&features(), &batch, &PassOptions::default(), true, &mut rng)
            .err()
            .unwrap();
        assert!(err.to_string().contains("only generates"), "{err}");
        assert!(ensemble.params().values().is_empty());
    }
}
