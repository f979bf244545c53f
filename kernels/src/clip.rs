//! Gradient clipping by global norm: Σg² over a parameter's gradient, and the in-place rescale.
//! burn ran these as a squared copy, a serial sum and a serial multiply per tensor (12–15 ms of a
//! tiny-peer step); here each is one parallel pass.

use rayon::prelude::*;

use crate::simd::multiversion;
use crate::softmax::lanes_sum_sq;

/// Elements per task. The split is fixed, so the sum does not depend on the thread count.
const CHUNK: usize = 1 << 14;

/// Σ g², each chunk summed in f32 in a fixed lane order, the chunks added in order in f64.
pub fn sum_squares(g: &[f32]) -> f64 {
    let partial: Vec<f64> = g
        .par_chunks(CHUNK)
        .map(|c| multiversion!(lanes_sum_sq(c)) as f64)
        .collect();
    partial.iter().sum()
}

/// g ← g · factor.
pub fn scale(g: &mut [f32], factor: f32) {
    g.par_chunks_mut(CHUNK).for_each(|c| {
        multiversion!({
            for v in c.iter_mut() {
                *v *= factor;
            }
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_squares_matches_f64_and_ignores_the_thread_count() {
        let g: Vec<f32> = (0..100_003)
            .map(|i| ((i * 7919) % 997) as f32 / 500.0 - 1.0)
            .collect();
        let want: f64 = g.iter().map(|&x| x as f64 * x as f64).sum();
        let got = sum_squares(&g);
        assert!((got - want).abs() < 1e-5 * want, "{got} vs {want}");
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| sum_squares(&g).to_bits())
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn scale_multiplies_each_element_once() {
        let mut g: Vec<f32> = (0..40_000).map(|i| i as f32).collect();
        scale(&mut g, 0.25);
        assert!(g.iter().enumerate().all(|(i, &v)| v == i as f32 * 0.25));
    }
}
