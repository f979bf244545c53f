//! `colossus export`: a Colossus checkpoint → a Hugging Face `Grok1ForCausalLM` folder that
//! SGLang, vLLM and plain PyTorch load: config.json, model.safetensors (or numbered shards plus
//! model.safetensors.index.json above the shard limit), tokenizer files, generation_config.json.
//! Streams one tensor at a time from the memory-mapped checkpoint, so memory stays near one
//! output shard, never two copies of the model.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use super::atomic::StagedDir;
use super::hf;
use super::tensors::{MappedFile, StoreDtype, natural_key, serialize};
use super::{CONFIG_FILE, FORMAT_VERSION, TOKENIZER_FILE, WEIGHTS_FILE, read_config, read_tokenizer};
use crate::data::tokenizer;
use crate::error::{Error, Result};
use crate::train::params::list_from_config;

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub dtype: StoreDtype,
    /// Start a new shard before a file would exceed this many bytes of tensor data.
    pub max_shard_bytes: u64,
    /// Set by a signal handler: stop at the next tensor or shard, removing the partial folder.
    pub stop: Option<Arc<AtomicBool>>,
}

#[derive(Debug, Clone)]
pub struct ExportSummary {
    pub dir: PathBuf,
    pub shards: usize,
    pub tensors: usize,
    pub bytes: u64,
}

