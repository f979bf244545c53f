//! `Dist`: one rank's handle on the collective, passed into the training loop. A single-rank
//! handle does nothing, so the one-device path pays nothing. Gradients go through burn-collective's
//! `all_reduce` (mean) in flat buckets; the start-up weight broadcast is an `all_reduce` (sum) to
//! which only rank 0 contributes non-zeros, because burn-collective 0.21 leaves the global
//! (multi-process) `broadcast` unimplemented (`global/node/base.rs`, `unimplemented!`); x + 0 is
//! exact in floating point, so every rank receives rank 0's bits.

use std::sync::Arc;
use std::time::Duration;

use burn::collective::{self as bc, PeerId, ReduceOperation};
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

use super::watchdog::{Roster, with_deadline};
use crate::checkpoint::state::TrainState;
use crate::config::Config;
use crate::error::Result;
use crate::train::grads::Grads;

/// This rank's place in the job and its line to the others.
#[derive(Debug, Clone)]
pub struct Dist {
    pub rank: usize,
    pub world: usize,
    timeout: Duration,
    /// Largest all-reduce, in f32 elements.
    bucket_elems: usize,
    roster: Option<Arc<Roster>>,
    /// This process's tensor-data address (several processes only), published at start.
    pub(crate) data_addr: Option<std::net::SocketAddr>,
}

impl Dist {
    /// Training on one device: every operation is the identity.
    pub fn single() -> Self {
        Dist {
            rank: 0,
            world: 1,
            timeout: Duration::from_secs(60),
            bucket_elems: usize::MAX,
            roster: None,
            data_addr: None,
        }
    }

    /// A registered rank (see `launch`).
    pub(crate) fn member(
        rank: usize,
        world: usize,
        timeout_s: f64,
        bucket_mb: f64,
        roster: Arc<Roster>,
    ) -> Self {
        Dist {
            rank,
            world,
            timeout: Duration::from_secs_f64(timeout_s),
            bucket_elems: ((bucket_mb * 1e6 / 4.0) as usize).max(1),
            roster: Some(roster),
            data_addr: None,
        }
    }

    /// Rank 0 writes checkpoints, metrics and the progress bar; the others only compute.
    pub fn is_leader(&self) -> bool {
        self.rank == 0
    }

    pub(crate) fn roster(&self) -> Option<&Arc<Roster>> {
        self.roster.as_ref()
    }

    /// One blocking burn-collective call under the deadline.
    pub(crate) fn call<T, E>(
        &self,
        what: &str,
        f: impl FnOnce() -> std::result::Result<T, E> + Send + 'static,
    ) -> Result<T>
    where
        T: Send + 'static,
        E: std::fmt::Debug + Send + 'static,
    {
        let roster = self
            .roster
            .as_ref()
            .expect("collective call on a single-rank handle");
        with_deadline(roster, self.rank, what, self.timeout, f)
    }

