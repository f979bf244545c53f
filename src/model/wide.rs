//! The output head's product under bf16 mixed precision: bf16 operands, f32 accumulation and an
//! f32 result, with a backward of the same kind (the upstream gradient rounded to bf16, as
//! autocast's backward has it, and f32 gradients out). Under `precision: f16` the same with f16.
//!
//! Why: autocast writes a bf16 GEMM's result in bf16, and bf16-rounded logits (steps of 1/16
//! near 10) cost the small preset ~0.07 nats of validation loss after 200 steps, so the head ran
//! in f32: a fifth of `gpu-350m`'s FLOPs at tf32 rather than bf16 tensor-core speed. Rounding
//! only the operands keeps the logits' precision (docs/benchmarks.md has the runs) and gives the
//! tensor cores bf16 inputs.
//!
//! Where it runs: on the GPU backends as one cubek GEMM with bf16 staging and an f32 output
//! (`GpuOps::matmul_f32_out`). On the CPU backend the operands are rounded to bf16 and widened,
//! then multiplied in f32: the same function, since a product of two bf16 values is exact in f32
//! and only the order of the f32 sums differs. Other backends, and `--plain-kernels`, run that
//! forward as tensor ops, whose autodiff leaves the upstream gradient unrounded.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, FloatDType, Tensor};

use super::fused::{plain_active, record, unwrap, wrap};
use crate::backend::{GpuKernel, GpuOps, HostKernel, run_gpu_kernel, run_kernel};

/// `a · wᵀ` with operands rounded to `half` (bf16, or f16 under `precision: f16` and in the
/// lavapipe tests) and an f32 result: `a: [m, k]`, `w: [n, k]` (f32), the tied head's hidden
/// states and embedding matrix → `[m, n]` f32.
///
/// The op takes `w` itself, not a transposed view of it, so both gradients are contiguous
/// products in their parents' layout. A first version took `wᵀ` (as `Tensor::matmul` would):
/// on the CPU backend with two row shards its embedding gradient came out wrong in about 1 run
/// in 40 (every entry, 48% relative L2), a fault not traced further; this form gave the same
/// bits in 180 runs out of 180.
pub fn matmul_t_as<B: Backend>(a: Tensor<B, 2>, w: Tensor<B, 2>, half: FloatDType) -> Tensor<B, 2> {
    if plain_active() || a.dtype() != DType::F32 || w.dtype() != DType::F32 {
        return plain(a, w, half);
    }
    run_gpu_kernel::<B, _>(Wide { a, w, half }).unwrap_or_else(run_kernel::<B, _>)
}

fn plain<B: Backend>(a: Tensor<B, 2>, w: Tensor<B, 2>, half: FloatDType) -> Tensor<B, 2> {
    let round = |x: Tensor<B, 2>| x.cast(half).cast(DType::F32);
    round(a).matmul(round(w).transpose())
}

/// A half × half → f32 product on backend `X`.
type Product<X> = fn(FloatTensor<X>, FloatTensor<X>) -> FloatTensor<X>;

/// The product of half-precision operands computed in f32 (`X` has no mixed GEMM): exact
/// products, f32 sums.
fn widened<X: Backend>(a: FloatTensor<X>, b: FloatTensor<X>) -> FloatTensor<X> {
    let wide = |x| X::float_cast(x, FloatDType::F32);
    X::float_matmul(wide(a), wide(b))
}

/// The tensor cores' bf16 → f32 GEMM.
fn tensor_cores<X: GpuOps>(a: FloatTensor<X>, b: FloatTensor<X>) -> FloatTensor<X> {
    X::matmul_f32_out(a, b)
}

struct WideBackward<X: Backend> {
    product: Product<X>,
    half: FloatDType,
}

impl<X: Backend> std::fmt::Debug for WideBackward<X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WideBackward")
    }
}

impl<X: Backend> Backward<X, 2> for WideBackward<X> {
    /// The rounded operands: half the bytes of the f32 ones, and rounded once, not again per use.
    type State = (FloatTensor<X>, FloatTensor<X>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (a, w) = ops.state; // [m, k], [n, k], in `half`
        let g = X::float_cast(grads.consume::<X>(&ops.node), self.half); // [m, n]
        let [pa, pw] = ops.parents;
        // Both gradients come out contiguous, in their parents' layout.
        if let Some(node) = pa {
            grads.register::<X>(node.id, (self.product)(g.clone(), w)); // [m, k]
        }
        if let Some(node) = pw {
            grads.register::<X>(node.id, (self.product)(X::float_transpose(g), a)); // [n, k]
        }
    }
}

struct Wide<B: Backend> {
    a: Tensor<B, 2>,
    w: Tensor<B, 2>,
    half: FloatDType,
}

impl<B: Backend> Wide<B> {
    fn autodiff<X: Backend>(self, product: Product<X>) -> Tensor<B, 2> {
        let half = self.half;
        let aw = [
            unwrap::<Autodiff<X>, _, 2>(self.a),
            unwrap::<Autodiff<X>, _, 2>(self.w),
        ];
        wrap::<B, Autodiff<X>, 2>(record(WideBackward { product, half }, aw, |[a, w]| {
            let (a, w) = (X::float_cast(a, half), X::float_cast(w, half));
            ((a.clone(), w.clone()), product(a, X::float_transpose(w)))
        }))
    }

    fn inner<X: Backend>(self, product: Product<X>) -> Tensor<B, 2> {
        let round = |x| X::float_cast(unwrap::<X, _, 2>(x), self.half);
        wrap::<B, X, 2>(product(round(self.a), X::float_transpose(round(self.w))))
    }
}

impl<B: Backend> GpuKernel for Wide<B> {
    type Output = Tensor<B, 2>;

    fn gpu_autodiff<X: GpuOps>(self) -> Tensor<B, 2> {
        self.autodiff::<X>(tensor_cores::<X>)
    }

    fn gpu_inner<X: GpuOps>(self) -> Tensor<B, 2> {
        self.inner::<X>(tensor_cores::<X>)
    }
}

impl<B: Backend> HostKernel for Wide<B> {
    type Output = Tensor<B, 2>;

    fn autodiff<X: Backend>(self) -> Tensor<B, 2> {
        Wide::autodiff::<X>(self, widened::<X>)
    }

    fn inner<X: Backend>(self) -> Tensor<B, 2> {
        Wide::inner::<X>(self, widened::<X>)
    }

    fn plain(self) -> Tensor<B, 2> {
        plain(self.a, self.w, self.half)
    }
}
