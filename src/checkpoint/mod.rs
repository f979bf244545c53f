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
//!     checksums.json       size and CRC-32 of every file above (written last)
//! ```

pub mod atomic;
pub mod checksums;
pub mod export;
pub mod hf;
pub mod import;
pub mod inspect;
pub mod lock;
pub mod saver;
pub mod state;
pub mod tensors;
pub mod weights;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use burn::module::Module;
use burn::tensor::backend::Backend;
use tokenizers::Tokenizer;

use crate::config::{Config, Source};
use crate::error::{Error, Result};
use crate::train::params::ParamInfo;

pub const FORMAT: &str = "colossus";
/// 2: checkpoints carry `checksums.json`.
pub const FORMAT_VERSION: u32 = 2;
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
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
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

/// A training checkpoint copied to host memory. Taking it is the only part of a save the training
/// loop has to wait for; `write` (serialize, checksum, fsync, rename, move `latest`) can run on
/// another thread while training goes on.
pub struct Snapshot {
    run: PathBuf,
    cfg: Config,
    params: Vec<ParamInfo>,
    values: Vec<Vec<f32>>,
    optimizer: state::OptimizerSnapshot,
    state: state::TrainState,
    tokenizer_json: String,
}

/// What one completed save wrote and how long writing it took.
#[derive(Debug, Clone)]
pub struct SaveReport {
    pub dir: PathBuf,
    pub bytes: u64,
    pub write_s: f64,
}

impl SaveReport {
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.write_s.max(1e-9)
    }
}

impl Snapshot {
    pub fn take<B: Backend, M: Module<B>, O: Backend>(
        cfg: &Config,
        module: &M,
        params: &[ParamInfo],
        opt: &crate::train::optim::AdamW<O>,
        state: &state::TrainState,
        tokenizer: &Tokenizer,
    ) -> Result<Snapshot> {
        Ok(Snapshot {
            run: run_dir(cfg),
            cfg: cfg.clone(),
            params: params.to_vec(),
            values: weights::snapshot(module),
            optimizer: state::OptimizerSnapshot::take(opt),
            state: state.clone(),
            tokenizer_json: tokenizer_json(tokenizer)?,
        })
    }

    pub fn step(&self) -> usize {
        self.state.step
    }

    /// Publish the checkpoint directory `step-N` atomically, then point `latest` at it.
    pub fn write(self) -> Result<SaveReport> {
        let start = std::time::Instant::now();
        let step = self.state.step;
        let state_json = serde_json::to_vec_pretty(&self.state).expect("state serializes");
        let target = self.run.join(step_dir_name(step));
        let contents = Contents {
            cfg: &self.cfg,
            params: &self.params,
            values: &self.values,
            tokenizer_json: &self.tokenizer_json,
            step,
            optimizer: Some(&self.optimizer),
            state_json: Some(&state_json),
            // A training save is what a stop asks for; it is never cut short.
            stop: None,
        };
        let (dir, bytes) = contents.publish(&target)?;
        atomic::write_file_atomic(&self.run, atomic::LATEST, step_dir_name(step).as_bytes())?;
        Ok(SaveReport {
            dir,
            bytes,
            write_s: start.elapsed().as_secs_f64(),
        })
    }
}

fn tokenizer_json(tokenizer: &Tokenizer) -> Result<String> {
    tokenizer
        .to_string(false)
        .map_err(|e| Error::Train(format!("serializing the tokenizer: {e}")))
}

/// Publish a weights-only checkpoint directory at `target` (which must not exist) atomically.
/// A set `stop` (a signal handler's) ends it before publishing, with the directory removed.
pub fn write_dir(
    target: &Path,
    cfg: &Config,
    params: &[ParamInfo],
    values: &[Vec<f32>],
    tokenizer: &Tokenizer,
    step: usize,
    stop: Option<&AtomicBool>,
) -> Result<PathBuf> {
    let tokenizer_json = tokenizer_json(tokenizer)?;
    let contents = Contents {
        cfg,
        params,
        values,
        tokenizer_json: &tokenizer_json,
        step,
        optimizer: None,
        state_json: None,
        stop,
    };
    Ok(contents.publish(target)?.0)
}

