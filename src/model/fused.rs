//! Fused CPU paths for what dominates a CPU training step after the big matmuls: RoPE, the
//! attention core (its products, soft cap and causal softmax, blockwise), the experts' GELU gate,
//! RMSNorm, the cross-entropy and AdamW (gradient clipping, in `train::grads`, uses the same
//! switch). On the CPU backend (see `backend::run_kernel`) each is one `colossus_kernels` pass with
//! one autodiff node whose backward is another single pass; on other backends, and for non-f32
//! tensors, the plain burn composition below runs (GPUs fuse element-wise ops themselves), except
//! RoPE, the softmax, the GELU gate, RMSNorm, the cross-entropy and AdamW, which have cubecl
//! kernels there (`backend/gpu.rs`, dispatched by `backend::run_gpu_kernel`; the GELU gate's take
//! bf16 and f16 tensors too, computing in f32). `tests/fused.rs` and,
//! on wgpu, `tests/backends.rs` check that both paths agree, forward and backward.

use std::cell::Cell;
use std::sync::Arc;

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::activation::{gelu_approximate, log_softmax, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, ElementConversion, Int, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use colossus_kernels::{AdamWStep, AttentionShape, CappedSoftmax};

use super::precision;
use super::rope::RopeTables;
use crate::backend::{GpuKernel, GpuOps, HostKernel, run_gpu_kernel, run_gpu_kernel_or, run_kernel};
use crate::config::Precision;

thread_local! {
    static PLAIN: Cell<bool> = const { Cell::new(false) };
    static RECORDED: Cell<usize> = const { Cell::new(0) };
}

/// How many ops this thread has recorded with a backward of their own (`record`: the fused
/// kernels, `model::rows`, `model::embedding`, `model::wide`, `model::experts`): a test's proof that a backend took
/// such a path rather than burn's.
pub fn recorded() -> usize {
    RECORDED.with(Cell::get)
}

/// Run `f` with the fused paths switched off on this thread: the reference the tests compare with.
pub fn plain_scope<R>(f: impl FnOnce() -> R) -> R {
    super::scoped(&PLAIN, true, f)
}

/// Whether this thread runs the plain paths, for work it hands to other threads.
pub fn plain_active() -> bool {
    PLAIN.with(|p| p.get())
}

/// Run `f` with the fused paths off when `plain` is set: a worker thread taking on its caller's
/// choice (`plain_active`).
pub fn with_plain<R>(plain: bool, f: impl FnOnce() -> R) -> R {
    super::scoped(&PLAIN, plain, f)
}

pub(crate) fn fused_allowed(dtype: DType) -> bool {
    dtype == DType::F32 && !PLAIN.with(|p| p.get())
}

/// Whether a GPU kernel that computes in f32 whatever its tensors' dtype may take `dtype`.
pub(crate) fn gpu_allowed(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16) && !plain_active()
}

/// `gelu_tanh(a) ⊙ b`, `[n, ffn]` each, computed in at least f32 and returned in `a`'s dtype:
/// half-precision tensors go through the GPU kernel as they are, and elsewhere are widened
/// first and the result rounded back (the same values, two casts more).
pub fn gelu_gate<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Tensor<B, 2> {
    let dtype = a.dtype();
    run_gpu_kernel_or::<B, _>(GeluGate { a, b }, gpu_allowed(dtype), |k| {
        let (a, b) = (precision::upcast(k.a).0, precision::upcast(k.b).0);
        let wide = a.dtype();
        let y = host_or_plain::<B, _>(GeluGate { a, b }, wide);
        precision::restore(y, dtype)
    })
}

/// The fallback of the GPU kernels that compute in f32 whatever their tensors' dtype
/// (`gelu_gate`, `gelu_gate_grads`, `rope`, `capped_softmax`), for `k` with its tensors
/// already widened to `dtype`: the CPU kernel where the fused paths may run on it (f32, not
/// f64), else the plain path. The callers round the result back to the dtype they were given.
fn host_or_plain<B: Backend, K: HostKernel>(k: K, dtype: DType) -> K::Output {
    if fused_allowed(dtype) {
        run_kernel::<B, K>(k)
    } else {
        k.plain()
    }
}

fn gelu_gate_plain<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Tensor<B, 2> {
    gelu_approximate(a) * b
}

/// `gelu_gate`'s gradients `(da, db)` for the upstream gradient `g`, outside autodiff (for a
/// node that differentiates its own chain, `model::experts`), and the gate's value `gelu_gate(a,
/// b)` beside them, computed in at least f32 and returned in `a`'s dtype as `gelu_gate` is: the
/// GPU kernel (one pass for all three, where the value was a launch of its own that read `a` and
/// `b` again), the CPU kernel on the CPU backend in f32, else one element-wise chain, with
/// gelu'(a) = ½(1 + t) + ½·a·(1 − t²)·√(2/π)·(1 + 3·0.044715·a²), t = tanh(√(2/π)·(a + 0.044715·a³)).
/// Off the GPU the value is `gelu_gate`'s, its bits.
#[allow(clippy::type_complexity)]
pub fn gelu_gate_grads<X: Backend>(
    a: Tensor<X, 2>,
    b: Tensor<X, 2>,
    g: Tensor<X, 2>,
) -> (Tensor<X, 2>, Tensor<X, 2>, Tensor<X, 2>) {
    let dtype = a.dtype();
    run_gpu_kernel_or::<X, _>(GeluGateGrads { a, b, g }, gpu_allowed(dtype), |k| {
        let y = gelu_gate(k.a.clone(), k.b.clone());
        let [a, b, g] = [k.a, k.b, k.g].map(|t| precision::upcast(t).0);
        let wide = a.dtype();
        let (da, db) = host_or_plain::<X, _>(GeluGateGrads { a, b, g }, wide);
        (precision::restore(da, dtype), precision::restore(db, dtype), y)
    })
}

/// How attention logits become probabilities: ×`multiplier`, soft cap `cap` (0: none), causal
/// over `t` new positions after `past` cached ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnScores {
    pub multiplier: f64,
    pub cap: f64,
    pub t: usize,
    pub past: usize,
}

impl AttnScores {
    /// The kernels' description of this softmax over rows of `cols` keys.
    pub fn softmax_op(&self, cols: usize) -> CappedSoftmax {
        CappedSoftmax {
            cols,
            multiplier: self.multiplier as f32,
            cap: self.cap as f32,
            causal: Some((self.t, self.past)),
        }
    }
}

/// Attention probabilities from raw logits `[batch, n_kv, rep·t, past + t]` (query rows in blocks
/// of t positions): softmax(cap·tanh(multiplier·x/cap) + causal mask) over the last dimension,
/// computed in at least f32 and returned in the logits' dtype. Under mixed precision the logits
/// come from a half product and the probabilities feed one: on a GPU the kernels read the half
/// logits and write the half probabilities (and the f32 ones the backward reads) in one pass
/// each way, and the backward reads the half gradient and writes the logits' in half; elsewhere
/// the logits are widened first and the probabilities rounded back (the same values; on a GPU
/// that was two casts forward and two backward over the `[rows, keys]` matrix).
pub fn capped_softmax<B: Backend>(logits: Tensor<B, 4>, s: AttnScores) -> Tensor<B, 4> {
    let dtype = logits.dtype();
    let op = s.softmax_op(logits.dims()[3]);
    let k = Softmax {
        x: logits,
        op,
        plain: Some(s),
    };
    run_gpu_kernel_or::<B, _>(k, gpu_allowed(dtype), |k| {
        let (x, dtype) = precision::upcast(k.x);
        let wide = x.dtype();
        let p = host_or_plain::<B, _>(Softmax { x, ..k }, wide);
        precision::restore(p, dtype)
    })
}

