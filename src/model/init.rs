//! Parameter initialisation on the host from a seed. Each tensor draws from its own named stream,
//! so weights are identical on every backend and rank and do not depend on construction order.

use burn::module::Param;
use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::rng::Rng;

/// A trainable tensor of N(0, std²) values drawn from the stream `seed`/`name`.
pub fn normal<B: Backend, const D: usize>(
    shape: [usize; D],
    std: f64,
    seed: u64,
    name: &str,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    let n: usize = shape.iter().product();
    let mut rng = Rng::derive(seed, name);
    let values: Vec<f32> = (0..n).map(|_| (rng.normal() * std) as f32).collect();
    Param::from_tensor(floats(values, shape, device))
}

/// A float tensor from host f32 values in the backend's float type. `from_data` alone would keep
/// the data's f32 even on an f64 backend, silently mixing precisions.
pub fn floats<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape).convert::<B::FloatElem>(), device)
}

/// A trainable tensor of ones (norm scales).
pub fn ones<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::ones(shape, device))
}
