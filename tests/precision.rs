//! bf16 and f16 mixed precision (issue 7): the matmul rule against hand-computed cases, the YAML
//! keys and their defaults, and bf16 and f16 training against f32 on the CPU backend, which
//! emulates both exactly as tensor cores compute them (half inputs, f32 accumulation); f16's
//! loss scaling, its overflows and its exact resume. Also the other GPU numerics key, `attention`.

mod common;

use burn::tensor::{DType, Tensor, TensorData};
use colossus::backend::{Cpu, CpuTrain};
use colossus::config::{self, AttentionKernel, Precision};
use colossus::model::{Grok, precision};
use common::*;

fn matrix(values: Vec<f32>, shape: [usize; 2]) -> Tensor<Cpu, 2> {
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

#[test]
fn bf16_matmul_rounds_its_inputs_and_accumulates_in_f32() {
    // bf16 keeps 8 significant bits: 1 + 2⁻⁹ rounds to 1, while 1 + 2⁻⁶ survives, and so does
    // the bf16 sum 2 + 2⁻⁶ (the product is written in bf16, as a bf16 GEMM does, then widened).
    let a = || matrix(vec![1.0 + 2f32.powi(-9), 1.0 + 2f32.powi(-6)], [1, 2]);
    let b = || matrix(vec![1.0, 1.0], [2, 1]);
    let exact = floats(precision::matmul(a(), b()));
    assert_eq!(
        exact,
        vec![2.0 + 2f32.powi(-9) + 2f32.powi(-6)],
        "f32 outside autocast"
    );
    let mixed = floats(precision::autocast(Precision::Bf16, || {
        precision::matmul(a(), b())
    }));
    assert_eq!(mixed, vec![2.0 + 2f32.powi(-6)], "inputs rounded to bf16");
    // The output is rounded to bf16 too: 2 + 2⁻⁷ lies halfway between bf16 neighbours 2 and
    // 2 + 2⁻⁶, and ties go to the even one.
    let a = matrix(vec![1.0, 1.0 + 2f32.powi(-7)], [1, 2]);
    let out = precision::autocast(Precision::Bf16, || precision::matmul(a, b()));
    assert_eq!(floats(out), vec![2.0], "product rounded to bf16");

    // 1 + 256 · 2⁻⁸ = 2: an f32 accumulator gets there, a bf16 one would stay at 1 (each
    // 1 + 2⁻⁸ ties back to 1). Every input and the result are exact in bf16.
    let a = matrix(vec![1.0; 257], [1, 257]);
    let mut col = vec![2f32.powi(-8); 257];
    col[0] = 1.0;
    let b = matrix(col, [257, 1]);
    let out = precision::autocast(Precision::Bf16, || precision::matmul(a, b));
    assert_eq!(out.dtype(), DType::F32, "the product comes back as f32");
    assert_eq!(floats(out), vec![2.0], "accumulated in f32");
}

/// `precision: f16` is the same recipe with f16: 11 significant bits instead of 8, and a range
/// that stops at 65 504.
#[test]
fn f16_matmul_rounds_its_inputs_and_output_and_accumulates_in_f32() {
    let b = || matrix(vec![1.0, 1.0], [2, 1]);
    let f16 = |a: Tensor<Cpu, 2>, b: Tensor<Cpu, 2>| {
        let out = precision::autocast(Precision::F16, || precision::matmul(a, b));
        assert_eq!(out.dtype(), DType::F32, "the product comes back as f32");
        floats(out)
    };
    // 1 + 2⁻¹² rounds to 1 in f16, while 1 + 2⁻⁹ survives (it would not in bf16).
    let a = matrix(vec![1.0 + 2f32.powi(-12), 1.0 + 2f32.powi(-9)], [1, 2]);
    assert_eq!(f16(a, b()), vec![2.0 + 2f32.powi(-9)], "inputs rounded to f16");
    // The output is written in f16: 2 + 2⁻¹⁰ lies halfway between the f16 neighbours 2 and
    // 2 + 2⁻⁹, and ties go to the even one.
    let a = matrix(vec![1.0, 1.0 + 2f32.powi(-10)], [1, 2]);
    assert_eq!(f16(a, b()), vec![2.0], "product rounded to f16");
    // 1 + 2048 · 2⁻¹¹ = 2: an f32 accumulator gets there, an f16 one would stay at 1 (each
    // 1 + 2⁻¹¹ ties back to 1). Every input and the result are exact in f16.
    let a = matrix(vec![1.0; 2049], [1, 2049]);
    let mut col = vec![2f32.powi(-11); 2049];
    col[0] = 1.0;
    assert_eq!(f16(a, matrix(col, [2049, 1])), vec![2.0], "accumulated in f32");
    // f16's range: 300 · 300 = 90 000 is past its largest value, so the product written in f16
    // is infinite, where bf16 (f32's range) keeps it. This is why f16 needs loss scaling and
    // bf16 does not: the range, not the precision.
    let a = || matrix(vec![300.0], [1, 1]);
    assert_eq!(f16(a(), a()), vec![f32::INFINITY], "past f16's range");
    let bf16 = precision::autocast(Precision::Bf16, || precision::matmul(a(), a()));
    assert_eq!(floats(bf16), vec![90112.0], "bf16: 90 000 rounded to 8 bits");
}

/// `x` rounded to bf16 (round to nearest even), in f64.
fn bf16(x: f32) -> f64 {
    half::bf16::from_f32(x).to_f64()
}

/// `a [m, k] · b [k, n]` in f64.
fn product(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum::<f64>() as f32;
        }
    }
    out
}

