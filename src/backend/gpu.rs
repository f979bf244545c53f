//! The GPU kernels of our fused ops, as cubecl kernels on wgpu and CUDA: the attention soft cap +
//! causal softmax (also the router's plain softmax), RMSNorm and the cross-entropy, twins of
//! `colossus_kernels`' CPU passes (`backend::GpuOps`); the launch of the vendored cubek
//! flash-attention kernel behind `attention: flash` (`model::flash`); the output head's bf16 × bf16
//! → f32 product (`model::wide`), burn's own matmul asked for an f32 output; the experts' GELU gate
//! and RoPE, one launch each way (`model::fused::gelu_gate`, `model::fused::rope`); the MoE's
//! combine of the experts' outputs and its backward (`model::combine`); and the optimizer's
//! multi-tensor passes, up to 32 tensors a launch: AdamW (`model::fused::adamw`) and gradient
//! clipping's sum of squares and rescale (`train::grads`).
//!
//! Which ops: the ones burn's fusion leaves in pieces. Counted on lavapipe (`cargo run --features
//! wgpu --example kernel_launches`, forward + backward and the same small harness on both paths):
//! the softmax takes 8 launches with these kernels against 15 on the plain burn composition,
//! RMSNorm 9 against 17 (its dw summed from the backward kernel's per-chunk partials by
//! `col_sum_kernel`), the cross-entropy 4 against 19. The cross-entropy matters most on a GPU
//! preset: its `[tokens, vocab]` logits are the step's largest activation, and each extra pass over
//! them is one more read or write of it. The AdamW and GELU-gate kernels pay off only in a whole
//! step: alone, the GELU gate fuses into one kernel each way (8 launches with its kernels against
//! 7: the harness's `· u` no longer joins it), but in the grouped experts node only each layer's
//! first expert's gate fused, the others ran as nine kernels each; and fusion's 64-op blocks split
//! the optimizer's updates, leaving 348 stray multiplies a step at `gpu-350m` (docs/benchmarks.md,
//! "Launches per training step"). RoPE takes 8 launches against 17, its two kernels in place of
//! eleven, and writes attention's head-major layout itself (each way), where a transposed view left
//! a copy to the matrix products. Passes that followed a kernel are folded into it where it already
//! reads their inputs: the sandwich norm's residual add, the gate's value in its backward,
//! RMSNorm's weight gradient. The gate also reads its two inputs side by side from one product
//! (`packed`), so that an expert's two up projections are one GEMM each way (`model::experts`),
//! with `pack_up_kernel` putting their weights so and casting them in the launch the casts took.
//!
//! The softmax: the plain path (×multiplier, ÷cap, tanh, ×cap, + causal bias, then softmax's max,
//! subtract, exp, sum, divide) is two reductions with element-wise chains between them, and its
//! autodiff keeps `[b, h, s, s]` intermediates for the backward. Here the forward reads the
//! logits three times (per row, from cache) and writes the probabilities once, and each row's
//! log-sum-exp; the backward reads the probabilities and the incoming gradient and writes the
//! logits' gradient, recomputing each tanh from its probability (the capped logit is
//! `ln p + lse`). The CPU twin keeps the tanh values instead; here that would be one more
//! `[b, h, s, s]` write and read per layer (2.1 GB of traffic and 1.1 GB held per layer at
//! `gpu-350m`, docs/benchmarks.md). The matmuls on either side stay burn's (tensor cores).
//!
//! One cube per row (128 threads; a softmax row shorter than that, fewer: `softmax_block`). A row's
//! reductions (softmax and cross-entropy: max, then the sum of exponentials, and Σ p·g in the
//! softmax's backward; RMSNorm: Σ x², and Σ g·w·x̂ in the backward) are a fixed tree in shared
//! memory, so results do not depend on scheduling. Masked columns are skipped, not set to −∞: WGSL
//! has no −∞ literal.

use std::sync::Mutex;

use burn::tensor::ops::{FloatTensor, FloatTensorOps, IntTensor};
use burn::tensor::{DType, FloatDType, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::kernel::matmul::{MatmulStrategy, matmul};
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime, FusionTensor};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
use colossus_kernels::{AdamWStep, CappedSoftmax};
use cubecl::prelude::*;
use cubek_attention::definition::{
    AccumulatorPrecision, AttentionGlobalTypes, AttentionOptions, ScoreOptions,
};
use cubek_attention::launch::{BlueprintStrategy, Strategy, launch_ref_scored};
use cubek_attention::routines::blackbox_accelerated::BlackboxAcceleratedStrategy;

use super::{DeviceMemory, FlashBwdPlan, FlashOp, GpuOps, flash_bwd};

/// Threads per row. 128 covers a 4096-key row in 32 strides; most rows of a training step are
/// at least that long on a GPU preset, and shorter ones only leave threads idle.
const BLOCK: u32 = 128;

/// The row's scalars, as the kernels take them.
fn scalars(op: &CappedSoftmax) -> (u32, u32, f32, f32) {
    // Non-causal: every row sees all columns, as if each row were the last of its block.
    let (t, past) = op.causal.unwrap_or((1, op.cols - 1));
    (t as u32, past as u32, op.multiplier, op.cap)
}

// ---- kernels ---------------------------------------------------------------------------------

/// The tree reduction of one value per thread over the cube (a power of two wide, `smem` as
/// wide): max when `max`, else sum. Every thread gets the result.
#[cube]
fn cube_reduce<F: Float>(smem: &mut SharedMemory<F>, value: F, #[comptime] max: bool) -> F {
    let u = UNIT_POS_X as usize;
    smem[u] = value;
    sync_cube();
    // A runtime value (the cube is `BLOCK` wide): a comptime one could not be halved in the loop.
    let mut stride = CUBE_DIM_X as usize / 2;
    while stride > 0 {
        if u < stride {
            let a = smem[u];
            let b = smem[u + stride];
            if max {
                if b > a {
                    smem[u] = b;
                }
            } else {
                smem[u] = a + b;
            }
        }
        sync_cube();
        stride /= 2;
    }
    let out = smem[0];
    // Nobody overwrites slot 0 for the next reduction before everyone has read it.
    sync_cube();
    out
}

/// The capped logit `cap·tanh(multiplier·x/cap)` and its tanh (`multiplier·x` and 0 uncapped).
#[cube]
fn capped<F: Float>(x: F, multiplier: F, cap: F, #[comptime] has_cap: bool) -> (F, F) {
    if has_cap {
        let t = (x * multiplier / cap).tanh();
        (t * cap, t)
    } else {
        (x * multiplier, F::new(0.0))
    }
}

/// The probabilities in the logits' dtype `X` (the products' input), each row's `lse` in `F` (f32
/// for half logits) and, with `keep_wide`, the probabilities in `F` too (the backward's state;
/// else `p` is a one-element placeholder): computed in `F` from the logits read as they are, as
/// widening them, the f32 kernel and a cast of its output would give, without the f32 logits'
/// and the cast's passes. For f32 logits `X` is `F` and `probs` is all there is to write.
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
fn capped_softmax_fwd_kernel<F: Float, X: Float>(
    x: &Tensor<X>,         // [rows, cols], contiguous
    probs: &mut Tensor<X>, // [rows, cols]
    p: &mut Tensor<F>,     // [rows, cols] with keep_wide, else [1]
    lse: &mut Tensor<F>,   // [rows]: ln Σ exp(capped logit)
    rows: u32,
    cols: u32,
    t: u32,
    past: u32,
    multiplier: f32,
    cap: f32,
    #[comptime] has_cap: bool,
    #[comptime] keep_wide: bool,
    #[comptime] block: u32,
    #[define(F, X)] _dtypes: [StorageType; 2],
) {
    // The grid's spare cubes (`row_grid`) have no row.
    let row = CUBE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let cols = cols as usize;
    let base = row * cols;
    let mut visible = (past + (row as u32) % t + 1) as usize;
    if visible > cols {
        visible = cols;
    }
    let multiplier = F::cast_from(multiplier);
    let cap = F::cast_from(cap);
    let step = CUBE_DIM_X as usize;
    let mut smem = SharedMemory::<F>::new(block as usize);

    // Any finite start works: every row sees at least column 0, and the tree takes the max.
    let mut local = F::new(-3.0e38);
    let mut j = UNIT_POS_X as usize;
    while j < visible {
        let (z, _) = capped::<F>(F::cast_from(x[base + j]), multiplier, cap, has_cap);
        if z > local {
            local = z;
        }
        j += step;
    }
    let row_max = cube_reduce::<F>(&mut smem, local, true);

    let mut local = F::new(0.0);
    let mut j = UNIT_POS_X as usize;
    while j < visible {
        let (z, _) = capped::<F>(F::cast_from(x[base + j]), multiplier, cap, has_cap);
        local += (z - row_max).exp();
        j += step;
    }
    let sum = cube_reduce::<F>(&mut smem, local, false);
    let inv = F::new(1.0) / sum;
    if UNIT_POS_X == 0 {
        lse[row] = row_max + sum.ln();
    }

    let mut j = UNIT_POS_X as usize;
    while j < cols {
        let mut pj = F::new(0.0);
        if j < visible {
            let (z, _) = capped::<F>(F::cast_from(x[base + j]), multiplier, cap, has_cap);
            pj = (z - row_max).exp() * inv;
        }
        probs[base + j] = X::cast_from(pj);
        if keep_wide {
            p[base + j] = pj;
        }
        j += step;
    }
}

/// The logits' gradient in `D` from `p` and `lse` in `F` and the probabilities' gradient in `G`,
/// computed in `F`: as widening `g`, the f32 kernel and a cast of its result would give.
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
fn capped_softmax_bwd_kernel<F: Float, G: Float, D: Float>(
    p: &Tensor<F>,      // [rows, cols], contiguous
    lse: &Tensor<F>,    // [rows]
    g: &Tensor<G>,      // [rows, cols]
    dx: &mut Tensor<D>, // [rows, cols]
    rows: u32,
    cols: u32,
    multiplier: f32,
    cap: f32,
    #[comptime] has_cap: bool,
    #[comptime] block: u32,
    #[define(F, G, D)] _dtypes: [StorageType; 3],
) {
    // The grid's spare cubes (`row_grid`) have no row.
    let row = CUBE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let cols = cols as usize;
    let base = row * cols;
    let multiplier = F::cast_from(multiplier);
    let cap = F::cast_from(cap);
    let row_lse = lse[row];
    let step = CUBE_DIM_X as usize;
    let mut smem = SharedMemory::<F>::new(block as usize);

    // Masked columns have p = 0, so they add nothing and get a zero gradient.
    let mut local = F::new(0.0);
    let mut j = UNIT_POS_X as usize;
    while j < cols {
        local += p[base + j] * F::cast_from(g[base + j]);
        j += step;
    }
    let pg = cube_reduce::<F>(&mut smem, local, false);

    let mut j = UNIT_POS_X as usize;
    while j < cols {
        // d softmax, then d(cap·tanh(m·x/cap))/dx = m·(1 − tanh²).
        let pj = p[base + j];
        let dz = pj * (F::cast_from(g[base + j]) - pg);
        if has_cap {
            // tanh = z / cap with the capped logit z = ln p + lse, from the forward's p =
            // exp(z − lse). A zero p (masked, or underflowed) has dz = 0 and no logarithm. The
            // clamp keeps a saturated tanh that rounds past ±1 from flipping the sign.
            let mut d = F::new(0.0);
            if pj > F::new(0.0) {
                let tv = (pj.ln() + row_lse) / cap;
                d = dz * multiplier * F::max(F::new(1.0) - tv * tv, F::new(0.0));
            }
            dx[base + j] = D::cast_from(d);
        } else {
            dx[base + j] = D::cast_from(dz * multiplier);
        }
        j += step;
    }
}

