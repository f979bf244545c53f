//! The f32 FMA ceiling of this machine: independent fused multiply-add chains with no memory
//! traffic, on one core and then on every core at once. docs/performance.md divides the training
//! step's matmul rates by it. Run: `cargo run --release -p colossus-kernels --example fma_peak`.
//! A third row runs gemm's AVX2 inner loop (16×6: 2 loads, 6 broadcasts, 12 FMAs per k) on
//! panels held in L1, to tell whether that loop's instruction mix alone falls short of the peak.

use std::time::Instant;

/// GFLOP/s of `chains` independent FMA chains of `W` lanes each, `iters` rounds.
#[cfg(target_arch = "x86_64")]
fn rate<const W: usize>(chains: usize, iters: u64, fma: unsafe fn(&mut [f32], u64)) -> f64 {
    let mut acc = vec![0.5f32; chains * W];
    let t = Instant::now();
    // SAFETY: the caller passes a kernel whose target features this CPU has.
    unsafe { fma(&mut acc, iters) };
    let s = t.elapsed().as_secs_f64();
    std::hint::black_box(&acc);
    (2 * chains * W) as f64 * iters as f64 / s / 1e9
}

/// 24 chains of 16 lanes: 24 of the 32 zmm registers, as gemm's AVX-512 microkernel holds its
/// accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512(acc: &mut [f32], iters: u64) {
    use std::arch::x86_64::*;
    let a = _mm512_set1_ps(1.000_000_1);
    let b = _mm512_set1_ps(1e-7);
    let mut r = [_mm512_setzero_ps(); 24];
    for (j, r) in r.iter_mut().enumerate() {
        *r = _mm512_set1_ps(acc[j * 16]);
    }
    for _ in 0..iters {
        for r in r.iter_mut() {
            *r = _mm512_fmadd_ps(a, *r, b);
        }
    }
    for (j, r) in r.iter().enumerate() {
        // SAFETY: acc holds 24 × 16 floats.
        unsafe { _mm512_storeu_ps(acc.as_mut_ptr().add(j * 16), *r) };
    }
}

/// 12 chains of 8 lanes: 12 of the 16 ymm registers, as an AVX2 microkernel holds them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2(acc: &mut [f32], iters: u64) {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(1.000_000_1);
    let b = _mm256_set1_ps(1e-7);
    let mut r = [_mm256_setzero_ps(); 12];
    for (j, r) in r.iter_mut().enumerate() {
        *r = _mm256_set1_ps(acc[j * 8]);
    }
    for _ in 0..iters {
        for r in r.iter_mut() {
            *r = _mm256_fmadd_ps(a, *r, b);
        }
    }
    for (j, r) in r.iter().enumerate() {
        // SAFETY: acc holds 12 × 8 floats.
        unsafe { _mm256_storeu_ps(acc.as_mut_ptr().add(j * 8), *r) };
    }
}

/// Depth of the L1 panels: A is 256 × 16 floats (16 KiB), B 256 × 6 (6 KiB), as gemm packs them.
#[cfg(target_arch = "x86_64")]
const KC: usize = 256;

/// gemm's AVX2 `x2x6` loop over packed panels in L1, `iters / KC` passes; `acc` takes the sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_gemm_loop(acc: &mut [f32], iters: u64) {
    use std::arch::x86_64::*;
    let lhs = vec![1e-3f32; KC * 16];
    let rhs = vec![1e-3f32; KC * 6];
    let mut c = [_mm256_setzero_ps(); 12];
    for _ in 0..iters / KC as u64 {
        for (a, b) in lhs.chunks_exact(16).zip(rhs.chunks_exact(6)) {
            // SAFETY: each chunk holds 16 (a) or 6 (b) floats.
            let (a0, a1) = unsafe { (_mm256_loadu_ps(a.as_ptr()), _mm256_loadu_ps(a.as_ptr().add(8))) };
            for (j, bj) in b.iter().enumerate() {
                let bj = _mm256_broadcast_ss(bj);
                c[2 * j] = _mm256_fmadd_ps(a0, bj, c[2 * j]);
                c[2 * j + 1] = _mm256_fmadd_ps(a1, bj, c[2 * j + 1]);
            }
        }
    }
    for (j, r) in c.iter().enumerate() {
        // SAFETY: acc holds 12 × 8 floats.
        unsafe { _mm256_storeu_ps(acc.as_mut_ptr().add(j * 8), *r) };
    }
}

/// A kernel's name and one measurement of it.
#[cfg(target_arch = "x86_64")]
type Kernel = (&'static str, fn() -> f64);

/// Rounds per measurement: ~0.1 s on one core.
#[cfg(target_arch = "x86_64")]
const ITERS: u64 = 20_000_000;

#[cfg(target_arch = "x86_64")]
fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut kernels: Vec<Kernel> = Vec::new();
    if is_x86_feature_detected!("avx512f") {
        kernels.push(("AVX-512", || rate::<16>(24, ITERS, avx512)));
    }
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        kernels.push(("AVX2+FMA", || rate::<8>(12, 2 * ITERS, avx2)));
        kernels.push(("AVX2 16×6 GEMM loop, L1", || {
            rate::<8>(12, 2 * ITERS, avx2_gemm_loop)
        }));
    }
    if kernels.is_empty() {
        println!("no AVX2+FMA on this CPU: nothing to measure");
        return;
    }
    println!(
        "{:<26} {:>14} {:>24}",
        "kernel",
        "1 core",
        format!("each of {cores} cores at once")
    );
    for &(name, k) in &kernels {
        let one = (0..3).map(|_| k()).fold(0.0, f64::max);
        let all: Vec<f64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..cores)
                .map(|_| s.spawn(|| (0..3).map(|_| k()).fold(0.0, f64::max)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("a measuring thread"))
                .collect()
        });
        let min = all.iter().copied().fold(f64::MAX, f64::min);
        let max = all.iter().copied().fold(0.0, f64::max);
        println!("{name:<26} {one:>9.1} GF/s {min:>15.1}–{max:.1} GF/s");
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("fma_peak measures x86-64 only");
}
