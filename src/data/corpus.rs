//! Reading raw corpora: plain text files (one file is one document), JSONL files (one line is one
//! document, its text in a configurable field), and directories of either, in a stable sorted
//! order. Text comes out in pieces of a few MiB so a huge file is neither held in memory whole nor
//! tokenized on one core. Bad documents are errors naming file and line or byte offset, or, when
//! asked, skipped and counted.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Text is handed out in pieces of about this many bytes.
pub const PIECE_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Jsonl,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub path: PathBuf,
    pub kind: Kind,
    pub bytes: u64,
}

fn kind_of(path: &Path) -> Option<Kind> {
    match path.extension().and_then(|x| x.to_str()) {
        Some("txt") => Some(Kind::Text),
        Some("jsonl") => Some(Kind::Jsonl),
        _ => None,
    }
}

/// Expand `entries` (files, or directories searched recursively for `.txt` and `.jsonl`, hidden
/// names left out) into a sorted list of inputs. A file named directly is JSONL if it ends in
/// `.jsonl`, text otherwise. `key` names the config key (or flag) in errors.
///
/// Symbolic links are followed (a corpus is often a link farm over shared storage), so two
/// things are refused rather than read: a link back to a directory that contains it, which
/// listed the corpus about 40 times over (until the kernel's link limit stopped the walk)
/// and trained on it that way; and a file reached twice (two entries, or an entry and a link
/// into it), which trains on its documents twice and can put a copy on both sides of the
/// validation split.
pub fn list_inputs(entries: &[String], key: &str) -> Result<Vec<Input>> {
    let mut inputs = Vec::new();
    // Each file's resolved path and the path it was first listed under.
    let mut seen: HashMap<PathBuf, PathBuf> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        // Named by position: an empty path has no name of its own (`prepare ''` said
        // ": cannot read"). A config's empty entry is refused when the config is read.
        if entry.is_empty() {
            return Err(Error::Flag {
                flag: key.to_string(),
                msg: format!(
                    "entry {} is empty; expected a text or JSONL file or a directory",
                    i + 1
                ),
            });
        }
        let path = Path::new(entry);
        let meta = std::fs::metadata(path).map_err(|e| {
            Error::input(
                path,
                format!("cannot read `{key}` entry: {e}; expected a text or JSONL file or a directory"),
            )
        })?;
        let mut listed = Vec::new();
        if meta.is_dir() {
            let (mut found, mut hidden) = (Vec::new(), Vec::new());
            walk(path, &mut vec![resolve(path)?], &mut found, &mut hidden)?;
            if found.is_empty() {
                // A corpus kept under a hidden name (`.data/`) looks empty; say why.
                let why = match hidden.iter().min() {
                    Some(first) => format!(
                        " outside hidden names, which are left out ({} here, e.g. {}; name one \
                         as an entry to read it)",
                        hidden.len(),
                        first.display()
                    ),
                    None => String::new(),
                };
                return Err(Error::input(
                    path,
                    format!("`{key}` directory holds no .txt or .jsonl files{why}"),
                ));
            }
            found.sort();
            for p in found {
                let bytes = std::fs::metadata(&p)
                    .map_err(|e| Error::input(&p, e.to_string()))?
                    .len();
                let kind = kind_of(&p).expect("walk keeps known kinds");
                listed.push(Input { path: p, kind, bytes });
            }
        } else {
            let kind = kind_of(path).unwrap_or(Kind::Text);
            listed.push(Input {
                path: path.to_path_buf(),
                kind,
                bytes: meta.len(),
            });
        }
        for input in listed {
            if let Some(first) = seen.insert(resolve(&input.path)?, input.path.clone()) {
                return Err(Error::input(
                    &input.path,
                    format!(
                        "the `{key}` entries reach this file twice, also as {}: its documents would \
                         be trained on twice and could sit on both sides of the validation split; \
                         list each file once",
                        first.display()
                    ),
                ));
            }
            inputs.push(input);
        }
    }
    Ok(inputs)
}

/// `path` with every link resolved, to compare what two paths reach.
fn resolve(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).map_err(|e| Error::input(path, format!("cannot resolve: {e}")))
}

