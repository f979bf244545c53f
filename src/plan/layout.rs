//! What a plan is computed for: the parallel layout (dp × tp × pp, ep), the memory options
//! (ZeRO-1, recomputation), the batch, and the rules that make a layout valid for a model.

use std::fmt;

use super::hardware::{GPUS_PER_NODE, Gpu};
use crate::model::GrokConfig;

/// How the GPUs are divided. `dp · tp · pp` = GPUs.
///
/// - `tp` (tensor parallel, Megatron-style with sequence parallelism) splits every attention
///   projection by heads, every expert matrix along its ffn axis and the embedding along the
///   vocabulary. It must divide `n_q_heads`, the ffn size and the vocabulary; KV heads are split
///   when `tp` divides `n_kv_heads` and replicated when `n_kv_heads` divides `tp`.
/// - `pp` (pipeline parallel, 1F1B schedule) gives each stage ⌈L/pp⌉ consecutive layers; the first
///   and last stage each hold the tied embedding.
/// - `ep` (expert parallel) shards the experts over `ep` ranks *inside* the data-parallel group:
///   each rank holds `n_experts/ep` experts, so `ep` divides both `n_experts` and `dp`. Expert
///   weights are then replicated over `dp/ep` ranks (their data-parallel group), dense weights over
///   all `dp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub dp: usize,
    pub tp: usize,
    pub pp: usize,
    pub ep: usize,
}

impl Layout {
    /// `dp × tp × pp` GPUs, experts split `ep` ways inside each data-parallel group.
    pub const fn of(dp: usize, tp: usize, pp: usize, ep: usize) -> Self {
        Layout { dp, tp, pp, ep }
    }

    pub fn gpus(&self) -> usize {
        self.dp * self.tp * self.pp
    }

    /// Ranks that hold copies of the same expert shard and all-reduce its gradient.
    pub fn expert_dp(&self) -> usize {
        self.dp / self.ep
    }

    /// Layers on the busiest pipeline stage: ⌈L/pp⌉.
    pub fn layers_per_stage(&self, n_layers: usize) -> usize {
        n_layers.div_ceil(self.pp)
    }

    /// KV heads each tensor-parallel rank holds: n_kv/tp, or 1 when tp ≥ n_kv (replicated).
    pub fn kv_heads_per_rank(&self, n_kv_heads: usize) -> usize {
        (n_kv_heads / self.tp).max(1)
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dp {} × tp {} × pp {}, ep {}",
            self.dp, self.tp, self.pp, self.ep
        )
    }
}

/// Activation recomputation ("checkpointing") in the backward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Recompute {
    /// Keep every activation the backward needs.
    None,
    /// Korthikanti et al.'s selective recomputation: drop the attention core (soft-capped scores
    /// and softmax, the s² terms) and recompute it from Q, K, V in the backward.
    Selective,
    /// Keep only each layer's input and rerun the whole layer's forward in the backward.
    Full,
}

impl Recompute {
    pub fn name(self) -> &'static str {
        match self {
            Recompute::None => "none",
            Recompute::Selective => "selective",
            Recompute::Full => "full",
        }
    }

    /// "no recomputation", "selective recomputation", "full recomputation".
    pub fn describe(self) -> &'static str {
        match self {
            Recompute::None => "no recomputation",
            Recompute::Selective => "selective recomputation",
            Recompute::Full => "full recomputation",
        }
    }

    /// The flag that turns this mode on.
    pub fn flag(self) -> &'static str {
        match self {
            Recompute::None => "",
            Recompute::Selective => "--selective-recompute",
            Recompute::Full => "--recompute",
        }
    }
}

/// Where the number of micro-batches per step comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BatchSpec {
    /// `train.grad_accum` micro-batches per data-parallel rank, whatever dp is.
    PerRank { micro_batches: usize },
    /// A global batch in tokens (`--global-batch-tokens`), split over the data-parallel ranks.
    Global { tokens: f64 },
}

impl BatchSpec {
    /// Micro-batches per data-parallel rank per step. For a global batch G (tokens) that is
    /// m = ⌈⌈G/s⌉ / (dp·b)⌉, so the batch actually run is m·b·dp·s ≥ G; `None` when G is smaller
    /// than one micro-batch per rank (dp·b·s tokens).
    pub fn micro_batches(&self, dp: usize, micro_batch: usize, seq_len: usize) -> Option<usize> {
        match *self {
            BatchSpec::PerRank { micro_batches } => Some(micro_batches),
            BatchSpec::Global { tokens } => {
                let sequences = (tokens / seq_len as f64).ceil();
                let per_step = dp as f64 * micro_batch as f64;
                if sequences < per_step {
                    None
                } else {
                    Some((sequences / per_step).ceil() as usize)
                }
            }
        }
    }
}

