//! Self-critical fine-tuning (`[scst]`) end to end on a tiny dataset: a short ordinary run makes
//! the model to start from, then SCST runs a few steps, writes `best/` and `last/`, logs finite
//! rewards and losses, changes the weights, and resumes bit-identically after a kill.

use captioner_encode::cache::{CacheMeta, CacheWriter};
use captioner_encode::NormalizationKind;
use captioner_train::{train, Baseline, NullObserver, Preset, RunOptions};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

const WORDS: [&str; 8] = ["dog", "cat", "runs", "sits", "on", "grass", "the", "red"];

/// A folder dataset of 24 captioned images (16 train, 8 val) and a cache of random features.
fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut csv = String::from("image,caption,split\n");
    for i in 0..24 {
        let split = if i < 16 { "train" } else { "val" };
        std::fs::write(data.join(format!("img{i}.jpg")), b"").unwrap();
        for _ in 0..2 {
            let n = rng.random_range(3..7);
            let caption: Vec<&str> = (0..n)
                .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                .collect();
            csv.push_str(&format!("img{i}.jpg,{},{split}\n", caption.join(" ")));
        }
    }
    std::fs::write(data.join("captions.csv"), csv).unwrap();
    let cache = dir.join("cache");
    let meta = CacheMeta {
        encoder: "test".into(),
        feature_dim: 6,
        spatial_cells: Some(4),
        resize: "squash".into(),
        normalization: NormalizationKind::Inception,
    };
    let mut w = CacheWriter::open(&cache, meta, 10).unwrap();
    for i in 0..24 {
        let pooled: Vec<f32> = (0..6).map(|_| rng.random_range(-1.0..1.0)).collect();
        let spatial: Vec<f32> = (0..24).map(|_| rng.random_range(-1.0..1.0)).collect();
        w.push(&format!("img{i}.jpg"), &pooled, Some(&spatial))
            .unwrap();
    }
    w.finish().unwrap();
    (data, cache)
}

const MODEL: &str =
    "kind = \"sat\"\nembed = 8\nhidden = 10\nattention = 6\ndropout = 0.5\nalpha_c = 1.0";

fn preset(data: &Path, cache: &Path, scst: &str, epochs: u32, lr: f32) -> Preset {
    let text = format!(
        r#"
[data]
dataset = "folder:{}"
features = "{}"
vocab_min_count = 1

[model]
{MODEL}

{scst}

[train]
epochs = {epochs}
batch_size = 4
lr = {lr}
checkpoint_every = 3
early_stopping = 0
seed = 7
"#,
        data.display(),
        cache.display()
    );
    Preset::from_toml(&text, Path::new("test.toml")).unwrap()
}

fn records(run: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == kind)
        .collect()
}

/// Trains the model to fine-tune from, `epochs` of ordinary training in `dir/base`; returns its
/// `best` bundle.
fn train_base(dir: &Path, data: &Path, cache: &Path, epochs: u32) -> PathBuf {
    let base = dir.join("base");
    train(
        &preset(data, cache, "", epochs, 0.01),
        &RunOptions {
            run_dir: base.clone(),
            ..RunOptions::default()
        },
        &mut NullObserver,
    )
    .unwrap();
    base.join("best")
}

#[test]
fn scst_fine_tunes_logs_rewards_and_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, cache) = fixture(tmp.path());
    let init = train_base(tmp.path(), &data, &cache, 2);
    let scst = format!(
        "[scst]\ninit = \"{}\"\nsamples = 3\nbaseline = \"greedy\"\nmax_words = 6\ntemperature = 1.0",
        init.display()
    );
    let p = preset(&data, &cache, &scst, 2, 1e-2);
    assert_eq!(p.scst.as_ref().unwrap().baseline, Baseline::Greedy);

    let straight = tmp.path().join("straight");
    let out = train(
        &p,
        &RunOptions {
            run_dir: straight.clone(),
            ..RunOptions::default()
        },
        &mut NullObserver,
    )
    .unwrap();
    // 16 training images, 4 per step: 4 steps per epoch, whatever the captions per image.
    assert_eq!(out.state.global_step, 8);
    assert!(out.state.finished);
    for f in [
        "best/model.safetensors",
        "last/model.safetensors",
        "last/optimizer.safetensors",
    ] {
        assert!(straight.join(f).is_file(), "{f} missing");
    }
    // Every SCST step is logged with its mean reward; all finite, and some reward is positive.
    let steps = records(&straight, "step");
    assert_eq!(steps.len(), 8);
    let mut any_positive = false;
    for s in &steps {
        let (loss, reward, baseline, greedy) = (
            s["loss"].as_f64().unwrap(),
            s["reward"].as_f64().unwrap(),
            s["baseline"].as_f64().unwrap(),
            s["greedy_reward"].as_f64().unwrap(),
        );
        assert!(loss.is_finite() && reward.is_finite() && baseline.is_finite());
        assert!(reward >= 0.0 && greedy >= 0.0);
        assert!(
            (baseline - greedy).abs() < 1e-9,
            "the greedy baseline is the greedy reward: {baseline} vs {greedy}"
        );
        any_positive |= reward > 0.0;
    }
    assert!(any_positive, "no sample earned any reward: {steps:?}");
    // The starting model is validated first, as epoch 0: the same dev CIDEr-D its own training
    // recorded, and `best` until an SCST epoch beats it.
    let epochs = records(&straight, "epoch");
    assert_eq!(epochs.len(), 3);
    let init_config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(init.join("config.json")).unwrap()).unwrap();
    assert_eq!(epochs[0]["epoch"].as_u64(), Some(0));
    assert_eq!(epochs[0]["is_best"].as_bool(), Some(true));
    let (cider0, cider_init) = (
        epochs[0]["cider_d"].as_f64().unwrap(),
        init_config["training"]["val_cider_d"].as_f64().unwrap(),
    );
    assert!(
        (cider0 - cider_init).abs() < 1e-9,
        "{cider0} vs {cider_init}"
    );
    assert!(epochs[1..]
        .iter()
        .all(|e| e["train_reward"].as_f64().is_some_and(f64::is_finite)));
    let best_cider = epochs
        .iter()
        .filter_map(|e| e["cider_d"].as_f64())
        .fold(f64::MIN, f64::max);
    assert_eq!(out.state.best_cider, Some(best_cider));
    // The fine-tune moved the weights away from the initial model, and kept its vocabulary.
    let w0 = std::fs::read(init.join("model.safetensors")).unwrap();
    let w1 = std::fs::read(straight.join("last/model.safetensors")).unwrap();
    assert!(w0 != w1, "SCST did not change the weights");
    assert_eq!(
        std::fs::read(init.join("tokenizer.json")).unwrap(),
        std::fs::read(straight.join("last/tokenizer.json")).unwrap()
    );

    // Killed after step 5 (checkpoint at step 4), resumed: the same weights and optimiser state.
    let killed = tmp.path().join("killed");
    let opts = RunOptions {
        run_dir: killed.clone(),
        kill_after_steps: Some(5),
        ..RunOptions::default()
    };
    assert!(train(&p, &opts, &mut NullObserver).unwrap().killed);
    let out = train(
        &p,
        &RunOptions {
            run_dir: killed.clone(),
            resume: true,
            ..RunOptions::default()
        },
        &mut NullObserver,
    )
    .unwrap();
    assert_eq!(out.state.global_step, 8);
    for f in ["last/model.safetensors", "last/optimizer.safetensors"] {
        assert!(
            std::fs::read(straight.join(f)).unwrap() == std::fs::read(killed.join(f)).unwrap(),
            "{f} differs after resume"
        );
    }
}

