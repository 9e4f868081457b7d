//! Row-major f32 GEMM with a fused bias / residual / activation epilogue, on top of the `gemm` crate.
//!
//! Work is split over output rows: each rayon task multiplies a block of rows single-threaded and
//! runs the epilogue on it while the block is still in L2, instead of a second pass over memory.

use rayon::prelude::*;

use super::{check_len, num_threads, Activation, KernelError, Result};

/// What happens to `a @ b` before it is stored: `act(a @ b + bias[col] + residual[row, col])`.
#[derive(Debug, Clone, Copy)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
    pub act: Activation,
}

impl<'a> Epilogue<'a> {
    pub fn new(bias: Option<&'a [f32]>, act: Activation) -> Self {
        Self {
            bias,
            residual: None,
            act,
        }
    }

    pub fn with_residual(mut self, residual: &'a [f32]) -> Self {
        self.residual = Some(residual);
        self
    }

    pub(crate) fn check(&self, m: usize, n: usize) -> Result<()> {
        if let Some(bias) = self.bias {
            check_len("bias", n, bias.len())?;
        }
        if let Some(res) = self.residual {
            check_len("residual", m * n, res.len())?;
        }
        Ok(())
    }

    /// Applies the epilogue to `out`, the rows `row0..row0 + out.len() / n` of the full output.
    /// One fused pass (bias, residual and activation per element, in that order) compiled for
    /// AVX-512 where the CPU has it: the block is in L2, and separate passes at SSE width cost
    /// as much as a small layer.
    pub(crate) fn apply(&self, out: &mut [f32], n: usize, row0: usize) {
        let residual = self.residual.map(|r| &r[row0 * n..row0 * n + out.len()]);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU reports AVX-512F, the only precondition of `apply_avx512`, whose
            // body is safe code.
            unsafe { apply_avx512(out, n, self.bias, residual, self.act) };
            return;
        }
        apply_fused(out, n, self.bias, residual, self.act);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn apply_avx512(
    out: &mut [f32],
    n: usize,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    act: Activation,
) {
    apply_fused(out, n, bias, residual, act);
}

/// `out = act(out + bias[col] + residual)`; one loop per combination so each vectorises.
#[inline(always)]
fn apply_fused(
    out: &mut [f32],
    n: usize,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    act: Activation,
) {
    match act {
        Activation::Identity => apply_with(out, n, bias, residual, |v| v),
        Activation::Relu => apply_with(out, n, bias, residual, |v| if v > 0.0 { v } else { 0.0 }),
        Activation::Relu6 => apply_with(out, n, bias, residual, |v| {
            let y = if v > 0.0 { v } else { 0.0 };
            if y < 6.0 {
                y
            } else {
                6.0
            }
        }),
    }
}

#[inline(always)]
fn apply_with(
    out: &mut [f32],
    n: usize,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    f: impl Fn(f32) -> f32,
) {
    match (bias, residual) {
        (Some(b), Some(r)) => {
            for (row, r) in out.chunks_exact_mut(n).zip(r.chunks_exact(n)) {
                for ((o, &b), &r) in row.iter_mut().zip(&b[..n]).zip(r) {
                    *o = f(*o + b + r);
                }
            }
        }
        (Some(b), None) => {
            for row in out.chunks_exact_mut(n) {
                for (o, &b) in row.iter_mut().zip(&b[..n]) {
                    *o = f(*o + b);
                }
            }
        }
        (None, Some(r)) => out.iter_mut().zip(r).for_each(|(o, &r)| *o = f(*o + r)),
        (None, None) => out.iter_mut().for_each(|o| *o = f(*o)),
    }
}

/// Rows per rayon task for an `m x n` output with inner size `k`, or `None` to run one GEMM with
/// the `gemm` crate's own threading (too few rows to split without re-packing `b` per task).
pub(crate) fn rows_per_task(m: usize, k: usize, threads: usize) -> Option<usize> {
    // The gemm crate re-packs `b` on every call, costing about `k * n`; blocks of a few hundred
    // rows amortise that to a few percent. Capping by `k` bounds an im2col block to ~4 MiB.
    const MIN_ROWS: usize = 256;
    let by_scratch = (1024 * 1024 / k.max(1)).max(64);
    let by_threads = m.div_ceil(threads * 4);
    let rows = by_threads.clamp(MIN_ROWS, 1024).min(by_scratch);
    if threads <= 1 || m < rows * 2 {
        return if threads <= 1 { Some(m.max(1)) } else { None };
    }
    Some(rows)
}

/// `c[m, n] = a[m, k] @ b[k, n]` for row-major contiguous blocks, no epilogue.
pub(crate) fn gemm_block(
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    par: bool,
) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    let parallelism = if par && num_threads() > 1 {
        gemm::Parallelism::Rayon(num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the assert above guarantees every index the strides below can reach is in bounds:
    // a is m x k (row stride k), b is k x n (row stride n), c is m x n (row stride n); `c` is an
    // exclusive borrow so nothing aliases it; read_dst = false means c's old contents are unused.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `out[m, n] = epilogue(a[m, k] @ b[k, n])`, all row-major.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    epilogue: &Epilogue,
) -> Result<()> {
    check_len("matmul lhs", m * k, a.len())?;
    check_len("matmul rhs", k * n, b.len())?;
    check_len("matmul output", m * n, out.len())?;
    epilogue.check(m, n)?;
    if n == 0 {
        return Ok(());
    }
    match rows_per_task(m, k, num_threads()) {
        None => {
            gemm_block(a, b, out, m, k, n, true);
            epilogue.apply(out, n, 0);
        }
        Some(rows) => {
            out.par_chunks_mut(rows * n)
                .enumerate()
                .for_each(|(i, chunk)| {
                    let row0 = i * rows;
                    let r = chunk.len() / n;
                    gemm_block(&a[row0 * k..(row0 + r) * k], b, chunk, r, k, n, false);
                    epilogue.apply(chunk, n, row0);
                });
        }
    }
    Ok(())
}

/// Checks that a weight matrix is `k x n`, naming the layer side in the error.
pub(crate) fn check_weight(what: &'static str, k: usize, n: usize, len: usize) -> Result<()> {
    if k * n != len {
        return Err(KernelError::Shape(format!(
            "{what}: weight has {len} elements, expected {k} x {n}"
        )));
    }
    Ok(())
}
