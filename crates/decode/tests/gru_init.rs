//! `gru-init` decoder: gradients against finite differences, teacher forcing against step-wise
//! generation, `select`, and a tiny training run.

use captioner_decode::models::gru_init::{GruInit, GruInitConfig};
use captioner_decode::{DecodeError, Decoder, DecoderConfig, ModelDims, PassOptions};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod common;
use common::*;

fn tiny(dropout: f32) -> GruInitConfig {
    GruInitConfig {
        embed: 4,
        hidden: 5,
        layers: 2,
        dropout,
    }
}

#[test]
fn gradients_match_finite_differences() {
    let mut m = GruInit::new(&tiny(0.0), dims(), 1).unwrap();
    gradcheck(
        &mut m,
        PassOptions {
            label_smoothing: 0.1,
            train: false,
            ..PassOptions::default()
        },
    );
}

#[test]
fn gradients_match_finite_differences_with_dropout() {
    let mut m = GruInit::new(&tiny(0.3), dims(), 1).unwrap();
    gradcheck(
        &mut m,
        PassOptions {
            label_smoothing: 0.0,
            train: true,
            ..PassOptions::default()
        },
    );
}

#[test]
fn gradients_accumulate() {
    check_gradients_accumulate(&mut GruInit::new(&tiny(0.0), dims(), 2).unwrap());
}

#[test]
fn stepwise_generation_matches_teacher_forcing() {
    check_stepwise_matches_teacher_forcing(&mut GruInit::new(&tiny(0.2), dims(), 3).unwrap());
}

#[test]
fn select_reorders_and_duplicates_rows() {
    check_select(&GruInit::new(&tiny(0.0), dims(), 4).unwrap());
}

#[test]
fn training_lowers_the_loss_and_learns_the_captions() {
    let cfg = GruInitConfig {
        embed: 8,
        hidden: 16,
        layers: 2,
        dropout: 0.1,
    };
    check_learns_captions(&mut GruInit::new(&cfg, dims(), 5).unwrap());
}

#[test]
fn config_and_names() {
    let dc: DecoderConfig = serde_json::from_str(r#"{"kind": "gru-init", "layers": 2}"#).unwrap();
    let m = dc.build(dims(), 0).unwrap();
    assert_eq!(m.kind(), "gru-init");
    assert!(!m.needs_spatial());
    let names: Vec<(String, Vec<usize>)> = m
        .params()
        .names()
        .map(|(n, s)| (n.to_string(), s.to_vec()))
        .collect();
    let want: Vec<(&str, Vec<usize>)> = vec![
        ("init.weight", vec![512, F]),
        ("init.bias", vec![512]),
        ("embedding.weight", vec![V, 128]),
        ("rnn.weight_ih_l0", vec![1536, 128]),
        ("rnn.weight_hh_l0", vec![1536, 512]),
        ("rnn.bias_ih_l0", vec![1536]),
        ("rnn.bias_hh_l0", vec![1536]),
        ("rnn.weight_ih_l1", vec![1536, 512]),
        ("rnn.weight_hh_l1", vec![1536, 512]),
        ("rnn.bias_ih_l1", vec![1536]),
        ("rnn.bias_hh_l1", vec![1536]),
        ("fc.weight", vec![V, 512]),
        ("fc.bias", vec![V]),
    ];
    assert_eq!(names.len(), want.len());
    for ((n, s), (wn, ws)) in names.iter().zip(&want) {
        assert_eq!((n.as_str(), s), (*wn, ws));
    }
    // Deterministic in the seed.
    let a = GruInit::new(&tiny(0.0), dims(), 9).unwrap();
    let b = GruInit::new(&tiny(0.0), dims(), 9).unwrap();
    let c = GruInit::new(&tiny(0.0), dims(), 10).unwrap();
    assert_eq!(a.params().values, b.params().values);
    assert_ne!(a.params().values, c.params().values);
    // Bad configurations and inputs are errors, not panics.
    assert!(matches!(
        GruInit::new(&tiny(1.0), dims(), 0),
        Err(DecodeError::Config(_))
    ));
    let mut m = GruInit::new(&tiny(0.0), dims(), 0).unwrap();
    let (pooled, inputs, mut targets) = data(1);
    targets[0] = V as u32;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    assert!(m
        .forward(
            &feats(&pooled),
            &teacher(&inputs, &targets),
            &PassOptions::default(),
            true,
            &mut rng
        )
        .is_err());
    assert!(m
        .forward(
            &feats(&pooled[..2 * F]),
            &teacher(&inputs, &inputs),
            &PassOptions::default(),
            true,
            &mut rng
        )
        .is_err());
}

/// Time of one training step (forward + backward + Adam) at the default sizes with batch 64,
/// 20 steps, vocabulary 8,000 and 1,280 features. Run with
/// `cargo test -p captioner-decode --test gru_init -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing_default_size() {
    let (v, f) = (8000, 1280);
    let d = ModelDims {
        vocab: v,
        feature_dim: f,
        cells: 0,
    };
    let mut m = GruInit::new(&GruInitConfig::default(), d, 0).unwrap();
    time_training_step("gru_init", &mut m, v, f);
}
