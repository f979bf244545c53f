//! `colossus prepare`: raw text → tokenizer → token shards + manifest, on all cores. Everything is
//! written into a staging directory that is renamed into place only when complete, so a failed or
//! interrupted run leaves nothing that looks like data.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use tokenizers::Tokenizer;

use super::corpus::{self, PIECE_BYTES, Piece, Reader, Skips};
use super::manifest::{self, FORMAT, FORMAT_VERSION, MANIFEST_FILE, Manifest, ShardEntry};
use super::shard::{Dtype, ShardWriter};
use super::tokenizer;
use crate::checkpoint::atomic::StagedDir;
use crate::error::{Error, Result};

/// Tokens per validation block: the split routes whole blocks of the token stream.
pub const VAL_BLOCK_TOKENS: u64 = 4096;
/// A trained BPE sees at most this much text (read in order from the start of the corpus):
/// enough for a good vocabulary, bounded at any corpus size.
pub const BPE_SAMPLE_BYTES: usize = 256 << 20;
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Everything `prepare` needs; `colossus prepare` fills it from flags or a config.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// Files or directories.
    pub inputs: Vec<String>,
    /// How errors name `inputs` (`data.corpus`, `INPUTS`).
    pub inputs_key: String,
    /// A tokenizer.json to use; `None` trains a byte-level BPE of `vocab_size` entries.
    pub tokenizer: Option<PathBuf>,
    /// BPE size when training; the upper bound for a given tokenizer.
    pub vocab_size: usize,
    /// How errors name `vocab_size` (`` `model.vocab_size` of FILE``, `flag --vocab-size`).
    pub vocab_key: String,
    pub jsonl_field: String,
    /// The tokenizer's end-of-text token, written between documents, and how errors name it.
    pub eot_token: String,
    pub eot_key: String,
    pub shard_tokens: u64,
    pub val_fraction: f64,
    pub skip_bad: bool,
    /// Force a dtype (default: u16 when the vocabulary fits, else u32).
    pub dtype: Option<Dtype>,
    /// Tokenizer threads; 0 = every core.
    pub threads: usize,
    /// Replace an existing output directory.
    pub overwrite: bool,
    pub quiet: bool,
    /// Set by a signal handler: stop between rounds of tokenization, removing the partial
    /// output (a large corpus takes a while, and a killed run left its staging behind, hidden).
    pub stop: Option<Arc<AtomicBool>>,
}

/// What a prepare run did, for the summary line and the benchmark.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub skips: Skips,
    /// Seconds spent tokenizing and writing (BPE training excluded).
    pub tokenize_s: f64,
    /// The most tokenizer threads that ran at once: `--threads` caps it, and a round runs one
    /// per 4 MiB piece, so a small corpus uses fewer.
    pub threads: usize,
}

impl Prepared {
    pub fn summary(&self) -> String {
        let m = &self.manifest;
        let mb = m.input_bytes as f64 / 1e6;
        let mut s = format!(
            "prepared {}: {} documents, {} train tokens in {} shards, {} validation tokens in {}, {} ids; \
             {mb:.1} MB tokenized in {:.1}s ({:.2} MB/s, {} thread{})",
            self.dir.display(),
            m.documents,
            m.train_tokens(),
            m.train.len(),
            m.val_tokens(),
            m.val.len(),
            m.dtype.name(),
            self.tokenize_s,
            mb / self.tokenize_s.max(1e-9),
            self.threads,
            if self.threads == 1 { "" } else { "s" },
        );
        if self.skips.total() > 0 {
            let reasons: Vec<String> = self
                .skips
                .counts
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            s.push_str(&format!(
                "; skipped {} bad documents ({}), e.g. {}",
                self.skips.total(),
                reasons.join(", "),
                self.skips.examples.join("; ")
            ));
        }
        s
    }
}

