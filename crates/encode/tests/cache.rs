//! The feature cache: round trip, resume after a kill, corruption detection.

use std::path::Path;

use captioner_encode::cache::{CacheError, CacheMeta, CacheWriter, FeatureCache, INDEX_FILE};
use captioner_encode::NormalizationKind;

const DIM: usize = 8;
const CELLS: usize = 4;

fn meta(spatial: bool) -> CacheMeta {
    CacheMeta {
        encoder: "test".into(),
        feature_dim: DIM,
        spatial_cells: spatial.then_some(CELLS),
        resize: "squash".into(),
        normalization: NormalizationKind::Inception,
    }
}

fn pooled(i: usize) -> Vec<f32> {
    (0..DIM).map(|j| i as f32 + j as f32 * 0.25).collect()
}

fn spatial(i: usize) -> Vec<f32> {
    (0..DIM * CELLS)
        .map(|j| -(i as f32) - j as f32 * 0.5)
        .collect()
}

fn write(dir: &Path, ids: std::ops::Range<usize>, shard_size: usize) -> Result<(), CacheError> {
    let mut w = CacheWriter::open(dir, meta(true), shard_size)?;
    for i in ids {
        w.push(&format!("img{i}"), &pooled(i), Some(&spatial(i)))?;
    }
    w.finish().map(|_| ())
}

#[test]
fn round_trip_with_f16_precision() -> Result<(), CacheError> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut w = CacheWriter::open(tmp.path(), meta(true), 3)?;
    for i in 0..7 {
        w.push(&format!("img{i}"), &pooled(i), Some(&spatial(i)))?;
    }
    w.record_failure("broken", "broken.jpg: not an image");
    let index = w.finish()?;
    assert_eq!(index.shards.len(), 3); // 3 + 3 + 1
    assert_eq!(index.failures.len(), 1);

    let cache = FeatureCache::open(tmp.path())?;
    assert_eq!(cache.len(), 7);
    assert_eq!(cache.ids().collect::<Vec<_>>()[..2], ["img0", "img1"]);
    assert_eq!(cache.index().failures[0].id, "broken");
    for i in 0..7 {
        let id = format!("img{i}");
        // Every value here is exactly representable in f16.
        assert_eq!(cache.pooled(&id), Some(pooled(i)));
        assert_eq!(cache.spatial(&id), Some(spatial(i)));
    }
    assert_eq!(cache.pooled("nope"), None);
    Ok(())
}

#[test]
fn pooled_only_cache_has_no_spatial() -> Result<(), CacheError> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut w = CacheWriter::open(tmp.path(), meta(false), 10)?;
    w.push("a", &pooled(1), None)?;
    assert!(w.push("b", &pooled(2), Some(&spatial(2))).is_err());
    assert!(w.push("c", &pooled(3)[..3], None).is_err());
    w.finish()?;
    let cache = FeatureCache::open(tmp.path())?;
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.spatial("a"), None);
    assert_eq!(cache.pooled("a"), Some(pooled(1)));
    Ok(())
}

#[test]
fn resume_after_a_kill_skips_done_ids_and_cleans_leftovers() -> Result<(), CacheError> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    write(dir, 0..6, 3)?;
    // Simulate a run killed while writing its next shard, and one killed between renaming a
    // shard and updating the index.
    std::fs::write(dir.join("shard-00002.safetensors.tmp"), b"half a shard").expect("tmp");
    std::fs::write(dir.join("shard-00003.safetensors"), b"unindexed").expect("orphan");
    std::fs::write(dir.join("index.json.tmp"), b"{").expect("tmp index");

    let mut w = CacheWriter::open(dir, meta(true), 3)?;
    assert!(!dir.join("shard-00002.safetensors.tmp").exists());
    assert!(!dir.join("shard-00003.safetensors").exists());
    assert!(!dir.join("index.json.tmp").exists());
    assert!(w.contains("img5") && !w.contains("img6"));
    for i in 6..8 {
        w.push(&format!("img{i}"), &pooled(i), Some(&spatial(i)))?;
    }
    w.finish()?;
    let cache = FeatureCache::open(dir)?;
    assert_eq!(cache.len(), 8);
    assert_eq!(cache.pooled("img7"), Some(pooled(7)));
    Ok(())
}

#[test]
fn a_different_encoder_is_refused() -> Result<(), CacheError> {
    let tmp = tempfile::tempdir().expect("tempdir");
    write(tmp.path(), 0..2, 3)?;
    let err = CacheWriter::open(tmp.path(), meta(false), 3)
        .err()
        .expect("mismatch");
    assert!(matches!(err, CacheError::Mismatch { .. }), "{err}");
    Ok(())
}

/// Caches written before the normalization was recorded read as ImageNet's, and a cache of one
/// normalization is not extended with the other's features.
#[test]
fn the_normalization_is_recorded_and_old_indexes_read_as_imagenet() -> Result<(), CacheError> {
    let tmp = tempfile::tempdir().expect("tempdir");
    write(tmp.path(), 0..2, 3)?;
    let mut imagenet = meta(true);
    imagenet.normalization = NormalizationKind::Imagenet;
    let err = CacheWriter::open(tmp.path(), imagenet.clone(), 3)
        .err()
        .expect("mismatch");
    assert!(err.to_string().contains("Imagenet"), "{err}");

    let index_path = tmp.path().join(INDEX_FILE);
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).expect("read index"))
            .expect("parse index");
    assert_eq!(index["normalization"], "inception");
    index
        .as_object_mut()
        .expect("object")
        .remove("normalization");
    std::fs::write(&index_path, index.to_string()).expect("write index");
    let cache = FeatureCache::open(tmp.path())?;
    assert_eq!(cache.meta().normalization, NormalizationKind::Imagenet);
    drop(cache);
    assert!(CacheWriter::open(tmp.path(), imagenet, 3).is_ok());
    Ok(())
}

#[test]
fn corrupt_shards_are_detected_with_the_file_named() -> Result<(), CacheError> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    write(dir, 0..4, 2)?;
    let shard = dir.join("shard-00001.safetensors");
    let bytes = std::fs::read(&shard).expect("read shard");

    // Truncated.
    std::fs::write(&shard, &bytes[..bytes.len() - 10]).expect("truncate");
    let err = FeatureCache::open(dir).err().expect("truncated shard");
    assert!(matches!(err, CacheError::CorruptShard { .. }), "{err}");
    assert!(err.to_string().contains("shard-00001.safetensors"), "{err}");
    assert!(CacheWriter::open(dir, meta(true), 2).is_err());

    // Same length, garbage header.
    let mut garbled = bytes.clone();
    garbled[8..16].copy_from_slice(b"garbage!");
    std::fs::write(&shard, &garbled).expect("garble");
    let err = FeatureCache::open(dir).err().expect("garbled shard");
    assert!(err.to_string().contains("shard-00001.safetensors"), "{err}");

    // Missing.
    std::fs::remove_file(&shard).expect("rm");
    assert!(FeatureCache::open(dir).is_err());

    // Broken index.
    std::fs::write(&shard, &bytes).expect("restore");
    assert!(FeatureCache::open(dir).is_ok());
    std::fs::write(dir.join(INDEX_FILE), b"{ not json").expect("index");
    let err = FeatureCache::open(dir).err().expect("bad index");
    assert!(err.to_string().contains(INDEX_FILE), "{err}");
    Ok(())
}
