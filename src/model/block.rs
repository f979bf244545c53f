//! One Grok-1 layer with "sandwich" norms: each sub-layer is normed on the way in and on the way
//! out before the residual add. Four RMSNorms per layer.

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use super::attention::{Attention, AttentionConfig, KvCache};
use super::moe::{Moe, MoeConfig, RouterStats};
use super::norm::{RmsNorm, RmsNormConfig};
use super::rope::RopeTables;

#[derive(Debug, Clone)]
pub struct BlockConfig {
    pub attention: AttentionConfig,
    pub moe: MoeConfig,
    pub norm: RmsNormConfig,
}

impl BlockConfig {
    pub fn init<B: Backend>(&self, seed: u64, name: &str, device: &B::Device) -> Block<B> {
        Block {
            pre_attn_norm: self.norm.init(device),
            self_attn: self.attention.init(seed, &format!("{name}.self_attn"), device),
            post_attn_norm: self.norm.init(device),
            pre_moe_norm: self.norm.init(device),
            block_sparse_moe: self.moe.init(seed, &format!("{name}.block_sparse_moe"), device),
            post_moe_norm: self.norm.init(device),
        }
    }
}

/// Field names follow the Hugging Face `Grok1ForCausalLM` layout, so parameter paths map 1:1.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub pre_attn_norm: RmsNorm<B>,
    pub self_attn: Attention<B>,
    pub post_attn_norm: RmsNorm<B>,
    pub pre_moe_norm: RmsNorm<B>,
    pub block_sparse_moe: Moe<B>,
    pub post_moe_norm: RmsNorm<B>,
}

impl<B: Backend> Block<B> {
    /// `h: [batch, seq, d_model]` → `[batch, seq, d_model]`
    pub fn forward(
        &self,
        h: Tensor<B, 3>,
        rope: &RopeTables<B>,
        cache: Option<&mut Option<KvCache<B>>>,
    ) -> (Tensor<B, 3>, RouterStats<B>) {
        let a = self
            .self_attn
            .forward(self.pre_attn_norm.forward(h.clone()), rope, cache);
        let h = self.post_attn_norm.forward_residual(h, a);
        let (m, stats) = self
            .block_sparse_moe
            .forward(self.pre_moe_norm.forward(h.clone()));
        (self.post_moe_norm.forward_residual(h, m), stats)
    }
}
