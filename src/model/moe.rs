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

use burn::module::{Module, Param};
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData, backend::Backend};

use super::rows::{self, RowMap};
use super::{combine, experts, fused, init, precision, stand_in_routing};

thread_local! {
    static GATHER_BACK: Cell<bool> = const { Cell::new(false) };
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
        let p: Vec<f64> = probs
            .clone()
            .detach()
            .into_data()
            .convert::<f64>()
            .into_vec()
            .expect("float probabilities"); // [n, E] row-major
        let idx = stand_in_routing::next(n, n_experts, self.top_k)
            .unwrap_or_else(|| top_k(&p, n_experts, self.top_k)); // [n, k] row-major
        let idx_t = Tensor::<B, 2, Int>::from_data(TensorData::new(idx.clone(), [n, self.top_k]), &device);
        let gates = probs.clone().gather(1, idx_t); // [n, k]

        let routes = Routes::new(&idx, n_experts, self.top_k);
        let total_slots = (n * self.top_k) as f32;
        let load: Vec<f32> = routes.counts().map(|m| m as f32 / total_slots).collect();

        let gates = precision::restore(gates, dtype); // [n, k]
        let out = match experts::grouped(h.clone(), &self.experts, gates.clone(), || routes.plan()) {
            Some(y) => y, // [n, d]
            None => self.per_expert(h, &routes, gates),
        };

        let aux_value = balancing_loss(&p, &load);
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
/// `f` (`[E]`).
fn balancing_loss(p: &[f64], load: &[f32]) -> f64 {
    let n_experts = load.len();
    let mut mean = vec![0f64; n_experts];
    for row in p.chunks(n_experts) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    let rows = (p.len() / n_experts).max(1) as f64;
    let dot: f64 = mean.iter().zip(load).map(|(m, f)| m / rows * *f as f64).sum();
    dot * n_experts as f64
}

/// Each row's `k` largest entries' columns, largest first (the lower column on a tie; a NaN
/// where `f64::total_cmp` puts it, so a non-finite step still routes, deterministically):
/// `[rows, k]` row-major, of a `[rows, cols]` row-major matrix.
fn top_k(values: &[f64], cols: usize, k: usize) -> Vec<i64> {
    let mut out = Vec::with_capacity(values.len() / cols * k);
    for row in values.chunks(cols) {
        let start = out.len();
        for (c, v) in row.iter().enumerate() {
            // Insertion into the row's sorted top-k so far: k is 2 for Grok, a few at most.
            let mut at = out.len();
            while at > start && row[out[at - 1] as usize].total_cmp(v).is_lt() {
                at -= 1;
            }
            if at < start + k {
                out.insert(at, c as i64);
                out.truncate(start + k);
            }
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
        assert_eq!(top_k(&[1.0, f64::NAN, 2.0], 3, 2), vec![1, 2]);
    }
}
