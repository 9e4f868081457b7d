//! Fused CPU kernels over row-major `f32` slices.
//!
//! Every kernel has a plain reference implementation beside it (`*_ref`, in the same module) that
//! the tests compare against; the references favour obviousness over speed.
//!
//! Sequence tensors are time-major: `x[t][b][i]` is at `(t * batch + b) * input + i`, so one time
//! step is one contiguous `[batch, features]` block and the per-step GEMMs need no gathers.

pub mod act;
pub mod amx;
pub mod few_rows;
pub mod gemm;
pub mod gru;
pub mod lstm;
pub mod packed_gemm;
pub mod softmax_xent;

/// Errors from kernel arguments that do not fit together.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KernelError {
    /// A slice has the wrong number of elements for the declared shape.
    #[error("{what}: expected {expected} elements, got {got}")]
    Len {
        /// Which argument.
        what: &'static str,
        /// Elements the shape implies.
        expected: usize,
        /// Elements passed.
        got: usize,
    },
    /// A target token id is outside the vocabulary.
    #[error("target {target} at row {row} is outside the vocabulary of {vocab}")]
    Target {
        /// Row of the offending target.
        row: usize,
        /// The target id.
        target: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// A cache was used with other dimensions than those it was filled with.
    #[error("cache was filled for {cached}, used for {requested}")]
    CacheMismatch {
        /// Dimensions the cache holds.
        cached: String,
        /// Dimensions of the call.
        requested: String,
    },
    /// Any other invalid argument (a hyper-parameter out of range, a zero dimension...).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// Checks a slice length, naming the argument in the error.
pub(crate) fn check_len(
    what: &'static str,
    got: usize,
    expected: usize,
) -> Result<(), KernelError> {
    if got == expected {
        Ok(())
    } else {
        Err(KernelError::Len {
            what,
            expected,
            got,
        })
    }
}

/// The recurrent weight `w_hh` (`[gates, hidden]`) as the right operand of the per-step product
/// `h · w_hh^T`, for a sequence of `seq_len` steps. The GEMM runs about twice as fast on a stored
/// `[hidden, gates]` matrix as on a transposed view, so sequences of a few steps or more pay for a
/// transposed copy in `scratch` once; one-step calls (generation) keep the view, whose copy would
/// cost more than it saves.
pub(crate) fn recurrent_operand<'a>(
    w_hh: &'a [f32],
    gates: usize,
    hidden: usize,
    seq_len: usize,
    scratch: &'a mut Vec<f32>,
) -> (&'a [f32], gemm::Trans) {
    if seq_len >= 4 {
        transpose_into(w_hh, gates, hidden, scratch);
        (scratch, gemm::Trans::No)
    } else {
        (w_hh, gemm::Trans::Yes)
    }
}

/// Writes the transpose of the row-major `[rows, cols]` matrix `src` into `dst` (`[cols, rows]`),
/// resizing it. Blocks of `dst` rows go to the rayon threads; within a block the source is read
/// in `TILE x TILE` tiles so both sides stay in L1.
fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut Vec<f32>) {
    use rayon::prelude::*;
    const TILE: usize = 32;
    // Every element is overwritten below, so a buffer of the right size is reused as it is.
    dst.resize(rows * cols, 0.0);
    if rows == 0 || cols == 0 {
        return;
    }
    dst.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(block, out)| {
            let c0 = block * TILE;
            for r0 in (0..rows).step_by(TILE) {
                let r1 = (r0 + TILE).min(rows);
                for (c, out_row) in out.chunks_exact_mut(rows).enumerate() {
                    for (o, r) in out_row[r0..r1].iter_mut().zip(r0..r1) {
                        *o = src[r * cols + c0 + c];
                    }
                }
            }
        });
}

/// `out[r][j] += colsum` helper: adds the column sums of a `[rows, cols]` matrix into `acc`.
/// Large matrices (the `[rows, vocab]` loss gradient, tens of MB) are split by columns over the
/// threads, each summing its block of every row.
pub(crate) fn add_col_sums(m: &[f32], cols: usize, acc: &mut [f32]) {
    use rayon::prelude::*;
    const PARALLEL_FROM: usize = 1 << 18;
    let threads = rayon::current_num_threads();
    if m.len() < PARALLEL_FROM || threads < 2 || cols < 64 {
        return add_rows_into(m, cols, 0, acc);
    }
    // Blocks of whole 16-float vectors, one or more per thread.
    let block = cols.div_ceil(threads).next_multiple_of(16);
    acc.par_chunks_mut(block)
        .enumerate()
        .for_each(|(i, acc)| add_rows_into(m, cols, i * block, acc));
}

act::multiversion! {
    /// `acc[j] += Σ_r m[r][first + j]` for the columns `acc` covers.
    fn add_rows_into(m: &[f32], cols: usize, first: usize, acc: &mut [f32]) {
        let n = acc.len();
        for row in m.chunks_exact(cols) {
            let row = &row[first..first + n];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_into_handles_partial_tiles_and_reused_buffers() {
        for (rows, cols) in [(70, 45), (1, 33), (64, 64), (3, 1)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut dst = vec![-1.0; 5000];
            transpose_into(&src, rows, cols, &mut dst);
            assert_eq!(dst.len(), rows * cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        dst[c * rows + r],
                        src[r * cols + c],
                        "{rows}x{cols} at {r},{c}"
                    );
                }
            }
        }
    }

    #[test]
    fn column_sums_agree_serial_and_split_over_threads() {
        let (rows, cols) = (300, 1001);
        let m: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 113) as f32 - 56.0)
            .collect();
        let mut acc = vec![1.0f32; cols];
        add_col_sums(&m, cols, &mut acc);
        for (j, &a) in acc.iter().enumerate() {
            let want = 1.0 + (0..rows).map(|r| m[r * cols + j]).sum::<f32>();
            assert_eq!(a, want, "column {j}");
        }
    }
}