/// Softmax over each row of `x: [rows, cols]` (the router's probabilities, f32). On a GPU the
/// attention softmax's kernel pair, uncapped and not causal: one launch forward and one backward,
/// where burn's composition (max, exp, sum, divide) takes four forward and five backward
/// (counted on lavapipe: docs/benchmarks.md, "Launches per training step"). Elsewhere burn's
/// softmax, so the CPU keeps its bits.
pub fn softmax_rows<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let [rows, cols] = x.dims();
    let allowed = fused_allowed(x.dtype());
    let k = Softmax {
        x: x.reshape([1, 1, rows, cols]),
        op: CappedSoftmax {
            cols,
            multiplier: 1.0,
            cap: 0.0,
            causal: None,
        },
        plain: None,
    };
    run_gpu_kernel_or::<B, _>(k, allowed, HostKernel::plain).reshape([rows, cols])
}

/// Grouped-query attention `softmax(cap·tanh(multiplier·q·kᵀ/cap) + causal mask) · v`, with
/// `q: [batch, n_kv, rep·t, head_dim]` (each kv head's `rep` query heads folded into the rows,
/// in blocks of t positions) and `k`, `v: [batch, n_kv, past + t, head_dim]`; returns q's shape.
/// On the CPU backend in f32, one blockwise kernel that never writes the `[rep·t, past + t]`
/// probabilities to memory and skips the key blocks a causal block cannot see
/// (`colossus_kernels::attention`); elsewhere two matrix products around `capped_softmax`.
/// Under mixed precision q, k and v come in the products' half type (`Attention::forward`) and
/// the output is in it too; the softmax runs in f32 either way.
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    s: AttnScores,
) -> Tensor<B, 4> {
    let (q, k, v) = match super::flash::attention(q, k, v, s) {
        Ok(out) => return out,
        Err(qkv) => qkv,
    };
    let all_f32 = [&q, &k, &v].iter().all(|t| t.dtype() == DType::F32);
    // A one-token decoding step keeps the plain products: its blocks are single rows, so the
    // kernel saves nothing, and it would copy the (shared) KV cache out every token. Measured
    // on the small preset's greedy decoding: ~600 against ~800 tokens/s with the kernel.
    let decoding = s.t == 1;
    if !all_f32 || decoding || !fused_allowed(DType::F32) || precision::current() != Precision::F32 {
        return attention_plain(q, k, v, s);
    }
    let ([groups_b, groups_kv, rows, head_dim], keys) = (q.dims(), k.dims()[2]);
    let shape = AttentionShape {
        groups: groups_b * groups_kv,
        rows,
        keys,
        head_dim,
        op: s.softmax_op(keys),
    };
    run_kernel::<B, _>(AttentionCore { q, k, v, s, shape })
}

fn attention_plain<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    s: AttnScores,
) -> Tensor<B, 4> {
    let logits = precision::matmul_half(q, k.swap_dims(2, 3)); // [b, nkv, rep·t, s]
    let probs = capped_softmax(logits, s); // the logits' dtype, computed in f32
    precision::matmul_half(probs, v) // [b, nkv, rep·t, hd]
}

fn capped_softmax_plain<B: Backend>(logits: Tensor<B, 4>, s: AttnScores) -> Tensor<B, 4> {
    let rep = logits.dims()[2] / s.t;
    let mut logits = logits.mul_scalar(s.multiplier);
    if s.cap > 0.0 {
        logits = logits.div_scalar(s.cap).tanh().mul_scalar(s.cap);
    }
    let device = logits.device();
    logits = logits + causal_bias::<B>(rep, s.t, s.past, &device); // broadcast over [b, nkv]
    softmax(logits, 3)
}

/// `[1, 1, rep·t, past + t]`: 0 where query row (r, i) at position past+i may see key j ≤ past+i,
/// −∞ elsewhere.
fn causal_bias<B: Backend>(rep: usize, t: usize, past: usize, device: &B::Device) -> Tensor<B, 4> {
    let s = past + t;
    let mut bias = vec![0f32; rep * t * s];
    for r in 0..rep {
        for i in 0..t {
            let row = &mut bias[(r * t + i) * s..(r * t + i + 1) * s];
            row[past + i + 1..].fill(f32::NEG_INFINITY);
        }
    }
    super::init::floats(bias, [1, 1, rep * t, s], device)
}

/// The AdamW scalars of one step and one parameter, as `train::optim` computes them.
#[derive(Debug, Clone)]
pub struct AdamWScalars {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub bc2_sqrt: f64,
    pub step_size: f64,
    /// 1 − lr·weight_decay, for decayed parameters.
    pub decay: Option<f64>,
}

/// One parameter's tensors for an AdamW update, all `[n]`: the parameter, its gradient and the
/// two moments.
pub struct AdamWTensors<B: Backend> {
    pub p: Tensor<B, 1>,
    pub g: Tensor<B, 1>,
    pub m: Tensor<B, 1>,
    pub v: Tensor<B, 1>,
}

/// AdamW updates of parameters that share the scalars `s`: `(p, m, v)` after the gradient, for
/// each of `xs` in order. On the CPU backend a host pass per parameter, on the GPU backends a few
/// launches for them all (`GpuOps::adamw`, up to 32 parameters a launch).
///
/// Why GPU kernels, when burn's fusion fuses the tensor ops of one update into one kernel: it
/// caps a fused kernel at 64 operations and the update is 14, so over a whole model's parameters
/// its blocks split updates apart, and the leftover single multiplications ran as kernels of
/// their own (348 at `gpu-350m`'s 398 parameters, counted on lavapipe: docs/benchmarks.md,
/// "Launches per training step"); and one kernel per parameter is still 398 launches, most of
/// them on a norm's 1 024 weights, where the launch costs more than the work.
pub fn adamw<B: Backend>(
    s: AdamWScalars,
    xs: Vec<AdamWTensors<B>>,
) -> Vec<(Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>)> {
    let all_f32 = xs
        .iter()
        .flat_map(|x| [&x.p, &x.g, &x.m, &x.v])
        .all(|t| t.dtype() == DType::F32);
    if !all_f32 || !fused_allowed(DType::F32) {
        return xs.into_iter().map(|x| adamw_plain(&s, x)).collect();
    }
    match run_gpu_kernel::<B, _>(AdamWMany { s, xs }) {
        Ok(out) => out,
        Err(AdamWMany { s, xs }) => xs
            .into_iter()
            .map(|x| run_kernel::<B, _>(AdamW { s: s.clone(), x }))
            .collect(),
    }
}

fn adamw_plain<B: Backend>(
    s: &AdamWScalars,
    x: AdamWTensors<B>,
) -> (Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>) {
    let AdamWTensors { p, g, m, v } = x;
    let m = m.mul_scalar(s.beta1) + g.clone().mul_scalar(1.0 - s.beta1);
    let v = v.mul_scalar(s.beta2) + g.square().mul_scalar(1.0 - s.beta2);
    let denom = v.clone().sqrt().div_scalar(s.bc2_sqrt).add_scalar(s.eps);
    let p = match s.decay {
        Some(d) => p.mul_scalar(d),
        None => p,
    };
    let p = p - m.clone().div(denom).mul_scalar(s.step_size);
    (p, m, v)
}

