//! Row gathers whose backward is another gather: how the MoE's per-expert path (the CPU
//! backend's, and the GPU backends' under `fused::plain_scope` or past `experts::MAX_EXPERTS`
//! experts with rows; `model::moe`) moves token rows to its experts and their outputs back
//! without burn's scatter kernels on a GPU.
//!
//! Why: burn 0.21's autodiff takes the gradient of `select` (a row gather) with `select_add`, and
//! a scatter-add into place is `select_assign`; burn-cubecl runs both as one thread per column
//! that walks the indexed rows in turn (`kernel/index/select_assign.rs`: `working_units` is the
//! tensor's size over every axis but the indexed one, and each unit loops over all the indices).
//! At `gpu-350m` each expert's ~4 096 rows × 1 024 columns were 1 024 threads each making ~4 096
//! dependent read-add-writes, three times per expert and layer (the combine, the input gather's
//! gradient, and the gates' 1-d gather's gradient, one thread): by arithmetic (not measured: no
//! GPU yet), at a few hundred ns of memory latency each, 0.35–0.6 s a step against the goal's
//! 30.5 ms (docs/benchmarks.md, "Serial scatters"). Here every map between the rows is a partial
//! bijection known on the host, so both directions are `select`s, which burn-cubecl runs one
//! thread per output element.
//!
//! What it costs: the backward's gather writes the whole source shape (rows no output came
//! from get zeros) instead of adding into a zeroed tensor of that shape, the same bytes; and a
//! gather that must produce zero rows first appends one zero row to its source (a copy of it).
//! On the CPU backend the values are the same bits as `select` and `select_add`'s: every output
//! row is one copied row or zeros.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Int, Shape, Tensor, TensorData, TensorMetadata};

use super::fused::{plain_active, record, unwrap, wrap};
use crate::backend::{GpuKernel, GpuOps, HostKernel, run_gpu_kernel, run_kernel};

