//! Every routed expert of one MoE layer as a single autodiff node: the tokens' rows grouped by
//! expert, each expert's gated-GELU product on its rows, and the outputs put back in slot order,
//! with a hand-written backward that writes every expert's input gradient into its rows of one
//! tensor.
//!
//! Why: with one autodiff node per expert, the gradient each expert's input gather sends to the
//! layer's `[n, d]` tokens is a whole `[n, d]` tensor (zeros where other experts' tokens are),
//! and autodiff adds the experts' tensors one by one. At `gpu-350m` (16 384 tokens, 8 experts,
//! d = 1 024, 12 layers) that is ~25 GB a step, ~5.7 ms at an H200's 4.3 TB/s, 19% of the 30.5 ms
//! step of the 50% MFU goal (docs/benchmarks.md, "One node for all experts"; arithmetic, not
//! measured: no GPU yet). Here the backward moves each row once: the gradient comes in slot
//! order, is grouped by expert, each expert's input gradient fills its rows of one `[n·k, d]`
//! tensor, and each token's k rows are summed.
//!
//! The node's parents are the tokens and each used expert's three weights as they are (no
//! stacked copy), so an expert without tokens gets no gradient, as before; burn's nodes take a
//! fixed number of parents, so there is one node type per count of used experts, up to
//! `MAX_EXPERTS`. The GELU gate's derivative is written out (`fused::gelu_gate_grads`: one
//! fused chain on a GPU, the CPU kernel on the CPU) instead of burn's autodiff of its seven ops,
//! and the node keeps the two pre-activation products in the matmul dtype (bf16 under bf16)
//! rather than f32 copies, recomputing the gate in the backward.
//!
//! Numerics: the same products on the same rows in the same dtypes as the per-expert path
//! (`Expert::forward` through `precision::matmul`), so on the CPU the output and the expert
//! weights' gradients are the same bits; the input gradient adds the same terms, in another
//! order only where the router's gradient joins them (`tests/model.rs`).
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
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, Int, Tensor, TensorPrimitive};

use super::fused::{gelu_gate, gelu_gate_grads, plain_active, record, unwrap, wrap};
use super::moe::Expert;
use super::{gemv, precision};
use crate::backend::{GpuKernel, GpuOps, HostKernel, run_gpu_kernel, run_kernel};

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

/// Each slot's expert output, `[n·k, d]` in slot order, from the tokens `h: [n, d]` and the
/// routes' `plan` (built only when the node runs); `None` where this backend keeps the
/// per-expert path (the CPU unless `grouped_scope` says otherwise, `fused::plain_scope`,
/// backends without a dispatch).
pub fn grouped<B: Backend>(
    h: Tensor<B, 2>,
    experts: &[Expert<B>],
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
        let parents: Vec<FloatTensor<Autodiff<X>>> = std::iter::once(self.h.clone())
            .chain(self.weights())
            .map(unwrap::<Autodiff<X>, _, 2>)
            .collect();
        let plan = self.plan;
        macro_rules! by_count {
            ($($e:literal)*) => {
                match plan.used.len() {
                    $($e => node::<X, { 3 * $e + 1 }>(op, parents, plan),)*
                    _ => return None,
                }
            };
        }
        let y = by_count!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
        Some(wrap::<B, Autodiff<X>, 2>(y))
    }

    fn inner<X: Backend>(self) -> Tensor<B, 2> {
        let h = float::<X, 2>(unwrap::<X, _, 2>(self.h.clone()));
        let ws = self
            .weights()
            .map(|w| float::<X, 2>(unwrap::<X, _, 2>(w)))
            .collect();
        let (y, _) = forward(h, ws, self.plan, self.dtype());
        wrap::<B, X, 2>(prim(y))
    }
}

