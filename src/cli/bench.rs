//! `colossus bench CONFIG`: training throughput on random tokens, shaped like
//! shared/reference/torch_train_peer.py (same model, AdamW, global-norm clip 1.0) so the two
//! compare directly. Prints tokens/s, model TFLOP/s (`model::params::train_flops_per_token`),
//! MFU against the device's peak, and peak memory.

use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;

use super::BenchArgs;
use crate::backend::{self, DeviceMemory, Job};
use crate::config::{self, Config, Precision};
use crate::data::{Batch, BatchSource};
use crate::dist::Dist;
use crate::error::{Error, Result};
use crate::model::params::{count, train_flops_per_token};
use crate::model::{Grok, moe};
use crate::rng::Rng;
use crate::train::loss_scale::LossScale;
use crate::train::optim::{AdamW, AdamWSettings};
use crate::train::{mfu, params, trainer};

/// Uniformly random token ids, as the PyTorch peer uses.
struct RandomTokens {
    rng: Rng,
    vocab: u64,
}

impl BatchSource for RandomTokens {
    fn next_batch(&mut self, batch: usize, seq: usize) -> Batch {
        let mut draw = || {
            (0..batch * seq)
                .map(|_| self.rng.below(self.vocab) as i64)
                .collect::<Vec<_>>()
        };
        let inputs = draw();
        let targets = draw();
        Batch {
            batch,
            seq,
            inputs,
            targets,
        }
    }
}

struct BenchJob {
    cfg: Config,
    steps: usize,
    warmup: usize,
}

pub struct BenchResult {
    pub tokens_per_s: f64,
    pub model_tflops: f64,
    pub peak_tflops: f64,
    pub peak_source: String,
    pub final_loss: f64,
    /// Mean milliseconds per measured step in each phase (gradient clipping counts as optimizer).
    pub step_ms: Phases,
    /// The fastest, median and slowest measured step, whole (milliseconds).
    pub step_spread: Spread,
    /// The host's routing time per step, in milliseconds (`moe::take_route_time`): on a GPU,
    /// time the device waits on the host, once per MoE layer and micro-batch.
    pub route_ms: f64,
    /// The process's peak resident memory.
    pub host_rss_gib: f64,
    /// On a GPU, the high-water mark of the device memory over the measured steps, sampled at
    /// the end of each forward and after each backward (`backend::device_memory`).
    pub device_mem: Option<DeviceMemory>,
    /// `precision: f16`: the loss scale at the end, and how many measured steps overflowed
    /// (skipped, as training skips them).
    pub loss_scale: Option<(f64, usize)>,
}

/// Time in the three phases of a training step.
#[derive(Debug, Default, Clone, Copy)]
pub struct Phases {
    pub forward: f64,
    pub backward: f64,
    pub optimizer: f64,
}

/// How the measured steps' times spread. Why it is printed: on a GPU a timed step that meets a
/// new expert row count can compile (NVRTC) or autotune a kernel first, which the mean hides
/// but a slowest step far above the median shows (docs/benchmarks.md, "Expert shapes").
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// NaN everywhere for no values; the median of an even count is the mean of the middle two.
    pub fn of(values: &[f64]) -> Spread {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            return Spread {
                min: f64::NAN,
                median: f64::NAN,
                max: f64::NAN,
            };
        }
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            0.5 * (v[n / 2 - 1] + v[n / 2])
        };
        Spread {
            min: v[0],
            median,
            max: v[n - 1],
        }
    }
}

