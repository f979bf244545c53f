//! Backend parity (issue 7): the tiny preset trained a few steps on wgpu (on CI: Mesa's lavapipe,
//! a software Vulkan device) against the CPU backend: every step's loss and the first step's
//! gradients. Built only with `--features wgpu`. Without any wgpu adapter the test says why and
//! passes, unless `COLOSSUS_REQUIRE_WGPU=1` (set by `.ci/run`, which installs lavapipe) makes
//! that a failure.
#![cfg(feature = "wgpu")]

mod common;

use burn::tensor::backend::AutodiffBackend;
use colossus::backend::{self, CpuTrain, WgpuTrain};
use colossus::config::Config;
use common::*;

/// The losses of `steps` optimizer steps from the same weights and batches, and the first
/// step's gradients.
fn train_on<B: AutodiffBackend>(cfg: &Config, device: &B::Device, steps: usize) -> (Vec<f64>, Vec<Vec<f32>>) {
    let s = train_steps(cfg, cfg.model.init::<B>(cfg.seed, device), device, 11, steps);
    (s.losses, s.first_grads.into_iter().map(floats).collect())
}

#[test]
fn issue_7_wgpu_trains_the_tiny_preset_like_the_cpu_backend() {
    // Autotuning benchmarks many matmul kernels per shape: minutes on a software device, and it
    // would change nothing this test checks. Set before the first wgpu call, in the only test of
    // this binary, so no other thread reads the environment meanwhile.
    unsafe { std::env::set_var("CUBECL_AUTOTUNE_LEVEL", "minimal") };
    let device = match backend::wgpu_device() {
        Ok(d) => d,
        Err(why) => {
            assert!(
                std::env::var("COLOSSUS_REQUIRE_WGPU").is_err(),
                "COLOSSUS_REQUIRE_WGPU is set but no wgpu device opened: {why}"
            );
            eprintln!("SKIPPED wgpu parity: no wgpu device ({why}); install mesa-vulkan-drivers");
            return;
        }
    };
    let dir = temp_dir("wgpu-parity");
    let cfg = tiny_config(&dir, &["train.micro_batch=4", "data.seq_len=32"]);
    const STEPS: usize = 3;
    let (cpu_losses, cpu_grads) = train_on::<CpuTrain>(&cfg, &Default::default(), STEPS);
    let (gpu_losses, gpu_grads) = train_on::<WgpuTrain>(&cfg, &device, STEPS);
    println!("cpu  losses {cpu_losses:?}\nwgpu losses {gpu_losses:?}");

    // Same math in a different order (GPU reductions and matmul tiling, CPU fused kernels): the
    // f32 results agree to a few units in the 6th digit; 1e-4 relative leaves room for AdamW,
    // which turns small gradient differences into slightly larger weight differences.
    for (i, (a, b)) in cpu_losses.iter().zip(&gpu_losses).enumerate() {
        let rel = (a - b).abs() / a.abs();
        assert!(
            rel < 1e-4,
            "step {i}: loss {a} on cpu, {b} on wgpu (relative {rel:e})"
        );
    }
    assert_eq!(cpu_grads.len(), gpu_grads.len());
    // The config-only parameter list is in module order, as the gradients are.
    let names = colossus::model::grok::param_shapes(&cfg.model);
    for ((a, b), (name, _)) in cpu_grads.iter().zip(&gpu_grads).zip(&names) {
        let rel = rel_l2(a, b);
        assert!(rel < 1e-3, "{name}: gradient relative L2 difference {rel:e}");
    }
}
