//! A run killed mid-epoch and resumed from its last checkpoint ends with bit-identical weights and
//! optimiser state to a run that was never interrupted, for each decoder architecture.

use captioner_encode::cache::{CacheMeta, CacheWriter};
use captioner_encode::NormalizationKind;
use captioner_train::{train, NullObserver, Preset, RunOptions, ScheduledSampling};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

/// A small `sat` decoder, the model of most tests here.
const SMALL_SAT: &str =
    "kind = \"sat\"\nembed = 8\nhidden = 10\nattention = 6\ndropout = 0.5\nalpha_c = 1.0";

const WORDS: [&str; 8] = ["dog", "cat", "runs", "sits", "on", "grass", "the", "red"];

/// A folder dataset of 24 captioned images (16 train, 8 val) and a cache of random features.
fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut csv = String::from("image,caption,split\n");
    for i in 0..24 {
        let split = if i < 16 { "train" } else { "val" };
        // Only the features are read, but the reader skips captions of missing image files.
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
    write_random_cache(&cache, &mut rng, 6, "squash");
    (data, cache)
}

/// A cache of random `dim`-channel features (2x2 grid) for the fixture's 24 images.
fn write_random_cache(cache: &Path, rng: &mut impl Rng, dim: usize, resize: &str) {
    let meta = CacheMeta {
        encoder: "test".into(),
        feature_dim: dim,
        spatial_cells: Some(4),
        resize: resize.into(),
        normalization: NormalizationKind::Inception,
    };
    let mut w = CacheWriter::open(cache, meta, 10).unwrap();
    for i in 0..24 {
        let pooled: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let spatial: Vec<f32> = (0..4 * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        w.push(&format!("img{i}.jpg"), &pooled, Some(&spatial))
            .unwrap();
    }
    w.finish().unwrap();
}

fn preset(model: &str, data: &Path, cache: &Path) -> Preset {
    let text = format!(
        r#"
[data]
dataset = "folder:{}"
features = "{}"
vocab_min_count = 1

[model]
{model}

[train]
epochs = 3
batch_size = 8
lr = 0.01
checkpoint_every = 3
early_stopping = 0
seed = 7
"#,
        data.display(),
        cache.display()
    );
    Preset::from_toml(&text, Path::new("test.toml")).unwrap()
}

fn files(run: &Path) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(run.join("last/model.safetensors")).unwrap(),
        std::fs::read(run.join("last/optimizer.safetensors")).unwrap(),
    )
}

fn check_resume_is_bit_identical(model: &str) {
    check_resume_is_bit_identical_with(model, |_| {});
}

