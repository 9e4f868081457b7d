//! Teacher-forcing batches: for each caption `w1..wn`, the input row is `<start> w1..wn` and
//! the target row is `w1..wn <end>`, padded with `<pad>` (0) to the longest caption of the batch,
//! with a mask of 1.0 on real positions. Tensors are plain row-major `[batch, time]` vectors so
//! that any backend can wrap them.
//!
//! The order of an epoch is a pure function of `(seed, epoch)`: a ChaCha8 stream seeded by
//! `seed` and numbered by `epoch`, read through our own shuffle and bounded draw (not `rand`'s,
//! whose algorithms may change between versions). Resuming at `(epoch, batch index)` therefore
//! yields bit-identical batches, whatever ran before.
//!
//! With `length_sort_window = k` the shuffled order is cut into windows of `k` batches, each
//! window sorted by caption length before it is cut into batches, and the full batches then
//! shuffled (fairseq's and tensor2tensor's length bucketing). A batch is padded to its longest
//! caption, so random batches of Flickr8k captions (11.8 tokens on average, up to 37) are about
//! half padding; sorted windows cut that to a few percent, and with it the time a step spends on
//! positions whose loss is masked out. A sorted batch of short captions holds fewer tokens than a
//! random one, so its per-token mean loss would weigh each of them more: the trainer scales each
//! batch's loss by its tokens over [`Batcher::mean_tokens_per_row`] times its rows.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::text::Normalizer;
use crate::vocab::Vocab;

/// Which (image, caption) pairs an epoch visits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SamplingMode {
    /// The seeds' scheme: every image once per epoch, with one of its captions drawn at random.
    #[default]
    OneCaptionPerImage,
    /// Every (image, caption) pair once per epoch.
    AllPairs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    pub batch_size: usize,
    pub mode: SamplingMode,
    pub seed: u64,
    /// Drop an epoch's last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Keep at most this many words of a caption (before `<start>`/`<end>`).
    pub max_words: Option<usize>,
    /// Batches per length-sorted window (0 or 1: no sorting; see the module docs).
    pub length_sort_window: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            batch_size: 64,
            mode: SamplingMode::default(),
            seed: 0,
            drop_last: false,
            max_words: None,
            length_sort_window: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch size must be at least 1")]
    ZeroBatchSize,
    #[error("no image has a caption: nothing to batch")]
    NoCaptions,
}

/// One batch, row-major `[batch, time]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub epoch: u64,
    /// Position of this batch in its epoch.
    pub index: usize,
    /// Row `b`'s image, as an index into the batcher's images (the dataset's image order).
    pub images: Vec<usize>,
    /// Row `b`'s caption, as an index into that image's captions.
    pub captions: Vec<usize>,
    /// `<start> w1..wn` then `<pad>`.
    pub inputs: Vec<u32>,
    /// `w1..wn <end>` then `<pad>`.
    pub targets: Vec<u32>,
    /// 1.0 where `targets` is a real token, 0.0 on padding.
    pub mask: Vec<f32>,
    pub batch: usize,
    pub time: usize,
}

impl Batch {
    pub fn shape(&self) -> [usize; 2] {
        [self.batch, self.time]
    }
}

/// Seeded, resumable batches over encoded captions.
#[derive(Debug, Clone)]
pub struct Batcher {
    /// Image → its captions → word ids (no markers).
    captions: Vec<Vec<Vec<u32>>>,
    /// Images with at least one caption, ascending.
    usable: Vec<u32>,
    pairs: usize,
    config: BatchConfig,
}

impl Batcher {
    /// `captions[i][j]` is the word ids (without `<start>`/`<end>`) of image `i`'s caption `j`.
    /// Images without captions are never visited.
    pub fn new(captions: Vec<Vec<Vec<u32>>>, config: BatchConfig) -> Result<Self, BatchError> {
        if config.batch_size == 0 {
            return Err(BatchError::ZeroBatchSize);
        }
        let usable: Vec<u32> = (0..captions.len() as u32)
            .filter(|&i| captions.get(i as usize).is_some_and(|c| !c.is_empty()))
            .collect();
        if usable.is_empty() {
            return Err(BatchError::NoCaptions);
        }
        let pairs = captions.iter().map(Vec::len).sum();
        Ok(Self {
            captions,
            usable,
            pairs,
            config,
        })
    }