/// `y = x̂ ⊙ w`, or `h + x̂ ⊙ w` with `residual` (the sandwich norm's output and its residual add
/// in one pass: `h` is not read otherwise, and `w` is bound in its place).
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
fn rms_norm_fwd_kernel<F: Float, X: Float>(
    x: &Tensor<X>,       // [rows, d], contiguous; read in its dtype, computed in F
    w: &Tensor<F>,       // [d]
    h: &Tensor<F>,       // [rows, d], contiguous
    y: &mut Tensor<F>,   // [rows, d]
    inv: &mut Tensor<F>, // [rows]
    rows: u32,
    d: u32,
    eps: f32,
    #[comptime] block: u32,
    #[comptime] residual: bool,
    #[define(F, X)] _dtypes: [StorageType; 2],
) {
    let row = CUBE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let base = row * d as usize;
    let step = CUBE_DIM_X as usize;
    let mut smem = SharedMemory::<F>::new(block as usize);
    let mut local = F::new(0.0);
    let mut j = UNIT_POS_X as usize;
    while j < d as usize {
        let v = F::cast_from(x[base + j]);
        local += v * v;
        j += step;
    }
    let ms = cube_reduce::<F>(&mut smem, local, false) / F::cast_from(d);
    let r = F::new(1.0) / (ms + F::cast_from(eps)).sqrt();
    if UNIT_POS_X == 0 {
        inv[row] = r;
    }
    let mut j = UNIT_POS_X as usize;
    while j < d as usize {
        let n = F::cast_from(x[base + j]) * r * w[j];
        if residual {
            y[base + j] = h[base + j] + n;
        } else {
            y[base + j] = n;
        }
        j += step;
    }
}

/// RMSNorm's backward for `per` rows a cube: each row's `dx` (its reduction a fixed tree), and
/// the chunk's share of `dw`, Σ over its rows in order of `g ⊙ x·(1/rms)`, each thread keeping
/// its `cols` columns' sums in registers, for `col_sum_kernel` to add up in chunk order. The
/// weight's gradient was burn's product and row reduction, two more launches and passes over
/// `[rows, d]` per norm.
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
fn rms_norm_bwd_kernel<F: Float, X: Float>(
    x: &Tensor<X>,           // [rows, d], contiguous; read in its dtype
    w: &Tensor<F>,           // [d]
    inv: &Tensor<F>,         // [rows]
    g: &Tensor<F>,           // [rows, d]
    dx: &mut Tensor<X>,      // [rows, d]: x's dtype, rounded once from F
    dw_part: &mut Tensor<F>, // [chunks, d]
    rows: u32,
    d: u32,
    per: u32,
    #[comptime] block: u32,
    #[comptime] cols: usize,
    #[define(F, X)] _dtypes: [StorageType; 2],
) {
    let chunk = CUBE_POS;
    let first = chunk * per as usize;
    if first >= rows as usize {
        terminate!();
    }
    let mut last = first + per as usize;
    if last > rows as usize {
        last = rows as usize;
    }
    let d = d as usize;
    let step = CUBE_DIM_X as usize;
    let mut smem = SharedMemory::<F>::new(block as usize);
    let mut part = Array::<F>::new(cols);
    #[unroll]
    for c in 0..cols {
        part[c] = F::new(0.0);
    }
    for row in first..last {
        let base = row * d;
        let r = inv[row];
        let mut local = F::new(0.0);
        let mut j = UNIT_POS_X as usize;
        while j < d {
            local += g[base + j] * w[j] * F::cast_from(x[base + j]) * r;
            j += step;
        }
        let mean = cube_reduce::<F>(&mut smem, local, false) / F::cast_from(d);
        // dx = r·(g⊙w − x̂·mean(g⊙w⊙x̂)), x̂ = x·r.
        #[unroll]
        for c in 0..cols {
            let j = UNIT_POS_X as usize + c * step;
            if j < d {
                let xj = F::cast_from(x[base + j]);
                dx[base + j] = X::cast_from(r * (g[base + j] * w[j] - xj * r * mean));
                part[c] += g[base + j] * xj * r;
            }
        }
    }
    #[unroll]
    for c in 0..cols {
        let j = UNIT_POS_X as usize + c * step;
        if j < d {
            dw_part[chunk * d + j] = part[c];
        }
    }
}

/// `out[j] = Σ_c part[c, j]`, in chunk order: one unit per column.
#[cube(launch)]
fn col_sum_kernel<F: Float>(
    part: &Tensor<F>,    // [chunks, d], contiguous
    out: &mut Tensor<F>, // [d]
    chunks: u32,
    d: u32,
    #[define(F)] _dtype: StorageType,
) {
    let j = ABSOLUTE_POS_X as usize;
    if j >= d as usize {
        terminate!();
    }
    let mut acc = F::new(0.0);
    for c in 0..chunks as usize {
        acc += part[c * d as usize + j];
    }
    out[j] = acc;
}

#[cube(launch)]
fn cross_entropy_fwd_kernel<F: Float, I: Numeric>(
    x: &Tensor<F>,       // [rows, vocab], contiguous
    targets: &Tensor<I>, // [rows]
    nll: &mut Tensor<F>, // [rows]
    lse: &mut Tensor<F>, // [rows]
    rows: u32,
    vocab: u32,
    #[comptime] block: u32,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let row = CUBE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let base = row * vocab as usize;
    let step = CUBE_DIM_X as usize;
    let mut smem = SharedMemory::<F>::new(block as usize);
    let mut local = F::new(-3.0e38);
    let mut j = UNIT_POS_X as usize;
    while j < vocab as usize {
        let v = x[base + j];
        if v > local {
            local = v;
        }
        j += step;
    }
    let row_max = cube_reduce::<F>(&mut smem, local, true);
    let mut local = F::new(0.0);
    let mut j = UNIT_POS_X as usize;
    while j < vocab as usize {
        local += (x[base + j] - row_max).exp();
        j += step;
    }
    let l = row_max + cube_reduce::<F>(&mut smem, local, false).ln();
    if UNIT_POS_X == 0 {
        // An id outside the vocabulary (the data pipeline checks ids) reads no logit.
        let t = u32::cast_from(targets[row]) as usize;
        let mut picked = l;
        if t < vocab as usize {
            picked = x[base + t];
        }
        nll[row] = l - picked;
        lse[row] = l;
    }
}

#[cube(launch)]
fn cross_entropy_bwd_kernel<F: Float, I: Numeric>(
    x: &Tensor<F>,       // [rows, vocab], contiguous
    targets: &Tensor<I>, // [rows]
    lse: &Tensor<F>,     // [rows]
    g: &Tensor<F>,       // [1]: the mean loss's gradient
    dx: &mut Tensor<F>,  // [rows, vocab]
    rows: u32,
    vocab: u32,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let row = CUBE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let base = row * vocab as usize;
    let step = CUBE_DIM_X as usize;
    let scale = g[0] / F::cast_from(rows);
    let l = lse[row];
    let t = u32::cast_from(targets[row]) as usize;
    // d mean(lse − x_t)/dx_j = (softmax_j − [j = t]) / rows.
    let mut j = UNIT_POS_X as usize;
    while j < vocab as usize {
        let mut d = scale * (x[base + j] - l).exp();
        if j == t {
            d -= scale;
        }
        dx[base + j] = d;
        j += step;
    }
}

/// Row `v` of the output is the sum of the rows `order[p]` of `g` for `p` in
/// `seg[v]..seg[v + 1]` (zeros for an empty range), in that order: the gradient of an embedding
/// lookup, with each row's positions listed by a counting sort on the host (`model::embedding`).
/// One cube per output row, its threads striding over the columns; a row's work is its
/// number of positions, so no thread walks every token as burn's `select_add` does.
#[cube(launch)]
fn rows_sum_kernel<F: Float, I: Numeric>(
    g: &Tensor<F>,       // [n, d], contiguous
    order: &Tensor<I>,   // [n]
    seg: &Tensor<I>,     // [rows + 1]
    out: &mut Tensor<F>, // [rows, d]
    rows: u32,
    d: u32,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let row = CUBE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let d = d as usize;
    let start = u32::cast_from(seg[row]) as usize;
    let end = u32::cast_from(seg[row + 1]) as usize;
    let mut c = UNIT_POS_X as usize;
    while c < d {
        let mut acc = F::new(0.0);
        for p in start..end {
            acc += g[u32::cast_from(order[p]) as usize * d + c];
        }
        out[row * d + c] = acc;
        c += CUBE_DIM_X as usize;
    }
}

/// The MoE's combine (`GpuOps::slot_sum`): row `t` of `out` is the sum over its `k` slots, in
/// order, of the grouped row each slot points at, times the slot's gate when `weighted`; a
/// grouped row is the sum, in order, of the parts whose range `starts[q]..ends[q]` holds it. So a
/// top-2 row is `a·g₀ + b·g₁`, the plain path's operations. One cube per row, its threads
/// striding over the columns; which part holds a row is the same for the whole cube, so the
/// unrolled tests do not diverge.
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
fn slot_sum_kernel<F: Float, G: Float, I: Numeric>(
    parts: &Sequence<Tensor<F>>, // [m_q, d] each, contiguous
    starts: Sequence<u32>,
    ends: Sequence<u32>,
    slots: &Tensor<I>,   // [rows·k]
    gates: &Tensor<G>,   // [rows·k]; unread unless weighted
    out: &mut Tensor<G>, // [rows, d]
    rows: u32,
    d: u32,
    k: u32,
    #[comptime] weighted: bool,
    #[define(F, G, I)] _dtypes: [StorageType; 3],
) {
    let count = comptime!(parts.len());
    let row = CUBE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let d = d as usize;
    let k = k as usize;
    let mut c = UNIT_POS_X as usize;
    while c < d {
        let mut acc = G::new(0.0);
        for j in 0..k {
            let slot = row * k + j;
            let p = u32::cast_from(slots[slot]);
            let mut term = G::new(0.0);
            #[unroll]
            for q in 0..count {
                if p >= starts[q] && p < ends[q] {
                    term += G::cast_from(parts.index(q)[(p - starts[q]) as usize * d + c]);
                }
            }
            if weighted {
                term *= gates[slot];
            }
            acc += term;
        }
        out[row * d + c] = acc;
        c += CUBE_DIM_X as usize;
    }
}

