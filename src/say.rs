//! Lines for the person watching a command, written so that a reader gone or a stream that fails
//! never ends the work (a run's log is a view of it; metrics.jsonl and the checkpoints are the
//! record), and the numbers in them.
//!
//! `eprintln!`/`println!` panic when the write fails. With Rust's runtime ignoring SIGPIPE (which
//! `train` keeps while its ranks talk over sockets), that ended a run piped into `head` at its
//! first log line, before any step, and a run whose terminal had closed: the hangup stops the run
//! with a checkpoint, and the stop's own lines then failed (EIO) before the save.

use std::fmt::Display;
use std::io::Write;

/// `msg` and a newline on stderr in one write; a failed write is dropped.
pub fn err(msg: impl Display) {
    let _ = std::io::stderr().lock().write_all(format!("{msg}\n").as_bytes());
}

/// `msg` and a newline on stdout in one write; a failed write is dropped. A closed pipe still
/// ends the process where SIGPIPE has its default action (`cli::end_quietly_on_a_closed_pipe`).
pub fn out(msg: impl Display) {
    let _ = std::io::stdout().lock().write_all(format!("{msg}\n").as_bytes());
}

/// A number as a message shows it: plain where that is short, in exponent form past it (`{}`
/// wrote `lr: 1e300` out as 301 digits).
pub fn num(x: f64) -> String {
    if x == 0.0 || (1e-4..1e16).contains(&x.abs()) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}
