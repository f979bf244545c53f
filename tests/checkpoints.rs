//! Checkpoints that never lose work (issue 4): pruning, the non-finite stop, and damaged
//! checkpoints — each named in a clear error, and skipped by `resume: auto` for the previous one.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use colossus::Error;
use colossus::backend::CpuTrain;
use colossus::checkpoint::{self, checksums, weights};
use colossus::config::{Config, Resume};
use colossus::train::{self, TrainOptions, TrainSummary};
use common::*;

fn quiet() -> TrainOptions {
    TrainOptions {
        quiet: true,
        ..Default::default()
    }
}

fn run(cfg: &Config, opts: &TrainOptions) -> colossus::error::Result<TrainSummary> {
    train::train::<CpuTrain>(cfg, opts, &Default::default())
}

fn names(dirs: &[PathBuf]) -> Vec<String> {
    dirs.iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn weight_bits(dir: &Path) -> Vec<(String, Vec<u32>)> {
    tensor_bits(&dir.join(checkpoint::WEIGHTS_FILE))
}

#[test]
fn keep_last_prunes_only_older_complete_checkpoints() {
    let dir = temp_dir("keep-last");
    let cfg = tiny_config(
        &dir,
        &[
            "train.steps=8",
            "train.warmup_steps=1",
            "train.checkpoint_every=2",
            "train.keep_last=2",
        ],
    );
    let s = run(&cfg, &quiet()).unwrap();
    let run_dir = checkpoint::run_dir(&cfg);
    assert_eq!(names(&checkpoint::list(&run_dir)), ["step-000006", "step-000008"]);
    assert_eq!(checkpoint::latest(&run_dir), s.checkpoint);
    // Every save reports its size and time (the throughput the log prints).
    assert_eq!(s.saves.len(), 4);
    assert!(
        s.saves
            .iter()
            .all(|sv| sv.report.bytes > 0 && sv.report.write_s > 0.0)
    );
    let pruned: Vec<_> = s.saves.iter().flat_map(|sv| names(&sv.pruned)).collect();
    assert_eq!(pruned, ["step-000002", "step-000004"]);
    for d in checkpoint::list(&run_dir) {
        checksums::verify(&d).unwrap();
    }
}

/// A run of non-finite steps stops with a clear error and a checkpoint whose weights are those
/// of the last good step: identical to a run stopped cleanly after that step.
#[test]
fn nonfinite_steps_in_a_row_stop_with_the_last_good_weights() {
    let extra = [
        "train.steps=10",
        "train.warmup_steps=2",
        "train.max_nonfinite_steps=3",
    ];
    let dir = temp_dir("nonfinite");
    let cfg = tiny_config(&dir, &extra);
    let opts = TrainOptions {
        poison_from_step: Some(4),
        ..quiet()
    };
    let err = run(&cfg, &opts).unwrap_err().to_string();
    assert!(err.contains("3 steps in a row"), "{err}");
    assert!(err.contains("train.max_nonfinite_steps"), "{err}");
    assert!(err.contains("step-000006"), "{err}");
    let saved = checkpoint::run_dir(&cfg).join("step-000006");
    let state = checkpoint::state::read_state(&saved).unwrap();
    assert_eq!((state.step, state.skipped_steps), (6, 3));

    let good_dir = temp_dir("nonfinite-good");
    let good_cfg = tiny_config(&good_dir, &extra);
    let good = run(
        &good_cfg,
        &TrainOptions {
            stop_after: Some(3),
            ..quiet()
        },
    )
    .unwrap();
    assert_eq!(weight_bits(&saved), weight_bits(&good.checkpoint.unwrap()));
}

/// One isolated non-finite step is skipped and counted, and training goes on.
#[test]
fn a_single_nonfinite_step_is_skipped_and_counted() {
    let dir = temp_dir("nonfinite-one");
    let cfg = tiny_config(
        &dir,
        &[
            "train.steps=5",
            "train.warmup_steps=1",
            "train.max_nonfinite_steps=2",
        ],
    );
    let opts = TrainOptions {
        poison_from_step: Some(5),
        ..quiet()
    };
    let s = run(&cfg, &opts).unwrap();
    assert_eq!(s.skipped_steps, 1);
    assert!(s.losses[4].is_nan() && s.losses[..4].iter().all(|l| l.is_finite()));
}

/// Damage the newest of three checkpoints in one way.
type Damage = fn(&Path);

fn truncate(dir: &Path) {
    let p = dir.join(checkpoint::WEIGHTS_FILE);
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
}

fn flip_byte(dir: &Path) {
    let p = dir.join(checkpoint::state::OPTIMIZER_FILE);
    let mut bytes = std::fs::read(&p).unwrap();
    let i = bytes.len() - 17;
    bytes[i] ^= 0x40;
    std::fs::write(&p, bytes).unwrap();
}

/// Rewrite model.safetensors through `edit` and update checksums.json to match, as a foreign
/// tool would: the checksums pass and the tensor check must catch it.
fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<f32>)>)) {
    let p = dir.join(checkpoint::WEIGHTS_FILE);
    let mut file = weights::read_safetensors(&p).unwrap();
    edit(&mut file.tensors);
    let mut names: Vec<_> = file.tensors.keys().cloned().collect();
    names.sort();
    let infos: Vec<_> = names
        .iter()
        .map(|n| colossus::train::params::ParamInfo {
            path: n.clone(),
            shape: file.tensors[n].0.clone(),
            decay: false,
        })
        .collect();
    let values: Vec<_> = names.iter().map(|n| file.tensors[n].1.clone()).collect();
    let bytes = weights::to_safetensors(&infos, &values, file.metadata).unwrap();
    std::fs::write(&p, &bytes).unwrap();
    restamp_checksum(dir, checkpoint::WEIGHTS_FILE);
}

