//! The on-disk feature cache: features are extracted once and read many times while training.
//!
//! A cache is a directory of f16 safetensors shards plus `index.json`:
//! - `shard-NNNNN.safetensors` holds `pooled` `[n, dim]` and, when asked for, `spatial`
//!   `[n, cells, dim]`, for the `n` image ids the index lists for that shard (the ids are also in
//!   the shard's metadata, so a shard can be checked on its own).
//! - `index.json` names the encoder and dims, lists the shards (ids, byte length) and the images
//!   that failed.
//!
//! Crash safety: a shard is written to `*.tmp`, synced and renamed, and only then is the index
//! (itself written the same way) updated to mention it. A run killed at any point leaves either
//! the old index or the new one, never a half-written shard that the index trusts; leftovers are
//! removed when the writer reopens the directory, and the images of the lost shard are redone.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use half::f16;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::image::NormalizationKind;

pub const INDEX_FILE: &str = "index.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid cache index: {source}")]
    Index {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: corrupt feature shard: {message}")]
    CorruptShard { path: PathBuf, message: String },
    #[error("{dir}: cache holds {found}, not {wanted}; use another --out directory or delete it")]
    Mismatch {
        dir: PathBuf,
        found: String,
        wanted: String,
    },
    #[error("feature vector for `{id}` has {got} values, expected {expected}")]
    BadLength {
        id: String,
        expected: usize,
        got: usize,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the cached features are: fixed when the cache is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheMeta {
    pub encoder: String,
    pub feature_dim: usize,
    /// Grid cells per image in `spatial` (49 for 7x7), or `None` when only pooled is stored.
    pub spatial_cells: Option<usize>,
    /// How images were resized ("squash" or "center-crop"), with [`CacheMeta::MIRRORED`] after
    /// it when they were also mirrored: features differ between all of these.
    pub resize: String,
    /// The input statistics the images were normalised with; absent from caches written before
    /// it was recorded, which all used [`NormalizationKind::LEGACY`].
    #[serde(default = "NormalizationKind::legacy")]
    pub normalization: NormalizationKind,
}

impl CacheMeta {
    /// Appended to `resize` by `captioner extract --flip`.
    pub const MIRRORED: &'static str = "+flip";

    /// Whether the images were mirrored left-right before encoding.
    pub fn is_mirrored(&self) -> bool {
        self.resize.contains(Self::MIRRORED)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub file: String,
    /// File length when written: a cheap check that catches truncation.
    pub bytes: u64,
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub id: String,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheIndex {
    pub version: u32,
    #[serde(flatten)]
    pub meta: CacheMeta,
    pub dtype: String,
    pub shards: Vec<ShardEntry>,
    pub failures: Vec<Failure>,
}

impl CacheIndex {
    fn new(meta: CacheMeta) -> Self {
        CacheIndex {
            version: FORMAT_VERSION,
            meta,
            dtype: "f16".into(),
            shards: Vec::new(),
            failures: Vec::new(),
        }
    }

    pub fn load(dir: &Path) -> Result<Self, CacheError> {
        let path = dir.join(INDEX_FILE);
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let index: CacheIndex =
            serde_json::from_str(&text).map_err(|source| CacheError::Index {
                path: path.clone(),
                source,
            })?;
        if index.version != FORMAT_VERSION || index.dtype != "f16" {
            return Err(CacheError::Mismatch {
                dir: dir.to_path_buf(),
                found: format!("format v{} {}", index.version, index.dtype),
                wanted: format!("format v{FORMAT_VERSION} f16"),
            });
        }
        Ok(index)
    }

    fn save(&self, dir: &Path) -> Result<(), CacheError> {
        let json = serde_json::to_vec_pretty(self).map_err(|source| CacheError::Index {
            path: dir.join(INDEX_FILE),
            source,
        })?;
        write_atomic(&dir.join(INDEX_FILE), &json)
    }

    /// Number of cached images.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.ids.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Write `bytes` to `path` so that a crash leaves either the old file or the new one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(bytes).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    // Make the rename itself durable; not all platforms can open a directory, so best effort.
    if let Some(parent) = path.parent() {
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

fn to_f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect()
}

struct Pending {
    ids: Vec<String>,
    pooled: Vec<f32>,
    spatial: Vec<f32>,
}

/// Appends features to a cache directory, a shard at a time; resumes an existing cache.
pub struct CacheWriter {
    dir: PathBuf,
    index: CacheIndex,
    shard_size: usize,
    done: HashSet<String>,
    pending: Pending,
}

impl CacheWriter {
    /// Open `dir` for writing, creating it and its index if needed. An existing cache must have
    /// the same `meta`. Leftover temp files and shards the index does not list (from a killed
    /// run) are deleted; earlier failures are forgotten so that they are retried.
    pub fn open(dir: &Path, meta: CacheMeta, shard_size: usize) -> Result<Self, CacheError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut index = if dir.join(INDEX_FILE).exists() {
            let index = CacheIndex::load(dir)?;
            if index.meta != meta {
                return Err(CacheError::Mismatch {
                    dir: dir.to_path_buf(),
                    found: format!("{:?}", index.meta),
                    wanted: format!("{meta:?}"),
                });
            }
            index
        } else {
            CacheIndex::new(meta)
        };
        let listed: HashSet<&str> = index.shards.iter().map(|s| s.file.as_str()).collect();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let path = entry.map_err(io_err(dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let orphan_shard = name.starts_with("shard-") && !listed.contains(name);
            if name.ends_with(".tmp") || orphan_shard {
                tracing::warn!(
                    "removing leftover {} from an interrupted run",
                    path.display()
                );
                std::fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        // A listed shard that is missing or truncated would silently lose its images: check now.
        for shard in &index.shards {
            let path = dir.join(&shard.file);
            let len = std::fs::metadata(&path).map_err(io_err(&path))?.len();
            if len != shard.bytes {
                return Err(CacheError::CorruptShard {
                    path,
                    message: format!("{len} bytes on disk, index says {}", shard.bytes),
                });
            }
        }
        index.failures.clear();
        let done = index
            .shards
            .iter()
            .flat_map(|s| s.ids.iter().cloned())
            .collect();
        Ok(CacheWriter {
            dir: dir.to_path_buf(),
            index,
            shard_size: shard_size.max(1),
            done,
            pending: Pending {
                ids: Vec::new(),
                pooled: Vec::new(),
                spatial: Vec::new(),
            },
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn meta(&self) -> &CacheMeta {
        &self.index.meta
    }

    /// True when `id` is already stored (in a written shard or the pending one).
    pub fn contains(&self, id: &str) -> bool {
        self.done.contains(id)
    }

    /// Add one image's features; `spatial` is required iff the cache stores spatial features.
    /// Writes a shard when enough images are pending.
    pub fn push(
        &mut self,
        id: &str,
        pooled: &[f32],
        spatial: Option<&[f32]>,
    ) -> Result<(), CacheError> {
        let meta = &self.index.meta;
        let bad_len = |expected, got| CacheError::BadLength {
            id: id.to_string(),
            expected,
            got,
        };
        if pooled.len() != meta.feature_dim {
            return Err(bad_len(meta.feature_dim, pooled.len()));
        }
        let spatial_len = meta.spatial_cells.map_or(0, |c| c * meta.feature_dim);
        let got = spatial.map_or(0, <[f32]>::len);
        if got != spatial_len {
            return Err(bad_len(spatial_len, got));
        }
        if !self.done.insert(id.to_string()) {
            return Ok(()); // already stored: a duplicate id in the input list
        }
        self.pending.ids.push(id.to_string());
        self.pending.pooled.extend_from_slice(pooled);
        if let Some(spatial) = spatial {
            self.pending.spatial.extend_from_slice(spatial);
        }
        if self.pending.ids.len() >= self.shard_size {
            self.flush()?;
        }
        Ok(())
    }

    /// Record an image that could not be encoded (kept in the index, retried on the next run).
    pub fn record_failure(&mut self, id: &str, error: impl Into<String>) {
        self.index.failures.push(Failure {
            id: id.to_string(),
            error: error.into(),
        });
    }

    /// Write the pending images as a shard, then the index.
    pub fn flush(&mut self) -> Result<(), CacheError> {
        if !self.pending.ids.is_empty() {
            let file = format!("shard-{:05}.safetensors", self.index.shards.len());
            let path = self.dir.join(&file);
            let bytes = self.serialize_pending(&path)?;
            write_atomic(&path, &bytes)?;
            let ids = std::mem::take(&mut self.pending.ids);
            self.pending.pooled.clear();
            self.pending.spatial.clear();
            self.index.shards.push(ShardEntry {
                file,
                bytes: bytes.len() as u64,
                ids,
            });
        }
        self.index.save(&self.dir)
    }

    fn serialize_pending(&self, path: &Path) -> Result<Vec<u8>, CacheError> {
        let meta = &self.index.meta;
        let n = self.pending.ids.len();
        let corrupt = |e: safetensors::SafeTensorError| CacheError::CorruptShard {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let pooled = to_f16_bytes(&self.pending.pooled);
        let spatial = to_f16_bytes(&self.pending.spatial);
        let mut views = vec![(
            "pooled",
            safetensors::tensor::TensorView::new(Dtype::F16, vec![n, meta.feature_dim], &pooled)
                .map_err(corrupt)?,
        )];
        if let Some(cells) = meta.spatial_cells {
            views.push((
                "spatial",
                safetensors::tensor::TensorView::new(
                    Dtype::F16,
                    vec![n, cells, meta.feature_dim],
                    &spatial,
                )
                .map_err(corrupt)?,
            ));
        }
        let ids = serde_json::to_string(&self.pending.ids).map_err(|source| CacheError::Index {
            path: path.to_path_buf(),
            source,
        })?;
        let metadata = HashMap::from([("ids".to_string(), ids)]);
        safetensors::serialize(views, Some(metadata)).map_err(corrupt)
    }

    /// Write what is pending and return the final index.
    pub fn finish(mut self) -> Result<CacheIndex, CacheError> {
        self.flush()?;
        Ok(self.index)
    }
}

struct Shard {
    mmap: Mmap,
    pooled_offset: usize,
    spatial_offset: Option<usize>,
}

/// Read access to a finished cache; shards are memory-mapped, so opening is cheap and only the
/// features actually read are paged in.
pub struct FeatureCache {
    dir: PathBuf,
    index: CacheIndex,
    shards: Vec<Shard>,
    /// id -> (shard, row)
    rows: HashMap<String, (usize, usize)>,
}

impl FeatureCache {
    /// Open and validate a cache: every shard must parse, hold f16 tensors of the indexed shape
    /// and list the indexed ids.
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        let index = CacheIndex::load(dir)?;
        let mut shards = Vec::with_capacity(index.shards.len());
        let mut rows = HashMap::new();
        for (s, entry) in index.shards.iter().enumerate() {
            let path = dir.join(&entry.file);
            shards.push(open_shard(&path, entry, &index.meta)?);
            for (r, id) in entry.ids.iter().enumerate() {
                rows.insert(id.clone(), (s, r));
            }
        }
        Ok(FeatureCache {
            dir: dir.to_path_buf(),
            index,
            shards,
            rows,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn index(&self) -> &CacheIndex {
        &self.index
    }

    pub fn meta(&self) -> &CacheMeta {
        &self.index.meta
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.rows.contains_key(id)
    }

    /// All cached ids in shard order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.index
            .shards
            .iter()
            .flat_map(|s| s.ids.iter().map(String::as_str))
    }

    /// The pooled vector of `id` as f32, or `None` if it is not cached.
    pub fn pooled(&self, id: &str) -> Option<Vec<f32>> {
        let mut out = vec![0.0; self.index.meta.feature_dim];
        self.pooled_into(id, &mut out).then_some(out)
    }

    /// Write `id`'s pooled vector into `out` (length `feature_dim`); false if not cached.
    pub fn pooled_into(&self, id: &str, out: &mut [f32]) -> bool {
        let Some(&(s, r)) = self.rows.get(id) else {
            return false;
        };
        let dim = self.index.meta.feature_dim;
        let shard = &self.shards[s];
        read_f16(&shard.mmap, shard.pooled_offset + r * dim * 2, out);
        true
    }

    /// The spatial features of `id`, `[cells * feature_dim]` row-major, or `None` if the cache has
    /// no spatial features or not this id.
    pub fn spatial(&self, id: &str) -> Option<Vec<f32>> {
        let cells = self.index.meta.spatial_cells?;
        let mut out = vec![0.0; cells * self.index.meta.feature_dim];
        self.spatial_into(id, &mut out).then_some(out)
    }

    /// Write `id`'s spatial features into `out` (length `cells * feature_dim`); false if absent.
    pub fn spatial_into(&self, id: &str, out: &mut [f32]) -> bool {
        let (Some(&(s, r)), Some(_)) = (self.rows.get(id), self.index.meta.spatial_cells) else {
            return false;
        };
        let shard = &self.shards[s];
        let Some(offset) = shard.spatial_offset else {
            return false;
        };
        read_f16(&shard.mmap, offset + r * out.len() * 2, out);
        true
    }
}

fn read_f16(bytes: &[u8], offset: usize, out: &mut [f32]) {
    let src = &bytes[offset..offset + out.len() * 2];
    for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

fn open_shard(path: &Path, entry: &ShardEntry, meta: &CacheMeta) -> Result<Shard, CacheError> {
    let corrupt = |message: String| CacheError::CorruptShard {
        path: path.to_path_buf(),
        message,
    };
    let file = File::open(path).map_err(io_err(path))?;
    // SAFETY: the cache is written once (temp file + rename) and never modified in place, so
    // the mapped bytes do not change under us unless someone edits the shard by hand.
    let mmap = unsafe { Mmap::map(&file) }.map_err(io_err(path))?;
    if mmap.len() as u64 != entry.bytes {
        return Err(corrupt(format!(
            "{} bytes on disk, index says {} (truncated?)",
            mmap.len(),
            entry.bytes
        )));
    }
    let (header_len, header) =
        SafeTensors::read_metadata(&mmap).map_err(|e| corrupt(e.to_string()))?;
    let tensors = SafeTensors::deserialize(&mmap).map_err(|e| corrupt(e.to_string()))?;
    let ids_ok = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("ids"))
        .and_then(|ids| serde_json::from_str::<Vec<String>>(ids).ok())
        .is_some_and(|ids| ids == entry.ids);
    if !ids_ok {
        return Err(corrupt("image ids differ from the index".into()));
    }
    let n = entry.ids.len();
    let data_start = 8 + header_len;
    let locate = |name: &str, shape: Vec<usize>| -> Result<usize, CacheError> {
        let view = tensors
            .tensor(name)
            .map_err(|e| corrupt(format!("tensor `{name}`: {e}")))?;
        if view.dtype() != Dtype::F16 || view.shape() != shape.as_slice() {
            return Err(corrupt(format!(
                "tensor `{name}` is {:?} {:?}, expected F16 {shape:?}",
                view.dtype(),
                view.shape()
            )));
        }
        let info = header
            .info(name)
            .ok_or_else(|| corrupt(format!("tensor `{name}` missing from header")))?;
        Ok(data_start + info.data_offsets.0)
    };
    let pooled_offset = locate("pooled", vec![n, meta.feature_dim])?;
    let spatial_offset = match meta.spatial_cells {
        Some(cells) => Some(locate("spatial", vec![n, cells, meta.feature_dim])?),
        None => None,
    };
    Ok(Shard {
        mmap,
        pooled_offset,
        spatial_offset,
    })
}
