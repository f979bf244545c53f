//! Model numerics against independent math: a PyTorch reference (fixture) and two code paths
//! that must agree (cached vs full decoding, routed vs dense MoE). Finite differences are in tests/gradients.rs.

mod common;

use std::collections::HashMap;

use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use colossus::backend::Cpu;
use colossus::checkpoint::{hf, weights};
use colossus::model::Grok;
use colossus::train::{loss::cross_entropy, params};
use common::*;

fn ids<B: burn::tensor::backend::Backend>(values: &[i64], device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [1, values.len()]), device)
}

/// Writes the inputs of the reference fixture; run by hand, then tests/fixtures/make_reference.py.
#[test]
#[ignore = "regenerates tests/fixtures/grok_tiny; needs the Python step afterwards"]
fn write_reference_inputs() {
    let cfg = reference_model();
    let device = Default::default();
    let model: Grok<Cpu> = cfg.init(REFERENCE_SEED, &device);
    let params = params::list(&model);
    let values = weights::snapshot(&model);
    let named = hf::to_hf(&params, values);
    let (infos, data): (Vec<_>, Vec<_>) = named.into_iter().unzip();
    let bytes = weights::to_safetensors(&infos, &data, HashMap::new()).unwrap();
    let dir = fixture_dir();
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    let config = hf::config_json(&cfg, 1, 2, 0);
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("ids.json"),
        serde_json::to_string(&REFERENCE_IDS.to_vec()).unwrap(),
    )
    .unwrap();
}

/// Our forward on the fixture's weights (imported through the Hugging Face layout) reproduces
/// the logits and loss that the independent PyTorch implementation computed.
#[test]
fn forward_matches_pytorch_reference() {
    let dir = fixture_dir();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let want: Vec<f64> = expected["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let want_loss = expected["loss"].as_f64().unwrap();

    let cfg = reference_model();
    let device = Default::default();
    let model: Grok<Cpu> = cfg.init(0, &device); // weights replaced below
    let params = params::list(&model);
    let file = weights::read_safetensors(&dir.join("model.safetensors")).unwrap();
    let tensors = hf::from_hf(&params, file.tensors);
    let file = weights::TensorFile {
        metadata: file.metadata,
        tensors,
    };
    let model = weights::load_into(model, &params, file, &dir).unwrap();

    let out = model.forward(ids::<Cpu>(&REFERENCE_IDS, &device), None);
    let got: Vec<f32> = out
        .logits
        .clone()
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap();
    assert_eq!(got.len(), want.len());
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max);
    let max_err = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (*g as f64 - w).abs())
        .fold(0.0, f64::max);
    assert!(
        max_err < 1e-4 * scale.max(1.0),
        "max |Δlogit| = {max_err} (scale {scale})"
    );

    let n = REFERENCE_IDS.len();
    let inputs = out.logits.slice([0..1, 0..n - 1]);
    let targets = ids::<Cpu>(&REFERENCE_IDS[1..], &device);
    let loss: f64 = cross_entropy(inputs, targets).into_scalar().elem();
    assert!(
        (loss - want_loss).abs() < 1e-5,
        "loss {loss} vs reference {want_loss}"
    );
    // The fixture is only a test if the model is far from uniform.
    assert!((want_loss - (300f64).ln()).abs() > 0.1);
}

/// Incremental decoding with the KV cache gives the same logits as one full forward.
#[test]
fn kv_cache_matches_full_forward() {
    let cfg = reference_model();
    let device = Default::default();
    let model: Grok<Cpu> = cfg.init(3, &device);
    let full: Vec<f32> = model
        .forward(ids::<Cpu>(&REFERENCE_IDS, &device), None)
        .logits
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap();
    let mut caches = vec![None; cfg.n_layers];
    let mut stepped = Vec::new();
    // A 5-token prompt, then one token at a time.
    let first = model.forward(ids::<Cpu>(&REFERENCE_IDS[..5], &device), Some(&mut caches));
    stepped.extend(
        first
            .logits
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap(),
    );
    for i in 5..REFERENCE_IDS.len() {
        let out = model.forward(ids::<Cpu>(&REFERENCE_IDS[i..i + 1], &device), Some(&mut caches));
        stepped.extend(out.logits.into_data().convert::<f32>().into_vec::<f32>().unwrap());
    }
    let max_err = full
        .iter()
        .zip(&stepped)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert_eq!(full.len(), stepped.len());
    assert!(max_err < 1e-4, "max |Δlogit| {max_err}");
}

