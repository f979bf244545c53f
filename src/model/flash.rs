//! Flash attention on the GPU backends (`attention: flash`): the forward is one kernel that never
//! stores the `[rows, keys]` probabilities (`GpuOps::flash_attention`, cubek's flash kernel with
//! Grok's soft cap, `vendor/cubek-attention`), and the backward recomputes them from q and k.
//!
//! What it costs and buys, per layer of a training step: the composed path
//! (`model::fused::attention`) keeps the probabilities from the forward to the backward (and on
//! GPUs each row's log-sum-exp, from which the backward recomputes the tanh values), 4 bytes
//! per element of `[batch, heads, t, t]` in f32 (≈1.1 GB per layer at `gpu-350m`'s 16 × 1024
//! tokens and 16 heads), and writes and reads them again around the matmuls. Here the forward
//! writes only the output, and the backward rebuilds them.
//!
//! The backward (`BackwardKind`): where the device has tensor cores for the inputs' dtype (bf16
//! on CUDA), the fused kernels of `backend/flash_bwd.rs` rebuild the probabilities tile by tile
//! in shared memory and write only dq, dk and dv. Elsewhere the composed backward spends one more
//! `q·kᵀ` product and one more softmax pass to rebuild them at full `[rows, keys]` size, layer by
//! layer, so at most one layer's worth is alive at a time, and runs the matmuls around the
//! softmax kernel pair.

use std::cell::Cell;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorMetadata, TensorPrimitive};
use colossus_kernels::CappedSoftmax;

use super::fused::{AttnScores, record, unwrap, wrap};
use super::precision;
use crate::backend::{FlashBwdPlan, FlashOp, GpuKernel, GpuOps, run_gpu_kernel};
use crate::config::AttentionKernel;

thread_local! {
    static KERNEL: Cell<AttentionKernel> = const { Cell::new(AttentionKernel::Composed) };
}

/// Run `f` with the attention core computed as `kind` says (`Grok::forward` sets it from the
/// model's own setting, as it does the matmul precision).
pub fn scope<R>(kind: AttentionKernel, f: impl FnOnce() -> R) -> R {
    super::scoped(&KERNEL, kind, f)
}

/// `model::fused::attention` on the flash kernel when it applies: `attention: flash`, a GPU
/// backend, the fused paths on, and a causal block without cached positions (training, or a
/// prompt's first pass); otherwise q, k and v come back untouched.
#[allow(clippy::type_complexity)]
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    s: AttnScores,
) -> Result<Tensor<B, 4>, (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>)> {
    let wanted = KERNEL.with(|c| c.get()) == AttentionKernel::Flash;
    let dtype = q.dtype();
    let takes = dtype == DType::F32 || Some(dtype) == kernel_dtype();
    if !wanted || s.past > 0 || s.t < 2 || !takes || !super::fused::gpu_allowed(dtype) {
        return Err((q, k, v));
    }
    let rep = q.dims()[2] / s.t;
    let op = FlashOp {
        rep,
        multiplier: s.multiplier as f32,
        cap: s.cap as f32,
    };
    let softmax = s.softmax_op(s.t);
    let core = FlashCore {
        q,
        k,
        v,
        op,
        softmax,
        half: kernel_dtype(),
    };
    run_gpu_kernel::<B, _>(core).map_err(|core| (core.q, core.k, core.v))
}

struct FlashCore<B: Backend> {
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    op: FlashOp,
    softmax: CappedSoftmax,
    /// Under bf16 or f16 the kernel reads q, k and v in that type, as the composed path's
    /// matmuls do (`kernel_dtype`), and its output is returned in q's dtype as it came
    /// (`precision::restore`: widened back to f32 where q was f32, as it is where q came in the
    /// half type already, mixed precision's projections in `Attention::forward`). Any casts are
    /// autodiff ops of their own, made only once the backend is known to be a GPU one
    /// (elsewhere q, k and v go back untouched).
    half: Option<DType>,
}

thread_local! {
    static KERNEL_DTYPE: Cell<Option<DType>> = const { Cell::new(None) };
}

/// Run `f` with the flash kernels reading q, k and v in `dtype` whatever the precision. For
/// f16: a device with f16 cooperative matrices but no bf16 ones (Mesa's lavapipe on Vulkan,
/// `tests/backends.rs`) runs the tensor-core variants of both kernels this way, which is
/// how they are checked without a GPU.
pub fn kernel_dtype_scope<R>(dtype: DType, f: impl FnOnce() -> R) -> R {
    super::scoped(&KERNEL_DTYPE, Some(dtype), f)
}

/// The dtype the kernels read q, k and v in, when not f32: the precision's half type (bf16 or
/// f16), or the scope's.
fn kernel_dtype() -> Option<DType> {
    let precision = precision::half(precision::current()).map(DType::from);
    KERNEL_DTYPE.with(|c| c.get()).or(precision)
}

/// q, k and v as the kernel reads them (as they come when already in `half`).
fn kernel_inputs<B: Backend>(half: Option<DType>, qkv: [Tensor<B, 4>; 3]) -> [Tensor<B, 4>; 3] {
    qkv.map(|x| match half {
        Some(dtype) => precision::restore(x, dtype),
        None => x,
    })
}

impl<B: Backend> GpuKernel for FlashCore<B> {
    type Output = Tensor<B, 4>;

    fn gpu_autodiff<X: GpuOps>(self) -> Tensor<B, 4> {
        let FlashCore {
            q,
            k,
            v,
            op,
            softmax,
            half,
        } = self;
        let dtype = q.dtype();
        let qkv = kernel_inputs(half, [q, k, v]).map(unwrap::<Autodiff<X>, _, 4>);
        let plan = backward_plan::<X>(&qkv[0].primitive);
        let backward = FlashBackward { softmax, op, plan };
        let out = wrap::<B, Autodiff<X>, 4>(record(backward, qkv, |[q, k, v]| {
            let out = X::flash_attention(q.clone(), k.clone(), v.clone(), op);
            // The fused backward reads the output (each row's Σ dO·o); a handle, not a copy.
            let kept = plan.map(|_| out.clone());
            (([q, k, v], kept), out)
        }));
        precision::restore(out, dtype)
    }