// ---- host plumbing ---------------------------------------------------------------------------

/// `x` as type `U`, which `run_kernel` has checked it is.
pub(super) fn same<T: 'static, U: 'static>(x: T) -> U {
    let mut slot = Some(x);
    (&mut slot as &mut dyn std::any::Any)
        .downcast_mut::<Option<U>>()
        .and_then(Option::take)
        .expect("run_kernel dispatched on this exact backend type")
}

/// The primitive of `x`, whose backend `run_kernel` has checked is `C`.
pub(super) fn unwrap<C: Backend, B: Backend, const D: usize>(x: Tensor<B, D>) -> FloatTensor<C> {
    same::<_, Tensor<C, D>>(x).into_primitive().tensor()
}

/// The primitive of an integer tensor of `B`, which `run_gpu_kernel` has checked is `C`: an
/// autodiff backend's integers are its inner backend's.
pub(super) fn unwrap_int<C: Backend, B: Backend, const D: usize>(t: Tensor<B, D, Int>) -> IntTensor<C> {
    same::<_, Tensor<C, D, Int>>(t).into_primitive()
}

/// Back from a primitive of `C` (= `B`) to `Tensor<B, D>`.
pub(super) fn wrap<B: Backend, C: Backend, const D: usize>(p: FloatTensor<C>) -> Tensor<B, D> {
    same(Tensor::<C, D>::from_primitive(TensorPrimitive::Float(p)))
}