/// `x [r, c]` transposed.
fn transposed(x: &[f64], r: usize, c: usize) -> Vec<f64> {
    (0..c * r).map(|i| x[(i % r) * c + i / r]).collect()
}

/// Issue 7: the output head's product under bf16 (`model::wide`). Its operands are rounded to
/// bf16 but, unlike autocast's products, the result is not: it accumulates and stays in f32. Its
/// backward rounds the upstream gradient to bf16 and multiplies by the rounded operands. Checked
/// against f64 arithmetic on values rounded by the `half` crate; the weight is `[n, k]`, as the
/// tied head's embedding matrix is.
#[test]
fn issue_7_head_product_rounds_its_operands_not_its_result() {
    // 1 + (1 + 2⁻⁷) = 2 + 2⁻⁷: autocast's bf16 product rounds it to 2 (the test above), the head's
    // keeps it.
    let a = matrix(vec![1.0, 1.0 + 2f32.powi(-7)], [1, 2]);
    let w = matrix(vec![1.0, 1.0], [1, 2]);
    let out = precision::autocast(Precision::Bf16, || precision::matmul_head(a, w.clone()));
    assert_eq!(out.dtype(), DType::F32);
    assert_eq!(
        floats(out),
        vec![2.0 + 2f32.powi(-7)],
        "the result is not rounded"
    );
    // The operands are: 1 + 2⁻⁹ rounds to 1, except with the head in f32 (`bench --f32-head`).
    let a = || matrix(vec![1.0 + 2f32.powi(-9), 1.0], [1, 2]);
    let head = |f32_head| {
        floats(precision::f32_head_scope(f32_head, || {
            precision::autocast(Precision::Bf16, || precision::matmul_head(a(), w.clone()))
        }))
    };
    assert_eq!(head(false), vec![2.0], "operands rounded to bf16");
    assert_eq!(head(true), vec![2.0 + 2f32.powi(-9)], "f32 head");

    let (m, k, n) = (5, 7, 3);
    // Values with full f32 mantissas, so every rounding shows.
    let vals = |len: usize, salt: f32| -> Vec<f32> {
        (0..len)
            .map(|i| ((i as f32 + salt) * 0.7548777).sin() * 1.37)
            .collect()
    };
    let (av, wv, gv) = (vals(m * k, 0.3), vals(n * k, 11.1), vals(m * n, 5.7));
    let device = Default::default();
    let leaf = |v: &[f32], shape: [usize; 2]| {
        Tensor::<CpuTrain, 2>::from_data(TensorData::new(v.to_vec(), shape), &device).require_grad()
    };
    let (a, w) = (leaf(&av, [m, k]), leaf(&wv, [n, k]));
    let g = Tensor::<CpuTrain, 2>::from_data(TensorData::new(gv.clone(), [m, n]), &device);
    let out = precision::autocast(Precision::Bf16, || precision::matmul_head(a.clone(), w.clone()));
    let grads = (out.clone() * g).sum().backward();
    let (da, dw) = (
        floats(a.grad(&grads).expect("a leaf")),
        floats(w.grad(&grads).expect("a leaf")),
    );

    let round = |v: &[f32]| v.iter().map(|&x| bf16(x)).collect::<Vec<f64>>();
    let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let (ra, rw, rg) = (round(&av), round(&wv), round(&gv));
    let close = |what: &str, got: &[f32], want: &[f32]| {
        let rel = rel_l2(got, want);
        assert!(rel < 1e-6, "{what}: {rel:e} relative L2 from the f64 reference");
    };
    // out = round(A) · round(W)ᵀ; dA = round(g) · round(W); dW = round(g)ᵀ · round(A).
    close(
        "output",
        &floats(out),
        &product(&ra, &transposed(&rw, n, k), m, k, n),
    );
    close("a's gradient", &da, &product(&rg, &rw, m, n, k));
    close(
        "w's gradient",
        &dw,
        &product(&transposed(&rg, m, n), &ra, n, m, k),
    );
    // And the gradient was rounded: with g as it came, dA would be ~1e-3 away.
    let unrounded = product(&wide(&gv), &rw, m, n, k);
    assert!(
        rel_l2(&da, &unrounded) > 1e-4,
        "the upstream gradient was not rounded to bf16"
    );
}

