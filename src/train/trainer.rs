//! The training loop: micro-batches → loss → backward → accumulated gradients → global-norm
//! clip → AdamW at the scheduled learning rate; progress, metrics and periodic checkpoints.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use super::grads::Grads;
use super::loss_scale::{LossScale, Update};
use super::optim::{AdamW, AdamWSettings};
use super::params::{self, ParamInfo};
use super::progress::{Progress, StepMetrics};
use super::resume;
use super::schedule::lr_at;
use crate::backend::DeviceMemory;
use crate::checkpoint::lock::RunLock;
use crate::checkpoint::saver::{Saved, Saver};
use crate::checkpoint::state::TrainState;
use crate::checkpoint::{self, Snapshot};
use crate::config::{Config, Precision, Resume};
use crate::data::{self, Batch, BatchSource};
use crate::dist::{self, Dist};
use crate::error::{Error, Result};
use crate::model::{Grok, params::ParamCount};

#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// No bar and no log lines (tests, scripted use).
    pub quiet: bool,
    /// Plain log lines every `train.log_every` steps instead of a bar, even on a terminal.
    pub log_lines: bool,
    /// Replace an existing run directory of the same name instead of refusing to start.
    pub overwrite: bool,
    /// Stop (with a checkpoint) after this many steps of this invocation; `--resume` continues.
    pub stop_after: Option<usize>,
    /// Set by a signal handler: finish the current step, save, and return.
    pub stop: Option<Arc<AtomicBool>>,
    /// Test hook: treat the loss of this step and every later one as NaN.
    #[doc(hidden)]
    pub poison_from_step: Option<usize>,
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
    /// The run stopped early because `TrainOptions::stop` was set (SIGINT/SIGTERM).
    pub interrupted: bool,
    /// Every save this invocation made, with its throughput and training stall.
    pub saves: Vec<Saved>,
}

/// Loss and router statistics for one micro-batch.
pub struct MicroStep<B: AutodiffBackend> {
    pub loss: Tensor<B, 1>,
    /// The balancing loss to train on, when asked for (`forward_batch`'s `train_aux`).
    pub aux_loss: Option<Tensor<B, 1>>,
    /// Its value (whether or not it was asked for), from the host.
    pub aux_value: f64,
    pub expert_load: Vec<Vec<f32>>,
}

/// Forward one batch: next-token cross-entropy (plus the router statistics, and the balancing
/// loss as a tensor when `train_aux`).
pub fn forward_batch<B: AutodiffBackend>(
    model: &Grok<B>,
    batch: &Batch,
    device: &B::Device,
    train_aux: bool,
) -> MicroStep<B> {
    let shape = [batch.batch, batch.seq];
    let inputs = Tensor::<B, 2, Int>::from_data(TensorData::new(batch.inputs.clone(), shape), device);
    let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(batch.targets.clone(), shape), device);
    let out = model.forward(inputs, None);
    MicroStep {
        aux_loss: train_aux.then(|| out.aux_loss()),
        aux_value: out.aux_value(),
        expert_load: out.expert_load(),
        loss: super::loss::cross_entropy(out.logits, targets),
    }
}

/// Gradients with the loss and router statistics they came with: of one micro-batch or one row
/// shard of it (the gradients already weighted in its objective, the statistics not), or of a
/// whole optimizer step (averaged over its `grad_accum` micro-batches).
pub struct StepGrads<B: AutodiffBackend> {
    pub grads: Grads<B::InnerBackend>,
    pub loss: f64,
    pub aux_loss: f64,
    pub expert_load: Vec<Vec<f32>>,
    /// Wall seconds spent in the forward passes, up to each loss's read-back (which waits for
    /// the device; of row shards run at once, the slowest): `colossus bench` splits a step into
    /// forward, backward and optimizer with it.
    pub forward_s: f64,
    /// A GPU's memory at the end of the forward (every activation the backward needs is alive
    /// then; the backward frees them as it makes the gradients), the high-water mark over the
    /// micro-batches. `None` on the CPU.
    pub device_mem: Option<DeviceMemory>,
}

