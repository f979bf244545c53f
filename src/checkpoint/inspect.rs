//! `colossus inspect`: what a checkpoint (or exported folder) holds, read from headers through a
//! memory map, so a 600 GB checkpoint is described without reading its tensors; only the checksum
//! check reads every byte.

use std::fmt::Write;
use std::path::Path;

use super::tensors::MappedFile;
use super::{CONFIG_FILE, checksums, state};
use crate::error::{Error, Result};

/// A human-readable description of checkpoint directory `dir`.
pub fn describe(dir: &Path, verify: bool) -> Result<String> {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "checkpoint {}", dir.display());
    if let Ok(s) = state::read_state(dir) {
        let _ = writeln!(
            w,
            "  step {}, {} tokens seen, {} skipped steps, format version {}",
            s.step, s.tokens, s.skipped_steps, s.format_version
        );
        if let Some(scale) = s.loss_scale {
            let _ = writeln!(
                w,
                "  f16 loss scale 2^{} ({} clean steps since it last changed)",
                scale.log2, scale.clean_steps
            );
        }
    }
    if dir.join(checksums::CHECKSUMS_FILE).is_file() {
        if verify {
            // A damaged file fails here, named, before its header is parsed.
            checksums::verify(dir)?;
            let _ = writeln!(w, "  checksums: every file matches {}", checksums::CHECKSUMS_FILE);
        }
    } else {
        let _ = writeln!(
            w,
            "  checksums: none (an exported folder, or not a Colossus checkpoint)"
        );
    }
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::input(dir, format!("cannot list: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    if files.is_empty() {
        return Err(Error::input(dir, "holds no .safetensors files; not a checkpoint"));
    }
    files.sort();
    for file in &files {
        let mapped = MappedFile::open(file)?;
        let tensors = mapped.tensors()?;
        let bytes: u64 = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        let elems: usize = tensors.iter().map(|(_, _, s)| s.iter().product::<usize>()).sum();
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let _ = writeln!(
            w,
            "\n{name}: {} tensors, {elems} values, {:.2} MB",
            tensors.len(),
            bytes as f64 / 1e6
        );
        let mut meta: Vec<_> = mapped
            .metadata()
            .into_iter()
            .filter(|(k, _)| k != "config")
            .collect();
        meta.sort();
        for (k, v) in meta {
            let _ = writeln!(w, "  metadata {k}: {v}");
        }
        for (t, dtype, shape) in tensors {
            let n: usize = shape.iter().product();
            let size = n * dtype.bitsize() / 8;
            let _ = writeln!(
                w,
                "  {t:<48} {:<5} {:<20} {}",
                format!("{dtype:?}"),
                format!("{shape:?}"),
                human(size)
            );
        }
    }
    if let Ok(config) = std::fs::read_to_string(dir.join(CONFIG_FILE)) {
        let _ = writeln!(w, "\n{CONFIG_FILE}:\n{}", config.trim_end());
    }
    Ok(out)
}

/// Bytes for a person: B, KiB, MiB or GiB.
pub fn human(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}