#[test]
fn precision_key_defaults_to_bf16_on_cuda_only_and_rejects_other_values() {
    let yaml = |extra: &str| format!("preset: tiny\nbackend: {extra}\n");
    let cfg = |text: &str| config::from_yaml(text, "p.yaml", &[]);
    assert_eq!(cfg(&yaml("cpu")).unwrap().precision, Precision::F32);
    assert_eq!(cfg(&yaml("wgpu")).unwrap().precision, Precision::F32);
    assert_eq!(cfg(&yaml("cuda")).unwrap().precision, Precision::Bf16);
    assert_eq!(
        cfg(&yaml("cuda\nprecision: f32")).unwrap().precision,
        Precision::F32
    );
    assert_eq!(
        cfg(&yaml("cpu\nprecision: bf16")).unwrap().precision,
        Precision::Bf16
    );
    let err = cfg(&yaml("cuda\nprecision: fp8")).unwrap_err().to_string();
    assert!(
        err.contains("p.yaml") && err.contains("fp8") && err.contains("bf16"),
        "error should name the file, the value and the choices: {err}"
    );
    // And as a `--set` override.
    let c = config::from_yaml(&yaml("cpu"), "p.yaml", &["precision=bf16".into()]).unwrap();
    assert_eq!(c.precision, Precision::Bf16);
}

/// Issue 7: `attention: composed | flash` parses from YAML and `--set`, defaults to composed,
/// names the file and the choices on a bad value, and changes nothing on the CPU backend, whose
/// blockwise attention kernel runs either way (the same losses to the bit).
#[test]
fn attention_key_defaults_to_composed_and_is_a_no_op_on_the_cpu() {
    let cfg = |text: &str, sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        config::from_yaml(text, "a.yaml", &sets)
    };
    let base = "preset: tiny\nbackend: cuda\n";
    assert_eq!(cfg(base, &[]).unwrap().attention, AttentionKernel::Composed);
    let text = format!("{base}attention: flash\n");
    assert_eq!(cfg(&text, &[]).unwrap().attention, AttentionKernel::Flash);
    let c = cfg(base, &["attention=flash"]).unwrap();
    assert_eq!(c.attention, AttentionKernel::Flash);
    let err = cfg(&format!("{base}attention: fused\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a.yaml") && err.contains("fused") && err.contains("flash"),
        "error should name the file, the value and the choices: {err}"
    );

    let dir = temp_dir("attention-cpu");
    let c = tiny_config(&dir, &["train.micro_batch=2", "data.seq_len=32"]);
    let device = Default::default();
    let losses = |kind| {
        let model = c.model.init::<CpuTrain>(c.seed, &device).with_attention(kind);
        train_steps(&c, model, &device, 5, 2).losses
    };
    assert_eq!(losses(AttentionKernel::Flash), losses(AttentionKernel::Composed));
}