/// Issue 7: the balancing loss's value is computed on the host from the probabilities the
/// routing reads back (`RouterStats::aux_value`), and its tensor only when a run trains on it;
/// the two must agree, per layer and averaged. The dense variant's is exactly 1 (one expert
/// with all the load and all the probability).
#[test]
fn issue_7_balancing_loss_value_from_the_host_matches_its_tensor() {
    let cfg = reference_model();
    let device = Default::default();
    let model: Grok<Cpu> = cfg.init(5, &device);
    let out = model.forward(ids::<Cpu>(&REFERENCE_IDS, &device), None);
    assert_eq!(out.routers.len(), 2);
    for (i, r) in out.routers.iter().enumerate() {
        let tensor = r.aux_loss().into_scalar().elem::<f64>();
        assert!(
            (tensor - r.aux_value).abs() < 1e-6 * tensor,
            "layer {i}: host {} against the tensor's {tensor}",
            r.aux_value
        );
        // Not balanced by accident: 12 tokens over 4 experts, a random router.
        assert!(
            r.aux_value > 1.0 && r.aux_value < 4.0,
            "layer {i}: {}",
            r.aux_value
        );
    }
    let mean = out.aux_loss().into_scalar().elem::<f64>();
    assert!(
        (mean - out.aux_value()).abs() < 1e-6 * mean,
        "{mean} against {}",
        out.aux_value()
    );

    let mut dense = reference_model();
    dense.n_experts = 1;
    dense.top_k = 1;
    let model: Grok<Cpu> = dense.init(5, &device);
    let out = model.forward(ids::<Cpu>(&REFERENCE_IDS, &device), None);
    assert_eq!(out.aux_value(), 1.0);
}

/// n_experts = 1 is the dense variant: every token goes through the single expert with gate 1.
#[test]
fn dense_variant_runs() {
    let mut cfg = reference_model();
    cfg.n_experts = 1;
    cfg.top_k = 1;
    let device = Default::default();
    let model: Grok<Cpu> = cfg.init(3, &device);
    let out = model.forward(ids::<Cpu>(&REFERENCE_IDS, &device), None);
    assert_eq!(out.logits.dims(), [1, 12, 300]);
    assert_eq!(out.expert_load(), vec![vec![1.0]; 2]);
}

/// The config-only parameter list (used by export/import) matches the real module tree.
#[test]
fn param_list_from_config_matches_module() {
    let cfg = reference_model();
    let model: Grok<Cpu> = cfg.init(1, &Default::default());
    assert_eq!(params::list(&model), params::list_from_config(&cfg));
}

/// Issue 7: inside `stand_in_routing::scope` (how `bench --compile-only` runs, whose stand-in
/// device reads the router's choices back as zeros) the MoE routes by the made-up counts, one
/// pattern per router call, and outside it by its router again.
#[test]
fn stand_in_routing_sets_the_experts_rows() {
    use colossus::model::{moe::MoeConfig, stand_in_routing};
    let device = Default::default();
    let (n, e, k) = (64, 4, 2);
    let moe = MoeConfig {
        d_model: 8,
        ffn_size: 8,
        n_experts: e,
        top_k: k,
        init_std: 0.5,
    }
    .init::<Cpu>(7, "moe", &device);
    let x = colossus::model::init::normal::<Cpu, 2>([n, 8], 1.0, 8, "x", &device).val();
    let load = |call| -> Vec<f32> {
        let counts = stand_in_routing::counts(n, e, k, call);
        counts.iter().map(|&c| c as f32 / (n * k) as f32).collect()
    };
    let (first, second) = stand_in_routing::scope(|| {
        let run = || moe.forward(x.clone().reshape([1, n, 8])).1.load;
        (run(), run())
    });
    assert_eq!(first, load(0));
    assert_eq!(second, load(1));
    assert_ne!(first, second);
    let (_, routed) = moe.forward(x.reshape([1, n, 8]));
    assert_ne!(routed.load, first, "the router routes again outside the scope");
}

