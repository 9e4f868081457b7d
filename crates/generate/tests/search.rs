//! Greedy search, beam search and sampling on toy decoders, checked against replay and brute force.

mod common;

use captioner_decode::model::{END_ID, PAD_ID, START_ID, UNK_ID};
use captioner_decode::Decoder;
use captioner_generate::{
    generate, GenerateConfig, GenerateError, Hypothesis, LengthPenalty, Strategy,
};
use common::{brute_force, exhaustive_beam, replay, OwnedFeats, Toy};

fn cfg(strategy: Strategy, max_words: usize) -> GenerateConfig {
    GenerateConfig {
        strategy,
        min_words: 0,
        max_words,
        ..Default::default()
    }
}

fn beam(size: usize, penalty: LengthPenalty, top_k: usize) -> Strategy {
    Strategy::Beam {
        size,
        length_penalty: penalty,
        top_k_hypotheses: top_k,
    }
}

fn sample(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> Strategy {
    Strategy::Sample {
        temperature,
        top_k,
        top_p,
        seed,
    }
}

const PENALTIES: [LengthPenalty; 3] = [
    LengthPenalty::None,
    LengthPenalty::Average,
    LengthPenalty::Gnmt(0.8),
];

/// Checks a hypothesis against a replay of its words: log-prob, score, attention.
fn check_replay(dec: &Toy, one: &OwnedFeats, h: &Hypothesis, penalty: LengthPenalty) {
    let (lp, att) = replay(dec, one, &h.tokens, h.finished);
    assert_eq!(h.log_prob, lp, "{h:?}");
    let len = h.tokens.len() + usize::from(h.finished);
    assert_eq!(h.score, penalty.score(lp, len), "{h:?}");
    if let Some(a) = &h.attention {
        assert_eq!(a, &att);
    }
    assert!(h
        .tokens
        .iter()
        .all(|&t| t != PAD_ID && t != START_ID && t != END_ID));
}

#[test]
fn greedy_is_the_argmax_chain() {
    for hist_w in [0.0, 0.7] {
        let dec = Toy::new(11, 12, 4, hist_w);
        let feats = OwnedFeats::random(3, 3, 4, 0);
        let got = generate(&dec, &feats.view(), &cfg(Strategy::Greedy, 8)).unwrap();
        assert_eq!(got.len(), 3);
        for (i, hyps) in got.iter().enumerate() {
            assert_eq!(hyps.len(), 1);
            // Walk the argmax chain by replaying prefixes.
            let one = feats.image(i);
            let mut words = vec![];
            let mut finished = false;
            while words.len() < 8 {
                let mut best = (f32::NEG_INFINITY, 0u32);
                for tok in 2..dec.vocab as u32 {
                    let mut s = words.clone();
                    let end = tok == END_ID;
                    if !end {
                        s.push(tok);
                    }
                    let (all, _) = replay(&dec, &one, &s, end);
                    let (prefix, _) = replay(&dec, &one, &words, false);
                    if all - prefix > best.0 {
                        best = (all - prefix, tok);
                    }
                }
                if best.1 == END_ID {
                    finished = true;
                    break;
                }
                words.push(best.1);
            }
            assert_eq!(hyps[0].tokens, words);
            assert_eq!(hyps[0].finished, finished);
            check_replay(&dec, &one, &hyps[0], LengthPenalty::None);
        }
    }
}

#[test]
fn beam_of_one_is_greedy() {
    for seed in 0..20 {
        let dec = Toy::new(seed, 9, 3, if seed % 2 == 0 { 0.0 } else { 0.5 });
        let feats = OwnedFeats::random(seed, 4, 3, 0);
        let greedy = generate(&dec, &feats.view(), &cfg(Strategy::Greedy, 6)).unwrap();
        let b1 = generate(
            &dec,
            &feats.view(),
            &cfg(beam(1, LengthPenalty::None, 1), 6),
        )
        .unwrap();
        assert_eq!(greedy, b1, "seed {seed}");
    }
}

#[test]
fn beam_equals_brute_force_under_each_penalty() {
    for (seed, hist_w, min_words, suppress_unk) in [
        (1, 0.0, 0, false),
        (2, 0.6, 0, true),
        (3, 0.0, 2, false),
        (4, 0.9, 1, true),
    ] {
        let dec = Toy::new(seed, 7, 3, hist_w);
        let feats = OwnedFeats::random(seed, 2, 3, 0);
        for penalty in PENALTIES {
            let mut c = cfg(beam(1, penalty, 1), 4);
            c.min_words = min_words;
            c.suppress_unk = suppress_unk;
            let size = exhaustive_beam(&dec, &c);
            c.strategy = beam(size, penalty, size);
            let got = generate(&dec, &feats.view(), &c).unwrap();
            for (i, hyps) in got.iter().enumerate() {
                let one = feats.image(i);
                let want = brute_force(&dec, &one, &c, penalty);
                assert_eq!(hyps.len(), want.len(), "every caption is kept");
                assert_eq!(hyps[0].tokens, want[0].2, "{penalty:?} image {i}");
                assert_eq!(hyps[0].finished, want[0].3);
                for (h, w) in hyps.iter().zip(&want) {
                    assert_eq!(h.score, w.0);
                    check_replay(&dec, &one, h, penalty);
                }
            }
        }
    }
}

#[test]
fn beam_finds_the_brute_force_best_with_a_realistic_width() {
    // Not guaranteed in general, but a width of 6 over 4 words and 4 steps finds the best caption
    // of these decoders; the returned hypotheses are sorted and replay exactly.
    let mut found = 0;
    for seed in 0..30 {
        let dec = Toy::new(seed, 7, 3, 0.0);
        let feats = OwnedFeats::random(seed, 1, 3, 0);
        for penalty in PENALTIES {
            let c = cfg(beam(6, penalty, 3), 4);
            let got = generate(&dec, &feats.view(), &c).unwrap();
            let h = &got[0];
            assert_eq!(h.len(), 3);
            assert!(h.windows(2).all(|w| w[0].score >= w[1].score));
            for x in h {
                check_replay(&dec, &feats.image(0), x, penalty);
            }
            let want = brute_force(&dec, &feats.image(0), &c, penalty);
            found += usize::from(h[0].score == want[0].0);
        }
    }
    assert!(found >= 85, "beam 6 found the optimum {found}/90 times");
}

#[test]
fn batched_beam_equals_each_image_alone() {
    for hist_w in [0.0, 0.8] {
        let dec = Toy::new(5, 15, 4, hist_w);
        let feats = OwnedFeats::random(9, 3, 4, 6);
        for penalty in PENALTIES {
            let mut c = cfg(beam(4, penalty, 3), 7);
            c.return_attention = true;
            let all = generate(&dec, &feats.view(), &c).unwrap();
            assert_eq!(all.len(), 3);
            for (i, hyps) in all.iter().enumerate() {
                let alone = generate(&dec, &feats.image(i).view(), &c).unwrap();
                assert_eq!(alone.len(), 1);
                assert_eq!(&alone[0], hyps, "image {i} {penalty:?}");
                for h in hyps {
                    check_replay(&dec, &feats.image(i), h, penalty);
                }
            }
        }
    }
}

#[test]
fn a_decoder_that_never_ends_gives_max_length_captions() {
    let mut dec = Toy::new(8, 10, 3, 0.3);
    dec.bias[END_ID as usize] = f32::NEG_INFINITY;
    let feats = OwnedFeats::random(1, 3, 3, 0);
    for strategy in [
        Strategy::Greedy,
        beam(3, LengthPenalty::None, 3),
        beam(5, LengthPenalty::Average, 2),
        sample(1.0, 0, 1.0, 7),
    ] {
        let got = generate(&dec, &feats.view(), &cfg(strategy.clone(), 6)).unwrap();
        for (i, hyps) in got.iter().enumerate() {
            assert!(!hyps.is_empty());
            if let Strategy::Beam {
                top_k_hypotheses, ..
            } = strategy
            {
                assert_eq!(hyps.len(), top_k_hypotheses);
            }
            for h in hyps {
                assert_eq!(h.tokens.len(), 6, "{strategy:?}");
                assert!(!h.finished);
                assert!(h.log_prob.is_finite());
                let p = match strategy {
                    Strategy::Beam { length_penalty, .. } => length_penalty,
                    _ => LengthPenalty::None,
                };
                check_replay(&dec, &feats.image(i), h, p);
            }
        }
    }
}

#[test]
fn min_words_is_respected() {
    let mut dec = Toy::new(2, 10, 3, 0.0);
    dec.bias[END_ID as usize] = 6.0; // <end> is by far the likeliest token
    let feats = OwnedFeats::random(2, 3, 3, 0);
    let strategies = [
        Strategy::Greedy,
        beam(3, LengthPenalty::None, 3),
        beam(3, LengthPenalty::Gnmt(1.0), 2),
        sample(1.0, 0, 1.0, 1),
    ];
    let greedy = generate(&dec, &feats.view(), &cfg(Strategy::Greedy, 10)).unwrap();
    assert!(greedy
        .iter()
        .all(|h| h[0].tokens.is_empty() && h[0].finished));
    for strategy in strategies {
        let mut c = cfg(strategy, 10);
        c.min_words = 3;
        for hyps in generate(&dec, &feats.view(), &c).unwrap() {
            for h in hyps {
                assert!(h.tokens.len() >= 3, "{h:?}");
                assert!(h.finished);
            }
        }
    }
}

fn has_repeated_ngram(t: &[u32], n: usize) -> bool {
    (0..t.len().saturating_sub(n - 1))
        .any(|i| (i + 1..t.len().saturating_sub(n - 1)).any(|j| t[i..i + n] == t[j..j + n]))
}

#[test]
fn no_repeat_ngram_is_respected() {
    // A decoder that loves to repeat: the previous token is the likeliest next one.
    let mut dec = Toy::new(4, 12, 3, 0.0);
    dec.bias[END_ID as usize] = -4.0;
    for prev in 0..12 {
        dec.table[prev * 12 + prev] += 5.0;
        dec.table[prev * 12 + (prev + 1) % 12] += 3.0;
    }
    let feats = OwnedFeats::random(4, 3, 3, 0);
    let plain = generate(&dec, &feats.view(), &cfg(Strategy::Greedy, 12)).unwrap();
    assert!(plain.iter().any(|h| has_repeated_ngram(&h[0].tokens, 2)));
    for n in 1..=3 {
        for strategy in [
            Strategy::Greedy,
            beam(4, LengthPenalty::Average, 4),
            sample(1.5, 0, 1.0, 3),
        ] {
            let mut c = cfg(strategy.clone(), 12);
            c.no_repeat_ngram = n;
            for hyps in generate(&dec, &feats.view(), &c).unwrap() {
                for h in hyps {
                    assert!(!h.tokens.is_empty());
                    assert!(
                        !has_repeated_ngram(&h.tokens, n),
                        "n={n} {strategy:?}: {:?}",
                        h.tokens
                    );
                }
            }
        }
    }
}

#[test]
fn a_vocabulary_with_every_word_banned_still_returns_a_caption() {
    // Words 3 (unk, suppressed) and 4 (banned after one use); <end> banned before 3 words.
    let dec = Toy::new(6, 5, 2, 0.0);
    let feats = OwnedFeats::random(6, 2, 2, 0);
    for strategy in [
        Strategy::Greedy,
        beam(3, LengthPenalty::Average, 2),
        sample(1.0, 0, 1.0, 0),
    ] {
        let mut c = cfg(strategy, 5);
        c.min_words = 3;
        c.suppress_unk = true;
        c.no_repeat_ngram = 1;
        for hyps in generate(&dec, &feats.view(), &c).unwrap() {
            assert_eq!(hyps.len(), 1);
            assert_eq!(hyps[0].tokens, vec![4]);
            assert!(!hyps[0].finished);
        }
    }
}

#[test]
fn suppress_unk_is_respected() {
    let mut dec = Toy::new(3, 10, 3, 0.2);
    dec.bias[UNK_ID as usize] = 5.0;
    let feats = OwnedFeats::random(3, 3, 3, 0);
    let plain = generate(&dec, &feats.view(), &cfg(Strategy::Greedy, 5)).unwrap();
    assert!(plain.iter().any(|h| h[0].tokens.contains(&UNK_ID)));
    for strategy in [
        Strategy::Greedy,
        beam(3, LengthPenalty::None, 3),
        sample(2.0, 0, 1.0, 5),
    ] {
        let mut c = cfg(strategy, 5);
        c.suppress_unk = true;
        for hyps in generate(&dec, &feats.view(), &c).unwrap() {
            for h in hyps {
                assert!(!h.tokens.contains(&UNK_ID), "{h:?}");
            }
        }
    }
}

#[test]
fn sampling_is_deterministic_per_seed_and_per_image() {
    let dec = Toy::new(12, 20, 3, 0.4);
    let feats = OwnedFeats::random(12, 6, 3, 0);
    let run = |s: Strategy| generate(&dec, &feats.view(), &cfg(s, 10)).unwrap();
    let a = run(sample(1.0, 0, 1.0, 42));
    assert_eq!(a, run(sample(1.0, 0, 1.0, 42)));
    assert_ne!(a, run(sample(1.0, 0, 1.0, 43)));
    assert_ne!(a[0], a[1], "each image draws from its own stream");
    for (i, h) in a.iter().enumerate() {
        check_replay(&dec, &feats.image(i), &h[0], LengthPenalty::None);
    }
    // Image 0 of a batch gets the same caption alone (stream 0).
    let alone = generate(
        &dec,
        &feats.image(0).view(),
        &cfg(sample(1.0, 0, 1.0, 42), 10),
    )
    .unwrap();
    assert_eq!(alone[0], a[0]);
    // top-k 1, a tiny nucleus or a tiny temperature are greedy search.
    let greedy = run(Strategy::Greedy);
    assert_eq!(run(sample(1.0, 1, 1.0, 9)), greedy);
    assert_eq!(run(sample(1.0, 0, 1e-6, 9)), greedy);
    assert_eq!(run(sample(1e-4, 0, 1.0, 9)), greedy);
}

#[test]
fn sampling_follows_the_distribution() {
    // 4000 copies of one image, one word each: word frequencies ~ the model's probabilities.
    let dec = Toy::new(13, 8, 2, 0.0);
    let one = OwnedFeats::random(13, 1, 2, 0);
    let n = 4000;
    let feats = OwnedFeats {
        batch: n,
        dim: 2,
        cells: 0,
        pooled: one.pooled.repeat(n),
        spatial: None,
    };
    let probs: Vec<f32> = (0..8u32)
        .map(|t| {
            if t == END_ID {
                replay(&dec, &one, &[], true).0.exp()
            } else if t > END_ID {
                replay(&dec, &one, &[t], false).0.exp()
            } else {
                0.0
            }
        })
        .collect();
    let z: f32 = probs.iter().sum();
    let first = |h: &Vec<Hypothesis>| h[0].tokens.first().copied().unwrap_or(END_ID) as usize;
    for (temperature, top_k) in [(1.0f32, 0usize), (0.5, 0), (1.0, 2)] {
        let got = generate(
            &dec,
            &feats.view(),
            &cfg(sample(temperature, top_k, 1.0, 77), 1),
        )
        .unwrap();
        let mut counts = [0usize; 8];
        for h in &got {
            counts[first(h)] += 1;
        }
        // Expected: p^(1/T) renormalised over the allowed tokens (the top k of them).
        let mut allowed: Vec<usize> = (2..8).collect();
        allowed.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        if top_k > 0 {
            allowed.truncate(top_k);
        }
        let w: Vec<f32> = (0..8)
            .map(|t| {
                if allowed.contains(&t) {
                    (probs[t] / z).powf(1.0 / temperature)
                } else {
                    0.0
                }
            })
            .collect();
        let wz: f32 = w.iter().sum();
        for t in 0..8 {
            let expect = w[t] / wz;
            let seen = counts[t] as f32 / n as f32;
            let sd = (expect * (1.0 - expect) / n as f32).sqrt();
            assert!(
                (seen - expect).abs() <= 5.0 * sd + 1e-3,
                "T={temperature} k={top_k} token {t}: {seen} vs {expect}"
            );
        }
    }
}

#[test]
fn attention_has_one_map_per_word() {
    let dec = Toy::new(14, 10, 3, 0.1);
    let feats = OwnedFeats::random(14, 2, 3, 5);
    for strategy in [
        Strategy::Greedy,
        beam(3, LengthPenalty::Gnmt(0.6), 2),
        sample(1.0, 0, 0.9, 2),
    ] {
        let mut c = cfg(strategy.clone(), 6);
        c.return_attention = true;
        for (i, hyps) in generate(&dec, &feats.view(), &c)
            .unwrap()
            .iter()
            .enumerate()
        {
            for h in hyps {
                let a = h.attention.as_ref().expect("attention asked for");
                assert_eq!(a.len(), h.tokens.len());
                for m in a {
                    assert_eq!(m.len(), 5);
                    assert!((m.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                }
                let (_, want) = replay(&dec, &feats.image(i), &h.tokens, h.finished);
                assert_eq!(a, &want, "{strategy:?}");
            }
        }
        // Without the flag: no attention.
        c.return_attention = false;
        let plain = generate(&dec, &feats.view(), &c).unwrap();
        assert!(plain.iter().flatten().all(|h| h.attention.is_none()));
    }
    // Features without a grid cannot give attention.
    let mut c = cfg(Strategy::Greedy, 4);
    c.return_attention = true;
    let flat = OwnedFeats::random(1, 2, 3, 0);
    assert!(matches!(
        generate(&dec, &flat.view(), &c),
        Err(GenerateError::NoAttention("toy"))
    ));
}

#[test]
fn errors_and_edge_cases() {
    let mut dec = Toy::new(1, 8, 2, 0.0);
    let feats = OwnedFeats::random(1, 2, 2, 0);
    // Empty batch: nothing to do.
    let empty = OwnedFeats {
        batch: 0,
        dim: 2,
        cells: 0,
        pooled: vec![],
        spatial: None,
    };
    assert!(generate(&dec, &empty.view(), &GenerateConfig::default())
        .unwrap()
        .is_empty());
    // Bad settings.
    assert!(matches!(
        generate(
            &dec,
            &feats.view(),
            &cfg(beam(0, LengthPenalty::None, 1), 5)
        ),
        Err(GenerateError::Config(_))
    ));
    // Bad features.
    let bad = OwnedFeats {
        batch: 2,
        dim: 2,
        cells: 0,
        pooled: vec![0.0; 3],
        spatial: None,
    };
    assert!(matches!(
        generate(&dec, &bad.view(), &GenerateConfig::default()),
        Err(GenerateError::Decode(_))
    ));
    // NaN log-probabilities.
    dec.nan_at = Some(1);
    for strategy in [
        Strategy::Greedy,
        beam(2, LengthPenalty::None, 1),
        sample(1.0, 0, 1.0, 0),
        sample(1.0, 3, 1.0, 0),
    ] {
        let mut c = cfg(strategy, 5);
        c.min_words = 2; // so that every caption reaches step 1
        let r = generate(&dec, &feats.view(), &c);
        assert!(
            matches!(r, Err(GenerateError::NotANumber { step: 1, token: 7 })),
            "{r:?}"
        );
    }
    assert_eq!(dec.kind(), "toy");
}

#[test]
fn config_serde_round_trip() {
    let c = GenerateConfig {
        strategy: beam(5, LengthPenalty::Gnmt(0.7), 2),
        no_repeat_ngram: 3,
        ..Default::default()
    };
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<GenerateConfig>(&json).unwrap(), c);
    let s = GenerateConfig {
        strategy: sample(0.8, 40, 0.9, 3),
        ..Default::default()
    };
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<GenerateConfig>(&json).unwrap(), s);
    let g: GenerateConfig =
        serde_json::from_str(r#"{"strategy": "greedy", "max_words": 9}"#).unwrap();
    assert_eq!(g.strategy, Strategy::Greedy);
    assert_eq!(g.max_words, 9);
    let b: GenerateConfig = serde_json::from_str(r#"{"strategy": {"beam": {"size": 5}}}"#).unwrap();
    assert_eq!(b.strategy, beam(5, LengthPenalty::None, 1));
    assert_eq!(
        serde_json::from_str::<GenerateConfig>("{}").unwrap(),
        GenerateConfig::default()
    );
    assert!(serde_json::from_str::<GenerateConfig>(r#"{"max_wordz": 3}"#).is_err());
}
