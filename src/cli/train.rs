//! `colossus train CONFIG`: load and validate the config, pick the backend, run the loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::backend::AutodiffBackend;

use super::TrainArgs;
use crate::backend::{self, Job};
use crate::config::{self, Config};
use crate::error::Result;
use crate::train::{self, TrainOptions, TrainSummary};

struct TrainJob {
    cfg: Config,
    opts: TrainOptions,
}

impl Job for TrainJob {
    type Output = TrainSummary;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<TrainSummary> {
        train::train::<B>(&self.cfg, &self.opts, &device)
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    // File, then torchrun-style environment, then --set, then the --rank-style flags.
    let mut sets = crate::dist::env::sets(|k| std::env::var(k).ok())?;
    sets.extend(args.config.set.iter().cloned());
    sets.extend(args.dist.sets());
    let mut cfg = config::load(&args.config.config, &sets)?;
    if let Some(r) = &args.resume {
        cfg.train.resume = config::Resume::parse(r);
    }
    let opts = TrainOptions {
        log_lines: args.quiet,
        overwrite: args.overwrite,
        stop_after: args.stop_after,
        stop: Some(stop_on_signal()?),
        ..Default::default()
    };
    let (kind, device, steps) = (cfg.backend, cfg.device, cfg.train.steps);
    let s = backend::dispatch(kind, device, TrainJob { cfg, opts })?;
    // A resumed run that had already reached train.steps (a finished job rerun by a scheduler,
    // say) is a success with nothing to do, not a loss of NaN -> NaN.
    if s.losses.is_empty() && !s.interrupted {
        println!(
            "done: nothing to train: the resumed run has reached train.steps = {steps} (raise it to \
             continue){}",
            s.checkpoint
                .map(|c| format!(", checkpoint {}", c.display()))
                .unwrap_or_default()
        );
        return Ok(());
    }
    // An interrupt can land before the first step ends: then there is no loss to report.
    let loss = match (s.losses.first(), s.losses.last()) {
        (Some(first), Some(last)) => format!(", loss {first:.4} -> {last:.4}"),
        _ => String::new(),
    };
    println!(
        "done: {} steps this run{loss}, {} tokens in {:.1}s ({:.0} tokens/s){}",
        s.losses.len(),
        s.tokens,
        s.wall_s,
        s.tokens_per_s,
        s.checkpoint
            .map(|c| format!(", checkpoint {}", c.display()))
            .unwrap_or_default()
    );
    if s.interrupted {
        println!("interrupted by a signal; continue with: colossus train CONFIG --resume");
    }
    if s.skipped_steps > 0 {
        println!(
            "warning: {} steps skipped for non-finite loss or gradients",
            s.skipped_steps
        );
    }
    Ok(())
}

/// SIGINT/SIGTERM (Ctrl-C, `kill`, a cluster scheduler's preemption) set the returned flag: the
/// loop finishes its step, saves and exits 0. A second signal exits at once with status 130;
/// the checkpoint being written then stays a hidden temp directory and `latest` keeps pointing
/// at the last complete one.
fn stop_on_signal() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let seen = flag.clone();
    ctrlc::set_handler(move || {
        if seen.swap(true, Ordering::SeqCst) {
            eprintln!("second signal: exiting now; the last complete checkpoint is intact");
            std::process::exit(130);
        }
        eprintln!(
            "signal received: stopping after the step in progress, with a checkpoint; before the \
             first step (preparing data), without training one (signal again to exit at once)"
        );
    })
    .map_err(|e| crate::error::Error::Train(format!("installing the signal handler: {e}")))?;
    Ok(flag)
}
