//! GEMM on Intel AMX tiles: `f32` operands rounded to `bf16`, products accumulated in `f32`.
//!
//! This is the mixed-precision path of [`super::gemm::gemm`] (see [`super::gemm::MatmulPrecision`]):
//! on CPUs with AMX (Sapphire Rapids and later) one `tdpbf16ps` does a 16x16x32 block of
//! multiply-adds, several times the `f32` AVX-512 rate, at the cost of rounding both inputs to
//! 8-bit mantissas, the trade PyTorch's `autocast(dtype=torch.bfloat16)` makes. Outputs and
//! accumulation stay `f32`.
//!
//! Operands are packed into tile order first (rows padded to 32, depth padded to 32 with zeros),
//! then every 32x32 block of `c` is computed by four accumulator tiles over a depth chunk and added
//! into `c` through a small scratch block, so any shape, transpose, `alpha` and `accumulate` work
//! the same way. Tiles are per-thread state: each thread loads the tile configuration once.

use super::act::multiversion;
use super::gemm::Trans;
use super::{check_len, KernelError};
use rayon::prelude::*;
use std::sync::OnceLock;

/// Rows of `c` (and of `op(a)`) per block; two 16-row tiles.
const MB: usize = 32;
/// Columns of `c` (and of `op(b)`) per block; two 16-column tiles.
const NB: usize = 32;
/// Depth per tile step: 32 `bf16` per 64-byte tile row.
const KB: usize = 32;
/// Depth steps per chunk: a chunk of one `a` block is 32 KB (fits L1 beside the `b` tiles).
const K_STEPS: usize = 16;
/// Column blocks handled by one task for one row block: a 256-column strip of `b`.
const N_GROUP: usize = 8;
/// `u16` elements in one packed tile (16 rows x 64 bytes).
const TILE: usize = 512;

/// Whether this CPU has AMX-BF16 and the kernel lets this process use the tile registers.
/// Asked once; the first call requests the permission Linux requires (`ARCH_REQ_XCOMP_PERM`).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    if !(std::arch::is_x86_feature_detected!("avx512f")) {
        return false;
    }
    // CPUID.(EAX=7, ECX=0):EDX bit 22 = AMX-BF16, bit 24 = AMX-TILE.
    // CPUID leaf 7 exists on every CPU with AVX-512 (checked above).
    let leaf = std::arch::x86_64::__cpuid_count(7, 0);
    if leaf.edx & (1 << 22) == 0 || leaf.edx & (1 << 24) == 0 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
    const XFEATURE_XTILEDATA: u64 = 18;
    const SYS_ARCH_PRCTL: u64 = 158;
    let ret: i64;
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) only changes which extended states the
    // kernel lets this process use; the syscall clobbers rcx and r11 and nothing else.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL as i64 => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// Rounds to the nearest `bf16`, ties to even (what `torch.bfloat16` conversion does).
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    let rounded = u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16;
    // A select, not a branch, so that packing loops vectorise; NaNs stay (quiet) NaNs.
    let nan = (u & 0x7fff_ffff) > 0x7f80_0000;
    (if nan { (u >> 16) | 0x40 } else { rounded }) as u16
}

/// The `f32` value of a `bf16`.
#[inline(always)]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

multiversion! {
    /// `dst = (first ? 0 : dst) + alpha * src`.
    fn combine_row(dst: &mut [f32], src: &[f32], alpha: f32, first: bool) {
        if first {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = alpha * s;
            }
        } else {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d += alpha * s;
            }
        }
    }
}

/// Two `bf16` as one `u32` (`lo` in the low half): one depth pair of a `b` tile row.
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    to_bf16(lo) as u32 | (to_bf16(hi) as u32) << 16
}

/// Packs `op(a)` (`[m, k]`) into row blocks of [`MB`] rows: block `ib`, depth step `kb`, tile `t`
/// (rows `16t..16t+16` of the block) is a contiguous 16x32 `bf16` tile.
fn pack_a(a: &[f32], ta: Trans, m: usize, k: usize, packed: &mut Vec<u16>) {
    let (mp, kp) = (m.div_ceil(MB), k.div_ceil(KB));
    let block = kp * 2 * TILE;
    packed.clear();
    packed.resize(mp * block, 0);
    packed
        .par_chunks_mut(block)
        .enumerate()
        .for_each(|(ib, dst)| pack_a_block(a, ta == Trans::Yes, m, k, ib, dst));
}

