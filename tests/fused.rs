//! The fused CPU paths (`model::fused`, issue 8) against the plain burn compositions they replace:
//! forward values and gradients within f32 tolerance, op by op and through the whole model, and
//! the fused AdamW bit for bit.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use colossus::backend::{Cpu, CpuTrain};
use colossus::model::Grok;
use colossus::model::fused::{self, AdamWTensors, AttnScores};
use colossus::model::rope::RopeTables;
use colossus::train::grads::Grads;
use colossus::train::loss::cross_entropy;
use common::*;

/// Deterministic values in [-scale, scale].
fn values(n: usize, salt: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + salt * 104_729) % 10_007) as f32 / 5003.5 - 1.0)
        .map(|v| v * scale)
        .collect()
}

fn tensor<const D: usize>(v: Vec<f32>, dims: [usize; D]) -> Tensor<CpuTrain, D> {
    Tensor::from_data(TensorData::new(v, dims), &Default::default())
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= tol * scale,
        "{what}: max |Δ| {worst:e} > {tol:e} × {scale:e}"
    );
}

/// Value and input gradients of `f(inputs) · w` summed, for the fused and the plain path.
fn run<const D: usize, const N: usize>(
    inputs: [(Vec<f32>, [usize; D]); N],
    f: impl Fn([Tensor<CpuTrain, D>; N]) -> Tensor<CpuTrain, D>,
    plain: bool,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let go = || {
        let xs = inputs.clone().map(|(v, d)| tensor(v, d).require_grad());
        let out = f(xs.clone());
        let w = tensor(values(out.shape().num_elements(), 99, 1.0), out.dims());
        let grads = (out.clone() * w).sum().backward();
        let g = xs.iter().map(|x| floats(x.grad(&grads).unwrap())).collect();
        (floats(out), g)
    };
    if plain { fused::plain_scope(go) } else { go() }
}

fn compare<const D: usize, const N: usize>(
    what: &str,
    inputs: [(Vec<f32>, [usize; D]); N],
    f: impl Fn([Tensor<CpuTrain, D>; N]) -> Tensor<CpuTrain, D> + Copy,
) {
    let (y, g) = run(inputs.clone(), f, false);
    let (y0, g0) = run(inputs, f, true);
    assert_close(&y, &y0, 1e-5, &format!("{what}: forward"));
    for (i, (g, g0)) in g.iter().zip(&g0).enumerate() {
        assert_close(g, g0, 1e-5, &format!("{what}: gradient of input {i}"));
    }
    // Not vacuous: the fused path really produced its own numbers.
    assert!(
        g.iter().flatten().any(|v| *v != 0.0),
        "{what}: all-zero gradients"
    );
}

#[test]
fn gelu_gate_matches_the_plain_composition() {
    let dims = [37, 53];
    compare(
        "gelu gate",
        [(values(37 * 53, 1, 4.0), dims), (values(37 * 53, 2, 2.0), dims)],
        |[a, b]| fused::gelu_gate(a, b),
    );
}

/// Issue 7: the GELU gate's gradients written out for the grouped-experts node
/// (`fused::gelu_gate_grads`): the formula a GPU runs (under `plain_scope`) and the CPU kernel,
/// against burn's autodiff of `gelu_approximate(a) ⊙ b`.
#[test]
fn issue_7_gelu_gate_grads_match_autodiff() {
    let dims = [37, 53];
    let (a, b, g) = (
        values(37 * 53, 1, 4.0),
        values(37 * 53, 2, 2.0),
        values(37 * 53, 99, 1.0),
    );
    let (y, want) = run(
        [(a.clone(), dims), (b.clone(), dims)],
        |[a, b]| fused::gelu_gate(a, b),
        true,
    );
    let inner =
        |v: &Vec<f32>| Tensor::<Cpu, 2>::from_data(TensorData::new(v.clone(), dims), &Default::default());
    let grads = || fused::gelu_gate_grads(inner(&a), inner(&b), inner(&g));
    for (path, (da, db, value)) in [("kernel", grads()), ("formula", fused::plain_scope(grads))] {
        assert_close(&floats(da), &want[0], 1e-5, &format!("{path}: da"));
        assert_close(&floats(db), &want[1], 1e-5, &format!("{path}: db"));
        assert_close(&floats(value), &y, 1e-6, &format!("{path}: the gate's value"));
    }
}

