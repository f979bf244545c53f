//! The MoE's combine inside the grouped-experts node (`model::experts`): the experts' output rows,
//! grouped by expert, brought to their tokens, weighted by their gates and summed; its backward;
//! and the same per-token sum for the input gradient's terms. On the GPU backends each is one
//! launch that reads the experts' tensors where they lie (`GpuOps::slot_sum`,
//! `GpuOps::combine_bwd`); elsewhere, and under `fused::plain_scope`, burn's composition: stack,
//! gather to slot order, weigh, sum.
//!
//! Why: the composition stacks the experts' outputs with `cat` (burn-cubecl writes each part
//! into a fresh tensor: one launch per expert), gathers the stack to slot order, weighs and sums
//! it, and its backward takes as many passes again, plus one add per expert for the two terms
//! of each expert's input gradient. Counted on lavapipe at `gpu-350m`'s structure, these
//! kernels take a step from 2 488 launches to 2 132 (forward −9, backward −20 per layer;
//! docs/benchmarks.md, "Launches per training step"). By a count of each op's reads and writes
//! (burn's fusion may merge a few), they also save up to ~16 passes per layer over an `[n·k, d]`
//! tensor: 134 MB at `gpu-350m` in f32 (32 768 slots × 1 024), ~26 GB a step over 12 layers,
//! ~6 ms at an H200's 4.3 TB/s: a ceiling by arithmetic, not measured (no GPU yet). Here the
//! forward reads each grouped row once and writes `[n, d]`; the backward reads the output's
//! gradient and the rows once and writes the rows' and the gates' gradients; the input
//! gradient's sum reads each term once.
//!
//! Numerics: the same products, summed in the same order for top-2, as the composition; only
//! the gates' gradient (a sum over `d`) is a tree here and burn's reduction there.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor};

use super::fused::{plain_active, unwrap, unwrap_int, wrap};
use super::precision;
use crate::backend::{GpuKernel, GpuOps, run_gpu_kernel_or};

/// Each token's `k` slots: row `to_slots[s]` of the grouped `ys` (each used expert's `[m, d]`
/// output in turn) times `gates[s]` for slot `s = token·k + j`, summed: `[n, d]` in `gates`'
/// dtype. `to_slots: [n·k]`, `gates: [n, k]`.
pub fn weighted<X: Backend>(
    ys: &[Tensor<X, 2>],
    to_slots: &Tensor<X, 1, Int>,
    gates: Tensor<X, 2>,
) -> Tensor<X, 2> {
    let k = Weighted {
        ys: ys.to_vec(),
        to_slots: to_slots.clone(),
        gates,
    };
    run_gpu_kernel_or::<X, _>(k, !plain_active(), Weighted::plain)
}

/// `weighted`'s gradients for its output's gradient `dout: [n, d]`: the grouped rows' `[n·k,
/// d]` in `dtype` (the experts' products') and the gates' `[n, k]`. `order: [n·k]` lists the
/// slot at each grouped row (the inverse of `to_slots`).
pub fn weighted_grads<X: Backend>(
    ys: &[Tensor<X, 2>],
    [order, to_slots]: [&Tensor<X, 1, Int>; 2],
    gates: Tensor<X, 2>,
    dout: Tensor<X, 2>,
    dtype: DType,
) -> (Tensor<X, 2>, Tensor<X, 2>) {
    let k = WeightedGrads {
        ys: ys.to_vec(),
        order: order.clone(),
        to_slots: to_slots.clone(),
        gates,
        dout,
        dtype,
    };
    run_gpu_kernel_or::<X, _>(k, !plain_active(), WeightedGrads::plain)
}