/// The weighted combine's backward (`GpuOps::combine_bwd`), one cube per grouped row `p` of
/// slot `s = order[p]` and token `s / k`: the row's gradient `dout[token]·gates[s]`, cast to the
/// parts' dtype, and the gate's, `dout[token]` · the row, by the cube's fixed tree.
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
fn combine_bwd_kernel<F: Float, G: Float, I: Numeric>(
    parts: &Sequence<Tensor<F>>, // [m_q, d] each, contiguous, grouped
    starts: Sequence<u32>,
    ends: Sequence<u32>,
    order: &Tensor<I>,      // [rows]
    dout: &Tensor<G>,       // [rows / k, d]
    gates: &Tensor<G>,      // [rows]
    dy: &mut Tensor<F>,     // [rows, d], grouped
    dgates: &mut Tensor<G>, // [rows], slot order
    rows: u32,
    d: u32,
    k: u32,
    #[comptime] block: u32,
    #[define(F, G, I)] _dtypes: [StorageType; 3],
) {
    let count = comptime!(parts.len());
    let p = CUBE_POS;
    if p >= rows as usize {
        terminate!();
    }
    let d = d as usize;
    let s = u32::cast_from(order[p]) as usize;
    let from = s / k as usize * d;
    let g = gates[s];
    let at = p as u32;
    let mut smem = SharedMemory::<G>::new(block as usize);
    let mut local = G::new(0.0);
    #[unroll]
    for q in 0..count {
        if at >= starts[q] && at < ends[q] {
            let y = parts.index(q);
            let base = (at - starts[q]) as usize * d;
            let mut c = UNIT_POS_X as usize;
            while c < d {
                let o = dout[from + c];
                local += o * G::cast_from(y[base + c]);
                dy[p * d + c] = F::cast_from(o * g);
                c += CUBE_DIM_X as usize;
            }
        }
    }
    let total = cube_reduce::<G>(&mut smem, local, false);
    if UNIT_POS_X == 0 {
        dgates[s] = total;
    }
}

/// AdamW on a chunk of parameters, in place: parameter `t` on the grid's row `t`, each element
/// through `colossus_kernels::adamw`'s operations in its order (a grid-stride loop, so any length
/// fits the row). `decay` is 1 for undecayed parameters: multiplying by 1 is exact, so that is the
/// plain path's bits without the branch.
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
fn adamw_kernel<F: Float>(
    p: &mut Sequence<Tensor<F>>, // [n_t] each
    g: &Sequence<Tensor<F>>,     // [n_t] each
    m: &mut Sequence<Tensor<F>>, // [n_t] each
    v: &mut Sequence<Tensor<F>>, // [n_t] each
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    bc2_sqrt: f32,
    eps: f32,
    decay: f32,
    step_size: f32,
    #[define(F)] _dtype: StorageType,
) {
    let count = comptime!(g.len());
    let stride = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    // A sequence is indexed by constants only: one copy of the loop per parameter, the row picks.
    #[unroll]
    for t in 0..count {
        if CUBE_POS_Y as usize == t {
            let gt = g.index(t);
            let pt = p.index_mut(t);
            let mt = m.index_mut(t);
            let vt = v.index_mut(t);
            let mut i = ABSOLUTE_POS_X as usize;
            while i < gt.len() {
                let gi = gt[i];
                let mi = mt[i] * F::cast_from(beta1) + gi * F::cast_from(one_minus_beta1);
                let vi = vt[i] * F::cast_from(beta2) + gi * gi * F::cast_from(one_minus_beta2);
                let denom = vi.sqrt() / F::cast_from(bc2_sqrt) + F::cast_from(eps);
                pt[i] = pt[i] * F::cast_from(decay) - mi / denom * F::cast_from(step_size);
                mt[i] = mi;
                vt[i] = vi;
                i += stride;
            }
        }
    }
}

/// Σ x² of a chunk of tensors as partial sums: tensor `t` on the grid's row `t`, its first
/// `widths[t]` cubes each summing a grid-stride share of it (a fixed tree over the cube) into
/// slot `offsets[t] + cube` of `out`; the cubes past a tensor's width write nothing.
#[cube(launch)]
fn sum_squares_kernel<F: Float>(
    xs: &Sequence<Tensor<F>>, // [n_t] each
    offsets: Sequence<u32>,
    widths: Sequence<u32>,
    out: &mut Tensor<F>, // [Σ widths] over every chunk
    #[comptime] block: u32,
    #[define(F)] _dtype: StorageType,
) {
    let count = comptime!(xs.len());
    let mut smem = SharedMemory::<F>::new(block as usize);
    #[unroll]
    for t in 0..count {
        // Both conditions hold for the whole cube, so its barriers are reached by all or none.
        if CUBE_POS_Y as usize == t && CUBE_POS_X < widths[t] {
            let x = xs.index(t);
            let stride = widths[t] as usize * CUBE_DIM_X as usize;
            let mut local = F::new(0.0);
            let mut i = ABSOLUTE_POS_X as usize;
            while i < x.len() {
                let xi = x[i];
                local += xi * xi;
                i += stride;
            }
            let total = cube_reduce::<F>(&mut smem, local, false);
            let slot = (offsets[t] + CUBE_POS_X) as usize;
            if UNIT_POS_X == 0 {
                out[slot] = total;
            }
        }
    }
}

/// The sum of `xs` into `out[0]` by one cube (`GpuOps::sum`): each unit a strided share, then
/// the tree. Not burn's sum: its one-shot variants add the cubes' totals with float atomics,
/// whose order can vary from run to run, and on lavapipe it returned the sum of only the first
/// 65 536 or 262 144 elements for many lengths past them (445 000, 5 000 000: docs/benchmarks.md).
#[cube(launch)]
fn sum_kernel<F: Float>(
    xs: &Tensor<F>,      // [n]
    out: &mut Tensor<F>, // [1]
    #[comptime] block: u32,
    #[define(F)] _dtype: StorageType,
) {
    let mut smem = SharedMemory::<F>::new(block as usize);
    let mut local = F::new(0.0);
    let mut i = UNIT_POS_X as usize;
    while i < xs.len() {
        local += xs[i];
        i += CUBE_DIM_X as usize;
    }
    let total = cube_reduce::<F>(&mut smem, local, false);
    if UNIT_POS_X == 0 {
        out[0] = total;
    }
}

/// A chunk of tensors times `factor`, in place, tensor `t` on the grid's row `t`.
#[cube(launch)]
fn scale_kernel<F: Float>(
    xs: &mut Sequence<Tensor<F>>, // [n_t] each
    factor: f32,
    #[define(F)] _dtype: StorageType,
) {
    let count = comptime!(xs.len());
    let stride = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    #[unroll]
    for t in 0..count {
        if CUBE_POS_Y as usize == t {
            let x = xs.index_mut(t);
            let mut i = ABSOLUTE_POS_X as usize;
            while i < x.len() {
                x[i] = x[i] * F::cast_from(factor);
                i += stride;
            }
        }
    }
}

/// Threads per cube of the element-wise kernels (AdamW, the GELU gate, RoPE).
const ELEMENTWISE_BLOCK: u32 = 256;

/// √(2/π) and the cubic coefficient of the tanh-approximate GELU, as `colossus_kernels::gelu`
/// writes them.
const GELU_C: f32 = 0.797_884_6;
const GELU_K: f32 = 0.044_715;

/// An expert's weights as its packed forward reads them (`GpuOps::pack_up`): `w1` and `w3`
/// (`[d, f]` each) side by side in `w13` (`[d, 2f]`), and, with `with_w2`, `w2` (`[f, d]`, as
/// many elements) copied into `w2h`; each written in the outputs' dtype. One unit per element
/// of `w1`, in a grid-stride loop.
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
fn pack_up_kernel<F: Float, G: Float>(
    w1: &Tensor<F>,      // [d, f], contiguous
    w3: &Tensor<F>,      // [d, f]
    w2: &Tensor<F>,      // [f, d]; unread without with_w2
    w13: &mut Tensor<G>, // [d, 2f]
    w2h: &mut Tensor<G>, // [f, d]; unwritten without with_w2
    n: u32,
    f: u32,
    #[comptime] with_w2: bool,
    #[define(F, G)] _dtypes: [StorageType; 2],
) {
    let stride = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let f = f as usize;
    let mut i = ABSOLUTE_POS_X as usize;
    while i < n as usize {
        let to = packed_at(i, f);
        w13[to] = G::cast_from(w1[i]);
        w13[to + f] = G::cast_from(w3[i]);
        if with_w2 {
            w2h[i] = G::cast_from(w2[i]);
        }
        i += stride;
    }
}

/// Where element `i` of a `[rows, f]` operand lies in the `[rows, 2f]` tensor that holds it and
/// a second one side by side (`w1 | w3`, `a | b`, `da | db`): the second's element is `f`
/// further on.
#[cube]
fn packed_at(i: usize, f: usize) -> usize {
    i / f * 2 * f + i % f
}

/// `out = ½·a·(1 + tanh(√(2/π)·(a + 0.044715·a³)))·b`, `colossus_kernels::gelu_gate`'s formula,
/// computed in f32 whatever the tensors' dtype (f32, or bf16/f16 read and written as they are):
/// what widening half inputs, the f32 gate and rounding back would give, without the casts.
/// `packed`: `a` is `[rows, 2f]` with the gate's input in columns `..f` and `b` in `f..` (the
/// experts' two up projections as one product), and `b` is not read.
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
fn gelu_gate_kernel<F: Float>(
    a: &Tensor<F>,       // [n] contiguous, or [rows, 2f] when packed
    b: &Tensor<F>,       // [n]; unread when packed
    out: &mut Tensor<F>, // [n]
    n: u32,
    f: u32,
    #[comptime] packed: bool,
    #[define(F)] _dtype: StorageType,
) {
    let stride = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let f = f as usize;
    let mut i = ABSOLUTE_POS_X as usize;
    while i < n as usize {
        // Where a lies; b lies f further on when packed.
        let ai = if packed { packed_at(i, f) } else { i };
        let x = f32::cast_from(a[ai]);
        let bv = if packed {
            f32::cast_from(a[ai + f])
        } else {
            f32::cast_from(b[i])
        };
        let t = (GELU_C * (x + GELU_K * x * x * x)).tanh();
        out[i] = F::cast_from(0.5 * x * (1.0 + t) * bv);
        i += stride;
    }
}

/// The gate's gradients: `da = g·b·gelu'(a)`, `db = g·gelu(a)`, with
/// gelu'(a) = ½(1 + t) + ½·a·(1 − t²)·√(2/π)·(1 + 3·0.044715·a²), as the CPU's backward; in f32
/// whatever the tensors' dtype, as the forward. With `value`, also the forward's output
/// `gelu(a)·b` (the forward's operations in its order), which the experts' backward needs for
/// the down projection's weight gradient and would otherwise recompute in a launch of its own.
/// `packed` as the forward's: `a` holds a and b, and `da` takes both gradients in that layout.
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
fn gelu_gate_bwd_kernel<F: Float>(
    a: &Tensor<F>,      // [n] contiguous, or [rows, 2f] when packed
    b: &Tensor<F>,      // [n]; unread when packed
    g: &Tensor<F>,      // [n]
    da: &mut Tensor<F>, // a's shape
    db: &mut Tensor<F>, // [n]; unwritten when packed
    y: &mut Tensor<F>,  // [n]; one unused element without `value`
    n: u32,
    f: u32,
    #[comptime] value: bool,
    #[comptime] packed: bool,
    #[define(F)] _dtype: StorageType,
) {
    let stride = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let f = f as usize;
    let mut i = ABSOLUTE_POS_X as usize;
    let (c, k) = (GELU_C, GELU_K);
    while i < n as usize {
        // Where a is read and its gradient written; b and its gradient lie f further on when
        // packed.
        let ai = if packed { packed_at(i, f) } else { i };
        let x = f32::cast_from(a[ai]);
        let bv = if packed {
            f32::cast_from(a[ai + f])
        } else {
            f32::cast_from(b[i])
        };
        let gi = f32::cast_from(g[i]);
        let t = (c * (x + k * x * x * x)).tanh();
        let gelu = 0.5 * x * (1.0 + t);
        let dgelu = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * k * x * x);
        if packed {
            da[ai] = F::cast_from(gi * bv * dgelu);
            da[ai + f] = F::cast_from(gi * gelu);
        } else {
            da[i] = F::cast_from(gi * bv * dgelu);
            db[i] = F::cast_from(gi * gelu);
        }
        if value {
            y[i] = F::cast_from(gelu * bv);
        }
        i += stride;
    }
}

