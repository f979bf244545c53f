//! Gradients as a flat list in parameter order (see `train::params`), flattened to 1-D: collected
//! from a backward pass, summed over micro-batches, unscaled (f16's loss scaling), measured and
//! clipped by their global norm (one fused pass on the CPU backend, multi-tensor kernels on the GPU
//! backends, `Grads::clip_kernels`; with `--plain-kernels`, tensor ops on one vector of them all,
//! `Grads::clip_plain`).
//! Keeping them outside burn's `GradientsParams` lets `dist/` all-reduce them and the optimizer
//! address them by index.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::tensor::{ElementConversion, Tensor, TensorData, backend::AutodiffBackend, backend::Backend};

use crate::backend::{HostKernel, run_kernel};
use crate::model::fused::{self, fused_allowed};

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

    /// Scale so the global norm is at most `max_norm` (PyTorch's `clip_grad_norm_` rule:
    /// factor max/(norm + 1e-6), never above 1). Returns the norm before clipping.
    ///
    /// On the CPU backend the norm and the rescale are one parallel pass each over the
    /// gradients' own buffers (`colossus_kernels::clip`); elsewhere, burn tensor ops. The norm's
    /// sums run in a different order on the two paths, so they agree to rounding.
    pub fn clip_global_norm(self, max_norm: f64) -> (Self, f64) {
        self.unscale_and_clip(1.0, max_norm)
    }

    /// Gradients of a loss multiplied by `loss_scale` (`train::loss_scale`), divided by it and
    /// clipped as `clip_global_norm` does, in the same pass. Returns the norm of the unscaled
    /// gradients: the scale is a power of two, so it is the norm an unscaled backward would
    /// give, to the bit, wherever nothing overflowed or underflowed. A non-finite norm leaves
    /// the gradients as they are (the step is skipped).
    pub fn unscale_and_clip(self, loss_scale: f64, max_norm: f64) -> (Self, f64) {
        if self.tensors.iter().all(|g| fused_allowed(g.dtype())) {
            return run_kernel::<B, _>(Clip {
                grads: self,
                loss_scale,
                max_norm,
            });
        }
        self.clip_plain(loss_scale, max_norm)
    }

    /// The GPU backends' path: the squares summed by a few multi-tensor launches (up to 32
    /// gradients each, `fused::sum_squares`) and, when clipping applies, each gradient rescaled
    /// in place by as few (`fused::scale`). `clip_plain`'s vector cost a launch per gradient to
    /// copy them all into it (398 of a `gpu-350m` step's 3 188 launches on lavapipe,
    /// docs/benchmarks.md) and the copy itself; this needs neither. The partial sums add in
    /// another order than the vector's reduction: the norms agree to f32 rounding.
    /// `Err(self)` back where those kernels do not run.
    fn clip_kernels(self, loss_scale: f64, max_norm: f64) -> Result<(Self, f64), Self> {
        let Some(squares) = fused::sum_squares(&self.tensors) else {
            return Err(self);
        };
        let norm = squares.sqrt() / loss_scale;
        let tensors = match multiplier(norm, loss_scale, max_norm) {
            Some(factor) => fused::scale(self.tensors, factor)
                .unwrap_or_else(|xs| xs.into_iter().map(|x| x.mul_scalar(factor)).collect()),
            None => self.tensors,
        };
        Ok((Grads { tensors }, norm))
    }

    /// The tensor-op path (`--plain-kernels`, and backends without kernels): the gradients are
    /// concatenated into one vector, measured and rescaled there, and handed back as slices of it.
    /// Per gradient, a square, a sum and the running total's add were three kernel launches
    /// (and the rescale one more operation): at `gpu-350m`'s 398 parameters 1 194 of a training
    /// step's 5 459 launches on lavapipe (docs/benchmarks.md, "Launches per training step"),
    /// each some microseconds of host time whatever its size. burn's concatenation copies each
    /// gradient with a launch of its own, but the norm and the rescale are then one pass each.
    /// It costs a copy of the gradients, and their memory twice while it is made (each gradient
    /// is freed once copied); the slices are views of the vector where their offsets meet the
    /// device's alignment (burn-cubecl's `slice`), copies otherwise.
    fn clip_plain(self, loss_scale: f64, max_norm: f64) -> (Self, f64) {
        let sizes: Vec<usize> = self.tensors.iter().map(|g| g.dims()[0]).collect();
        let Some(flat) = flatten(self.tensors) else {
            return (Grads { tensors: Vec::new() }, 0.0);
        };
        let norm = norm_of(flat.clone()) / loss_scale;
        let flat = match multiplier(norm, loss_scale, max_norm) {
            Some(factor) => flat.mul_scalar(factor),
            None => flat,
        };
        let mut start = 0;
        let tensors = sizes
            .into_iter()
            .map(|n| {
                start += n;
                flat.clone().slice(start - n..start)
            })
            .collect();
        (Grads { tensors }, norm)
    }
}

