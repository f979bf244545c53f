//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use colossus::config::{self, Config};
use colossus::data::{Batch, BatchSource};
use colossus::model::Grok;
use colossus::model::GrokConfig;
use colossus::train::optim::{AdamW, AdamWSettings};
use colossus::train::{params, trainer};

/// A small model whose every constant differs from its neighbour's default so a mix-up shows:
/// strong init (std 0.5) and a low soft cap (1.5) so the tanh cap is actually active.
pub fn reference_model() -> GrokConfig {
    GrokConfig {
        vocab_size: 300,
        d_model: 32,
        n_layers: 2,
        n_q_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        n_experts: 4,
        top_k: 2,
        widening: 1.0,
        ffn_size: config::ffn_size(32, 1.0),
        max_seq_len: 32,
        rope_theta: 10_000.0,
        attn_softcap: 1.5,
        attn_output_multiplier: 1.0 / 8f64.sqrt(),
        embedding_multiplier: 32f64.sqrt(),
        output_multiplier: 0.577_350_269_189_625_7,
        norm_eps: 1e-5,
        init_std: 0.5,
        aux_loss_coef: 0.0,
    }
}

pub const REFERENCE_SEED: u64 = 20_261_122;
pub const REFERENCE_IDS: [i64; 12] = [5, 17, 3, 60, 42, 42, 7, 0, 33, 12, 63, 28];

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grok_tiny")
}

/// The tiny preset, shrunk further for fast tests, writing into `out_dir`.
pub fn tiny_config(out_dir: &Path, extra: &[&str]) -> Config {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut sets = vec![
        format!("train.out_dir={}", out_dir.display()),
        format!("data.corpus=[{root}/data/shakespeare/sonnets.txt]"),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    config::load(&Path::new(root).join("configs/tiny.yaml"), &sets).unwrap()
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn temp_dir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("colossus-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// Every tensor of a safetensors file as raw bits, sorted by name: equal means bit-identical.
pub fn tensor_bits(path: &Path) -> Vec<(String, Vec<u32>)> {
    let mut t: Vec<(String, Vec<u32>)> = colossus::checkpoint::weights::read_safetensors(path)
        .unwrap()
        .tensors
        .into_iter()
        .map(|(k, (_, v))| (k, v.iter().map(|x| x.to_bits()).collect()))
        .collect();
    t.sort();
    t
}

/// A child's stderr lines as they come (the child must have been spawned with piped stderr).
pub fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader};
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Fixed pseudo-random batches of ids below 512 (the tiny vocabulary), so two runs being compared
/// see exactly the same tokens.
pub struct SkewedBatches(pub u64);
impl BatchSource for SkewedBatches {
    fn next_batch(&mut self, batch: usize, seq: usize) -> Batch {
        let mut ids = Vec::with_capacity(batch * (seq + 1));
        for _ in 0..batch * (seq + 1) {
            // SplitMix64: deterministic, and independent of the crate's own RNG.
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            // A skewed distribution (small ids far more likely) gives the model something to learn.
            let u = ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64;
            ids.push((u * u * u * 512.0) as i64);
        }
        let rows = |off: usize| -> Vec<i64> {
            (0..batch)
                .flat_map(|r| ids[r * (seq + 1) + off..r * (seq + 1) + off + seq].to_vec())
                .collect()
        };
        Batch {
            batch,
            seq,
            inputs: rows(0),
            targets: rows(1),
        }
    }
}

/// What `train_steps` did: each step's loss, the first step's gradients, and the trained model.
pub struct Steps<B: AutodiffBackend> {
    pub losses: Vec<f64>,
    pub first_grads: Vec<Tensor<B::InnerBackend, 1>>,
    pub model: Grok<B>,
}

/// `steps` optimizer steps of `model` (clipped, AdamW at `cfg`'s lr) on `SkewedBatches(seed)`:
/// two runs given the same arguments see the same tokens, whatever their backend or precision.
pub fn train_steps<B: AutodiffBackend>(
    cfg: &Config,
    mut model: Grok<B>,
    device: &B::Device,
    seed: u64,
    steps: usize,
) -> Steps<B> {
    let mut opt =
        AdamW::<B::InnerBackend>::new(AdamWSettings::from(&cfg.train), params::list(&model), device);
    let mut source = SkewedBatches(seed);
    let (mut losses, mut first_grads) = (Vec::new(), Vec::new());
    for step in 0..steps {
        let sg = trainer::accumulate(cfg, &model, &mut source, device);
        losses.push(sg.loss);
        if step == 0 {
            first_grads = sg.grads.tensors.clone();
        }
        let (g, _) = sg.grads.clip_global_norm(cfg.train.grad_clip);
        model = opt.step(model, g, cfg.train.lr);
    }
    Steps {
        losses,
        first_grads,
        model,
    }
}

/// A tensor's values as f32.
pub fn floats<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

/// ‖a − b‖ / ‖a‖ over all values.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut diff, mut norm) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        diff += ((x - y) as f64).powi(2);
        norm += (*x as f64).powi(2);
    }
    (diff / norm.max(1e-30)).sqrt()
}

