//! Named presets. Each starts from `base()` (the released Grok-1 hyper-parameters and our training
//! defaults) and changes only what its size needs; a YAML file then overrides the preset.

use super::file::{BackendKind, DataFile, DistributedFile, FileConfig, ModelFile, PresetName, TrainFile};

/// Grok-1 as released (shared/reference/grok1-architecture.md) plus training defaults. Multipliers
/// that scale with shape (embedding ×√d, attention ×1/√head_dim, head_dim = d/n_q_heads) stay unset
/// so they follow the size.
fn base() -> FileConfig {
    FileConfig {
        preset: None,
        run_name: None,
        seed: Some(1234),
        backend: Some(BackendKind::Cpu),
        device: Some(0),
        // Unset: resolution picks bf16 on cuda and f32 elsewhere, following the backend.
        precision: None,
        // Unset: the composed attention core until the flash kernel is measured on a GPU.
        attention: None,
        model: ModelFile {
            vocab_size: Some(131_072),
            d_model: Some(6144),
            n_layers: Some(64),
            n_q_heads: Some(48),
            n_kv_heads: Some(8),
            head_dim: None,
            n_experts: Some(8),
            top_k: Some(2),
            widening: Some(8.0),
            max_seq_len: Some(8192),
            rope_theta: Some(10_000.0),
            attn_softcap: Some(30.0),
            attn_output_multiplier: None,
            embedding_multiplier: None,
            output_multiplier: Some(0.577_350_269_189_625_7),
            norm_eps: Some(1e-5),
            init_std: Some(0.02),
            aux_loss_coef: Some(0.0),
        },
        data: DataFile {
            corpus: Some(vec!["data/shakespeare".to_string()]),
            tokenizer: None,
            seq_len: Some(8192),
            shards: None,
            jsonl_field: Some(crate::data::DEFAULT_JSONL_FIELD.to_string()),
            eot_token: Some(crate::data::tokenizer::EOT.to_string()),
            shard_tokens: Some(crate::data::DEFAULT_SHARD_TOKENS),
            val_fraction: Some(0.01),
            cross_shards: Some(false),
            verify_checksums: Some(true),
            skip_bad: Some(false),
            cache_dir: None,
        },
        train: TrainFile {
            steps: Some(1000),
            micro_batch: Some(8),
            grad_accum: Some(1),
            lr: Some(3e-4),
            min_lr: Some(3e-5),
            warmup_steps: Some(100),
            beta1: Some(0.9),
            beta2: Some(0.95),
            eps: Some(1e-8),
            weight_decay: Some(0.1),
            grad_clip: Some(1.0),
            log_every: Some(10),
            checkpoint_every: Some(0),
            out_dir: Some("checkpoints".to_string()),
            resume: Some("never".to_string()),
            keep_last: Some(0),
            max_nonfinite_steps: Some(5),
            peak_tflops: Some(0.0),
            loss_scale_init: Some(65536.0),
            loss_scale_growth_interval: Some(2000),
            eval_every: Some(0),
            eval_batches: Some(8),
            cpu_workers: Some(2),
        },
        distributed: DistributedFile {
            world_size: Some(1),
            rank: Some(0),
            local_ranks: Some(1),
            master_addr: Some("127.0.0.1".to_string()),
            master_port: Some(29500),
            node_addr: None,
            timeout_s: Some(60.0),
            bucket_mb: Some(25.0),
            zero1: Some(false),
        },
    }
}

/// The preset's full set of keys, before the file's own keys are laid over it.
pub fn preset(name: PresetName) -> FileConfig {
    let mut c = base();
    c.preset = Some(name);
    let (m, d, t) = (&mut c.model, &mut c.data, &mut c.train);
    match name {
        // CI-sized: a few seconds a step is too slow, so everything is small but every feature
        // (GQA, MoE routing, soft cap) is still exercised.
        PresetName::Tiny => {
            c.run_name = Some("tiny".into());
            (m.vocab_size, m.d_model, m.n_layers) = (Some(512), Some(64), Some(2));
            (m.n_q_heads, m.n_kv_heads) = (Some(4), Some(2));
            (m.n_experts, m.widening, m.max_seq_len) = (Some(4), Some(2.0), Some(64));
            d.seq_len = Some(64);
            (t.steps, t.micro_batch, t.lr, t.min_lr, t.warmup_steps) =
                (Some(60), Some(8), Some(3e-3), Some(3e-4), Some(10));
        }
        // The README's default run: ~17M parameters (5M active) that learn to write
        // Shakespeare-shaped text in a few minutes on two cores.
        PresetName::Small => {
            c.run_name = Some("small".into());
            (m.vocab_size, m.d_model, m.n_layers) = (Some(4096), Some(256), Some(4));
            (m.n_q_heads, m.n_kv_heads) = (Some(8), Some(2));
            (m.n_experts, m.widening, m.max_seq_len) = (Some(8), Some(4.0), Some(256));
            d.seq_len = Some(128);
            (t.steps, t.micro_batch, t.lr, t.min_lr, t.warmup_steps) =
                (Some(200), Some(16), Some(2e-3), Some(2e-4), Some(20));
            (t.log_every, t.checkpoint_every) = (Some(10), Some(100));
            // ~2% of Shakespeare's ~370K tokens: 8K held-out tokens, 4 batches of 16×128.
            d.val_fraction = Some(0.02);
            (t.eval_every, t.eval_batches) = (Some(50), Some(4));
        }
        // One-GPU scale: ~370M parameters, ~140M active per token.
        PresetName::Gpu350m => {
            c.run_name = Some("gpu-350m".into());
            (m.vocab_size, m.d_model, m.n_layers) = (Some(32_768), Some(1024), Some(12));
            (m.n_q_heads, m.n_kv_heads) = (Some(16), Some(4));
            (m.n_experts, m.widening, m.max_seq_len) = (Some(8), Some(1.5), Some(2048));
            d.seq_len = Some(1024);
            (t.steps, t.micro_batch, t.lr, t.min_lr, t.warmup_steps) =
                (Some(5000), Some(16), Some(6e-4), Some(6e-5), Some(200));
            (t.log_every, t.checkpoint_every) = (Some(10), Some(500));
            (t.eval_every, t.eval_batches) = (Some(500), Some(16));
        }
        // The released shape: ≈316B parameters, ≈84B active.
        PresetName::Grok1 => {
            c.run_name = Some("grok-1".into());
            m.embedding_multiplier = Some(78.383_671_769_061_69);
            c.backend = Some(BackendKind::Cuda);
        }
    }
    c
}
