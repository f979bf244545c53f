//! `colossus import`: a Hugging Face `Grok1ForCausalLM` folder (ours or another tool's; f32, bf16
//! or f16; one file or index-sharded) → a Colossus checkpoint directory that `generate`, `eval`
//! and training accept. Every tensor is checked by name and shape; unknown, missing or mis-shaped
//! tensors are errors that name the file and tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use super::hf;
use super::tensors::MappedFile;
use super::{CONFIG_FILE, TOKENIZER_FILE};
use crate::config::{self, Config};
use crate::data::tokenizer;
use crate::error::{Error, Result};
use crate::model::GrokConfig;
use crate::train::params::{ParamInfo, list_from_config};

/// A model read from a Hugging Face folder, in our layout.
pub struct Imported {
    pub model: GrokConfig,
    pub tokenizer: tokenizers::Tokenizer,
    /// The end-of-text token (config.json's `eos_token_id`) and its id.
    pub eot: (String, u32),
    pub params: Vec<ParamInfo>,
    /// One f32 vector per parameter, in `params` order.
    pub values: Vec<Vec<f32>>,
}

/// Read config.json into a model config. Missing required keys and unsupported variants
/// (untied embeddings, router soft cap) are errors naming the key.
pub fn model_config(path: &Path) -> Result<GrokConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::input(path, format!("cannot read: {e}")))?;
    let c: Value = serde_json::from_str(&text).map_err(|e| Error::input(path, format!("not JSON: {e}")))?;
    // Another architecture's folder would fail later on a tensor name; say what it is instead.
    if let Some(archs) = c.get("architectures").and_then(Value::as_array)
        && !archs
            .iter()
            .any(|a| a.as_str().is_some_and(|a| a.starts_with("Grok1")))
    {
        return Err(Error::input(
            path,
            format!(
                "key `architectures` is {}; expected [\"Grok1ForCausalLM\"]",
                Value::Array(archs.clone())
            ),
        ));
    }
    // Every integer here is a count or a width: 0 would divide by zero or build an empty model.
    let int = |key: &str| -> Result<usize> {
        c.get(key)
            .and_then(Value::as_u64)
            .filter(|&v| v > 0)
            .map(|v| v as usize)
            .ok_or_else(|| Error::input(path, format!("key `{key}` is missing or not a positive integer")))
    };
    let float = |key: &str, default: f64| -> Result<f64> {
        match c.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| Error::input(path, format!("key `{key}` is not a number"))),
        }
    };
    let (d, nq) = (int("hidden_size")?, int("num_attention_heads")?);
    let head_dim = match c.get("head_dim") {
        Some(_) => int("head_dim")?,
        None => d / nq,
    };
    if float("router_logit_softcapping", 0.0)? != 0.0 {
        return Err(Error::input(
            path,
            "key `router_logit_softcapping` is non-zero: a Grok-2 router, not supported",
        ));
    }
    // Plain RoPE only: a scaled one (linear, NTK, YaRN) would be read as plain and put every
    // position past the original context in the wrong place, without a word.
    if let Some(scaling) = c.get("rope_scaling").filter(|v| !v.is_null()) {
        return Err(Error::input(
            path,
            format!("key `rope_scaling` is {scaling}: scaled RoPE is not supported"),
        ));
    }
    match c.get("tie_word_embeddings") {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            return Err(Error::input(
                path,
                "key `tie_word_embeddings` is false: untied embeddings are not supported",
            ));
        }
        // Read as Python reads it, `0` or `""` unties them in transformers and vLLM; any value but
        // a boolean was taken as tied (found 2026-12-07).
        Some(other) => {
            return Err(Error::input(
                path,
                format!("key `tie_word_embeddings` is {other}; expected true"),
            ));
        }
    }
    let ffn = int("intermediate_size")?;
    let m = GrokConfig {
        vocab_size: int("vocab_size")?,
        d_model: d,
        n_layers: int("num_hidden_layers")?,
        n_q_heads: nq,
        n_kv_heads: int("num_key_value_heads")?,
        head_dim,
        n_experts: int("num_local_experts")?,
        top_k: int("num_experts_per_tok")?,
        // Informational only: the width itself is stored.
        widening: ffn as f64 * 1.5 / d as f64,
        ffn_size: ffn,
        max_seq_len: match c.get("max_position_embeddings") {
            None | Some(Value::Null) => 8192,
            Some(_) => int("max_position_embeddings")?,
        },
        rope_theta: float("rope_theta", 10_000.0)?,
        attn_softcap: float("attn_logit_softcapping", 30.0)?,
        attn_output_multiplier: float("attn_output_multiplier", (1.0 / head_dim as f64).sqrt())?,
        embedding_multiplier: float("embedding_multiplier_scale", 1.0)?,
        output_multiplier: float("output_multiplier_scale", 1.0)?,
        norm_eps: float("rms_norm_eps", 1e-5)?,
        init_std: 0.02,
        aux_loss_coef: 0.0,
    };
    for (key, v) in [("rope_theta", m.rope_theta), ("rms_norm_eps", m.norm_eps)] {
        if !(v > 0.0 && v.is_finite()) {
            return Err(Error::input(
                path,
                format!("key `{key}` is {v}; expected a positive number"),
            ));
        }
    }
    if !(m.attn_softcap >= 0.0 && m.attn_softcap.is_finite()) {
        return Err(Error::input(
            path,
            format!(
                "key `attn_logit_softcapping` is {}; expected 0 (off) or a positive number",
                m.attn_softcap
            ),
        ));
    }
    if !m.n_q_heads.is_multiple_of(m.n_kv_heads) || m.top_k > m.n_experts || !m.head_dim.is_multiple_of(2) {
        return Err(Error::input(
            path,
            "inconsistent shape: heads, experts or head_dim do not fit together",
        ));
    }
    Ok(m)
}

