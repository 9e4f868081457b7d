//! `captioner eval` end to end: scores equal pycocoevalcap's on the hand-made fixture set, the
//! Flickr8k test split agrees with the library, and bad input fails with a clear message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

mod common;
use common::{default_model, shared_data};

fn captioner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_captioner"))
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_string(v).unwrap()).unwrap();
}

fn run_eval(args: &[&str]) -> Output {
    captioner()
        .arg("eval")
        .args(args)
        .output()
        .expect("run captioner")
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const METRICS: [&str; 6] = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"];

/// The hand-made set of `scripts/metrics_fixtures.py` as a COCO annotation file plus results.
fn edge_case_files(dir: &Path) -> (PathBuf, PathBuf, Value) {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../metrics/tests/fixtures/scores_edge_cases.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let images = fixture["images"].as_array().unwrap();
    let mut anns = Vec::new();
    let mut results = Vec::new();
    for (k, img) in images.iter().enumerate() {
        for r in img["refs"].as_array().unwrap() {
            anns.push(json!({"image_id": k, "id": anns.len(), "caption": r}));
        }
        results.push(json!({"image_id": k, "caption": img["candidate"]}));
    }
    let coco = json!({
        "images": (0..images.len()).map(|k| json!({"id": k, "file_name": format!("{k}.jpg")})).collect::<Vec<_>>(),
        "annotations": anns,
    });
    let ann_path = dir.join("annotations.json");
    let res_path = dir.join("results.json");
    write_json(&ann_path, &coco);
    write_json(&res_path, &Value::Array(results));
    (ann_path, res_path, fixture)
}

#[test]
fn edge_cases_equal_pycocoevalcap() {
    let dir = tempfile::tempdir().unwrap();
    let (ann, res, fixture) = edge_case_files(dir.path());
    let scores = dir.path().join("scores.json");
    let per_image = dir.path().join("per_image.jsonl");
    let out = run_eval(&[
        "--annotations",
        &format!("coco:{}", ann.display()),
        "--results",
        res.to_str().unwrap(),
        "--output",
        scores.to_str().unwrap(),
        "--per-image",
        per_image.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("CIDEr"));
    // The empty candidate is scored, with a warning.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("empty caption"),
        "{}",
        text(&out)
    );

    let corpus: Value = serde_json::from_str(&std::fs::read_to_string(&scores).unwrap()).unwrap();
    for m in METRICS {
        let (ours, want) = (
            corpus[m].as_f64().unwrap(),
            fixture["corpus"][m].as_f64().unwrap(),
        );
        assert!(
            (ours - want).abs() <= 1e-9,
            "{m}: {ours} vs pycocoevalcap {want}"
        );
    }
    let lines: Vec<Value> = std::fs::read_to_string(&per_image)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), fixture["images"].as_array().unwrap().len());
    for (k, line) in lines.iter().enumerate() {
        assert_eq!(line["image_id"], json!(k));
        for m in METRICS {
            let ours = line[m].as_f64().unwrap();
            let want = fixture["per_image"][m][k].as_f64().unwrap();
            assert!(
                (ours - want).abs() <= 1e-9,
                "image {k} {m}: {ours} vs {want}"
            );
        }
    }
}

