//! The whole Grok-1 model: scaled token embedding, N sandwich-norm layers, a final norm, and the
//! tied unembedding scaled by the output multiplier.

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use super::attention::{AttentionConfig, KvCache};
use super::block::{Block, BlockConfig};
use super::init;
use super::moe::{MoeConfig, RouterStats};
use super::norm::{RmsNorm, RmsNormConfig};
use super::rope::RopeTables;
use super::{embedding, flash, precision};
use crate::config::{AttentionKernel, Precision};

/// The resolved model shape and constants (see `config::resolve` for how a YAML file becomes one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrokConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_q_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub n_experts: usize,
    pub top_k: usize,
    pub widening: f64,
    pub ffn_size: usize,
    pub max_seq_len: usize,
    pub rope_theta: f64,
    pub attn_softcap: f64,
    pub attn_output_multiplier: f64,
    pub embedding_multiplier: f64,
    pub output_multiplier: f64,
    pub norm_eps: f64,
    pub init_std: f64,
    pub aux_loss_coef: f64,
}

impl GrokConfig {
    /// One line naming the shape, as `params` and `plan` print it.
    pub fn shape_line(&self) -> String {
        format!(
            "vocab {}, d_model {}, {} layers, {} q / {} kv heads × {}, {} experts top-{}, ffn {}",
            self.vocab_size,
            self.d_model,
            self.n_layers,
            self.n_q_heads,
            self.n_kv_heads,
            self.head_dim,
            self.n_experts,
            self.top_k,
            self.ffn_size
        )
    }

    fn block(&self) -> BlockConfig {
        BlockConfig {
            attention: AttentionConfig {
                d_model: self.d_model,
                n_q_heads: self.n_q_heads,
                n_kv_heads: self.n_kv_heads,
                head_dim: self.head_dim,
                output_multiplier: self.attn_output_multiplier,
                softcap: self.attn_softcap,
                init_std: self.init_std,
            },
            moe: MoeConfig {
                d_model: self.d_model,
                ffn_size: self.ffn_size,
                n_experts: self.n_experts,
                top_k: self.top_k,
                init_std: self.init_std,
            },
            norm: RmsNormConfig {
                d: self.d_model,
                eps: self.norm_eps,
            },
        }
    }

    /// Weights drawn on the host from `seed`: identical on every backend and rank.
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> Grok<B> {
        let block = self.block();
        Grok {
            embed_tokens: init::normal(
                [self.vocab_size, self.d_model],
                self.init_std,
                seed,
                "embed_tokens",
                device,
            ),
            layers: (0..self.n_layers)
                .map(|i| block.init(seed, &format!("layers.{i}"), device))
                .collect(),
            norm: RmsNormConfig {
                d: self.d_model,
                eps: self.norm_eps,
            }
            .init(device),
            head_dim: self.head_dim,
            rope_theta: self.rope_theta,
            embedding_multiplier: self.embedding_multiplier,
            output_multiplier: self.output_multiplier,
            precision: Precision::F32,
            attention: AttentionKernel::Composed,
        }
    }
}

#[derive(Module, Debug)]
pub struct Grok<B: Backend> {
    /// `[vocab, d_model]`, also the output projection (tied).
    pub embed_tokens: Param<Tensor<B, 2>>,
    pub layers: Vec<Block<B>>,
    pub norm: RmsNorm<B>,
    #[module(skip)]
    pub head_dim: usize,
    #[module(skip)]
    pub rope_theta: f64,
    #[module(skip)]
    pub embedding_multiplier: f64,
    #[module(skip)]
    pub output_multiplier: f64,
    /// The matmul precision of `forward` (`model::precision`); f32 unless `with_precision`.
    #[module(skip)]
    pub precision: Precision,
    /// How `forward` computes the attention core on GPU backends (`model::flash`).
    #[module(skip)]
    pub attention: AttentionKernel,
}

/// What one forward pass produces.
#[derive(Debug)]
pub struct GrokOutput<B: Backend> {
    /// `[batch, seq, vocab]`
    pub logits: Tensor<B, 3>,
    /// Per layer, what its router did.
    pub routers: Vec<RouterStats<B>>,
}

impl<B: Backend> GrokOutput<B> {
    /// Mean over layers of the balancing loss, `[1]`, as a tensor to train on (built on demand:
    /// `RouterStats::aux_loss`).
    pub fn aux_loss(&self) -> Tensor<B, 1> {
        let sum = self
            .routers
            .iter()
            .map(RouterStats::aux_loss)
            .reduce(|a, b| a + b);
        let n = self.routers.len().max(1) as f64;
        sum.map_or_else(|| Tensor::zeros([1], &self.logits.device()), |a| a.div_scalar(n))
    }

    /// The balancing loss's value, mean over layers, from the host (no launch, no read-back).
    pub fn aux_value(&self) -> f64 {
        let sum: f64 = self.routers.iter().map(|r| r.aux_value).sum();
        sum / self.routers.len().max(1) as f64
    }

