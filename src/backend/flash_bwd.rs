//! The fused flash-attention backward (`GpuOps::flash_attention_bwd`): dq, dk and dv of Grok's
//! soft-capped causal attention from q, k, v, the forward's output and its gradient, rebuilt
//! tile by tile in shared memory, so nothing `[rows, keys]`-sized is written to device memory
//! (FlashAttention-2's backward, Dao 2023, with the soft cap's derivative).
//!
//! Why: at `gpu-350m` the composed backward (`model::flash::FlashBackward`'s fallback) writes and
//! reads ~7.5 GB of f32 scores, probabilities and their gradients per layer, ~30 ms of an H200's
//! bandwidth per step against a 19 ms FLOP floor for the whole step (docs/benchmarks.md, "the two
//! numbers"). Here the traffic is q, k, v, o, dO in and dq, dk, dv out, plus one f32 per row.
//!
//! Two kernels, no atomics, so the sums are in a fixed order and a rerun gives the same bits:
//! - `q` kernel, one cube per (query block, query head): a first sweep over the visible key
//!   blocks gives each row's log-sum-exp (the forward kernel does not keep it), then a second
//!   sweep accumulates `dq += dS·k`. It also writes the log-sum-exps and `D = rowsum(dO ∘ o)`.
//! - `kv` kernel, one cube per (key block, kv head), after it: over the kv head's `rep` query
//!   heads and their query blocks at or below the diagonal, `dv += Pᵀ·dO` and `dk += dSᵀ·q`, so
//!   grouped heads are summed in f32 in shared memory, not repeated and reduced afterwards.
//!
//! With `P = exp(z − lse)`, `z = cap·tanh(m·s/cap)`, `s = q·kᵀ`, `dP = dO·vᵀ`:
//! `dS = P ∘ (dP − D) ∘ m(1 − tanh²)` (uncapped: `m·P ∘ (dP − D)`). Eight tile products in all
//! (the `q` kernel's score product twice), against five when the forward keeps the log-sum-exps
//! and dq is summed with atomics: on tensor cores they are ~1.6 TFLOP a step at `gpu-350m`, a few
//! milliseconds.
//!
//! The products (`product`) run on the tensor cores (cmma: square fragments, 16×16×16 on an
//! H100/H200, bf16/f16 in, f32 accumulated) when the device has them for the dtype, and otherwise
//! one unit per output element (f32, or a device without cooperative matrices). Everything else is
//! the same code on both. Mesa's lavapipe runs both: without cooperative matrices under WGSL, and
//! from Mesa 26 on with 8×8×8 f16 ones under SPIR-V (`--features vulkan`), which is how the
//! fragment code (offsets, strides, layouts, planes) is checked without a GPU.
//! `model::flash` uses the kernel on its own only with tensor cores: one unit per element is no
//! faster than the composed path's tensor-core matmuls.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::features::MmaConfig;
use cubecl::ir::{ElemType, FloatKind, StorageType};
use cubecl::prelude::*;

use super::{FlashBwdPlan, FlashOp};

/// Units per cube: four planes of 32 on CUDA (sixteen of 8 on lavapipe), each plane working on one
/// output fragment at a time.
const UNITS: u32 = 128;

/// The fragment edges tried, largest first: CUDA's wmma has 16×16×16 for bf16 and f16, lavapipe
/// 8×8×8 for f16.
const FRAGMENTS: [usize; 2] = [16, 8];

/// Byte alignment of every tile a fragment is loaded from or stored to: `wmma` loads and stores
/// need 256-bit aligned addresses, and cubecl packs shared arrays at their element's alignment,
/// so one odd-sized array would shift the tiles after it.
const TILE_ALIGN: usize = 32;

