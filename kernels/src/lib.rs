//! Fused CPU kernels for Colossus on plain `f32` slices, with no burn types: the few element-wise
//! chains of a training step that burn's CPU backend runs as many separate, scalar, single-threaded
//! passes (each with its own autodiff node), done here in one pass each, vectorised and
//! row-parallel; and the attention core, whose products run blockwise on gemm so that the
//! `[rows, keys]` scores stay in cache.
//!
//! A separate crate so that it is compiled at `opt-level = 3` in the dev profile (the loop
//! vectoriser does not run at the `-O1` the main crate uses, see the workspace `Cargo.toml`).
//! Every kernel is deterministic: each output element is computed by one thread, in a fixed order,
//! whatever the thread count. `colossus::model::fused` wraps them as burn ops with their backward.

mod adamw;
mod attention;
mod clip;
mod gelu;
mod math;
mod norm;
mod rope;
mod simd;
mod softmax;
mod xent;

pub use adamw::{AdamWStep, adamw};
pub use attention::{AttentionShape, attention, attention_backward};
pub use clip::{scale, sum_squares};
pub use gelu::{gelu_gate, gelu_gate_backward};
pub use math::{exp, tanh};
pub use norm::{rms_norm, rms_norm_backward};
pub use rope::{Rope, rope};
pub use softmax::{CappedSoftmax, capped_softmax, capped_softmax_backward};
pub use xent::{cross_entropy, cross_entropy_backward};

/// Deterministic test inputs in [-1, 1), shared by the kernels' unit tests.
#[cfg(test)]
mod test_data {
    pub fn data(n: usize, salt: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + salt * 31) % 1009) as f32 / 504.5 - 1.0)
            .collect()
    }
}
