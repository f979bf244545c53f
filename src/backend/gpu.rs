//! The attention soft cap + causal softmax as one cubecl kernel each way, on wgpu and CUDA: the
//! GPU twin of `colossus_kernels::capped_softmax`, which the CPU backend runs.
//!
//! Why a kernel and not burn's fusion: the plain path (×multiplier, ÷cap, tanh, ×cap, + causal
//! bias, then softmax's max, subtract, exp, sum, divide) is two reductions with element-wise
//! chains between them, and its autodiff keeps an `[b, h, s, s]` intermediate per op for the
//! backward. Here the forward reads the logits three times (per row, from cache) and writes the
//! probabilities and the tanh values once; the backward reads those two and the incoming gradient
//! and writes the logits' gradient. The matmuls on either side stay burn's (tensor cores).
//!
//! One cube per row. A row's reductions (max, then the sum of exponentials; in the backward
//! Σ p·g) are a fixed tree in shared memory, so results do not depend on scheduling. Masked
//! columns are skipped, not set to −∞: WGSL has no −∞ literal.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
use colossus_kernels::CappedSoftmax;
use cubecl::prelude::*;

use crate::model::fused::{record, unwrap, wrap};

/// Threads per row. 128 covers a 4096-key row in 32 strides; most rows of a training step are
/// at least that long on a GPU preset, and shorter ones only leave threads idle.
const BLOCK: u32 = 128;

/// The row's scalars, as the kernels take them.
fn scalars(op: &CappedSoftmax) -> (u32, u32, f32, f32) {
    // Non-causal: every row sees all columns, as if each row were the last of its block.
    let (t, past) = op.causal.unwrap_or((1, op.cols - 1));
    (t as u32, past as u32, op.multiplier, op.cap)
}

/// A backend that runs the soft-capped softmax kernels: `CubeBackend` directly, and `Fusion`
/// over it by registering them as custom operations in its stream.
pub trait CappedSoftmaxGpu: Backend {
    /// `(p, tanh)` of logits `[.., rows, cols]`, both the logits' shape.
    fn capped_softmax_fwd(x: FloatTensor<Self>, op: CappedSoftmax) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// The logits' gradient from the forward's `(p, tanh)` and the probabilities' gradient `g`.
    fn capped_softmax_bwd(
        p: FloatTensor<Self>,
        t: FloatTensor<Self>,
        g: FloatTensor<Self>,
        op: CappedSoftmax,
    ) -> FloatTensor<Self>;
}

/// The soft-capped softmax on autodiff over GPU backend `X`, with its own backward node.
pub fn capped_softmax_autodiff<X: CappedSoftmaxGpu, B: Backend>(
    logits: burn::tensor::Tensor<B, 4>,
    op: CappedSoftmax,
) -> burn::tensor::Tensor<B, 4> {
    let x = unwrap::<Autodiff<X>, _, 4>(logits);
    wrap::<B, Autodiff<X>, 4>(record(SoftmaxBackward { op }, [x], |[x]| {
        let (p, t) = X::capped_softmax_fwd(x, op);
        ((p.clone(), t), p)
    }))
}

/// The soft-capped softmax on GPU backend `X` without autodiff (inference).
pub fn capped_softmax_inner<X: CappedSoftmaxGpu, B: Backend>(
    logits: burn::tensor::Tensor<B, 4>,
    op: CappedSoftmax,
) -> burn::tensor::Tensor<B, 4> {
    let (p, _) = X::capped_softmax_fwd(unwrap::<X, _, 4>(logits), op);
    wrap::<B, X, 4>(p)
}

#[derive(Debug)]
struct SoftmaxBackward {
    op: CappedSoftmax,
}

impl<X: CappedSoftmaxGpu> Backward<X, 1> for SoftmaxBackward {
    type State = (FloatTensor<X>, FloatTensor<X>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (p, t) = ops.state;
        let g = grads.consume::<X>(&ops.node);
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<X>(node.id, X::capped_softmax_bwd(p, t, g, self.op));
        }
    }
}

// ---- kernels ---------------------------------------------------------------------------------

