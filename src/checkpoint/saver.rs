//! Saving off the training thread: the loop hands over a host-memory `Snapshot` and goes on;
//! one writer thread serializes, checksums, fsyncs and publishes it, then prunes old checkpoints
//! (`keep_last`) once the new one is complete. At most one save is in flight: a second save waits
//! for the first, and that wait is counted as training stall along with the snapshot itself.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Instant;

use super::{SaveReport, Snapshot};
use crate::error::{Error, Result};

/// A save the loop has finished with, for the log.
#[derive(Debug, Clone)]
pub struct Saved {
    pub report: SaveReport,
    /// Seconds training waited for this save: the snapshot plus any wait for the previous write.
    pub stall_s: f64,
    /// Older checkpoints removed by `keep_last` after this one was complete.
    pub pruned: Vec<PathBuf>,
}

/// A published checkpoint and the older ones pruned after it.
type Written = Result<(SaveReport, Vec<PathBuf>)>;

pub struct Saver {
    run: PathBuf,
    keep_last: usize,
    /// The writer thread and the stall already counted for its save.
    pending: Option<(JoinHandle<Written>, f64)>,
}

impl Saver {
    pub fn new(run: PathBuf, keep_last: usize) -> Self {
        Saver {
            run,
            keep_last,
            pending: None,
        }
    }

    /// Start writing `snap` (taken in `snapshot_s` seconds). Returns the previous save if this
    /// call had to wait for it.
    pub fn submit(&mut self, snap: Snapshot, snapshot_s: f64) -> Result<Option<Saved>> {
        let wait_start = Instant::now();
        let previous = self.wait()?;
        let stall = snapshot_s + wait_start.elapsed().as_secs_f64();
        let (run, keep) = (self.run.clone(), self.keep_last);
        let job = move || -> Written {
            let report = snap.write()?;
            let pruned = super::prune(&run, keep)?;
            Ok((report, pruned))
        };
        let handle = std::thread::Builder::new()
            .name("checkpoint-writer".into())
            .spawn(job)
            .map_err(|e| Error::Train(format!("starting the checkpoint writer thread: {e}")))?;
        self.pending = Some((handle, stall));
        Ok(previous)
    }

    /// The in-flight save, if it has finished (never blocks).
    pub fn poll(&mut self) -> Result<Option<Saved>> {
        match &self.pending {
            Some((h, _)) if h.is_finished() => self.wait(),
            _ => Ok(None),
        }
    }

    /// Block until the in-flight save (if any) is published.
    pub fn wait(&mut self) -> Result<Option<Saved>> {
        let Some((handle, stall_s)) = self.pending.take() else {
            return Ok(None);
        };
        let (report, pruned) = handle
            .join()
            .map_err(|_| Error::Train("the checkpoint writer thread panicked".into()))??;
        Ok(Some(Saved {
            report,
            stall_s,
            pruned,
        }))
    }
}

/// A loop that stops on an error with a save in flight lets the write finish (or fail) before
/// the run lock (`checkpoint::lock`) is released, so no other process starts on the run
/// directory while this one still writes to it. The error of that write, if any, is dropped:
/// the one that stopped the loop is reported.
impl Drop for Saver {
    fn drop(&mut self) {
        if let Some((handle, _)) = self.pending.take() {
            let _ = handle.join();
        }
    }
}
