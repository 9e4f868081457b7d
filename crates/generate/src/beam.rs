//! Beam search, batched: the beams of every image are rows of one decoder state.

use crate::constraints::Bans;
use crate::topk::{Cand, TopK};
use crate::{GenerateError, Hypothesis, LengthPenalty, Run};
use captioner_decode::model::{END_ID, START_ID};

/// Beam-search settings.
pub(crate) struct BeamOptions {
    pub size: usize,
    pub penalty: LengthPenalty,
    pub top_k: usize,
}

/// An image still searching: its live beams are rows `start..start + len`.
#[derive(Clone, Copy, Debug)]
struct Span {
    image: usize,
    start: usize,
    len: usize,
}

/// Finished hypotheses of one image, best first, at most `cap`.
struct Pool {
    cap: usize,
    hyps: Vec<Hypothesis>,
}

impl Pool {
    fn full(&self) -> bool {
        self.hyps.len() >= self.cap
    }

    fn worst(&self) -> f32 {
        self.hyps.last().map_or(f32::NEG_INFINITY, |h| h.score)
    }

    /// Whether a hypothesis of this score would get in (ties lose to those already in).
    fn accepts(&self, score: f32) -> bool {
        !self.full() || score > self.worst()
    }

    fn insert(&mut self, h: Hypothesis) {
        let at = self.hyps.partition_point(|x| x.score >= h.score);
        self.hyps.insert(at, h);
        self.hyps.truncate(self.cap);
    }
}

/// Builds a hypothesis from a row's word history plus an optional last word.
fn hypothesis(
    words: &[u32],
    last: Option<u32>,
    log_prob: f32,
    score: f32,
    finished: bool,
    att_hist: Option<(&[f32], &[f32], usize)>,
) -> Hypothesis {
    let mut tokens = Vec::with_capacity(words.len() + 1);
    tokens.extend_from_slice(words);
    tokens.extend(last);
    let attention = att_hist.map(|(hist, last_att, cells)| {
        let mut a: Vec<Vec<f32>> = hist.chunks_exact(cells).map(<[f32]>::to_vec).collect();
        if last.is_some() {
            a.push(last_att.to_vec());
        }
        a
    });
    Hypothesis {
        tokens,
        log_prob,
        score,
        finished,
        attention,
    }
}

