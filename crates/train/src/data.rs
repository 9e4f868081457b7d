//! The training data: captions from the dataset, the vocabulary built from the training split, and
//! image features from the cache.

use crate::preset::{DataConfig, Sampling};
use crate::TrainError;
use captioner_data::{
    BatchConfig, Batcher, Dataset, DatasetSpec, SamplingMode, Split, Vocab, VocabConfig,
};
use captioner_encode::cache::{CacheMeta, FeatureCache};
use std::path::Path;

/// Reads rows of features out of a cache for the images of one dataset split.
pub struct FeatureSource<'c> {
    cache: &'c FeatureCache,
    /// Other views of the same images (e.g. mirrored), read instead of `cache` when a row asks.
    views: Vec<&'c FeatureCache>,
    /// Cache id of each image of the split, by the split's image index.
    ids: Vec<String>,
    spatial: bool,
}

/// Gathered features of a batch of rows, laid out as [`captioner_decode::Features`] wants them.
#[derive(Debug, Default, Clone)]
pub struct FeatureRows {
    /// `[B, F]`.
    pub pooled: Vec<f32>,
    /// `[B, P, F]` when the decoder attends over the grid, else empty.
    pub spatial: Vec<f32>,
}

impl<'c> FeatureSource<'c> {
    /// A source for `dataset`'s images (every one must be cached), with the spatial grid when
    /// `spatial`.
    pub fn new(
        cache: &'c FeatureCache,
        dataset: &Dataset,
        spatial: bool,
    ) -> Result<Self, TrainError> {
        Self::from_ids(
            cache,
            dataset.images.iter().map(|i| i.id.to_string()).collect(),
            spatial,
        )
    }

    /// A source for the images with these cache ids (row `k` is `ids[k]`).
    pub fn from_ids(
        cache: &'c FeatureCache,
        ids: Vec<String>,
        spatial: bool,
    ) -> Result<Self, TrainError> {
        if let Some(missing) = ids.iter().find(|id| !cache.contains(id)) {
            return Err(TrainError::Data(format!(
                "image {missing} is not in the feature cache {}",
                cache.dir().display()
            )));
        }
        if spatial && cache.meta().spatial_cells.is_none() {
            return Err(TrainError::Data(format!(
                "the decoder attends over the spatial grid, but the cache {} has only pooled \
                 features; extract again with `captioner extract --spatial`",
                cache.dir().display()
            )));
        }
        Ok(Self {
            cache,
            views: Vec::new(),
            ids,
            spatial,
        })
    }

    /// Adds other views of the same images, such as `captioner extract --flip`'s: each must hold
    /// every image of the source, with the same encoder, channels and grid.
    pub fn with_views(mut self, views: &'c [FeatureCache]) -> Result<Self, TrainError> {
        let base = self.cache.meta();
        for view in views {
            let meta = view.meta();
            let source =
                |m: &'c CacheMeta| (&m.encoder, m.normalization, m.feature_dim, m.spatial_cells);
            if source(meta) != source(base) {
                return Err(TrainError::Data(format!(
                    "[data] augment_features: {} holds {} features ({} normalization, {} \
                     channels, {:?} cells), but {} holds {} ({}, {} channels, {:?} cells)",
                    view.dir().display(),
                    meta.encoder,
                    meta.normalization,
                    meta.feature_dim,
                    meta.spatial_cells,
                    self.cache.dir().display(),
                    base.encoder,
                    base.normalization,
                    base.feature_dim,
                    base.spatial_cells
                )));
            }
            if let Some(missing) = self.ids.iter().find(|id| !view.contains(id)) {
                return Err(TrainError::Data(format!(
                    "[data] augment_features: image {missing} is not in {}",
                    view.dir().display()
                )));
            }
            self.views.push(view);
        }
        Ok(self)
    }

    /// Views of each image: 1 plus the added ones.
    pub fn view_count(&self) -> usize {
        1 + self.views.len()
    }

    /// Images (rows) the source reads.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it reads no image.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Feature channels.
    pub fn dim(&self) -> usize {
        self.cache.meta().feature_dim
    }

    /// Grid cells (0 when the source does not read the grid).
    pub fn cells(&self) -> usize {
        if self.spatial {
            self.cache.meta().spatial_cells.unwrap_or(0)
        } else {
            0
        }
    }

    /// Fills `out` with the features of images `rows` (split image indices).
    pub fn gather(&self, rows: &[usize], out: &mut FeatureRows) -> Result<(), TrainError> {
        self.gather_views(rows, &[], out)
    }

