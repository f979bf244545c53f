//! The library's error type: every failure a user can cause names the file, key or value at fault.

use std::path::PathBuf;

/// Errors Colossus reports to users. `exit_code` maps them onto the process exit status: problems
/// with what the user gave us (config, flags, input files) exit 2, failures while running exit 1.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config file that cannot be read or parsed (syntax, unknown key, wrong type).
    #[error("config {file}: {msg}")]
    ConfigParse { file: String, msg: String },

    /// A config value that parses but cannot be used; `key` is the dotted path, e.g. `model.n_kv_heads`.
    #[error("config {file}: key `{key}`: {msg}")]
    ConfigValue { file: String, key: String, msg: String },

    /// A bad command-line flag value.
    #[error("flag {flag}: {msg}")]
    Flag { flag: String, msg: String },

    /// A backend that was not compiled into this binary.
    #[error("backend `{backend}` is not compiled into this binary: rebuild with `--features {feature}`")]
    BackendMissing { backend: String, feature: String },

    /// A backend that is compiled in but cannot open the configured device on this machine.
    #[error(
        "backend `{backend}`, device {device}: cannot start on this machine: {reason}\n\
         (choose another with `backend:` in the config or `--set backend=cpu`, or another GPU with `device:`)"
    )]
    BackendUnavailable {
        backend: String,
        device: usize,
        reason: String,
    },

    /// An input file (corpus, tokenizer, checkpoint) that is missing or malformed.
    #[error("{}: {msg}", path.display())]
    Input { path: PathBuf, msg: String },

    /// An I/O failure while writing run output.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// Training could not continue (non-finite loss, device failure, ...).
    #[error("training: {0}")]
    Train(String),

    /// Stopped by the user (SIGINT/SIGTERM) before there was anything to keep; says what was
    /// cleaned up.
    #[error("interrupted: {0}")]
    Interrupted(String),
}

impl Error {
    /// 2 for anything the user can fix in their input, 1 for failures while running.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::ConfigParse { .. }
            | Error::ConfigValue { .. }
            | Error::Flag { .. }
            | Error::BackendMissing { .. }
            | Error::BackendUnavailable { .. }
            | Error::Input { .. } => 2,
            Error::Io { .. } | Error::Train(_) => 1,
            // As a shell reports a process ended by SIGINT.
            Error::Interrupted(_) => 130,
        }
    }

    pub fn input(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Input {
            path: path.into(),
            msg: msg.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
