//! A stand-in CUDA device for machines without a GPU (`colossus bench --compile-only`): every
//! kernel a training step launches goes through cubecl's CUDA code generator and NVRTC for an
//! H100/H200 (sm_90a), exactly as burn's CUDA runtime would compile it there, and none runs.
//!
//! Why: a CUDA kernel that NVRTC rejects surfaces on the GPU only, and only at the first read
//! after its launch (cubecl queues compile errors on the stream), so the launch sites'
//! fallbacks (`backend::gpu`'s flash routines, its f32-output matmul) never see it and the run
//! dies. GPU time is scarce (`benches/gpu.sh`); this finds those errors on any x86-64 machine
//! with NVRTC and the CUDA headers (the `nvidia-cuda-nvrtc`, `-runtime` and `-cccl` wheels
//! suffice), including our own kernels (`backend/gpu.rs`) and the vendored flash attention's
//! tensor-core routine, which lavapipe cannot run.
//!
//! What it is: a cubecl runtime whose compiler is CUDA's and whose server keeps tensors in host
//! memory and compiles instead of running. The device reports an H200's properties as burn's
//! CUDA server reads them off the driver (`cubecl-cuda` `runtime.rs`, arch 90), so kernel
//! selection (tensor-core matmuls, TMA, the flash routine) takes the branches it takes there.
//! Kernels do not run, so every buffer a kernel writes reads back as zeros: the loss is 0, and
//! the router's choices would send every token to expert 0, so `bench --compile-only` routes by
//! counts made up to reach the shapes a GPU's experts get (`model::stand_in_routing`).

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cubecl::cuda::CudaCompiler;
use cubecl::ir::features::{AtomicUsage, Plane, Tma, TypeUsage};
use cubecl::ir::{
    BarrierLevel, DeviceProperties, ElemType, FloatKind, HardwareProperties, MemoryDeviceProperties,
    OpaqueType, SemanticType, StorageType, TargetProperties, Type, VectorSize,
};
use cubecl::server::{
    Binding, ComputeServer, CopyDescriptor, ExecutionMode, KernelArguments, ProfileError, ProfilingToken,
    ServerCommunication, ServerError, ServerUtilities,
};
use cubecl::zspace::{Shape, Strides};
use cubecl::{CubeCount, CubeTask, Runtime};
use cubecl_common::bytes::Bytes;
use cubecl_common::device::{Device, DeviceId, DeviceService, ServerUtilitiesHandle};
use cubecl_common::future::DynFut;
use cubecl_common::profile::{ProfileDuration, TimingMethod};
use cubecl_common::stream_id::StreamId;
use cubecl_cpp::shared::{
    CompilationOptions, CppSupportedFeatures, DialectWmmaCompiler, register_mma_features,
    register_scaled_mma_features, register_wmma_features,
};
use cubecl_cpp::{cuda::arch::CudaArchitecture, register_supported_types};
use cubecl_runtime::allocator::ContiguousMemoryLayoutPolicy;
use cubecl_runtime::client::ComputeClient;
use cubecl_runtime::logging::ServerLogger;
use cubecl_runtime::memory_management::{
    ManagedMemoryHandle, MemoryAllocationMode, MemoryConfiguration, MemoryManagement,
    MemoryManagementOptions, MemoryUsage,
};
use cubecl_runtime::storage::{ComputeStorage, ManagedResource, StorageHandle, StorageId};
use cubecl_runtime::timestamp_profiler::TimestampProfiler;

/// Hopper: the H100 and H200 (compute capability 9.0), with the `a` suffix cubecl-cuda gives
/// NVRTC from 9.0 on (wgmma and setmaxnreg need it).
const ARCH: u32 = 90;
/// The H200's 132 multiprocessors and its opt-in shared memory per block (227 KiB, as the
/// H100's); the memory size only sets the largest page of the (host) pools.
const SMS: u32 = 132;
const MAX_SHARED: usize = 232_448;
const DEVICE_MEMORY: u64 = 141 << 30;
pub(crate) const NAME: &str = "cuda-compile-check";

