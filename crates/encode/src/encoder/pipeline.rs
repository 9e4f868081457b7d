//! Batched extraction into a feature cache: images of batch k+1 are decoded (in parallel, on
//! rayon) while batch k runs through the encoder, so the CPU is never idle waiting for JPEGs.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::{EncodeError, Encoder, EncoderKind, Want};
use crate::cache::{CacheError, CacheWriter};
use crate::image::{ImageError, ImageLoader};

/// One image to encode: its id in the cache and the file it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractItem {
    pub id: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractOptions {
    pub batch_size: usize,
    pub spatial: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            batch_size: 32,
            spatial: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtractReport {
    /// Images encoded by this run.
    pub encoded: usize,
    /// Images skipped because the cache already had them.
    pub skipped: usize,
    /// Images that could not be decoded: `(id, error naming the file)`.
    pub failed: Vec<(String, String)>,
    pub elapsed: Duration,
    /// Time the encoder spent computing (the rest is decoding that did not overlap, and I/O).
    pub encode_time: Duration,
}

impl ExtractReport {
    /// Images encoded per second of wall time.
    pub fn images_per_sec(&self) -> f64 {
        self.encoded as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(
        "{encoder} cannot store spatial features in a cache: its {rows}x{cols}x{spatial_dim} map \
         is narrower than its {feature_dim}-d pooled vector, and a cache holds one width; \
         extract its pooled features only (no --spatial)"
    )]
    SpatialUnsupported {
        encoder: EncoderKind,
        rows: usize,
        cols: usize,
        spatial_dim: usize,
        feature_dim: usize,
    },
    #[error("the image loader produces {got:?} but the encoder wants {want:?}")]
    Layout {
        got: crate::image::Layout,
        want: crate::image::Layout,
    },
}

/// Fails when `kind`'s features cannot be cached with `options`: call it before creating a cache
/// ([`extract`] calls it too).
pub fn check_options(kind: EncoderKind, options: ExtractOptions) -> Result<(), ExtractError> {
    if options.spatial && kind.spatial_dim() != kind.feature_dim() {
        let (rows, cols) = kind.spatial_grid();
        return Err(ExtractError::SpatialUnsupported {
            encoder: kind,
            rows,
            cols,
            spatial_dim: kind.spatial_dim(),
            feature_dim: kind.feature_dim(),
        });
    }
    Ok(())
}

type Decoded = Vec<(usize, Result<Vec<f32>, ImageError>)>;

/// Encode every item the cache does not have yet and store the results, calling `progress` with
/// the number of items finished (encoded, failed or skipped) after each batch. Failures are
/// recorded in the cache index and the report; only cache and encoder errors stop the run.
pub fn extract(
    items: &[ExtractItem],
    loader: &ImageLoader,
    encoder: &dyn Encoder,
    cache: &mut CacheWriter,
    options: ExtractOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<ExtractReport, ExtractError> {
    if loader.layout != encoder.input_layout() {
        return Err(ExtractError::Layout {
            got: loader.layout,
            want: encoder.input_layout(),
        });
    }
    check_options(encoder.kind(), options)?;
    let start = Instant::now();
    let mut report = ExtractReport::default();
    let todo: Vec<&ExtractItem> = items.iter().filter(|it| !cache.contains(&it.id)).collect();
    report.skipped = items.len() - todo.len();
    if report.skipped > 0 {
        progress(report.skipped);
    }
    let batch_size = options.batch_size.max(1);
    let want = Want {
        spatial: options.spatial,
        logits: false,
    };

    std::thread::scope(|scope| -> Result<(), ExtractError> {
        // Capacity 1: one decoded batch waits while the next is being decoded, bounding memory
        // to about three batches of pixels.
        let (tx, rx) = mpsc::sync_channel::<Decoded>(1);
        let todo_ref = &todo;
        scope.spawn(move || {
            for (b, chunk) in todo_ref.chunks(batch_size).enumerate() {
                let decoded: Decoded = chunk
                    .par_iter()
                    .enumerate()
                    .map(|(i, item)| (b * batch_size + i, loader.load(&item.path).map(|t| t.data)))
                    .collect();
                if tx.send(decoded).is_err() {
                    break; // the consumer stopped on an error
                }
            }
        });

        for decoded in rx {
            let mut pixels = Vec::new();
            let mut ok = Vec::new();
            for (i, result) in decoded {
                let item = todo[i];
                match result {
                    Ok(data) => {
                        pixels.extend_from_slice(&data);
                        ok.push(item);
                    }
                    Err(err) => {
                        tracing::warn!("skipping {}", err);
                        cache.record_failure(&item.id, err.to_string());
                        report.failed.push((item.id.clone(), err.to_string()));
                        progress(1);
                    }
                }
            }
            if ok.is_empty() {
                continue;
            }
            let t = Instant::now();
            let features = encoder.encode(&pixels, ok.len(), want)?;
            report.encode_time += t.elapsed();
            let dim = encoder.kind().feature_dim();
            let spatial_len = features.spatial.as_ref().map(|s| s.len() / ok.len());
            for (row, item) in ok.iter().enumerate() {
                let pooled = &features.pooled[row * dim..(row + 1) * dim];
                let spatial = match (&features.spatial, spatial_len) {
                    (Some(s), Some(len)) => Some(&s[row * len..(row + 1) * len]),
                    _ => None,
                };
                cache.push(&item.id, pooled, spatial)?;
            }
            report.encoded += ok.len();
            progress(ok.len());
        }
        Ok(())
    })?;
    cache.flush()?;
    report.elapsed = start.elapsed();
    Ok(report)
}