/// The node, with `h` and the `N - 1` weights as its parents.
fn node<X: Backend, const N: usize>(
    op: GroupedBackward,
    parents: Vec<FloatTensor<Autodiff<X>>>,
    plan: &Plan,
) -> FloatTensor<Autodiff<X>> {
    let parents: [FloatTensor<Autodiff<X>>; N] = match parents.try_into() {
        Ok(p) => p,
        Err(_) => unreachable!("`by_count` picks N = 1 + 3 per used expert"),
    };
    let dtype = op.dtype;
    record(op, parents, |parents| {
        let mut it = parents.into_iter().map(float::<X, 2>);
        let h = it.next().expect("h comes first");
        let device = h.device();
        let (y, saved) = forward(h, it.collect(), plan, dtype);
        let order = super::rows::ints::<X>(&plan.order, &device).into_primitive();
        let to_slots = super::rows::ints::<X>(&plan.to_slots, &device).into_primitive();
        ((saved, order, to_slots), prim(y))
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

/// `a`, upcast to at least f32 for the GELU gate (`precision::upcast`'s rule).
fn wide<X: Backend>(a: Tensor<X, 2>) -> Tensor<X, 2> {
    precision::upcast(a).0
}

/// What the backward needs, in the matmul dtype: the grouped input rows, each used expert's two
/// pre-activation products and its weights `[w1, w3, w2]`; and the weights' own dtype, which
/// their gradients take.
#[derive(Debug, Clone)]
struct Saved<X: Backend> {
    x: FloatTensor<X>,
    a: Vec<FloatTensor<X>>,
    b: Vec<FloatTensor<X>>,
    w: Vec<[FloatTensor<X>; 3]>,
    w_dtype: DType,
}

/// `h: [n, d]` and the used experts' weights (`[w1, w3, w2]` for each in turn) → `[n·k, d]` in
/// slot order, in `h`'s dtype; the products in `dtype`.
fn forward<X: Backend>(
    h: Tensor<X, 2>,
    ws: Vec<Tensor<X, 2>>,
    plan: &Plan,
    dtype: DType,
) -> (Tensor<X, 2>, Saved<X>) {
    let out_dtype = h.dtype();
    let device = h.device();
    let x = precision::restore(h, dtype).select(0, super::rows::ints::<X>(&plan.tokens, &device)); // [n·k, d]
    let mut saved = Saved {
        x: prim(x.clone()),
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
        let g = precision::restore(gelu_gate(wide(a.clone()), wide(b.clone())), dtype); // [m, f]
        ys.push(gemv::matmul(g, w2.clone())); // [m, d]
        saved.a.push(prim(a));
        saved.b.push(prim(b));
        saved.w.push([w1, w3, w2].map(prim));
    }
    let y = precision::restore(Tensor::cat(ys, 0), out_dtype) // [n·k, d], grouped
        .select(0, super::rows::ints::<X>(&plan.to_slots, &device)); // slot order
    (y, saved)
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
    /// The forward's tensors, and `order` and `to_slots` on the device.
    type State = (Saved<X>, IntTensor<X>, IntTensor<X>);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (saved, order, to_slots) = ops.state;
        let mut parents = ops.parents.into_iter();
        let ph = parents.next().flatten();
        let dy = float::<X, 2>(grads.consume::<X>(&ops.node)); // [n·k, d], slot order
        let [nk, d] = dy.dims();
        let dy = precision::restore(
            dy.select(0, Tensor::<X, 1, Int>::from_primitive(order)),
            self.dtype,
        ); // grouped
        let x = float::<X, 2>(saved.x);
        let mut dx = Vec::with_capacity(self.used.len());
        for (i, r) in self.used.iter().enumerate() {
            let [w1, w3, w2] = saved.w[i].clone().map(float::<X, 2>);
            let (xi, dyi) = (rows(&x, r), rows(&dy, r)); // [m, d]
            let (a, b) = (
                float::<X, 2>(saved.a[i].clone()),
                float::<X, 2>(saved.b[i].clone()),
            );
            let (a_wide, b_wide) = (wide(a), wide(b)); // [m, f]
            let g = precision::restore(gelu_gate(a_wide.clone(), b_wide.clone()), self.dtype); // [m, f]
            // As burn's matmul backward writes them (the same operands, transposed the same
            // way), so the CPU gives the per-expert graph's bits.
            let dw2 = g.transpose().matmul(dyi.clone()); // [f, d]
            let dg = wide(gemv::matmul(dyi, w2.transpose())); // [m, f]
            let (da, db) = gelu_gate_grads(a_wide, b_wide, dg);
            let (da, db) = (
                precision::restore(da, self.dtype),
                precision::restore(db, self.dtype),
            ); // [m, f]
            let dw1 = xi.clone().transpose().matmul(da.clone()); // [d, f]
            let dw3 = xi.transpose().matmul(db.clone()); // [d, f]
            for dw in [dw1, dw3, dw2] {
                if let Some(node) = parents.next().flatten() {
                    grads.register::<X>(node.id, prim(precision::restore(dw, saved.w_dtype)));
                }
            }
            // Each product's input gradient is widened before the two are added, as the
            // per-expert graph's two casts of the input do.
            let da_x = precision::restore(gemv::matmul(da, w1.transpose()), self.out_dtype);
            let db_x = precision::restore(gemv::matmul(db, w3.transpose()), self.out_dtype);
            dx.push(da_x + db_x); // [m, d]
        }
        if let Some(node) = ph {
            let k = self.top_k;
            let dx = Tensor::cat(dx, 0).select(0, Tensor::<X, 1, Int>::from_primitive(to_slots)); // [n·k, d], slot order
            let dh = dx.reshape([nk / k, k, d]).sum_dim(1).reshape([nk / k, d]); // [n, d]
            grads.register::<X>(node.id, prim(dh));
        }
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
