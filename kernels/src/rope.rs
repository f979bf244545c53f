//! Rotary position embedding in the NeoX rotate-half layout, applied in place on the projection
//! output's own `[rows, heads, head_dim]` layout (row = one token), forward and backward. burn's
//! composition (two strided slices, a negation, a concatenation, two products and a sum, over a
//! transposed view) copies the tensor several times each way.

use rayon::prelude::*;

use crate::simd::multiversion;

/// Where the rotation angles come from: row r is position `r % t` of the `cos`/`sin` tables
/// (`t × head_dim/2`, pair i of a position at `[pos·half + i]`).
#[derive(Debug, Clone, Copy)]
pub struct Rope<'a> {
    pub t: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub cos: &'a [f32],
    pub sin: &'a [f32],
}

/// `x` (`rows × heads × head_dim`) rotated in place: [x1·c − x2·s, x2·c + x1·s]; with `inverse`,
/// by the opposite angle (the backward: [g1·c + g2·s, g2·c − g1·s]).
pub fn rope(r: Rope<'_>, x: &mut [f32], inverse: bool) {
    let (half, row) = (r.head_dim / 2, r.heads * r.head_dim);
    assert!(
        x.len().is_multiple_of(row.max(1)) && r.cos.len() == r.t * half && r.sin.len() == r.t * half,
        "rope: length mismatch"
    );
    x.par_chunks_mut(row * 16).enumerate().for_each(|(c, rows)| {
        for (i, x) in rows.chunks_mut(row).enumerate() {
            let pos = (c * 16 + i) % r.t;
            let (cos, sin) = (
                &r.cos[pos * half..(pos + 1) * half],
                &r.sin[pos * half..(pos + 1) * half],
            );
            let s = if inverse { -1.0f32 } else { 1.0 };
            multiversion!(for h in x.chunks_mut(r.head_dim) {
                let (x1, x2) = h.split_at_mut(half);
                for j in 0..half {
                    let (a, b, sn) = (x1[j], x2[j], s * sin[j]);
                    x1[j] = a * cos[j] - b * sn;
                    x2[j] = b * cos[j] + a * sn;
                }
            })
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_pairs_and_the_inverse_undoes_it() {
        let (t, heads, hd) = (5, 3, 8);
        let half = hd / 2;
        let angle = |p: usize, i: usize| p as f64 * 0.3 + i as f64 * 0.1;
        let cos: Vec<f32> = (0..t * half)
            .map(|k| angle(k / half, k % half).cos() as f32)
            .collect();
        let sin: Vec<f32> = (0..t * half)
            .map(|k| angle(k / half, k % half).sin() as f32)
            .collect();
        let r = Rope {
            t,
            heads,
            head_dim: hd,
            cos: &cos,
            sin: &sin,
        };
        let x: Vec<f32> = (0..2 * t * heads * hd)
            .map(|i| ((i * 37) % 19) as f32 / 9.0 - 1.0)
            .collect();
        let mut y = x.clone();
        rope(r, &mut y, false);
        for (k, (&xv, &yv)) in x.iter().zip(&y).enumerate() {
            let (row, j) = (k / (heads * hd), k % hd);
            let (pos, i) = (row % t, j % half);
            let (c, s) = (angle(pos, i).cos(), angle(pos, i).sin());
            let base = k - j;
            let (x1, x2) = (x[base + i] as f64, x[base + half + i] as f64);
            let want = if j < half {
                x1 * c - x2 * s
            } else {
                x2 * c + x1 * s
            };
            assert!((yv as f64 - want).abs() < 1e-6, "at {k}: {yv} vs {want} (x {xv})");
        }
        rope(r, &mut y, true);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
