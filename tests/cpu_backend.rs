//! The CPU backend's patched paths (vendor/burn-flex/PATCHES.md, issue 8): strided copies of
//! head-transposed tensors, matmul outputs that gemm writes without zeroing first, and typed
//! buffer allocations, each against values computed here by index arithmetic; and one-row f16
//! products summed in f32 (patch 5, issue 7).

mod common;

use burn::tensor::{FloatDType, Tensor, TensorData};
use colossus::backend::Cpu;
use common::floats;

fn iota<const D: usize>(shape: [usize; D]) -> Tensor<Cpu, D> {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| i as f32).collect();
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

/// `[a, b, c, d]` with dims 1 and 2 swapped, made contiguous, against the index formula.
fn check_swap(shape: [usize; 4]) {
    let [a, b, c, d] = shape;
    let got = floats(iota(shape).swap_dims(1, 2).reshape([a * c * b * d]));
    let mut want = Vec::with_capacity(got.len());
    for i in 0..a {
        for k in 0..c {
            for j in 0..b {
                for l in 0..d {
                    want.push((((i * b + j) * c + k) * d + l) as f32);
                }
            }
        }
    }
    assert_eq!(got, want, "swap_dims(1, 2) of {shape:?}");
}

#[test]
fn issue_8_head_transposes_copy_every_row_to_its_place() {
    // Small (one task), with an inner run of exactly 8, and with a run too short for the
    // row-copy path (the element walk).
    check_swap([2, 3, 5, 16]);
    check_swap([1, 2, 3, 8]);
    check_swap([2, 3, 4, 5]);
    // Attention's shape at the tiny-peer size: large enough for the parallel path.
    check_swap([8, 256, 8, 32]);
}

#[test]
fn issue_8_a_permuted_view_with_an_offset_copies_from_the_offset() {
    // A narrowed view starts inside the buffer: rows must be read from the view's start.
    let t = iota([4, 6, 3, 16]).narrow(1, 2, 3); // [4, 3, 3, 16], offset 2·3·16
    let got = floats(t.swap_dims(1, 2).reshape([4 * 3 * 3 * 16]));
    let mut want = Vec::new();
    for i in 0..4 {
        for k in 0..3 {
            for j in 2..5 {
                for l in 0..16 {
                    want.push((((i * 6 + j) * 3 + k) * 16 + l) as f32);
                }
            }
        }
    }
    assert_eq!(got, want);
}

fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
        }
    }
    out
}

fn small_values(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 + salt * 11) % 23) as f32 / 11.0 - 1.0)
        .collect()
}

fn check_matmul(batch: usize, m: usize, k: usize, n: usize) {
    let device = Default::default();
    let (a, b) = (small_values(batch * m * k, 1), small_values(batch * k * n, 2));
    let ta = Tensor::<Cpu, 3>::from_data(TensorData::new(a.clone(), [batch, m, k]), &device);
    let tb = Tensor::<Cpu, 3>::from_data(TensorData::new(b.clone(), [batch, k, n]), &device);
    let got = floats(ta.matmul(tb));
    assert_eq!(got.len(), batch * m * n);
    for s in 0..batch {
        let want = naive(
            &a[s * m * k..(s + 1) * m * k],
            &b[s * k * n..(s + 1) * k * n],
            m,
            k,
            n,
        );
        for (i, w) in want.iter().enumerate() {
            let g = got[s * m * n + i] as f64;
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "[{batch}, {m}, {k}] × [{k}, {n}]: batch {s} element {i}: {g} vs {w}"
            );
        }
    }
}

#[test]
fn issue_8_matmul_outputs_are_fully_written_without_zeroing() {
    // One matrix (gemm threads internally), a batch of small ones (batch-parallel loop), a
    // batch too small for either (serial loop), and odd sizes that leave partial microkernel
    // tiles at every edge.
    check_matmul(1, 300, 200, 170);
    check_matmul(16, 64, 32, 48);
    check_matmul(2, 3, 5, 7);
    check_matmul(3, 17, 1, 9);
    // Repeated, so freed (uninitialised, non-zero) buffers are handed out again.
    for _ in 0..3 {
        check_matmul(4, 129, 33, 65);
    }
}