pub(crate) fn beam_search(
    run: &Run,
    opts: &BeamOptions,
) -> Result<Vec<Vec<Hypothesis>>, GenerateError> {
    let (n, v, cells, max_words) = (run.images, run.vocab, run.cells, run.max_words);
    let bans: &Bans = &run.bans;
    let size = opts.size;
    let mut state = run.start()?;
    let max_rows = n * size;

    // Per row (all images' beams, image by image): last token, summed log-prob, words so far
    // (`[rows, t]`), attention so far (`[rows, t * cells]`).
    let mut tokens: Vec<u32> = vec![START_ID; n];
    let mut scores: Vec<f32> = vec![0.0; n];
    let mut hist: Vec<u32> = Vec::with_capacity(max_rows * max_words);
    let mut att_hist: Vec<f32> = Vec::with_capacity(max_rows * max_words * cells);
    let mut log_probs = vec![0.0f32; max_rows * v];
    let mut att = vec![0.0f32; max_rows * cells];
    let mut spans: Vec<Span> = (0..n)
        .map(|image| Span {
            image,
            start: image,
            len: 1,
        })
        .collect();
    let mut rows = n;

    // Next step's rows, reused.
    let mut parents: Vec<usize> = Vec::with_capacity(max_rows);
    let mut next_tokens: Vec<u32> = Vec::with_capacity(max_rows);
    let mut next_scores: Vec<f32> = Vec::with_capacity(max_rows);
    let mut next_spans: Vec<Span> = Vec::with_capacity(n);
    let mut next_hist: Vec<u32> = Vec::with_capacity(max_rows * max_words);
    let mut next_att_hist: Vec<f32> = Vec::with_capacity(max_rows * max_words * cells);

    let mut pools: Vec<Pool> = (0..n)
        .map(|_| Pool {
            cap: size,
            hyps: Vec::new(),
        })
        .collect();
    let mut top = TopK::new(2 * size);
    let want_att = cells > 0;

    for t in 0..max_words {
        let last_step = t + 1 == max_words;
        state.step(
            &tokens[..rows],
            &mut log_probs[..rows * v],
            want_att.then(|| &mut att[..rows * cells]),
        )?;
        let row_words = |r: usize| &hist[r * t..(r + 1) * t];
        let row_att = |r: usize| {
            want_att.then(|| {
                (
                    &att_hist[r * t * cells..(r + 1) * t * cells],
                    &att[r * cells..(r + 1) * cells],
                    cells,
                )
            })
        };
        parents.clear();
        next_tokens.clear();
        next_scores.clear();
        next_spans.clear();

        for span in &spans {
            let pool = &mut pools[span.image];
            top.clear();
            for r in span.start..span.start + span.len {
                let lp = &mut log_probs[r * v..(r + 1) * v];
                bans.apply(lp, row_words(r));
                top.scan(scores[r], r as u32, lp)
                    .map_err(|token| GenerateError::NotANumber { step: t, token })?;
            }
            let first_live = parents.len();
            let mut live = 0;
            for (rank, &Cand { score, row, tok }) in top.items().iter().enumerate() {
                let r = row as usize;
                if tok == END_ID {
                    // As in most implementations, an `<end>` ranked below the beam width is
                    // dropped: so a beam of 1 is exactly greedy search.
                    let s = opts.penalty.score(score, t + 1);
                    if rank < size && pool.accepts(s) {
                        pool.insert(hypothesis(row_words(r), None, score, s, true, row_att(r)));
                    }
                } else if last_step {
                    let s = opts.penalty.score(score, t + 1);
                    if pool.accepts(s) {
                        pool.insert(hypothesis(
                            row_words(r),
                            Some(tok),
                            score,
                            s,
                            false,
                            row_att(r),
                        ));
                    }
                    live += 1;
                } else {
                    parents.push(r);
                    next_tokens.push(tok);
                    next_scores.push(score);
                    live += 1;
                }
                if live == size {
                    break;
                }
            }
            let survivors = parents.len() - first_live;
            if survivors == 0 && pool.hyps.is_empty() {
                // Nothing can follow (every word banned): return what the beams have.
                let rows = span.start..span.start + span.len;
                for (r, &lp) in rows.clone().zip(&scores[rows]) {
                    let s = opts.penalty.score(lp, t);
                    if pool.accepts(s) {
                        let a = row_att(r);
                        pool.insert(hypothesis(row_words(r), None, lp, s, false, a));
                    }
                }
            }
            // Stop early once no live beam can beat the worst hypothesis kept.
            let hopeless = pool.full()
                && opts.penalty.best_future(
                    next_scores
                        .get(first_live)
                        .copied()
                        .unwrap_or(f32::NEG_INFINITY),
                    t + 2,
                    max_words,
                ) <= pool.worst();
            if survivors == 0 || hopeless {
                parents.truncate(first_live);
                next_tokens.truncate(first_live);
                next_scores.truncate(first_live);
            } else {
                next_spans.push(Span {
                    image: span.image,
                    start: first_live,
                    len: survivors,
                });
            }
        }

        if parents.is_empty() {
            break;
        }
        // Word and attention histories of the new rows.
        next_hist.clear();
        next_att_hist.clear();
        for (&p, &tok) in parents.iter().zip(&next_tokens) {
            next_hist.extend_from_slice(&hist[p * t..(p + 1) * t]);
            next_hist.push(tok);
            if want_att {
                next_att_hist.extend_from_slice(&att_hist[p * t * cells..(p + 1) * t * cells]);
                next_att_hist.extend_from_slice(&att[p * cells..(p + 1) * cells]);
            }
        }
        std::mem::swap(&mut hist, &mut next_hist);
        std::mem::swap(&mut att_hist, &mut next_att_hist);
        std::mem::swap(&mut tokens, &mut next_tokens);
        std::mem::swap(&mut scores, &mut next_scores);
        std::mem::swap(&mut spans, &mut next_spans);
        let identity = parents.len() == rows && parents.iter().enumerate().all(|(i, &p)| i == p);
        if !identity {
            state.select(&parents)?;
        }
        rows = parents.len();
    }

    Ok(pools
        .into_iter()
        .map(|mut p| {
            p.hyps.truncate(opts.top_k);
            p.hyps
        })
        .collect())
}
