//! The matrix products of one CPU row shard of the tiny-peer training step
//! (`configs/bench-tiny-peer.yaml`, batch 8 × 256 split in two: 1024 tokens, ~512 per expert), each
//! timed alone on burn-flex, on one thread (as a shard runs them) and on every core, in GFLOP/s.
//! docs/performance.md reads its numbers from here. Run: `cargo run --example matmul_shapes`.
//! With `COLD=1`, every product starts from cold caches (a 64 MiB buffer is written between
//! repetitions, outside the timing), as a product inside a training step mostly does.

use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use colossus::backend::Cpu;

/// `[m, k] · [k, n]`; a transposed operand is a swapped view of `[k, m]` or `[n, k]`, as the
/// backward's products are.
struct Shape {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    lhs_t: bool,
    rhs_t: bool,
}

const fn shape(name: &'static str, m: usize, k: usize, n: usize, lhs_t: bool, rhs_t: bool) -> Shape {
    Shape {
        name,
        m,
        k,
        n,
        lhs_t,
        rhs_t,
    }
}

const SHAPES: &[Shape] = &[
    shape("q projection", 1024, 256, 256, false, false),
    shape("k/v projection", 1024, 256, 64, false, false),
    shape("projection dW (xᵀ·dy)", 256, 1024, 256, true, false),
    shape("expert gate/up", 512, 256, 1368, false, false),
    shape("expert down", 512, 1368, 256, false, false),
    shape("expert dX (dh·W1ᵀ)", 512, 1368, 256, false, true),
    shape("expert dh (dy·W2ᵀ)", 512, 256, 1368, false, true),
    shape("expert dW1 (xᵀ·dh)", 256, 512, 1368, true, false),
    shape("expert dW2 (hᵀ·dy)", 1368, 512, 256, true, false),
    shape("head (h·Eᵀ)", 1024, 256, 4096, false, true),
    shape("head dh (dl·E)", 1024, 4096, 256, false, false),
    shape("head dE (dlᵀ·h)", 4096, 1024, 256, true, false),
    shape("1024³", 1024, 1024, 1024, false, false),
];

fn random(shape: [usize; 2]) -> Tensor<Cpu, 2> {
    Tensor::random(shape, Distribution::Default, &Default::default())
}

/// Best-of-3 GFLOP/s of `s` on the current rayon pool (the mean over `reps` products, each timed
/// alone).
fn gflops(s: &Shape) -> f64 {
    let lhs = if s.lhs_t {
        random([s.k, s.m]).transpose()
    } else {
        random([s.m, s.k])
    };
    let rhs = if s.rhs_t {
        random([s.n, s.k]).transpose()
    } else {
        random([s.k, s.n])
    };
    let flops = 2.0 * (s.m * s.k * s.n) as f64;
    let reps = ((5e9 / flops) as usize).max(3);
    let _ = lhs.clone().matmul(rhs.clone()).into_data();
    let mut best = f64::MAX;
    let cold = std::env::var_os("COLD").is_some();
    // Twice the 32 MiB L3 of the machines measured: writing it evicts the operands and the output.
    let mut evict = vec![0u8; if cold { 64 << 20 } else { 0 }];
    for _ in 0..3 {
        let mut total = 0.0;
        for r in 0..reps {
            evict
                .iter_mut()
                .step_by(64)
                .for_each(|x| *x = x.wrapping_add(r as u8));
            let t = Instant::now();
            drop(lhs.clone().matmul(rhs.clone()));
            total += t.elapsed().as_secs_f64();
        }
        best = best.min(total / reps as f64);
    }
    std::hint::black_box(&evict);
    flops / best / 1e9
}

fn main() {
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    let all = rayon::current_num_threads();
    println!(
        "{:<26} {:>18} {:>10} {:>10}",
        "product",
        "m×k×n",
        "1 thread",
        format!("{all} threads")
    );
    for s in SHAPES {
        let single = one.install(|| gflops(s));
        let many = gflops(s);
        let dims = format!("{}×{}×{}", s.m, s.k, s.n);
        println!("{:<26} {dims:>18} {single:>10.1} {many:>10.1}", s.name);
    }
}
