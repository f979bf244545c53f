//! The YAML file, mirrored field for field: every key optional (a preset fills the rest), unknown
//! keys rejected, enums instead of strings. Nothing here is validated; `resolve` does that.

use serde::{Deserialize, Serialize};

/// Which compute backend runs the model. Each is a cargo feature; see `crate::backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Cpu,
    Wgpu,
    Cuda,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }
}

/// Arithmetic precision of the matrix products (`model::precision`). Weights, optimizer state,
/// norms, softmax, router and loss are f32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Mixed precision: bf16 inputs to every matmul (f32 accumulation), f32 master weights.
    Bf16,
    /// Mixed precision as bf16 but with f16 inputs, for devices without bf16 (most wgpu
    /// adapters): f16 has 3 more significant bits and a far narrower range, so the loss is
    /// scaled to keep small gradients from underflowing (`train::loss_scale`).
    F16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }
}

/// How the GPU backends compute the attention core `softmax(capped q·kᵀ) · v` (`model::flash`).
/// The same function either way; the CPU backend always runs its blockwise kernel, which is
/// flash-style already (`colossus_kernels::attention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AttentionKernel {
    /// Matrix products around the soft-capped softmax kernel; the probabilities are kept for
    /// the backward.
    #[default]
    Composed,
    /// One flash kernel forward (no stored probabilities), a backward that recomputes them.
    Flash,
}

impl AttentionKernel {
    pub fn name(self) -> &'static str {
        match self {
            AttentionKernel::Composed => "composed",
            AttentionKernel::Flash => "flash",
        }
    }
}

/// The named starting points in `config::preset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PresetName {
    Tiny,
    Small,
    #[serde(rename = "gpu-350m")]
    Gpu350m,
    #[serde(rename = "grok-1")]
    Grok1,
}

impl PresetName {
    pub fn name(self) -> &'static str {
        match self {
            PresetName::Tiny => "tiny",
            PresetName::Small => "small",
            PresetName::Gpu350m => "gpu-350m",
            PresetName::Grok1 => "grok-1",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of config keys (preset, model, data, train, ...)"
)]
pub struct FileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<PresetName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendKind>,
    /// Device index within the backend (GPU ordinal); ignored on CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<usize>,
    /// Defaults to bf16 on `cuda` and f32 elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// `composed` (the default) or `flash`; GPU backends only (`AttentionKernel`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention: Option<AttentionKernel>,
    #[serde(default)]
    pub model: ModelFile,
    #[serde(default)]
    pub data: DataFile,
    #[serde(default)]
    pub train: TrainFile,
    #[serde(default)]
    pub distributed: DistributedFile,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of `model` keys")]
pub struct ModelFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d_model: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_layers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_q_heads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_kv_heads: Option<usize>,
    /// Defaults to d_model / n_q_heads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_experts: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// Expert width is round_up_8(int(widening * d_model) * 2 // 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub widening: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_seq_len: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// Attention logits are soft-capped to cap·tanh(x/cap); 0 turns the cap off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attn_softcap: Option<f64>,
    /// Defaults to 1/sqrt(head_dim).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attn_output_multiplier: Option<f64>,
    /// Defaults to sqrt(d_model), as in Grok-1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_multiplier: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_multiplier: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub norm_eps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_std: Option<f64>,
    /// Weight of the switch-style load-balancing loss; 0 (Grok-1) reports it without training on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_loss_coef: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of `data` keys")]
pub struct DataFile {
    /// Text files or directories of `.txt` files: a list, or one path written as a string.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "one_or_many"
    )]
    pub corpus: Option<Vec<String>>,
    /// A Hugging Face tokenizer.json; without one a byte-level BPE is trained on the corpus.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq_len: Option<usize>,
    /// A directory written by `colossus prepare` (manifest.json + shards); when set it is trained
    /// on instead of `corpus`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<String>,
    /// The field of each JSONL line that holds the document text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jsonl_field: Option<String>,
    /// The tokenizer's end-of-text token, placed between documents and where `generate` stops
    /// (default `<|endoftext|>`, the trained BPE's; a given tokenizer may name its own, `</s>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eot_token: Option<String>,
    /// Tokens per shard file when preparing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard_tokens: Option<u64>,
    /// Share of the token stream held out for validation (blocks of 4096 tokens, spread evenly).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_fraction: Option<f64>,
    /// Let a training sample span two shards (default: never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_shards: Option<bool>,
    /// Read every shard's payload to check its CRC-32 when a run opens the data (default true).
    /// Headers, sizes and token counts are always checked; at terabyte scale, verify once with
    /// `colossus prepare` and turn this off so each start does not read the whole dataset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_checksums: Option<bool>,
    /// Skip (and count) bad documents instead of stopping: invalid UTF-8, empty files, JSONL
    /// lines that are not JSON or lack the text field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_bad: Option<bool>,
    /// Where a raw-text corpus is prepared and cached (default `<train.out_dir>/.cache/data`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of `train` keys")]