multiversion! {
    /// Row block `ib` of [`pack_a`].
    fn pack_a_block(a: &[f32], transposed: bool, m: usize, k: usize, ib: usize, dst: &mut [u16]) {
        let rows = (m - ib * MB).min(MB);
        if !transposed {
            for r in 0..rows {
                let src = &a[(ib * MB + r) * k..(ib * MB + r) * k + k];
                let (t, tr) = (r / 16, r % 16);
                for (kb, chunk) in src.chunks(KB).enumerate() {
                    let o = (kb * 2 + t) * TILE + tr * KB;
                    for (d, &v) in dst[o..o + chunk.len()].iter_mut().zip(chunk) {
                        *d = to_bf16(v);
                    }
                }
            }
        } else {
            // Stored `[k, m]`: transpose one 16x32 tile at a time, so the scattered writes stay
            // inside one L1-resident kilobyte.
            for kb in 0..k.div_ceil(KB) {
                for t in 0..rows.div_ceil(16) {
                    let r0 = ib * MB + t * 16;
                    let tile_rows = (rows - t * 16).min(16);
                    let tile = &mut dst[(kb * 2 + t) * TILE..(kb * 2 + t + 1) * TILE];
                    for kk in 0..KB.min(k - kb * KB) {
                        let p = kb * KB + kk;
                        let src = &a[p * m + r0..p * m + r0 + tile_rows];
                        for (r, &v) in src.iter().enumerate() {
                            tile[r * KB + kk] = to_bf16(v);
                        }
                    }
                }
            }
        }
    }
}

/// `u32` pairs in one packed `b` tile (16 rows of 16 pairs).
const PTILE: usize = TILE / 2;

/// Packs `op(b)` (`[k, n]`) into column blocks of [`NB`] columns in the pair-interleaved (VNNI)
/// layout `tdpbf16ps` reads: block `jb`, depth step `kb`, tile `t` (columns `16t..16t+16`) has
/// as tile row `q` the depth pair `(2q, 2q+1)` of its 16 columns, one `u32` per column.
fn pack_b(b: &[f32], tb: Trans, k: usize, n: usize, packed: &mut Vec<u32>) {
    let (np, kp) = (n.div_ceil(NB), k.div_ceil(KB));
    let block = kp * 2 * PTILE;
    packed.clear();
    packed.resize(np * block, 0);
    packed
        .par_chunks_mut(block)
        .enumerate()
        .for_each(|(jb, dst)| pack_b_block(b, tb == Trans::Yes, k, n, jb, dst));
}

multiversion! {
    /// Column block `jb` of [`pack_b`].
    fn pack_b_block(b: &[f32], transposed: bool, k: usize, n: usize, jb: usize, dst: &mut [u32]) {
        let cols = (n - jb * NB).min(NB);
        if !transposed {
            // Stored `[k, n]`: rows `p` and `p + 1` are contiguous across the columns.
            for pp in 0..k.div_ceil(2) {
                let p = 2 * pp;
                let r0 = &b[p * n + jb * NB..p * n + jb * NB + cols];
                let (kb, q) = (p / KB, (p % KB) / 2);
                if p + 1 < k {
                    let r1 = &b[(p + 1) * n + jb * NB..(p + 1) * n + jb * NB + cols];
                    for t in 0..cols.div_ceil(16) {
                        let (c0, c1) = (t * 16, (t * 16 + 16).min(cols));
                        let o = (kb * 2 + t) * PTILE + q * 16;
                        for ((d, &lo), &hi) in
                            dst[o..o + c1 - c0].iter_mut().zip(&r0[c0..c1]).zip(&r1[c0..c1])
                        {
                            *d = pair(lo, hi);
                        }
                    }
                } else {
                    for (cidx, &lo) in r0.iter().enumerate() {
                        dst[(kb * 2 + cidx / 16) * PTILE + q * 16 + cidx % 16] = pair(lo, 0.0);
                    }
                }
            }
        } else {
            // Stored `[n, k]`: column `j` of op(b) is row `j`, its depth pairs adjacent.
            for kb in 0..k.div_ceil(KB) {
                let (p0, p1) = (kb * KB, (kb * KB + KB).min(k));
                for cidx in 0..cols {
                    let row = &b[(jb * NB + cidx) * k + p0..(jb * NB + cidx) * k + p1];
                    let o = (kb * 2 + cidx / 16) * PTILE + cidx % 16;
                    for (q, two) in row.chunks(2).enumerate() {
                        dst[o + q * 16] = pair(two[0], two.get(1).copied().unwrap_or(0.0));
                    }
                }
            }
        }
    }
}