/// Run `kernel` on the primitives of `parents` (moved, not cloned, so an unshared buffer is
/// read and reused without a copy) and record its output as an autodiff tensor whose backward is
/// `op`, keeping the state the kernel returns when a gradient is needed.
pub(super) fn record<X: Backend, O: Backward<X, N>, const N: usize>(
    op: O,
    parents: [FloatTensor<Autodiff<X>>; N],
    kernel: impl FnOnce([FloatTensor<X>; N]) -> (O::State, FloatTensor<X>),
) -> FloatTensor<Autodiff<X>> {
    RECORDED.with(|c| c.set(c.get() + 1));
    let nodes = parents.each_ref().map(|p| p.node.clone());
    let (state, out) = kernel(parents.map(|p| p.primitive));
    match op.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(state, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// The f32 values of a primitive (no copy when the buffer is not shared).
fn host<X: Backend, const D: usize>(p: FloatTensor<X>) -> (Vec<f32>, [usize; D], X::Device) {
    let t = Tensor::<X, D>::from_primitive(TensorPrimitive::Float(p));
    let (dims, device) = (t.dims(), t.device());
    let values = t
        .into_data()
        .into_vec::<f32>()
        .expect("fused kernels run on f32 tensors");
    (values, dims, device)
}

fn primitive<X: Backend, const D: usize>(
    v: Vec<f32>,
    dims: [usize; D],
    device: &X::Device,
) -> FloatTensor<X> {
    Tensor::<X, D>::from_data(TensorData::new(v, dims), device)
        .into_primitive()
        .tensor()
}

// ---- GELU gate -------------------------------------------------------------------------------

struct GeluGate<B: Backend> {
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
}

/// `gelu_gate` of two primitives, which are handed back (rebuilt from the same buffers, so no
/// copy when they were not shared) for the backward's state.
fn gelu_gate_host<X: Backend>(
    a: FloatTensor<X>,
    b: FloatTensor<X>,
) -> (FloatTensor<X>, FloatTensor<X>, FloatTensor<X>) {
    let (a, dims, device) = host::<X, 2>(a);
    let (b, _, _) = host::<X, 2>(b);
    let mut out = vec![0f32; a.len()];
    colossus_kernels::gelu_gate(&a, &b, &mut out);
    (
        primitive::<X, 2>(out, dims, &device),
        primitive::<X, 2>(a, dims, &device),
        primitive::<X, 2>(b, dims, &device),
    )
}

/// `gelu_gate`'s gradients `(da, db)` for the upstream gradient `g`, by the CPU kernel. The
/// inputs are not needed afterwards: their buffers become the gradients.
fn gelu_gate_backward_host<X: Backend>(
    a: FloatTensor<X>,
    b: FloatTensor<X>,
    g: FloatTensor<X>,
) -> (FloatTensor<X>, FloatTensor<X>) {
    let (g, dims, device) = host::<X, 2>(g);
    let (mut da, _, _) = host::<X, 2>(a);
    let (mut db, _, _) = host::<X, 2>(b);
    colossus_kernels::gelu_gate_backward(&mut da, &mut db, &g);
    (
        primitive::<X, 2>(da, dims, &device),
        primitive::<X, 2>(db, dims, &device),
    )
}

#[derive(Debug)]
struct GeluGateBackward;

impl<X: Backend> Backward<X, 2> for GeluGateBackward {
    type State = (FloatTensor<X>, FloatTensor<X>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (a, b) = ops.state;
        let (da, db) = gelu_gate_backward_host::<X>(a, b, grads.consume::<X>(&ops.node));
        register_each::<X, 2>(ops.parents.map(|p| p.map(|n| n.id)), [da, db], grads);
    }
}

impl<B: Backend> HostKernel for GeluGate<B> {
    type Output = Tensor<B, 2>;

    fn autodiff<X: Backend>(self) -> Tensor<B, 2> {
        let ab = [
            unwrap::<Autodiff<X>, _, _>(self.a),
            unwrap::<Autodiff<X>, _, _>(self.b),
        ];
        wrap::<B, Autodiff<X>, _>(record(GeluGateBackward, ab, |[a, b]| {
            let (out, a, b) = gelu_gate_host::<X>(a, b);
            ((a, b), out)
        }))
    }

    fn inner<X: Backend>(self) -> Tensor<B, 2> {
        let (out, _, _) = gelu_gate_host::<X>(unwrap::<X, _, _>(self.a), unwrap::<X, _, _>(self.b));
        wrap::<B, X, _>(out)
    }

    fn plain(self) -> Tensor<B, 2> {
        gelu_gate_plain(self.a, self.b)
    }
}

/// Hands each parent that tracks a gradient its own, for a node that computes them all at once.
fn register_each<X: Backend, const N: usize>(
    parents: [Option<NodeId>; N],
    computed: [FloatTensor<X>; N],
    grads: &mut Gradients,
) {
    for (parent, g) in parents.into_iter().zip(computed) {
        if let Some(id) = parent {
            grads.register::<X>(id, g);
        }
    }
}

/// `GpuOps::gelu_gate_bwd` on the unpacked gate: `[da, db]`, and with `value` the gate's output.
fn gelu_gate_grads_gpu<X: GpuOps>(
    a: FloatTensor<X>,
    b: FloatTensor<X>,
    g: FloatTensor<X>,
    value: bool,
) -> ([FloatTensor<X>; 2], Option<FloatTensor<X>>) {
    let (grads, y) = X::gelu_gate_bwd(a, Some(b), g, value);
    let dadb = grads
        .try_into()
        .unwrap_or_else(|_| unreachable!("two inputs, two gradients"));
    (dadb, y)
}

#[derive(Debug)]
struct GpuGeluGateBackward;

impl<X: GpuOps> Backward<X, 2> for GpuGeluGateBackward {
    type State = (FloatTensor<X>, FloatTensor<X>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (a, b) = ops.state;
        let (dadb, _) = gelu_gate_grads_gpu::<X>(a, b, grads.consume::<X>(&ops.node), false);
        register_each::<X, 2>(ops.parents.map(|p| p.map(|n| n.id)), dadb, grads);
    }
}

impl<B: Backend> GpuKernel for GeluGate<B> {
    type Output = Tensor<B, 2>;

    fn gpu_autodiff<X: GpuOps>(self) -> Tensor<B, 2> {
        let ab = [
            unwrap::<Autodiff<X>, _, _>(self.a),
            unwrap::<Autodiff<X>, _, _>(self.b),
        ];
        wrap::<B, Autodiff<X>, _>(record(GpuGeluGateBackward, ab, |[a, b]| {
            ((a.clone(), b.clone()), X::gelu_gate(a, Some(b)))
        }))
    }

    fn gpu_inner<X: GpuOps>(self) -> Tensor<B, 2> {
        wrap::<B, X, _>(X::gelu_gate(
            unwrap::<X, _, _>(self.a),
            Some(unwrap::<X, _, _>(self.b)),
        ))
    }
}

struct GeluGateGrads<B: Backend> {
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    g: Tensor<B, 2>,
}

/// With the gate's value: `gelu_gate_grads`'s GPU pass.
impl<B: Backend> GpuKernel for GeluGateGrads<B> {
    type Output = (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>);

    /// Only the node's inner tensors come here.
    fn gpu_autodiff<X: GpuOps>(self) -> Self::Output {
        let y = gelu_gate_plain(self.a.clone(), self.b.clone());
        let (da, db) = self.plain();
        (da, db, y)
    }

    fn gpu_inner<X: GpuOps>(self) -> Self::Output {
        let [a, b, g] = [self.a, self.b, self.g].map(unwrap::<X, _, 2>);
        let ([da, db], y) = gelu_gate_grads_gpu::<X>(a, b, g, true);
        let y = y.expect("asked for the value");
        (wrap::<B, X, 2>(da), wrap::<B, X, 2>(db), wrap::<B, X, 2>(y))
    }
}

impl<B: Backend> HostKernel for GeluGateGrads<B> {
    type Output = (Tensor<B, 2>, Tensor<B, 2>);

    fn autodiff<X: Backend>(self) -> Self::Output {
        self.plain()
    }

    fn inner<X: Backend>(self) -> Self::Output {
        let [a, b, g] = [self.a, self.b, self.g].map(unwrap::<X, _, 2>);
        let (da, db) = gelu_gate_backward_host::<X>(a, b, g);
        (wrap::<B, X, 2>(da), wrap::<B, X, 2>(db))
    }

    fn plain(self) -> Self::Output {
        const C: f64 = 0.797_884_560_802_865_4; // √(2/π)
        const K: f64 = 0.044_715;
        let GeluGateGrads { a, b, g } = self;
        let a2 = a.clone() * a.clone();
        let t = (a2.clone().mul_scalar(K).add_scalar(1.0) * a.clone())
            .mul_scalar(C)
            .tanh();
        let half_1t = t.clone().add_scalar(1.0).mul_scalar(0.5);
        let gelu = a.clone() * half_1t.clone();
        let slope = (t.clone() * t).neg().add_scalar(1.0) * a * a2.mul_scalar(3.0 * K).add_scalar(1.0);
        let dgelu = half_1t + slope.mul_scalar(0.5 * C);
        (g.clone() * b * dgelu, g * gelu)
    }
}

// ---- soft-capped causal softmax --------------------------------------------------------------

struct Softmax<B: Backend> {
    x: Tensor<B, 4>,
    op: CappedSoftmax,
    /// The attention's scores for the plain path; `None`: a plain softmax over the last dimension.
    plain: Option<AttnScores>,
}

/// Probabilities and tanh values.
fn softmax_host<X: Backend>(op: CappedSoftmax, x: FloatTensor<X>) -> (FloatTensor<X>, FloatTensor<X>) {
    let (mut p, dims, device) = host::<X, 4>(x);
    let mut t = vec![0f32; p.len()];
    colossus_kernels::capped_softmax(op, &mut p, &mut t);
    (
        primitive::<X, 4>(p, dims, &device),
        primitive::<X, 4>(t, dims, &device),
    )
}

#[derive(Debug)]
struct SoftmaxBackward {
    op: CappedSoftmax,
}

impl<X: Backend> Backward<X, 1> for SoftmaxBackward {
    type State = (FloatTensor<X>, FloatTensor<X>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (p, t) = ops.state;
        unary::<X, _>(ops.parents, ops.node, grads, |g| {
            let (mut g, dims, device) = host::<X, 4>(g);
            let (p, _, _) = host::<X, 4>(p);
            let (t, _, _) = host::<X, 4>(t);
            colossus_kernels::capped_softmax_backward(self.op, &p, &t, &mut g);
            primitive::<X, 4>(g, dims, &device)
        });
    }
}

impl<B: Backend> HostKernel for Softmax<B> {
    type Output = Tensor<B, 4>;

    fn autodiff<X: Backend>(self) -> Tensor<B, 4> {
        let x = unwrap::<Autodiff<X>, _, _>(self.x);
        wrap::<B, Autodiff<X>, _>(record(SoftmaxBackward { op: self.op }, [x], |[x]| {
            let (p, t) = softmax_host::<X>(self.op, x);
            ((p.clone(), t), p)
        }))
    }

    fn inner<X: Backend>(self) -> Tensor<B, 4> {
        let (p, _) = softmax_host::<X>(self.op, unwrap::<X, _, _>(self.x));
        wrap::<B, X, _>(p)
    }

    fn plain(self) -> Tensor<B, 4> {
        match self.plain {
            Some(s) => capped_softmax_plain(self.x, s),
            None => softmax(self.x, 3),
        }
    }
}

#[derive(Debug)]
/// The softmax's backward; `dtype`, the logits' (the gradient's).
struct GpuSoftmaxBackward {
    op: CappedSoftmax,
    dtype: DType,
}

impl<X: GpuOps> Backward<X, 1> for GpuSoftmaxBackward {
    type State = (FloatTensor<X>, FloatTensor<X>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (p, lse) = ops.state;
        unary::<X, _>(ops.parents, ops.node, grads, |g| {
            X::capped_softmax_bwd(p, lse, g, self.op, self.dtype)
        });
    }
}

/// `(p, lse)` in f32 for the backward and the probabilities in `x`'s dtype (`p` itself for f32
/// logits).
fn gpu_softmax<X: GpuOps>(
    x: FloatTensor<X>,
    op: CappedSoftmax,
) -> ((FloatTensor<X>, FloatTensor<X>), FloatTensor<X>) {
    let (probs, lse, p) = X::capped_softmax_fwd(x, op, true);
    ((p.expect("kept for the backward"), lse), probs)
}

impl<B: Backend> GpuKernel for Softmax<B> {
    type Output = Tensor<B, 4>;

    fn gpu_autodiff<X: GpuOps>(self) -> Tensor<B, 4> {
        let dtype = self.x.dtype();
        let x = unwrap::<Autodiff<X>, _, _>(self.x);
        let op = GpuSoftmaxBackward { op: self.op, dtype };
        wrap::<B, Autodiff<X>, _>(record(op, [x], |[x]| gpu_softmax::<X>(x, self.op)))
    }

    fn gpu_inner<X: GpuOps>(self) -> Tensor<B, 4> {
        let (probs, _, _) = X::capped_softmax_fwd(unwrap::<X, _, _>(self.x), self.op, false);
        wrap::<B, X, _>(probs)
    }
}

// ---- attention core --------------------------------------------------------------------------

struct AttentionCore<B: Backend> {
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    s: AttnScores,
    shape: AttentionShape,
}

/// The output, and q, k and v as contiguous primitives for the backward.
#[allow(clippy::type_complexity)]
fn attention_host<X: Backend>(
    a: AttentionShape,
    q: FloatTensor<X>,
    k: FloatTensor<X>,
    v: FloatTensor<X>,
) -> (FloatTensor<X>, [FloatTensor<X>; 3]) {
    let (q, qd, device) = host::<X, 4>(q);
    let (k, kd, _) = host::<X, 4>(k);
    let (v, _, _) = host::<X, 4>(v);
    let mut out = vec![0f32; q.len()];
    colossus_kernels::attention(a, &q, &k, &v, &mut out);
    (
        primitive::<X, 4>(out, qd, &device),
        [
            primitive::<X, 4>(q, qd, &device),
            primitive::<X, 4>(k, kd, &device),
            primitive::<X, 4>(v, kd, &device),
        ],
    )
}

#[derive(Debug)]
struct AttentionBackward {
    shape: AttentionShape,
}

impl<X: Backend> Backward<X, 3> for AttentionBackward {
    type State = [FloatTensor<X>; 3];

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [q, k, v] = ops.state;
        let (g, qd, device) = host::<X, 4>(grads.consume::<X>(&ops.node));
        let (q, _, _) = host::<X, 4>(q);
        let (k, kd, _) = host::<X, 4>(k);
        let (v, _, _) = host::<X, 4>(v);
        let (mut dq, mut dk, mut dv) = (vec![0f32; q.len()], vec![0f32; k.len()], vec![0f32; k.len()]);
        colossus_kernels::attention_backward(self.shape, &q, &k, &v, &g, &mut dq, &mut dk, &mut dv);
        let [pq, pk, pv] = ops.parents;
        for (parent, d, dims) in [(pq, dq, qd), (pk, dk, kd), (pv, dv, kd)] {
            if let Some(node) = parent {
                grads.register::<X>(node.id, primitive::<X, 4>(d, dims, &device));
            }
        }
    }
}

impl<B: Backend> HostKernel for AttentionCore<B> {
    type Output = Tensor<B, 4>;

    fn autodiff<X: Backend>(self) -> Tensor<B, 4> {
        let qkv = [
            unwrap::<Autodiff<X>, _, _>(self.q),
            unwrap::<Autodiff<X>, _, _>(self.k),
            unwrap::<Autodiff<X>, _, _>(self.v),
        ];
        let op = AttentionBackward { shape: self.shape };
        wrap::<B, Autodiff<X>, _>(record(op, qkv, |[q, k, v]| {
            let (out, saved) = attention_host::<X>(self.shape, q, k, v);
            (saved, out)
        }))
    }

    fn inner<X: Backend>(self) -> Tensor<B, 4> {
        let (q, k, v) = (
            unwrap::<X, _, _>(self.q),
            unwrap::<X, _, _>(self.k),
            unwrap::<X, _, _>(self.v),
        );
        wrap::<B, X, _>(attention_host::<X>(self.shape, q, k, v).0)
    }

    fn plain(self) -> Tensor<B, 4> {
        attention_plain(self.q, self.k, self.v, self.s)
    }
}

// ---- AdamW -----------------------------------------------------------------------------------

/// The AdamW scalars rounded to f32 where the tensor-op path rounds them: where each meets the
/// tensor.
fn adamw_step(s: &AdamWScalars) -> AdamWStep {
    AdamWStep {
        beta1: s.beta1 as f32,
        one_minus_beta1: (1.0 - s.beta1) as f32,
        beta2: s.beta2 as f32,
        one_minus_beta2: (1.0 - s.beta2) as f32,
        bc2_sqrt: s.bc2_sqrt as f32,
        eps: s.eps as f32,
        decay: s.decay.map(|d| d as f32),
        step_size: s.step_size as f32,
    }
}

/// One parameter's update on the CPU backend (or the tensor ops elsewhere).
struct AdamW<B: Backend> {
    s: AdamWScalars,
    x: AdamWTensors<B>,
}

impl<B: Backend> AdamW<B> {
    fn host(self) -> (Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>) {
        let step = adamw_step(&self.s);
        let device = self.x.p.device();
        let n = self.x.p.dims()[0];
        let vec = |t: Tensor<B, 1>| t.into_data().into_vec::<f32>().expect("f32 optimizer state");
        let AdamWTensors { p, g, m, v } = self.x;
        let (mut p, g, mut m, mut v) = (vec(p), vec(g), vec(m), vec(v));
        colossus_kernels::adamw(step, &mut p, &g, &mut m, &mut v);
        let back = |x: Vec<f32>| Tensor::<B, 1>::from_data(TensorData::new(x, [n]), &device);
        (back(p), back(m), back(v))
    }
}

impl<B: Backend> HostKernel for AdamW<B> {
    type Output = (Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>);

    /// The optimizer works on inner (non-autodiff) tensors; an autodiff caller gets the same
    /// host update.
    fn autodiff<X: Backend>(self) -> Self::Output {
        self.host()
    }

    fn inner<X: Backend>(self) -> Self::Output {
        self.host()
    }

    fn plain(self) -> Self::Output {
        adamw_plain(&self.s, self.x)
    }
}

/// Every parameter's update on the GPU backends, in one `GpuOps::adamw` call.
struct AdamWMany<B: Backend> {
    s: AdamWScalars,
    xs: Vec<AdamWTensors<B>>,
}

impl<B: Backend> GpuKernel for AdamWMany<B> {
    type Output = Vec<(Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>)>;

    /// The optimizer works on inner tensors; an autodiff caller gets the tensor-op update.
    fn gpu_autodiff<X: GpuOps>(self) -> Self::Output {
        let s = self.s;
        self.xs.into_iter().map(|x| adamw_plain(&s, x)).collect()
    }

    fn gpu_inner<X: GpuOps>(self) -> Self::Output {
        let sets = self
            .xs
            .into_iter()
            .map(|AdamWTensors { p, g, m, v }| [p, g, m, v].map(unwrap::<X, B, 1>))
            .collect();
        X::adamw(sets, adamw_step(&self.s))
            .into_iter()
            .map(|[p, m, v]| (wrap::<B, X, 1>(p), wrap::<B, X, 1>(m), wrap::<B, X, 1>(v)))
            .collect()
    }
}

// ---- gradient clipping's passes ---------------------------------------------------------------

/// Σ x² over every element of the f32 tensors `xs`, read back to the host, where the GPU kernels
/// run (`GpuOps::sum_squares`: partial sums in a few launches, then one for their total); `None`
/// elsewhere and under `plain_scope`, where the caller keeps its own path.
pub fn sum_squares<B: Backend>(xs: &[Tensor<B, 1>]) -> Option<f64> {
    if xs.is_empty() || !xs.iter().all(|x| fused_allowed(x.dtype())) {
        return None;
    }
    let total = run_gpu_kernel::<B, _>(SumSquares(xs.to_vec())).ok()??;
    Some(total.into_scalar().elem::<f64>())
}

/// Each of the f32 tensors `xs` times `factor` (rounded to f32, as `mul_scalar` rounds it), in a
/// few launches and in place where not shared, where the GPU kernels run; `Err(xs)` back
/// elsewhere.
pub fn scale<B: Backend>(xs: Vec<Tensor<B, 1>>, factor: f64) -> Result<Vec<Tensor<B, 1>>, Vec<Tensor<B, 1>>> {
    if !xs.iter().all(|x| fused_allowed(x.dtype())) {
        return Err(xs);
    }
    run_gpu_kernel::<B, _>(Scale(xs, factor)).map_err(|Scale(xs, _)| xs)
}

struct SumSquares<B: Backend>(Vec<Tensor<B, 1>>);

impl<B: Backend> GpuKernel for SumSquares<B> {
    type Output = Option<Tensor<B, 1>>;

    /// Gradients are inner tensors; an autodiff caller keeps its own path.
    fn gpu_autodiff<X: GpuOps>(self) -> Self::Output {
        None
    }

    fn gpu_inner<X: GpuOps>(self) -> Self::Output {
        let xs = self.0.into_iter().map(unwrap::<X, B, 1>).collect();
        Some(wrap::<B, X, 1>(X::sum_squares(xs)))
    }
}

struct Scale<B: Backend>(Vec<Tensor<B, 1>>, f64);

impl<B: Backend> GpuKernel for Scale<B> {
    type Output = Vec<Tensor<B, 1>>;

    /// Gradients are inner tensors; an autodiff caller gets the tensor ops.
    fn gpu_autodiff<X: GpuOps>(self) -> Self::Output {
        let factor = self.1;
        self.0.into_iter().map(|x| x.mul_scalar(factor)).collect()
    }

    fn gpu_inner<X: GpuOps>(self) -> Self::Output {
        let xs = self.0.into_iter().map(unwrap::<X, B, 1>).collect();
        X::scale(xs, self.1 as f32)
            .into_iter()
            .map(wrap::<B, X, 1>)
            .collect()
    }
}

// ---- RMSNorm ---------------------------------------------------------------------------------

/// `w ⊙ x / sqrt(mean(x²) + eps)` over the last dimension; `w: [d]`.
pub fn rms_norm<B: Backend, const D: usize>(x: Tensor<B, D>, w: Tensor<B, 1>, eps: f64) -> Tensor<B, D> {
    if !fused_allowed(x.dtype()) || w.dtype() != DType::F32 {
        return rms_norm_plain(x, w, eps);
    }
    let k = GpuRmsNorm { x, w, h: None, eps };
    run_gpu_kernel::<B, _>(k).unwrap_or_else(|k| {
        run_kernel::<B, _>(RmsNorm {
            x: k.x,
            w: k.w,
            eps: k.eps,
        })
    })
}

fn rms_norm_plain<B: Backend, const D: usize>(x: Tensor<B, D>, w: Tensor<B, 1>, eps: f64) -> Tensor<B, D> {
    let rms = x.clone().square().mean_dim(D - 1).add_scalar(eps).sqrt(); // [..., 1]
    x.div(rms).mul(w.unsqueeze::<D>())
}

/// `h + rms_norm(x, w, eps)`: a sandwich norm's output joined to the residual stream `h`. On a
/// GPU with `h` and `w` in f32, one kernel writes the sum (`GpuOps::rms_norm_fwd` with a
/// residual), where the add was a launch of its own that read the norm's output back: two
/// passes over `[tokens, d_model]` and a launch saved per sub-layer. Its backward is the
/// norm's, `h` taking the output's gradient as it is. `x` may be bf16 or f16 (attention's
/// output under mixed precision): the kernel reads it as it is and computes in f32, and the
/// backward writes its gradient in that dtype, where a cast each way widened it before and
/// rounded its gradient after (the same values). Elsewhere `x` is widened, then the norm and
/// the add (the CPU's bits).
pub fn rms_norm_residual<B: Backend, const D: usize>(
    h: Tensor<B, D>,
    x: Tensor<B, D>,
    w: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let gpu = gpu_allowed(x.dtype()) && h.dtype() == DType::F32 && w.dtype() == DType::F32;
    let k = GpuRmsNorm {
        x,
        w,
        h: Some(h),
        eps,
    };
    run_gpu_kernel_or::<B, _>(k, gpu, |k| {
        let x = precision::upcast(k.x).0;
        k.h.expect("built with the residual") + rms_norm(x, k.w, k.eps)
    })
}

struct RmsNorm<B: Backend, const D: usize> {
    x: Tensor<B, D>,
    w: Tensor<B, 1>,
    eps: f64,
}

/// The GPU's node, with the residual `h` added in the kernel when given.
struct GpuRmsNorm<B: Backend, const D: usize> {
    x: Tensor<B, D>,
    w: Tensor<B, 1>,
    h: Option<Tensor<B, D>>,
    eps: f64,
}

/// Output, and x, w and 1/rms for the backward.
#[allow(clippy::type_complexity)]
fn rms_norm_host<X: Backend, const D: usize>(
    x: FloatTensor<X>,
    w: FloatTensor<X>,
    eps: f64,
) -> (FloatTensor<X>, FloatTensor<X>, FloatTensor<X>, Arc<Vec<f32>>) {
    let (x, dims, device) = host::<X, D>(x);
    let (w, wd, _) = host::<X, 1>(w);
    let mut y = vec![0f32; x.len()];
    let mut inv = vec![0f32; x.len() / w.len()];
    colossus_kernels::rms_norm(&x, &w, eps as f32, &mut y, &mut inv);
    (
        primitive::<X, D>(y, dims, &device),
        primitive::<X, D>(x, dims, &device),
        primitive::<X, 1>(w, wd, &device),
        Arc::new(inv),
    )
}

#[derive(Debug)]
struct RmsNormBackward<const D: usize>;

impl<X: Backend, const D: usize> Backward<X, 2> for RmsNormBackward<D> {
    type State = (FloatTensor<X>, FloatTensor<X>, Arc<Vec<f32>>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, w, inv) = ops.state;
        let (g, dims, device) = host::<X, D>(grads.consume::<X>(&ops.node));
        let (x, _, _) = host::<X, D>(x);
        let (w, wd, _) = host::<X, 1>(w);
        let (mut dx, mut dw) = (vec![0f32; x.len()], vec![0f32; w.len()]);
        colossus_kernels::rms_norm_backward(&x, &w, &inv, &g, &mut dx, &mut dw);
        let [px, pw] = ops.parents;
        if let Some(node) = px {
            grads.register::<X>(node.id, primitive::<X, D>(dx, dims, &device));
        }
        if let Some(node) = pw {
            grads.register::<X>(node.id, primitive::<X, 1>(dw, wd, &device));
        }
    }
}

