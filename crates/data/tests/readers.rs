//! Every reader on the real shared files (and hand-made fixtures where no real file exists).

mod common;

use std::path::Path;
use std::time::Instant;

use captioner_data::{
    captions_csv, coco, flickr8k, karpathy, DatasetSpec, ImageId, LoadReport, Split,
};

fn flickr8k_dir() -> std::path::PathBuf {
    common::shared_data().join("flickr8k")
}

#[test]
fn flickr8k_counts_splits_and_the_missing_image() {
    let spec: DatasetSpec = format!("flickr8k:{}", flickr8k_dir().display())
        .parse()
        .unwrap();
    let (ds, report) = spec.load().unwrap();
    assert_eq!(ds.len(), 8091);
    assert_eq!(ds.num_captions(), 40455);
    assert_eq!(report.captions, 40455);
    assert_eq!(
        report.missing_images,
        vec![ImageId::from("2258277193_586949ec62.jpg.1")]
    );
    assert_eq!(report.captions_without_image, 5);
    assert!(report.checked_image_files);
    assert_eq!(ds.split(Split::Train).count(), 6000);
    assert_eq!(ds.split(Split::Val).count(), 1000);
    assert_eq!(ds.split(Split::Test).count(), 1000);
    assert_eq!(report.images_without_split, 91);
    let first = &ds.images[0];
    assert_eq!(first.id, ImageId::from("1000268201_693b08cb0e.jpg"));
    assert_eq!(first.captions.len(), 5);
    assert!(ds.image_path(first).unwrap().is_file());
}

#[test]
fn flickr8k_without_images_keeps_the_quirk_id() {
    let dir = flickr8k_dir();
    let tokens = std::fs::read_to_string(dir.join(flickr8k::TOKEN_FILE)).unwrap();
    let (ds, report) = flickr8k::from_strs(&tokens, "tokens", &[], None).unwrap();
    assert_eq!(ds.len(), 8092);
    assert_eq!(ds.num_captions(), 40460);
    assert!(!report.checked_image_files);
}

/// Writes the Kaggle `captions.txt` form of the token file, quoting as pandas does.
fn kaggle_csv_from_tokens(tokens: &str) -> String {
    let mut out = String::from("image,caption\n");
    for line in flickr8k::parse_tokens(tokens, "t").unwrap() {
        let cap = line.caption;
        if cap.contains([',', '"', '\n']) {
            out.push_str(&format!(
                "{},\"{}\"\n",
                line.image,
                cap.replace('"', "\"\"")
            ));
        } else {
            out.push_str(&format!("{},{}\n", line.image, cap));
        }
    }
    out
}

#[test]
fn kaggle_csv_generated_from_the_token_file_matches_it() {
    let dir = flickr8k_dir();
    let tokens = std::fs::read_to_string(dir.join(flickr8k::TOKEN_FILE)).unwrap();
    let csv = kaggle_csv_from_tokens(&tokens);
    assert!(csv.contains(",\"A black , brown and white dog running through a field .\""));
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("captions.txt");
    std::fs::write(&path, &csv).unwrap();
    let spec: DatasetSpec = format!(
        "flickr8k-csv:{}@{}",
        path.display(),
        dir.join("images").display()
    )
    .parse()
    .unwrap();
    let (from_csv, report) = spec.load().unwrap();
    let (from_tokens, _) = flickr8k::load_dir(&dir).unwrap();
    assert_eq!(report.captions, 40455);
    assert_eq!(report.missing_images.len(), 1);
    assert_eq!(from_csv.len(), from_tokens.len());
    for (a, b) in from_csv.images.iter().zip(&from_tokens.images) {
        assert_eq!((&a.id, &a.captions), (&b.id, &b.captions));
    }
    // Without an images dir nothing is checked and the quirk id stays.
    let (unchecked, _) = captions_csv::load(&path, None).unwrap();
    assert_eq!(unchecked.len(), 8092);
}

