//! The one place that knows which backends were compiled in. Everything else is generic over
//! `B: AutodiffBackend`; `dispatch` picks the concrete type from the config at run time.
//!
//! | config            | cargo feature           | burn backend                                  |
//! |-------------------|-------------------------|-----------------------------------------------|
//! | `backend: cpu`    | `cpu` (default)         | `Flex` (gemm + SIMD + rayon)                  |
//! | `backend: cpu`    | `cpu-ndarray` (no `cpu`)| `NdArray`, kept for comparison                |
//! | `backend: wgpu`   | `wgpu`                  | `Wgpu` (Vulkan/Metal/DX12), `device` = index  |
//! | `backend: cuda`   | `cuda`                  | `Cuda` (NVRTC at run time), `device` = GPU    |

use burn::tensor::DType;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, IntTensor};

use crate::config::BackendKind;
use crate::error::{Error, Result};

/// The CPU backend this binary was built with, without autodiff.
#[cfg(feature = "cpu")]
pub type Cpu = burn::backend::Flex;
#[cfg(all(feature = "cpu-ndarray", not(feature = "cpu")))]
pub type Cpu = burn::backend::NdArray;

/// The CPU training backend (autodiff over `Cpu`), for tests and tools that always run on CPU.
#[cfg(any(feature = "cpu", feature = "cpu-ndarray"))]
pub type CpuTrain = burn::backend::Autodiff<Cpu>;

/// The wgpu training backend, for the backend-parity test and tools.
#[cfg(feature = "wgpu")]
pub type WgpuTrain = burn::backend::Autodiff<burn::backend::Wgpu>;

/// The adapter wgpu ranks first, or why there is none (no Vulkan/Metal/DX12 driver, e.g. a CI
/// machine without Mesa's lavapipe).
#[cfg(feature = "wgpu")]
pub fn wgpu_device() -> std::result::Result<burn::backend::wgpu::WgpuDevice, String> {
    let device = burn::backend::wgpu::WgpuDevice::DefaultDevice;
    probe::<burn::backend::Wgpu>(&device).map(|()| device)
}

/// Compute 1 + 2 on `device`, or say why that failed. A GPU backend that cannot open its device
/// (no driver, no adapter, an index past the last GPU) panics, for CUDA on burn's own device
/// thread and then again on ours. Meanwhile the panic hook only records the first message, so
/// the user gets that one line as an error instead of two panics with backtraces.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn probe<B: burn::tensor::backend::Backend>(device: &B::Device) -> std::result::Result<(), String> {
    use burn::tensor::{ElementConversion, Tensor};
    use std::sync::Mutex;
    // One probe at a time, so concurrent callers (parallel tests) restore the hooks in order.
    static PROBING: Mutex<()> = Mutex::new(());
    static FIRST: Mutex<Option<String>> = Mutex::new(None);
    fn message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
        (payload.downcast_ref::<String>().cloned())
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
    }
    let _one = PROBING.lock().unwrap_or_else(|e| e.into_inner());
    *FIRST.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let mut first = FIRST.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(message(info.payload()).unwrap_or_else(|| info.to_string()));
        }
    }));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let t = Tensor::<B, 1>::from_floats([1.0, 2.0], device);
        t.sum().into_scalar().elem::<f32>()
    }));
    std::panic::set_hook(previous);
    let first = FIRST.lock().unwrap_or_else(|e| e.into_inner()).take();
    match result {
        Ok(3.0) => Ok(()),
        Ok(v) => Err(format!("the device computed 1 + 2 = {v}")),
        Err(payload) => Err(first
            .or_else(|| message(payload.as_ref()))
            .unwrap_or_else(|| "the backend panicked while opening the device".into())),
    }
}

/// `device` after a successful [`probe`], or the error that names the config keys to change.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn opened<B: burn::tensor::backend::Backend>(
    kind: BackendKind,
    index: usize,
    device: B::Device,
) -> Result<B::Device> {
    probe::<B>(&device)
        .map(|()| device)
        .map_err(|reason| Error::BackendUnavailable {
            backend: kind.name().to_string(),
            device: index,
            reason,
        })
}

/// Work that runs on whichever backend the config names.
pub trait Job {
    type Output;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Self::Output>;
}

