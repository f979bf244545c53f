//! Times the soft-capped causal softmax kernel, forward and backward, at the tiny-peer attention
//! shape (`[8·2 kv heads, 4·256 rows, 256 keys]`): `cargo run --release -p colossus-kernels
//! --example softmax_bench`. A microbenchmark for kernel changes; the training-step numbers are
//! `colossus bench`'s (docs/performance.md).

use colossus_kernels::{CappedSoftmax, capped_softmax, capped_softmax_backward};

fn main() {
    let (rows, cols) = (16 * 1024, 256);
    let op = CappedSoftmax {
        cols,
        multiplier: 0.17,
        cap: 30.0,
        causal: Some((256, 0)),
    };
    let x0: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
        .collect();
    let (mut x, mut g, mut t) = (x0.clone(), x0.clone(), vec![0f32; rows * cols]);
    for _ in 0..10 {
        x.copy_from_slice(&x0);
        let s = std::time::Instant::now();
        capped_softmax(op, &mut x, &mut t);
        let fwd = s.elapsed();
        g.copy_from_slice(&x0);
        let s = std::time::Instant::now();
        capped_softmax_backward(op, &x, &t, &mut g);
        println!(
            "forward {:.2} ms, backward {:.2} ms",
            fwd.as_secs_f64() * 1e3,
            s.elapsed().as_secs_f64() * 1e3
        );
    }
}
