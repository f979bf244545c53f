//! The token shard file: a 32-byte header, then little-endian token ids, read zero-copy through
//! `memmap2`. docs/data-format.md is the normative description (Python writers follow it).
//!
//! ```text
//! offset  size  field
//!      0     8  magic "CLSSHARD"
//!      8     4  u32 format version (1)
//!     12     4  u32 bytes per token: 2 (u16 ids) or 4 (u32 ids)
//!     16     8  u64 token count
//!     24     4  u32 CRC-32 (zlib/IEEE) of the payload bytes
//!     28     4  u32 reserved, 0
//!     32        payload: token count × bytes per token, little-endian
//! ```

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const MAGIC: &[u8; 8] = b"CLSSHARD";
pub const VERSION: u32 = 1;
pub const HEADER_BYTES: usize = 32;

/// Width of a stored id. u16 halves the disk and page-cache footprint whenever the vocabulary
/// allows it (≤ 65536 entries, which covers every preset but grok-1's 131072).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    U16,
    U32,
}

impl Dtype {
    /// The narrowest dtype that holds ids `0..vocab`.
    pub fn for_vocab(vocab: usize) -> Dtype {
        if vocab <= 1 << 16 { Dtype::U16 } else { Dtype::U32 }
    }

    pub fn bytes(self) -> usize {
        match self {
            Dtype::U16 => 2,
            Dtype::U32 => 4,
        }
    }

    /// Ids `0..=max_id` fit.
    pub fn max_id(self) -> u64 {
        match self {
            Dtype::U16 => u16::MAX as u64,
            Dtype::U32 => u32::MAX as u64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::U16 => "u16",
            Dtype::U32 => "u32",
        }
    }

    fn from_bytes(b: u32) -> Option<Dtype> {
        match b {
            2 => Some(Dtype::U16),
            4 => Some(Dtype::U32),
            _ => None,
        }
    }
}

/// Streams ids into one shard file. The header is written last (it holds the count and the
/// checksum), so a file cut short by a crash never has a valid header; callers also write into a
/// staging directory that is renamed into place only when every shard is complete.
pub struct ShardWriter {
    path: PathBuf,
    out: BufWriter<File>,
    dtype: Dtype,
    tokens: u64,
    crc: crc32fast::Hasher,
}

impl ShardWriter {
    pub fn create(path: &Path, dtype: Dtype) -> Result<Self> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; HEADER_BYTES])
            .map_err(|e| Error::io(path, e))?;
        Ok(ShardWriter {
            path: path.to_path_buf(),
            out,
            dtype,
            tokens: 0,
            crc: crc32fast::Hasher::new(),
        })
    }

    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Append ids; each must fit the dtype (checked: a silent wrap would corrupt training data).
    pub fn write(&mut self, ids: &[u32]) -> Result<()> {
        let mut buf = Vec::with_capacity(ids.len() * self.dtype.bytes());
        for &id in ids {
            match self.dtype {
                Dtype::U16 => {
                    let v = u16::try_from(id).map_err(|_| {
                        Error::input(
                            &self.path,
                            format!("token id {id} does not fit a u16 shard; the tokenizer needs u32 shards"),
                        )
                    })?;
                    buf.extend_from_slice(&v.to_le_bytes());
                }
                Dtype::U32 => buf.extend_from_slice(&id.to_le_bytes()),
            }
        }
        self.crc.update(&buf);
        self.out.write_all(&buf).map_err(|e| Error::io(&self.path, e))?;
        self.tokens += ids.len() as u64;
        Ok(())
    }

    /// Write the header, flush and fsync. Returns (token count, CRC-32).
    pub fn finish(self) -> Result<(u64, u32)> {
        let ShardWriter {
            path,
            out,
            dtype,
            tokens,
            crc,
        } = self;
        let crc = crc.finalize();
        let mut file = out.into_inner().map_err(|e| Error::io(&path, e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| Error::io(&path, e))?;
        file.write_all(&header(dtype, tokens, crc))
            .map_err(|e| Error::io(&path, e))?;
        file.sync_all().map_err(|e| Error::io(&path, e))?;
        Ok((tokens, crc))
    }
}

pub fn header(dtype: Dtype, tokens: u64, crc: u32) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(dtype.bytes() as u32).to_le_bytes());
    h[16..24].copy_from_slice(&tokens.to_le_bytes());
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A shard opened for reading: the header checked, the payload memory-mapped.
pub struct Shard {
    path: PathBuf,
    map: Mmap,
    dtype: Dtype,
    tokens: u64,
    crc: u32,
}

