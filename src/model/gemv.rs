//! Matrix products kept off burn 0.21's vector kernels on GPU backends. For a product with one row
//! (`m = 1`) or one column (`n = 1`), burn-cubecl's matmul autotune chooses among its gemv
//! kernels, and on lavapipe those gave (`tests/backends.rs`, measured 2026-12-05 against the CPU):
//! - wrong values for one column and an odd inner size, in f32 as in f16 (`[4, 5] · [5, 1]`,
//!   relative error ~1.5): burn's tracker has it as a vector–matrix kernel run on a matrix–vector
//!   problem, seen on CUDA and on Vulkan (tracel-ai/burn #5122);
//! - wrong values for batched one-row f16 products (`[2, 1, 64] · [2, 64, 96]`: ~1.0), and for a
//!   one-row f16 product whose input is itself fused, as the grouped-experts node found.
//!
//! Padding the single row or column to two with zeros makes it a general problem, which the
//! tiled kernels compute right; the backward, which autodiff derives from the padded product,
//! is padded with it. It costs a copy of the one-row operand and a product twice as tall, on
//! shapes small by construction (an expert that got one token; decoding one token). One-row f32
//! products keep their gemv kernel: right in every case measured, and the fast path for f32
//! decoding. The output head's half-precision product (`model::wide`) writes f32 and is not
//! routed here: its one-row case matched the CPU on lavapipe (`tests/backends.rs`, the wide
//! matmul test's one-row shapes, 2026-12-05). The CPU backend has its own kernels and is left
//! alone (its one-row f16 products, which the gemm crate summed in f16, go through f32 in the
//! vendored burn-flex: its PATCHES.md, patch 5).

use burn::tensor::{DType, Tensor, backend::Backend};

/// `a · b` (`[.., m, k] · [.., k, n]`), through burn's general kernels on a GPU backend when `m`
/// (in f16/bf16) or `n` is 1.
pub fn matmul<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    if crate::backend::is_cpu::<B>() {
        return a.matmul(b);
    }
    let (m, n) = (a.dims()[D - 2], b.dims()[D - 1]);
    let pad_rows = m == 1 && matches!(a.dtype(), DType::F16 | DType::BF16);
    let pad_cols = n == 1;
    let a = if pad_rows { pad(a, D - 2) } else { a }; // [.., 2, k] or as given
    let b = if pad_cols { pad(b, D - 1) } else { b }; // [.., k, 2] or as given
    let out = a.matmul(b);
    let out = if pad_rows { out.narrow(D - 2, 0, 1) } else { out }; // [.., 1, n']
    if pad_cols { out.narrow(D - 1, 0, 1) } else { out } // [.., m, 1]
}

/// `x` with a zero slice appended along `dim`, where `x` has size 1.
fn pad<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let zero = x.zeros_like();
    Tensor::cat(vec![x, zero], dim)
}
