//! `captioner caption` end to end with the committed default model and the real Lite0 weights.

use std::path::PathBuf;
use std::process::{Command, Output};

mod common;
use common::{default_model, shared_data};

fn image(name: &str) -> PathBuf {
    shared_data().join("flickr8k/images").join(name)
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_captioner"))
        .env("CAPTIONER_SHARED_DATA", shared_data())
        .env_remove("CAPTIONER_MODEL")
        .args(args)
        .output()
        .expect("run captioner")
}

/// Runs captioner, which must succeed, and returns its standard output.
fn run_ok(args: &[&std::ffi::OsStr]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn default_model_captions_an_image_with_plausible_words() {
    // The girl in the pink dress climbing the stairs: the first image of Flickr8k.
    let img = image("1000268201_693b08cb0e.jpg");
    let stdout = run_ok(&["caption".as_ref(), img.as_os_str()]);
    let caption = stdout.trim();
    let words: Vec<&str> = caption.split_whitespace().collect();
    assert!((3..=20).contains(&words.len()), "caption: {caption:?}");
    assert!(
        !caption.contains("<unk>") && !caption.contains("<end>"),
        "{caption:?}"
    );
    let subject = ["girl", "child", "little", "kid", "boy", "person"];
    assert!(
        words.iter().any(|w| subject.contains(w)),
        "no person in {caption:?}"
    );
}

#[test]
fn bad_files_are_reported_and_the_rest_captioned_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.jpg");
    std::fs::write(&broken, b"not a jpeg").unwrap();
    let good = image("1001773457_577c3a7d70.jpg");
    let out = run(&[
        "caption".as_ref(),
        "--format".as_ref(),
        "jsonl".as_ref(),
        "--beam".as_ref(),
        "2".as_ref(),
        "--num-captions".as_ref(),
        "2".as_ref(),
        good.as_os_str(),
        broken.as_os_str(),
        dir.path().join("missing.png").as_os_str(),
    ]);
    assert!(!out.status.success(), "failures must give a non-zero exit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("broken.jpg") && stderr.contains("missing.png"),
        "{stderr}"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0]["caption"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(lines[0]["alternatives"].as_array().map(Vec::len), Some(1));
    assert!(lines[1]["error"].as_str().is_some());
    assert!(lines[2]["error"].as_str().is_some());

    let out = run(&[
        "caption".as_ref(),
        "--format".as_ref(),
        "csv".as_ref(),
        good.as_os_str(),
    ]);
    assert!(out.status.success());
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(csv.starts_with("image,caption,log_prob\n"), "{csv}");
    assert_eq!(csv.lines().count(), 2);
}

#[test]
fn a_folder_is_captioned_and_attention_maps_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(images.join("nested")).unwrap();
    for (name, dst) in [
        ("1000268201_693b08cb0e.jpg", "a.jpg"),
        ("1001773457_577c3a7d70.jpg", "nested/b.jpg"),
    ] {
        std::fs::copy(image(name), images.join(dst)).unwrap();
    }
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();
    let maps = dir.path().join("maps");
    let out = run(&[
        "caption".as_ref(),
        "--attention".as_ref(),
        maps.as_os_str(),
        images.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.lines().all(|l| l.contains('\t')));
    for stem in ["a", "b"] {
        let png = maps.join(format!("{stem}.attention.png"));
        let img = image::open(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(img.width() >= 224 && img.height() >= 224);
    }
}

#[test]
fn a_missing_model_bundle_is_a_clear_error() {
    let img = image("1000268201_693b08cb0e.jpg");
    let out = run(&[
        "caption".as_ref(),
        "--model".as_ref(),
        "/nonexistent/model".as_ref(),
        img.as_os_str(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/model"), "{stderr}");
}

#[test]
fn an_ensemble_of_the_default_model_with_itself_captions_like_it_and_draws_attention() {
    let dir = tempfile::tempdir().unwrap();
    let maps = dir.path().join("maps");
    let imgs = [
        image("1000268201_693b08cb0e.jpg"),
        image("1001773457_577c3a7d70.jpg"),
    ];
    let model = default_model().as_os_str();
    let captions = |models: usize, attention: bool| {
        let mut args: Vec<&std::ffi::OsStr> = vec!["caption".as_ref()];
        for _ in 0..models {
            args.extend(["--model".as_ref(), model]);
        }
        if attention {
            args.extend(["--attention".as_ref(), maps.as_os_str()]);
        }
        args.extend(imgs.iter().map(|p| p.as_os_str()));
        run_ok(&args)
    };
    let single = captions(1, false);
    assert_eq!(single.lines().count(), 2, "{single}");
    assert_eq!(captions(2, true), single);
    for img in &imgs {
        let stem = img.file_stem().unwrap().to_string_lossy();
        assert!(
            maps.join(format!("{stem}.attention.png")).is_file(),
            "{stem}"
        );
    }
}

#[test]
fn a_hugging_face_model_is_not_ensembled_and_an_incompatible_bundle_is_named() {
    let img = image("1000268201_693b08cb0e.jpg");
    let hf =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../vlm/tests/fixtures/blip-tiny");
    let out = run(&[
        "caption".as_ref(),
        "--model".as_ref(),
        default_model().as_os_str(),
        "--model".as_ref(),
        hf.as_os_str(),
        img.as_os_str(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("blip-tiny") && stderr.contains("ensemble"),
        "{stderr}"
    );
    // A bundle with another vocabulary cannot join: the error names it.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    for entry in std::fs::read_dir(default_model()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), other.join(entry.file_name())).unwrap();
    }
    let tokenizer = other.join("tokenizer.json");
    let text = std::fs::read_to_string(&tokenizer).unwrap();
    let renamed = text.replacen("\"dog\"", "\"dogz\"", 1);
    assert_ne!(renamed, text, "the vocabulary has no \"dog\"");
    std::fs::write(&tokenizer, renamed).unwrap();
    let out = run(&[
        "caption".as_ref(),
        "--model".as_ref(),
        default_model().as_os_str(),
        "--model".as_ref(),
        other.as_os_str(),
        img.as_os_str(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("other") && stderr.contains("vocabular"),
        "{stderr}"
    );
}

/// `captioner export --length-penalty` records the bundle's default length normalisation:
/// `caption` then uses it unless `--length-penalty` says otherwise. gnmt:3.0 is extreme on
/// purpose (it makes the default model's captions run to the word limit), so the two settings
/// give different captions.
#[test]
fn a_bundle_s_recorded_length_penalty_is_its_default_and_the_flag_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("long");
    run_ok(&[
        "export".as_ref(),
        "--model".as_ref(),
        default_model().as_os_str(),
        "--out".as_ref(),
        long.as_os_str(),
        "--length-penalty".as_ref(),
        "gnmt:3".as_ref(),
    ]);
    let config = std::fs::read_to_string(long.join("config.json")).unwrap();
    assert!(config.contains(r#""length_penalty": {"#), "{config}");

    let imgs = [
        image("1000268201_693b08cb0e.jpg"),
        image("1001773457_577c3a7d70.jpg"),
        image("1002674143_1b742ab4b8.jpg"),
    ];
    let captions = |model: &std::path::Path, penalty: Option<&str>| {
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["caption".as_ref(), "--model".as_ref(), model.as_os_str()];
        if let Some(p) = penalty {
            args.extend::<[&std::ffi::OsStr; 2]>(["--length-penalty".as_ref(), p.as_ref()]);
        }
        args.extend(imgs.iter().map(|p| p.as_os_str()));
        run_ok(&args)
    };
    let recorded = captions(&long, None);
    assert_eq!(recorded, captions(default_model(), Some("gnmt:3")));
    let plain = captions(&long, Some("none"));
    assert_eq!(plain, captions(default_model(), Some("none")));
    assert_ne!(recorded, plain);
}
