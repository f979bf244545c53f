//! The CUDA kernel cache `colossus bench --compile-only --kernel-cache DIR` writes: every kernel
//! the stand-in device (`cuda_check.rs`) compiles, as sm_90a machine code, in cubecl's on-disk
//! kernel cache, under the key burn's CUDA runtime gives that kernel. A GPU host whose
//! `cubecl.toml` names DIR (`[compilation] cache = { file = DIR }`) then loads each kernel it
//! finds there instead of compiling it.
//!
//! Why: burn's CUDA server compiles each kernel with NVRTC at its first launch, serially, and
//! autotune launches every candidate; `gpu-350m`'s first bf16 step costs ~450 s of NVRTC
//! (docs/benchmarks.md), most of a GPU sitting. Compiled here, it costs the sitting nothing.
//!
//! The key is cubecl's `KernelId::stable_hash`: the kernel's type name, then its address type,
//! cube dim, execution mode and comptime info. Only the type name tells the two runtimes apart
//! (kernels are generic over the runtime, so the stand-in's names hold `CheckRuntime` where the
//! GPU's hold `CudaRuntime`); the rest is hashed from the same values. So the key is recomputed
//! with the name rewritten, replaying the id's other hash input exactly as it was written. Each
//! key is checked first by recomputing the stand-in's own `stable_hash` the same way, so a
//! change in cubecl's hashing shows as a refused entry, not as a wrong one. An id whose name or
//! info names the stand-in in another way gets no entry (the GPU compiles that kernel itself).
//!
//! What it stores: NVRTC's cubin, not its PTX. The runtime hands the entry to
//! `cuModuleLoadData`, which takes either, and the cubin spares the driver's PTX JIT too; it
//! also loads on an older driver of the same CUDA major version, which PTX from a newer NVRTC
//! does not. It is built without `-lineinfo` (`cuda_check::nvrtc` says why).
//!
//! What is not checked here: that the GPU finds the entries (its log counts what it still
//! compiles: `benches/gpu.sh`), and that the GPU's kernel selection matches the stand-in's (a
//! kernel it selects differently is a miss, compiled there as before).

use std::any::TypeId;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cubecl::prelude::KernelId;
use cubecl_common::cache::CacheOption;
use cubecl_common::compilation_cache::{CompilationCache, CompilationCacheError};
use cubecl_common::hash::{StableHash, StableHasher};

use super::cuda_check::CheckRuntime;

/// cubecl-cuda 0.10's `PtxCacheEntry` (`compute/context.rs`), field for field: the cache holds
/// it as CBOR, a map keyed by field name, so these names and types are the format.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub entrypoint_name: String,
    pub shared_mem_bytes: usize,
    /// Whatever `cuModuleLoadData` takes: here an sm_90a cubin.
    pub ptx: Vec<std::ffi::c_char>,
}

/// The cache as cubecl-cuda opens it from `[compilation] cache = { file = DIR }`.
pub fn open(dir: &Path) -> CompilationCache<StableHash, Entry> {
    CompilationCache::new("ptx", CacheOption::default().name("cuda").root(dir))
}

/// The list of what was stored, beside cubecl's own files, a line per kernel: key (hex), entry
/// point, shared memory bytes, cubin bytes, tab-separated.
pub const MANIFEST: &str = "colossus-kernels.tsv";

/// What one `--compile-only` run put in the cache.
#[derive(Debug, Default, Clone)]
pub struct Stored {
    pub stored: usize,
    /// Kernels an earlier run had stored already: not compiled again (`reuse`).
    pub already: usize,
    /// Kernels with no entry, and why (a key that cannot be mapped, an index that could not be
    /// written), and manifest lines that could not be written.
    pub skipped: Vec<String>,
}

struct Writer {
    cache: CompilationCache<StableHash, Entry>,
    manifest: std::fs::File,
    dir: PathBuf,
    stored: Stored,
}

static WRITER: Mutex<Option<Writer>> = Mutex::new(None);

