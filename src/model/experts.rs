//! Every routed expert of one MoE layer as a single autodiff node: the tokens' rows grouped by
//! expert, each expert's gated-GELU product on its rows, and the outputs weighted by their gates
//! and summed per token (`model::combine`), with a hand-written backward that brings every
//! expert's input gradient back to its tokens in one pass.
//!
//! Why: with one autodiff node per expert, the gradient each expert's input gather sends to the
//! layer's `[n, d]` tokens is a whole `[n, d]` tensor (zeros where other experts' tokens are),
//! and autodiff adds the experts' tensors one by one. At `gpu-350m` (16 384 tokens, 8 experts,
//! d = 1 024, 12 layers) that is ~25 GB a step, ~5.7 ms at an H200's 4.3 TB/s, 19% of the 30.5 ms
//! step of the 50% MFU goal (docs/benchmarks.md, "One node for all experts"; arithmetic, not
//! measured: no GPU yet). Here the backward moves each row once: the output's gradient is
//! brought to the grouped rows with the gates' (`combine::weighted_grads`), and each token's k
//! rows of the experts' input-gradient terms are summed where they lie (`combine::term_sum`).
//!
//! The node's parents are the tokens, the gates and each used expert's three weights as they are
//! (no stacked copy), so an expert without tokens gets no gradient, as before; burn's nodes take
//! a fixed number of parents, so there is one node type per count of used experts, up to
//! `MAX_EXPERTS`. The GELU gate's derivative is written out (`fused::gelu_gate_grads`: one
//! kernel on a GPU, the CPU kernel on the CPU) instead of burn's autodiff of its seven ops, and
//! the node keeps the two pre-activation products in the matmul dtype (bf16 under bf16) rather
//! than f32 copies, recomputing the gate in the backward; on a GPU the gate's kernels read and
//! write that dtype and compute in f32, so no casts surround them; for the gates' gradient it
//! keeps each expert's output, also in the matmul dtype, where burn's autodiff of the weighting
//! kept an `[n·k, d]` copy in the output's dtype.
//!
//! On the GPU backends an expert's two up projections are one product, its rows by `w1` and `w3`
//! side by side (`Up::Packed`; one kernel puts them so each step and casts them, with `w2`, to
//! the products' dtype, `GpuOps::pack_up`), which the gate's kernels read and whose gradient
//! they write as it lies; the backward takes the input's gradient from one product, `[da | db]`
//! by the weights' transpose. Per expert that is 4 launches forward and 6 backward where there
//! were 5 and 7 under mixed precision (4 and 7 in f32), GEMMs twice as wide, and one `[m, d]`
//! input-gradient term instead of two to write and sum (docs/benchmarks.md, "Launches per
//! training step").
//!
//! Numerics: the same products on the same rows in the same dtypes as the per-expert path
//! (`Expert::forward` through `precision::matmul`), so on the CPU the output and the expert
//! weights' gradients are the same bits; the input gradient adds the same terms, in another
//! order only where the router's gradient joins them (`tests/model.rs`). On a GPU under mixed
//! precision the weights' gradients come out of their GEMM in f32 (`weight_grad`), where the
//! per-expert graph rounds them to half before widening, and the input gradient's two terms are
//! summed in the packed product's f32 accumulator and rounded once, where the per-expert graph
//! rounds each.
//!
//! Where: the GPU backends (`run_gpu_kernel`). The CPU backend keeps one node per expert and its
//! scatter-add combine unless `grouped_scope` asks for this node: there the tokens' gradients
//! are small (`small`: 1 024 × 256 per row shard) and the node's reordering costs more than it
//! saves (`small`'s step 3–8% slower, 0.48 against 0.52 GiB peak, side by side on 2026-12-05).

use std::cell::Cell;
use std::ops::Range;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Int, Tensor, TensorPrimitive};

use super::fused::{gelu_gate, gelu_gate_grads, plain_active, record, unwrap, wrap};
use super::moe::Expert;
use super::{combine, gemv, precision};
use crate::backend::{GpuKernel, GpuOps, HostKernel, run_gpu_kernel, run_gpu_kernel_or, run_kernel};

thread_local! {
    static GROUPED: Cell<Option<bool>> = const { Cell::new(None) };
    static PACKED: Cell<usize> = const { Cell::new(0) };
}

