//! Grok-1's mixture of experts: an f32 router, softmax over all experts, the top-k probabilities
//! used as gates without renormalising, and gated-GELU experts. Each expert runs only on the
//! tokens routed to it (gather → expert → each token's k outputs weighted by its gates and
//! summed), so compute is k/E of a dense evaluation.
//!
//! On the GPU backends all of a layer's experts are one autodiff node (`model::experts`), whose
//! backward writes each expert's input gradient into its rows of one tensor rather than a whole
//! `[n, d]` tensor per expert; the gates are a parent of that node, which weighs each token's k
//! expert outputs and sums them itself (`model::combine`).
//!
//! Elsewhere (the CPU backend, `fused::plain_scope`, and past `experts::MAX_EXPERTS` experts with
//! rows) each expert is its own node and the rows move by gathers whose gradients are gathers too
//! (`model::rows`): burn-cubecl runs a scatter (the gradient of burn's own gather, and
//! `select_assign`) as one thread per column walking the rows in turn. There, on the GPU
//! backends the experts' outputs come back by a gather as well (`Routes::gather_back`: stacked,
//! put in slot order, weighed), while the CPU backend keeps the scatter-add into place
//! (`Routes::scatter_add`), which it runs as a copy per row and which measured 9% faster over
//! the `small` preset's step there than the stacking and reordering (side by side, 2026-12-04:
//! 421 against 461 ms, median of four runs each). All give the same sums (to the bit for top-2:
//! two terms add the same either way).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use burn::module::{Module, Param};
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData, backend::Backend};

use super::rows::{self, RowMap};
use super::{combine, experts, fused, init, precision, stand_in_routing};

thread_local! {
    static GATHER_BACK: Cell<bool> = const { Cell::new(false) };
}

/// Nanoseconds of routing since `take_route_time` last read them, over every thread (the CPU
/// backend's shards route on threads of their own, `dist::workers`).
static ROUTING_NS: AtomicU64 = AtomicU64::new(0);

/// The host time the MoE layers spent routing since the last call, which resets it: from the
/// router probabilities' read-back to the experts' node, with the grouped node's plan but not
/// its uploads or launches, summed over layers (and over the CPU backend's shards, which route
/// at the same time). On a GPU the read-back has drained the device's queue, so for this long
/// the device waits on the host (`colossus bench` prints it per step as `route_ms`).
pub fn take_route_time() -> Duration {
    Duration::from_nanos(ROUTING_NS.swap(0, Ordering::Relaxed))
}

fn add_route_time(since: Instant) {
    let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
    ROUTING_NS.fetch_add(ns, Ordering::Relaxed);
}

/// Run `f` with the experts' outputs brought back by the GPU backends' gather on this thread,
/// whatever the backend: how the CPU tests check it against the CPU's scatter-add.
pub fn gather_back_scope<R>(f: impl FnOnce() -> R) -> R {
    super::scoped(&GATHER_BACK, true, f)
}

#[derive(Debug, Clone)]
pub struct MoeConfig {
    pub d_model: usize,
    pub ffn_size: usize,
    pub n_experts: usize,
    pub top_k: usize,
    pub init_std: f64,
}

impl MoeConfig {
    pub fn init<B: Backend>(&self, seed: u64, name: &str, device: &B::Device) -> Moe<B> {
        let (d, f) = (self.d_model, self.ffn_size);
        let p = |suffix: String, shape: [usize; 2]| {
            init::normal(shape, self.init_std, seed, &format!("{name}.{suffix}"), device)
        };
        Moe {
            gate: p("gate".into(), [d, self.n_experts]),
            experts: (0..self.n_experts)
                .map(|e| Expert {
                    w1: p(format!("experts.{e}.w1"), [d, f]),
                    w3: p(format!("experts.{e}.w3"), [d, f]),
                    w2: p(format!("experts.{e}.w2"), [f, d]),
                })
                .collect(),
            top_k: self.top_k,
        }
    }
}

/// One expert: `w2 · (gelu_tanh(w1 · x) ⊙ (w3 · x))`.
#[derive(Module, Debug)]
pub struct Expert<B: Backend> {
    /// `[d_model, ffn]`, the branch that goes through GELU.
    pub w1: Param<Tensor<B, 2>>,
    /// `[d_model, ffn]`, the linear "value" branch.
    pub w3: Param<Tensor<B, 2>>,
    /// `[ffn, d_model]`
    pub w2: Param<Tensor<B, 2>>,
}

impl<B: Backend> Expert<B> {
    /// `[n, d_model]` → `[n, d_model]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let a = precision::matmul(x.clone(), self.w1.val()); // [n, ffn]
        let h = fused::gelu_gate(a, precision::matmul(x, self.w3.val())); // [n, ffn]
        precision::matmul(h, self.w2.val())
    }
}

