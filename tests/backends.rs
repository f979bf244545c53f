//! Backend parity (issue 7): the tiny preset trained a few steps on wgpu (on CI: Mesa's lavapipe,
//! a software Vulkan device) against the CPU backend: every step's loss and the first step's
//! gradients. Built only with `--features wgpu`. Without any wgpu adapter the test says why and
//! passes, unless `COLOSSUS_REQUIRE_WGPU=1` (set by `.ci/run`, which installs lavapipe) makes
//! that a failure. Also: a wgpu device that cannot be opened is an error, not a panic.
#![cfg(feature = "wgpu")]

mod common;

use std::sync::Once;

use burn::backend::Wgpu;
use burn::backend::wgpu::WgpuDevice;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, FloatDType, Int, Tensor, TensorData};
use colossus::backend::{self, Cpu, CpuTrain, WgpuTrain};
use colossus::config::{AttentionKernel, BackendKind, Config, Precision};
use colossus::model::attention::KvCache;
use colossus::model::fused::{self, AttnScores};
use colossus::model::rope::RopeTables;
use colossus::model::{Grok, flash, precision, wide};
use common::*;

/// The losses of `steps` optimizer steps from the same weights and batches, and the first
/// step's gradients, with the products in `cfg.precision` (no loss scale).
fn train_on<B: AutodiffBackend>(cfg: &Config, device: &B::Device, steps: usize) -> (Vec<f64>, Vec<Vec<f32>>) {
    let model = cfg
        .model
        .init::<B>(cfg.seed, device)
        .with_precision(cfg.precision);
    let s = train_steps(cfg, model, device, 11, steps);
    (s.losses, s.first_grads.into_iter().map(floats).collect())
}

/// The wgpu device, or `None` (with the reason printed) where there is none and CI did not ask
/// for one.
fn wgpu() -> Option<WgpuDevice> {
    static ONCE: Once = Once::new();
    // Autotuning benchmarks many matmul kernels per shape: minutes on a software device, and it
    // would change nothing these tests check. Set once, before any test of this binary touches
    // wgpu (each goes through here first), so no other thread reads the environment meanwhile.
    ONCE.call_once(|| unsafe { std::env::set_var("CUBECL_AUTOTUNE_LEVEL", "minimal") });
    match backend::wgpu_device() {
        Ok(d) => Some(d),
        Err(why) => {
            assert!(
                std::env::var("COLOSSUS_REQUIRE_WGPU").is_err(),
                "COLOSSUS_REQUIRE_WGPU is set but no wgpu device opened: {why}"
            );
            eprintln!("SKIPPED wgpu parity: no wgpu device ({why}); install mesa-vulkan-drivers");
            None
        }
    }
}

#[test]
fn issue_7_wgpu_trains_the_tiny_preset_like_the_cpu_backend() {
    let Some(device) = wgpu() else { return };
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
    // The same training with the attention core on the flash kernel (`attention: flash`)
    // follows the composed wgpu run to float rounding.
    let model = cfg
        .model
        .init::<WgpuTrain>(cfg.seed, &device)
        .with_attention(AttentionKernel::Flash);
    let flash = train_steps(&cfg, model, &device, 11, STEPS);
    assert_eq!(
        flash.model.attention,
        AttentionKernel::Flash,
        "the optimizer keeps the setting"
    );
    assert_eq!(backend::flash_routine(), Some("unit"), "the flash kernel ran");
    println!("flash losses {:?}", flash.losses);
    for (i, (a, b)) in gpu_losses.iter().zip(&flash.losses).enumerate() {
        let rel = (a - b).abs() / a.abs();
        assert!(
            rel < 1e-5,
            "step {i}: loss {a} composed, {b} flash (relative {rel:e})"
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

/// Issue 7, "f16 where the adapter supports it": `precision: f16` on wgpu trains the tiny preset
/// through the real loop (dynamic loss scaling, clipping) like the CPU backend's f16 emulation
/// (f16-rounded operands, f32 sums, f16 results), and the first step's gradients agree.
#[test]
fn issue_7_wgpu_trains_the_tiny_preset_in_f16_like_the_cpu_backend() {
    let Some(device) = wgpu() else { return };
    if !<Wgpu as Backend>::supports_dtype(&device, DType::F16) {
        eprintln!("SKIPPED wgpu f16 parity: this adapter has no f16 (`precision: f16` is refused there)");
        return;
    }
    if !<Wgpu as Backend>::supports_dtype(&device, DType::BF16) {
        // The refusal of bf16 points to f16 (lavapipe: f16, no bf16).
        let err = precision::check::<Wgpu>(Precision::Bf16, BackendKind::Wgpu, &device)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`precision`") && err.contains("precision: f16"),
            "{err}"
        );
    }
    let keys = [
        "train.micro_batch=4",
        "data.seq_len=32",
        "precision=f16",
        "train.steps=3",
        "train.warmup_steps=1",
    ];
    let opts = colossus::train::TrainOptions {
        quiet: true,
        ..Default::default()
    };
    let dir = temp_dir("wgpu-f16-cpu");
    let cpu_cfg = tiny_config(&dir, &keys);
    let cpu = colossus::train::train::<CpuTrain>(&cpu_cfg, &opts, &Default::default()).unwrap();
    let dir = temp_dir("wgpu-f16-gpu");
    let gpu_cfg = tiny_config(&dir, &[&keys[..], &["backend=wgpu"]].concat());
    let gpu = colossus::train::train::<WgpuTrain>(&gpu_cfg, &opts, &device).unwrap();
    println!(
        "cpu  f16 losses {:?}\nwgpu f16 losses {:?}",
        cpu.losses, gpu.losses
    );
    assert_eq!(
        (cpu.skipped_steps, gpu.skipped_steps),
        (0, 0),
        "no overflow at 2^16"
    );
    // As the f32 parity test: the same f16 roundings of the operands, f32 sums in another order
    // (an f16 result can round the other way where the two sums straddle a rounding boundary).
    for (i, (a, b)) in cpu.losses.iter().zip(&gpu.losses).enumerate() {
        let rel = (a - b).abs() / a.abs();
        assert!(
            rel < 1e-4,
            "step {i}: loss {a} on cpu, {b} on wgpu (relative {rel:e})"
        );
    }
    let (_, cpu_grads) = train_on::<CpuTrain>(&cpu_cfg, &Default::default(), 1);
    let (_, gpu_grads) = train_on::<WgpuTrain>(&gpu_cfg, &device, 1);
    let mut worst = (0f64, String::new());
    let names = colossus::model::grok::param_shapes(&cpu_cfg.model);
    for ((a, b), (name, _)) in cpu_grads.iter().zip(&gpu_grads).zip(&names) {
        let rel = rel_l2(a, b);
        if rel > worst.0 {
            worst = (rel, name.clone());
        }
        assert!(rel < 1e-2, "{name}: f16 gradient relative L2 difference {rel:e}");
    }
    println!(
        "largest f16 gradient relative L2 difference, cpu vs wgpu: {:e} ({})",
        worst.0, worst.1
    );
}

/// Deterministic values in [-scale, scale].
fn values(n: usize, salt: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + salt * 104_729) % 10_007) as f32 / 5003.5 - 1.0)
        .map(|v| v * scale)
        .collect()
}

/// A `dims` tensor of `values(.., salt, scale)` on `device`.
fn filled<B: Backend, const D: usize>(
    dims: [usize; D],
    salt: usize,
    scale: f32,
    device: &B::Device,
) -> Tensor<B, D> {
    let n = dims.iter().product();
    Tensor::from_data(TensorData::new(values(n, salt, scale), dims), device)
}

/// Asserts that each of the kernel path's results `got` is within its tolerance (relative L2)
/// of the plain path's `want`, and not all zeros; returns whether any bits differ.
fn agree(what: &str, checks: &[(&str, f64)], got: &[Vec<f32>], want: &[Vec<f32>]) -> bool {
    assert_eq!(
        (checks.len(), got.len()),
        (want.len(), want.len()),
        "{what}: result counts"
    );
    let mut bits_differ = false;
    for (((name, tol), g), w) in checks.iter().zip(got).zip(want) {
        let rel = rel_l2(g, w);
        println!("{what} {name}: {rel:e} relative L2");
        assert!(rel < *tol, "{what}: {name} differs by {rel:e} relative L2");
        assert!(g.iter().any(|v| *v != 0.0), "{what}: {name} is all zeros");
        bits_differ |= g != w;
    }
    bits_differ
}

/// Probabilities and the logits' gradient of `Σ capped_softmax(x)·w` on wgpu, on the kernel
/// path or the plain one. `transposed`: the logits arrive as a strided view.
fn softmax_on_wgpu(
    device: &WgpuDevice,
    dims: [usize; 4],
    s: AttnScores,
    transposed: bool,
    plain: bool,
) -> (Vec<f32>, Vec<f32>) {
    let go = || {
        let x = if transposed {
            let [b, h, r, c] = dims;
            filled::<WgpuTrain, 4>([b, h, c, r], 5, 20.0, device).require_grad()
        } else {
            filled::<WgpuTrain, 4>(dims, 3, 20.0, device).require_grad()
        };
        let logits = if transposed {
            x.clone().swap_dims(2, 3)
        } else {
            x.clone()
        };
        let p = fused::capped_softmax(logits, s);
        let w = filled::<WgpuTrain, 4>(dims, 99, 1.0, device);
        let grads = (p.clone() * w).sum().backward();
        let mut g = x.grad(&grads).expect("the logits are a leaf");
        if transposed {
            g = g.swap_dims(2, 3);
        }
        (floats(p), floats(g))
    };
    if plain { fused::plain_scope(go) } else { go() }
}

/// Issue 7: the fused soft-capped causal softmax (`backend/gpu.rs`, the cubecl kernel pair)
/// against the plain burn composition on the same device, forward and backward.
#[test]
fn issue_7_gpu_capped_softmax_kernel_matches_the_plain_path() {
    let Some(device) = wgpu() else { return };
    let scores = |multiplier, cap, t, past| AttnScores {
        multiplier,
        cap,
        t,
        past,
    };
    let cases = [
        // [batch 2, kv heads 2, rep 3 · t 5, past 4 + t 5], as with a decoding cache; caps that
        // saturate (1.5), bite (30 on logits up to ±20·0.35·…) and are off (0).
        ("cached, cap 30", [2, 2, 15, 9], scores(0.35, 30.0, 5, 4), false),
        ("cached, cap 1.5", [2, 2, 15, 9], scores(0.35, 1.5, 5, 4), false),
        ("cached, no cap", [2, 2, 15, 9], scores(0.35, 0.0, 5, 4), false),
        // Rows longer than the kernel's 128 threads, so each thread strides.
        (
            "training, 300 keys",
            [1, 2, 600, 300],
            scores(0.2, 30.0, 300, 0),
            false,
        ),
        // A strided view: the kernel makes it contiguous first.
        ("strided logits", [2, 1, 24, 24], scores(0.5, 30.0, 24, 0), true),
        // More rows than one grid axis holds (65 535), so the grid folds into two axes.
        ("70 000 rows", [1, 1, 70_000, 4], scores(1.0, 30.0, 1, 3), false),
        // Capped logits ±50 (saturated): exp(−100) underflows to zero or a subnormal, where
        // the backward, which recomputes each tanh from ln p, must not take a logarithm of 0.
        (
            "cap 50, underflowing probabilities",
            [1, 2, 40, 40],
            scores(10.0, 50.0, 40, 0),
            false,
        ),
    ];
    let mut bits_differ = false;
    for (what, dims, s, transposed) in cases {
        let (p, g) = softmax_on_wgpu(&device, dims, s, transposed, false);
        let (p0, g0) = softmax_on_wgpu(&device, dims, s, transposed, true);
        let checks = [("probabilities", 1e-5), ("logits' gradient", 1e-4)];
        bits_differ |= agree(what, &checks, &[p.clone(), g], &[p0, g0]);
        // Not vacuous: every row sums to one.
        let cols = dims[3];
        for (r, row) in p.chunks(cols).enumerate() {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-4, "{what}: row {r} sums to {sum}");
        }
    }
    // Inference (no autodiff, as `colossus generate` runs) takes the kernel's forward alone.
    let (dims, s) = ([2, 2, 15, 9], scores(0.35, 30.0, 5, 4));
    let x = filled::<Wgpu, 4>(dims, 3, 20.0, &device);
    let p = floats(fused::capped_softmax(x.clone(), s));
    let p0 = floats(fused::plain_scope(|| fused::capped_softmax(x, s)));
    bits_differ |= agree("inference", &[("probabilities", 1e-5)], &[p], &[p0]);
    // The two paths round differently; bit-identical results everywhere would mean the kernel
    // never ran (say, the dispatch fell through to the plain path).
    assert!(
        bits_differ,
        "the kernel path gave the plain path's bits in every case"
    );
}