    /// Like [`FeatureSource::gather`], reading row `k` from view `views[k]` (0 is the main
    /// cache, `i` the `i`-th added view); rows past the end of `views` read view 0.
    pub fn gather_views(
        &self,
        rows: &[usize],
        views: &[usize],
        out: &mut FeatureRows,
    ) -> Result<(), TrainError> {
        let (dim, cells) = (self.dim(), self.cells());
        out.pooled.resize(rows.len() * dim, 0.0);
        out.spatial.resize(rows.len() * cells * dim, 0.0);
        for (k, &r) in rows.iter().enumerate() {
            let id = self
                .ids
                .get(r)
                .ok_or_else(|| TrainError::Data(format!("image index {r} out of range")))?;
            let cache = match views.get(k).copied().unwrap_or(0) {
                0 => self.cache,
                v => *self
                    .views
                    .get(v - 1)
                    .ok_or_else(|| TrainError::Data(format!("feature view {v} out of range")))?,
            };
            let ok = cache.pooled_into(id, &mut out.pooled[k * dim..(k + 1) * dim])
                && (cells == 0
                    || cache.spatial_into(
                        id,
                        &mut out.spatial[k * cells * dim..(k + 1) * cells * dim],
                    ));
            if !ok {
                return Err(TrainError::Data(format!(
                    "image {id} vanished from the cache {}",
                    cache.dir().display()
                )));
            }
        }
        Ok(())
    }
}

/// Everything a run reads: the two splits, their captions as ids, and the vocabulary.
pub struct TrainData {
    /// Training images (only those in the cache).
    pub train: Dataset,
    /// Validation images (only those in the cache, at most `val_images`).
    pub val: Dataset,
    /// Built from the training captions, or the resumed run's.
    pub vocab: Vocab,
}

impl TrainData {
    /// Loads the dataset named by `config`, keeps the cached images of the two splits, and builds
    /// the vocabulary unless one is given (a resumed run keeps its own).
    pub fn load(
        config: &DataConfig,
        cache: &FeatureCache,
        vocab: Option<Vocab>,
    ) -> Result<(Self, Vec<String>), TrainError> {
        let spec: DatasetSpec = config
            .dataset
            .parse()
            .map_err(|e| TrainError::Data(format!("[data] dataset: {e}")))?;
        let (dataset, _report) = spec
            .load()
            .map_err(|e| TrainError::Data(format!("loading {}: {e}", config.dataset)))?;
        let split = |name: &str| -> Result<Split, TrainError> {
            name.parse()
                .map_err(|e| TrainError::Data(format!("[data] split: {e}")))
        };
        let mut notes = Vec::new();
        let mut keep_cached = |mut ds: Dataset, what: &str| {
            let before = ds.images.len();
            ds.images.retain(|i| cache.contains(&i.id.to_string()));
            if ds.images.len() < before {
                notes.push(format!(
                    "{} of {before} {what} images are not in the feature cache and are skipped",
                    before - ds.images.len()
                ));
            }
            ds
        };
        let train = keep_cached(
            dataset.filtered(Some(split(&config.train_split)?)),
            "training",
        );
        let mut val = keep_cached(
            dataset.filtered(Some(split(&config.val_split)?)),
            "validation",
        );
        if config.val_images > 0 {
            val.images.truncate(config.val_images);
        }
        if train.images.is_empty() || val.images.is_empty() {
            return Err(TrainError::Data(format!(
                "{} training and {} validation images with cached features; need both",
                train.images.len(),
                val.images.len()
            )));
        }
        let vocab = match vocab {
            Some(v) => v,
            None => {
                let normalized: Vec<String> = train
                    .captions()
                    .map(|(_, c)| config.normalizer.normalize(c))
                    .collect();
                Vocab::build(
                    normalized.iter().map(String::as_str),
                    &VocabConfig {
                        max_words: (config.vocab_max_words > 0).then_some(config.vocab_max_words),
                        min_count: config.vocab_min_count,
                    },
                )
            }
        };
        Ok((Self { train, val, vocab }, notes))
    }

    /// The batcher over training captions.
    pub fn train_batcher(
        &self,
        config: &DataConfig,
        batch_size: usize,
        sampling: Sampling,
        seed: u64,
        length_sort_window: usize,
    ) -> Result<Batcher, TrainError> {
        batcher(
            &self.train,
            config,
            &self.vocab,
            batch_size,
            sampling,
            seed,
            length_sort_window,
        )
    }

    /// The batcher over validation captions (all pairs, fixed order).
    pub fn val_batcher(
        &self,
        config: &DataConfig,
        batch_size: usize,
    ) -> Result<Batcher, TrainError> {
        batcher(
            &self.val,
            config,
            &self.vocab,
            batch_size,
            Sampling::AllPairs,
            0,
            0,
        )
    }
}

fn batcher(
    ds: &Dataset,
    config: &DataConfig,
    vocab: &Vocab,
    batch_size: usize,
    sampling: Sampling,
    seed: u64,
    length_sort_window: usize,
) -> Result<Batcher, TrainError> {
    Batcher::from_dataset(
        ds,
        &config.normalizer,
        vocab,
        BatchConfig {
            batch_size,
            mode: match sampling {
                Sampling::AllPairs => SamplingMode::AllPairs,
                Sampling::OnePerImage => SamplingMode::OneCaptionPerImage,
            },
            seed,
            drop_last: false,
            max_words: Some(config.max_words),
            length_sort_window,
        },
    )
    .map_err(|e| TrainError::Data(e.to_string()))
}

/// Opens the feature cache named by the preset.
pub fn open_cache(dir: &Path) -> Result<FeatureCache, TrainError> {
    FeatureCache::open(dir).map_err(|e| {
        TrainError::Data(format!(
            "feature cache {}: {e}\n  (make it with `captioner extract --dataset <spec> --spatial --out {}`)",
            dir.display(),
            dir.display()
        ))
    })
}