/// Losses of `steps` optimizer steps on the tiny preset in precision `p`, the first step's
/// gradients, and whether every weight is still f32 at the end.
fn run(p: Precision, steps: usize, tag: &str) -> (Vec<f64>, Vec<Vec<f32>>, bool) {
    let dir = temp_dir(&format!("precision-{tag}-{}", p.name()));
    let cfg = tiny_config(&dir, &["train.micro_batch=4", "data.seq_len=32"]);
    let device = Default::default();
    let model: Grok<CpuTrain> = cfg.model.init(cfg.seed, &device).with_precision(p);
    let Steps {
        losses,
        first_grads,
        model,
    } = train_steps(&cfg, model, &device, 7, steps);
    assert_eq!(
        model.precision, p,
        "the optimizer steps keep the model's precision"
    );
    assert!(
        first_grads.iter().all(|g| g.dtype() == DType::F32),
        "gradients are f32"
    );
    let layer = &model.layers[0];
    let all_f32 = [
        model.embed_tokens.val().dtype(),
        layer.self_attn.q_proj.val().dtype(),
        layer.block_sparse_moe.experts[0].w1.val().dtype(),
        layer.pre_attn_norm.weight.val().dtype(),
    ]
    .iter()
    .all(|d| *d == DType::F32);
    (losses, first_grads.into_iter().map(floats).collect(), all_f32)
}

#[test]
fn issue_7_bf16_training_tracks_f32_on_the_tiny_preset() {
    const STEPS: usize = 25;
    let (f32_losses, f32_grads, _) = run(Precision::F32, STEPS, "curve");
    let (bf16_losses, bf16_grads, master_f32) = run(Precision::Bf16, STEPS, "curve");
    assert!(master_f32, "master weights stay f32 under bf16");
    assert_ne!(
        f32_losses, bf16_losses,
        "bf16 must actually change the arithmetic"
    );

    // First-step gradients: bf16 keeps 8 significant bits (relative rounding 2⁻⁹ ≈ 0.2%); a few
    // percent relative L2 error over the whole gradient is what rounding every matmul input gives.
    let rel = rel_l2(&f32_grads.concat(), &bf16_grads.concat());
    println!("first-step gradient relative L2 difference bf16 vs f32: {rel:.4}");
    assert!(rel < 0.05, "bf16 gradients too far from f32: relative L2 {rel}");

    // The loss curve (the loss falls by ~0.75 nats over the run): the mean step difference
    // within 0.005 nats and every step within 0.05. Measured: mean ≈ 0.0006, worst ≈ 0.0015 (the
    // runs drift apart slowly, and a 128-token batch's loss is noisy).
    let diffs: Vec<f64> = f32_losses
        .iter()
        .zip(&bf16_losses)
        .map(|(a, b)| (a - b).abs())
        .collect();
    let worst = diffs.iter().cloned().fold(0f64, f64::max);
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    println!("f32 losses {f32_losses:?}\nbf16 losses {bf16_losses:?}\nmean {mean:.5} worst {worst:.5}");
    assert!(
        mean < 0.005,
        "bf16 loss curve strays {mean} nats from f32 on average"
    );
    assert!(
        worst < 0.05,
        "bf16 loss curve strays {worst} nats from f32 at one step"
    );
    assert!(
        bf16_losses[STEPS - 1] < bf16_losses[0] - 0.5,
        "bf16 run did not learn: {bf16_losses:?}"
    );
}

