//! ROUGE-L as `pycocoevalcap/rouge/rouge.py` (pycocoevalcap 1.2) computes it: the longest common
//! subsequence against each reference, the maximum precision and the maximum recall taken over
//! the references separately, then an F-measure with beta 1.2. Words come from
//! `str.split(" ")`, so an empty caption is one empty word.

const BETA: f64 = 1.2;

/// Length of the longest common subsequence (`my_lcs`).
pub(crate) fn lcs(a: &[u32], b: &[u32]) -> usize {
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    let mut row = vec![0usize; short.len() + 1];
    for &x in long {
        let mut diag = 0;
        for (j, &y) in short.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    row[short.len()]
}

/// ROUGE-L of one candidate against its references (word ids of `split(" ")` words).
pub(crate) fn score(candidate: &[u32], references: &[Vec<u32>]) -> f64 {
    let mut prec_max = f64::NEG_INFINITY;
    let mut rec_max = f64::NEG_INFINITY;
    for r in references {
        let l = lcs(r, candidate) as f64;
        // Neither list is ever empty: `split(" ")` returns at least one (possibly empty) word.
        prec_max = prec_max.max(l / candidate.len().max(1) as f64);
        rec_max = rec_max.max(l / r.len().max(1) as f64);
    }
    if prec_max != 0.0 && rec_max != 0.0 && prec_max.is_finite() && rec_max.is_finite() {
        let b2 = BETA * BETA;
        ((1.0 + b2) * prec_max * rec_max) / (rec_max + b2 * prec_max)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcs_basics() {
        assert_eq!(lcs(&[1, 2, 3, 4], &[2, 4]), 2);
        assert_eq!(lcs(&[], &[1]), 0);
        assert_eq!(lcs(&[1, 3, 2], &[1, 2, 3]), 2);
    }

    #[test]
    fn identical_is_one() {
        assert!((score(&[1, 2, 3], &[vec![1, 2, 3], vec![4]]) - 1.0).abs() < 1e-12);
    }
}