/// Run `job` on backend `kind`, device `index`, or say which cargo feature would enable it.
pub fn dispatch<J: Job>(kind: BackendKind, index: usize, job: J) -> Result<J::Output> {
    let _ = (&job, index);
    match kind {
        BackendKind::Cpu => {
            keep_freed_memory();
            #[cfg(any(feature = "cpu", feature = "cpu-ndarray"))]
            return job.run::<CpuTrain>(Default::default());
            #[cfg(not(any(feature = "cpu", feature = "cpu-ndarray")))]
            return Err(missing(kind, "cpu"));
        }
        BackendKind::Wgpu => {
            #[cfg(feature = "wgpu")]
            {
                use burn::backend::wgpu::WgpuDevice;
                // Index 0 takes the adapter wgpu ranks first (a software Vulkan device included).
                let device = if index == 0 {
                    WgpuDevice::DefaultDevice
                } else {
                    WgpuDevice::DiscreteGpu(index)
                };
                let device = opened::<burn::backend::Wgpu>(kind, index, device)?;
                job.run::<burn::backend::Autodiff<burn::backend::Wgpu>>(device)
            }
            #[cfg(not(feature = "wgpu"))]
            Err(missing(kind, "wgpu"))
        }
        BackendKind::Cuda => {
            #[cfg(feature = "cuda")]
            {
                let device = burn::backend::cuda::CudaDevice { index };
                let device = opened::<burn::backend::Cuda>(kind, index, device)?;
                job.run::<burn::backend::Autodiff<burn::backend::Cuda>>(device)
            }
            #[cfg(not(feature = "cuda"))]
            Err(missing(kind, "cuda"))
        }
    }
}

/// Make glibc's allocator keep freed memory for the next allocation instead of unmapping it.
///
/// A training step allocates and frees the same tensors every step (the head's logits are
/// 32 MiB at the tiny-peer shape, just over glibc's largest mmap threshold), and by default each
/// large one comes back from the kernel as fresh pages that fault in on first touch: the
/// `[2048, 256] × [256, 4096]` head matmul ran at 65 GFLOP/s instead of ~115 (docs/performance.md,
/// section 5). Cost: the process keeps its peak heap resident instead of returning it between
/// steps. Other allocators and platforms are left as they are.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes allocator parameters (under the allocator's lock).
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            }
        });
    }
}

/// A fused CPU kernel (`model::fused`): run as host code on the concrete CPU backend when `B` is
/// it, as plain burn tensor ops on every other backend (GPUs have their own fusion).
pub trait HostKernel {
    type Output;
    /// `B` is `Autodiff<X>`: the kernel, with its own backward node.
    fn autodiff<X: burn::tensor::backend::Backend>(self) -> Self::Output;
    /// `B` is `X` itself: inference, or the optimizer's inner tensors.
    fn inner<X: burn::tensor::backend::Backend>(self) -> Self::Output;
    /// Any other backend.
    fn plain(self) -> Self::Output;
}

/// Whether `B` is this binary's CPU backend (with or without autodiff): what the training step
/// checks before splitting a micro-batch into CPU row shards (`dist::workers`), since a config's
/// `backend` key need not match the backend a caller (a test, a tool) instantiates.
pub fn is_cpu<B: burn::tensor::backend::Backend>() -> bool {
    #[cfg(any(feature = "cpu", feature = "cpu-ndarray"))]
    {
        use std::any::TypeId;
        let b = TypeId::of::<B>();
        if b == TypeId::of::<CpuTrain>() || b == TypeId::of::<Cpu>() {
            return true;
        }
    }
    false
}

/// Run `k` for backend `B`: host kernels on the CPU backend, tensor ops elsewhere.
pub fn run_kernel<B: burn::tensor::backend::Backend, K: HostKernel>(k: K) -> K::Output {
    #[cfg(any(feature = "cpu", feature = "cpu-ndarray"))]
    {
        use std::any::TypeId;
        if TypeId::of::<B>() == TypeId::of::<CpuTrain>() {
            return k.autodiff::<Cpu>();
        }
        if TypeId::of::<B>() == TypeId::of::<Cpu>() {
            return k.inner::<Cpu>();
        }
    }
    k.plain()
}

/// The GPU backends' cubecl kernels (`backend/gpu.rs`), built with either GPU feature.
#[cfg(feature = "gpu-kernels")]
mod gpu;

/// The fused flash-attention backward's kernels (`backend/flash_bwd.rs`).
#[cfg(feature = "gpu-kernels")]
mod flash_bwd;

