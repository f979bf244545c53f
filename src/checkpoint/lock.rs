//! One training process per run directory: an exclusive lock on a file beside it.
//!
//! Two processes training into one run directory (a scheduler restarting a job whose first copy
//! still runs, the same command in two terminals) destroy each other's output: the second one's
//! start removes the first one's in-flight save as "half-written by an earlier process", trims
//! metrics.jsonl under it, and `--overwrite` deletes the checkpoints it is writing. The lock makes
//! the second one stop before it touches anything.
//!
//! The lock is the OS's advisory file lock (`flock` on Unix), so it ends with the process however
//! it ends, SIGKILL included: no stale lock to clean up after a crash. The file lives beside the
//! run directory (`<out_dir>/.<run_name>.lock`), not in it, so `--overwrite` can empty the
//! directory while holding it. It is never removed: removing it would let a third process lock a
//! new file while a second still holds the old one. Only the leader rank takes it; the other
//! ranks never write to the run directory. On a network file system that does not support
//! `flock` across machines, two jobs on two machines are not kept apart.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Held for as long as the process trains into the run; dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// `<out_dir>/.<run_name>.lock` for the run directory `run`.
pub fn path(run: &Path) -> PathBuf {
    let name = run
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy());
    run.with_file_name(format!(".{name}.lock"))
}

impl RunLock {
    /// Lock `run` for this process, creating its parent if needed; refuse, naming the run
    /// directory and the holder's process id, when another process holds it.
    pub fn acquire(run: &Path) -> Result<RunLock> {
        let lock = path(run);
        if let Some(parent) = lock.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(|e| Error::io(&lock, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "another process".to_string(),
                    pid => format!("another process (pid {pid})"),
                };
                return Err(Error::input(
                    run,
                    format!(
                        "{holder} is training into this run directory (it holds {}); wait for it \
                         to finish or stop it, or choose another name (--set run_name=NAME)",
                        lock.display()
                    ),
                ));
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&lock, e)),
        }
        // The holder's pid, for the message above; only the lock itself decides who runs.
        let pid = std::process::id().to_string();
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()));
        written.map_err(|e| Error::io(&lock, e))?;
        Ok(RunLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second lock on a held run is refused with the holder's pid; after the first is dropped
    /// it is granted. (Within one process `flock` locks conflict per open file, as between
    /// processes.)
    #[test]
    fn a_held_run_is_refused_until_released() {
        let dir = std::env::temp_dir().join(format!("colossus-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let run = dir.join("out").join("tiny");
        let first = RunLock::acquire(&run).unwrap();
        assert_eq!(path(&run), dir.join("out/.tiny.lock"));
        let err = RunLock::acquire(&run).unwrap_err().to_string();
        let pid = format!("pid {}", std::process::id());
        assert!(err.contains(&pid) && err.contains("out/tiny"), "{err}");
        drop(first);
        let again = RunLock::acquire(&run).unwrap();
        drop(again);
        assert!(!run.exists(), "the lock does not create the run directory");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