/// How many experts this thread has run with their up projections packed (`Up::Packed`): a
/// test's proof that a GPU backend took that path.
pub fn packed() -> usize {
    PACKED.with(Cell::get)
}

/// Run `f` with the grouped node on every backend (`true`: how the CPU tests check it) or on
/// none (`false`: the per-expert graph, how the GPU tests get their reference), on this thread.
pub fn grouped_scope<R>(on: bool, f: impl FnOnce() -> R) -> R {
    super::scoped(&GROUPED, Some(on), f)
}

/// Where the routed rows go, from `moe::Routes`: slot `token·k + j` holds the token's `j`-th
/// expert; "grouped" order lists the slots by expert, tokens ascending within each.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The token of each grouped position, `[n·k]`.
    pub tokens: Vec<i64>,
    /// The slot at each grouped position, `[n·k]`.
    pub order: Vec<i64>,
    /// Each slot's grouped position, `[n·k]` (the inverse of `order`).
    pub to_slots: Vec<i64>,
    /// The experts with rows, and their grouped positions.
    pub used: Vec<(usize, Range<usize>)>,
    pub top_k: usize,
}

/// The layer's output `[n, d]`: each token's experts' outputs weighted by its `gates: [n, k]`
/// and summed (`model::combine`), from the tokens `h: [n, d]` and the routes' `plan` (built only
/// when the node runs); `None` where this backend keeps the per-expert path (the CPU unless
/// `grouped_scope` says otherwise, `fused::plain_scope`, backends without a dispatch).
pub fn grouped<B: Backend>(
    h: Tensor<B, 2>,
    experts: &[Expert<B>],
    gates: Tensor<B, 2>,
    plan: impl FnOnce() -> Plan,
) -> Option<Tensor<B, 2>> {
    let forced = GROUPED.with(Cell::get);
    let cpu_default = forced.is_none() && crate::backend::is_cpu::<B>();
    if plain_active() || forced == Some(false) || cpu_default {
        return None;
    }
    let plan = plan();
    let k = Grouped {
        h,
        gates,
        experts,
        plan: &plan,
    };
    match run_gpu_kernel::<B, _>(k) {
        Ok(y) => y,
        Err(k) if forced == Some(true) => run_kernel::<B, _>(k),
        Err(_) => None,
    }
}

struct Grouped<'a, B: Backend> {
    h: Tensor<B, 2>,
    gates: Tensor<B, 2>,
    experts: &'a [Expert<B>],
    plan: &'a Plan,
}

/// The most experts with rows one node takes: its parents are a fixed-size array (burn's
/// `Backward<B, N>`), one size per count of experts; past this a layer keeps the per-expert
/// path. Grok-1 has 8.
pub const MAX_EXPERTS: usize = 16;

impl<B: Backend> Grouped<'_, B> {
    /// The matrix products' dtype: `precision::matmul`'s rule.
    fn dtype(&self) -> DType {
        let half = precision::half(precision::current()).filter(|_| self.h.dtype() == DType::F32);
        half.map_or(self.h.dtype(), DType::from)
    }

    /// The used experts' weights, `[w1, w3, w2]` for each in turn.
    fn weights(&self) -> impl Iterator<Item = Tensor<B, 2>> + '_ {
        self.plan.used.iter().flat_map(|(e, _)| {
            let x = &self.experts[*e];
            [x.w1.val(), x.w3.val(), x.w2.val()]
        })
    }

    fn autodiff<X: Backend>(self) -> Option<Tensor<B, 2>> {
        let op = GroupedBackward {
            used: self.plan.used.iter().map(|(_, r)| r.clone()).collect(),
            top_k: self.plan.top_k,
            dtype: self.dtype(),
            out_dtype: self.h.dtype(),
        };
        let parents: Vec<FloatTensor<Autodiff<X>>> = [self.h.clone(), self.gates.clone()]
            .into_iter()
            .chain(self.weights())
            .map(unwrap::<Autodiff<X>, _, 2>)
            .collect();
        let plan = self.plan;
        macro_rules! by_count {
            ($($e:literal)*) => {
                match plan.used.len() {
                    $($e => node::<X, { 3 * $e + 2 }>(op, parents, plan),)*
                    _ => return None,
                }
            };
        }
        let y = by_count!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
        Some(wrap::<B, Autodiff<X>, 2>(y))
    }

    fn inner<X: Backend>(self) -> Tensor<B, 2> {
        let h = float::<X, 2>(unwrap::<X, _, 2>(self.h.clone()));
        let gates = float::<X, 2>(unwrap::<X, _, 2>(self.gates.clone()));
        let ws = self
            .weights()
            .map(|w| float::<X, 2>(unwrap::<X, _, 2>(w)))
            .collect();
        let (ys, _) = forward(h, ws, self.plan, self.dtype());
        let to_slots = super::rows::ints::<X>(&self.plan.to_slots, &gates.device());
        wrap::<B, X, 2>(prim(combine::weighted(&ys, &to_slots, gates)))
    }
}

