//! Issue 7, without a GPU: every CUDA kernel a training step launches compiles for the H100/H200
//! (sm_90a) through cubecl's CUDA code generator and NVRTC (`colossus bench --compile-only`,
//! `src/backend/cuda_check.rs`), and a kernel NVRTC rejects fails the command with its log.
//!
//! Built only with `--features cuda`; needs NVRTC on the library path and the CUDA headers under
//! `CUDA_PATH` (the `nvidia-cuda-nvrtc`, `-runtime`, `-cccl` and `-crt` wheels are enough:
//! docs/benchmarks.md, "CUDA kernels without a GPU"). Without them each test says why and
//! passes, unless `COLOSSUS_REQUIRE_NVRTC=1` makes that a failure. CI does not run these (its
//! CUDA step only lints, and a CUDA test build would not fit its time budget); each full check
//! takes minutes (NVRTC, one kernel at a time, every autotune candidate).
#![cfg(feature = "cuda")]

mod common;

use colossus::backend::{cuda_cache, cuda_check};
use common::*;

/// Whether NVRTC and the headers are here; otherwise the reason is printed.
fn toolchain() -> bool {
    match cuda_check::toolchain() {
        Ok(_) => true,
        Err(why) => {
            assert!(
                std::env::var("COLOSSUS_REQUIRE_NVRTC").is_err(),
                "COLOSSUS_REQUIRE_NVRTC is set but the CUDA compile check cannot run: {why}"
            );
            eprintln!("SKIPPED CUDA compile check: {why}");
            false
        }
    }
}

/// `colossus bench configs/tiny.yaml --compile-only` with `sets`, one step: (exit code, stdout,
/// stderr).
fn compile_only(sets: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    compile_only_with(&[], sets, env)
}

/// `compile_only` with more flags.
fn compile_only_with(flags: &[&str], sets: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut args = vec![
        "bench",
        "configs/tiny.yaml",
        "--compile-only",
        "--steps",
        "1",
        "--warmup",
        "0",
    ];
    args.extend(flags);
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_colossus"))
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// The `key=value` of the report line.
fn field<'a>(stdout: &'a str, key: &str) -> &'a str {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("compile-only:"))
        .expect("report line");
    line_field(line, key)
}