/// Everything a plan is computed from besides the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub gpus: usize,
    pub gpu: Gpu,
    pub layout: Layout,
    /// Shard the optimizer state (f32 master weights and both Adam moments) over the ranks that
    /// hold the same parameters (ZeRO stage 1).
    pub zero1: bool,
    pub recompute: Recompute,
    /// Tokens per sequence (`data.seq_len`).
    pub seq_len: usize,
    /// Sequences per micro-batch (`train.micro_batch` or `--micro-batch`).
    pub micro_batch: usize,
    /// Micro-batches per data-parallel rank per step (resolved from `batch` for `layout.dp`).
    pub micro_batches: usize,
    pub batch: BatchSpec,
    /// Tokens to train on.
    pub tokens: f64,
    /// True when `tokens` is the 20-tokens-per-parameter default rather than `--tokens`.
    pub tokens_defaulted: bool,
    /// Model FLOP utilisation assumed for the time estimates, in (0, 1].
    pub mfu: f64,
    /// True when the layout was chosen by the planner (no layout flag was given).
    pub layout_chosen: bool,
}

impl Scenario {
    /// Tokens in one optimizer step across all ranks: m · b · dp · s.
    pub fn tokens_per_step(&self) -> f64 {
        self.sequences_per_step() * self.seq_len as f64
    }

    /// Sequences in one optimizer step across all ranks: m · b · dp. In f64, as every product of
    /// the plan's counts: `--micro-batch 18446744073709551615` overflowed them as integers.
    pub fn sequences_per_step(&self) -> f64 {
        self.micro_batches as f64 * self.micro_batch as f64 * self.layout.dp as f64
    }

    /// The same scenario on another layout and memory options, or `None` when the batch cannot be
    /// split over that layout's data-parallel ranks.
    pub fn with(&self, layout: Layout, zero1: bool, recompute: Recompute) -> Option<Scenario> {
        let micro_batches = self
            .batch
            .micro_batches(layout.dp, self.micro_batch, self.seq_len)?;
        Some(Scenario {
            layout,
            zero1,
            recompute,
            micro_batches,
            ..self.clone()
        })
    }
}

/// Why a tensor-parallel degree does not fit the model, or `None` when it does.
pub fn tp_problem(m: &GrokConfig, tp: usize) -> Option<String> {
    if !m.n_q_heads.is_multiple_of(tp) {
        return Some(format!("{tp} does not divide model.n_q_heads = {}", m.n_q_heads));
    }
    if !m.n_kv_heads.is_multiple_of(tp) && !tp.is_multiple_of(m.n_kv_heads) {
        return Some(format!(
            "{tp} neither divides nor is a multiple of model.n_kv_heads = {} (KV heads are split or replicated whole)",
            m.n_kv_heads
        ));
    }
    if !m.ffn_size.is_multiple_of(tp) {
        return Some(format!("{tp} does not divide the expert width {}", m.ffn_size));
    }
    if !m.vocab_size.is_multiple_of(tp) {
        return Some(format!(
            "{tp} does not divide model.vocab_size = {}",
            m.vocab_size
        ));
    }
    None
}

/// Checks a complete layout against the GPU count and the model; the error names the flag at
/// fault and says what would be valid.
pub fn check(m: &GrokConfig, gpus: usize, l: &Layout) -> Result<(), (&'static str, String)> {
    for (flag, v) in [("--dp", l.dp), ("--tp", l.tp), ("--pp", l.pp), ("--ep", l.ep)] {
        if v == 0 {
            return Err((flag, "must be at least 1".into()));
        }
    }
    if l.gpus() != gpus {
        return Err((
            "--dp/--tp/--pp",
            format!(
                "dp {} × tp {} × pp {} = {}, but --gpus is {gpus}",
                l.dp,
                l.tp,
                l.pp,
                l.gpus()
            ),
        ));
    }
    if let Some(why) = tp_problem(m, l.tp) {
        return Err(("--tp", why));
    }
    if l.pp > m.n_layers {
        return Err((
            "--pp",
            format!(
                "{} stages for {} layers; at most one stage per layer",
                l.pp, m.n_layers
            ),
        ));
    }
    if !m.n_experts.is_multiple_of(l.ep) {
        return Err((
            "--ep",
            format!("{} does not divide model.n_experts = {}", l.ep, m.n_experts),
        ));
    }
    if !l.dp.is_multiple_of(l.ep) {
        return Err((
            "--ep",
            format!(
                "{} does not divide dp = {}: experts are sharded inside the data-parallel group",
                l.ep, l.dp
            ),
        ));
    }
    Ok(())
}