    fn gpu_inner<X: GpuOps>(self) -> Tensor<B, 4> {
        let FlashCore {
            q, k, v, op, half, ..
        } = self;
        let dtype = q.dtype();
        let [q, k, v] = kernel_inputs(half, [q, k, v]).map(unwrap::<X, _, 4>);
        precision::restore(wrap::<B, X, 4>(X::flash_attention(q, k, v, op)), dtype)
    }
}

/// Which backward `attention: flash` runs on the GPU backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackwardKind {
    /// The fused kernel (`GpuOps::flash_attention_bwd`) where its products run on tensor cores,
    /// the composed one elsewhere: without them the fused kernel's one unit per output element
    /// is no faster than the composed path's matmuls.
    Auto,
    /// The fused kernel wherever its tiles fit, tensor cores or not (the lavapipe tests).
    Fused,
    /// The composed backward (`colossus bench --composed-flash-backward`, to measure what the
    /// fused one buys).
    Composed,
}

thread_local! {
    static BACKWARD: Cell<BackwardKind> = const { Cell::new(BackwardKind::Auto) };
}

/// Run `f` with the flash backward chosen as `kind` says (read when the forward runs).
pub fn backward_scope<R>(kind: BackwardKind, f: impl FnOnce() -> R) -> R {
    super::scoped(&BACKWARD, kind, f)
}

thread_local! {
    /// Per thread, so that tests running side by side each see their own choice.
    static BACKWARD_ROUTINE: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Which backward the last flash forward on this thread chose: `"fused/tensor-cores"`,
/// `"fused/units"` or `"composed"`; `None` before the first one that records a backward.
pub fn backward_routine() -> Option<&'static str> {
    BACKWARD_ROUTINE.with(|c| c.get())
}

/// The fused backward's plan for q (`None`: the composed backward), as `BackwardKind` says.
fn backward_plan<X: GpuOps>(q: &FloatTensor<X>) -> Option<FlashBwdPlan> {
    let hd = q.shape()[3];
    let plan = match BACKWARD.with(|c| c.get()) {
        BackwardKind::Composed => None,
        BackwardKind::Fused => X::flash_bwd_plan(&X::float_device(q), q.dtype(), hd),
        BackwardKind::Auto => {
            X::flash_bwd_plan(&X::float_device(q), q.dtype(), hd).filter(FlashBwdPlan::tensor_cores)
        }
    };
    let name = match plan {
        Some(p) if p.tensor_cores() => "fused/tensor-cores",
        Some(_) => "fused/units",
        None => "composed",
    };
    BACKWARD_ROUTINE.with(|c| c.set(Some(name)));
    plan
}

/// The backward from q, k and v (and, fused, the output): the probabilities are rebuilt here.
#[derive(Debug)]
struct FlashBackward {
    softmax: CappedSoftmax,
    op: FlashOp,
    /// `Some`: the fused kernel; `None`: the composed chain.
    plan: Option<FlashBwdPlan>,
}

impl<X: GpuOps> Backward<X, 3> for FlashBackward {
    /// q, k, v, and the output when the backward is the fused one.
    type State = ([FloatTensor<X>; 3], Option<FloatTensor<X>>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<X>(&ops.node); // [b, n_kv, rep·t, hd]
        let ([q, k, v], out) = ops.state;
        let grads_of = match (self.plan, out) {
            (Some(plan), Some(o)) => {
                let dtype = q.dtype();
                let g = if g.dtype() == dtype {
                    g
                } else {
                    X::float_cast(g, dtype.into())
                };
                X::flash_attention_bwd([q, k, v, o, g], self.op, plan)
            }
            _ => composed_backward::<X>([q, k, v], g, self.softmax),
        };
        for (parent, d) in ops.parents.into_iter().zip(grads_of) {
            if let Some(node) = parent {
                grads.register::<X>(node.id, d);
            }
        }
    }
}

/// dq, dk and dv by matmuls around the softmax kernel pair, the `[rows, keys]` probabilities
/// recomputed from q and k.
fn composed_backward<X: GpuOps>(
    qkv: [FloatTensor<X>; 3],
    g: FloatTensor<X>,
    softmax: CappedSoftmax,
) -> [FloatTensor<X>; 3] {
    let tensor = |p: FloatTensor<X>| Tensor::<X, 4>::from_primitive(TensorPrimitive::Float(p));
    let [q, k, v] = qkv.map(tensor);
    let g = tensor(g);
    let dtype = q.dtype();
    // The softmax pair computes in f32, as on the composed path, reading the products in q's
    // dtype and writing the probabilities and the logits' gradient in it for the products.
    let logits = q.clone().matmul(k.clone().swap_dims(2, 3)); // [b, n_kv, rep·t, t]
    let (probs, lse, p) = X::capped_softmax_fwd(logits.into_primitive().tensor(), softmax, true);
    let p = p.expect("kept for the backward");
    let dp = g.clone().matmul(v.swap_dims(2, 3));
    let dl = X::capped_softmax_bwd(p, lse, dp.into_primitive().tensor(), softmax, dtype);
    let (dl, p) = (tensor(dl), tensor(probs));
    [
        dl.clone().matmul(k),
        dl.swap_dims(2, 3).matmul(q),
        p.swap_dims(2, 3).matmul(g),
    ]
    .map(|d| d.into_primitive().tensor())
}