/// The tree reduction of one value per thread over the cube (a power of two wide, `smem` as
/// wide): max when `max`, else sum. Every thread gets the result.
#[cube]
fn cube_reduce<F: Float>(smem: &mut SharedMemory<F>, value: F, #[comptime] max: bool) -> F {
    let u = UNIT_POS_X as usize;
    smem[u] = value;
    sync_cube();
    // A runtime value (the cube is `block` wide): a comptime one could not be halved in the loop.
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

#[allow(clippy::too_many_arguments)]
#[cube(launch)]
fn capped_softmax_fwd_kernel<F: Float>(
    x: &Tensor<F>,      // [rows, cols], contiguous
    p: &mut Tensor<F>,  // [rows, cols]
    th: &mut Tensor<F>, // [rows, cols]
    rows: u32,
    cols: u32,
    t: u32,
    past: u32,
    multiplier: f32,
    cap: f32,
    #[comptime] has_cap: bool,
    #[comptime] block: u32,
    #[define(F)] _dtype: StorageType,
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
        let (z, _) = capped::<F>(x[base + j], multiplier, cap, has_cap);
        if z > local {
            local = z;
        }
        j += step;
    }
    let row_max = cube_reduce::<F>(&mut smem, local, true);

    let mut local = F::new(0.0);
    let mut j = UNIT_POS_X as usize;
    while j < visible {
        let (z, _) = capped::<F>(x[base + j], multiplier, cap, has_cap);
        local += (z - row_max).exp();
        j += step;
    }
    let inv = F::new(1.0) / cube_reduce::<F>(&mut smem, local, false);

    let mut j = UNIT_POS_X as usize;
    while j < cols {
        if j < visible {
            let (z, tv) = capped::<F>(x[base + j], multiplier, cap, has_cap);
            p[base + j] = (z - row_max).exp() * inv;
            th[base + j] = tv;
        } else {
            p[base + j] = F::new(0.0);
            th[base + j] = F::new(0.0);
        }
        j += step;
    }
}

#[allow(clippy::too_many_arguments)]
#[cube(launch)]
fn capped_softmax_bwd_kernel<F: Float>(
    p: &Tensor<F>,      // [rows, cols], contiguous
    th: &Tensor<F>,     // [rows, cols]
    g: &Tensor<F>,      // [rows, cols]
    dx: &mut Tensor<F>, // [rows, cols]
    rows: u32,
    cols: u32,
    multiplier: f32,
    #[comptime] has_cap: bool,
    #[comptime] block: u32,
    #[define(F)] _dtype: StorageType,
) {
    // The grid's spare cubes (`row_grid`) have no row.
    let row = CUBE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let cols = cols as usize;
    let base = row * cols;
    let multiplier = F::cast_from(multiplier);
    let step = CUBE_DIM_X as usize;
    let mut smem = SharedMemory::<F>::new(block as usize);

    // Masked columns have p = 0, so they add nothing and get a zero gradient.
    let mut local = F::new(0.0);
    let mut j = UNIT_POS_X as usize;
    while j < cols {
        local += p[base + j] * g[base + j];
        j += step;
    }
    let pg = cube_reduce::<F>(&mut smem, local, false);

    let mut j = UNIT_POS_X as usize;
    while j < cols {
        // d softmax, then d(cap·tanh(m·x/cap))/dx = m·(1 − tanh²).
        let dz = p[base + j] * (g[base + j] - pg);
        if has_cap {
            let tv = th[base + j];
            dx[base + j] = dz * multiplier * (F::new(1.0) - tv * tv);
        } else {
            dx[base + j] = dz * multiplier;
        }
        j += step;
    }
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

fn empty_like<R: CubeRuntime>(x: &CubeTensor<R>) -> CubeTensor<R> {
    empty_device_dtype::<R>(x.client.clone(), x.device.clone(), x.meta.shape.clone(), x.dtype)
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> CappedSoftmaxGpu
    for CubeBackend<R, F, I, BT>
{
    fn capped_softmax_fwd(x: CubeTensor<R>, op: CappedSoftmax) -> (CubeTensor<R>, CubeTensor<R>) {
        let x = into_contiguous(x);
        let (rows, cols) = rows_cols(&x);
        let (t, past, multiplier, cap) = scalars(&op);
        let p = empty_like(&x);
        let th = empty_like(&x);
        let dtype = x.dtype;
        capped_softmax_fwd_kernel::launch::<R>(
            &x.client.clone(),
            row_grid(rows),
            CubeDim::new_1d(BLOCK),
            x.into_tensor_arg(),
            p.clone().into_tensor_arg(),
            th.clone().into_tensor_arg(),
            rows as u32,
            cols as u32,
            t,
            past,
            multiplier,
            cap,
            cap > 0.0,
            BLOCK,
            dtype.into(),
        );
        (p, th)
    }

    fn capped_softmax_bwd(
        p: CubeTensor<R>,
        t: CubeTensor<R>,
        g: CubeTensor<R>,
        op: CappedSoftmax,
    ) -> CubeTensor<R> {
        let (p, t, g) = (into_contiguous(p), into_contiguous(t), into_contiguous(g));
        let (rows, cols) = rows_cols(&p);
        let dx = empty_like(&p);
        let dtype = p.dtype;
        capped_softmax_bwd_kernel::launch::<R>(
            &p.client.clone(),
            row_grid(rows),
            CubeDim::new_1d(BLOCK),
            p.into_tensor_arg(),
            t.into_tensor_arg(),
            g.into_tensor_arg(),
            dx.clone().into_tensor_arg(),
            rows as u32,
            cols as u32,
            op.multiplier,
            op.cap > 0.0,
            BLOCK,
            dtype.into(),
        );
        dx
    }
}

// ---- fusion ----------------------------------------------------------------------------------

/// The forward as a custom operation of a fusion stream: burn's fusion cannot see inside it, so
/// the element-wise ops on either side are fused up to its boundary.
#[derive(Debug, Clone)]
struct FwdOp<B> {
    desc: CustomOpIr,
    op: CappedSoftmax,
    _b: std::marker::PhantomData<B>,
}

impl<B: FusionBackend + CappedSoftmaxGpu> Operation<B::FusionRuntime> for FwdOp<B> {
    fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
        let ([x], [p, t]) = self.desc.as_fixed();
        let (pv, tv) = B::capped_softmax_fwd(handles.get_float_tensor::<B>(x), self.op);
        handles.register_float_tensor::<B>(&p.id, pv);
        handles.register_float_tensor::<B>(&t.id, tv);
    }
}

#[derive(Debug, Clone)]
struct BwdOp<B> {
    desc: CustomOpIr,
    op: CappedSoftmax,
    _b: std::marker::PhantomData<B>,
}

impl<B: FusionBackend + CappedSoftmaxGpu> Operation<B::FusionRuntime> for BwdOp<B> {
    fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
        let ([p, t, g], [dx]) = self.desc.as_fixed();
        let out = B::capped_softmax_bwd(
            handles.get_float_tensor::<B>(p),
            handles.get_float_tensor::<B>(t),
            handles.get_float_tensor::<B>(g),
            self.op,
        );
        handles.register_float_tensor::<B>(&dx.id, out);
    }
}

