//! What exact resume needs beyond the weights: AdamW's moments and step count
//! (`optimizer.safetensors`, tensors `m.<param path>` / `v.<param path>` in the parameter's shape)
//! and the loop's position (`train_state.json`: step, tokens seen, sampler cursor, skipped steps,
//! and under `precision: f16` the loss scale).
//! `train_state.json` has its own layout version (`STATE_VERSION`); the weights format is separate.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::{FORMAT_VERSION, weights};
use crate::data::Cursor;
use crate::error::{Error, Result};
use crate::model::init;
use crate::train::loss_scale::LossScale;
use crate::train::optim::{AdamW, AdamWSettings};
use crate::train::params::ParamInfo;

pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "train_state.json";
/// Layout of train_state.json. 2: the sampler cursor became (epoch, position, rng,
/// samples_per_epoch) for the shard sampler (1 held one u64 RNG state).
pub const STATE_VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainState {
    pub format_version: u32,
    /// Optimizer steps completed; training continues with step `step + 1`.
    pub step: usize,
    pub tokens: u64,
    /// Where the training sampler stands (`data::Sampler::cursor`).
    pub sampler: Cursor,
    pub skipped_steps: usize,
    /// `precision: f16` only: the dynamic loss scale (`train::loss_scale`). Absent otherwise, so
    /// the layout (and `STATE_VERSION`) of f32 and bf16 runs is unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<LossScale>,
}

/// The optimizer's moments copied to host memory (the synchronous half of a save).
pub struct OptimizerSnapshot {
    infos: Vec<ParamInfo>,
    values: Vec<Vec<f32>>,
    step: u64,
}

impl OptimizerSnapshot {
    pub fn take<B: Backend>(opt: &AdamW<B>) -> Self {
        let mut infos = Vec::with_capacity(2 * opt.params.len());
        let mut values = Vec::with_capacity(2 * opt.params.len());
        for (which, moments) in [("m", &opt.m), ("v", &opt.v)] {
            for (p, t) in opt.params.iter().zip(moments) {
                infos.push(ParamInfo {
                    path: format!("{which}.{}", p.path),
                    shape: p.shape.clone(),
                    decay: p.decay,
                });
                values.push(
                    t.clone()
                        .into_data()
                        .convert::<f32>()
                        .into_vec::<f32>()
                        .expect("f32 moments"),
                );
            }
        }
        OptimizerSnapshot {
            infos,
            values,
            step: opt.step,
        }
    }

    /// Stream the moments into safetensors file `path` (metadata: format version, optimizer,
    /// step).
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut meta = HashMap::new();
        meta.insert("format_version".to_string(), FORMAT_VERSION.to_string());
        meta.insert("optimizer".to_string(), "adamw".to_string());
        meta.insert("step".to_string(), self.step.to_string());
        weights::write_safetensors(&self.infos, &self.values, meta, path)
    }
}

/// Rebuild the optimizer saved in checkpoint `dir` for parameters `params`.
pub fn load_optimizer<B: Backend>(
    dir: &Path,
    params: &[ParamInfo],
    settings: AdamWSettings,
    device: &B::Device,
) -> Result<AdamW<B>> {
    let path = dir.join(OPTIMIZER_FILE);
    let mut file = weights::read_safetensors(&path)?;
    let step: u64 = file
        .metadata
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::input(&path, "metadata `step` is missing"))?;
    let mut opt = AdamW::<B>::new(settings, params.to_vec(), device);
    opt.step = step;
    for (which, moments) in [("m", &mut opt.m), ("v", &mut opt.v)] {
        for (p, slot) in params.iter().zip(moments.iter_mut()) {
            let name = format!("{which}.{}", p.path);
            let Some((shape, v)) = file.tensors.remove(&name) else {
                return Err(Error::input(&path, format!("tensor `{name}` is missing")));
            };
            if shape != p.shape {
                return Err(Error::input(
                    &path,
                    format!(
                        "tensor `{name}` has shape {shape:?}; the model expects {:?}",
                        p.shape
                    ),
                ));
            }
            let n = v.len();
            *slot = init::floats::<B, 1>(v, [n], device);
        }
    }
    if let Some(extra) = file.tensors.keys().min() {
        return Err(Error::input(
            &path,
            format!("tensor `{extra}` does not belong to this model"),
        ));
    }
    Ok(opt)
}

pub fn read_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join(STATE_FILE);
    let text =
        std::fs::read_to_string(&path).map_err(|e| Error::input(&path, format!("cannot read: {e}")))?;
    let not_state = |e: serde_json::Error| Error::input(&path, format!("not a training state: {e}"));
    // The version first, so an older layout gets a version message rather than a missing field.
    let value: serde_json::Value = serde_json::from_str(&text).map_err(not_state)?;
    let version = value.get("format_version").and_then(|v| v.as_u64());
    if version != Some(STATE_VERSION as u64) {
        return Err(Error::input(
            &path,
            format!(
                "format_version {version:?}; this build resumes from version {STATE_VERSION} (the \
                 checkpoint still loads for generate, eval and export)"
            ),
        ));
    }
    let state: TrainState = serde_json::from_value(value).map_err(not_state)?;
    Ok(state)
}
