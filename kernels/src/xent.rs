//! Mean next-token cross-entropy from logits, and its gradient `(softmax − onehot)/n`, in one pass
//! over the `[tokens, vocab]` logits each (burn: log-softmax, gather, mean, and their backwards).

use rayon::prelude::*;

use crate::math::exp;
use crate::simd::multiversion;

const ROWS: usize = 16;

/// Per-row log-sum-exp of `logits` (`rows × vocab`) and the mean of `lse − logit[target]`.
/// Targets outside the vocabulary panic (the caller validated them against the vocab size).
pub fn cross_entropy(logits: &[f32], vocab: usize, targets: &[usize], lse: &mut [f32]) -> f32 {
    assert!(
        logits.len() == targets.len() * vocab && lse.len() == targets.len(),
        "cross_entropy: length mismatch"
    );
    lse.par_chunks_mut(ROWS).enumerate().for_each(|(c, lse)| {
        for (i, l) in lse.iter_mut().enumerate() {
            let row = c * ROWS + i;
            let x = &logits[row * vocab..(row + 1) * vocab];
            *l = multiversion!(log_sum_exp(x));
        }
    });
    // Summed in row order in f64: deterministic, and no drift over hundreds of thousands of rows.
    let total: f64 = targets
        .iter()
        .enumerate()
        .map(|(row, &t)| (lse[row] - logits[row * vocab + t]) as f64)
        .sum();
    (total / targets.len() as f64) as f32
}

#[inline(always)]
fn log_sum_exp(x: &[f32]) -> f32 {
    // max is exact, so the lane order changes no bit; the serial fold was latency-bound.
    let max = crate::softmax::lanes_max(x);
    let mut acc = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            acc[l] += exp(c[l] - max);
        }
    }
    let mut s: f32 = chunks.remainder().iter().map(|&v| exp(v - max)).sum();
    for a in acc {
        s += a;
    }
    max + s.ln()
}

/// In place, `logits` become `scale · (softmax(logits) − onehot(target))`, with `scale` = upstream
/// gradient / rows.
pub fn cross_entropy_backward(logits: &mut [f32], vocab: usize, targets: &[usize], lse: &[f32], scale: f32) {
    assert!(
        logits.len() == targets.len() * vocab && lse.len() == targets.len(),
        "cross_entropy_backward: length mismatch"
    );
    logits
        .par_chunks_mut(ROWS * vocab)
        .enumerate()
        .for_each(|(c, d)| {
            for (i, d) in d.chunks_mut(vocab).enumerate() {
                let row = c * ROWS + i;
                let l = lse[row];
                multiversion!(for v in d.iter_mut() {
                    *v = scale * exp(*v - l);
                });
                d[targets[row]] -= scale;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_gradient_match_f64() {
        let (rows, vocab) = (37, 50);
        let x: Vec<f32> = (0..rows * vocab)
            .map(|i| ((i * 7919) % 997) as f32 / 50.0 - 10.0)
            .collect();
        let t: Vec<usize> = (0..rows).map(|i| (i * 13) % vocab).collect();
        let mut lse = vec![0.0; rows];
        let loss = cross_entropy(&x, vocab, &t, &mut lse);
        let mut want = 0f64;
        let mut d = x.clone();
        cross_entropy_backward(&mut d, vocab, &t, &lse, 0.5 / rows as f32);
        for r in 0..rows {
            let row: Vec<f64> = x[r * vocab..(r + 1) * vocab].iter().map(|&v| v as f64).collect();
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let l = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            want += l - row[t[r]];
            for j in 0..vocab {
                let g = 0.5 / rows as f64 * ((row[j] - l).exp() - if j == t[r] { 1.0 } else { 0.0 });
                assert!((d[r * vocab + j] as f64 - g).abs() < 1e-7, "gradient at {r},{j}");
            }
        }
        want /= rows as f64;
        assert!((loss as f64 - want).abs() < 1e-5, "{loss} vs {want}");
    }
}
