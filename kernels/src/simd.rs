//! Run a loop body compiled for AVX2+FMA when the CPU has them (picked once at run time), else
//! for the baseline target. Machines differ in the last bits (FMA rounds once), a given machine
//! always gives the same bits.

/// `$body` is an expression; it is compiled twice, and the AVX2+FMA copy is used when available.
macro_rules! multiversion {
    ($body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn fast<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if $crate::simd::has_avx2_fma() {
                // SAFETY: the CPU supports the features `fast` is compiled for.
                unsafe { fast(|| $body) }
            } else {
                $body
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $body
        }
    }};
}
pub(crate) use multiversion;

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}
