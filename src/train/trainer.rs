//! The training loop: micro-batches → loss → backward → accumulated gradients → global-norm
//! clip → AdamW at the scheduled learning rate; progress, metrics and periodic checkpoints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use super::grads::Grads;
use super::optim::{AdamW, AdamWSettings};
use super::params::{self, ParamInfo};
use super::progress::{Progress, StepMetrics};
use super::schedule::lr_at;
use crate::checkpoint;
use crate::checkpoint::state::TrainState;
use crate::config::{Config, Resume};
use crate::data::{self, Batch, BatchSource};
use crate::error::{Error, Result};
use crate::model::{Grok, params::ParamCount};

#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// No bar and no log lines (tests, scripted use).
    pub quiet: bool,
    /// Replace an existing run directory of the same name instead of refusing to start.
    pub overwrite: bool,
    /// Stop (with a checkpoint) after this many steps of this invocation; `--resume` continues.
    pub stop_after: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Mean training loss of each optimizer step.
    pub losses: Vec<f64>,
    pub tokens: u64,
    pub wall_s: f64,
    pub tokens_per_s: f64,
    pub params: ParamCount,
    /// The last checkpoint written.
    pub checkpoint: Option<PathBuf>,
    /// Steps whose update was skipped because the loss or gradient norm was not finite.
    pub skipped_steps: usize,
}

/// Loss and router statistics for one micro-batch.
pub struct MicroStep<B: AutodiffBackend> {
    pub loss: Tensor<B, 1>,
    pub aux_loss: Tensor<B, 1>,
    pub expert_load: Vec<Vec<f32>>,
}

/// Forward one batch: next-token cross-entropy (plus the router statistics).
pub fn forward_batch<B: AutodiffBackend>(model: &Grok<B>, batch: &Batch, device: &B::Device) -> MicroStep<B> {
    let shape = [batch.batch, batch.seq];
    let inputs = Tensor::<B, 2, Int>::from_data(TensorData::new(batch.inputs.clone(), shape), device);
    let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(batch.targets.clone(), shape), device);
    let out = model.forward(inputs, None);
    MicroStep {
        loss: super::loss::cross_entropy(out.logits, targets),
        aux_loss: out.aux_loss,
        expert_load: out.expert_load,
    }
}

/// One optimizer step's gradients over `grad_accum` micro-batches, averaged.
pub struct StepGrads<B: AutodiffBackend> {
    pub grads: Grads<B::InnerBackend>,
    pub loss: f64,
    pub aux_loss: f64,
    pub expert_load: Vec<Vec<f32>>,
}

/// Forward and backward over `grad_accum` micro-batches from `source`.
pub fn accumulate<B: AutodiffBackend>(
    cfg: &Config,
    model: &Grok<B>,
    source: &mut dyn BatchSource,
    device: &B::Device,
) -> StepGrads<B> {
    let accum = cfg.train.grad_accum;
    let coef = cfg.model.aux_loss_coef;
    let mut acc: Option<Grads<B::InnerBackend>> = None;
    let (mut loss_sum, mut aux_sum) = (0.0, 0.0);
    let mut load: Vec<Vec<f32>> = Vec::new();
    for _ in 0..accum {
        let batch = source.next_batch(cfg.train.micro_batch, cfg.data.seq_len);
        let s = forward_batch(model, &batch, device);
        loss_sum += scalar(&s.loss);
        aux_sum += scalar(&s.aux_loss);
        let objective = if coef > 0.0 {
            s.loss + s.aux_loss.mul_scalar(coef)
        } else {
            s.loss
        };
        let g = Grads::collect(model, objective.div_scalar(accum as f64).backward());
        acc = Some(match acc {
            None => g,
            Some(a) => a.sum(g),
        });
        if load.is_empty() {
            load = s.expert_load;
        } else {
            for (l, new) in load.iter_mut().zip(s.expert_load) {
                l.iter_mut().zip(new).for_each(|(a, b)| *a += b);
            }
        }
    }
    load.iter_mut().flatten().for_each(|x| *x /= accum as f32);
    StepGrads {
        grads: acc.expect("grad_accum ≥ 1"),
        loss: loss_sum / accum as f64,
        aux_loss: aux_sum / accum as f64,
        expert_load: load,
    }
}