/// Every valid layout of `gpus` GPUs for the search: tp within a node (≤ 8), pp up to the layer
/// count, ep every valid value.
pub fn candidates(m: &GrokConfig, gpus: usize) -> Vec<Layout> {
    let mut out = Vec::new();
    for tp in divisors(gpus)
        .into_iter()
        .filter(|&t| t <= GPUS_PER_NODE && tp_problem(m, t).is_none())
    {
        for pp in divisors(gpus / tp).into_iter().filter(|&p| p <= m.n_layers) {
            let dp = gpus / tp / pp;
            for ep in divisors(m.n_experts)
                .into_iter()
                .filter(|&e| dp.is_multiple_of(e))
            {
                out.push(Layout { dp, tp, pp, ep });
            }
        }
    }
    out
}

/// Divisors of n in increasing order (trial division up to √n: n is a GPU count).
pub fn divisors(n: usize) -> Vec<usize> {
    let mut small = Vec::new();
    let mut large = Vec::new();
    let mut i = 1;
    while i * i <= n {
        if n.is_multiple_of(i) {
            small.push(i);
            if i * i != n {
                large.push(n / i);
            }
        }
        i += 1;
    }
    small.extend(large.into_iter().rev());
    small
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::grok1;

    #[test]
    fn divisors_are_sorted_and_complete() {
        assert_eq!(divisors(1), vec![1]);
        assert_eq!(divisors(12), vec![1, 2, 3, 4, 6, 12]);
        assert_eq!(divisors(16), vec![1, 2, 4, 8, 16]);
        assert_eq!(divisors(100_000).len(), 36); // 2⁵·5⁵: 6·6
    }

    #[test]
    fn layout_rules() {
        let m = grok1();
        let ok = Layout::of(16, 8, 8, 8);
        assert_eq!(check(&m, 1024, &ok), Ok(()));
        assert_eq!(check(&m, 1000, &ok).unwrap_err().0, "--dp/--tp/--pp");
        // 48 q heads: tp 5 does not divide them.
        assert_eq!(check(&m, 5, &Layout::of(1, 5, 1, 1)).unwrap_err().0, "--tp");
        // tp 16 > 8 kv heads: replicated, allowed.
        assert_eq!(check(&m, 16, &Layout::of(1, 16, 1, 1)), Ok(()));
        assert_eq!(check(&m, 65, &Layout::of(1, 1, 65, 1)).unwrap_err().0, "--pp");
        assert_eq!(check(&m, 12, &Layout::of(12, 1, 1, 3)).unwrap_err().0, "--ep");
        assert_eq!(check(&m, 4, &Layout::of(4, 1, 1, 8)).unwrap_err().0, "--ep");
        assert_eq!(Layout::of(1, 16, 1, 1).kv_heads_per_rank(8), 1);
        assert_eq!(Layout::of(1, 4, 1, 1).kv_heads_per_rank(8), 2);
        assert_eq!(Layout::of(1, 1, 5, 1).layers_per_stage(64), 13);
    }

    #[test]
    fn global_batch_rounds_up_to_whole_micro_batches() {
        let g = BatchSpec::Global {
            tokens: 1000.0 * 4096.0,
        };
        // 1000 sequences over 100 ranks × 2 sequences = 5 micro-batches.
        assert_eq!(g.micro_batches(100, 2, 4096), Some(5));
        // 1000 sequences over 300 ranks × 1 = 3.33 → 4 (1200 sequences run).
        assert_eq!(g.micro_batches(300, 1, 4096), Some(4));
        // Fewer sequences than ranks.
        assert_eq!(g.micro_batches(2000, 1, 4096), None);
        assert_eq!(
            BatchSpec::PerRank { micro_batches: 3 }.micro_batches(7, 1, 1),
            Some(3)
        );
    }

    #[test]
    fn candidates_are_all_valid() {
        let m = grok1();
        let c = candidates(&m, 64);
        assert!(!c.is_empty());
        for l in &c {
            assert_eq!(check(&m, 64, l), Ok(()), "{l}");
        }
        assert!(c.contains(&Layout::of(8, 8, 1, 8)));
    }
}