impl Job for BenchJob {
    type Output = BenchResult;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<BenchResult> {
        let cfg = &self.cfg;
        crate::model::precision::check::<B>(cfg.precision, cfg.backend, &device)?;
        crate::train::fits::check_training(cfg)?;
        let mut model: Grok<B> = cfg
            .model
            .init(cfg.seed, &device)
            .with_precision(cfg.precision)
            .with_attention(cfg.attention);
        let mut opt =
            AdamW::<B::InnerBackend>::new(AdamWSettings::from(&cfg.train), params::list(&model), &device);
        let mut source = RandomTokens {
            rng: Rng::derive(cfg.seed, "bench"),
            vocab: cfg.model.vocab_size as u64,
        };
        let mut loss = f64::NAN;
        let mut start = Instant::now();
        let mut phases = Phases::default();
        let mut device_mem = None;
        // Under f16 the loss is scaled as in training (`train::loss_scale`), so an overflowing
        // step is skipped rather than turning the weights into NaN.
        let mut scaler = (cfg.precision == Precision::F16).then(|| LossScale::new(cfg.train.loss_scale_init));
        let mut overflows = 0;
        // Grown, not reserved, and the count saturated: `--steps` near 2^64 panicked on both.
        let mut step_ms = Vec::new();
        for i in 0..self.warmup.saturating_add(self.steps) {
            if i == self.warmup {
                start = Instant::now();
                phases = Phases::default();
                device_mem = None;
                step_ms.clear();
                let _ = moe::take_route_time();
            }
            // `accumulate` reads the loss back to the host every micro-batch, so each forward
            // is complete (no queued device work) when its clock is read; the syncs below close
            // the backward and the optimizer the same way.
            let t0 = Instant::now();
            let scale = scaler.map_or(1.0, |s| s.factor());
            let sg = trainer::accumulate_rank(cfg, &model, &mut source, &device, &Dist::single(), scale);
            let _ = B::sync(&device);
            let t1 = Instant::now();
            // The gradients, the weights and AdamW's moments are all alive here.
            let after_backward = backend::device_memory::<B>(&device);
            device_mem = DeviceMemory::merge(device_mem, DeviceMemory::merge(sg.device_mem, after_backward));
            let (g, norm) = sg.grads.unscale_and_clip(scale, cfg.train.grad_clip);
            if let Some(s) = scaler.as_mut() {
                s.update(norm.is_finite(), cfg.train.loss_scale_growth_interval);
                overflows += usize::from(!norm.is_finite() && i >= self.warmup);
            }
            if norm.is_finite() || scaler.is_none() {
                model = opt.step(model, g, cfg.train.lr);
            }
            let _ = B::sync(&device);
            phases.forward += sg.forward_s;
            phases.backward += (t1 - t0).as_secs_f64() - sg.forward_s;
            phases.optimizer += t1.elapsed().as_secs_f64();
            step_ms.push(1e3 * t0.elapsed().as_secs_f64());
            loss = sg.loss;
        }
        let wall = start.elapsed().as_secs_f64();
        let route_s = moe::take_route_time().as_secs_f64();
        let per_step = |s: f64| 1e3 * s / self.steps.max(1) as f64;
        let tokens = (self.steps * cfg.train.tokens_per_step(cfg.data.seq_len)) as f64;
        let tokens_per_s = tokens / wall;
        let model_tflops = tokens_per_s * train_flops_per_token(&cfg.model, cfg.data.seq_len) / 1e12;
        let (peak_tflops, peak_source) =
            mfu::peak_tflops::<B::InnerBackend>(cfg.backend, cfg.precision, cfg.train.peak_tflops, &device)
                .unwrap_or_else(|why| (0.0, why));
        Ok(BenchResult {
            tokens_per_s,
            model_tflops,
            peak_tflops,
            peak_source,
            final_loss: loss,
            step_ms: Phases {
                forward: per_step(phases.forward),
                backward: per_step(phases.backward),
                optimizer: per_step(phases.optimizer),
            },
            step_spread: Spread::of(&step_ms),
            route_ms: per_step(route_s),
            host_rss_gib: mfu::peak_rss_bytes().map_or(f64::NAN, gib),
            device_mem,
            loss_scale: scaler.map(|s| (s.factor(), overflows)),
        })
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    let flags = [
        (args.batch.is_some(), "--batch", "train.micro_batch"),
        (args.seq.is_some(), "--seq", "data.seq_len"),
    ];
    run_config(args).map_err(|e| blame_flag(e, &flags))
}

/// `--batch` and `--seq` reach the config as `--set` overrides, so a refusal of their value
/// (validation, the memory check) names the config key; the user typed the flag.
fn blame_flag(err: Error, flags: &[(bool, &str, &str)]) -> Error {
    match err {
        Error::ConfigValue { key, msg, file } => {
            match flags.iter().find(|(given, _, k)| *given && *k == key) {
                Some((_, flag, _)) => Error::Flag {
                    flag: flag.to_string(),
                    msg: format!("{msg} ({flag} sets `{key}` of {file})"),
                },
                None => Error::ConfigValue { file, key, msg },
            }
        }
        other => other,
    }
}

fn run_config(args: BenchArgs) -> Result<()> {
    let mut sets = args.config.set.clone();
    if let Some(b) = args.batch {
        sets.push(format!("train.micro_batch={b}"));
    }
    if let Some(s) = args.seq {
        sets.push(format!("data.seq_len={s}"));
    }
    let cfg = config::load(&args.config.config, &sets)?;
    // Each compares a path with another; where the config never takes that path, the run would
    // measure nothing the flag names, under its label.
    if args.f32_head && cfg.precision == crate::config::Precision::F32 {
        return Err(crate::error::Error::Flag {
            flag: "--f32-head".into(),
            msg: "widens a half-precision head, and the config's precision is f32: add --set \
                  precision=bf16"
                .into(),
        });
    }
    if args.composed_flash_backward && cfg.attention != crate::config::AttentionKernel::Flash {
        return Err(crate::error::Error::Flag {
            flag: "--composed-flash-backward".into(),
            msg: format!(
                "replaces the flash backward, and the config's attention is {}: add --set attention=flash",
                cfg.attention.name()
            ),
        });
    }
    if args.checkpoint {
        return super::bench_checkpoint::run(cfg, args.steps.clamp(1, 3));
    }
    if args.check_flash_backward {
        return super::bench_flash::run(cfg);
    }
    if args.data {
        return super::bench_data::run(&cfg);
    }
    if let Some(path) = &args.peer_json {
        // Token ids do not matter to a throughput peer; 0 stands for bos/eos/pad.
        let json = crate::checkpoint::hf::config_json(&cfg.model, 0, 0, 0);
        let text = serde_json::to_string_pretty(&json).expect("json");
        std::fs::write(path, text + "\n").map_err(|e| crate::error::Error::Flag {
            flag: "--peer-json".into(),
            msg: format!("cannot write {}: {e}", path.display()),
        })?;
        println!("wrote {}", path.display());
        return Ok(());
    }
    let p = count(&cfg.model);
    let (kind, device, precision, attention) = (cfg.backend, cfg.device, cfg.precision, cfg.attention);
    let (batch, seq) = (cfg.train.micro_batch * cfg.train.grad_accum, cfg.data.seq_len);
    let job = BenchJob {
        cfg,
        steps: args.steps,
        warmup: args.warmup,
    };
    if args.compile_only {
        return compile_only(job, &args);
    }
    let r = with_scopes(&args, || backend::dispatch(kind, device, job))?;
    let attention = attention_label(attention);
    let mfu = if r.peak_tflops > 0.0 {
        format!("{:.1}%", 100.0 * r.model_tflops / r.peak_tflops)
    } else {
        "n/a".into()
    };
    // `peak_mem_gib` means what the PyTorch peer's does: device memory in tensors on a GPU
    // (torch.cuda.max_memory_allocated there), the process's memory on the CPU.
    let memory = match r.device_mem {
        Some(m) => format!(
            "peak_mem_gib={:.2} device_reserved_gib={:.2} host_rss_gib={:.2}",
            gib(m.in_use),
            gib(m.reserved),
            r.host_rss_gib
        ),
        None => format!("peak_mem_gib={:.2}", r.host_rss_gib),
    };
    let scale = r.loss_scale.map_or(String::new(), |(s, n)| {
        format!(" loss_scale={s} overflowed_steps={n}")
    });
    println!(
        "backend={}{} precision={}{}{}{scale} attention={attention} params={} active={} batch={batch} seq={seq} steps={} loss={:.3} tokens_per_s={:.0} \
         model_tflops={:.4} peak_tflops={:.4} ({}) mfu={mfu} {memory} route_ms={:.3} \
         step_ms=forward:{:.0},backward:{:.0},optimizer:{:.0} step_ms_spread=min:{:.1},median:{:.1},max:{:.1}",
        kind.name(),
        if args.plain_kernels { " kernels=plain" } else { "" },
        precision.name(),
        if args.f32_head { " head=f32" } else { "" },
        if args.per_expert_moe {
            " moe=per-expert"
        } else {
            ""
        },
        p.total,
        p.active,
        args.steps,
        r.final_loss,
        r.tokens_per_s,
        r.model_tflops,
        r.peak_tflops,
        r.peak_source,
        r.route_ms,
        r.step_ms.forward,
        r.step_ms.backward,
        r.step_ms.optimizer,
        r.step_spread.min,
        r.step_spread.median,
        r.step_spread.max
    );
    Ok(())
}

/// Run `f` under the kernel choices the flags ask for.
fn with_scopes<R>(args: &BenchArgs, f: impl FnOnce() -> R) -> R {
    use crate::model::flash::{self, BackwardKind};
    let backward = if args.composed_flash_backward {
        BackwardKind::Composed
    } else {
        BackwardKind::Auto
    };
    let f = || {
        crate::model::precision::f32_head_scope(args.f32_head, || {
            crate::model::fused::with_plain(args.plain_kernels, || flash::backward_scope(backward, f))
        })
    };
    if args.per_expert_moe {
        crate::model::experts::grouped_scope(false, f)
    } else {
        f()
    }
}

/// The attention core as it ran: under `attention: flash`, which forward kernel (tensor cores
/// or not, or the composed fallback where neither could be set up) and which backward.
fn attention_label(attention: crate::config::AttentionKernel) -> String {
    if attention != crate::config::AttentionKernel::Flash {
        return attention.name().to_string();
    }
    match (backend::flash_routine(), crate::model::flash::backward_routine()) {
        (Some(forward), Some(backward)) => format!("flash/{forward} flash_backward={backward}"),
        (Some(forward), None) => format!("flash/{forward}"),
        _ => attention.name().to_string(),
    }
}

/// `--compile-only`: the steps on `backend::cuda_check`'s stand-in device.
#[cfg(feature = "cuda")]
fn compile_only(mut job: BenchJob, args: &BenchArgs) -> Result<()> {
    use crate::backend::{cuda_cache, cuda_check};
    use crate::error::Error;
    let unavailable = |reason: String| Error::BackendUnavailable {
        backend: "cuda (--compile-only)".into(),
        device: 0,
        reason,
    };
    let (include, (major, minor)) = cuda_check::toolchain().map_err(unavailable)?;
    // The steps see a CUDA device (`precision` checks, the flash routines, the f32 head).
    job.cfg.backend = crate::config::BackendKind::Cuda;
    let (precision, attention) = (job.cfg.precision, job.cfg.attention);
    let _ = cuda_check::take_report();
    cuda_check::forget_autotune();
    if let Some(dir) = &args.kernel_cache {
        cuda_cache::start(dir).map_err(|msg| Error::Flag {
            flag: "--kernel-cache".into(),
            msg,
        })?;
    }
    // The stand-in reads the router's choices back as zeros: route by made-up counts spread
    // like the row counts a GPU's experts may get (`model::stand_in_routing`).
    let ran = with_scopes(args, || {
        crate::model::stand_in_routing::scope(|| {
            job.run::<burn::backend::Autodiff<cuda_check::CheckBackend>>(cuda_check::CheckDevice)
        })
    });
    // The compiles still running store their kernels as they finish.
    let report = cuda_check::take_report();
    let stored = cuda_cache::finish();
    ran?;
    let attention = attention_label(attention);
    for f in &report.failures {
        eprintln!(
            "--- {} failed:\n{}\n--- source of {}:\n{}",
            f.kernel, f.reason, f.kernel, f.source
        );
    }
    println!(
        "compile-only: precision={}{}{}{} attention={attention} target=sm_90a nvrtc={major}.{minor} headers={} \
         kernels_compiled={} kernels_failed={} nvrtc_s={:.0}",
        precision.name(),
        if args.plain_kernels { " kernels=plain" } else { "" },
        if args.f32_head { " head=f32" } else { "" },
        if args.per_expert_moe {
            " moe=per-expert"
        } else {
            ""
        },
        include.display(),
        report.compiled,
        report.failures.len(),
        report.nvrtc_s
    );
    if let (Some(s), Some(dir)) = (&stored, &args.kernel_cache) {
        for why in &s.skipped {
            eprintln!("warning: not stored: {why}");
        }
        println!(
            "kernel cache: {} stored, {} already there (not compiled again), {} not stored, in {} (list: {})",
            s.stored,
            s.already,
            s.skipped.len(),
            dir.display(),
            dir.join(cuda_cache::MANIFEST).display()
        );
    }
    if report.failures.is_empty() {
        Ok(())
    } else {
        // One entry point often fails in many variants (vectorizations, autotune candidates).
        let mut names: Vec<_> = report.failures.iter().map(|f| f.kernel.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let more = names.len().saturating_sub(8);
        names.truncate(8);
        Err(Error::Train(format!(
            "{} CUDA kernel(s) failed to compile for sm_90a (their NVRTC logs and sources are above): {}{}",
            report.failures.len(),
            names.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )))
    }
}

#[cfg(not(feature = "cuda"))]
fn compile_only(_: BenchJob, _: &BenchArgs) -> Result<()> {
    Err(crate::error::Error::BackendMissing {
        backend: "cuda (--compile-only)".into(),
        feature: "cuda".into(),
    })
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn spread_takes_the_middle_of_sorted_steps() {
        let s = Spread::of(&[7.0, 1.0, 3.0]);
        assert_eq!((s.min, s.median, s.max), (1.0, 3.0, 7.0));
        // Even count: the mean of the middle two; order of the input does not matter.
        let s = Spread::of(&[4.0, 100.0, 2.0, 6.0]);
        assert_eq!((s.min, s.median, s.max), (2.0, 5.0, 100.0));
        assert_eq!(
            Spread::of(&[2.5]),
            Spread {
                min: 2.5,
                median: 2.5,
                max: 2.5
            }
        );
        let s = Spread::of(&[]);
        assert!(s.min.is_nan() && s.median.is_nan() && s.max.is_nan());
    }
}
