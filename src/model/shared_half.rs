//! One rounding of an f32 tensor to mixed precision's half type, read by several products, each
//! of which still sends its own gradient back widened to f32.
//!
//! Why: attention's input feeds three projections. `precision::matmul` rounds it once per
//! product: three `[n, d]` casts, and three half copies that the products' autodiff nodes keep
//! for the backward. Rounding it once as a plain tensor would make autodiff sum the three
//! products' input gradients in the half type before the cast's backward widens them (measured:
//! the f16 loss moved, `model::attention`). Here the value is rounded once, and every read
//! (`get`) is a node of its own whose backward widens its gradient, as a cast's does: the
//! gradients meet in f32, in the order the reads were made, so the input's gradient is the same
//! bits as with a cast per product. Saves two `[n, d]` casts a layer forward and, at
//! `gpu-350m`, two 32 MiB half copies a layer held for the backward (~0.75 GiB a step;
//! arithmetic). On backends without a dispatch (`run_gpu_kernel`, `run_kernel`), and under
//! `fused::plain_scope`, each read is a cast of its own, as before.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use super::fused::{plain_active, record, unwrap, wrap};
use super::precision;
use crate::backend::{GpuKernel, GpuOps, HostKernel, run_gpu_kernel, run_kernel};

/// `x` and, under mixed precision with `x` in f32, its value rounded to the half type (a
/// detached tensor: the reads attach it to `x`'s graph).
pub struct SharedHalf<B: Backend, const D: usize> {
    x: Tensor<B, D>,
    half: Option<Tensor<B, D>>,
}

impl<B: Backend, const D: usize> SharedHalf<B, D> {
    /// Rounds `x` once when the current autocast (`precision::autocast`) has a half type and
    /// `x` is f32; otherwise the reads are `x` itself, as `precision::matmul` would take it.
    pub fn new(x: Tensor<B, D>) -> Self {
        let half = precision::half(precision::current())
            .filter(|_| x.dtype() == DType::F32)
            .map(|h| x.clone().detach().cast(h));
        SharedHalf { x, half }
    }

    /// `x` in the half type, as `x.cast(half)` would give it, sharing the one rounding; its
    /// gradient reaches `x` widened to f32. `x` itself where nothing was rounded.
    pub fn get(&self) -> Tensor<B, D> {
        let Some(half) = &self.half else {
            return self.x.clone();
        };
        if plain_active() {
            return precision::restore(self.x.clone(), half.dtype());
        }
        let read = Read {
            x: self.x.clone(),
            half: half.clone(),
        };
        match run_gpu_kernel::<B, _>(read) {
            Ok(y) => y,
            Err(read) => run_kernel::<B, _>(read),
        }
    }
}

/// One read of the shared rounding.
struct Read<B: Backend, const D: usize> {
    x: Tensor<B, D>,
    half: Tensor<B, D>,
}

impl<B: Backend, const D: usize> Read<B, D> {
    /// A node whose parent is `x` and whose value is the given rounding, on `Autodiff<X>`.
    fn node<X: Backend>(self) -> Tensor<B, D> {
        let dtype = self.x.dtype();
        let half = unwrap::<Autodiff<X>, _, D>(self.half).primitive;
        let x = unwrap::<Autodiff<X>, _, D>(self.x);
        wrap::<B, Autodiff<X>, D>(record(Widen, [x], |_| (dtype, half)))
    }

    fn value<X: Backend>(self) -> Tensor<B, D> {
        wrap::<B, X, D>(unwrap::<X, _, D>(self.half))
    }
}

/// The backward of a cast: the gradient back in the parent's dtype (f32).
#[derive(Debug)]
struct Widen;

impl<X: Backend> Backward<X, 1> for Widen {
    type State = DType;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        unary::<X, _>(ops.parents, ops.node, grads, |g| {
            X::float_cast(g, ops.state.into())
        });
    }
}

impl<B: Backend, const D: usize> GpuKernel for Read<B, D> {
    type Output = Tensor<B, D>;

    fn gpu_autodiff<X: GpuOps>(self) -> Tensor<B, D> {
        self.node::<X>()
    }

