//! Counts the GPU kernel launches of each fused op's forward and backward, on the kernel path
//! (`src/backend/gpu.rs`) and on the plain burn composition, to see which ops burn's fusion
//! leaves in pieces. Launch counts do not depend on the device, so a software Vulkan device
//! (lavapipe) answers this without a GPU; it says nothing about time.
//!
//! `cargo run --features wgpu --example kernel_launches`
//!
//! Each op runs twice and the second run is counted (the first compiles and autotunes). The
//! count covers the op's forward and backward and the few launches of the harness around it
//! (the `· u` product, the sum, the gradient seeds), which are the same on both paths.

use std::collections::BTreeMap;

use burn::backend::wgpu::WgpuDevice;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use colossus::backend::WgpuTrain;
use colossus::model::fused::{self, AttnScores};
use colossus::model::rope::RopeTables;
use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, profiling::ProfilingLogLevel};

type B = WgpuTrain;

fn input<const D: usize>(dims: [usize; D], salt: usize, device: &WgpuDevice) -> Tensor<B, D> {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 + salt * 104_729) % 10_007) as f32 / 5003.5 - 1.0)
        .collect();
    Tensor::from_data(TensorData::new(v, dims), device)
}

/// Forward and backward of one op, waiting for the device at the end.
fn run(op: &str, device: &WgpuDevice) {
    match op {
        "capped softmax" => {
            let x = input([2, 2, 64, 64], 1, device).require_grad();
            let s = AttnScores {
                multiplier: 0.3,
                cap: 30.0,
                t: 64,
                past: 0,
            };
            let p = fused::capped_softmax(x.clone(), s);
            let grads = (p * input([2, 2, 64, 64], 2, device)).sum().backward();
            let _ = x.grad(&grads).map(|g| g.into_data());
        }
        "rms norm" => {
            let x = input([256, 64], 3, device).require_grad();
            let w = input([64], 4, device).require_grad();
            let y = fused::rms_norm(x.clone(), w.clone(), 1e-5);
            let grads = (y * input([256, 64], 5, device)).sum().backward();
            let _ = x.grad(&grads).map(|g| g.into_data());
            let _ = w.grad(&grads).map(|g| g.into_data());
        }
        "gelu gate" => {
            let a = input([256, 64], 6, device).require_grad();
            let b = input([256, 64], 7, device).require_grad();
            let y = fused::gelu_gate(a.clone(), b.clone());
            let grads = (y * input([256, 64], 8, device)).sum().backward();
            let _ = a.grad(&grads).map(|g| g.into_data());
            let _ = b.grad(&grads).map(|g| g.into_data());
        }
        "rope" => {
            // [batch, seq, heads, head_dim], as the attention's projections give it.
            let x = input([2, 64, 4, 32], 10, device).require_grad();
            let tables = RopeTables::<B>::new(32, 10_000.0, 0, 64, device);
            let y = fused::rope(x.clone(), &tables);
            let grads = (y * input([2, 4, 64, 32], 11, device)).sum().backward(); // [b, heads, seq, hd]
            let _ = x.grad(&grads).map(|g| g.into_data());
        }
        "cross entropy" => {
            let x = input([256, 512], 9, device).require_grad();
            let targets: Vec<i64> = (0..256).map(|i| (i * 37 % 512) as i64).collect();
            let targets = Tensor::<B, 1, Int>::from_data(TensorData::new(targets, [256]), device);
            let grads = fused::cross_entropy(x.clone(), targets).backward();
            let _ = x.grad(&grads).map(|g| g.into_data());
        }
        _ => unreachable!(),
    }
    B::sync(device).expect("device sync");
}

fn main() {
    let log = std::env::temp_dir().join(format!("colossus-kernel-launches-{}.log", std::process::id()));
    let mut config = CubeClRuntimeConfig::default();
    config.profiling.logger.level = ProfilingLogLevel::Minimal;
    config.profiling.logger.file = Some(log.clone());
    config.profiling.logger.append = false;
    CubeClRuntimeConfig::set(config);
    let device = match colossus::backend::wgpu_device() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("no wgpu device: {why}");
            std::process::exit(1);
        }
    };
    let lines = || std::fs::read_to_string(&log).unwrap_or_default().lines().count();
    println!(
        "{:<16} {:>8} {:>8}   kernel path launches",
        "op", "kernels", "plain"
    );
    for op in ["capped softmax", "rms norm", "gelu gate", "rope", "cross entropy"] {
        let mut counts = [0; 2];
        let mut names = BTreeMap::new();
        for (i, plain) in [false, true].into_iter().enumerate() {
            let go = || {
                run(op, &device);
                let before = lines();
                run(op, &device);
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let new: Vec<String> = text.lines().skip(before).map(String::from).collect();
                new
            };
            let new = if plain { fused::plain_scope(go) } else { go() };
            counts[i] = new.len();
            if !plain {
                for l in new {
                    let name = l
                        .trim_start_matches("Executing ")
                        .split(" |")
                        .next()
                        .unwrap_or("")
                        .to_string();
                    *names.entry(name).or_insert(0) += 1;
                }
            }
        }
        let names: Vec<String> = names.into_iter().map(|(n, c)| format!("{c}×{n}")).collect();
        println!(
            "{op:<16} {:>8} {:>8}   {}",
            counts[0],
            counts[1],
            names.join(", ")
        );
    }
    let _ = std::fs::remove_file(&log);
}
