//! The precision rule for numerically sensitive steps (norms, softmax, router, loss): compute in
//! at least f32. Half types are upcast and cast back; f32 and f64 are left alone, so an f64 model
//! (used by the finite-difference gradient test) stays f64 throughout.

use burn::tensor::{DType, Tensor, backend::Backend};

/// `x` in at least f32, and the dtype to return to afterwards.
pub fn upcast<B: Backend, const D: usize>(x: Tensor<B, D>) -> (Tensor<B, D>, DType) {
    let dtype = x.dtype();
    match dtype {
        DType::F16 | DType::BF16 => (x.cast(DType::F32), dtype),
        _ => (x, dtype),
    }
}

/// Back to `dtype` after `upcast`.
pub fn restore<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if x.dtype() == dtype { x } else { x.cast(dtype) }
}
