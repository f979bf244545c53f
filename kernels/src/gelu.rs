//! Grok-1's expert activation `gelu_tanh(a) ⊙ b` and its backward, in one pass each. burn builds
//! the tanh-approximate GELU from seven tensor ops (a `powf` for a³ among them), each a separate
//! pass forward and backward with its own saved tensor.

use rayon::prelude::*;

use crate::math::tanh;
use crate::simd::multiversion;

/// √(2/π)
const C: f32 = 0.797_884_6;
const K: f32 = 0.044_715;
/// Elements per parallel task: big enough to amortise scheduling, small enough for both cores.
const CHUNK: usize = 1 << 14;

/// `out = gelu_tanh(a) ⊙ b`, gelu_tanh(a) = ½·a·(1 + tanh(√(2/π)·(a + 0.044715·a³))).
pub fn gelu_gate(a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(
        a.len() == b.len() && a.len() == out.len(),
        "gelu_gate: length mismatch"
    );
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| {
        let r = c * CHUNK..c * CHUNK + o.len();
        let (a, b) = (&a[r.clone()], &b[r]);
        multiversion!(forward_chunk(a, b, o))
    });
}

/// Gradients of `gelu_gate` for the upstream gradient `g`, in place: `a` becomes
/// `da = g ⊙ b ⊙ gelu'(a)` and `b` becomes `db = g ⊙ gelu(a)`, with
/// gelu'(a) = ½(1 + t) + ½·a·(1 − t²)·√(2/π)·(1 + 3·0.044715·a²).
pub fn gelu_gate_backward(a: &mut [f32], b: &mut [f32], g: &[f32]) {
    let n = a.len();
    assert!(
        b.len() == n && g.len() == n,
        "gelu_gate_backward: length mismatch"
    );
    a.par_chunks_mut(CHUNK)
        .zip(b.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, (da, db))| {
            let g = &g[c * CHUNK..c * CHUNK + da.len()];
            multiversion!(backward_chunk(da, db, g))
        });
}

// The chunk loops take their slices as arguments: the compiler then knows they do not overlap
// (as captures of the `multiversion!` closure it did not, which can keep a loop scalar).

#[inline(always)]
fn forward_chunk(a: &[f32], b: &[f32], o: &mut [f32]) {
    let n = o.len();
    let (a, b) = (&a[..n], &b[..n]);
    for i in 0..n {
        let x = a[i];
        let t = tanh(C * (x + K * x * x * x));
        o[i] = 0.5 * x * (1.0 + t) * b[i];
    }
}

#[inline(always)]
fn backward_chunk(da: &mut [f32], db: &mut [f32], g: &[f32]) {
    let n = da.len();
    let (db, g) = (&mut db[..n], &g[..n]);
    for i in 0..n {
        let x = da[i];
        let t = tanh(C * (x + K * x * x * x));
        let gelu = 0.5 * x * (1.0 + t);
        let dgelu = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * C * (1.0 + 3.0 * K * x * x);
        da[i] = g[i] * db[i] * dgelu;
        db[i] = g[i] * gelu;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gelu64(x: f64) -> f64 {
        0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
    }

    #[test]
    fn forward_matches_f64() {
        let a: Vec<f32> = (0..40_000).map(|i| (i as f32 - 20_000.0) / 2_000.0).collect();
        let b: Vec<f32> = (0..40_000)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let mut out = vec![0.0; a.len()];
        gelu_gate(&a, &b, &mut out);
        for i in 0..a.len() {
            let want = gelu64(a[i] as f64) * b[i] as f64;
            assert!(
                (out[i] as f64 - want).abs() < 1e-5 * want.abs().max(1.0),
                "at {i}: {} vs {want}",
                out[i]
            );
        }
    }

    #[test]
    fn backward_matches_central_differences_in_f64() {
        let a: Vec<f32> = (0..2_000).map(|i| (i as f32 - 1_000.0) / 150.0).collect();
        let b: Vec<f32> = (0..2_000).map(|i| ((i * 31) % 97) as f32 / 48.0 - 1.0).collect();
        let g: Vec<f32> = (0..2_000).map(|i| ((i * 13) % 89) as f32 / 44.0 - 1.0).collect();
        let (mut da, mut db) = (a.clone(), b.clone());
        gelu_gate_backward(&mut da, &mut db, &g);
        let h = 1e-6;
        for i in 0..a.len() {
            let x = a[i] as f64;
            let want_da = g[i] as f64 * b[i] as f64 * (gelu64(x + h) - gelu64(x - h)) / (2.0 * h);
            let want_db = g[i] as f64 * gelu64(x);
            assert!(
                (da[i] as f64 - want_da).abs() < 1e-5,
                "da at {i}: {} vs {want_da}",
                da[i]
            );
            assert!(
                (db[i] as f64 - want_db).abs() < 1e-5 * want_db.abs().max(1.0),
                "db at {i}"
            );
        }
    }
}