/// The probabilities and the logits' gradient of `Σ softmax_rows(x)·w` on backend `B`, and how
/// many nodes of our own the forward recorded.
fn router_softmax_on<B: AutodiffBackend>(device: &B::Device, dims: [usize; 2]) -> ([Vec<f32>; 2], usize) {
    let x = filled::<B, 2>(dims, 7, 12.0, device).require_grad();
    let before = fused::recorded();
    let p = fused::softmax_rows(x.clone());
    let recorded = fused::recorded() - before;
    let w = filled::<B, 2>(dims, 8, 1.0, device);
    let grads = (p.clone() * w).sum().backward();
    let g = x.grad(&grads).expect("the logits are a leaf");
    ([floats(p), floats(g)], recorded)
}

/// Issue 7: the router's softmax on a GPU is the attention softmax's kernel pair, uncapped and
/// not causal (`fused::softmax_rows`), with fewer threads per row for short rows
/// (`backend/gpu.rs` softmax_block): against burn's softmax on the same device and the CPU's,
/// forward and backward. Shapes: the router's 8 experts (a 32-thread cube), 40 columns (64
/// threads), 300 (128 threads striding), and 70 000 rows, past one grid axis.
#[test]
fn issue_7_router_softmax_kernel_matches_burns_softmax() {
    let Some(device) = wgpu() else { return };
    let mut bits_differ = false;
    for dims in [[1000, 8], [33, 40], [5, 300], [70_000, 8]] {
        let (got, recorded) = router_softmax_on::<WgpuTrain>(&device, dims);
        assert_eq!(recorded, 1, "{dims:?}: the kernel's node did not run");
        let (plain, _) = fused::plain_scope(|| router_softmax_on::<WgpuTrain>(&device, dims));
        let (cpu, cpu_recorded) = router_softmax_on::<CpuTrain>(&Default::default(), dims);
        assert_eq!(cpu_recorded, 0, "{dims:?}: the CPU keeps burn's softmax");
        let checks = [("probabilities", 1e-5), ("logits' gradient", 1e-4)];
        bits_differ |= agree(
            &format!("router softmax {dims:?} vs burn's on wgpu"),
            &checks,
            &got,
            &plain,
        );
        agree(
            &format!("router softmax {dims:?} vs the CPU"),
            &checks,
            &got,
            &cpu,
        );
        for (r, row) in got[0].chunks(dims[1]).enumerate() {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "{dims:?}: row {r} sums to {sum}");
        }
    }
    // Inference (no autodiff) takes the kernel's forward alone.
    let x = filled::<Wgpu, 2>([300, 8], 7, 12.0, &device);
    let p = floats(fused::softmax_rows(x.clone()));
    let p0 = floats(fused::plain_scope(|| fused::softmax_rows(x)));
    bits_differ |= agree(
        "router softmax, inference",
        &[("probabilities", 1e-5)],
        &[p],
        &[p0],
    );
    assert!(
        bits_differ,
        "the kernel gave burn's bits in every case: did it run?"
    );
}

/// Issue 7: on wgpu the MoE moves its rows with gathers whose gradient is a gather
/// (`model::rows`), not burn's `select_add`, whose cubecl kernel walks the rows serially: the
/// output and every gradient match the `select` path's bits on the same device, and the CPU's
/// within f32 rounding. Shapes as `tests/model.rs`'s CPU twin. The per-expert graph (the
/// grouped node off), where these gathers are.
#[test]
fn issue_7_moe_row_gathers_match_burns_select_on_wgpu() {
    use colossus::model::experts::grouped_scope;
    let Some(device) = wgpu() else { return };
    for (shape, stand_in) in [([18, 4, 2], false), ([18, 4, 3], false), ([3, 4, 2], true)] {
        let before = fused::recorded();
        let ours = grouped_scope(false, || {
            moe_outputs::<WgpuTrain>(&device, shape, stand_in, false)
        });
        assert!(
            fused::recorded() > before,
            "{shape:?}: the gathers did not run on wgpu"
        );
        let select = grouped_scope(false, || moe_outputs::<WgpuTrain>(&device, shape, stand_in, true));
        assert_eq!(ours, select, "{shape:?} stand-in {stand_in}");
        let cpu = moe_outputs::<CpuTrain>(&Default::default(), shape, stand_in, false);
        for (i, (a, b)) in ours.iter().zip(&cpu).enumerate() {
            assert_eq!(a.len(), b.len(), "{shape:?} output {i}");
            if !a.is_empty() {
                let d = rel_l2(b, a);
                assert!(d < 1e-5, "{shape:?} output {i}: wgpu vs CPU relative L2 {d}");
            }
        }
    }
}

/// Issue 7: on wgpu, where it is the default, the grouped-experts node (`model::experts`: one
/// autodiff node for every expert of a layer) against the per-expert graph on the same device,
/// in f32 and under f16 mixed precision (lavapipe has no bf16): the output and every gradient
/// within rounding (the GELU gate's derivative is written out there, not burn's autodiff of its
/// ops), and in f32 against the CPU's per-expert graph.
#[test]
fn issue_7_grouped_experts_node_matches_the_per_expert_graph_on_wgpu() {
    use colossus::model::{experts, experts::grouped_scope};
    let Some(device) = wgpu() else { return };
    for (p, tol) in [(Precision::F32, 1e-5), (Precision::F16, 2e-3)] {
        for (shape, stand_in) in [([18, 4, 2], false), ([18, 4, 3], false), ([3, 4, 2], true)] {
            let case = format!("{p:?} {shape:?} stand-in {stand_in}");
            let (before, packed) = (fused::recorded(), experts::packed());
            let grouped =
                precision::autocast(p, || moe_outputs::<WgpuTrain>(&device, shape, stand_in, false));
            assert_eq!(
                fused::recorded() - before,
                2,
                "{case}: the router's softmax, then one node for the layer's experts"
            );
            // Each expert with rows: at most 4, at least 1 (the stand-in routing sends every
            // token to the same experts).
            let used = experts::packed() - packed;
            assert!(
                (1..=4).contains(&used),
                "{case}: {used} experts ran with their up projections packed"
            );
            let packed = experts::packed();
            let per_expert = precision::autocast(p, || {
                grouped_scope(false, || {
                    moe_outputs::<WgpuTrain>(&device, shape, stand_in, false)
                })
            });
            assert_eq!(
                experts::packed(),
                packed,
                "{case}: the per-expert graph packs nothing"
            );
            let cpu = moe_outputs::<CpuTrain>(&Default::default(), shape, stand_in, false);
            for (i, (g, e)) in grouped.iter().zip(&per_expert).enumerate() {
                assert_eq!(
                    g.len(),
                    e.len(),
                    "{case}: tensor {i} (an expert without rows has no gradient)"
                );
                if g.is_empty() {
                    continue;
                }
                let d = rel_l2(e, g);
                assert!(
                    d < tol,
                    "{case}: tensor {i}, grouped vs per-expert relative L2 {d}"
                );
                if p == Precision::F32 {
                    let d = rel_l2(&cpu[i], g);
                    assert!(d < 1e-5, "{case}: tensor {i}, wgpu vs CPU relative L2 {d}");
                }
            }
        }
    }
}

/// Issue 7: the MoE combine's kernels (`model::combine`: `GpuOps::slot_sum` and
/// `GpuOps::combine_bwd`, one launch each, reading the experts' outputs where they lie) against
/// burn's composition (`fused::plain_scope`: stack, gather to slot order, weigh, sum) on wgpu:
/// the gate-weighted sum, its gradients for the grouped rows and the gates, and the input
/// gradient's per-token sum of each expert's two terms. Cases: top-2 of 4 experts; top-3 of 5;
/// 16 experts, whose 32 terms are more tensors than lavapipe takes a launch, so each pair is
/// added first; 40 000 tokens, whose 80 000 grouped rows are more cubes than a grid axis holds
/// (65 535), of 160 columns, more than a cube's 128 threads; and the experts' tensors in f16 (the
/// gates, the output and its gradient in f32), as under mixed precision.
#[test]
fn issue_7_moe_combine_kernels_match_the_plain_path_on_wgpu() {
    use colossus::backend::GpuOps;
    use colossus::model::{combine, rows};
    let Some(device) = wgpu() else { return };
    let args = <Wgpu as GpuOps>::tensor_args(&device);
    for (n, experts, k, d, half) in [
        (37, 4, 2, 24, DType::F32),
        (29, 5, 3, 16, DType::F32),
        (50, 16, 2, 8, DType::F32),
        (40_000, 8, 2, 160, DType::F32),
        (37, 4, 2, 24, DType::F16),
        (50, 16, 2, 8, DType::F16),
    ] {
        let case = format!("{n} tokens, top-{k} of {experts}, d = {d}, experts' tensors {half:?}");
        // k distinct experts per token (steps of 3 never wrap onto each other for these counts).
        let choice: Vec<i64> = (0..n * k)
            .map(|s| ((s / k * 7 + s % k * 3 + s / k / 5) % experts) as i64)
            .collect();
        let (order, start) = rows::group(&choice, experts).expect("experts below the count");
        let mut to_slots = vec![0i64; n * k];
        for (p, &s) in order.iter().enumerate() {
            to_slots[s as usize] = p as i64;
        }
        let used: Vec<usize> = (0..experts).filter(|&e| start[e + 1] > start[e]).collect();
        let part = |e: usize, salt: usize| {
            filled::<Wgpu, 2>([start[e + 1] - start[e], d], salt + e, 1.0, &device).cast(half)
        };
        let ys: Vec<_> = used.iter().map(|&e| part(e, 100)).collect();
        let pairs: Vec<_> = used.iter().map(|&e| vec![part(e, 200), part(e, 300)]).collect();
        let gates = filled::<Wgpu, 2>([n, k], 1, 1.0, &device);
        let dout = filled::<Wgpu, 2>([n, d], 2, 1.0, &device);
        let order = rows::ints::<Wgpu>(&order, &device);
        let to_slots = rows::ints::<Wgpu>(&to_slots, &device);
        if experts < 16 {
            assert!(
                2 * used.len() + 5 <= args,
                "{case}: the kernels' path ({args} tensors a launch)"
            );
        } else {
            assert!(
                2 * used.len() + 3 > args,
                "{case}: the pairs added first ({args} tensors a launch)"
            );
        }
        let run = || {
            let y = combine::weighted(&ys, &to_slots, gates.clone());
            let (dy, dgates) =
                combine::weighted_grads(&ys, [&order, &to_slots], gates.clone(), dout.clone(), half);
            let dx = combine::term_sum(pairs.clone(), &to_slots, k, DType::F32);
            [floats(y), floats(dy), floats(dgates), floats(dx)]
        };
        let (ours, plain) = (run(), fused::plain_scope(run));
        let names = ["output", "rows' gradient", "gates' gradient", "input gradient"];
        for ((name, a), b) in names.iter().zip(&ours).zip(&plain) {
            assert_eq!(a.len(), b.len(), "{case}: {name}");
            // The gates' gradient sums over d in a tree here, in burn's reduction there.
            let tol = if *name == "gates' gradient" { 1e-5 } else { 1e-6 };
            let diff = rel_l2(b, a);
            assert!(diff < tol, "{case}: {name}, kernels vs plain relative L2 {diff}");
            assert!(a.iter().any(|v| *v != 0.0), "{case}: {name} is all zeros");
        }
    }
}