    /// Normalises and encodes every caption of `dataset`; row image indices are the
    /// dataset's image indices.
    pub fn from_dataset(
        dataset: &Dataset,
        normalizer: &Normalizer,
        vocab: &Vocab,
        config: BatchConfig,
    ) -> Result<Self, BatchError> {
        let captions = dataset
            .images
            .iter()
            .map(|img| {
                img.captions
                    .iter()
                    .map(|c| vocab.encode(&normalizer.normalize(c)))
                    .collect()
            })
            .collect();
        Self::new(captions, config)
    }

    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Rows per epoch: usable images, or all pairs.
    pub fn examples_per_epoch(&self) -> usize {
        match self.config.mode {
            SamplingMode::OneCaptionPerImage => self.usable.len(),
            SamplingMode::AllPairs => self.pairs,
        }
    }

    pub fn batches_per_epoch(&self) -> usize {
        let n = self.examples_per_epoch();
        let bs = self.config.batch_size;
        if self.config.drop_last {
            n / bs
        } else {
            n.div_ceil(bs)
        }
    }

    /// The (image, caption) rows of one epoch in order: a pure function of `(seed, epoch)`.
    pub fn epoch_order(&self, epoch: u64) -> Vec<(usize, usize)> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        rng.set_stream(epoch);
        let mut order = self.shuffled_rows(&mut rng);
        if self.config.length_sort_window > 1 {
            self.sort_by_length_in_windows(&mut order, &mut rng);
        }
        order
    }

    /// Target tokens (kept words + `<end>`) a row of an epoch holds on average: over all pairs,
    /// or, drawing one caption per image, over images of their captions' mean.
    pub fn mean_tokens_per_row(&self) -> f64 {
        let tokens = |i: usize, j: usize| self.kept_caption((i, j)).len() as f64 + 1.0;
        match self.config.mode {
            SamplingMode::AllPairs => {
                let sum: f64 = (self.captions.iter().enumerate())
                    .flat_map(|(i, c)| (0..c.len()).map(move |j| tokens(i, j)))
                    .sum();
                sum / self.pairs as f64
            }
            SamplingMode::OneCaptionPerImage => {
                let sum: f64 = (self.usable.iter().map(|&i| i as usize))
                    .map(|i| {
                        let n = self.captions.get(i).map_or(1, Vec::len);
                        (0..n).map(|j| tokens(i, j)).sum::<f64>() / n as f64
                    })
                    .sum();
                sum / self.usable.len() as f64
            }
        }
    }

    /// The words a row's caption keeps after `max_words`.
    fn kept_caption(&self, (i, j): (usize, usize)) -> &[u32] {
        let ids = self
            .captions
            .get(i)
            .and_then(|c| c.get(j))
            .map_or(&[][..], Vec::as_slice);
        let max_words = self.config.max_words.unwrap_or(usize::MAX);
        ids.get(..max_words.min(ids.len())).unwrap_or(ids)
    }

    /// Sorts each window of `length_sort_window` batches by length (stable, so ties keep their
    /// shuffled order), then shuffles the full batches. A short last batch stays last, so
    /// `drop_last` still drops only it.
    fn sort_by_length_in_windows(&self, order: &mut [(usize, usize)], rng: &mut ChaCha8Rng) {
        let bs = self.config.batch_size;
        let window = bs.saturating_mul(self.config.length_sort_window);
        for chunk in order.chunks_mut(window) {
            chunk.sort_by_key(|&row| self.kept_caption(row).len());
        }
        let full = order.len() / bs;
        let mut blocks: Vec<usize> = (0..full).collect();
        shuffle(&mut blocks, rng);
        let sorted = order[..full * bs].to_vec();
        for (dst, &src) in order.chunks_exact_mut(bs).zip(&blocks) {
            dst.copy_from_slice(&sorted[src * bs..(src + 1) * bs]);
        }
    }

    fn shuffled_rows(&self, rng: &mut ChaCha8Rng) -> Vec<(usize, usize)> {
        match self.config.mode {
            SamplingMode::OneCaptionPerImage => {
                let mut images = self.usable.clone();
                shuffle(&mut images, rng);
                images
                    .into_iter()
                    .map(|i| {
                        let n = self.captions.get(i as usize).map_or(1, Vec::len);
                        (i as usize, below(rng, n as u64) as usize)
                    })
                    .collect()
            }
            SamplingMode::AllPairs => {
                let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(self.pairs);
                for (i, caps) in self.captions.iter().enumerate() {
                    pairs.extend((0..caps.len() as u32).map(|j| (i as u32, j)));
                }
                shuffle(&mut pairs, rng);
                pairs
                    .into_iter()
                    .map(|(i, j)| (i as usize, j as usize))
                    .collect()
            }
        }
    }

    /// Batch `index` of `epoch`, or `None` past the epoch's end. Costs a whole epoch's shuffle;
    /// iterate with [`Batcher::epoch_from`] to pay it once.
    pub fn batch(&self, epoch: u64, index: usize) -> Option<Batch> {
        self.epoch_from(epoch, index).next()
    }

    /// All batches of `epoch`.
    pub fn epoch(&self, epoch: u64) -> EpochBatches<'_> {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from `start` on: resuming a run after batch `start - 1`.
    pub fn epoch_from(&self, epoch: u64, start: usize) -> EpochBatches<'_> {
        EpochBatches {
            batcher: self,
            epoch,
            order: self.epoch_order(epoch),
            next: start,
            end: self.batches_per_epoch(),
        }
    }

    fn make_batch(&self, epoch: u64, index: usize, rows: &[(usize, usize)]) -> Batch {
        let words: Vec<&[u32]> = rows.iter().map(|&row| self.kept_caption(row)).collect();
        let time = words.iter().map(|w| w.len() + 1).max().unwrap_or(1);
        let batch = rows.len();
        let mut inputs = vec![Vocab::PAD_ID; batch * time];
        let mut targets = vec![Vocab::PAD_ID; batch * time];
        let mut mask = vec![0.0f32; batch * time];
        for (b, w) in words.iter().enumerate() {
            let row = b * time;
            let n = w.len();
            if let (Some(inp), Some(tgt), Some(m)) = (
                inputs.get_mut(row..row + n + 1),
                targets.get_mut(row..row + n + 1),
                mask.get_mut(row..row + n + 1),
            ) {
                inp[0] = Vocab::START_ID;
                inp[1..].copy_from_slice(w);
                tgt[..n].copy_from_slice(w);
                tgt[n] = Vocab::END_ID;
                m.fill(1.0);
            }
        }
        Batch {
            epoch,
            index,
            images: rows.iter().map(|r| r.0).collect(),
            captions: rows.iter().map(|r| r.1).collect(),
            inputs,
            targets,
            mask,
            batch,
            time,
        }
    }
}