/// Issue 7: the routed MoE (each expert on its own tokens: gather → expert → scatter-add) equals
/// the dense definition (every expert on every token, weighted by the top-k mask of the router
/// probabilities), forward and in the gradients of the input and of every weight.
#[test]
fn routed_moe_matches_dense_reference() {
    use burn::tensor::activation::softmax;
    use colossus::backend::CpuTrain;
    use colossus::model::moe::MoeConfig;
    let device = Default::default();
    let moe = MoeConfig {
        d_model: 16,
        ffn_size: 24,
        n_experts: 4,
        top_k: 2,
        init_std: 0.5,
    }
    .init::<CpuTrain>(7, "moe", &device);
    let x = colossus::model::init::normal::<CpuTrain, 2>([2 * 9, 16], 1.0, 8, "x", &device).val();
    let x = x.require_grad();

    // Routed.
    let (routed, _) = moe.forward(x.clone().reshape([2, 9, 16]));
    let routed = routed.reshape([18, 16]);
    // Dense: all experts everywhere; gate = p_e where e is among the token's top-k, else 0.
    let probs = softmax(x.clone().matmul(moe.gate.val()), 1); // [n, E]
    // [n, 1]: the 2nd largest probability (topk has no autodiff; the mask needs none).
    let kth = Tensor::<CpuTrain, 2>::from_inner(probs.clone().inner().topk(2, 1).narrow(1, 1, 1));
    let mask = probs.clone().detach().greater_equal(kth).float(); // [n, E]
    let gates = probs * mask;
    let mut dense = Tensor::<CpuTrain, 2>::zeros([18, 16], &device);
    for (e, expert) in moe.experts.iter().enumerate() {
        dense = dense + expert.forward(x.clone()) * gates.clone().narrow(1, e, 1);
    }
    let max_diff =
        |a: Vec<f32>, b: Vec<f32>| a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
    let d = max_diff(floats(routed.clone().inner()), floats(dense.clone().inner()));
    assert!(d < 1e-5, "forward: max |routed − dense| = {d}");

    // The same weighted sum of outputs as loss on both paths.
    let w = colossus::model::init::normal::<CpuTrain, 2>([18, 16], 1.0, 9, "w", &device).val();
    let g_routed = (routed * w.clone()).sum().backward();
    let g_dense = (dense * w).sum().backward();
    let grad = |g: &<CpuTrain as burn::tensor::backend::AutodiffBackend>::Gradients,
                t: &Tensor<CpuTrain, 2>| floats(t.grad(g).unwrap());
    let d = max_diff(grad(&g_routed, &x), grad(&g_dense, &x));
    assert!(d < 1e-4, "input gradient: max diff {d}");
    let d = max_diff(grad(&g_routed, &moe.gate.val()), grad(&g_dense, &moe.gate.val()));
    assert!(d < 1e-4, "router gradient: max diff {d}");
    for (e, ex) in moe.experts.iter().enumerate() {
        for (name, p) in [("w1", &ex.w1), ("w3", &ex.w3), ("w2", &ex.w2)] {
            let d = max_diff(grad(&g_routed, &p.val()), grad(&g_dense, &p.val()));
            assert!(d < 1e-4, "expert {e} {name} gradient: max diff {d}");
        }
    }
}