#[derive(Module, Debug)]
pub struct Moe<B: Backend> {
    /// Router, `[d_model, n_experts]`.
    pub gate: Param<Tensor<B, 2>>,
    pub experts: Vec<Expert<B>>,
    #[module(skip)]
    pub top_k: usize,
}

/// What the router did in one forward: for metrics and the optional balancing loss, the
/// Switch-Transformer's `E · Σ_e f_e · P_e` (f_e: share of routed slots that chose expert e; P_e:
/// mean router probability of e), 1.0 when perfectly balanced.
#[derive(Debug, Clone)]
pub struct RouterStats<B: Backend> {
    /// The router's probabilities `[n, E]`, live: the balancing loss's gradient flows through them.
    probs: Tensor<B, 2>,
    /// f_e for each expert; sums to 1.
    pub load: Vec<f32>,
    /// The balancing loss's value, from the probabilities the routing read back (in f64).
    pub aux_value: f64,
}

impl<B: Backend> RouterStats<B> {
    /// The balancing loss as a tensor to train on, `[1]`. Built when asked, not in every forward:
    /// a run that does not train on it (`aux_loss_coef: 0`, the presets') launches nothing for it
    /// (four launches a layer on a GPU backend) and reads its value from `aux_value`.
    pub fn aux_loss(&self) -> Tensor<B, 1> {
        let n_experts = self.load.len();
        let device = self.probs.device();
        let mean_prob = self.probs.clone().mean_dim(0).reshape([n_experts]); // [E]
        let f = init::floats::<B, 1>(self.load.clone(), [n_experts], &device);
        (mean_prob * f).sum().mul_scalar(n_experts as f64)
    }
}

impl<B: Backend> Moe<B> {
    /// `x: [batch, seq, d_model]` → `[batch, seq, d_model]` and the router statistics.
    pub fn forward(&self, x: Tensor<B, 3>) -> (Tensor<B, 3>, RouterStats<B>) {
        let [b, t, d] = x.dims();
        let n = b * t;
        let n_experts = self.experts.len();
        let h = x.reshape([n, d]); // [n, d]
        let device = h.device();
        let (router_in, dtype) = precision::upcast(h.clone());
        let (router_w, _) = precision::upcast(self.gate.val());
        let probs = fused::softmax_rows(router_in.matmul(router_w)); // [n, E], at least f32

        // Which experts: decided on the host from detached probabilities (the choice has no
        // gradient; the routing below needs it there anyway); the gate values are gathered from
        // the live tensor so the router still learns through them. On a GPU backend burn's
        // `topk_with_indices` would read the probabilities back too (burn-cubecl has no sort: the
        // default sorts each row on the host and uploads values and indices), then the indices
        // would come back for the routing: one read-back instead of two, no full sort, one upload.
        // In f32, as computed: the f64 copy this once was cost a pass over the `[n, E]` values
        // while the device waits on the host (the read-back drained its queue).
        let p: Vec<f32> = probs
            .clone()
            .detach()
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("float probabilities"); // [n, E] row-major
        let routing = Instant::now();
        let idx = stand_in_routing::next(n, n_experts, self.top_k)
            .unwrap_or_else(|| top_k(&p, n_experts, self.top_k)); // [n, k] row-major
        let idx_t = Tensor::<B, 2, Int>::from_data(TensorData::new(idx.clone(), [n, self.top_k]), &device);
        let gates = probs.clone().gather(1, idx_t); // [n, k]

        let routes = Routes::new(&idx, n_experts, self.top_k);
        let total_slots = (n * self.top_k) as f32;
        let load: Vec<f32> = routes.counts().map(|m| m as f32 / total_slots).collect();

        let gates = precision::restore(gates, dtype); // [n, k]
        let aux_value = balancing_loss(&p, &load);
        add_route_time(routing);
        let plan = || {
            let planning = Instant::now();
            let plan = routes.plan();
            add_route_time(planning);
            plan
        };
        let out = match experts::grouped(h.clone(), &self.experts, gates.clone(), plan) {
            Some(y) => y, // [n, d]
            None => self.per_expert(h, &routes, gates),
        };

        let stats = RouterStats {
            probs,
            load,
            aux_value,
        };
        (out.reshape([b, t, d]), stats)
    }

