//! Captions for cached images: what validation and `captioner eval --model` run.

use crate::data::{FeatureRows, FeatureSource};
use crate::TrainError;
use captioner_data::Vocab;
use captioner_decode::{Decoder, Features};
use captioner_generate::{generate, GenerateConfig};

/// Features of `rows` images gathered from `source`, as the decoders take them.
pub(crate) fn features<'a>(
    rows: &'a FeatureRows,
    n: usize,
    source: &FeatureSource,
) -> Features<'a> {
    Features {
        batch: n,
        dim: source.dim(),
        pooled: &rows.pooled,
        spatial: (source.cells() > 0).then_some(rows.spatial.as_slice()),
        cells: source.cells(),
    }
}

/// The best caption for every image of `source`, in order, generated `batch` images at a time;
/// `progress` is called with the number of images done after each batch.
pub fn caption_cached(
    decoder: &dyn Decoder,
    vocab: &Vocab,
    source: &FeatureSource,
    config: &GenerateConfig,
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<String>, TrainError> {
    let mut rows = FeatureRows::default();
    let all: Vec<usize> = (0..source.len()).collect();
    let mut out = Vec::with_capacity(all.len());
    for chunk in all.chunks(batch.max(1)) {
        source.gather(chunk, &mut rows)?;
        let feats = features(&rows, chunk.len(), source);
        for hyps in generate(decoder, &feats, config)? {
            out.push(
                hyps.first()
                    .map(|h| vocab.decode(&h.tokens))
                    .unwrap_or_default(),
            );
        }
        progress(chunk.len());
    }
    Ok(out)
}
