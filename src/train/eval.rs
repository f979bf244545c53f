//! Mean next-token loss over a token stream, in non-overlapping windows: the number behind
//! `colossus eval` (and validation during training).

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use super::loss::cross_entropy;
use crate::config::Config;
use crate::data::{Batch, Dataset};
use crate::error::Result;
use crate::model::Grok;

#[derive(Debug, Clone, Copy)]
pub struct EvalResult {
    /// Mean cross-entropy per predicted token (nats).
    pub loss: f64,
    pub perplexity: f64,
    pub tokens: usize,
}

/// Score every token after the first: windows of `seq` inputs stepping by `seq`, `batch` windows
/// per forward. The tail shorter than a window is scored as its own shorter window.
pub fn evaluate<B: Backend>(
    model: &Grok<B>,
    tokens: &[u32],
    seq: usize,
    batch: usize,
    device: &B::Device,
) -> EvalResult {
    // A window of 0 would never advance.
    let seq = seq.max(1);
    let mut windows: Vec<(usize, usize)> = Vec::new(); // (start, len) with len+1 tokens available
    let mut s = 0;
    while s + 1 < tokens.len() {
        let len = seq.min(tokens.len() - 1 - s);
        windows.push((s, len));
        s += len;
    }
    let (mut total, mut count) = (0.0f64, 0usize);
    for group in windows
        .chunk_by(|a, b| a.1 == b.1)
        .flat_map(|g| g.chunks(batch.max(1)))
    {
        let len = group[0].1;
        let mut inputs = Vec::with_capacity(group.len() * len);
        let mut targets = Vec::with_capacity(group.len() * len);
        for &(start, _) in group {
            inputs.extend(tokens[start..start + len].iter().map(|&t| t as i64));
            targets.extend(tokens[start + 1..start + len + 1].iter().map(|&t| t as i64));
        }
        let shape = [group.len(), len];
        let x = Tensor::<B, 2, Int>::from_data(TensorData::new(inputs, shape), device);
        let y = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, shape), device);
        let loss: f64 = cross_entropy(model.forward(x, None).logits, y)
            .into_scalar()
            .elem();
        let n = group.len() * len;
        total += loss * n as f64;
        count += n;
    }
    let loss = if count > 0 { total / count as f64 } else { f64::NAN };
    EvalResult {
        loss,
        perplexity: loss.exp(),
        tokens: count,
    }
}

/// Mean next-token loss over fixed batches (validation during training), weighted by tokens.
/// NaN when there are none.
pub fn batches_loss<B: Backend>(model: &Grok<B>, batches: &[Batch], device: &B::Device) -> f64 {
    let (mut total, mut count) = (0.0f64, 0usize);
    for b in batches {
        let shape = [b.batch, b.seq];
        let x = Tensor::<B, 2, Int>::from_data(TensorData::new(b.inputs.clone(), shape), device);
        let y = Tensor::<B, 2, Int>::from_data(TensorData::new(b.targets.clone(), shape), device);
        let loss: f64 = cross_entropy(model.forward(x, None).logits, y)
            .into_scalar()
            .elem();
        total += loss * (b.batch * b.seq) as f64;
        count += b.batch * b.seq;
    }
    if count > 0 { total / count as f64 } else { f64::NAN }
}

/// The fixed validation batches (none when `train.eval_every` is 0).
pub fn validation_set(cfg: &Config, dataset: &Dataset) -> Result<Vec<Batch>> {
    let t = &cfg.train;
    if t.eval_every == 0 {
        return Ok(Vec::new());
    }
    let batches = dataset.val_batches(t.eval_batches, t.micro_batch, cfg.data.seq_len);
    if batches.is_empty() {
        return Err(cfg.error(
            "data.val_fraction",
            format!(
                "the validation split of {} has {} tokens, not one window of data.seq_len + 1 = {}; \
                 raise data.val_fraction or set train.eval_every: 0",
                dataset.dir.display(),
                dataset.manifest.val_tokens(),
                cfg.data.seq_len + 1
            ),
        ));
    }
    Ok(batches)
}
