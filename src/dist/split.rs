//! Which rows of a global micro-batch a rank trains on. Every rank draws the same global batch from
//! its (identically seeded) `BatchSource` and keeps rows rank·b/W .. (rank+1)·b/W: a host-side copy
//! of a few KB, exactly the rows one rank with the whole batch would see, and every rank's sampler
//! cursor stays equal, so resume needs no per-rank state. A rank-aware shard sampler (the data
//! pipeline's) can replace this slice later by drawing only the rank's rows.

use std::ops::Range;

use crate::data::Batch;

/// Rows of a `batch`-row micro-batch that `rank` of `world` trains on (`world` divides `batch`,
/// checked at config time against `train.micro_batch`).
pub fn rows(batch: usize, rank: usize, world: usize) -> Range<usize> {
    debug_assert!(batch.is_multiple_of(world));
    let per = batch / world;
    rank * per..(rank + 1) * per
}

/// The rows `rows` of `b`, as a batch of their own.
pub fn slice(b: Batch, rows: Range<usize>) -> Batch {
    if rows.start == 0 && rows.end == b.batch {
        return b;
    }
    let span = rows.start * b.seq..rows.end * b.seq;
    Batch {
        batch: rows.len(),
        seq: b.seq,
        inputs: b.inputs[span.clone()].to_vec(),
        targets: b.targets[span].to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_tile_the_batch() {
        let b = Batch {
            batch: 4,
            seq: 2,
            inputs: (0..8).collect(),
            targets: (10..18).collect(),
        };
        let parts: Vec<Batch> = (0..2).map(|r| slice(b.clone(), rows(4, r, 2))).collect();
        assert_eq!(parts[0].inputs, vec![0, 1, 2, 3]);
        assert_eq!(parts[1].targets, vec![14, 15, 16, 17]);
        assert_eq!(parts[1].batch, 2);
    }
}