/// Issue 7: the grouped-experts node (`model::experts`: every expert of a layer in one autodiff
/// node, whose backward writes each expert's input gradient into its rows of one tensor instead
/// of a whole `[n, d]` tensor per expert) against the per-expert graph with the same combine
/// (`gather_back_scope`), on the CPU, in f32 and under bf16 mixed precision: the output, the
/// router's and every expert weight's gradient to the bit (the same products on the same rows in
/// the same dtypes), the input gradient to f32 rounding (its terms meet the router's in another
/// order). An expert without rows gets no gradient on either path. `fused::recorded` shows the
/// node ran.
#[test]
fn issue_7_grouped_experts_node_matches_the_per_expert_graph() {
    use colossus::backend::CpuTrain;
    use colossus::config::Precision;
    use colossus::model::{experts::grouped_scope, fused, moe::gather_back_scope, precision};
    let device = Default::default();
    for p in [Precision::F32, Precision::Bf16, Precision::F16] {
        for (shape, stand_in) in [
            ([18, 4, 2], false),
            ([18, 4, 3], false),
            ([10, 2, 2], false),
            ([3, 4, 2], true),
        ] {
            let run = |f: &dyn Fn() -> Vec<Vec<f32>>| precision::autocast(p, f);
            let case = format!("{p:?} {shape:?} stand-in {stand_in}");
            let before = fused::recorded();
            let per_expert =
                run(&|| gather_back_scope(|| moe_outputs::<CpuTrain>(&device, shape, stand_in, false)));
            let per_expert_nodes = fused::recorded() - before;
            let before = fused::recorded();
            let grouped =
                run(&|| grouped_scope(true, || moe_outputs::<CpuTrain>(&device, shape, stand_in, false)));
            // One node for the layer; the per-expert path records its row gathers instead (one
            // per expert short of every token, and the outputs' gather back).
            assert_eq!(fused::recorded() - before, 1, "{case}: the grouped node");
            if shape[1] > shape[2] {
                assert!(per_expert_nodes > 1, "{case}: {per_expert_nodes} gathers");
            }
            assert_eq!(grouped.len(), per_expert.len());
            for (i, (g, e)) in grouped.iter().zip(&per_expert).enumerate() {
                if i == 1 {
                    let d = rel_l2(e, g);
                    assert!(d < 1e-6, "{case}: input gradient, relative L2 {d}");
                } else {
                    assert_eq!(
                        g, e,
                        "{case}: tensor {i} (0 output, 2 router, then w1, w3, w2 per expert)"
                    );
                }
            }
            if stand_in {
                assert!(grouped[3..].iter().any(Vec::is_empty), "an expert got no rows");
            }
            assert!(grouped.iter().flatten().all(|v| v.is_finite()));
        }
    }
}

/// Issue 7: the MoE's row gathers (`model::rows`, whose gradient is a gather: burn's `select_add`
/// is a serial scatter on a GPU) give burn's `select` path's output and gradients to the bit on
/// the CPU: every moved row is a copy or zeros. Both ways of bringing the experts' outputs back
/// are checked: the CPU's scatter-add, and the GPU backends' gather and sum (`gather_back_scope`),
/// which equals it to the bit for top-2 and to f32 rounding for top-3. Cases: the router's
/// top-2 of 4, top-3 of 4, every token to every expert (no gather: 2 of 2), and the stand-in's
/// made-up counts over 3 tokens (rows 3, 2, 1 and 0: one expert takes every token, one none).
#[test]
fn issue_7_moe_row_gathers_match_burns_select_to_the_bit() {
    use colossus::backend::CpuTrain;
    use colossus::model::moe::gather_back_scope;
    let device = Default::default();
    for (shape, stand_in) in [
        ([18, 4, 2], false),
        ([18, 4, 3], false),
        ([10, 2, 2], false),
        ([3, 4, 2], true),
    ] {
        let ours = moe_outputs::<CpuTrain>(&device, shape, stand_in, false);
        let select = moe_outputs::<CpuTrain>(&device, shape, stand_in, true);
        assert_eq!(ours, select, "{shape:?} stand-in {stand_in}");
        let back = gather_back_scope(|| moe_outputs::<CpuTrain>(&device, shape, stand_in, false));
        let back_select = gather_back_scope(|| moe_outputs::<CpuTrain>(&device, shape, stand_in, true));
        assert_eq!(back, back_select, "{shape:?} stand-in {stand_in}, gathered back");
        if shape[2] == 2 {
            assert_eq!(back, ours, "{shape:?}: gathered back against scattered");
        } else {
            for (i, (a, b)) in back.iter().zip(&ours).enumerate() {
                let d = rel_l2(b, a);
                assert!(d < 1e-6, "{shape:?} output {i}: relative L2 {d}");
            }
        }
        if stand_in {
            assert!(ours[3..].iter().any(Vec::is_empty), "an expert got no rows");
        }
        assert!(ours.iter().flatten().all(|v| v.is_finite()));
    }
}