/// The gradients end to end, `[Σ n]`; `None` when there are none.
fn flatten<B: Backend>(tensors: Vec<Tensor<B, 1>>) -> Option<Tensor<B, 1>> {
    match tensors.len() {
        0 => None,
        1 => tensors.into_iter().next(),
        _ => Some(Tensor::cat(tensors, 0)),
    }
}

/// sqrt(Σ x²), read back to the host.
fn norm_of<B: Backend>(flat: Tensor<B, 1>) -> f64 {
    let sq: f64 = flat.square().sum().into_scalar().elem();
    sq.sqrt()
}

/// The factor that brings `norm` down to `max_norm`, or `None` when no clipping applies.
fn clip_factor(norm: f64, max_norm: f64) -> Option<f64> {
    let factor = max_norm / (norm + 1e-6);
    (max_norm > 0.0 && norm.is_finite() && factor < 1.0).then_some(factor)
}

/// What the gradients of a loss scaled by `loss_scale`, whose unscaled norm is `norm`, are
/// multiplied by: the clip factor over the scale; `None` when that is 1 or the norm is not
/// finite.
fn multiplier(norm: f64, loss_scale: f64, max_norm: f64) -> Option<f64> {
    let clip = clip_factor(norm, max_norm);
    if loss_scale == 1.0 || !norm.is_finite() {
        return clip;
    }
    Some(clip.unwrap_or(1.0) / loss_scale)
}

struct Clip<B: Backend> {
    grads: Grads<B>,
    loss_scale: f64,
    max_norm: f64,
}

impl<B: Backend> Clip<B> {
    /// Each gradient's buffer is taken over (no copy unless it is shared), measured, rescaled in
    /// place and handed back.
    fn host(self) -> (Grads<B>, f64) {
        let Some(device) = self.grads.tensors.first().map(|t| t.device()) else {
            return (self.grads, 0.0);
        };
        let mut host: Vec<Vec<f32>> = self
            .grads
            .tensors
            .into_iter()
            .map(|t| t.into_data().into_vec::<f32>().expect("f32 gradients"))
            .collect();
        let norm = host
            .iter()
            .map(|g| colossus_kernels::sum_squares(g))
            .sum::<f64>()
            .sqrt()
            / self.loss_scale;
        if let Some(factor) = multiplier(norm, self.loss_scale, self.max_norm) {
            // The tensor path multiplies by the factor rounded to f32; so does this.
            host.iter_mut()
                .for_each(|g| colossus_kernels::scale(g, factor as f32));
        }
        let tensors = host
            .into_iter()
            .map(|g| {
                let n = g.len();
                Tensor::from_data(TensorData::new(g, [n]), &device)
            })
            .collect();
        (Grads { tensors }, norm)
    }
}

impl<B: Backend> HostKernel for Clip<B> {
    type Output = (Grads<B>, f64);

    /// Gradients live on the inner backend; an autodiff caller would get the same host pass.
    fn autodiff<X: Backend>(self) -> Self::Output {
        self.host()
    }

    fn inner<X: Backend>(self) -> Self::Output {
        self.host()
    }

    fn plain(self) -> Self::Output {
        let (loss_scale, max_norm) = (self.loss_scale, self.max_norm);
        self.grads
            .clip_kernels(loss_scale, max_norm)
            .unwrap_or_else(|grads| grads.clip_plain(loss_scale, max_norm))
    }
}