/// RoPE, one unit per (row, head, pair) in a grid-stride loop: [x1·c − x2·s, x2·c + x1·s] with
/// `s` the sine times `sign` (−1 rotates back), `colossus_kernels::rope`'s operations. Each unit
/// reads its pair and writes both halves, so a head's two halves are read once. The output swaps
/// the input's two middle dimensions, so the transpose between the projection's `[b, t, heads,
/// hd]` and attention's `[b, heads, t, hd]` costs no pass of its own either way: the forward
/// reads the former (positions on the first of them, `pos_first`), the backward the latter.
/// `x` and `out` are f32, or bf16/f16 read and written as they are (the products' dtype under
/// mixed precision), and the tables f32: the rotation is computed in f32 and rounded once, as
/// widening `x`, rotating in f32 and rounding back would, without those two passes.
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
fn rope_kernel<F: Float, G: Float>(
    x: &Tensor<F>,       // [b, d1, d2, hd], contiguous
    cos: &Tensor<G>,     // [t, hd], contiguous: pair i at columns i and half + i
    sin: &Tensor<G>,     // [t, hd]
    out: &mut Tensor<F>, // [b, d2, d1, hd], contiguous
    pairs: u32,
    d1: u32,
    d2: u32,
    half: u32,
    sign: f32,
    #[comptime] pos_first: bool,
    #[define(F, G)] _dtypes: [StorageType; 2],
) {
    let stride = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let (half, hd) = (half as usize, 2 * half as usize);
    let (d1, d2) = (d1 as usize, d2 as usize);
    let mut i = ABSOLUTE_POS_X as usize;
    while i < pairs as usize {
        let (j, row) = (i % half, i / half); // pair, ((batch·d1 + a)·d2 + c)
        let (c, a, batch) = (row % d2, (row / d2) % d1, row / (d1 * d2));
        let mut pos = c;
        if pos_first {
            pos = a;
        }
        let cs = f32::cast_from(cos[pos * hd + j]);
        let sn = f32::cast_from(sin[pos * hd + j]) * sign;
        let at = row * hd + j;
        let to = ((batch * d2 + c) * d1 + a) * hd + j;
        let (p, q) = (f32::cast_from(x[at]), f32::cast_from(x[at + half]));
        out[to] = F::cast_from(p * cs - q * sn);
        out[to + half] = F::cast_from(q * cs + p * sn);
        i += stride;
    }
}

/// The GELU gate's output shape and half-width `f` for its input of shape `s`: `s` itself, or,
/// when `packed` (the input holding both of the gate's inputs side by side), `[rows, f]` of
/// `[rows, 2f]`.
fn gate_shape(s: &Shape, packed: bool) -> (Shape, usize) {
    let mut out = s.clone();
    if !packed {
        return (out, 1);
    }
    let last = out.num_dims() - 1;
    let f = out[last] / 2;
    out[last] = f;
    (out, f)
}

/// Cubes for `n` elements of a grid-stride kernel: one unit per element up to the grid's
/// first axis, then each unit loops.
fn elementwise_grid(n: usize) -> CubeCount {
    CubeCount::Static(
        n.div_ceil(ELEMENTWISE_BLOCK as usize).clamp(1, 65_535) as u32,
        1,
        1,
    )
}

/// The softmax's threads per row: `BLOCK`, or fewer for rows that would leave most of them idle
/// (the router's 8 experts), down to a warp. Fewer threads per cube let more cubes share a
/// multiprocessor: the router's 16 384 rows at `gpu-350m` are 16 384 cubes.
fn softmax_block(cols: usize) -> u32 {
    (cols.next_power_of_two() as u32).clamp(32, BLOCK)
}

/// One cube per row on a grid that stays under the 65 535-cubes-per-axis limit of WGSL/Vulkan.
fn row_grid(rows: usize) -> CubeCount {
    let x = rows.clamp(1, 65_535);
    CubeCount::Static(x as u32, rows.div_ceil(x) as u32, 1)
}

fn rows_cols<R: CubeRuntime>(x: &CubeTensor<R>) -> (usize, usize) {
    let dims = &x.meta.shape;
    let cols = dims[dims.len() - 1];
    (dims.iter().product::<usize>() / cols.max(1), cols)
}

/// The dtype a kernel that reads half tensors as they are computes in: f32 for bf16 and f16.
fn computed_in(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    }
}

/// Whether the softmax forward on `dtype` logits writes its f32 probabilities beside the half
/// ones: only for the backward (`state`), and only where the logits are half. The CubeBackend
/// impl sizes the kernel's outputs by it and the Fusion impl declares them by it, so the two agree.
fn keeps_wide(dtype: DType, state: bool) -> bool {
    state && computed_in(dtype) != dtype
}

fn empty<R: CubeRuntime>(x: &CubeTensor<R>, shape: Shape) -> CubeTensor<R> {
    empty_device_dtype::<R>(x.client.clone(), x.device.clone(), shape, x.dtype)
}

/// `x` contiguous and not shared with any other tensor, so a kernel may write it in place: as
/// it is when it already is (an optimizer's own moments, a parameter taken out of its module),
/// otherwise a copy.
fn exclusive<R: CubeRuntime>(x: CubeTensor<R>) -> CubeTensor<R> {
    let x = into_contiguous(x);
    if x.can_mut() { x } else { x.copy() }
}

/// The tensors of `chunk` (indices into `all`) as one sequence argument of a multi-tensor kernel.
fn sequence<'a, R: CubeRuntime, T: LaunchArg<RuntimeArg<R> = TensorArg<R>>>(
    chunk: &[usize],
    all: impl Fn(usize) -> &'a CubeTensor<R>,
) -> SequenceArg<R, T> {
    chunk.iter().map(|&i| all(i).clone().into_tensor_arg()).collect()
}

/// The combine kernels' parts as launch arguments (`GpuOps::slot_sum`): the tensors, and each
/// one's grouped rows as `starts` and `ends`, every `per` consecutive parts sharing one range and
/// the ranges following each other from row 0.
#[allow(clippy::type_complexity)]
fn part_args<R: CubeRuntime, T: LaunchArg<RuntimeArg<R> = TensorArg<R>>>(
    parts: &[CubeTensor<R>],
    per: usize,
) -> (SequenceArg<R, T>, SequenceArg<R, u32>, SequenceArg<R, u32>) {
    let (mut starts, mut ends, mut at) = (Vec::new(), Vec::new(), 0);
    for range in parts.chunks(per.max(1)) {
        let m = range[0].meta.shape[0] as u32;
        for _ in range {
            starts.push(at);
            ends.push(at + m);
        }
        at += m;
    }
    let all: Vec<usize> = (0..parts.len()).collect();
    let tensors = sequence(&all, |i| &parts[i]);
    (tensors, starts.into_iter().collect(), ends.into_iter().collect())
}

/// The most tensors one launch of a multi-tensor kernel takes: the unrolled kernel holds one
/// copy of its loop per tensor, and 32 already brings `gpu-350m`'s 398 parameters down to 13
/// launches.
const MAX_PER_LAUNCH: u32 = 32;

/// Bindings a kernel needs besides its tensors: its metadata and scalar buffers.
const RESERVED_BINDINGS: u32 = 4;

/// How many tensors of `per` bindings each one launch takes on this device: wgpu's limit is the
/// adapter's storage buffers per shader stage (31 on Metal), CUDA's 1 024.
fn per_launch<R: CubeRuntime>(client: &ComputeClient<R>, per: u32) -> usize {
    (free_bindings(client) / per).clamp(1, MAX_PER_LAUNCH) as usize
}

/// The bindings a kernel has for its tensors on this device (`GpuOps::tensor_args`).
fn free_bindings<R: CubeRuntime>(client: &ComputeClient<R>) -> u32 {
    client
        .properties()
        .hardware
        .max_bindings
        .saturating_sub(RESERVED_BINDINGS)
}

/// The tensors of `sizes` by index in launches of at most `per`, largest first, so that each
/// launch's tensors are of like sizes and its grid, sized for the largest, leaves few idle.
fn chunks(sizes: &[usize], per: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    order.chunks(per).map(<[usize]>::to_vec).collect()
}

/// One row of cubes per tensor of `chunk`, as wide as `elementwise_grid` makes it for the largest.
fn chunk_grid(chunk: &[usize], sizes: &[usize]) -> CubeCount {
    let n = chunk.iter().map(|&i| sizes[i]).max().unwrap_or(1);
    match elementwise_grid(n) {
        CubeCount::Static(x, _, _) => CubeCount::Static(x, chunk.len() as u32, 1),
        dynamic => dynamic,
    }
}

/// The most cubes summing one tensor's squares: a launch of 32 large gradients is 4 096 cubes,
/// plenty to read at full bandwidth, and `gpu-350m`'s 398 leave at most ~51 000 partial sums for
/// the one cube of `sum_kernel` (~200 each per unit).
const SUM_SQUARES_CUBES: usize = 128;

