//! A prepared data directory opened for training: the manifest, its tokenizer and every shard
//! memory-mapped and checked (header against manifest, payload checksum), plus the fixed
//! windows that samples and validation batches are cut from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokenizers::Tokenizer;

use super::batch::Batch;
use super::manifest::{self, MANIFEST_FILE, Manifest, ShardEntry};
use super::sampler::Sampler;
use super::shard::Shard;
use super::tokenizer;
use crate::error::{Error, Result};

/// The shards of one split, read as one stream.
pub struct ShardSet {
    shards: Vec<Shard>,
    /// `ends[i]`: tokens in shards `0..=i`.
    ends: Vec<u64>,
}

impl ShardSet {
    pub fn new(shards: Vec<Shard>) -> ShardSet {
        let ends = shards
            .iter()
            .scan(0, |acc, s| {
                *acc += s.len();
                Some(*acc)
            })
            .collect();
        ShardSet { shards, ends }
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    pub fn tokens(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Append tokens `start..start + n` of the concatenated stream (may span shards).
    pub fn read_stream(&self, mut start: u64, mut n: usize, out: &mut Vec<u32>) {
        while n > 0 {
            let i = self.ends.partition_point(|&e| e <= start);
            let begin = if i == 0 { 0 } else { self.ends[i - 1] };
            let take = n.min((self.ends[i] - start) as usize);
            self.shards[i].read_into(start - begin, take, out);
            start += take as u64;
            n -= take;
        }
    }
}

/// Non-overlapping windows of `seq + 1` tokens (window `j` starts at token `j·seq`, so consecutive
/// windows share one token: the last target of one is the first input of the next). Within each
/// shard by default; over the concatenated stream with `cross_shards`.
#[derive(Debug, Clone)]
pub struct Windows {
    seq: u64,
    cross: bool,
    /// Per shard (or one entry for the stream): windows in shards `0..=i`.
    ends: Vec<u64>,
    /// Token offset of each shard in the stream.
    starts: Vec<u64>,
}

impl Windows {
    pub fn new(set: &ShardSet, seq: usize, cross: bool) -> Windows {
        let seq = seq as u64;
        let count = |tokens: u64| if tokens > seq { (tokens - 1) / seq } else { 0 };
        let (ends, starts) = if cross {
            (vec![count(set.tokens())], vec![0])
        } else {
            let mut acc = 0;
            let ends = set
                .shards
                .iter()
                .map(|s| {
                    acc += count(s.len());
                    acc
                })
                .collect();
            let starts = std::iter::once(0).chain(set.ends.iter().copied()).collect();
            (ends, starts)
        };
        Windows {
            seq,
            cross,
            ends,
            starts,
        }
    }

    pub fn len(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn seq(&self) -> usize {
        self.seq as usize
    }

    /// Stream offset of window `w`'s first token.
    pub fn start(&self, w: u64) -> u64 {
        if self.cross {
            return w * self.seq;
        }
        let i = self.ends.partition_point(|&e| e <= w);
        let first = if i == 0 { 0 } else { self.ends[i - 1] };
        self.starts[i] + (w - first) * self.seq
    }

    /// Append window `w`'s `seq + 1` tokens to `out`.
    pub fn read(&self, set: &ShardSet, w: u64, out: &mut Vec<u32>) {
        set.read_stream(self.start(w), self.seq as usize + 1, out);
    }
}

/// A prepared data directory, opened and checked.
pub struct Dataset {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub tokenizer: Tokenizer,
    pub train: Arc<ShardSet>,
    pub val: Arc<ShardSet>,
}

impl Dataset {
    /// Open `dir` (a directory with manifest.json) and check everything against the manifest.
    /// Shard checksums are recomputed on all cores (a full read; ~1 s per GB per core).
    pub fn open(dir: &Path) -> Result<Dataset> {
        Self::open_with(dir, true)
    }

    /// `open`, reading every payload for its CRC-32 only when `verify_checksums` (headers, sizes,
    /// token counts and the header checksums against the manifest are always checked).
    pub fn open_with(dir: &Path, verify_checksums: bool) -> Result<Dataset> {
        let manifest = Manifest::read(dir)?;
        let tok_path = dir.join(&manifest.tokenizer);
        let hash = manifest::sha256_file(&tok_path)?;
        if hash != manifest.tokenizer_sha256 {
            return Err(Error::input(
                &tok_path,
                format!(
                    "SHA-256 {hash} does not match {}'s tokenizer_sha256 {}; the tokenizer was changed after the shards were written",
                    MANIFEST_FILE, manifest.tokenizer_sha256
                ),
            ));
        }
        let tok = tokenizer::load(
            &tok_path,
            manifest.vocab_size,
            &format!("{MANIFEST_FILE}'s vocab_size"),
        )?;
        if tok.id_to_token(manifest.eot_id).is_none() {
            return Err(Error::input(
                dir.join(MANIFEST_FILE),
                format!(
                    "eot_id {} is not an id of {}",
                    manifest.eot_id,
                    tok_path.display()
                ),
            ));
        }
        let open_split = |entries: &[ShardEntry]| -> Result<ShardSet> {
            let shards = entries
                .iter()
                .map(|e| open_entry(dir, e, &manifest))
                .collect::<Result<Vec<_>>>()?;
            if verify_checksums {
                verify_all(&shards)?;
            }
            Ok(ShardSet::new(shards))
        };
        let train = open_split(&manifest.train)?;
        let val = open_split(&manifest.val)?;
        Ok(Dataset {
            dir: dir.to_path_buf(),
            manifest,
            tokenizer: tok,
            train: Arc::new(train),
            val: Arc::new(val),
        })
    }

    /// The config names a tokenizer too: it must be the one the shards were written with.
    /// `key` names the config key in the error.
    pub fn check_tokenizer(&self, path: &Path, key: &str) -> Result<()> {
        let hash = manifest::sha256_file(path)?;
        if hash != self.manifest.tokenizer_sha256 {
            return Err(Error::input(
                self.dir.join(MANIFEST_FILE),
                format!(
                    "tokenizer_sha256 {} does not match `{key}` {} (SHA-256 {hash}); the shards were \
                     written with another tokenizer: re-run `colossus prepare`, or drop `{key}`",
                    self.manifest.tokenizer_sha256,
                    path.display()
                ),
            ));
        }
        Ok(())
    }

    /// The config's end-of-text token must be the one between the shards' documents: it is
    /// saved with the checkpoint as where `generate` stops. `key` names the config key.
    pub fn check_eot(&self, name: &str, key: &str) -> Result<()> {
        let tok_path = self.dir.join(&self.manifest.tokenizer);
        let id = tokenizer::eot_id(&self.tokenizer, &tok_path, name, key)?;
        if id != self.manifest.eot_id {
            let written = self
                .tokenizer
                .id_to_token(self.manifest.eot_id)
                .unwrap_or_default();
            return Err(Error::input(
                self.dir.join(MANIFEST_FILE),
                format!(
                    "the shards end documents with id {} (`{written}`), not {key} `{name}` (id {id}); \
                     set {key} to `{written}`, or re-run `colossus prepare` with it",
                    self.manifest.eot_id
                ),
            ));
        }
        Ok(())
    }

    /// A resumed run's checkpoint tokenizer (at `path`) must be this data's: token ids must mean
    /// what they meant when the checkpoint was trained.
    pub fn check_same_tokenizer(&self, path: &Path) -> Result<()> {
        let mut saved = Tokenizer::from_file(path)
            .map_err(|e| Error::input(path, format!("not a readable tokenizer.json: {e}")))?;
        // Compared as loaded for use (`tokenizer::load`): truncation and padding, which it
        // switches off, do not change what an id means.
        saved.with_padding(None);
        let _ = saved.with_truncation(None);
        if saved.to_string(false).ok() != self.tokenizer.to_string(false).ok() {
            return Err(Error::input(
                path,
                format!(
                    "the checkpoint was trained with another tokenizer than the data in {} uses; \
                     resume with the same data and tokenizer",
                    self.dir.display()
                ),
            ));
        }
        Ok(())
    }

    /// The rank-aware epoch sampler over the training split.
    pub fn sampler(&self, seq: usize, cross: bool, seed: u64, rank: usize, world: usize) -> Result<Sampler> {
        Sampler::new(self.train.clone(), seq, cross, seed, rank, world)
    }

    /// A fixed set of validation batches: up to `n_batches × batch` windows spread evenly over
    /// the validation split (the same ones at every evaluation and on every run).
    pub fn val_batches(&self, n_batches: usize, batch: usize, seq: usize) -> Vec<Batch> {
        let windows = Windows::new(&self.val, seq, false);
        let total = windows.len();
        // Saturating, and the spread in u128: `train.eval_batches: 18446744073709551615` (all of
        // the split) overflowed the product.
        let want = (n_batches as u64).saturating_mul(batch as u64);
        let ids: Vec<u64> = if total <= want {
            (0..total).collect()
        } else {
            (0..want)
                .map(|i| (i as u128 * total as u128 / want as u128) as u64)
                .collect()
        };
        ids.chunks(batch.max(1))
            .map(|chunk| {
                let mut tokens = Vec::with_capacity(chunk.len() * (seq + 1));
                for &w in chunk {
                    windows.read(&self.val, w, &mut tokens);
                }
                Batch::from_windows(&tokens, chunk.len(), seq)
            })
            .collect()
    }
}

fn open_entry(dir: &Path, e: &ShardEntry, m: &Manifest) -> Result<Shard> {
    let path = dir.join(&e.file);
    let s = Shard::open(&path)?;
    if s.dtype() != m.dtype || s.len() != e.tokens || s.crc() != e.crc32 {
        return Err(Error::input(
            &path,
            format!(
                "header ({} tokens of {}, CRC-32 {:#010x}) does not match {MANIFEST_FILE} ({} tokens of {}, CRC-32 {:#010x})",
                s.len(),
                s.dtype().name(),
                s.crc(),
                e.tokens,
                m.dtype.name(),
                e.crc32
            ),
        ));
    }
    Ok(s)
}

/// Check every payload checksum, the shards spread over all cores.
fn verify_all(shards: &[Shard]) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = shards.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let jobs: Vec<_> = shards
            .chunks(per)
            .map(|chunk| s.spawn(move || chunk.iter().try_for_each(Shard::verify)))
            .collect();
        jobs.into_iter()
            .try_for_each(|j| j.join().expect("checksum thread panicked"))
    })
}