/// The lookup of `ids` in a `[vocab, d]` table on wgpu and the table's gradient under a fixed
/// weighted-sum loss; with `plain`, burn's own lookup (gradient: `select_add`).
fn embedding_on_wgpu(device: &WgpuDevice, [vocab, d]: [usize; 2], ids: &[i64], plain: bool) -> [Vec<f32>; 2] {
    use colossus::model::embedding;
    let go = || {
        let n = ids.len();
        let w = filled::<WgpuTrain, 2>([vocab, d], 4, 1.0, device).require_grad();
        let ids = Tensor::<WgpuTrain, 2, Int>::from_data(TensorData::new(ids.to_vec(), [1, n]), device);
        let u = filled::<WgpuTrain, 3>([1, n, d], 5, 1.0, device);
        let y = embedding::lookup(w.clone(), ids);
        let grads = (y.clone() * u).sum().backward();
        [
            floats(y.inner()),
            floats(w.grad(&grads).expect("the table's gradient")),
        ]
    };
    if plain { fused::plain_scope(go) } else { go() }
}

/// Issue 7: the embedding's gradient as one cube per vocabulary row (`GpuOps::rows_sum`, fed by
/// a counting sort of the ids on the host) against burn's `select_add`, which walks every token
/// in one thread per column: the same sums in the same order, so the same bits. Cases: a token
/// repeated 300 times among others and unused rows; rows wider than the kernel's 128 threads;
/// a vocabulary of 70 000 rows, more than one grid axis holds (65 535).
#[test]
fn issue_7_embedding_gradient_kernel_matches_select_add() {
    let Some(device) = wgpu() else { return };
    let mixed: Vec<i64> = (0..500)
        .map(|i| if i % 5 < 3 { 7 } else { (i * 13 % 97) as i64 })
        .collect();
    let wide: Vec<i64> = (0..64).map(|i| (i * i % 11) as i64).collect();
    let far: Vec<i64> = (0..200)
        .map(|i| (i * 7919 % 70_000) as i64)
        .chain([69_999, 69_999])
        .collect();
    for (what, shape, ids) in [
        ("repeats", [100, 16], mixed),
        ("300 columns", [12, 300], wide),
        ("70 000 rows", [70_000, 4], far),
    ] {
        let before = fused::recorded();
        let ours = embedding_on_wgpu(&device, shape, &ids, false);
        assert!(
            fused::recorded() > before,
            "{what}: the kernel's node was not recorded"
        );
        let plain = embedding_on_wgpu(&device, shape, &ids, true);
        assert_eq!(ours, plain, "{what}");
        // Not vacuous: the repeated token's row gathers 300 positions' gradients.
        assert!(ours[1].iter().any(|&v| v != 0.0), "{what}: a zero gradient");
    }
}

/// Output and the gradients of x and w of `Σ rms_norm(x, w)·u` on wgpu, kernel or plain path.
fn rms_norm_on_wgpu<const D: usize>(device: &WgpuDevice, dims: [usize; D], plain: bool) -> [Vec<f32>; 3] {
    let d = dims[D - 1];
    let go = || {
        let x = filled::<WgpuTrain, D>(dims, 7, 3.0, device).require_grad();
        let w = filled::<WgpuTrain, 1>([d], 8, 1.5, device).require_grad();
        let y = fused::rms_norm(x.clone(), w.clone(), 1e-5);
        let u = filled::<WgpuTrain, D>(dims, 9, 1.0, device);
        let grads = (y.clone() * u).sum().backward();
        [
            floats(y),
            floats(x.grad(&grads).unwrap()),
            floats(w.grad(&grads).unwrap()),
        ]
    };
    if plain { fused::plain_scope(go) } else { go() }
}

/// Issue 7: the RMSNorm kernels (`backend/gpu.rs`) against the plain burn composition on wgpu:
/// the output and both gradients (dw from the backward kernel's partial sums and their column
/// sum), at widths under and over the kernel's 128 threads, with one row and several rows a
/// cube, and in inference.
#[test]
fn issue_7_gpu_rms_norm_kernel_matches_the_plain_path() {
    let Some(device) = wgpu() else { return };
    let mut bits_differ = false;
    let checks = [("output", 1e-5), ("dx", 1e-5), ("dw", 1e-5)];
    let mut check = |what: &str, got: [Vec<f32>; 3], want: [Vec<f32>; 3]| {
        bits_differ |= agree(what, &checks, &got, &want);
    };
    check(
        "[3, 7, 64]",
        rms_norm_on_wgpu(&device, [3, 7, 64], false),
        rms_norm_on_wgpu(&device, [3, 7, 64], true),
    );
    check(
        "[50, 300]",
        rms_norm_on_wgpu(&device, [50, 300], false),
        rms_norm_on_wgpu(&device, [50, 300], true),
    );
    // 5 000 rows: dw's partial sums take 3 rows a cube, the last cube 2.
    check(
        "[2, 2500, 200]",
        rms_norm_on_wgpu(&device, [2, 2500, 200], false),
        rms_norm_on_wgpu(&device, [2, 2500, 200], true),
    );
    let x = filled::<Wgpu, 2>([50, 96], 7, 3.0, &device);
    let w = filled::<Wgpu, 1>([96], 8, 1.5, &device);
    let y = floats(fused::rms_norm(x.clone(), w.clone(), 1e-5));
    let y0 = floats(fused::plain_scope(|| fused::rms_norm(x, w, 1e-5)));
    bits_differ |= agree("inference", &[("output", 1e-5)], &[y], &[y0]);
    assert!(
        bits_differ,
        "the kernel path gave the plain path's bits everywhere"
    );
}

/// Output and the gradients of x, w and h of `Σ (h + rms_norm(x, w))·u + Σ h·v` on wgpu (`h`
/// read twice, as the residual stream is by the next norm), kernel or plain path, and how many
/// nodes of our own the forward recorded.
fn rms_norm_residual_on_wgpu(device: &WgpuDevice, dims: [usize; 3], plain: bool) -> ([Vec<f32>; 4], usize) {
    let d = dims[2];
    let go = || {
        let x = filled::<WgpuTrain, 3>(dims, 7, 3.0, device).require_grad();
        let w = filled::<WgpuTrain, 1>([d], 8, 1.5, device).require_grad();
        let h = filled::<WgpuTrain, 3>(dims, 10, 2.0, device).require_grad();
        let before = fused::recorded();
        let y = fused::rms_norm_residual(h.clone(), x.clone(), w.clone(), 1e-5);
        let recorded = fused::recorded() - before;
        let u = filled::<WgpuTrain, 3>(dims, 9, 1.0, device);
        let v = filled::<WgpuTrain, 3>(dims, 11, 1.0, device);
        let grads = ((y.clone() * u).sum() + (h.clone() * v).sum()).backward();
        let got = [
            floats(y),
            floats(x.grad(&grads).unwrap()),
            floats(w.grad(&grads).unwrap()),
            floats(h.grad(&grads).unwrap()),
        ];
        (got, recorded)
    };
    if plain { fused::plain_scope(go) } else { go() }
}

/// Issue 7: the sandwich norm's output and its residual add in one kernel
/// (`fused::rms_norm_residual`) against the norm and the add on wgpu's plain path and on the
/// CPU: the sum, and the gradients of x, w and the residual (which joins the gradient of its
/// other use), at widths under and over the kernel's 128 threads, and in inference.
#[test]
fn issue_7_rms_norm_residual_kernel_matches_the_norm_and_the_add() {
    let Some(device) = wgpu() else { return };
    let checks = [("output", 1e-6), ("dx", 1e-5), ("dw", 1e-5), ("dh", 1e-7)];
    for dims in [[3, 7, 64], [2, 25, 300]] {
        let (got, recorded) = rms_norm_residual_on_wgpu(&device, dims, false);
        assert_eq!(recorded, 1, "{dims:?}: the kernel's node did not run");
        let (plain, recorded) = rms_norm_residual_on_wgpu(&device, dims, true);
        assert_eq!(recorded, 0, "{dims:?}: the plain path recorded a node");
        agree(&format!("{dims:?} vs the plain path"), &checks, &got, &plain);
        let cpu = {
            let c = Default::default();
            let (x, w, h) = (
                filled::<CpuTrain, 3>(dims, 7, 3.0, &c).require_grad(),
                filled::<CpuTrain, 1>([dims[2]], 8, 1.5, &c).require_grad(),
                filled::<CpuTrain, 3>(dims, 10, 2.0, &c).require_grad(),
            );
            let y = fused::rms_norm_residual(h.clone(), x.clone(), w.clone(), 1e-5);
            let (u, v) = (
                filled::<CpuTrain, 3>(dims, 9, 1.0, &c),
                filled::<CpuTrain, 3>(dims, 11, 1.0, &c),
            );
            let grads = ((y.clone() * u).sum() + (h.clone() * v).sum()).backward();
            [
                floats(y),
                floats(x.grad(&grads).unwrap()),
                floats(w.grad(&grads).unwrap()),
                floats(h.grad(&grads).unwrap()),
            ]
        };
        agree(&format!("{dims:?} vs the CPU"), &checks, &got, &cpu);
    }
    let x = filled::<Wgpu, 2>([50, 96], 7, 3.0, &device);
    let w = filled::<Wgpu, 1>([96], 8, 1.5, &device);
    let h = filled::<Wgpu, 2>([50, 96], 10, 2.0, &device);
    let y = floats(fused::rms_norm_residual(h.clone(), x.clone(), w.clone(), 1e-5));
    let y0 = floats(fused::plain_scope(|| fused::rms_norm_residual(h, x, w, 1e-5)));
    agree("inference", &[("output", 1e-6)], &[y], &[y0]);
}

/// `h + rms_norm(x, w)` with `x` in `dtype` holding values exact in `round` (`h`, `w` f32): the
/// output, x's gradient rounded to `round`, the gradients of w and h, and the inference output,
/// and how many nodes of our own the forward recorded.
fn half_norm_residual_on<B: AutodiffBackend>(
    device: &B::Device,
    dims: [usize; 3],
    dtype: DType,
    round: DType,
) -> ([Vec<f32>; 5], usize) {
    let x = filled::<B, 3>(dims, 7, 3.0, device)
        .cast(round)
        .cast(dtype)
        .require_grad();
    let w = filled::<B, 1>([dims[2]], 8, 1.5, device).require_grad();
    let h = filled::<B, 3>(dims, 10, 2.0, device).require_grad();
    let before = fused::recorded();
    let y = fused::rms_norm_residual(h.clone(), x.clone(), w.clone(), 1e-5);
    let recorded = fused::recorded() - before;
    assert_eq!(y.dtype(), DType::F32, "{dims:?}: the residual stream's dtype");
    let (u, v) = (
        filled::<B, 3>(dims, 9, 1.0, device),
        filled::<B, 3>(dims, 11, 1.0, device),
    );
    let grads = ((y.clone() * u).sum() + (h.clone() * v).sum()).backward();
    let dx = x.grad(&grads).expect("x's gradient");
    assert_eq!(dx.dtype(), dtype, "{dims:?}: x's gradient's dtype");
    let inference = fused::rms_norm_residual(h.clone().inner(), x.inner(), w.clone().inner(), 1e-5);
    let got = [
        floats(y),
        floats(dx.cast(round)),
        floats(w.grad(&grads).expect("w's gradient")),
        floats(h.grad(&grads).expect("h's gradient")),
        floats(inference),
    ];
    (got, recorded)
}