/// The 64-byte tile configuration: palette 1, eight 16-row x 64-byte tiles.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// Proof that this thread's tile configuration is loaded; the only way to reach the tile
/// instructions.
struct Tiles;

impl Tiles {
    /// # Safety
    /// [`available`] must have returned `true`.
    #[inline]
    unsafe fn load() -> Self {
        thread_local! {
            static CONFIGURED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }
        // Configured once per thread and kept: releasing and reloading the tiles per task cost
        // more than the products of a small task, and a configured thread
        // costs only the tile state saved at context switches.
        if !CONFIGURED.with(|c| c.replace(true)) {
            std::arch::asm!("ldtilecfg [{}]", in(reg) &CONFIG as *const TileConfig, options(nostack));
        }
        Tiles
    }

    /// Clears the four accumulator tiles.
    #[inline]
    fn zero(&self) {
        // SAFETY: the tiles are configured (`self` exists); only tile registers are written.
        unsafe {
            std::arch::asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
        }
    }

    /// Loads the accumulators from a 32x32 `f32` block at `c` with rows `ldc` floats apart.
    ///
    /// # Safety
    /// `c` must address 32 readable rows of 32 floats, `ldc` floats apart.
    #[inline]
    unsafe fn load_acc(&self, c: *const f32, ldc: usize) {
        std::arch::asm!(
            "tileloadd tmm0, [{c0} + {stride}*1]",
            "tileloadd tmm1, [{c1} + {stride}*1]",
            "tileloadd tmm2, [{c2} + {stride}*1]",
            "tileloadd tmm3, [{c3} + {stride}*1]",
            c0 = in(reg) c,
            c1 = in(reg) c.add(16),
            c2 = in(reg) c.add(16 * ldc),
            c3 = in(reg) c.add(16 * ldc + 16),
            stride = in(reg) ldc * 4,
            options(nostack, readonly)
        );
    }

    /// Adds `Σ_kb a_tiles(kb) · b_tiles(kb)` over `steps` depth steps to the accumulators.
    ///
    /// # Safety
    /// `a` must hold `steps * 2 * TILE` packed `bf16` and `b` `steps * TILE` packed pairs (see
    /// [`pack_a`], [`pack_b`]).
    #[inline]
    unsafe fn multiply(&self, a: *const u16, b: *const u32, steps: usize) {
        for s in 0..steps {
            let ap = a.add(s * 2 * TILE);
            // Two tiles of 256 pairs per depth step.
            let bp = b.add(s * TILE);
            std::arch::asm!(
                "tileloadd tmm4, [{a0} + {stride}*1]",
                "tileloadd tmm6, [{b0} + {stride}*1]",
                "tileloadd tmm7, [{b1} + {stride}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm5, [{a1} + {stride}*1]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) ap,
                a1 = in(reg) ap.add(TILE),
                b0 = in(reg) bp,
                b1 = in(reg) bp.add(TILE / 2),
                stride = in(reg) 64usize,
                options(nostack, readonly)
            );
        }
    }