/// Forget the autotune choices of earlier checks (cubecl keeps them on disk, under
/// `target/autotune/<version>/device-0-0-cuda-compile-check`), so that autotune launches, and
/// this device compiles, every candidate kernel again, as a GPU's first run does.
pub fn forget_autotune() {
    use cubecl_runtime::config::RuntimeConfig;
    let root = cubecl_runtime::config::CubeClRuntimeConfig::get()
        .autotune
        .cache
        .root();
    let Ok(versions) = std::fs::read_dir(root.join("autotune")) else {
        return;
    };
    let id = CheckDevice.to_id();
    for version in versions.flatten() {
        let dir = version
            .path()
            .join(format!("device-{}-{}-{NAME}", id.type_id, id.index_id));
        if dir.is_dir() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The burn backend over the stand-in device, as `burn::backend::Cuda` is over the real one.
pub type CheckBackend = burn_fusion::Fusion<burn_cubecl::CubeBackend<CheckRuntime, f32, i32, u8>>;

/// What the stand-in device compiled since the last [`take_report`].
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Distinct kernels (by cubecl's kernel id and execution mode) that compiled; with
    /// `--kernel-cache`, not those it held already (`cuda_cache::reuse`), which are not compiled.
    pub compiled: usize,
    /// Distinct kernels that did not, with why.
    pub failures: Vec<Failure>,
    /// NVRTC's CPU time summed over those compiles: about what a GPU's first run of the same
    /// steps spends compiling, since burn's CUDA server compiles each kernel at its first launch,
    /// one after another (on this machine's CPU; the GPU host's differs).
    pub nvrtc_s: f64,
}

#[derive(Debug, Clone)]
pub struct Failure {
    /// The CUDA entry point (or the kernel's type name when code generation itself failed).
    pub kernel: String,
    /// NVRTC's log, or cubecl's error.
    pub reason: String,
    /// The generated CUDA C++ (empty when code generation failed).
    pub source: String,
}

static REPORT: Mutex<Option<Report>> = Mutex::new(None);

/// The report so far, once the compiles under way have finished, leaving an empty one.
pub fn take_report() -> Report {
    let pending = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|e| e.into_inner()));
    pending.into_iter().for_each(join);
    REPORT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default()
}

fn record(f: impl FnOnce(&mut Report)) {
    f(REPORT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(Report::default))
}

/// Where the CUDA headers are (`$CUDA_PATH/include`, else cubecl-cuda's defaults), NVRTC's
/// version, or why the check cannot run here.
pub fn toolchain() -> Result<(PathBuf, (i32, i32)), String> {
    let include = cubecl::cuda::install::cuda_path()
        .map(|p| p.join("include"))
        .filter(|p| p.join("cuda_bf16.h").exists())
        .ok_or("no CUDA headers: set CUDA_PATH to a folder whose include/ holds cuda_bf16.h")?;
    // cubecl's tensor-core kernels include <mma.h>, which includes crt/mma.h: a separate pip
    // wheel from the other headers.
    if !include.join("crt").join("mma.h").exists() {
        return Err(format!(
            "{} has no crt/mma.h (pip: nvidia-cuda-crt)",
            include.display()
        ));
    }
    // SAFETY: only tries to open the library by its candidate names.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(
            "NVRTC (libnvrtc.so) is not on the library path: add its folder to LD_LIBRARY_PATH".into(),
        );
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present (above); NVRTC writes two ints.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| format!("NVRTC: {e:?}"))?;
    Ok((include, (major, minor)))
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CheckDevice;

impl Device for CheckDevice {
    fn from_id(_: DeviceId) -> Self {
        CheckDevice
    }
    fn to_id(&self) -> DeviceId {
        DeviceId {
            type_id: 0,
            index_id: 0,
        }
    }
}

impl burn::tensor::backend::DeviceOps for CheckDevice {}

#[derive(Debug, Clone)]
pub struct CheckRuntime;