impl<B: FusionBackend + CappedSoftmaxGpu> CappedSoftmaxGpu for Fusion<B> {
    fn capped_softmax_fwd(x: FloatTensor<Self>, op: CappedSoftmax) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let client = x.client.clone();
        let (shape, dtype) = (x.shape.clone(), x.dtype);
        let streams = OperationStreams::with_inputs([&x]);
        let p = TensorIr::uninit(client.create_empty_handle(), shape.clone(), dtype);
        let t = TensorIr::uninit(client.create_empty_handle(), shape, dtype);
        let desc = CustomOpIr::new("colossus_capped_softmax", &[x.into_ir()], &[p, t]);
        let op = FwdOp::<B> {
            desc: desc.clone(),
            op,
            _b: std::marker::PhantomData,
        };
        let [p, t]: [_; 2] = client
            .register(streams, OperationIr::Custom(desc), op)
            .try_into()
            .expect("two outputs registered");
        (p, t)
    }

    fn capped_softmax_bwd(
        p: FloatTensor<Self>,
        t: FloatTensor<Self>,
        g: FloatTensor<Self>,
        op: CappedSoftmax,
    ) -> FloatTensor<Self> {
        let client = p.client.clone();
        let (shape, dtype) = (p.shape.clone(), p.dtype);
        let streams = OperationStreams::with_inputs([&p, &t, &g]);
        let dx = TensorIr::uninit(client.create_empty_handle(), shape, dtype);
        let desc = CustomOpIr::new(
            "colossus_capped_softmax_backward",
            &[p.into_ir(), t.into_ir(), g.into_ir()],
            &[dx],
        );
        let op = BwdOp::<B> {
            desc: desc.clone(),
            op,
            _b: std::marker::PhantomData,
        };
        let [dx]: [_; 1] = client
            .register(streams, OperationIr::Custom(desc), op)
            .try_into()
            .expect("one output registered");
        dx
    }
}