/// Trains straight and killed-then-resumed with the test preset as `adjust` leaves it; returns
/// the straight run's final weights.
fn check_resume_is_bit_identical_with(model: &str, adjust: impl Fn(&mut Preset)) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let (data, cache) = fixture(tmp.path());
    let mut p = preset(model, &data, &cache);
    adjust(&mut p);

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
    // 32 training captions / 8 = 4 steps per epoch.
    assert_eq!(out.state.global_step, 12);
    assert!(out.state.finished);
    assert!(straight.join("best/model.safetensors").is_file());
    assert!(straight.join("loss.png").is_file());

    // Checkpoints at steps 3 (mid-epoch 1), 4 (end of epoch 1) and 6 (mid-epoch 2); killed
    // after step 7, the resumed run redoes step 7 from the middle of epoch 2.
    let killed = tmp.path().join("killed");
    let opts = RunOptions {
        run_dir: killed.clone(),
        kill_after_steps: Some(7),
        ..RunOptions::default()
    };
    let out = train(&p, &opts, &mut NullObserver).unwrap();
    assert!(out.killed);
    let again = train(&p, &opts, &mut NullObserver);
    assert!(
        again.is_err(),
        "a second fresh run into the same directory must refuse"
    );
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
    assert_eq!(out.state.global_step, 12);
    let (w1, o1) = files(&straight);
    let (w2, o2) = files(&killed);
    assert!(w1 == w2, "{model}: weights differ after resume");
    assert!(o1 == o2, "{model}: optimizer state differs after resume");

    // The resumed log has each step once.
    let log = std::fs::read_to_string(killed.join("log.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "epoch")
        .map(|v| v["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3]);
    w1
}

#[test]
fn gru_init_resume_is_bit_identical() {
    check_resume_is_bit_identical(
        "kind = \"gru-init\"\nembed = 8\nhidden = 12\nlayers = 2\ndropout = 0.2",
    );
}

#[test]
fn merge_lstm_resume_is_bit_identical() {
    check_resume_is_bit_identical(
        "kind = \"merge-lstm\"\nembed = 8\nhidden = 8\nproj = 6\ndropout = 0.5",
    );
}

#[test]
fn sat_resume_is_bit_identical() {
    check_resume_is_bit_identical(SMALL_SAT);
}

#[test]
fn scheduled_sampling_trains_on_other_inputs_and_resumes_bit_identically() {
    // Sampling starts after epoch 1, so the kill at step 7 lands in a sampling epoch.
    let sampled = check_resume_is_bit_identical_with(SMALL_SAT, |p| {
        p.train.scheduled_sampling = Some(ScheduledSampling {
            max_prob: 0.5,
            warmup_epochs: 1,
        })
    });
    let forced = check_resume_is_bit_identical_with(SMALL_SAT, |_| {});
    assert!(sampled != forced, "scheduled sampling changed nothing");
}

#[test]
fn length_sorted_batches_train_on_other_batches_and_resume_bit_identically() {
    // 32 captions in batches of 8: a window of 2 batches sorts each half of the epoch.
    let sorted = check_resume_is_bit_identical_with(SMALL_SAT, |p| p.train.length_sort_window = 2);
    let random = check_resume_is_bit_identical_with(SMALL_SAT, |_| {});
    assert!(sorted != random, "length_sort_window changed nothing");
}

/// A second feature cache of the fixture's 24 images (as `captioner extract --flip` makes), with
/// other random features and `dim` channels.
fn other_view(dir: &Path, dim: usize) -> PathBuf {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let cache = dir.join(format!("view-{dim}"));
    write_random_cache(
        &cache,
        &mut rng,
        dim,
        &format!("squash{}", CacheMeta::MIRRORED),
    );
    cache
}

#[test]
fn augmented_features_train_on_both_views_and_resume_bit_identically() {
    let views = tempfile::tempdir().unwrap();
    let flipped = other_view(views.path(), 6);
    let augmented = check_resume_is_bit_identical_with(SMALL_SAT, |p| {
        p.data.augment_features = vec![flipped.display().to_string()];
    });
    let plain = check_resume_is_bit_identical_with(SMALL_SAT, |_| {});
    assert!(augmented != plain, "the second view changed nothing");

    // A view identical to the main cache must train exactly like no view at all: the view only
    // chooses where a row's features come from.
    let same = check_resume_is_bit_identical_with(SMALL_SAT, |p| {
        p.data.augment_features = vec![p.data.features.clone()];
    });
    assert!(
        same == plain,
        "reading the same features through a view changed training"
    );
}

/// The error of a run of `p` (into `dir/run`) that must be refused for the reason `why`.
fn refusal(p: &Preset, dir: &Path, why: &str) -> String {
    let run = RunOptions {
        run_dir: dir.join("run"),
        ..RunOptions::default()
    };
    train(p, &run, &mut NullObserver)
        .expect_err(why)
        .to_string()
}

#[test]
fn an_augmented_view_of_other_features_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, cache) = fixture(tmp.path());
    let wrong = other_view(tmp.path(), 5);
    let mut p = preset(SMALL_SAT, &data, &cache);
    p.data.augment_features = vec![wrong.display().to_string()];
    let err = refusal(&p, tmp.path(), "5 channels against 6 must be refused");
    assert!(
        err.contains("augment_features") && err.contains(&wrong.display().to_string()),
        "{err}"
    );
}

/// A view extracted with other input statistics (here an index from before they were recorded,
/// which reads as ImageNet's) would mix two kinds of features.
#[test]
fn an_augmented_view_of_other_input_statistics_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, cache) = fixture(tmp.path());
    let old = other_view(tmp.path(), 6);
    let index = old.join("index.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("normalization");
    std::fs::write(&index, json.to_string()).unwrap();
    let mut p = preset(SMALL_SAT, &data, &cache);
    p.data.augment_features = vec![old.display().to_string()];
    let err = refusal(&p, tmp.path(), "imagenet against inception must be refused");
    assert!(
        err.contains("augment_features") && err.contains("imagenet normalization"),
        "{err}"
    );
}