/// `acc += weight · new`, layer by layer, for per-layer expert loads; an empty `acc` becomes
/// `weight · new`.
pub(crate) fn add_expert_load(acc: &mut Vec<Vec<f32>>, new: Vec<Vec<f32>>, weight: f32) {
    if acc.is_empty() {
        *acc = new
            .into_iter()
            .map(|l| l.into_iter().map(|x| x * weight).collect())
            .collect();
        return;
    }
    for (a, layer) in acc.iter_mut().zip(new) {
        a.iter_mut().zip(layer).for_each(|(a, x)| *a += x * weight);
    }
}

/// Forward and backward over `grad_accum` micro-batches from `source`.
pub fn accumulate<B: AutodiffBackend>(
    cfg: &Config,
    model: &Grok<B>,
    source: &mut dyn BatchSource,
    device: &B::Device,
) -> StepGrads<B> {
    accumulate_rank(cfg, model, source, device, &Dist::single(), 1.0)
}

/// `accumulate` on `dist`'s rows of each global micro-batch (split further into
/// `train.cpu_workers` concurrent shards on the CPU backend, see `dist::workers`), with the
/// objective multiplied by `loss_scale` before each backward (f16's loss scaling; 1 otherwise):
/// the gradients come back scaled, the reported losses do not.
pub fn accumulate_rank<B: AutodiffBackend>(
    cfg: &Config,
    model: &Grok<B>,
    source: &mut dyn BatchSource,
    device: &B::Device,
    dist: &Dist,
    loss_scale: f64,
) -> StepGrads<B> {
    let accum = cfg.train.grad_accum;
    let coef = cfg.model.aux_loss_coef;
    let shards = if crate::backend::is_cpu::<B>() {
        cfg.train.cpu_workers
    } else {
        1
    };
    let mut acc: Option<Grads<B::InnerBackend>> = None;
    let (mut loss_sum, mut aux_sum) = (0.0, 0.0);
    let mut load: Vec<Vec<f32>> = Vec::new();
    let mut forward_s = 0.0;
    let mut device_mem = None;
    for _ in 0..accum {
        let batch = source.next_batch(cfg.train.micro_batch, cfg.data.seq_len);
        let batch = dist::split::slice(
            batch,
            dist::split::rows(cfg.train.micro_batch, dist.rank, dist.world),
        );
        let m = dist::workers::micro_step(model, batch, shards, |model, batch, share| {
            micro_pass(model, batch, device, coef, accum, share * loss_scale)
        });
        loss_sum += m.loss;
        aux_sum += m.aux_loss;
        forward_s += m.forward_s;
        device_mem = DeviceMemory::merge(device_mem, m.device_mem);
        acc = Some(match acc {
            None => m.grads,
            Some(a) => a.sum(m.grads),
        });
        add_expert_load(&mut load, m.expert_load, 1.0);
    }
    load.iter_mut().flatten().for_each(|x| *x /= accum as f32);
    StepGrads {
        grads: acc.expect("grad_accum ≥ 1"),
        loss: loss_sum / accum as f64,
        aux_loss: aux_sum / accum as f64,
        expert_load: load,
        forward_s,
        device_mem,
    }
}

/// Forward and backward of one batch (or one shard of it): the gradients of
/// (loss + coef·aux) / accum · weight, where `weight` is the shard's share of the rows times the
/// loss scale (a power of two, so the product is exact).
fn micro_pass<B: AutodiffBackend>(
    model: &Grok<B>,
    batch: &Batch,
    device: &B::Device,
    coef: f64,
    accum: usize,
    weight: f64,
) -> StepGrads<B> {
    let start = Instant::now();
    let s = forward_batch(model, batch, device, coef > 0.0);
    let loss = scalar(&s.loss);
    let forward_s = start.elapsed().as_secs_f64();
    let device_mem = crate::backend::device_memory::<B>(device);
    let aux_loss = s.aux_value;
    let objective = match s.aux_loss {
        Some(aux) => s.loss + aux.mul_scalar(coef),
        None => s.loss,
    };
    let mut objective = objective.div_scalar(accum as f64);
    if weight != 1.0 {
        objective = objective.mul_scalar(weight);
    }
    StepGrads {
        grads: Grads::collect(model, objective.backward()),
        loss,
        aux_loss,
        expert_load: s.expert_load,
        forward_s,
        device_mem,
    }
}

