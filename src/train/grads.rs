//! Gradients as a flat list in parameter order (see `train::params`), flattened to 1-D: collected
//! from a backward pass, summed over micro-batches, measured and clipped by their global norm.
//! Keeping them outside burn's `GradientsParams` lets `dist/` all-reduce them and the optimizer
//! address them by index.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::tensor::{ElementConversion, Tensor, backend::AutodiffBackend, backend::Backend};

/// One flattened gradient per parameter, on the inner (non-autodiff) backend.
#[derive(Debug, Clone)]
pub struct Grads<B: Backend> {
    pub tensors: Vec<Tensor<B, 1>>,
}

impl<B: Backend> Grads<B> {
    /// Take the gradients of `module`'s parameters out of a backward pass. A parameter the loss
    /// did not reach (an expert no token was routed to) gets zeros, so every rank and every
    /// micro-batch contributes a tensor of the same shape.
    pub fn collect<AB, M>(module: &M, mut grads: AB::Gradients) -> Self
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        struct Collector<'a, AB: AutodiffBackend> {
            grads: &'a mut AB::Gradients,
            out: Vec<Tensor<AB::InnerBackend, 1>>,
        }
        impl<AB: AutodiffBackend> ModuleVisitor<AB> for Collector<'_, AB> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
                let value = param.val();
                let n = value.shape().num_elements();
                let g = match value.grad_remove(self.grads) {
                    Some(g) => g.reshape([n]),
                    None => Tensor::zeros([n], &value.device()),
                };
                self.out.push(g);
            }
        }
        let mut c = Collector::<AB> {
            grads: &mut grads,
            out: Vec::new(),
        };
        module.visit(&mut c);
        Grads { tensors: c.out }
    }

    /// Element-wise sum, for gradient accumulation.
    pub fn sum(self, other: Grads<B>) -> Self {
        let tensors = self
            .tensors
            .into_iter()
            .zip(other.tensors)
            .map(|(a, b)| a + b)
            .collect();
        Grads { tensors }
    }

    pub fn scale(self, factor: f64) -> Self {
        Grads {
            tensors: self.tensors.into_iter().map(|g| g.mul_scalar(factor)).collect(),
        }
    }

    /// sqrt(Σ over every element of every gradient of g²), read back to the host (one sync).
    pub fn global_norm(&self) -> f64 {
        let Some(first) = self.tensors.first() else {
            return 0.0;
        };
        let mut total = Tensor::<B, 1>::zeros([1], &first.device());
        for g in &self.tensors {
            total = total + g.clone().square().sum();
        }
        let sq: f64 = total.into_scalar().elem();
        sq.sqrt()
    }

    /// Scale so the global norm is at most `max_norm` (PyTorch's `clip_grad_norm_` rule:
    /// factor max/(norm + 1e-6), never above 1). Returns the norm before clipping.
    pub fn clip_global_norm(self, max_norm: f64) -> (Self, f64) {
        let norm = self.global_norm();
        if max_norm > 0.0 && norm.is_finite() {
            let factor = max_norm / (norm + 1e-6);
            if factor < 1.0 {
                return (self.scale(factor), norm);
            }
        }
        (self, norm)
    }
}