    /// Per layer, the share of routed slots each expert received.
    pub fn expert_load(&self) -> Vec<Vec<f32>> {
        self.routers.iter().map(|r| r.load.clone()).collect()
    }
}

impl<B: Backend> Grok<B> {
    /// `ids: [batch, seq]` → logits `[batch, seq, vocab]`. With `caches` (one per layer), the ids
    /// continue the cached sequence and the caches are extended.
    pub fn forward(
        &self,
        ids: Tensor<B, 2, Int>,
        caches: Option<&mut [Option<KvCache<B>>]>,
    ) -> GrokOutput<B> {
        precision::autocast(self.precision, || {
            flash::scope(self.attention, || self.forward_inner(ids, caches))
        })
    }

    /// The same model computing its attention core as `kind` says (`model::flash`).
    pub fn with_attention(mut self, kind: AttentionKernel) -> Self {
        self.attention = kind;
        self
    }

    /// The same model computing its matrix products in `precision`; the weights stay as they are.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    fn forward_inner(
        &self,
        ids: Tensor<B, 2, Int>,
        caches: Option<&mut [Option<KvCache<B>>]>,
    ) -> GrokOutput<B> {
        let [b, t] = ids.dims();
        let device = ids.device();
        let past = caches
            .as_ref()
            .and_then(|c| c.first())
            .and_then(|c| c.as_ref())
            .map_or(0, |c| c.k.dims()[2]);
        let rope = RopeTables::new(self.head_dim, self.rope_theta, past, t, &device);
        let mut h = embedding::lookup(self.embed_tokens.val(), ids).mul_scalar(self.embedding_multiplier); // [b, t, d]
        let d = h.dims()[2];
        let mut routers = Vec::with_capacity(self.layers.len());
        let mut caches = caches;
        for (i, layer) in self.layers.iter().enumerate() {
            let cache = caches.as_mut().map(|c| &mut c[i]);
            let (next, stats) = layer.forward(h, &rope, cache);
            h = next;
            routers.push(stats);
        }
        let h = self.norm.forward(h).reshape([b * t, d]); // [b·t, d]
        // Under bf16 the head's product rounds its operands to bf16 but keeps its result in f32
        // (`model::wide`): bf16-rounded logits (steps of 1/16 near 10) cost the small preset
        // ~0.07 nats of validation loss after 200 steps, while bf16 operands track f32 as closely
        // as an f32 head did (docs/benchmarks.md), and the head, a fifth of gpu-350m's FLOPs,
        // runs at bf16 rather than tf32 tensor-core speed.
        // The output multiplier scales the [b·t, d] hidden states rather than the [b·t, vocab]
        // logits: the same product, with a pass (and its backward) over 1/16 as many values at
        // the tiny-peer shape.
        let logits = precision::matmul_head(h.mul_scalar(self.output_multiplier), self.embed_tokens.val())
            .reshape([b, t, self.embed_tokens.val().dims()[0]]); // [b, t, vocab]
        GrokOutput { logits, routers }
    }
}

/// Every parameter's path and shape in module order, from the config alone (export and import
/// use it to handle models too large to build; a test checks it against the real module tree).
pub fn param_shapes(c: &GrokConfig) -> Vec<(String, Vec<usize>)> {
    let (d, hd, f) = (c.d_model, c.head_dim, c.ffn_size);
    let mut out = vec![("embed_tokens".to_string(), vec![c.vocab_size, d])];
    for i in 0..c.n_layers {
        let l = format!("layers.{i}");
        out.push((format!("{l}.pre_attn_norm.weight"), vec![d]));
        out.push((format!("{l}.self_attn.q_proj"), vec![d, c.n_q_heads * hd]));
        out.push((format!("{l}.self_attn.k_proj"), vec![d, c.n_kv_heads * hd]));
        out.push((format!("{l}.self_attn.v_proj"), vec![d, c.n_kv_heads * hd]));
        out.push((format!("{l}.self_attn.o_proj"), vec![c.n_q_heads * hd, d]));
        out.push((format!("{l}.post_attn_norm.weight"), vec![d]));
        out.push((format!("{l}.pre_moe_norm.weight"), vec![d]));
        out.push((format!("{l}.block_sparse_moe.gate"), vec![d, c.n_experts]));
        for e in 0..c.n_experts {
            out.push((format!("{l}.block_sparse_moe.experts.{e}.w1"), vec![d, f]));
            out.push((format!("{l}.block_sparse_moe.experts.{e}.w3"), vec![d, f]));
            out.push((format!("{l}.block_sparse_moe.experts.{e}.w2"), vec![f, d]));
        }
        out.push((format!("{l}.post_moe_norm.weight"), vec![d]));
    }
    out.push(("norm.weight".to_string(), vec![d]));
    out
}
