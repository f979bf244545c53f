//! Crash-safe publication of a checkpoint directory: everything is written under a temporary name,
//! fsynced, renamed into place in one step, and only then does the `latest` pointer move. A crash
//! at any point leaves either the old state or the new one, never a half-written checkpoint that
//! looks complete.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Name of the pointer file in a run directory; it holds the newest complete checkpoint's name.
pub const LATEST: &str = "latest";

/// A directory being written; `commit` publishes it, dropping it without commit removes it.
pub struct StagedDir {
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Stage `target` (which must not exist yet) next to it.
    pub fn new(target: &Path) -> Result<Self> {
        let parent = parent_dir(target);
        fs::create_dir_all(parent).map_err(|e| match file_in_the_way(parent) {
            Some(why) => Error::input(target, why),
            None => Error::io(parent, e),
        })?;
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("checkpoint");
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(StagedDir {
            tmp,
            target: target.to_path_buf(),
            committed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Write `bytes` to `name` inside the staged directory and fsync it.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.tmp.join(name);
        let mut f = File::create(&path).map_err(|e| Error::io(&path, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&path, e))?;
        f.sync_all().map_err(|e| Error::io(&path, e))
    }

    /// Let `fill` create file `name` inside the staged directory (e.g. a streaming serializer),
    /// then fsync it and return its size and checksum.
    pub fn write_with(
        &self,
        name: &str,
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<super::checksums::FileSum> {
        let path = self.tmp.join(name);
        fill(&path)?;
        File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&path, e))?;
        super::checksums::sum_file(&path)
    }

    /// fsync the files' directory, rename it into place, fsync the parent.
    pub fn commit(mut self) -> Result<PathBuf> {
        sync_dir(&self.tmp)?;
        if self.target.exists() {
            return Err(Error::io(
                &self.target,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    // Said by `prepare`, `export` and `import` too: two at once into one --out
                    // (found 2026-12-07) once read "checkpoint already exists" for token shards.
                    "appeared while this output was being written (another process writing \
                     the same path?); left as it is, and nothing was written in its place",
                ),
            ));
        }
        fs::rename(&self.tmp, &self.target).map_err(|e| Error::io(&self.target, e))?;
        self.committed = true;
        sync_dir(parent_dir(&self.target))?;
        Ok(self.target.clone())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Atomically replace `dir/name` with `contents` (temp file, fsync, rename, fsync dir).
pub fn write_file_atomic(dir: &Path, name: &str, contents: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let target = dir.join(name);
    {
        let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(contents).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    }
    fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
    sync_dir(dir)
}

/// Why `dir` cannot be created, when the nearest of it and the directories above it that exists
/// is something else than a directory. An output path under a file once failed with only "File
/// exists (os error 17)".
pub fn file_in_the_way(dir: &Path) -> Option<String> {
    let file = dir
        .ancestors()
        .find(|a| !a.as_os_str().is_empty() && a.exists() && !a.is_dir())?;
    Some(format!(
        "{} is a file; expected a directory there",
        file.display()
    ))
}

/// The directory `path` is in. A bare name's parent is the empty path, which the file system
/// does not open: `prepare --out shards` (or `shards/`) once failed with ": No such file or
/// directory", naming nothing.
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another process publishing the same path first (two `prepare`s into one --out) wins; this
    /// one says so without naming a checkpoint, leaves the other's output alone and removes its
    /// own staged copy.
    #[test]
    fn a_target_that_appears_meanwhile_is_left_as_it_is() {
        let dir = std::env::temp_dir().join(format!("colossus-atomic-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let target = dir.join("shards");
        let staged = StagedDir::new(&target).unwrap();
        staged.write("a.bin", b"mine").unwrap();
        let tmp = staged.path().to_path_buf();
        fs::create_dir(&target).unwrap();
        fs::write(target.join("a.bin"), b"theirs").unwrap();
        let e = staged.commit().unwrap_err().to_string();
        assert!(
            e.contains("shards: appeared while this output was being written") && !e.contains("checkpoint"),
            "{e}"
        );
        assert_eq!(fs::read(target.join("a.bin")).unwrap(), b"theirs");
        assert!(!tmp.exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