#[test]
fn flickr8k_test_split_matches_library() {
    let data = shared_data();
    let dir = tempfile::tempdir().unwrap();
    // Candidate = caption #0 of every test image; references = all five (the dataset's).
    let tokens = std::fs::read_to_string(data.join("flickr8k/Flickr8k.token.txt")).unwrap();
    let test: Vec<String> = std::fs::read_to_string(data.join("flickr8k/Flickr_8k.testImages.txt"))
        .unwrap()
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    let mut results = Vec::new();
    let mut references: Vec<Vec<String>> = Vec::new();
    for name in &test {
        let caps: Vec<&str> = tokens
            .lines()
            .filter(|l| l.starts_with(&format!("{name}#")))
            .map(|l| l.split_once('\t').unwrap().1.trim())
            .collect();
        results.push(json!({"image_id": name, "caption": caps[0]}));
        references.push(caps.iter().map(|c| c.to_string()).collect());
    }
    let res = dir.path().join("results.json");
    write_json(&res, &Value::Array(results.clone()));
    let out = run_eval(&[
        "--annotations",
        data.join("flickr8k/Flickr8k.token.txt").to_str().unwrap(),
        "--split",
        "test",
        "--results",
        res.to_str().unwrap(),
        "--timings",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timings:"));
    let written: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("results.scores.json")).unwrap(),
    )
    .unwrap();
    let candidates: Vec<&str> = results
        .iter()
        .map(|r| r["caption"].as_str().unwrap())
        .collect();
    let lib = captioner_metrics::evaluate(&references, &candidates).unwrap();
    assert!((written["CIDEr"].as_f64().unwrap() - lib.corpus.cider_d).abs() < 1e-12);
    assert!((written["Bleu_4"].as_f64().unwrap() - lib.corpus.bleu[3]).abs() < 1e-12);
    assert_eq!(written["images"], json!(test.len()));
}