/// How many partial sums (cubes) each tensor of `sizes` gets in `GpuOps::sum_squares`, which
/// keeps them tensor after tensor: `[Σ widths]`.
fn sum_squares_widths(sizes: &[usize]) -> Vec<usize> {
    sizes
        .iter()
        .map(|n| n.div_ceil(ELEMENTWISE_BLOCK as usize).clamp(1, SUM_SQUARES_CUBES))
        .collect()
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> GpuOps for CubeBackend<R, F, I, BT> {
    fn capped_softmax_fwd(
        x: CubeTensor<R>,
        op: CappedSoftmax,
        state: bool,
    ) -> (CubeTensor<R>, CubeTensor<R>, Option<CubeTensor<R>>) {
        let x = into_contiguous(x);
        let (rows, cols) = rows_cols(&x);
        let block = softmax_block(cols);
        let (t, past, multiplier, cap) = scalars(&op);
        let wide = computed_in(x.dtype);
        let keep_wide = keeps_wide(x.dtype, state);
        let out = |shape, dtype| empty_device_dtype::<R>(x.client.clone(), x.device.clone(), shape, dtype);
        let probs = out(x.meta.shape.clone(), x.dtype);
        let p = out(
            if keep_wide {
                x.meta.shape.clone()
            } else {
                Shape::new([1])
            },
            wide,
        );
        let lse = out(Shape::new([rows]), wide);
        let dtypes = [wide.into(), x.dtype.into()];
        capped_softmax_fwd_kernel::launch::<R>(
            &x.client.clone(),
            row_grid(rows),
            CubeDim::new_1d(block),
            x.into_tensor_arg(),
            probs.clone().into_tensor_arg(),
            p.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            rows as u32,
            cols as u32,
            t,
            past,
            multiplier,
            cap,
            cap > 0.0,
            keep_wide,
            block,
            dtypes,
        );
        let p = state.then(|| if keep_wide { p } else { probs.clone() });
        (probs, lse, p)
    }

    fn capped_softmax_bwd(
        p: CubeTensor<R>,
        lse: CubeTensor<R>,
        g: CubeTensor<R>,
        op: CappedSoftmax,
        dtype: DType,
    ) -> CubeTensor<R> {
        let (p, lse, g) = (into_contiguous(p), into_contiguous(lse), into_contiguous(g));
        let (rows, cols) = rows_cols(&p);
        let block = softmax_block(cols);
        let dx = empty_device_dtype::<R>(p.client.clone(), p.device.clone(), p.meta.shape.clone(), dtype);
        let dtypes = [p.dtype.into(), g.dtype.into(), dtype.into()];
        capped_softmax_bwd_kernel::launch::<R>(
            &p.client.clone(),
            row_grid(rows),
            CubeDim::new_1d(block),
            p.into_tensor_arg(),
            lse.into_tensor_arg(),
            g.into_tensor_arg(),
            dx.clone().into_tensor_arg(),
            rows as u32,
            cols as u32,
            op.multiplier,
            op.cap,
            op.cap > 0.0,
            block,
            dtypes,
        );
        dx
    }

    fn rms_norm_fwd(
        x: CubeTensor<R>,
        w: CubeTensor<R>,
        residual: Option<CubeTensor<R>>,
        eps: f32,
    ) -> (CubeTensor<R>, CubeTensor<R>) {
        let (x, w) = (into_contiguous(x), into_contiguous(w));
        let has_residual = residual.is_some();
        // Without a residual `h` is not read: `w` (of the computing dtype) stands in.
        let h = residual.map_or_else(|| w.clone(), into_contiguous);
        let (rows, d) = rows_cols(&x);
        let y = empty(&w, x.meta.shape.clone());
        let inv = empty(&w, Shape::new([rows]));
        let dtypes = [w.dtype.into(), x.dtype.into()];
        rms_norm_fwd_kernel::launch::<R>(
            &x.client.clone(),
            row_grid(rows),
            CubeDim::new_1d(BLOCK),
            x.into_tensor_arg(),
            w.into_tensor_arg(),
            h.into_tensor_arg(),
            y.clone().into_tensor_arg(),
            inv.clone().into_tensor_arg(),
            rows as u32,
            d as u32,
            eps,
            BLOCK,
            has_residual,
            dtypes,
        );
        (y, inv)
    }

    fn rms_norm_bwd(
        x: CubeTensor<R>,
        w: CubeTensor<R>,
        inv: CubeTensor<R>,
        g: CubeTensor<R>,
    ) -> [CubeTensor<R>; 2] {
        let (x, w, inv, g) = (
            into_contiguous(x),
            into_contiguous(w),
            into_contiguous(inv),
            into_contiguous(g),
        );
        let (rows, d) = rows_cols(&x);
        // Chunks of rows for dw's partial sums: enough cubes to fill a GPU (2 048 at most), and
        // `col_sum_kernel` then reads at most 2 048 × d partials, where burn's reduction read a
        // `[rows, d]` product (16 384 × 1 024 at `gpu-350m`).
        let per = rows.div_ceil(2048).max(1);
        let chunks = rows.div_ceil(per).max(1);
        let dx = empty(&x, x.meta.shape.clone());
        let part = empty(&w, Shape::new([chunks, d]));
        let dw = empty(&w, Shape::new([d]));
        let (dtype, dtypes) = (w.dtype, [w.dtype.into(), x.dtype.into()]);
        let client = x.client.clone();
        rms_norm_bwd_kernel::launch::<R>(
            &client,
            row_grid(chunks),
            CubeDim::new_1d(BLOCK),
            x.into_tensor_arg(),
            w.into_tensor_arg(),
            inv.into_tensor_arg(),
            g.into_tensor_arg(),
            dx.clone().into_tensor_arg(),
            part.clone().into_tensor_arg(),
            rows as u32,
            d as u32,
            per as u32,
            BLOCK,
            d.div_ceil(BLOCK as usize).max(1),
            dtypes,
        );
        col_sum_kernel::launch::<R>(
            &client,
            elementwise_grid(d),
            CubeDim::new_1d(ELEMENTWISE_BLOCK),
            part.into_tensor_arg(),
            dw.clone().into_tensor_arg(),
            chunks as u32,
            d as u32,
            dtype.into(),
        );
        [dx, dw]
    }

    fn cross_entropy_fwd(x: CubeTensor<R>, targets: CubeTensor<R>) -> (CubeTensor<R>, CubeTensor<R>) {
        let (x, targets) = (into_contiguous(x), into_contiguous(targets));
        let (rows, vocab) = rows_cols(&x);
        let nll = empty(&x, Shape::new([rows]));
        let lse = empty(&x, Shape::new([rows]));
        let dtypes = [x.dtype.into(), targets.dtype.into()];
        cross_entropy_fwd_kernel::launch::<R>(
            &x.client.clone(),
            row_grid(rows),
            CubeDim::new_1d(BLOCK),
            x.into_tensor_arg(),
            targets.into_tensor_arg(),
            nll.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            rows as u32,
            vocab as u32,
            BLOCK,
            dtypes,
        );
        (nll, lse)
    }

    fn cross_entropy_bwd(
        x: CubeTensor<R>,
        targets: CubeTensor<R>,
        lse: CubeTensor<R>,
        g: CubeTensor<R>,
    ) -> CubeTensor<R> {
        let (x, targets, lse) = (into_contiguous(x), into_contiguous(targets), into_contiguous(lse));
        let (rows, vocab) = rows_cols(&x);
        let dx = empty(&x, x.meta.shape.clone());
        let dtypes = [x.dtype.into(), targets.dtype.into()];
        cross_entropy_bwd_kernel::launch::<R>(
            &x.client.clone(),
            row_grid(rows),
            CubeDim::new_1d(BLOCK),
            x.into_tensor_arg(),
            targets.into_tensor_arg(),
            lse.into_tensor_arg(),
            g.into_tensor_arg(),
            dx.clone().into_tensor_arg(),
            rows as u32,
            vocab as u32,
            dtypes,
        );
        dx
    }

    fn rows_sum(g: CubeTensor<R>, order: CubeTensor<R>, seg: CubeTensor<R>, rows: usize) -> CubeTensor<R> {
        let (g, order, seg) = (into_contiguous(g), into_contiguous(order), into_contiguous(seg));
        let (_, d) = rows_cols(&g);
        let out = empty(&g, Shape::new([rows, d]));
        let dtypes = [g.dtype.into(), order.dtype.into()];
        rows_sum_kernel::launch::<R>(
            &g.client.clone(),
            row_grid(rows),
            CubeDim::new_1d(BLOCK),
            g.into_tensor_arg(),
            order.into_tensor_arg(),
            seg.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            rows as u32,
            d as u32,
            dtypes,
        );
        out
    }

    fn flash_attention(q: CubeTensor<R>, k: CubeTensor<R>, v: CubeTensor<R>, op: FlashOp) -> CubeTensor<R> {
        let folded = q.meta.shape.clone(); // [b, n_kv, rep·t, hd]
        let (b, n_kv, rows, hd) = (folded[0], folded[1], folded[2], folded[3]);
        let (heads, t) = (n_kv * op.rep, rows / op.rep);
        // cubek's kernel reads `[batch, heads]` as one contiguous index and masks row i against
        // keys > i, so the query heads are unfolded (a free reshape: each kv head's rows are
        // `rep` blocks of t) and the kv heads repeated for them: a copy of b·heads·t·hd
        // elements per tensor, against the b·heads·t² probabilities it saves.
        let q = Self::float_reshape(into_contiguous(q), Shape::new([b, heads, t, hd]));
        let (k_rep, v_rep) = (
            repeat_heads::<R, F, I, BT>(k.clone(), op.rep),
            repeat_heads::<R, F, I, BT>(v.clone(), op.rep),
        );
        let out = empty(&q, q.meta.shape.clone());
        let dtypes = AttentionGlobalTypes {
            query: q.dtype.into(),
            key: k_rep.dtype.into(),
            value: v_rep.dtype.into(),
            mask: DType::U8.into(),
            out: out.dtype.into(),
        };
        let options = AttentionOptions {
            causal: true,
            accumulator_precision: AccumulatorPrecision::Strict(cubecl::ir::StorageType::Scalar(
                cubecl::ir::ElemType::Float(cubecl::ir::FloatKind::F32),
            )),
        };
        let score = ScoreOptions {
            scale: Some(op.multiplier),
            softcap: (op.cap > 0.0).then_some(op.cap),
        };
        let mut errors = Vec::new();
        for (name, strategy) in flash_strategies() {
            let launched = launch_ref_scored::<R>(
                strategy,
                &q.client,
                q.clone().binding(),
                k_rep.clone().binding(),
                v_rep.clone().binding(),
                None,
                out.clone().binding(),
                &dtypes,
                options.clone(),
                score,
            );
            match launched {
                Ok(()) => {
                    note_routine(name, &errors);
                    return Self::float_reshape(out, folded);
                }
                Err(e) => errors.push(format!("{name}: {}", format!("{e:?}").trim())),
            }
        }
        // Neither kernel can be set up here: the composed path, on the folded layout.
        note_routine("composed", &errors);
        // The softmax in f32 whatever the inputs' dtype, as `model::fused::attention` has it,
        // reading the logits and writing the probabilities in the inputs' dtype; forward only, so
        // without the f32 probabilities the backward would keep.
        let q = Self::float_reshape(q, folded);
        let logits = Self::float_matmul(q, Self::float_swap_dims(k, 2, 3));
        let softmax = CappedSoftmax {
            cols: t,
            multiplier: op.multiplier,
            cap: op.cap,
            causal: Some((t, 0)),
        };
        let (probs, _, _) = Self::capped_softmax_fwd(logits, softmax, false);
        Self::float_matmul(probs, v)
    }

    fn flash_bwd_plan(device: &Self::Device, dtype: DType, hd: usize) -> Option<FlashBwdPlan> {
        flash_bwd::plan(&R::client(device), dtype, hd)
    }

    fn flash_attention_bwd(qkvog: [CubeTensor<R>; 5], op: FlashOp, plan: FlashBwdPlan) -> [CubeTensor<R>; 3] {
        flash_bwd::launch(qkvog, op, plan)
    }

    fn matmul_f32_out(a: CubeTensor<R>, b: CubeTensor<R>) -> CubeTensor<R> {
        // burn's own matmul entry with an f32 output: cubek then stages and multiplies in the
        // inputs' dtype and accumulates in f32 (`MatmulElems::from_globals`), the tensor cores'
        // native bf16 → f32 mode; burn's `float_matmul` always asks for the inputs' dtype.
        match matmul(a.clone(), b.clone(), None, MatmulStrategy::default(), DType::F32) {
            Ok(out) => out,
            Err(e) => {
                // Only the non-autotuned strategy reports setup errors; widen and multiply in f32
                // (the same values: a half times a half is exact in f32).
                MATMUL_FALLBACK.call_once(|| {
                    crate::say::err(format_args!(
                        "warning: the bf16 → f32 matmul could not be set up ({e:?}); running it in f32"
                    ))
                });
                let wide = |x| Self::float_cast(x, FloatDType::F32);
                Self::float_matmul(wide(a), wide(b))
            }
        }
    }

    fn pack_up(
        w1: CubeTensor<R>,
        w3: CubeTensor<R>,
        w2: Option<CubeTensor<R>>,
        dtype: DType,
    ) -> (CubeTensor<R>, Option<CubeTensor<R>>) {
        let [w1, w3] = [w1, w3].map(into_contiguous);
        let (client, device) = (w1.client.clone(), w1.device.clone());
        let (d, f) = (w1.meta.shape[0], w1.meta.shape[1]);
        let n = d * f;
        let w13 = empty_device_dtype::<R>(client.clone(), device.clone(), Shape::new([d, 2 * f]), dtype);
        let with_w2 = w2.is_some();
        // Unread and unwritten without w2, but the kernel takes tensors there.
        let w2 = w2.map_or_else(|| empty(&w1, Shape::new([1])), into_contiguous);
        let w2h_shape = if with_w2 {
            w2.meta.shape.clone()
        } else {
            Shape::new([1])
        };
        let w2h = empty_device_dtype::<R>(client.clone(), device, w2h_shape, dtype);
        let dtypes = [w1.dtype.into(), dtype.into()];
        pack_up_kernel::launch::<R>(
            &client,
            elementwise_grid(n),
            CubeDim::new_1d(ELEMENTWISE_BLOCK),
            w1.into_tensor_arg(),
            w3.into_tensor_arg(),
            w2.into_tensor_arg(),
            w13.clone().into_tensor_arg(),
            w2h.clone().into_tensor_arg(),
            n as u32,
            f as u32,
            with_w2,
            dtypes,
        );
        (w13, with_w2.then_some(w2h))
    }

    fn gelu_gate(a: CubeTensor<R>, b: Option<CubeTensor<R>>) -> CubeTensor<R> {
        let a = into_contiguous(a);
        let packed = b.is_none();
        let (shape, f) = gate_shape(&a.meta.shape, packed);
        let n = shape.num_elements();
        let out = empty(&a, shape);
        let b = b.map_or_else(|| empty(&a, Shape::new([1])), into_contiguous);
        let dtype = a.dtype;
        gelu_gate_kernel::launch::<R>(
            &a.client.clone(),
            elementwise_grid(n),
            CubeDim::new_1d(ELEMENTWISE_BLOCK),
            a.into_tensor_arg(),
            b.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            n as u32,
            f as u32,
            packed,
            dtype.into(),
        );
        out
    }

    fn gelu_gate_bwd(
        a: CubeTensor<R>,
        b: Option<CubeTensor<R>>,
        g: CubeTensor<R>,
        value: bool,
    ) -> (Vec<CubeTensor<R>>, Option<CubeTensor<R>>) {
        let (a, g) = (into_contiguous(a), into_contiguous(g));
        let packed = b.is_none();
        let (shape, f) = gate_shape(&a.meta.shape, packed);
        let n = shape.num_elements();
        let da = empty(&a, a.meta.shape.clone());
        let db = empty(&a, if packed { Shape::new([1]) } else { shape.clone() });
        let y = empty(&a, if value { shape } else { Shape::new([1]) });
        let b = b.map_or_else(|| empty(&a, Shape::new([1])), into_contiguous);
        let dtype = a.dtype;
        gelu_gate_bwd_kernel::launch::<R>(
            &a.client.clone(),
            elementwise_grid(n),
            CubeDim::new_1d(ELEMENTWISE_BLOCK),
            a.into_tensor_arg(),
            b.into_tensor_arg(),
            g.into_tensor_arg(),
            da.clone().into_tensor_arg(),
            db.clone().into_tensor_arg(),
            y.clone().into_tensor_arg(),
            n as u32,
            f as u32,
            value,
            packed,
            dtype.into(),
        );
        let grads = if packed { vec![da] } else { vec![da, db] };
        (grads, value.then_some(y))
    }

    fn rope(x: CubeTensor<R>, cs: [CubeTensor<R>; 2], inverse: bool) -> CubeTensor<R> {
        let x = into_contiguous(x);
        let [cos, sin] = cs.map(into_contiguous);
        let s = x.meta.shape.clone();
        let (d1, d2, half) = (s[1], s[2], s[3] / 2);
        let pairs = s.num_elements() / 2;
        let out = empty(&x, Shape::new([s[0], d2, d1, s[3]]));
        let dtypes = [x.dtype.into(), cos.dtype.into()];
        rope_kernel::launch::<R>(
            &x.client.clone(),
            elementwise_grid(pairs),
            CubeDim::new_1d(ELEMENTWISE_BLOCK),
            x.into_tensor_arg(),
            cos.into_tensor_arg(),
            sin.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            pairs as u32,
            d1 as u32,
            d2 as u32,
            half as u32,
            if inverse { -1.0 } else { 1.0 },
            !inverse,
            dtypes,
        );
        out
    }

    fn adamw(sets: Vec<[CubeTensor<R>; 4]>, s: AdamWStep) -> Vec<[CubeTensor<R>; 3]> {
        let sets: Vec<_> = sets
            .into_iter()
            .map(|[p, g, m, v]| [exclusive(p), into_contiguous(g), exclusive(m), exclusive(v)])
            .collect();
        let Some(first) = sets.first() else {
            return Vec::new();
        };
        let (client, dtype) = (first[0].client.clone(), first[0].dtype);
        let sizes: Vec<usize> = sets.iter().map(|x| x[1].meta.shape.num_elements()).collect();
        for chunk in chunks(&sizes, per_launch(&client, 4)) {
            let seq = |k: usize| sequence(&chunk, |i| &sets[i][k]);
            adamw_kernel::launch::<R>(
                &client,
                chunk_grid(&chunk, &sizes),
                CubeDim::new_1d(ELEMENTWISE_BLOCK),
                seq(0),
                seq(1),
                seq(2),
                seq(3),
                s.beta1,
                s.one_minus_beta1,
                s.beta2,
                s.one_minus_beta2,
                s.bc2_sqrt,
                s.eps,
                s.decay.unwrap_or(1.0),
                s.step_size,
                dtype.into(),
            );
        }
        sets.into_iter().map(|[p, _, m, v]| [p, m, v]).collect()
    }

    fn sum_squares(xs: Vec<CubeTensor<R>>) -> CubeTensor<R> {
        let xs: Vec<_> = xs.into_iter().map(into_contiguous).collect();
        let sizes: Vec<usize> = xs.iter().map(|x| x.meta.shape.num_elements()).collect();
        let widths = sum_squares_widths(&sizes);
        let partials = empty(&xs[0], Shape::new([widths.iter().sum::<usize>()]));
        let offsets: Vec<usize> = widths
            .iter()
            .scan(0, |at, w| {
                *at += w;
                Some(*at - w)
            })
            .collect();
        let client = partials.client.clone();
        for chunk in chunks(&sizes, per_launch(&client, 1)) {
            let at: SequenceArg<R, u32> = chunk.iter().map(|&i| offsets[i] as u32).collect();
            let width: SequenceArg<R, u32> = chunk.iter().map(|&i| widths[i] as u32).collect();
            let cubes = chunk.iter().map(|&i| widths[i]).max().unwrap_or(1);
            sum_squares_kernel::launch::<R>(
                &client,
                CubeCount::Static(cubes as u32, chunk.len() as u32, 1),
                CubeDim::new_1d(ELEMENTWISE_BLOCK),
                sequence(&chunk, |i| &xs[i]),
                at,
                width,
                partials.clone().into_tensor_arg(),
                ELEMENTWISE_BLOCK,
                partials.dtype.into(),
            );
        }
        Self::sum(partials)
    }

    fn sum(x: CubeTensor<R>) -> CubeTensor<R> {
        let x = into_contiguous(x);
        let out = empty(&x, Shape::new([1]));
        sum_kernel::launch::<R>(
            &x.client.clone(),
            CubeCount::Static(1, 1, 1),
            CubeDim::new_1d(ELEMENTWISE_BLOCK),
            x.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            ELEMENTWISE_BLOCK,
            out.dtype.into(),
        );
        out
    }

    fn scale(xs: Vec<CubeTensor<R>>, factor: f32) -> Vec<CubeTensor<R>> {
        let xs: Vec<_> = xs.into_iter().map(exclusive).collect();
        let Some(first) = xs.first() else {
            return xs;
        };
        let (client, dtype) = (first.client.clone(), first.dtype);
        let sizes: Vec<usize> = xs.iter().map(|x| x.meta.shape.num_elements()).collect();
        for chunk in chunks(&sizes, per_launch(&client, 1)) {
            scale_kernel::launch::<R>(
                &client,
                chunk_grid(&chunk, &sizes),
                CubeDim::new_1d(ELEMENTWISE_BLOCK),
                sequence(&chunk, |i| &xs[i]),
                factor,
                dtype.into(),
            );
        }
        xs
    }

    fn slot_sum(
        parts: Vec<CubeTensor<R>>,
        per: usize,
        slots: CubeTensor<R>,
        gates: Option<CubeTensor<R>>,
        k: usize,
        dtype: DType,
    ) -> CubeTensor<R> {
        let parts: Vec<_> = parts.into_iter().map(into_contiguous).collect();
        let slots = into_contiguous(slots);
        let (client, device) = (slots.client.clone(), slots.device.clone());
        let d = parts[0].meta.shape[1];
        let rows = slots.meta.shape.num_elements() / k;
        let out = empty_device_dtype::<R>(client.clone(), device.clone(), Shape::new([rows, d]), dtype);
        let weighted = gates.is_some();
        // Unread when unweighted, but the kernel takes a tensor there.
        let gates = gates
            .map(into_contiguous)
            .unwrap_or_else(|| empty_device_dtype::<R>(client.clone(), device, Shape::new([1]), dtype));
        let (tensors, starts, ends) = part_args(&parts, per);
        let dtypes = [parts[0].dtype.into(), dtype.into(), slots.dtype.into()];
        slot_sum_kernel::launch::<R>(
            &client,
            row_grid(rows),
            CubeDim::new_1d(BLOCK),
            tensors,
            starts,
            ends,
            slots.into_tensor_arg(),
            gates.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            rows as u32,
            d as u32,
            k as u32,
            weighted,
            dtypes,
        );
        out
    }

    fn combine_bwd(
        parts: Vec<CubeTensor<R>>,
        order: CubeTensor<R>,
        dout: CubeTensor<R>,
        gates: CubeTensor<R>,
        k: usize,
    ) -> [CubeTensor<R>; 2] {
        let parts: Vec<_> = parts.into_iter().map(into_contiguous).collect();
        let (order, dout, gates) = (
            into_contiguous(order),
            into_contiguous(dout),
            into_contiguous(gates),
        );
        let (_, d) = rows_cols(&dout);
        let rows = order.meta.shape.num_elements();
        let dy = empty(&parts[0], Shape::new([rows, d]));
        let dgates = empty(&dout, Shape::new([rows]));
        let (tensors, starts, ends) = part_args(&parts, 1);
        let dtypes = [parts[0].dtype.into(), dout.dtype.into(), order.dtype.into()];
        combine_bwd_kernel::launch::<R>(
            &dout.client.clone(),
            row_grid(rows),
            CubeDim::new_1d(BLOCK),
            tensors,
            starts,
            ends,
            order.into_tensor_arg(),
            dout.into_tensor_arg(),
            gates.into_tensor_arg(),
            dy.clone().into_tensor_arg(),
            dgates.clone().into_tensor_arg(),
            rows as u32,
            d as u32,
            k as u32,
            BLOCK,
            dtypes,
        );
        [dy, dgates]
    }

    fn tensor_args(device: &Self::Device) -> usize {
        free_bindings(&R::client(device)) as usize
    }

    fn device_memory(device: &Self::Device) -> Option<DeviceMemory> {
        // The memory manager's count for this thread's stream.
        let u = R::client(device).memory_usage().ok()?;
        Some(DeviceMemory {
            in_use: u.bytes_in_use,
            reserved: u.bytes_reserved,
        })
    }
}

/// The flash kernels in the order tried: tensor cores (cmma) first, then one unit per row.
/// Four planes per cube is the middle of burn's own autotune set for this routine.
fn flash_strategies() -> [(&'static str, Strategy); 2] {
    [
        (
            "blackbox_accelerated",
            Strategy::BlackboxAccelerated(BlueprintStrategy::Inferred(BlackboxAcceleratedStrategy {
                num_planes: 4,
                seq_q: 1,
                seq_kv: 1,
            })),
        ),
        ("unit", Strategy::Unit(BlueprintStrategy::Inferred(()))),
    ]
}

static FLASH_ROUTINE: Mutex<Option<&'static str>> = Mutex::new(None);

pub(super) fn flash_routine() -> Option<&'static str> {
    *FLASH_ROUTINE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Record which kernel ran; say once per change why the faster ones could not.
fn note_routine(name: &'static str, errors: &[String]) {
    let mut last = FLASH_ROUTINE.lock().unwrap_or_else(|e| e.into_inner());
    if *last != Some(name) && !errors.is_empty() {
        crate::say::err(format_args!(
            "warning: flash attention runs the {name} kernel ({})",
            errors.join("; ")
        ));
    }
    *last = Some(name);
}

/// The warning that the bf16 → f32 matmul fell back to f32 (`matmul_f32_out`), said once.
static MATMUL_FALLBACK: std::sync::Once = std::sync::Once::new();

/// `[b, n_kv, t, hd]` → `[b, n_kv·rep, t, hd]`, each kv head repeated for its `rep` query heads
/// (contiguous).
fn repeat_heads<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    x: CubeTensor<R>,
    rep: usize,
) -> CubeTensor<R> {
    type B<R, F, I, BT> = CubeBackend<R, F, I, BT>;
    let x = into_contiguous(x);
    if rep == 1 {
        return x;
    }
    let s = x.meta.shape.clone();
    let (b, n_kv, t, hd) = (s[0], s[1], s[2], s[3]);
    let x = B::<R, F, I, BT>::float_reshape(x, Shape::new([b, n_kv, 1, t, hd]));
    let x = B::<R, F, I, BT>::float_expand(x, Shape::new([b, n_kv, rep, t, hd]));
    B::<R, F, I, BT>::float_reshape(into_contiguous(x), Shape::new([b, n_kv * rep, t, hd]))
}

// ---- fusion ----------------------------------------------------------------------------------

/// Which `GpuOps` method a custom operation of a fusion stream runs.
#[derive(Debug, Clone, Copy)]
enum Kernel {
    /// The softmax, keeping its f32 probabilities beside the half ones when set (the
    /// backward's state; f32 logits have one set of probabilities, the first output).
    SoftmaxFwd(CappedSoftmax, bool),
    /// The softmax's backward, writing the logits' gradient in this dtype.
    SoftmaxBwd(CappedSoftmax, DType),
    RmsNormFwd(f32),
    RmsNormBwd,
    CrossEntropyFwd,
    CrossEntropyBwd,
    RowsSum(usize),
    /// The combine: parts per range, slots per row, weighted, the output's dtype.
    SlotSum(usize, usize, bool, DType),
    /// The combine's backward: slots per row.
    CombineBwd(usize),
    Flash(FlashOp),
    FlashBwd(FlashOp, FlashBwdPlan),
    MatmulF32Out,
    AdamW(AdamWStep),
    SumSquares,
    Sum,
    Scale(f32),
    /// An expert's weights packed, in this dtype; `w2` cast too when set.
    PackUp(DType, bool),
    /// The gate, its two inputs packed in one tensor when set.
    GeluGate(bool),
    /// Writing the forward's output too when the first is set; packed inputs when the second is.
    GeluGateBwd(bool, bool),
    /// RoPE, rotating back when set.
    Rope(bool),
}

impl Kernel {
    fn name(self) -> &'static str {
        match self {
            Kernel::SoftmaxFwd(..) => "colossus_capped_softmax",
            Kernel::SoftmaxBwd(..) => "colossus_capped_softmax_backward",
            Kernel::RmsNormFwd(_) => "colossus_rms_norm",
            Kernel::RmsNormBwd => "colossus_rms_norm_backward",
            Kernel::CrossEntropyFwd => "colossus_cross_entropy",
            Kernel::CrossEntropyBwd => "colossus_cross_entropy_backward",
            Kernel::RowsSum(_) => "colossus_rows_sum",
            Kernel::SlotSum(..) => "colossus_slot_sum",
            Kernel::CombineBwd(_) => "colossus_combine_backward",
            Kernel::Flash(_) => "colossus_flash_attention",
            Kernel::FlashBwd(..) => "colossus_flash_attention_backward",
            Kernel::MatmulF32Out => "colossus_matmul_f32_out",
            Kernel::AdamW(_) => "colossus_adamw",
            Kernel::SumSquares => "colossus_sum_squares",
            Kernel::Sum => "colossus_sum",
            Kernel::Scale(_) => "colossus_scale",
            Kernel::PackUp(..) => "colossus_pack_up",
            Kernel::GeluGate(false) => "colossus_gelu_gate",
            Kernel::GeluGate(true) => "colossus_gelu_gate_packed",
            Kernel::GeluGateBwd(false, false) => "colossus_gelu_gate_backward",
            Kernel::GeluGateBwd(true, false) => "colossus_gelu_gate_backward_and_value",
            Kernel::GeluGateBwd(false, true) => "colossus_gelu_gate_packed_backward",
            Kernel::GeluGateBwd(true, true) => "colossus_gelu_gate_packed_backward_and_value",
            Kernel::Rope(false) => "colossus_rope",
            Kernel::Rope(true) => "colossus_rope_backward",
        }
    }

    /// Run on the inputs registered in `ins` (the targets, input 1 of the cross-entropy, inputs
    /// 1 and 2 of the rows sum and input 0 of the combine's two kernels are integers; every
    /// other input is a float tensor).
    fn run<B: FusionBackend + GpuOps>(
        self,
        ins: &[TensorIr],
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) -> Vec<FloatTensor<B>> {
        let mut f = |i: usize| handles.get_float_tensor::<B>(&ins[i]);
        match self {
            Kernel::SoftmaxFwd(op, keep_wide) => {
                let (probs, lse, p) = B::capped_softmax_fwd(f(0), op, keep_wide);
                [probs, lse].into_iter().chain(p).collect()
            }
            Kernel::SoftmaxBwd(op, dtype) => vec![B::capped_softmax_bwd(f(0), f(1), f(2), op, dtype)],
            Kernel::RmsNormFwd(eps) => {
                let residual = (ins.len() == 3).then(|| f(2));
                let (y, inv) = B::rms_norm_fwd(f(0), f(1), residual, eps);
                vec![y, inv]
            }
            Kernel::RmsNormBwd => B::rms_norm_bwd(f(0), f(1), f(2), f(3)).into(),
            Kernel::CrossEntropyFwd => {
                let x = f(0);
                let (nll, lse) = B::cross_entropy_fwd(x, handles.get_int_tensor::<B>(&ins[1]));
                vec![nll, lse]
            }
            Kernel::RowsSum(rows) => {
                let g = f(0);
                let order = handles.get_int_tensor::<B>(&ins[1]);
                let seg = handles.get_int_tensor::<B>(&ins[2]);
                vec![B::rows_sum(g, order, seg, rows)]
            }
            Kernel::SlotSum(per, k, weighted, dtype) => {
                let first = if weighted { 2 } else { 1 };
                let parts = (first..ins.len()).map(&mut f).collect();
                let gates = weighted.then(|| f(1));
                let slots = handles.get_int_tensor::<B>(&ins[0]);
                vec![B::slot_sum(parts, per, slots, gates, k, dtype)]
            }
            Kernel::CombineBwd(k) => {
                let parts = (3..ins.len()).map(&mut f).collect();
                let (dout, gates) = (f(1), f(2));
                let order = handles.get_int_tensor::<B>(&ins[0]);
                B::combine_bwd(parts, order, dout, gates, k).into()
            }
            Kernel::Flash(op) => vec![B::flash_attention(f(0), f(1), f(2), op)],
            Kernel::FlashBwd(op, plan) => {
                B::flash_attention_bwd([f(0), f(1), f(2), f(3), f(4)], op, plan).into()
            }
            Kernel::MatmulF32Out => vec![B::matmul_f32_out(f(0), f(1))],
            Kernel::AdamW(s) => {
                let sets = (0..ins.len() / 4)
                    .map(|j| [f(4 * j), f(4 * j + 1), f(4 * j + 2), f(4 * j + 3)])
                    .collect();
                B::adamw(sets, s).into_iter().flatten().collect()
            }
            Kernel::SumSquares => vec![B::sum_squares((0..ins.len()).map(f).collect())],
            Kernel::Sum => vec![B::sum(f(0))],
            Kernel::Scale(factor) => B::scale((0..ins.len()).map(f).collect(), factor),
            Kernel::PackUp(dtype, with_w2) => {
                let (w13, w2) = B::pack_up(f(0), f(1), with_w2.then(|| f(2)), dtype);
                [w13].into_iter().chain(w2).collect()
            }
            Kernel::GeluGate(packed) => vec![B::gelu_gate(f(0), (!packed).then(|| f(1)))],
            Kernel::GeluGateBwd(value, packed) => {
                // Inputs [a, b, g], or [ab, g] when packed.
                let b = (!packed).then(|| f(1));
                let (grads, y) = B::gelu_gate_bwd(f(0), b, f(ins.len() - 1), value);
                grads.into_iter().chain(y).collect()
            }
            Kernel::Rope(inverse) => vec![B::rope(f(0), [f(1), f(2)], inverse)],
            Kernel::CrossEntropyBwd => {
                let (x, lse, g) = (f(0), f(2), f(3));
                vec![B::cross_entropy_bwd(
                    x,
                    handles.get_int_tensor::<B>(&ins[1]),
                    lse,
                    g,
                )]
            }
        }
    }
}