/// `c (+)= a·b` on tiles in shared memory: `a` is `m × k`, `b` is `k × n`, `c` is `m × n` f32
/// row-major. `a_t`: `a` is stored transposed (`[k][m]`, i.e. column-major); `b_t`: `b` is
/// stored as `[n][k]`. `frag`: the edge of the tensor-core fragments, of which `m`, `n` and `k`
/// are multiples, or 0: one unit per output element. Ends with the cube in sync, so `c` can be
/// read and the inputs overwritten.
#[allow(clippy::too_many_arguments)]
#[cube]
fn product<F: Float>(
    a: &SharedMemory<F>,
    b: &SharedMemory<F>,
    c: &mut SharedMemory<f32>,
    #[comptime] m: usize,
    #[comptime] n: usize,
    #[comptime] k: usize,
    #[comptime] a_t: bool,
    #[comptime] b_t: bool,
    #[comptime] accumulate: bool,
    #[comptime] frag: usize,
) {
    if comptime!(frag > 0) {
        let a_layout = if a_t {
            cmma::MatrixLayout::ColMajor
        } else {
            cmma::MatrixLayout::RowMajor
        };
        let b_layout = if b_t {
            cmma::MatrixLayout::ColMajor
        } else {
            cmma::MatrixLayout::RowMajor
        };
        let fa =
            unsafe { cmma::Matrix::<F>::uninitialized(cmma::MatrixIdent::A, frag, frag, frag, a_layout) };
        let fb =
            unsafe { cmma::Matrix::<F>::uninitialized(cmma::MatrixIdent::B, frag, frag, frag, b_layout) };
        let fc = unsafe {
            cmma::Matrix::<f32>::uninitialized(
                cmma::MatrixIdent::Accumulator,
                frag,
                frag,
                frag,
                cmma::MatrixLayout::Undefined,
            )
        };
        let tiles_n = n / frag;
        let tiles = (m / frag) * tiles_n;
        let planes = (CUBE_DIM / PLANE_DIM) as usize;
        // Each plane owns whole output fragments; a fragment's k-loop stays in one plane.
        let mut tile = (UNIT_POS / PLANE_DIM) as usize;
        while tile < tiles {
            let r0 = (tile / tiles_n) * frag;
            let c0 = (tile % tiles_n) * frag;
            let out = r0 * n + c0;
            if accumulate {
                cmma::load_with_layout(&fc, &c.slice(out, m * n), n as u32, cmma::MatrixLayout::RowMajor);
            } else {
                cmma::fill(&fc, f32::new(0.0));
            }
            for kk in 0..k / frag {
                let k0 = kk * frag;
                // Element (i, j) of a column-major fragment is at `i + j·stride`.
                if a_t {
                    cmma::load(&fa, &a.slice(k0 * m + r0, m * k), m as u32);
                } else {
                    cmma::load(&fa, &a.slice(r0 * k + k0, m * k), k as u32);
                }
                if b_t {
                    cmma::load(&fb, &b.slice(c0 * k + k0, k * n), k as u32);
                } else {
                    cmma::load(&fb, &b.slice(k0 * n + c0, k * n), n as u32);
                }
                cmma::execute::<F, F, f32, f32>(&fa, &fb, &fc, &fc);
            }
            cmma::store(
                &mut c.slice_mut(out, m * n),
                &fc,
                n as u32,
                cmma::MatrixLayout::RowMajor,
            );
            tile += planes;
        }
    } else {
        let mut idx = UNIT_POS as usize;
        while idx < m * n {
            let r = idx / n;
            let col = idx % n;
            let mut sum = f32::new(0.0);
            for kk in 0..k {
                let x = if a_t { a[kk * m + r] } else { a[r * k + kk] };
                let y = if b_t { b[col * k + kk] } else { b[kk * n + col] };
                sum += f32::cast_from(x) * f32::cast_from(y);
            }
            if accumulate {
                c[idx] += sum;
            } else {
                c[idx] = sum;
            }
            idx += CUBE_DIM as usize;
        }
    }
    sync_cube();
}

/// Rows `row0 ..` of a `[.., t, hd]` head starting at `base` into a `[blk][hd]` tile; rows past
/// `t` read as zeros.
#[cube]
fn load_rows<F: Float>(
    src: &Tensor<F>,
    base: usize,
    row0: usize,
    t: usize,
    tile: &mut SharedMemory<F>,
    #[comptime] blk: usize,
    #[comptime] hd: usize,
) {
    let mut idx = UNIT_POS as usize;
    while idx < blk * hd {
        let row = row0 + idx / hd;
        if row < t {
            tile[idx] = src[base + row * hd + idx % hd];
        } else {
            tile[idx] = F::new(0.0);
        }
        idx += CUBE_DIM as usize;
    }
}

/// Zeros into an f32 tile.
#[cube]
fn zero(tile: &mut SharedMemory<f32>, #[comptime] len: usize) {
    let mut idx = UNIT_POS as usize;
    while idx < len {
        tile[idx] = f32::new(0.0);
        idx += CUBE_DIM as usize;
    }
}