fn expect_failure(dir: &Path, results: &str, needle: &str) {
    let (ann, _, _) = edge_case_files(dir);
    let res = dir.join("bad.json");
    std::fs::write(&res, results).unwrap();
    let out = run_eval(&[
        "--annotations",
        ann.to_str().unwrap(),
        "--results",
        res.to_str().unwrap(),
        "--output",
        dir.join("s.json").to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "expected failure for {results}\n{}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    assert!(
        err.contains("bad.json"),
        "error does not name the file:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_results_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    expect_failure(d, "[{\"image_id\": 0, \"caption\": \"a\"", "not valid JSON");
    expect_failure(d, "{\"image_id\": 0}", "expected a JSON array");
    expect_failure(d, "[]", "no results");
    expect_failure(d, "[{\"caption\": \"a\"}]", "no \"image_id\"");
    expect_failure(
        d,
        "[{\"image_id\": 0, \"caption\": 5}]",
        "caption must be a string",
    );
    expect_failure(
        d,
        "[{\"image_id\": -3, \"caption\": \"a\"}]",
        "image_id must be",
    );
    expect_failure(
        d,
        "[{\"image_id\": 999, \"caption\": \"a\"}]",
        "not in the annotations",
    );
    expect_failure(
        d,
        "[{\"image_id\": 1, \"caption\": \"a\"}, {\"image_id\": 1, \"caption\": \"b\"}]",
        "both give a caption for image_id 1",
    );
}

#[test]
fn missing_results_warn_or_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (ann, _, _) = edge_case_files(dir.path());
    let res = dir.path().join("partial.json");
    std::fs::write(&res, "[{\"image_id\": 2, \"caption\": \"a cat\"}]").unwrap();
    let args = [
        "--annotations",
        ann.to_str().unwrap(),
        "--results",
        res.to_str().unwrap(),
    ];
    let out = run_eval(&args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("have no result"),
        "{}",
        text(&out)
    );
    let out = captioner()
        .arg("eval")
        .args(args)
        .arg("--require-all")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--require-all"));
}

#[test]
fn missing_annotations_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("r.json");
    std::fs::write(&res, "[]").unwrap();
    let out = run_eval(&[
        "--annotations",
        "/nonexistent/captions.json",
        "--results",
        res.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/captions.json"));
}

#[test]
fn meteor_is_skipped_with_instructions_when_its_data_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (ann, res, _) = edge_case_files(dir.path());
    let out = captioner()
        .env("CAPTIONER_METEOR_DATA", dir.path().join("no-meteor-here"))
        .args(["eval", "--annotations"])
        .arg(format!("coco:{}", ann.display()))
        .arg("--results")
        .arg(&res)
        .output()
        .expect("run captioner");
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("METEOR skipped") && stderr.contains("pip download"),
        "{}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("CIDEr") && !stdout.contains("METEOR"),
        "{stdout}"
    );
}

/// Needs pycocoevalcap's METEOR data: see `captioner_metrics::meteor::FETCH_HINT`, then
/// `CAPTIONER_METEOR_DATA=<dir> cargo test -p captioner-cli --test eval -- --ignored`.
#[test]
#[ignore = "needs the METEOR data (CAPTIONER_METEOR_DATA)"]
fn meteor_equals_pycocoevalcap_when_its_data_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let (ann, res, _) = edge_case_files(dir.path());
    let scores = dir.path().join("scores.json");
    let out = run_eval(&[
        "--annotations",
        &format!("coco:{}", ann.display()),
        "--results",
        res.to_str().unwrap(),
        "--output",
        scores.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../metrics/tests/fixtures/meteor_edge_cases.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let corpus: Value = serde_json::from_str(&std::fs::read_to_string(&scores).unwrap()).unwrap();
    let (ours, want) = (
        corpus["METEOR"].as_f64().unwrap(),
        fixture["corpus"]["METEOR"].as_f64().unwrap(),
    );
    assert!(
        (ours - want).abs() <= 1e-4,
        "METEOR {ours} vs pycocoevalcap {want}"
    );
}

#[test]
fn several_models_caption_as_an_ensemble_and_a_missing_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let default = default_model().to_str().unwrap();
    let missing = dir.path().join("no-such-run/best");
    let out = run_eval(&[
        "--annotations",
        &format!("flickr8k:{}", shared_data().join("flickr8k").display()),
        "--split",
        "test",
        "--model",
        default,
        "--model",
        missing.to_str().unwrap(),
        "--features",
        dir.path().join("no-cache").to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no-such-run/best") && stderr.contains("loading model"),
        "{}",
        text(&out)
    );
}

/// Three Flickr8k test images in the Kaggle CSV form, their features extracted, then captioned by
/// the default model alone and by an ensemble of it with itself: the ensemble's distribution is
/// the model's, so the captions agree. Features extracted with other input statistics than the
/// model's are refused first.
#[test]
fn an_ensemble_of_a_model_with_itself_captions_like_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let flickr = shared_data().join("flickr8k");
    let csv = dir.path().join("captions.txt");
    std::fs::write(
        &csv,
        "image,caption\n\
         3385593926_d3e9c21170.jpg,a dog runs through the snow\n\
         2677656448_6b7e7702af.jpg,a man rides a bike\n\
         311146855_0b65fdb169.jpg,a person stands on the street\n",
    )
    .unwrap();
    let spec = format!(
        "flickr8k-csv:{}@{}",
        csv.display(),
        flickr.join("images").display()
    );
    let default = default_model().to_str().unwrap();
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(default_model().join("config.json")).unwrap(),
    )
    .unwrap();
    let normalization = config["encoder"]["normalization"]
        .as_str()
        .unwrap_or("imagenet");
    let other = if normalization == "imagenet" {
        "inception"
    } else {
        "imagenet"
    };
    let weights = shared_data().join("models/efficientnet-lite0/efficientnet-lite0.safetensors");
    let extract = |name: &str, normalization: &str| {
        let cache = dir.path().join(name);
        let out = captioner()
            .args(["extract", "--dataset", &spec, "--spatial", "--out"])
            .arg(&cache)
            .arg("--weights")
            .arg(&weights)
            .args(["--normalization", normalization])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        cache
    };

    let mismatched = extract("other-cache", other);
    let out = run_eval(&[
        "--annotations",
        &spec,
        "--features",
        mismatched.to_str().unwrap(),
        "--model",
        default,
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("extracted with {other} input normalization"))
            && stderr.contains(&format!("--normalization {normalization}")),
        "{}",
        text(&out)
    );

    let cache = extract("cache", normalization);
    let captions = |models: &[&str], name: &str| -> Value {
        let saved = dir.path().join(name);
        let mut args = vec![
            "--annotations",
            &spec,
            "--features",
            cache.to_str().unwrap(),
        ];
        for m in models {
            args.extend(["--model", m]);
        }
        args.extend(["--beam", "2", "--save-results", saved.to_str().unwrap()]);
        let out = run_eval(&args);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_str(&std::fs::read_to_string(saved).unwrap()).unwrap()
    };
    let alone = captions(&[default], "alone.json");
    let ensemble = captions(&[default, default], "ensemble.json");
    assert_eq!(alone.as_array().map(Vec::len), Some(3));
    assert_eq!(ensemble, alone);
}