impl<B: Backend, const D: usize> HostKernel for RmsNorm<B, D> {
    type Output = Tensor<B, D>;

    fn autodiff<X: Backend>(self) -> Tensor<B, D> {
        let xw = [
            unwrap::<Autodiff<X>, _, _>(self.x),
            unwrap::<Autodiff<X>, _, _>(self.w),
        ];
        wrap::<B, Autodiff<X>, _>(record(RmsNormBackward::<D>, xw, |[x, w]| {
            let (y, x, w, inv) = rms_norm_host::<X, D>(x, w, self.eps);
            ((x, w, inv), y)
        }))
    }

    fn inner<X: Backend>(self) -> Tensor<B, D> {
        let (y, _, _, _) =
            rms_norm_host::<X, D>(unwrap::<X, _, _>(self.x), unwrap::<X, _, _>(self.w), self.eps);
        wrap::<B, X, _>(y)
    }

    fn plain(self) -> Tensor<B, D> {
        rms_norm_plain(self.x, self.w, self.eps)
    }
}

#[derive(Debug)]
struct GpuRmsNormBackward<const D: usize>;

impl<const D: usize> GpuRmsNormBackward<D> {
    /// The gradients of `x` and `w` from the forward's `x`, `w` and 1/rms and the output's `g`,
    /// in one launch and a column sum (`GpuOps::rms_norm_bwd`).
    fn grads<X: GpuOps>(
        state: (FloatTensor<X>, FloatTensor<X>, FloatTensor<X>),
        g: FloatTensor<X>,
        parents: [Option<NodeId>; 2],
        grads: &mut Gradients,
    ) {
        let (x, w, inv) = state;
        register_each::<X, 2>(parents, X::rms_norm_bwd(x, w, inv, g), grads);
    }
}

