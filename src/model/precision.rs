//! Precision rules. Numerically sensitive steps (norms, softmax, router, loss) compute in at least
//! f32: half types are upcast and cast back, f32 and f64 are left alone (so the f64 model of the
//! finite-difference gradient test stays f64). Under bf16 mixed precision (`precision: bf16`)
//! the matrix products take bf16 inputs and return f32, torch.autocast's recipe: weights,
//! gradients, optimizer state and everything between the matmuls stay f32. One exception to
//! autocast: the output head's product (the logits feeding the f32 loss) rounds its operands to
//! bf16 but not its result (`matmul_head`, `model::wide`). Where the product's consumers would
//! round it to bf16 again, or widen it exactly as they read it, it stays bf16 (`matmul_half`:
//! attention's q, k, v, logits, probabilities and output; the same values, fewer passes).
//! `precision: f16` is the same recipe with f16 in place of bf16, for devices without bf16; its
//! loss scaling is the training loop's (`train::loss_scale`), not the model's.

use std::cell::Cell;

use burn::tensor::{DType, FloatDType, Tensor, backend::Backend};

use super::gemv;
use crate::config::{BackendKind, Precision};
use crate::error::{Error, Result};

/// `x` in at least f32, and the dtype to return to afterwards.
pub fn upcast<B: Backend, const D: usize>(x: Tensor<B, D>) -> (Tensor<B, D>, DType) {
    let dtype = x.dtype();
    match dtype {
        DType::F16 | DType::BF16 => (x.cast(DType::F32), dtype),
        _ => (x, dtype),
    }
}

/// Back to `dtype` after `upcast`; or `x` in `dtype` wherever a dtype is fixed (a no-op when it
/// already is).
pub fn restore<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if x.dtype() == dtype { x } else { x.cast(dtype) }
}

thread_local! {
    /// The matmul precision of the forward pass running on this thread. A thread-local rather
    /// than an argument threaded through every module: `Grok::forward` sets it from the model's
    /// own setting for the span of the call, as torch.autocast does, and backward needs nothing
    /// (the casts are recorded in the graph).
    static MATMUL: Cell<Precision> = const { Cell::new(Precision::F32) };
    /// The output head in f32 under bf16 too (`f32_head_scope`).
    static F32_HEAD: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` with the output head computed in f32 under bf16 as well (the rule before
/// `model::wide`, tf32 on a GPU's tensor cores), or not, on this thread: `colossus bench
/// --f32-head` measures what the bf16 head product buys.
pub fn f32_head_scope<R>(f32_head: bool, f: impl FnOnce() -> R) -> R {
    super::scoped(&F32_HEAD, f32_head, f)
}

/// Whether this thread runs the output head in f32 (`f32_head_scope`), for work it hands to
/// other threads.
pub fn f32_head_active() -> bool {
    F32_HEAD.with(|h| h.get())
}

/// Run `f` with the forward's matrix products in precision `p`.
pub fn autocast<R>(p: Precision, f: impl FnOnce() -> R) -> R {
    super::scoped(&MATMUL, p, f)
}

/// The forward's matrix-product precision on this thread (`autocast`).
pub fn current() -> Precision {
    MATMUL.with(|m| m.get())
}

/// The half type of mixed precision `p`'s matrix products; `None` for f32.
pub fn half(p: Precision) -> Option<FloatDType> {
    match p {
        Precision::F32 => None,
        Precision::Bf16 => Some(FloatDType::BF16),
        Precision::F16 => Some(FloatDType::F16),
    }
}

/// `a · b` in the current autocast precision. Under bf16 both inputs are rounded to bf16, the
/// product accumulates in f32 (tensor cores, and the CPU backend's emulation), is written in bf16
/// as a bf16 GEMM writes it, and is widened back to f32, so the caller's tensors never change
/// dtype. Costs two casts of the inputs and one of the output per call, which burn's fusion
/// folds into neighbouring kernels on GPU backends. f16 likewise. An input already in the half
/// type is taken as it is (`matmul_half`'s products). One-row and one-column products go
/// through `gemv::matmul`, off burn's faulty vector kernels.
pub fn matmul<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    match half(current()) {
        Some(h) if autocast_takes(&a, h) => product_in(h, a, b).cast(DType::F32),
        _ => gemv::matmul(a, b),
    }
}

/// `matmul` without the widening: under bf16 (f16) the product is returned in bf16 (f16) as the
/// GEMM writes it. For products whose consumers round to the half type anyway (attention's
/// q, k and v, RoPE rotating q and k in f32 and rounding once) or widen it as they read it
/// (attention's output, which the post-attention norm's kernel reads), which saves the f32
/// copy's write and read and the casts on each side, forward and backward; the values are the
/// same.
pub fn matmul_half<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    match half(current()) {
        Some(h) if autocast_takes(&a, h) => product_in(h, a, b),
        _ => gemv::matmul(a, b),
    }
}

/// Whether autocast to `h` applies to an operand: f32, or already `h`.
fn autocast_takes<B: Backend, const D: usize>(a: &Tensor<B, D>, h: FloatDType) -> bool {
    a.dtype() == DType::F32 || a.dtype() == DType::from(h)
}

/// `a · b` with both rounded to `h` (no-ops for an operand already in it), written in `h`.
fn product_in<B: Backend, const D: usize>(h: FloatDType, a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    let h = DType::from(h);
    gemv::matmul(restore(a, h), restore(b, h))
}

/// `a · wᵀ` for the tied output head (`a: [m, k]` hidden states, `w: [n, k]` the embedding
/// matrix), whose f32 logits feed the loss: under bf16 the operands are rounded to bf16 and the
/// product accumulates and stays in f32 (`model::wide`), so the logits keep f32 precision while
/// the tensor cores take bf16 (f16 under f16); otherwise a plain product.
pub fn matmul_head<B: Backend>(a: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
    match half(current()) {
        Some(h) if a.dtype() == DType::F32 && !f32_head_active() => super::wide::matmul_t_as(a, w, h),
        _ => a.matmul(w.transpose()),
    }
}

/// Refuse `p` on a device that cannot compute in it (e.g. a wgpu adapter without bf16), naming
/// the key to change and what the device does support, before any work starts.
pub fn check<B: Backend>(p: Precision, backend: BackendKind, device: &B::Device) -> Result<()> {
    let Some(h) = half(p) else { return Ok(()) };
    if B::supports_dtype(device, h.into()) {
        return Ok(());
    }
    let other = match p {
        Precision::Bf16 => Precision::F16,
        _ => Precision::Bf16,
    };
    let instead = match half(other) {
        Some(o) if B::supports_dtype(device, o.into()) => format!("`precision: {}` or `f32`", other.name()),
        _ => "`precision: f32`".to_string(),
    };
    Err(Error::Train(format!(
        "key `precision`: {} is not supported by this {} device ({device:?}); set {instead}",
        p.name(),
        backend.name()
    )))
}