/// The stand-in CUDA device of `colossus bench --compile-only` (`backend/cuda_check.rs`).
#[cfg(feature = "cuda")]
pub mod cuda_check;

/// The kernel cache `--compile-only --kernel-cache` writes for a GPU host (`backend/cuda_cache.rs`).
#[cfg(feature = "cuda")]
pub mod cuda_cache;

/// The fused ops that have GPU kernels (`backend/gpu.rs`), on primitives of a GPU backend
/// without autodiff; `model::fused` wraps them in autodiff nodes. Shapes are the logical ones;
/// the kernels make strided inputs contiguous first.
pub trait GpuOps: burn::tensor::backend::Backend {
    /// The soft-capped causal softmax of `x`, computed in f32 with `x` read as it is (bf16 or f16
    /// under mixed precision): its probabilities in `x`'s dtype (`x`'s shape; the products'
    /// input), each row's log-sum-exp of the capped logits in f32 (`[rows]`) and, with `state`,
    /// the probabilities in f32 (the first output itself for f32 logits), all the backward needs.
    /// Without `state`, half logits cost no f32 `[rows, cols]` write.
    fn capped_softmax_fwd(
        x: FloatTensor<Self>,
        op: colossus_kernels::CappedSoftmax,
        state: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, Option<FloatTensor<Self>>);
    /// The logits' gradient in `dtype` from the forward's `(p, lse)` and the probabilities'
    /// gradient `g` (read in its dtype, computed in `p`'s).
    fn capped_softmax_bwd(
        p: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        g: FloatTensor<Self>,
        op: colossus_kernels::CappedSoftmax,
        dtype: DType,
    ) -> FloatTensor<Self>;
    /// RMSNorm of `x: [.., d]` with weight `w: [d]`, plus `residual` (x's shape) when given: the
    /// output and each row's 1/rms, `[rows]`, in `w`'s dtype; `x` is read in its own (a half
    /// product joining the f32 residual stream, widened in the kernel).
    fn rms_norm_fwd(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        residual: Option<FloatTensor<Self>>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// RMSNorm's `[dx, dw]` from the forward's `x`, `w`, 1/rms and the output's gradient `g`;
    /// `dx` in `x`'s dtype (computed in `w`'s and rounded once).
    fn rms_norm_bwd(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        inv_rms: FloatTensor<Self>,
        g: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 2];
    /// Cross-entropy of `logits: [n, vocab]` against `targets: [n]`: each row's negative
    /// log-likelihood and log-sum-exp, both `[n]`.
    fn cross_entropy_fwd(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// The logits' gradient of the mean cross-entropy, from the forward's log-sum-exp and the
    /// loss's gradient `g: [1]`.
    fn cross_entropy_bwd(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        lse: FloatTensor<Self>,
        g: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// `[rows, d]`: row `v` is the sum of rows `order[p]` of `g: [n, d]` for `p` in
    /// `seg[v]..seg[v + 1]` (`order: [n]`, `seg: [rows + 1]`, both integers), zeros for an empty
    /// range: the gradient of an embedding lookup, each output row in parallel.
    fn rows_sum(
        g: FloatTensor<Self>,
        order: IntTensor<Self>,
        seg: IntTensor<Self>,
        rows: usize,
    ) -> FloatTensor<Self>;
    /// The MoE's combine (`model::combine`), `[rows, d]` in `dtype`: row `t` is the sum over
    /// its slots `s = t·k + j` (j < k, in order) of grouped row `slots[s]` times `gates[s]`
    /// (1 when `gates` is `None`), where a grouped row is the sum, in order, of the rows the
    /// parts holding it have there. `parts`: `[m_q, d]` each, in grouped order, every `per`
    /// consecutive parts sharing one range of rows (1: each expert's output, or its one
    /// input-gradient term; 2: its two terms where its up projections were two products);
    /// `slots: [rows·k]` (integers); `gates: [rows·k]` in `dtype`. One
    /// launch: the parts are read where they lie, not stacked into one tensor first.
    fn slot_sum(
        parts: Vec<FloatTensor<Self>>,
        per: usize,
        slots: IntTensor<Self>,
        gates: Option<FloatTensor<Self>>,
        k: usize,
        dtype: DType,
    ) -> FloatTensor<Self>;
    /// The gradients of the weighted `slot_sum` (one part per range) for its output's gradient
    /// `dout: [n, d]`: `[dy, dgates]`, with `dy: [n·k, d]` in grouped order and the parts' dtype
    /// (`dy[p] = dout[s / k]·gates[s]` for `s = order[p]`) and `dgates: [n·k]` in `dout`'s
    /// (`dgates[s]` = `dout[s / k]` · grouped row `p`). `order: [n·k]` (integers) inverts the
    /// forward's `slots`; `gates: [n·k]`. One launch.
    fn combine_bwd(
        parts: Vec<FloatTensor<Self>>,
        order: IntTensor<Self>,
        dout: FloatTensor<Self>,
        gates: FloatTensor<Self>,
        k: usize,
    ) -> [FloatTensor<Self>; 2];
    /// How many tensors one kernel launch may take on `device`: its bindings less those a kernel
    /// keeps for itself (`model::combine` falls back to burn's ops past it).
    fn tensor_args(device: &Self::Device) -> usize;
    /// Causal attention `softmax(cap·tanh(multiplier·q·kᵀ/cap) + mask) · v` that never stores
    /// the probabilities (flash attention, `model::flash`): `q: [b, n_kv, rep·t, hd]` (each kv
    /// head's query heads folded into the rows, as `model::fused::attention` takes them), `k`,
    /// `v: [b, n_kv, t, hd]`, no cached positions; returns q's shape.
    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        op: FlashOp,
    ) -> FloatTensor<Self>;
    /// How the fused flash backward would run on `device` for q, k, v of `dtype` and head dim
    /// `hd`; `None` when its tiles do not fit the device.
    fn flash_bwd_plan(device: &Self::Device, dtype: DType, hd: usize) -> Option<FlashBwdPlan>;
    /// The gradients of `flash_attention(q, k, v, op)` (its output `o`, whose gradient is `g`)
    /// without materialising the probabilities (`backend/flash_bwd.rs`): `[dq, dk, dv]`, the
    /// shapes and dtype of q, k and v. `q`, `o`, `g`: `[b, n_kv, rep·t, hd]`; `k`, `v`:
    /// `[b, n_kv, t, hd]`; one dtype.
    fn flash_attention_bwd(
        qkvog: [FloatTensor<Self>; 5],
        op: FlashOp,
        plan: FlashBwdPlan,
    ) -> [FloatTensor<Self>; 3];
    /// `a · b` of half-precision (bf16/f16) operands, accumulated and written in f32: one
    /// tensor-core GEMM in the inputs' dtype with an f32 output (`model::wide`). `a: [.., m, k]`,
    /// `b: [.., k, n]` with equal batch dims; either may be a transposed view.
    fn matmul_f32_out(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
    /// An expert's weights as its packed forward reads them (`model::experts`): `w1` and `w3`
    /// (`[d, f]` each) side by side, `[d, 2f]` in `dtype`, and `w2` (`[f, d]`), when given, cast
    /// to `dtype` in the same pass.
    fn pack_up(
        w1: FloatTensor<Self>,
        w3: FloatTensor<Self>,
        w2: Option<FloatTensor<Self>>,
        dtype: DType,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>);
    /// `gelu_tanh(a) ⊙ b` (`model::fused::gelu_gate`), `a` and `b` of one shape and dtype (f32,
    /// bf16 or f16), in one pass that computes in f32 and writes their dtype. Without `b`, `a`
    /// holds both, `[rows, 2f]` with the gate's input in columns `..f` and `b` in `f..` (the
    /// experts' two up projections as one product, `model::experts`), and the output is
    /// `[rows, f]`.
    fn gelu_gate(a: FloatTensor<Self>, b: Option<FloatTensor<Self>>) -> FloatTensor<Self>;
    /// The gate's gradients for the output's gradient `g`, in one pass, as `gelu_gate` computing
    /// in f32, laid out as the inputs: `[da, db]`, or without `b` one tensor of `a`'s shape
    /// holding both; with `value`, also `gelu_gate(a, b)`, as that pass computes it.
    #[allow(clippy::type_complexity)]
    fn gelu_gate_bwd(
        a: FloatTensor<Self>,
        b: Option<FloatTensor<Self>>,
        g: FloatTensor<Self>,
        value: bool,
    ) -> (Vec<FloatTensor<Self>>, Option<FloatTensor<Self>>);
    /// RoPE (`model::fused::rope`) on `x: [batch, seq, heads, head_dim]` with the `cs` tables
    /// `[cos, sin]`, each `[.., seq, head_dim]` (pair i's angle in columns i and head_dim/2 + i,
    /// `model::rope::RopeTables`), in one pass: [x1·c − x2·s, x2·c + x1·s], the operations of
    /// `colossus_kernels::rope`, written as `[batch, heads, seq, head_dim]`. `inverse` is the
    /// backward: `x` is then `[batch, heads, seq, head_dim]`, rotated by the opposite angle and
    /// written as `[batch, seq, heads, head_dim]`. `x` may be f32, bf16 or f16, and the output
    /// is in its dtype; the tables are f32, and the rotation is computed in f32.
    fn rope(x: FloatTensor<Self>, cs: [FloatTensor<Self>; 2], inverse: bool) -> FloatTensor<Self>;
    /// AdamW updates of parameters that share `step`'s scalars (`model::fused::adamw`): `[p, m,
    /// v]` after the gradient for each `[p, g, m, v]`, all `[n]` and f32, in the order and f32
    /// roundings of `colossus_kernels::adamw`; a few launches for them all (up to 32 parameters
    /// each), reading four values and writing three per element, in place where `p`, `m` and `v`
    /// are not shared.
    fn adamw(
        sets: Vec<[FloatTensor<Self>; 4]>,
        step: colossus_kernels::AdamWStep,
    ) -> Vec<[FloatTensor<Self>; 3]>;
    /// Σ x² over every element of the (non-empty) `xs`, `[1]` in the inputs' dtype: gradient
    /// clipping's norm in a few launches (up to 32 tensors each, then one for the partial sums)
    /// without a copy of the gradients, the same bits on every run (a fixed tree, no atomics).
    fn sum_squares(xs: Vec<FloatTensor<Self>>) -> FloatTensor<Self>;
    /// Σ of every element of `x`, `[1]` in its dtype, by one cube's fixed tree (`x`'s rows are
    /// few: the loss's tokens): the same bits on every run, where burn's `sum` may add its
    /// cubes' totals with float atomics, and right at every length, where burn's reduction on
    /// lavapipe was not (docs/benchmarks.md, "Launches per training step").
    fn sum(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Each of `xs` times `factor`, in place where not shared, in a few launches.
    fn scale(xs: Vec<FloatTensor<Self>>, factor: f32) -> Vec<FloatTensor<Self>>;
    /// `backend::device_memory` on this backend.
    fn device_memory(device: &Self::Device) -> Option<DeviceMemory>;
}

/// The scalars of `GpuOps::flash_attention`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlashOp {
    /// Query heads per kv head (folded into q's rows).
    pub rep: usize,
    pub multiplier: f32,
    /// 0: no cap.
    pub cap: f32,
}

/// How `GpuOps::flash_attention_bwd` runs on a device: the tile edge (query rows and keys per
/// tile) and the edge of the square tensor-core fragments its products use (16 on an H100/H200,
/// 8 on Mesa's lavapipe), or `None`: one unit per output element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashBwdPlan {
    pub blk: usize,
    pub fragment: Option<usize>,
}

impl FlashBwdPlan {
    pub fn tensor_cores(&self) -> bool {
        self.fragment.is_some()
    }
}

/// Which flash-attention kernel the GPU ran last (`"blackbox_accelerated"`: tensor cores,
/// `"unit"`: one unit per row, `"composed"`: neither could be set up on this device, so matmuls
/// around the softmax kernel ran instead), for `colossus bench` to print. `None` before the
/// first call.
pub fn flash_routine() -> Option<&'static str> {
    #[cfg(feature = "gpu-kernels")]
    {
        gpu::flash_routine()
    }
    #[cfg(not(feature = "gpu-kernels"))]
    {
        None
    }
}

/// What a GPU backend's memory pools hold on one device (cubecl's own count, in bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceMemory {
    /// Bytes of live tensors.
    pub in_use: u64,
    /// Bytes the pools have taken from the driver (≥ `in_use`): what `nvidia-smi` sees of us,
    /// less the CUDA context.
    pub reserved: u64,
}

