//! Agreement with pycocoevalcap 1.2 on the fixtures written by `scripts/metrics_fixtures.py`:
//! identical tokens for every Flickr8k and COCO val2017 caption, and BLEU-1..4, ROUGE-L and
//! CIDEr-D (corpus and per image) within 1e-9 on every evaluation set.

mod common;

use captioner_metrics::{evaluate, tokenizer, Scores};
use common::{read_fixture, read_json_fixture, EvalSet};
use serde_json::Value;

const TOLERANCE: f64 = 1e-9;

fn check_tokens(fixture: &str, captions: Vec<(String, String)>) {
    let expected: Vec<(String, String)> = read_fixture(fixture)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSONL");
            (
                v["id"].as_str().expect("id").to_owned(),
                v["tokens"].as_str().expect("tokens").to_owned(),
            )
        })
        .collect();
    assert_eq!(expected.len(), captions.len(), "{fixture}: caption count");
    let raw: Vec<&str> = captions.iter().map(|(_, c)| c.as_str()).collect();
    let ours = tokenizer::tokenize_all(&raw);
    let mut bad = Vec::new();
    for (((id, want), (cid, caption)), got) in expected.iter().zip(&captions).zip(&ours) {
        assert_eq!(id, cid, "{fixture}: caption order");
        if want != got {
            bad.push(format!(
                "{id}: {caption:?}\n  pycocoevalcap {want:?}\n  ours          {got:?}"
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{fixture}: {} of {} captions differ, first ones:\n{}",
        bad.len(),
        captions.len(),
        bad[..bad.len().min(10)].join("\n")
    );
}

#[test]
fn tokens_identical_flickr8k() {
    check_tokens("tokens_flickr8k.jsonl.gz", common::flickr_captions());
}

#[test]
fn tokens_identical_coco_val2017() {
    let caps = common::coco_captions()
        .into_iter()
        .map(|(id, _, c)| (id, c))
        .collect();
    check_tokens("tokens_coco_val2017.jsonl.gz", caps);
}

fn per_image(fixture: &Value, metric: &str) -> Vec<f64> {
    fixture["per_image"][metric]
        .as_array()
        .unwrap_or_else(|| panic!("per_image.{metric}"))
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect()
}

fn check_scores(name: &str, fixture: &Value, scores: &Scores) {
    let metrics: [(&str, f64, Vec<f64>); 6] = [
        (
            "Bleu_1",
            scores.corpus.bleu[0],
            scores.per_image.iter().map(|s| s.bleu[0]).collect(),
        ),
        (
            "Bleu_2",
            scores.corpus.bleu[1],
            scores.per_image.iter().map(|s| s.bleu[1]).collect(),
        ),
        (
            "Bleu_3",
            scores.corpus.bleu[2],
            scores.per_image.iter().map(|s| s.bleu[2]).collect(),
        ),
        (
            "Bleu_4",
            scores.corpus.bleu[3],
            scores.per_image.iter().map(|s| s.bleu[3]).collect(),
        ),
        (
            "ROUGE_L",
            scores.corpus.rouge_l,
            scores.per_image.iter().map(|s| s.rouge_l).collect(),
        ),
        (
            "CIDEr",
            scores.corpus.cider_d,
            scores.per_image.iter().map(|s| s.cider_d).collect(),
        ),
    ];
    for (metric, corpus, ours) in metrics {
        let want = fixture["corpus"][metric].as_f64().expect("corpus score");
        assert!(
            (corpus - want).abs() <= TOLERANCE,
            "{name} {metric}: ours {corpus} pycocoevalcap {want}"
        );
        let want = per_image(fixture, metric);
        assert_eq!(want.len(), ours.len(), "{name} {metric}: image count");
        let worst = want
            .iter()
            .zip(&ours)
            .enumerate()
            .map(|(k, (w, o))| (k, (w - o).abs()))
            .fold((0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
        assert!(
            worst.1 <= TOLERANCE,
            "{name} {metric}: image #{} ours {} pycocoevalcap {} (diff {})",
            worst.0,
            ours[worst.0],
            want[worst.0],
            worst.1
        );
    }
}

fn run_set(name: &str, fixture: &Value, set: &EvalSet) {
    let scores = evaluate(&set.references, &set.candidates).expect("evaluate");
    check_scores(name, fixture, &scores);
}

#[test]
fn scores_coco_heldout() {
    let fixture = read_json_fixture("scores_coco_heldout.json.gz");
    run_set("coco_heldout", &fixture, &common::coco_heldout());
}

#[test]
fn scores_coco_shuffled() {
    let fixture = read_json_fixture("scores_coco_shuffled.json.gz");
    run_set("coco_shuffled", &fixture, &common::coco_shuffled(&fixture));
}

#[test]
fn scores_flickr8k_test() {
    let fixture = read_json_fixture("scores_flickr8k_test.json.gz");
    run_set("flickr8k_test", &fixture, &common::flickr8k_test());
}

#[test]
fn scores_edge_cases() {
    let fixture = read_json_fixture("scores_edge_cases.json");
    let images = fixture["images"].as_array().expect("images");
    let set = EvalSet {
        references: images
            .iter()
            .map(|i| {
                i["refs"]
                    .as_array()
                    .expect("refs")
                    .iter()
                    .map(|r| r.as_str().expect("ref").to_owned())
                    .collect()
            })
            .collect(),
        candidates: images
            .iter()
            .map(|i| i["candidate"].as_str().expect("candidate").to_owned())
            .collect(),
    };
    run_set("edge_cases", &fixture, &set);
}