/// A kernel as a custom operation of a fusion stream: burn's fusion cannot see inside it, so
/// the element-wise ops on either side are fused up to its boundary.
#[derive(Debug)]
struct FusedOp<B> {
    desc: CustomOpIr,
    kernel: Kernel,
    _b: std::marker::PhantomData<B>,
}

impl<B: FusionBackend + GpuOps> Operation<B::FusionRuntime> for FusedOp<B> {
    fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
        let outs = self.kernel.run::<B>(&self.desc.inputs, handles);
        for (ir, out) in self.desc.outputs.iter().zip(outs) {
            handles.register_float_tensor::<B>(&ir.id, out);
        }
    }
}

/// Register `kernel` on `ins` in their fusion stream; its outputs have `shapes` and the first
/// input's (float) dtype.
fn register<B: FusionBackend + GpuOps, const N: usize>(
    kernel: Kernel,
    ins: Vec<FusionTensor<B::FusionRuntime>>,
    shapes: [Shape; N],
) -> [FusionTensor<B::FusionRuntime>; N] {
    let dtype = ins[0].dtype;
    register_as::<B, N>(kernel, ins, shapes, dtype)
}

/// `register` with outputs of `dtype`.
fn register_as<B: FusionBackend + GpuOps, const N: usize>(
    kernel: Kernel,
    ins: Vec<FusionTensor<B::FusionRuntime>>,
    shapes: [Shape; N],
    dtype: DType,
) -> [FusionTensor<B::FusionRuntime>; N] {
    register_typed_n::<B, N>(kernel, ins, shapes.map(|s| (s, dtype)))
}

