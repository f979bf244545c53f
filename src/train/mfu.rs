//! Model FLOP utilisation and peak memory, as `train` logs them and `bench` prints them.
//!
//! MFU = (tokens/s × training FLOPs per token) ÷ the device's peak FLOP/s, where training FLOPs
//! per token are `model::params::train_flops_per_token` (6 × active parameters plus the causal
//! attention term). The peak is `train.peak_tflops` when set. Otherwise on CPU it is measured as
//! the best f32 rate of a 1024³ matmul on the backend in use (CPU peaks vary too much by model,
//! clock and SIMD width to tabulate; the measurement takes ~50 ms at startup). On CUDA it is the
//! datasheet's dense tensor-core rate for the precision of the matrix products (bf16; tf32 for
//! f32, which cubek runs on the tensor cores as tf32) when the GPU is one of `colossus plan`'s
//! table (H100 SXM, H200, B200: `plan::hardware`), named by the NVIDIA driver; otherwise, and on
//! wgpu, unknown (no MFU logged) unless set.

use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::config::{BackendKind, Precision};
use crate::plan::hardware::Gpu;
use crate::rng::Rng;

/// The MFU denominator in TFLOP/s and where it came from, or why it is unknown.
pub fn peak_tflops<B: Backend>(
    kind: BackendKind,
    precision: Precision,
    configured: f64,
    device: &B::Device,
) -> Result<(f64, String), String> {
    if configured > 0.0 {
        return Ok((configured, "train.peak_tflops".into()));
    }
    match kind {
        BackendKind::Cpu => {}
        BackendKind::Cuda => return datasheet_peak(precision, nvidia_model()),
        BackendKind::Wgpu => {
            return Err("unknown on wgpu: set train.peak_tflops (datasheet figures: docs/plan.md)".into());
        }
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
    Ok((
        2.0 * (n * n * n) as f64 / best / 1e12,
        "measured f32 matmul 1024³".into(),
    ))
}

/// The datasheet peak of the GPU the driver names `model`, for matrix products in `precision`.
fn datasheet_peak(precision: Precision, model: Option<String>) -> Result<(f64, String), String> {
    let model = model.ok_or("unknown: the NVIDIA driver did not name the GPU; set train.peak_tflops")?;
    let gpu = Gpu::from_device_name(&model).ok_or_else(|| {
        format!("unknown for {model}: set train.peak_tflops (datasheet figures: docs/plan.md)")
    })?;
    let spec = gpu.spec();
    Ok(match precision {
        // Hopper's and Blackwell's tensor cores run f16 at the bf16 rate.
        Precision::Bf16 | Precision::F16 => (
            spec.peak_bf16_tflops,
            format!("{model}: {} dense {} datasheet", spec.name, precision.name()),
        ),
        Precision::F32 => (
            spec.peak_tf32_tflops,
            format!("{model}: {} dense tf32 datasheet", spec.name),
        ),
    })
}

/// The model of this machine's NVIDIA GPUs as the driver names it ("NVIDIA H200"), when every
/// GPU has the same one: from `/proc/driver/nvidia/gpus/*/information`, else from `nvidia-smi`
/// (a sandbox may hide the former). Read once at start-up, not per step.
fn nvidia_model() -> Option<String> {
    let from_proc: Vec<String> = std::fs::read_dir("/proc/driver/nvidia/gpus")
        .map(|dir| {
            dir.filter_map(|e| {
                let text = std::fs::read_to_string(e.ok()?.path().join("information")).ok()?;
                text.lines()
                    .find_map(|l| l.strip_prefix("Model:").map(|m| m.trim().to_string()))
            })
            .collect()
        })
        .unwrap_or_default();
    let models = if from_proc.is_empty() {
        let out = std::process::Command::new("nvidia-smi")
            .args(["--query-gpu=name", "--format=csv,noheader"])
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .collect()
    } else {
        from_proc
    };
    let first = models.first()?.clone();
    (!first.is_empty() && models.iter().all(|m| *m == first)).then_some(first)
}

/// Achieved model TFLOP/s ÷ peak TFLOP/s.
pub fn mfu(tokens_per_s: f64, flops_per_token: f64, peak_tflops: f64) -> f64 {
    tokens_per_s * flops_per_token / (peak_tflops * 1e12)
}

/// Peak resident memory of this process in bytes (Linux: VmHWM in /proc/self/status).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    proc_kib_field(&status, "VmHWM:")
}

/// The bytes of a `Name:   N kB` line of a /proc file's `text` (/proc/self/status,
/// /proc/meminfo), for the field `name` with its colon.
pub fn proc_kib_field(text: &str, name: &str) -> Option<u64> {
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_kib_fields_read_as_bytes() {
        let meminfo = "MemTotal:       24576000 kB\nMemAvailable:    1024 kB\nSwapFree:              0 kB\n";
        assert_eq!(proc_kib_field(meminfo, "MemAvailable:"), Some(1024 * 1024));
        assert_eq!(proc_kib_field(meminfo, "SwapFree:"), Some(0));
        assert_eq!(proc_kib_field(meminfo, "SwapTotal:"), None);
        assert_eq!(proc_kib_field("VmHWM:\t  812 kB\n", "VmHWM:"), Some(812 * 1024));
    }

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
    fn cuda_peaks_come_from_the_datasheet_table_by_precision() {
        let h200 = || Some("NVIDIA H200".to_string());
        let (p, src) = datasheet_peak(Precision::Bf16, h200()).unwrap();
        assert_eq!(p, 989.0);
        assert!(src.contains("NVIDIA H200") && src.contains("bf16"), "{src}");
        let (p, src) = datasheet_peak(Precision::F32, Some("NVIDIA H100 80GB HBM3".into())).unwrap();
        assert_eq!(p, 494.7);
        assert!(src.contains("tf32"), "{src}");
        let why = datasheet_peak(Precision::Bf16, Some("NVIDIA A100-SXM4-80GB".into())).unwrap_err();
        assert!(why.contains("A100") && why.contains("train.peak_tflops"), "{why}");
        let why = datasheet_peak(Precision::Bf16, None).unwrap_err();
        assert!(why.contains("train.peak_tflops"), "{why}");
    }

    #[test]
    fn configured_peak_wins() {
        let (p, src) =
            peak_tflops::<crate::backend::Cpu>(BackendKind::Cpu, Precision::F32, 12.5, &Default::default())
                .unwrap();
        assert_eq!((p, src.as_str()), (12.5, "train.peak_tflops"));
    }
}
