//! `captioner train` killed with SIGKILL in the middle of an epoch, then run again with
//! `--resume`, ends with the same bytes (weights and optimiser state) as a run never interrupted.
//!
//! Unlike `crates/train/tests/resume.rs`, which stops the loop at a chosen step, this kills the real
//! process at whatever moment it happens to be in, a checkpoint write included.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use captioner_encode::cache::{CacheMeta, CacheWriter};
use captioner_encode::NormalizationKind;

const SUBJECTS: [&str; 4] = ["a dog", "a black cat", "two children", "a man in red"];
const ACTIONS: [&str; 4] = ["runs on", "sits in", "jumps over", "plays near"];
const PLACES: [&str; 4] = ["the grass", "the water", "a wall", "the beach"];

/// A folder dataset of 48 images (40 train, 8 val), three captions each, and a feature cache of
/// deterministic pseudo-random 7x7x16 grids.
fn fixture(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut csv = String::from("image,caption,split\n");
    let meta = CacheMeta {
        encoder: "test".into(),
        feature_dim: 16,
        spatial_cells: Some(49),
        resize: "squash".into(),
        normalization: NormalizationKind::Inception,
    };
    let mut cache = CacheWriter::open(&dir.join("cache"), meta, 16).unwrap();
    let mut seed = 0x9e37_79b9_u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed as f32 / u32::MAX as f32 - 0.5
    };
    for i in 0..48 {
        let name = format!("img{i:02}.jpg");
        // Only the features are read, but the reader skips captions of missing image files.
        std::fs::write(data.join(&name), b"").unwrap();
        let split = if i < 40 { "train" } else { "val" };
        for k in 0..3 {
            let caption = format!(
                "{} {} {}",
                SUBJECTS[i % 4],
                ACTIONS[(i / 4 + k) % 4],
                PLACES[(i + k) % 4]
            );
            csv.push_str(&format!("{name},{caption},{split}\n"));
        }
        let pooled: Vec<f32> = (0..16).map(|_| next()).collect();
        let spatial: Vec<f32> = (0..49 * 16).map(|_| next()).collect();
        cache.push(&name, &pooled, Some(&spatial)).unwrap();
    }
    cache.finish().unwrap();
    std::fs::write(data.join("captions.csv"), csv).unwrap();
    let preset = dir.join("preset.toml");
    std::fs::write(
        &preset,
        format!(
            r#"
[data]
dataset = "folder:{}"
features = "{}"
vocab_min_count = 1

[model]
kind = "sat"
embed = 32
hidden = 64
attention = 32
dropout = 0.3
alpha_c = 1.0

[train]
epochs = 4
batch_size = 8
lr = 0.005
checkpoint_every = 2
early_stopping = 0
seed = 11
"#,
            data.display(),
            dir.join("cache").display()
        ),
    )
    .unwrap();
    preset
}

fn train_command(preset: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_captioner"));
    cmd.args(["-q", "train", "--preset"])
        .arg(preset)
        .arg("--out")
        .arg(out);
    cmd
}

fn check(out: Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `global_step` and `finished` of the run's last checkpoint, if one is there and readable.
fn last_checkpoint(run: &Path) -> Option<(u64, bool)> {
    let text = std::fs::read_to_string(run.join("last/trainer.json")).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some((state["global_step"].as_u64()?, state["finished"].as_bool()?))
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_run_killed_mid_epoch_resumes_to_bit_identical_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let preset = fixture(tmp.path());

    let straight = tmp.path().join("straight");
    check(
        train_command(&preset, &straight).output().unwrap(),
        "the uninterrupted run",
    );
    // 120 training captions / 8 = 15 steps an epoch, 4 epochs.
    assert_eq!(last_checkpoint(&straight), Some((60, true)));

    let killed = tmp.path().join("killed");
    let mut child = train_command(&preset, &killed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once a checkpoint past the first epoch's middle exists: step 8 of 15 or later.
    let deadline = Instant::now() + Duration::from_secs(600);
    let killed_at = loop {
        if let Some((step, finished)) = last_checkpoint(&killed) {
            assert!(
                !finished,
                "the run finished before it could be killed; make the fixture larger"
            );
            if step >= 8 {
                child.kill().unwrap(); // SIGKILL on Unix: no chance to clean up.
                child.wait().unwrap();
                break step;
            }
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended on its own"
        );
        assert!(Instant::now() < deadline, "no checkpoint within 10 minutes");
        std::thread::sleep(Duration::from_millis(2));
    };
    let (step, finished) = last_checkpoint(&killed).expect("a readable checkpoint after the kill");
    assert!(!finished && step >= killed_at && step < 60, "{step}");
    eprintln!("killed with the last checkpoint at step {killed_at} of 60");

    let out = train_command(&preset, &killed).output().unwrap();
    assert!(
        !out.status.success(),
        "a run folder that holds a run must not be overwritten without --resume"
    );
    check(
        train_command(&preset, &killed)
            .arg("--resume")
            .output()
            .unwrap(),
        "the resumed run",
    );
    assert_eq!(last_checkpoint(&killed), Some((60, true)));
    for file in ["last/model.safetensors", "last/optimizer.safetensors"] {
        assert!(
            read(straight.join(file)) == read(killed.join(file)),
            "{file} differs after resuming a run killed at step {killed_at}"
        );
    }
}