    /// Stores the accumulators as a 32x32 `f32` block at `c`, rows `ldc` floats apart.
    ///
    /// # Safety
    /// `c` must address 32 writable rows of 32 floats, `ldc` floats apart.
    #[inline]
    unsafe fn store(&self, c: *mut f32, ldc: usize) {
        std::arch::asm!(
            "tilestored [{c0} + {stride}*1], tmm0",
            "tilestored [{c1} + {stride}*1], tmm1",
            "tilestored [{c2} + {stride}*1], tmm2",
            "tilestored [{c3} + {stride}*1], tmm3",
            c0 = in(reg) c,
            c1 = in(reg) c.add(16),
            c2 = in(reg) c.add(16 * ldc),
            c3 = in(reg) c.add(16 * ldc + 16),
            stride = in(reg) ldc * 4,
            options(nostack)
        );
    }
}

thread_local! {
    static PACKED: std::cell::RefCell<(Vec<u16>, Vec<u32>)> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new()))
    };
}

/// `c = (accumulate ? c : 0) + alpha * op(a) · op(b)` with `bf16` products, as
/// [`super::gemm::gemm`]. Callers check [`available`] first.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_bf16(
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
    if !available() {
        return Err(KernelError::Invalid(
            "AMX-BF16 is not available on this CPU".into(),
        ));
    }
    // `run` writes through raw pointers computed from the shape: the lengths must fit it.
    check_len("gemm a", a.len(), m * k)?;
    check_len("gemm b", b.len(), k * n)?;
    check_len("gemm c", c.len(), m * n)?;
    // Packing a transposed `a` is a scattered transpose, packing an untransposed `b` is
    // streaming: when `a` is the transposed and larger operand (the weight gradient
    // `dl^T · x`), compute `c^T = op(b)^T · op(a)^T` instead and write the result transposed.
    let swap = ta == Trans::Yes && (tb == Trans::Yes || m > n);
    let flip = |t: Trans| {
        if t == Trans::No {
            Trans::Yes
        } else {
            Trans::No
        }
    };
    // The packed operands are reused between calls on this thread (the caller's thread: the
    // tasks below only read them).
    PACKED.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (pa, pb) = &mut *bufs;
        if swap {
            pack_a(b, flip(tb), n, k, pa);
            pack_b(a, flip(ta), k, m, pb);
            run(n, m, k, alpha, pa, pb, c, accumulate, true);
        } else {
            pack_a(a, ta, m, k, pa);
            pack_b(b, tb, k, n, pb);
            run(m, n, k, alpha, pa, pb, c, accumulate, false);
        }
    });
    Ok(())
}

