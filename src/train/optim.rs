//! AdamW with decoupled weight decay, PyTorch's update rule, moments kept per parameter path.
//! Ours rather than burn-optim's because burn's decays every parameter alike, clips per tensor
//! rather than globally, and keys its state by `ParamId`, which safetensors checkpoints cannot
//! carry.

use std::any::Any;

use burn::module::{AutodiffModule, ModuleMapper, Param, ParamMapper};
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
    ///
    /// The parameters are taken out of the module, updated together, decayed and undecayed ones
    /// in one `fused::adamw` call each (on the GPU backends a few launches for them all, not one
    /// per parameter), and put back. Taken, not cloned: an unshared buffer is updated in place.
    pub fn step<AB, M>(&mut self, module: M, grads: Grads<B>, lr: f64) -> M
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        self.step += 1;
        let t = self.step as i32;
        let s = self.settings;
        let scalars = |decay: bool| fused::AdamWScalars {
            beta1: s.beta1,
            beta2: s.beta2,
            eps: s.eps,
            bc2_sqrt: (1.0 - s.beta2.powi(t)).sqrt(),
            step_size: lr / (1.0 - s.beta1.powi(t)),
            decay: decay.then_some(1.0 - lr * s.weight_decay),
        };

        let mut taker = Taker::<AB> {
            owned: self.owned.as_deref(),
            taken: Vec::new(),
        };
        let module = module.map(&mut taker);
        let mut grads: Vec<_> = grads.tensors.into_iter().map(Some).collect();
        let mut taken = taker.taken;
        let mut updated: Vec<_> = taken.iter().map(|_| None).collect();
        for decay in [true, false] {
            let which: Vec<usize> = (0..taken.len())
                .filter(|&i| taken[i].is_some())
                .filter(|&i| (self.params[i].decay && s.weight_decay > 0.0) == decay)
                .collect();
            let device = match which.first().and_then(|&i| taken[i].as_ref()) {
                Some(x) => x.p.device(),
                None => continue,
            };
            let mut mappers = Vec::with_capacity(which.len());
            let sets = which
                .iter()
                .map(|&i| {
                    let Taken { p, mapper } = taken[i].take().expect("each parameter taken once");
                    mappers.push(mapper);
                    fused::AdamWTensors {
                        p,
                        g: grads[i].take().expect("one gradient per parameter"),
                        m: std::mem::replace(&mut self.m[i], Tensor::empty([0], &device)),
                        v: std::mem::replace(&mut self.v[i], Tensor::empty([0], &device)),
                    }
                })
                .collect();
            let out = fused::adamw(scalars(decay), sets);
            for ((&i, (p, m, v)), mapper) in which.iter().zip(out).zip(mappers) {
                self.m[i] = m;
                self.v[i] = v;
                updated[i] = Some(Taken { p, mapper });
            }
        }
        module.map(&mut Putter::<AB> { updated, index: 0 })
    }
}

/// A parameter out of its module for the update (and, updated, on its way back): its value,
/// flattened, and its mapper (as `Any`: its type depends on the rank), which goes back with it.
struct Taken<B: Backend> {
    p: Tensor<B, 1>,
    mapper: Box<dyn Any>,
}

/// The first pass: each parameter this rank updates is taken out (in `train::params` order) and
/// left as a placeholder that is never read; the others stay.
struct Taker<'a, AB: AutodiffBackend> {
    owned: Option<&'a [bool]>,
    taken: Vec<Option<Taken<AB::InnerBackend>>>,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for Taker<'_, AB> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let i = self.taken.len();
        if self.owned.is_some_and(|o| !o[i]) {
            self.taken.push(None);
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.shape();
        let device = tensor.device();
        let n = shape.num_elements();
        self.taken.push(Some(Taken {
            p: tensor.inner().reshape([n]),
            mapper: Box::new(mapper),
        }));
        Param::uninitialized(
            id,
            |_, _| unreachable!("the optimizer puts every parameter it takes back"),
            device,
            true,
            shape,
        )
    }
}

/// The second pass: the updated parameters in the placeholders' places; the parameters this
/// rank does not update pass through.
struct Putter<AB: AutodiffBackend> {
    updated: Vec<Option<Taken<AB::InnerBackend>>>,
    index: usize,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for Putter<AB> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let i = self.index;
        self.index += 1;
        let Some(Taken { p, mapper }) = self.updated[i].take() else {
            return param;
        };
        let mapper = *mapper
            .downcast::<ParamMapper<Tensor<AB, D>>>()
            .unwrap_or_else(|_| unreachable!("the same module in the same order"));
        // The placeholder is dropped without being read (so never initialized).
        let (id, shape) = (param.id, param.lazy_shape());
        let updated = Tensor::<AB, D>::from_inner(p.reshape(shape)).require_grad();
        Param::from_mapped_value(id, updated, mapper)
    }
}