#[test]
fn capped_causal_softmax_matches_the_plain_composition() {
    // [batch 2, kv heads 2, rep 3 · t 5, past 4 + t 5], as in incremental decoding with a cache.
    let dims = [2, 2, 15, 9];
    for cap in [30.0, 1.5, 0.0] {
        compare(
            &format!("softmax, cap {cap}"),
            [(values(2 * 2 * 15 * 9, 3, 20.0), dims)],
            move |[x]| {
                fused::capped_softmax(
                    x,
                    AttnScores {
                        multiplier: 0.35,
                        cap,
                        t: 5,
                        past: 4,
                    },
                )
            },
        );
    }
    // Training shape: no past, square logits.
    compare(
        "softmax, no past",
        [(values(2 * 2 * 16 * 8, 4, 20.0), [2, 2, 16, 8])],
        |[x]| {
            fused::capped_softmax(
                x,
                AttnScores {
                    multiplier: 0.2,
                    cap: 30.0,
                    t: 8,
                    past: 0,
                },
            )
        },
    );
}

/// Guards issue 8's blockwise CPU attention (`fused::attention`): the forward and the gradients
/// of q, k and v match the plain products around the softmax.
#[test]
fn issue_8_blockwise_attention_matches_the_plain_composition() {
    // (rep, t, past, cap): 150 positions make blocks of 64, 64 and 22 rows per query head; the
    // last case is incremental decoding (5 new positions after 9 cached keys).
    for (rep, t, past, cap) in [(3, 150, 0, 30.0), (2, 70, 0, 0.0), (4, 5, 9, 30.0)] {
        let (b, kv, hd, keys) = (2, 2, 8, past + t);
        let (qn, kn) = (b * kv * rep * t * hd, b * kv * keys * hd);
        let scores = AttnScores {
            multiplier: 0.35,
            cap,
            t,
            past,
        };
        compare(
            &format!("attention, rep {rep}, t {t}, past {past}, cap {cap}"),
            [
                (values(qn, 5, 2.0), [b, kv, rep * t, hd]),
                (values(kn, 6, 2.0), [b, kv, keys, hd]),
                (values(kn, 7, 1.0), [b, kv, keys, hd]),
            ],
            move |[q, k, v]| fused::attention(q, k, v, scores),
        );
    }
}

#[test]
fn rms_norm_matches_the_plain_composition() {
    let (rows, d) = (70, 48);
    let go = || {
        let x = tensor(values(rows * d, 9, 3.0), [rows, d]).require_grad();
        let w = tensor(values(d, 10, 1.0), [d]).require_grad();
        let y = fused::rms_norm(x.clone(), w.clone(), 1e-5);
        let grads = (y.clone() * tensor(values(rows * d, 11, 1.0), [rows, d]))
            .sum()
            .backward();
        (
            floats(y),
            floats(x.grad(&grads).unwrap()),
            floats(w.grad(&grads).unwrap()),
        )
    };
    let (y, dx, dw) = go();
    let (y0, dx0, dw0) = fused::plain_scope(go);
    assert_close(&y, &y0, 1e-5, "rms norm: forward");
    assert_close(&dx, &dx0, 1e-5, "rms norm: input gradient");
    assert_close(&dw, &dw0, 1e-5, "rms norm: weight gradient");
}

#[test]
fn cross_entropy_matches_the_plain_composition() {
    let (n, vocab) = (33, 257);
    let targets: Vec<i64> = (0..n as i64).map(|i| (i * 37) % vocab as i64).collect();
    let go = || {
        let x = tensor(values(n * vocab, 12, 15.0), [n, vocab]).require_grad();
        let t =
            Tensor::<CpuTrain, 1, Int>::from_data(TensorData::new(targets.clone(), [n]), &Default::default());
        let loss = fused::cross_entropy(x.clone(), t).mul_scalar(0.7);
        let grads = loss.backward();
        (floats(loss), floats(x.grad(&grads).unwrap()))
    };
    let (l, g) = go();
    let (l0, g0) = fused::plain_scope(go);
    assert_close(&l, &l0, 1e-6, "cross-entropy: loss");
    assert_close(&g, &g0, 1e-5, "cross-entropy: gradient");
}

#[test]
fn rope_matches_the_plain_composition() {
    // [batch 2, seq 5, heads 3, head_dim 8] at positions 4..9, as after a KV cache of 4.
    let tables = RopeTables::<CpuTrain>::new(8, 10_000.0, 4, 5, &Default::default());
    let tables = &tables;
    compare(
        "rope",
        [(values(2 * 5 * 3 * 8, 13, 2.0), [2, 5, 3, 8])],
        move |[x]| fused::rope(x, tables),
    );
}