/// Multiplies packed operands into `c` (`[m, n]`, or its transpose `[n, m]` when `transposed`).
#[allow(clippy::too_many_arguments)]
fn run(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    pa: &[u16],
    pb: &[u32],
    c: &mut [f32],
    accumulate: bool,
    transposed: bool,
) {
    let (mblocks, nblocks, ksteps) = (m.div_ceil(MB), n.div_ceil(NB), k.div_ceil(KB));
    let groups = nblocks.div_ceil(N_GROUP);
    let (a_len, b_len) = (ksteps * 2 * TILE, ksteps * TILE);
    // One task per (row block, column group): disjoint pieces of `c`.
    let c_addr = c.as_mut_ptr() as usize;
    // Column-group-major, so that consecutive tasks (rayon hands each thread a contiguous
    // range) reuse one 256-column strip of packed `b` from L2 across all row blocks.
    (0..mblocks * groups).into_par_iter().for_each(|task| {
        let (g, ib) = (task / mblocks, task % mblocks);
        // SAFETY: `available()` was checked by the caller.
        let tiles = unsafe { Tiles::load() };
        let mut scratch = [0f32; MB * NB];
        let rows = (m - ib * MB).min(MB);
        let a_block = &pa[ib * a_len..(ib + 1) * a_len];
        for k0 in (0..ksteps).step_by(K_STEPS) {
            let steps = K_STEPS.min(ksteps - k0);
            for jb in g * N_GROUP..((g + 1) * N_GROUP).min(nblocks) {
                let b_block = &pb[jb * b_len..(jb + 1) * b_len];
                let cols = (n - jb * NB).min(NB);
                let first = k0 == 0 && !accumulate;
                let c_ptr = c_addr as *mut f32;
                // SAFETY (all the unsafe blocks below): the packed blocks hold `ksteps` depth
                // steps of two tiles each and `k0 + steps <= ksteps`, so the tiles read from
                // step `k0` on are in bounds. The rectangle rows `ib*MB..ib*MB+rows` x columns
                // `jb*NB..jb*NB+cols` of the `[m, n]` result lies inside `c` (stored as is or
                // transposed), and no other task touches it: tasks own disjoint row-block x
                // column-group rectangles.
                let (a_tiles, b_tiles) = unsafe {
                    (
                        a_block.as_ptr().add(k0 * 2 * TILE),
                        b_block.as_ptr().add(k0 * TILE),
                    )
                };
                if !transposed && rows == MB && cols == NB && alpha == 1.0 {
                    // A whole block: accumulate in the tiles straight from and into `c`.
                    let at = unsafe { c_ptr.add(ib * MB * n + jb * NB) };
                    if first {
                        tiles.zero();
                    } else {
                        unsafe { tiles.load_acc(at, n) };
                    }
                    unsafe {
                        tiles.multiply(a_tiles, b_tiles, steps);
                        tiles.store(at, n);
                    }
                    continue;
                }
                tiles.zero();
                unsafe {
                    tiles.multiply(a_tiles, b_tiles, steps);
                    tiles.store(scratch.as_mut_ptr(), NB);
                }
                if transposed {
                    // Transpose the block in place, so that its rows are the rows of `c`.
                    for r in 0..MB {
                        for cidx in r + 1..NB {
                            scratch.swap(r * NB + cidx, cidx * NB + r);
                        }
                    }
                    for cidx in 0..cols {
                        let off = (jb * NB + cidx) * m + ib * MB;
                        let dst = unsafe { std::slice::from_raw_parts_mut(c_ptr.add(off), rows) };
                        combine_row(dst, &scratch[cidx * NB..cidx * NB + rows], alpha, first);
                    }
                } else {
                    for r in 0..rows {
                        let off = (ib * MB + r) * n + jb * NB;
                        let dst = unsafe { std::slice::from_raw_parts_mut(c_ptr.add(off), cols) };
                        combine_row(dst, &scratch[r * NB..r * NB + cols], alpha, first);
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::gemm_ref;
    use rand::{Rng, SeedableRng};

    fn rounded(x: &[f32]) -> Vec<f32> {
        x.iter().map(|&v| from_bf16(to_bf16(v))).collect()
    }

    #[test]
    fn bf16_rounding_is_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: rounds up to even.
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    }

    /// Every transpose, odd shapes (padding in all three dimensions, several depth chunks),
    /// `alpha` and `accumulate`: equal to the `f64` reference on the `bf16`-rounded inputs up to
    /// `f32` accumulation error.
    #[test]
    fn matches_reference_on_rounded_inputs() {
        if !available() {
            eprintln!("no AMX-BF16 here: skipped");
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for &(m, n, k) in &[(1, 1, 1), (17, 33, 31), (64, 300, 600), (70, 40, 1100)] {
            for ta in [Trans::No, Trans::Yes] {
                for tb in [Trans::No, Trans::Yes] {
                    for (alpha, accumulate) in [(1.0, false), (1.0, true), (0.5, true)] {
                        let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                        let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                        let c0: Vec<f32> =
                            (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                        let mut want = c0.clone();
                        gemm_ref(
                            m,
                            n,
                            k,
                            alpha,
                            &rounded(&a),
                            ta,
                            &rounded(&b),
                            tb,
                            &mut want,
                            accumulate,
                        );
                        let mut got = c0.clone();
                        gemm_bf16(m, n, k, alpha, &a, ta, &b, tb, &mut got, accumulate).unwrap();
                        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                            let tol = 1e-5 * (k as f32).sqrt() + 1e-5 * w.abs();
                            assert!(
                                (g - w).abs() <= tol,
                                "{m}x{n}x{k} {ta:?} {tb:?} alpha {alpha} acc {accumulate}: \
                                 c[{i}] = {g}, want {w}"
                            );
                        }
                    }
                }
            }
        }
    }
}
