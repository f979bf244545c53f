//! The training sampler: every epoch visits each window of the training split exactly once, in
//! an order that is a keyed pseudo-random permutation (a Feistel network with cycle-walking), so
//! position `p` of epoch `e` maps to its window in O(1) time and memory at any data size.
//!
//! All ranks walk one global sample stream: a micro-batch of `b` per rank on `W` ranks takes the
//! next `W·b` samples, rank `r` the `r`-th run of `b`. The cursor (epoch, position, RNG key) is
//! global too, so it is the same on every rank, a checkpoint stores it once, and resuming with
//! another world size continues the same stream (with `W·b` unchanged, the same global batches).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::batch::{Batch, BatchSource};
use super::dataset::{ShardSet, Windows};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Where the sampler stands; saved in every checkpoint (`train_state.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    /// Global samples already taken in this epoch (all ranks together).
    pub position: u64,
    /// The sampler's RNG key (drawn from the seed); with the epoch it fixes the epoch's order.
    pub rng: u64,
    /// Windows per epoch when the cursor was saved: a resumed run checks the data still matches.
    pub samples_per_epoch: u64,
}

pub struct Sampler {
    set: Arc<ShardSet>,
    windows: Windows,
    rank: usize,
    world: usize,
    cursor: Cursor,
    buf: Vec<u32>,
}

impl Sampler {
    /// `rank` of `world` data-parallel ranks (0 of 1 for one process).
    pub fn new(
        set: Arc<ShardSet>,
        seq: usize,
        cross_shards: bool,
        seed: u64,
        rank: usize,
        world: usize,
    ) -> Result<Sampler> {
        if world == 0 || rank >= world {
            return Err(Error::Train(format!(
                "data-parallel rank {rank} of world size {world}: expected 0 <= rank < world"
            )));
        }
        let windows = Windows::new(&set, seq, cross_shards);
        // `data::training_data` says this to users first, naming the data they gave.
        if windows.is_empty() {
            return Err(Error::Train(format!(
                "no window of {} tokens in the training split",
                seq + 1
            )));
        }
        let cursor = Cursor {
            epoch: 0,
            position: 0,
            rng: Rng::derive(seed, "data.sampler").next_u64(),
            samples_per_epoch: windows.len(),
        };
        Ok(Sampler {
            set,
            windows,
            rank,
            world,
            cursor,
            buf: Vec::new(),
        })
    }

    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    pub fn samples_per_epoch(&self) -> u64 {
        self.windows.len()
    }

    /// Continue from a saved cursor. If the data now has a different number of windows per epoch
    /// (other shards or seq_len), the position is scaled to the same fraction of the epoch and a
    /// note says so; the batches then differ from the original run's.
    pub fn restore(&mut self, c: Cursor) -> Option<String> {
        let n = self.windows.len();
        self.cursor = Cursor {
            samples_per_epoch: n,
            ..c
        };
        if c.samples_per_epoch == n {
            return None;
        }
        let was = c.samples_per_epoch.max(1);
        self.cursor.position = ((c.position as u128 * n as u128 / was as u128) as u64).min(n - 1);
        Some(format!(
            "the training data has {n} windows per epoch but the checkpoint's sampler had {was}; \
             continuing epoch {} at the same fraction, with different batches than the original run",
            c.epoch
        ))
    }

    /// Window ids of this rank's next `batch` samples; advances the global cursor by
    /// `batch × world`.
    pub fn next_ids(&mut self, batch: usize) -> Vec<u64> {
        let n = self.windows.len();
        let first = self.cursor.position + (self.rank * batch) as u64;
        let ids = (0..batch as u64)
            .map(|i| {
                let g = first + i;
                let (epoch, pos) = (self.cursor.epoch + g / n, g % n);
                permute(pos, n, epoch_key(self.cursor.rng, epoch))
            })
            .collect();
        let next = self.cursor.position + (batch * self.world) as u64;
        self.cursor.epoch += next / n;
        self.cursor.position = next % n;
        ids
    }
}

impl BatchSource for Sampler {
    fn next_batch(&mut self, batch: usize, seq: usize) -> Batch {
        assert_eq!(
            seq,
            self.windows.seq(),
            "the sampler was built for another seq_len"
        );
        let ids = self.next_ids(batch);
        self.buf.clear();
        for w in ids {
            self.windows.read(&self.set, w, &mut self.buf);
        }
        Batch::from_windows(&self.buf, batch, seq)
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn epoch_key(rng: u64, epoch: u64) -> u64 {
    mix(rng ^ mix(epoch.wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// A bijection of `0..n` keyed by `key`: a 6-round balanced Feistel network on the smallest
/// even-bit domain ≥ n, walking the cycle until the value lands below n (fewer than 4 steps on
/// average, since the domain is under 4n).
pub fn permute(i: u64, n: u64, key: u64) -> u64 {
    debug_assert!(i < n);
    if n <= 1 {
        return i;
    }
    let bits = 64 - (n - 1).leading_zeros();
    let half = bits.div_ceil(2);
    let mask = (1u64 << half) - 1;
    let mut x = i;
    loop {
        let (mut l, mut r) = (x >> half, x & mask);
        for round in 0..6u64 {
            let f = mix(r ^ key.wrapping_add(round.wrapping_mul(0x9e37_79b9_7f4a_7c15))) & mask;
            (l, r) = (r, l ^ f);
        }
        x = (l << half) | r;
        if x < n {
            return x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_is_a_bijection_for_awkward_sizes() {
        for n in [1u64, 2, 3, 5, 17, 64, 100, 1000, 4097] {
            let mut seen: Vec<u64> = (0..n).map(|i| permute(i, n, 42)).collect();
            let identity = seen.iter().enumerate().all(|(i, &v)| i as u64 == v);
            seen.sort();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n = {n}");
            if n >= 17 {
                assert!(!identity, "n = {n} was not shuffled");
            }
        }
        assert_ne!(
            (0..100).map(|i| permute(i, 100, 1)).collect::<Vec<_>>(),
            (0..100).map(|i| permute(i, 100, 2)).collect::<Vec<_>>()
        );
    }
}
