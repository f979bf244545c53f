//! RMSNorm with a learned scale and no bias, always computed in f32 (Grok-1 does the same).

use burn::module::{Module, Param};
use burn::tensor::{Tensor, backend::Backend};

use super::{fused, init, precision};

#[derive(Debug, Clone)]
pub struct RmsNormConfig {
    pub d: usize,
    pub eps: f64,
}

impl RmsNormConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> RmsNorm<B> {
        RmsNorm {
            weight: init::ones([self.d], device),
            eps: self.eps,
        }
    }
}

#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// `[d]`
    pub weight: Param<Tensor<B, 1>>,
    #[module(skip)]
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// `[..., d]` → `[..., d]`: y = weight · x / sqrt(mean(x²) + eps).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let (xf, dtype) = precision::upcast(x);
        let y = fused::rms_norm(xf, self.weight.val(), self.eps);
        precision::restore(y, dtype)
    }

    /// `residual + norm(x)` in the residual stream's dtype: the sandwich norm's output added to
    /// the residual stream, in one pass on a GPU (`fused::rms_norm_residual`). A bf16 or f16 `x`
    /// (attention's output under mixed precision) is normed in f32 and never rounded back.
    pub fn forward_residual<const D: usize>(&self, residual: Tensor<B, D>, x: Tensor<B, D>) -> Tensor<B, D> {
        fused::rms_norm_residual(residual, x, self.weight.val(), self.eps)
    }
}
