//! Communication per GPU per optimizer step: bytes each parallel dimension sends and the time they
//! take on the link the dimension's group uses.
//!
//! Volumes are bytes *sent* per GPU (a ring receives as much as it sends, concurrently, so time is
//! bytes ÷ per-direction bandwidth). Latency and congestion are ignored: this is the bandwidth
//! term of the α–β model, a lower bound on communication time.

use std::fmt;

use super::hardware::{GpuSpec, Link};
use super::layout::{Recompute, Scenario};
use super::memory::{GRAD_BYTES, params_per_gpu};
use crate::model::GrokConfig;

/// Bytes one rank sends in a ring all-reduce of `bytes` over `n` ranks: 2(n−1)/n · bytes (a
/// reduce-scatter then an all-gather, (n−1)/n each). The same volume as ZeRO-1's gradient
/// reduce-scatter plus parameter all-gather, so ZeRO-1 does not change it.
pub fn ring_all_reduce_bytes(n: usize, bytes: f64) -> f64 {
    2.0 * (n as f64 - 1.0) / n as f64 * bytes
}

/// Bytes one rank sends in an all-to-all of `bytes` spread evenly over `n` ranks: (n−1)/n · bytes
/// (the 1/n addressed to itself stays put).
pub fn all_to_all_bytes(n: usize, bytes: f64) -> f64 {
    (n as f64 - 1.0) / n as f64 * bytes
}

/// Tensor-parallel collectives per layer per micro-batch: Megatron's two per layer in the forward
/// (after attention, after the MoE block; all-reduces, or with sequence parallelism an all-gather
/// plus a reduce-scatter of the same total volume) and two in the backward; full recomputation
/// reruns the forward's two.
pub fn tp_collectives_per_layer(recompute: Recompute) -> f64 {
    if recompute == Recompute::Full { 6.0 } else { 4.0 }
}

/// Expert-parallel all-to-alls per MoE layer per micro-batch: dispatch and combine in the forward,
/// their transposes in the backward, plus a forward's two again under full recomputation.
pub fn ep_all_to_alls_per_layer(recompute: Recompute) -> f64 {
    if recompute == Recompute::Full { 6.0 } else { 4.0 }
}

/// Which parallel dimension a term belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// Gradient all-reduce of the dense parameters over all dp ranks.
    DpDense,
    /// Gradient all-reduce of the expert parameters over the dp/ep ranks holding the same experts.
    DpExperts,
    Tp,
    Ep,
    Pp,
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dim::DpDense => "dp all-reduce, dense grads",
            Dim::DpExperts => "dp all-reduce, expert grads",
            Dim::Tp => "tp all-reduce, activations",
            Dim::Ep => "ep all-to-all, routed tokens",
            Dim::Pp => "pp send/recv, stage boundary",
        })
    }
}

/// One dimension's traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CommTerm {
    pub dim: Dim,
    /// Ranks in the group.
    pub group: usize,
    pub link: Link,
    /// Bytes this GPU sends per step.
    pub bytes: f64,
    /// bytes ÷ link bandwidth.
    pub seconds: f64,
}

/// Every term, including zero ones (groups of one rank), in a fixed order.
#[derive(Debug, Clone, PartialEq)]
pub struct Comm {
    pub terms: Vec<CommTerm>,
}

impl Comm {
    pub fn total_bytes(&self) -> f64 {
        self.terms.iter().map(|t| t.bytes).sum()
    }

    /// The time if nothing overlaps with compute or with each other.
    pub fn total_seconds(&self) -> f64 {
        self.terms.iter().map(|t| t.seconds).sum()
    }

    pub fn term(&self, dim: Dim) -> &CommTerm {
        self.terms
            .iter()
            .find(|t| t.dim == dim)
            .expect("every dimension has a term")
    }
}

