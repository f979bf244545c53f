//! Rotary position embedding over the full head dimension in the NeoX "rotate half" layout: the
//! first and second halves of each head form the (real, imaginary) pairs. Phases in f32.

use std::sync::Arc;

use burn::tensor::{Tensor, backend::Backend};

use super::init;

/// cos/sin tables for a run of positions, built once per forward and shared by every layer.
#[derive(Debug, Clone)]
pub struct RopeTables<B: Backend> {
    /// `[1, 1, seq, head_dim]`
    pub cos: Tensor<B, 4>,
    /// `[1, 1, seq, head_dim]`
    pub sin: Tensor<B, 4>,
    /// The same angles on the host, one per pair (`[seq, head_dim/2]`), for the fused CPU kernel.
    pub host_cos: Arc<Vec<f32>>,
    pub host_sin: Arc<Vec<f32>>,
}

impl<B: Backend> RopeTables<B> {
    /// Tables for positions `start .. start + len`.
    pub fn new(head_dim: usize, theta: f64, start: usize, len: usize, device: &B::Device) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(len * head_dim);
        let mut sin = Vec::with_capacity(len * head_dim);
        for pos in start..start + len {
            let row: Vec<f64> = (0..half)
                .map(|i| {
                    let inv_freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
                    pos as f64 * inv_freq
                })
                .collect();
            // Both halves share the phase of pair i.
            for _ in 0..2 {
                cos.extend(row.iter().map(|p| p.cos() as f32));
                sin.extend(row.iter().map(|p| p.sin() as f32));
            }
        }
        let pairs = |table: &[f32]| -> Vec<f32> {
            table
                .chunks(head_dim)
                .flat_map(|row| row[..half].to_vec())
                .collect()
        };
        let (host_cos, host_sin) = (Arc::new(pairs(&cos)), Arc::new(pairs(&sin)));
        let shape = [1, 1, len, head_dim];
        RopeTables {
            cos: init::floats(cos, shape, device),
            sin: init::floats(sin, shape, device),
            host_cos,
            host_sin,
        }
    }

    /// The plain path. `[batch, heads, seq, head_dim]` → same shape, rotated: x·cos + rotate_half(x)·sin where
    /// rotate_half([x1, x2]) = [-x2, x1].
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, h, t, hd] = x.dims();
        let half = hd / 2;
        let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..half]);
        let x2 = x.clone().slice([0..b, 0..h, 0..t, half..hd]);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}
