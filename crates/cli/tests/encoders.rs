//! `--encoder` on the command line: every kind is listed and accepted, VGG16's grid is refused
//! before any work, missing weights say how to get them, `caption` runs the bundle's encoder,
//! and `extract --encoder resnet50` fills a cache with random-weight ResNet-50 features.

use std::path::Path;
use std::process::{Command, Output};

use captioner_encode::cache::FeatureCache;
use captioner_encode::fast::{FastResNet50, TensorMap};
use captioner_encode::EncoderKind;

mod common;
use common::{default_model, shared_data};

const IMAGES: [&str; 2] = ["1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg"];

fn captioner(args: &[&str], weights_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_captioner"))
        .args(args)
        // An empty weights folder and no shared data: nothing is found by accident.
        .env("CAPTIONER_WEIGHTS_DIR", weights_dir)
        .env("CAPTIONER_SHARED_DATA", weights_dir)
        .env_remove("CAPTIONER_MODEL")
        .current_dir(weights_dir)
        .output()
        .expect("run captioner")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn image(name: &str) -> String {
    shared_data()
        .join("flickr8k/images")
        .join(name)
        .display()
        .to_string()
}

/// Writes `tensors` as an F32 safetensors file (the format is a JSON header and raw data).
fn write_safetensors(path: &Path, tensors: &TensorMap) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    let mut sorted: Vec<_> = tensors.0.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (name, (shape, values)) in sorted {
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let header = serde_json::to_vec(&header).expect("header");
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header);
    bytes.extend(data);
    std::fs::write(path, bytes).expect("write weights");
}

#[test]
fn help_lists_every_encoder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for command in ["extract", "inspect"] {
        let out = captioner(&[command, "--help"], tmp.path());
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        for &kind in EncoderKind::ALL {
            assert!(
                stdout.contains(kind.name()),
                "{command} --help lacks {kind}:\n{stdout}"
            );
        }
    }
    let out = captioner(
        &[
            "extract",
            "--encoder",
            "resnet-101",
            "--images",
            ".",
            "--out",
            "x",
        ],
        tmp.path(),
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("resnet-101") && stderr.contains("inception-v3"),
        "{stderr}"
    );
}

#[test]
fn vgg16_spatial_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let images = shared_data().join("flickr8k/images");
    let out_dir = tmp.path().join("features");
    let args = [
        "extract",
        "--encoder",
        "vgg16",
        "--spatial",
        "--limit",
        "1",
        "--images",
        images.to_str().expect("utf-8 path"),
        "--out",
        out_dir.to_str().expect("utf-8 path"),
    ];
    let out = captioner(&args, tmp.path());
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("vgg16") && stderr.contains("7x7x512") && stderr.contains("no --spatial"),
        "{stderr}"
    );
    assert!(!out_dir.exists(), "no cache may be created");
}

#[test]
fn missing_weights_name_the_torchvision_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (kind, file) in [
        ("resnet50", "resnet50-0676ba61.pth"),
        ("densenet201", "densenet201-c1103571.pth"),
        ("inception-v3", "inception_v3_google-0cc3c7bd.pth"),
    ] {
        let img = image(IMAGES[0]);
        let out = captioner(
            &["inspect", "--encoder", kind, "--classify", &img],
            tmp.path(),
        );
        let stderr = text(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(&format!("no {kind} weights found")),
            "{stderr}"
        );
        assert!(
            stderr.contains(file) && stderr.contains("Encoder weights"),
            "{stderr}"
        );
    }
}

#[test]
fn caption_runs_the_bundles_encoder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bundle = tmp.path().join("bundle");
    std::fs::create_dir(&bundle).expect("mkdir");
    let default = default_model();
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(default.join(file), bundle.join(file)).expect("copy bundle");
    }
    let config = bundle.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).expect("read")).expect("json");
    json["encoder"]["name"] = "densenet201".into();
    std::fs::write(&config, json.to_string()).expect("write");
    let img = image(IMAGES[0]);
    let args = ["caption", "--model", bundle.to_str().expect("utf-8"), &img];
    let out = captioner(&args, tmp.path());
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    // It looked for DenseNet weights, not the Lite0 ones the default bundle uses.
    assert!(stderr.contains("no densenet201 weights found"), "{stderr}");
}

#[test]
fn extract_resnet50_fills_a_2048_d_cache() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let weights = tmp.path().join("resnet50.safetensors");
    write_safetensors(&weights, &FastResNet50::random_weights(7, 1000));
    let images = tmp.path().join("images");
    std::fs::create_dir(&images).expect("mkdir");
    for name in IMAGES {
        std::fs::copy(image(name), images.join(name)).expect("copy image");
    }
    let out_dir = tmp.path().join("features");
    let args = [
        "extract",
        "--encoder",
        "resnet50",
        "--spatial",
        "--images",
        images.to_str().expect("utf-8"),
        "--out",
        out_dir.to_str().expect("utf-8"),
    ];
    // Found as $CAPTIONER_WEIGHTS_DIR/resnet50.safetensors.
    let out = captioner(&args, tmp.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("encoded 2 images"));
    let cache = FeatureCache::open(&out_dir).expect("open cache");
    assert_eq!(cache.meta().encoder, "resnet50");
    assert_eq!(cache.meta().feature_dim, 2048);
    assert_eq!(cache.meta().spatial_cells, Some(49));
    let pooled = cache.pooled(IMAGES[1]).expect("pooled");
    let spatial = cache.spatial(IMAGES[1]).expect("spatial");
    assert_eq!((pooled.len(), spatial.len()), (2048, 49 * 2048));
    assert!(pooled.iter().all(|x| x.is_finite()));
}