#[test]
fn bf16_training_on_cpu_is_bit_deterministic() {
    let (a, _, _) = run(Precision::Bf16, 3, "det-a");
    let (b, _, _) = run(Precision::Bf16, 3, "det-b");
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b));
}

/// Train the tiny preset through the real loop (`train::train`: loss scaling, clipping,
/// checkpoints) in `dir` with `extra` keys.
fn train_loop(
    dir: &std::path::Path,
    extra: &[&str],
    stop_after: Option<usize>,
) -> colossus::train::TrainSummary {
    let mut sets = vec!["train.micro_batch=4", "data.seq_len=32"];
    sets.extend(extra);
    let cfg = tiny_config(dir, &sets);
    let opts = colossus::train::TrainOptions {
        quiet: true,
        stop_after,
        ..Default::default()
    };
    colossus::train::train::<CpuTrain>(&cfg, &opts, &Default::default()).unwrap()
}

/// `precision: f16` (dynamic loss scaling at its default start, 2¹⁶) against f32 through the
/// training loop, held to the tolerance bf16 is held to: f16 has 3 more significant bits, so
/// it should stay at least as close.
#[test]
fn issue_7_f16_training_tracks_f32_on_the_tiny_preset() {
    let steps = ["train.steps=25", "train.warmup_steps=5"];
    let dir = temp_dir("precision-loop-f32");
    let f32_run = train_loop(&dir, &steps, None);
    let dir = temp_dir("precision-loop-f16");
    let f16_run = train_loop(&dir, &[&steps[..], &["precision=f16"]].concat(), None);
    assert_eq!(f16_run.skipped_steps, 0, "2^16 does not overflow on this model");
    assert_ne!(f32_run.losses, f16_run.losses, "f16 must change the arithmetic");
    let diffs: Vec<f64> = (f32_run.losses.iter().zip(&f16_run.losses))
        .map(|(a, b)| (a - b).abs())
        .collect();
    let worst = diffs.iter().cloned().fold(0f64, f64::max);
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    println!(
        "f32 {:?}\nf16 {:?}\nmean {mean:.5} worst {worst:.5}",
        f32_run.losses, f16_run.losses
    );
    assert!(
        mean < 0.005,
        "f16 loss curve strays {mean} nats from f32 on average"
    );
    assert!(
        worst < 0.05,
        "f16 loss curve strays {worst} nats from f32 at one step"
    );
    assert!(
        f16_run.losses[24] < f16_run.losses[0] - 0.5,
        "f16 run did not learn"
    );
}

/// The loss scale's steps in a run's metrics.jsonl.
fn logged_scales(dir: &std::path::Path) -> Vec<f64> {
    let text = std::fs::read_to_string(dir.join("tiny/metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["loss_scale"]
                .as_f64()
                .expect("every f16 step logs its loss scale")
        })
        .collect()
}