impl<X: GpuOps, const D: usize> Backward<X, 2> for GpuRmsNormBackward<D> {
    type State = (FloatTensor<X>, FloatTensor<X>, FloatTensor<X>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<X>(&ops.node);
        let parents = ops.parents.map(|p| p.map(|n| n.id));
        Self::grads::<X>(ops.state, g, parents, grads);
    }
}

/// With the residual `h` as the third parent: its gradient is the output's.
impl<X: GpuOps, const D: usize> Backward<X, 3> for GpuRmsNormBackward<D> {
    type State = (FloatTensor<X>, FloatTensor<X>, FloatTensor<X>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<X>(&ops.node);
        let [px, pw, ph] = ops.parents.map(|p| p.map(|n| n.id));
        if let Some(id) = ph {
            grads.register::<X>(id, g.clone());
        }
        Self::grads::<X>(ops.state, g, [px, pw], grads);
    }
}

impl<B: Backend, const D: usize> GpuKernel for GpuRmsNorm<B, D> {
    type Output = Tensor<B, D>;

    fn gpu_autodiff<X: GpuOps>(self) -> Tensor<B, D> {
        let (x, w) = (
            unwrap::<Autodiff<X>, _, _>(self.x),
            unwrap::<Autodiff<X>, _, _>(self.w),
        );
        let eps = self.eps as f32;
        let op = GpuRmsNormBackward::<D>;
        let y = match self.h.map(unwrap::<Autodiff<X>, _, _>) {
            None => record(op, [x, w], |[x, w]| {
                let (y, inv) = X::rms_norm_fwd(x.clone(), w.clone(), None, eps);
                ((x, w, inv), y)
            }),
            Some(h) => record(op, [x, w, h], |[x, w, h]| {
                let (y, inv) = X::rms_norm_fwd(x.clone(), w.clone(), Some(h), eps);
                ((x, w, inv), y)
            }),
        };
        wrap::<B, Autodiff<X>, _>(y)
    }

