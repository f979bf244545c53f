//! Test fixtures shared by the plan's unit tests: a shape small enough to count by hand, the
//! Grok-1 preset, and a scenario builder.

use super::hardware::Gpu;
use super::layout::{BatchSpec, Layout, Recompute, Scenario};
use crate::model::GrokConfig;

/// V 16, d 8, 2 layers, 2 q / 1 kv heads of 4, 4 experts top-2 of width 16: 3720 parameters.
pub fn hand() -> GrokConfig {
    let mut m = crate::config::from_yaml("preset: tiny\n", "t.yaml", &[])
        .unwrap()
        .model;
    (
        m.vocab_size,
        m.d_model,
        m.n_layers,
        m.n_q_heads,
        m.n_kv_heads,
        m.head_dim,
    ) = (16, 8, 2, 2, 1, 4);
    (m.n_experts, m.top_k, m.ffn_size) = (4, 2, 16);
    m
}

pub fn grok1() -> GrokConfig {
    crate::config::from_yaml("preset: grok-1\n", "t.yaml", &[])
        .unwrap()
        .model
}

/// `layout` on H100s, sequences of 4 tokens, one sequence per micro-batch, `micro_batches` of them
/// per step, MFU 0.4, 10⁶ tokens to train.
pub fn scenario(layout: Layout, zero1: bool, recompute: Recompute, micro_batches: usize) -> Scenario {
    Scenario {
        gpus: layout.gpus(),
        gpu: Gpu::H100,
        layout,
        zero1,
        recompute,
        seq_len: 4,
        micro_batch: 1,
        micro_batches,
        batch: BatchSpec::PerRank { micro_batches },
        tokens: 1e6,
        tokens_defaulted: false,
        mfu: 0.4,
        layout_chosen: false,
    }
}