impl Runtime for CheckRuntime {
    type Compiler = CudaCompiler;
    type Server = CheckServer;
    type Device = CheckDevice;

    fn client(device: &Self::Device) -> ComputeClient<Self> {
        ComputeClient::load(device)
    }
    // Only names things (kernel ids, autotune's cache folder): a name of its own keeps the
    // fake timings of the stand-in device out of the real CUDA device's autotune cache.
    fn name(_: &ComputeClient<Self>) -> &'static str {
        NAME
    }
    fn require_array_lengths() -> bool {
        cubecl::cuda::CudaRuntime::require_array_lengths()
    }
    fn max_cube_count() -> (u32, u32, u32) {
        cubecl::cuda::CudaRuntime::max_cube_count()
    }
    // Host tensors are plain row-major; the real server pitches rows, which changes strides
    // (runtime values), not the generated code.
    fn can_read_tensor(shape: &Shape, strides: &Strides) -> bool {
        cubecl::zspace::striding::has_contiguous_row_major_strides(shape, strides)
    }
    fn target_properties() -> TargetProperties {
        cubecl::cuda::CudaRuntime::target_properties()
    }
    fn enumerate_devices(_: u16, _: &()) -> Vec<DeviceId> {
        vec![CheckDevice.to_id()]
    }
}

#[derive(Debug)]
pub struct CheckServer {
    memory: MemoryManagement<HostStorage>,
    timestamps: TimestampProfiler,
    utilities: Arc<ServerUtilities<Self>>,
    options: CompilationOptions,
    include: Vec<String>,
    seen: HashSet<(cubecl::prelude::KernelId, ExecutionMode)>,
}

impl DeviceService for CheckServer {
    fn init(_: DeviceId) -> Self {
        let (properties, options) = hopper();
        let include = match toolchain() {
            Ok((dir, _)) => {
                let mut v = vec![format!("--include-path={}", dir.display())];
                if dir.join("cccl").exists() {
                    v.push(format!("--include-path={}", dir.join("cccl").display()));
                }
                v
            }
            Err(_) => Vec::new(),
        };
        let logger = Arc::new(ServerLogger::default());
        let memory = MemoryManagement::from_configuration(
            HostStorage::default(),
            &properties.memory,
            MemoryConfiguration::default(),
            logger.clone(),
            MemoryManagementOptions::new("host memory of the CUDA compile check"),
        );
        let align = properties.memory.alignment as usize;
        CheckServer {
            memory,
            timestamps: TimestampProfiler::default(),
            utilities: Arc::new(ServerUtilities::new(
                properties,
                logger,
                (),
                ContiguousMemoryLayoutPolicy::new(align),
            )),
            options,
            include,
            seen: HashSet::new(),
        }
    }

    fn utilities(&self) -> ServerUtilitiesHandle {
        ComputeServer::utilities(self) as ServerUtilitiesHandle
    }
}