/// The probability of a visible (query, key) pair and the gradient of its raw score `q·k`.
#[cube]
fn prob_and_dscore(
    s: f32,
    lse: f32,
    dp: f32,
    d: f32,
    multiplier: f32,
    cap: f32,
    #[comptime] has_cap: bool,
) -> (f32, f32) {
    let mut z = s * multiplier;
    let mut slope = multiplier;
    if has_cap {
        let th = (s * multiplier / cap).tanh();
        z = th * cap;
        slope = multiplier * (f32::new(1.0) - th * th);
    }
    let p = (z - lse).exp();
    (p, p * (dp - d) * slope)
}

/// The capped logit of a raw score.
#[cube]
fn capped_logit(s: f32, multiplier: f32, cap: f32, #[comptime] has_cap: bool) -> f32 {
    let mut z = s * multiplier;
    if has_cap {
        z = (s * multiplier / cap).tanh() * cap;
    }
    z
}

/// From a tile's raw scores `ss` and `dP` (`[queries][keys]`, f32), the rows' log-sum-exps and
/// `D`: the scores' gradient `dS` into `sds` and, with `keep_p`, the probabilities into `sp`, in
/// the products' dtype; zero where the key is after the query or either is past `t`. Ends with
/// the cube in sync.
#[allow(clippy::too_many_arguments)]
#[cube]
fn score_grads<F: Float>(
    ss: &SharedMemory<f32>,
    sdp: &SharedMemory<f32>,
    slse: &SharedMemory<f32>,
    sd: &SharedMemory<f32>,
    sp: &mut SharedMemory<F>,
    sds: &mut SharedMemory<F>,
    q0: usize,
    k0: usize,
    t: usize,
    multiplier: f32,
    cap: f32,
    #[comptime] has_cap: bool,
    #[comptime] blk: usize,
    #[comptime] keep_p: bool,
) {
    let mut idx = UNIT_POS as usize;
    while idx < blk * blk {
        let r = idx / blk;
        let i = q0 + r;
        let j = k0 + idx % blk;
        let mut p = f32::new(0.0);
        let mut ds = f32::new(0.0);
        if j <= i && i < t {
            let (pv, d) = prob_and_dscore(ss[idx], slse[r], sdp[idx], sd[r], multiplier, cap, has_cap);
            p = pv;
            ds = d;
        }
        if keep_p {
            sp[idx] = F::cast_from(p);
        }
        sds[idx] = F::cast_from(ds);
        idx += CUBE_DIM as usize;
    }
    sync_cube();
}