fn scalar<B: burn::tensor::backend::Backend>(t: &Tensor<B, 1>) -> f64 {
    t.clone().into_scalar().elem()
}

/// Train from scratch as `cfg` says, on `device`.
pub fn train<B: AutodiffBackend>(
    cfg: &Config,
    opts: &TrainOptions,
    device: &B::Device,
) -> Result<TrainSummary> {
    let run = checkpoint::run_dir(cfg);
    let resume_from = match &cfg.train.resume {
        Resume::Never => None,
        Resume::Auto => checkpoint::latest(&run),
        Resume::Path(p) => Some(crate::cli::generate::resolve_checkpoint(Path::new(p))?),
    };
    if resume_from.is_none() && std::fs::read_dir(&run).is_ok_and(|mut d| d.next().is_some()) {
        if !opts.overwrite {
            return Err(Error::input(
                &run,
                "run directory already holds output of an earlier run; continue it with --resume, \
                 choose another name (--set run_name=NAME), or pass --overwrite to replace it",
            ));
        }
        std::fs::remove_dir_all(&run).map_err(|e| Error::io(&run, e))?;
    }
    std::fs::create_dir_all(&run).map_err(|e| Error::io(&run, e))?;

    let mut model: Grok<B> = cfg.model.init(cfg.seed, device);
    let params: Vec<ParamInfo> = params::list(&model);
    let settings = AdamWSettings::from(&cfg.train);
    let mut opt = AdamW::<B::InnerBackend>::new(settings, params.clone(), device);
    let (dataset, data_note) = data::training_data(cfg, opts.quiet)?;
    // Rank 0 of 1 until data parallelism lands; the cursor is global, so any world size resumes it.
    let mut source = dataset.sampler(cfg.data.seq_len, cfg.data.cross_shards, cfg.seed, 0, 1)?;
    let val_batches = super::eval::validation_set(cfg, &dataset)?;
    let mut state = TrainState {
        format_version: checkpoint::state::STATE_VERSION,
        step: 0,
        tokens: 0,
        sampler: source.cursor(),
        skipped_steps: 0,
    };
    let mut notes = vec![data_note];
    if let Some(dir) = &resume_from {
        check_resumable(cfg, dir, &mut notes)?;
        dataset.check_same_tokenizer(&dir.join(checkpoint::TOKENIZER_FILE))?;
        model = checkpoint::load_weights(model, dir)?;
        opt = checkpoint::state::load_optimizer(dir, &params, settings, device)?;
        state = checkpoint::state::read_state(dir)?;
        notes.extend(source.restore(state.sampler));
        notes.push(format!("resuming from {} (step {})", dir.display(), state.step));
    }
    let tokenizer = &dataset.tokenizer;
    data::tokenizer::save(tokenizer, &run.join(checkpoint::TOKENIZER_FILE))?;
    let counts = crate::model::params::count(&cfg.model);

    let t = &cfg.train;
    let mut progress = Progress::new(t.steps, t.log_every, opts.quiet, Some(&run.join("metrics.jsonl")))?;
    progress.println(&format!(
        "training {} ({} params, {} active) on {} tokens ({} shards, {} windows per epoch; {} validation \
         tokens); {} steps of {} tokens",
        cfg.run_name,
        counts.total,
        counts.active,
        dataset.manifest.train_tokens(),
        dataset.manifest.train.len(),
        source.samples_per_epoch(),
        dataset.manifest.val_tokens(),
        t.steps,
        t.tokens_per_step(cfg.data.seq_len),
    ));

    for note in &notes {
        progress.println(note);
    }
    let tokens_per_step = t.tokens_per_step(cfg.data.seq_len) as u64;
    let mut summary = TrainSummary {
        losses: Vec::with_capacity(t.steps),
        tokens: state.tokens,
        wall_s: 0.0,
        tokens_per_s: 0.0,
        params: counts,
        checkpoint: None,
        skipped_steps: state.skipped_steps,
    };
    let start = Instant::now();
    let first = state.step;
    let last = opts.stop_after.map_or(t.steps, |n| (first + n).min(t.steps));
    let mut tokens_this_run = 0u64;
    for step in first..last {
        let step_start = Instant::now();
        let lr = lr_at(t, step);
        let sg = accumulate(cfg, &model, &mut source, device);
        let (grads, grad_norm) = sg.grads.clip_global_norm(t.grad_clip);
        if sg.loss.is_finite() && grad_norm.is_finite() {
            model = opt.step(model, grads, lr);
        } else {
            summary.skipped_steps += 1;
            progress.println(&format!(
                "step {}: non-finite loss {} or gradient norm {grad_norm}; update skipped",
                step + 1,
                sg.loss
            ));
        }
        summary.tokens += tokens_per_step;
        tokens_this_run += tokens_per_step;
        summary.losses.push(sg.loss);
        let dt = step_start.elapsed().as_secs_f64();
        progress.step(&StepMetrics {
            step: step + 1,
            tokens: summary.tokens,
            loss: sg.loss,
            aux_loss: sg.aux_loss,
            lr,
            grad_norm,
            tokens_per_s: tokens_per_step as f64 / dt,
            step_time_s: dt,
            expert_load: sg.expert_load,
        })?;
        let done = step + 1;
        if t.eval_every > 0 && done.is_multiple_of(t.eval_every) {
            let val_loss = super::eval::batches_loss(&model.valid(), &val_batches, device);
            progress.validation(done, summary.tokens, val_loss)?;
        }
        if done == last || (t.checkpoint_every > 0 && done.is_multiple_of(t.checkpoint_every)) {
            state = TrainState {
                format_version: checkpoint::state::STATE_VERSION,
                step: done,
                tokens: summary.tokens,
                sampler: source.cursor(),
                skipped_steps: summary.skipped_steps,
            };
            let dir = checkpoint::save(cfg, &model, &params, &opt, &state, tokenizer)?;
            progress.println(&format!("saved {}", dir.display()));
            summary.checkpoint = Some(dir);
        }
    }
    progress.finish();
    summary.wall_s = start.elapsed().as_secs_f64();
    summary.tokens_per_s = tokens_this_run as f64 / summary.wall_s;
    if last < t.steps {
        progress.println(&format!(
            "stopped after step {last} of {}; continue with: colossus train CONFIG --resume",
            t.steps
        ));
    }
    Ok(summary)
}

/// A checkpoint can continue this config only if the model is the same; training settings
/// (steps, learning rates, logging) may change and each change is noted.
fn check_resumable(cfg: &Config, dir: &Path, notes: &mut Vec<String>) -> Result<()> {
    let old = checkpoint::read_config(dir)?;
    let (a, b) = (
        serde_json::to_value(&old.model).expect("json"),
        serde_json::to_value(&cfg.model).expect("json"),
    );
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (key, was) in a {
            let now = &b[key];
            if was != now && !matches!(key.as_str(), "init_std" | "aux_loss_coef") {
                return Err(Error::ConfigValue {
                    file: "config".into(),
                    key: format!("model.{key}"),
                    msg: format!(
                        "is {now} but checkpoint {} was trained with {was}; the model cannot change shape on resume",
                        dir.display()
                    ),
                });
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
                notes.push(format!("train.{key} changed on resume: {was} -> {}", b[key]));
            }
        }
    }
    if old.seed != cfg.seed || old.data != cfg.data {
        notes.push(
            "seed or data settings changed on resume: batches will differ from the original run".into(),
        );
    }
    Ok(())
}
