//! Raw-text corpora named in a config are prepared on the fly into a cache directory and reused
//! while inputs and tokenizer are unchanged. The key hashes each input's path, size and
//! modification time (cheap at any size; touching a file re-prepares), the tokenizer (its bytes,
//! or the BPE size when one is trained) and every option that changes the shards.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::corpus;
use super::manifest::{self, MANIFEST_FILE};
use super::prepare::{self, PrepareOptions, Prepared};
use super::shard;
use crate::error::{Error, Result};

/// Hex digits of the key used as the directory name.
const KEY_CHARS: usize = 16;

/// The cache key of `opts` (fails like `prepare` would on a missing input or tokenizer).
pub fn key(opts: &PrepareOptions) -> Result<String> {
    let mut text = format!(
        "colossus data cache 1; shard format {}; manifest {}; field {:?}; shard_tokens {}; val {}; block {}; skip_bad {}; dtype {:?}\n",
        shard::VERSION,
        manifest::FORMAT_VERSION,
        opts.jsonl_field,
        opts.shard_tokens,
        opts.val_fraction.to_bits(),
        prepare::VAL_BLOCK_TOKENS,
        opts.skip_bad,
        opts.dtype,
    );
    for input in corpus::list_inputs(&opts.inputs, &opts.inputs_key)? {
        let meta = std::fs::metadata(&input.path).map_err(|e| Error::input(&input.path, e.to_string()))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let path = std::fs::canonicalize(&input.path).unwrap_or(input.path);
        text.push_str(&format!("{} {} {mtime}\n", path.display(), meta.len()));
    }
    match &opts.tokenizer {
        Some(path) => text.push_str(&format!("tokenizer {}\n", manifest::sha256_file(path)?)),
        None => text.push_str(&format!(
            "bpe {} sample {}\n",
            opts.vocab_size,
            prepare::BPE_SAMPLE_BYTES
        )),
    }
    Ok(manifest::sha256_hex(text.as_bytes())[..KEY_CHARS].to_string())
}

/// The prepared directory for `opts` under `root`: reused when complete, else prepared now.
/// Returns the directory and, when it was prepared now, what was done.
pub fn prepare_cached(opts: &PrepareOptions, root: &Path) -> Result<(PathBuf, Option<Prepared>)> {
    // Ranks that are threads of one process share a process id, hence the staging name: one
    // prepares while the others wait, then reuse it. (Processes race safely: see below.)
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = root.join(key(opts)?);
    if dir.join(MANIFEST_FILE).is_file() {
        return Ok((dir, None));
    }
    // A directory without a manifest is an incomplete leftover: replace it.
    let opts = PrepareOptions {
        overwrite: true,
        ..opts.clone()
    };
    match prepare::prepare(&opts, &dir) {
        Ok(p) => Ok((dir, Some(p))),
        // Another process prepared the same key meanwhile: its copy is as good as ours.
        Err(_) if dir.join(MANIFEST_FILE).is_file() => Ok((dir, None)),
        Err(e) => Err(e),
    }
}
