//! Checkpoints: one directory per save under `<out_dir>/<run_name>/`, published atomically, with a
//! `latest` pointer to the newest complete one.
//!
//! ```text
//! checkpoints/small/
//!   latest                 "step-000300"
//!   step-000300/
//!     model.safetensors    weights; metadata: format, format_version, step, config (JSON)
//!     optimizer.safetensors AdamW moments (m.<param>, v.<param>); metadata: step
//!     train_state.json     step, tokens seen, sampler cursor, skipped steps
//!     config.json          the resolved config
//!     tokenizer.json
//! ```

pub mod atomic;
pub mod export;
pub mod hf;
pub mod import;
pub mod state;
pub mod tensors;
pub mod weights;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::backend::Backend;
use tokenizers::Tokenizer;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::train::params::ParamInfo;

pub const FORMAT: &str = "colossus";
pub const FORMAT_VERSION: u32 = 1;
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

pub fn run_dir(cfg: &Config) -> PathBuf {
    Path::new(&cfg.train.out_dir).join(&cfg.run_name)
}

pub fn step_dir_name(step: usize) -> String {
    format!("step-{step:06}")
}

/// The newest complete checkpoint of a run, if any.
pub fn latest(run_dir: &Path) -> Option<PathBuf> {
    let name = std::fs::read_to_string(run_dir.join(atomic::LATEST)).ok()?;
    let dir = run_dir.join(name.trim());
    dir.join(WEIGHTS_FILE).is_file().then_some(dir)
}

/// The run's complete checkpoints (those with weights), oldest first.
pub fn list(run_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(run_dir) else { return Vec::new() };
    let mut dirs: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let step = p.file_name()?.to_str()?.strip_prefix("step-")?.parse().ok()?;
            p.join(WEIGHTS_FILE).is_file().then_some((step, p))
        })
        .collect();
    dirs.sort();
    dirs.into_iter().map(|(_, p)| p).collect()
}

/// Remove all but the newest `keep` complete checkpoints (never the one `latest` names).
pub fn prune(run_dir: &Path, keep: usize) -> Result<Vec<PathBuf>> {
    let all = list(run_dir);
    let newest = latest(run_dir);
    let mut removed = Vec::new();
    if keep == 0 || all.len() <= keep {
        return Ok(removed);
    }
    for dir in &all[..all.len() - keep] {
        if Some(dir) != newest.as_ref() {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            removed.push(dir.clone());
        }
    }
    Ok(removed)
}

/// Save everything a resumed run needs after `state.step` optimizer steps into the run
/// directory, then move `latest` to it.
pub fn save<B: Backend, M: Module<B>, O: Backend>(
    cfg: &Config,
    module: &M,
    params: &[ParamInfo],
    opt: &crate::train::optim::AdamW<O>,
    state: &state::TrainState,
    tokenizer: &Tokenizer,
) -> Result<PathBuf> {
    let run = run_dir(cfg);
    let step = state.step;
    let values = weights::snapshot(module);
    let extra = [
        (state::OPTIMIZER_FILE, state::optimizer_bytes(opt)?),
        (
            state::STATE_FILE,
            serde_json::to_vec_pretty(state).expect("state serializes"),
        ),
    ];
    let target = run.join(step_dir_name(step));
    let dir = write_dir_with(&target, cfg, params, &values, tokenizer, step, &extra)?;
    atomic::write_file_atomic(&run, atomic::LATEST, step_dir_name(step).as_bytes())?;
    Ok(dir)
}

/// Publish a weights-only checkpoint directory at `target` (which must not exist) atomically.
pub fn write_dir(
    target: &Path,
    cfg: &Config,
    params: &[ParamInfo],
    values: &[Vec<f32>],
    tokenizer: &Tokenizer,
    step: usize,
) -> Result<PathBuf> {
    write_dir_with(target, cfg, params, values, tokenizer, step, &[])
}

/// `write_dir` plus extra named files (optimizer and loop state).
pub fn write_dir_with(
    target: &Path,
    cfg: &Config,
    params: &[ParamInfo],
    values: &[Vec<f32>],
    tokenizer: &Tokenizer,
    step: usize,
    extra: &[(&str, Vec<u8>)],
) -> Result<PathBuf> {
    let config_json = serde_json::to_string_pretty(cfg).expect("config serializes");
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), FORMAT.to_string());
    meta.insert("format_version".to_string(), FORMAT_VERSION.to_string());
    meta.insert("step".to_string(), step.to_string());
    meta.insert("layout".to_string(), "burn: linear weights [in, out]".to_string());
    meta.insert("config".to_string(), config_json.clone());
    let bytes = weights::to_safetensors(params, values, meta)?;
    let staged = atomic::StagedDir::new(target)?;
    staged.write(WEIGHTS_FILE, &bytes)?;
    staged.write(CONFIG_FILE, config_json.as_bytes())?;
    let tok = tokenizer
        .to_string(false)
        .map_err(|e| Error::Train(format!("serializing the tokenizer: {e}")))?;
    staged.write(TOKENIZER_FILE, tok.as_bytes())?;
    for (name, bytes) in extra {
        staged.write(name, bytes)?;
    }
    staged.commit()
}

/// Read a checkpoint directory's resolved config.
pub fn read_config(dir: &Path) -> Result<Config> {
    let path = dir.join(CONFIG_FILE);
    let text =
        std::fs::read_to_string(&path).map_err(|e| Error::input(&path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| Error::input(&path, format!("not a Colossus config: {e}")))
}

/// Load a checkpoint's weights into `module` (built from the checkpoint's own config).
pub fn load_weights<B: Backend, M: Module<B>>(module: M, dir: &Path) -> Result<M> {
    let path = dir.join(WEIGHTS_FILE);
    let file = weights::read_safetensors(&path)?;
    match file.metadata.get("format_version").map(String::as_str) {
        Some(v) if v == FORMAT_VERSION.to_string() => {}
        other => {
            return Err(Error::input(
                &path,
                format!("format_version {other:?}; this build reads version {FORMAT_VERSION}"),
            ));
        }
    }
    let params = crate::train::params::list(&module);
    weights::load_into(module, &params, file, &path)
}
