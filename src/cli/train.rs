//! `colossus train CONFIG`: load and validate the config, pick the backend, run the loop.

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
        // `--resume "$CHECKPOINT"` with the variable unset would otherwise train from scratch.
        if r.is_empty() {
            return Err(crate::Error::Flag {
                flag: "--resume".into(),
                msg: "is empty; give a checkpoint directory, or `--resume` alone for the run's latest".into(),
            });
        }
        cfg.train.resume = config::Resume::parse(r);
    }
    let opts = TrainOptions {
        log_lines: args.quiet,
        overwrite: args.overwrite,
        stop_after: args.stop_after,
        // The loop finishes its step, saves and exits 0; before the first step it stops without
        // training (data preparation stops between rounds, removing its partial output).
        stop: Some(super::stop_on_signal(
            "stopping after the step in progress, with a checkpoint (before the first step: \
             without training one)",
            "the last complete checkpoint is intact",
        )?),
        ..Default::default()
    };
    let (kind, device, steps) = (cfg.backend, cfg.device, cfg.train.steps);
    let s = backend::dispatch(kind, device, TrainJob { cfg, opts })?;
    // The run is over and saved; only the summary is left to print, to a pipe that may be gone.
    super::end_quietly_on_a_closed_pipe();
    // A resumed run that had already reached train.steps (a finished job rerun by a scheduler,
    // say) is a success with nothing to do, not a loss of NaN -> NaN.
    if s.losses.is_empty() && !s.interrupted {
        crate::say::out(format_args!(
            "done: nothing to train: the resumed run has reached train.steps = {steps} (raise it to \
             continue){}",
            s.checkpoint
                .map(|c| format!(", checkpoint {}", c.display()))
                .unwrap_or_default()
        ));
        return Ok(());
    }
    // An interrupt can land before the first step ends: then there is no loss to report.
    let loss = match (s.losses.first(), s.losses.last()) {
        (Some(first), Some(last)) => format!(", loss {first:.4} -> {last:.4}"),
        _ => String::new(),
    };
    crate::say::out(format_args!(
        "done: {} steps this run{loss}, {} tokens in {:.1}s ({:.0} tokens/s){}",
        s.losses.len(),
        s.tokens,
        s.wall_s,
        s.tokens_per_s,
        s.checkpoint
            .map(|c| format!(", checkpoint {}", c.display()))
            .unwrap_or_default()
    ));
    if s.interrupted {
        crate::say::out("interrupted by a signal; continue with: colossus train CONFIG --resume");
    }
    if s.skipped_steps > 0 {
        crate::say::out(format_args!(
            "warning: {} steps skipped for non-finite loss or gradients",
            s.skipped_steps
        ));
    }
    Ok(())
}
