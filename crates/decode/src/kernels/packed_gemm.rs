//! `out = bias + x · wᵀ` against a fixed `[n, k]` weight matrix packed once, for inference steps
//! with more rows than [`super::few_rows::FEW_ROWS`] (beam search over a batch of images).
//!
//! The general GEMM re-packs its operands on every call; with the decoder's shapes (`k` up to
//! 2,304, `n` up to 2,533, tens to a few hundred rows per step) that re-packing of the weights
//! took about a quarter of a `captioner serve` profile, and at a few dozen rows the product ran
//! at a quarter of the FMA peak. Here the weights are laid out once, at load time, as panels of
//! [`NR`] output columns (`[k][NR]`, 64-byte aligned) that an AVX-512 tile of [`MR`] rows × `NR`
//! columns streams through in `k` order, so a call only reads them. The input rows (small) are
//! interleaved per tile (`[k][MR]`) at each call so the tile's broadcasts read one sequential
//! stream. Columns are split over the rayon threads, so each thread reads only its share of the
//! weights. Without AVX-512 the product goes to the `gemm` crate on the unpacked weights.

use super::gemm::{gemm, Trans};
use super::{check_len, KernelError};
use rayon::prelude::*;

/// Output columns per panel: four AVX-512 registers.
pub const NR: usize = 64;
/// Rows per register tile: `4 * MR` accumulators, the four weight vectors and a broadcast fit
/// the 32 vector registers. (12 rows × 32 columns measured 10-25% slower from 96 rows up, the
/// same below.)
pub const MR: usize = 6;
/// Depth of one pass over a panel: the `KC × NR` weight block is reused by every row tile while
/// it sits in L2. Measured best among 128/256/512 with the `sat` decoder's shapes.
const KC: usize = 512;
/// Lanes of one AVX-512 register.
const LANES: usize = 16;
/// Floats of padding so the panels can start on a 64-byte boundary.
const ALIGN_FLOATS: usize = 16;

/// A weight matrix seen through strides: the weight of output `j` for input `c` is
/// `data[off + j * rs + c * cs]`. Covers a row-major `[n, k]` matrix (`rs = k, cs = 1`), its
/// transpose, and a column block of a wider matrix, without copying them apart first.
#[derive(Clone, Copy, Debug)]
pub struct WeightView<'a> {
    pub data: &'a [f32],
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> WeightView<'a> {
    /// A row-major `[n, k]` matrix (PyTorch's `Linear` layout).
    pub fn rows(data: &'a [f32], k: usize) -> Self {
        Self {
            data,
            off: 0,
            rs: k,
            cs: 1,
        }
    }

    /// Whether every element of an `n × k` view lies inside `data`.
    fn check(&self, n: usize, k: usize) -> Result<(), KernelError> {
        if n == 0 || k == 0 {
            return Ok(());
        }
        let last = (n - 1)
            .checked_mul(self.rs)
            .zip((k - 1).checked_mul(self.cs))
            .and_then(|(r, c)| r.checked_add(c))
            .and_then(|x| x.checked_add(self.off));
        match last {
            Some(l) if l < self.data.len() => Ok(()),
            _ => Err(KernelError::Invalid(format!(
                "packed weights: a {n}x{k} view (offset {}, strides {}, {}) does not fit {} values",
                self.off,
                self.rs,
                self.cs,
                self.data.len()
            ))),
        }
    }

    fn get(&self, j: usize, c: usize) -> f32 {
        self.data[self.off + j * self.rs + c * self.cs]
    }
}

/// A `[n, k]` weight matrix (row `j` = the weights of output `j`), packed for the product.
#[derive(Clone, Debug, Default)]
pub struct PackedWeights {
    n: usize,
    k: usize,
    /// Panel-major copy (`[n/NR][k][NR]`, the last panel zero-padded) when the CPU has
    /// AVX-512; otherwise empty and the product runs on `w`.
    buf: Vec<f32>,
    offset: usize,
    /// The weights as a contiguous `[n, k]` matrix: kept by [`PackedWeights::new`] (the caller
    /// reads them too), and filled by [`PackedWeights::repack`] only for the fallback.
    w: Vec<f32>,
}