/// The device properties and compiler options burn's CUDA server derives for an sm_90 device
/// (`cubecl-cuda` 0.10 `runtime.rs`, every branch up to `arch_version >= 90`), with the H200's
/// numbers where it reads the driver.
fn hopper() -> (DeviceProperties, CompilationOptions) {
    let arch = CudaArchitecture { version: ARCH };
    type Wmma = cubecl_cpp::cuda::mma::CudaWmmaCompiler;
    let wmma = <Wmma as DialectWmmaCompiler<_>>::supported_wmma_combinations(&arch);
    let mma = <Wmma as DialectWmmaCompiler<_>>::supported_mma_combinations(&arch);
    let scaled = <Wmma as DialectWmmaCompiler<_>>::supported_scaled_mma_combinations(&arch);
    let memory = MemoryDeviceProperties {
        max_page_size: DEVICE_MEMORY / 4,
        alignment: 512,
    };
    let hardware = HardwareProperties {
        load_width: 128,
        plane_size_min: 32,
        plane_size_max: 32,
        max_bindings: cubecl::cuda::CUDA_MAX_BINDINGS,
        max_shared_memory_size: MAX_SHARED,
        max_cube_count: CheckRuntime::max_cube_count(),
        max_units_per_cube: 1024,
        max_cube_dim: (1024, 1024, 64),
        num_streaming_multiprocessors: Some(SMS),
        num_tensor_cores: Some(4),
        min_tensor_cores_dim: (!wmma.is_empty()).then_some(8),
        num_cpu_cores: None,
        max_vector_size: VectorSize::MAX,
    };
    let mut props = DeviceProperties::new(Default::default(), memory, hardware, TimingMethod::System);
    let options = CompilationOptions {
        warp_size: 32,
        supports_features: CppSupportedFeatures {
            fast_math: true,
            grid_constants: true,
            fast_tanh: cudarc::driver::sys::CUDA_VERSION >= 12080,
            clusters: true,
            elect_sync: true,
        },
    };
    register_supported_types(&mut props);
    props.register_type_usage(ElemType::Float(FloatKind::TF32), TypeUsage::Conversion);
    let atomic = |e: ElemType| Type::new(StorageType::Atomic(e));
    props.register_atomic_type_usage(
        atomic(ElemType::Float(FloatKind::F64)),
        AtomicUsage::Add | AtomicUsage::LoadStore,
    );
    props.register_atomic_type_usage(
        atomic(ElemType::Float(FloatKind::F16)),
        AtomicUsage::Add | AtomicUsage::LoadStore,
    );
    props.register_atomic_type_usage(
        atomic(ElemType::Float(FloatKind::F16)).with_vector_size(2),
        AtomicUsage::Add | AtomicUsage::LoadStore,
    );
    props.register_semantic_type(SemanticType::Pipeline);
    props.register_type_usage(OpaqueType::Barrier(BarrierLevel::Unit), TypeUsage::Buffer);
    props.register_type_usage(OpaqueType::Barrier(BarrierLevel::Cube), TypeUsage::Buffer);
    props.features.plane.insert(Plane::Sync);
    for half in [FloatKind::F16, FloatKind::BF16] {
        props
            .features
            .matmul
            .ldmatrix
            .insert(ElemType::Float(half).into());
        props
            .features
            .matmul
            .stmatrix
            .insert(ElemType::Float(half).into());
    }
    props.features.copy_async = true;
    for fp8 in [FloatKind::E4M3, FloatKind::E5M2] {
        props.register_type_usage(ElemType::Float(fp8), TypeUsage::Conversion | TypeUsage::Buffer);
    }
    props.features.tma.insert(Tma::Base);
    props.register_semantic_type(SemanticType::TensorMap);
    props.features.cube_cluster = true;
    for width in [2, 4] {
        props.register_atomic_type_usage(
            atomic(ElemType::Float(FloatKind::F32)).with_vector_size(width),
            AtomicUsage::LoadStore | AtomicUsage::Add,
        );
    }
    props.features.memory_reinterpret = true;
    props.features.alignment = true;
    props.features.plane.insert(Plane::Ops);
    props.features.plane.insert(Plane::NonUniformControlFlow);
    register_wmma_features(wmma, &mut props);
    register_mma_features(mma, &mut props);
    register_scaled_mma_features(scaled, &mut props);
    (props, options)
}

