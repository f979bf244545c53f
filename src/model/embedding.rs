//! The token embedding lookup, whose gradient on the GPU backends sums each vocabulary row's
//! positions in parallel (`GpuOps::rows_sum`) instead of burn's `select_add`.
//!
//! Why: burn 0.21 takes an embedding's gradient with `select_add` (`ModuleOps::
//! embedding_backward`, which neither burn-fusion nor burn-cubecl overrides), and burn-cubecl runs
//! that as one thread per column, each adding every token's row in turn: at `gpu-350m` 1 024
//! threads, each 16 384 dependent read-add-writes, one step after another. By arithmetic (not
//! measured: no GPU yet), at 0.3–0.5 µs of memory latency each that is 5–8 ms a step, against the
//! goal's whole step of 30.5 ms at 50% MFU. Here the host, which has the batch's ids anyway, lists each row's
//! positions (a counting sort), and the kernel gives each vocabulary row a cube that sums its
//! positions' rows, in position order, as `select_add` does: the same sums to the bit.
//!
//! What it costs: reading the ids back to the host, one sync per forward (the MoE's router
//! reads its choices back in every layer already), and two integer tensors of the batch's and
//! the vocabulary's length. The CPU backend and inference keep burn's lookup.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::tensor::backend::Backend;
use burn::tensor::ops::IntTensor;
use burn::tensor::{Int, Shape, Tensor, TensorMetadata};

use super::fused::{plain_active, record, unwrap, unwrap_int, wrap};
use crate::backend::{GpuKernel, GpuOps, run_gpu_kernel};

/// `weights: [vocab, d]`, `ids: [b, t]` → `[b, t, d]`, row `ids[i, j]` of the weights.
pub fn lookup<B: Backend>(weights: Tensor<B, 2>, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
    if plain_active() {
        return burn::tensor::module::embedding(weights, ids);
    }
    run_gpu_kernel::<B, _>(Lookup { weights, ids })
        .unwrap_or_else(|k| burn::tensor::module::embedding(k.weights, k.ids))
}

/// Each vocabulary row's positions in `ids` (values below `rows`): `order` lists the positions
/// grouped by row, ascending within each, and row `v`'s are `order[seg[v]..seg[v + 1]]`.
/// `None` if an id is out of range (burn's lookup then reports it as it does).
pub fn positions(ids: &[i64], rows: usize) -> Option<(Vec<i64>, Vec<i64>)> {
    let (order, start) = super::rows::group(ids, rows)?;
    Some((order, start.into_iter().map(|s| s as i64).collect()))
}

#[derive(Debug)]
struct LookupBackward {
    rows: usize,
}

impl<X: GpuOps> Backward<X, 1> for LookupBackward {
    /// `order` and `seg` of `positions`, on the device.
    type State = (IntTensor<X>, IntTensor<X>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (order, seg) = ops.state;
        unary::<X, _>(ops.parents, ops.node, grads, |g| {
            // [b, t, d] → [vocab, d]
            let d = g.shape()[2];
            let n = g.shape().num_elements() / d.max(1);
            let g = X::float_reshape(g, Shape::new([n, d]));
            X::rows_sum(g, order, seg, self.rows)
        });
    }
}

struct Lookup<B: Backend> {
    weights: Tensor<B, 2>,
    ids: Tensor<B, 2, Int>,
}

impl<B: Backend> GpuKernel for Lookup<B> {
    type Output = Tensor<B, 3>;

    fn gpu_autodiff<X: GpuOps>(self) -> Tensor<B, 3> {
        let [rows, _] = self.weights.dims();
        let host: Vec<i64> = self.ids.to_data().convert::<i64>().into_vec().expect("int ids");
        let Some((order, seg)) = positions(&host, rows) else {
            return burn::tensor::module::embedding(self.weights, self.ids);
        };
        let device = self.ids.device();
        let ints = |v: Vec<i64>| unwrap_int::<Autodiff<X>, B, 1>(super::rows::ints::<B>(&v, &device));
        let (order, seg) = (ints(order), ints(seg));
        let ids = unwrap_int::<Autodiff<X>, B, 2>(self.ids);
        let w = unwrap::<Autodiff<X>, _, 2>(self.weights);
        wrap::<B, Autodiff<X>, 3>(record(LookupBackward { rows }, [w], |[w]| {
            ((order, seg), X::embedding(w, ids))
        }))
    }

    fn gpu_inner<X: GpuOps>(self) -> Tensor<B, 3> {
        burn::tensor::module::embedding(self.weights, self.ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_group_each_rows_tokens_in_order() {
        let (order, seg) = positions(&[3, 0, 3, 1, 3], 5).unwrap();
        assert_eq!(seg, vec![0, 1, 2, 2, 5, 5]);
        assert_eq!(order, vec![1, 3, 0, 2, 4]);
        assert!(positions(&[0, 5], 5).is_none());
        assert!(positions(&[-1], 5).is_none());
    }
}