impl PackedWeights {
    /// Packs `w` (`[n, k]`, row-major) and keeps it.
    pub fn new(n: usize, k: usize, w: Vec<f32>) -> Result<Self, KernelError> {
        check_len("packed weight", w.len(), n * k)?;
        let mut packed = Self {
            n,
            k,
            ..Self::default()
        };
        if avx512::available() {
            packed.pack(WeightView::rows(&w, k));
        }
        packed.w = w;
        Ok(packed)
    }

    /// Re-packs for new weights (`n × k`, seen through `view`), reusing the buffers: training
    /// re-packs after every optimiser step and uses each packing for a whole sequence.
    pub fn repack(&mut self, n: usize, k: usize, view: WeightView) -> Result<(), KernelError> {
        view.check(n, k)?;
        self.n = n;
        self.k = k;
        self.w.clear();
        if avx512::available() {
            self.pack(view);
        } else {
            self.w.reserve(n * k);
            for j in 0..n {
                self.w.extend((0..k).map(|c| view.get(j, c)));
            }
        }
        Ok(())
    }

    /// Output columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input columns.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The weights as given to [`PackedWeights::new`], `[n, k]`.
    pub fn weights(&self) -> &[f32] {
        &self.w
    }

    /// `out[i, j] = bias[j] + Σ_c x[i, c] · w[j, c]` for the `rows` rows of `x` (`[rows, k]`);
    /// `out` is `[rows, n]`. `scratch` (the interleaved input) is reused between calls.
    pub fn forward(
        &self,
        x: &[f32],
        rows: usize,
        bias: &[f32],
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) -> Result<(), KernelError> {
        check_len("packed bias", bias.len(), self.n)?;
        self.product(x, rows, Some(bias), out, scratch)
    }

    /// `out[i, j] += Σ_c x[i, c] · w[j, c]`.
    pub fn accumulate(
        &self,
        x: &[f32],
        rows: usize,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) -> Result<(), KernelError> {
        self.product(x, rows, None, out, scratch)
    }

    /// The product, starting from `bias` or (`None`) from `out`.
    fn product(
        &self,
        x: &[f32],
        rows: usize,
        bias: Option<&[f32]>,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) -> Result<(), KernelError> {
        let (n, k) = (self.n, self.k);
        check_len("packed input", x.len(), rows * k)?;
        check_len("packed output", out.len(), rows * n)?;
        if rows == 0 || n == 0 {
            return Ok(());
        }
        if self.buf.is_empty() || k == 0 {
            if let Some(bias) = bias {
                for o in out.chunks_exact_mut(n) {
                    o.copy_from_slice(bias);
                }
            }
            return gemm(
                rows,
                n,
                k,
                1.0,
                x,
                Trans::No,
                &self.w,
                Trans::Yes,
                out,
                true,
            );
        }
        interleave_rows(x, rows, k, scratch);
        let x = &scratch[..];
        let panels = n.div_ceil(NR);
        let threads = rayon::current_num_threads().clamp(1, panels);
        let per_thread = panels.div_ceil(threads);
        let packed = &self.buf[self.offset..];
        let dst = OutPtr(out.as_mut_ptr());
        let dst = &dst;
        let task = |t: usize| {
            let first = t * per_thread;
            let end = ((t + 1) * per_thread).min(panels);
            if first < end {
                // SAFETY: `buf` is non-empty only when `avx512::available()` held at packing time
                // (the CPU does not change). `x` is the interleaved input (`rows` rounded up to
                // `MR`, times `k`), the lengths of `bias` (checked by `forward`) and `out` were
                // checked against `rows` and `n`, and `packed` holds `panels * k * NR` floats,
                // so every address `panel_range` touches is in bounds. Each task writes only the
                // output columns of its own panels, so concurrent tasks never write the same
                // element, and `out` is borrowed mutably for the whole call.
                unsafe {
                    avx512::panel_range(x, rows, k, n, packed, bias, dst.0, first..end);
                }
            }
        };
        if threads == 1 {
            task(0);
        } else {
            (0..threads).into_par_iter().for_each(task);
        }
        Ok(())
    }

