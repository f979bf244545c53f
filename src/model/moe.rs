//! Grok-1's mixture of experts: an f32 router, softmax over all experts, the top-k probabilities
//! used as gates without renormalising, and gated-GELU experts. Each expert runs only on the
//! tokens routed to it (gather → expert → scatter-add), so compute is k/E of a dense evaluation.

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData, backend::Backend};

use super::{fused, init, precision, stand_in_routing};

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

/// What the router did in one forward: for metrics and the optional balancing loss.
#[derive(Debug, Clone)]
pub struct RouterStats<B: Backend> {
    /// Switch-Transformer balancing loss `E · Σ_e f_e · P_e` (f_e: share of routed slots that chose
    /// expert e; P_e: mean router probability of e); 1.0 when perfectly balanced. Shape `[1]`.
    pub aux_loss: Tensor<B, 1>,
    /// f_e for each expert; sums to 1.
    pub load: Vec<f32>,
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
        let probs = softmax(router_in.matmul(router_w), 1); // [n, E], at least f32

        // Which experts: decided on detached probabilities (the choice has no gradient); the gate
        // values are gathered from the live tensor so the router still learns through them.
        let (_, idx) = probs.clone().detach().topk_with_indices(self.top_k, 1); // [n, k]
        let gates = probs.clone().gather(1, idx.clone()); // [n, k]
        let idx: Vec<i64> = idx.into_data().convert::<i64>().into_vec().expect("int indices");
        let idx = stand_in_routing::next(n, n_experts, self.top_k).unwrap_or(idx);

        // Per expert: the token rows it serves and, for each, the flat [n·k] slot holding its gate.
        let mut rows: Vec<Vec<i64>> = vec![Vec::new(); n_experts];
        let mut slots: Vec<Vec<i64>> = vec![Vec::new(); n_experts];
        for (slot, &e) in idx.iter().enumerate() {
            rows[e as usize].push((slot / self.top_k) as i64);
            slots[e as usize].push(slot as i64);
        }
        let total_slots = (n * self.top_k) as f32;
        let load: Vec<f32> = rows.iter().map(|r| r.len() as f32 / total_slots).collect();

        let gates_flat = gates.reshape([n * self.top_k]);
        let gates_flat = precision::restore(gates_flat, dtype);
        let mut out = precision::restore(Tensor::<B, 2>::zeros([n, d], &device), dtype);
        for (e, expert) in self.experts.iter().enumerate() {
            let m = rows[e].len();
            if m == 0 {
                continue;
            }
            let gate = gates_flat
                .clone()
                .select(0, ints::<B>(&slots[e], &device))
                .reshape([m, 1]); // [m, 1]
            if m == n {
                // Every token chose this expert (always so when n_experts == top_k): no gather.
                out = out + expert.forward(h.clone()) * gate;
            } else {
                let r = ints::<B>(&rows[e], &device);
                let y = expert.forward(h.clone().select(0, r.clone())) * gate; // [m, d]
                out = out.select_assign(0, r, y, IndexingUpdateOp::Add);
            }
        }

        let mean_prob = probs.mean_dim(0).reshape([n_experts]); // [E]
        let f = init::floats::<B, 1>(load.clone(), [n_experts], &device);
        let aux_loss = (mean_prob * f).sum().mul_scalar(n_experts as f64);
        (out.reshape([b, t, d]), RouterStats { aux_loss, load })
    }
}

fn ints<B: Backend>(values: &[i64], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}
