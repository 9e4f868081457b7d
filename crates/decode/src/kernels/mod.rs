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

/// `out[r][j] += colsum` helper: adds the column sums of a `[rows, cols]` matrix into `acc`.
pub(crate) fn add_col_sums(m: &[f32], cols: usize, acc: &mut [f32]) {
    for row in m.chunks_exact(cols) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
}