/// Iterator over an epoch's batches (see [`Batcher::epoch_from`]).
#[derive(Debug)]
pub struct EpochBatches<'a> {
    batcher: &'a Batcher,
    epoch: u64,
    order: Vec<(usize, usize)>,
    next: usize,
    end: usize,
}

impl Iterator for EpochBatches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.end {
            return None;
        }
        let bs = self.batcher.config.batch_size;
        let start = self.next.checked_mul(bs)?;
        let rows = self.order.get(start..(start + bs).min(self.order.len()))?;
        if rows.is_empty() {
            return None;
        }
        let batch = self.batcher.make_batch(self.epoch, self.next, rows);
        self.next += 1;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end.saturating_sub(self.next);
        (n, Some(n))
    }
}

impl ExactSizeIterator for EpochBatches<'_> {}

/// Uniform integer in `0..n` (`n > 0`) by rejection, so no value is favoured.
fn below(rng: &mut impl RngCore, n: u64) -> u64 {
    if n <= 1 {
        return 0;
    }
    // 2^64 mod n values at the top would make the low residues likelier: reject them.
    let excess = (u64::MAX % n + 1) % n;
    loop {
        let x = rng.next_u64();
        if x <= u64::MAX - excess {
            return x % n;
        }
    }
}

/// Fisher-Yates with [`below`].
fn shuffle<T>(items: &mut [T], rng: &mut impl RngCore) {
    for i in (1..items.len()).rev() {
        let j = below(rng, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Vec<Vec<Vec<u32>>> {
        vec![
            vec![vec![4, 5], vec![6]],
            vec![],
            vec![vec![7, 8, 9]],
            vec![vec![4], vec![5], vec![6]],
        ]
    }

    #[test]
    fn shapes_shift_and_mask() {
        let cfg = BatchConfig {
            batch_size: 3,
            mode: SamplingMode::AllPairs,
            ..Default::default()
        };
        let b = Batcher::new(toy(), cfg).unwrap();
        assert_eq!(b.examples_per_epoch(), 6);
        assert_eq!(b.batches_per_epoch(), 2);
        for batch in b.epoch(0) {
            assert_eq!(batch.inputs.len(), batch.batch * batch.time);
            for r in 0..batch.batch {
                let row = |v: &Vec<u32>| v[r * batch.time..(r + 1) * batch.time].to_vec();
                let words = &toy()[batch.images[r]][batch.captions[r]];
                let (inp, tgt) = (row(&batch.inputs), row(&batch.targets));
                assert_eq!(inp[0], Vocab::START_ID);
                assert_eq!(&inp[1..=words.len()], &words[..]);
                assert_eq!(&tgt[..words.len()], &words[..]);
                assert_eq!(tgt[words.len()], Vocab::END_ID);
                let m = &batch.mask[r * batch.time..(r + 1) * batch.time];
                assert_eq!(m.iter().filter(|&&x| x == 1.0).count(), words.len() + 1);
                assert!(inp[words.len() + 1..].iter().all(|&x| x == 0));
            }
        }
    }

    #[test]
    fn all_pairs_visits_each_pair_once() {
        let cfg = BatchConfig {
            batch_size: 4,
            mode: SamplingMode::AllPairs,
            seed: 7,
            ..Default::default()
        };
        let b = Batcher::new(toy(), cfg).unwrap();
        let mut seen: Vec<(usize, usize)> = b
            .epoch(3)
            .flat_map(|x| x.images.into_iter().zip(x.captions))
            .collect();
        seen.sort();
        assert_eq!(seen, [(0, 0), (0, 1), (2, 0), (3, 0), (3, 1), (3, 2)]);
    }

    #[test]
    fn one_caption_per_image_and_reproducible_resume() {
        let cfg = BatchConfig {
            batch_size: 2,
            seed: 42,
            ..Default::default()
        };
        let b = Batcher::new(toy(), cfg.clone()).unwrap();
        let all: Vec<Batch> = b.epoch(5).collect();
        assert_eq!(all.len(), 2);
        let mut imgs: Vec<usize> = all.iter().flat_map(|x| x.images.clone()).collect();
        imgs.sort();
        assert_eq!(imgs, [0, 2, 3]);
        let again = Batcher::new(toy(), cfg).unwrap();
        assert_eq!(again.epoch_from(5, 1).next(), Some(all[1].clone()));
        assert_eq!(again.batch(5, 2), None);
    }

    #[test]
    fn epochs_differ_and_max_words_truncates() {
        let caps: Vec<Vec<Vec<u32>>> = (0..50).map(|i| vec![vec![4 + i; 10]]).collect();
        let cfg = BatchConfig {
            batch_size: 50,
            max_words: Some(3),
            ..Default::default()
        };
        let b = Batcher::new(caps, cfg).unwrap();
        let (e0, e1) = (b.batch(0, 0).unwrap(), b.batch(1, 0).unwrap());
        assert_ne!(e0.images, e1.images);
        assert_eq!(e0.time, 4);
    }

    #[test]
    fn drop_last_and_errors() {
        let cfg = BatchConfig {
            batch_size: 2,
            drop_last: true,
            mode: SamplingMode::AllPairs,
            ..Default::default()
        };
        let b = Batcher::new(toy(), cfg).unwrap();
        assert_eq!(b.epoch(0).count(), 3);
        let cfg = BatchConfig {
            batch_size: 4,
            drop_last: true,
            mode: SamplingMode::AllPairs,
            ..Default::default()
        };
        let b = Batcher::new(toy(), cfg).unwrap();
        assert_eq!(b.epoch(0).map(|x| x.batch).collect::<Vec<_>>(), [4]);
        assert_eq!(
            Batcher::new(
                toy(),
                BatchConfig {
                    batch_size: 0,
                    ..Default::default()
                }
            )
            .unwrap_err(),
            BatchError::ZeroBatchSize
        );
        assert_eq!(
            Batcher::new(vec![vec![]], BatchConfig::default()).unwrap_err(),
            BatchError::NoCaptions
        );
    }

    /// Captions of lengths 1..=30 words, `n` images with 5 each.
    fn varied(n: usize) -> Vec<Vec<Vec<u32>>> {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        (0..n)
            .map(|_| {
                (0..5)
                    .map(|_| vec![4; 1 + below(&mut rng, 30) as usize])
                    .collect()
            })
            .collect()
    }

    fn padding_share(b: &Batcher, epoch: u64) -> f64 {
        let (mut real, mut all) = (0.0, 0.0);
        for batch in b.epoch(epoch) {
            real += batch.mask.iter().map(|&m| m as f64).sum::<f64>();
            all += (batch.batch * batch.time) as f64;
        }
        1.0 - real / all
    }

    #[test]
    fn length_sorted_windows_cut_padding_and_keep_every_pair() {
        let plain = BatchConfig {
            batch_size: 16,
            mode: SamplingMode::AllPairs,
            seed: 3,
            ..Default::default()
        };
        let sorted = BatchConfig {
            length_sort_window: 20,
            ..plain.clone()
        };
        let (p, s) = (
            Batcher::new(varied(200), plain).unwrap(),
            Batcher::new(varied(200), sorted).unwrap(),
        );
        assert!(padding_share(&p, 1) > 0.3, "{}", padding_share(&p, 1));
        assert!(padding_share(&s, 1) < 0.05, "{}", padding_share(&s, 1));
        let rows = |b: &Batcher| {
            let mut v: Vec<(usize, usize)> = b
                .epoch(1)
                .flat_map(|x| x.images.into_iter().zip(x.captions))
                .collect();
            v.sort();
            v
        };
        assert_eq!(rows(&p), rows(&s));
        // Short batches are not all at the start: the sorted batches are shuffled.
        let times: Vec<usize> = s.epoch(1).map(|b| b.time).collect();
        assert!(times.windows(2).any(|w| w[0] > w[1]), "{times:?}");
        let again = Batcher::new(varied(200), s.config().clone()).unwrap();
        assert_eq!(again.batch(1, 7), s.epoch(1).nth(7));
        assert_ne!(s.epoch_order(1), s.epoch_order(2));
    }

    #[test]
    fn mean_tokens_per_row_counts_end_and_max_words() {
        let pairs = BatchConfig {
            mode: SamplingMode::AllPairs,
            ..Default::default()
        };
        // toy(): 2, 1, 3, 1, 1, 1 words, each + <end>.
        let b = Batcher::new(toy(), pairs.clone()).unwrap();
        assert!((b.mean_tokens_per_row() - 15.0 / 6.0).abs() < 1e-12);
        let short = BatchConfig {
            max_words: Some(1),
            ..pairs
        };
        assert!((Batcher::new(toy(), short).unwrap().mean_tokens_per_row() - 2.0).abs() < 1e-12);
        // One caption per image: images 0, 2, 3 average 2.5, 4 and 2 tokens.
        let b = Batcher::new(toy(), BatchConfig::default()).unwrap();
        assert!((b.mean_tokens_per_row() - 8.5 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn below_is_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for n in 1..200u64 {
            assert!(below(&mut rng, n) < n);
        }
    }
}
