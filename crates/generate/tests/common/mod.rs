//! Toy decoders for the generation tests: deterministic tables, so every search result can be
//! checked by replaying sequences and by brute force.
#![allow(dead_code)]

use captioner_decode::model::{log_softmax_rows, END_ID, PAD_ID, START_ID, UNK_ID};
use captioner_decode::params::ParamSet;
use captioner_decode::{
    DecodeError, DecodeState, Decoder, Features, PassOptions, PassStats, TeacherBatch,
};
use captioner_generate::{GenerateConfig, LengthPenalty};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Logits = `table[previous token]` + a per-image offset (`pooled · feat_w`) + optionally a term of
/// the whole history (`hist_w * sin((1 + sum of fed tokens) * (j + 1))`, so not Markov) + biases.
/// Attention (when the features have a grid): softmax over cells of
/// `spatial[cell][0] * (1 + 0.3 * fed token)`.
pub struct Toy {
    pub vocab: usize,
    pub dim: usize,
    pub table: Vec<f32>,
    pub feat_w: Vec<f32>,
    pub hist_w: f32,
    /// Added to the logit of each token (e.g. `-inf` on `<end>`: a decoder that never ends).
    pub bias: Vec<f32>,
    /// Emit NaN log-probs at this step.
    pub nan_at: Option<usize>,
    params: ParamSet,
}

impl Toy {
    pub fn new(seed: u64, vocab: usize, dim: usize, hist_w: f32) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let table = (0..vocab * vocab)
            .map(|_| rng.random_range(-2.0f32..2.0))
            .collect();
        let feat_w = (0..dim * vocab)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        Self {
            vocab,
            dim,
            table,
            feat_w,
            hist_w,
            bias: vec![0.0; vocab],
            nan_at: None,
            params: ParamSet::new(),
        }
    }
}

pub struct ToyState<'a> {
    dec: &'a Toy,
    offsets: Vec<f32>,
    acc: Vec<f32>,
    cell_scores: Vec<f32>,
    cells: usize,
    steps: usize,
}

impl Decoder for Toy {
    fn kind(&self) -> &'static str {
        "toy"
    }
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn needs_spatial(&self) -> bool {
        false
    }
    fn has_attention(&self) -> bool {
        true
    }
    fn params(&self) -> &ParamSet {
        &self.params
    }
    fn params_mut(&mut self) -> &mut ParamSet {
        &mut self.params
    }
    fn forward(
        &mut self,
        _feats: &Features,
        _batch: &TeacherBatch,
        _opts: &PassOptions,
        _grads: bool,
        _rng: &mut ChaCha8Rng,
    ) -> Result<PassStats, DecodeError> {
        Err(DecodeError::Config("the toy decoder does not train".into()))
    }
    fn start<'s>(&'s self, feats: &Features) -> Result<Box<dyn DecodeState + 's>, DecodeError> {
        feats.validate()?;
        let (b, f, v) = (feats.batch, feats.dim, self.vocab);
        assert_eq!(f, self.dim);
        let mut offsets = vec![0.0; b * v];
        for i in 0..b {
            for k in 0..f {
                let x = feats.pooled[i * f + k];
                for j in 0..v {
                    offsets[i * v + j] += x * self.feat_w[k * v + j];
                }
            }
        }
        let cells = feats.cells;
        let cell_scores = match feats.spatial {
            Some(s) => (0..b * cells).map(|c| s[c * f]).collect(),
            None => Vec::new(),
        };
        Ok(Box::new(ToyState {
            dec: self,
            offsets,
            acc: vec![0.0; b],
            cell_scores,
            cells,
            steps: 0,
        }))
    }
}

impl DecodeState for ToyState<'_> {
    fn rows(&self) -> usize {
        self.acc.len()
    }
    fn step(
        &mut self,
        tokens: &[u32],
        log_probs: &mut [f32],
        attention: Option<&mut [f32]>,
    ) -> Result<(), DecodeError> {
        let (rows, v, d) = (self.rows(), self.dec.vocab, self.dec);
        if tokens.len() != rows || log_probs.len() != rows * v {
            return Err(DecodeError::Shape(format!(
                "{} tokens, {} log-probs for {rows} rows",
                tokens.len(),
                log_probs.len()
            )));
        }
        if self.steps == 0 {
            assert!(
                tokens.iter().all(|&t| t == START_ID),
                "first step must feed <start>"
            );
        } else {
            assert!(
                tokens
                    .iter()
                    .all(|&t| t != START_ID && t != PAD_ID && t != END_ID),
                "fed a special token after the first step: {tokens:?}"
            );
        }
        for (r, &t) in tokens.iter().enumerate() {
            self.acc[r] += t as f32;
            let out = &mut log_probs[r * v..(r + 1) * v];
            for (j, o) in out.iter_mut().enumerate() {
                *o = d.table[t as usize * v + j]
                    + self.offsets[r * v + j]
                    + d.hist_w * ((1.0 + self.acc[r]) * (j as f32 + 1.0)).sin()
                    + d.bias[j];
            }
        }
        log_softmax_rows(log_probs, v);
        if d.nan_at == Some(self.steps) {
            log_probs[v - 1] = f32::NAN;
        }
        if let Some(att) = attention {
            let p = self.cells;
            assert_eq!(att.len(), rows * p);
            for (r, &t) in tokens.iter().enumerate() {
                let a = &mut att[r * p..(r + 1) * p];
                for (c, x) in a.iter_mut().enumerate() {
                    *x = self.cell_scores[r * p + c] * (1.0 + 0.3 * t as f32);
                }
                log_softmax_rows(a, p);
                a.iter_mut().for_each(|x| *x = x.exp());
            }
        }
        self.steps += 1;
        Ok(())
    }
    fn select(&mut self, rows: &[usize]) -> Result<(), DecodeError> {
        let v = self.dec.vocab;
        let p = self.cells;
        if rows.iter().any(|&r| r >= self.rows()) {
            return Err(DecodeError::Shape("select: row out of range".into()));
        }
        self.offsets = captioner_decode::model::gather_rows(&self.offsets, v, rows);
        self.acc = rows.iter().map(|&r| self.acc[r]).collect();
        if p > 0 {
            self.cell_scores = captioner_decode::model::gather_rows(&self.cell_scores, p, rows);
        }
        Ok(())
    }
}