/// Tokenize `opts.inputs` into shards under `out`.
pub fn prepare(opts: &PrepareOptions, out: &Path) -> Result<Prepared> {
    if out.exists() && !opts.overwrite {
        return Err(Error::input(
            out,
            "output directory already exists; pass --overwrite to replace it",
        ));
    }
    if opts.overwrite {
        let elsewhere = "choose another --out";
        crate::replace::check_only_ours(out, is_shard_entry, "token shards", elsewhere)?;
    }
    let inputs = corpus::list_inputs(&opts.inputs, &opts.inputs_key)?;
    let total_bytes: u64 = inputs.iter().map(|i| i.bytes).sum();
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };

    let (tok, tok_bytes) = match &opts.tokenizer {
        Some(path) => {
            let tok = tokenizer::load(path, opts.vocab_size, &opts.vocab_key)?;
            let bytes = std::fs::read(path).map_err(|e| Error::input(path, format!("cannot read: {e}")))?;
            (tok, bytes)
        }
        None => {
            let mut reader = Reader::new(inputs.clone(), &opts.jsonl_field, opts.skip_bad);
            let (mut texts, mut size) = (Vec::new(), 0);
            while size < BPE_SAMPLE_BYTES {
                let Some(p) = reader.next_piece()? else { break };
                size += p.text.len();
                texts.push(p.text);
            }
            let tok = tokenizer::train_bpe_on(&texts, opts.vocab_size)?;
            let json = tok
                .to_string(false)
                .map_err(|e| Error::Train(format!("serializing the tokenizer: {e}")))?;
            (tok, json.into_bytes())
        }
    };
    let tok_name = opts
        .tokenizer
        .as_deref()
        .map_or_else(|| PathBuf::from("(trained tokenizer)"), Path::to_path_buf);
    let vocab = tok.get_vocab_size(true);
    let dtype = opts.dtype.unwrap_or(Dtype::for_vocab(vocab));
    if vocab as u64 > dtype.max_id() + 1 {
        return Err(Error::input(
            &tok_name,
            format!(
                "tokenizer has {vocab} entries; ids up to {} do not fit {} shards (at most {} entries); use u32",
                vocab - 1,
                dtype.name(),
                dtype.max_id() + 1
            ),
        ));
    }
    let eot = tokenizer::eot_id(&tok, &tok_name, &opts.eot_token, &opts.eot_key)?;

    let staged = StagedDir::new(out)?;
    staged.write(TOKENIZER_FILE, &tok_bytes)?;
    let bar = progress_bar(total_bytes, opts.quiet);
    let start = Instant::now();
    let mut router = Router {
        train: Split::new(staged.path(), "train", dtype, opts.shard_tokens),
        val: Split::new(staged.path(), "val", dtype, opts.shard_tokens),
        pos: 0,
        fraction: opts.val_fraction,
    };
    let mut reader = Reader::new(inputs, &opts.jsonl_field, opts.skip_bad);
    let (mut documents, mut in_doc, mut done_bytes) = (0u64, false, 0u64);
    // Saturating: `--threads 18446744073709551615` overflowed; a round is at most 1 GiB anyway, and
    // the workers at most its pieces.
    let round_bytes = threads.saturating_mul(4 * PIECE_BYTES).min(1 << 30);
    let mut threads_used = 1;
    let mut last_line = Instant::now();
    loop {
        if opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
            // Returning drops `staged`, which removes it.
            return Err(Error::Interrupted(format!(
                "preparing {}: stopped after {:.1} of {:.1} MB; the partial output is removed",
                out.display(),
                done_bytes as f64 / 1e6,
                total_bytes as f64 / 1e6
            )));
        }
        let mut pieces: Vec<Piece> = Vec::new();
        let mut size = 0;
        let mut finished = false;
        while size < round_bytes {
            match reader.next_piece()? {
                Some(p) => {
                    size += p.text.len().max(1);
                    pieces.push(p);
                }
                None => {
                    finished = true;
                    break;
                }
            }
        }
        // A round of fewer pieces than threads runs one worker per piece; the summary reports
        // the most that ran, not the most allowed.
        threads_used = threads_used.max(threads.min(pieces.len()));
        let ids = tokenize_all(&tok, &pieces, threads).map_err(|why| {
            Error::input(
                &tok_name,
                format!(
                    "{why}; expected a tokenizer that encodes any text (an unknown token or byte fallback)"
                ),
            )
        })?;
        for (p, ids) in pieces.iter().zip(ids) {
            if !ids.is_empty() {
                router.write(&ids)?;
                in_doc = true;
            }
            if p.end_of_doc && in_doc {
                router.write(&[eot])?;
                documents += 1;
                in_doc = false;
            }
            done_bytes += p.bytes;
        }
        match &bar {
            Some(bar) => bar.set_position(done_bytes),
            None if !opts.quiet && last_line.elapsed().as_secs() >= 10 => {
                last_line = Instant::now();
                let s = start.elapsed().as_secs_f64();
                crate::say::err(format_args!(
                    "prepare: {:.1}/{:.1} MB, {:.2} MB/s",
                    done_bytes as f64 / 1e6,
                    total_bytes as f64 / 1e6,
                    done_bytes as f64 / 1e6 / s
                ));
            }
            None => {}
        }
        if finished {
            break;
        }
    }
    let (train, val) = (router.train.finish()?, router.val.finish()?);
    let tokenize_s = start.elapsed().as_secs_f64();
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if train.is_empty() {
        return Err(Error::input(
            &opts.inputs_key,
            "no training tokens: every document was empty or skipped (or all went to validation)",
        ));
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        dtype,
        vocab_size: vocab,
        eot_id: eot,
        tokenizer: TOKENIZER_FILE.into(),
        tokenizer_sha256: manifest::sha256_hex(&tok_bytes),
        val_fraction: opts.val_fraction,
        val_block_tokens: VAL_BLOCK_TOKENS,
        train,
        val,
        documents,
        skipped: reader.skips.counts.clone(),
        input_bytes: done_bytes,
    };
    staged.write(MANIFEST_FILE, &manifest.to_json())?;
    if opts.overwrite && out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| Error::io(out, e))?;
    }
    let dir = staged.commit()?;
    Ok(Prepared {
        dir,
        manifest,
        skips: reader.skips,
        tokenize_s,
        threads: threads_used,
    })
}