impl CheckServer {
    /// Generate the kernel's CUDA C++ and compile it with NVRTC as burn's CUDA server does
    /// (`cubecl-cuda` `compute/context.rs`), checking its shared memory against the device's.
    fn compile(&mut self, kernel: &dyn CubeTask<CudaCompiler>, mode: ExecutionMode) {
        if !self.seen.insert((kernel.id(), mode)) {
            return;
        }
        let compiled = match kernel.compile(
            &mut Default::default(),
            &self.options,
            mode,
            kernel.address_type(),
        ) {
            Ok(c) => c,
            Err(e) => {
                return record(|r| {
                    r.failures.push(Failure {
                        kernel: kernel.name().to_string(),
                        reason: format!("code generation: {e}"),
                        source: String::new(),
                    })
                });
            }
        };
        let shared = compiled.repr.as_ref().map_or(0, |k| k.shared_memory_size());
        let (name, source) = (compiled.entrypoint_name, compiled.source);
        // `--kernel-cache`: the key the GPU's runtime will look this kernel up by.
        let key = super::cuda_cache::active().then(|| {
            let mut id = kernel.id();
            id.mode(mode);
            super::cuda_cache::gpu_key(&id)
        });
        // To read what the code generator made of a kernel (tensor-core fragments, shared
        // memory) without a GPU: each source as `<dir>/<entry point>-<n>.cu`, or with
        // `--kernel-cache`, `<dir>/<entry point>-<key>.cu`, the key its manifest lists.
        if let Some(dir) = std::env::var_os("COLOSSUS_CUDA_SOURCES") {
            let tag = match &key {
                Some(Ok(k)) => format!("{k:032x}"),
                _ => self.seen.len().to_string(),
            };
            let path = std::path::Path::new(&dir).join(format!("{name}-{tag}.cu"));
            if let Err(e) = std::fs::write(&path, &source) {
                eprintln!("warning: cannot write {}: {e}", path.display());
            }
        }
        if shared > MAX_SHARED {
            let reason = format!("{shared} bytes of shared memory, more than the device's {MAX_SHARED}");
            return record(|r| {
                r.failures.push(Failure {
                    kernel: name,
                    reason,
                    source,
                })
            });
        }
        if key.as_ref().is_some_and(super::cuda_cache::reuse) {
            return;
        }
        // NVRTC takes most of the check's time (about a second a kernel) and nothing waits on
        // its result, so kernels compile on a thread per core while the steps go on;
        // `take_report` waits for them.
        let include = self.include.clone();
        let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        while pending.len() >= cores {
            join(pending.remove(0));
        }
        let times = std::env::var_os("COLOSSUS_CUDA_SOURCES")
            .map(|dir| std::path::Path::new(&dir).join("nvrtc_seconds.tsv"));
        pending.push(std::thread::spawn(move || {
            let start = thread_cpu_s();
            let result = nvrtc(&source, &include, key.is_some());
            let took = thread_cpu_s() - start;
            let reason = match (result, key) {
                (Ok(cubin), Some(key)) => {
                    let entry = super::cuda_cache::Entry {
                        entrypoint_name: name.clone(),
                        shared_mem_bytes: shared,
                        ptx: cubin.into_iter().map(|b| b as std::ffi::c_char).collect(),
                    };
                    super::cuda_cache::store(key, entry);
                    None
                }
                (Ok(_), None) => None,
                (Err(reason), _) => Some(reason),
            };
            if let Some(path) = times {
                use std::io::Write;
                let line = format!("{name}\t{took:.3}\n");
                let file = std::fs::OpenOptions::new().create(true).append(true).open(&path);
                if let Err(e) = file.and_then(|mut f| f.write_all(line.as_bytes())) {
                    eprintln!("warning: cannot write {}: {e}", path.display());
                }
            }
            record(|r| {
                r.nvrtc_s += took;
                match reason {
                    None => r.compiled += 1,
                    Some(reason) => r.failures.push(Failure {
                        kernel: name,
                        reason,
                        source,
                    }),
                }
            })
        }));
    }
}

/// This thread's CPU time: NVRTC's own cost, whatever else shares the cores while it runs (on a
/// GPU host it runs alone, on the launching thread). Elsewhere than glibc, the wall clock.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn thread_cpu_s() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec, which lives on this stack.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn thread_cpu_s() -> f64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64()
}

/// The NVRTC compiles still running.
static PENDING: Mutex<Vec<std::thread::JoinHandle<()>>> = Mutex::new(Vec::new());

