//! What the training loop consumes: a micro-batch of next-token windows, and the trait every batch
//! source (the shard sampler, the benchmark's random tokens, test fixtures) implements.

/// One micro-batch, row-major `[batch, seq]`. A window of seq+1 tokens gives seq inputs and the
/// seq next-token targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub batch: usize,
    pub seq: usize,
    pub inputs: Vec<i64>,
    pub targets: Vec<i64>,
}

impl Batch {
    /// Build from `batch` windows of `seq + 1` tokens laid end to end.
    pub fn from_windows(windows: &[u32], batch: usize, seq: usize) -> Batch {
        debug_assert_eq!(windows.len(), batch * (seq + 1));
        let mut inputs = Vec::with_capacity(batch * seq);
        let mut targets = Vec::with_capacity(batch * seq);
        for w in windows.chunks_exact(seq + 1) {
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

/// Where training batches come from.
pub trait BatchSource {
    fn next_batch(&mut self, batch: usize, seq: usize) -> Batch;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_inputs_shifted() {
        let windows: Vec<u32> = (0..18).collect();
        let b = Batch::from_windows(&windows, 2, 8);
        assert_eq!(b.inputs[..8], [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(b.targets[..8], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(b.inputs[8..], [9, 10, 11, 12, 13, 14, 15, 16]);
        assert_eq!(b.targets[15], 17);
    }
}
