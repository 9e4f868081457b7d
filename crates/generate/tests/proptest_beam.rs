//! Property tests: an unpruned beam is exact, and batching never changes a result.

mod common;

use captioner_generate::{generate, GenerateConfig, LengthPenalty, Strategy as Search};
use common::{brute_force, exhaustive_beam, OwnedFeats, Toy};
use proptest::prelude::*;

fn penalty() -> impl Strategy<Value = LengthPenalty> {
    prop_oneof![
        Just(LengthPenalty::None),
        Just(LengthPenalty::Average),
        (0.0f32..1.5).prop_map(LengthPenalty::Gnmt),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn unpruned_beam_is_the_brute_force_best(
        seed in 0u64..1_000_000,
        vocab in 5usize..8,
        max_words in 1usize..5,
        min_frac in 0.0f64..1.0,
        hist in prop::bool::ANY,
        suppress_unk in prop::bool::ANY,
        penalty in penalty(),
        images in 1usize..4,
    ) {
        let dec = Toy::new(seed, vocab, 3, if hist { 0.7 } else { 0.0 });
        let feats = OwnedFeats::random(seed, images, 3, 0);
        let mut cfg = GenerateConfig {
            min_words: (min_frac * max_words as f64) as usize,
            max_words,
            suppress_unk,
            ..Default::default()
        };
        let size = exhaustive_beam(&dec, &cfg);
        cfg.strategy = Search::Beam { size, length_penalty: penalty, top_k_hypotheses: 1 };
        let got = generate(&dec, &feats.view(), &cfg).unwrap();
        prop_assert_eq!(got.len(), images);
        for (i, hyps) in got.iter().enumerate() {
            let want = brute_force(&dec, &feats.image(i), &cfg, penalty);
            prop_assert_eq!(hyps.len(), 1);
            prop_assert_eq!(hyps[0].score, want[0].0);
            // Captions whose scores tie exactly (here: the same words in another order under a
            // decoder that ignores the history) are all the best; neither search orders ties.
            let best: Vec<&Vec<u32>> = want
                .iter()
                .take_while(|w| w.0 == want[0].0)
                .map(|w| &w.2)
                .collect();
            prop_assert!(best.contains(&&hyps[0].tokens), "{:?} not in {:?}", hyps[0].tokens, best);
            prop_assert!(hyps[0].tokens.len() >= cfg.min_words);
        }
    }

    #[test]
    fn batching_does_not_change_beam_results(
        seed in 0u64..1_000_000,
        size in 1usize..6,
        max_words in 1usize..9,
        no_repeat in 0usize..3,
        penalty in penalty(),
    ) {
        let dec = Toy::new(seed, 11, 3, 0.5);
        let feats = OwnedFeats::random(seed, 3, 3, 4);
        let cfg = GenerateConfig {
            strategy: Search::Beam { size, length_penalty: penalty, top_k_hypotheses: size },
            min_words: 1,
            max_words,
            no_repeat_ngram: no_repeat,
            return_attention: true,
            ..Default::default()
        };
        let all = generate(&dec, &feats.view(), &cfg).unwrap();
        for (i, hyps) in all.iter().enumerate() {
            prop_assert!(!hyps.is_empty());
            prop_assert!(hyps.windows(2).all(|w| w[0].score >= w[1].score));
            let alone = generate(&dec, &feats.image(i).view(), &cfg).unwrap();
            prop_assert_eq!(&alone[0], hyps);
        }
    }
}