/// `register_typed` with a fixed number of outputs, each of its own dtype.
fn register_typed_n<B: FusionBackend + GpuOps, const N: usize>(
    kernel: Kernel,
    ins: Vec<FusionTensor<B::FusionRuntime>>,
    outs: [(Shape, DType); N],
) -> [FusionTensor<B::FusionRuntime>; N] {
    register_typed::<B>(kernel, ins, outs.into())
        .try_into()
        .unwrap_or_else(|_| unreachable!("one tensor per registered output"))
}

/// `register_as` with as many outputs as `shapes` (the multi-tensor kernels').
fn register_many<B: FusionBackend + GpuOps>(
    kernel: Kernel,
    ins: Vec<FusionTensor<B::FusionRuntime>>,
    shapes: Vec<Shape>,
    dtype: DType,
) -> Vec<FusionTensor<B::FusionRuntime>> {
    let outs = shapes.into_iter().map(|s| (s, dtype)).collect();
    register_typed::<B>(kernel, ins, outs)
}

/// `register_many` with each output's own dtype.
fn register_typed<B: FusionBackend + GpuOps>(
    kernel: Kernel,
    ins: Vec<FusionTensor<B::FusionRuntime>>,
    outs: Vec<(Shape, DType)>,
) -> Vec<FusionTensor<B::FusionRuntime>> {
    let client = ins[0].client.clone();
    let streams = OperationStreams::with_inputs(ins.iter());
    let outs: Vec<TensorIr> = outs
        .into_iter()
        .map(|(s, dtype)| TensorIr::uninit(client.create_empty_handle(), s, dtype))
        .collect();
    let ins: Vec<TensorIr> = ins.into_iter().map(|t| t.into_ir()).collect();
    let desc = CustomOpIr::new(kernel.name(), &ins, &outs);
    let op = FusedOp::<B> {
        desc: desc.clone(),
        kernel,
        _b: std::marker::PhantomData,
    };
    client.register(streams, OperationIr::Custom(desc), op)
}

