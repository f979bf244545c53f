//! Memory per GPU: the parameters a rank holds under a layout, the bytes of weights, gradients and
//! optimizer state they cost, and the activation memory of the busiest pipeline stage with and
//! without recomputation.
//!
//! Precision (the standard bf16 mixed-precision recipe of a cluster run, not what the CPU backend
//! of this crate does): bf16 weights (2 B/param) and gradients (2 B/param); f32 master weights and
//! two f32 Adam moments (12 B/param), sharded over the ranks that hold the same parameters when
//! ZeRO-1 is on. Activations are bf16 except the router logits/probabilities and the output logits
//! (f32, as the model computes them).

use std::fmt;

use super::hardware::USABLE_MEMORY_FRACTION;
use super::layout::{Layout, Recompute, Scenario};
use crate::model::GrokConfig;

/// Bytes per parameter: bf16 weight, bf16 gradient, f32 master + Adam m + Adam v.
pub const WEIGHT_BYTES: f64 = 2.0;
pub const GRAD_BYTES: f64 = 2.0;
pub const OPTIMIZER_BYTES: f64 = 12.0;

/// Parameters one GPU of the busiest pipeline stage holds (the first and last stage hold the same:
/// both keep a copy of the tied embedding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamsPerGpu {
    /// Replicated over all dp ranks: attention, router, norms, embedding.
    pub dense: u64,
    /// Replicated over the dp/ep ranks of an expert's data-parallel group.
    pub experts: u64,
}

impl ParamsPerGpu {
    pub fn total(&self) -> u64 {
        self.dense + self.experts
    }
}

/// With ℓ = ⌈L/pp⌉ layers per stage, t = tp, kv_t = max(n_kv/t, 1):
///
/// ```text
/// attention per layer = 2·d·(n_q/t)·hd + 2·d·kv_t·hd        (q and o split by heads; k, v)
/// dense     = ℓ·(attention + d·E + 4d) + V·d/t + d          (router and norms replicated over tp;
///                                                            embedding split by vocabulary)
/// experts   = ℓ·(E/ep)·3·d·f/t                              (w1, w3, w2 split along f)
/// ```
///
/// With dp = tp = pp = ep = 1 this is `model::params::count(m).total`.
pub fn params_per_gpu(m: &GrokConfig, l: &Layout) -> ParamsPerGpu {
    let (d, hd, e, f) = (
        m.d_model as u64,
        m.head_dim as u64,
        m.n_experts as u64,
        m.ffn_size as u64,
    );
    let t = l.tp as u64;
    let layers = l.layers_per_stage(m.n_layers) as u64;
    let kv = l.kv_heads_per_rank(m.n_kv_heads) as u64;
    let attention = 2 * d * (m.n_q_heads as u64 / t) * hd + 2 * d * kv * hd;
    let dense = layers * (attention + d * e + 4 * d) + m.vocab_size as u64 * d / t + d;
    let experts = layers * (e / l.ep as u64) * 3 * d * f / t;
    ParamsPerGpu { dense, experts }
}

/// Activation bytes one layer keeps for the backward, per micro-batch, on one tensor-parallel rank.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerActivations {
    /// Everything but the attention scores.
    pub stored: f64,
    /// The s² terms: soft-capped scores and softmax output.
    pub scores: f64,
    /// The layer's input, all full recomputation keeps.
    pub input: f64,
}

