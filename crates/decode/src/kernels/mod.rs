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

use packed_gemm::PackedWeights;

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

/// The recurrent weight `w_hh` (`[gates, hidden]`) prepared once per sequence for the per-step
/// product `h · w_hhᵀ`, which is on the critical path of every recurrent layer.
///
/// With AVX-512, sequences of a few steps or more pack the weight into [`PackedWeights`] panels:
/// the general GEMM re-packs its right operand at every step, and on the LSTM benchmark's
/// `[64, 512] · [512, 2048]` steps the packed product with its one packing took 15.5-16 ms for
/// 20 steps against 20-23 ms through [`gemm::gemm`] on the stored transpose (the same or better
/// at 16-256 rows). Larger batches, and CPUs without AVX-512, multiply the stored transpose (about
/// twice as fast as a transposed view); one-step calls (generation) pass the view and leave the
/// choice to `gemm`.
#[derive(Debug, Default, Clone)]
pub(crate) struct RecurrentWeights {
    operand: RecurrentOperand,
    gates: usize,
    hidden: usize,
    packed: PackedWeights,
    transposed: Vec<f32>,
    /// The step's input rows interleaved for the packed product (reused between steps).
    interleaved: Vec<f32>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum RecurrentOperand {
    #[default]
    View,
    Transposed,
    Packed,
}

/// Largest batch the packed recurrent product was measured to beat `gemm` on.
const PACKED_RECURRENT_MAX_ROWS: usize = 256;

impl RecurrentWeights {
    /// Chooses and builds the operand for `seq_len` steps of `batch` rows.
    pub(crate) fn prepare(
        &mut self,
        w_hh: &[f32],
        gates: usize,
        hidden: usize,
        batch: usize,
        seq_len: usize,
    ) -> Result<(), KernelError> {
        check_len("recurrent weight", w_hh.len(), gates * hidden)?;
        (self.gates, self.hidden) = (gates, hidden);
        self.operand = if seq_len < 4 {
            RecurrentOperand::View
        } else if batch <= PACKED_RECURRENT_MAX_ROWS && packed_gemm::available() {
            self.packed
                .repack(gates, hidden, packed_gemm::WeightView::rows(w_hh, hidden))?;
            RecurrentOperand::Packed
        } else {
            transpose_into(w_hh, gates, hidden, &mut self.transposed);
            RecurrentOperand::Transposed
        };
        Ok(())
    }

    /// `out = (bias, or out itself when None) + h · w_hhᵀ` for the `rows` rows of `h`
    /// (`[rows, hidden]`); `w_hh` must be the matrix given to [`RecurrentWeights::prepare`].
    pub(crate) fn product(
        &mut self,
        w_hh: &[f32],
        h: &[f32],
        rows: usize,
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let (gates, hidden) = (self.gates, self.hidden);
        check_len("recurrent weight", w_hh.len(), gates * hidden)?;
        if self.operand == RecurrentOperand::Packed {
            return match bias {
                Some(bias) => self
                    .packed
                    .forward(h, rows, bias, out, &mut self.interleaved),
                None => self.packed.accumulate(h, rows, out, &mut self.interleaved),
            };
        }
        if let Some(bias) = bias {
            check_len("recurrent bias", bias.len(), gates)?;
            check_len("recurrent output", out.len(), rows * gates)?;
            for row in out.chunks_exact_mut(gates) {
                row.copy_from_slice(bias);
            }
        }
        let (w, tw) = match self.operand {
            RecurrentOperand::Transposed => (&self.transposed[..], gemm::Trans::No),
            _ => (w_hh, gemm::Trans::Yes),
        };
        gemm::gemm(
            rows,
            gates,
            hidden,
            1.0,
            h,
            gemm::Trans::No,
            w,
            tw,
            out,
            true,
        )
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
    fn recurrent_product_agrees_on_every_operand() {
        // (rows, seq_len, expected operand): one step keeps the view; a sequence packs (with
        // AVX-512) unless the batch is above the packed product's measured range.
        let packed_or_transposed = if packed_gemm::available() {
            RecurrentOperand::Packed
        } else {
            RecurrentOperand::Transposed
        };
        let (gates, hidden) = (3 * 37, 37);
        let w: Vec<f32> = (0..gates * hidden)
            .map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0)
            .collect();
        let bias: Vec<f32> = (0..gates).map(|j| j as f32 / 50.0).collect();
        for (rows, seq_len, operand) in [
            (5, 1, RecurrentOperand::View),
            (7, 20, packed_or_transposed),
            (
                PACKED_RECURRENT_MAX_ROWS + 3,
                4,
                RecurrentOperand::Transposed,
            ),
        ] {
            let h: Vec<f32> = (0..rows * hidden)
                .map(|i| ((i * 13) % 11) as f32 / 4.0 - 1.2)
                .collect();
            let mut op = RecurrentWeights::default();
            op.prepare(&w, gates, hidden, rows, seq_len).unwrap();
            assert_eq!(op.operand, operand, "{rows} rows, {seq_len} steps");
            let mut with_bias = vec![f32::NAN; rows * gates];
            op.product(&w, &h, rows, Some(&bias), &mut with_bias)
                .unwrap();
            let mut accumulated = vec![1.0; rows * gates];
            op.product(&w, &h, rows, None, &mut accumulated).unwrap();
            for r in 0..rows {
                for j in 0..gates {
                    let dot: f64 = (0..hidden)
                        .map(|c| h[r * hidden + c] as f64 * w[j * hidden + c] as f64)
                        .sum();
                    let (b, a) = (with_bias[r * gates + j], accumulated[r * gates + j]);
                    assert!((b as f64 - (bias[j] as f64 + dot)).abs() < 1e-4, "{r},{j}");
                    assert!((a as f64 - (1.0 + dot)).abs() < 1e-4, "{r},{j}");
                }
            }
            assert!(op
                .product(&w, &h[1..], rows, None, &mut accumulated)
                .is_err());
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
