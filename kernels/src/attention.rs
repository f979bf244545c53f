//! Grok's attention core `softmax(cap·tanh(m·Q·Kᵀ/cap) + causal mask) · V` on the CPU, one
//! block of query rows at a time, forward and backward.
//!
//! burn's composition writes the whole `[rows, keys]` logit matrix of a head group to memory,
//! rewrites it as probabilities, keeps those and the tanh values for the backward, and computes
//! the masked half of every product. Per block of `BLOCK` query rows this computes `S = Q·Kᵀ`
//! over only the keys the block can see, into a buffer that stays in cache, turns it into
//! probabilities with the softmax kernel's row code, and multiplies by the same keys' values.
//! The backward recomputes `S` and `P` per block with the same calls (so the same bits) instead of
//! reading saved ones: one more `Q·Kᵀ` product, against ~2 × 8 MiB a layer of saved tensors at
//! the tiny-peer shape that no longer go to and from memory.

use rayon::prelude::*;

use crate::softmax::{CappedSoftmax, backward_rows, forward_rows};

/// Query rows per block: big enough for the matrix kernel's tiles, small enough that a block's
/// `[BLOCK, keys]` scores stay in L2 (64 KiB at 256 keys); the causal saving is
/// `1 − (n+1)/2n` of the products for n blocks per head (37.5% at 256 positions).
const BLOCK: usize = 64;

/// The attention of `groups` independent head groups (batch × kv heads). Each group has `rows`
/// query rows (`rep` query heads of `t` positions each, head-major, as `op.causal` describes)
/// against `keys` keys, all `head_dim` wide; `op.cols` is `keys`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    pub groups: usize,
    pub rows: usize,
    pub keys: usize,
    pub head_dim: usize,
    pub op: CappedSoftmax,
}

impl AttentionShape {
    fn check(&self, q: usize, kv: usize) {
        assert!(
            self.op.cols == self.keys
                && q == self.groups * self.rows * self.head_dim
                && kv == self.groups * self.keys * self.head_dim,
            "attention: length mismatch"
        );
    }

    /// The blocks of a group: (first row, row count, keys the block's last row sees). Blocks
    /// never straddle two query heads, so their rows see a growing prefix of the keys.
    fn blocks(&self) -> Vec<(usize, usize, usize)> {
        let t = self.op.causal.map_or(self.rows, |(t, _)| t).max(1);
        let mut out = Vec::new();
        for head in (0..self.rows).step_by(t) {
            for start in (head..(head + t).min(self.rows)).step_by(BLOCK) {
                let n = BLOCK.min(head + t - start).min(self.rows - start);
                out.push((start, n, self.op.visible(start + n - 1)));
            }
        }
        out
    }
}

/// `out = attention(q, k, v)`: `q`, `out` are `[groups, rows, head_dim]`, `k`, `v` are
/// `[groups, keys, head_dim]`, all row-major.
pub fn attention(a: AttentionShape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    a.check(q.len(), k.len());
    assert!(
        v.len() == k.len() && out.len() == q.len(),
        "attention: length mismatch"
    );
    let (qn, kn, hd) = (a.rows * a.head_dim, a.keys * a.head_dim, a.head_dim);
    let blocks = a.blocks();
    out.par_chunks_mut(qn.max(1)).enumerate().for_each(|(g, out)| {
        let (q, k, v) = (&q[g * qn..][..qn], &k[g * kn..][..kn], &v[g * kn..][..kn]);
        let mut s = vec![0f32; BLOCK * a.keys];
        let mut th = vec![0f32; BLOCK * a.keys];
        for &(r0, nr, nk) in &blocks {
            let (s, th) = (&mut s[..nr * nk], &mut th[..nr * nk]);
            probabilities(a, r0, nr, nk, &q[r0 * hd..(r0 + nr) * hd], k, s, th);
            // O = P · V over the visible keys.
            matmul(
                &mut out[r0 * hd..(r0 + nr) * hd],
                hd,
                (nr, hd, nk),
                false,
                (s, nk, 1),
                (v, hd, 1),
            );
        }
    });
}

