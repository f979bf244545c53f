//! AdamW with decoupled weight decay, PyTorch's update rule, moments kept per parameter path.
//! Ours rather than burn-optim's because burn's decays every parameter alike, clips per tensor
//! rather than globally, and keys its state by `ParamId`, which safetensors checkpoints cannot
//! carry.

use burn::module::{AutodiffModule, ModuleMapper, Param};
use burn::tensor::{Tensor, backend::AutodiffBackend, backend::Backend};

use super::grads::Grads;
use super::params::ParamInfo;
use crate::config::TrainConfig;
use crate::model::fused;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWSettings {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl From<&TrainConfig> for AdamWSettings {
    fn from(t: &TrainConfig) -> Self {
        AdamWSettings {
            beta1: t.beta1,
            beta2: t.beta2,
            eps: t.eps,
            weight_decay: t.weight_decay,
        }
    }
}

/// Optimizer state: the step count and, per parameter (in `train::params` order), the first and
/// second moments, flattened.
#[derive(Debug, Clone)]
pub struct AdamW<B: Backend> {
    pub settings: AdamWSettings,
    pub params: Vec<ParamInfo>,
    /// Updates applied so far.
    pub step: u64,
    pub m: Vec<Tensor<B, 1>>,
    pub v: Vec<Tensor<B, 1>>,
    /// ZeRO-1 (`dist::zero`): the parameters this rank updates; the others keep empty moments
    /// and are left as they are (their owners' values arrive afterwards). `None`: all of them.
    pub owned: Option<Vec<bool>>,
}

impl<B: Backend> AdamW<B> {
    pub fn new(settings: AdamWSettings, params: Vec<ParamInfo>, device: &B::Device) -> Self {
        let zeros = |p: &ParamInfo| Tensor::<B, 1>::zeros([p.numel()], device);
        let m = params.iter().map(zeros).collect();
        let v = params.iter().map(zeros).collect();
        AdamW {
            settings,
            params,
            step: 0,
            m,
            v,
            owned: None,
        }
    }

    /// One update of every parameter of `module` with `grads` at learning rate `lr`:
    /// m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;
    /// p ← p·(1 − lr·wd) [matrices only];  p ← p − lr/(1−β1ᵗ) · m / (sqrt(v)/sqrt(1−β2ᵗ) + eps).
    pub fn step<AB, M>(&mut self, module: M, grads: Grads<B>, lr: f64) -> M
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        self.step += 1;
        let t = self.step as i32;
        let s = self.settings;
        let bc1 = 1.0 - s.beta1.powi(t);
        let bc2_sqrt = (1.0 - s.beta2.powi(t)).sqrt();
        let mut mapper = Updater::<AB> {
            opt: self,
            grads: grads.tensors.into_iter().map(Some).collect(),
            index: 0,
            lr,
            step_size: lr / bc1,
            bc2_sqrt,
        };
        module.map(&mut mapper)
    }
}

struct Updater<'a, AB: AutodiffBackend> {
    opt: &'a mut AdamW<AB::InnerBackend>,
    grads: Vec<Option<Tensor<AB::InnerBackend, 1>>>,
    index: usize,
    lr: f64,
    step_size: f64,
    bc2_sqrt: f64,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for Updater<'_, AB> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let i = self.index;
        self.index += 1;
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.shape();
        let n = shape.num_elements();
        let s = self.opt.settings;
        let g = self.grads[i].take().expect("one gradient per parameter");
        if self.opt.owned.as_ref().is_some_and(|o| !o[i]) {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let p = tensor.inner().reshape([n]);

        let scalars = fused::AdamWScalars {
            beta1: s.beta1,
            beta2: s.beta2,
            eps: s.eps,
            bc2_sqrt: self.bc2_sqrt,
            step_size: self.step_size,
            decay: (self.opt.params[i].decay && s.weight_decay > 0.0)
                .then_some(1.0 - self.lr * s.weight_decay),
        };
        // Taken, not cloned: an unshared buffer is updated in place by the fused kernel.
        let device = g.device();
        let m = std::mem::replace(&mut self.opt.m[i], Tensor::empty([0], &device));
        let v = std::mem::replace(&mut self.opt.v[i], Tensor::empty([0], &device));
        let (p, m, v) = fused::adamw(scalars, fused::AdamWTensors { p, g, m, v });
        self.opt.m[i] = m;
        self.opt.v[i] = v;

        let updated = Tensor::<AB, D>::from_inner(p.reshape(shape)).require_grad();
        Param::from_mapped_value(id, updated, mapper)
    }
}
