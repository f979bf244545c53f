//! Parsing metrics.jsonl: step records (with `loss`) and validation records (with `val_loss`).
//! A line that is not JSON or lacks its fields is an error naming the file and line, except an
//! unfinished last one.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// One optimizer step. Non-finite floats are written as JSON `null`, hence the options.
#[derive(Debug, Clone, Deserialize)]
pub struct StepRecord {
    pub step: usize,
    pub tokens: u64,
    pub loss: Option<f64>,
    pub lr: f64,
    pub tokens_per_s: Option<f64>,
    #[serde(default)]
    pub mfu: Option<f64>,
    #[serde(default)]
    pub expert_load: Vec<Vec<f32>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ValRecord {
    pub step: usize,
    pub tokens: u64,
    pub val_loss: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub steps: Vec<StepRecord>,
    pub vals: Vec<ValRecord>,
}

pub fn read(path: &Path) -> Result<Metrics> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::input(path, format!("cannot read ({e}); every training run writes one")))?;
    parse(&text, path)
}

pub fn parse(text: &str, path: &Path) -> Result<Metrics> {
    let mut m = Metrics::default();
    let lines = text.lines().count();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |msg: String| Error::input(path, format!("line {}: {msg}", i + 1));
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            // A last line without its newline is being written (plot of a running run) or was
            // cut by a kill (the resumed run trims it); the records before it still plot.
            Err(_) if i + 1 == lines && !text.ends_with('\n') => break,
            Err(e) => return Err(at(format!("not JSON: {e}"))),
        };
        if value.get("val_loss").is_some() {
            m.vals
                .push(serde_json::from_value(value).map_err(|e| at(format!("bad validation record: {e}")))?);
        } else {
            m.steps
                .push(serde_json::from_value(value).map_err(|e| at(format!("bad step record: {e}")))?);
        }
    }
    if m.steps.is_empty() {
        return Err(Error::input(path, "holds no step records: nothing to plot"));
    }
    Ok(m)
}

impl Metrics {
    /// Mean expert load per layer over all steps that logged it: `[layer][expert]`.
    pub fn mean_expert_load(&self) -> Vec<Vec<f64>> {
        let with: Vec<&StepRecord> = self.steps.iter().filter(|s| !s.expert_load.is_empty()).collect();
        let Some(first) = with.first() else {
            return Vec::new();
        };
        let mut sum: Vec<Vec<f64>> = first.expert_load.iter().map(|l| vec![0.0; l.len()]).collect();
        for s in &with {
            for (acc, layer) in sum.iter_mut().zip(&s.expert_load) {
                acc.iter_mut().zip(layer).for_each(|(a, &b)| *a += b as f64);
            }
        }
        sum.iter_mut().flatten().for_each(|x| *x /= with.len() as f64);
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_steps_and_validation_and_names_bad_lines() {
        let text = concat!(
            r#"{"step":1,"tokens":8,"loss":2.0,"aux_loss":1.0,"lr":0.1,"grad_norm":1.0,"tokens_per_s":4.0,"step_time_s":2.0,"expert_load":[[0.25,0.75]]}"#,
            "\n",
            r#"{"step":2,"tokens":16,"loss":null,"lr":0.2,"tokens_per_s":4.0,"expert_load":[[0.75,0.25]]}"#,
            "\n",
            r#"{"step":2,"tokens":16,"val_loss":1.5}"#,
            "\n"
        );
        let m = parse(text, Path::new("m.jsonl")).unwrap();
        assert_eq!((m.steps.len(), m.vals.len()), (2, 1));
        assert_eq!(m.steps[1].loss, None);
        assert_eq!(m.mean_expert_load(), vec![vec![0.5, 0.5]]);
        let err = parse("{\"step\":1}\n", Path::new("m.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.jsonl: line 1: bad step record"), "{err}");
        let err = parse(
            "{\"step\":1,\"tokens\":1,\"loss\":1,\"lr\":1}\nnope\n",
            Path::new("m.jsonl"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 2: not JSON"), "{err}");
        // An unfinished last line is left out; finished, it is an error like any other.
        let cut = concat!(
            r#"{"step":1,"tokens":1,"loss":1,"lr":1}"#,
            "\n",
            r#"{"step":2,"tok"#
        );
        assert_eq!(parse(cut, Path::new("m.jsonl")).unwrap().steps.len(), 1);
        let err = parse(&format!("{cut}\n"), Path::new("m.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2: not JSON"), "{err}");
        assert!(parse("", Path::new("m.jsonl")).is_err());
    }
}