impl<B: FusionBackend + GpuOps> GpuOps for Fusion<B> {
    fn capped_softmax_fwd(
        x: FloatTensor<Self>,
        op: CappedSoftmax,
        state: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, Option<FloatTensor<Self>>) {
        let shape = x.shape.clone();
        let rows = shape.num_elements() / shape[shape.num_dims() - 1].max(1);
        let wide = computed_in(x.dtype);
        let keep_wide = keeps_wide(x.dtype, state);
        let mut outs = vec![(shape.clone(), x.dtype), (Shape::new([rows]), wide)];
        outs.extend(keep_wide.then_some((shape, wide)));
        let kernel = Kernel::SoftmaxFwd(op, keep_wide);
        let mut outs = register_typed::<B>(kernel, vec![x], outs).into_iter();
        let probs = outs.next().expect("the probabilities");
        let lse = outs.next().expect("the log-sum-exp");
        let p = state.then(|| outs.next().unwrap_or_else(|| probs.clone()));
        (probs, lse, p)
    }

    fn capped_softmax_bwd(
        p: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        g: FloatTensor<Self>,
        op: CappedSoftmax,
        dtype: DType,
    ) -> FloatTensor<Self> {
        let shape = p.shape.clone();
        let [dx] = register_as::<B, 1>(Kernel::SoftmaxBwd(op, dtype), vec![p, lse, g], [shape], dtype);
        dx
    }

    fn rms_norm_fwd(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        residual: Option<FloatTensor<Self>>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let shape = x.shape.clone();
        let rows = shape.num_elements() / shape[shape.num_dims() - 1].max(1);
        let dtype = w.dtype;
        let ins = [x, w].into_iter().chain(residual).collect();
        let outs = [shape, Shape::new([rows])];
        let [y, inv] = register_as::<B, 2>(Kernel::RmsNormFwd(eps), ins, outs, dtype);
        (y, inv)
    }

    fn rms_norm_bwd(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        inv: FloatTensor<Self>,
        g: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 2] {
        let outs = [(x.shape.clone(), x.dtype), (w.shape.clone(), w.dtype)];
        register_typed_n::<B, 2>(Kernel::RmsNormBwd, vec![x, w, inv, g], outs)
    }

    fn cross_entropy_fwd(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let rows = Shape::new([logits.shape[0]]);
        let [nll, lse] = register::<B, 2>(
            Kernel::CrossEntropyFwd,
            vec![logits, targets],
            [rows.clone(), rows],
        );
        (nll, lse)
    }

    fn cross_entropy_bwd(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        lse: FloatTensor<Self>,
        g: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let shape = logits.shape.clone();
        let [dx] = register::<B, 1>(Kernel::CrossEntropyBwd, vec![logits, targets, lse, g], [shape]);
        dx
    }

    fn rows_sum(
        g: FloatTensor<Self>,
        order: IntTensor<Self>,
        seg: IntTensor<Self>,
        rows: usize,
    ) -> FloatTensor<Self> {
        let d = g.shape[g.shape.num_dims() - 1];
        let [out] = register::<B, 1>(
            Kernel::RowsSum(rows),
            vec![g, order, seg],
            [Shape::new([rows, d])],
        );
        out
    }

    fn slot_sum(
        parts: Vec<FloatTensor<Self>>,
        per: usize,
        slots: IntTensor<Self>,
        gates: Option<FloatTensor<Self>>,
        k: usize,
        dtype: DType,
    ) -> FloatTensor<Self> {
        let shape = Shape::new([slots.shape.num_elements() / k, parts[0].shape[1]]);
        let kernel = Kernel::SlotSum(per, k, gates.is_some(), dtype);
        let ins = std::iter::once(slots).chain(gates).chain(parts).collect();
        let [out] = register_as::<B, 1>(kernel, ins, [shape], dtype);
        out
    }

    fn combine_bwd(
        parts: Vec<FloatTensor<Self>>,
        order: IntTensor<Self>,
        dout: FloatTensor<Self>,
        gates: FloatTensor<Self>,
        k: usize,
    ) -> [FloatTensor<Self>; 2] {
        let rows = order.shape.num_elements();
        let outs = [
            (Shape::new([rows, dout.shape[1]]), parts[0].dtype),
            (Shape::new([rows]), dout.dtype),
        ];
        let ins = [order, dout, gates].into_iter().chain(parts).collect();
        register_typed_n::<B, 2>(Kernel::CombineBwd(k), ins, outs)
    }

    fn tensor_args(device: &Self::Device) -> usize {
        B::tensor_args(device)
    }

    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        op: FlashOp,
    ) -> FloatTensor<Self> {
        let shape = q.shape.clone();
        let [out] = register::<B, 1>(Kernel::Flash(op), vec![q, k, v], [shape]);
        out
    }

    fn flash_bwd_plan(device: &Self::Device, dtype: DType, hd: usize) -> Option<FlashBwdPlan> {
        B::flash_bwd_plan(device, dtype, hd)
    }

    fn flash_attention_bwd(
        qkvog: [FloatTensor<Self>; 5],
        op: FlashOp,
        plan: FlashBwdPlan,
    ) -> [FloatTensor<Self>; 3] {
        let shapes = [0, 1, 2].map(|i| qkvog[i].shape.clone());
        register::<B, 3>(Kernel::FlashBwd(op, plan), qkvog.into(), shapes)
    }

    fn matmul_f32_out(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        // [.., m, k] · [.., k, n] → [.., m, n] (equal batch dims: `GpuOps::matmul_f32_out`).
        let mut dims = a.shape.to_vec();
        let n = b.shape[b.shape.num_dims() - 1];
        *dims.last_mut().expect("a matrix has two dims") = n;
        let shape = Shape::from(dims);
        let [out] = register_as::<B, 1>(Kernel::MatmulF32Out, vec![a, b], [shape], DType::F32);
        out
    }

    fn pack_up(
        w1: FloatTensor<Self>,
        w3: FloatTensor<Self>,
        w2: Option<FloatTensor<Self>>,
        dtype: DType,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        let [d, f] = [w1.shape[0], w1.shape[1]];
        let shapes = [Shape::new([d, 2 * f])]
            .into_iter()
            .chain(w2.as_ref().map(|w| w.shape.clone()));
        let kernel = Kernel::PackUp(dtype, w2.is_some());
        let ins = [w1, w3].into_iter().chain(w2).collect();
        let mut outs = register_many::<B>(kernel, ins, shapes.collect(), dtype).into_iter();
        let w13 = outs.next().expect("w13 comes first");
        (w13, outs.next())
    }

    fn gelu_gate(a: FloatTensor<Self>, b: Option<FloatTensor<Self>>) -> FloatTensor<Self> {
        let packed = b.is_none();
        let (shape, _) = gate_shape(&a.shape, packed);
        let [out] = register::<B, 1>(
            Kernel::GeluGate(packed),
            [a].into_iter().chain(b).collect(),
            [shape],
        );
        out
    }

    fn gelu_gate_bwd(
        a: FloatTensor<Self>,
        b: Option<FloatTensor<Self>>,
        g: FloatTensor<Self>,
        value: bool,
    ) -> (Vec<FloatTensor<Self>>, Option<FloatTensor<Self>>) {
        let packed = b.is_none();
        let (shape, dtype) = (g.shape.clone(), a.dtype);
        // [da, db] or [dab] in the inputs' shapes, then the value in the output's.
        let mut shapes = match &b {
            Some(b) => vec![a.shape.clone(), b.shape.clone()],
            None => vec![a.shape.clone()],
        };
        shapes.extend(value.then_some(shape));
        let ins = [a].into_iter().chain(b).chain([g]).collect();
        let mut outs = register_many::<B>(Kernel::GeluGateBwd(value, packed), ins, shapes, dtype);
        let y = value.then(|| outs.pop().expect("the value is the last output"));
        (outs, y)
    }

    fn rope(x: FloatTensor<Self>, cs: [FloatTensor<Self>; 2], inverse: bool) -> FloatTensor<Self> {
        let mut shape = x.shape.clone();
        shape.swap(1, 2);
        let [cos, sin] = cs;
        let [out] = register::<B, 1>(Kernel::Rope(inverse), vec![x, cos, sin], [shape]);
        out
    }

    fn adamw(sets: Vec<[FloatTensor<Self>; 4]>, s: AdamWStep) -> Vec<[FloatTensor<Self>; 3]> {
        let Some(dtype) = sets.first().map(|x| x[0].dtype) else {
            return Vec::new();
        };
        let shapes = sets
            .iter()
            .flat_map(|x| std::iter::repeat_n(x[0].shape.clone(), 3))
            .collect();
        let ins = sets.into_iter().flatten().collect();
        let mut outs = register_many::<B>(Kernel::AdamW(s), ins, shapes, dtype).into_iter();
        std::iter::from_fn(|| Some([outs.next()?, outs.next()?, outs.next()?])).collect()
    }

    fn sum_squares(xs: Vec<FloatTensor<Self>>) -> FloatTensor<Self> {
        let [out] = register::<B, 1>(Kernel::SumSquares, xs, [Shape::new([1])]);
        out
    }

    fn sum(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let [out] = register::<B, 1>(Kernel::Sum, vec![x], [Shape::new([1])]);
        out
    }

    fn scale(xs: Vec<FloatTensor<Self>>, factor: f32) -> Vec<FloatTensor<Self>> {
        let Some(dtype) = xs.first().map(|x| x.dtype) else {
            return xs;
        };
        let shapes = xs.iter().map(|x| x.shape.clone()).collect();
        register_many::<B>(Kernel::Scale(factor), xs, shapes, dtype)
    }

    fn device_memory(device: &Self::Device) -> Option<DeviceMemory> {
        B::device_memory(device)
    }
}
