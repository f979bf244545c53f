//! Where a run starts: from scratch, or from a checkpoint that verifies and fits the config. With
//! `resume: auto` a checkpoint that fails to load (truncated, corrupt, missing tensors) is skipped
//! for the previous complete one, and the log says so; an explicit path never falls back.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;

use super::optim::{AdamW, AdamWSettings};
use super::params::ParamInfo;
use crate::checkpoint::{self, state::TrainState};
use crate::config::{BackendKind, Config, Resume};
use crate::error::{Error, Result};
use crate::model::Grok;

/// A checkpoint's training state, loaded. Optimizer and loop state are `None` for a weights-only
/// checkpoint given by path (fine-tuning an imported model).
pub struct Resumed<B: AutodiffBackend> {
    pub dir: PathBuf,
    pub model: Grok<B>,
    pub opt: Option<AdamW<B::InnerBackend>>,
    pub state: Option<TrainState>,
}

/// The checkpoints `cfg.train.resume` allows, most preferred first.
pub fn candidates(cfg: &Config) -> Result<Vec<PathBuf>> {
    Ok(match &cfg.train.resume {
        Resume::Never => Vec::new(),
        Resume::Auto => {
            let mut all = checkpoint::list(&checkpoint::run_dir(cfg));
            all.reverse();
            all
        }
        Resume::Path(p) => {
            let path = Path::new(p);
            // An exported or downloaded folder failed as "not a Colossus config: missing field
            // `preset`", which said neither what it was nor what to do.
            if crate::cli::export::is_hf_folder(path) {
                return Err(cfg.error(
                    "train.resume",
                    format!(
                        "{p} is a Hugging Face folder, not a checkpoint; import it first \
                         (`colossus import {p} --out CKPT`) and resume from CKPT"
                    ),
                ));
            }
            let dir = crate::cli::generate::resolve_checkpoint(path).map_err(|e| match e {
                Error::Input { path, msg } => cfg.error("train.resume", format!("{}: {msg}", path.display())),
                other => other,
            })?;
            vec![dir]
        }
    })
}

