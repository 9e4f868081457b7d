//! Shared helpers for the metrics tests and the benchmark: the shared data folder, the
//! evaluation sets of `scripts/metrics_fixtures.py` rebuilt from it, and fixture loading.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use serde_json::Value;

/// `CAPTIONER_SHARED_DATA`, or `../shared/data` next to the repository.
pub fn shared_data() -> PathBuf {
    let dir = std::env::var_os("CAPTIONER_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
        });
    assert!(
        dir.join("coco/captions_val2017.json").is_file(),
        "shared data not found at {} (set CAPTIONER_SHARED_DATA to the folder holding coco/ and flickr8k/)",
        dir.display()
    );
    dir
}

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(name)
}

/// Read a fixture, transparently un-gzipping `.gz` files.
pub fn read_fixture(name: &str) -> String {
    let path = fixture_path(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if name.ends_with(".gz") {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text
    } else {
        String::from_utf8(bytes).expect("fixture is UTF-8")
    }
}

pub fn read_json_fixture(name: &str) -> Value {
    serde_json::from_str(&read_fixture(name)).expect("fixture is JSON")
}

/// `(annotation id, caption)` of COCO val2017, in annotation order.
pub fn coco_captions() -> Vec<(String, u64, String)> {
    let path = shared_data().join("coco/captions_val2017.json");
    let text = std::fs::read_to_string(&path).expect("read COCO captions");
    let v: Value = serde_json::from_str(&text).expect("COCO JSON");
    v["annotations"]
        .as_array()
        .expect("annotations")
        .iter()
        .map(|a| {
            (
                a["id"].as_u64().expect("id").to_string(),
                a["image_id"].as_u64().expect("image_id"),
                a["caption"].as_str().expect("caption").to_owned(),
            )
        })
        .collect()
}

/// `(key, caption)` of `Flickr8k.token.txt`, in file order.
pub fn flickr_captions() -> Vec<(String, String)> {
    let path = shared_data().join("flickr8k/Flickr8k.token.txt");
    std::fs::read_to_string(&path)
        .expect("read Flickr8k token file")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, c) = l.split_once('\t').expect("tab");
            (k.to_owned(), c.to_owned())
        })
        .collect()
}

/// One evaluation set: per image, raw references and a raw candidate.
pub struct EvalSet {
    pub references: Vec<Vec<String>>,
    pub candidates: Vec<String>,
}

/// Set (a): COCO val2017, images by id, candidate = first caption, references = the others.
pub fn coco_heldout() -> EvalSet {
    let mut by_image: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (_, image, caption) in coco_captions() {
        by_image.entry(image).or_default().push(caption);
    }
    let mut set = EvalSet {
        references: Vec::new(),
        candidates: Vec::new(),
    };
    for (_, mut caps) in by_image {
        let first = caps.remove(0);
        set.candidates.push(first);
        set.references.push(caps);
    }
    set
}

/// Set (b): set (a) with candidates moved across images as the fixture's `candidate_from` says.
pub fn coco_shuffled(fixture: &Value) -> EvalSet {
    let a = coco_heldout();
    let from: Vec<usize> = fixture["candidate_from"]
        .as_array()
        .expect("candidate_from")
        .iter()
        .map(|v| v.as_u64().expect("index") as usize)
        .collect();
    EvalSet {
        candidates: from.iter().map(|&k| a.candidates[k].clone()).collect(),
        references: a.references,
    }
}

/// Set (c): Flickr8k test split, candidate = caption #0, references = #1..#4.
pub fn flickr8k_test() -> EvalSet {
    let mut caps: BTreeMap<String, BTreeMap<u32, String>> = BTreeMap::new();
    for (key, caption) in flickr_captions() {
        let (name, k) = key.split_once('#').expect("#");
        caps.entry(name.to_owned())
            .or_default()
            .insert(k.parse().expect("caption number"), caption);
    }
    let split = std::fs::read_to_string(shared_data().join("flickr8k/Flickr_8k.testImages.txt"))
        .expect("read test split");
    let mut set = EvalSet {
        references: Vec::new(),
        candidates: Vec::new(),
    };
    for name in split.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let c = &caps[name];
        set.candidates.push(c[&0].clone());
        set.references.push(
            c.iter()
                .filter(|(k, _)| **k != 0)
                .map(|(_, v)| v.clone())
                .collect(),
        );
    }
    set
}
