//! `captioner caption --model <Hugging Face folder>`: the CLI flags reach `HfCaptioner` as
//! `generate`'s options, checked against the library on the tiny random-weight BLIP and ViT-GPT2
//! fixtures of `crates/vlm` (proved against `transformers` there).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use captioner_vlm::{HfCaptioner, HfGenerateOptions};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../vlm/tests/fixtures")
}

fn images() -> Vec<PathBuf> {
    ["img0.png", "img1.png"]
        .iter()
        .map(|n| fixtures().join("images").join(n))
        .collect()
}

fn run(model: &Path, extra: &[&str], inputs: &[PathBuf]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_captioner"))
        .env_remove("CAPTIONER_MODEL")
        .arg("caption")
        .arg("--model")
        .arg(model)
        .args(extra)
        .args(inputs)
        .output()
        .expect("run captioner")
}

fn library_captions(model: &Path, opts: &HfGenerateOptions) -> Vec<Vec<(String, f32)>> {
    let captioner = HfCaptioner::load(model).expect("load fixture");
    let imgs: Vec<_> = images()
        .iter()
        .map(|p| image::open(p).expect("fixture image").to_rgb8())
        .collect();
    captioner
        .caption(&imgs, opts)
        .expect("caption")
        .into_iter()
        .map(|hyps| hyps.into_iter().map(|h| (h.text, h.log_prob)).collect())
        .collect()
}

fn jsonl(out: &Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The CLI's records against the library's captions: the best caption, its log-probability and
/// the alternatives in order.
fn assert_same(records: &[serde_json::Value], want: &[Vec<(String, f32)>]) {
    assert_eq!(records.len(), want.len());
    for (rec, hyps) in records.iter().zip(want) {
        assert_eq!(rec["caption"].as_str(), Some(hyps[0].0.as_str()), "{rec}");
        let lp = rec["log_prob"].as_f64().expect("log_prob") as f32;
        assert!((lp - hyps[0].1).abs() < 1e-4, "{lp} vs {}", hyps[0].1);
        let alts = rec["alternatives"].as_array().cloned().unwrap_or_default();
        assert_eq!(alts.len(), hyps.len() - 1, "{rec}");
        for (alt, (text, _)) in alts.iter().zip(&hyps[1..]) {
            assert_eq!(alt["caption"].as_str(), Some(text.as_str()));
        }
    }
}

#[test]
fn beam_flags_match_the_library_for_both_architectures() {
    for name in ["blip-tiny", "vit-gpt2-tiny"] {
        let model = fixtures().join(name);
        let out = run(
            &model,
            &[
                "--format",
                "jsonl",
                "--beam",
                "3",
                "--num-captions",
                "2",
                "--no-repeat-ngram",
                "2",
                "--max-words",
                "12",
            ],
            &images(),
        );
        let opts = HfGenerateOptions {
            num_beams: 3,
            num_return_sequences: 2,
            no_repeat_ngram_size: 2,
            max_new_tokens: 12,
            min_new_tokens: 1,
            // Not given on the command line: the Hugging Face default.
            length_penalty: 1.0,
            ..HfGenerateOptions::default()
        };
        assert_same(&jsonl(&out), &library_captions(&model, &opts));
    }
}

#[test]
fn greedy_prompt_and_length_penalty_flags_reach_generate() {
    let model = fixtures().join("blip-tiny");
    let out = run(
        &model,
        &[
            "--format",
            "jsonl",
            "--beam",
            "1",
            "--prompt",
            "a picture of",
        ],
        &images(),
    );
    let opts = HfGenerateOptions {
        max_new_tokens: 20,
        min_new_tokens: 1,
        prompt: Some("a picture of".into()),
        ..HfGenerateOptions::default()
    };
    let want = library_captions(&model, &opts);
    assert!(want.iter().all(|h| h[0].0.starts_with("a picture of")));
    assert_same(&jsonl(&out), &want);

    let out = run(
        &model,
        &[
            "--format",
            "jsonl",
            "--length-penalty",
            "none",
            "--beam",
            "4",
        ],
        &images(),
    );
    let opts = HfGenerateOptions {
        num_beams: 4,
        length_penalty: 0.0,
        max_new_tokens: 20,
        min_new_tokens: 1,
        ..HfGenerateOptions::default()
    };
    assert_same(&jsonl(&out), &library_captions(&model, &opts));
}

#[test]
fn a_bad_file_is_reported_and_the_rest_still_captioned() {
    let model = fixtures().join("vit-gpt2-tiny");
    let mut inputs = images();
    inputs.insert(1, PathBuf::from("no-such-image.png"));
    let out = run(&model, &["--format", "jsonl"], &inputs);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(records.len(), 3);
    assert!(records[0]["caption"].is_string());
    assert!(records[1]["error"]
        .as_str()
        .is_some_and(|e| e.contains("no-such-image.png")));
    assert!(records[2]["caption"].is_string());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 3 images"));
}

#[test]
fn a_broken_hugging_face_folder_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = fixtures().join("blip-tiny");
    for entry in std::fs::read_dir(&src).expect("fixture dir") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n != "tokenizer.json") {
            std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
        }
    }
    let out = run(dir.path(), &[], &images()[..1]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tokenizer.json"), "{stderr}");
}