/// Issue 7: the sandwich norm on a half input. Under mixed precision attention's output stays in
/// the products' half type and the post-attention norm's kernels read it as it is, computing in
/// f32, and write its gradient in it. That must give the same bits, each way and at inference,
/// as widening it first and rounding its f32 gradient, which is what ran before (a cast each
/// way over `[tokens, d_model]`). The plain path agrees within f16's rounding. In f16: lavapipe
/// has no bf16.
#[test]
fn issue_7_rms_norm_residual_on_a_half_input_matches_widening_it_to_the_bit() {
    let Some(device) = wgpu() else { return };
    let (f16, f32) = (DType::F16, DType::F32);
    let names = ["output", "dx", "dw", "dh", "inference"];
    for dims in [[3, 7, 64], [2, 25, 300]] {
        let (half, recorded) = half_norm_residual_on::<WgpuTrain>(&device, dims, f16, f16);
        assert_eq!(recorded, 1, "{dims:?}: the kernel's node did not run on f16");
        let (widened, _) = half_norm_residual_on::<WgpuTrain>(&device, dims, f32, f16);
        assert_same_bits(&format!("{dims:?}: f16 x against f32"), &names, &half, &widened);
        let (plain, recorded) =
            fused::plain_scope(|| half_norm_residual_on::<WgpuTrain>(&device, dims, f16, f16));
        assert_eq!(recorded, 0, "{dims:?}: the plain path recorded a node");
        let checks = names.map(|n| (n, 1e-3));
        agree(
            &format!("f16 x {dims:?} vs the plain path"),
            &checks,
            &half,
            &plain,
        );
    }
}

/// Loss and the logits' gradient (under an upstream gradient of 3) of the mean cross-entropy
/// on backend `B`; under `fused::plain_scope`, the plain path.
fn cross_entropy_on<B: AutodiffBackend>(device: &B::Device, rows: usize, vocab: usize) -> [Vec<f32>; 2] {
    let x = filled::<B, 2>([rows, vocab], 11, 8.0, device).require_grad();
    let ids: Vec<i64> = (0..rows).map(|i| ((i * 7919) % vocab) as i64).collect();
    let targets = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [rows]), device);
    let loss = fused::cross_entropy(x.clone(), targets);
    let grads = loss.clone().mul_scalar(3.0).backward();
    [
        floats(loss),
        floats(x.grad(&grads).expect("the logits' gradient")),
    ]
}

/// Issue 7: the cross-entropy kernels (`backend/gpu.rs`) against the plain burn composition on
/// wgpu: the loss and the logits' gradient (under an upstream gradient of 3), for vocabularies
/// under and over the kernel's 128 threads, and in inference.
#[test]
fn issue_7_gpu_cross_entropy_kernel_matches_the_plain_path() {
    let Some(device) = wgpu() else { return };
    let mut bits_differ = false;
    for (rows, vocab) in [(37, 100), (64, 4096)] {
        let got = cross_entropy_on::<WgpuTrain>(&device, rows, vocab);
        let want = fused::plain_scope(|| cross_entropy_on::<WgpuTrain>(&device, rows, vocab));
        let what = format!("[{rows}, {vocab}]");
        bits_differ |= agree(&what, &[("loss", 1e-5), ("gradient", 1e-5)], &got, &want);
        // Each row's gradient sums to zero (softmax minus one-hot), times 3 / rows.
        for (r, row) in got[1].chunks(vocab).enumerate() {
            let sum: f32 = row.iter().sum();
            assert!(
                sum.abs() < 1e-5,
                "[{rows}, {vocab}]: row {r} of the gradient sums to {sum}"
            );
        }
        assert!(got[0][0] > 0.0, "a positive loss");
    }
    let x = filled::<Wgpu, 2>([20, 300], 12, 8.0, &device);
    let ids: Vec<i64> = (0..20).map(|i| (i * 31 % 300) as i64).collect();
    let targets = Tensor::<Wgpu, 1, Int>::from_data(TensorData::new(ids, [20]), &device);
    let loss = floats(fused::cross_entropy(x.clone(), targets.clone()));
    let loss0 = floats(fused::plain_scope(|| fused::cross_entropy(x, targets)));
    bits_differ |= agree("inference", &[("loss", 1e-5)], &[loss], &[loss0]);
    assert!(
        bits_differ,
        "the kernel path gave the plain path's bits everywhere"
    );
}

/// Issue 7: the GPU loss's mean over tokens is our own sum (`GpuOps::sum`), not burn's
/// reduction, which on lavapipe summed only the first 65 536 or 262 144 elements of many longer
/// vectors: 445 000 rows (a micro-batch of ~109 × 4 096 tokens) of a 5-word vocabulary against
/// the CPU's kernel, the loss and its gradient; the same bits on a second run.
#[test]
fn issue_7_gpu_loss_mean_is_right_past_burns_reduction_on_long_batches() {
    let Some(device) = wgpu() else { return };
    let (rows, vocab) = (445_000, 5);
    let got = cross_entropy_on::<WgpuTrain>(&device, rows, vocab);
    let again = cross_entropy_on::<WgpuTrain>(&device, rows, vocab);
    let cpu = cross_entropy_on::<CpuTrain>(&Default::default(), rows, vocab);
    let plain = fused::plain_scope(|| cross_entropy_on::<WgpuTrain>(&device, rows, vocab));
    println!(
        "loss {} (CPU {}; burn's composition on this device {})",
        got[0][0], cpu[0][0], plain[0][0]
    );
    // One cube's 256 units each add ~1 700 f32 values in turn (the CPU sums in f64): ~1e-5
    // relative is rounding; burn's reduction here was off by far more.
    agree(
        "loss over 445 000 rows vs the CPU",
        &[("loss", 5e-5), ("gradient", 1e-6)],
        &got,
        &cpu,
    );
    assert_eq!(
        got[0][0].to_bits(),
        again[0][0].to_bits(),
        "a second run's loss differs"
    );
}

/// The output and the gradients of q, k and v of `Σ attention(q, k, v)·w` on wgpu, with the
/// attention core on the flash kernel or on the composed path (matmuls around the softmax
/// kernel). `q: [b, n_kv, rep·t, hd]`, `k`, `v: [b, n_kv, t, hd]`, causal, no cache.
fn attention_on_wgpu(device: &WgpuDevice, dims: [usize; 5], s: AttnScores, flash: bool) -> [Vec<f32>; 4] {
    attention_with_backward(device, dims, s, flash, flash::BackwardKind::Auto)
}

/// `attention_on_wgpu` with the flash path's backward chosen as `backward` says.
fn attention_with_backward(
    device: &WgpuDevice,
    dims: [usize; 5],
    s: AttnScores,
    flash: bool,
    backward: flash::BackwardKind,
) -> [Vec<f32>; 4] {
    let [b, n_kv, rep, t, hd] = dims;
    let kind = if flash {
        AttentionKernel::Flash
    } else {
        AttentionKernel::Composed
    };
    flash::backward_scope(backward, || {
        flash::scope(kind, || {
            let q = filled::<WgpuTrain, 4>([b, n_kv, rep * t, hd], 1, 1.0, device).require_grad();
            let k = filled::<WgpuTrain, 4>([b, n_kv, t, hd], 2, 1.0, device).require_grad();
            let v = filled::<WgpuTrain, 4>([b, n_kv, t, hd], 3, 1.0, device).require_grad();
            let out = fused::attention(q.clone(), k.clone(), v.clone(), s);
            let w = filled::<WgpuTrain, 4>([b, n_kv, rep * t, hd], 4, 1.0, device);
            let grads = (out.clone() * w).sum().backward();
            let grad = |x: &Tensor<WgpuTrain, 4>| floats(x.grad(&grads).expect("a leaf"));
            [floats(out), grad(&q), grad(&k), grad(&v)]
        })
    })
}

/// Issue 7: the fused flash backward (`backend/flash_bwd.rs`: dq, dk and dv from tiles rebuilt
/// in shared memory, nothing `[rows, keys]`-sized written) against the composed path, with
/// grouped query heads summed into dk and dv, caps that bite, saturate or are off, and sequences
/// of several tiles (the last one partial). On lavapipe its products run one unit per output
/// element (no cooperative matrices); on a GPU with tensor cores the same kernels run them as
/// 16×16×16 fragments, and only that part is not checked here.
#[test]
fn issue_7_fused_flash_backward_matches_the_composed_path() {
    let Some(device) = wgpu() else { return };
    for (what, dims, s) in attention_cases() {
        let fused = flash::BackwardKind::Fused;
        let got = attention_with_backward(&device, dims, s, true, fused);
        assert_eq!(
            flash::backward_routine(),
            Some("fused/units"),
            "{what}: the fused backward ran"
        );
        let want = attention_on_wgpu(&device, dims, s, false);
        agree(what, &ATTENTION_TOLERANCES, &got, &want);
        // The same flash forward with the composed backward: the gradients must differ in their
        // bits (another summation order), or the fused kernel did not run.
        let composed = attention_with_backward(&device, dims, s, true, flash::BackwardKind::Composed);
        assert_eq!(flash::backward_routine(), Some("composed"));
        assert_eq!(got[0], composed[0], "{what}: one forward on both");
        assert!(
            got[1] != composed[1],
            "{what}: the fused dq has the composed bits"
        );
        // Determinism: no atomics, so a rerun gives the same bits.
        let again = attention_with_backward(&device, dims, s, true, fused);
        assert_eq!(got, again, "{what}: a rerun of the fused backward differs");
    }
    // Auto picks the fused kernel only with tensor cores, which lavapipe lacks.
    let dims = [1, 1, 1, 24, 16];
    attention_with_backward(
        &device,
        dims,
        causal_scores(4.0, 30.0, 24),
        true,
        flash::BackwardKind::Auto,
    );
    assert_eq!(flash::backward_routine(), Some("composed"));
}

/// Issue 7: the tensor-core variants of both flash kernels, which no GPU has run yet: the
/// forward's cmma routine (cubek's `blackbox_accelerated`, with the vendored soft cap and causal
/// block skipping) and the fused backward's fragment products, on f16 inputs against the
/// composed path in f32. A fragment loaded with the wrong layout, stride or offset gives errors of
/// order one; f16 rounding gives ~1e-3. Needs `--features vulkan` (kernels compiled to SPIR-V)
/// and a Vulkan device with f16 cooperative matrices: Mesa's lavapipe from 26 on has 8×8×8 ones
/// (docs/benchmarks.md, "Tensor cores without a GPU"); bookworm's 22.3, CI's, has none, so CI
/// does not build this test. With `COLOSSUS_REQUIRE_TENSOR_CORES` set, a device without them
/// fails the test instead of skipping it.
#[cfg(feature = "vulkan")]
#[test]
fn issue_7_tensor_core_flash_kernels_match_the_composed_path() {
    let Some(device) = wgpu() else { return };
    let required = std::env::var("COLOSSUS_REQUIRE_TENSOR_CORES").is_ok();
    // The forward's routine needs the sequence to be a multiple of its stage (4 planes × the
    // fragment's rows: 32 here, 64 on an H100), and falls back to one unit per row otherwise.
    let stage_case = (
        "rep 2, cap 30, t 64",
        [1, 2, 2, 64, 16],
        causal_scores(4.0, 30.0, 64),
    );
    for (what, dims, s) in [stage_case].into_iter().chain(attention_cases()) {
        let half = || {
            flash::kernel_dtype_scope(DType::F16, || {
                attention_with_backward(&device, dims, s, true, flash::BackwardKind::Auto)
            })
        };
        let got = half();
        let forward = if s.t % 64 == 0 {
            "blackbox_accelerated"
        } else {
            "unit"
        };
        let routines = (backend::flash_routine(), flash::backward_routine());
        if routines != (Some(forward), Some("fused/tensor-cores")) {
            let why = format!("{what}: the f16 flash kernels ran as {routines:?}");
            assert!(!required, "COLOSSUS_REQUIRE_TENSOR_CORES is set, but {why}");
            eprintln!(
                "SKIPPED tensor-core flash kernels: {why}; this Vulkan device has no f16 cooperative matrices"
            );
            return;
        }
        let want = attention_on_wgpu(&device, dims, s, false);
        agree(what, &HALF_TOLERANCES, &got, &want);
        // No atomics in either kernel: a rerun gives the same bits.
        assert_eq!(got, half(), "{what}: a rerun differs");
    }
}

/// Relative L2 allowed for f16 kernel inputs against the composed path in f32: the output, then
/// the gradients of q, k, v.
#[cfg(feature = "vulkan")]
const HALF_TOLERANCES: [(&str, f64); 4] = [
    ("output", 1e-2),
    ("q gradient", 1e-2),
    ("k gradient", 1e-2),
    ("v gradient", 1e-2),
];

