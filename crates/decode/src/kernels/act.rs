//! Vectorisable activations and the runtime CPU-feature dispatch the element-wise kernels share.
//!
//! `f32::exp` is a libm call that the compiler cannot vectorise; softmax over an 8,000-word
//! vocabulary and the LSTM/GRU gates spend most of their element-wise time in `exp`, so we use a
//! branch-free polynomial (Cephes `expf`, relative error ~2e-7) that LLVM turns into SIMD code.

/// Defines a function whose body is compiled three times (AVX-512, AVX2+FMA, baseline) and picks
/// the widest one the running CPU supports. The body must be plain loops over slices so LLVM can
/// vectorise it with the enabled features.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $crate::kernels::act::multiversion! {
            $(#[$m])* $vis fn $name($($arg: $ty),*) -> () $body
        }
    };
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments, clippy::unused_unit)]
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn inner($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4($($arg: $ty),*) -> $ret { inner($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3($($arg: $ty),*) -> $ret { inner($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU reports AVX-512F (and therefore AVX2/FMA), the only
                    // precondition of `v4`; the body itself is safe code.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU reports AVX2 and FMA, the only precondition of `v3`.
                    return unsafe { v3($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// `e^x`, branch-free so that loops over it vectorise. Inputs are clamped to the finite range of
/// `f32` results (`e^x` saturates to ~1.6e38 above 88.37 and flushes to ~1e-38 below -87.3).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.376_26);
    let fx = (x * std::f32::consts::LOG2_E + 0.5).floor();
    // ln 2 split in two so `x - fx*ln2` stays exact to f32 precision.
    let r = x - fx * 0.693_359_4 + fx * 2.121_944_4e-4;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r2 + r + 1.0;
    // 2^fx for the integer fx in [-126, 127]: adding 1.5 * 2^23 puts fx in the low mantissa bits
    // (`0x4B40_0000 + fx`), from which the biased exponent is integer arithmetic. The obvious
    // `fx as i32` saturates in Rust, and LLVM turns that into scalar conversions that keep the
    // loops around `exp` from vectorising fully.
    let biased = (fx + 12_582_912.0)
        .to_bits()
        .wrapping_sub(0x4B40_0000 - 127);
    let scale = f32::from_bits(biased << 23);
    y * scale
}

/// Logistic sigmoid `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Hyperbolic tangent via `e^{-2|x|}`, which never overflows.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let e = exp(-2.0 * x.abs());
    ((1.0 - e) / (1.0 + e)).copysign(x)
}

multiversion! {
    /// `x <- tanh(x)` over a slice.
    pub fn tanh_inplace(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = tanh(*v);
        }
    }
}

multiversion! {
    /// `x <- max(x, 0)` over a slice.
    pub fn relu_inplace(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = v.max(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_sigmoid_tanh_match_libm() {
        let mut worst = [0f32; 3];
        let mut x = -30.0f32;
        while x < 30.0 {
            let rel = |a: f32, b: f32| (a - b).abs() / b.abs().max(1e-30);
            worst[0] = worst[0].max(rel(exp(x), x.exp()));
            worst[1] = worst[1].max((sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs());
            worst[2] = worst[2].max((tanh(x) - x.tanh()).abs());
            x += 0.0137;
        }
        assert!(worst[0] < 1e-6, "exp rel err {}", worst[0]);
        assert!(worst[1] < 1e-6, "sigmoid abs err {}", worst[1]);
        assert!(worst[2] < 1e-6, "tanh abs err {}", worst[2]);
        assert!(exp(-1000.0).is_finite());
        assert!(exp(1000.0).is_finite());
        assert_eq!(tanh(0.0), 0.0);
    }

    #[test]
    fn tanh_inplace_matches_scalar() {
        let mut v: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.013).collect();
        let want: Vec<f32> = v.iter().map(|x| x.tanh()).collect();
        tanh_inplace(&mut v);
        for (a, b) in v.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
