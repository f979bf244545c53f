//! `checksums.json`: the size and CRC-32 of every file in a checkpoint, written last into the
//! staged directory. Verifying it catches truncated files and flipped bytes before a resume
//! trusts them; CRC-32 (crc32fast, SIMD) reads at several GB/s, so a check costs little next to
//! the read the load does anyway.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const CHECKSUMS_FILE: &str = "checksums.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub bytes: u64,
    /// CRC-32 (IEEE) of the whole file, as 8 hex digits.
    pub crc32: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksums {
    pub files: BTreeMap<String, FileSum>,
}

impl Checksums {
    pub fn add(&mut self, name: &str, bytes: &[u8]) {
        self.files.insert(
            name.to_string(),
            FileSum {
                bytes: bytes.len() as u64,
                crc32: crc(bytes),
            },
        );
    }

    pub fn insert(&mut self, name: &str, sum: FileSum) {
        self.files.insert(name.to_string(), sum);
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("checksums serialize")
    }
}

fn crc(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

/// Size and CRC-32 of a file on disk, read in 8 MiB chunks (just written, so from page cache).
pub fn sum_file(path: &Path) -> Result<FileSum> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 8 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(FileSum {
        bytes,
        crc32: format!("{:08x}", hasher.finalize()),
    })
}

/// Check every file `dir/checksums.json` lists. Errors name the file and what is wrong with it.
/// Files are streamed: reading each whole, as this once did, held a second copy of the largest
/// (the optimizer's moments, 8 B per parameter) in memory at every resume.
pub fn verify(dir: &Path) -> Result<()> {
    verify_files(dir, None)
}

/// `verify` for the files a reader uses (`only`), or all of them: export and generate read the
/// weights, not the optimizer's moments twice their size.
pub fn verify_files(dir: &Path, only: Option<&[&str]>) -> Result<()> {
    let path = dir.join(CHECKSUMS_FILE);
    let text = std::fs::read(&path).map_err(|e| {
        Error::input(
            &path,
            format!("cannot read ({e}); a complete checkpoint lists its files' checksums here"),
        )
    })?;
    let sums: Checksums = serde_json::from_slice(&text)
        .map_err(|e| Error::input(&path, format!("not a checksum list: {e}")))?;
    for (name, want) in &sums.files {
        if only.is_some_and(|only| !only.contains(&name.as_str())) {
            continue;
        }
        let file = dir.join(name);
        let size = std::fs::metadata(&file)
            .map_err(|e| Error::input(&file, format!("cannot read: {e}")))?
            .len();
        if size != want.bytes {
            return Err(Error::input(
                &file,
                format!(
                    "is {size} bytes but was saved with {}: the file is truncated or was replaced",
                    want.bytes
                ),
            ));
        }
        let got = sum_file(&file)?.crc32;
        if got != want.crc32 {
            return Err(Error::input(
                &file,
                format!(
                    "checksum mismatch (crc32 {got}, saved {}): the file is corrupt",
                    want.crc32
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_of_known_input() {
        // The standard CRC-32 check value.
        assert_eq!(crc(b"123456789"), "cbf43926");
    }
}