/// Relative L2 allowed against the composed path: the output, then the gradients of q, k, v.
const ATTENTION_TOLERANCES: [(&str, f64); 4] = [
    ("output", 1e-5),
    ("q gradient", 1e-4),
    ("k gradient", 1e-4),
    ("v gradient", 1e-5),
];

/// The attention cores' scores: causal, no cache.
fn causal_scores(multiplier: f64, cap: f64, t: usize) -> AttnScores {
    AttnScores {
        multiplier,
        cap,
        t,
        past: 0,
    }
}

/// The attention tests' shapes `[batch, kv heads, query heads per kv head, t, head_dim]` and
/// scores: grouped heads, caps that bite, saturate or are off, and lengths that are not a
/// multiple of any kernel's tiles, one of them several of the fused backward's tiles long. One
/// head_dim throughout: each new one compiles another set of kernels, ~20-70 s apiece on
/// lavapipe.
fn attention_cases() -> [(&'static str, [usize; 5], AttnScores); 3] {
    [
        ("rep 2, cap 30", [2, 2, 2, 24, 16], causal_scores(4.0, 30.0, 24)),
        (
            "rep 4, cap 1.5 (saturated), t 70",
            [1, 2, 4, 70, 16],
            causal_scores(2.0, 1.5, 70),
        ),
        (
            "rep 1, no cap, t 37",
            [1, 1, 1, 37, 16],
            causal_scores(0.25, 0.0, 37),
        ),
    ]
}

/// Issue 7: the flash-attention kernel (`attention: flash`, `model::flash`: cubek's flash
/// kernel with Grok's soft cap, and a backward that recomputes the probabilities) against the
/// composed path on the same device, forward and backward, with grouped query heads, caps that
/// bite, saturate or are off, and sequence lengths that are not a multiple of the kernel's tiles.
/// On lavapipe the kernel that runs is the one-unit-per-row routine (no cooperative matrices);
/// the tensor-core routine shares its score, soft-cap and mask code.
#[test]
fn issue_7_flash_attention_matches_the_composed_path() {
    let Some(device) = wgpu() else { return };
    for (what, dims, s) in attention_cases() {
        let got = attention_on_wgpu(&device, dims, s, true);
        assert_eq!(
            backend::flash_routine(),
            Some("unit"),
            "{what}: the flash kernel ran (not the composed fallback)"
        );
        let want = attention_on_wgpu(&device, dims, s, false);
        let bits_differ = agree(what, &ATTENTION_TOLERANCES, &got, &want);
        // The forward is another kernel, summing in another order: identical bits would mean
        // the composed path ran on both sides.
        assert!(
            bits_differ && got[0] != want[0],
            "{what}: the flash output has the composed bits"
        );
    }
    // Inference (no autodiff, as a prompt's first pass in `colossus generate`): the kernel alone.
    let (dims, s) = ([1, 2, 2, 24, 16], causal_scores(4.0, 30.0, 24));
    let [b, n_kv, rep, t, hd] = dims;
    let run = |kind| {
        flash::scope(kind, || {
            let q = filled::<Wgpu, 4>([b, n_kv, rep * t, hd], 1, 1.0, &device);
            let k = filled::<Wgpu, 4>([b, n_kv, t, hd], 2, 1.0, &device);
            let v = filled::<Wgpu, 4>([b, n_kv, t, hd], 3, 1.0, &device);
            floats(fused::attention(q, k, v, s))
        })
    };
    let out = run(AttentionKernel::Flash);
    let out0 = run(AttentionKernel::Composed);
    assert!(agree("inference", &[("output", 1e-5)], &[out], &[out0]));
}

/// The output and both operands' gradients of `Σ wide::matmul_t_as(a, w, half)·g` on backend
/// `B` (`a · wᵀ`, the tied head's product).
fn wide_on<B: AutodiffBackend>(device: &B::Device, [m, k, n]: [usize; 3], half: FloatDType) -> [Vec<f32>; 3] {
    let a = filled::<B, 2>([m, k], 1, 2.0, device).require_grad();
    let w = filled::<B, 2>([n, k], 2, 2.0, device).require_grad();
    let out = wide::matmul_t_as(a.clone(), w.clone(), half);
    assert_eq!(out.dtype(), DType::F32, "the product comes back in f32");
    let g = filled::<B, 2>([m, n], 3, 1.0, device);
    let grads = (out.clone() * g).sum().backward();
    let grad = |x: &Tensor<B, 2>| floats(x.grad(&grads).expect("a leaf"));
    [floats(out), grad(&a), grad(&w)]
}

/// Issue 7: the output head's bf16 product on the GPU (`model::wide`: one cubek GEMM with half
/// operands and an f32 output, `GpuOps::matmul_f32_out`, registered in the fusion stream, and its
/// autodiff node) against the CPU backend's emulation (operands rounded, widened, multiplied in
/// f32), forward and backward. lavapipe has no bf16, so this runs the same kernels and node with
/// f16 operands; the production dtype, bf16, differs only in the rounding.
#[test]
fn issue_7_gpu_wide_matmul_matches_the_cpu_emulation() {
    let Some(device) = wgpu() else { return };
    assert!(
        <Wgpu as Backend>::supports_dtype(&device, DType::F16),
        "this wgpu device has no f16: the check needs another half type"
    );
    // Not multiples of the matmul tiles; k long enough that the sums' order matters.
    let dims = [37, 300, 45];
    let got = wide_on::<WgpuTrain>(&device, dims, FloatDType::F16);
    let want = wide_on::<CpuTrain>(&Default::default(), dims, FloatDType::F16);
    // Exact products of f16 values, summed in f32 in another order: rounding-level differences.
    let checks = [("output", 1e-6), ("a gradient", 1e-6), ("w gradient", 1e-6)];
    agree("wide matmul, f16 operands", &checks, &got, &want);
    // One row: the head's product when half-precision decoding feeds one token, a shape for
    // which burn's autotune may pick a vector kernel (`model::gemv`).
    for one_row in [[1, 300, 45], [1, 64, 512], [1, 33, 7]] {
        let got = wide_on::<WgpuTrain>(&device, one_row, FloatDType::F16);
        let want = wide_on::<CpuTrain>(&Default::default(), one_row, FloatDType::F16);
        agree(&format!("wide matmul {one_row:?}"), &checks, &got, &want);
    }
    // The plain path (tensor ops, `--plain-kernels`) leaves the upstream gradient unrounded: the
    // gradients above, which match the CPU node's rounded ones, came from the GPU node.
    let plain = fused::plain_scope(|| wide_on::<WgpuTrain>(&device, dims, FloatDType::F16));
    if cfg!(feature = "vulkan") {
        // Under SPIR-V the plain path's operands are not rounded: on lavapipe there,
        // `x.cast(F16).cast(F32)` read back unrounded (1.8e-4 relative L2 from the CPU's rounded
        // values, measured 2026-12-03), so its forward is the f32 product, ~1e-4 away.
        let forward = rel_l2(&plain[0], &got[0]);
        assert!(forward < 1e-3, "the forwards differ by {forward:e} relative L2");
    } else {
        assert_eq!(plain[0], got[0], "the same forward");
    }
    let rel = rel_l2(&plain[1], &got[1]);
    assert!(
        rel > 1e-5,
        "the GPU node did not run ({rel:e} from the plain path)"
    );
    // The operands were rounded: the plain f32 product is ~1e-4 away (f16 keeps 11 bits).
    let exact = {
        let a = filled::<Wgpu, 2>([dims[0], dims[1]], 1, 2.0, &device);
        let bt = filled::<Wgpu, 2>([dims[2], dims[1]], 2, 2.0, &device);
        floats(a.matmul(bt.transpose()))
    };
    let rel = rel_l2(&got[0], &exact);
    assert!(
        rel > 1e-5,
        "the GPU product did not round its operands ({rel:e} from f32)"
    );
}

/// `gelu_gate(a, b)` on backend `B` with autodiff, under the upstream gradient `u`: the output,
/// both gradients, and `fused::gelu_gate_grads` (the grouped experts node's backward: both
/// gradients and the gate's value) on the inner backend from the same values.
fn gelu_gate_on<B: AutodiffBackend>(device: &B::Device, dims: [usize; 2], dtype: DType) -> [Vec<f32>; 6] {
    // a spans where tanh saturates (|√(2/π)·(a + 0.044715a³)| > 9 beyond |a| ≈ 5).
    let a = filled::<B, 2>(dims, 1, 6.0, device).cast(dtype).require_grad();
    let b = filled::<B, 2>(dims, 2, 2.0, device).cast(dtype).require_grad();
    let u = filled::<B, 2>(dims, 3, 1.0, device).cast(dtype);
    let y = fused::gelu_gate(a.clone(), b.clone());
    let grads = (y.clone() * u.clone()).sum().backward();
    let (da, db, value) = fused::gelu_gate_grads(a.clone().inner(), b.clone().inner(), u.inner());
    [
        floats(y),
        floats(a.grad(&grads).expect("a's gradient")),
        floats(b.grad(&grads).expect("b's gradient")),
        floats(da),
        floats(db),
        floats(value),
    ]
}

/// Issue 7: the GELU gate's GPU kernels (`GpuOps::gelu_gate`, `gelu_gate_bwd`) against the
/// plain burn composition on wgpu and the CPU's kernels. Why kernels, when burn fuses the
/// gate alone into one: in the grouped experts node, whose experts run one after another, only
/// the first expert's gate of each layer was fused and the others ran as nine kernels each
/// (docs/benchmarks.md, "Launches per training step"). Shapes: a single element, a row count
/// that is not a multiple of the cube, and one past the grid's first axis (units loop). In f16
/// too, as the grouped experts node hands them its half-precision products: the kernels compute
/// in f32 and round once, as the plain path's widening, f32 gate and rounding back do.
#[test]
fn issue_7_gpu_gelu_gate_kernels_match_the_plain_path_and_the_cpu() {
    let Some(device) = wgpu() else { return };
    for dims in [[37, 300], [300, 301]] {
        let half = |plain| {
            let go = || gelu_gate_on::<WgpuTrain>(&device, dims, DType::F16);
            if plain { fused::plain_scope(go) } else { go() }
        };
        let before = fused::recorded();
        let got = half(false);
        assert!(
            fused::recorded() > before,
            "{dims:?}: the f16 gate's node did not run"
        );
        // One f16 rounding of nearly the same f32 values: at most a last-bit flip here and there.
        let tol = |what| (what, 1e-3);
        let checks = [
            "output",
            "a gradient",
            "b gradient",
            "gelu_gate_grads da",
            "gelu_gate_grads db",
            "gelu_gate_grads value",
        ];
        let checks = checks.map(tol);
        agree(
            &format!("f16 gelu gate {dims:?} vs the plain path"),
            &checks,
            &got,
            &half(true),
        );
    }
    for dims in [[1, 1], [37, 300], [4097, 4097]] {
        let got = gelu_gate_on::<WgpuTrain>(&device, dims, DType::F32);
        let plain = fused::plain_scope(|| gelu_gate_on::<WgpuTrain>(&device, dims, DType::F32));
        let cpu = gelu_gate_on::<CpuTrain>(&Default::default(), dims, DType::F32);
        // The kernel and burn's composition share the shader's tanh: 6.6e-8 relative L2 apart
        // at most (a gradient, [37, 300], lavapipe 2026-12-05).
        let checks = |tol| {
            [
                ("output", tol),
                ("a gradient", tol),
                ("b gradient", tol),
                ("gelu_gate_grads da", tol),
                ("gelu_gate_grads db", tol),
                ("gelu_gate_grads value", tol),
            ]
        };
        agree(
            &format!("gelu gate {dims:?} vs the plain path"),
            &checks(1e-6),
            &got,
            &plain,
        );
        // The backward's value is the forward's operations in the forward's order.
        let value = [got[5].clone()];
        agree(
            &format!("gate value {dims:?} vs the forward"),
            &[("value", 1e-7)],
            &value,
            &got[..1],
        );
        // The CPU's tanh is Rust's: 1.2e-6 from the shader's on the a gradient, whose tanh'
        // term (1 - t²) cancels where t → ±1 and so magnifies the last bits of t.
        let cpu_checks = checks(1e-5);
        agree(&format!("gelu gate {dims:?} vs the CPU"), &cpu_checks, &got, &cpu);
    }
}

/// Issue 7: the packed forms the grouped experts node runs on a GPU (`model::experts`, one
/// product for an expert's two up projections): the GELU gate's kernels reading a and b side by
/// side in one `[rows, 2f]` tensor (`GpuOps::gelu_gate` and `gelu_gate_bwd` without `b`, the
/// gradients written the same way) against the unpacked kernels, and `GpuOps::pack_up` against
/// burn's cast and concatenation. The same operations on the same elements: the same bits.
/// Shapes: one element a side; a width that is no multiple of the cube; and more elements than
/// the grid's first axis holds (units loop). In f32 and f16; `pack_up` from f32 to f16 and to
/// f32, with `w2` and without.
#[test]
fn issue_7_packed_gate_kernels_and_weight_packing_match_the_unpacked_path() {
    use burn::tensor::TensorPrimitive;
    use colossus::backend::GpuOps;
    type G = Wgpu;
    let Some(device) = wgpu() else { return };
    let prim = |t: Tensor<G, 2>| t.into_primitive().tensor();
    let tensor = |p| Tensor::<G, 2>::from_primitive(TensorPrimitive::Float(p));
    for (rows, f, dtype) in [
        (1, 1, DType::F32),
        (37, 300, DType::F32),
        (37, 300, DType::F16),
        // In f16: lavapipe allocates at most 128 MiB a buffer, and `ab` is 128.2 MiB in f32.
        (4097, 4097, DType::F16),
    ] {
        let case = format!("[{rows}, {f}] {dtype:?}");
        let a = filled::<G, 2>([rows, f], 1, 6.0, &device).cast(dtype);
        let b = filled::<G, 2>([rows, f], 2, 2.0, &device).cast(dtype);
        let g = filled::<G, 2>([rows, f], 3, 1.0, &device).cast(dtype);
        let ab = Tensor::cat(vec![a.clone(), b.clone()], 1); // [rows, 2f]
        let y = G::gelu_gate(prim(a.clone()), Some(prim(b.clone())));
        let packed = G::gelu_gate(prim(ab.clone()), None);
        assert_eq!(floats(tensor(packed)), floats(tensor(y)), "{case}: the gate");
        let (grads, value) = G::gelu_gate_bwd(prim(a), Some(prim(b)), prim(g.clone()), true);
        let (mut packed, packed_value) = G::gelu_gate_bwd(prim(ab), None, prim(g), true);
        assert_eq!(
            packed.len(),
            1,
            "{case}: one gradient tensor for the packed input"
        );
        let dab = tensor(packed.pop().expect("the packed gradient"));
        assert_eq!(
            dab.dims(),
            [rows, 2 * f],
            "{case}: the gradient in the input's layout"
        );
        let want = Tensor::cat(grads.into_iter().map(tensor).collect(), 1);
        let dab = floats(dab);
        assert!(dab.iter().any(|v| *v != 0.0), "{case}: the gradient is all zeros");
        assert_eq!(dab, floats(want), "{case}: [da | db]");
        let [value, packed_value] = [value, packed_value].map(|v| floats(tensor(v.expect("asked for it"))));
        assert_eq!(packed_value, value, "{case}: the backward's value");
    }
    for (d, f, to) in [
        (1, 1, DType::F16),
        (24, 300, DType::F16),
        (24, 300, DType::F32),
        (4097, 4097, DType::F16),
    ] {
        let case = format!("pack_up [{d}, {f}] to {to:?}");
        let w = [[d, f], [d, f], [f, d]]
            .into_iter()
            .enumerate()
            .map(|(i, dims)| filled::<G, 2>(dims, 10 + i, 1.0, &device))
            .collect::<Vec<_>>();
        let want = Tensor::cat(vec![w[0].clone().cast(to), w[1].clone().cast(to)], 1);
        for with_w2 in [true, false] {
            let w2 = with_w2.then(|| prim(w[2].clone()));
            let (w13, w2) = G::pack_up(prim(w[0].clone()), prim(w[1].clone()), w2, to);
            let w13 = tensor(w13);
            assert_eq!(w13.dtype(), to, "{case}: w13's dtype");
            assert_eq!(
                floats(w13),
                floats(want.clone()),
                "{case}: w1 and w3 side by side"
            );
            assert_eq!(w2.is_some(), with_w2, "{case}: w2 back only when given");
            if let Some(w2) = w2.map(tensor) {
                assert_eq!(w2.dtype(), to, "{case}: w2's dtype");
                assert_eq!(floats(w2), floats(w[2].clone().cast(to)), "{case}: w2");
            }
        }
    }
}

/// RoPE on backend `B` (positions 3.., the angles of a decoding step's offset) of `x: dims`
/// (`[batch, seq, heads, head_dim]`) under the upstream gradient `u` (`[batch, heads, seq,
/// head_dim]`, the output's layout), both in `dtype` and holding values that `round` can hold:
/// the output, the input's gradient, the inference path's output (no autodiff), each rounded to
/// `round`, and how many nodes of our own the autodiff forward recorded.
fn rope_on<B: AutodiffBackend>(
    device: &B::Device,
    dims: [usize; 4],
    dtype: DType,
    round: DType,
) -> ([Vec<f32>; 3], usize) {
    let [b, t, heads, hd] = dims;
    let input = |dims, salt, scale| filled::<B, 4>(dims, salt, scale, device).cast(round).cast(dtype);
    let x = input(dims, 1, 2.0).require_grad();
    let u = input([b, heads, t, hd], 2, 1.0);
    let tables = RopeTables::<B>::new(hd, 10_000.0, 3, t, device);
    let before = fused::recorded();
    let y = fused::rope(x.clone(), &tables);
    let recorded = fused::recorded() - before;
    assert_eq!(y.dtype(), dtype, "{dims:?}: the output's dtype");
    let grads = (y.clone() * u).sum().backward();
    let inner = RopeTables::<B::InnerBackend>::new(hd, 10_000.0, 3, t, device);
    let y_inner = fused::rope(x.clone().inner(), &inner);
    let dx = x.grad(&grads).expect("x's gradient");
    assert_eq!(dx.dtype(), dtype, "{dims:?}: the gradient's dtype");
    // The gradient and the inference output are the inner backend's tensors.
    let rounded = |y: Tensor<B::InnerBackend, 4>| floats(y.cast(round));
    ([rounded(y.inner()), rounded(dx), rounded(y_inner)], recorded)
}

/// The shapes RoPE is checked at: one pair; odd sequence and head counts; a head width of
/// `gpu-350m`. Not past the grid's first axis: that takes 65 535 · 256 pairs, a 134 MB f32
/// tensor over wgpu's 128 MiB buffer limit; the grid-stride loop is the GELU gate's, checked
/// past it above.
const ROPE_SHAPES: [[usize; 4]; 3] = [[1, 1, 1, 2], [2, 37, 3, 8], [4, 300, 16, 64]];

/// Issue 7: RoPE's GPU kernel (`GpuOps::rope`, one pass each way, transposing as it writes)
/// against the plain burn composition on wgpu (halves, negation, concatenation, products) and
/// the CPU's kernel. The outputs are compared in their logical order, so a kernel that wrote the
/// right values in the input's layout fails.
#[test]
fn issue_7_gpu_rope_kernel_matches_the_plain_path_and_the_cpu() {
    let Some(device) = wgpu() else { return };
    let f32 = DType::F32;
    for dims in ROPE_SHAPES {
        let (got, recorded) = rope_on::<WgpuTrain>(&device, dims, f32, f32);
        assert_eq!(recorded, 1, "{dims:?}: the GPU node did not run");
        let (plain, recorded) = fused::plain_scope(|| rope_on::<WgpuTrain>(&device, dims, f32, f32));
        assert_eq!(recorded, 0, "{dims:?}: the plain path recorded a node");
        let (cpu, _) = rope_on::<CpuTrain>(&Default::default(), dims, f32, f32);
        let checks = [("output", 1e-6), ("x gradient", 1e-6), ("inference", 1e-6)];
        agree(&format!("rope {dims:?} vs the plain path"), &checks, &got, &plain);
        agree(&format!("rope {dims:?} vs the CPU"), &checks, &got, &cpu);
    }
}

/// Issue 7: RoPE on half-precision q and k. Under mixed precision attention's projections stay
/// in the products' type (`precision::matmul_half`), and the kernel reads and writes that type
/// and rotates in f32 with the f32 tables. That must give the same bits, each way and on the
/// inference path, as widening to f32, the f32 kernel and rounding back, which is what the
/// forward and backward did before (an f32 copy of q and k and two casts around each). The
/// plain path (widening, burn's composition, rounding) agrees within f16's rounding. In f16:
/// lavapipe has no bf16.
#[test]
fn issue_7_rope_kernel_on_half_inputs_matches_widening_and_rounding_back() {
    let Some(device) = wgpu() else { return };
    let (f16, f32) = (DType::F16, DType::F32);
    for dims in ROPE_SHAPES {
        let (half, recorded) = rope_on::<WgpuTrain>(&device, dims, f16, f16);
        assert_eq!(recorded, 1, "{dims:?}: the GPU node did not run on f16");
        let (widened, _) = rope_on::<WgpuTrain>(&device, dims, f32, f16);
        let names = ["output", "x gradient", "inference"];
        let what = format!("{dims:?}: f16 against the f32 kernel's rounded");
        assert_same_bits(&what, &names, &half, &widened);
        let (plain, recorded) = fused::plain_scope(|| rope_on::<WgpuTrain>(&device, dims, f16, f16));
        assert_eq!(recorded, 0, "{dims:?}: the plain path recorded a node");
        let checks = [("output", 1e-3), ("x gradient", 1e-3), ("inference", 1e-3)];
        agree(
            &format!("f16 rope {dims:?} vs the plain path"),
            &checks,
            &half,
            &plain,
        );
    }
}

/// `capped_softmax` on logits of `dims` in `dtype`, holding values exact in `round`: the
/// probabilities, the logits' gradient of `Σ p·w` and the inference probabilities, each rounded
/// to `round`, and how many nodes of our own the forward recorded.
fn half_softmax_on<B: AutodiffBackend>(
    device: &B::Device,
    dims: [usize; 4],
    s: AttnScores,
    dtype: DType,
    round: DType,
) -> ([Vec<f32>; 3], usize) {
    let input = |salt, scale| filled::<B, 4>(dims, salt, scale, device).cast(round).cast(dtype);
    let x = input(3, 20.0).require_grad();
    let w = input(99, 1.0);
    let before = fused::recorded();
    let p = fused::capped_softmax(x.clone(), s);
    let recorded = fused::recorded() - before;
    assert_eq!(p.dtype(), dtype, "{dims:?}: the probabilities' dtype");
    let grads = (p.clone() * w).sum().backward();
    let dx = x.grad(&grads).expect("the logits are a leaf");
    assert_eq!(dx.dtype(), dtype, "{dims:?}: the gradient's dtype");
    let p_inner = fused::capped_softmax(x.inner(), s);
    let rounded = |y: Tensor<B::InnerBackend, 4>| floats(y.cast(round));
    ([rounded(p.inner()), rounded(dx), rounded(p_inner)], recorded)
}

/// Issue 7: the attention softmax on half logits. Under mixed precision the composed attention's
/// logits come from a half product and its probabilities feed one; the kernels read the half
/// logits, write the probabilities in f32 (the backward's state) and in half in one pass, and
/// the backward reads the half gradient and writes the logits' gradient in half. That must give
/// the same bits, each way and at inference, as widening the logits, the f32 kernels and
/// rounding back, which is what ran before (two casts of the `[rows, keys]` matrix each way).
/// The plain path agrees within f16's rounding. In f16: lavapipe has no bf16.
#[test]
fn issue_7_softmax_kernels_on_half_logits_match_widening_and_rounding_back() {
    let Some(device) = wgpu() else { return };
    let (f16, f32) = (DType::F16, DType::F32);
    let scores = |multiplier, cap, t, past| AttnScores {
        multiplier,
        cap,
        t,
        past,
    };
    let cases = [
        ([2, 2, 15, 9], scores(0.35, 30.0, 5, 4)),
        ([2, 2, 15, 9], scores(0.35, 0.0, 5, 4)),
        ([1, 2, 600, 300], scores(0.2, 30.0, 300, 0)),
        // Saturated caps: probabilities that underflow f16 (and f32).
        ([1, 2, 40, 40], scores(10.0, 50.0, 40, 0)),
    ];
    let names = ["probabilities", "logits' gradient", "inference"];
    for (dims, s) in cases {
        let (half, recorded) = half_softmax_on::<WgpuTrain>(&device, dims, s, f16, f16);
        assert_eq!(recorded, 1, "{dims:?}: the GPU node did not run on f16");
        let (widened, _) = half_softmax_on::<WgpuTrain>(&device, dims, s, f32, f16);
        let what = format!("{dims:?}: f16 against the f32 kernels' rounded");
        assert_same_bits(&what, &names, &half, &widened);
        let (plain, recorded) =
            fused::plain_scope(|| half_softmax_on::<WgpuTrain>(&device, dims, s, f16, f16));
        assert_eq!(recorded, 0, "{dims:?}: the plain path recorded a node");
        let checks = [
            ("probabilities", 1e-3),
            ("logits' gradient", 2e-3),
            ("inference", 1e-3),
        ];
        agree(
            &format!("f16 softmax {dims:?} vs the plain path"),
            &checks,
            &half,
            &plain,
        );
    }
}

/// Issue 7: forward only (evaluation, `generate`, the flash forward's fallback) the softmax kernel
/// on half logits writes the half probabilities and no f32 ones, which only the backward needs
/// (before, an f32 `[rows, keys]` write at every forward). Kept for the backward, the f32
/// probabilities round to the same half bits as the forward-only kernel writes; for f32 logits
/// the state is the probabilities themselves.
#[test]
fn issue_7_softmax_kernel_keeps_f32_probabilities_only_for_the_backward() {
    use burn::tensor::TensorPrimitive;
    use colossus::backend::GpuOps;
    type G = Wgpu;
    let Some(device) = wgpu() else { return };
    let dims = [2, 2, 15, 9];
    let op = colossus_kernels::CappedSoftmax {
        cols: 9,
        multiplier: 0.35,
        cap: 30.0,
        causal: Some((5, 4)),
    };
    let logits = |dtype: DType| {
        filled::<G, 4>(dims, 3, 20.0, &device)
            .cast(dtype)
            .into_primitive()
            .tensor()
    };
    let tensor = |p| Tensor::<G, 4>::from_primitive(TensorPrimitive::Float(p));
    let (f16, f32) = (DType::F16, DType::F32);

    let (probs, lse, state) = G::capped_softmax_fwd(logits(f16), op, false);
    assert!(
        state.is_none(),
        "forward only, f16: f32 probabilities were returned"
    );
    let probs = tensor(probs);
    let lse = Tensor::<G, 1>::from_primitive(TensorPrimitive::Float(lse));
    assert_eq!(
        (probs.dtype(), lse.dtype()),
        (f16, f32),
        "forward only, f16: dtypes"
    );
    let (kept_probs, _, kept) = G::capped_softmax_fwd(logits(f16), op, true);
    let kept = tensor(kept.expect("f16 with the state: the f32 probabilities"));
    assert_eq!(kept.dtype(), f32, "f16 with the state: the state's dtype");
    let probs = floats(probs);
    assert_eq!(
        probs,
        floats(tensor(kept_probs)),
        "f16: the half probabilities with and without the state"
    );
    assert_eq!(
        probs,
        floats(kept.clone().cast(f16)),
        "f16: the state rounded against the half probabilities"
    );
    // Each row sums to 1 (in f32, before rounding): the kernel ran.
    for (r, row) in floats(kept).chunks(dims[3]).enumerate() {
        let sum: f32 = row.iter().sum();
        assert!(
            (sum - 1.0).abs() < 1e-5,
            "f16 with the state: row {r} sums to {sum}"
        );
    }

    let (probs, _, state) = G::capped_softmax_fwd(logits(f32), op, true);
    let wide = floats(tensor(state.expect("f32 with the state: the probabilities")));
    assert_eq!(
        wide,
        floats(tensor(probs)),
        "f32: the state against the probabilities"
    );
    let (probs, _, state) = G::capped_softmax_fwd(logits(f32), op, false);
    assert!(state.is_none(), "forward only, f32: a state was returned");
    assert_eq!(
        floats(tensor(probs)),
        wide,
        "f32: the probabilities with and without the state"
    );
}

/// Issue 7: under mixed precision attention keeps q, k and v in the products' half type
/// (3b9b6b6: the projections' products as the GEMM writes them, RoPE's kernel reading and
/// writing them, the attention output half up to `o_proj`). That saves passes and changes no
/// value: the output and every gradient are the same bits as with q, k and v widened to f32
/// first, as before, with the composed and with the flash attention core. In f16: lavapipe has
/// no bf16, which runs the same code with the other half type.
#[test]
fn issue_7_attention_on_half_q_k_v_matches_widening_them_to_the_bit() {
    let Some(device) = wgpu() else { return };
    for kind in [AttentionKernel::Composed, AttentionKernel::Flash] {
        let half = attention_module_on::<WgpuTrain>(&device, Precision::F16, kind, false);
        let widened = attention_module_on::<WgpuTrain>(&device, Precision::F16, kind, true);
        let what = format!("{kind:?}: half q, k, v against widened");
        assert_same_bits(&what, &ATTENTION_RESULTS, &half, &widened);
    }
}

/// One AdamW update of parameters of lengths `ns` on backend `B` (an inner backend, as the
/// optimizer runs it) in one `fused::adamw` call: `[p, m, v]` of each after it, at step 3 of lr
/// 3e-4, and each parameter as a clone taken before the update still reads (in-place updates
/// must leave a shared buffer alone).
fn adamw_on<B: Backend>(
    device: &B::Device,
    ns: &[usize],
    decay: Option<f64>,
) -> (Vec<[Vec<f32>; 3]>, Vec<Vec<f32>>) {
    let s = adamw_scalars(3, 3e-4, decay);
    let sets: Vec<_> = ns
        .iter()
        .enumerate()
        .map(|(i, &n)| fused::AdamWTensors {
            p: filled::<B, 1>([n], 4 * i + 1, 1.0, device),
            g: filled::<B, 1>([n], 4 * i + 2, 0.1, device),
            m: filled::<B, 1>([n], 4 * i + 3, 0.01, device),
            v: filled::<B, 1>([n], 4 * i + 4, 1e-3, device).abs(),
        })
        .collect();
    // Every other parameter shared: the kernel must copy those, not write them.
    let kept: Vec<_> = sets.iter().step_by(2).map(|x| x.p.clone()).collect();
    let out = fused::adamw(s, sets)
        .into_iter()
        .map(|(p, m, v)| [floats(p), floats(m), floats(v)])
        .collect();
    (out, kept.into_iter().map(floats).collect())
}

/// Issue 7: the GPU AdamW kernel (`GpuOps::adamw`: up to 32 parameters a launch, in place, where
/// burn's fusion left a stray multiplication in most updates and then one launch per parameter
/// remained) against the CPU's pass and wgpu's tensor-op path: with and without weight decay;
/// one element; lengths that are not multiples of the cube; 40 parameters of mixed lengths (two
/// launches, a launch's rows of unlike lengths); one past the grid's first axis (65 535 cubes of
/// 256), where units loop. A shared parameter is copied, not updated in place.
#[test]
fn issue_7_gpu_adamw_kernel_matches_the_cpu_and_the_plain_path() {
    let Some(device) = wgpu() else { return };
    let many: Vec<usize> = (0..40)
        .map(|i| [1, 1024, 4099, 257][i % 4] * (1 + i / 4))
        .collect();
    for (ns, decay) in [
        (vec![1], None),
        (vec![1000, 3], Some(1.0 - 3e-4 * 0.1)),
        (vec![4099], None),
        (many, Some(1.0 - 3e-4 * 0.1)),
        (vec![65_535 * 256 + 1000, 5], Some(1.0 - 3e-4 * 0.1)),
    ] {
        let (got, kept) = adamw_on::<Wgpu>(&device, &ns, decay);
        let (cpu, _) = adamw_on::<Cpu>(&Default::default(), &ns, decay);
        let (plain, _) = fused::plain_scope(|| adamw_on::<Wgpu>(&device, &ns, decay));
        let mut bits = (0, 0);
        for (i, &n) in ns.iter().enumerate() {
            // The same f32 operations in the same order: at most a rounding apart.
            let checks = [("p", 1e-7), ("m", 1e-7), ("v", 1e-7)];
            let what = format!("adamw n={n} (parameter {i} of {}) decay={decay:?}", ns.len());
            bits.0 += agree(&format!("{what} vs the CPU"), &checks, &got[i], &cpu[i]) as usize;
            bits.1 += agree(&format!("{what} vs the plain path"), &checks, &got[i], &plain[i]) as usize;
        }
        for (j, p) in kept.iter().enumerate() {
            let before = floats(filled::<Cpu, 1>([ns[2 * j]], 8 * j + 1, 1.0, &Default::default()));
            assert_eq!(p, &before, "shared parameter {} was written in place", 2 * j);
        }
        println!(
            "adamw {} parameters: bits differ from the CPU in {}, from the plain path in {}",
            ns.len(),
            bits.0,
            bits.1
        );
    }
}

/// Issue 7: gradient clipping on the GPU backends sums the squares in a few multi-tensor launches
/// and rescales each gradient in place (`Grads::clip_kernels`); `--plain-kernels` concatenates
/// them into one vector (`Grads::clip_plain`). The norm and every clipped gradient of both
/// against the CPU's pass: 40 gradients (two launches of 32 at most), lengths that are not
/// multiples of the cube, clipping on and off; then the kernels alone with one more gradient
/// longer than the 128 cubes a tensor's squares get (units loop), 430 000 elements in all, past
/// what burn's reduction sums right on lavapipe (see the next test). A gradient shared elsewhere
/// is copied, not rescaled in place.
#[test]
fn issue_7_gradient_clipping_matches_the_cpu_on_wgpu() {
    use colossus::train::grads::Grads;
    let Some(device) = wgpu() else { return };
    fn sizes(long: bool) -> Vec<(usize, f32)> {
        let mut sizes = vec![(4096, 0.5), (10_001, 2.0), (3, 1.0), (20_000, 0.1)];
        sizes.extend((0..36).map(|i| (1 + 97 * i, 0.3)));
        if long {
            sizes.push((333_333, 0.01));
        }
        sizes
    }
    fn grads<B: Backend>(device: &B::Device, long: bool) -> Grads<B> {
        let tensors = sizes(long)
            .iter()
            .enumerate()
            .map(|(i, &(n, scale))| filled::<B, 1>([n], i + 1, scale, device))
            .collect();
        Grads { tensors }
    }
    let first = floats(grads::<Cpu>(&Default::default(), false).tensors.swap_remove(0));
    for (long, max_norm) in [(false, 1.0), (false, 1e9), (true, 1.0)] {
        let grads_wgpu = grads::<Wgpu>(&device, long);
        let shared = grads_wgpu.tensors[0].clone();
        let (got, got_norm) = grads_wgpu.clip_global_norm(max_norm);
        assert_eq!(floats(shared), first, "a shared gradient was rescaled in place");
        let (want, want_norm) = grads::<Cpu>(&Default::default(), long).clip_global_norm(max_norm);
        let mut runs = vec![("kernels", got, got_norm)];
        if !long {
            let (plain, norm) =
                fused::plain_scope(|| grads::<Wgpu>(&device, long).clip_global_norm(max_norm));
            runs.push(("plain", plain, norm));
        }
        let want: Vec<Vec<f32>> = want.tensors.into_iter().map(floats).collect();
        for (what, got, norm) in runs {
            // The GPU sums the squares in f32, the CPU in f64: 5e-8 apart here through the
            // kernels' partial sums, 8.5e-6 through burn's reduction of the vector (measured
            // 2026-12-05), and the clipped gradients with them.
            let rel = (norm - want_norm).abs() / want_norm;
            println!("{what}: norm {norm} against the CPU's {want_norm}: {rel:e} relative");
            assert!(rel < 2e-5, "{what}: norm {norm} against the CPU's {want_norm}");
            let got: Vec<Vec<f32>> = got.tensors.into_iter().map(floats).collect();
            if max_norm == 1.0 {
                let names: Vec<String> = (0..got.len()).map(|i| format!("g{i}")).collect();
                let checks: Vec<(&str, f64)> = names.iter().map(|n| (n.as_str(), 2e-5)).collect();
                agree(&format!("clip to 1 ({what}, long {long})"), &checks, &got, &want);
            } else {
                assert_eq!(got, want, "{what}: unclipped gradients come back as they were");
            }
        }
    }
}

/// Issue 7: the clipping norm's own reduction (`GpuOps::sum_squares`: partial sums, then one
/// cube's fixed tree) at lengths where burn's reduction on lavapipe returned the sum of only the
/// first 65 536 or 262 144 elements (measured 2026-12-05 with the tests' minimal autotune: its
/// `sum` of the squares of 445 000 values gave 7 864 for 13 350, `sum_dim` likewise), so the
/// norm must not go through it; and the same bits on a second run.
#[test]
fn issue_7_gpu_sum_of_squares_is_right_where_burns_reduction_was_not() {
    let Some(device) = wgpu() else { return };
    for n in [445_000, 524_289, 5_000_000] {
        let x = filled::<Wgpu, 1>([n], 3, 0.3, &device);
        let want: f64 = floats(x.clone()).iter().map(|v| (*v as f64) * (*v as f64)).sum();
        let got = fused::sum_squares(std::slice::from_ref(&x)).expect("the GPU kernel runs on wgpu");
        let again = fused::sum_squares(&[x]).expect("the GPU kernel runs on wgpu");
        let rel = (got - want).abs() / want;
        println!("n {n}: {got} against {want} summed in f64 on the host: {rel:e} relative");
        assert!(rel < 1e-5, "n {n}: {got} against {want}");
        assert_eq!(got.to_bits(), again.to_bits(), "n {n}: a second run differs");
    }
}

/// Issue 7: `colossus bench` and the training metrics report a GPU's memory from
/// `backend::device_memory`: it must count a tensor while it lives and stop counting it when it
/// is dropped, and a training step's forward must see at least its weights.
#[test]
fn issue_7_device_memory_counts_the_live_tensors() {
    assert_eq!(
        backend::device_memory::<CpuTrain>(&Default::default()),
        None,
        "CPU: none"
    );
    let Some(device) = wgpu() else { return };
    let sync = || <Wgpu as Backend>::sync(&device).unwrap();
    sync();
    let before = backend::device_memory::<Wgpu>(&device).expect("wgpu counts its memory");
    const N: usize = 1 << 20;
    let t = Tensor::<Wgpu, 1>::from_data(TensorData::new(vec![1.5f32; N], [N]), &device);
    sync();
    let alive = backend::device_memory::<Wgpu>(&device).unwrap();
    assert!(
        alive.in_use >= before.in_use + 4 * N as u64,
        "a 4 MiB tensor: {before:?} → {alive:?}"
    );
    assert!(alive.reserved >= alive.in_use, "{alive:?}");
    drop(t);
    sync();
    let after = backend::device_memory::<Wgpu>(&device).unwrap();
    assert!(
        after.in_use + 4 * N as u64 <= alive.in_use,
        "dropped: {alive:?} → {after:?}"
    );

    let dir = temp_dir("wgpu-memory");
    let cfg = tiny_config(&dir, &["train.micro_batch=4", "data.seq_len=32"]);
    let model = cfg.model.init::<WgpuTrain>(cfg.seed, &device);
    let sg = colossus::train::trainer::accumulate(&cfg, &model, &mut SkewedBatches(3), &device);
    let weights = 4 * colossus::model::params::count(&cfg.model).total as u64;
    let seen = sg.device_mem.expect("the forward samples the device");
    println!("device memory: {before:?} → {alive:?} → {after:?}; tiny forward {seen:?}");
    assert!(
        seen.in_use > weights,
        "forward: {seen:?}, f32 weights alone {weights} bytes"
    );
}

/// Issue 7: a GPU backend that is compiled in but cannot open the configured device is one clear
/// error naming the backend and the device (exit 2), not a panic from inside the backend. Device
/// 9 asks wgpu for a tenth discrete GPU, which no CI machine has.
#[test]
fn issue_7_an_unavailable_gpu_device_is_an_error_not_a_panic() {
    let dir = temp_dir("wgpu-missing-device");
    let out_dir = format!("train.out_dir={}", dir.display());
    refused(
        &[
            "train",
            "configs/tiny.yaml",
            "--set",
            "backend=wgpu",
            "--set",
            "device=9",
            "--set",
            &out_dir,
        ],
        &[
            "backend `wgpu`, device 9: cannot start on this machine",
            "--set backend=cpu",
        ],
    );
    assert!(
        std::fs::read_dir(&*dir).map_or(true, |mut d| d.next().is_none()),
        "nothing is written for a run that cannot start"
    );
}

/// `Σ (a · b) ⊙ g` for `a: dims_a` and `b: dims_b` on backend `B`, products in `p`
/// (`precision::matmul`, which takes one-row and one-column products through `gemv::matmul`), or
/// burn's own `matmul` of the operands in `p`'s dtype with `raw`: the output and both operands'
/// gradients. `a` comes out of an element-wise op, so its product is fused on a GPU backend.
fn product_on<B: AutodiffBackend, const D: usize>(
    device: &B::Device,
    [dims_a, dims_b]: [[usize; D]; 2],
    p: Precision,
    raw: bool,
) -> [Vec<f32>; 3] {
    let a = filled::<B, D>(dims_a, 1, 1.0, device).require_grad();
    let b = filled::<B, D>(dims_b, 2, 1.0, device).require_grad();
    let x = a.clone().mul_scalar(2.0).add_scalar(0.1);
    let out = if raw {
        let dtype = precision::half(p).map_or(DType::F32, DType::from);
        x.cast(dtype).matmul(b.clone().cast(dtype)).cast(DType::F32)
    } else {
        precision::autocast(p, || precision::matmul(x, b.clone()))
    };
    let g = filled::<B, D>(out.dims(), 3, 1.0, device);
    let grads = (out.clone() * g).sum().backward();
    let grad = |x: &Tensor<B, D>| floats(x.grad(&grads).expect("a leaf"));
    [floats(out), grad(&a), grad(&b)]
}

/// Issue 7: one-row and one-column products on wgpu, forward and backward, against the CPU:
/// burn 0.21's gemv kernels, which its autotune picks for these shapes, gave wrong values on
/// lavapipe for one column and an odd inner size (f32 and f16: 1.5 relative L2 at `[4, 5] · [5,
/// 1]`, tracel-ai/burn #5122) and for batched one-row f16 products (1.0 at `[2, 1, 64] · [2, 64,
/// 96]`). `gemv::matmul` pads such a row or column to two: every case here then agrees with the
/// CPU, the outputs to f32 rounding. burn's own product of the same operands is printed beside
/// it, so a burn that no longer needs the padding shows here.
#[test]
fn issue_7_one_row_and_one_column_products_match_the_cpu_on_wgpu() {
    let Some(device) = wgpu() else { return };
    fn check<const D: usize>(device: &WgpuDevice, dims: [[usize; D]; 2], p: Precision) {
        let want = product_on::<CpuTrain, D>(&Default::default(), dims, p, false);
        let got = product_on::<WgpuTrain, D>(device, dims, p, false);
        let raw = product_on::<WgpuTrain, D>(device, dims, p, true);
        println!(
            "{dims:?} {p:?}: burn's own product {:e} relative L2 from the CPU",
            rel_l2(&raw[0], &want[0])
        );
        let what = format!("{dims:?} {p:?}");
        // The outputs to f32 rounding in f16 as well. Under f16 the GPU may write a product's
        // f32 sum widened without the f16 rounding the CPU applies (its cast fused into the
        // product), so the gradients are held to one f16 rounding; the wrong kernels are off by
        // ~1.
        let tol = if p == Precision::F32 { 1e-6 } else { 1.5e-3 };
        let checks = [("output", 1e-6), ("lhs gradient", tol), ("rhs gradient", tol)];
        agree(&what, &checks, &got, &want);
    }
    for p in [Precision::F32, Precision::F16] {
        check(&device, [[4, 5], [5, 1]], p);
        check(&device, [[16, 33], [33, 1]], p);
        check(&device, [[2, 8, 33], [2, 33, 1]], p);
        check(&device, [[1, 64], [64, 96]], p);
        check(&device, [[2, 1, 64], [2, 64, 96]], p);
        check(&device, [[1, 2, 1, 64], [1, 2, 64, 96]], p);
    }
}

/// The last position's logits of each step of KV-cached decoding on `device`: `prompt` in one
/// pass, then each of `next` alone, as `colossus generate` feeds them.
fn decode_logits<B: Backend>(
    model: &Grok<B>,
    prompt: &[u32],
    next: &[u32],
    device: &B::Device,
) -> Vec<Vec<f32>> {
    let mut caches: Vec<Option<KvCache<B>>> = vec![None; model.layers.len()];
    let mut feed = prompt.to_vec();
    let mut out = Vec::new();
    for step in 0..=next.len() {
        let ids: Vec<i64> = feed.iter().map(|&t| t as i64).collect();
        let n = ids.len();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, n]), device);
        let logits = model.forward(ids, Some(caches.as_mut_slice())).logits; // [1, n, vocab]
        let vocab = logits.dims()[2];
        out.push(floats(logits.slice([0..1, n - 1..n, 0..vocab])));
        if let Some(&t) = next.get(step) {
            feed = vec![t];
        }
    }
    out
}

