//! `colossus plot`: a run's metrics.jsonl drawn into one PNG — loss and validation loss vs
//! tokens, learning rate, tokens/s (and MFU) vs step, and the mean expert load per layer as a
//! heat map. Reading (`read`) is separate from drawing (`draw`).

pub mod draw;
pub mod read;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Draw `run_dir/metrics.jsonl` into `out` (default `run_dir/metrics.png`); returns the path.
pub fn plot(run_dir: &Path, out: Option<&Path>) -> Result<PathBuf> {
    if !run_dir.is_dir() {
        return Err(Error::input(
            run_dir,
            "not a run directory (expected checkpoints/<run_name>)",
        ));
    }
    let metrics = read::read(&run_dir.join("metrics.jsonl"))?;
    let out = out.map_or_else(|| run_dir.join("metrics.png"), Path::to_path_buf);
    let title = run_dir.file_name().map_or_else(
        || run_dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let png = draw::draw(&metrics, &title)?;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .ok_or_else(|| Error::input(&out, "not a file name for the PNG"))?
        .to_string_lossy()
        .into_owned();
    // Else the error named the hidden temporary file beside it.
    if !dir.is_dir() {
        let why = crate::checkpoint::atomic::file_in_the_way(dir)
            .unwrap_or_else(|| format!("directory {} does not exist", dir.display()));
        return Err(Error::input(&out, why));
    }
    crate::checkpoint::atomic::write_file_atomic(dir, &name, &png)?;
    Ok(out)
}