    /// All-reduce one flat tensor.
    fn all_reduce_one<B: Backend>(
        &self,
        t: Tensor<B, 1>,
        op: ReduceOperation,
        what: &str,
    ) -> Result<Tensor<B, 1>> {
        let id = PeerId::from(self.rank);
        let prim = t.into_primitive().tensor();
        let out = self.call(what, move || bc::all_reduce::<B>(id, prim, op))?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    /// All-reduce a list of flat tensors in buckets of at most `bucket_elems` elements: one
    /// collective call per bucket instead of one per parameter (each call is a round of
    /// synchronisation, which dominates for small tensors), without one copy of the whole model.
    pub fn all_reduce<B: Backend>(
        &self,
        tensors: Vec<Tensor<B, 1>>,
        op: ReduceOperation,
        what: &str,
    ) -> Result<Vec<Tensor<B, 1>>> {
        if self.world == 1 || tensors.is_empty() {
            return Ok(tensors);
        }
        let mut out = Vec::with_capacity(tensors.len());
        let mut bucket: Vec<Tensor<B, 1>> = Vec::new();
        let mut elems = 0;
        let mut iter = tensors.into_iter().peekable();
        while let Some(t) = iter.next() {
            elems += t.dims()[0];
            bucket.push(t);
            if elems >= self.bucket_elems || iter.peek().is_none() {
                let sizes: Vec<usize> = bucket.iter().map(|t| t.dims()[0]).collect();
                let flat = Tensor::cat(std::mem::take(&mut bucket), 0);
                let reduced = self.all_reduce_one(flat, op, what)?;
                let mut at = 0;
                for n in sizes {
                    out.push(reduced.clone().slice(at..at + n));
                    at += n;
                }
                elems = 0;
            }
        }
        Ok(out)
    }

    /// Average `grads` (each rank's mean over its rows) over the ranks, with `extras` (loss, router
    /// statistics, stop flag) riding in the last bucket. Equal row counts per rank make the mean of
    /// rank means the mean over the global batch: the one-rank gradient, up to summation order.
    pub fn mean_grads<B: Backend>(&self, grads: Grads<B>, extras: Vec<f32>) -> Result<(Grads<B>, Vec<f32>)> {
        if self.world == 1 {
            return Ok((grads, extras));
        }
        let device = grads.tensors[0].device();
        let n = extras.len();
        let mut tensors = grads.tensors;
        tensors.push(Tensor::from_data(TensorData::new(extras, [n]), &device));
        let mut reduced = self.all_reduce(tensors, ReduceOperation::Mean, "gradient all-reduce")?;
        let extras = reduced
            .pop()
            .expect("extras")
            .into_data()
            .to_vec::<f32>()
            .expect("f32 extras");
        Ok((Grads { tensors: reduced }, extras))
    }

    /// Every rank's `values` (same length on every rank), in rank order: an all-gather built from
    /// a sum all-reduce in which each rank fills only its own slot (exact: x + 0 = x).
    pub fn gather<B: Backend>(
        &self,
        values: &[f32],
        device: &B::Device,
        what: &str,
    ) -> Result<Vec<Vec<f32>>> {
        if self.world == 1 {
            return Ok(vec![values.to_vec()]);
        }
        let k = values.len();
        let mut slots = vec![0f32; k * self.world];
        slots[self.rank * k..(self.rank + 1) * k].copy_from_slice(values);
        let t = Tensor::<B, 1>::from_data(TensorData::new(slots, [k * self.world]), device);
        let all = self
            .all_reduce_one(t, ReduceOperation::Sum, what)?
            .into_data()
            .to_vec::<f32>()
            .expect("f32");
        Ok(all.chunks(k).map(|c| c.to_vec()).collect())
    }

    /// Replace every rank's weights with rank 0's.
    pub fn broadcast_module<AB, M>(&self, module: M) -> Result<M>
    where
        AB: AutodiffBackend,
        M: AutodiffModule<AB>,
    {
        let all_mine = vec![self.is_leader(); crate::train::params::list(&module).len()];
        self.share_module(module, &all_mine, "weight broadcast from rank 0")
    }

    /// Give every rank each parameter's value from the one rank that has `mine[i]` set for it
    /// (ZeRO-1's exchange of updated weights; with rank 0 owning all, a broadcast).
    pub fn share_module<AB, M>(&self, module: M, mine: &[bool], what: &str) -> Result<M>
    where
        AB: AutodiffBackend,
        M: AutodiffModule<AB>,
    {
        if self.world == 1 {
            return Ok(module);
        }
        struct Flat<'a, AB: AutodiffBackend>(Vec<Tensor<AB::InnerBackend, 1>>, &'a [bool]);
        impl<AB: AutodiffBackend> ModuleVisitor<AB> for Flat<'_, AB> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
                let v = param.val().inner();
                let n = v.shape().num_elements();
                let v = v.reshape([n]);
                let mine = self.1[self.0.len()];
                self.0.push(if mine { v } else { v.zeros_like() });
            }
        }
        let mut flat = Flat::<AB>(Vec::new(), mine);
        module.visit(&mut flat);
        let values = self.all_reduce(flat.0, ReduceOperation::Sum, what)?;

        struct Put<AB: AutodiffBackend>(std::vec::IntoIter<Tensor<AB::InnerBackend, 1>>);
        impl<AB: AutodiffBackend> ModuleMapper<AB> for Put<AB> {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
                let (id, tensor, mapper) = param.consume();
                let v = self
                    .0
                    .next()
                    .expect("one value per parameter")
                    .reshape(tensor.shape());
                Param::from_mapped_value(id, Tensor::<AB, D>::from_inner(v).require_grad(), mapper)
            }
        }
        Ok(module.map(&mut Put::<AB>(values.into_iter())))
    }

    /// Before the first step: check every rank runs the same job from the same point, then give
    /// every rank rank 0's weights (they already agree when initialised from the same seed or
    /// checkpoint; the broadcast makes it a guarantee rather than an assumption).
    pub fn start<AB, M>(&self, cfg: &Config, state: &TrainState, module: M, device: &AB::Device) -> Result<M>
    where
        AB: AutodiffBackend,
        M: AutodiffModule<AB>,
    {
        if self.world == 1 {
            return Ok(module);
        }
        super::agree::check::<AB::InnerBackend>(self, cfg, state, self.data_addr, device)?;
        self.broadcast_module(module)
    }

    /// Leave the collective after a completed run (best effort: the run's work is done, so a peer
    /// that already exited is not an error).
    pub fn finish<B: Backend>(&self) {
        if let Some(roster) = &self.roster {
            let id = PeerId::from(self.rank);
            let short = self.timeout.min(Duration::from_secs(5));
            let _ = with_deadline(roster, self.rank, "finish", short, move || {
                bc::finish_collective::<B>(id)
            });
        }
    }
}
