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
    let (v, d, l) = (c.vocab_size as u64, c.d_model as u64, c.n_layers as u64);
    let (nq, nkv, hd) = (c.n_q_heads as u64, c.n_kv_heads as u64, c.head_dim as u64);
    let (e, k, f) = (c.n_experts as u64, c.top_k as u64, c.ffn_size as u64);
    let embedding = v * d; // tied: counted once
    let attention = l * (d * nq * hd + 2 * d * nkv * hd + nq * hd * d);
    let router = l * d * e;
    let per_expert = 3 * d * f;
    let experts = l * e * per_expert;
    let norms = l * 4 * d + d;
    let total = embedding + attention + router + experts + norms;
    let active = total - l * (e - k) * per_expert;
    ParamCount {
        embedding,
        attention,
        router,
        experts,
        norms,
        total,
        active,
    }
}

/// Training FLOPs per token at sequence length `seq`: 6·active for the matmuls (forward + backward)
/// plus causal attention scores and mixing, 12·L·seq·n_q·head_dim/2. The same formula as
/// `shared/reference/torch_train_peer.py`, so the two report comparable TFLOP/s.
pub fn train_flops_per_token(c: &GrokConfig, seq: usize) -> f64 {
    let p = count(c);
    6.0 * p.active as f64 + 12.0 * (c.n_layers * seq * c.n_q_heads * c.head_dim) as f64 / 2.0
}
