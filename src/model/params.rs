//! Parameter and FLOP counts from the config alone, so `colossus params configs/grok-1.yaml` can
//! size a 316B model without allocating it.

use super::GrokConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCount {
    pub embedding: u64,
    pub attention: u64,
    pub router: u64,
    pub experts: u64,
    pub norms: u64,
    pub total: u64,
    /// Parameters one token touches: everything but the experts it was not routed to.
    pub active: u64,
}

pub fn count(c: &GrokConfig) -> ParamCount {
    // In f64, which cannot overflow, so a config of absurd sizes counts (saturated into u64) and
    // its validation refuses it by the count (`MAX_PARAMS`); below 2^53 every term is exact.
    let f = |v: usize| v as f64;
    let (v, d, l) = (f(c.vocab_size), f(c.d_model), f(c.n_layers));
    let (nq, nkv, hd) = (f(c.n_q_heads), f(c.n_kv_heads), f(c.head_dim));
    let (e, k, ffn) = (f(c.n_experts), f(c.top_k), f(c.ffn_size));
    let embedding = v * d; // tied: counted once
    let attention = l * (d * nq * hd + 2.0 * d * nkv * hd + nq * hd * d);
    let router = l * d * e;
    let per_expert = 3.0 * d * ffn;
    let experts = l * e * per_expert;
    let norms = l * 4.0 * d + d;
    let total = embedding + attention + router + experts + norms;
    let active = total - l * (e - k) * per_expert;
    ParamCount {
        embedding: embedding as u64,
        attention: attention as u64,
        router: router as u64,
        experts: experts as u64,
        norms: norms as u64,
        total: total as u64,
        active: active as u64,
    }
}

/// The most parameters a config may have: 2^53, where f64 stops counting integers exactly
/// (and 32 PiB of f32 weights, far past any machine).
pub const MAX_PARAMS: u64 = 1 << 53;

/// Training FLOPs per token at sequence length `seq`: 6·active for the matmuls (forward + backward)
/// plus causal attention scores and mixing, 12·L·seq·n_q·head_dim/2. The same formula as
/// `shared/reference/torch_train_peer.py`, so the two report comparable TFLOP/s.
pub fn train_flops_per_token(c: &GrokConfig, seq: usize) -> f64 {
    let p = count(c);
    let attention = c.n_layers as f64 * seq as f64 * c.n_q_heads as f64 * c.head_dim as f64;
    6.0 * p.active as f64 + 12.0 * attention / 2.0
}