/// The node, with `h`, the gates and the `N - 2` weights as its parents.
fn node<X: Backend, const N: usize>(
    op: GroupedBackward,
    parents: Vec<FloatTensor<Autodiff<X>>>,
    plan: &Plan,
) -> FloatTensor<Autodiff<X>> {
    let parents: [FloatTensor<Autodiff<X>>; N] = match parents.try_into() {
        Ok(p) => p,
        Err(_) => unreachable!("`by_count` picks N = 2 + 3 per used expert"),
    };
    let dtype = op.dtype;
    record(op, parents, |parents| {
        let mut it = parents.into_iter().map(float::<X, 2>);
        let h = it.next().expect("h comes first");
        let gates = it.next().expect("the gates come second");
        let device = h.device();
        let (ys, saved) = forward(h, it.collect(), plan, dtype);
        let order = super::rows::ints::<X>(&plan.order, &device);
        let to_slots = super::rows::ints::<X>(&plan.to_slots, &device);
        let y = combine::weighted(&ys, &to_slots, gates.clone());
        ((saved, [order, to_slots], prim(gates)), prim(y))
    })
}

fn float<X: Backend, const D: usize>(p: FloatTensor<X>) -> Tensor<X, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

fn prim<X: Backend, const D: usize>(t: Tensor<X, D>) -> FloatTensor<X> {
    t.into_primitive().tensor()
}

fn rows<X: Backend>(x: &Tensor<X, 2>, r: &Range<usize>) -> Tensor<X, 2> {
    let d = x.dims()[1];
    x.clone().slice([r.clone(), 0..d])
}

/// What the backward needs, in the matmul dtype: the grouped input rows, each used expert's
/// output (for the gates' gradient), its up projections (`Up`) and its down projection's
/// weight; and the weights' own dtype, which their gradients take.
#[derive(Debug, Clone)]
struct Saved<X: Backend> {
    x: FloatTensor<X>,
    y: Vec<FloatTensor<X>>,
    up: Vec<Up<X>>,
    w2: Vec<FloatTensor<X>>,
    w_dtype: DType,
}

/// One expert's two up projections as the forward computed and kept them, in the matmul dtype.
#[derive(Debug, Clone)]
enum Up<X: Backend> {
    /// `a = x·w1` and `b = x·w3`, `[m, f]` each, and `[w1, w3]`: two products, as the
    /// per-expert path computes them (so the CPU's bits are that path's).
    Split {
        a: FloatTensor<X>,
        b: FloatTensor<X>,
        w: [FloatTensor<X>; 2],
    },
    /// `[a | b] = x·[w1 | w3]`, `[m, 2f]`, and the weights side by side, `[d, 2f]`: on the GPU
    /// backends one GEMM of twice the width where there were two, read by the gate's kernel as
    /// it lies; the backward likewise takes the input's gradient from one GEMM, `[da | db]` by
    /// the weights' transpose, where there were two and their sum.
    Packed { ab: FloatTensor<X>, w13: FloatTensor<X> },
}

