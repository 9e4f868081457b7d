//! Safe row-major GEMM over slices, backed by the `gemm` crate (AVX-512 micro-kernels, rayon).
//!
//! We measured the `gemm` crate with its `x86-v4` kernels against hand-written alternatives and
//! kept it: it packs and blocks for cache itself and reaches most of the FMA peak on the shapes
//! that matter here (see the crate README / benchmark notes).

use super::{amx, check_len, KernelError};
use gemm::Parallelism;
use std::sync::atomic::{AtomicBool, Ordering};

/// How [`gemm`] multiplies large products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatmulPrecision {
    /// `f32` operands and accumulation (the default; PyTorch without autocast).
    #[default]
    F32,
    /// Operands rounded to `bf16`, products accumulated in `f32`, on AMX tiles
    /// ([`amx`]); PyTorch's `autocast(dtype=torch.bfloat16)`. Falls back to `f32` on CPUs
    /// without AMX-BF16.
    Bf16,
}

static BF16: AtomicBool = AtomicBool::new(false);

/// Sets the precision of every later [`gemm`] in this process and returns the one in effect:
/// asking for [`MatmulPrecision::Bf16`] on a CPU without AMX-BF16 gives `F32`.
pub fn set_matmul_precision(precision: MatmulPrecision) -> MatmulPrecision {
    let bf16 = precision == MatmulPrecision::Bf16 && amx::available();
    BF16.store(bf16, Ordering::Relaxed);
    matmul_precision()
}

/// The precision [`gemm`] uses now.
pub fn matmul_precision() -> MatmulPrecision {
    if BF16.load(Ordering::Relaxed) {
        MatmulPrecision::Bf16
    } else {
        MatmulPrecision::F32
    }
}

/// Whether a product is worth the `bf16` path: packing converts all of `op(b)` per call, so it
/// must be shared by enough rows, and small products are faster in `f32` than their packing.
fn amx_pays(m: usize, n: usize, k: usize) -> bool {
    m >= 128 && n >= 32 && k >= 32 && m * n * k >= 1 << 22
}

thread_local! {
    /// The transposed copy of `b` that [`gemm`] multiplies instead of a transposed view; kept per
    /// thread so repeated products reuse its allocation (at most [`STORED_B_MAX`] floats).
    static TRANSPOSED_B: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Largest `op(b)` (in floats, 8 MB) that [`gemm`] copies out of a transposed view.
const STORED_B_MAX: usize = 1 << 21;

/// Whether `op(b) = bᵀ` is better copied into a stored `[k, n]` matrix before the product.
///
/// The `gemm` crate packs a transposed right operand (a PyTorch-layout `[out, in]` weight) slowly:
/// at 64 rows, `[64, 2048] · [512, 2048]ᵀ` took 4.8 ms against 1.0 ms on the stored transpose, and
/// the gap (roughly constant in `m`) stays 5-15% at 1,280 rows. Our AVX-512 transpose copies a
/// cache-resident `[512, 2048]` in 0.24 ms, so it pays from a few rows up; a matrix of 16 MB
/// (the `[8000, 512]` vocabulary projection) streams from memory at 3.7 ms, about what it saves.
fn stored_b_pays(m: usize, n: usize, k: usize) -> bool {
    m >= 2 && (1 << 14..=STORED_B_MAX).contains(&(n * k))
}

/// Whether a GEMM operand is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trans {
    /// Use the matrix as stored (row-major).
    No,
    /// Use the transpose of the stored row-major matrix.
    Yes,
}

