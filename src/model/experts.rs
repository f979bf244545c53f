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
//! rows of the experts' input-gradient terms are summed where they lie (`combine::pair_sum`).
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
//! Numerics: the same products on the same rows in the same dtypes as the per-expert path
//! (`Expert::forward` through `precision::matmul`), so on the CPU the output and the expert
//! weights' gradients are the same bits; the input gradient adds the same terms, in another
//! order only where the router's gradient joins them (`tests/model.rs`). On a GPU under mixed
//! precision the weights' gradients come out of their GEMM in f32 (`weight_grad`), where the
//! per-expert graph rounds them to half before widening.
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
/// output (for the gates' gradient), its two pre-activation products and its weights `[w1, w3,
/// w2]`; and the weights' own dtype, which their gradients take.
#[derive(Debug, Clone)]
struct Saved<X: Backend> {
    x: FloatTensor<X>,
    y: Vec<FloatTensor<X>>,
    a: Vec<FloatTensor<X>>,
    b: Vec<FloatTensor<X>>,
    w: Vec<[FloatTensor<X>; 3]>,
    w_dtype: DType,
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
        a: Vec::new(),
        b: Vec::new(),
        w: Vec::new(),
        w_dtype: ws.first().map_or(dtype, Tensor::dtype),
    };
    let mut ws = ws.into_iter().map(|w| precision::restore(w, dtype));
    let mut ys = Vec::with_capacity(plan.used.len());
    for (_, r) in &plan.used {
        let mut next = || ws.next().expect("three weights per used expert");
        let (w1, w3, w2) = (next(), next(), next()); // [d, f], [d, f], [f, d]
        let xi = rows(&x, r); // [m, d]
        let a = gemv::matmul(xi.clone(), w1.clone()); // [m, f]
        let b = gemv::matmul(xi, w3.clone()); // [m, f]
        let g = gelu_gate(a.clone(), b.clone()); // [m, f], computed in f32
        let y = gemv::matmul(g, w2.clone()); // [m, d]
        saved.y.push(prim(y.clone()));
        ys.push(y);
        saved.a.push(prim(a));
        saved.b.push(prim(b));
        saved.w.push([w1, w3, w2].map(prim));
    }
    (ys, saved)
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
        let mut dx = Vec::with_capacity(self.used.len());
        for (i, r) in self.used.iter().enumerate() {
            let [w1, w3, w2] = saved.w[i].clone().map(float::<X, 2>);
            let (xi, dyi) = (rows(&x, r), rows(&dy, r)); // [m, d]
            let (a, b) = (
                float::<X, 2>(saved.a[i].clone()),
                float::<X, 2>(saved.b[i].clone()),
            ); // [m, f]
            let dg = gemv::matmul(dyi.clone(), w2.transpose()); // [m, f]
            // The gate's value comes back with its gradients, recomputed rather than kept from
            // the forward (one [m, f] less held per expert).
            let (da, db, g) = gelu_gate_grads(a, b, dg); // [m, f] each, computed in f32
            let dw2 = weight_grad(g.transpose(), dyi, saved.w_dtype); // [f, d]
            let dw1 = weight_grad(xi.clone().transpose(), da.clone(), saved.w_dtype); // [d, f]
            let dw3 = weight_grad(xi.transpose(), db.clone(), saved.w_dtype); // [d, f]
            for dw in [dw1, dw3, dw2] {
                if let Some(node) = parents.next().flatten() {
                    grads.register::<X>(node.id, prim(dw));
                }
            }
            let da_x = gemv::matmul(da, w1.transpose()); // [m, d]
            let db_x = gemv::matmul(db, w3.transpose()); // [m, d]
            dx.push([da_x, db_x]);
        }
        if let Some(node) = ph {
            // Each term is widened before the two are added, as the per-expert graph's two
            // casts of the input do.
            let dh = combine::pair_sum(dx, &to_slots, self.top_k, self.out_dtype); // [n, d]
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