    fn gpu_inner<X: GpuOps>(self) -> Tensor<B, D> {
        let h = self.h.map(unwrap::<X, _, _>);
        let (x, w) = (unwrap::<X, _, _>(self.x), unwrap::<X, _, _>(self.w));
        wrap::<B, X, _>(X::rms_norm_fwd(x, w, h, self.eps as f32).0)
    }
}

// ---- cross-entropy ---------------------------------------------------------------------------

/// Mean cross-entropy of `logits: [n, vocab]` against `targets: [n]`, shape `[1]`.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    if !fused_allowed(logits.dtype()) {
        return cross_entropy_plain(logits, targets);
    }
    run_gpu_kernel::<B, _>(CrossEntropy { logits, targets }).unwrap_or_else(run_kernel::<B, _>)
}

fn cross_entropy_plain<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let n = targets.dims()[0];
    let logp = log_softmax(logits, 1); // [n, v]
    let picked = logp.gather(1, targets.reshape([n, 1])); // [n, 1]
    picked.mean().neg()
}

struct CrossEntropy<B: Backend> {
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
}

fn targets_host<B: Backend>(t: Tensor<B, 1, Int>, vocab: usize) -> Arc<Vec<usize>> {
    let ids = t
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .expect("integer targets");
    Arc::new(
        ids.into_iter()
            .map(|id| {
                assert!(
                    (0..vocab as i64).contains(&id),
                    "target id {id} outside the vocabulary of {vocab}"
                );
                id as usize
            })
            .collect(),
    )
}

/// The mean loss as a `[1]` primitive, the logits handed back (same buffer) and the per-row
/// log-sum-exp, for the backward.
fn cross_entropy_host<X: Backend>(
    logits: FloatTensor<X>,
    targets: &[usize],
) -> (FloatTensor<X>, FloatTensor<X>, Arc<Vec<f32>>) {
    let (x, dims, device) = host::<X, 2>(logits);
    let mut lse = vec![0f32; dims[0]];
    let loss = colossus_kernels::cross_entropy(&x, dims[1], targets, &mut lse);
    (
        primitive::<X, 1>(vec![loss], [1], &device),
        primitive::<X, 2>(x, dims, &device),
        Arc::new(lse),
    )
}

#[derive(Debug)]
struct CrossEntropyBackward;

impl<X: Backend> Backward<X, 1> for CrossEntropyBackward {
    type State = (FloatTensor<X>, Arc<Vec<usize>>, Arc<Vec<f32>>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, targets, lse) = ops.state;
        unary::<X, _>(ops.parents, ops.node, grads, |g| {
            let (g, _, _) = host::<X, 1>(g);
            let (mut d, dims, device) = host::<X, 2>(logits);
            let scale = g[0] / targets.len() as f32;
            colossus_kernels::cross_entropy_backward(&mut d, dims[1], &targets, &lse, scale);
            primitive::<X, 2>(d, dims, &device)
        });
    }
}

impl<B: Backend> HostKernel for CrossEntropy<B> {
    type Output = Tensor<B, 1>;

    fn autodiff<X: Backend>(self) -> Tensor<B, 1> {
        let targets = targets_host(self.targets, self.logits.dims()[1]);
        let x = unwrap::<Autodiff<X>, _, _>(self.logits);
        wrap::<B, Autodiff<X>, _>(record(CrossEntropyBackward, [x], |[x]| {
            let (loss, x, lse) = cross_entropy_host::<X>(x, &targets);
            ((x, targets.clone(), lse), loss)
        }))
    }

    fn inner<X: Backend>(self) -> Tensor<B, 1> {
        let targets = targets_host(self.targets, self.logits.dims()[1]);
        let (loss, _, _) = cross_entropy_host::<X>(unwrap::<X, _, _>(self.logits), &targets);
        wrap::<B, X, _>(loss)
    }

    fn plain(self) -> Tensor<B, 1> {
        cross_entropy_plain(self.logits, self.targets)
    }
}

#[derive(Debug)]
struct GpuCrossEntropyBackward;