fn scalar<B: burn::tensor::backend::Backend>(t: &Tensor<B, 1>) -> f64 {
    t.clone().into_scalar().elem()
}

/// Train as `cfg` says, on `device`: from scratch, or from a checkpoint when `cfg.train.resume`
/// asks for one; as one rank, or as the ranks of this process when `cfg.distributed` says so.
pub fn train<B: AutodiffBackend>(
    cfg: &Config,
    opts: &TrainOptions,
    device: &B::Device,
) -> Result<TrainSummary> {
    dist::run::<B>(cfg, opts, device.clone())
}

/// The loop of one rank (`Dist::single()` for plain training). Only the leader (rank 0) touches
/// the run directory, the progress bar and metrics.
pub fn train_rank<B: AutodiffBackend>(
    cfg: &Config,
    opts: &TrainOptions,
    device: &B::Device,
    dist: &Dist,
) -> Result<TrainSummary> {
    let leader = dist.is_leader();
    let run = checkpoint::run_dir(cfg);
    if leader {
        cfg.create_dir("train.out_dir", Path::new(&cfg.train.out_dir))?;
    }
    // Before the checkpoint to resume is chosen, so that it cannot change under this process;
    // held to the function's end, past the saver's last write (locals drop in reverse order).
    let _lock = leader.then(|| RunLock::acquire(&run)).transpose()?;
    let candidates = resume::candidates(cfg)?;
    crate::model::precision::check::<B>(cfg.precision, cfg.backend, device)?;
    super::fits::check_training(cfg)?;
    let mut model: Grok<B> = cfg.model.init(cfg.seed, device);
    let params: Vec<ParamInfo> = params::list(&model);
    let settings = AdamWSettings::from(&cfg.train);
    let mut notes = Vec::new();
    let resumed = resume::load(cfg, &candidates, &model, &params, settings, device, &mut notes)?;
    let has_output = leader && std::fs::read_dir(&run).is_ok_and(|mut d| d.next().is_some());
    let replace = resumed.is_none() && has_output && cfg.train.resume != Resume::Auto;
    if replace && !opts.overwrite {
        return Err(Error::input(
            &run,
            "run directory already holds output of an earlier run; continue it with --resume, \
             choose another name (--set run_name=NAME), or pass --overwrite to replace it",
        ));
    }
    if replace {
        resume::check_replaceable(&run)?;
    }

    let mut opt = AdamW::<B::InnerBackend>::new(settings, params.clone(), device);
    let (dataset, data_note) = data::training_data_or_stop(cfg, opts.quiet, opts.stop.clone())?;
    // Every rank draws the whole global batch from one global sample stream and keeps its own rows
    // (`accumulate_rank`): exactly the 1-rank batch, and the cursor is the same on every rank.
    let mut source = dataset.sampler(cfg.data.seq_len, cfg.data.cross_shards, cfg.seed, 0, 1)?;
    let val_batches = super::eval::validation_set(cfg, &dataset)?;
    let mut state = TrainState {
        format_version: checkpoint::state::STATE_VERSION,
        step: 0,
        tokens: 0,
        sampler: source.cursor(),
        skipped_steps: 0,
        loss_scale: None,
    };
    // f16's dynamic loss scale (`train::loss_scale`); other precisions need none.
    let f16 = cfg.precision == Precision::F16;
    let mut scaler = f16.then(|| LossScale::new(cfg.train.loss_scale_init));
    notes.insert(0, data_note);
    if let Some(r) = resumed {
        dataset.check_same_tokenizer(&r.dir.join(checkpoint::TOKENIZER_FILE))?;
        model = r.model;
        match (r.opt, r.state) {
            (Some(o), Some(s)) => {
                opt = o;
                state = s;
                match state.loss_scale {
                    Some(s) if f16 => scaler = Some(s),
                    None if f16 => notes.push(format!(
                        "the checkpoint holds no f16 loss scale (it did not train in f16): starting at \
                         train.loss_scale_init = {}",
                        cfg.train.loss_scale_init
                    )),
                    _ => {}
                }
                notes.extend(source.restore(state.sampler));
                notes.push(format!("resuming from {} (step {})", r.dir.display(), state.step));
            }
            _ => notes.push(format!(
                "fine-tuning from the weights of {} (weights only: fresh optimizer, step 0)",
                r.dir.display()
            )),
        }
    }
    // --overwrite empties the run directory only here, after every check of the inputs (the
    // data, its validation split, a resumed checkpoint's tokenizer): a run that stops on a bad
    // input leaves the earlier run's checkpoints as they were.
    if replace {
        std::fs::remove_dir_all(&run).map_err(|e| Error::io(&run, e))?;
    }
    if leader {
        std::fs::create_dir_all(&run).map_err(|e| Error::io(&run, e))?;
    }
    for stale in if leader {
        resume::remove_stale_temps(&run)?
    } else {
        Vec::new()
    } {
        notes.push(format!(
            "removed {}, left half-written by an earlier process",
            stale.display()
        ));
    }
    // Records past the checkpoint (or all of them, on a fresh start) belong to a run that died.
    let dropped = if leader {
        resume::trim_metrics(&run, state.step)?
    } else {
        0
    };
    if dropped > 0 {
        notes.push(format!(
            "dropped {dropped} metrics.jsonl records past step {} (logged after the last checkpoint)",
            state.step
        ));
    }
    let tokenizer = &dataset.tokenizer;
    if leader {
        data::tokenizer::save(tokenizer, &run.join(checkpoint::TOKENIZER_FILE))?;
    }
    // Every rank runs the same job from rank 0's weights (a no-op on one rank).
    model = dist
        .start(cfg, &state, model, device)?
        .with_precision(cfg.precision)
        .with_attention(cfg.attention);
    // ZeRO-1: keep moments only for this rank's parameters (`dist::zero`).
    let zero_mine: Option<Vec<bool>> = (cfg.distributed.zero1 && dist.world > 1).then(|| {
        let owner = dist::zero::owners(&params, dist.world);
        let freed = dist::zero::shard(&mut opt, &owner, dist.rank);
        notes.push(format!(
            "ZeRO-1: rank {} keeps AdamW moments for {} of {} parameter tensors, {:.1} MB less optimizer state",
            dist.rank,
            owner.iter().filter(|&&o| o == dist.rank).count(),
            owner.len(),
            freed as f64 / 1e6
        ));
        owner.iter().map(|&o| o == dist.rank).collect()
    });
    let counts = crate::model::params::count(&cfg.model);

    let t = &cfg.train;
    let metrics = leader.then(|| run.join("metrics.jsonl"));
    let mut progress = Progress::new(
        t.steps,
        t.log_every,
        opts.quiet || !leader,
        opts.log_lines,
        metrics.as_deref(),
    )?;
    let peak = super::mfu::peak_tflops::<B::InnerBackend>(cfg.backend, cfg.precision, t.peak_tflops, device);
    let flops_per_token = crate::model::params::train_flops_per_token(&cfg.model, cfg.data.seq_len);
    match &peak {
        Ok((p, source)) => notes.push(format!("MFU against a peak of {p:.3} TFLOP/s ({source})")),
        Err(why) => notes.push(format!("no MFU logged: the peak is {why}")),
    }
    let peak = peak.ok();
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
        // Grown step by step: reserving train.steps up front asked for 8 bytes a step at once (34 GB
        // for 2^32 steps, an abort under a memory limit) for a run that may stop after one.
        losses: Vec::new(),
        tokens: state.tokens,
        wall_s: 0.0,
        tokens_per_s: 0.0,
        params: counts,
        checkpoint: None,
        skipped_steps: state.skipped_steps,
        interrupted: false,
        saves: Vec::new(),
    };
    let mut saver = Saver::new(run.clone(), t.keep_last);
    let start = Instant::now();
    let first = state.step;
    let mut last = opts.stop_after.map_or(t.steps, |n| (first + n).min(t.steps));
    // A signal during start-up (preparing a large corpus takes a while) stops before the first
    // step: it once trained and saved one step after the user asked to stop. One rank only:
    // several learn of a stop through the first step's all-reduce.
    if dist.world == 1 && opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
        summary.interrupted = true;
        last = first;
    }
    let mut tokens_this_run = 0u64;
    let mut nonfinite_run = 0usize;
    let mut step = first;
    while step < last {
        let step_start = Instant::now();
        let lr = lr_at(t, step);
        let scale = scaler.map_or(1.0, |s| s.factor());
        let sg = accumulate_rank(cfg, &model, &mut source, device, dist, scale);
        let local_stop = opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
        let (sg, any_stop) = match reduce_step(dist, sg, local_stop) {
            Ok(r) => r,
            Err(e) => return Err(abort(&mut saver, &progress, &mut summary, e)),
        };
        let (grads, grad_norm) = sg.grads.unscale_and_clip(scale, t.grad_clip);
        let poisoned = opts.poison_from_step.is_some_and(|p| step + 1 >= p);
        let loss = if poisoned { f64::NAN } else { sg.loss };
        let finite = loss.is_finite() && grad_norm.is_finite();
        // Under f16, gradients that overflow while the loss is finite are the scale's doing
        // (until it is down to 1): skip the step and halve the scale, but do not count the step
        // towards divergence. Every rank sees the same reduced gradients, so the same scale.
        let update = scaler
            .as_mut()
            .map(|s| s.update(finite, t.loss_scale_growth_interval));
        let overflow = loss.is_finite() && update == Some(Update::Halved);
        if finite {
            model = opt.step(model, grads, lr);
            if let Some(mine) = &zero_mine {
                model = match dist.share_module(model, mine, "ZeRO-1 weight exchange") {
                    Ok(m) => m,
                    Err(e) => return Err(abort(&mut saver, &progress, &mut summary, e)),
                };
            }
            nonfinite_run = 0;
        } else if overflow {
            summary.skipped_steps += 1;
            progress.println(&format!(
                "step {}: f16 gradients overflowed at loss scale {scale}; update skipped, loss scale now {}",
                step + 1,
                scale / 2.0,
            ));
        } else {
            summary.skipped_steps += 1;
            nonfinite_run += 1;
            progress.println(&format!(
                "step {}: non-finite loss {loss} or gradient norm {grad_norm}; update skipped ({nonfinite_run} in a row, limit train.max_nonfinite_steps = {})",
                step + 1,
                t.max_nonfinite_steps,
            ));
        }
        step += 1;
        summary.tokens += tokens_per_step;
        tokens_this_run += tokens_per_step;
        summary.losses.push(loss);
        let dt = step_start.elapsed().as_secs_f64();
        progress.step(&StepMetrics {
            step,
            tokens: summary.tokens,
            loss,
            aux_loss: sg.aux_loss,
            lr,
            grad_norm,
            tokens_per_s: tokens_per_step as f64 / dt,
            step_time_s: dt,
            mfu: peak
                .as_ref()
                .map(|(p, _)| super::mfu::mfu(tokens_per_step as f64 / dt, flops_per_token, *p)),
            peak_mem_bytes: super::mfu::peak_rss_bytes(),
            device_mem_bytes: sg.device_mem.map(|m| m.in_use),
            loss_scale: f16.then_some(scale),
            expert_load: sg.expert_load,
        })?;
        if let Some(saved) = saver.poll()? {
            log_saved(&progress, &saved, &mut summary);
        }
        // Validation is the leader's alone: it only feeds the log.
        if leader && t.eval_every > 0 && step.is_multiple_of(t.eval_every) {
            let val_loss = super::eval::batches_loss(&model.valid(), &val_batches, device);
            progress.validation(step, summary.tokens, val_loss)?;
        }
        let diverged = nonfinite_run >= t.max_nonfinite_steps;
        // One rank: the flag as it is now. Several: whether any rank had it before the
        // all-reduce, so that all stop after the same step.
        let signalled = if dist.world == 1 {
            opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
        } else {
            any_stop
        };
        let periodic = t.checkpoint_every > 0 && step.is_multiple_of(t.checkpoint_every);
        let save = step == last || periodic || diverged || signalled;
        // Every rank takes part in gathering ZeRO-1 moments for rank 0's checkpoint.
        let full_opt = match (&zero_mine, save) {
            (Some(_), true) => match dist.gather_moments(&opt) {
                Ok(o) => Some(o),
                Err(e) => return Err(abort(&mut saver, &progress, &mut summary, e)),
            },
            _ => None,
        };
        if leader && save {
            state = TrainState {
                format_version: checkpoint::state::STATE_VERSION,
                step,
                tokens: summary.tokens,
                sampler: source.cursor(),
                skipped_steps: summary.skipped_steps,
                loss_scale: scaler,
            };
            let snap_start = Instant::now();
            let opt_now = full_opt.as_ref().unwrap_or(&opt);
            let snap = Snapshot::take(cfg, &model, &params, opt_now, &state, tokenizer)?;
            if let Some(saved) = saver.submit(snap, snap_start.elapsed().as_secs_f64())? {
                log_saved(&progress, &saved, &mut summary);
            }
        }
        if diverged {
            if let Some(saved) = saver.wait()? {
                log_saved(&progress, &saved, &mut summary);
            }
            progress.finish();
            return Err(Error::Train(format!(
                "stopped at step {step}: {nonfinite_run} steps in a row had a non-finite loss or gradient \
                 norm (train.max_nonfinite_steps = {}); the weights of the last good step are saved in {}. \
                 Lower train.lr or raise train.warmup_steps, then continue with --resume",
                t.max_nonfinite_steps,
                run.join(checkpoint::step_dir_name(step)).display()
            )));
        }
        if signalled {
            summary.interrupted = true;
            break;
        }
    }
    if let Some(saved) = saver.wait()? {
        log_saved(&progress, &saved, &mut summary);
    }
    progress.finish();
    summary.wall_s = start.elapsed().as_secs_f64();
    summary.tokens_per_s = tokens_this_run as f64 / summary.wall_s;
    if step < t.steps {
        progress.println(&format!(
            "{} after step {step} of {}; continue with: colossus train CONFIG --resume",
            if summary.interrupted {
                "interrupted"
            } else {
                "stopped"
            },
            t.steps
        ));
    }
    Ok(summary)
}

