//! Next-token cross-entropy, computed in at least f32 with log-softmax.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, backend::Backend};

/// `logits: [batch, seq, vocab]`, `targets: [batch, seq]` → mean negative log-likelihood, `[1]`.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [b, t, v] = logits.dims();
    let logits = logits.reshape([b * t, v]);
    let (logits, _) = crate::model::precision::upcast(logits);
    let logp = log_softmax(logits, 1); // [b·t, v]
    let picked = logp.gather(1, targets.reshape([b * t, 1])); // [b·t, 1]
    picked.mean().neg()
}