/// Korthikanti et al. (2022, "Reducing Activation Recomputation in Large Transformer Models") count
/// sbh(34 + 5as/h) bytes per GPT layer, divided by t under tensor + sequence parallelism. The same
/// bookkeeping for a Grok-1 layer (s tokens, b sequences, h = d_model, hq = n_q·hd, hkv = n_kv·hd,
/// a = n_q heads, k of E experts of width f, no dropout), in bytes:
///
/// ```text
/// 4 RMSNorm inputs (sandwich norms)        8·sbh
/// QKV projection input                      2·sbh
/// Q after RoPE, attention output (o input)  4·sb·hq
/// K, V after RoPE                           4·sb·hkv
/// router input                              2·sbh
/// router logits + probabilities (f32)       8·sb·E
/// per routed copy (k per token):
///   gathered expert input                   2·h
///   w1 output (GELU input), w3 output,
///   GELU output, w2 input                   4·2·f
///   expert output (for the gate gradient)   2·h      → k·sb·(4h + 8f)
/// soft-capped scores + softmax output       4·a·s²·b
/// ```
///
/// so, per tensor-parallel rank (sequence parallelism shards the h-sized tensors, tp shards heads
/// and f; KV heads replicated when t > n_kv):
///
/// ```text
/// stored = sb·(12h + 4hq + k(4h + 8f) + 8E)/t + 4·sb·hd·kv_t
/// scores = 4·(a/t)·s²·b
/// input  = 2·sbh/t
/// ```
///
/// Routing is assumed balanced: each rank processes k routed copies per token it holds, whether
/// the experts are local (ep = 1) or reached by all-to-all.
pub fn layer_activations(m: &GrokConfig, seq_len: usize, micro_batch: usize, l: &Layout) -> LayerActivations {
    let (s, b, t) = (seq_len as f64, micro_batch as f64, l.tp as f64);
    let h = m.d_model as f64;
    let hq = (m.n_q_heads * m.head_dim) as f64;
    let (k, f, e) = (m.top_k as f64, m.ffn_size as f64, m.n_experts as f64);
    let kv = l.kv_heads_per_rank(m.n_kv_heads) as f64;
    let stored = s * b * (12.0 * h + 4.0 * hq + k * (4.0 * h + 8.0 * f) + 8.0 * e) / t
        + 4.0 * s * b * m.head_dim as f64 * kv;
    let scores = 4.0 * (m.n_q_heads as f64 / t) * s * s * b;
    let input = 2.0 * s * b * h / t;
    LayerActivations {
        stored,
        scores,
        input,
    }
}

/// Activation bytes on the first and the last pipeline stage (the same stage when pp = 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageActivations {
    pub first: f64,
    pub last: f64,
}

impl StageActivations {
    pub fn worst(&self) -> f64 {
        self.first.max(self.last)
    }
}

/// With ℓ layers per stage, n = min(pp, m) micro-batches in flight on the first stage under 1F1B
/// (the last stage finishes each micro-batch's backward before the next forward: n = 1), K bytes
/// kept per layer per micro-batch, W bytes of transient working set for the one layer being
/// recomputed, and logits = 4·s·b·V/t (f32, vocabulary-parallel) on the last stage:
///
/// ```text
/// first = ℓ·n·K + W        last = ℓ·K + W + logits
///
/// none:       K = stored + scores   W = 0
/// selective:  K = stored            W = scores
/// full:       K = input             W = stored + scores
/// ```
pub fn stage_activations(m: &GrokConfig, sc: &Scenario, mode: Recompute) -> StageActivations {
    let a = layer_activations(m, sc.seq_len, sc.micro_batch, &sc.layout);
    let (keep, work) = match mode {
        Recompute::None => (a.stored + a.scores, 0.0),
        Recompute::Selective => (a.stored, a.scores),
        Recompute::Full => (a.input, a.stored + a.scores),
    };
    let layers = sc.layout.layers_per_stage(m.n_layers) as f64;
    let in_flight = sc.layout.pp.min(sc.micro_batches) as f64;
    let logits = 4.0 * sc.seq_len as f64 * sc.micro_batch as f64 * m.vocab_size as f64 / sc.layout.tp as f64;
    StageActivations {
        first: layers * in_flight * keep + work,
        last: layers * keep + work + logits,
    }
}

/// One line of the memory budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Term {
    Weights,
    Gradients,
    Optimizer,
    Activations,
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Term::Weights => "weights",
            Term::Gradients => "gradients",
            Term::Optimizer => "optimizer state",
            Term::Activations => "activations",
        })
    }
}