/// Average the step's gradients, loss and router load over the ranks, and learn whether any rank
/// was asked to stop.
fn reduce_step<B: AutodiffBackend>(
    dist: &Dist,
    sg: StepGrads<B>,
    stop: bool,
) -> Result<(StepGrads<B>, bool)> {
    if dist.world == 1 {
        return Ok((sg, stop));
    }
    let widths: Vec<usize> = sg.expert_load.iter().map(|l| l.len()).collect();
    let (forward_s, device_mem) = (sg.forward_s, sg.device_mem);
    let mut extras = vec![sg.loss as f32, sg.aux_loss as f32, if stop { 1.0 } else { 0.0 }];
    extras.extend(sg.expert_load.iter().flatten());
    let (grads, extras) = dist.mean_grads(sg.grads, extras)?;
    let mut rest = &extras[3..];
    let expert_load = widths
        .into_iter()
        .map(|w| {
            let (l, r) = rest.split_at(w);
            rest = r;
            l.to_vec()
        })
        .collect();
    let reduced = StepGrads {
        grads,
        loss: extras[0] as f64,
        aux_loss: extras[1] as f64,
        expert_load,
        forward_s,
        device_mem,
    };
    Ok((reduced, extras[2] > 0.0))
}

/// A collective failed mid-run: let the checkpoint being written complete, then report `e`.
fn abort(saver: &mut Saver, progress: &Progress, summary: &mut TrainSummary, e: Error) -> Error {
    match saver.wait() {
        Ok(Some(saved)) => log_saved(progress, &saved, summary),
        Ok(None) => {}
        Err(save_err) => progress.println(&format!("the last checkpoint failed too: {save_err}")),
    }
    progress.finish();
    e
}

fn log_saved(progress: &Progress, saved: &Saved, summary: &mut TrainSummary) {
    let r = &saved.report;
    progress.println(&format!(
        "saved {} ({:.1} MB in {:.2}s, {:.0} MB/s; training waited {:.0} ms)",
        r.dir.display(),
        r.bytes as f64 / 1e6,
        r.write_s,
        r.mb_per_s(),
        saved.stall_s * 1e3
    ));
    for p in &saved.pruned {
        progress.println(&format!("removed {} (train.keep_last)", p.display()));
    }
    summary.checkpoint = Some(r.dir.clone());
    summary.saves.push(saved.clone());
}