/// Run the `colossus` binary from the repository root, with backtraces on so a panic shows.
pub fn colossus(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_colossus"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap()
}

/// The value of ` key=value` in a `colossus bench` output line (values hold no spaces).
pub fn line_field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("{key} in {line}"))
        + key.len()
        + 2;
    line[start..].split_whitespace().next().unwrap_or("")
}

/// Run `colossus args` that must be refused: exit 2, no panic or backtrace, and every string of
/// `must_contain` in stderr, which is returned.
pub fn refused(args: &[&str], must_contain: &[&str]) -> String {
    let out = colossus(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "args {args:?}: stderr {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "panic on {args:?}: {stderr}"
    );
    for s in must_contain {
        assert!(stderr.contains(s), "args {args:?}: expected {s:?} in {stderr}");
    }
    stderr
}

/// A small MoE layer's output and every gradient (input, router, each expert's w1, w3, w2) under
/// a fixed weighted-sum loss, on backend `B`: with `select`, burn's own row gather (`select`,
/// whose gradient is `select_add`), else the MoE's gathers (`model::rows`). With
/// `stand_in`, the experts' row counts are `stand_in_routing`'s first pattern instead of the
/// router's (so some experts get no rows).
pub fn moe_outputs<B: AutodiffBackend>(
    device: &B::Device,
    [n, experts, top_k]: [usize; 3],
    stand_in: bool,
    select: bool,
) -> Vec<Vec<f32>> {
    use colossus::model::{init, moe::MoeConfig, rows, stand_in_routing};
    let d = 16;
    let moe = MoeConfig {
        d_model: d,
        ffn_size: 24,
        n_experts: experts,
        top_k,
        init_std: 0.5,
    }
    .init::<B>(7, "moe", device);
    let x = init::normal::<B, 2>([n, d], 1.0, 8, "x", device)
        .val()
        .require_grad();
    let w = init::normal::<B, 2>([n, d], 1.0, 9, "w", device).val();
    let go = || {
        let (y, _) = moe.forward(x.clone().reshape([1, n, d]));
        let y = y.reshape([n, d]);
        let grads = (y.clone() * w.clone()).sum().backward();
        let mut out = vec![floats(y.inner()), floats(x.grad(&grads).expect("x's gradient"))];
        out.push(floats(
            moe.gate.val().grad(&grads).expect("the router's gradient"),
        ));
        for ex in &moe.experts {
            for p in [&ex.w1, &ex.w3, &ex.w2] {
                // An expert without rows has no gradient.
                out.push(p.val().grad(&grads).map(floats).unwrap_or_default());
            }
        }
        out
    };
    let go = || if select { rows::select_scope(go) } else { go() };
    if stand_in {
        stand_in_routing::scope(go)
    } else {
        go()
    }
}

/// Asserts that each result in `got` is the same bits as its counterpart in `want` and is not
/// all zeros; `names` names the results, `what` the comparison.
pub fn assert_same_bits(what: &str, names: &[&str], got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(
        (got.len(), want.len()),
        (names.len(), names.len()),
        "{what}: result counts"
    );
    for (name, (g, w)) in names.iter().zip(got.iter().zip(want)) {
        assert!(g.iter().any(|v| *v != 0.0), "{what}: {name} is all zeros");
        assert_eq!(g, w, "{what}: {name}");
    }
}