/// Wait for one compile; one that panicked is a failure, not a kernel silently left out.
fn join(compile: std::thread::JoinHandle<()>) {
    if let Err(e) = compile.join() {
        let reason = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        record(|r| {
            r.failures.push(Failure {
                kernel: "(a kernel)".into(),
                reason: format!("the NVRTC call panicked: {reason}"),
                source: String::new(),
            })
        });
    }
}

/// Compile `source` for sm_90a with the options burn's CUDA server gives NVRTC; with `cubin`,
/// return the machine code NVRTC made (it makes it for a real architecture such as sm_90a),
/// built without `-lineinfo`: the line tables and the PTX text it embeds are ~60% of a cubin's
/// bytes, which every GPU process would read at start (`cuda_cache.rs`), and they change no
/// instruction, only what a profiler can map back to source.
fn nvrtc(source: &str, include: &[String], cubin: bool) -> Result<Vec<u8>, String> {
    use cudarc::nvrtc::result as nvrtc;
    let arch = format!("--gpu-architecture=sm_{ARCH}a");
    let mut options: Vec<&str> = vec![&arch];
    if !cubin {
        options.push("-lineinfo");
    }
    options.extend(include.iter().map(String::as_str));
    let source = CString::new(source).map_err(|e| e.to_string())?;
    let program = nvrtc::create_program(&source, None).map_err(|e| format!("{e:?}"))?;
    // SAFETY: `program` is live until destroyed below; the source outlives it.
    unsafe {
        let result = nvrtc::compile_program(program, &options);
        let log = nvrtc::get_program_log(program)
            .map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().trim().to_string())
            .unwrap_or_default();
        let code = match result {
            Ok(()) if cubin => get_cubin(program),
            Ok(()) => Ok(Vec::new()),
            Err(e) => Err(format!("{e:?}\n{log}")),
        };
        let _ = nvrtc::destroy_program(program);
        code
    }
}

/// NVRTC's cubin of a compiled program.
///
/// # Safety
/// `program` is a live NVRTC program whose compile succeeded.
unsafe fn get_cubin(program: cudarc::nvrtc::sys::nvrtcProgram) -> Result<Vec<u8>, String> {
    use cudarc::nvrtc::sys;
    let mut size = 0usize;
    // SAFETY: the caller's program; NVRTC writes one usize.
    unsafe { sys::nvrtcGetCUBINSize(program, &mut size) }
        .result()
        .map_err(|e| format!("nvrtcGetCUBINSize: {e:?}"))?;
    if size == 0 {
        return Err("NVRTC made no cubin".into());
    }
    let mut code = vec![0u8; size];
    // SAFETY: `code` holds the `size` bytes NVRTC said it writes.
    unsafe { sys::nvrtcGetCUBIN(program, code.as_mut_ptr().cast()) }
        .result()
        .map_err(|e| format!("nvrtcGetCUBIN: {e:?}"))?;
    Ok(code)
}

impl ServerCommunication for CheckServer {
    const SERVER_COMM_ENABLED: bool = false;
}

impl ComputeServer for CheckServer {
    type Kernel = Box<dyn CubeTask<CudaCompiler>>;
    type Info = ();
    type MemoryLayoutPolicy = ContiguousMemoryLayoutPolicy;
    type Storage = HostStorage;

    fn initialize_memory(&mut self, memory: ManagedMemoryHandle, size: u64, _: StreamId) {
        let reserved = self.memory.reserve(size).expect("host memory");
        self.memory.bind(reserved, memory, 0).expect("host memory");
    }

    fn logger(&self) -> Arc<ServerLogger> {
        self.utilities.logger.clone()
    }

    fn utilities(&self) -> Arc<ServerUtilities<Self>> {
        self.utilities.clone()
    }

    fn read(
        &mut self,
        descriptors: Vec<CopyDescriptor>,
        _: StreamId,
    ) -> DynFut<Result<Vec<Bytes>, ServerError>> {
        let out: Result<Vec<Bytes>, ServerError> = descriptors
            .into_iter()
            .map(|d| {
                let size = d.handle.size_in_used() as usize;
                let resource = self.memory.get_resource(
                    d.handle.memory.clone(),
                    d.handle.offset_start,
                    d.handle.offset_end,
                )?;
                Ok(Bytes::from_bytes_vec(resource.read(size)))
            })
            .collect();
        Box::pin(async move { out })
    }