/// Owned features of `batch` random images (with a `cells`-cell grid when `cells > 0`).
pub struct OwnedFeats {
    pub batch: usize,
    pub dim: usize,
    pub cells: usize,
    pub pooled: Vec<f32>,
    pub spatial: Option<Vec<f32>>,
}

impl OwnedFeats {
    pub fn random(seed: u64, batch: usize, dim: usize, cells: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let pooled = (0..batch * dim)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let spatial = (cells > 0).then(|| {
            (0..batch * cells * dim)
                .map(|_| rng.random_range(-2.0f32..2.0))
                .collect()
        });
        Self {
            batch,
            dim,
            cells,
            pooled,
            spatial,
        }
    }

    pub fn view(&self) -> Features<'_> {
        Features {
            batch: self.batch,
            dim: self.dim,
            pooled: &self.pooled,
            spatial: self.spatial.as_deref(),
            cells: self.cells,
        }
    }

    /// Image `i` alone.
    pub fn image(&self, i: usize) -> OwnedFeats {
        let (f, p) = (self.dim, self.cells);
        OwnedFeats {
            batch: 1,
            dim: f,
            cells: p,
            pooled: self.pooled[i * f..(i + 1) * f].to_vec(),
            spatial: self
                .spatial
                .as_ref()
                .map(|s| s[i * p * f..(i + 1) * p * f].to_vec()),
        }
    }
}

/// Feeds `<start>` + `words` to a fresh one-image state and sums the log-probs of `words` (plus
/// `<end>` when `end`); also returns each word's attention. Uses `step` only, never `select`.
pub fn replay(dec: &Toy, one: &OwnedFeats, words: &[u32], end: bool) -> (f32, Vec<Vec<f32>>) {
    assert_eq!(one.batch, 1);
    let feats = one.view();
    let mut state = dec.start(&feats).unwrap();
    let v = dec.vocab;
    let mut lp = vec![0.0; v];
    let mut att = vec![0.0; one.cells];
    let mut sum = 0.0f32;
    let mut atts = Vec::new();
    let mut prev = START_ID;
    let n = words.len() + usize::from(end);
    for i in 0..n {
        let want = (one.cells > 0).then_some(&mut att[..]);
        state.step(&[prev], &mut lp, want).unwrap();
        let next = if i < words.len() { words[i] } else { END_ID };
        sum += lp[next as usize];
        if i < words.len() {
            atts.push(att.clone());
        }
        prev = next;
    }
    (sum, atts)
}

/// Every caption the constraints allow (no `no_repeat_ngram`), scored by replay: `(score,
/// log_prob, words, finished)`, best first.
pub fn brute_force(
    dec: &Toy,
    one: &OwnedFeats,
    cfg: &GenerateConfig,
    penalty: LengthPenalty,
) -> Vec<(f32, f32, Vec<u32>, bool)> {
    let words: Vec<u32> = (0..dec.vocab as u32)
        .filter(|&t| t != PAD_ID && t != START_ID && t != END_ID)
        .filter(|&t| !(cfg.suppress_unk && t == UNK_ID))
        .collect();
    let mut out = Vec::new();
    let mut seqs: Vec<Vec<u32>> = vec![vec![]];
    for k in 0..=cfg.max_words {
        for s in &seqs {
            if k < cfg.max_words && k >= cfg.min_words {
                let (lp, _) = replay(dec, one, s, true);
                out.push((penalty.score(lp, k + 1), lp, s.clone(), true));
            }
            if k == cfg.max_words {
                let (lp, _) = replay(dec, one, s, false);
                out.push((penalty.score(lp, k), lp, s.clone(), false));
            }
        }
        seqs = seqs
            .iter()
            .flat_map(|s| {
                words.iter().map(move |&w| {
                    let mut s = s.clone();
                    s.push(w);
                    s
                })
            })
            .collect();
    }
    out.sort_by(|a, b| b.0.total_cmp(&a.0));
    out
}

/// A beam wide enough that nothing is ever pruned for `dec` under `cfg` (`max_words` small).
pub fn exhaustive_beam(dec: &Toy, cfg: &GenerateConfig) -> usize {
    let w = dec.vocab - 3 - usize::from(cfg.suppress_unk);
    let mut total = 1; // candidates at the widest step, and all captions
    let mut finals = 0;
    for t in 0..=cfg.max_words {
        total = total.max(w.pow(t as u32) * (w + 1));
        finals += w.pow(t as u32);
    }
    total.max(finals)
}