thread_local! {
    static SELECT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` with `gather` as burn's `select` on this thread, every other fused path as it is: the
/// reference the tests compare with (`fused::plain_scope` switches this off too, with the rest).
pub fn select_scope<R>(f: impl FnOnce() -> R) -> R {
    super::scoped(&SELECT, true, f)
}

/// Rows of a `[rows, d]` tensor picked by index, and how its gradient goes back.
///
/// `fwd[i]` is the source row of output row `i`; `bwd[j]` is the output row that source row `j`
/// went to. An index one past the last row (of the source in `fwd`, of the output in `bwd`)
/// stands for a zero row. The two must be inverse partial maps: each source row goes to at most
/// one output row and back (`check` says so in debug builds).
#[derive(Debug, Clone)]
pub struct RowMap {
    pub fwd: Vec<i64>,
    pub bwd: Vec<i64>,
}

impl RowMap {
    /// Whether `fwd` and `bwd` are inverse partial maps between `fwd.len()` output rows and
    /// `bwd.len()` source rows.
    pub fn check(&self) -> bool {
        let (out, src) = (self.fwd.len() as i64, self.bwd.len() as i64);
        let inverse = |a: &[i64], b: &[i64], b_len: i64, a_len: i64| {
            a.iter()
                .enumerate()
                .all(|(i, &j)| j == b_len || (0..b_len).contains(&j) && b[j as usize] == i as i64)
                && b.iter().all(|&i| (0..=a_len).contains(&i))
        };
        inverse(&self.fwd, &self.bwd, src, out) && inverse(&self.bwd, &self.fwd, out, src)
    }
}

/// `x: [src, d]` → `[map.fwd.len(), d]`, row `i` being `x[map.fwd[i]]` (or zeros), whose
/// gradient is gathered back through `map.bwd`.
pub fn gather<B: Backend>(x: Tensor<B, 2>, map: &RowMap) -> Tensor<B, 2> {
    debug_assert_eq!(x.dims()[0], map.bwd.len(), "one bwd entry per source row");
    debug_assert!(map.check(), "fwd and bwd are not inverse partial maps");
    let g = Gather { x, map };
    if plain_active() || SELECT.with(std::cell::Cell::get) {
        return g.plain();
    }
    run_gpu_kernel::<B, _>(g).unwrap_or_else(run_kernel::<B, _>)
}

/// `x`'s rows picked by `idx`, with a zero row at index `x.dims()[0]` when `zero` is set.
fn pick<X: Backend>(x: FloatTensor<X>, idx: IntTensor<X>, zero: bool) -> FloatTensor<X> {
    let x = if zero {
        let shape = x.shape();
        let z = X::float_zeros(Shape::new([1, shape[1]]), &X::float_device(&x), x.dtype().into());
        X::float_cat(vec![x, z], 0)
    } else {
        x
    };
    X::float_select(x, 0, idx)
}

/// `v` as a 1-d integer tensor on `device`.
pub fn ints<B: Backend>(v: &[i64], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
}

/// Positions `0..keys.len()` grouped by key, by a stable counting sort: `order` lists them,
/// ascending within each key, and key `k`'s are `order[start[k]..start[k + 1]]`. `None` if a key
/// is not below `buckets`. How the MoE groups its slots by expert and the embedding its
/// positions by token.
pub fn group(keys: &[i64], buckets: usize) -> Option<(Vec<i64>, Vec<usize>)> {
    let mut start = vec![0usize; buckets + 1];
    for &key in keys {
        let key = usize::try_from(key).ok().filter(|&k| k < buckets)?;
        start[key + 1] += 1;
    }
    for k in 0..buckets {
        start[k + 1] += start[k];
    }
    let mut next = start.clone();
    let mut order = vec![0i64; keys.len()];
    for (p, &key) in keys.iter().enumerate() {
        order[next[key as usize]] = p as i64;
        next[key as usize] += 1;
    }
    Some((order, start))
}

/// The indices on `device`, and whether any of them names the zero row past `len` rows.
fn indices<X: Backend>(v: &[i64], len: usize, device: &X::Device) -> (IntTensor<X>, bool) {
    (ints::<X>(v, device).into_primitive(), v.contains(&(len as i64)))
}

#[derive(Debug)]
struct GatherBackward;

impl<X: Backend> Backward<X, 1> for GatherBackward {
    /// `bwd` on the device, and whether it names the zero row.
    type State = (IntTensor<X>, bool);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (bwd, zero) = ops.state;
        unary::<X, _>(ops.parents, ops.node, grads, |g| pick::<X>(g, bwd, zero)); // [out, d] → [src, d]
    }
}

struct Gather<'a, B: Backend> {
    x: Tensor<B, 2>,
    map: &'a RowMap,
}

impl<B: Backend> Gather<'_, B> {
    fn autodiff<X: Backend>(self) -> Tensor<B, 2> {
        let x = unwrap::<Autodiff<X>, _, 2>(self.x);
        let device = X::float_device(&x.primitive);
        let src = self.map.bwd.len();
        let (fwd, fwd_zero) = indices::<X>(&self.map.fwd, src, &device);
        let (bwd, bwd_zero) = indices::<X>(&self.map.bwd, self.map.fwd.len(), &device);
        wrap::<B, Autodiff<X>, 2>(record(GatherBackward, [x], |[x]| {
            ((bwd, bwd_zero), pick::<X>(x, fwd, fwd_zero))
        }))
    }

    fn inner<X: Backend>(self) -> Tensor<B, 2> {
        let x = unwrap::<X, _, 2>(self.x);
        let (fwd, zero) = indices::<X>(&self.map.fwd, self.map.bwd.len(), &X::float_device(&x));
        wrap::<B, X, 2>(pick::<X>(x, fwd, zero))
    }

    /// burn's own `select`, whose gradient is `select_add`: the reference, and the path of
    /// backends without a dispatch here.
    fn plain(self) -> Tensor<B, 2> {
        let [src, d] = self.x.dims();
        let device = self.x.device();
        let x = if self.map.fwd.contains(&(src as i64)) {
            let z = Tensor::<B, 2>::zeros([1, d], &device).cast(self.x.dtype());
            Tensor::cat(vec![self.x, z], 0)
        } else {
            self.x
        };
        x.select(0, ints::<B>(&self.map.fwd, &device))
    }
}

impl<B: Backend> GpuKernel for Gather<'_, B> {
    type Output = Tensor<B, 2>;

    fn gpu_autodiff<X: GpuOps>(self) -> Tensor<B, 2> {
        self.autodiff::<X>()
    }

    fn gpu_inner<X: GpuOps>(self) -> Tensor<B, 2> {
        self.inner::<X>()
    }
}

impl<B: Backend> HostKernel for Gather<'_, B> {
    type Output = Tensor<B, 2>;

    fn autodiff<X: Backend>(self) -> Tensor<B, 2> {
        Gather::autodiff::<X>(self)
    }

    fn inner<X: Backend>(self) -> Tensor<B, 2> {
        Gather::inner::<X>(self)
    }

    fn plain(self) -> Tensor<B, 2> {
        Gather::plain(self)
    }
}

#[cfg(all(test, any(feature = "cpu", feature = "cpu-ndarray")))]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuTrain};
    use crate::model::fused::plain_scope;

    /// Output rows 0..3 take source rows 4, 0, 2 and a zero row; source rows 1 and 3 go nowhere.
    fn map() -> RowMap {
        RowMap {
            fwd: vec![4, 0, 2, 5],
            bwd: vec![1, 4, 2, 4, 0],
        }
    }

    #[test]
    fn the_maps_must_be_inverse() {
        assert!(map().check());
        let mut m = map();
        m.bwd[3] = 3; // source row 3 claims output row 3, which takes the zero row
        assert!(!m.check());
        let mut m = map();
        m.fwd[1] = 4; // two outputs from source row 4
        assert!(!m.check());
    }

    /// Forward and gradient against burn's `select` / `select_add`, to the bit, and against the
    /// values written out by hand.
    #[test]
    fn gather_and_its_gradient_match_select() {
        let device = Default::default();
        let x: Vec<f32> = (0..10).map(|v| v as f32 + 0.5).collect(); // [5, 2]
        let w: Vec<f32> = (0..8).map(|v| (v * v) as f32 - 3.0).collect(); // [4, 2] upstream
        let run = || {
            let xt =
                Tensor::<CpuTrain, 2>::from_data(TensorData::new(x.clone(), [5, 2]), &device).require_grad();
            let wt = Tensor::<CpuTrain, 2>::from_data(TensorData::new(w.clone(), [4, 2]), &device);
            let y = gather(xt.clone(), &map());
            let grads = (y.clone() * wt).sum().backward();
            let g = xt.grad(&grads).expect("x has a gradient");
            (
                y.into_data().into_vec::<f32>().unwrap(),
                g.into_data().into_vec::<f32>().unwrap(),
            )
        };
        let (y, g) = run();
        let (y0, g0) = plain_scope(run);
        assert_eq!(y, vec![8.5, 9.5, 0.5, 1.5, 4.5, 5.5, 0.0, 0.0]);
        assert_eq!(g, vec![1.0, 6.0, 0.0, 0.0, 13.0, 22.0, 0.0, 0.0, -3.0, -2.0]);
        assert_eq!((y0, g0), (y, g));

        let inner = gather(
            Tensor::<Cpu, 2>::from_data(TensorData::new(x.clone(), [5, 2]), &device),
            &map(),
        );
        assert_eq!(
            inner.into_data().into_vec::<f32>().unwrap(),
            vec![8.5, 9.5, 0.5, 1.5, 4.5, 5.5, 0.0, 0.0]
        );
    }
}
