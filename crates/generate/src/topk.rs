//! The `k` best of a stream of scored candidates, without sorting the stream.

/// One candidate: a row (hypothesis) extended by a token, with its score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Cand {
    pub score: f32,
    pub row: u32,
    pub tok: u32,
}

/// Keeps the `k` highest-scored candidates pushed so far, sorted best first; on equal scores the
/// one pushed first ranks first. A push costs one comparison unless the candidate gets in.
#[derive(Debug)]
pub(crate) struct TopK {
    k: usize,
    items: Vec<Cand>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            items: Vec::with_capacity(k + 1),
        }
    }

    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// Scores must beat this to get in (`-inf` until full, so `-inf` never gets in).
    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.items.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.items[self.k - 1].score
        }
    }

    /// Inserts a candidate already known to beat [`Self::threshold`].
    #[inline(never)]
    pub fn insert(&mut self, c: Cand) {
        let at = self.items.partition_point(|x| x.score >= c.score);
        self.items.insert(at, c);
        self.items.truncate(self.k);
    }

    /// Scans one row of log-probabilities offset by `base`; `Err(token)` at a NaN.
    #[inline]
    pub fn scan(&mut self, base: f32, row: u32, log_probs: &[f32]) -> Result<(), usize> {
        let mut thr = self.threshold();
        for (tok, &v) in log_probs.iter().enumerate() {
            let s = base + v;
            if s > thr {
                self.insert(Cand {
                    score: s,
                    row,
                    tok: tok as u32,
                });
                thr = self.threshold();
            } else if v.is_nan() {
                return Err(tok);
            }
        }
        Ok(())
    }

    pub fn items(&self) -> &[Cand] {
        &self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_first_pushed_on_ties() {
        let mut t = TopK::new(3);
        t.scan(0.0, 0, &[1.0, 5.0, f32::NEG_INFINITY, 5.0, 2.0, 0.5])
            .unwrap();
        t.scan(1.0, 1, &[1.0, 4.0]).unwrap();
        let got: Vec<(f32, u32, u32)> = t.items().iter().map(|c| (c.score, c.row, c.tok)).collect();
        assert_eq!(got, vec![(5.0, 0, 1), (5.0, 0, 3), (5.0, 1, 1)]);
        assert_eq!(t.threshold(), 5.0);
        assert_eq!(t.scan(0.0, 2, &[f32::NAN]), Err(0));
        let mut t = TopK::new(4);
        t.scan(0.0, 0, &[f32::NEG_INFINITY, -1.0]).unwrap();
        assert_eq!(t.items().len(), 1);
    }
}