/// Gradients of `attention` for the upstream `dout`: `dq`, `dk`, `dv` are overwritten.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    a: AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dout: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    a.check(q.len(), k.len());
    assert!(
        v.len() == k.len() && dout.len() == q.len() && dq.len() == q.len(),
        "attention_backward: length mismatch"
    );
    assert!(
        dk.len() == k.len() && dv.len() == k.len(),
        "attention_backward: length mismatch"
    );
    let (qn, kn, hd) = (a.rows * a.head_dim, a.keys * a.head_dim, a.head_dim);
    let blocks = a.blocks();
    dq.par_chunks_mut(qn.max(1))
        .zip(dk.par_chunks_mut(kn.max(1)))
        .zip(dv.par_chunks_mut(kn.max(1)))
        .enumerate()
        .for_each(|(g, ((dq, dk), dv))| {
            let (q, k, v) = (&q[g * qn..][..qn], &k[g * kn..][..kn], &v[g * kn..][..kn]);
            let dout = &dout[g * qn..][..qn];
            dk.fill(0.0);
            dv.fill(0.0);
            let mut s = vec![0f32; BLOCK * a.keys];
            let mut th = vec![0f32; BLOCK * a.keys];
            let mut dp = vec![0f32; BLOCK * a.keys];
            // Blocks in a fixed order, so dK and dV sum their contributions in a fixed order.
            for &(r0, nr, nk) in &blocks {
                let rows = r0 * hd..(r0 + nr) * hd;
                let (s, th, dp) = (&mut s[..nr * nk], &mut th[..nr * nk], &mut dp[..nr * nk]);
                let (qb, dob) = (&q[rows.clone()], &dout[rows.clone()]);
                probabilities(a, r0, nr, nk, qb, k, s, th);
                // dP = dO · Vᵀ, then dS in place, row by row.
                matmul(dp, nk, (nr, nk, hd), false, (dob, hd, 1), (v, 1, hd));
                backward_rows(a.op, r0, nk, s, th, dp);
                // dQ = dS · K;  dK += dSᵀ · Q;  dV += Pᵀ · dO.
                matmul(&mut dq[rows], hd, (nr, hd, nk), false, (dp, nk, 1), (k, hd, 1));
                matmul(
                    &mut dk[..nk * hd],
                    hd,
                    (nk, hd, nr),
                    true,
                    (dp, 1, nk),
                    (qb, hd, 1),
                );
                matmul(
                    &mut dv[..nk * hd],
                    hd,
                    (nk, hd, nr),
                    true,
                    (s, 1, nk),
                    (dob, hd, 1),
                );
            }
        });
}

/// The probabilities of block rows `r0 .. r0 + nr` over keys `0 .. nk` into `s` (`[nr, nk]`,
/// 0 at masked keys), and tanh values into `th` where the cap is on.
#[allow(clippy::too_many_arguments)]
fn probabilities(
    a: AttentionShape,
    r0: usize,
    nr: usize,
    nk: usize,
    qb: &[f32],
    k: &[f32],
    s: &mut [f32],
    th: &mut [f32],
) {
    let hd = a.head_dim;
    // S = Q · Kᵀ.
    matmul(s, nk, (nr, nk, hd), false, (qb, hd, 1), (k, 1, hd));
    forward_rows(a.op, r0, nk, s, th);
}

