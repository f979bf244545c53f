//! Model FLOP utilisation and peak memory, as `train` logs them and `bench` prints them.
//!
//! MFU = (tokens/s × training FLOPs per token) ÷ the device's peak FLOP/s, where training FLOPs
//! per token are `model::params::train_flops_per_token` (6 × active parameters plus the causal
//! attention term). The peak is `train.peak_tflops` when set; otherwise on CPU it is measured as
//! the best f32 rate of a 1024³ matmul on the backend in use (CPU peaks vary too much by model,
//! clock and SIMD width to tabulate; the measurement takes ~50 ms at startup), and on GPUs it is
//! unknown (no MFU logged) unless set — datasheet figures are in docs/plan.md.

use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::config::BackendKind;
use crate::rng::Rng;

/// The MFU denominator in TFLOP/s and where it came from, if known.
pub fn peak_tflops<B: Backend>(
    kind: BackendKind,
    configured: f64,
    device: &B::Device,
) -> Option<(f64, String)> {
    if configured > 0.0 {
        return Some((configured, "train.peak_tflops".into()));
    }
    if kind != BackendKind::Cpu {
        return None;
    }
    let n = 1024;
    let mut rng = Rng::new(1);
    let data: Vec<f32> = (0..n * n).map(|_| rng.normal() as f32).collect();
    let a = Tensor::<B, 2>::from_data(TensorData::new(data.clone(), [n, n]), device);
    let b = Tensor::<B, 2>::from_data(TensorData::new(data, [n, n]), device);
    // The fastest of 10 (~0.2 s on 2 cores): the first products pay for fresh pages and the
    // gemm set-up, and a shared machine's speed drifts, so a best-of-3 could catch a slow moment
    // and report an MFU above 100%.
    let mut best = f64::INFINITY;
    for _ in 0..10 {
        let t = Instant::now();
        let c = a.clone().matmul(b.clone());
        let _ = c.into_data();
        best = best.min(t.elapsed().as_secs_f64());
    }
    Some((
        2.0 * (n * n * n) as f64 / best / 1e12,
        "measured f32 matmul 1024³".into(),
    ))
}

/// Achieved model TFLOP/s ÷ peak TFLOP/s.
pub fn mfu(tokens_per_s: f64, flops_per_token: f64, peak_tflops: f64) -> f64 {
    tokens_per_s * flops_per_token / (peak_tflops * 1e12)
}

/// Peak resident memory of this process in bytes (Linux: VmHWM in /proc/self/status).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mfu_by_hand() {
        // 1000 tokens/s × 6e9 FLOPs/token = 6 TFLOP/s of a 60 TFLOP/s peak: 10 %.
        assert!((mfu(1000.0, 6e9, 60.0) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn peak_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let v = vec![1u8; 8 << 20];
            assert!(peak_rss_bytes().unwrap() >= v.len() as u64);
        }
    }

    #[test]
    fn configured_peak_wins() {
        let (p, src) =
            peak_tflops::<crate::backend::Cpu>(BackendKind::Cpu, 12.5, &Default::default()).unwrap();
        assert_eq!((p, src.as_str()), (12.5, "train.peak_tflops"));
    }
}
