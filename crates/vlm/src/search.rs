//! Greedy search, beam search and sampling with the semantics of `transformers`' `generate`
//! (5.x, `GenerationMixin._sample` / `_beam_search`), so that the same model gives the same
//! token ids here and there.
//!
//! Why not `captioner-generate`'s search: its beam search ranks finished hypotheses by its own
//! rules (one pool per image, `<start>`/`<end>` fixed ids). Matching Hugging Face to the token
//! means reproducing their exact bookkeeping: `2 * num_beams` candidates per step, the `-1e9`
//! masks, `length_penalty` as `sum_logprobs / generated_len ** length_penalty`, and the
//! `early_stopping` heuristic, all in f32 as torch computes them.

use crate::error::{Result, VlmError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// When beam search stops (`transformers`' `early_stopping`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EarlyStopping {
    /// `False` (the default): stop an image once no running beam is likely to beat its finished
    /// ones, judged at the current length.
    #[default]
    Heuristic,
    /// `True`: stop an image as soon as it has `num_beams` finished hypotheses.
    Immediate,
    /// `"never"`: the canonical beam search, judged at the best reachable length.
    Never,
}

/// Generation settings, named and defaulted as `transformers`' `generate` keyword arguments.
#[derive(Clone, Debug)]
pub struct HfGenerateOptions {
    /// 1: greedy search (or sampling with `do_sample`); more: beam search.
    pub num_beams: usize,
    /// Sample instead of taking the most likely token (needs `num_beams == 1`).
    pub do_sample: bool,
    /// Sampling temperature.
    pub temperature: f32,
    /// Sampling: keep the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Sampling: keep the smallest set of tokens whose probability reaches `top_p` (1.0: all).
    pub top_p: f32,
    /// Sampling seed: the same seed gives the same captions.
    pub seed: u64,
    /// Beam search: finished hypotheses are ranked by `sum_logprobs / len ** length_penalty`
    /// (`len` counts the generated tokens, end token included). > 0 favours longer captions.
    pub length_penalty: f32,
    /// Beam search stopping rule.
    pub early_stopping: EarlyStopping,
    /// Hypotheses returned per image, best first (at most `num_beams`).
    pub num_return_sequences: usize,
    /// Most tokens generated after the prompt (end token included).
    pub max_new_tokens: usize,
    /// The end token is banned until this many tokens were generated.
    pub min_new_tokens: usize,
    /// No n-gram of this size appears twice in a sequence, prompt included (0: off).
    pub no_repeat_ngram_size: usize,
    /// Text the caption must start with (BLIP's conditional captioning, e.g. "a picture of").
    pub prompt: Option<String>,
}

impl Default for HfGenerateOptions {
    fn default() -> Self {
        Self {
            num_beams: 1,
            do_sample: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            seed: 0,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            num_return_sequences: 1,
            max_new_tokens: 30,
            min_new_tokens: 0,
            no_repeat_ngram_size: 0,
            prompt: None,
        }
    }
}

impl HfGenerateOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(VlmError::Options(m.to_string()));
        if self.num_beams == 0 {
            return bad("num_beams must be at least 1");
        }
        if self.do_sample && self.num_beams > 1 {
            return bad("sampling with num_beams > 1 (beam sampling) is not supported");
        }
        if self.num_return_sequences == 0 || self.num_return_sequences > self.num_beams.max(1) {
            return bad("num_return_sequences must be between 1 and num_beams");
        }
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens must be at least 1");
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad("temperature must be a positive number");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p must be in (0, 1]");
        }
        if !self.length_penalty.is_finite() {
            return bad("length_penalty must be finite");
        }
        Ok(())
    }
}

/// One generated sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    /// Token ids after the prompt, the end token included when the model emitted it.
    pub tokens: Vec<u32>,
    /// Summed log-probability of `tokens` (after n-gram and minimum-length bans).
    pub log_prob: f32,
    /// What hypotheses are ranked by: `log_prob` for greedy search and sampling, the
    /// length-penalised score (Hugging Face's `sequences_scores`) for beam search.
    pub score: f32,
    /// Whether the model emitted the end token (else the caption was cut at `max_new_tokens`).
    pub finished: bool,
}