pub struct TrainFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub micro_batch: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_accum: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_lr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta2: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Global gradient-norm clip; 0 turns clipping off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_clip: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_every: Option<usize>,
    /// Save a checkpoint every N steps (0: only at the end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_dir: Option<String>,
    /// `never` (default), `auto` (continue from the run's newest complete checkpoint if there is
    /// one), or the path of a checkpoint directory to continue from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
    /// Keep only the newest N checkpoints (0: keep all). Older ones go only after a newer one
    /// is complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<usize>,
    /// Stop the run after this many consecutive steps with a non-finite loss or gradient norm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_nonfinite_steps: Option<usize>,
    /// The device's peak TFLOP/s for MFU; 0 measures it on CPU (GPUs: no MFU unless set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_tflops: Option<f64>,
    /// `precision: f16` only: the loss scale the run starts with, a power of two (default 2¹⁶,
    /// torch.amp's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_scale_init: Option<f64>,
    /// `precision: f16` only: the loss scale doubles after this many steps in a row without a
    /// gradient overflow (default 2000, torch.amp's); an overflow halves it and skips the step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_scale_growth_interval: Option<usize>,
    /// Mean validation loss every N steps (0: never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<usize>,
    /// Micro-batches in the fixed validation set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_batches: Option<usize>,
    /// `backend: cpu` only: each micro-batch's rows are split into this many shards whose
    /// forward and backward passes run at once, one per share of the cores (`dist::workers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_workers: Option<usize>,
}

/// Data-parallel training (`src/dist/`). Environment variables (RANK, WORLD_SIZE, LOCAL_RANK,
/// MASTER_ADDR, MASTER_PORT, NODE_ADDR) lay over the file and `--world-size`-style flags over both.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of `distributed` keys")]
pub struct DistributedFile {
    /// Ranks in the job (devices, each holding a full model replica).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub world_size: Option<usize>,
    /// This process's (first) rank.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    /// Ranks this process runs, one thread each (ranks rank .. rank + local_ranks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_ranks: Option<usize>,
    /// Host of rank 0's process, where burn-collective's global orchestrator listens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_addr: Option<String>,
    /// The orchestrator's port; process p serves tensors on master_port + 1 + p.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_port: Option<u16>,
    /// This process's address as the other processes reach it (default: master_addr when that is
    /// a loopback address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_addr: Option<String>,
    /// Seconds a collective operation may wait for the other ranks before the run stops with
    /// an error naming the missing ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
    /// Gradients are all-reduced in buckets of at most this many MB (one collective call each).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket_mb: Option<f64>,
    /// ZeRO-1: each rank keeps the AdamW moments of only its share of the parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero1: Option<bool>,
}

/// `a.overlay(b)`: every key set in `b` replaces the one in `a`.
pub trait Overlay {
    fn overlay(self, top: Self) -> Self;
}

macro_rules! overlay_fields {
    ($ty:ty { $($field:ident),* $(,)? }) => {
        impl Overlay for $ty {
            fn overlay(self, top: Self) -> Self {
                Self { $($field: top.$field.or(self.$field)),* }
            }
        }
    };
}

overlay_fields!(ModelFile {
    vocab_size,
    d_model,
    n_layers,
    n_q_heads,
    n_kv_heads,
    head_dim,
    n_experts,
    top_k,
    widening,
    max_seq_len,
    rope_theta,
    attn_softcap,
    attn_output_multiplier,
    embedding_multiplier,
    output_multiplier,
    norm_eps,
    init_std,
    aux_loss_coef,
});
overlay_fields!(DataFile {
    corpus,
    tokenizer,
    seq_len,
    shards,
    jsonl_field,
    eot_token,
    shard_tokens,
    val_fraction,
    cross_shards,
    verify_checksums,
    skip_bad,
    cache_dir,
});
overlay_fields!(TrainFile {
    steps,
    micro_batch,
    grad_accum,
    lr,
    min_lr,
    warmup_steps,
    beta1,
    beta2,
    eps,
    weight_decay,
    grad_clip,
    log_every,
    checkpoint_every,
    out_dir,
    resume,
    keep_last,
    max_nonfinite_steps,
    peak_tflops,
    loss_scale_init,
    loss_scale_growth_interval,
    eval_every,
    eval_batches,
    cpu_workers,
});

overlay_fields!(DistributedFile {
    world_size,
    rank,
    local_ranks,
    master_addr,
    master_port,
    node_addr,
    timeout_s,
    bucket_mb,
    zero1,
});

impl Overlay for FileConfig {
    fn overlay(self, top: Self) -> Self {
        FileConfig {
            preset: top.preset.or(self.preset),
            run_name: top.run_name.or(self.run_name),
            seed: top.seed.or(self.seed),
            backend: top.backend.or(self.backend),
            device: top.device.or(self.device),
            precision: top.precision.or(self.precision),
            attention: top.attention.or(self.attention),
            model: self.model.overlay(top.model),
            data: self.data.overlay(top.data),
            train: self.train.overlay(top.train),
            distributed: self.distributed.overlay(top.distributed),
        }
    }
}

/// `corpus: notes.txt` as well as `corpus: [notes.txt, more/]`: a lone path is a list of one.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "expected a path or a list of paths")]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(Some(match OneOrMany::deserialize(d)? {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(ps) => ps,
    }))
}