/// `dst (+)= lhs · rhs` for `(m, n, k)`, single-threaded (the callers are parallel over head
/// groups). `dst` is row-major with row stride `dst_rs`; each operand is `(values, row stride,
/// column stride)`, so a transposed operand is its buffer with the strides swapped.
fn matmul(
    dst: &mut [f32],
    dst_rs: usize,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    (lhs, lhs_rs, lhs_cs): (&[f32], usize, usize),
    (rhs, rhs_rs, rhs_cs): (&[f32], usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        n <= dst_rs && last(m, n, dst_rs, 1) < dst.len(),
        "matmul: dst out of bounds"
    );
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    assert!(
        last(m, k, lhs_rs, lhs_cs) < lhs.len() && last(k, n, rhs_rs, rhs_cs) < rhs.len(),
        "matmul: operand out of bounds"
    );
    // SAFETY: the asserts above keep every element gemm reads or writes inside the slices, and
    // `dst` is borrowed mutably, so it overlaps neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::data;

    /// The attention of one group in f64, straight from the definition, and its loss Σ out⊙w.
    fn reference(a: AttentionShape, q: &[f64], k: &[f64], v: &[f64], w: &[f64]) -> (Vec<f64>, f64) {
        let (hd, m, cap) = (a.head_dim, a.op.multiplier as f64, a.op.cap as f64);
        let mut out = vec![0.0; a.groups * a.rows * hd];
        for g in 0..a.groups {
            for r in 0..a.rows {
                let len = a.op.visible(r);
                let qr = &q[(g * a.rows + r) * hd..][..hd];
                let z: Vec<f64> = (0..len)
                    .map(|j| {
                        let kj = &k[(g * a.keys + j) * hd..][..hd];
                        let x = m * (0..hd).map(|i| qr[i] * kj[i]).sum::<f64>();
                        if cap > 0.0 { cap * (x / cap).tanh() } else { x }
                    })
                    .collect();
                let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = z.iter().map(|z| (z - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for (j, e) in e.iter().enumerate() {
                    for i in 0..hd {
                        out[(g * a.rows + r) * hd + i] += e / sum * v[(g * a.keys + j) * hd + i];
                    }
                }
            }
        }
        let loss = out.iter().zip(w).map(|(o, w)| o * w).sum();
        (out, loss)
    }

    fn check(a: AttentionShape) {
        let (qn, kn) = (a.groups * a.rows * a.head_dim, a.groups * a.keys * a.head_dim);
        let (q, k, v, w) = (data(qn, 1), data(kn, 2), data(kn, 3), data(qn, 4));
        let mut out = vec![0f32; qn];
        attention(a, &q, &k, &v, &mut out);
        let f64s = |x: &[f32]| x.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let (q64, k64, v64, w64) = (f64s(&q), f64s(&k), f64s(&v), f64s(&w));
        let (want, _) = reference(a, &q64, &k64, &v64, &w64);
        for (i, (o, e)) in out.iter().zip(&want).enumerate() {
            assert!((*o as f64 - e).abs() < 1e-5, "out[{i}]: {o} vs {e}");
        }

        let (mut dq, mut dk, mut dv) = (vec![0f32; qn], vec![1f32; kn], vec![1f32; kn]);
        attention_backward(a, &q, &k, &v, &w, &mut dq, &mut dk, &mut dv);
        // Central differences of the f64 loss, at a spread of coordinates of each input.
        let h = 1e-5;
        for (name, x, grad) in [("q", &q64, &dq), ("k", &k64, &dk), ("v", &v64, &dv)] {
            for idx in (0..x.len()).step_by(x.len() / 23 + 1) {
                let mut plus = x.clone();
                let mut minus = x.clone();
                plus[idx] += h;
                minus[idx] -= h;
                let pick = |t: &Vec<f64>, which: &str, base: &Vec<f64>| {
                    if which == name { t.clone() } else { base.clone() }
                };
                let loss = |t: &Vec<f64>| {
                    reference(
                        a,
                        &pick(t, "q", &q64),
                        &pick(t, "k", &k64),
                        &pick(t, "v", &v64),
                        &w64,
                    )
                    .1
                };
                let fd = (loss(&plus) - loss(&minus)) / (2.0 * h);
                let got = grad[idx] as f64;
                assert!(
                    (got - fd).abs() < 2e-4 * fd.abs().max(1.0),
                    "d{name}[{idx}]: {got} vs {fd}"
                );
            }
        }
    }

    fn shape(groups: usize, rep: usize, t: usize, past: usize, cap: f32) -> AttentionShape {
        AttentionShape {
            groups,
            rows: rep * t,
            keys: past + t,
            head_dim: 8,
            op: CappedSoftmax {
                cols: past + t,
                multiplier: 0.35,
                cap,
                causal: Some((t, past)),
            },
        }
    }

    #[test]
    fn causal_capped_attention_matches_f64_and_central_differences() {
        // 150 positions: blocks of 64, 64 and 22 per head; 3 heads per group.
        check(shape(2, 3, 150, 0, 30.0));
    }

    #[test]
    fn uncapped_and_cached_attention_match_f64() {
        check(shape(1, 2, 70, 0, 0.0));
        // 5 new positions after 9 cached keys (incremental decoding).
        check(shape(3, 4, 5, 9, 30.0));
        // A cap above the softmax's no-shift limit takes the max-shift path.
        check(shape(1, 1, 65, 0, 100.0));
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let a = shape(5, 2, 100, 0, 30.0);
        let (qn, kn) = (a.groups * a.rows * a.head_dim, a.groups * a.keys * a.head_dim);
        let (q, k, v, g) = (data(qn, 5), data(kn, 6), data(kn, 7), data(qn, 8));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut out = vec![0f32; qn];
                attention(a, &q, &k, &v, &mut out);
                let (mut dq, mut dk, mut dv) = (vec![0f32; qn], vec![0f32; kn], vec![0f32; kn]);
                attention_backward(a, &q, &k, &v, &g, &mut dq, &mut dk, &mut dv);
                [out, dq, dk, dv].map(|x| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
            })
        };
        assert_eq!(run(1), run(3));
    }
}
