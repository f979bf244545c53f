//! Data parallelism inside one CPU process: each micro-batch's rows are split into
//! `train.cpu_workers` shards whose forward and backward passes run at the same time, each on its
//! own thread inside its own rayon pool (the caller's thread count divided among the shards),
//! against its own replica of the parameters. A replica is fresh autodiff leaves over the same
//! buffers (no copy): burn keeps one graph per connected set of nodes and holds a graph's lock for
//! its whole backward, so shards that shared parameter nodes would run their backward passes one
//! after the other. The shards' gradients are added in shard order.
//!
//! Why, and what it costs: on a 2-core machine one pass with 2-thread matmuls ran gemm at ~62% of
//! the FMA peak, and burn's serial ops (gathers, autodiff bookkeeping) left one core idle; two
//! 1-thread passes run gemm at ~75% and overlap each other's serial parts (docs/performance.md,
//! section 8). A shard count of 2 changes the summation order of the weight gradients (two
//! partial sums over half the rows, then one add), so results agree with one pass to rounding.
//! The shard count, not the thread count, fixes the arithmetic: gemm's and the kernels' results
//! do not depend on how many threads they get, so a run gives the same bits with 1 or 16 cores,
//! and a pool that cannot be started only makes the shards run one after another.

use std::sync::{Arc, Mutex};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use crate::backend::DeviceMemory;
use crate::data::Batch;
use crate::model::{Grok, fused, precision};
use crate::train::trainer::{StepGrads, add_expert_load};

