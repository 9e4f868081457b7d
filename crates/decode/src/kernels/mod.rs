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
/// resizing it.
fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut Vec<f32>) {
    const TILE: usize = 32;
    dst.clear();
    dst.resize(rows * cols, 0.0);
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

/// `out[r][j] += colsum` helper: adds the column sums of a `[rows, cols]` matrix into `acc`.
pub(crate) fn add_col_sums(m: &[f32], cols: usize, acc: &mut [f32]) {
    for row in m.chunks_exact(cols) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
}
