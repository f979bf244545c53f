//! The Hugging Face / SGLang `Grok1ForCausalLM` layout: tensor names, `[out, in]` matrices and
//! config.json keys (shared/reference/grok1-architecture.md). Our parameter paths map onto it
//! one to one; only linear weights are transposed (burn keeps them `[in, out]`).

use std::collections::HashMap;

use serde_json::json;

use crate::model::GrokConfig;
use crate::train::params::ParamInfo;

/// Our parameter path → (HF tensor name, transpose?).
pub fn hf_name(path: &str) -> (String, bool) {
    match path {
        "embed_tokens" => ("model.embed_tokens.weight".into(), false),
        "norm.weight" => ("model.norm.weight".into(), false),
        p if p.ends_with("norm.weight") => (format!("model.{p}"), false),
        p => (format!("model.{p}.weight"), true),
    }
}

/// The config.json an inference engine needs to rebuild exactly this model.
pub fn config_json(c: &GrokConfig, bos: u32, eos: u32, pad: u32) -> serde_json::Value {
    json!({
        "architectures": ["Grok1ForCausalLM"],
        "model_type": "grok-1",
        "vocab_size": c.vocab_size,
        "hidden_size": c.d_model,
        "intermediate_size": c.ffn_size,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_q_heads,
        "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_dim,
        "num_local_experts": c.n_experts,
        "num_experts_per_tok": c.top_k,
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,
        "max_position_embeddings": c.max_seq_len,
        "embedding_multiplier_scale": c.embedding_multiplier,
        "output_multiplier_scale": c.output_multiplier,
        "attn_output_multiplier": c.attn_output_multiplier,
        "attn_logit_softcapping": c.attn_softcap,
        "router_logit_softcapping": 0.0,
        "tie_word_embeddings": true,
        "torch_dtype": "float32",
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
    })
}

fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// Our tensors (burn layout) → HF-named tensors in `[out, in]` layout.
pub fn to_hf(params: &[ParamInfo], values: Vec<Vec<f32>>) -> Vec<(ParamInfo, Vec<f32>)> {
    params
        .iter()
        .zip(values)
        .map(|(p, v)| {
            let (name, t) = hf_name(&p.path);
            if t {
                let (rows, cols) = (p.shape[0], p.shape[1]);
                let info = ParamInfo {
                    path: name,
                    shape: vec![cols, rows],
                    decay: p.decay,
                };
                (info, transpose(&v, rows, cols))
            } else {
                (
                    ParamInfo {
                        path: name,
                        shape: p.shape.clone(),
                        decay: p.decay,
                    },
                    v,
                )
            }
        })
        .collect()
}

/// HF-named tensors → our paths and layout, for `checkpoint::weights::load_into`. Tensors are
/// keyed by HF name; anything unknown stays under its own name so the loader reports it.
pub fn from_hf(
    params: &[ParamInfo],
    mut tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let mut out = HashMap::new();
    for p in params {
        let (name, t) = hf_name(&p.path);
        if let Some((shape, v)) = tensors.remove(&name) {
            if t && shape.len() == 2 {
                let (rows, cols) = (shape[0], shape[1]);
                out.insert(p.path.clone(), (vec![cols, rows], transpose(&v, rows, cols)));
            } else {
                out.insert(p.path.clone(), (shape, v));
            }
        }
    }
    out.extend(tensors);
    out
}