    /// Packs `view` (`self.n × self.k`) panel by panel into `buf`, whose panels start 64-byte
    /// aligned (aligned loads never straddle two cache lines). The panels go to the rayon threads;
    /// every float of them is written, so a buffer of the same size is reused without clearing.
    fn pack(&mut self, view: WeightView) {
        let (n, k) = (self.n, self.k);
        let panels = n.div_ceil(NR);
        let len = panels * k * NR + ALIGN_FLOATS;
        if self.buf.len() != len {
            self.buf.clear();
            self.buf.resize(len, 0.0);
        }
        let misalign = (self.buf.as_ptr() as usize % 64) / std::mem::size_of::<f32>();
        self.offset = (ALIGN_FLOATS - misalign) % ALIGN_FLOATS;
        if k == 0 {
            return;
        }
        self.buf[self.offset..][..panels * k * NR]
            .par_chunks_mut(k * NR)
            .enumerate()
            .for_each(|(panel, dst)| pack_panel(view, n, k, panel, dst));
    }
}

/// Writes panel `panel` (`[k][NR]`: outputs `panel * NR ..`, zero past `n`) of an `n × k` view
/// that [`WeightView::check`] accepted. The view is read along its unit stride: a transposed
/// view (`rs == 1`) is a copy of row pieces; a plain one (`cs == 1`) moves as 16x16 tiles
/// transposed in registers where AVX-512 allows, which measured several times faster than the
/// element-by-element loop.
fn pack_panel(view: WeightView, n: usize, k: usize, panel: usize, dst: &mut [f32]) {
    let j0 = panel * NR;
    let width = NR.min(n - j0);
    if view.rs == 1 {
        for (c, out) in dst.chunks_exact_mut(NR).enumerate() {
            let start = view.off + j0 + c * view.cs;
            out[..width].copy_from_slice(&view.data[start..start + width]);
            out[width..].fill(0.0);
        }
        return;
    }
    let (done_j, done_c) = pack_tiles_avx512(view, width, k, j0, dst);
    for (c, out) in dst.chunks_exact_mut(NR).enumerate() {
        // The tiles covered outputs `..done_j` at inputs `..done_c`.
        let first = if c < done_c { done_j } else { 0 };
        for (j, o) in out.iter_mut().enumerate().take(width).skip(first) {
            *o = view.get(j0 + j, c);
        }
        out[width..].fill(0.0);
    }
}

/// The whole 16x16 tiles of [`pack_panel`], for a view with `cs == 1`: returns how many leading
/// outputs and inputs of the panel they covered ((0, 0) for other views or without AVX-512).
fn pack_tiles_avx512(
    view: WeightView,
    width: usize,
    k: usize,
    j0: usize,
    dst: &mut [f32],
) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    if view.cs == 1 && dst.len() == k * NR && avx512::available() {
        const TILE: usize = super::TRANSPOSE_TILE;
        let (done_j, done_c) = (width - width % TILE, k - k % TILE);
        for jb in (0..done_j).step_by(TILE) {
            for cb in (0..done_c).step_by(TILE) {
                // SAFETY: AVX-512F is available. The tile reads view rows j0 + jb .. + 16 (all
                // < n, as jb + 16 <= width) at columns cb .. cb + 16 (<= k) with unit column
                // stride, inside `data` because `check` accepted the whole n × k view; it writes
                // `dst` rows cb .. cb + 16 (<= k) at columns jb .. jb + 16 (<= NR) with row stride
                // NR, inside `dst` (k * NR floats).
                unsafe {
                    super::transpose_tile_avx512(
                        view.data.as_ptr().add(view.off + (j0 + jb) * view.rs + cb),
                        view.rs,
                        dst.as_mut_ptr().add(cb * NR + jb),
                        NR,
                    );
                }
            }
        }
        return (done_j, done_c);
    }
    let _ = (view, width, k, j0, dst);
    (0, 0)
}