    fn write(&mut self, descriptors: Vec<(CopyDescriptor, Bytes)>, _: StreamId) {
        for (d, data) in descriptors {
            if let Ok(resource) = self.memory.get_resource(
                d.handle.memory.clone(),
                d.handle.offset_start,
                d.handle.offset_end,
            ) {
                resource.write(&data);
            }
        }
    }

    fn sync(&mut self, _: StreamId) -> DynFut<Result<(), ServerError>> {
        Box::pin(async { Ok(()) })
    }

    fn get_resource(
        &mut self,
        binding: Binding,
        _: StreamId,
    ) -> Result<ManagedResource<HostSlice>, ServerError> {
        let resource =
            self.memory
                .get_resource(binding.memory.clone(), binding.offset_start, binding.offset_end)?;
        Ok(ManagedResource::new(binding.memory, resource))
    }

    unsafe fn launch(
        &mut self,
        kernel: Self::Kernel,
        _: CubeCount,
        _: KernelArguments,
        mode: ExecutionMode,
        _: StreamId,
    ) {
        self.compile(kernel.as_ref(), mode);
    }

    fn flush(&mut self, _: StreamId) -> Result<(), ServerError> {
        Ok(())
    }

    fn memory_usage(&mut self, _: StreamId) -> Result<MemoryUsage, ServerError> {
        Ok(self.memory.memory_usage())
    }

    fn memory_cleanup(&mut self, _: StreamId) {
        self.memory.cleanup(true);
    }

    fn start_profile(&mut self, _: StreamId) -> Result<ProfilingToken, ServerError> {
        Ok(self.timestamps.start())
    }

    fn end_profile(&mut self, _: StreamId, token: ProfilingToken) -> Result<ProfileDuration, ProfileError> {
        self.timestamps.stop(token)
    }

    fn allocation_mode(&mut self, mode: MemoryAllocationMode, _: StreamId) {
        self.memory.mode(mode)
    }
}

/// Host memory for the pools: one zeroed buffer per allocation (cubecl-runtime's own byte
/// storage is behind a feature that would rebuild it and all of burn).
#[derive(Debug, Default)]
pub struct HostStorage {
    buffers: HashMap<StorageId, Arc<Mutex<Vec<u8>>>>,
}

/// A slice of one [`HostStorage`] buffer.
#[derive(Debug)]
pub struct HostSlice {
    buffer: Arc<Mutex<Vec<u8>>>,
    offset: usize,
    size: usize,
}

impl HostSlice {
    fn read(&self, len: usize) -> Vec<u8> {
        let b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        b[self.offset..self.offset + len.min(self.size)].to_vec()
    }

    fn write(&self, data: &[u8]) {
        let mut b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let n = data.len().min(self.size);
        b[self.offset..self.offset + n].copy_from_slice(&data[..n]);
    }
}

impl ComputeStorage for HostStorage {
    type Resource = HostSlice;

    fn alignment(&self) -> usize {
        4
    }

    fn get(&mut self, handle: &StorageHandle) -> HostSlice {
        HostSlice {
            buffer: self.buffers[&handle.id].clone(),
            offset: handle.utilization.offset as usize,
            size: handle.utilization.size as usize,
        }
    }

    fn alloc(&mut self, size: u64) -> Result<StorageHandle, cubecl::server::IoError> {
        let id = StorageId::new();
        self.buffers
            .insert(id, Arc::new(Mutex::new(vec![0; size as usize])));
        Ok(StorageHandle {
            id,
            utilization: cubecl_runtime::storage::StorageUtilization { offset: 0, size },
        })
    }

    fn dealloc(&mut self, id: StorageId) {
        self.buffers.remove(&id);
    }

    fn flush(&mut self) {}
}
