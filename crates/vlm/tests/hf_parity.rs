//! Our BLIP and ViT-GPT2 against `transformers` on tiny random-weight models: pixel values,
//! teacher-forced logits, and the token ids of `model.generate` (greedy and beam search).

mod common;

use captioner_vlm::EarlyStopping;
use common::*;

const SIDE: usize = 32;

#[test]
fn pixel_values_match_the_image_processor() {
    for model in MODELS {
        let exp = expected(model);
        let m = load(model);
        let ours = m
            .pixel_values(&images(&exp))
            .unwrap()
            .flatten_from(1)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (i, (a, b)) in ours.iter().zip(&exp.pixel_values).enumerate() {
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-5,
                "{model} image {i}: pixel values differ by {worst}"
            );
        }
    }
}

#[test]
fn teacher_forced_logits_match_within_1e_4() {
    for model in MODELS {
        let exp = expected(model);
        let m = load(model);
        let logits = m
            .logits(&pixels(&exp, SIDE), &exp.forced_ids)
            .unwrap()
            .flatten_from(1)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(logits.len(), exp.logits.len());
        for (i, (a, b)) in logits.iter().zip(&exp.logits).enumerate() {
            assert_eq!(a.len(), b.len(), "{model} image {i}: logits shape");
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "{model} image {i}: logits differ by {worst}");
        }
    }
}

#[test]
fn generated_ids_equal_transformers_generate() {
    for model in MODELS {
        let exp = expected(model);
        let m = load(model);
        let px = pixels(&exp, SIDE);
        for case in &exp.cases {
            let got = m.generate_ids(&px, &case.options.to_hf()).unwrap();
            assert_eq!(got.len(), case.expected.len());
            for (i, (g, e)) in got.iter().zip(&case.expected).enumerate() {
                let g_ids: Vec<&[u32]> = g.iter().map(|h| h.tokens.as_slice()).collect();
                let e_ids: Vec<&[u32]> = e.iter().map(|h| h.tokens.as_slice()).collect();
                assert_eq!(g_ids, e_ids, "{model} {} image {i}", case.name);
                for (h, eh) in g.iter().zip(e) {
                    if let Some(s) = eh.score {
                        assert!(
                            (h.score - s).abs() < 1e-4,
                            "{model} {} image {i}: score {} vs {s}",
                            case.name,
                            h.score
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn batched_equals_unbatched() {
    for model in MODELS {
        let exp = expected(model);
        let m = load(model);
        let px = pixels(&exp, SIDE);
        for case in exp.cases.iter().filter(|c| c.name.starts_with("beam3")) {
            let opts = case.options.to_hf();
            let batched = m.generate_ids(&px, &opts).unwrap();
            for (i, b) in batched.iter().enumerate() {
                let one = m.generate_ids(&px.narrow(0, i, 1).unwrap(), &opts).unwrap();
                assert_eq!(one.len(), 1);
                let a: Vec<&[u32]> = one[0].iter().map(|h| h.tokens.as_slice()).collect();
                let c: Vec<&[u32]> = b.iter().map(|h| h.tokens.as_slice()).collect();
                assert_eq!(a, c, "{model} {} image {i}", case.name);
            }
        }
    }
}

#[test]
fn captions_from_images_follow_the_same_search() {
    for model in MODELS {
        let exp = expected(model);
        let m = load(model);
        let imgs = images(&exp);
        for case in &exp.cases {
            let caps = m.caption(&imgs, &case.options.to_hf()).unwrap();
            for (i, (c, e)) in caps.iter().zip(&case.expected).enumerate() {
                assert_eq!(c[0].tokens, e[0].tokens, "{model} {} image {i}", case.name);
                let prompt = case.options.prompt.as_deref().unwrap_or("");
                assert!(
                    c[0].text.starts_with(prompt),
                    "{model} {}: {:?} lacks the prompt",
                    case.name,
                    c[0].text
                );
                assert!(c[0].log_prob.is_finite() && c[0].log_prob <= 0.0);
            }
        }
    }
}

/// Guards the fixtures themselves: were the length penalty, n-gram blocking or stopping rule
/// ignored, some expected ids would change, so the tests above would notice.
#[test]
fn fixtures_discriminate_the_options() {
    for model in MODELS {
        let exp = expected(model);
        assert!(exp.cases.len() >= 6, "{model}: too few cases");
        let m = load(model);
        let px = pixels(&exp, SIDE);
        let differs = |name: &str, tweak: &dyn Fn(&mut captioner_vlm::HfGenerateOptions)| {
            let case = exp.cases.iter().find(|c| c.name == name).unwrap();
            let mut opts = case.options.to_hf();
            tweak(&mut opts);
            let got = m.generate_ids(&px, &opts).unwrap();
            got.iter()
                .zip(&case.expected)
                .any(|(g, e)| g.iter().zip(e).any(|(a, b)| a.tokens != b.tokens))
        };
        assert!(
            differs("beam3-lp2-ngram2", &|o| o.length_penalty = 1.0),
            "{model}: the length penalty changes nothing"
        );
        assert!(
            differs("beam3-lp2-ngram2", &|o| o.no_repeat_ngram_size = 0),
            "{model}: n-gram blocking changes nothing"
        );
        assert!(
            differs("greedy-min-ngram", &|o| o.min_new_tokens = 0),
            "{model}: min_new_tokens changes nothing"
        );
        assert!(
            differs("beam4-lp2-early", &|o| o.early_stopping =
                EarlyStopping::Heuristic),
            "{model}: early_stopping changes nothing"
        );
        assert!(
            differs("beam4-lp2-early", &|o| {
                o.num_beams = 1;
                o.num_return_sequences = 1;
            }),
            "{model}: beam search equals greedy"
        );
    }
}