/// The output pointer shared by the column tasks of one call (each writes disjoint columns).
struct OutPtr(*mut f32);
// SAFETY: the tasks sharing an `OutPtr` write disjoint elements (see `PackedWeights::forward`),
// and the pointee outlives them (the call waits for every task).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// Copies `x` (`[rows, k]`) tile by tile as `[rows / MR][k][MR]` (the last tile zero-padded).
fn interleave_rows(x: &[f32], rows: usize, k: usize, out: &mut Vec<f32>) {
    out.clear();
    out.resize(rows.div_ceil(MR) * k * MR, 0.0);
    for (tile, dst) in x.chunks(MR * k).zip(out.chunks_exact_mut(MR * k)) {
        for (r, src) in tile.chunks_exact(k).enumerate() {
            for (c, &v) in src.iter().enumerate() {
                dst[c * MR + r] = v;
            }
        }
    }
}

/// Whether [`PackedWeights`] packs on this CPU (AVX-512); without it the product is the general
/// GEMM on the unpacked weights.
pub fn available() -> bool {
    avx512::available()
}

/// Reference for [`PackedWeights::forward`], in `f64`.
pub fn packed_linear_ref(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: &[f32],
) -> Vec<f32> {
    let mut out = vec![0.0; rows * n];
    for i in 0..rows {
        for j in 0..n {
            let dot: f64 = (0..k)
                .map(|c| x[i * k + c] as f64 * w[j * k + c] as f64)
                .sum();
            out[i * n + j] = (bias[j] as f64 + dot) as f32;
        }
    }
    out
}

