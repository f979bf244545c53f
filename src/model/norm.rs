//! RMSNorm with a learned scale and no bias, always computed in f32 (Grok-1 does the same).

use burn::module::{Module, Param};
use burn::tensor::{Tensor, backend::Backend};

use super::{init, precision};

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
        let rms = xf.clone().square().mean_dim(D - 1).add_scalar(self.eps).sqrt(); // [..., 1]
        let weight = self.weight.val().unsqueeze::<D>(); // [1, ..., d]
        let y = xf.div(rms).mul(weight);
        precision::restore(y, dtype)
    }
}
