//! `out = bias + x · wᵀ` against a fixed `[n, k]` weight matrix (the PyTorch `Linear` layout),
//! for inference, where the same weights meet a new small batch of rows at every step of a search.
//!
//! With a few rows (one step of beam search over one image) the product is bound by reading the
//! weights, and the general GEMM spends most of its time re-packing them on every call. Here
//! every weight row is read once and dotted with all input rows while it sits in L1, the output
//! columns are split over rayon threads, and the weights are kept as `f16` when every value is
//! exactly representable (bundles are saved in `f16`), which halves the bytes read without
//! changing a single weight. With more rows the product is compute-bound and goes to
//! [`PackedWeights`], which lays the same weights out once for an AVX-512 register tile.

use super::act::multiversion;
use super::packed_gemm::PackedWeights;
use super::{check_len, KernelError};
use half::f16;
use rayon::prelude::*;

/// Lanes per accumulator: two AVX-512 registers per input row, so a group of rows keeps enough
/// independent FMA chains in flight to hide their latency.
const LANES: usize = 32;
/// Input rows dotted against one weight row at a time (accumulators: `GROUP * LANES` floats).
const GROUP: usize = 4;
/// Output columns per rayon task: large enough that a task outlasts its scheduling cost.
const MIN_COLS_PER_TASK: usize = 64;
/// Up to this many rows the weight-streaming kernel beats the GEMM (measured with the `sat`
/// decoder's shapes, `k` 512 to 2304, on a 2-core AVX-512 machine).
pub const FEW_ROWS: usize = 8;

/// A `[n, k]` weight matrix (row `j` = the weights of output `j`) and its bias, stored for
/// [`FewRowsLinear::forward`].
#[derive(Clone, Debug)]
pub struct FewRowsLinear {
    n: usize,
    k: usize,
    /// The weights, `[n, k]`, and their packed copy for many rows.
    w: PackedWeights,
    /// The same weights as `f16` when that is exact: what the few-rows kernel then reads.
    w16: Option<Vec<f16>>,
    bias: Vec<f32>,
}

impl FewRowsLinear {
    /// Stacks the `[n_i, k]` blocks of `parts` (weights, bias) into one matrix of `Σ n_i` rows,
    /// so products that share an input run as one pass. Stored as `f16` when that is exact.
    pub fn stack(k: usize, parts: &[(&[f32], &[f32])]) -> Result<Self, KernelError> {
        let n: usize = parts.iter().map(|(_, b)| b.len()).sum();
        let mut w = Vec::with_capacity(n * k);
        let mut bias = Vec::with_capacity(n);
        for (pw, pb) in parts {
            check_len("few-rows weight", pw.len(), pb.len() * k)?;
            w.extend_from_slice(pw);
            bias.extend_from_slice(pb);
        }
        Self::from_f32(n, k, w, bias)
    }

    /// Concatenates, row by row, the column blocks of matrices that share their rows: row `j` is
    /// `[a_j, b_j, ...]`. Lets `x·Aᵀ + y·Bᵀ` run as one product over the input `[x, y]`.
    pub fn concat_cols(
        n: usize,
        parts: &[(&[f32], usize)],
        bias: Vec<f32>,
    ) -> Result<Self, KernelError> {
        check_len("few-rows bias", bias.len(), n)?;
        let k: usize = parts.iter().map(|&(_, cols)| cols).sum();
        for &(pw, cols) in parts {
            check_len("few-rows weight block", pw.len(), n * cols)?;
        }
        let mut w = Vec::with_capacity(n * k);
        for j in 0..n {
            for &(pw, cols) in parts {
                w.extend_from_slice(&pw[j * cols..(j + 1) * cols]);
            }
        }
        Self::from_f32(n, k, w, bias)
    }

    fn from_f32(n: usize, k: usize, w: Vec<f32>, bias: Vec<f32>) -> Result<Self, KernelError> {
        let exact = w
            .iter()
            .all(|&v| f16::from_f32(v).to_f32().to_bits() == v.to_bits());
        let w16 = exact.then(|| w.iter().map(|&v| f16::from_f32(v)).collect());
        let w = PackedWeights::new(n, k, w)?;
        Ok(Self { n, k, w, w16, bias })
    }

    /// Output columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input columns.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Whether the weights are held as `f16`.
    pub fn is_f16(&self) -> bool {
        self.w16.is_some()
    }