/// With X = 2·s·b·h (one micro-batch's hidden states in bf16), ℓ = ⌈L/pp⌉ layers per stage,
/// m micro-batches per step, P_dense and P_experts the parameters on this GPU:
///
/// ```text
/// dp dense    ring(dp,    2·P_dense)                     once per step, after accumulation
/// dp experts  ring(dp/ep, 2·P_experts)
/// tp          ℓ·m·c_tp · ring(tp, X)                     c_tp = 4 (6 with full recompute)
/// ep          ℓ·m·c_ep · all_to_all(ep, k·X/tp)          c_ep = 4 (6 with full recompute);
///                                                        each rank dispatches its sequence-parallel
///                                                        share of tokens, k copies each
/// pp          2·m·X/tp  when pp > 1                      activations forward, gradients backward
///                                                        (sequence-sharded, Megatron's scatter/gather)
/// ```
///
/// Links: with ranks numbered tp fastest, then ep, then the rest of dp, then pp, a tp group spans
/// tp ranks, an ep group tp·ep, a dp group tp·dp, a pp group all of them; see `Link::for_span`.
/// Omitted as small: the tied-embedding gradient all-reduce between the first and last stage, the
/// vocabulary-parallel embedding and loss reductions.
pub fn comm(m: &GrokConfig, sc: &Scenario, gpu: &GpuSpec) -> Comm {
    let l = &sc.layout;
    let p = params_per_gpu(m, l);
    let x = 2.0 * sc.seq_len as f64 * sc.micro_batch as f64 * m.d_model as f64;
    let layers = l.layers_per_stage(m.n_layers) as f64;
    let micro = sc.micro_batches as f64;
    let tp = l.tp as f64;
    let term = |dim, group: usize, span: usize, bytes: f64| {
        let link = Link::for_span(span, sc.gpus);
        CommTerm {
            dim,
            group,
            link,
            bytes,
            seconds: bytes / (link.gb_per_s(gpu) * 1e9),
        }
    };
    let pp_bytes = if l.pp > 1 { 2.0 * micro * x / tp } else { 0.0 };
    Comm {
        terms: vec![
            term(
                Dim::DpDense,
                l.dp,
                l.tp * l.dp,
                ring_all_reduce_bytes(l.dp, GRAD_BYTES * p.dense as f64),
            ),
            term(
                Dim::DpExperts,
                l.expert_dp(),
                l.tp * l.dp,
                ring_all_reduce_bytes(l.expert_dp(), GRAD_BYTES * p.experts as f64),
            ),
            term(
                Dim::Tp,
                l.tp,
                l.tp,
                layers * micro * tp_collectives_per_layer(sc.recompute) * ring_all_reduce_bytes(l.tp, x),
            ),
            term(
                Dim::Ep,
                l.ep,
                l.tp * l.ep,
                layers
                    * micro
                    * ep_all_to_alls_per_layer(sc.recompute)
                    * all_to_all_bytes(l.ep, m.top_k as f64 * x / tp),
            ),
            term(Dim::Pp, l.pp, sc.gpus, pp_bytes),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::{hand, scenario};
    use crate::plan::hardware::Gpu;
    use crate::plan::layout::Layout;

    #[test]
    fn ring_all_reduce_volume() {
        // 4 ranks, 1 GB: each sends 2·3/4 GB = 1.5 GB.
        assert_eq!(ring_all_reduce_bytes(4, 1e9), 1.5e9);
        // One rank sends nothing; many ranks approach twice the buffer.
        assert_eq!(ring_all_reduce_bytes(1, 1e9), 0.0);
        assert!((ring_all_reduce_bytes(1_000_000, 1.0) - 2.0).abs() < 1e-5);
        assert_eq!(all_to_all_bytes(8, 8.0), 7.0);
    }

    #[test]
    fn hand_computed_step_traffic() {
        let m = hand();
        // 16 GPUs: dp 4 (ep 2) × tp 2 × pp 2, 3 micro-batches of 1 × 4 tokens.
        let layout = Layout::of(4, 2, 2, 2);
        let sc = scenario(layout, false, Recompute::None, 3);
        let spec = Gpu::H100.spec();
        let c = comm(&m, &sc, &spec);
        // Params on a GPU (1 layer, tp 2, 2 of 4 experts): dense = 2·8·1·4 + 2·8·1·4 + 32 + 32 +
        // 16·8/2 + 8 = 264; experts = 2·3·8·16/2 = 384.
        let p = params_per_gpu(&m, &layout);
        assert_eq!((p.dense, p.experts), (264, 384));
        // dp dense: 2·3/4 · 2·264 = 792 bytes; span tp·dp = 8 → NVLink.
        let dense = c.term(Dim::DpDense);
        assert_eq!((dense.bytes, dense.link, dense.group), (792.0, Link::NvLink, 4));
        // dp experts over dp/ep = 2 ranks: 2·1/2 · 2·384 = 768.
        assert_eq!(c.term(Dim::DpExperts).bytes, 768.0);
        // X = 2·4·1·8 = 64 bytes. tp: 1 layer · 3 micro · 4 · 2·1/2·64 = 768.
        assert_eq!(c.term(Dim::Tp).bytes, 768.0);
        // ep: 1 · 3 · 4 · 1/2 · 2·64/2 = 384; span tp·ep = 4 → NVLink.
        assert_eq!(c.term(Dim::Ep).bytes, 384.0);
        // pp: 2 · 3 · 64/2 = 192; span 16 > 8 → inter-node at 50 GB/s.
        let pp = c.term(Dim::Pp);
        assert_eq!((pp.bytes, pp.link), (192.0, Link::InterNode));
        assert_eq!(pp.seconds, 192.0 / 50e9);
        assert_eq!(dense.seconds, 792.0 / 450e9);
        assert_eq!(c.total_bytes(), 792.0 + 768.0 + 768.0 + 384.0 + 192.0);

        // Full recomputation reruns the forward's collectives: 6 instead of 4.
        let full = comm(
            &m,
            &Scenario {
                recompute: Recompute::Full,
                ..sc.clone()
            },
            &spec,
        );
        assert_eq!(full.term(Dim::Tp).bytes, 768.0 * 1.5);
        assert_eq!(full.term(Dim::Ep).bytes, 384.0 * 1.5);
        assert_eq!(full.term(Dim::DpDense).bytes, 792.0);
    }
}
