//! `manifest.json`: what a prepared data directory holds (shards, token counts, the tokenizer and
//! its SHA-256, the train/validation split, what was skipped). Written last, so a directory with a
//! manifest is complete.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::shard::Dtype;
use crate::error::{Error, Result};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const FORMAT: &str = "colossus-shards";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always "colossus-shards".
    pub format: String,
    pub format_version: u32,
    pub dtype: Dtype,
    /// Entries in the tokenizer (ids are below this).
    pub vocab_size: usize,
    /// The end-of-text id placed after every document.
    pub eot_id: u32,
    /// File name of the tokenizer, relative to the manifest.
    pub tokenizer: String,
    /// Lower-case hex SHA-256 of the tokenizer file's bytes.
    pub tokenizer_sha256: String,
    /// Share of the token stream held out for validation, in blocks of `val_block_tokens`.
    pub val_fraction: f64,
    pub val_block_tokens: u64,
    pub train: Vec<ShardEntry>,
    pub val: Vec<ShardEntry>,
    /// Documents written (each followed by `eot_id`).
    pub documents: u64,
    /// Documents skipped, by reason (only with `skip_bad`; empty otherwise).
    #[serde(default)]
    pub skipped: BTreeMap<String, u64>,
    /// Input bytes read.
    #[serde(default)]
    pub input_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name relative to the manifest.
    pub file: String,
    pub tokens: u64,
    /// CRC-32 of the payload (the header holds the same value).
    pub crc32: u32,
}

impl Manifest {
    pub fn train_tokens(&self) -> u64 {
        self.train.iter().map(|s| s.tokens).sum()
    }

    pub fn val_tokens(&self) -> u64 {
        self.val.iter().map(|s| s.tokens).sum()
    }

    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::input(
                &path,
                format!("cannot read the manifest: {e}; expected a directory written by `colossus prepare`"),
            )
        })?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| {
            Error::input(
                &path,
                format!(
                    "not a shard manifest (line {}, column {}): {e}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        if m.format != FORMAT || m.format_version != FORMAT_VERSION {
            return Err(Error::input(
                &path,
                format!(
                    "format {:?} version {}; this build reads {FORMAT:?} version {FORMAT_VERSION}",
                    m.format, m.format_version
                ),
            ));
        }
        Ok(m)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }
}

/// Lower-case hex SHA-256 of a file's bytes; errors name the file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::input(path, format!("cannot read: {e}")))?;
    Ok(sha256_hex(&bytes))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
