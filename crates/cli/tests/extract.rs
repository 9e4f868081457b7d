//! `captioner extract` end to end: a folder with good and broken images, resume, a dataset spec.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use captioner_encode::cache::FeatureCache;

mod common;
use common::shared_data;

fn weights() -> PathBuf {
    shared_data().join("models/efficientnet-lite0/efficientnet-lite0.safetensors")
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_captioner"))
        .args(args)
        .output()
        .expect("run captioner")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const GOOD: [&str; 3] = [
    "1000268201_693b08cb0e.jpg",
    "1001773457_577c3a7d70.jpg",
    "1002674143_1b742ab4b8.jpg",
];

fn folder_with_broken_images(dir: &Path) {
    for name in GOOD {
        std::fs::copy(
            shared_data().join("flickr8k/images").join(name),
            dir.join(name),
        )
        .expect("copy image");
    }
    std::fs::write(
        dir.join("zz_broken.jpg"),
        b"\xff\xd8\xff\xe0 not really a jpeg",
    )
    .expect("w");
    std::fs::write(dir.join("zz_empty.png"), b"").expect("w");
    std::fs::write(dir.join("notes.txt"), b"not an image, not picked up").expect("w");
}

#[test]
fn folder_extract_skips_broken_files_and_resumes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let images = tmp.path().join("images");
    std::fs::create_dir(&images).expect("mkdir");
    folder_with_broken_images(&images);
    let out_dir = tmp.path().join("features");
    let weights = weights();
    let args = [
        "extract".as_ref(),
        "--images".as_ref(),
        images.as_os_str(),
        "--out".as_ref(),
        out_dir.as_os_str(),
        "--spatial".as_ref(),
        "--weights".as_ref(),
        weights.as_os_str(),
        "--batch-size".as_ref(),
        "2".as_ref(),
        "--shard-size".as_ref(),
        "2".as_ref(),
    ];
    let out = run(&args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("encoded 3 images"), "{stdout}");
    assert!(stdout.contains("2 failed"), "{stdout}");
    assert!(
        stderr.contains("zz_broken.jpg") && stderr.contains("zz_empty.png"),
        "{stderr}"
    );

    let cache = FeatureCache::open(&out_dir).expect("open cache");
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.index().shards.len(), 2);
    assert_eq!(cache.meta().spatial_cells, Some(49));
    let failed: Vec<&str> = cache
        .index()
        .failures
        .iter()
        .map(|f| f.id.as_str())
        .collect();
    assert_eq!(failed, ["zz_broken.jpg", "zz_empty.png"]);
    let pooled = cache.pooled(GOOD[1]).expect("pooled");
    let spatial = cache.spatial(GOOD[1]).expect("spatial");
    assert_eq!((pooled.len(), spatial.len()), (1280, 49 * 1280));
    // The pooled vector is the mean of the 49 cells (up to f16 rounding).
    let mean0: f32 = (0..49).map(|c| spatial[c * 1280]).sum::<f32>() / 49.0;
    assert!((mean0 - pooled[0]).abs() < 1e-2 * (1.0 + pooled[0].abs()));
    drop(cache);

    // A second run has nothing left to do but retry the broken files.
    let out = run(&args);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("encoded 0 images, skipped 3 already cached, 2 failed"),
        "{stdout}"
    );

    // `inspect --cache` summarises it.
    let out = run(&["inspect".as_ref(), "--cache".as_ref(), out_dir.as_os_str()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("images:   3 in 2 shards"), "{stdout}");
    assert!(stdout.contains("zz_broken.jpg"), "{stdout}");
}

#[test]
fn dataset_spec_extract_matches_folder_ids() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out_dir = tmp.path().join("features");
    let spec = format!("flickr8k:{}", shared_data().join("flickr8k").display());
    let out = run(&[
        "-q".as_ref(),
        "extract".as_ref(),
        "--dataset".as_ref(),
        spec.as_ref(),
        "--split".as_ref(),
        "test".as_ref(),
        "--limit".as_ref(),
        "3".as_ref(),
        "--out".as_ref(),
        out_dir.as_os_str(),
        "--weights".as_ref(),
        weights().as_os_str(),
        "--crop".as_ref(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cache = FeatureCache::open(&out_dir).expect("open cache");
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.meta().spatial_cells, None);
    assert_eq!(cache.meta().resize, "center-crop");
    assert!(cache.ids().all(|id| id.ends_with(".jpg")));

    // Same directory, different settings: refused with a clear message.
    let out = run(&[
        "extract".as_ref(),
        "--dataset".as_ref(),
        spec.as_ref(),
        "--limit".as_ref(),
        "1".as_ref(),
        "--out".as_ref(),
        out_dir.as_os_str(),
        "--weights".as_ref(),
        weights().as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("another --out"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn missing_image_folder_is_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("no-such-folder");
    let out = run(&[
        "extract".as_ref(),
        "--images".as_ref(),
        missing.as_os_str(),
        "--out".as_ref(),
        tmp.path().join("f").as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no-such-folder"),
        "{}",
        text(&out.stderr)
    );
}