impl<X: GpuOps> Backward<X, 1> for GpuCrossEntropyBackward {
    type State = (FloatTensor<X>, IntTensor<X>, FloatTensor<X>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, targets, lse) = ops.state;
        unary::<X, _>(ops.parents, ops.node, grads, |g| {
            X::cross_entropy_bwd(logits, targets, lse, g)
        });
    }
}

/// The mean loss `[1]` of the rows' negative log-likelihoods `[n]`: our sum (`GpuOps::sum`, the
/// same bits every run; burn's reduction gave a wrong sum on lavapipe past 65 536 rows) over n.
fn gpu_mean_loss<X: GpuOps>(nll: FloatTensor<X>) -> FloatTensor<X> {
    let n = nll.shape().num_elements();
    Tensor::<X, 1>::from_primitive(TensorPrimitive::Float(X::sum(nll)))
        .div_scalar(n as f64)
        .into_primitive()
        .tensor()
}

impl<B: Backend> GpuKernel for CrossEntropy<B> {
    type Output = Tensor<B, 1>;

    fn gpu_autodiff<X: GpuOps>(self) -> Tensor<B, 1> {
        // Autodiff's integer tensors are the inner backend's.
        let targets: IntTensor<X> = same::<_, Tensor<Autodiff<X>, 1, Int>>(self.targets).into_primitive();
        let x = unwrap::<Autodiff<X>, _, _>(self.logits);
        wrap::<B, Autodiff<X>, _>(record(GpuCrossEntropyBackward, [x], |[x]| {
            let (nll, lse) = X::cross_entropy_fwd(x.clone(), targets.clone());
            ((x, targets, lse), gpu_mean_loss::<X>(nll))
        }))
    }

    fn gpu_inner<X: GpuOps>(self) -> Tensor<B, 1> {
        let targets: IntTensor<X> = same::<_, Tensor<X, 1, Int>>(self.targets).into_primitive();
        let (nll, _) = X::cross_entropy_fwd(unwrap::<X, _, _>(self.logits), targets);
        wrap::<B, X, _>(gpu_mean_loss::<X>(nll))
    }
}

// ---- RoPE ------------------------------------------------------------------------------------

/// RoPE on `x: [batch, seq, heads, head_dim]` (the projection's own layout) for the positions
/// of `tables`, returned as `[batch, heads, seq, head_dim]`, attention's layout. On a GPU the
/// kernel writes that layout itself, each way, where a rotation followed by a transposed view
/// left the matrix products a copy to make in the forward and the kernel one in the backward
/// (four passes over q and k a layer). The CPU rotates in place and returns a transposed view.
/// A bf16 or f16 `x` (a projection's product under mixed precision) comes back in its dtype,
/// rotated in f32 and rounded once: the GPU kernel reads and writes it as it is, elsewhere it
/// is widened first and the result rounded back (the same values, two casts more).
pub fn rope<B: Backend>(x: Tensor<B, 4>, tables: &RopeTables<B>) -> Tensor<B, 4> {
    let dtype = x.dtype();
    run_gpu_kernel_or::<B, _>(RopeKernel { x, tables }, gpu_allowed(dtype), |k| {
        let (x, dtype) = precision::upcast(k.x);
        let wide = x.dtype();
        let y = host_or_plain::<B, _>(RopeKernel { x, tables }, wide);
        precision::restore(y, dtype)
    })
}

fn rope_plain<B: Backend>(x: Tensor<B, 4>, tables: &RopeTables<B>) -> Tensor<B, 4> {
    tables.apply(x.swap_dims(1, 2))
}

struct RopeKernel<'a, B: Backend> {
    x: Tensor<B, 4>,
    tables: &'a RopeTables<B>,
}

/// What the backward needs to rotate the gradient back.
#[derive(Debug, Clone)]
struct RopeState {
    t: usize,
    heads: usize,
    head_dim: usize,
    cos: Arc<Vec<f32>>,
    sin: Arc<Vec<f32>>,
}

impl RopeState {
    fn apply<X: Backend>(&self, x: FloatTensor<X>, inverse: bool) -> FloatTensor<X> {
        let (mut v, dims, device) = host::<X, 4>(x);
        let r = colossus_kernels::Rope {
            t: self.t,
            heads: self.heads,
            head_dim: self.head_dim,
            cos: &self.cos,
            sin: &self.sin,
        };
        colossus_kernels::rope(r, &mut v, inverse);
        primitive::<X, 4>(v, dims, &device)
    }
}

#[derive(Debug)]
struct RopeBackward;

impl<X: Backend> Backward<X, 1> for RopeBackward {
    type State = RopeState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        unary::<X, _>(ops.parents, ops.node, grads, |g| ops.state.apply::<X>(g, true));
    }
}

impl<B: Backend> RopeKernel<'_, B> {
    fn state(&self) -> RopeState {
        let [_, t, heads, head_dim] = self.x.dims();
        RopeState {
            t,
            heads,
            head_dim,
            cos: self.tables.host_cos.clone(),
            sin: self.tables.host_sin.clone(),
        }
    }
}

impl<B: Backend> HostKernel for RopeKernel<'_, B> {
    type Output = Tensor<B, 4>;

    fn autodiff<X: Backend>(self) -> Tensor<B, 4> {
        let state = self.state();
        let x = unwrap::<Autodiff<X>, _, _>(self.x);
        let y: Tensor<B, 4> = wrap::<B, Autodiff<X>, _>(record(RopeBackward, [x], |[x]| {
            let y = state.apply::<X>(x, false);
            (state, y)
        }));
        y.swap_dims(1, 2)
    }

    fn inner<X: Backend>(self) -> Tensor<B, 4> {
        let state = self.state();
        let y: Tensor<B, 4> = wrap::<B, X, _>(state.apply::<X>(unwrap::<X, _, _>(self.x), false));
        y.swap_dims(1, 2)
    }

    fn plain(self) -> Tensor<B, 4> {
        rope_plain(self.x, self.tables)
    }
}

#[derive(Debug)]
struct GpuRopeBackward;

impl<X: GpuOps> Backward<X, 1> for GpuRopeBackward {
    /// The `[cos, sin]` tables.
    type State = [FloatTensor<X>; 2];

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        unary::<X, _>(ops.parents, ops.node, grads, |g| X::rope(g, ops.state, true));
    }
}

/// On a GPU: one pass each way instead of the plain path's halves, negation, concatenation and
/// products (and their autodiff backward: each slice's gradient written into a zeroed tensor).
impl<B: Backend> GpuKernel for RopeKernel<'_, B> {
    type Output = Tensor<B, 4>;

    fn gpu_autodiff<X: GpuOps>(self) -> Tensor<B, 4> {
        // The tables are constants: their autodiff wrappers track nothing.
        let cs =
            [&self.tables.cos, &self.tables.sin].map(|t| unwrap::<Autodiff<X>, _, _>(t.clone()).primitive);
        let x = unwrap::<Autodiff<X>, _, _>(self.x);
        wrap::<B, Autodiff<X>, _>(record(GpuRopeBackward, [x], |[x]| {
            (cs.clone(), X::rope(x, cs, false))
        }))
    }

    fn gpu_inner<X: GpuOps>(self) -> Tensor<B, 4> {
        let cs = [&self.tables.cos, &self.tables.sin].map(|t| unwrap::<X, _, _>(t.clone()));
        wrap::<B, X, _>(X::rope(unwrap::<X, _, _>(self.x), cs, false))
    }
}