fn drop_tensor(dir: &Path) {
    rewrite_weights(dir, |t| {
        t.remove("layers.1.self_attn.k_proj");
    });
}

fn wrong_shape(dir: &Path) {
    rewrite_weights(dir, |t| {
        let (shape, v) = t.get_mut("norm.weight").unwrap();
        shape[0] -= 1;
        v.pop();
    });
}

/// Every damage: a clear error naming the file (and tensor), and `resume: auto` falls back to
/// the previous complete checkpoint, continuing exactly as the undamaged run did from there.
#[test]
fn damaged_checkpoints_are_named_and_auto_resume_falls_back() {
    let cases: [(&str, Damage, &[&str]); 4] = [
        ("truncated", truncate, &["model.safetensors", "truncated"]),
        (
            "flipped",
            flip_byte,
            &["optimizer.safetensors", "checksum mismatch"],
        ),
        (
            "missing",
            drop_tensor,
            &["model.safetensors", "`layers.1.self_attn.k_proj` is missing"],
        ),
        (
            "shape",
            wrong_shape,
            &["model.safetensors", "`norm.weight` has shape [63]"],
        ),
    ];
    let extra = [
        "train.steps=6",
        "train.checkpoint_every=2",
        "train.warmup_steps=1",
    ];
    let reference_dir = temp_dir("damage-ref");
    let reference = run(&tiny_config(&reference_dir, &extra), &quiet()).unwrap();

    for (name, damage, expected) in cases {
        let dir = temp_dir(&format!("damage-{name}"));
        let cfg = tiny_config(&dir, &extra);
        run(&cfg, &quiet()).unwrap();
        let run_dir = checkpoint::run_dir(&cfg);
        let newest = run_dir.join("step-000006");
        damage(&newest);

        // Loading it directly names the file and the tensor.
        let mut explicit = cfg.clone();
        explicit.train.resume = Resume::Path(newest.display().to_string());
        explicit.train.steps = 8;
        let err = run(&explicit, &quiet()).unwrap_err();
        assert!(matches!(err, Error::Input { .. }), "{name}: {err}");
        let msg = err.to_string();
        for e in expected {
            assert!(msg.contains(e), "{name}: expected {e:?} in {msg}");
        }

        // `auto` falls back to step 4, sets the damaged one aside, and redoes steps 5 and 6
        // exactly as the undamaged run did.
        let mut auto = cfg.clone();
        auto.train.resume = Resume::Auto;
        let resumed = run(&auto, &quiet()).unwrap();
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&resumed.losses), bits(&reference.losses[4..]), "{name}");
        assert!(run_dir.join("step-000006.unusable").is_dir(), "{name}");
        assert_eq!(
            weight_bits(&resumed.checkpoint.unwrap()),
            weight_bits(reference.checkpoint.as_ref().unwrap()),
            "{name}"
        );
    }
}

/// A checkpoint of another model: loading it names the tensor that does not fit.
#[test]
fn checkpoint_of_another_model_is_refused_with_the_tensor() {
    let dir = temp_dir("other-model");
    let cfg = tiny_config(&dir, &["train.steps=1", "train.warmup_steps=0"]);
    let s = run(&cfg, &quiet()).unwrap();
    let mut other = cfg.clone();
    other.model.d_model = 32;
    other.model.head_dim = 8;
    let model = other.model.init::<colossus::backend::Cpu>(0, &Default::default());
    let err = checkpoint::load_weights(model, &s.checkpoint.unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("has shape"),
        "{err}"
    );
}