impl DeviceMemory {
    /// The larger of each count, for a high-water mark over samples.
    pub fn max(self, other: DeviceMemory) -> DeviceMemory {
        DeviceMemory {
            in_use: self.in_use.max(other.in_use),
            reserved: self.reserved.max(other.reserved),
        }
    }

    /// The high-water mark of two optional samples.
    pub fn merge(a: Option<DeviceMemory>, b: Option<DeviceMemory>) -> Option<DeviceMemory> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The device memory that `device` of GPU backend `B` holds now; `None` on the CPU, whose
/// memory is the process's (`train::mfu::peak_rss_bytes`). It counts what has run: call it after
/// a read-back or a sync, or queued work is not in it yet. The count is per stream, that is per
/// calling thread, so call it on the thread that runs the step.
pub fn device_memory<B: burn::tensor::backend::Backend>(device: &B::Device) -> Option<DeviceMemory> {
    /// `B::Device` is `X::Device` whenever `run_gpu_kernel` picks `X`, but the types do not say
    /// so: the device travels as `Any`.
    struct Probe<'a>(&'a dyn std::any::Any);
    impl GpuKernel for Probe<'_> {
        type Output = Option<DeviceMemory>;
        fn gpu_autodiff<X: GpuOps>(self) -> Self::Output {
            self.gpu_inner::<X>()
        }
        fn gpu_inner<X: GpuOps>(self) -> Self::Output {
            X::device_memory(self.0.downcast_ref::<X::Device>()?)
        }
    }
    run_gpu_kernel::<B, _>(Probe(device)).ok().flatten()
}

