//! Grok-1's attention probabilities in one pass per row: scale, tanh soft cap, causal mask,
//! softmax; and the backward of the whole chain. burn runs these as five tensor ops over the
//! `[batch, heads, seq, seq]` logits (plus a materialised −∞ bias), forward and backward.

use rayon::prelude::*;

use crate::math::{exp, tanh};
use crate::simd::multiversion;

/// What to compute over rows of `cols` logits x:
/// `p = softmax(cap·tanh(multiplier·x / cap))` over the visible columns (all of x when `cap` is 0:
/// `softmax(multiplier·x)`), 0 at masked columns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CappedSoftmax {
    pub cols: usize,
    pub multiplier: f32,
    /// 0 turns the cap off.
    pub cap: f32,
    /// `Some((t, past))`: row R is query position `past + R % t` of a causal attention over
    /// `past + t` keys (rows come in blocks of t consecutive positions, as in `[.., rep·t, s]`),
    /// so it sees columns `0 ..= past + R % t`. `None`: every column is visible.
    pub causal: Option<(usize, usize)>,
}

impl CappedSoftmax {
    pub(crate) fn visible(&self, row: usize) -> usize {
        match self.causal {
            Some((t, past)) => (past + row % t + 1).min(self.cols),
            None => self.cols,
        }
    }

    fn rows_per_task(&self) -> usize {
        (8192 / self.cols.max(1)).max(1)
    }
}

/// Forward, in place: `x` (`rows × cols` logits) becomes the probabilities. `tanh_out` keeps
/// tanh(multiplier·x/cap) for the backward (untouched when the cap is off).
pub fn capped_softmax(op: CappedSoftmax, x: &mut [f32], tanh_out: &mut [f32]) {
    let n = op.cols;
    assert!(
        x.len() == tanh_out.len() && x.len().is_multiple_of(n.max(1)),
        "capped_softmax: length mismatch"
    );
    let per = op.rows_per_task() * n;
    x.par_chunks_mut(per)
        .zip(tanh_out.par_chunks_mut(per))
        .enumerate()
        .for_each(|(c, (p, th))| forward_rows(op, c * op.rows_per_task(), n, p, th));
}

/// Consecutive rows `first ..` of `width` logits each (the first `width` of the op's columns;
/// the attention kernel's blocks see a prefix of the keys): each row's visible part becomes
/// probabilities, the rest 0.
pub(crate) fn forward_rows(op: CappedSoftmax, first: usize, width: usize, p: &mut [f32], th: &mut [f32]) {
    for (r, (p, th)) in p.chunks_mut(width).zip(th.chunks_mut(width)).enumerate() {
        let len = op.visible(first + r).min(width);
        multiversion!(forward_row(op, &mut p[..len], &mut th[..len]));
        p[len..].fill(0.0);
    }
}

/// `p` holds the row's visible logits on entry, its probabilities on return.
#[inline(always)]
fn forward_row(op: CappedSoftmax, p: &mut [f32], th: &mut [f32]) {
    if op.cap > 0.0 && op.cap <= NO_SHIFT_CAP {
        // Capped logits lie in [−cap, cap], so e^z neither overflows nor underflows and the
        // max-subtraction pass is unnecessary: tanh and exp share one pass.
        let scale = op.multiplier / op.cap;
        for (v, t) in p.iter_mut().zip(th.iter_mut()) {
            *t = tanh(*v * scale);
            *v = exp(op.cap * *t);
        }
        let inv = 1.0 / lanes_sum(p);
        for v in p.iter_mut() {
            *v *= inv;
        }
        return;
    }
    if op.cap > 0.0 {
        for j in 0..p.len() {
            let t = tanh(p[j] * op.multiplier / op.cap);
            th[j] = t;
            p[j] = op.cap * t;
        }
    } else {
        for v in p.iter_mut() {
            *v *= op.multiplier;
        }
    }
    let max = lanes_max(p);
    for v in p.iter_mut() {
        *v = exp(*v - max);
    }
    let inv = 1.0 / lanes_sum(p);
    for v in p.iter_mut() {
        *v *= inv;
    }
}

/// Backward, in place: `g` (the upstream gradient) becomes dx, from the forward's `probs` and
/// `tanh_out`. dz = p ⊙ (g − Σ g⊙p); dx = dz ⊙ multiplier ⊙ (1 − tanh²) (without the cap:
/// dz ⊙ multiplier).
pub fn capped_softmax_backward(op: CappedSoftmax, probs: &[f32], tanh_out: &[f32], g: &mut [f32]) {
    let n = op.cols;
    assert!(
        probs.len() == g.len() && tanh_out.len() == g.len(),
        "capped_softmax_backward: length mismatch"
    );
    let per = op.rows_per_task() * n;
    g.par_chunks_mut(per).enumerate().for_each(|(c, g)| {
        let span = c * per..c * per + g.len();
        let (p, th) = (&probs[span.clone()], &tanh_out[span]);
        backward_rows(op, c * op.rows_per_task(), n, p, th, g);
    });
}

/// The backward of `forward_rows` over the same rows: `g` becomes dx, 0 at masked columns.
pub(crate) fn backward_rows(
    op: CappedSoftmax,
    first: usize,
    width: usize,
    p: &[f32],
    th: &[f32],
    g: &mut [f32],
) {
    for (r, ((p, th), g)) in p
        .chunks(width)
        .zip(th.chunks(width))
        .zip(g.chunks_mut(width))
        .enumerate()
    {
        let len = op.visible(first + r).min(width);
        multiversion!(backward_row(op, &p[..len], &th[..len], &mut g[..len]));
        g[len..].fill(0.0);
    }
}

