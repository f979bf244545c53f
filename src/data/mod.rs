//! Text in, token batches out: raw corpora (text, JSONL), tokenizers, `colossus prepare` into
//! memory-mapped token shards with a manifest, the on-the-fly cache for raw-text configs, and the
//! rank-aware resumable sampler. docs/data-format.md describes the on-disk format.

pub mod batch;
pub mod cache;
pub mod corpus;
pub mod dataset;
pub mod manifest;
pub mod prepare;
pub mod sampler;
pub mod shard;
pub mod tokenizer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

pub use batch::{Batch, BatchSource};
pub use dataset::Dataset;
pub use sampler::{Cursor, Sampler};

use crate::config::Config;
use crate::error::Result;

/// Default `data.jsonl_field`.
pub const DEFAULT_JSONL_FIELD: &str = "text";
/// Default `data.shard_tokens`: 2^26 ids, 128 MiB per u16 shard.
pub const DEFAULT_SHARD_TOKENS: u64 = 1 << 26;

/// Where a config's raw-text corpus is prepared: `data.cache_dir`, else `<train.out_dir>/.cache/data`
/// (inside the git-ignored checkpoints folder by default; safe to delete).
pub fn cache_root(cfg: &Config) -> PathBuf {
    match &cfg.data.cache_dir {
        Some(d) => PathBuf::from(d),
        None => Path::new(&cfg.train.out_dir).join(".cache").join("data"),
    }
}

/// `prepare` options for a config's `data.corpus` (the cache path and `prepare --config`).
pub fn prepare_options(cfg: &Config, quiet: bool) -> prepare::PrepareOptions {
    prepare::PrepareOptions {
        inputs: cfg.data.corpus.clone(),
        inputs_key: "data.corpus".into(),
        tokenizer: cfg.data.tokenizer.as_ref().map(PathBuf::from),
        vocab_size: cfg.model.vocab_size,
        vocab_key: cfg.key_in_file("model.vocab_size"),
        jsonl_field: cfg.data.jsonl_field.clone(),
        eot_token: cfg.data.eot_token.clone(),
        eot_key: cfg.key_in_file("data.eot_token"),
        shard_tokens: cfg.data.shard_tokens,
        val_fraction: cfg.data.val_fraction,
        skip_bad: cfg.data.skip_bad,
        dtype: None,
        threads: 0,
        overwrite: false,
        quiet,
        stop: None,
    }
}

/// The training data a config names, opened: `data.shards` as prepared, or `data.corpus`
/// prepared into (or reused from) the cache. The second value says what happened, for the log.
pub fn training_data(cfg: &Config, quiet: bool) -> Result<(Dataset, String)> {
    training_data_or_stop(cfg, quiet, None)
}

/// `training_data`, with raw text's preparation stopped (`Error::Interrupted`, the partial
/// cache entry removed) once `stop` is set.
pub fn training_data_or_stop(
    cfg: &Config,
    quiet: bool,
    stop: Option<Arc<AtomicBool>>,
) -> Result<(Dataset, String)> {
    let (dir, mut note) = match &cfg.data.shards {
        Some(dir) => (PathBuf::from(dir), format!("data: shards in {dir}")),
        None => {
            if cfg.data.tokenizer.is_none() {
                tokenizer::check_bpe_size(cfg.model.vocab_size)
                    .map_err(|why| cfg.error("model.vocab_size", why))?;
            }
            let opts = prepare::PrepareOptions {
                stop,
                ..prepare_options(cfg, quiet)
            };
            // By default the cache is under train.out_dir, which the user chose.
            let key = match cfg.data.cache_dir {
                Some(_) => "data.cache_dir",
                None => "train.out_dir",
            };
            let root = cache_root(cfg);
            cfg.create_dir(key, &root)?;
            let (dir, prepared) = cache::prepare_cached(&opts, &root)?;
            let note = match prepared {
                Some(p) => format!("data: {}", p.summary()),
                None => format!("data: reusing {} (inputs and tokenizer unchanged)", dir.display()),
            };
            (dir, note)
        }
    };
    let data = Dataset::open_with(&dir, cfg.data.verify_checksums)?;
    if cfg.data.shards.is_some()
        && let Some(tok) = &cfg.data.tokenizer
    {
        data.check_tokenizer(Path::new(tok), "data.tokenizer")?;
    }
    // The shards keep the split they were prepared with; a config asking for another one
    // (a preset's 0.02, say) would otherwise believe it was validating on that share.
    if cfg.data.shards.is_some() && cfg.data.val_fraction != data.manifest.val_fraction {
        note.push_str(&format!(
            "; data.val_fraction: {} ({}) is not applied: these shards hold a validation split \
             of {}, set when they were prepared (`prepare --val-fraction`)",
            cfg.data.val_fraction, cfg.source.0, data.manifest.val_fraction
        ));
    }
    data.check_eot(&cfg.data.eot_token, &cfg.key_in_file("data.eot_token"))?;
    // Too little text for one window is the user's data (or seq_len) at fault: name what they
    // gave (the corpus, not the cache it was prepared into), exit 2.
    if dataset::Windows::new(&data.train, cfg.data.seq_len, cfg.data.cross_shards).is_empty() {
        let (key, what) = match &cfg.data.shards {
            Some(dir) => ("data.shards", dir.clone()),
            None => ("data.corpus", cfg.data.corpus.join(", ")),
        };
        return Err(cfg.error(
            key,
            format!(
                "{what}: the training split has {} tokens in {} shards, and no shard (data.cross_shards: \
                 {}) holds one window of data.seq_len + 1 = {} tokens; give more text or a shorter \
                 data.seq_len",
                data.train.tokens(),
                data.train.shards().len(),
                cfg.data.cross_shards,
                cfg.data.seq_len + 1
            ),
        ));
    }
    if data.manifest.vocab_size > cfg.model.vocab_size {
        return Err(cfg.error(
            "model.vocab_size",
            format!(
                "{} is smaller than the {} entries of the tokenizer in {}",
                cfg.model.vocab_size,
                data.manifest.vocab_size,
                dir.display()
            ),
        ));
    }
    Ok((data, note))
}
