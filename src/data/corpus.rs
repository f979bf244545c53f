//! Reading a text corpus: files and directories of `.txt` files, in a stable (sorted) order, as
//! UTF-8 documents. One file is one document.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Expand `entries` (files or directories, relative to the working directory) into a sorted list
/// of text files. `key` names the config key in errors.
pub fn list_files(entries: &[String], key: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in entries {
        let path = Path::new(entry);
        let meta = std::fs::metadata(path).map_err(|e| {
            Error::input(
                path,
                format!("cannot read `{key}` entry: {e}; expected a text file or a directory"),
            )
        })?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| Error::input(path, format!("cannot list directory: {e}")))?
                .filter_map(|d| d.ok().map(|d| d.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "txt"))
                .collect();
            if found.is_empty() {
                return Err(Error::input(
                    path,
                    format!("`{key}` directory holds no .txt files"),
                ));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(path.to_path_buf());
        }
    }
    Ok(files)
}

/// Read one document. Errors name the file and, for bad UTF-8, the byte offset.
pub fn read_document(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::input(path, format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        Error::input(
            path,
            format!("not valid UTF-8 at byte offset {}", e.utf8_error().valid_up_to()),
        )
    })
}
