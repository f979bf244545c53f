//! RMSNorm over rows, forward and backward in one pass each. burn composes it from six tensor
//! ops (square, mean, add, sqrt, divide, scale), each a pass with a saved tensor, 64 times a step
//! for a 4-layer model counting the backward.

use rayon::prelude::*;

use crate::simd::multiversion;

/// Rows per task; the weight-gradient partial sums are per task, added in task order, so the
/// result does not depend on the thread count.
const ROWS: usize = 64;

/// `y = w ⊙ x / sqrt(mean(x²) + eps)` for each row of `d` values; also returns 1/rms per row.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32], inv_rms: &mut [f32]) {
    let d = w.len();
    assert!(
        x.len() == y.len() && x.len() == inv_rms.len() * d,
        "rms_norm: length mismatch"
    );
    y.par_chunks_mut(ROWS * d)
        .zip(inv_rms.par_chunks_mut(ROWS))
        .enumerate()
        .for_each(|(c, (y, r))| {
            let x = &x[c * ROWS * d..c * ROWS * d + y.len()];
            multiversion!(for (i, (y, r)) in y.chunks_mut(d).zip(r.iter_mut()).enumerate() {
                let x = &x[i * d..(i + 1) * d];
                let ms = crate::softmax::lanes_sum_sq(x) / d as f32;
                let inv = 1.0 / (ms + eps).sqrt();
                *r = inv;
                for j in 0..d {
                    y[j] = x[j] * inv * w[j];
                }
            })
        });
}

/// Gradients for upstream `g`: `dx = r·(g⊙w − x̂·mean(g⊙w⊙x̂))` with x̂ = x·r, and
/// `dw = Σ_rows g⊙x̂`.
pub fn rms_norm_backward(x: &[f32], w: &[f32], inv_rms: &[f32], g: &[f32], dx: &mut [f32], dw: &mut [f32]) {
    let d = w.len();
    assert!(
        x.len() == g.len() && x.len() == dx.len() && dw.len() == d,
        "rms_norm_backward: length mismatch"
    );
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(ROWS * d)
        .enumerate()
        .map(|(c, dx)| {
            let base = c * ROWS * d;
            let (x, g) = (&x[base..base + dx.len()], &g[base..base + dx.len()]);
            let r = &inv_rms[c * ROWS..c * ROWS + dx.len() / d];
            let mut dw = vec![0f32; d];
            multiversion!(for (i, dx) in dx.chunks_mut(d).enumerate() {
                let span = i * d..(i + 1) * d;
                row_backward(&x[span.clone()], w, &g[span], r[i], dx, &mut dw);
            });
            dw
        })
        .collect();
    dw.fill(0.0);
    for p in partials {
        for (a, b) in dw.iter_mut().zip(p) {
            *a += b;
        }
    }
}

/// One row of `rms_norm_backward`. The slices come in as arguments, so the compiler knows they
/// do not overlap and vectorises both loops (as captures of the `multiversion!` closure they
/// compiled to scalar code); the dot product runs in 8 fixed lanes for the same reason.
#[inline(always)]
fn row_backward(x: &[f32], w: &[f32], g: &[f32], r: f32, dx: &mut [f32], dw: &mut [f32]) {
    let d = x.len();
    let (w, g, dx, dw) = (&w[..d], &g[..d], &mut dx[..d], &mut dw[..d]);
    let mut acc = [0f32; 8];
    let (mut cx, mut cw, mut cg) = (x.chunks_exact(8), w.chunks_exact(8), g.chunks_exact(8));
    for ((x, w), g) in (&mut cx).zip(&mut cw).zip(&mut cg) {
        for l in 0..8 {
            acc[l] += g[l] * w[l] * x[l] * r;
        }
    }
    let mut dot: f32 = (cx.remainder().iter().zip(cw.remainder()).zip(cg.remainder()))
        .map(|((x, w), g)| g * w * x * r)
        .sum();
    for a in acc {
        dot += a;
    }
    let mean = dot / d as f32;
    for j in 0..d {
        let xh = x[j] * r;
        dx[j] = r * (g[j] * w[j] - xh * mean);
        dw[j] += g[j] * xh;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::data;

    fn loss64(x: &[f64], w: &[f64], g: &[f64], d: usize, eps: f64) -> f64 {
        let mut s = 0.0;
        for (row, gr) in x.chunks(d).zip(g.chunks(d)) {
            let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
            let r = 1.0 / (ms + eps).sqrt();
            s += (0..d).map(|j| row[j] * r * w[j] * gr[j]).sum::<f64>();
        }
        s
    }

    #[test]
    fn forward_and_backward_match_f64_central_differences() {
        let (rows, d, eps) = (150, 24, 1e-5);
        let (x, w, g) = (data(rows * d, 1), data(d, 2), data(rows * d, 3));
        let (mut y, mut r) = (vec![0.0; rows * d], vec![0.0; rows]);
        rms_norm(&x, &w, eps, &mut y, &mut r);
        let (mut dx, mut dw) = (vec![0.0; rows * d], vec![0.0; d]);
        rms_norm_backward(&x, &w, &r, &g, &mut dx, &mut dw);
        let f = |x: &[f64], w: &[f64]| {
            loss64(
                x,
                w,
                &g.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                d,
                eps as f64,
            )
        };
        let (x64, w64): (Vec<f64>, Vec<f64>) = (
            x.iter().map(|&v| v as f64).collect(),
            w.iter().map(|&v| v as f64).collect(),
        );
        for i in 0..rows * d {
            let ms = x64[(i / d) * d..(i / d + 1) * d]
                .iter()
                .map(|v| v * v)
                .sum::<f64>()
                / d as f64;
            let want = x64[i] / (ms + eps as f64).sqrt() * w64[i % d];
            assert!((y[i] as f64 - want).abs() < 1e-5, "y at {i}");
        }
        let h = 1e-6;
        for i in (0..rows * d).step_by(37) {
            let (mut a, mut b) = (x64.clone(), x64.clone());
            a[i] += h;
            b[i] -= h;
            let want = (f(&a, &w64) - f(&b, &w64)) / (2.0 * h);
            assert!(
                (dx[i] as f64 - want).abs() < 1e-4,
                "dx at {i}: {} vs {want}",
                dx[i]
            );
        }
        for j in 0..d {
            let (mut a, mut b) = (w64.clone(), w64.clone());
            a[j] += h;
            b[j] -= h;
            let want = (f(&x64, &a) - f(&x64, &b)) / (2.0 * h);
            assert!(
                (dw[j] as f64 - want).abs() < 1e-3 * want.abs().max(1.0),
                "dw at {j}: {} vs {want}",
                dw[j]
            );
        }
    }
}
