//! `colossus bench CONFIG --data`: the data pipeline's speed on the config's corpus. Tokenization
//! MB/s on one thread and on every core (the tokenizer is trained once beforehand and excluded),
//! then sampler batches/s and tokens/s at the config's micro-batch and sequence length, to set
//! against the training tokens/s that `colossus bench CONFIG` reports.

use std::path::PathBuf;
use std::time::Instant;

use crate::config::Config;
use crate::data::{self, BatchSource, Dataset, prepare};
use crate::error::{Error, Result};

/// Removes the scratch directory however the benchmark ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(cfg: &Config) -> Result<()> {
    let scratch = Scratch(std::env::temp_dir().join(format!("colossus-bench-data-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&scratch.0);
    std::fs::create_dir_all(&scratch.0).map_err(|e| Error::io(&scratch.0, e))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let dir = match &cfg.data.shards {
        Some(dir) => {
            println!("data.shards is set: benchmarking the sampler only");
            PathBuf::from(dir)
        }
        None => {
            let mut opts = data::prepare_options(cfg, true);
            if opts.tokenizer.is_none() {
                let t = Instant::now();
                let p = prepare::prepare(
                    &prepare::PrepareOptions {
                        threads: cores,
                        ..opts.clone()
                    },
                    &scratch.0.join("trained"),
                )?;
                println!(
                    "bpe: trained {} entries in {:.2}s (includes one tokenization pass)",
                    p.manifest.vocab_size,
                    t.elapsed().as_secs_f64()
                );
                opts.tokenizer = Some(p.dir.join(prepare::TOKENIZER_FILE));
            }
            let mut counts: Vec<usize> = vec![1, cores];
            counts.dedup();
            let mut last = None;
            for threads in counts {
                let out = scratch.0.join(format!("threads-{threads}"));
                let p = prepare::prepare(
                    &prepare::PrepareOptions {
                        threads,
                        ..opts.clone()
                    },
                    &out,
                )?;
                let mb = p.manifest.input_bytes as f64 / 1e6;
                let tokens = p.manifest.train_tokens() + p.manifest.val_tokens();
                println!(
                    "tokenize: threads={threads} input_mb={mb:.2} seconds={:.3} mb_per_s={:.2} tokens_per_s={:.0}",
                    p.tokenize_s,
                    mb / p.tokenize_s,
                    tokens as f64 / p.tokenize_s
                );
                last = Some(out);
            }
            last.expect("at least one thread count")
        }
    };

    let ds = Dataset::open(&dir)?;
    let (batch, seq) = (cfg.train.micro_batch, cfg.data.seq_len);
    let mut sampler = ds.sampler(seq, cfg.data.cross_shards, cfg.seed, 0, 1)?;
    for _ in 0..10 {
        sampler.next_batch(batch, seq);
    }
    let (start, mut batches) = (Instant::now(), 0u64);
    while start.elapsed().as_secs_f64() < 2.0 {
        for _ in 0..100 {
            std::hint::black_box(sampler.next_batch(batch, seq));
        }
        batches += 100;
    }
    let s = start.elapsed().as_secs_f64();
    println!(
        "sampler: batch={batch} seq={seq} windows_per_epoch={} batches_per_s={:.0} tokens_per_s={:.0}",
        sampler.samples_per_epoch(),
        batches as f64 / s,
        (batches * (batch * seq) as u64) as f64 / s
    );
    Ok(())
}