    /// `out[i, j] = bias[j] + Σ_c x[i, c] · w[j, c]` for the `rows` rows of `x` (`[rows, k]`);
    /// `out` is `[rows, n]`. `scratch` is reused between calls.
    pub fn forward(
        &self,
        x: &[f32],
        rows: usize,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) -> Result<(), KernelError> {
        let (n, k) = (self.n, self.k);
        check_len("few-rows input", x.len(), rows * k)?;
        check_len("few-rows output", out.len(), rows * n)?;
        if rows == 0 || n == 0 {
            return Ok(());
        }
        if rows > FEW_ROWS {
            return self.w.forward(x, rows, &self.bias, out, scratch);
        }
        // Tasks write column blocks of the transposed product `[n, rows]` (contiguous per block),
        // then one pass adds the bias and transposes into `out`.
        scratch.clear();
        scratch.resize(n * rows, 0.0);
        let threads = rayon::current_num_threads().max(1);
        let cols = n.div_ceil(threads * 4).max(MIN_COLS_PER_TASK);
        let task = |(b, out_t): (usize, &mut [f32])| {
            let j0 = b * cols;
            let nb = out_t.len() / rows;
            match &self.w16 {
                None => block_f32(x, rows, k, &self.w.weights()[j0 * k..(j0 + nb) * k], out_t),
                Some(w) => {
                    let mut buf = vec![0.0f32; k];
                    block_f16(x, rows, k, &w[j0 * k..(j0 + nb) * k], out_t, &mut buf);
                }
            }
        };
        if n <= cols || threads == 1 {
            scratch.chunks_mut(cols * rows).enumerate().for_each(task);
        } else {
            scratch
                .par_chunks_mut(cols * rows)
                .enumerate()
                .for_each(task);
        }
        for (i, o) in out.chunks_exact_mut(n).enumerate() {
            for ((o, &b), t) in o.iter_mut().zip(&self.bias).zip(scratch.chunks_exact(rows)) {
                *o = b + t[i];
            }
        }
        Ok(())
    }
}

multiversion! {
    /// For each weight row `w_j` of `w` (`[nb, k]`): `out_t[j * rows + i] = x_i · w_j`.
    fn block_f32(x: &[f32], rows: usize, k: usize, w: &[f32], out_t: &mut [f32]) {
        for (wrow, o) in w.chunks_exact(k).zip(out_t.chunks_exact_mut(rows)) {
            dot_rows(x, rows, k, wrow, o);
        }
    }
}

multiversion! {
    /// [`block_f32`] over `f16` weights, each row widened into `buf` (`[k]`, in L1) first.
    fn block_f16(x: &[f32], rows: usize, k: usize, w: &[f16], out_t: &mut [f32], buf: &mut [f32]) {
        let buf = &mut buf[..k];
        for (wrow, o) in w.chunks_exact(k).zip(out_t.chunks_exact_mut(rows)) {
            for (b, h) in buf.iter_mut().zip(wrow) {
                *b = f16_bits_to_f32(h.to_bits());
            }
            dot_rows(x, rows, k, buf, o);
        }
    }
}

/// Exact `f16 -> f32` in branch-free integer and float operations, so the conversion loop
/// vectorises inside [`block_f16`] (`half`'s slice conversion is an out-of-line call per 8
/// values, which cost more than the dot products).
#[inline(always)]
fn f16_bits_to_f32(h: u16) -> f32 {
    let h = h as u32;
    // Exponent and mantissa moved into f32 position, then scaled by 2^(127-15): right for normal
    // and subnormal values alike (the latter start as f32 subnormals, which the product
    // normalises).
    let finite = f32::from_bits((h & 0x7fff) << 13) * f32::from_bits(0x7780_0000);
    // Infinities, and NaNs made quiet as the F16C instruction (and `half`) does.
    let quiet = (((h & 0x3ff) != 0) as u32) << 22;
    let inf_nan = f32::from_bits(((h & 0x3ff) << 13) | 0x7f80_0000 | quiet);
    let mag = if h & 0x7c00 == 0x7c00 {
        inf_nan
    } else {
        finite
    };
    f32::from_bits(mag.to_bits() | ((h & 0x8000) << 16))
}

/// `o[i] = x_i · w` for every row of `x` (`[rows, k]`), in groups of up to [`GROUP`] rows.
#[inline(always)]
fn dot_rows(x: &[f32], rows: usize, k: usize, w: &[f32], o: &mut [f32]) {
    let mut i = 0;
    while i < rows {
        let g = (rows - i).min(GROUP);
        let xs = &x[i * k..(i + g) * k];
        let o = &mut o[i..i + g];
        match g {
            4 => dots4(xs, k, w, o),
            3 => dots3(xs, k, w, o),
            2 => dots2(xs, k, w, o),
            _ => dots1(xs, k, w, o),
        }
        i += g;
    }
}