/// A decoder session over `rows` sequences: feeds tokens, reorders its cache.
pub(crate) trait Stepper {
    /// Feeds `t` tokens per row (`ids` row-major, `[rows, t]`) and returns the logits of each
    /// row's last position, `[rows, vocab]` row-major.
    fn step(&mut self, ids: &[u32], t: usize) -> Result<Vec<f32>>;
    /// Afterwards row `i` is the old row `rows[i]`; callers only move a row within the rows of
    /// its own image.
    fn select(&mut self, rows: &[usize]) -> Result<()>;
}

/// Ids the search needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Special {
    pub eos: u32,
    pub pad: u32,
}

const MASK: f32 = -1.0e9;

fn log_softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = x.iter().map(|v| (v - max).exp()).sum();
    let log_z = max + sum.ln();
    for v in x.iter_mut() {
        *v -= log_z;
    }
}

/// `NoRepeatNGramLogitsProcessor` and `MinNewTokensLengthLogitsProcessor`: bans by `-inf`.
fn apply_bans(
    scores: &mut [f32],
    seq: &[u32],
    prompt_len: usize,
    o: &HfGenerateOptions,
    sp: Special,
) {
    let n = o.no_repeat_ngram_size;
    let cur = seq.len();
    if n > 0 && cur >= n {
        // The last n - 1 tokens may not be followed by any token that followed them before.
        let prefix = &seq[cur + 1 - n..];
        for i in 0..=cur - n {
            if &seq[i..i + n - 1] == prefix {
                if let Some(s) = scores.get_mut(seq[i + n - 1] as usize) {
                    *s = f32::NEG_INFINITY;
                }
            }
        }
    }
    if cur - prompt_len < o.min_new_tokens {
        if let Some(s) = scores.get_mut(sp.eos as usize) {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// Index of the largest value, the first one on ties (as `torch.argmax`).
fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// Indices of the `k` largest values, largest first, lower index first on ties.
fn top_k_indices(x: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    let k = k.min(idx.len());
    let cmp = |a: &usize, b: &usize| x[*b].total_cmp(&x[*a]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx
}

/// Temperature, top-k and top-p warpers (in `transformers`' order), then a draw.
fn sample(scores: &mut [f32], o: &HfGenerateOptions, rng: &mut ChaCha8Rng) -> usize {
    if o.temperature != 1.0 {
        for s in scores.iter_mut() {
            *s /= o.temperature;
        }
    }
    if o.top_k > 0 && o.top_k < scores.len() {
        let kth = scores[*top_k_indices(scores, o.top_k).last().unwrap_or(&0)];
        for s in scores.iter_mut() {
            if *s < kth {
                *s = f32::NEG_INFINITY;
            }
        }
    }
    let mut probs = scores.to_vec();
    log_softmax(&mut probs);
    for p in probs.iter_mut() {
        *p = p.exp();
    }
    if o.top_p < 1.0 {
        // Drop the least likely tokens whose cumulative probability stays within 1 - top_p,
        // always keeping the most likely one.
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|a, b| probs[*a].total_cmp(&probs[*b]));
        let mut cum = 0.0f32;
        for (rank, &i) in order.iter().enumerate() {
            cum += probs[i];
            if cum <= 1.0 - o.top_p && rank + 1 < order.len() {
                probs[i] = 0.0;
            } else {
                break;
            }
        }
    }
    let total: f32 = probs.iter().sum();
    let mut r = rng.random::<f32>() * total;
    let mut last = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            last = i;
            if r < p {
                return i;
            }
            r -= p;
        }
    }
    last
}

/// Greedy search or sampling over `images` rows that all start with `prompt`, which this feeds
/// to the model first (`transformers`' `_sample`).
pub(crate) fn single_path(
    model: &mut dyn Stepper,
    images: usize,
    vocab: usize,
    prompt: &[u32],
    o: &HfGenerateOptions,
    sp: Special,
) -> Result<Vec<Vec<Generated>>> {
    let p = prompt.len();
    let max_len = p + o.max_new_tokens;
    let mut seqs: Vec<Vec<u32>> = vec![prompt.to_vec(); images];
    let mut out: Vec<Generated> = (0..images)
        .map(|_| Generated {
            tokens: Vec::new(),
            log_prob: 0.0,
            score: 0.0,
            finished: false,
        })
        .collect();
    let mut running = vec![true; images];
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    let mut logits = model.step(&prompt.repeat(images), p)?;
    loop {
        let mut next = Vec::with_capacity(images);
        for r in 0..images {
            let scores = &mut logits[r * vocab..(r + 1) * vocab];
            apply_bans(scores, &seqs[r], p, o, sp);
            let mut logp = scores.to_vec();
            log_softmax(&mut logp);
            let tok = if o.do_sample {
                sample(scores, o, &mut rng)
            } else {
                argmax(scores)
            };
            let tok = if running[r] { tok as u32 } else { sp.pad };
            seqs[r].push(tok);
            if running[r] {
                let g = &mut out[r];
                g.tokens.push(tok);
                g.log_prob += logp[tok as usize];
                g.score = g.log_prob;
                g.finished = tok == sp.eos;
                if tok == sp.eos || seqs[r].len() >= max_len {
                    running[r] = false;
                }
            }
            next.push(tok);
        }
        if !running.iter().any(|&x| x) {
            break;
        }
        logits = model.step(&next, 1)?;
    }
    Ok(out.into_iter().map(|g| vec![g]).collect())
}

#[derive(Clone, Debug)]
struct Hyp {
    seq: Vec<u32>,
    /// Ranking value: the running sum of log-probs, or the finished score.
    score: f32,
    /// Summed log-probs.
    sum: f32,
    finished: bool,
}

/// Beam search, batched: image `b`'s beams are rows `b * num_beams ..`.
pub(crate) fn beam_search(
    model: &mut dyn Stepper,
    images: usize,
    vocab: usize,
    prompt: &[u32],
    o: &HfGenerateOptions,
    sp: Special,
) -> Result<Vec<Vec<Generated>>> {
    let nb = o.num_beams;
    let p = prompt.len();
    let max_len = p + o.max_new_tokens;
    let keep = 2 * nb;
    let lp = f64::from(o.length_penalty);
    let start = |score| Hyp {
        seq: prompt.to_vec(),
        score,
        sum: score,
        finished: false,
    };
    let mut running: Vec<Vec<Hyp>> = (0..images)
        .map(|_| {
            (0..nb)
                .map(|j| start(if j == 0 { 0.0 } else { MASK }))
                .collect()
        })
        .collect();
    let mut pool: Vec<Vec<Hyp>> = (0..images).map(|_| vec![start(MASK); nb]).collect();
    let mut improvable = vec![true; images];
    let mut cur = p;
    let mut logits = model.step(&prompt.repeat(images * nb), p)?;
    loop {
        let mut all_hit = true;
        let mut rows = Vec::with_capacity(images * nb);
        for b in 0..images {
            let mut acc = vec![0f32; nb * vocab];
            for j in 0..nb {
                let row = b * nb + j;
                let lps = &mut logits[row * vocab..(row + 1) * vocab];
                log_softmax(lps);
                apply_bans(lps, &running[b][j].seq, p, o, sp);
                let base = running[b][j].score;
                for (a, &l) in acc[j * vocab..(j + 1) * vocab].iter_mut().zip(lps.iter()) {
                    *a = l + base;
                }
            }
            let cands: Vec<(usize, u32, f32, bool)> = top_k_indices(&acc, keep)
                .into_iter()
                .map(|i| {
                    let tok = (i % vocab) as u32;
                    let hit = tok == sp.eos || cur + 1 >= max_len;
                    (i / vocab, tok, acc[i], hit)
                })
                .collect();
            all_hit &= cands.iter().all(|c| c.3);
            // Next running beams: the best candidates that did not stop.
            let masked: Vec<f32> = cands
                .iter()
                .map(|c| if c.3 { c.2 + MASK } else { c.2 })
                .collect();
            let next: Vec<Hyp> = top_k_indices(&masked, nb)
                .into_iter()
                .map(|k| {
                    let (j, tok, _, _) = cands[k];
                    rows.push(b * nb + j);
                    let mut seq = running[b][j].seq.clone();
                    seq.push(tok);
                    Hyp {
                        seq,
                        score: masked[k],
                        sum: masked[k],
                        finished: false,
                    }
                })
                .collect();
            // Finished hypotheses: the stopped candidates among the top `num_beams` compete
            // with those already finished.
            let denom = ((cur + 1 - p) as f64).powf(lp) as f32;
            let full =
                o.early_stopping == EarlyStopping::Immediate && pool[b].iter().all(|h| h.finished);
            let mut merged = pool[b].clone();
            for (k, &(j, tok, val, hit)) in cands.iter().enumerate() {
                let mut s = val / denom;
                if full {
                    s += MASK;
                }
                if !improvable[b] {
                    s += MASK;
                }
                let done = hit && k < nb;
                if !done {
                    s += MASK;
                }
                let mut seq = running[b][j].seq.clone();
                seq.push(tok);
                merged.push(Hyp {
                    seq,
                    score: s,
                    sum: val,
                    finished: done,
                });
            }
            let scores: Vec<f32> = merged.iter().map(|h| h.score).collect();
            pool[b] = top_k_indices(&scores, nb)
                .into_iter()
                .map(|i| merged[i].clone())
                .collect();
            running[b] = next;
        }
        cur += 1;
        for b in 0..images {
            let best_len = if o.early_stopping == EarlyStopping::Never && o.length_penalty > 0.0 {
                max_len - p
            } else {
                cur - p
            };
            let best = running[b][0].score / (best_len as f64).powf(lp) as f32;
            let min = pool[b]
                .iter()
                .map(|h| h.score)
                .fold(f32::INFINITY, f32::min);
            let beatable = pool[b]
                .iter()
                .any(|h| best > if h.finished { min } else { MASK });
            improvable[b] &= beatable;
        }
        let all_finished = pool.iter().all(|ps| ps.iter().all(|h| h.finished));
        let go_on = improvable.iter().any(|&x| x)
            && !(all_finished && o.early_stopping == EarlyStopping::Immediate)
            && !all_hit;
        if !go_on {
            break;
        }
        model.select(&rows)?;
        let last: Vec<u32> = running
            .iter()
            .flat_map(|rs| rs.iter().map(|h| *h.seq.last().unwrap_or(&sp.pad)))
            .collect();
        logits = model.step(&last, 1)?;
    }
    Ok(pool
        .into_iter()
        .map(|ps| {
            ps.into_iter()
                .take(o.num_return_sequences)
                .map(|h| Generated {
                    finished: h.seq.last() == Some(&sp.eos) && h.seq.len() > p,
                    tokens: h.seq[p..].to_vec(),
                    log_prob: h.sum,
                    score: h.score,
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ngram_bans_follow_earlier_occurrences_of_the_prefix() {
        let o = HfGenerateOptions {
            no_repeat_ngram_size: 2,
            ..Default::default()
        };
        let sp = Special { eos: 9, pad: 0 };
        let mut s = vec![0.0f32; 10];
        apply_bans(&mut s, &[1, 2, 3, 1, 4, 1], 1, &o, sp);
        let banned: Vec<usize> = (0..10).filter(|&i| s[i].is_infinite()).collect();
        assert_eq!(banned, vec![2, 4]);
    }

    #[test]
    fn top_k_prefers_lower_index_on_ties() {
        assert_eq!(top_k_indices(&[1.0, 3.0, 3.0, 0.5], 3), vec![1, 2, 0]);
    }
}