/// Each token's `k` slots' rows of the grouped sum of the used experts' terms (`[m, d]` each,
/// the same count for every expert, the experts in turn), summed: `[n, d]` in `dtype`, each term
/// cast to it first. The node's input gradient from each expert's products' terms: two where the
/// expert's up projections were two products, one where they were one (`experts::Up`).
pub fn term_sum<X: Backend>(
    terms: Vec<Vec<Tensor<X, 2>>>,
    to_slots: &Tensor<X, 1, Int>,
    k: usize,
    dtype: DType,
) -> Tensor<X, 2> {
    let kernel = TermSum {
        terms,
        to_slots: to_slots.clone(),
        k,
        dtype,
    };
    run_gpu_kernel_or::<X, _>(kernel, !plain_active(), TermSum::plain)
}

/// The grouped rows in slot order, `[n·k, d]` in `dtype`: the composition's stack and gather.
fn slot_rows<X: Backend>(ys: Vec<Tensor<X, 2>>, to_slots: Tensor<X, 1, Int>, dtype: DType) -> Tensor<X, 2> {
    precision::restore(Tensor::cat(ys, 0), dtype).select(0, to_slots)
}

/// Each token's `k` rows of `y: [n·k, d]` (slot order) weighted by its `gates: [n, k]` and
/// summed: `[n, d]`. Also the per-expert path's weighting on the GPU backends
/// (`moe::Routes::gather_back`).
pub(super) fn weigh<X: Backend>(y: Tensor<X, 2>, gates: Tensor<X, 2>) -> Tensor<X, 2> {
    let [n, k] = gates.dims();
    let d = y.dims()[1];
    token_sum(y.reshape([n, k, d]) * gates.reshape([n, k, 1]))
}

/// Each token's `k` consecutive rows of `y: [n·k, d]` summed: `[n, d]`.
fn token_sum<X: Backend>(y: Tensor<X, 3>) -> Tensor<X, 2> {
    let [n, _, d] = y.dims();
    y.sum_dim(1).reshape([n, d])
}

/// `t`'s device as `X`'s, `run_gpu_kernel` having checked that `B` is `X`.
fn device<X: GpuOps, B: Backend, const D: usize>(t: &Tensor<B, D>) -> X::Device {
    X::float_device(&unwrap::<X, _, D>(t.clone()))
}

struct Weighted<B: Backend> {
    ys: Vec<Tensor<B, 2>>,
    to_slots: Tensor<B, 1, Int>,
    gates: Tensor<B, 2>,
}

impl<B: Backend> Weighted<B> {
    fn plain(self) -> Tensor<B, 2> {
        weigh(slot_rows(self.ys, self.to_slots, self.gates.dtype()), self.gates)
    }
}

impl<B: Backend> GpuKernel for Weighted<B> {
    type Output = Tensor<B, 2>;

    /// Only the node's inner tensors come here.
    fn gpu_autodiff<X: GpuOps>(self) -> Tensor<B, 2> {
        self.plain()
    }

    fn gpu_inner<X: GpuOps>(self) -> Tensor<B, 2> {
        // The parts, the slots, the gates and the output.
        if self.ys.len() + 3 > X::tensor_args(&device::<X, _, 2>(&self.gates)) {
            return self.plain();
        }
        let [n, k] = self.gates.dims();
        let dtype = self.gates.dtype();
        let gates = unwrap::<X, _, 1>(self.gates.reshape([n * k]));
        let parts = self.ys.into_iter().map(unwrap::<X, _, 2>).collect();
        let slots = unwrap_int::<X, _, 1>(self.to_slots);
        wrap::<B, X, 2>(X::slot_sum(parts, 1, slots, Some(gates), k, dtype))
    }
}

struct WeightedGrads<B: Backend> {
    ys: Vec<Tensor<B, 2>>,
    order: Tensor<B, 1, Int>,
    to_slots: Tensor<B, 1, Int>,
    gates: Tensor<B, 2>,
    dout: Tensor<B, 2>,
    dtype: DType,
}