/// Issue 7, f16's loss scaling: a scale far too large for f16 (2³⁰) overflows the backward;
/// each overflowing step is skipped and halves the scale, without counting towards
/// `train.max_nonfinite_steps` (2 here, fewer than the overflows), until the gradients fit;
/// then two clean steps in a row double it again, overflow, and so on. A run stopped halfway
/// and resumed continues with the same scale: the same losses, weights and state, bit for bit.
#[test]
fn issue_7_f16_loss_scale_backs_off_grows_and_resumes_exactly() {
    let keys = [
        "precision=f16",
        "train.steps=14",
        "train.warmup_steps=2",
        "train.loss_scale_init=1073741824",
        "train.loss_scale_growth_interval=2",
        "train.max_nonfinite_steps=2",
        "train.checkpoint_every=7",
    ];
    let dir_a = temp_dir("f16-scale-a");
    let full = train_loop(&dir_a, &keys, None);
    let scales = logged_scales(&dir_a);
    println!("losses {:?}\nscales {scales:?}", full.losses);
    assert_eq!(scales[0], 2f64.powi(30));
    let halvings = scales.windows(2).filter(|w| w[1] == w[0] / 2.0).count();
    let doublings = scales.windows(2).filter(|w| w[1] == w[0] * 2.0).count();
    assert!(
        halvings > 2,
        "more overflows than max_nonfinite_steps: {scales:?}"
    );
    assert!(doublings >= 1, "two clean steps double the scale: {scales:?}");
    assert_eq!(full.skipped_steps, halvings, "each overflow skips its step");
    assert!(
        full.losses.iter().all(|l| l.is_finite()),
        "the loss itself never overflowed"
    );
    assert!(
        full.losses[13] < full.losses[0],
        "the run learned between the overflows"
    );

    let dir_b = temp_dir("f16-scale-b");
    let first = train_loop(&dir_b, &keys, Some(7));
    let stopped = first.checkpoint.unwrap();
    let saved = colossus::checkpoint::state::read_state(&stopped).unwrap();
    let scale = saved.loss_scale.expect("an f16 checkpoint holds its loss scale");
    assert_eq!(2f64.powi(scale.log2), scales[7], "the scale step 8 starts with");
    let described = colossus::checkpoint::inspect::describe(&stopped, false).unwrap();
    assert!(
        described.contains(&format!("f16 loss scale 2^{}", scale.log2)),
        "`colossus inspect` shows the scale: {described}"
    );
    let second = train_loop(&dir_b, &[&keys[..], &["train.resume=auto"]].concat(), None);
    let joined: Vec<u64> = (first.losses.iter().chain(&second.losses))
        .map(|l| l.to_bits())
        .collect();
    assert_eq!(
        joined,
        full.losses.iter().map(|l| l.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(
        logged_scales(&dir_b),
        scales,
        "metrics.jsonl continues across the resume"
    );
    let (a, b) = (full.checkpoint.unwrap(), second.checkpoint.unwrap());
    let file = colossus::checkpoint::WEIGHTS_FILE;
    assert_eq!(tensor_bits(&a.join(file)), tensor_bits(&b.join(file)));
    let read = colossus::checkpoint::state::read_state;
    assert_eq!(read(&a).unwrap(), read(&b).unwrap());
}

#[test]
fn f16_keys_parse_and_a_loss_scale_that_is_no_power_of_two_is_refused() {
    let cfg = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        config::from_yaml("preset: tiny\n", "f.yaml", &sets)
    };
    let c = cfg(&["precision=f16"]).unwrap();
    assert_eq!(c.precision, Precision::F16);
    assert_eq!(
        (c.train.loss_scale_init, c.train.loss_scale_growth_interval),
        (65536.0, 2000)
    );
    for bad in ["1000", "0.5", "0", "8589934592"] {
        let err = cfg(&[&format!("train.loss_scale_init={bad}")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("f.yaml") && err.contains("train.loss_scale_init") && err.contains("power of two"),
            "{bad}: {err}"
        );
    }
    let err = cfg(&["train.loss_scale_growth_interval=0"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("train.loss_scale_growth_interval"), "{err}");
}

/// Issue 7: under mixed precision attention keeps q, k and v in the products' half type
/// (3b9b6b6); on the CPU backend RoPE widens them, rotates in f32 and rounds back, and the
/// attention products take them as they are. The output and every gradient must be the same
/// bits as with q, k and v widened to f32 first, as before, in bf16 and in f16. The reference
/// also rounds x once per product: x's gradient guards `model::shared_half`'s f32 sum too.
/// `tests/backends.rs` holds the GPU kernels to the same on wgpu.
#[test]
fn issue_7_attention_on_half_q_k_v_matches_widening_them_to_the_bit_on_the_cpu() {
    let device = Default::default();
    for p in [Precision::Bf16, Precision::F16] {
        let half = attention_module_on::<CpuTrain>(&device, p, AttentionKernel::Composed, false);
        let widened = attention_module_on::<CpuTrain>(&device, p, AttentionKernel::Composed, true);
        let what = format!("{p:?}: half q, k, v against widened");
        assert_same_bits(&what, &ATTENTION_RESULTS, &half, &widened);
    }
}
