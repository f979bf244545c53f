//! The in-memory token stream and its sampler: batches of random contiguous windows. A window of
//! seq+1 tokens gives seq inputs and the seq next-token targets.

use crate::error::{Error, Result};
use crate::rng::Rng;

/// One micro-batch, row-major `[batch, seq]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub batch: usize,
    pub seq: usize,
    pub inputs: Vec<i64>,
    pub targets: Vec<i64>,
}

/// Where training batches come from. The shard pipeline implements the same interface.
pub trait BatchSource {
    fn next_batch(&mut self, batch: usize, seq: usize) -> Batch;
}

/// Uniformly random windows over one token stream, drawn with a seeded host RNG so the batch
/// sequence is the same on every run and backend.
#[derive(Debug, Clone)]
pub struct RandomWindows {
    tokens: Vec<u32>,
    rng: Rng,
}

impl RandomWindows {
    pub fn new(tokens: Vec<u32>, seed: u64, seq: usize) -> Result<Self> {
        if tokens.len() < seq + 2 {
            return Err(Error::Train(format!(
                "the corpus has {} tokens, fewer than one window of data.seq_len + 1 = {}",
                tokens.len(),
                seq + 1
            )));
        }
        Ok(RandomWindows {
            tokens,
            rng: Rng::derive(seed, "data.windows"),
        })
    }

    /// The sampler's whole position: a checkpoint stores it so a resumed run draws the batches
    /// the uninterrupted run would have drawn.
    pub fn cursor(&self) -> u64 {
        self.rng.state()
    }

    pub fn set_cursor(&mut self, cursor: u64) {
        self.rng = Rng::from_state(cursor);
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

impl BatchSource for RandomWindows {
    fn next_batch(&mut self, batch: usize, seq: usize) -> Batch {
        let starts = (self.tokens.len() - seq) as u64; // windows [s, s+seq]
        let mut inputs = Vec::with_capacity(batch * seq);
        let mut targets = Vec::with_capacity(batch * seq);
        for _ in 0..batch {
            let s = self.rng.below(starts) as usize;
            let w = &self.tokens[s..s + seq + 1];
            inputs.extend(w[..seq].iter().map(|&t| t as i64));
            targets.extend(w[1..].iter().map(|&t| t as i64));
        }
        Batch {
            batch,
            seq,
            inputs,
            targets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_inputs_shifted() {
        let tokens: Vec<u32> = (0..100).collect();
        let mut w = RandomWindows::new(tokens, 3, 8).unwrap();
        let b = w.next_batch(4, 8);
        for r in 0..4 {
            let (i, t) = (&b.inputs[r * 8..r * 8 + 8], &b.targets[r * 8..r * 8 + 8]);
            assert!(i.windows(2).all(|p| p[1] == p[0] + 1));
            assert_eq!(t[0], i[0] + 1);
            assert_eq!(t[7], i[7] + 1);
            assert!(t[7] < 100);
        }
        let mut again = RandomWindows::new((0..100).collect(), 3, 8).unwrap();
        assert_eq!(again.next_batch(4, 8), b);
        assert!(RandomWindows::new((0..9).collect(), 3, 8).is_err());
    }
}