/// Test hook: `COLOSSUS_TEST_SAVE_PAUSE_MS=N` sleeps N ms inside every save, after the weights
/// are written and before the directory is published (and after each shard an export writes),
/// so tests can kill or signal a process mid-save.
pub(crate) fn test_pause() {
    if let Some(ms) = std::env::var("COLOSSUS_TEST_SAVE_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// The files of one checkpoint directory; the optimizer and loop state only for training saves.
struct Contents<'a> {
    cfg: &'a Config,
    params: &'a [ParamInfo],
    values: &'a [Vec<f32>],
    tokenizer_json: &'a str,
    step: usize,
    optimizer: Option<&'a state::OptimizerSnapshot>,
    state_json: Option<&'a [u8]>,
    stop: Option<&'a AtomicBool>,
}

impl Contents<'_> {
    /// Write every file into a staged directory (tensors streamed, not copied into one buffer),
    /// `checksums.json` last, and rename it to `target`. Returns the directory and bytes written.
    fn publish(&self, target: &Path) -> Result<(PathBuf, u64)> {
        let config_json = serde_json::to_string_pretty(self.cfg).expect("config serializes");
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("format_version".to_string(), FORMAT_VERSION.to_string());
        meta.insert("step".to_string(), self.step.to_string());
        meta.insert("layout".to_string(), "burn: linear weights [in, out]".to_string());
        meta.insert("config".to_string(), config_json.clone());
        let staged = atomic::StagedDir::new(target)?;
        let mut sums = checksums::Checksums::default();
        sums.insert(
            WEIGHTS_FILE,
            staged.write_with(WEIGHTS_FILE, |p| {
                weights::write_safetensors(self.params, self.values, meta, p)
            })?,
        );
        test_pause();
        // The weights are the long write; returning drops `staged`, which removes it.
        if self.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            return Err(Error::Interrupted(format!(
                "writing {}: stopped; the partial directory is removed",
                target.display()
            )));
        }
        if let Some(opt) = self.optimizer {
            sums.insert(
                state::OPTIMIZER_FILE,
                staged.write_with(state::OPTIMIZER_FILE, |p| opt.write(p))?,
            );
        }
        let mut small = vec![
            (CONFIG_FILE, config_json.as_bytes()),
            (TOKENIZER_FILE, self.tokenizer_json.as_bytes()),
        ];
        if let Some(s) = self.state_json {
            small.push((state::STATE_FILE, s));
        }
        for (name, bytes) in small {
            staged.write(name, bytes)?;
            sums.add(name, bytes);
        }
        let total = sums.files.values().map(|f| f.bytes).sum::<u64>();
        let sums = sums.to_json();
        staged.write(checksums::CHECKSUMS_FILE, &sums)?;
        Ok((staged.commit()?, total + sums.len() as u64))
    }
}

/// Read a checkpoint directory's resolved config.
pub fn read_config(dir: &Path) -> Result<Config> {
    let path = dir.join(CONFIG_FILE);
    let text =
        std::fs::read_to_string(&path).map_err(|e| Error::input(&path, format!("cannot read: {e}")))?;
    let mut cfg: Config = serde_json::from_str(&text)
        .map_err(|e| Error::input(&path, format!("not a Colossus config: {e}")))?;
    cfg.source = Source(path.display().to_string());
    Ok(cfg)
}

/// Before the readers that list a checkpoint's tensors from `cfg` (export, generate, eval) read
/// `dir`'s weights: the checksums of the files they read, then `check_config_fits_weights` (f32
/// weights: 4 B per parameter). Not in `read_config`: resuming verifies every file itself and
/// loads through `load_weights`, whose errors name each missing tensor.
pub fn check_weights_file(dir: &Path, cfg: &Config) -> Result<()> {
    // The weights are read next: a flipped byte would become a wrong weight without a word.
    // Checkpoints that list no checksums (written by hand, or by another tool) are read as is.
    if dir.join(checksums::CHECKSUMS_FILE).is_file() {
        checksums::verify_files(dir, Some(&[WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE]))?;
    }
    check_config_fits_weights(&cfg.model, &dir.join(CONFIG_FILE), &[dir.join(WEIGHTS_FILE)], 4)
}

/// Load a checkpoint directory's tokenizer.json, refused when it has more entries than `cfg`'s
/// `model.vocab_size` (the checkpoint's own config, or the run's that resumes from it) or lacks
/// its `data.eot_token`; with the id of that token.
pub fn read_tokenizer(dir: &Path, cfg: &Config) -> Result<(Tokenizer, u32)> {
    use crate::data::tokenizer;
    let (path, bound) = (dir.join(TOKENIZER_FILE), cfg.key_in_file("model.vocab_size"));
    let tok = tokenizer::load(&path, cfg.model.vocab_size, &bound)?;
    let eot = tokenizer::eot_id(
        &tok,
        &path,
        &cfg.data.eot_token,
        &cfg.key_in_file("data.eot_token"),
    )?;
    Ok((tok, eot))
}

/// Refuse a config that describes more parameters than `files` could hold at `min_bytes` per
/// parameter, before its tensors are listed: a config.json edited to 10^9 layers once hung
/// `generate` listing 10^10 tensor names (found 2026-12-06). A damaged or hand-edited file, so
/// the error names it.
pub fn check_config_fits_weights(
    model: &crate::model::GrokConfig,
    config: &Path,
    files: &[PathBuf],
    min_bytes: u64,
) -> Result<()> {
    let mut bytes = 0u64;
    for f in files {
        bytes += std::fs::metadata(f)
            .map_err(|e| Error::input(f, e.to_string()))?
            .len();
    }
    let params = crate::model::params::count(model).total;
    if params.saturating_mul(min_bytes) > bytes {
        return Err(Error::input(
            config,
            format!(
                "describes {params} parameters, but the weights ({}) hold {bytes} bytes, fewer than \
                 {min_bytes} per parameter; the config does not belong to these weights",
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(())
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