    /// `[n, d]` → `[n, d]`: each expert its own autodiff node, on the rows gathered for it (the
    /// path of the CPU backend, measured faster there, and of `fused::plain_scope`).
    fn per_expert(&self, h: Tensor<B, 2>, routes: &Routes, gates: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, d] = h.dims();
        let mut ys = Vec::with_capacity(self.experts.len());
        for (e, expert) in self.experts.iter().enumerate() {
            let x = match routes.count(e) {
                0 => continue,
                // Every token chose this expert (always so when n_experts == top_k): no gather.
                m if m == n => h.clone(),
                _ => rows::gather(h.clone(), &routes.inputs(e)), // [m, d]
            };
            ys.push((e, expert.forward(x))); // [m, d]
        }
        if crate::backend::is_cpu::<B>() && !GATHER_BACK.with(Cell::get) {
            routes.scatter_add(ys, gates, [n, d])
        } else {
            routes.gather_back(ys.into_iter().map(|(_, y)| y).collect(), gates)
        }
    }
}

/// Where each routed slot goes: the `[n, k]` slots (slot `token·k + j` holds the token's `j`-th
/// expert) grouped by expert, tokens ascending within each, as the expert loop visits them.
struct Routes {
    /// Slots grouped by expert: `order[p]` is the slot at position `p`.
    order: Vec<i64>,
    /// Expert `e`'s positions are `start[e]..start[e + 1]`.
    start: Vec<usize>,
    top_k: usize,
}

impl Routes {
    /// From each slot's expert (`[n, k]` row-major).
    fn new(idx: &[i64], n_experts: usize, top_k: usize) -> Self {
        let (order, start) = rows::group(idx, n_experts).expect("every slot's expert is below n_experts");
        Routes { order, start, top_k }
    }

    fn count(&self, e: usize) -> usize {
        self.start[e + 1] - self.start[e]
    }

    fn counts(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.start.len() - 1).map(|e| self.count(e))
    }

    /// Expert `e`'s input rows from the `[n, d]` tokens (a token reaches an expert once at most).
    fn inputs(&self, e: usize) -> RowMap {
        let slots = &self.order[self.start[e]..self.start[e + 1]];
        rows_of(slots, self.order.len() / self.top_k, self.top_k)
    }

    /// Each token's expert outputs weighted by its gates and summed, `[n, d]`, from the experts'
    /// outputs (`[m_e, d]` each, in expert order) and the gates `[n, k]`: the outputs stacked,
    /// brought to slot order by a gather, and each token's k rows summed.
    fn gather_back<B: Backend>(&self, ys: Vec<Tensor<B, 2>>, gates: Tensor<B, 2>) -> Tensor<B, 2> {
        let y = Tensor::cat(ys, 0); // [n·k, d], grouped by expert
        let y = rows::gather(y, &self.to_slots()); // [n·k, d], token-major: slot = token·k + j
        combine::weigh(y, gates)
    }

    /// The grouped node's description of these routes (`model::experts`).
    fn plan(&self) -> experts::Plan {
        let k = self.top_k as i64;
        let used = (0..self.start.len() - 1)
            .filter(|&e| self.count(e) > 0)
            .map(|e| (e, self.start[e]..self.start[e + 1]))
            .collect();
        experts::Plan {
            tokens: self.order.iter().map(|&slot| slot / k).collect(),
            order: self.order.clone(),
            to_slots: self.to_slots().fwd,
            used,
            top_k: self.top_k,
        }
    }

    /// The same sum by burn's `select_assign` into a zeroed `[n, d]`: each expert's rows, times
    /// their gates, added in place (`ys`: each expert with rows, and its output).
    fn scatter_add<B: Backend>(
        &self,
        ys: Vec<(usize, Tensor<B, 2>)>,
        gates: Tensor<B, 2>,
        [n, d]: [usize; 2],
    ) -> Tensor<B, 2> {
        let k = self.top_k;
        let device = gates.device();
        let gates = gates.reshape([n * k, 1]); // [n·k, 1]
        let zeros = Tensor::<B, 2>::zeros([n, d], &device);
        let mut out = precision::restore(zeros, gates.dtype());
        for (e, y) in ys {
            let slots = &self.order[self.start[e]..self.start[e + 1]];
            let gate = rows::gather(gates.clone(), &rows_of(slots, n * k, 1)); // [m, 1]
            let tokens: Vec<i64> = slots.iter().map(|&slot| slot / k as i64).collect();
            out = out.select_assign(
                0,
                rows::ints::<B>(&tokens, &device),
                y * gate,
                IndexingUpdateOp::Add,
            );
        }
        out
    }

    /// From the experts' outputs, stacked in `order`, to slot order.
    fn to_slots(&self) -> RowMap {
        let mut fwd = vec![0i64; self.order.len()];
        for (p, &slot) in self.order.iter().enumerate() {
            fwd[slot as usize] = p as i64;
        }
        RowMap {
            fwd,
            bwd: self.order.clone(),
        }
    }
}