/// Export checkpoint directory `ckpt` to a new folder `out`.
pub fn export(ckpt: &Path, out: &Path, opts: &ExportOptions) -> Result<ExportSummary> {
    if out.exists() {
        return Err(Error::input(out, "already exists; choose a new output directory"));
    }
    let cfg = read_config(ckpt)?;
    let (tok, eot) = read_tokenizer(ckpt, &cfg)?;
    let weights = MappedFile::open(&ckpt.join(WEIGHTS_FILE))?;
    let version = weights.metadata().get("format_version").cloned();
    if version.as_deref() != Some(&FORMAT_VERSION.to_string()) {
        return Err(Error::input(
            ckpt.join(WEIGHTS_FILE),
            format!("format_version {version:?}; this build reads version {FORMAT_VERSION}"),
        ));
    }
    let shapes = weights.shapes()?;
    super::check_weights_file(ckpt, &cfg)?;
    let params = list_from_config(&cfg.model);
    for p in &params {
        match shapes.get(&p.path) {
            Some(s) if *s == p.shape => {}
            Some(s) => {
                return Err(Error::input(
                    ckpt.join(WEIGHTS_FILE),
                    format!(
                        "tensor `{}` has shape {s:?}; its config expects {:?}",
                        p.path, p.shape
                    ),
                ));
            }
            None => {
                return Err(Error::input(
                    ckpt.join(WEIGHTS_FILE),
                    format!("tensor `{}` is missing", p.path),
                ));
            }
        }
    }

    // Plan shards from the header alone, so each file's name can carry the shard count.
    let mut order: Vec<_> = params.iter().map(|p| (hf::hf_name(&p.path).0, p)).collect();
    order.sort_by_key(|(name, _)| natural_key(name));
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut current = 0u64;
    for (i, (_, p)) in order.iter().enumerate() {
        let size = (p.numel() * opts.dtype.bytes()) as u64;
        if current > 0 && current + size > opts.max_shard_bytes {
            shards.push(Vec::new());
            current = 0;
        }
        shards.last_mut().expect("non-empty").push(i);
        current += size;
    }
    let n = shards.len();
    let file_name = |k: usize| {
        if n == 1 {
            WEIGHTS_FILE.to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", k + 1)
        }
    };

    let staged = StagedDir::new(out)?;
    // Returning drops `staged`, which removes it. Checked before each tensor and once after the
    // last shard; a shard is written whole between two checks: up to --max-shard-size-mb,
    // seconds on a local disk.
    let stopped = |done: usize| -> Result<()> {
        if opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
            return Err(Error::Interrupted(format!(
                "exporting to {}: stopped after {done} of {n} shard(s); the partial folder is removed",
                out.display()
            )));
        }
        Ok(())
    };
    let mut weight_map = BTreeMap::new();
    let mut total = 0u64;
    for (k, members) in shards.iter().enumerate() {
        let mut tensors = Vec::with_capacity(members.len());
        for &i in members {
            stopped(k)?;
            let (name, p) = &order[i];
            let (_, values) = weights.read_f32(&p.path)?;
            let converted = hf::to_hf(std::slice::from_ref(*p), vec![values]);
            let (info, values) = converted.into_iter().next().expect("one tensor");
            // An engine would load these silently and serve NaN; refused before the folder exists.
            if let Some((at, v)) = opts.dtype.first_unrepresentable(&values) {
                let why = if v.is_finite() {
                    format!(
                        "{v} is past {}'s range; export with --dtype bf16 or f32",
                        opts.dtype.torch_name()
                    )
                } else {
                    "the weights are not finite; export an earlier checkpoint".to_string()
                };
                return Err(Error::input(
                    ckpt.join(WEIGHTS_FILE),
                    format!("tensor `{}` element {at}: {why}", p.path),
                ));
            }
            let bytes = opts.dtype.encode(&values);
            total += bytes.len() as u64;
            weight_map.insert(name.clone(), file_name(k));
            tensors.push((name.clone(), info.shape, bytes));
        }
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        staged.write(
            &file_name(k),
            &serialize(&tensors, opts.dtype.safetensors(), meta)?,
        )?;
        super::test_pause();
    }
    stopped(n)?;
    if n > 1 {
        let index = json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
        staged.write(
            "model.safetensors.index.json",
            serde_json::to_string_pretty(&index).expect("json").as_bytes(),
        )?;
    }

    let [bos, eos, pad] = special_tokens(&tok, (&cfg.data.eot_token, eot));
    let mut config = hf::config_json(&cfg.model, bos.1, eos.1, pad.1);
    config["torch_dtype"] = json!(opts.dtype.torch_name());
    staged.write(
        CONFIG_FILE,
        serde_json::to_string_pretty(&config).expect("json").as_bytes(),
    )?;
    let tok_json = tok
        .to_string(false)
        .map_err(|e| Error::Train(format!("serializing the tokenizer: {e}")))?;
    staged.write(TOKENIZER_FILE, tok_json.as_bytes())?;
    let tok_config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos.0,
        "eos_token": eos.0,
        "pad_token": pad.0,
        "model_max_length": cfg.model.max_seq_len,
        "add_bos_token": false,
        "add_eos_token": false,
    });
    staged.write(
        "tokenizer_config.json",
        serde_json::to_string_pretty(&tok_config)
            .expect("json")
            .as_bytes(),
    )?;
    let gen_config = json!({ "bos_token_id": bos.1, "eos_token_id": eos.1, "pad_token_id": pad.1, "do_sample": true, "temperature": 0.8, "top_k": 50, "top_p": 0.95 });
    staged.write(
        "generation_config.json",
        serde_json::to_string_pretty(&gen_config)
            .expect("json")
            .as_bytes(),
    )?;
    let dir = staged.commit()?;
    Ok(ExportSummary {
        dir,
        shards: n,
        tensors: params.len(),
        bytes: total,
    })
}

/// The (token, id) of bos, eos and pad, given eos. A tokenizer without a bos or pad entry
/// (GPT-2's has only `<|endoftext|>`) uses eos for them, by name as well as by id:
/// tokenizer_config.json naming a token the vocabulary lacks makes `transformers` add it, one id
/// past the model's.
fn special_tokens<'a>(tok: &tokenizers::Tokenizer, eos: (&'a str, u32)) -> [(&'a str, u32); 3] {
    let or_eos = |name: &'a str| tok.token_to_id(name).map_or(eos, |id| (name, id));
    [or_eos(tokenizer::BOS), eos, or_eos(tokenizer::PAD)]
}