/// `h: [n, d]` and the used experts' weights (`[w1, w3, w2]` for each in turn) → each used
/// expert's output `[m, d]` in turn (grouped order), in `dtype`, the products'.
fn forward<X: Backend>(
    h: Tensor<X, 2>,
    ws: Vec<Tensor<X, 2>>,
    plan: &Plan,
    dtype: DType,
) -> (Vec<Tensor<X, 2>>, Saved<X>) {
    let device = h.device();
    let x = precision::restore(h, dtype).select(0, super::rows::ints::<X>(&plan.tokens, &device)); // [n·k, d]
    let mut saved = Saved {
        x: prim(x.clone()),
        y: Vec::new(),
        up: Vec::new(),
        w2: Vec::new(),
        w_dtype: ws.first().map_or(dtype, Tensor::dtype),
    };
    let mut ws = ws.into_iter();
    let mut ys = Vec::with_capacity(plan.used.len());
    for (_, r) in &plan.used {
        let mut next = || ws.next().expect("three weights per used expert");
        let w = [next(), next(), next()]; // [w1, w3, w2]: [d, f], [d, f], [f, d]
        let (y, up, w2) = expert(rows(&x, r), w, dtype); // [m, d]
        saved.y.push(prim(y.clone()));
        ys.push(y);
        saved.up.push(up);
        saved.w2.push(prim(w2));
    }
    (ys, saved)
}

/// One expert on its rows `x: [m, d]` (in `dtype`) from its weights `[w1, w3, w2]` (in theirs):
/// the output `w2 · gelu_gate(x·w1, x·w3)`, `[m, d]` in `dtype`, what the backward keeps of the
/// up projections, and `w2` in `dtype`. On the GPU backends the up projections are one product
/// of `x` and the weights side by side (`Up::Packed`); elsewhere two.
fn expert<X: Backend>(
    x: Tensor<X, 2>,
    w: [Tensor<X, 2>; 3],
    dtype: DType,
) -> (Tensor<X, 2>, Up<X>, Tensor<X, 2>) {
    run_gpu_kernel_or::<X, _>(OneExpert { x, w, dtype }, !plain_active(), OneExpert::split)
}

struct OneExpert<X: Backend> {
    x: Tensor<X, 2>,
    w: [Tensor<X, 2>; 3],
    dtype: DType,
}

impl<X: Backend> OneExpert<X> {
    fn split(self) -> (Tensor<X, 2>, Up<X>, Tensor<X, 2>) {
        let [w1, w3, w2] = self.w.map(|w| precision::restore(w, self.dtype));
        let a = gemv::matmul(self.x.clone(), w1.clone()); // [m, f]
        let b = gemv::matmul(self.x, w3.clone()); // [m, f]
        let g = gelu_gate(a.clone(), b.clone()); // [m, f], computed in f32
        let y = gemv::matmul(g, w2.clone()); // [m, d]
        let w = [prim(w1), prim(w3)];
        (
            y,
            Up::Split {
                a: prim(a),
                b: prim(b),
                w,
            },
            w2,
        )
    }
}

impl<X: Backend> GpuKernel for OneExpert<X> {
    type Output = (Tensor<X, 2>, Up<X>, Tensor<X, 2>);

    /// Only the node's inner tensors come here.
    fn gpu_autodiff<Y: GpuOps>(self) -> Self::Output {
        self.split()
    }

    /// The weights are put side by side every step, in the launch that casts them to the
    /// products' dtype anyway under mixed precision (a `[d, 2f]` write, 6 MB an expert at
    /// `gpu-350m` in bf16), rather than stored so: checkpoints and the exported layout keep
    /// `w1` and `w3` apart, as Grok-1's.
    fn gpu_inner<Y: GpuOps>(self) -> Self::Output {
        PACKED.with(|c| c.set(c.get() + 1));
        let [w1, w3, w2] = self.w;
        let cast_w2 = (w2.dtype() != self.dtype).then(|| unwrap::<Y, _, 2>(w2.clone()));
        let [w1, w3] = [w1, w3].map(unwrap::<Y, _, 2>);
        let (w13, cast) = Y::pack_up(w1, w3, cast_w2, self.dtype);
        let w13 = wrap::<X, Y, 2>(w13); // [d, 2f]
        let w2 = cast.map_or(w2, wrap::<X, Y, 2>); // [f, d]
        let ab = gemv::matmul(self.x, w13.clone()); // [m, 2f]
        let g = wrap::<X, Y, 2>(Y::gelu_gate(unwrap::<Y, _, 2>(ab.clone()), None)); // [m, f]
        let y = gemv::matmul(g, w2.clone()); // [m, d]
        (
            y,
            Up::Packed {
                ab: prim(ab),
                w13: prim(w13),
            },
            w2,
        )
    }
}

