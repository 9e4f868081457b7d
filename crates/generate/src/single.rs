//! One hypothesis per image, one row per image: greedy search and sampling.

use crate::constraints::argmax;
use crate::topk::TopK;
use crate::{GenerateError, Hypothesis, Run};
use captioner_decode::model::{END_ID, START_ID};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Picks the next token of an image from its (banned-in-place) log-probabilities; `Ok(None)` when
/// every token is banned, `Err(token)` at a NaN.
pub(crate) trait Chooser {
    fn choose(&mut self, image: usize, log_probs: &[f32]) -> Result<Option<usize>, usize>;
}

/// Greedy search: the most likely token (the lowest id on ties).
pub(crate) struct Greedy;

impl Chooser for Greedy {
    fn choose(&mut self, _image: usize, log_probs: &[f32]) -> Result<Option<usize>, usize> {
        argmax(log_probs)
    }
}

/// Temperature / top-k / nucleus sampling with one random stream per image.
pub(crate) struct Sampler {
    temperature: f32,
    top_p: f32,
    rngs: Vec<ChaCha8Rng>,
    /// `top_k` best tokens when `top_k > 0`.
    top: Option<TopK>,
    /// (weight, token) of the tokens sampled among.
    pool: Vec<(f32, u32)>,
}

impl Sampler {
    pub fn new(images: usize, temperature: f32, top_k: usize, top_p: f32, seed: u64) -> Self {
        let rngs = (0..images)
            .map(|i| {
                let mut r = ChaCha8Rng::seed_from_u64(seed);
                r.set_stream(i as u64);
                r
            })
            .collect();
        Self {
            temperature,
            top_p,
            rngs,
            top: (top_k > 0).then(|| TopK::new(top_k)),
            pool: Vec::new(),
        }
    }
}

impl Chooser for Sampler {
    fn choose(&mut self, image: usize, log_probs: &[f32]) -> Result<Option<usize>, usize> {
        let pool = &mut self.pool;
        pool.clear();
        match &mut self.top {
            Some(top) => {
                top.clear();
                top.scan(0.0, 0, log_probs)?;
                pool.extend(top.items().iter().map(|c| (c.score, c.tok)));
            }
            None => {
                for (i, &v) in log_probs.iter().enumerate() {
                    if v > f32::NEG_INFINITY {
                        pool.push((v, i as u32));
                    } else if v.is_nan() {
                        return Err(i);
                    }
                }
            }
        }
        let Some(max) = pool.iter().map(|p| p.0).reduce(f32::max) else {
            return Ok(None);
        };
        // Weights relative to the best token, after temperature.
        let inv_t = 1.0 / self.temperature;
        let mut total = 0.0f64;
        for p in pool.iter_mut() {
            p.0 = ((p.0 - max) * inv_t).exp();
            total += p.0 as f64;
        }
        if self.top_p < 1.0 && pool.len() > 1 {
            pool.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let target = self.top_p as f64 * total;
            let mut cum = 0.0f64;
            let mut keep = pool.len();
            for (i, p) in pool.iter().enumerate() {
                cum += p.0 as f64;
                if cum >= target {
                    keep = i + 1;
                    break;
                }
            }
            pool.truncate(keep);
            total = cum.min(total);
        }
        let u = self.rngs[image].random::<f64>() * total;
        let mut cum = 0.0f64;
        for &(w, tok) in pool.iter() {
            cum += w as f64;
            if u < cum {
                return Ok(Some(tok as usize));
            }
        }
        Ok(pool.last().map(|p| p.1 as usize))
    }
}

/// Generates one hypothesis per image, choosing each token with `chooser`.
pub(crate) fn single_path(
    run: &Run,
    chooser: &mut dyn Chooser,
) -> Result<Vec<Vec<Hypothesis>>, GenerateError> {
    let (n, v, cells, max_words) = (run.images, run.vocab, run.cells, run.max_words);
    let mut state = run.start()?;
    let mut out: Vec<Hypothesis> = (0..n)
        .map(|_| Hypothesis {
            tokens: Vec::with_capacity(max_words),
            log_prob: 0.0,
            score: 0.0,
            finished: false,
            attention: (cells > 0).then(|| Vec::with_capacity(max_words)),
        })
        .collect();
    let mut tokens = vec![START_ID; n];
    let mut images: Vec<usize> = (0..n).collect();
    let mut log_probs = vec![0.0f32; n * v];
    let mut att = vec![0.0f32; n * cells];
    let mut keep: Vec<usize> = Vec::with_capacity(n);
    let mut next_images: Vec<usize> = Vec::with_capacity(n);

    for t in 0..max_words {
        let rows = images.len();
        state.step(
            &tokens[..rows],
            &mut log_probs[..rows * v],
            (cells > 0).then(|| &mut att[..rows * cells]),
        )?;
        keep.clear();
        next_images.clear();
        for (r, &img) in images.iter().enumerate() {
            let lp = &mut log_probs[r * v..(r + 1) * v];
            let h = &mut out[img];
            run.bans.apply(lp, &h.tokens);
            let tok = chooser
                .choose(img, lp)
                .map_err(|token| GenerateError::NotANumber { step: t, token })?;
            let Some(tok) = tok else {
                continue; // every token banned: the caption stays as it is
            };
            h.log_prob += lp[tok];
            if tok as u32 == END_ID {
                h.finished = true;
                continue;
            }
            h.tokens.push(tok as u32);
            if let Some(a) = &mut h.attention {
                a.push(att[r * cells..(r + 1) * cells].to_vec());
            }
            if t + 1 < max_words {
                tokens[keep.len()] = tok as u32;
                keep.push(r);
                next_images.push(img);
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() != rows {
            state.select(&keep)?;
        }
        std::mem::swap(&mut images, &mut next_images);
    }
    Ok(out
        .into_iter()
        .map(|mut h| {
            h.score = h.log_prob;
            vec![h]
        })
        .collect())
}