/// A fused op with a GPU kernel: run on `X: GpuOps` when the training backend is a GPU one.
pub trait GpuKernel: Sized {
    type Output;
    /// `B` is `Autodiff<X>`: the kernels, with their own backward node.
    fn gpu_autodiff<X: GpuOps>(self) -> Self::Output;
    /// `B` is `X` itself (inference).
    fn gpu_inner<X: GpuOps>(self) -> Self::Output;
}

/// Run `k` on the GPU kernels when `B` is a GPU backend (with or without autodiff); otherwise
/// hand it back for the CPU kernel or the plain path.
pub fn run_gpu_kernel<B: burn::tensor::backend::Backend, K: GpuKernel>(
    k: K,
) -> std::result::Result<K::Output, K> {
    #[cfg(feature = "gpu-kernels")]
    {
        use std::any::TypeId;
        let b = TypeId::of::<B>();
        #[cfg(feature = "wgpu")]
        {
            use burn::backend::{Autodiff, Wgpu};
            if b == TypeId::of::<Autodiff<Wgpu>>() {
                return Ok(k.gpu_autodiff::<Wgpu>());
            }
            if b == TypeId::of::<Wgpu>() {
                return Ok(k.gpu_inner::<Wgpu>());
            }
        }
        #[cfg(feature = "cuda")]
        {
            use burn::backend::{Autodiff, Cuda};
            if b == TypeId::of::<Autodiff<Cuda>>() {
                return Ok(k.gpu_autodiff::<Cuda>());
            }
            if b == TypeId::of::<Cuda>() {
                return Ok(k.gpu_inner::<Cuda>());
            }
            use cuda_check::CheckBackend;
            if b == TypeId::of::<Autodiff<CheckBackend>>() {
                return Ok(k.gpu_autodiff::<CheckBackend>());
            }
            if b == TypeId::of::<CheckBackend>() {
                return Ok(k.gpu_inner::<CheckBackend>());
            }
        }
        let _ = b;
    }
    Err(k)
}

/// `k` on the GPU kernels when `gpu` allows it and `B` is a GPU backend; otherwise `other(k)`
/// (the CPU kernel, the plain path, or a widened one).
pub fn run_gpu_kernel_or<B: burn::tensor::backend::Backend, K: GpuKernel>(
    k: K,
    gpu: bool,
    other: impl FnOnce(K) -> K::Output,
) -> K::Output {
    if !gpu {
        return other(k);
    }
    run_gpu_kernel::<B, K>(k).unwrap_or_else(other)
}

#[allow(dead_code)]
fn missing(kind: BackendKind, feature: &str) -> Error {
    Error::BackendMissing {
        backend: kind.name().to_string(),
        feature: feature.to_string(),
    }
}

#[cfg(all(test, any(feature = "cpu", feature = "cpu-ndarray")))]
mod tests {
    use super::*;

    /// The training step's CPU row shards (`train.cpu_workers`) hang on this check.
    #[test]
    fn the_cpu_backend_is_recognised_with_and_without_autodiff() {
        assert!(is_cpu::<Cpu>());
        assert!(is_cpu::<CpuTrain>());
    }
}