    fn gpu_inner<X: GpuOps>(self) -> Tensor<B, D> {
        self.value::<X>()
    }
}

impl<B: Backend, const D: usize> HostKernel for Read<B, D> {
    type Output = Tensor<B, D>;

    fn autodiff<X: Backend>(self) -> Tensor<B, D> {
        self.node::<X>()
    }

    fn inner<X: Backend>(self) -> Tensor<B, D> {
        self.value::<X>()
    }

    fn plain(self) -> Tensor<B, D> {
        precision::restore(self.x, self.half.dtype())
    }
}

#[cfg(all(test, any(feature = "cpu", feature = "cpu-ndarray")))]
mod tests {
    use burn::tensor::TensorData;

    use super::*;
    use crate::backend::{Cpu, CpuTrain};
    use crate::config::Precision;
    use crate::model::fused::plain_scope;

    /// Two reads of `x` under bf16, weighed by 1 and 2⁻⁸: their values, x's gradient, and the
    /// reads' dtypes.
    fn two_reads() -> (Vec<f32>, Vec<f32>, Vec<f32>, [DType; 2]) {
        let device = Default::default();
        let x = [1.0 + 2f32.powi(-9), 3.0, -0.5, 0.1];
        let x = Tensor::<CpuTrain, 1>::from_data(TensorData::new(x.to_vec(), [4]), &device).require_grad();
        let (a, b) = precision::autocast(Precision::Bf16, || {
            let shared = SharedHalf::new(x.clone());
            (shared.get(), shared.get())
        });
        let dtypes = [a.dtype(), b.dtype()];
        let (a, b) = (a.cast(DType::F32), b.cast(DType::F32));
        let loss = a.clone().sum() + b.clone().mul_scalar(2f32.powi(-8)).sum();
        let grads = loss.backward();
        let g = x.grad(&grads).expect("x has a gradient");
        let v = |t: Tensor<_, 1>| t.into_data().into_vec::<f32>().unwrap();
        (v(a.inner()), v(b.inner()), v(g), dtypes)
    }

    /// The reads are `x` rounded to bf16 (1 + 2⁻⁹ → 1, 0.1 → 205/2048), and x's gradient
    /// is the two reads' gradients summed in f32, 1 + 2⁻⁸: summed in bf16 it would round to 1.
    /// The same bits as a cast per read (`plain_scope`), and at inference (no autodiff).
    #[test]
    fn reads_share_one_rounding_and_their_gradients_meet_in_f32() {
        let (a, b, g, dtypes) = two_reads();
        assert_eq!(dtypes, [DType::BF16; 2]);
        assert_eq!(a, vec![1.0, 3.0, -0.5, 205.0 / 2048.0]);
        assert_eq!(b, a);
        assert_eq!(g, vec![1.0 + 2f32.powi(-8); 4]);
        assert_eq!(plain_scope(two_reads), (a.clone(), b, g, dtypes));

        let device = Default::default();
        let x = Tensor::<Cpu, 1>::from_data(
            TensorData::new(vec![1.0 + 2f32.powi(-9), 3.0, -0.5, 0.1], [4]),
            &device,
        );
        let read = precision::autocast(Precision::Bf16, || SharedHalf::new(x).get());
        assert_eq!(read.dtype(), DType::BF16);
        assert_eq!(read.cast(DType::F32).into_data().into_vec::<f32>().unwrap(), a);
    }

    /// Under f32 there is nothing to round: a read is `x`, its gradient untouched.
    #[test]
    fn under_f32_a_read_is_x() {
        let device = Default::default();
        let x = Tensor::<CpuTrain, 1>::from_data(TensorData::new(vec![0.1f32, -2.0], [2]), &device)
            .require_grad();
        let read = precision::autocast(Precision::F32, || SharedHalf::new(x.clone()).get());
        assert_eq!(read.dtype(), DType::F32);
        let g = x
            .grad(&read.mul_scalar(3.0).sum().backward())
            .expect("x has a gradient");
        assert_eq!(g.into_data().into_vec::<f32>().unwrap(), vec![3.0, 3.0]);
    }
}