/// The safetensors files of a folder: through model.safetensors.index.json when present.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    let mut files: Vec<PathBuf> = if index.is_file() {
        let text =
            std::fs::read_to_string(&index).map_err(|e| Error::input(&index, format!("cannot read: {e}")))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| Error::input(&index, format!("not JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::input(&index, "key `weight_map` is missing"))?;
        let mut names: Vec<String> = map
            .values()
            .filter_map(|f| f.as_str().map(String::from))
            .collect();
        names.sort();
        names.dedup();
        names.into_iter().map(|n| dir.join(n)).collect()
    } else {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::input(dir, format!("cannot list: {e}")))?;
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect()
    };
    files.sort();
    if files.is_empty() {
        return Err(Error::input(dir, "no .safetensors files"));
    }
    Ok(files)
}

/// Read a Hugging Face folder into memory, in our parameter layout.
pub fn read(dir: &Path) -> Result<Imported> {
    let model = model_config(&dir.join(CONFIG_FILE))?;
    let tok = tokenizer::load(
        &dir.join(TOKENIZER_FILE),
        model.vocab_size,
        &format!("{CONFIG_FILE}'s vocab_size"),
    )?;
    let eot = end_of_text(&dir.join(CONFIG_FILE), &tok, &dir.join(TOKENIZER_FILE))?;
    // Listed once: with an index, each listing reads and parses it.
    let paths = weight_files(dir)?;
    // bf16 and f16 are the narrowest weights an HF folder of this layout holds.
    super::check_config_fits_weights(&model, &dir.join(CONFIG_FILE), &paths, 2)?;
    let params = list_from_config(&model);
    let files: Vec<MappedFile> = paths.iter().map(|f| MappedFile::open(f)).collect::<Result<_>>()?;
    let mut owner: HashMap<String, (usize, Vec<usize>)> = HashMap::new();
    for (i, (f, path)) in files.iter().zip(&paths).enumerate() {
        for (name, shape) in f.shapes()? {
            if let Some((j, _)) = owner.insert(name.clone(), (i, shape)) {
                let other = &paths[j];
                return Err(Error::input(
                    path,
                    format!("tensor `{name}` also appears in {}", other.display()),
                ));
            }
        }
    }
    let mut values = Vec::with_capacity(params.len());
    for p in &params {
        let (name, transposed) = hf::hf_name(&p.path);
        let Some((i, shape)) = owner.remove(&name) else {
            return Err(Error::input(dir, format!("tensor `{name}` is missing")));
        };
        let want: Vec<usize> = if transposed {
            vec![p.shape[1], p.shape[0]]
        } else {
            p.shape.clone()
        };
        if shape != want {
            return Err(Error::input(
                paths[i].clone(),
                format!("tensor `{name}` has shape {shape:?}; config.json implies {want:?}"),
            ));
        }
        let (_, v) = files[i].read_f32(&name)?;
        let converted = hf::from_hf(std::slice::from_ref(p), HashMap::from([(name, (shape, v))]));
        let (_, v) = converted.into_values().next().expect("one tensor");
        values.push(v);
    }
    if let Some((name, (i, _))) = owner.into_iter().min_by(|a, b| a.0.cmp(&b.0)) {
        return Err(Error::input(
            paths[i].clone(),
            format!("tensor `{name}` does not belong to a Grok-1 model"),
        ));
    }
    Ok(Imported {
        model,
        tokenizer: tok,
        eot,
        params,
        values,
    })
}

