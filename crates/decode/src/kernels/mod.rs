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
/// `[hidden, gates]` matrix as on a transposed view, so sequences of a few steps or more make the
/// transposed copy in `scratch` once, instead of [`gemm::gemm`] making it at every step; one-step
/// calls (generation) pass the view and leave the choice to `gemm`.
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
/// resizing it. Blocks of [`TRANSPOSE_TILE`] `dst` rows go to the rayon threads. With AVX-512
/// a block moves as 16x16 tiles transposed in registers ([`transpose_block_avx512`]): a
/// cache-resident `[512, 2048]` matrix took 0.24 ms that way against 1.7 ms for the scalar loop,
/// which still does the ragged edges and other CPUs.
pub(crate) fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut Vec<f32>) {
    use rayon::prelude::*;
    // Every element is overwritten below, so a buffer of the right size is reused as it is.
    dst.resize(rows * cols, 0.0);
    if rows == 0 || cols == 0 {
        return;
    }
    dst.par_chunks_mut(TRANSPOSE_TILE * rows)
        .enumerate()
        .for_each(|(block, out)| {
            let c0 = block * TRANSPOSE_TILE;
            let done_rows = transpose_block_avx512(src, rows, cols, c0, out);
            for (c, out_row) in out.chunks_exact_mut(rows).enumerate() {
                for (o, r) in out_row[done_rows..].iter_mut().zip(done_rows..rows) {
                    *o = src[r * cols + c0 + c];
                }
            }
        });
}

/// Transposes the whole 16x16 tiles of one full block of [`transpose_into`] (`out` holds `dst`
/// rows `c0..c0 + 16`, i.e. `src` columns `c0..c0 + 16`) and returns how many leading `src` rows
/// it moved: 0 without AVX-512 or for the last, partial block.
fn transpose_block_avx512(
    src: &[f32],
    rows: usize,
    cols: usize,
    c0: usize,
    out: &mut [f32],
) -> usize {
    #[cfg(target_arch = "x86_64")]
    if out.len() == TRANSPOSE_TILE * rows
        && c0 + TRANSPOSE_TILE <= cols
        && src.len() == rows * cols
        && std::arch::is_x86_feature_detected!("avx512f")
    {
        let done_rows = rows - rows % TRANSPOSE_TILE;
        for r0 in (0..done_rows).step_by(TRANSPOSE_TILE) {
            // SAFETY: AVX-512F was detected above. The tile reads `src` rows r0..r0 + 16 (<=
            // rows) at columns c0..c0 + 16 (<= cols), inside `src` (rows x cols), and writes `out`
            // rows 0..16 (its length is 16 x rows) at columns r0..r0 + 16 (<= rows).
            unsafe {
                transpose_tile_avx512(
                    src.as_ptr().add(r0 * cols + c0),
                    cols,
                    out.as_mut_ptr().add(r0),
                    rows,
                );
            }
        }
        return done_rows;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (src, rows, cols, c0, out);
    0
}

/// Side of the square tiles [`transpose_into`] moves: one AVX-512 register of `f32`.
const TRANSPOSE_TILE: usize = 16;

/// Transposes the 16x16 block at `src` (row stride `lds`) into `dst` (row stride `ldd`), in
/// registers: 32-bit, 64-bit, then two 128-bit-lane interleaves.
///
/// # Safety
/// AVX-512F must be available; `src` must be readable at rows `0..16` x columns `0..16` of
/// stride `lds`, and `dst` writable likewise with stride `ldd`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_tile_avx512(src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
    use std::arch::x86_64::*;
    let r: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(src.add(i * lds)));
    // Pairs of rows interleaved by 32-bit element.
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i & 1 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // Then by 64-bit pair: within each group of four, (t0, t2) and (t1, t3).
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let g = i & !3;
        let (a, b) = (
            _mm512_castps_pd(t[g + (i & 2) / 2]),
            _mm512_castps_pd(t[g + 2 + (i & 2) / 2]),
        );
        _mm512_castpd_ps(if i & 1 == 0 {
            _mm512_unpacklo_pd(a, b)
        } else {
            _mm512_unpackhi_pd(a, b)
        })
    });
    // Then 128-bit lanes: groups 4 apart, even lanes (0x88) and odd lanes (0xdd).
    let v: [__m512; 16] = std::array::from_fn(|i| {
        let base = (i & 8) + (i & 3);
        let (a, b) = (u[base], u[base + 4]);
        if i & 4 == 0 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xdd>(a, b)
        }
    });
    // And 128-bit lanes across the two halves.
    for i in 0..16 {
        let j = i & 7;
        let (a, b) = (v[j], v[j + 8]);
        let out = if i < 8 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xdd>(a, b)
        };
        _mm512_storeu_ps(dst.add(i * ldd), out);
    }
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
        // Whole 16x16 tiles (AVX-512) with ragged rows and columns left to the scalar loop.
        for (rows, cols) in [(70, 45), (1, 33), (64, 64), (3, 1), (16, 16), (100, 31)] {
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
    #[ignore = "timing, run by hand"]
    fn time_transpose() {
        for (r, c) in [(8000usize, 512usize), (512, 2048), (2048, 512), (512, 8000)] {
            let src = vec![1.0f32; r * c];
            let mut dst = Vec::new();
            transpose_into(&src, r, c, &mut dst);
            let t = std::time::Instant::now();
            for _ in 0..20 {
                transpose_into(&src, r, c, &mut dst);
            }
            eprintln!("{r}x{c}: {:.3} ms", t.elapsed().as_secs_f64() * 1e3 / 20.0);
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