/// The gate's gradients `[da | db]`, `[m, 2f]` in `ab`'s layout, for the output's gradient `g`,
/// and its value: the packed kernel on a GPU backend.
fn packed_gate_grads<X: Backend>(ab: Tensor<X, 2>, g: Tensor<X, 2>) -> (Tensor<X, 2>, Tensor<X, 2>) {
    run_gpu_kernel::<X, _>(PackedGateGrads { ab, g }).unwrap_or_else(PackedGateGrads::plain)
}

struct PackedGateGrads<X: Backend> {
    ab: Tensor<X, 2>,
    g: Tensor<X, 2>,
}

impl<X: Backend> PackedGateGrads<X> {
    /// Only `Up::Packed` asks, which only a GPU backend makes; this is for completeness.
    fn plain(self) -> (Tensor<X, 2>, Tensor<X, 2>) {
        let [m, f2] = self.ab.dims();
        let f = f2 / 2;
        let (a, b) = (self.ab.clone().slice([0..m, 0..f]), self.ab.slice([0..m, f..f2]));
        let (da, db, y) = gelu_gate_grads(a, b, self.g);
        (Tensor::cat(vec![da, db], 1), y)
    }
}

impl<X: Backend> GpuKernel for PackedGateGrads<X> {
    type Output = (Tensor<X, 2>, Tensor<X, 2>);

    /// Only the node's inner tensors come here.
    fn gpu_autodiff<Y: GpuOps>(self) -> Self::Output {
        self.plain()
    }

    fn gpu_inner<Y: GpuOps>(self) -> Self::Output {
        let (ab, g) = (unwrap::<Y, _, 2>(self.ab), unwrap::<Y, _, 2>(self.g));
        let (mut grads, y) = Y::gelu_gate_bwd(ab, None, g, true);
        let dab = grads.pop().expect("one gradient for the packed input");
        let y = y.expect("asked for the value");
        (wrap::<X, Y, 2>(dab), wrap::<X, Y, 2>(y))
    }
}

#[derive(Debug)]
struct GroupedBackward {
    used: Vec<Range<usize>>,
    top_k: usize,
    /// The products' dtype, and the output's (the tokens').
    dtype: DType,
    out_dtype: DType,
}

impl<X: Backend, const N: usize> Backward<X, N> for GroupedBackward {
    /// The forward's tensors, `[order, to_slots]` on the device, and the gates.
    type State = (Saved<X>, [Tensor<X, 1, Int>; 2], FloatTensor<X>);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (saved, [order, to_slots], gates) = ops.state;
        let mut parents = ops.parents.into_iter();
        let (ph, pg) = (parents.next().flatten(), parents.next().flatten());
        let dout = float::<X, 2>(grads.consume::<X>(&ops.node)); // [n, d]
        let ys: Vec<Tensor<X, 2>> = saved.y.into_iter().map(float::<X, 2>).collect();
        let gates = float::<X, 2>(gates); // [n, k]
        let (dy, dgates) = combine::weighted_grads(&ys, [&order, &to_slots], gates, dout, self.dtype); // [n·k, d] grouped, [n, k]
        drop(ys);
        if let Some(node) = pg {
            grads.register::<X>(node.id, prim(dgates));
        }
        let x = float::<X, 2>(saved.x);
        let w_dtype = saved.w_dtype;
        let mut dx = Vec::with_capacity(self.used.len());
        for ((r, up), w2) in self.used.iter().zip(saved.up).zip(saved.w2) {
            let w2 = float::<X, 2>(w2);
            let (xi, dyi) = (rows(&x, r), rows(&dy, r)); // [m, d]
            let dg = gemv::matmul(dyi.clone(), w2.transpose()); // [m, f]
            // The gate's value comes back with its gradients, recomputed rather than kept from
            // the forward (one [m, f] less held per expert).
            let (dw13, terms, g) = match up {
                Up::Split { a, b, w: [w1, w3] } => {
                    let (a, b) = (float::<X, 2>(a), float::<X, 2>(b)); // [m, f]
                    let (da, db, g) = gelu_gate_grads(a, b, dg); // [m, f] each, computed in f32
                    let dw1 = weight_grad(xi.clone().transpose(), da.clone(), w_dtype); // [d, f]
                    let dw3 = weight_grad(xi.transpose(), db.clone(), w_dtype); // [d, f]
                    let da_x = gemv::matmul(da, float::<X, 2>(w1).transpose()); // [m, d]
                    let db_x = gemv::matmul(db, float::<X, 2>(w3).transpose()); // [m, d]
                    ([dw1, dw3], vec![da_x, db_x], g)
                }
                Up::Packed { ab, w13 } => {
                    let (dab, g) = packed_gate_grads(float::<X, 2>(ab), dg); // [m, 2f], [m, f]
                    let [m, f2] = dab.dims();
                    let half = |cols| dab.clone().slice([0..m, cols]); // [m, f], a view
                    let dw1 = weight_grad(xi.clone().transpose(), half(0..f2 / 2), w_dtype); // [d, f]
                    let dw3 = weight_grad(xi.transpose(), half(f2 / 2..f2), w_dtype); // [d, f]
                    let dab_x = gemv::matmul(dab, float::<X, 2>(w13).transpose()); // [m, d]
                    ([dw1, dw3], vec![dab_x], g)
                }
            };
            let dw2 = weight_grad(g.transpose(), dyi, w_dtype); // [f, d]
            let [dw1, dw3] = dw13;
            for dw in [dw1, dw3, dw2] {
                if let Some(node) = parents.next().flatten() {
                    grads.register::<X>(node.id, prim(dw));
                }
            }
            dx.push(terms);
        }
        if let Some(node) = ph {
            // Each term is widened before the terms are added, as the per-expert graph's two
            // casts of the input do.
            let dh = combine::term_sum(dx, &to_slots, self.top_k, self.out_dtype); // [n, d]
            grads.register::<X>(node.id, prim(dh));
        }
    }
}