#[allow(clippy::too_many_arguments)]
#[cube(launch)]
fn flash_bwd_q_kernel<F: Float>(
    q: &Tensor<F>,          // [b·n_kv·rep, t, hd] (the folded `[b, n_kv, rep·t, hd]`), contiguous
    k: &Tensor<F>,          // [b·n_kv, t, hd]
    v: &Tensor<F>,          // [b·n_kv, t, hd]
    o: &Tensor<F>,          // like q: the forward's output
    g: &Tensor<F>,          // like q: the output's gradient
    dq: &mut Tensor<F>,     // like q
    lse: &mut Tensor<f32>,  // [b·n_kv·rep·t]
    dsum: &mut Tensor<f32>, // [b·n_kv·rep·t]: D = rowsum(dO ∘ o)
    t: u32,
    rep: u32,
    multiplier: f32,
    cap: f32,
    #[comptime] has_cap: bool,
    #[comptime] blk: usize,
    #[comptime] hd: usize,
    #[comptime] frag: usize,
    #[define(F)] _dtype: StorageType,
) {
    let t = t as usize;
    let q0 = CUBE_POS_X as usize * blk;
    let head = CUBE_POS_Y as usize;
    let qbase = head * t * hd;
    let kbase = (head / rep as usize) * t * hd;
    let rbase = head * t;
    let u = UNIT_POS as usize;

    let mut sq = SharedMemory::<F>::new_aligned(blk * hd, TILE_ALIGN);
    let mut sg = SharedMemory::<F>::new_aligned(blk * hd, TILE_ALIGN);
    let mut sk = SharedMemory::<F>::new_aligned(blk * hd, TILE_ALIGN);
    let mut sv = SharedMemory::<F>::new_aligned(blk * hd, TILE_ALIGN);
    let mut ss = SharedMemory::<f32>::new_aligned(blk * blk, TILE_ALIGN);
    let mut sdp = SharedMemory::<f32>::new_aligned(blk * blk, TILE_ALIGN);
    let mut sds = SharedMemory::<F>::new_aligned(blk * blk, TILE_ALIGN);
    // The probabilities are not needed here (`score_grads` with `keep_p` off): a placeholder it
    // never touches. Its length counts elements, not bytes: `TILE_ALIGN` elements of any F are a
    // whole number of 32-byte units, so it cannot shift what follows.
    let mut sp = SharedMemory::<F>::new_aligned(TILE_ALIGN, TILE_ALIGN);
    let mut sdq = SharedMemory::<f32>::new_aligned(blk * hd, TILE_ALIGN);
    let mut slse = SharedMemory::<f32>::new(blk);
    let mut sd = SharedMemory::<f32>::new(blk);

    load_rows::<F>(q, qbase, q0, t, &mut sq, blk, hd);
    load_rows::<F>(g, qbase, q0, t, &mut sg, blk, hd);
    zero(&mut sdq, blk * hd);
    if u < blk {
        let i = q0 + u;
        let mut d = f32::new(0.0);
        if i < t {
            for c in 0..hd {
                d += f32::cast_from(g[qbase + i * hd + c]) * f32::cast_from(o[qbase + i * hd + c]);
            }
            dsum[rbase + i] = d;
        }
        sd[u] = d;
    }
    sync_cube();

    // The key blocks with a key at or before this block's last row.
    let mut last = q0 + blk;
    if last > t {
        last = t;
    }
    let key_blocks = (last - 1) / blk + 1;

    // Sweep 1: each row's log-sum-exp, online (running max and sum), one unit per row.
    let mut run_max = f32::new(-3.0e38);
    let mut run_sum = f32::new(0.0);
    for kb in 0..key_blocks {
        load_rows::<F>(k, kbase, kb * blk, t, &mut sk, blk, hd);
        sync_cube();
        product::<F>(&sq, &sk, &mut ss, blk, blk, hd, false, true, false, frag);
        if u < blk {
            let i = q0 + u;
            for c in 0..blk {
                let j = kb * blk + c;
                if j <= i && i < t {
                    let z = capped_logit(ss[u * blk + c], multiplier, cap, has_cap);
                    if z > run_max {
                        run_sum = run_sum * (run_max - z).exp() + f32::new(1.0);
                        run_max = z;
                    } else {
                        run_sum += (z - run_max).exp();
                    }
                }
            }
        }
        sync_cube();
    }
    if u < blk {
        let i = q0 + u;
        let mut l = f32::new(0.0);
        if i < t {
            l = run_max + run_sum.ln();
            lse[rbase + i] = l;
        }
        slse[u] = l;
    }
    sync_cube();

    // Sweep 2: dq += dS·k.
    for kb in 0..key_blocks {
        load_rows::<F>(k, kbase, kb * blk, t, &mut sk, blk, hd);
        load_rows::<F>(v, kbase, kb * blk, t, &mut sv, blk, hd);
        sync_cube();
        product::<F>(&sq, &sk, &mut ss, blk, blk, hd, false, true, false, frag);
        product::<F>(&sg, &sv, &mut sdp, blk, blk, hd, false, true, false, frag);
        score_grads::<F>(
            &ss,
            &sdp,
            &slse,
            &sd,
            &mut sp,
            &mut sds,
            q0,
            kb * blk,
            t,
            multiplier,
            cap,
            has_cap,
            blk,
            false,
        );
        product::<F>(&sds, &sk, &mut sdq, blk, hd, blk, false, false, true, frag);
    }

    let mut idx = u;
    while idx < blk * hd {
        let i = q0 + idx / hd;
        if i < t {
            dq[qbase + i * hd + idx % hd] = F::cast_from(sdq[idx]);
        }
        idx += CUBE_DIM as usize;
    }
}