/// The memory budget of one GPU on the busiest stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Memory {
    pub params: ParamsPerGpu,
    pub layer: LayerActivations,
    pub weights: f64,
    pub grads: f64,
    pub optimizer: f64,
    /// Indexed by `Recompute as usize`: none, selective, full.
    pub activations_by_mode: [StageActivations; 3],
    pub recompute: Recompute,
    /// GPU memory, bytes.
    pub capacity: f64,
    /// `capacity × USABLE_MEMORY_FRACTION`: what a fitting plan may use.
    pub usable: f64,
}

/// ```text
/// weights   = 2·P                     gradients = 2·P           (P = dense + experts on this GPU)
/// optimizer = 12·P                                              without ZeRO-1
/// optimizer = 12·(dense/dp + experts/(dp/ep))                   with ZeRO-1
/// ```
pub fn memory(m: &GrokConfig, sc: &Scenario) -> Memory {
    let params = params_per_gpu(m, &sc.layout);
    let p = params.total() as f64;
    let optimizer = if sc.zero1 {
        OPTIMIZER_BYTES
            * (params.dense as f64 / sc.layout.dp as f64
                + params.experts as f64 / sc.layout.expert_dp() as f64)
    } else {
        OPTIMIZER_BYTES * p
    };
    let capacity = sc.gpu.spec().memory_gb * 1e9;
    Memory {
        params,
        layer: layer_activations(m, sc.seq_len, sc.micro_batch, &sc.layout),
        weights: WEIGHT_BYTES * p,
        grads: GRAD_BYTES * p,
        optimizer,
        activations_by_mode: [Recompute::None, Recompute::Selective, Recompute::Full]
            .map(|mode| stage_activations(m, sc, mode)),
        recompute: sc.recompute,
        capacity,
        usable: capacity * USABLE_MEMORY_FRACTION,
    }
}

impl Memory {
    pub fn activations_for(&self, mode: Recompute) -> StageActivations {
        self.activations_by_mode[mode as usize]
    }

    /// Activation bytes under the chosen recomputation mode.
    pub fn activations(&self) -> f64 {
        self.activations_for(self.recompute).worst()
    }

    pub fn total(&self) -> f64 {
        self.weights + self.grads + self.optimizer + self.activations()
    }

    pub fn fits(&self) -> bool {
        self.total() <= self.usable
    }