/// A weight's gradient `lhs · rhs` (`lhs` a transposed view) in the weight's dtype. Under mixed
/// precision on a GPU backend, the half operands' product written in f32 by the GEMM that
/// accumulates it (`GpuOps::matmul_f32_out`): the gradient is never rounded to half, and the
/// cast to f32 that followed is gone. Elsewhere as burn's matmul backward writes it (the same
/// operands, transposed the same way, so the CPU gives the per-expert graph's bits), then cast.
fn weight_grad<X: Backend>(lhs: Tensor<X, 2>, rhs: Tensor<X, 2>, w_dtype: DType) -> Tensor<X, 2> {
    let mixed = lhs.dtype() != w_dtype && w_dtype == DType::F32 && !plain_active();
    run_gpu_kernel_or::<X, _>(F32Product { lhs, rhs }, mixed, |k| {
        precision::restore(k.lhs.matmul(k.rhs), w_dtype)
    })
}

/// `lhs · rhs` of half operands with an f32 result, on a GPU backend (`weight_grad`).
struct F32Product<B: Backend> {
    lhs: Tensor<B, 2>,
    rhs: Tensor<B, 2>,
}

impl<B: Backend> GpuKernel for F32Product<B> {
    type Output = Tensor<B, 2>;

    /// Only the node's inner tensors come here.
    fn gpu_autodiff<X: GpuOps>(self) -> Tensor<B, 2> {
        precision::restore(self.lhs.matmul(self.rhs), DType::F32)
    }

    fn gpu_inner<X: GpuOps>(self) -> Tensor<B, 2> {
        let (a, b) = (unwrap::<X, _, 2>(self.lhs), unwrap::<X, _, 2>(self.rhs));
        wrap::<B, X, 2>(X::matmul_f32_out(a, b))
    }
}

impl<B: Backend> GpuKernel for Grouped<'_, B> {
    type Output = Option<Tensor<B, 2>>;

    fn gpu_autodiff<X: GpuOps>(self) -> Option<Tensor<B, 2>> {
        self.autodiff::<X>()
    }

    fn gpu_inner<X: GpuOps>(self) -> Option<Tensor<B, 2>> {
        Some(self.inner::<X>())
    }
}

impl<B: Backend> HostKernel for Grouped<'_, B> {
    type Output = Option<Tensor<B, 2>>;

    fn autodiff<X: Backend>(self) -> Option<Tensor<B, 2>> {
        Grouped::autodiff::<X>(self)
    }

    fn inner<X: Backend>(self) -> Option<Tensor<B, 2>> {
        Some(Grouped::inner::<X>(self))
    }

    /// Backends without a dispatch keep the per-expert path.
    fn plain(self) -> Option<Tensor<B, 2>> {
        None
    }
}
