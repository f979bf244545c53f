//! Times every fused kernel on one thread (as a CPU row shard runs them) at the tiny-peer shapes
//! of one shard (1024 tokens, ~512 per expert), plus AdamW and the norm pass over all 18.5M
//! parameters on every core: `cargo run --release -p colossus-kernels --example kernels_bench`.
//! A microbenchmark for kernel changes; the training-step numbers are `colossus bench`'s.

use std::time::Instant;

use colossus_kernels::*;

fn data(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + salt * 31) % 1009) as f32 / 504.5 - 1.0)
        .collect()
}

/// Best of 5 runs of `f`, in ms.
fn best(mut f: impl FnMut()) -> f64 {
    f();
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a pool");
    let row = |name: &str, ms: f64| println!("{name:<28} {ms:>8.2} ms");
    one.install(|| {
        let (a, b) = (data(512 * 1368, 1), data(512 * 1368, 2));
        let mut out = vec![0f32; a.len()];
        row("gelu_gate [512, 1368]", best(|| gelu_gate(&a, &b, &mut out)));
        let (mut da, mut db) = (a.clone(), b.clone());
        row(
            "gelu_gate_backward",
            best(|| {
                da.copy_from_slice(&a);
                db.copy_from_slice(&b);
                gelu_gate_backward(&mut da, &mut db, &out)
            }),
        );

        let (x, w, g) = (data(1024 * 256, 3), data(256, 4), data(1024 * 256, 5));
        let (mut y, mut inv) = (vec![0f32; x.len()], vec![0f32; 1024]);
        row(
            "rms_norm [1024, 256]",
            best(|| rms_norm(&x, &w, 1e-5, &mut y, &mut inv)),
        );
        let (mut dx, mut dw) = (vec![0f32; x.len()], vec![0f32; 256]);
        row(
            "rms_norm_backward",
            best(|| rms_norm_backward(&x, &w, &inv, &g, &mut dx, &mut dw)),
        );

        let op = CappedSoftmax {
            cols: 256,
            multiplier: 0.17,
            cap: 30.0,
            causal: Some((256, 0)),
        };
        let s0 = data(8 * 1024 * 256, 6);
        let (mut s, mut t, mut gs) = (s0.clone(), vec![0f32; s0.len()], s0.clone());
        row(
            "capped_softmax [8192, 256]",
            best(|| {
                s.copy_from_slice(&s0);
                capped_softmax(op, &mut s, &mut t)
            }),
        );
        row(
            "capped_softmax_backward",
            best(|| {
                gs.copy_from_slice(&s0);
                capped_softmax_backward(op, &s, &t, &mut gs)
            }),
        );

        let a = AttentionShape {
            groups: 8,
            rows: 4 * 256,
            keys: 256,
            head_dim: 32,
            op: CappedSoftmax { cols: 256, ..op },
        };
        let (q, k, v) = (
            data(8 * 1024 * 32, 10),
            data(8 * 256 * 32, 11),
            data(8 * 256 * 32, 12),
        );
        let mut o = vec![0f32; q.len()];
        row(
            "attention [8, 1024 | 256, 32]",
            best(|| attention(a, &q, &k, &v, &mut o)),
        );
        let (mut dq, mut dk, mut dv) = (vec![0f32; q.len()], vec![0f32; k.len()], vec![0f32; k.len()]);
        row(
            "attention_backward",
            best(|| attention_backward(a, &q, &k, &v, &o, &mut dq, &mut dk, &mut dv)),
        );

        let logits0: Vec<f32> = data(1024 * 4096, 7).iter().map(|v| v * 4.0).collect();
        let targets: Vec<usize> = (0..1024).map(|i| (i * 37) % 4096).collect();
        let mut lse = vec![0f32; 1024];
        row(
            "cross_entropy [1024, 4096]",
            best(|| {
                cross_entropy(&logits0, 4096, &targets, &mut lse);
            }),
        );
        let mut l = logits0.clone();
        row(
            "cross_entropy_backward",
            best(|| {
                l.copy_from_slice(&logits0);
                cross_entropy_backward(&mut l, 4096, &targets, &lse, 1.0 / 1024.0)
            }),
        );
    });

    let n = 18_522_368;
    let (mut p, g) = (data(n, 8), data(n, 9));
    let (mut m, mut v) = (vec![0.01f32; n], vec![0.02f32; n]);
    let s = AdamWStep {
        beta1: 0.9,
        one_minus_beta1: 0.1,
        beta2: 0.95,
        one_minus_beta2: 0.05,
        bc2_sqrt: 0.3,
        eps: 1e-8,
        decay: Some(0.9999),
        step_size: 1e-3,
    };
    row(
        "adamw 18.5M, all cores",
        best(|| adamw(s, &mut p, &g, &mut m, &mut v)),
    );
    row(
        "sum_squares 18.5M, all cores",
        best(|| {
            sum_squares(&g);
        }),
    );
}