mod avx512 {
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    pub fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Never called: `available()` is false off x86-64, so no packed buffer exists.
    #[cfg(not(target_arch = "x86_64"))]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn panel_range(
        _x: &[f32],
        _rows: usize,
        _k: usize,
        _n: usize,
        _packed: &[f32],
        _bias: Option<&[f32]>,
        _out: *mut f32,
        _panels: std::ops::Range<usize>,
    ) {
    }

    /// Writes the output columns of `panels` for every row: for each `KC` slice of the depth,
    /// each panel, each tile of up to `MR` rows.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x` is the interleaved input (`[rows / MR][k][MR]`), `packed` holds at least `panels.end * k * NR`
    /// floats, `bias` (when given) is `[n]` and `out` points to a writable `[rows, n]` matrix of which no one
    /// else touches these panels' columns during the call.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn panel_range(
        x: &[f32],
        rows: usize,
        k: usize,
        n: usize,
        packed: &[f32],
        bias: Option<&[f32]>,
        out: *mut f32,
        panels: std::ops::Range<usize>,
    ) {
        use super::{KC, LANES, MR, NR};
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            for panel in panels.clone() {
                let col = panel * NR;
                let width = NR.min(n - col);
                let masks = [0, 1, 2, 3].map(|v| lane_mask(width.saturating_sub(v * LANES)));
                let w = packed.as_ptr().add((panel * k + k0) * NR);
                let init = bias.filter(|_| k0 == 0).map(|b| b.as_ptr().add(col));
                let mut r0 = 0;
                while r0 < rows {
                    let r = MR.min(rows - r0);
                    let t = Tile {
                        x: x.as_ptr().add(r0 * k + k0 * MR),
                        w,
                        kc,
                        out: out.add(r0 * n + col),
                        ldo: n,
                        masks,
                        init,
                    };
                    match r {
                        6 => t.run::<6>(),
                        5 => t.run::<5>(),
                        4 => t.run::<4>(),
                        3 => t.run::<3>(),
                        2 => t.run::<2>(),
                        _ => t.run::<1>(),
                    }
                    r0 += r;
                }
            }
            k0 += kc;
        }
    }

    /// The first `width` (at most 16) lanes.
    #[cfg(target_arch = "x86_64")]
    fn lane_mask(width: usize) -> __mmask16 {
        if width >= 16 {
            0xffff
        } else {
            ((1u32 << width) - 1) as __mmask16
        }
    }

    /// One register tile: `R` rows × `NR` columns over `kc` steps of the depth.
    #[cfg(target_arch = "x86_64")]
    struct Tile {
        /// The tile's interleaved input at this depth slice (`[kc][MR]`).
        x: *const f32,
        w: *const f32,
        kc: usize,
        out: *mut f32,
        ldo: usize,
        /// Valid lanes of each of the panel's four 16-column vectors.
        masks: [__mmask16; 4],
        /// The bias to start from on the first depth slice of a `forward`; otherwise the tile
        /// adds to `out`.
        init: Option<*const f32>,
    }

    #[cfg(target_arch = "x86_64")]
    impl Tile {
        /// # Safety
        /// As [`panel_range`]: AVX-512F, and `R` rows of `x`/`out` and `kc` panel rows of `w`
        /// in bounds.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn run<const R: usize>(&self) {
            let mut acc = [[_mm512_setzero_ps(); 4]; R];
            for (r, a) in acc.iter_mut().enumerate() {
                for (v, (a, &m)) in a.iter_mut().zip(&self.masks).enumerate() {
                    let src = match self.init {
                        Some(b) => b.add(v * LANES),
                        None => self.out.add(r * self.ldo + v * LANES),
                    };
                    *a = _mm512_maskz_loadu_ps(m, src);
                }
            }
            for c in 0..self.kc {
                let w = self.w.add(c * NR);
                let wv = [0, 1, 2, 3].map(|v| _mm512_load_ps(w.add(v * LANES)));
                for (r, a) in acc.iter_mut().enumerate() {
                    let xv = _mm512_set1_ps(*self.x.add(c * MR + r));
                    for (a, &w) in a.iter_mut().zip(&wv) {
                        *a = _mm512_fmadd_ps(xv, w, *a);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                for (v, (&a, &m)) in a.iter().zip(&self.masks).enumerate() {
                    _mm512_mask_storeu_ps(self.out.add(r * self.ldo + v * LANES), m, a);
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    use super::{LANES, MR, NR};
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(rng: &mut impl Rng, len: usize) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    #[test]
    fn matches_reference_on_ragged_shapes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // Rows around the tile height, columns around the panel width and depths around KC.
        for &(rows, n, k) in &[
            (1, 1, 1),
            (9, 31, 5),
            (6, 64, 64),
            (7, 65, 511),
            (12, 32, 64),
            (13, 33, 511),
            (25, 70, 513),
            (40, 97, 1100),
            (3, 200, 17),
        ] {
            let x = random(&mut rng, rows * k);
            let w = random(&mut rng, n * k);
            let bias = random(&mut rng, n);
            let packed = PackedWeights::new(n, k, w.clone()).expect("pack");
            // Poison the output: every element must be written.
            let mut out = vec![f32::NAN; rows * n];
            packed
                .forward(&x, rows, &bias, &mut out, &mut Vec::new())
                .expect("forward");
            let want = packed_linear_ref(&x, rows, k, &w, n, &bias);
            let tol = 1e-5 * (k as f32).sqrt() + 1e-6;
            for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= tol,
                    "rows {rows} n {n} k {k}: element {i}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn single_thread_and_pool_agree_exactly() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let (rows, n, k) = (30, 300, 700);
        let x = random(&mut rng, rows * k);
        let packed = PackedWeights::new(n, k, random(&mut rng, n * k)).expect("pack");
        let bias = random(&mut rng, n);
        let mut pooled = vec![0.0; rows * n];
        packed
            .forward(&x, rows, &bias, &mut pooled, &mut Vec::new())
            .expect("pool");
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        let mut single = vec![0.0; rows * n];
        one.install(|| packed.forward(&x, rows, &bias, &mut single, &mut Vec::new()))
            .expect("single");
        assert_eq!(pooled, single);
    }

    #[test]
    fn repacked_views_accumulate_like_the_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        // A [70, 40 + 90] matrix: the transposed whole and the second column block.
        let (rows, big_n, k1, k2) = (13, 70, 40, 90);
        let wide = random(&mut rng, big_n * (k1 + k2));
        let mut packed = PackedWeights::default();
        // Column block: outputs are the 70 rows, inputs the last 90 columns.
        let view = WeightView {
            data: &wide,
            off: k1,
            rs: k1 + k2,
            cs: 1,
        };
        packed.repack(big_n, k2, view).expect("block");
        let block: Vec<f32> = (0..big_n)
            .flat_map(|j| wide[j * (k1 + k2) + k1..(j + 1) * (k1 + k2)].to_vec())
            .collect();
        let x = random(&mut rng, rows * k2);
        let start = random(&mut rng, rows * big_n);
        let mut out = start.clone();
        packed
            .accumulate(&x, rows, &mut out, &mut Vec::new())
            .expect("accumulate");
        let want = packed_linear_ref(&x, rows, k2, &block, big_n, &vec![0.0; big_n]);
        for ((o, s), w) in out.iter().zip(&start).zip(&want) {
            assert!((o - s - w).abs() < 1e-4, "{o} - {s} vs {w}");
        }
        // Transpose: outputs are the 130 columns, inputs the 70 rows.
        let (n, k) = (k1 + k2, big_n);
        let view = WeightView {
            data: &wide,
            off: 0,
            rs: 1,
            cs: k1 + k2,
        };
        packed.repack(n, k, view).expect("transpose");
        let wt: Vec<f32> = (0..n)
            .flat_map(|j| (0..k).map(move |c| (j, c)))
            .map(|(j, c)| wide[c * n + j])
            .collect();
        let x = random(&mut rng, rows * k);
        let bias = random(&mut rng, n);
        let mut out = vec![f32::NAN; rows * n];
        packed
            .forward(&x, rows, &bias, &mut out, &mut Vec::new())
            .expect("forward");
        let want = packed_linear_ref(&x, rows, k, &wt, n, &bias);
        for (o, w) in out.iter().zip(&want) {
            assert!((o - w).abs() < 1e-4, "{o} vs {w}");
        }
        // A view reaching past its buffer is an error, not a read out of bounds.
        assert!(packed.repack(n + 1, k, view).is_err());
    }

    /// The panels as the element-by-element definition lays them out.
    fn packed_by_definition(view: WeightView, n: usize, k: usize) -> Vec<f32> {
        let panels = n.div_ceil(NR);
        let mut out = vec![0.0; panels * k * NR];
        for j in 0..n {
            for c in 0..k {
                out[((j / NR) * k + c) * NR + j % NR] = view.get(j, c);
            }
        }
        out
    }

    #[test]
    fn every_view_packs_like_the_definition_into_reused_buffers() {
        if !available() {
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let data = random(&mut rng, 150 * 170);
        let mut packed = PackedWeights::default();
        // Whole and ragged tiles and panels, plain, column-block and transposed views; a buffer
        // first filled by a larger matrix must come out clean for a smaller one of the same size
        // class and for a different size.
        for &(n, k, rs, cs, off) in &[
            (150, 170, 170, 1, 0),
            (128, 32, 170, 1, 5),
            (128, 90, 170, 1, 0),
            (70, 90, 170, 1, 80),
            (128, 64, 1, 150, 0),
            (100, 64, 1, 150, 7),
            (17, 150, 1, 150, 3),
            (1, 170, 170, 1, 0),
            (64, 1, 1, 1, 0),
            (130, 64, 1, 150, 0),
        ] {
            let view = WeightView {
                data: &data,
                off,
                rs,
                cs,
            };
            packed.repack(n, k, view).expect("repack");
            let got = &packed.buf[packed.offset..][..n.div_ceil(NR) * k * NR];
            assert_eq!(
                got,
                &packed_by_definition(view, n, k)[..],
                "{n}x{k} rs {rs} cs {cs}"
            );
            assert_eq!(packed.buf[packed.offset..].as_ptr() as usize % 64, 0);
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        assert!(PackedWeights::new(2, 3, vec![0.0; 5]).is_err());
        let p = PackedWeights::new(2, 3, vec![0.0; 6]).expect("pack");
        let mut out = vec![0.0; 2];
        assert!(p
            .forward(&[0.0; 4], 1, &[0.0; 2], &mut out, &mut Vec::new())
            .is_err());
        assert!(p
            .forward(&[0.0; 3], 1, &[0.0; 1], &mut out, &mut Vec::new())
            .is_err());
        assert!(p
            .forward(&[0.0; 3], 1, &[0.0; 2], &mut out[..1], &mut Vec::new())
            .is_err());
    }
}