/// Rows `slot / per` of a `[rows, ·]` tensor, one per slot (`per`: slots per row; no row twice).
fn rows_of(slots: &[i64], rows: usize, per: usize) -> RowMap {
    let mut bwd = vec![slots.len() as i64; rows];
    for (i, &slot) in slots.iter().enumerate() {
        bwd[slot as usize / per] = i as i64;
    }
    let fwd = slots.iter().map(|&slot| slot / per as i64).collect();
    RowMap { fwd, bwd }
}

/// `E · Σ_e f_e · P_e` from the router's probabilities `p` (`[n, E]` row-major) and the load
/// `f` (`[E]`), summed in f64.
fn balancing_loss(p: &[f32], load: &[f32]) -> f64 {
    let n_experts = load.len();
    let mut mean = vec![0f64; n_experts];
    for row in p.chunks(n_experts) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += *v as f64;
        }
    }
    let rows = (p.len() / n_experts).max(1) as f64;
    let dot: f64 = mean.iter().zip(load).map(|(m, f)| m / rows * *f as f64).sum();
    dot * n_experts as f64
}

/// Each row's `k` largest entries' columns, largest first (the lower column on a tie; a NaN
/// where `f32::total_cmp` puts it, so a non-finite step still routes, deterministically):
/// `[rows, k]` row-major (`min(k, cols)` a row), of a `[rows, cols]` row-major matrix.
///
/// This runs on the host between the probabilities' read-back and the experts' first launch,
/// while a GPU has nothing queued, once a layer. So it takes k passes of a branch-free arg-max
/// over each row's integer sort keys (k is 2 for Grok) instead of inserting each entry into a
/// sorted list, whose comparisons the branch predictor cannot guess on router probabilities:
/// `[16 384, 8]`, k = 2 (`gpu-350m`'s batch) went from ~1.0–1.4 ms with the old f64 copy and
/// insertion to ~0.25 ms (docs/benchmarks.md, "The router's top-k on the host").
fn top_k(values: &[f32], cols: usize, k: usize) -> Vec<i64> {
    let keep = k.min(cols);
    let mut out = Vec::with_capacity(values.len() / cols.max(1) * keep);
    if keep == 0 {
        return out;
    }
    // `total_cmp`'s order as i32 keys, widened so a taken column (i64::MIN) is below them all.
    let sort_key = |v: f32| {
        let x = v.to_bits() as i32;
        (x ^ ((((x >> 31) as u32) >> 1) as i32)) as i64
    };
    let mut keys = vec![0i64; cols];
    for row in values.chunks_exact(cols) {
        for (key, &v) in keys.iter_mut().zip(row) {
            *key = sort_key(v);
        }
        for _ in 0..keep {
            // Strictly greater: the lower column wins a tie.
            let (mut best, mut at) = (keys[0], 0);
            for (c, &key) in keys.iter().enumerate().skip(1) {
                let better = key > best;
                best = if better { key } else { best };
                at = if better { c } else { at };
            }
            keys[at] = i64::MIN;
            out.push(at as i64);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_takes_the_largest_first_and_the_lower_column_on_ties() {
        let m = [
            0.1, 0.4, 0.2, 0.3, /* */ 0.5, 0.5, 0.0, 0.5, /* */ 0.0, 0.0, 0.0, 1.0,
        ];
        assert_eq!(top_k(&m, 4, 2), vec![1, 3, 0, 1, 3, 0]);
        assert_eq!(top_k(&m, 4, 1), vec![1, 0, 3]);
        assert_eq!(top_k(&m, 4, 4), vec![1, 3, 2, 0, 0, 1, 3, 2, 3, 0, 1, 2]);
        assert_eq!(top_k(&[1.0, f32::NAN, 2.0], 3, 2), vec![1, 2]);
        assert_eq!(top_k(&m, 4, 0), Vec::<i64>::new());
    }

    /// Against an independent rule: each row's columns stably sorted by value, largest first
    /// (`f32::total_cmp`), the first `min(k, cols)` kept. Values from a few levels so that rows
    /// tie often, with NaNs and infinities among them; k from 1 past the column count.
    #[test]
    fn top_k_matches_a_stable_sort_of_each_row() {
        let levels = [
            0.25,
            0.5,
            0.5,
            1.0,
            -0.0,
            0.0,
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            1e-30,
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for cols in [1, 2, 3, 8, 13] {
            let rows = 200;
            let values: Vec<f32> = (0..rows * cols)
                .map(|_| levels[(next() % levels.len() as u64) as usize])
                .collect();
            for k in 1..=cols + 1 {
                let want: Vec<i64> = values
                    .chunks(cols)
                    .flat_map(|row| {
                        let mut c: Vec<usize> = (0..cols).collect();
                        c.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                        c.into_iter().take(k).map(|c| c as i64)
                    })
                    .collect();
                assert_eq!(top_k(&values, cols, k), want, "cols {cols}, k {k}");
            }
        }
    }
}