#[test]
fn fused_adamw_gives_the_plain_update_bit_for_bit() {
    let one = |mut out: Vec<_>| out.pop().expect("one update");
    let n = 40_000;
    let t = |v: Vec<f32>| Tensor::<Cpu, 1>::from_data(TensorData::new(v, [n]), &Default::default());
    for decay in [Some(1.0 - 3e-4 * 0.1), None] {
        let s = || adamw_scalars(7, 3e-4, decay);
        let inputs = || {
            (
                t(values(n, 5, 0.5)),
                t(values(n, 6, 1.0)),
                t(values(n, 7, 0.1)),
                t(values(n, 8, 0.01).iter().map(|v| v.abs()).collect()),
            )
        };
        let (p, g, m, v) = inputs();
        let fused_out = one(fused::adamw(s(), vec![AdamWTensors { p, g, m, v }]));
        let (p, g, m, v) = inputs();
        let plain_out = one(fused::plain_scope(|| {
            fused::adamw(s(), vec![AdamWTensors { p, g, m, v }])
        }));
        let bits = |x: Tensor<Cpu, 1>| floats(x).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(fused_out.0),
            bits(plain_out.0),
            "parameters, decay {decay:?}"
        );
        assert_eq!(bits(fused_out.1), bits(plain_out.1), "first moments");
        assert_eq!(bits(fused_out.2), bits(plain_out.2), "second moments");
    }
}

/// Regression guard for issue 8: the whole model (attention with its soft cap, routed experts
/// with the GELU gate) gives the same loss and parameter gradients on the fused path as on the
/// plain one.
#[test]
fn issue_8_whole_model_loss_and_gradients_match_the_plain_path() {
    let cfg = reference_model();
    let device = Default::default();
    let model: Grok<CpuTrain> = cfg.init(REFERENCE_SEED, &device);
    let ids =
        |v: &[i64]| Tensor::<CpuTrain, 2, Int>::from_data(TensorData::new(v.to_vec(), [1, v.len()]), &device);
    let n = REFERENCE_IDS.len();
    let go = || {
        let out = model.forward(ids(&REFERENCE_IDS[..n - 1]), None);
        let loss = cross_entropy(out.logits, ids(&REFERENCE_IDS[1..]));
        let value = floats(loss.clone())[0];
        let grads = Grads::collect(&model, loss.backward());
        (value, grads.tensors.into_iter().map(floats).collect::<Vec<_>>())
    };
    let (loss, grads) = go();
    let (loss0, grads0) = fused::plain_scope(go);
    assert!(
        (loss - loss0).abs() < 1e-5 * loss0.abs(),
        "loss {loss} vs plain {loss0}"
    );
    for (i, (g, g0)) in grads.iter().zip(&grads0).enumerate() {
        assert_close(g, g0, 1e-4, &format!("gradient of parameter {i}"));
    }
}

#[test]
fn issue_8_gradient_clipping_matches_the_plain_path() {
    let device = Default::default();
    let grads = || Grads::<Cpu> {
        tensors: [(10_000, 1, 0.5), (70_001, 2, 2.0), (3, 3, 1.0)]
            .into_iter()
            .map(|(n, salt, s)| Tensor::from_data(TensorData::new(values(n, salt, s), [n]), &device))
            .collect(),
    };
    let want_sq: f64 = grads()
        .tensors
        .into_iter()
        .flat_map(floats)
        .map(|v| v as f64 * v as f64)
        .sum();
    for max_norm in [1.0, 1e9, 0.0] {
        let (fused, fused_norm) = grads().clip_global_norm(max_norm);
        let (plain, plain_norm) = fused::plain_scope(|| grads().clip_global_norm(max_norm));
        let rel = |a: f64| (a - want_sq.sqrt()).abs() / want_sq.sqrt();
        assert!(
            rel(fused_norm) < 1e-6 && rel(plain_norm) < 1e-5,
            "{fused_norm} {plain_norm}"
        );
        for (i, (f, p)) in fused.tensors.into_iter().zip(plain.tensors).enumerate() {
            let (f, p) = (floats(f), floats(p));
            if max_norm == 1.0 {
                assert_close(&f, &p, 1e-6, &format!("clipped gradient {i}"));
                let scale = 1.0 / (want_sq.sqrt() + 1e-6);
                let orig = floats(grads().tensors[i].clone());
                assert!(
                    f.iter()
                        .zip(&orig)
                        .all(|(g, o)| (g - o * scale as f32).abs() <= 1e-6 * o.abs().max(1e-3)),
                    "gradient {i} is not the original times max/(norm + 1e-6)"
                );
            } else {
                // No clipping (a large max, or 0 = off): every value is returned untouched.
                assert_eq!(f, p, "unclipped gradient {i} (max_norm {max_norm})");
                assert_eq!(f, floats(grads().tensors[i].clone()));
            }
        }
    }
}
