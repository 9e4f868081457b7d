//! Property tests: the tokenizer and the metrics never panic, scores stay in range, a candidate
//! equal to its reference gets BLEU 1, and the incremental CIDEr-D agrees with `evaluate`.

use captioner_metrics::{evaluate, evaluate_tokenized, tokenizer, CiderD};
use proptest::prelude::*;

/// Captions built from words and the punctuation the lexer treats specially.
fn caption() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 .,'\"!?&;:/()\\[\\]{}<>@#$%*_+=~^|\\\\-]{0,40}",
        any::<String>(),
        prop::collection::vec(
            prop_oneof![
                "[a-z]{1,8}",
                Just("n't".to_owned()),
                Just("'s".to_owned()),
                Just("St.".to_owned()),
                Just("U.S.".to_owned()),
                Just("3/4".to_owned()),
                Just("\"".to_owned()),
                Just("...".to_owned()),
                Just("café".to_owned()),
            ],
            0..12
        )
        .prop_map(|w| w.join(" ")),
    ]
}

fn plain_words(min: usize) -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z]{1,8}", min..15).prop_map(|w| w.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tokenizer_never_panics(s in any::<String>(), t in caption()) {
        let _ = tokenizer::tokenize(&s);
        let _ = tokenizer::tokenize_all(&[s.as_str(), t.as_str(), ""]);
    }

    #[test]
    fn removed_punctuation_never_survives(s in caption()) {
        let out = tokenizer::tokenize(&s);
        for w in out.split(' ') {
            prop_assert!(![".", ",", "''", "``", "--", "..."].contains(&w), "{out:?}");
        }
    }

    #[test]
    fn scores_in_range(
        refs in prop::collection::vec(prop::collection::vec(caption(), 1..4), 1..5),
        cands in prop::collection::vec(caption(), 5),
    ) {
        let cands = &cands[..refs.len()];
        let scores = evaluate(&refs, cands).unwrap();
        for s in scores.per_image.iter().chain([&scores.corpus]) {
            for b in s.bleu {
                prop_assert!((0.0..=1.0 + 1e-9).contains(&b), "bleu {b}");
            }
            prop_assert!((0.0..=1.0 + 1e-9).contains(&s.rouge_l), "rouge {}", s.rouge_l);
            prop_assert!((0.0..=10.0 + 1e-9).contains(&s.cider_d), "cider {}", s.cider_d);
        }
    }

    #[test]
    fn identical_candidate_gets_bleu_one(c in plain_words(4)) {
        let scores = evaluate(&[vec![c.as_str()]], &[c.as_str()]).unwrap();
        for b in scores.corpus.bleu.iter().chain(&scores.per_image[0].bleu) {
            prop_assert!((b - 1.0).abs() < 1e-6, "{b} for {c:?}");
        }
        prop_assert!((scores.corpus.rouge_l - 1.0).abs() < 1e-12);
    }

    #[test]
    fn incremental_cider_matches_evaluate(
        refs in prop::collection::vec(prop::collection::vec(plain_words(0), 1..4), 1..6),
        cands in prop::collection::vec(plain_words(0), 6),
    ) {
        let cands = &cands[..refs.len()];
        let scores = evaluate_tokenized(&refs, cands).unwrap();
        let cider = CiderD::from_references(&refs).unwrap();
        for ((r, c), s) in refs.iter().zip(cands).zip(&scores.per_image) {
            let prepared = cider.prepare(r);
            prop_assert!((cider.score(c, &prepared) - s.cider_d).abs() < 1e-12);
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    use captioner_metrics::MetricsError;
    let refs = vec![vec!["a dog"]];
    assert_eq!(
        evaluate(&refs, &["a", "b"]).unwrap_err(),
        MetricsError::LengthMismatch {
            references: 1,
            candidates: 2
        }
    );
    let none: Vec<Vec<&str>> = vec![vec![]];
    assert_eq!(
        evaluate(&none, &["a"]).unwrap_err(),
        MetricsError::NoReferences { index: 0 }
    );
    let empty: Vec<Vec<&str>> = vec![];
    let no_cands: [&str; 0] = [];
    assert_eq!(
        evaluate(&empty, &no_cands).unwrap_err(),
        MetricsError::Empty
    );
}

#[test]
fn empty_candidate_scores_zero() {
    let s = evaluate(&[vec!["A dog runs."]], &[""]).unwrap();
    assert_eq!(s.corpus.cider_d, 0.0);
    assert_eq!(s.corpus.rouge_l, 0.0);
    assert!(s.corpus.bleu.iter().all(|&b| b < 1e-6));
}