/// Attention's output and gradients (x's, then `q_proj`, `k_proj`, `v_proj` and `o_proj`'s)
/// under mixed precision `p` on backend `B` with the attention core `kind`, from fixed weights
/// and input: as `Attention::forward` computes it (q, k and v in the products' half type), or,
/// `widened`, with q, k and v widened to f32 as `precision::matmul` returns them and RoPE on
/// f32, as before 3b9b6b6, x rounded once per product, as before `model::shared_half`, and
/// the output widened to f32 by `o_proj`'s product (issue 7).
pub fn attention_module_on<B: AutodiffBackend>(
    device: &B::Device,
    p: colossus::config::Precision,
    kind: colossus::config::AttentionKernel,
    widened: bool,
) -> [Vec<f32>; 6] {
    use burn::module::Param;
    use burn::tensor::DType;
    use colossus::model::attention::AttentionConfig;
    use colossus::model::fused::{self, AttnScores};
    use colossus::model::rope::RopeTables;
    use colossus::model::{flash, init, precision};
    let (b, t, d, nq, nkv, hd) = (2, 37, 32, 4, 2, 8);
    let (multiplier, cap) = (0.35, 30.0);
    let cfg = AttentionConfig {
        d_model: d,
        n_q_heads: nq,
        n_kv_heads: nkv,
        head_dim: hd,
        output_multiplier: multiplier,
        softcap: cap,
        init_std: 0.3,
    };
    let attn = cfg.init::<B>(5, "attn", device);
    let x = init::normal::<B, 3>([b, t, d], 1.0, 6, "x", device)
        .val()
        .require_grad();
    let u = init::normal::<B, 3>([b, t, d], 1.0, 7, "u", device).val();
    let rope = RopeTables::<B>::new(hd, 10_000.0, 0, t, device);
    let y = flash::scope(kind, || {
        precision::autocast(p, || {
            if !widened {
                return attn.forward(x.clone(), &rope, None);
            }
            let x2 = x.clone().reshape([b * t, d]);
            let heads = |w: &Param<Tensor<B, 2>>, n: usize| {
                precision::matmul(x2.clone(), w.val()).reshape([b, t, n, hd])
            };
            let q = fused::rope(heads(&attn.q_proj, nq), &rope).reshape([b, nkv, nq / nkv * t, hd]);
            let k = fused::rope(heads(&attn.k_proj, nkv), &rope);
            let v = heads(&attn.v_proj, nkv).swap_dims(1, 2);
            assert_eq!(
                [q.dtype(), k.dtype(), v.dtype()],
                [DType::F32; 3],
                "widened q, k, v"
            );
            let s = AttnScores {
                multiplier,
                cap,
                t,
                past: 0,
            };
            let out = fused::attention(q, k, v, s)
                .reshape([b, nq, t, hd])
                .swap_dims(1, 2)
                .reshape([b * t, nq * hd]);
            precision::matmul(out, attn.o_proj.val()).reshape([b, t, d])
        })
    });
    // Under mixed precision the module's output stays in the half type (the post-attention
    // norm widens it as it reads it); widened here, whose backward rounds the gradient back as
    // the reference's widening does.
    let want = match (widened, precision::half(p)) {
        (false, Some(h)) => DType::from(h),
        _ => DType::F32,
    };
    assert_eq!(y.dtype(), want, "attention's output");
    let y = precision::restore(y, DType::F32);
    let grads = (y.clone() * u).sum().backward();
    let grad = |w: &Param<Tensor<B, 2>>| floats(w.val().grad(&grads).expect("a weight's gradient"));
    [
        floats(y),
        floats(x.grad(&grads).expect("x's gradient")),
        grad(&attn.q_proj),
        grad(&attn.k_proj),
        grad(&attn.v_proj),
        grad(&attn.o_proj),
    ]
}

/// The names of `attention_module_on`'s results, in order.
pub const ATTENTION_RESULTS: [&str; 6] = ["output", "x gradient", "q_proj", "k_proj", "v_proj", "o_proj"];

/// AdamW's scalars as `train::optim` computes them at `step` (1-based) for learning rate `lr`:
/// betas 0.9/0.95, eps 1e-8, both bias corrections.
pub fn adamw_scalars(step: i32, lr: f64, decay: Option<f64>) -> colossus::model::fused::AdamWScalars {
    colossus::model::fused::AdamWScalars {
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        bc2_sqrt: (1.0f64 - 0.95f64.powi(step)).sqrt(),
        step_size: lr / (1.0 - 0.9f64.powi(step)),
        decay,
    }
}

/// List checkpoint `dir`'s file `name` in its checksums.json as it is now, as a save would have
/// written it, for tests that edit a checkpoint on purpose and mean the edit to pass the check.
pub fn restamp_checksum(dir: &Path, name: &str) {
    use colossus::checkpoint::checksums::{self, Checksums};
    let sums_path = dir.join(checksums::CHECKSUMS_FILE);
    let mut sums: Checksums = serde_json::from_slice(&std::fs::read(&sums_path).unwrap()).unwrap();
    sums.insert(name, checksums::sum_file(&dir.join(name)).unwrap());
    std::fs::write(&sums_path, sums.to_json()).unwrap();
}