    /// The largest line of the budget.
    pub fn dominant(&self) -> (Term, f64) {
        [
            (Term::Weights, self.weights),
            (Term::Gradients, self.grads),
            (Term::Optimizer, self.optimizer),
            (Term::Activations, self.activations()),
        ]
        .into_iter()
        .fold(
            (Term::Weights, f64::MIN),
            |best, t| {
                if t.1 > best.1 { t } else { best }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::params::count;
    use crate::plan::fixtures::{grok1, hand};

    fn scenario(layout: Layout, zero1: bool, recompute: Recompute) -> Scenario {
        crate::plan::fixtures::scenario(layout, zero1, recompute, 1)
    }

    const ONE: Layout = Layout::of(1, 1, 1, 1);

    #[test]
    fn hand_counted_parameters() {
        let m = hand();
        // embedding 16·8 = 128; attention 2·(8·2·4 + 2·8·1·4 + 2·4·8) = 384; router 2·8·4 = 64;
        // experts 2·4·3·8·16 = 3072; norms 2·4·8 + 8 = 72.
        let p = count(&m);
        assert_eq!(p.total, 128 + 384 + 64 + 3072 + 72);
        assert_eq!(p.active, 3720 - 2 * 2 * 384);
        let one = params_per_gpu(&m, &ONE);
        assert_eq!((one.dense, one.experts), (648, 3072));
        assert_eq!(one.total(), p.total);
        // tp 2: q+o 2·8·1·4 = 64, k+v 2·8·1·4 = 64 (the one kv head replicated), router 32,
        // norms 32 → 192 per layer, ×2 + embedding 16·8/2 + final norm 8 = 456.
        // experts: 2 layers · 4 · 3·8·16/2 = 1536.
        let tp2 = params_per_gpu(&m, &Layout::of(1, 2, 1, 1));
        assert_eq!((tp2.dense, tp2.experts), (456, 1536));
        // pp 2: one layer per stage: attention 2·8·2·4 + 2·8·1·4 = 192, router 32, norms 32, plus
        // the embedding 128 and final norm 8 → 392; experts 4·3·8·16 = 1536.
        let pp2 = params_per_gpu(&m, &Layout::of(1, 1, 2, 1));
        assert_eq!((pp2.dense, pp2.experts), (392, 1536));
    }

    #[test]
    fn hand_computed_memory() {
        let m = hand();
        // One GPU: 3720 params × (2 + 2 + 12) bytes.
        let one = memory(&m, &scenario(ONE, false, Recompute::None));
        assert_eq!((one.weights, one.grads, one.optimizer), (7440.0, 7440.0, 44640.0));
        // dp 2, ep 2, ZeRO-1: dense 648 + experts 3072/2 = 1536 → 2184 params; optimizer
        // 12·(648/2 + 1536/(2/2)) = 12·1860.
        let l = Layout::of(2, 1, 1, 2);
        let z = memory(&m, &scenario(l, true, Recompute::None));
        assert_eq!(
            z.params,
            ParamsPerGpu {
                dense: 648,
                experts: 1536
            }
        );
        assert_eq!((z.weights, z.grads, z.optimizer), (4368.0, 4368.0, 22320.0));
        // Without ZeRO-1 every rank keeps its full 12 bytes per parameter.
        assert_eq!(
            memory(&m, &scenario(l, false, Recompute::None)).optimizer,
            12.0 * 2184.0
        );
    }

    #[test]
    fn hand_computed_activations() {
        let m = hand();
        // s 4, b 1, t 1: stored = 4·(12·8 + 4·8 + 2·(4·8 + 8·16) + 8·4) + 4·4·4·1 = 1920 + 64;
        // scores = 4·2·4²·1 = 128; input = 2·4·8 = 64; logits = 4·4·1·16 = 256.
        let a = layer_activations(&m, 4, 1, &ONE);
        assert_eq!((a.stored, a.scores, a.input), (1984.0, 128.0, 64.0));
        let mem = memory(&m, &scenario(ONE, false, Recompute::None));
        // none: 2 layers·(1984 + 128) + 256; selective: 2·1984 + 128 + 256; full: 2·64 + 2112 + 256.
        assert_eq!(mem.activations_for(Recompute::None).worst(), 4480.0);
        assert_eq!(mem.activations_for(Recompute::Selective).worst(), 4352.0);
        assert_eq!(mem.activations_for(Recompute::Full).worst(), 2496.0);
        assert_eq!(mem.total(), 7440.0 * 2.0 + 44640.0 + 4480.0);

        // tp 2 halves every term except K, V (one kv head, replicated): stored = 1920/2 + 64.
        let t2 = layer_activations(&m, 4, 1, &Layout::of(1, 2, 1, 1));
        assert_eq!((t2.stored, t2.scores, t2.input), (1024.0, 64.0, 32.0));

        // pp 2 with 4 micro-batches: the first stage keeps min(2, 4) = 2 in flight of its 1 layer:
        // 2·2112 = 4224; the last keeps 1 plus the logits: 2112 + 256.
        let mut sc = scenario(Layout::of(1, 1, 2, 1), false, Recompute::None);
        sc.micro_batches = 4;
        let st = stage_activations(&m, &sc, Recompute::None);
        assert_eq!((st.first, st.last), (4224.0, 2368.0));
    }

    #[test]
    fn grok1_layer_matches_the_documented_per_token_figure() {
        let m = grok1();
        let a = layer_activations(&m, 8192, 1, &ONE);
        // Per token: 12·6144 + 4·6144 + 2·(4·6144 + 8·32768) + 8·8 + 4·128·8 = 675 904 bytes.
        assert_eq!(a.stored, 675_904.0 * 8192.0);
        // 4·48·8192 bytes of scores per token.
        assert_eq!(a.scores, 4.0 * 48.0 * 8192.0 * 8192.0);
    }

    #[test]
    fn dominant_term() {
        let m = hand();
        let mem = memory(&m, &scenario(ONE, false, Recompute::None));
        assert_eq!(mem.dominant(), (Term::Optimizer, 44640.0));
    }
}
