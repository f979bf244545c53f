//! What a run shows while it trains: an indicatif bar on a terminal, one plain line every
//! `log_every` steps otherwise (CI logs, pipes, `--quiet`), and `metrics.jsonl` in the run directory.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::error::{Error, Result};

/// One optimizer step's numbers, as logged and appended to metrics.jsonl.
#[derive(Debug, Clone, Serialize)]
pub struct StepMetrics {
    pub step: usize,
    pub tokens: u64,
    pub loss: f64,
    pub aux_loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    pub step_time_s: f64,
    /// Model FLOP utilisation of this step (`train::mfu`); absent when the peak is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
    /// The process's peak resident memory so far, bytes (Linux; absent elsewhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_mem_bytes: Option<u64>,
    /// On a GPU: the device memory in live tensors at the end of this step's forward (the
    /// activations the backward needs; `backend::device_memory`), bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_mem_bytes: Option<u64>,
    /// `precision: f16`: the loss scale this step's backward ran with (`train::loss_scale`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    /// Per layer, the share of routed slots each expert received.
    pub expert_load: Vec<Vec<f32>>,
}

pub enum Display {
    Bar(ProgressBar),
    Lines { every: usize },
    Silent,
}

pub struct Progress {
    display: Display,
    metrics: Option<File>,
    steps: usize,
    start: Instant,
    first_step: Option<usize>,
}

impl Progress {
    /// `silent` suppresses the bar and lines (library callers, tests); `lines` forces one plain
    /// line every `log_every` steps even on a terminal (`--quiet`); `metrics_path` gets one JSON
    /// object per step.
    pub fn new(
        steps: usize,
        log_every: usize,
        silent: bool,
        lines: bool,
        metrics_path: Option<&Path>,
    ) -> Result<Self> {
        let display = if silent {
            Display::Silent
        } else if std::io::stderr().is_terminal() && !lines {
            let bar = ProgressBar::new(steps as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg} eta {eta}",
                )
                .expect("valid template"),
            );
            Display::Bar(bar)
        } else {
            Display::Lines { every: log_every }
        };
        let metrics = match metrics_path {
            Some(p) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| Error::io(p, e))?,
            ),
            None => None,
        };
        Ok(Progress {
            display,
            metrics,
            steps,
            start: Instant::now(),
            first_step: None,
        })
    }

    pub fn step(&mut self, m: &StepMetrics) -> Result<()> {
        if let Some(f) = &mut self.metrics {
            let line = serde_json::to_string(m).expect("metrics serialize");
            append_line(f, line)?;
        }
        let mfu = m
            .mfu
            .map(|u| format!(" mfu {:.1}%", 100.0 * u))
            .unwrap_or_default();
        let summary = format!(
            "loss {:.4} lr {:.2e} gnorm {:.3} {:.0} tok/s{mfu}",
            m.loss, m.lr, m.grad_norm, m.tokens_per_s
        );
        match &self.display {
            Display::Bar(bar) => {
                bar.set_position(m.step as u64);
                bar.set_message(summary);
            }
            Display::Lines { every } => {
                let first = *self.first_step.get_or_insert(m.step);
                if m.step.is_multiple_of(*every) || m.step == self.steps || m.step == first {
                    let elapsed = self.start.elapsed().as_secs_f64();
                    // Steps of this invocation only: a resumed run's earlier steps took no time here.
                    let done = (m.step + 1 - first) as f64;
                    let eta = elapsed / done * (self.steps - m.step) as f64;
                    crate::say::err(format_args!(
                        "step {}/{} {summary} elapsed {elapsed:.0}s eta {eta:.0}s",
                        m.step, self.steps
                    ));
                }
            }
            Display::Silent => {}
        }
        Ok(())
    }

    /// A validation result: `{"step":S,"tokens":T,"val_loss":L}` appended to metrics.jsonl and
    /// `step S val_loss L` printed.
    pub fn validation(&mut self, step: usize, tokens: u64, val_loss: f64) -> Result<()> {
        if let Some(f) = &mut self.metrics {
            let line = serde_json::json!({"step": step, "tokens": tokens, "val_loss": val_loss});
            append_line(f, line.to_string())?;
        }
        self.println(&format!("step {step} val_loss {val_loss:.4}"));
        Ok(())
    }

    /// A message that must not be garbled by the bar.
    pub fn println(&self, msg: &str) {
        match &self.display {
            Display::Bar(bar) => bar.println(msg),
            Display::Lines { .. } => crate::say::err(msg),
            Display::Silent => {}
        }
    }

    pub fn finish(&self) {
        if let Display::Bar(bar) = &self.display {
            bar.finish();
        }
    }
}

/// One metrics.jsonl record in one `write`: `writeln!` on a `File` writes the text and the newline
/// apart, so a reader (`plot` of a running run) or a kill could see a record without its end.
fn append_line(f: &mut std::fs::File, mut line: String) -> Result<()> {
    line.push('\n');
    f.write_all(line.as_bytes())
        .map_err(|e| Error::Train(format!("writing metrics.jsonl: {e}")))
}