#[test]
fn issue_7_every_kernel_of_a_bf16_step_compiles_for_sm_90a() {
    if !toolchain() {
        return;
    }
    // Flash: the vendored flash attention's tensor-core routine with the soft cap and the fused
    // flash backward's tensor-core products (lavapipe can run neither). Composed: our softmax
    // kernel pair. Both: RMSNorm, the cross-entropy, the bf16 → f32 head product, the experts,
    // AdamW and every matmul autotune candidate.
    for (attention, routine) in [("flash", "flash/blackbox_accelerated"), ("composed", "composed")] {
        let sources = temp_dir(&format!("cuda-compile-{attention}"));
        let (code, stdout, stderr) = compile_only(
            &["precision=bf16", &format!("attention={attention}")],
            &[("COLOSSUS_CUDA_SOURCES", sources.to_str().unwrap())],
        );
        assert_eq!(code, Some(0), "{attention}: {stdout}\n{stderr}");
        assert_eq!(field(&stdout, "kernels_failed"), "0", "{stdout}");
        assert_eq!(field(&stdout, "attention"), routine, "{stdout}\n{stderr}");
        if attention == "flash" {
            assert_eq!(field(&stdout, "flash_backward"), "fused/tensor-cores", "{stdout}");
        }
        let compiled: usize = field(&stdout, "kernels_compiled").parse().unwrap();
        // A step launches well over a hundred distinct kernels; a handful would mean the steps
        // never reached the device.
        assert!(compiled > 100, "{attention}: only {compiled} kernels: {stdout}");
        // NVRTC's time: one line a kernel in the sources folder, summed on the report line
        // (what a GPU's first run spends compiling, docs/benchmarks.md).
        let times = std::fs::read_to_string(sources.join("nvrtc_seconds.tsv")).unwrap();
        let seconds: Vec<f64> = times
            .lines()
            .map(|l| l.rsplit('\t').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(seconds.len(), compiled, "{times}");
        assert!(seconds.iter().all(|&s| s > 0.0), "{times}");
        let total: f64 = field(&stdout, "nvrtc_s").parse().unwrap();
        assert!(
            (total - seconds.iter().sum::<f64>()).abs() < 1.0,
            "{total} against {times}"
        );
    }
}

#[test]
fn issue_7_a_kernel_nvrtc_rejects_fails_the_check_with_its_log() {
    if !toolchain() {
        return;
    }
    // Headers whose first include stops every kernel: the check must report each failure with
    // NVRTC's log and exit non-zero, not pass or panic.
    let dir = temp_dir("cuda-compile-planted");
    let include = dir.join("include");
    std::fs::create_dir_all(include.join("crt")).unwrap();
    std::fs::write(include.join("cuda_bf16.h"), "").unwrap();
    std::fs::write(include.join("crt").join("mma.h"), "").unwrap();
    std::fs::write(include.join("cuda_runtime.h"), "#error planted by the test\n").unwrap();
    let cuda_path = dir.to_str().unwrap();
    let (code, stdout, stderr) = compile_only(&["precision=f32"], &[("CUDA_PATH", cuda_path)]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("planted by the test"),
        "no NVRTC log in: {stderr}"
    );
    assert!(stderr.contains("failed to compile for sm_90a"), "{stderr}");
    assert!(
        stderr.contains("--- source of"),
        "no generated source in the report: {stderr}"
    );
    assert_ne!(field(&stdout, "kernels_failed"), "0", "{stdout}");
}

#[test]
fn issue_7_the_kernel_cache_holds_every_compiled_kernel_as_sm_90a_machine_code() {
    if !toolchain() {
        return;
    }
    // What a GPU host loads instead of compiling (`--kernel-cache`, backend/cuda_cache.rs): one
    // entry per compiled kernel, found by cubecl's own cache reader under the listed key, each
    // an sm_90a cubin. (That the key is the CUDA runtime's is the unit test's in cuda_cache.rs.)
    let dir = temp_dir("cuda-kernel-cache");
    let cache = dir.join("cache");
    // The same steps into the same cache, run twice below.
    let run = || {
        compile_only_with(
            &["--kernel-cache", cache.to_str().unwrap()],
            &["precision=bf16"],
            &[],
        )
    };
    let (code, stdout, stderr) = run();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let compiled: usize = field(&stdout, "kernels_compiled").parse().unwrap();
    assert!(compiled > 100, "{stdout}");
    let summary = kernel_cache_line(&stdout);
    assert!(
        summary.starts_with(&format!(
            "kernel cache: {compiled} stored, 0 already there (not compiled again), 0 not stored"
        )),
        "{summary}\n{stderr}"
    );
    let manifest = std::fs::read_to_string(cache.join(cuda_cache::MANIFEST)).unwrap();
    assert_eq!(manifest.lines().count(), compiled, "{manifest}");
    // What each GPU process pays at start: cubecl-cuda reads the whole cache then.
    let start = std::time::Instant::now();
    let reader = cuda_cache::open(&cache);
    eprintln!(
        "cubecl read the cache of {compiled} kernels in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    for line in manifest.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let key = u128::from_str_radix(f[0], 16).unwrap();
        let entry = reader
            .get(&key)
            .unwrap_or_else(|| panic!("cubecl's reader does not find {line}"));
        assert_eq!(entry.entrypoint_name, f[1], "{line}");
        assert_eq!(entry.shared_mem_bytes.to_string(), f[2], "{line}");
        assert_eq!(entry.ptx.len().to_string(), f[3], "{line}");
        let code: Vec<u8> = entry.ptx.iter().map(|&b| b as u8).collect();
        // An ELF file for NVIDIA's machine (EM_CUDA = 190) whose flags name sm_90.
        assert_eq!(&code[..4], b"\x7fELF", "{line}");
        assert_eq!(u16::from_le_bytes([code[18], code[19]]), 190, "{line}");
        let flags = u32::from_le_bytes(code[48..52].try_into().unwrap());
        assert_eq!(sm(flags), 90, "{line}: e_flags {flags:#x}");
    }
    drop(reader);
    // A second run of the same steps finds its kernels there and does not compile them again
    // (`cuda_cache::reuse`). Not quite all: which kernels a run launches varies by a few from
    // process to process (this step launched 418 to 425 distinct kernels, fewer when other
    // tests ran beside it, and a second run compiled 4 to 6 new ones), and a kernel whose
    // comptime info differs between processes gets another key each time (one reduction kernel
    // did, docs/benchmarks.md); those compile and are stored anew, as they would on the GPU.
    // Without reuse the second run would compile them all again.
    let (code, stdout, stderr) = run();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let again: usize = field(&stdout, "kernels_compiled").parse().unwrap();
    let summary = kernel_cache_line(&stdout);
    let found: usize = summary
        .strip_prefix(&format!("kernel cache: {again} stored, "))
        .and_then(|rest| rest.split_once(" already there (not compiled again), 0 not stored"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("{summary}\n{stderr}"));
    assert!(
        again * 10 <= compiled && found * 10 >= compiled * 9,
        "{summary}\n{stdout}"
    );
    let manifest = std::fs::read_to_string(cache.join(cuda_cache::MANIFEST)).unwrap();
    assert_eq!(manifest.lines().count(), compiled + again, "{manifest}");
}

/// `--kernel-cache`'s summary line (`kernel cache: N stored, M already there …`).
fn kernel_cache_line(stdout: &str) -> &str {
    stdout
        .lines()
        .find(|l| l.starts_with("kernel cache:"))
        .unwrap_or_else(|| panic!("no kernel cache line: {stdout}"))
}

/// The SM version in a CUDA ELF header's `e_flags`: bits 8–15 as NVRTC 13 writes them
/// (0x5a04 with a leading ABI byte for sm_90a), the low byte in older ELF ABIs.
fn sm(flags: u32) -> u32 {
    match (flags >> 8) & 0xff {
        0 => flags & 0xff,
        sm => sm,
    }
}