/// `c = (accumulate ? c : 0) + alpha * op(a) · op(b)`, all row-major.
///
/// Large products go through AMX in `bf16` after [`set_matmul_precision`]`(Bf16)`. A transposed
/// `b` of up to 8 MB is first copied into its stored transpose ([`stored_b_pays`]).
///
/// `op(a)` is `[m, k]` (so `a` is stored `[m, k]`, or `[k, m]` when `ta == Trans::Yes`), `op(b)` is
/// `[k, n]`, `c` is `[m, n]`. Uses every rayon thread when the product is large enough to pay.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    ta: Trans,
    b: &[f32],
    tb: Trans,
    c: &mut [f32],
    accumulate: bool,
) -> Result<(), KernelError> {
    check_len("gemm a", a.len(), m * k)?;
    check_len("gemm b", b.len(), k * n)?;
    check_len("gemm c", c.len(), m * n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return Ok(());
    }
    if BF16.load(Ordering::Relaxed) && amx_pays(m, n, k) {
        return amx::gemm_bf16(m, n, k, alpha, a, ta, b, tb, c, accumulate);
    }
    if tb == Trans::Yes && stored_b_pays(m, n, k) {
        // Taken out of the cell rather than borrowed: `transpose_into` runs on rayon, whose
        // work-stealing can run another `gemm` on this thread meanwhile; that one finds the cell
        // empty and allocates its own.
        let mut bt = TRANSPOSED_B.with(|s| std::mem::take(&mut *s.borrow_mut()));
        super::transpose_into(b, n, k, &mut bt);
        let result = gemm(m, n, k, alpha, a, ta, &bt, Trans::No, c, accumulate);
        TRANSPOSED_B.with(|s| *s.borrow_mut() = bt);
        return result;
    }
    // (row stride, column stride) of op(x) inside the stored buffer.
    let (a_rs, a_cs) = match ta {
        Trans::No => (k as isize, 1),
        Trans::Yes => (1, m as isize),
    };
    let (b_rs, b_cs) = match tb {
        Trans::No => (n as isize, 1),
        Trans::Yes => (1, k as isize),
    };
    // SAFETY: the lengths were checked above, so every (row, col) the strides address lies inside
    // its slice: op(a) spans max index (m-1)*a_rs + (k-1)*a_cs = m*k-1, likewise op(b) and c.
    // `c` is borrowed mutably, so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            alpha,
            false,
            false,
            false,
            Parallelism::Rayon(0),
        );
    }
    Ok(())
}

/// Reference for [`gemm`]: the textbook triple loop with `f64` accumulation.
#[allow(clippy::too_many_arguments)]
pub fn gemm_ref(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    ta: Trans,
    b: &[f32],
    tb: Trans,
    c: &mut [f32],
    accumulate: bool,
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for p in 0..k {
                let av = if ta == Trans::No {
                    a[i * k + p]
                } else {
                    a[p * m + i]
                };
                let bv = if tb == Trans::No {
                    b[p * n + j]
                } else {
                    b[j * k + p]
                };
                s += av as f64 * bv as f64;
            }
            let prev = if accumulate { c[i * n + j] as f64 } else { 0.0 };
            c[i * n + j] = (prev + alpha as f64 * s) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn matches_reference_all_transposes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        // (20, 130, 140): a transposed `b` large enough to be copied, in ragged 16x16 tiles.
        assert!(stored_b_pays(20, 130, 140));
        for &(m, n, k) in &[
            (1, 1, 1),
            (7, 13, 5),
            (33, 65, 17),
            (64, 40, 130),
            (20, 130, 140),
        ] {
            for ta in [Trans::No, Trans::Yes] {
                for tb in [Trans::No, Trans::Yes] {
                    for acc in [false, true] {
                        let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                        let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                        let c0: Vec<f32> =
                            (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                        let (mut c1, mut c2) = (c0.clone(), c0.clone());
                        gemm(m, n, k, 0.5, &a, ta, &b, tb, &mut c1, acc).unwrap();
                        gemm_ref(m, n, k, 0.5, &a, ta, &b, tb, &mut c2, acc);
                        for (x, y) in c1.iter().zip(&c2) {
                            assert!((x - y).abs() < 1e-4, "{m}x{n}x{k} {ta:?} {tb:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let mut c = vec![0.0; 4];
        let err = gemm(
            2,
            2,
            2,
            1.0,
            &[0.0; 3],
            Trans::No,
            &[0.0; 4],
            Trans::No,
            &mut c,
            false,
        );
        assert!(matches!(err, Err(KernelError::Len { what: "gemm a", .. })));
    }
}
