//! `captioner train` and `captioner export` at the command line: what a user sees when something
//! is wrong, and a bundle round trip.

use std::process::{Command, Output};

mod common;
use common::default_model;

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_captioner"))
        .args(args)
        .output()
        .expect("run captioner")
}

#[test]
fn a_preset_typo_names_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let preset = dir.path().join("p.toml");
    std::fs::write(
        &preset,
        "[model]\nkind = \"sat\"\n\n[train]\nepochs = 2\nbatchsize = 8\n",
    )
    .unwrap();
    let out = run(&[
        "train".as_ref(),
        "--preset".as_ref(),
        preset.as_os_str(),
        "--out".as_ref(),
        dir.path().join("run").as_os_str(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("p.toml") && stderr.contains("batchsize"),
        "{stderr}"
    );
}

#[test]
fn a_missing_feature_cache_says_how_to_make_it() {
    let dir = tempfile::tempdir().unwrap();
    let preset = dir.path().join("p.toml");
    std::fs::write(&preset, "[model]\nkind = \"gru-init\"\n").unwrap();
    let missing = dir.path().join("no-such-cache");
    let out = run(&[
        "train".as_ref(),
        "--preset".as_ref(),
        preset.as_os_str(),
        "--out".as_ref(),
        dir.path().join("run").as_os_str(),
        "--features".as_ref(),
        missing.as_os_str(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no-such-cache") && stderr.contains("captioner extract"),
        "{stderr}"
    );
}

#[test]
fn every_committed_preset_parses() {
    let configs = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs");
    let mut n = 0;
    for entry in std::fs::read_dir(configs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            captioner_train::Preset::load(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(
        n >= 5,
        "expected the four architecture presets and the default"
    );
}

/// `captioner export --model M... --out OUT [--f16]`.
fn export(models: &[&std::path::Path], out: &std::path::Path, f16: bool) -> Output {
    let mut args: Vec<&std::ffi::OsStr> = vec!["export".as_ref()];
    for m in models {
        args.extend(["--model".as_ref(), m.as_os_str()]);
    }
    args.extend(["--out".as_ref(), out.as_os_str()]);
    if f16 {
        args.push("--f16".as_ref());
    }
    run(&args)
}

/// [`export`], which must succeed; the bundle it wrote.
fn export_and_load(
    models: &[&std::path::Path],
    out: &std::path::Path,
    f16: bool,
) -> captioner_decode::bundle::Bundle {
    let status = export(models, out, f16);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    captioner_decode::bundle::load(out).unwrap()
}

#[test]
fn export_writes_an_f16_bundle_that_loads_with_the_same_config() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("copy");
    let b = export_and_load(&[default_model()], &out_dir, true);
    let a = captioner_decode::bundle::load(default_model()).unwrap();
    assert_eq!(a.config, b.config);
    assert_eq!(a.decoder.params().values(), b.decoder.params().values());
    assert_eq!(a.vocab.words(), b.vocab.words());
}

#[test]
fn export_averages_several_models_and_refuses_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("avg");
    let b = export_and_load(&[default_model(), default_model()], &out_dir, false);
    let a = captioner_decode::bundle::load(default_model()).unwrap();
    assert_eq!(a.decoder.params().values(), b.decoder.params().values());
    assert_eq!(b.config.training["averaged"].as_array().unwrap().len(), 2);

    let missing = dir.path().join("no-such-run/epoch-3");
    let out = export(
        &[default_model(), &missing],
        &dir.path().join("avg2"),
        false,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-run/epoch-3"), "{stderr}");
    assert!(!dir.path().join("avg2").exists());
}