#[test]
fn a_mirrored_cache_as_the_main_features_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = fixture(tmp.path());
    let flipped = other_view(tmp.path(), 6);
    let p = preset(SMALL_SAT, &data, &flipped);
    let err = refusal(
        &p,
        tmp.path(),
        "captioning would not mirror the images this model trained on",
    );
    assert!(
        err.contains("augment_features") && err.contains("mirrored"),
        "{err}"
    );
}

#[test]
fn transformer_resume_is_bit_identical() {
    check_resume_is_bit_identical(
        "kind = \"transformer\"\nd_model = 8\nheads = 2\nlayers = 2\nff = 16\ndropout = 0.1\nmax_len = 40",
    );
}

#[test]
fn a_diverging_run_stops_naming_the_step_and_keeps_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, cache) = fixture(tmp.path());
    let mut p = preset(
        "kind = \"gru-init\"\nembed = 8\nhidden = 12\nlayers = 2",
        &data,
        &cache,
    );
    // One clean epoch (4 steps), then a learning rate of 1e30: the step-5 update blows the
    // weights up, the step-6 checkpoint still holds finite numbers, step 7's loss is NaN.
    let run = tmp.path().join("run");
    let opts = RunOptions {
        run_dir: run.clone(),
        ..RunOptions::default()
    };
    p.train.epochs = 1;
    train(&p, &opts, &mut NullObserver).unwrap();
    p.train.epochs = 3;
    p.train.lr = 1e30;
    p.train.grad_clip = 0.0;
    let err = train(
        &p,
        &RunOptions {
            resume: true,
            ..opts
        },
        &mut NullObserver,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("NaN at step 7 (epoch 2)") && err.contains("last"),
        "{err}"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("last/trainer.json")).unwrap())
            .unwrap();
    assert_eq!(
        state["global_step"], 6,
        "the checkpoint before the failing step is kept"
    );
    assert!(captioner_decode::bundle::load(&run.join("last")).is_ok());
}

#[test]
fn keep_epochs_leaves_each_epochs_weights_also_across_a_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, cache) = fixture(tmp.path());
    let mut p = preset(
        "kind = \"gru-init\"\nembed = 8\nhidden = 12\nlayers = 2\ndropout = 0.2",
        &data,
        &cache,
    );
    p.train.keep_epochs = true;
    let run = tmp.path().join("run");
    let opts = RunOptions {
        run_dir: run.clone(),
        kill_after_steps: Some(7),
        ..RunOptions::default()
    };
    assert!(train(&p, &opts, &mut NullObserver).unwrap().killed);
    assert!(captioner_train::epoch_dir(&run, 1).is_dir());
    assert!(!captioner_train::epoch_dir(&run, 2).exists());
    let resume = RunOptions {
        run_dir: run.clone(),
        resume: true,
        ..RunOptions::default()
    };
    train(&p, &resume, &mut NullObserver).unwrap();
    let weights = |dir: PathBuf| std::fs::read(dir.join("model.safetensors")).unwrap();
    let epochs: Vec<Vec<u8>> = (1..=3)
        .map(|e| weights(captioner_train::epoch_dir(&run, e)))
        .collect();
    assert!(epochs[0] != epochs[1] && epochs[1] != epochs[2]);
    assert!(epochs[2] == weights(run.join("last")));
    let avg = captioner_decode::bundle::load_average(&[
        captioner_train::epoch_dir(&run, 2),
        captioner_train::epoch_dir(&run, 3),
    ])
    .unwrap();
    assert_eq!(avg.config.dims.vocab, avg.vocab.len());
}