/// Whether `prepare` writes an entry of this name into its output directory: the manifest, the
/// tokenizer and `train-N.bin`/`val-N.bin` shards.
fn is_shard_entry(name: &str) -> bool {
    use crate::replace::numbered;
    let shard = name
        .strip_suffix(".bin")
        .is_some_and(|s| numbered(s, "train-") || numbered(s, "val-"));
    name == MANIFEST_FILE || name == TOKENIZER_FILE || shard
}

fn progress_bar(total: u64, quiet: bool) -> Option<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} tokenizing [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template"),
    );
    Some(bar)
}

/// Encode every piece, `threads` at a time (pieces taken in turn from a shared counter, so a long
/// piece does not hold up the rest); results in input order.
fn tokenize_all(
    tok: &Tokenizer,
    pieces: &[Piece],
    threads: usize,
) -> std::result::Result<Vec<Vec<u32>>, String> {
    type Encoded = std::result::Result<Vec<u32>, String>;
    let next = AtomicUsize::new(0);
    let mut out: Vec<Option<Encoded>> = (0..pieces.len()).map(|_| None).collect();
    let results: Vec<Vec<(usize, Encoded)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.min(pieces.len()).max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(p) = pieces.get(i) else { break };
                        let ids = if p.text.is_empty() {
                            Ok(Vec::new())
                        } else {
                            tokenizer::encode(tok, &p.text)
                        };
                        mine.push((i, ids));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("tokenizer thread panicked"))
            .collect()
    });
    for (i, r) in results.into_iter().flatten() {
        out[i] = Some(r);
    }
    out.into_iter().map(|r| r.expect("every piece encoded")).collect()
}