impl Shard {
    /// Open and check the header and the file length. Errors name the file and what is wrong
    /// (foreign file, newer version, truncated).
    pub fn open(path: &Path) -> Result<Shard> {
        let file = File::open(path).map_err(|e| Error::input(path, format!("cannot open shard: {e}")))?;
        // SAFETY: the mapping is read-only and shards are immutable once published (written under
        // a temporary name, then renamed). Truncating a shard while a run reads it is outside the
        // contract, as for any memory-mapped input.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::input(path, format!("cannot map: {e}")))?;
        if map.len() < HEADER_BYTES || &map[0..8] != MAGIC {
            return Err(Error::input(
                path,
                format!(
                    "not a Colossus token shard (bad magic at byte offset 0; expected {:?})",
                    std::str::from_utf8(MAGIC).expect("ascii")
                ),
            ));
        }
        let u32_at = |o: usize| u32::from_le_bytes(map[o..o + 4].try_into().expect("4 bytes"));
        let version = u32_at(8);
        if version != VERSION {
            return Err(Error::input(
                path,
                format!(
                    "shard format version {version} at byte offset 8; this build reads version {VERSION}"
                ),
            ));
        }
        let dtype = Dtype::from_bytes(u32_at(12)).ok_or_else(|| {
            Error::input(
                path,
                format!(
                    "bytes per token {} at byte offset 12; expected 2 or 4",
                    u32_at(12)
                ),
            )
        })?;
        let tokens = u64::from_le_bytes(map[16..24].try_into().expect("8 bytes"));
        let crc = u32_at(24);
        let want = tokens
            .checked_mul(dtype.bytes() as u64)
            .and_then(|b| b.checked_add(HEADER_BYTES as u64));
        if want != Some(map.len() as u64) {
            return Err(Error::input(
                path,
                format!(
                    "truncated or padded: header says {tokens} {} tokens ({} bytes) but the file has {} bytes",
                    dtype.name(),
                    want.map_or("too many".to_string(), |w| w.to_string()),
                    map.len()
                ),
            ));
        }
        Ok(Shard {
            path: path.to_path_buf(),
            map,
            dtype,
            tokens,
            crc,
        })
    }

    /// Recompute the payload checksum (reads the whole file: ~GB/s).
    pub fn verify(&self) -> Result<()> {
        let got = crc32fast::hash(&self.map[HEADER_BYTES..]);
        if got != self.crc {
            return Err(Error::input(
                &self.path,
                format!(
                    "checksum mismatch: payload CRC-32 is {got:#010x}, header (byte offset 24) says {:#010x}; \
                     the shard is corrupt",
                    self.crc
                ),
            ));
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    pub fn len(&self) -> u64 {
        self.tokens
    }

    pub fn is_empty(&self) -> bool {
        self.tokens == 0
    }

    pub fn crc(&self) -> u32 {
        self.crc
    }

    /// Append ids `start..start + n` to `out`. Decoding straight from the mapping: no copy of
    /// the file, and only the touched pages are read from disk.
    pub fn read_into(&self, start: u64, n: usize, out: &mut Vec<u32>) {
        let w = self.dtype.bytes();
        let (a, b) = (start as usize * w, (start as usize + n) * w);
        let bytes = &self.map[HEADER_BYTES + a..HEADER_BYTES + b];
        match self.dtype {
            Dtype::U16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32),
            ),
            Dtype::U32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
        }
    }

    /// All ids (tests and small shards).
    pub fn to_vec(&self) -> Vec<u32> {
        let mut v = Vec::with_capacity(self.tokens as usize);
        self.read_into(0, self.tokens as usize, &mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_both_dtypes() {
        let dir = std::env::temp_dir().join(format!("colossus-shard-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (dtype, ids) in [
            (Dtype::U16, vec![0u32, 1, 65535, 7]),
            (Dtype::U32, vec![0u32, 70000, u32::MAX]),
        ] {
            let path = dir.join(format!("{}.bin", dtype.name()));
            let mut w = ShardWriter::create(&path, dtype).unwrap();
            w.write(&ids[..1]).unwrap();
            w.write(&ids[1..]).unwrap();
            let (n, crc) = w.finish().unwrap();
            assert_eq!(n, ids.len() as u64);
            let s = Shard::open(&path).unwrap();
            s.verify().unwrap();
            assert_eq!((s.dtype(), s.crc()), (dtype, crc));
            assert_eq!(s.to_vec(), ids);
            let mut part = Vec::new();
            s.read_into(1, 2, &mut part);
            assert_eq!(part, ids[1..3]);
        }
        let mut w = ShardWriter::create(&dir.join("x.bin"), Dtype::U16).unwrap();
        assert!(w.write(&[65536]).unwrap_err().to_string().contains("u16"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
