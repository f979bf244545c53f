//! Time, throughput and power at an assumed model FLOP utilisation: step time, tokens per day,
//! days to train, GPU and facility megawatts, and the pipeline bubble and recomputation overheads
//! that the assumed MFU has to absorb.

use super::hardware::FACILITY_OVERHEAD;
use super::layout::{Recompute, Scenario};
use crate::model::GrokConfig;
use crate::model::params::{count, train_flops_per_token};

pub const SECONDS_PER_DAY: f64 = 86_400.0;

/// Sustained cluster throughput, FLOP/s: N · peak · MFU.
pub fn cluster_flops(gpus: usize, peak_tflops: f64, mfu: f64) -> f64 {
    gpus as f64 * peak_tflops * 1e12 * mfu
}

/// Days to train `tokens` at `flops_per_token`: tokens · F / (N · peak · MFU) / 86 400.
pub fn days_to_train(tokens: f64, flops_per_token: f64, gpus: usize, peak_tflops: f64, mfu: f64) -> f64 {
    tokens * flops_per_token / cluster_flops(gpus, peak_tflops, mfu) / SECONDS_PER_DAY
}

/// The idle share of a 1F1B pipeline step: (pp − 1) / (m + pp − 1) for m micro-batches.
pub fn pipeline_bubble(pp: usize, micro_batches: usize) -> f64 {
    (pp as f64 - 1.0) / (micro_batches as f64 + pp as f64 - 1.0)
}

/// FLOPs per token the GPUs execute beyond the model FLOPs that MFU counts. F = 6·A + 6·L·s·a·hd
/// (`train_flops_per_token`: A active parameters, causal attention); its forward third,
/// 2·A + 2·L·s·a·hd, is what full recomputation runs again, and the attention part of that,
/// 2·L·s·a·hd, what selective recomputation runs again.
pub fn recompute_flops_per_token(m: &GrokConfig, seq_len: usize, mode: Recompute) -> f64 {
    let attention = 2.0 * (m.n_layers * seq_len * m.n_q_heads * m.head_dim) as f64;
    match mode {
        Recompute::None => 0.0,
        Recompute::Selective => attention,
        Recompute::Full => 2.0 * count(m).active as f64 + attention,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Model training FLOPs per token (forward + backward, no recomputation).
    pub flops_per_token: f64,
    pub tokens_per_step: f64,
    /// tokens_per_step · F / (N · peak · MFU).
    pub step_seconds: f64,
    /// N · peak · MFU / F · 86 400.
    pub tokens_per_day: f64,
    /// ⌈T / tokens_per_step⌉.
    pub steps: f64,
    pub days: f64,
    /// N · watts.
    pub gpu_mw: f64,
    /// gpu_mw · FACILITY_OVERHEAD.
    pub facility_mw: f64,
    /// facility_mw · 24 · days, MWh.
    pub energy_mwh: f64,
    pub bubble: f64,
    /// Hardware FLOP utilisation the assumed MFU implies: MFU · (F + recompute) / F.
    pub hfu: f64,
}

pub fn throughput(m: &GrokConfig, sc: &Scenario) -> Throughput {
    let spec = sc.gpu.spec();
    let f = train_flops_per_token(m, sc.seq_len);
    let flops = cluster_flops(sc.gpus, spec.peak_bf16_tflops, sc.mfu);
    let tokens_per_step = sc.tokens_per_step();
    let days = days_to_train(sc.tokens, f, sc.gpus, spec.peak_bf16_tflops, sc.mfu);
    let gpu_mw = sc.gpus as f64 * spec.watts / 1e6;
    let facility_mw = gpu_mw * FACILITY_OVERHEAD;
    Throughput {
        flops_per_token: f,
        tokens_per_step,
        step_seconds: tokens_per_step * f / flops,
        tokens_per_day: flops / f * SECONDS_PER_DAY,
        steps: (sc.tokens / tokens_per_step).ceil(),
        days,
        gpu_mw,
        facility_mw,
        energy_mwh: facility_mw * 24.0 * days,
        bubble: pipeline_bubble(sc.layout.pp, sc.micro_batches),
        hfu: sc.mfu * (f + recompute_flops_per_token(m, sc.seq_len, sc.recompute)) / f,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::{hand, scenario};
    use crate::plan::layout::Layout;

    #[test]
    fn days_to_train_arithmetic() {
        // 10¹² tokens × 6·10⁹ FLOPs = 6·10²¹ FLOPs; 1000 GPUs × 1000 TFLOP/s × 0.5 = 5·10¹⁷ FLOP/s
        // → 12 000 s = 1/7.2 day.
        assert_eq!(cluster_flops(1000, 1000.0, 0.5), 5e17);
        let d = days_to_train(1e12, 6e9, 1000, 1000.0, 0.5);
        assert!((d - 12_000.0 / 86_400.0).abs() < 1e-12, "{d}");
    }

    #[test]
    fn bubble() {
        assert_eq!(pipeline_bubble(1, 1), 0.0);
        // 4 stages, 8 micro-batches: 3 / 11.
        assert_eq!(pipeline_bubble(4, 8), 3.0 / 11.0);
    }

    #[test]
    fn hand_computed_throughput() {
        let m = hand();
        // 8 GPUs dp 8, 2 micro-batches of 1 × 4 tokens: 64 tokens per step.
        let mut sc = scenario(Layout::of(8, 1, 1, 1), false, Recompute::Full, 2);
        sc.tokens = 6400.0;
        let t = throughput(&m, &sc);
        // F = 6·2184 + 12·2·4·2·4/2 = 13 104 + 384 = 13 488.
        assert_eq!(t.flops_per_token, 13_488.0);
        assert_eq!(t.tokens_per_step, 64.0);
        let cluster = 8.0 * 989e12 * 0.4;
        assert!((t.step_seconds - 64.0 * 13_488.0 / cluster).abs() < 1e-24);
        assert!((t.tokens_per_day / (cluster / 13_488.0 * 86_400.0) - 1.0).abs() < 1e-12);
        assert_eq!(t.steps, 100.0);
        // 8 × 700 W = 5.6 kW; ×1.3 facility.
        assert!((t.gpu_mw - 0.0056).abs() < 1e-15);
        assert!((t.facility_mw - 0.00728).abs() < 1e-15);
        // Full recompute runs the forward again: F/3 more, so HFU = MFU · 4/3.
        assert_eq!(recompute_flops_per_token(&m, 4, Recompute::Full), 13_488.0 / 3.0);
        assert!((t.hfu - 0.4 * 4.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            recompute_flops_per_token(&m, 4, Recompute::Selective),
            2.0 * 2.0 * 4.0 * 2.0 * 4.0
        );
    }
}