/// Sends each block of `VAL_BLOCK_TOKENS` stream tokens to the train or the validation split.
struct Router {
    train: Split,
    val: Split,
    /// Tokens routed so far (position in the whole stream).
    pos: u64,
    fraction: f64,
}

impl Router {
    fn write(&mut self, mut ids: &[u32]) -> Result<()> {
        while !ids.is_empty() {
            let block = self.pos / VAL_BLOCK_TOKENS;
            let room = (VAL_BLOCK_TOKENS - self.pos % VAL_BLOCK_TOKENS) as usize;
            let (now, rest) = ids.split_at(room.min(ids.len()));
            if is_val_block(block, self.fraction) {
                self.val.write(now)?;
            } else {
                self.train.write(now)?;
            }
            self.pos += now.len() as u64;
            ids = rest;
        }
        Ok(())
    }
}

/// Block `k` is held out when it carries the running count of held-out blocks past the next
/// whole number: round(n·fraction) blocks among the first n, spread evenly through the stream.
pub fn is_val_block(k: u64, fraction: f64) -> bool {
    fraction > 0.0 && ((k + 1) as f64 * fraction + 0.5).floor() > (k as f64 * fraction + 0.5).floor()
}

/// One split's shard files, each closed at `shard_tokens` tokens.
struct Split {
    dir: PathBuf,
    prefix: &'static str,
    dtype: Dtype,
    shard_tokens: u64,
    current: Option<ShardWriter>,
    entries: Vec<ShardEntry>,
}

impl Split {
    fn new(dir: &Path, prefix: &'static str, dtype: Dtype, shard_tokens: u64) -> Split {
        Split {
            dir: dir.to_path_buf(),
            prefix,
            dtype,
            shard_tokens: shard_tokens.max(1),
            current: None,
            entries: Vec::new(),
        }
    }

    fn name(&self, i: usize) -> String {
        format!("{}-{i:06}.bin", self.prefix)
    }

    fn write(&mut self, mut ids: &[u32]) -> Result<()> {
        while !ids.is_empty() {
            if self.current.is_none() {
                let path = self.dir.join(self.name(self.entries.len()));
                self.current = Some(ShardWriter::create(&path, self.dtype)?);
            }
            let w = self.current.as_mut().expect("opened above");
            let room = (self.shard_tokens - w.tokens()) as usize;
            let (now, rest) = ids.split_at(room.min(ids.len()));
            w.write(now)?;
            ids = rest;
            if w.tokens() == self.shard_tokens {
                self.close()?;
            }
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let Some(w) = self.current.take() {
            let (tokens, crc32) = w.finish()?;
            let file = self.name(self.entries.len());
            self.entries.push(ShardEntry { file, tokens, crc32 });
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<ShardEntry>> {
        self.close()?;
        Ok(self.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_blocks_are_spread_and_counted() {
        let picked = |n: u64, f: f64| (0..n).filter(|&k| is_val_block(k, f)).collect::<Vec<_>>();
        assert_eq!(picked(100, 0.0), Vec::<u64>::new());
        assert_eq!(picked(100, 0.02), vec![24, 74]);
        assert_eq!(picked(10, 0.5).len(), 5);
        assert_eq!(picked(1000, 0.01).len(), 10);
    }

    #[test]
    fn shard_directory_entries_are_told_from_foreign_ones() {
        for name in [
            "manifest.json",
            "tokenizer.json",
            "train-000000.bin",
            "val-1234567.bin",
        ] {
            assert!(is_shard_entry(name), "{name}");
        }
        for name in [
            "train-.bin",
            "train-000000.bin.bak",
            "test-000000.bin",
            "notes.txt",
            ".git",
        ] {
            assert!(!is_shard_entry(name), "{name}");
        }
    }
}