/// Collect `dir`'s corpus files; `open` holds the resolved directories being walked, `dir`'s
/// last, to catch a link that leads back into one of them.
fn walk(
    dir: &Path,
    open: &mut Vec<PathBuf>,
    found: &mut Vec<PathBuf>,
    hidden: &mut Vec<PathBuf>,
) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::input(dir, format!("cannot list directory: {e}")))?;
    for e in entries {
        let p = e
            .map_err(|e| Error::input(dir, format!("cannot list directory: {e}")))?
            .path();
        // Hidden names are tools' files, not the corpus: macOS writes a binary `._NAME.txt`
        // beside each file on a shared drive (it stopped the run as invalid UTF-8), editors and
        // notebooks keep copies in `.ipynb_checkpoints/` (trained on twice). Named as an entry,
        // a hidden file is read.
        if p.file_name()
            .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
        {
            hidden.push(p);
            continue;
        }
        if p.is_dir() {
            let real = resolve(&p)?;
            if let Some(outer) = open.iter().find(|o| **o == real) {
                return Err(Error::input(
                    &p,
                    format!(
                        "a symbolic link on this path leads back to {}, which the path is \
                         inside of: the corpus would be listed over and over; remove the link \
                         or list the directories to read",
                        outer.display()
                    ),
                ));
            }
            open.push(real);
            walk(&p, open, found, hidden)?;
            open.pop();
        } else if p.is_file() && kind_of(&p).is_some() {
            found.push(p);
        }
    }
    Ok(())
}

/// Read one whole text document. Errors name the file and, for bad UTF-8, the byte offset.
pub fn read_document(path: &Path) -> Result<String> {
    let mut bytes = std::fs::read(path).map_err(|e| Error::input(path, format!("cannot read: {e}")))?;
    let bom = strip_bom(&mut bytes, 0);
    String::from_utf8(bytes).map_err(|e| {
        Error::input(
            path,
            format!(
                "not valid UTF-8 at byte offset {}",
                bom + e.utf8_error().valid_up_to() as u64
            ),
        )
    })
}

/// A run of text from one document; `end_of_doc` marks its last piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub text: String,
    pub end_of_doc: bool,
    /// Input bytes this piece accounts for (progress).
    pub bytes: u64,
}

/// Why documents were skipped, with a count each and the first few places, for the summary.
#[derive(Debug, Clone, Default)]
pub struct Skips {
    pub counts: BTreeMap<String, u64>,
    pub examples: Vec<String>,
}

impl Skips {
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Streams the pieces of every input in order.
pub struct Reader {
    inputs: Vec<Input>,
    next_input: usize,
    open: Option<Open>,
    field: String,
    skip_bad: bool,
    piece_bytes: usize,
    pub skips: Skips,
}

enum Open {
    Text {
        path: PathBuf,
        file: BufReader<File>,
        /// Bytes read but not yet handed out (they follow the last safe cut).
        carry: Vec<u8>,
        /// File offset of `carry[0]`.
        offset: u64,
        eof: bool,
    },
    Jsonl {
        path: PathBuf,
        file: BufReader<File>,
        line: u64,
        offset: u64,
    },
}

const SKIP_HINT: &str = "skip bad documents with `data.skip_bad: true` (or `prepare --skip-bad`)";

impl Reader {
    pub fn new(inputs: Vec<Input>, field: &str, skip_bad: bool) -> Reader {
        Reader {
            inputs,
            next_input: 0,
            open: None,
            field: field.to_string(),
            skip_bad,
            piece_bytes: PIECE_BYTES,
            skips: Skips::default(),
        }
    }

    /// Hand text out in pieces of about `n` bytes instead of `PIECE_BYTES` (tests).
    pub fn with_piece_bytes(mut self, n: usize) -> Reader {
        self.piece_bytes = n.max(4);
        self
    }

