//! Next-token cross-entropy, computed in at least f32 (a fused log-sum-exp pass on the CPU
//! backend, log-softmax elsewhere: `model::fused`).

use burn::tensor::{Int, Tensor, backend::Backend};

use crate::model::fused;

/// `logits: [batch, seq, vocab]`, `targets: [batch, seq]` → mean negative log-likelihood, `[1]`.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [b, t, v] = logits.dims();
    let logits = logits.reshape([b * t, v]);
    let (logits, _) = crate::model::precision::upcast(logits);
    fused::cross_entropy(logits, targets.reshape([b * t]))
}
