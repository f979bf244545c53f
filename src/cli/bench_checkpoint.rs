//! `colossus bench CONFIG --checkpoint`: checkpoint save and load throughput for a config's model
//! (weights + AdamW moments), and the training stall per save — the synchronous snapshot to host
//! memory, since the write runs on the checkpoint writer thread.

use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;

use crate::backend::{self, Job};
use crate::checkpoint::{self, Snapshot, state::TrainState};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::Grok;
use crate::train::optim::{AdamW, AdamWSettings};
use crate::train::params;

struct CheckpointBench {
    cfg: Config,
    rounds: usize,
}

struct Round {
    snapshot_s: f64,
    bytes: u64,
    write_s: f64,
    load_s: f64,
}

impl Job for CheckpointBench {
    type Output = Vec<Round>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Vec<Round>> {
        let cfg = &self.cfg;
        crate::train::fits::check_training(cfg)?;
        let model: Grok<B> = cfg.model.init(cfg.seed, &device);
        let params = params::list(&model);
        let settings = AdamWSettings::from(&cfg.train);
        let opt = AdamW::<B::InnerBackend>::new(settings, params.clone(), &device);
        // The tokenizer file is a few hundred KB at most; an empty BPE stands in for it.
        let tokenizer = tokenizers::Tokenizer::new(tokenizers::models::bpe::BPE::default());
        let run = checkpoint::run_dir(cfg);
        if run.exists() {
            return Err(Error::input(
                &run,
                "exists; the checkpoint bench writes a fresh run directory there",
            ));
        }
        let mut rounds = Vec::new();
        for round in 0..self.rounds {
            let state = TrainState {
                format_version: checkpoint::state::STATE_VERSION,
                step: round + 1,
                tokens: 0,
                sampler: crate::data::sampler::Cursor {
                    epoch: 0,
                    position: 0,
                    rng: 0,
                    samples_per_epoch: 0,
                },
                skipped_steps: 0,
                loss_scale: None,
            };
            let t = Instant::now();
            let snap = Snapshot::take(cfg, &model, &params, &opt, &state, &tokenizer)?;
            let snapshot_s = t.elapsed().as_secs_f64();
            let report = snap.write()?;
            let t = Instant::now();
            checkpoint::checksums::verify(&report.dir)?;
            let loaded = checkpoint::load_weights(model.clone(), &report.dir)?;
            let _ = checkpoint::state::load_optimizer::<B::InnerBackend>(
                &report.dir,
                &params,
                settings,
                &device,
            )?;
            let _ = B::sync(&device);
            drop(loaded);
            rounds.push(Round {
                snapshot_s,
                bytes: report.bytes,
                write_s: report.write_s,
                load_s: t.elapsed().as_secs_f64(),
            });
            std::fs::remove_dir_all(&report.dir).map_err(|e| Error::io(&report.dir, e))?;
        }
        let _ = std::fs::remove_dir_all(&run);
        Ok(rounds)
    }
}

pub fn run(cfg: Config, rounds: usize) -> Result<()> {
    let (kind, device) = (cfg.backend, cfg.device);
    let name = cfg.run_name.clone();
    let results = backend::dispatch(kind, device, CheckpointBench { cfg, rounds })?;
    for (i, r) in results.iter().enumerate() {
        let mb = r.bytes as f64 / 1e6;
        println!(
            "checkpoint run={name} round={} size_mb={mb:.1} stall_ms={:.0} save_s={:.2} save_mb_per_s={:.0} \
             load_s={:.2} load_mb_per_s={:.0}",
            i + 1,
            r.snapshot_s * 1e3,
            r.write_s,
            mb / r.write_s,
            r.load_s,
            mb / r.load_s
        );
    }
    Ok(())
}