/// Run `pass(model, shard, share)` on `shards` row shards of `batch` at once and combine them:
/// gradients summed in shard order (each already weighted by its `share` of the rows), losses
/// and expert loads averaged by share, the forward time of the slowest shard. One shard is
/// `pass(model, batch, 1.0)` on this thread.
pub fn micro_step<B, F>(model: &Grok<B>, batch: Batch, shards: usize, pass: F) -> StepGrads<B>
where
    B: AutodiffBackend,
    F: Fn(&Grok<B>, &Batch, f64) -> StepGrads<B> + Sync,
{
    let shards = shards.clamp(1, batch.batch.max(1));
    if shards == 1 {
        return pass(model, &batch, 1.0);
    }
    let rows = batch.batch;
    let parts: Vec<(Batch, f64)> = (0..shards)
        .map(|i| {
            let span = i * rows / shards..(i + 1) * rows / shards;
            let share = span.len() as f64 / rows as f64;
            (crate::dist::split::slice(batch.clone(), span), share)
        })
        .collect();
    // The caller's per-thread modes, which the shard threads take on.
    let (plain, f32_head) = (fused::plain_active(), precision::f32_head_active());
    let run = |replica: Grok<B>, part: &Batch, share: f64| {
        precision::f32_head_scope(f32_head, || {
            fused::with_plain(plain, || pass(&replica, part, share))
        })
    };
    let results: Vec<StepGrads<B>> = match pools(shards) {
        Some(pools) => std::thread::scope(|s| {
            let handles: Vec<_> = parts
                .iter()
                .zip(pools.iter())
                .map(|((part, share), pool)| {
                    let replica = replica(model);
                    let run = &run;
                    s.spawn(move || pool.install(|| run(replica, part, *share)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        }),
        None => parts
            .iter()
            .map(|(part, share)| run(replica(model), part, *share))
            .collect(),
    };
    combine(results, &parts.iter().map(|p| p.1).collect::<Vec<_>>())
}

fn combine<B: AutodiffBackend>(results: Vec<StepGrads<B>>, shares: &[f64]) -> StepGrads<B> {
    let mut iter = results.into_iter().zip(shares);
    let (first, &s0) = iter.next().expect("at least two shards");
    let mut out = StepGrads {
        grads: first.grads,
        loss: first.loss * s0,
        aux_loss: first.aux_loss * s0,
        expert_load: Vec::new(),
        forward_s: first.forward_s,
        device_mem: first.device_mem,
    };
    add_expert_load(&mut out.expert_load, first.expert_load, s0 as f32);
    for (m, &share) in iter {
        out.grads = out.grads.sum(m.grads);
        out.loss += m.loss * share;
        out.aux_loss += m.aux_loss * share;
        add_expert_load(&mut out.expert_load, m.expert_load, share as f32);
        out.forward_s = out.forward_s.max(m.forward_s);
        out.device_mem = DeviceMemory::merge(out.device_mem, m.device_mem);
    }
    out
}

/// `model` with every parameter a new autodiff leaf over the same buffer, so its graph is its own.
fn replica<B: AutodiffBackend>(model: &Grok<B>) -> Grok<B> {
    struct Fresh;
    impl<B: AutodiffBackend> ModuleMapper<B> for Fresh {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            Param::from_mapped_value(id, Tensor::from_inner(tensor.inner()).require_grad(), mapper)
        }
    }
    model.clone().map(&mut Fresh)
}

/// One rayon pool per shard, each with an equal share of the caller's threads (at least one),
/// built once per shard count for the life of the process; `None` if a pool cannot be started.
fn pools(shards: usize) -> Option<Arc<Vec<rayon::ThreadPool>>> {
    static POOLS: Mutex<Vec<(usize, Arc<Vec<rayon::ThreadPool>>)>> = Mutex::new(Vec::new());
    let mut all = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = all.iter().find(|(n, _)| *n == shards) {
        return Some(p.clone());
    }
    let threads = (rayon::current_num_threads() / shards).max(1);
    let built: Result<Vec<_>, _> = (0..shards)
        .map(|i| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(move |t| format!("colossus-shard{i}-{t}"))
                .build()
        })
        .collect();
    let pools = Arc::new(built.ok()?);
    all.push((shards, pools.clone()));
    Some(pools)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuTrain;
    use crate::train::grads::Grads;

    fn model() -> Grok<CpuTrain> {
        let cfg = crate::config::from_yaml("preset: tiny\n", "test.yaml", &[]).expect("tiny preset");
        cfg.model.init(cfg.seed, &Default::default())
    }

    /// A shard's input ids, share, thread name and plain-path flag.
    type Seen = Mutex<Vec<(Vec<i64>, f64, String, bool)>>;

    /// What a shard's pass saw, and a result built from it.
    fn record(seen: &Seen, b: &Batch, share: f64) -> StepGrads<CpuTrain> {
        let name = std::thread::current().name().unwrap_or("").to_string();
        seen.lock().unwrap().push((
            b.inputs.clone(),
            share,
            name,
            fused::plain_active() && precision::f32_head_active(),
        ));
        StepGrads {
            grads: Grads { tensors: vec![] },
            loss: b.inputs[0] as f64,
            aux_loss: 1.0,
            expert_load: vec![vec![share as f32]],
            forward_s: share,
            device_mem: None,
        }
    }

    #[test]
    fn shards_tile_the_rows_on_their_own_pools_and_combine_by_share() {
        let model = model();
        // 5 rows in 2 shards: rows 0..2 and 2..5, shares 0.4 and 0.6.
        let batch = Batch {
            batch: 5,
            seq: 2,
            inputs: (0..10).collect(),
            targets: (10..20).collect(),
        };
        let seen = Mutex::new(Vec::new());
        let m = precision::f32_head_scope(true, || {
            fused::plain_scope(|| micro_step(&model, batch, 2, |_, b, share| record(&seen, b, share)))
        });
        let mut seen = seen.into_inner().unwrap();
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(seen[0].0, vec![0, 1, 2, 3]);
        assert_eq!(seen[1].0, vec![4, 5, 6, 7, 8, 9]);
        assert_eq!((seen[0].1, seen[1].1), (0.4, 0.6));
        // Each shard ran on its own pool, and kept the caller's plain-path and f32-head choices.
        assert_eq!(seen[0].2, "colossus-shard0-0");
        assert_eq!(seen[1].2, "colossus-shard1-0");
        assert!(
            seen.iter().all(|s| s.3),
            "a shard lost the caller's plain_scope or f32_head_scope"
        );
        assert!(
            (m.loss - (0.4 * 0.0 + 0.6 * 4.0)).abs() < 1e-12,
            "loss {}",
            m.loss
        );
        assert!((m.aux_loss - 1.0).abs() < 1e-12);
        assert!((m.expert_load[0][0] - (0.4f32 * 0.4 + 0.6 * 0.6)).abs() < 1e-6);
        assert_eq!(m.forward_s, 0.6, "the slowest shard's forward");
    }

    #[test]
    fn one_shard_or_one_row_runs_on_the_callers_thread() {
        let model = model();
        let batch = Batch {
            batch: 1,
            seq: 2,
            inputs: vec![7, 8],
            targets: vec![8, 9],
        };
        let seen = Mutex::new(Vec::new());
        let m = micro_step(&model, batch, 4, |_, b, share| record(&seen, b, share));
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].1, 1.0);
        assert_eq!(seen[0].2, std::thread::current().name().unwrap_or(""));
        assert_eq!(m.loss, 7.0);
    }

    #[test]
    fn a_replica_shares_values_but_not_autodiff_nodes() {
        use burn::module::ModuleVisitor;
        struct Values(Vec<(burn::module::ParamId, Vec<f32>, bool)>);
        impl ModuleVisitor<CpuTrain> for Values {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<CpuTrain, D>>) {
                let v = p.val();
                let tracked = v.is_require_grad();
                let data = v.inner().into_data().into_vec::<f32>().unwrap();
                self.0.push((p.id, data, tracked));
            }
        }
        let model = model();
        let copy = replica(&model);
        let (mut a, mut b) = (Values(vec![]), Values(vec![]));
        model.visit(&mut a);
        copy.visit(&mut b);
        assert_eq!(a.0.len(), b.0.len());
        assert!(
            a.0 == b.0,
            "a replica must hold the same parameters, ids and trainability"
        );
        // A backward through the replica leaves no gradient on the original's nodes.
        let x = Tensor::<CpuTrain, 2, burn::tensor::Int>::zeros([1, 4], &Default::default());
        let grads = copy.forward(x, None).logits.sum().backward();
        let mut reached = 0;
        struct Reach<'a>(&'a burn::backend::autodiff::grads::Gradients, &'a mut usize);
        impl ModuleVisitor<CpuTrain> for Reach<'_> {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<CpuTrain, D>>) {
                if p.val().grad(self.0).is_some() {
                    *self.1 += 1;
                }
            }
        }
        model.visit(&mut Reach(&grads, &mut reached));
        assert_eq!(
            reached, 0,
            "the replica's backward reached the original's parameters"
        );
        let mut reached_copy = 0;
        copy.visit(&mut Reach(&grads, &mut reached_copy));
        assert!(reached_copy > 0, "the replica's own parameters get gradients");
    }
}