impl<B: Backend> WeightedGrads<B> {
    /// As burn's autodiff takes them through `Weighted::plain`: `dout` times each gate, and
    /// `dout` times each slot's row summed over `d`.
    fn plain(self) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let [n, k] = self.gates.dims();
        let d = self.dout.dims()[1];
        let y = slot_rows(self.ys, self.to_slots, self.dout.dtype()).reshape([n, k, d]);
        let dout = self.dout.reshape([n, 1, d]);
        let dgates = (dout.clone() * y).sum_dim(2).reshape([n, k]);
        let dy = (dout * self.gates.reshape([n, k, 1])).reshape([n * k, d]); // slot order
        (precision::restore(dy.select(0, self.order), self.dtype), dgates)
    }
}

impl<B: Backend> GpuKernel for WeightedGrads<B> {
    type Output = (Tensor<B, 2>, Tensor<B, 2>);

    fn gpu_autodiff<X: GpuOps>(self) -> Self::Output {
        self.plain()
    }

    fn gpu_inner<X: GpuOps>(self) -> Self::Output {
        // The parts, the order, the output's and gates' tensors, and the two gradients.
        let device = device::<X, _, 2>(&self.gates);
        let cast = self.ys.first().is_some_and(|y| y.dtype() != self.dtype);
        if cast || self.ys.len() + 5 > X::tensor_args(&device) {
            return self.plain();
        }
        let [n, k] = self.gates.dims();
        let gates = unwrap::<X, _, 1>(self.gates.reshape([n * k]));
        let parts = self.ys.into_iter().map(unwrap::<X, _, 2>).collect();
        let order = unwrap_int::<X, _, 1>(self.order);
        let dout = unwrap::<X, _, 2>(self.dout);
        let [dy, dgates] = X::combine_bwd(parts, order, dout, gates, k);
        (wrap::<B, X, 2>(dy), wrap::<B, X, 1>(dgates).reshape([n, k]))
    }
}

struct TermSum<B: Backend> {
    terms: Vec<Vec<Tensor<B, 2>>>,
    to_slots: Tensor<B, 1, Int>,
    k: usize,
    dtype: DType,
}

impl<B: Backend> TermSum<B> {
    /// Each expert's terms cast and added in turn, in `dtype`.
    fn sums(terms: Vec<Vec<Tensor<B, 2>>>, dtype: DType) -> Vec<Tensor<B, 2>> {
        let cast = |t| precision::restore(t, dtype);
        let add = |ts: Vec<Tensor<B, 2>>| ts.into_iter().map(cast).reduce(|a, b| a + b);
        terms
            .into_iter()
            .map(|ts| add(ts).expect("a term per expert"))
            .collect()
    }

    fn plain(self) -> Tensor<B, 2> {
        let k = self.k;
        let dx = slot_rows(Self::sums(self.terms, self.dtype), self.to_slots, self.dtype); // [n·k, d]
        let [nk, d] = dx.dims();
        token_sum(dx.reshape([nk / k, k, d]))
    }
}

impl<B: Backend> GpuKernel for TermSum<B> {
    type Output = Tensor<B, 2>;

    fn gpu_autodiff<X: GpuOps>(self) -> Tensor<B, 2> {
        self.plain()
    }

    fn gpu_inner<X: GpuOps>(self) -> Tensor<B, 2> {
        let dtype = self.dtype;
        let args = X::tensor_args(&device::<X, _, 2>(&self.terms[0][0]));
        // Every term of every expert, the slots, an unused gates tensor and the output; where
        // the device takes fewer tensors a launch, each expert's terms added first (one more
        // pass). The kernel's ranges need as many terms for each expert.
        let per = self.terms[0].len();
        let even = self.terms.iter().all(|ts| ts.len() == per);
        let (parts, per): (Vec<Tensor<B, 2>>, usize) = match self.terms.len() {
            e if even && per * e + 3 <= args => (self.terms.into_iter().flatten().collect(), per),
            e if e + 3 <= args => (Self::sums(self.terms, dtype), 1),
            _ => return self.plain(),
        };
        let parts = parts.into_iter().map(unwrap::<X, _, 2>).collect();
        let slots = unwrap_int::<X, _, 1>(self.to_slots);
        wrap::<B, X, 2>(X::slot_sum(parts, per, slots, None, self.k, dtype))
    }
}