#[inline(always)]
fn backward_row(op: CappedSoftmax, p: &[f32], th: &[f32], g: &mut [f32]) {
    let s = lanes_dot(g, p);
    if op.cap > 0.0 {
        for j in 0..p.len() {
            g[j] = p[j] * (g[j] - s) * op.multiplier * (1.0 - th[j] * th[j]);
        }
    } else {
        for j in 0..p.len() {
            g[j] = p[j] * (g[j] - s) * op.multiplier;
        }
    }
}

/// Σ a⊙b in the fixed lane order of `lanes_sum`.
#[inline(always)]
pub(crate) fn lanes_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum::<f32>();
    for v in acc {
        s += v;
    }
    s
}

const LANES: usize = 8;

/// Largest cap for which `forward_row` skips the max shift: e^80 ≈ 5.5e34, so even a row of
/// 1000 columns at the cap sums below f32::MAX, and e^−80 is still a normal f32.
const NO_SHIFT_CAP: f32 = 80.0;

/// Sum in 8 interleaved partial sums (a fixed order, so it vectorises and stays deterministic).
#[inline(always)]
fn lanes_sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    let mut s = chunks.remainder().iter().sum::<f32>();
    for a in acc {
        s += a;
    }
    s
}

/// Σ v², in the same fixed lane order as `lanes_sum`.
#[inline(always)]
pub(crate) fn lanes_sum_sq(v: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += c[l] * c[l];
        }
    }
    let mut s = chunks.remainder().iter().map(|x| x * x).sum::<f32>();
    for a in acc {
        s += a;
    }
    s
}

#[inline(always)]
pub(crate) fn lanes_max(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(acc.iter())
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f64 reference of the forward for one row.
    fn reference(op: CappedSoftmax, x: &[f32], row: usize) -> Vec<f64> {
        let len = op.visible(row);
        let z: Vec<f64> = x[..len]
            .iter()
            .map(|&v| {
                let s = v as f64 * op.multiplier as f64;
                if op.cap > 0.0 {
                    op.cap as f64 * (s / op.cap as f64).tanh()
                } else {
                    s
                }
            })
            .collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        let mut p: Vec<f64> = e.iter().map(|v| v / s).collect();
        p.resize(op.cols, 0.0);
        p
    }

    fn logits(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| (((i * 7919) % 2003) as f32 / 1001.0 - 1.0) * 40.0)
            .collect()
    }

    const OPS: [CappedSoftmax; 3] = [
        CappedSoftmax {
            cols: 13,
            multiplier: 0.25,
            cap: 30.0,
            causal: Some((5, 8)),
        },
        CappedSoftmax {
            cols: 13,
            multiplier: 0.25,
            cap: 0.0,
            causal: Some((13, 0)),
        },
        CappedSoftmax {
            cols: 13,
            multiplier: 0.5,
            cap: 2.0,
            causal: None,
        },
    ];

    #[test]
    fn forward_matches_f64_reference() {
        for op in OPS {
            let rows = 40;
            let x = logits(rows, op.cols);
            let (mut p, mut t) = (x.clone(), vec![0.0; x.len()]);
            capped_softmax(op, &mut p, &mut t);
            for r in 0..rows {
                let want = reference(op, &x[r * op.cols..(r + 1) * op.cols], r);
                for j in 0..op.cols {
                    let got = p[r * op.cols + j] as f64;
                    assert!(
                        (got - want[j]).abs() < 2e-6,
                        "{op:?} row {r} col {j}: {got} vs {}",
                        want[j]
                    );
                }
            }
        }
    }

    #[test]
    fn backward_matches_central_differences_of_the_reference() {
        for op in OPS {
            let rows = 12;
            let x = logits(rows, op.cols);
            let g: Vec<f32> = (0..x.len()).map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0).collect();
            let (mut p, mut t, mut dx) = (x.clone(), vec![0.0; x.len()], g.clone());
            capped_softmax(op, &mut p, &mut t);
            capped_softmax_backward(op, &p, &t, &mut dx);
            let n = op.cols;
            for r in 0..rows {
                for j in 0..n {
                    // d/dx_j of Σ_k g_k p_k(x), by central differences in f64.
                    let f = |h: f32| {
                        let mut row = x[r * n..(r + 1) * n].to_vec();
                        row[j] += h;
                        let p = reference(op, &row, r);
                        (0..n).map(|k| g[r * n + k] as f64 * p[k]).sum::<f64>()
                    };
                    let h = 1e-2;
                    let want = (f(h) - f(-h)) / (2.0 * h as f64);
                    let got = dx[r * n + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-4,
                        "{op:?} row {r} col {j}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let op = CappedSoftmax {
            cols: 300,
            multiplier: 0.1,
            cap: 30.0,
            causal: Some((300, 0)),
        };
        let x = logits(600, op.cols);
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let (mut p, mut t) = (x.clone(), vec![0.0; x.len()]);
                capped_softmax(op, &mut p, &mut t);
                p.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            })
        };
        assert_eq!(run(1), run(3));
    }
}
