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
        "colossus data cache 1; shard format {}; manifest {}; field {:?}; eot {:?}; shard_tokens {}; val {}; block {}; skip_bad {}; dtype {:?}\n",
        shard::VERSION,
        manifest::FORMAT_VERSION,
        opts.jsonl_field,
        opts.eot_token,
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
///
/// Several processes of one job on one machine share the cache and may all find it missing:
/// each prepares into its own staging directory, the first commit (an atomic rename) wins and
/// the others find the directory taken and use it. A complete directory is never replaced: an
/// earlier version did, and a process already reading the winner's shards lost them
/// (issue 6: "cannot open shard" at start-up of a 2-process run).
pub fn prepare_cached(opts: &PrepareOptions, root: &Path) -> Result<(PathBuf, Option<Prepared>)> {
    // Ranks that are threads of one process share a process id, hence the staging name: one
    // prepares while the others wait, then reuse it.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = root.join(key(opts)?);
    if dir.join(MANIFEST_FILE).is_file() {
        return Ok((dir, None));
    }
    if dir.exists() {
        // No manifest: not a committed directory (commits are atomic and the manifest is in
        // them) but the leftover of a writer from before staging. Clear it so a commit can land.
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&dir, e)),
            _ => {}
        }
    }
    prepare_unless_committed(opts, &dir)
}

/// Prepare `opts` into `dir`, what a process does after finding no manifest there; if another
/// process commits `dir` meanwhile, keep theirs untouched and use it (public for the test that
/// guards this).
pub fn prepare_unless_committed(opts: &PrepareOptions, dir: &Path) -> Result<(PathBuf, Option<Prepared>)> {
    let opts = PrepareOptions {
        overwrite: false,
        ..opts.clone()
    };
    match prepare::prepare(&opts, dir) {
        Ok(p) => Ok((dir.to_path_buf(), Some(p))),
        // Another process committed the same key first: its copy is as good as ours.
        Err(_) if dir.join(MANIFEST_FILE).is_file() => Ok((dir.to_path_buf(), None)),
        Err(e) => Err(e),
    }
}
