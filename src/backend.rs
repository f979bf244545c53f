//! The one place that knows which backends were compiled in. Everything else is generic over
//! `B: AutodiffBackend`; `dispatch` picks the concrete type from the config at run time.
//!
//! | config            | cargo feature           | burn backend                                  |
//! |-------------------|-------------------------|-----------------------------------------------|
//! | `backend: cpu`    | `cpu` (default)         | `Flex` (gemm + SIMD + rayon)                  |
//! | `backend: cpu`    | `cpu-ndarray` (no `cpu`)| `NdArray`, kept for comparison                |
//! | `backend: wgpu`   | `wgpu`                  | `Wgpu` (Vulkan/Metal/DX12), `device` = index  |
//! | `backend: cuda`   | `cuda`                  | `Cuda` (NVRTC at run time), `device` = GPU    |

use burn::tensor::backend::AutodiffBackend;

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
                return job.run::<burn::backend::Autodiff<burn::backend::Wgpu>>(device);
            }
            #[cfg(not(feature = "wgpu"))]
            return Err(missing(kind, "wgpu"));
        }
        BackendKind::Cuda => {
            #[cfg(feature = "cuda")]
            {
                let device = burn::backend::cuda::CudaDevice { index };
                return job.run::<burn::backend::Autodiff<burn::backend::Cuda>>(device);
            }
            #[cfg(not(feature = "cuda"))]
            return Err(missing(kind, "cuda"));
        }
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

#[allow(dead_code)]
fn missing(kind: BackendKind, feature: &str) -> Error {
    Error::BackendMissing {
        backend: kind.name().to_string(),
        feature: feature.to_string(),
    }
}