/// Issue 7: `colossus generate --backend wgpu` decodes one token at a time from the KV cache, so
/// every product has one row (the projections, the experts, the output head) and attention
/// reads a cache the prompt's pass wrote. Each step's logits on wgpu against the CPU's, from the
/// same weights and tokens: in f32, as `generate` runs, with the composed attention and with
/// `attention: flash` (its kernel takes the prompt's pass; decoding steps fall back); and under
/// f16 mixed precision, where every one-row product goes through `gemv::matmul`'s padding.
#[test]
fn issue_7_kv_cached_decoding_on_wgpu_matches_the_cpu() {
    let Some(device) = wgpu() else { return };
    let dir = temp_dir("wgpu-decode");
    let cfg = tiny_config(&dir, &[]);
    let prompt = [2u32, 53, 74, 67, 9];
    let next = [11u32, 200, 7, 7, 31, 150, 4, 88];
    for (p, kernel, tol) in [
        (Precision::F32, AttentionKernel::Composed, 1e-5),
        (Precision::F32, AttentionKernel::Flash, 1e-5),
        (Precision::F16, AttentionKernel::Composed, 1e-4),
    ] {
        let cpu = cfg
            .model
            .init::<Cpu>(cfg.seed, &Default::default())
            .with_precision(p);
        let gpu = cfg
            .model
            .init::<Wgpu>(cfg.seed, &device)
            .with_precision(p)
            .with_attention(kernel);
        let want = decode_logits(&cpu, &prompt, &next, &Default::default());
        let got = decode_logits(&gpu, &prompt, &next, &device);
        for (step, (g, w)) in got.iter().zip(&want).enumerate() {
            let rel = rel_l2(g, w);
            println!("{p:?} {kernel:?} step {step}: {rel:e} relative L2");
            assert!(
                rel < tol,
                "{p:?} {kernel:?}: step {step}'s logits differ by {rel:e} relative L2"
            );
        }
    }
}
