//! Expert choices made on the host instead of read from the router, for the CUDA compile check
//! (`colossus bench --compile-only`, `backend::cuda_check`), whose stand-in device runs no kernel.
//!
//! Why: there the router's choices read back as zeros, so every routed slot went to expert 0, one
//! expert with `n·k` rows (with repeats) and none for the others, a shape no GPU ever sees. On the
//! GPU each expert's row count is a matmul dimension: burn's matmul autotune keys it by its
//! power-of-two anchor (cubecl `anchor`: 4097 to 8192 rows share one key), and the kernel it
//! launches, like the fused element-wise kernels around it, also follows the exact count
//! (which tiles divide it), so the counts a GPU meets select, and compile there, their own
//! kernels. A fresh router spreads tokens unevenly (the expert loads of a 1-step CPU probe of
//! `gpu-350m` on the shipped corpus ranged from 0 to 3.6× the mean), so those counts cannot be
//! known ahead; the ones made here cover them as widely as a few layers can: the experts past
//! the first k get `n/2, n/4, …` rows on even calls and the smaller powers of two below those on
//! odd ones, exact, then less odd amounts, then less powers of two, and the first k share what is
//! left, so with 8 experts and top-2 every anchor from `n/4096` to `n` appears within six layers.
//! What it costs: the check compiles, and the kernel cache carries, about twice the kernels
//! (`gpu-350m`'s bf16 step: 772 instead of 392); a GPU-like routing then finds all but 15 to 139
//! of its kernels in the cache, where it missed 130 before (docs/benchmarks.md, "Expert shapes").

use std::cell::Cell;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static CALLS: Cell<usize> = const { Cell::new(0) };
}

/// Run `f` with every router call's choices made here, the first call's pattern first (this
/// thread only, as `fused::plain_scope`).
pub fn scope<R>(f: impl FnOnce() -> R) -> R {
    CALLS.with(|c| c.set(0));
    super::scoped(&ON, true, f)
}

/// The choices for this router call inside `scope`: `[n, top_k]` row-major.
pub(crate) fn next(n: usize, n_experts: usize, top_k: usize) -> Option<Vec<i64>> {
    ON.with(Cell::get)
        .then(|| choices(n, n_experts, top_k, CALLS.with(|c| c.replace(c.get() + 1))))
}

/// Each expert's row count for router call `call` over `n` tokens, summing to `n·top_k`, none
/// above `n`. Calls go in sixes: the tail's upper then lower powers of two, exact, then each less
/// an odd amount (1 to 61 rows), then less a power of two from 2 to 256 (each varying with the
/// call and the expert), since burn's matmuls also pick their kernels by which tiles divide a
/// dimension.
pub fn counts(n: usize, n_experts: usize, top_k: usize, call: usize) -> Vec<usize> {
    let tail = n_experts - top_k;
    let mut counts: Vec<usize> = (0..n_experts)
        .map(|e| match e.checked_sub(top_k) {
            Some(j) => {
                let base = n >> (j + 1 + (call % 2) * tail).min(usize::BITS as usize - 1);
                // Less an odd amount, or one with `v` trailing zero bits.
                let odd = 1 + 2 * ((call * 13 + j * 7) % 31);
                let v = 1 + (call * 5 + j * 3) % 8;
                match (call / 2) % 3 {
                    1 if base > 1 => base - odd % base,
                    2 if base > 1 << v => base - (1 << v),
                    _ => base,
                }
            }
            None => 0,
        })
        .collect();
    // The tail takes under n·(1/2 + 1/4 + …) < n rows, so each head gets at most n.
    let rest = n * top_k - counts.iter().sum::<usize>();
    for (e, c) in counts.iter_mut().take(top_k).enumerate() {
        *c = rest / top_k + usize::from(e < rest % top_k);
    }
    counts
}

/// Every slot's expert, `[n, top_k]` row-major, with `counts`' row counts and `top_k` distinct
/// experts in each row.
fn choices(n: usize, n_experts: usize, top_k: usize, call: usize) -> Vec<i64> {
    layout(&counts(n, n_experts, top_k, call), n, top_k)
}

/// Slots for the given row counts (summing to `n·top_k`, none above `n`): the experts' runs are
/// laid down column by column (slot `p` of the run is row `p mod n`, column `p / n`), and a run
/// of at most `n` slots never meets its own row twice.
fn layout(counts: &[usize], n: usize, top_k: usize) -> Vec<i64> {
    let mut idx = vec![0i64; n * top_k];
    let mut p = 0;
    for (e, &c) in counts.iter().enumerate() {
        for _ in 0..c {
            idx[(p % n) * top_k + p / n] = e as i64;
            p += 1;
        }
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_gets_distinct_experts_and_every_anchor_appears() {
        for (n, e, k) in [
            (16_384, 8, 2),
            (2048, 8, 2),
            (64, 4, 2),
            (1, 8, 2),
            (5, 3, 1),
            (7, 2, 2),
        ] {
            let mut anchors = std::collections::BTreeSet::new();
            for call in 0..6 {
                let counts = counts(n, e, k, call);
                assert_eq!(counts.iter().sum::<usize>(), n * k, "{n} {e} {k}");
                assert!(counts.iter().all(|&c| c <= n), "{counts:?}");
                let idx = choices(n, e, k, call);
                let mut seen = vec![0usize; e];
                for row in idx.chunks(k) {
                    for (j, &x) in row.iter().enumerate() {
                        assert!(!row[..j].contains(&x), "row {row:?} repeats an expert");
                        seen[x as usize] += 1;
                    }
                }
                assert_eq!(seen, counts);
                anchors.extend(counts.iter().filter(|&&c| c > 0).map(|c| c.next_power_of_two()));
            }
            if (n, e, k) == (16_384, 8, 2) {
                // Every power of two from 4 to n: the anchors 8 experts reach within six calls.
                for p in 2..=14 {
                    assert!(
                        anchors.contains(&(1 << p)),
                        "no count on anchor {}: {anchors:?}",
                        1 << p
                    );
                }
            }
        }
    }
}