/// Defines `$name(x, k, w, out)`: `out[i] = x_i · w` for the rows of `x` (`[rows, k]`), one
/// accumulator array and one chunk iterator per row. Spelled out per row count because that is
/// the shape LLVM reliably turns into vector code (a generic `[[f32; LANES]; R]` stays scalar).
macro_rules! dots {
    ($name:ident, $(($i:literal, $acc:ident, $xc:ident)),+) => {
        #[inline(always)]
        fn $name(x: &[f32], k: usize, w: &[f32], out: &mut [f32]) {
            let w = &w[..k];
            let mut wc = w.chunks_exact(LANES);
            $(
                let mut $acc = [0f32; LANES];
                let mut $xc = x[$i * k..($i + 1) * k].chunks_exact(LANES);
            )+
            for wv in &mut wc {
                $(
                    let xv = $xc.next().unwrap_or(wv);
                    for l in 0..LANES {
                        $acc[l] += xv[l] * wv[l];
                    }
                )+
            }
            $(
                let mut s: f32 = $acc.iter().sum();
                for (a, b) in $xc.remainder().iter().zip(wc.remainder()) {
                    s += a * b;
                }
                out[$i] = s;
            )+
        }
    };
}

dots!(dots1, (0, acc0, xc0));
dots!(dots2, (0, acc0, xc0), (1, acc1, xc1));
dots!(dots3, (0, acc0, xc0), (1, acc1, xc1), (2, acc2, xc2));
dots!(
    dots4,
    (0, acc0, xc0),
    (1, acc1, xc1),
    (2, acc2, xc2),
    (3, acc3, xc3)
);

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn reference(x: &[f32], rows: usize, k: usize, w: &[f32], bias: &[f32]) -> Vec<f32> {
        let n = bias.len();
        let mut out = vec![0.0; rows * n];
        for i in 0..rows {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|c| x[i * k + c] as f64 * w[j * k + c] as f64)
                    .sum();
                out[i * n + j] = (bias[j] as f64 + s) as f32;
            }
        }
        out
    }

    #[test]
    fn matches_reference_f32_and_f16() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for &(rows, n, k) in &[
            (1, 1, 1),
            (3, 70, 37),
            (5, 300, 64),
            (8, 129, 100),
            (20, 33, 65),
        ] {
            for exact_f16 in [false, true] {
                let mut w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                if exact_f16 {
                    w.iter_mut().for_each(|v| *v = f16::from_f32(*v).to_f32());
                }
                let bias: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
                let x: Vec<f32> = (0..rows * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                let lin = FewRowsLinear::stack(k, &[(&w, &bias)]).unwrap();
                if exact_f16 {
                    assert!(lin.is_f16());
                }
                let mut out = vec![f32::NAN; rows * n];
                lin.forward(&x, rows, &mut out, &mut Vec::new()).unwrap();
                let want = reference(&x, rows, k, &w, &bias);
                for (a, b) in out.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-4, "{rows}x{n}x{k}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn concat_cols_is_the_sum_of_products() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let (rows, n, ka, kb) = (3, 50, 20, 12);
        let a: Vec<f32> = (0..n * ka).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..n * kb).map(|_| rng.random_range(-1.0..1.0)).collect();
        let bias: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let xa: Vec<f32> = (0..rows * ka)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let xb: Vec<f32> = (0..rows * kb)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let lin = FewRowsLinear::concat_cols(n, &[(&a, ka), (&b, kb)], bias.clone()).unwrap();
        let x: Vec<f32> = (0..rows)
            .flat_map(|i| {
                xa[i * ka..(i + 1) * ka]
                    .iter()
                    .chain(&xb[i * kb..(i + 1) * kb])
                    .copied()
            })
            .collect();
        let mut out = vec![0.0; rows * n];
        lin.forward(&x, rows, &mut out, &mut Vec::new()).unwrap();
        let pa = reference(&xa, rows, ka, &a, &bias);
        let pb = reference(&xb, rows, kb, &b, &vec![0.0; n]);
        for ((o, x), y) in out.iter().zip(&pa).zip(&pb) {
            assert!((o - (x + y)).abs() < 1e-4);
        }
    }

    #[test]
    fn f16_conversion_is_exact() {
        for bits in 0..=u16::MAX {
            let want = f16::from_bits(bits).to_f32();
            let got = f16_bits_to_f32(bits);
            assert_eq!(got.to_bits(), want.to_bits(), "f16 bits {bits:#06x}");
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let lin = FewRowsLinear::stack(2, &[(&[1.0; 4], &[0.0; 2])]).unwrap();
        let mut out = vec![0.0; 2];
        assert!(lin
            .forward(&[0.0; 3], 1, &mut out, &mut Vec::new())
            .is_err());
        assert!(FewRowsLinear::stack(2, &[(&[1.0; 3], &[0.0; 2])]).is_err());
    }
}
