//! Exact resume: a run stopped and continued is indistinguishable from one that never stopped.

mod common;

use colossus::backend::CpuTrain;
use colossus::checkpoint::{self, state};
use colossus::config::Resume;
use colossus::train::{self, TrainOptions};
use common::*;

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Train 2N steps in one run; train N, stop, resume, train N more: identical losses, weights and
/// optimizer moments, bit for bit. Gradient accumulation and a mid-run checkpoint are included.
#[test]
fn stop_and_resume_is_bit_identical_to_one_run() {
    let extra = [
        "train.steps=8",
        "train.warmup_steps=2",
        "train.grad_accum=2",
        "train.checkpoint_every=3",
    ];
    let opts = |stop_after| TrainOptions {
        quiet: true,
        stop_after,
        ..Default::default()
    };
    let device = Default::default();

    let dir_a = temp_dir("resume-a");
    let cfg_a = tiny_config(&dir_a, &extra);
    let full = train::train::<CpuTrain>(&cfg_a, &opts(None), &device).unwrap();

    let dir_b = temp_dir("resume-b");
    let cfg_b = tiny_config(&dir_b, &extra);
    let first = train::train::<CpuTrain>(&cfg_b, &opts(Some(4)), &device).unwrap();
    assert_eq!(first.losses.len(), 4);
    let stopped = first.checkpoint.unwrap();
    assert!(stopped.ends_with("step-000004"));
    assert_eq!(state::read_state(&stopped).unwrap().step, 4);
    let mut cfg_resume = cfg_b.clone();
    cfg_resume.train.resume = Resume::Auto;
    let second = train::train::<CpuTrain>(&cfg_resume, &opts(None), &device).unwrap();
    assert_eq!(second.losses.len(), 4);

    let joined: Vec<f64> = first.losses.iter().chain(&second.losses).copied().collect();
    assert_eq!(
        bits(&joined),
        bits(&full.losses),
        "{joined:?} vs {:?}",
        full.losses
    );
    let (a, b) = (full.checkpoint.unwrap(), second.checkpoint.unwrap());
    assert_eq!(
        tensor_bits(&a.join(checkpoint::WEIGHTS_FILE)),
        tensor_bits(&b.join(checkpoint::WEIGHTS_FILE))
    );
    assert_eq!(
        tensor_bits(&a.join(state::OPTIMIZER_FILE)),
        tensor_bits(&b.join(state::OPTIMIZER_FILE))
    );
    let (sa, sb) = (state::read_state(&a).unwrap(), state::read_state(&b).unwrap());
    assert_eq!(sa, sb);
    assert_eq!(sa.step, 8);
    // metrics.jsonl continues across the resume: one line per step.
    let metrics = std::fs::read_to_string(checkpoint::run_dir(&cfg_b).join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 8);
}

#[test]
fn resume_refuses_a_different_model_shape_and_names_the_key() {
    let dir = temp_dir("resume-shape");
    let cfg = tiny_config(&dir, &["train.steps=4", "train.warmup_steps=1"]);
    let opts = TrainOptions {
        quiet: true,
        stop_after: Some(2),
        ..Default::default()
    };
    train::train::<CpuTrain>(&cfg, &opts, &Default::default()).unwrap();
    let mut changed = tiny_config(
        &dir,
        &["train.steps=4", "train.warmup_steps=1", "model.n_layers=3"],
    );
    changed.train.resume = Resume::Auto;
    let err = train::train::<CpuTrain>(&changed, &opts, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.n_layers") && err.contains("cannot change shape"),
        "{err}"
    );
    // Without --resume an existing run is refused, and the hint names --resume.
    let err = train::train::<CpuTrain>(&cfg, &opts, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("--resume"), "{err}");
}

/// A checkpoint whose tokenizer.json keeps `truncation` and `padding` (as saved before they
/// were switched off at load) resumes against data prepared with the same tokenizer: the
/// comparison switches them off on both sides, since they do not change what an id means.
/// Compared as saved, the run was refused as "trained with another tokenizer".
#[test]
fn resume_compares_tokenizers_without_truncation_or_padding() {
    let dir = temp_dir("resume-shaped-tokenizer");
    let sets = ["train.steps=4", "train.warmup_steps=1"];
    let opts = |stop_after| TrainOptions {
        quiet: true,
        stop_after,
        ..Default::default()
    };
    let cfg = tiny_config(&dir, &sets);
    let first = train::train::<CpuTrain>(&cfg, &opts(Some(2)), &Default::default()).unwrap();
    let ckpt = first.checkpoint.unwrap();
    let tok_path = ckpt.join(checkpoint::TOKENIZER_FILE);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tok_path).unwrap()).unwrap();
    json["truncation"] =
        serde_json::json!({"direction": "Right", "max_length": 16, "strategy": "LongestFirst", "stride": 0});
    json["padding"] = serde_json::json!({"strategy": "BatchLongest", "direction": "Right",
        "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "<|pad|>"});
    std::fs::write(&tok_path, json.to_string()).unwrap();
    restamp_checksum(&ckpt, checkpoint::TOKENIZER_FILE);

    let mut cfg = cfg;
    cfg.train.resume = Resume::Auto;
    let resumed = train::train::<CpuTrain>(&cfg, &opts(None), &Default::default()).unwrap();
    assert_eq!(resumed.losses.len(), 2);
}
