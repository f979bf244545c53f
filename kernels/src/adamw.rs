//! One AdamW update of a parameter in one pass over (p, g, m, v). The tensor-op version reads
//! and writes the parameter-sized buffers about a dozen times per step; this reads four and
//! writes three, on every core. The operations and their order are those of
//! `colossus::train::optim` in f32, so both give the same bits.

use rayon::prelude::*;

use crate::simd::multiversion;

/// The scalars of one step, already rounded to f32 as the tensor-op path rounds them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// sqrt(1 − β2ᵗ)
    pub bc2_sqrt: f32,
    pub eps: f32,
    /// 1 − lr·weight_decay for decayed parameters, `None` for the others.
    pub decay: Option<f32>,
    /// lr / (1 − β1ᵗ)
    pub step_size: f32,
}

const CHUNK: usize = 1 << 14;

/// m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  p ← p·decay;
/// p ← p − (m / (sqrt(v)/sqrt(1−β2ᵗ) + eps))·step_size.
pub fn adamw(s: AdamWStep, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let n = p.len();
    assert!(
        g.len() == n && m.len() == n && v.len() == n,
        "adamw: length mismatch"
    );
    p.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, ((p, m), v))| {
            let g = &g[c * CHUNK..c * CHUNK + p.len()];
            multiversion!(update(s, p, g, m, v))
        });
}

/// One chunk. The slices arrive as arguments, which tells the compiler they do not overlap; as
/// captures of the `multiversion!` closure they did not, and the loop compiled to scalar
/// `sqrtss`/`divss` at half the speed (30 ms per step at the tiny-peer shape, now ~14).
#[inline(always)]
fn update(s: AdamWStep, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let gi = g[i];
        let mi = m[i] * s.beta1 + gi * s.one_minus_beta1;
        let vi = v[i] * s.beta2 + gi * gi * s.one_minus_beta2;
        let denom = vi.sqrt() / s.bc2_sqrt + s.eps;
        let pi = match s.decay {
            Some(d) => p[i] * d,
            None => p[i],
        };
        p[i] = pi - (mi / denom) * s.step_size;
        m[i] = mi;
        v[i] = vi;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_textbook_update_in_f64() {
        let s = AdamWStep {
            beta1: 0.9,
            one_minus_beta1: 0.1,
            beta2: 0.95,
            one_minus_beta2: 0.05,
            bc2_sqrt: (1.0f64 - 0.95f64.powi(3)).sqrt() as f32,
            eps: 1e-8,
            decay: Some(1.0 - 1e-3 * 0.1),
            step_size: (1e-3 / (1.0 - 0.9f64.powi(3))) as f32,
        };
        let n = 50_000;
        let mut p: Vec<f32> = (0..n).map(|i| (i as f32 / n as f32) - 0.5).collect();
        let g: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
        let mut m: Vec<f32> = (0..n).map(|i| ((i * 11) % 23) as f32 / 230.0).collect();
        let mut v: Vec<f32> = (0..n).map(|i| ((i * 13) % 29) as f32 / 2900.0).collect();
        let (p0, m0, v0) = (p.clone(), m.clone(), v.clone());
        adamw(s, &mut p, &g, &mut m, &mut v);
        for i in 0..n {
            let gi = g[i] as f64;
            let mi = 0.9 * m0[i] as f64 + 0.1 * gi;
            let vi = 0.95 * v0[i] as f64 + 0.05 * gi * gi;
            let pi = p0[i] as f64 * (1.0 - 1e-4)
                - s.step_size as f64 * mi / (vi.sqrt() / s.bc2_sqrt as f64 + 1e-8);
            assert!(
                (m[i] as f64 - mi).abs() < 1e-6 && (v[i] as f64 - vi).abs() < 1e-6,
                "moments at {i}"
            );
            assert!(
                (p[i] as f64 - pi).abs() < 1e-5 * pi.abs().max(1.0),
                "param at {i}: {} vs {pi}",
                p[i]
            );
        }
    }
}
