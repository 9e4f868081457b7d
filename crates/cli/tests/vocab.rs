//! `captioner vocab` end to end on the shared Flickr8k.

use std::process::Command;

mod common;
use common::shared_data;

fn captioner(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_captioner"))
        .args(args)
        .output()
        .expect("run captioner")
}

#[test]
fn builds_a_flickr8k_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tokenizer.json");
    let spec = format!("flickr8k:{}", shared_data().join("flickr8k").display());
    let run = captioner(&[
        "vocab",
        "--dataset",
        &spec,
        "--split",
        "train",
        "--min-count",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("vocab size: "), "{stdout}");
    assert!(
        stdout.contains("from 30000 captions of 6000 images (split train)"),
        "{stdout}"
    );
    assert!(stdout.contains("coverage: "), "{stdout}");
    let vocab = captioner_data::Vocab::load(&out).unwrap();
    assert!(vocab.len() > 2000 && vocab.len() < 4000, "{}", vocab.len());
    assert!(
        stdout.contains(&format!("vocab size: {} ", vocab.len())),
        "{stdout}"
    );
    assert_eq!(vocab.word(4), Some("a"));

    let run = captioner(&[
        "vocab",
        "--dataset",
        &spec,
        "--max-words",
        "100",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success());
    assert_eq!(captioner_data::Vocab::load(&out).unwrap().len(), 104);
}

#[test]
fn bad_spec_lists_the_forms() {
    let run = captioner(&[
        "vocab",
        "--dataset",
        "imagenet:/x",
        "--out",
        "/tmp/never.json",
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("flickr8k-csv:<captions.txt>") && stderr.contains("folder:<dir>"),
        "{stderr}"
    );
}

#[test]
fn missing_file_is_named() {
    let run = captioner(&[
        "vocab",
        "--dataset",
        "coco:/nonexistent/c.json",
        "--out",
        "/tmp/never.json",
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("/nonexistent/c.json"), "{stderr}");
}