    /// A bad document: an error, or (with `skip_bad`) counted under `reason` and skipped.
    fn bad(&mut self, path: &Path, reason: &str, msg: String) -> Result<()> {
        if !self.skip_bad {
            return Err(Error::input(path, format!("{msg}; {SKIP_HINT}")));
        }
        *self.skips.counts.entry(reason.to_string()).or_default() += 1;
        if self.skips.examples.len() < 5 {
            self.skips.examples.push(format!("{}: {msg}", path.display()));
        }
        Ok(())
    }

    /// The next piece, or `None` when every input is done.
    pub fn next_piece(&mut self) -> Result<Option<Piece>> {
        loop {
            if self.open.is_none() {
                let Some(input) = self.inputs.get(self.next_input).cloned() else {
                    return Ok(None);
                };
                self.next_input += 1;
                let f = File::open(&input.path)
                    .map_err(|e| Error::input(&input.path, format!("cannot read: {e}")))?;
                let file = BufReader::with_capacity(1 << 20, f);
                if input.bytes == 0 {
                    self.bad(&input.path, "empty file", "empty file".into())?;
                    continue;
                }
                self.open = Some(match input.kind {
                    Kind::Text => Open::Text {
                        path: input.path,
                        file,
                        carry: Vec::new(),
                        offset: 0,
                        eof: false,
                    },
                    Kind::Jsonl => Open::Jsonl {
                        path: input.path,
                        file,
                        line: 0,
                        offset: 0,
                    },
                });
            }
            let piece = match self.open.as_mut().expect("opened above") {
                Open::Text { .. } => self.text_piece()?,
                Open::Jsonl { .. } => self.jsonl_piece()?,
            };
            if let Some(p) = piece {
                return Ok(Some(p));
            }
        }
    }

    /// The file the last piece `next_piece` handed out came from and, for JSONL, its line:
    /// where a caller that fails on the piece's text (a tokenizer that cannot encode it) points
    /// the user.
    pub fn last_place(&self) -> (&Path, Option<u64>) {
        // `next_piece` opens the next input only when asked for another piece, so the last one
        // came from the input opened last; a JSONL file stays open after each of its lines.
        let line = match &self.open {
            Some(Open::Jsonl { line, .. }) => Some(*line),
            _ => None,
        };
        (&self.inputs[self.next_input.saturating_sub(1)].path, line)
    }

    /// The next piece of the open text file: up to the last safe cut after PIECE_BYTES, or the
    /// rest of the file. `None` (file closed) when a skipped tail leaves nothing to hand out.
    fn text_piece(&mut self) -> Result<Option<Piece>> {
        let piece_bytes = self.piece_bytes;
        let Some(Open::Text {
            path,
            file,
            carry,
            offset,
            eof,
        }) = self.open.as_mut()
        else {
            unreachable!("called for text files")
        };
        let mut cut = None;
        while cut.is_none() && !*eof {
            let before = carry.len();
            let n = file
                .by_ref()
                .take(piece_bytes as u64)
                .read_to_end(carry)
                .map_err(|e| Error::input(&*path, format!("cannot read: {e}")))?;
            *eof = n == 0;
            if carry.len() >= piece_bytes {
                cut = safe_cut(carry, before.saturating_sub(1).max(piece_bytes / 2));
            }
        }
        let end = cut.unwrap_or(carry.len());
        let rest = carry.split_off(end);
        let mut bytes = std::mem::replace(carry, rest);
        let start = *offset;
        *offset += bytes.len() as u64;
        let end_of_doc = *eof && carry.is_empty();
        let path = path.clone();
        if end_of_doc {
            self.open = None;
        }
        let len = bytes.len() as u64;
        let bom = strip_bom(&mut bytes, start);
        match String::from_utf8(bytes) {
            Ok(text) => Ok(Some(Piece {
                text,
                end_of_doc,
                bytes: len,
            })),
            Err(e) => {
                let at = start + bom + e.utf8_error().valid_up_to() as u64;
                self.bad(
                    &path,
                    "invalid UTF-8",
                    format!("not valid UTF-8 at byte offset {at}"),
                )?;
                // Skipped: drop this piece (the whole file when it is under PIECE_BYTES).
                Ok(end_of_doc.then(|| Piece {
                    text: String::new(),
                    end_of_doc,
                    bytes: len,
                }))
            }
        }
    }