/// The end-of-text token of a folder: the one config.json's `eos_token_id` names (a folder from
/// another tool may end documents with `</s>`; of a list, the first), else the tokenizer's
/// `<|endoftext|>`.
fn end_of_text(config: &Path, tok: &tokenizers::Tokenizer, tok_path: &Path) -> Result<(String, u32)> {
    let text =
        std::fs::read_to_string(config).map_err(|e| Error::input(config, format!("cannot read: {e}")))?;
    let c: Value = serde_json::from_str(&text).map_err(|e| Error::input(config, format!("not JSON: {e}")))?;
    let named = c
        .get("eos_token_id")
        .and_then(|v| v.as_u64().or_else(|| v.as_array()?.first()?.as_u64()));
    if let Some(id) = named.and_then(|id| u32::try_from(id).ok())
        && let Some(name) = tok.id_to_token(id)
    {
        return Ok((name, id));
    }
    if let Some(id) = tok.token_to_id(tokenizer::EOT) {
        return Ok((tokenizer::EOT.to_string(), id));
    }
    let why = match named {
        Some(id) => format!("{CONFIG_FILE}'s eos_token_id {id} is not one of its ids"),
        None => format!("{CONFIG_FILE} has no eos_token_id"),
    };
    Err(Error::input(
        tok_path,
        format!(
            "no end-of-text token: {why}, and it has no `{}`; expected eos_token_id to give the id \
             it ends documents with",
            tokenizer::EOT
        ),
    ))
}

/// Import `dir` into a new checkpoint directory `out`.
pub fn import(dir: &Path, out: &Path) -> Result<PathBuf> {
    import_or_stop(dir, out, None)
}

/// `import`, ended by a set `stop` (a signal handler's) after reading the folder or after
/// writing the weights, with nothing left behind (`Error::Interrupted`).
pub fn import_or_stop(dir: &Path, out: &Path, stop: Option<&AtomicBool>) -> Result<PathBuf> {
    if out.exists() {
        return Err(Error::input(out, "already exists; choose a new output directory"));
    }
    let imported = read(dir)?;
    if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
        return Err(Error::Interrupted(format!(
            "importing {}: stopped after reading it; nothing is written",
            dir.display()
        )));
    }
    let mut cfg = config_for(&imported.model, out);
    cfg.data.eot_token = imported.eot.0.clone();
    super::write_dir(
        out,
        &cfg,
        &imported.params,
        &imported.values,
        &imported.tokenizer,
        0,
        stop,
    )
}

/// A full run config around an imported model: the `small` preset's training settings, which a
/// fine-tuning run overrides as usual.
pub fn config_for(model: &GrokConfig, out: &Path) -> Config {
    let mut cfg = config::from_yaml("preset: small\n", "(import)", &[]).expect("the small preset is valid");
    cfg.model = model.clone();
    cfg.data.seq_len = cfg.data.seq_len.min(model.max_seq_len);
    cfg.run_name = out
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("imported")
        .to_string();
    cfg
}