#[allow(clippy::too_many_arguments)]
#[cube(launch)]
fn flash_bwd_kv_kernel<F: Float>(
    q: &Tensor<F>,     // [b·n_kv·rep, t, hd], contiguous
    k: &Tensor<F>,     // [b·n_kv, t, hd]
    v: &Tensor<F>,     // [b·n_kv, t, hd]
    g: &Tensor<F>,     // like q
    lse: &Tensor<f32>, // [b·n_kv·rep·t], from the q kernel
    dsum: &Tensor<f32>,
    dk: &mut Tensor<F>, // like k
    dv: &mut Tensor<F>, // like v
    t: u32,
    rep: u32,
    multiplier: f32,
    cap: f32,
    #[comptime] has_cap: bool,
    #[comptime] blk: usize,
    #[comptime] hd: usize,
    #[comptime] frag: usize,
    #[define(F)] _dtype: StorageType,
) {
    let t = t as usize;
    let rep = rep as usize;
    let k0 = CUBE_POS_X as usize * blk;
    let kv_head = CUBE_POS_Y as usize;
    let kbase = kv_head * t * hd;
    let u = UNIT_POS as usize;

    let mut sk = SharedMemory::<F>::new_aligned(blk * hd, TILE_ALIGN);
    let mut sv = SharedMemory::<F>::new_aligned(blk * hd, TILE_ALIGN);
    let mut sq = SharedMemory::<F>::new_aligned(blk * hd, TILE_ALIGN);
    let mut sg = SharedMemory::<F>::new_aligned(blk * hd, TILE_ALIGN);
    let mut ss = SharedMemory::<f32>::new_aligned(blk * blk, TILE_ALIGN);
    let mut sdp = SharedMemory::<f32>::new_aligned(blk * blk, TILE_ALIGN);
    let mut sp = SharedMemory::<F>::new_aligned(blk * blk, TILE_ALIGN);
    let mut sds = SharedMemory::<F>::new_aligned(blk * blk, TILE_ALIGN);
    let mut sdk = SharedMemory::<f32>::new_aligned(blk * hd, TILE_ALIGN);
    let mut sdv = SharedMemory::<f32>::new_aligned(blk * hd, TILE_ALIGN);
    let mut slse = SharedMemory::<f32>::new(blk);
    let mut sd = SharedMemory::<f32>::new(blk);

    load_rows::<F>(k, kbase, k0, t, &mut sk, blk, hd);
    load_rows::<F>(v, kbase, k0, t, &mut sv, blk, hd);
    zero(&mut sdk, blk * hd);
    zero(&mut sdv, blk * hd);

    let query_blocks = (t - 1) / blk + 1;
    for h in 0..rep {
        let head = kv_head * rep + h;
        let qbase = head * t * hd;
        let rbase = head * t;
        // Query blocks from the diagonal down: earlier rows see none of these keys.
        for qb in CUBE_POS_X as usize..query_blocks {
            let q0 = qb * blk;
            load_rows::<F>(q, qbase, q0, t, &mut sq, blk, hd);
            load_rows::<F>(g, qbase, q0, t, &mut sg, blk, hd);
            if u < blk {
                let i = q0 + u;
                let mut l = f32::new(0.0);
                let mut d = f32::new(0.0);
                if i < t {
                    l = lse[rbase + i];
                    d = dsum[rbase + i];
                }
                slse[u] = l;
                sd[u] = d;
            }
            sync_cube();
            product::<F>(&sq, &sk, &mut ss, blk, blk, hd, false, true, false, frag);
            product::<F>(&sg, &sv, &mut sdp, blk, blk, hd, false, true, false, frag);
            score_grads::<F>(
                &ss, &sdp, &slse, &sd, &mut sp, &mut sds, q0, k0, t, multiplier, cap, has_cap, blk, true,
            );
            // [keys, queries] · [queries, hd]: P and dS are stored [queries][keys].
            product::<F>(&sp, &sg, &mut sdv, blk, hd, blk, true, false, true, frag);
            product::<F>(&sds, &sq, &mut sdk, blk, hd, blk, true, false, true, frag);
        }
    }

    let mut idx = u;
    while idx < blk * hd {
        let j = k0 + idx / hd;
        if j < t {
            dk[kbase + j * hd + idx % hd] = F::cast_from(sdk[idx]);
            dv[kbase + j * hd + idx % hd] = F::cast_from(sdv[idx]);
        }
        idx += CUBE_DIM as usize;
    }
}

/// Shared memory of the `kv` kernel, the larger of the two, in bytes.
fn shared_bytes(blk: usize, hd: usize, elem: usize) -> usize {
    4 * blk * hd * elem + 2 * blk * blk * (4 + elem) + 2 * blk * hd * 4 + 2 * blk * 4
}

