//! `colossus bench CONFIG --check-flash-backward`: the fused flash backward's gradients against
//! the composed backward's on the config's own device, precision and attention shape, before a
//! run trusts them. The lavapipe tests check the fused kernels with their products on one unit
//! per element; only a GPU with tensor cores runs the 16×16×16 fragment products, so this is the
//! check a GPU sitting runs first.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Tensor};

use crate::backend::{self, Job};
use crate::config::{AttentionKernel, BackendKind, Config, Precision};
use crate::error::{Error, Result};
use crate::model::flash::{self, BackwardKind};
use crate::model::fused::{self, AttnScores};
use crate::model::precision;

/// Relative L2 allowed between the two backwards' gradients: both round the probabilities and
/// their gradients to the products' dtype, in different orders.
fn tolerance(p: Precision) -> f64 {
    match p {
        Precision::F32 => 1e-4,
        Precision::Bf16 | Precision::F16 => 2e-2,
    }
}

struct CheckJob {
    cfg: Config,
    /// `[batch, kv heads, query heads per kv head, t, head_dim]`.
    dims: [usize; 5],
}

/// What one backward gave: the output and the gradients of q, k and v, and which backward ran.
struct Run {
    values: [Vec<f32>; 4],
    routine: Option<&'static str>,
}

impl Job for CheckJob {
    type Output = [Run; 2];

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<[Run; 2]> {
        let cfg = &self.cfg;
        precision::check::<B>(cfg.precision, cfg.backend, &device)?;
        let m = &cfg.model;
        let [b, n_kv, rep, t, hd] = self.dims;
        let scores = AttnScores {
            multiplier: m.attn_output_multiplier,
            cap: m.attn_softcap,
            t,
            past: 0,
        };
        let normal = Distribution::Normal(0.0, 1.0);
        let q = Tensor::<B, 4>::random([b, n_kv, rep * t, hd], normal, &device);
        let k = Tensor::<B, 4>::random([b, n_kv, t, hd], normal, &device);
        let v = Tensor::<B, 4>::random([b, n_kv, t, hd], normal, &device);
        let w = Tensor::<B, 4>::random([b, n_kv, rep * t, hd], normal, &device);
        let run = |kind: BackwardKind| {
            let [q, k, v] = [&q, &k, &v].map(|x| x.clone().detach().require_grad());
            let (out, routine) = precision::autocast(cfg.precision, || {
                flash::backward_scope(kind, || {
                    flash::scope(AttentionKernel::Flash, || {
                        let out = fused::attention(q.clone(), k.clone(), v.clone(), scores);
                        (out, flash::backward_routine())
                    })
                })
            });
            let grads = (out.clone() * w.clone()).sum().backward();
            let grad = |x: &Tensor<B, 4>| x.grad(&grads).map(floats::<B::InnerBackend>);
            let missing = || Error::Train("the attention core gave no gradient".into());
            Ok::<_, Error>(Run {
                values: [
                    floats(out.inner()),
                    grad(&q).ok_or_else(missing)?,
                    grad(&k).ok_or_else(missing)?,
                    grad(&v).ok_or_else(missing)?,
                ],
                routine,
            })
        };
        Ok([run(BackwardKind::Fused)?, run(BackwardKind::Composed)?])
    }
}

fn floats<B: burn::tensor::backend::Backend>(x: Tensor<B, 4>) -> Vec<f32> {
    x.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default()
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        num += (f64::from(*x) - f64::from(*y)).powi(2);
        den += f64::from(*y).powi(2);
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

pub fn run(cfg: Config) -> Result<()> {
    if cfg.backend == BackendKind::Cpu {
        return Err(Error::Flag {
            flag: "--check-flash-backward".into(),
            msg:
                "it checks the GPU kernels, and the config's backend is cpu: add --set backend=cuda (or wgpu)"
                    .into(),
        });
    }
    let (kind, index, precision) = (cfg.backend, cfg.device, cfg.precision);
    let m = &cfg.model;
    let dims = [
        1,
        m.n_kv_heads,
        m.n_q_heads / m.n_kv_heads,
        cfg.data.seq_len,
        m.head_dim,
    ];
    let shape = format!("{dims:?}");
    let [fused, composed] = backend::dispatch(kind, index, CheckJob { cfg, dims })?;
    let routine = fused.routine.unwrap_or("none");
    if !routine.starts_with("fused") {
        return Err(Error::Train(format!(
            "the fused flash backward cannot run on {} device {index} (the backward that ran: {routine})",
            kind.name()
        )));
    }
    let tol = tolerance(precision);
    let names = ["output", "dq", "dk", "dv"];
    let rels: Vec<f64> = fused
        .values
        .iter()
        .zip(&composed.values)
        .map(|(a, b)| rel_l2(a, b))
        .collect();
    let ok = rels.iter().all(|r| *r <= tol) && fused.values.iter().all(|v| v.iter().any(|x| *x != 0.0));
    let fields: Vec<String> = names
        .iter()
        .zip(&rels)
        .map(|(n, r)| format!("{n}={r:.2e}"))
        .collect();
    println!(
        "flash-backward-check: backend={} precision={} shape={shape} routine={routine} {} tolerance={tol:e} {}",
        kind.name(),
        precision.name(),
        fields.join(" "),
        if ok { "ok" } else { "FAILED" }
    );
    if ok {
        Ok(())
    } else {
        Err(Error::Train(format!(
            "the fused flash backward differs from the composed one by more than {tol:e} (relative L2); \
             do not train with attention: flash here"
        )))
    }
}
