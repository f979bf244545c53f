//! Grouped-query causal self-attention with RoPE, Grok-1's scaled and tanh soft-capped logits, and
//! softmax in f32. No biases. Projections are stored `[in, out]` (burn's layout; export transposes).

use burn::module::{Module, Param};
use burn::tensor::{Tensor, backend::Backend};

use super::rope::RopeTables;
use super::shared_half::SharedHalf;
use super::{fused, init, precision};

#[derive(Debug, Clone)]
pub struct AttentionConfig {
    pub d_model: usize,
    pub n_q_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub output_multiplier: f64,
    /// 0 turns the cap off.
    pub softcap: f64,
    pub init_std: f64,
}

impl AttentionConfig {
    /// `name` is the parameter path prefix, which also names each tensor's RNG stream.
    pub fn init<B: Backend>(&self, seed: u64, name: &str, device: &B::Device) -> Attention<B> {
        let (d, hd) = (self.d_model, self.head_dim);
        let p = |suffix: &str, shape: [usize; 2]| {
            init::normal(shape, self.init_std, seed, &format!("{name}.{suffix}"), device)
        };
        Attention {
            q_proj: p("q_proj", [d, self.n_q_heads * hd]),
            k_proj: p("k_proj", [d, self.n_kv_heads * hd]),
            v_proj: p("v_proj", [d, self.n_kv_heads * hd]),
            o_proj: p("o_proj", [self.n_q_heads * hd, d]),
            n_q_heads: self.n_q_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: hd,
            output_multiplier: self.output_multiplier,
            softcap: self.softcap,
        }
    }
}

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `[d_model, n_q_heads·head_dim]`
    pub q_proj: Param<Tensor<B, 2>>,
    /// `[d_model, n_kv_heads·head_dim]`
    pub k_proj: Param<Tensor<B, 2>>,
    /// `[d_model, n_kv_heads·head_dim]`
    pub v_proj: Param<Tensor<B, 2>>,
    /// `[n_q_heads·head_dim, d_model]`
    pub o_proj: Param<Tensor<B, 2>>,
    #[module(skip)]
    pub n_q_heads: usize,
    #[module(skip)]
    pub n_kv_heads: usize,
    #[module(skip)]
    pub head_dim: usize,
    #[module(skip)]
    pub output_multiplier: f64,
    #[module(skip)]
    pub softcap: f64,
}

/// Keys and values of earlier positions, for incremental decoding.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    /// `[batch, n_kv_heads, past, head_dim]`, RoPE already applied.
    pub k: Tensor<B, 4>,
    /// `[batch, n_kv_heads, past, head_dim]`
    pub v: Tensor<B, 4>,
}

impl<B: Backend> Attention<B> {
    /// `x: [batch, seq, d_model]` → `[batch, seq, d_model]`, in the products' half type under
    /// mixed precision (its consumer, the post-attention norm, widens it as it reads it).
    /// `rope` covers this call's positions; with a cache, those positions come after the cached
    /// ones and the cache is extended.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTables<B>,
        cache: Option<&mut Option<KvCache<B>>>,
    ) -> Tensor<B, 3> {
        let [b, t, d] = x.dims();
        let (nq, nkv, hd) = (self.n_q_heads, self.n_kv_heads, self.head_dim);
        let rep = nq / nkv;
        // Under mixed precision x is rounded to the half type once for the three products, and
        // each product's input gradient still comes back widened to f32 before they are summed
        // (`SharedHalf`): summing them in the half type moved the f16 loss (measured).
        let x2 = SharedHalf::new(x.reshape([b * t, d])); // [b·t, d]
        // Under mixed precision q, k and v stay in the products' half type: every consumer
        // (RoPE, the attention products, the KV cache's) would round them to it anyway.
        let heads = |w: &Param<Tensor<B, 2>>, n: usize| {
            precision::matmul_half(x2.get(), w.val()).reshape([b, t, n, hd]) // [b, t, n, hd]
        };
        let q = fused::rope(heads(&self.q_proj, nq), rope); // [b, nq, t, hd]
        let mut k = fused::rope(heads(&self.k_proj, nkv), rope); // [b, nkv, t, hd]
        let mut v = heads(&self.v_proj, nkv).swap_dims(1, 2); // [b, nkv, t, hd]
        let mut past = 0;
        if let Some(cache) = cache {
            if let Some(c) = cache.take() {
                past = c.k.dims()[2];
                k = Tensor::cat(vec![c.k, k], 2);
                v = Tensor::cat(vec![c.v, v], 2);
            }
            *cache = Some(KvCache {
                k: k.clone(),
                v: v.clone(),
            });
        }

        // Query heads g·rep .. g·rep+rep share kv head g, so folding the rep query heads of a
        // group into the row dimension lets one batched matmul serve the group without
        // materialising repeated keys and values.
        let q = q.reshape([b, nkv, rep * t, hd]); // [b, nkv, rep·t, hd]
        let scores = fused::AttnScores {
            multiplier: self.output_multiplier,
            cap: self.softcap,
            t,
            past,
        };
        let out = fused::attention(q, k, v, scores); // [b, nkv, rep·t, hd]
        let out = out
            .reshape([b, nq, t, hd])
            .swap_dims(1, 2)
            .reshape([b * t, nq * hd]);
        precision::matmul_half(out, self.o_proj.val()).reshape([b, t, d]) // [b, t, d]
    }
}