/// Load the first candidate that verifies and fits. A config that changes the model shape is an
/// error at once (every older checkpoint has the same shape); damaged files fall back.
pub fn load<B: AutodiffBackend>(
    cfg: &Config,
    candidates: &[PathBuf],
    model: &Grok<B>,
    params: &[ParamInfo],
    settings: AdamWSettings,
    device: &B::Device,
    notes: &mut Vec<String>,
) -> Result<Option<Resumed<B>>> {
    let mut failures = Vec::new();
    for dir in candidates {
        let loaded = check_resumable(cfg, dir, notes)
            .and_then(|()| load_one(cfg, dir, model.clone(), params, settings, device));
        match loaded {
            Ok(r) => return Ok(Some(r)),
            Err(e @ Error::Input { .. }) if cfg.train.resume == Resume::Auto => {
                // Moved aside, not deleted: the run will save this step again, and the damaged
                // copy may still matter to whoever investigates.
                let aside = set_aside(dir)?;
                notes.push(format!(
                    "checkpoint {} is unusable ({e}); moved it to {} and fell back to the previous one",
                    dir.display(),
                    aside.display()
                ));
                failures.push(e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    if failures.is_empty() {
        return Ok(None);
    }
    Err(Error::input(
        checkpoint::run_dir(cfg),
        format!(
            "no checkpoint of this run loads ({}); fix or remove them, or start over with --overwrite",
            failures.join("; ")
        ),
    ))
}

fn load_one<B: AutodiffBackend>(
    cfg: &Config,
    dir: &Path,
    model: Grok<B>,
    params: &[ParamInfo],
    settings: AdamWSettings,
    device: &B::Device,
) -> Result<Resumed<B>> {
    checkpoint::checksums::verify(dir)?;
    checkpoint::read_tokenizer(dir, cfg)?; // refused before the weights: vocabulary, end-of-text
    let model = checkpoint::load_weights(model, dir)?;
    // A weights-only checkpoint (`colossus import`, or one written by another tool) starts a
    // fine-tuning run: its weights, a fresh optimizer, step 0. Only an explicit path gets here
    // without the files, since `auto` only lists this run's own checkpoints.
    let weights_only = !dir.join(checkpoint::state::OPTIMIZER_FILE).exists()
        && !dir.join(checkpoint::state::STATE_FILE).exists();
    let (opt, state) = if weights_only && matches!(cfg.train.resume, Resume::Path(_)) {
        (None, None)
    } else {
        (
            Some(checkpoint::state::load_optimizer(dir, params, settings, device)?),
            Some(checkpoint::state::read_state(dir)?),
        )
    };
    Ok(Resumed {
        dir: dir.to_path_buf(),
        model,
        opt,
        state,
    })
}

/// A checkpoint can continue this config only if the model is the same; training settings
/// (steps, learning rates, logging) may change and each change is noted. `widening` is skipped
/// because `ffn_size`, which it only derives, is compared (an import reconstructs widening from
/// the ffn width and need not round-trip it exactly).
pub fn check_resumable(cfg: &Config, dir: &Path, notes: &mut Vec<String>) -> Result<()> {
    let old = checkpoint::read_config(dir)?;
    let (a, b) = (
        serde_json::to_value(&old.model).expect("json"),
        serde_json::to_value(&cfg.model).expect("json"),
    );
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        // Every difference, not the first alphabetically: a new d_model once named only
        // `model.attn_output_multiplier`, which it derives, a key the user never touched.
        let changed: Vec<(&String, &serde_json::Value, &serde_json::Value)> = a
            .iter()
            .map(|(key, was)| (key, was, &b[key]))
            .filter(|(key, was, now)| {
                was != now && !matches!(key.as_str(), "init_std" | "aux_loss_coef" | "widening")
            })
            .collect();
        let ckpt = dir.display();
        match changed.as_slice() {
            [] => {}
            [(key, was, now)] => {
                return Err(cfg.error(
                    &format!("model.{key}"),
                    format!(
                        "is {now} but checkpoint {ckpt} was trained with {was}; the model cannot \
                         change shape on resume"
                    ),
                ));
            }
            several => {
                let list: Vec<String> = several
                    .iter()
                    .map(|(key, was, now)| format!("{key} {was} (now {now})"))
                    .collect();
                return Err(cfg.error(
                    "model",
                    format!(
                        "checkpoint {ckpt} was trained with {}; the model cannot change shape on \
                         resume",
                        list.join(", ")
                    ),
                ));
            }
        }
    }
    let (a, b) = (
        serde_json::to_value(&old.train).expect("json"),
        serde_json::to_value(&cfg.train).expect("json"),
    );
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (key, was) in a {
            if key != "resume" && b.get(key) != Some(was) {
                let note = format!("train.{key} changed on resume: {was} -> {}", b[key]);
                if !notes.contains(&note) {
                    notes.push(note);
                }
            }
        }
    }
    // Allowed, but the arithmetic changes: the precision (a run may move between a GPU and the
    // CPU) and, on a GPU backend, the attention kernel (the same function, summed in another
    // order; the CPU backend ignores the setting).
    let mut arithmetic = vec![("precision", old.precision.name(), cfg.precision.name())];
    if cfg.backend != BackendKind::Cpu {
        arithmetic.push(("attention", old.attention.name(), cfg.attention.name()));
    }
    for (key, was, now) in arithmetic {
        let note = format!(
            "{key} changed on resume: {was} -> {now}; the continuation will not match an uninterrupted run bit for bit"
        );
        if was != now && !notes.contains(&note) {
            notes.push(note);
        }
    }
    if old.seed != cfg.seed || old.data != cfg.data {
        let note = "seed or data settings changed on resume: batches will differ from the original run";
        if !notes.iter().any(|n| n == note) {
            notes.push(note.into());
        }
    }
    Ok(())
}

/// Rename an unusable checkpoint to `step-N.unusable[-K]`, a name `checkpoint::list` ignores.
fn set_aside(dir: &Path) -> Result<PathBuf> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("checkpoint");
    let mut aside = dir.with_file_name(format!("{name}.unusable"));
    let mut k = 1;
    while aside.exists() {
        aside = dir.with_file_name(format!("{name}.unusable-{k}"));
        k += 1;
    }
    std::fs::rename(dir, &aside).map_err(|e| Error::io(dir, e))?;
    Ok(aside)
}

/// Remove what a killed process left half-written in the run directory (staged checkpoint
/// directories and pointer files under `.NAME.tmp-PID`); complete checkpoints are never touched.
pub fn remove_stale_temps(run: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(run) else {
        return Ok(removed);
    };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if crate::replace::staging(name) {
            let r = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            r.map_err(|e| Error::io(&path, e))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Refuse to let `--overwrite` remove `run` when it holds entries colossus does not write there
/// (`crate::replace`).
pub fn check_replaceable(run: &Path) -> Result<()> {
    let elsewhere = "choose another name (--set run_name=NAME or train.out_dir)";
    crate::replace::check_only_ours(run, is_run_entry, "a run's output", elsewhere)
}

/// Whether training, resuming or `colossus plot` writes an entry of this name into a run
/// directory: `latest`, `metrics.jsonl`, `metrics.png`, `tokenizer.json`, `step-N`,
/// `step-N.unusable[-K]` (set aside by `set_aside`) and hidden `.NAME.tmp-PID` staging.
fn is_run_entry(name: &str) -> bool {
    use crate::replace::{numbered, staging};
    let unusable = |s: &str| {
        s.split_once(".unusable")
            .is_some_and(|(dir, k)| numbered(dir, "step-") && (k.is_empty() || numbered(k, "-")))
    };
    matches!(
        name,
        checkpoint::atomic::LATEST | "metrics.jsonl" | "metrics.png" | checkpoint::TOKENIZER_FILE
    ) || numbered(name, "step-")
        || unusable(name)
        || staging(name)
}

/// Drop metrics.jsonl records of steps after `step`: a killed run may have logged steps its last
/// checkpoint does not hold, and the resumed run logs them again. Rewritten atomically.
pub fn trim_metrics(run: &Path, step: usize) -> Result<usize> {
    let path = run.join("metrics.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(0);
    };
    let mut kept = String::with_capacity(text.len());
    let mut dropped = 0;
    for line in text.lines() {
        let s = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("step").and_then(|s| s.as_u64()));
        match s {
            Some(s) if s as usize <= step => {
                kept.push_str(line);
                kept.push('\n');
            }
            // A record past the checkpoint, or a line cut short by the kill.
            _ => dropped += 1,
        }
    }
    if dropped > 0 {
        checkpoint::atomic::write_file_atomic(run, "metrics.jsonl", kept.as_bytes())?;
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::is_run_entry;

    /// The names a run writes, and near misses that are someone else's.
    #[test]
    fn run_entries_are_told_from_foreign_ones() {
        for name in [
            "latest",
            "metrics.jsonl",
            "metrics.png",
            "tokenizer.json",
            "step-000012",
            "step-1234567",
            "step-000012.unusable",
            "step-000012.unusable-3",
            ".step-000012.tmp-4242",
            ".latest.tmp-4242",
            ".metrics.jsonl.tmp-4242",
        ] {
            assert!(is_run_entry(name), "{name}");
        }
        for name in [
            "src",
            "main.rs",
            "step-",
            "step-12a",
            "step-000012.unusable-",
            "step-000012.unusable-x",
            "step-000012.bak",
            "latest.txt",
            ".git",
            "README.md",
        ] {
            assert!(!is_run_entry(name), "{name}");
        }
    }
}