#[test]
fn kaggle_csv_edge_cases() {
    let text = "image,caption\n\
                a.jpg,\"Quotes \"\"inside\"\", commas, and more\"\n\
                a.jpg,   spaced out   \n\
                b.jpg,\"\"\n\
                c.jpg,\"multi\nline\"\n\
                d.jpg,unicode café ☕\n";
    let (ds, report) = captions_csv::from_bytes(text.as_bytes(), "captions.txt", None).unwrap();
    assert_eq!(
        ds.images[0].captions,
        ["Quotes \"inside\", commas, and more", "spaced out"]
    );
    assert_eq!(report.empty_captions, 1);
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.images[1].captions, ["multi\nline"]);
    let err = captions_csv::from_bytes(b"image,caption\na.jpg,\"unterminated\n", "c.txt", None);
    // An unterminated quote runs to the end of the file: the csv crate takes it as one field.
    assert!(err.is_ok());
    let err = captions_csv::from_bytes(b"image,caption\na.jpg,x,y\n", "c.txt", None).unwrap_err();
    assert!(err.to_string().starts_with("c.txt:2:"), "{err}");
}

#[test]
fn coco_val2017() {
    let path = common::shared_data().join("coco/captions_val2017.json");
    let spec: DatasetSpec = format!("coco:{}", path.display()).parse().unwrap();
    let (ds, report) = spec.load().unwrap();
    assert_eq!(ds.len(), 5000);
    assert_eq!(ds.num_captions(), 25014);
    assert_eq!(
        report,
        LoadReport {
            source: path.display().to_string(),
            images: 5000,
            captions: 25014,
            images_without_split: 5000,
            ..LoadReport::default()
        }
    );
    assert!(ds.images.iter().all(|i| i.id.as_int().is_some()));
    let first = &ds.images[0];
    let ids = serde_json::to_string(&first.id).unwrap();
    assert!(
        ids.parse::<u64>().is_ok(),
        "COCO ids serialise as JSON integers: {ids}"
    );
    assert!(first.file.to_string_lossy().ends_with(".jpg"));
}

#[test]
fn karpathy_fixtures() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (ds, report) = karpathy::load(&fixtures.join("dataset_small.json"), None).unwrap();
    assert_eq!(ds.len(), 4);
    assert_eq!(report.empty_captions, 1);
    let splits: Vec<Option<Split>> = ds.images.iter().map(|i| i.split).collect();
    assert_eq!(
        splits,
        [
            Some(Split::Test),
            Some(Split::Restval),
            Some(Split::Train),
            Some(Split::Val)
        ]
    );
    assert_eq!(ds.images[0].id, ImageId::Int(391895));
    assert_eq!(
        ds.images[0].file,
        Path::new("val2014/COCO_val2014_000000391895.jpg")
    );

    // Flickr-style: ids are file names; with the shared images as root, the fake one is missing.
    let images = flickr8k_dir().join("images");
    let spec: DatasetSpec = format!(
        "karpathy:{}@{}",
        fixtures.join("dataset_flickr_small.json").display(),
        images.display()
    )
    .parse()
    .unwrap();
    let (ds, report) = spec.load().unwrap();
    assert_eq!(ds.len(), 1);
    assert_eq!(ds.images[0].id, ImageId::from("1000268201_693b08cb0e.jpg"));
    assert_eq!(
        report.missing_images,
        vec![ImageId::from("does_not_exist.jpg")]
    );
}

#[test]
fn coco_errors_on_a_damaged_real_file() {
    let path = common::shared_data().join("coco/captions_val2017.json");
    let text = std::fs::read_to_string(&path).unwrap();
    // Damage the 18th annotation's caption: its path must be in the error.
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["annotations"][17]["caption"] = serde_json::json!(17);
    let damaged = serde_json::to_string(&json).unwrap();
    let err = coco::from_str(&damaged, "val.json", None).unwrap_err();
    assert!(err.to_string().contains("annotations[17].caption"), "{err}");
}

#[test]
fn loading_everything_is_fast() {
    // Release builds take well under a second; this debug-friendly bound only catches blowups.
    let start = Instant::now();
    let (f, _) = flickr8k::load_dir(&flickr8k_dir()).unwrap();
    let (c, _) = coco::load(
        &common::shared_data().join("coco/captions_val2017.json"),
        None,
    )
    .unwrap();
    let took = start.elapsed();
    eprintln!("loaded {} + {} images in {took:?}", f.len(), c.len());
    assert!(took.as_secs_f64() < 5.0, "{took:?}");
}