fn writer() -> std::sync::MutexGuard<'static, Option<Writer>> {
    WRITER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Start storing compiled kernels in `dir` (created if absent; entries already there stay, so
/// several runs fill one cache).
pub fn start(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(MANIFEST);
    let manifest = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    // cubecl's cache panics on I/O errors; the folder is writable (above), so what is left is
    // a corrupt chunk from elsewhere, which the message names.
    let cache = std::panic::catch_unwind(|| open(dir))
        .map_err(|_| format!("{} holds a kernel cache cubecl cannot read", dir.display()))?;
    *writer() = Some(Writer {
        cache,
        manifest,
        dir: dir.to_path_buf(),
        stored: Stored::default(),
    });
    Ok(())
}

/// Whether kernels are being stored (`start` was called and `finish` was not).
pub fn active() -> bool {
    writer().is_some()
}

/// Stop storing; what was stored.
pub fn finish() -> Option<Stored> {
    writer().take().map(|w| w.stored)
}

/// Whether the cache holds `key` already, counted as such if so: the kernel need not be
/// compiled again. An earlier run of this binary compiled the same program for it (the key is
/// its type and every comptime value it is generated from), and on its shared memory and
/// NVRTC passed. cubecl's code generator iterates hash sets, so that run's bytes may differ
/// from this one's (declarations in another order, shared buffers at swapped offsets:
/// docs/benchmarks.md), not the program; cubecl's own cache keeps the first process's code too.
/// Most of `benches/gpu-prepare.sh`'s runs launch kernels an earlier one stored.
pub fn reuse(key: &Result<StableHash, String>) -> bool {
    let mut guard = writer();
    let (Some(w), Ok(key)) = (guard.as_mut(), key) else {
        return false;
    };
    let found = w.cache.get(key).is_some();
    w.stored.already += usize::from(found);
    found
}

/// Store one compiled kernel under `key` (`gpu_key`'s), or note why not.
pub fn store(key: Result<StableHash, String>, entry: Entry) {
    let mut guard = writer();
    let Some(w) = guard.as_mut() else { return };
    let key = match key {
        Ok(k) => k,
        Err(why) => return w.stored.skipped.push(format!("{}: {why}", entry.entrypoint_name)),
    };
    let line = format!(
        "{key:032x}\t{}\t{}\t{}\n",
        entry.entrypoint_name,
        entry.shared_mem_bytes,
        entry.ptx.len()
    );
    let name = entry.entrypoint_name.clone();
    match w.cache.insert(key, entry) {
        Ok(()) => {
            w.stored.stored += 1;
            if let Err(e) = w.manifest.write_all(line.as_bytes()) {
                w.stored.skipped.push(format!(
                    "{name}: cannot write {}: {e}",
                    w.dir.join(MANIFEST).display()
                ));
            }
        }
        // Not a duplicate: its table of contents could not be written.
        Err(CompilationCacheError::TocError(e)) => w
            .stored
            .skipped
            .push(format!("{name}: cubecl's cache index: {e:?}")),
        Err(CompilationCacheError::DuplicatedKey { .. }) => w.stored.already += 1,
    }
}

/// The key burn's CUDA runtime gives the kernel the stand-in knows as `id` (its mode set, as
/// the runtime sets it before compiling).
pub fn gpu_key(id: &KernelId) -> Result<StableHash, String> {
    let debug = format!("{id:?}");
    let name = type_name(&debug).ok_or("no type name in the kernel id's Debug form")?;
    if rehash(name, id) != id.stable_hash() {
        return Err("cubecl's kernel hash is not the one this code replays".into());
    }
    let ours = std::any::type_name::<CheckRuntime>();
    let theirs = std::any::type_name::<cubecl::cuda::CudaRuntime>();
    let gpu = name.replace(ours, theirs);
    // Other stand-in types (its device, server, backend) in the name, or anywhere in the
    // info's Debug form (which may hash them), would give a key the GPU never asks for.
    let rest = debug.replace(ours, "");
    if rest.contains("cuda_check::") || rest.contains(super::cuda_check::NAME) {
        return Err("its id names the stand-in device beyond the runtime".into());
    }
    Ok(rehash(&gpu, id))
}

/// The type name as `KernelId`'s Debug form prints it (`KernelId { type: NAME, address_type: …`).
fn type_name(debug: &str) -> Option<&str> {
    let rest = debug.strip_prefix("KernelId { type: ")?;
    Some(&rest[..rest.find(", address_type: ")?])
}

/// `KernelId::stable_hash` with `name` for the type name: the id's own `Hash` writes its
/// `TypeId` and then exactly what `stable_hash` writes after the name, so that tail is recorded
/// and replayed after hashing `name`.
fn rehash(name: &str, id: &KernelId) -> StableHash {
    let mut all = Tape::default();
    id.hash(&mut all);
    let mut head = Tape::default();
    TypeId::of::<()>().hash(&mut head);
    let mut h = StableHasher::new();
    name.hash(&mut h);
    for w in &all.0[head.0.len()..] {
        w.replay(&mut h);
    }
    h.finalize()
}

/// Every write a `Hash` impl makes, by method, so it can be replayed into another hasher.
#[derive(Default)]
struct Tape(Vec<Write_>);

enum Write_ {
    Bytes(Vec<u8>),
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    U128(u128),
    Usize(usize),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    I128(i128),
    Isize(isize),
}

impl Write_ {
    fn replay(&self, h: &mut impl Hasher) {
        match *self {
            Write_::Bytes(ref b) => h.write(b),
            Write_::U8(v) => h.write_u8(v),
            Write_::U16(v) => h.write_u16(v),
            Write_::U32(v) => h.write_u32(v),
            Write_::U64(v) => h.write_u64(v),
            Write_::U128(v) => h.write_u128(v),
            Write_::Usize(v) => h.write_usize(v),
            Write_::I8(v) => h.write_i8(v),
            Write_::I16(v) => h.write_i16(v),
            Write_::I32(v) => h.write_i32(v),
            Write_::I64(v) => h.write_i64(v),
            Write_::I128(v) => h.write_i128(v),
            Write_::Isize(v) => h.write_isize(v),
        }
    }
}

impl Hasher for Tape {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, b: &[u8]) {
        self.0.push(Write_::Bytes(b.to_vec()))
    }
    fn write_u8(&mut self, v: u8) {
        self.0.push(Write_::U8(v))
    }
    fn write_u16(&mut self, v: u16) {
        self.0.push(Write_::U16(v))
    }
    fn write_u32(&mut self, v: u32) {
        self.0.push(Write_::U32(v))
    }
    fn write_u64(&mut self, v: u64) {
        self.0.push(Write_::U64(v))
    }
    fn write_u128(&mut self, v: u128) {
        self.0.push(Write_::U128(v))
    }
    fn write_usize(&mut self, v: usize) {
        self.0.push(Write_::Usize(v))
    }
    fn write_i8(&mut self, v: i8) {
        self.0.push(Write_::I8(v))
    }
    fn write_i16(&mut self, v: i16) {
        self.0.push(Write_::I16(v))
    }
    fn write_i32(&mut self, v: i32) {
        self.0.push(Write_::I32(v))
    }
    fn write_i64(&mut self, v: i64) {
        self.0.push(Write_::I64(v))
    }
    fn write_i128(&mut self, v: i128) {
        self.0.push(Write_::I128(v))
    }
    fn write_isize(&mut self, v: isize) {
        self.0.push(Write_::Isize(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq, Hash)]
    struct Settings {
        tile: u32,
        name: &'static str,
    }
    struct Kernel<R>(R);

    /// The replay is `stable_hash` itself when the name is the id's own, and a name differing
    /// in the runtime alone gives another key.
    #[test]
    fn rehash_with_the_ids_own_name_is_its_stable_hash() {
        let id = KernelId::new::<Kernel<CheckRuntime>>()
            .info(Settings { tile: 64, name: "x" })
            .cube_dim(cubecl::prelude::CubeDim::new_2d(32, 4));
        let debug = format!("{id:?}");
        let name = type_name(&debug).unwrap();
        assert_eq!(name, std::any::type_name::<Kernel<CheckRuntime>>());
        assert_eq!(rehash(name, &id), id.stable_hash());
        let mut checked = id.clone();
        checked.mode(cubecl::server::ExecutionMode::Unchecked);
        assert_ne!(rehash(name, &checked), id.stable_hash());
        let gpu = KernelId::new::<Kernel<cubecl::cuda::CudaRuntime>>()
            .info(Settings { tile: 64, name: "x" })
            .cube_dim(cubecl::prelude::CubeDim::new_2d(32, 4));
        assert_eq!(gpu_key(&id).unwrap(), gpu.stable_hash());
        assert_ne!(gpu_key(&id).unwrap(), id.stable_hash());
    }
}