#[test]
fn scst_with_the_mean_baseline_runs_and_a_wrong_init_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, cache) = fixture(tmp.path());
    let best = train_base(tmp.path(), &data, &cache, 1);
    let scst = format!(
        "[scst]\ninit = \"{}\"\nsamples = 4\nbaseline = \"mean\"\nmax_words = 5\ntemperature = 0.8",
        best.display()
    );
    let run = tmp.path().join("mean");
    let out = train(
        &preset(&data, &cache, &scst, 1, 1e-2),
        &RunOptions {
            run_dir: run.clone(),
            ..RunOptions::default()
        },
        &mut NullObserver,
    )
    .unwrap();
    assert_eq!(out.state.global_step, 4);
    for s in records(&run, "step") {
        let (loss, reward, baseline) = (
            s["loss"].as_f64().unwrap(),
            s["reward"].as_f64().unwrap(),
            s["baseline"].as_f64().unwrap(),
        );
        assert!(loss.is_finite());
        // The mean of the others' rewards averages back to the mean reward.
        assert!((reward - baseline).abs() < 1e-9, "{reward} vs {baseline}");
        assert!(s.get("greedy_reward").is_none());
    }
    // An init directory that is not a model bundle names itself.
    let refusal = |scst: &str, run: &str| {
        train(
            &preset(&data, &cache, scst, 1, 1e-2),
            &RunOptions {
                run_dir: tmp.path().join(run),
                ..RunOptions::default()
            },
            &mut NullObserver,
        )
        .unwrap_err()
        .to_string()
    };
    let err = refusal("[scst]\ninit = \"no/such/model\"", "bad");
    assert!(err.contains("no/such/model"), "{err}");

    // A model trained on features of other input statistics (here a bundle from before they were
    // recorded, which reads as ImageNet's) cannot be fine-tuned on these.
    let old = tmp.path().join("old-bundle");
    std::fs::create_dir(&old).unwrap();
    for file in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(best.join(file), old.join(file)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(best.join("config.json")).unwrap()).unwrap();
    config["encoder"]
        .as_object_mut()
        .unwrap()
        .remove("normalization");
    std::fs::write(old.join("config.json"), config.to_string()).unwrap();
    let err = refusal(&format!("[scst]\ninit = \"{}\"", old.display()), "mismatch");
    assert!(
        err.contains("imagenet input normalization") && err.contains("inception normalization"),
        "{err}"
    );
}

#[test]
fn a_cross_entropy_term_holds_the_fine_tune_near_the_references() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, cache) = fixture(tmp.path());
    let best = train_base(tmp.path(), &data, &cache, 2);
    // Validation loss is the references' cross-entropy: the policy gradient alone drifts away
    // from it, the mixed objective much less.
    let val_loss_after = |extra: &str, name: &str| {
        let scst = format!(
            "[scst]\ninit = \"{}\"\nsamples = 4\nbaseline = \"mean\"\nmax_words = 6\n\
             temperature = 1.0\n{extra}",
            best.display()
        );
        let run = tmp.path().join(name);
        train(
            &preset(&data, &cache, &scst, 3, 3e-2),
            &RunOptions {
                run_dir: run.clone(),
                ..RunOptions::default()
            },
            &mut NullObserver,
        )
        .unwrap();
        let epochs = records(&run, "epoch");
        epochs.last().unwrap()["val_loss"].as_f64().unwrap()
    };
    let plain = val_loss_after("", "plain");
    let mixed = val_loss_after("xe_weight = 1.0", "mixed");
    assert!(
        mixed < plain,
        "mixed {mixed} vs policy gradient alone {plain}"
    );
}