#[test]
fn issue_8_matmul_with_an_empty_inner_dimension_is_zero() {
    let device = Default::default();
    let a = Tensor::<Cpu, 2>::from_data(TensorData::new(Vec::<f32>::new(), [3, 0]), &device);
    let b = Tensor::<Cpu, 2>::from_data(TensorData::new(Vec::<f32>::new(), [0, 4]), &device);
    assert_eq!(floats(a.matmul(b)), vec![0.0; 12]);
}

#[test]
fn issue_8_zeros_and_shared_reads_keep_every_dtype_intact() {
    let device = Default::default();
    assert_eq!(floats(Tensor::<Cpu, 2>::zeros([3, 5], &device)), vec![0.0; 15]);
    // Reading a tensor whose buffer is still shared copies it once into a typed buffer.
    let t = iota([4, 5]);
    let kept = t.clone();
    assert_eq!(floats(t), (0..20).map(|i| i as f32).collect::<Vec<_>>());
    let ints = kept.clone().int();
    assert_eq!(
        ints.into_data().convert::<i64>().into_vec::<i64>().expect("i64"),
        (0..20).collect::<Vec<i64>>()
    );
    assert_eq!(
        floats(kept.narrow(0, 1, 2)),
        (5..15).map(|i| i as f32).collect::<Vec<_>>()
    );
}

/// `[batch, 1, k] · [batch, k, n]` of f16 operands on the CPU, and the first row of the same
/// product with a second row stacked under the first.
fn one_row_f16(batch: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>, Vec<f64>) {
    let device = Default::default();
    let half = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| half::f16::from_f32(x).to_f32()).collect() };
    let (a, b) = (
        half(small_values(batch * k, 3)),
        half(small_values(batch * k * n, 4)),
    );
    let ta =
        Tensor::<Cpu, 3>::from_data(TensorData::new(a.clone(), [batch, 1, k]), &device).cast(FloatDType::F16);
    let tb =
        Tensor::<Cpu, 3>::from_data(TensorData::new(b.clone(), [batch, k, n]), &device).cast(FloatDType::F16);
    let one = floats(ta.clone().matmul(tb.clone()));
    let two = Tensor::cat(vec![ta.clone(), ta], 1).matmul(tb).narrow(1, 0, 1);
    let mut exact = Vec::new();
    for s in 0..batch {
        exact.extend(naive(
            &a[s * k..(s + 1) * k],
            &b[s * k * n..(s + 1) * k * n],
            1,
            k,
            n,
        ));
    }
    (one, floats(two), exact)
}

/// Issue 7 (vendor/burn-flex patch 5): the gemm crate's one-row f16 product summed in f16, 1e-3
/// relative L2 from the f32 sum at k = 64 and 3e-3 at k = 256 (measured 2026-12-05), so the CPU,
/// the reference of the wgpu f16 tests, was the one that was off. A one-row f16 product must give
/// the bits of the first row of the two-row product (gemm's f32-summing kernel), and each value
/// must be within one f16 step of the exact sum.
#[test]
fn issue_7_one_row_f16_products_sum_in_f32() {
    for (batch, k, n) in [(1, 64, 96), (1, 256, 64), (3, 64, 40), (2, 7, 5)] {
        let (one, two, exact) = one_row_f16(batch, k, n);
        assert_eq!(one, two, "[{batch}, 1, {k}] · [{k}, {n}]: one row against two");
        for (i, (g, w)) in one.iter().zip(&exact).enumerate() {
            let step = 2f64.powi((w.abs().max(6.1e-5)).log2().floor() as i32 - 10);
            assert!(
                (*g as f64 - w).abs() <= step,
                "[{batch}, 1, {k}] · [{k}, {n}]: element {i}: {g} vs exact {w} (f16 step {step})"
            );
        }
    }
}