/// The plan for `dtype` and head dim `hd` on `client`'s device, or `None` when no tile fits its
/// shared memory. Tensor cores need bf16/f16 square fragments with f32 accumulation, of an edge
/// that divides the head dim (and the tiles, which are multiples of 16).
pub fn plan<R: CubeRuntime>(client: &ComputeClient<R>, dtype: DType, hd: usize) -> Option<FlashBwdPlan> {
    let half = match dtype {
        DType::BF16 => Some(FloatKind::BF16),
        DType::F16 => Some(FloatKind::F16),
        _ => None,
    };
    let f32_kind: StorageType = ElemType::Float(FloatKind::F32).into();
    let fragment = half.and_then(|kind| {
        let elem: StorageType = ElemType::Float(kind).into();
        FRAGMENTS.into_iter().find(|&edge| {
            hd.is_multiple_of(edge)
                && client.features().matmul.cmma.contains(&MmaConfig {
                    a_type: elem,
                    b_type: elem,
                    cd_type: f32_kind,
                    m: edge as u32,
                    n: edge as u32,
                    k: edge as u32,
                })
        })
    });
    let props = client.properties();
    let smem = props.hardware.max_shared_memory_size;
    let units_ok = props.hardware.max_units_per_cube >= UNITS;
    let elem = dtype.size();
    // 64 rows keeps one cube's tiles at ~112 KB in bf16 at head dim 64 (the H200 has 227 KB).
    [64, 32, 16]
        .into_iter()
        .find(|&blk| units_ok && shared_bytes(blk, hd, elem) <= smem)
        .map(|blk| FlashBwdPlan { blk, fragment })
}

fn empty_as<R: CubeRuntime>(x: &CubeTensor<R>, shape: Shape, dtype: DType) -> CubeTensor<R> {
    empty_device_dtype::<R>(x.client.clone(), x.device.clone(), shape, dtype)
}

/// dq, dk, dv (the shapes and dtype of q, k, v) with `plan`'s tiles. `q`, `o`, `g`:
/// `[b, n_kv, rep·t, hd]`; `k`, `v`: `[b, n_kv, t, hd]`; all of one dtype.
pub fn launch<R: CubeRuntime>(
    [q, k, v, o, g]: [CubeTensor<R>; 5],
    op: FlashOp,
    plan: FlashBwdPlan,
) -> [CubeTensor<R>; 3] {
    let [q, k, v, o, g] = [q, k, v, o, g].map(into_contiguous);
    let s = k.meta.shape.clone();
    let (b, n_kv, t, hd) = (s[0], s[1], s[2], s[3]);
    let heads = b * n_kv * op.rep;
    let client = q.client.clone();
    let dtype = q.dtype;
    let dq = empty_as(&q, q.meta.shape.clone(), dtype);
    let dk = empty_as(&k, k.meta.shape.clone(), dtype);
    let dv = empty_as(&v, v.meta.shape.clone(), dtype);
    let lse = empty_as(&q, Shape::new([heads * t]), DType::F32);
    let dsum = empty_as(&q, Shape::new([heads * t]), DType::F32);
    let blocks = t.div_ceil(plan.blk) as u32;
    let has_cap = op.cap > 0.0;
    flash_bwd_q_kernel::launch::<R>(
        &client,
        CubeCount::Static(blocks, heads as u32, 1),
        CubeDim::new_1d(UNITS),
        q.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        v.clone().into_tensor_arg(),
        o.into_tensor_arg(),
        g.clone().into_tensor_arg(),
        dq.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        dsum.clone().into_tensor_arg(),
        t as u32,
        op.rep as u32,
        op.multiplier,
        op.cap,
        has_cap,
        plan.blk,
        hd,
        plan.fragment.unwrap_or(0),
        dtype.into(),
    );
    flash_bwd_kv_kernel::launch::<R>(
        &client,
        CubeCount::Static(blocks, (b * n_kv) as u32, 1),
        CubeDim::new_1d(UNITS),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        g.into_tensor_arg(),
        lse.into_tensor_arg(),
        dsum.into_tensor_arg(),
        dk.clone().into_tensor_arg(),
        dv.clone().into_tensor_arg(),
        t as u32,
        op.rep as u32,
        op.multiplier,
        op.cap,
        has_cap,
        plan.blk,
        hd,
        plan.fragment.unwrap_or(0),
        dtype.into(),
    );
    [dq, dk, dv]
}