    fn jsonl_piece(&mut self) -> Result<Option<Piece>> {
        let Some(Open::Jsonl {
            path,
            file,
            line,
            offset,
        }) = self.open.as_mut()
        else {
            unreachable!("called for JSONL files")
        };
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = file
                .read_until(b'\n', &mut buf)
                .map_err(|e| Error::input(&*path, format!("cannot read: {e}")))?;
            if n == 0 {
                self.open = None;
                return Ok(None);
            }
            *line += 1;
            let start = *offset;
            *offset += n as u64;
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue; // blank lines (a trailing newline) are not documents
            }
            let (path, line) = (path.clone(), *line);
            let bom = strip_bom(&mut buf, start);
            let text = match std::str::from_utf8(&buf) {
                Ok(t) => t,
                Err(e) => {
                    let at = start + bom + e.valid_up_to() as u64;
                    self.bad(
                        &path,
                        "invalid UTF-8",
                        format!("line {line}: not valid UTF-8 at byte offset {at}"),
                    )?;
                    return Ok(Some(skipped(n)));
                }
            };
            let value: serde_json::Value = match serde_json::from_str(text) {
                Ok(v) => v,
                Err(e) => {
                    self.bad(&path, "not JSON", format!("line {line}: not JSON: {e}"))?;
                    return Ok(Some(skipped(n)));
                }
            };
            let doc = match value.get(&self.field) {
                Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
                Some(serde_json::Value::String(_)) => {
                    let msg = format!("line {line}: field `{}` is empty", self.field);
                    self.bad(&path, "empty text", msg)?;
                    return Ok(Some(skipped(n)));
                }
                other => {
                    let what = if other.is_some() {
                        "is not a string"
                    } else {
                        "is missing"
                    };
                    let msg = format!(
                        "line {line}: field `{}` {what} (set data.jsonl_field / --jsonl-field to the text field)",
                        self.field
                    );
                    self.bad(&path, "no text field", msg)?;
                    return Ok(Some(skipped(n)));
                }
            };
            return Ok(Some(Piece {
                text: doc,
                end_of_doc: true,
                bytes: n as u64,
            }));
        }
    }
}

/// A skipped JSONL line: nothing to tokenize, but its bytes count towards progress.
fn skipped(n: usize) -> Piece {
    Piece {
        text: String::new(),
        end_of_doc: true,
        bytes: n as u64,
    }
}

/// A file's opening UTF-8 byte-order mark (Windows editors write one) is not text: as JSONL it
/// made the first line "not JSON", as text a stray token. `start` is the file offset of `bytes`;
/// removes it and returns how many bytes went.
fn strip_bom(bytes: &mut Vec<u8>, start: u64) -> u64 {
    const BOM: &[u8] = b"\xef\xbb\xbf";
    if start == 0 && bytes.starts_with(BOM) {
        bytes.drain(..BOM.len());
        return BOM.len() as u64;
    }
    0
}

/// The last position `p >= from` where `bytes[p-1]` is a newline between two printable ASCII
/// characters. Cutting there is invisible to byte-level BPE: its pre-tokenizer always makes such a
/// lone newline its own pre-token, so the pieces tokenize to exactly the ids of the whole text.
pub fn safe_cut(bytes: &[u8], from: usize) -> Option<usize> {
    let printable = |b: u8| (0x21..=0x7e).contains(&b);
    (from.max(2)..bytes.len())
        .rev()
        .find(|&p| bytes[p - 1] == b'\n' && printable(bytes[p - 2]) && printable(bytes[p]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_cuts_need_a_lone_newline_between_visible_characters() {
        assert_eq!(safe_cut(b"ab\ncd\nef", 0), Some(6));
        assert_eq!(safe_cut(b"ab\ncd\nef", 6), Some(6));
        assert_eq!(safe_cut(b"ab \ncd", 0), None);
        assert_eq!(safe_cut(b"ab\n\ncd", 0), None);
        assert_eq!(safe_cut(b"ab\n cd", 0), None);
    }
}
