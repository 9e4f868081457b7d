//! Token bans shared by every strategy, applied in place to a row of log-probabilities.

use captioner_decode::model::{END_ID, PAD_ID, START_ID, UNK_ID};

/// What is forbidden, fixed for one call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bans {
    pub min_words: usize,
    pub no_repeat_ngram: usize,
    pub suppress_unk: bool,
}

impl Bans {
    /// Sets to `-inf` every token forbidden after the words `history`: `<pad>` and `<start>`
    /// always, `<unk>` when suppressed, `<end>` before `min_words`, and any token completing an
    /// n-gram already in `history`.
    pub fn apply(&self, row: &mut [f32], history: &[u32]) {
        let mut ban = |tok: u32| {
            if let Some(v) = row.get_mut(tok as usize) {
                *v = f32::NEG_INFINITY;
            }
        };
        ban(PAD_ID);
        ban(START_ID);
        if self.suppress_unk {
            ban(UNK_ID);
        }
        if history.len() < self.min_words {
            ban(END_ID);
        }
        let n = self.no_repeat_ngram;
        let t = history.len();
        if n > 0 && t >= n {
            // The n-1 last words; every earlier occurrence of them bans the word that followed.
            let prefix = &history[t + 1 - n..];
            for i in 0..=t - n {
                if history[i..i + n - 1] == *prefix {
                    ban(history[i + n - 1]);
                }
            }
        }
    }
}

/// Index of the largest value (the first on ties), skipping `-inf`; `Ok(None)` when every value
/// is `-inf`, `Err(token)` at a NaN.
pub(crate) fn argmax(row: &[f32]) -> Result<Option<usize>, usize> {
    let mut best = f32::NEG_INFINITY;
    let mut arg = None;
    for (i, &v) in row.iter().enumerate() {
        if v > best {
            best = v;
            arg = Some(i);
        } else if v.is_nan() {
            return Err(i);
        }
    }
    Ok(arg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn banned(b: &Bans, v: usize, hist: &[u32]) -> Vec<u32> {
        let mut row = vec![0.0; v];
        b.apply(&mut row, hist);
        (0..v as u32)
            .filter(|&i| row[i as usize] == f32::NEG_INFINITY)
            .collect()
    }

    #[test]
    fn bans() {
        let b = Bans {
            min_words: 2,
            no_repeat_ngram: 0,
            suppress_unk: true,
        };
        assert_eq!(banned(&b, 8, &[5]), vec![0, 1, 2, 3]);
        assert_eq!(banned(&b, 8, &[5, 6]), vec![0, 1, 3]);
        let b = Bans {
            min_words: 0,
            no_repeat_ngram: 1,
            suppress_unk: false,
        };
        assert_eq!(banned(&b, 8, &[5, 7, 5]), vec![0, 1, 5, 7]);
        let b = Bans {
            no_repeat_ngram: 2,
            ..b
        };
        // "4 5 6 4": bigram (4, 5) exists, so 5 is banned after the final 4.
        assert_eq!(banned(&b, 8, &[4, 5, 6, 4]), vec![0, 1, 5]);
        let b = Bans {
            no_repeat_ngram: 3,
            ..b
        };
        assert_eq!(banned(&b, 8, &[4, 5, 6, 4, 5]), vec![0, 1, 6]);
        assert_eq!(banned(&b, 8, &[4, 5, 6, 5, 4]), vec![0, 1]);
    }

    #[test]
    fn argmax_first_and_nan() {
        assert_eq!(argmax(&[f32::NEG_INFINITY, 1.0, 3.0, 3.0]), Ok(Some(2)));
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), Ok(None));
        assert_eq!(argmax(&[0.0, f32::NAN]), Err(1));
    }
}
