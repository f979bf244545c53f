//! From file to resolved config: preset, then the file, then `--set` flags, then validation that
//! names the offending key. Everything downstream takes a `Config` and never re-checks it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::file::{AttentionKernel, BackendKind, FileConfig, Overlay, Precision, PresetName};
use super::preset::preset;
use crate::error::{Error, Result};
use crate::model::GrokConfig;
use crate::say::num;

/// A validated run configuration. Stored verbatim in every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub preset: PresetName,
    pub run_name: String,
    pub seed: u64,
    pub backend: BackendKind,
    pub device: usize,
    /// Absent in checkpoints written before mixed precision: those ran in f32.
    #[serde(default)]
    pub precision: Precision,
    /// Absent in checkpoints written before the flash kernel: those ran the composed path.
    #[serde(default)]
    pub attention: AttentionKernel,
    pub model: GrokConfig,
    pub data: DataConfig,
    pub train: TrainConfig,
    /// Absent in checkpoints written before data parallelism: those were single-rank runs.
    #[serde(default)]
    pub distributed: DistributedConfig,
    /// Where this config was read from, for errors found after validation (a data set too
    /// small for the validation split, a checkpoint of another shape): the YAML file, or a
    /// checkpoint's config.json. Not saved, and not part of a config's identity.
    #[serde(skip)]
    pub source: Source,
}

/// A config's file, named in errors. Any two compare equal: the same settings read from two
/// places are the same config (a run's config and the copy in its checkpoint, say).
#[derive(Debug, Clone, Default)]
pub struct Source(pub String);

impl PartialEq for Source {
    fn eq(&self, _: &Source) -> bool {
        true
    }
}

impl Config {
    /// An error about `key` of this config, naming its file.
    pub fn error(&self, key: &str, msg: impl Into<String>) -> Error {
        value_err(&self.source.0, key, msg)
    }

    /// `key` of this config, named with its file for a message that is not itself about the
    /// config: "`model.vocab_size` of configs/tiny.yaml".
    pub fn key_in_file(&self, key: &str) -> String {
        format!("`{key}` of {}", self.source.0)
    }

    /// Create `dir`, a directory `key` places, or fail naming the key. A file in the way (an
    /// out_dir that names a file) once stopped the run with "File exists (os error 17)" and
    /// nothing else, exit 1.
    pub fn create_dir(&self, key: &str, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| {
            let why = crate::checkpoint::atomic::file_in_the_way(dir)
                .unwrap_or_else(|| format!("cannot create {}: {e}", dir.display()));
            self.error(key, why)
        })
    }
}

/// Data parallelism (`src/dist/`): who this process is and where the others are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistributedConfig {
    pub world_size: usize,
    pub rank: usize,
    pub local_ranks: usize,
    pub master_addr: String,
    pub master_port: u16,
    pub node_addr: Option<String>,
    pub timeout_s: f64,
    pub bucket_mb: f64,
    /// ZeRO-1 optimizer-state sharding (`dist::zero`).
    #[serde(default)]
    pub zero1: bool,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        DistributedConfig {
            world_size: 1,
            rank: 0,
            local_ranks: 1,
            master_addr: "127.0.0.1".into(),
            master_port: 29500,
            node_addr: None,
            timeout_s: 60.0,
            bucket_mb: 25.0,
            zero1: false,
        }
    }
}

impl DistributedConfig {
    /// Processes in the job (burn-collective's "nodes"), each running `local_ranks` ranks.
    pub fn processes(&self) -> usize {
        self.world_size / self.local_ranks
    }

    /// This process's index among them.
    pub fn process(&self) -> usize {
        self.rank / self.local_ranks
    }
}

/// Keys added after the first release carry serde defaults so older checkpoints' config.json
/// still loads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    pub corpus: Vec<String>,
    pub tokenizer: Option<String>,
    pub seq_len: usize,
    #[serde(default)]
    pub shards: Option<String>,
    #[serde(default = "default_jsonl_field")]
    pub jsonl_field: String,
    #[serde(default = "default_eot_token")]
    pub eot_token: String,
    #[serde(default = "default_shard_tokens")]
    pub shard_tokens: u64,
    #[serde(default)]
    pub val_fraction: f64,
    #[serde(default)]
    pub cross_shards: bool,
    #[serde(default = "yes")]
    pub verify_checksums: bool,
    #[serde(default)]
    pub skip_bad: bool,
    #[serde(default)]
    pub cache_dir: Option<String>,
}

fn yes() -> bool {
    true
}

fn default_eot_token() -> String {
    crate::data::tokenizer::EOT.to_string()
}

fn default_jsonl_field() -> String {
    crate::data::DEFAULT_JSONL_FIELD.to_string()
}

fn default_shard_tokens() -> u64 {
    crate::data::DEFAULT_SHARD_TOKENS
}

/// Checkpoints written before `train.cpu_workers` existed trained with one pass per micro-batch.
fn one_worker() -> usize {
    1
}

fn default_eval_batches() -> usize {
    8
}

/// Checkpoints written before `precision: f16` existed never scaled their loss; these are the
/// preset's values, so such a config reads back as it resolves today.
fn default_loss_scale_init() -> f64 {
    65536.0
}

fn default_loss_scale_growth_interval() -> usize {
    2000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub steps: usize,
    pub micro_batch: usize,
    pub grad_accum: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: usize,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub log_every: usize,
    pub checkpoint_every: usize,
    pub out_dir: String,
    pub resume: Resume,
    pub keep_last: usize,
    pub max_nonfinite_steps: usize,
    /// 0: measure on CPU, unknown on GPU.
    #[serde(default)]
    pub peak_tflops: f64,
    /// `precision: f16`: the starting loss scale, a power of two (`train::loss_scale`).
    #[serde(default = "default_loss_scale_init")]
    pub loss_scale_init: f64,
    /// `precision: f16`: clean steps in a row before the loss scale doubles.
    #[serde(default = "default_loss_scale_growth_interval")]
    pub loss_scale_growth_interval: usize,
    #[serde(default)]
    pub eval_every: usize,
    #[serde(default = "default_eval_batches")]
    pub eval_batches: usize,
    /// Row shards of each micro-batch computed at once on the CPU backend (1: one pass); other
    /// backends always take one pass. The shard count, not the thread count, fixes the
    /// arithmetic: the same bits on 1 core or 16.
    #[serde(default = "one_worker")]
    pub cpu_workers: usize,
}

/// Where a run starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resume {
    /// From scratch; an existing run directory is an error (or replaced with --overwrite).
    Never,
    /// From the run's newest complete checkpoint when it has one, else from scratch.
    Auto,
    /// From this checkpoint directory.
    Path(String),
}

impl Resume {
    pub fn parse(v: &str) -> Resume {
        match v {
            "never" | "" => Resume::Never,
            "auto" => Resume::Auto,
            path => Resume::Path(path.to_string()),
        }
    }
}

impl TrainConfig {
    /// Tokens consumed by one optimizer step, over all ranks (`micro_batch` is the global
    /// micro-batch; each of W ranks takes micro_batch / W of its rows).
    pub fn tokens_per_step(&self, seq_len: usize) -> usize {
        self.micro_batch * self.grad_accum * seq_len
    }
}

/// Read `path`, lay `sets` (`key.path=value`) over it, and validate.
pub fn load(path: &Path, sets: &[String]) -> Result<Config> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::ConfigParse {
        file: file.clone(),
        msg: format!("cannot read the file: {e}"),
    })?;
    from_yaml(&text, &file, sets)
}

/// Parse YAML text (named `file` in errors), lay `sets` over it, and validate.
pub fn from_yaml(text: &str, file: &str, sets: &[String]) -> Result<Config> {
    let parsed: FileConfig = serde_saphyr::from_str(text).map_err(|e| Error::ConfigParse {
        file: file.to_string(),
        msg: yaml_message(&e),
    })?;
    let mut layered = parsed;
    for set in sets {
        layered = layered.overlay(parse_set(set)?);
    }
    let Some(name) = layered.preset else {
        return Err(value_err(
            file,
            "preset",
            "missing; expected one of tiny, small, gpu-350m, grok-1 (the file's keys override it)",
        ));
    };
    validate(preset(name).overlay(layered), file)
}

/// `model.d_model=512` → a FileConfig with only that key set. The value is read as YAML, so
/// numbers, booleans, lists (`[a, b]`) and strings all work; the key must exist in the file format.
fn parse_set(set: &str) -> Result<FileConfig> {
    let flag = format!("--set {set}");
    let Some((key, value)) = set.split_once('=') else {
        return Err(Error::Flag {
            flag,
            msg: "expected KEY.PATH=VALUE, e.g. train.lr=3e-4".into(),
        });
    };
    let value: serde_json::Value = serde_saphyr::from_str(value).map_err(|e| Error::Flag {
        flag: flag.clone(),
        msg: format!("value is not valid YAML: {}", yaml_message(&e)),
    })?;
    let mut tree = value;
    for part in key.trim().rsplit('.') {
        if part.is_empty() {
            return Err(Error::Flag {
                flag,
                msg: "empty key segment".into(),
            });
        }
        let mut map = serde_json::Map::new();
        map.insert(part.to_string(), tree);
        tree = serde_json::Value::Object(map);
    }
    serde_json::from_value(tree).map_err(|e| Error::Flag {
        flag,
        msg: e.to_string(),
    })
}

/// The YAML reader's message, less its advice to the programmer: a duplicated key ends "set
/// DuplicateKeyPolicy in Options if acceptable", a second document "use from_str_multiple or
/// from_str_multiple_with_options", calls of the library our users cannot make.
fn yaml_message(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .replace(
            ", set DuplicateKeyPolicy in Options if acceptable",
            " (each key may appear once)",
        )
        .replace(
            "; use from_str_multiple or from_str_multiple_with_options",
            " (a `---` line starts another); a config is one document",
        )
}

/// The longest `run_name`, in bytes.
pub const MAX_RUN_NAME: usize = 200;

fn value_err(file: &str, key: &str, msg: impl Into<String>) -> Error {
    Error::ConfigValue {
        file: file.to_string(),
        key: key.to_string(),
        msg: msg.into(),
    }
}

/// Every key is `Some` after the preset overlay; `req` turns a `None` (a preset bug) into an error
/// rather than a panic.
fn req<T: Clone>(v: &Option<T>, file: &str, key: &str) -> Result<T> {
    v.clone().ok_or_else(|| value_err(file, key, "missing"))
}

/// The Grok-1 expert width rule: int(widening·d)·2//3, rounded up to a multiple of 8.
pub fn ffn_size(d_model: usize, widening: f64) -> usize {
    // Saturating: an absurd width counts past `MAX_PARAMS` and is refused there, not overflowed.
    let f = ((widening * d_model as f64) as usize).saturating_mul(2) / 3;
    f.div_ceil(8) * 8
}

fn validate(f: FileConfig, file: &str) -> Result<Config> {
    let e = |key: &str, msg: String| -> Result<Config> { Err(value_err(file, key, msg)) };
    let bad = |key: &str, msg: String| value_err(file, key, msg);
    let m = &f.model;
    let vocab_size = req(&m.vocab_size, file, "model.vocab_size")?;
    let d_model = req(&m.d_model, file, "model.d_model")?;
    let n_layers = req(&m.n_layers, file, "model.n_layers")?;
    let n_q_heads = req(&m.n_q_heads, file, "model.n_q_heads")?;
    let n_kv_heads = req(&m.n_kv_heads, file, "model.n_kv_heads")?;
    let n_experts = req(&m.n_experts, file, "model.n_experts")?;
    let top_k = req(&m.top_k, file, "model.top_k")?;
    let widening = req(&m.widening, file, "model.widening")?;
    let max_seq_len = req(&m.max_seq_len, file, "model.max_seq_len")?;
    for (key, v) in [
        ("model.vocab_size", vocab_size),
        ("model.d_model", d_model),
        ("model.n_layers", n_layers),
        ("model.n_q_heads", n_q_heads),
        ("model.n_kv_heads", n_kv_heads),
        ("model.n_experts", n_experts),
        ("model.top_k", top_k),
        ("model.max_seq_len", max_seq_len),
    ] {
        if v == 0 {
            return e(key, "must be at least 1".into());
        }
    }
    if n_q_heads % n_kv_heads != 0 {
        return e(
            "model.n_kv_heads",
            format!("{n_kv_heads} does not divide model.n_q_heads = {n_q_heads}; expected a divisor of it"),
        );
    }
    let head_dim = match m.head_dim {
        Some(h) => h,
        None if d_model % n_q_heads == 0 => d_model / n_q_heads,
        None => {
            return e(
                "model.d_model",
                format!(
                    "{d_model} is not divisible by model.n_q_heads = {n_q_heads}; set model.head_dim or pick a multiple"
                ),
            );
        }
    };
    if head_dim == 0 || head_dim % 2 != 0 {
        return e(
            "model.head_dim",
            format!("{head_dim} must be even and at least 2 (RoPE rotates halves)"),
        );
    }
    if top_k > n_experts {
        return e(
            "model.top_k",
            format!("{top_k} exceeds model.n_experts = {n_experts}"),
        );
    }
    if !(widening.is_finite() && widening > 0.0) {
        return e(
            "model.widening",
            format!("{} must be a positive number", num(widening)),
        );
    }
    let ffn = ffn_size(d_model, widening);
    if ffn == 0 {
        return e(
            "model.widening",
            format!(
                "{} gives an expert width of 0 for d_model {d_model}",
                num(widening)
            ),
        );
    }
    let positive = |key: &str, v: f64| -> Result<f64> {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(bad(key, format!("{} must be a positive number", num(v))))
        }
    };
    let non_negative = |key: &str, v: f64| -> Result<f64> {
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(bad(key, format!("{} must be zero or positive", num(v))))
        }
    };
    // A power of two, so scaling and unscaling the gradients is exact in f32, and at most the
    // loop's ceiling (`train::loss_scale::MAX_LOG2`), far past any gradient's need.
    let power_of_two = |key: &str, v: f64| -> Result<f64> {
        let max_log2 = crate::train::loss_scale::MAX_LOG2;
        if (1.0..=2f64.powi(max_log2)).contains(&v) && v.log2().fract() == 0.0 {
            Ok(v)
        } else {
            Err(bad(
                key,
                format!(
                    "{} must be a power of two from 1 to 2^{max_log2} (e.g. 65536)",
                    num(v)
                ),
            ))
        }
    };
    let model = GrokConfig {
        vocab_size,
        d_model,
        n_layers,
        n_q_heads,
        n_kv_heads,
        head_dim,
        n_experts,
        top_k,
        widening,
        ffn_size: ffn,
        max_seq_len,
        rope_theta: positive("model.rope_theta", req(&m.rope_theta, file, "model.rope_theta")?)?,
        attn_softcap: non_negative(
            "model.attn_softcap",
            req(&m.attn_softcap, file, "model.attn_softcap")?,
        )?,
        attn_output_multiplier: positive(
            "model.attn_output_multiplier",
            m.attn_output_multiplier.unwrap_or((1.0 / head_dim as f64).sqrt()),
        )?,
        embedding_multiplier: positive(
            "model.embedding_multiplier",
            m.embedding_multiplier.unwrap_or((d_model as f64).sqrt()),
        )?,
        output_multiplier: positive(
            "model.output_multiplier",
            req(&m.output_multiplier, file, "model.output_multiplier")?,
        )?,
        norm_eps: positive("model.norm_eps", req(&m.norm_eps, file, "model.norm_eps")?)?,
        init_std: positive("model.init_std", req(&m.init_std, file, "model.init_std")?)?,
        aux_loss_coef: non_negative(
            "model.aux_loss_coef",
            req(&m.aux_loss_coef, file, "model.aux_loss_coef")?,
        )?,
    };
    // Token ids are u32 (shards, batches, the tokenizer), so a larger vocabulary cannot be fed.
    if vocab_size as u64 > 1 << 32 {
        return e(
            "model.vocab_size",
            format!("{vocab_size} is more than 2^32 = 4294967296; token ids are 32-bit"),
        );
    }
    // Absurd sizes used to overflow the counts (a panic) or abort inside the allocator.
    let params = crate::model::params::count(&model).total;
    if params >= crate::model::params::MAX_PARAMS {
        return e(
            "model",
            format!(
                "its sizes give {:.3e} parameters, more than 2^53 ≈ 9.0e15 that Colossus counts; \
                 lower model.d_model, model.n_layers, model.n_experts, model.vocab_size or model.widening",
                params as f64
            ),
        );
    }

    let d = &f.data;
    let corpus = req(&d.corpus, file, "data.corpus")?;
    let shards = d.shards.clone();
    if shards.as_ref().is_some_and(|s| s.is_empty()) {
        return e(
            "data.shards",
            "is empty; expected a directory written by `colossus prepare`".into(),
        );
    }
    // An empty path is the current directory to the file system: `data.cache_dir: ''` put the
    // cache, and `train.out_dir: ''` the run, beside wherever the command ran (found 2026-12-07).
    // Each path key refuses one: these three here, train.out_dir below.
    if let Some(i) = corpus.iter().position(|c| c.is_empty()) {
        return e(
            "data.corpus",
            format!(
                "entry {} is empty; expected a text or JSONL file or a directory",
                i + 1
            ),
        );
    }
    for (key, v, expected) in [
        ("data.tokenizer", &d.tokenizer, "a tokenizer.json file"),
        (
            "data.cache_dir",
            &d.cache_dir,
            "a directory (leave it out for <train.out_dir>/.cache/data)",
        ),
    ] {
        if v.as_ref().is_some_and(|v| v.is_empty()) {
            return e(key, format!("is empty; expected {expected}"));
        }
    }
    if corpus.is_empty() && d.tokenizer.is_none() && shards.is_none() {
        return e(
            "data.corpus",
            "is empty; expected at least one text file or directory".into(),
        );
    }
    let seq_len = req(&d.seq_len, file, "data.seq_len")?;
    if seq_len < 2 {
        return e("data.seq_len", format!("{seq_len} must be at least 2"));
    }
    if seq_len > max_seq_len {
        return e(
            "data.seq_len",
            format!("{seq_len} is longer than model.max_seq_len = {max_seq_len}"),
        );
    }
    let jsonl_field = req(&d.jsonl_field, file, "data.jsonl_field")?;
    if jsonl_field.is_empty() {
        return e(
            "data.jsonl_field",
            "is empty; expected the name of the text field".into(),
        );
    }
    let eot_token = req(&d.eot_token, file, "data.eot_token")?;
    if eot_token.is_empty() {
        return e(
            "data.eot_token",
            "is empty; expected the tokenizer's end-of-text token, e.g. `</s>`".into(),
        );
    }
    // The trained BPE's specials are fixed; another name only makes sense for a tokenizer that
    // has it (given, or the one inside data.shards, checked when the data opens).
    if d.tokenizer.is_none() && shards.is_none() && eot_token != crate::data::tokenizer::EOT {
        return e(
            "data.eot_token",
            format!(
                "`{eot_token}` names a token of a given tokenizer, but there is none \
                 (data.tokenizer); the byte-level BPE trained on the corpus ends documents with `{}`",
                crate::data::tokenizer::EOT
            ),
        );
    }
    let shard_tokens = req(&d.shard_tokens, file, "data.shard_tokens")?;
    if shard_tokens == 0 {
        return e("data.shard_tokens", "must be at least 1".into());
    }
    let val_fraction = req(&d.val_fraction, file, "data.val_fraction")?;
    if !(0.0..=0.5).contains(&val_fraction) {
        return e(
            "data.val_fraction",
            format!("{} must be in [0, 0.5]", num(val_fraction)),
        );
    }
    let data = DataConfig {
        corpus,
        tokenizer: d.tokenizer.clone(),
        seq_len,
        shards,
        jsonl_field,
        eot_token,
        shard_tokens,
        val_fraction,
        cross_shards: req(&d.cross_shards, file, "data.cross_shards")?,
        verify_checksums: req(&d.verify_checksums, file, "data.verify_checksums")?,
        skip_bad: req(&d.skip_bad, file, "data.skip_bad")?,
        cache_dir: d.cache_dir.clone(),
    };

    let t = &f.train;
    let at_least_one = |key: &str, v: usize| -> Result<usize> {
        if v >= 1 {
            Ok(v)
        } else {
            Err(bad(key, "must be at least 1".into()))
        }
    };
    let lr = positive("train.lr", req(&t.lr, file, "train.lr")?)?;
    let min_lr = non_negative("train.min_lr", req(&t.min_lr, file, "train.min_lr")?)?;
    if min_lr > lr {
        return e(
            "train.min_lr",
            format!("{} is larger than train.lr = {}", num(min_lr), num(lr)),
        );
    }
    let steps = at_least_one("train.steps", req(&t.steps, file, "train.steps")?)?;
    let warmup_steps = req(&t.warmup_steps, file, "train.warmup_steps")?;
    if warmup_steps > steps {
        return e(
            "train.warmup_steps",
            format!("{warmup_steps} is more than train.steps = {steps}"),
        );
    }
    let beta = |key: &str, v: f64| -> Result<f64> {
        if (0.0..1.0).contains(&v) {
            Ok(v)
        } else {
            Err(bad(key, format!("{} must be in [0, 1)", num(v))))
        }
    };
    let train = TrainConfig {
        steps,
        micro_batch: at_least_one(
            "train.micro_batch",
            req(&t.micro_batch, file, "train.micro_batch")?,
        )?,
        grad_accum: at_least_one("train.grad_accum", req(&t.grad_accum, file, "train.grad_accum")?)?,
        lr,
        min_lr,
        warmup_steps,
        beta1: beta("train.beta1", req(&t.beta1, file, "train.beta1")?)?,
        beta2: beta("train.beta2", req(&t.beta2, file, "train.beta2")?)?,
        eps: positive("train.eps", req(&t.eps, file, "train.eps")?)?,
        weight_decay: non_negative(
            "train.weight_decay",
            req(&t.weight_decay, file, "train.weight_decay")?,
        )?,
        grad_clip: non_negative("train.grad_clip", req(&t.grad_clip, file, "train.grad_clip")?)?,
        log_every: at_least_one("train.log_every", req(&t.log_every, file, "train.log_every")?)?,
        checkpoint_every: req(&t.checkpoint_every, file, "train.checkpoint_every")?,
        out_dir: match req(&t.out_dir, file, "train.out_dir")? {
            dir if dir.is_empty() => {
                return e(
                    "train.out_dir",
                    "is empty; expected a directory, e.g. checkpoints".into(),
                );
            }
            dir => dir,
        },
        resume: Resume::parse(&req(&t.resume, file, "train.resume")?),
        keep_last: req(&t.keep_last, file, "train.keep_last")?,
        max_nonfinite_steps: at_least_one(
            "train.max_nonfinite_steps",
            req(&t.max_nonfinite_steps, file, "train.max_nonfinite_steps")?,
        )?,
        peak_tflops: non_negative(
            "train.peak_tflops",
            req(&t.peak_tflops, file, "train.peak_tflops")?,
        )?,
        loss_scale_init: power_of_two(
            "train.loss_scale_init",
            req(&t.loss_scale_init, file, "train.loss_scale_init")?,
        )?,
        loss_scale_growth_interval: at_least_one(
            "train.loss_scale_growth_interval",
            req(
                &t.loss_scale_growth_interval,
                file,
                "train.loss_scale_growth_interval",
            )?,
        )?,
        eval_every: req(&t.eval_every, file, "train.eval_every")?,
        eval_batches: at_least_one(
            "train.eval_batches",
            req(&t.eval_batches, file, "train.eval_batches")?,
        )?,
        cpu_workers: at_least_one(
            "train.cpu_workers",
            req(&t.cpu_workers, file, "train.cpu_workers")?,
        )?,
    };
    // The trainer counts tokens in u64 (progress, checkpoints, the schedule's report).
    let tokens = [train.micro_batch, train.grad_accum, seq_len]
        .iter()
        .try_fold(train.steps as u64, |n, &v| n.checked_mul(v as u64));
    if tokens.is_none() {
        let key = if train.grad_accum > train.micro_batch {
            "train.grad_accum"
        } else {
            "train.micro_batch"
        };
        return e(
            key,
            format!(
                "train.steps × train.micro_batch × train.grad_accum × data.seq_len = {} × {} × {} × {} \
                 tokens is more than a 64-bit count",
                train.steps, train.micro_batch, train.grad_accum, seq_len
            ),
        );
    }
    let distributed = validate_distributed(&f, file, train.micro_batch)?;
    let run_name = req(&f.run_name, file, "run_name")?;
    if run_name.is_empty() || run_name.contains(['/', '\\']) || run_name.starts_with('.') {
        return e("run_name", format!("{run_name:?} must be a plain directory name"));
    }
    // A file name is at most 255 bytes, and the run's lock (`.NAME.lock`) and staging
    // (`.NAME.tmp-PID`) names add to it: 300 bytes failed at the lock, "File name too long".
    if run_name.len() > MAX_RUN_NAME {
        return e(
            "run_name",
            format!(
                "is {} bytes long; at most {MAX_RUN_NAME} (a file name may be 255 bytes, and the run's own files add to it)",
                run_name.len()
            ),
        );
    }
    let backend = req(&f.backend, file, "backend")?;
    // bf16 is what a GPU run wants (tensor cores, half the activation traffic); on the CPU it is
    // emulated (rounded inputs, f32 arithmetic) and slower, so it is there only when asked for.
    let precision = f.precision.unwrap_or(match backend {
        BackendKind::Cuda => Precision::Bf16,
        BackendKind::Cpu | BackendKind::Wgpu => Precision::F32,
    });
    Ok(Config {
        preset: f.preset.expect("checked above"),
        run_name,
        seed: req(&f.seed, file, "seed")?,
        backend,
        device: req(&f.device, file, "device")?,
        precision,
        attention: f.attention.unwrap_or_default(),
        model,
        data,
        train,
        distributed,
        source: Source(file.to_string()),
    })
}

/// The most ranks one process runs.
pub const MAX_LOCAL_RANKS: usize = 1024;

fn validate_distributed(f: &FileConfig, file: &str, micro_batch: usize) -> Result<DistributedConfig> {
    let d = &f.distributed;
    let e = |key: &str, msg: String| -> Result<DistributedConfig> { Err(value_err(file, key, msg)) };
    let world_size = req(&d.world_size, file, "distributed.world_size")?;
    let rank = req(&d.rank, file, "distributed.rank")?;
    let local_ranks = req(&d.local_ranks, file, "distributed.local_ranks")?;
    let master_port = req(&d.master_port, file, "distributed.master_port")?;
    let timeout_s = req(&d.timeout_s, file, "distributed.timeout_s")?;
    let bucket_mb = req(&d.bucket_mb, file, "distributed.bucket_mb")?;
    if world_size == 0 {
        return e("distributed.world_size", "must be at least 1".into());
    }
    if rank >= world_size {
        return e(
            "distributed.rank",
            format!("{rank} is not below distributed.world_size = {world_size}"),
        );
    }
    if local_ranks == 0 || !world_size.is_multiple_of(local_ranks) {
        return e(
            "distributed.local_ranks",
            format!("{local_ranks} must be at least 1 and divide distributed.world_size = {world_size}"),
        );
    }
    // Each local rank is a thread holding a model of its own: 100 000 of them aborted the process
    // setting up their stacks (found 2026-12-06). A machine has a handful of GPUs, or cores.
    if local_ranks > MAX_LOCAL_RANKS {
        return e(
            "distributed.local_ranks",
            format!(
                "{local_ranks} is more than {MAX_LOCAL_RANKS}; each local rank is a thread with a model \
                 of its own, one per GPU or core of this machine"
            ),
        );
    }
    if !rank.is_multiple_of(local_ranks) {
        return e(
            "distributed.rank",
            format!(
                "{rank} must be a multiple of distributed.local_ranks = {local_ranks} (this process runs \
                 ranks rank .. rank + local_ranks)"
            ),
        );
    }
    if !micro_batch.is_multiple_of(world_size) {
        return e(
            "train.micro_batch",
            format!(
                "{micro_batch} is not divisible by distributed.world_size = {world_size}; the global \
                 micro-batch is split into equal row slices, one per rank"
            ),
        );
    }
    let processes = world_size / local_ranks;
    if master_port == 0 || master_port as usize + processes >= 65_536 {
        return e(
            "distributed.master_port",
            format!("{master_port} leaves no room for the data ports master_port + 1 .. + {processes}"),
        );
    }
    // Bounded so it converts to a `Duration` (1e300 panicked there, found 2026-12-06).
    if !(timeout_s > 0.0 && timeout_s <= 1e9) {
        return e(
            "distributed.timeout_s",
            format!(
                "{} must be a positive number of seconds, at most 1e9",
                num(timeout_s)
            ),
        );
    }
    if !(bucket_mb.is_finite() && bucket_mb > 0.0) {
        return e(
            "distributed.bucket_mb",
            format!("{} must be a positive number", num(bucket_mb)),
        );
    }
    let master_addr = req(&d.master_addr, file, "distributed.master_addr")?;
    if master_addr.is_empty() || master_addr.contains(['/', ' ']) {
        return e(
            "distributed.master_addr",
            format!("{master_addr:?} must be a host name or IP address"),
        );
    }
    if let Some(a) = d
        .node_addr
        .as_ref()
        .filter(|a| a.is_empty() || a.contains(['/', ' ']))
    {
        return e(
            "distributed.node_addr",
            format!("{a:?} must be a host name or IP address"),
        );
    }
    Ok(DistributedConfig {
        world_size,
        rank,
        local_ranks,
        master_addr,
        master_port,
        node_addr: d.node_addr.clone(),
        timeout_s,
        bucket_mb,
        zero1: req(&d.zero1, file, "distributed.zero1")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(yaml: &str, sets: &[&str]) -> Config {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        from_yaml(yaml, "t.yaml", &sets).unwrap()
    }

    fn err(yaml: &str, sets: &[&str]) -> String {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        from_yaml(yaml, "t.yaml", &sets).unwrap_err().to_string()
    }

    #[test]
    fn corpus_takes_one_path_or_a_list() {
        let one = ok("preset: tiny\ndata: {corpus: notes.txt}\n", &[]);
        assert_eq!(one.data.corpus, ["notes.txt"]);
        let many = ok("preset: tiny\ndata:\n  corpus: [a.txt, b/]\n", &[]);
        assert_eq!(many.data.corpus, ["a.txt", "b/"]);
        let set = ok("preset: tiny\n", &["data.corpus=c.txt"]);
        assert_eq!(set.data.corpus, ["c.txt"]);
        assert!(err("preset: tiny\ndata: {corpus: 3}\n", &[]).contains("t.yaml"));
    }

    #[test]
    fn a_repeated_key_is_named_without_the_libraries_advice() {
        let e = err("preset: tiny\ntrain: {lr: 1.0e-3, lr: 2.0e-3}\n", &[]);
        assert!(
            e.contains("t.yaml") && e.contains("duplicate mapping key: lr"),
            "{e}"
        );
        assert!(!e.contains("DuplicateKeyPolicy"), "{e}");
        // The expected shapes in words, not the reader's type names (`struct ModelFile`,
        // `untagged enum OneOrMany`).
        let e = err("preset: tiny\n", &["model=3"]);
        assert!(e.ends_with("expected a mapping of `model` keys"), "{e}");
        let e = err("preset: tiny\ndata: {corpus: [[a]]}\n", &[]);
        assert!(
            e.contains("expected a path or a list of paths") && !e.contains("OneOrMany"),
            "{e}"
        );
        let e = err("preset: tiny\n---\npreset: small\n", &[]);
        assert!(
            e.contains("a config is one document") && !e.contains("from_str_multiple"),
            "{e}"
        );
    }

    #[test]
    fn numbers_out_of_range_are_shown_short() {
        assert_eq!(num(0.003), "0.003");
        assert_eq!(num(60.0), "60");
        assert_eq!(num(-1.5e300), "-1.5e300");
        assert_eq!(num(1e-300), "1e-300");
        let e = err("preset: tiny\n", &["train.min_lr=1e300"]);
        assert!(
            e.ends_with("key `train.min_lr`: 1e300 is larger than train.lr = 0.003"),
            "{e}"
        );
        let e = err("preset: tiny\n", &["distributed.timeout_s=-2e-9"]);
        assert!(e.contains("`distributed.timeout_s`: -2e-9 must be"), "{e}");
    }

    #[test]
    fn ffn_rule_matches_grok1() {
        assert_eq!(ffn_size(6144, 8.0), 32768);
        assert_eq!(ffn_size(256, 8.0), 1368); // shared/reference/tiny.json
        assert_eq!(ffn_size(64, 2.0), 88);
    }

    #[test]
    fn preset_then_file_then_set() {
        let c = ok(
            "preset: tiny\nmodel:\n  d_model: 128\n",
            &["train.lr=0.5", "model.n_layers=3"],
        );
        assert_eq!(c.model.d_model, 128);
        assert_eq!(c.model.n_layers, 3);
        assert_eq!(c.train.lr, 0.5);
        // Shape-following multipliers follow the overridden width.
        assert!((c.model.embedding_multiplier - 128f64.sqrt()).abs() < 1e-12);
        // head_dim follows too: 128 / 4 heads = 32.
        assert!((c.model.attn_output_multiplier - (1.0f64 / 32.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn grok1_preset_is_the_release() {
        let c = ok("preset: grok-1\n", &[]);
        let m = &c.model;
        assert_eq!((m.vocab_size, m.d_model, m.n_layers), (131072, 6144, 64));
        assert_eq!((m.n_q_heads, m.n_kv_heads, m.head_dim), (48, 8, 128));
        assert_eq!(
            (m.n_experts, m.top_k, m.ffn_size, m.max_seq_len),
            (8, 2, 32768, 8192)
        );
        assert_eq!(m.embedding_multiplier, 78.38367176906169);
        assert_eq!(m.output_multiplier, 0.5773502691896257);
        assert_eq!(m.attn_output_multiplier, 0.08838834764831845);
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err("preset: tiny\nmodel:\n  d_modle: 3\n", &[]).contains("d_modle"));
        assert!(err("preset: tiny\nmodel:\n  d_model: abc\n", &[]).contains("t.yaml"));
        assert!(err("preset: huge\n", &[]).contains("huge"));
        assert!(err("model: {}\n", &[]).contains("`preset`"));
        assert!(err("preset: tiny\nmodel: {n_kv_heads: 3}\n", &[]).contains("model.n_kv_heads"));
        assert!(err("preset: tiny\nmodel: {top_k: 5}\n", &[]).contains("model.top_k"));
        assert!(err("preset: tiny\ndata: {seq_len: 65}\n", &[]).contains("data.seq_len"));
        assert!(err("preset: tiny\nmodel: {d_model: 66}\n", &[]).contains("model.d_model"));
        assert!(err("preset: tiny\n", &["train.lr"]).contains("--set train.lr"));
        assert!(err("preset: tiny\n", &["train.lrr=1"]).contains("lrr"));
        assert!(err("preset: tiny\n", &["model.d_model=66", "model.head_dim=15"]).contains("model.head_dim"));
        assert!(err("preset: tiny\n", &["data.val_fraction=0.9"]).contains("data.val_fraction"));
        assert!(err("preset: tiny\n", &["data.shard_tokens=0"]).contains("data.shard_tokens"));
        assert!(err("preset: tiny\n", &["data.jsonl_field=''"]).contains("data.jsonl_field"));
        assert!(err("preset: tiny\n", &["train.eval_batches=0"]).contains("train.eval_batches"));
        assert!(err("preset: tiny\n", &["train.cpu_workers=0"]).contains("train.cpu_workers"));
        assert!(err("preset: tiny\n", &["data.shards=''"]).contains("data.shards"));
        let long = format!("run_name={}", "x".repeat(MAX_RUN_NAME + 1));
        assert!(err("preset: tiny\n", &[&long]).contains("key `run_name`: is 201 bytes long"));
        ok(
            "preset: tiny\n",
            &[&format!("run_name={}", "x".repeat(MAX_RUN_NAME))],
        );
        // Empty paths once meant the current directory (found 2026-12-07).
        for key in [
            "data.tokenizer",
            "data.cache_dir",
            "train.out_dir",
            "distributed.node_addr",
        ] {
            let e = err("preset: tiny\n", &[&format!("{key}=''")]);
            assert!(e.contains(&format!("key `{key}`")), "{e}");
        }
        let e = err("preset: tiny\n", &["data.corpus=[data, '']"]);
        assert!(e.contains("key `data.corpus`: entry 2 is empty"), "{e}");
    }

    /// Sizes whose products overflow are refused by key: they used to panic ("attempt to
    /// multiply with overflow", "capacity overflow") or wrap (found 2026-12-06).
    #[test]
    fn sizes_that_overflow_the_counts_are_refused_by_key() {
        let max = u64::MAX.to_string();
        let vocab = format!("model.vocab_size={max}");
        assert!(err("preset: tiny\n", &[&vocab]).contains("`model.vocab_size`: 18446744073709551615"));
        assert!(err("preset: tiny\n", &["model.vocab_size=4294967297"]).contains("32-bit"));
        ok("preset: tiny\n", &["model.vocab_size=4294967296"]);
        for set in [
            "model.widening=1e300",
            "model.d_model=4294967296",
            "model.head_dim=4611686018427387904",
        ] {
            let e = err("preset: tiny\n", &[set]);
            assert!(e.contains("key `model`") && e.contains("2^53"), "{set}: {e}");
        }
        let accum = format!("train.grad_accum={max}");
        assert!(err("preset: tiny\n", &[&accum]).contains("`train.grad_accum`"));
        let micro = format!("train.micro_batch={}", 1u64 << 40);
        assert!(err("preset: tiny\n", &[&micro, "train.steps=100000000"]).contains("`train.micro_batch`"));
        // The largest preset is far inside the bound.
        ok("preset: grok-1\n", &[]);
    }

    #[test]
    fn distributed_keys_are_validated_by_name() {
        let c = ok(
            "preset: tiny\ndistributed: {world_size: 4, rank: 2, local_ranks: 2}\n",
            &[],
        );
        assert_eq!((c.distributed.processes(), c.distributed.process()), (2, 1));
        let two = "distributed.world_size=2";
        assert!(err("preset: tiny\n", &[two, "distributed.rank=2"]).contains("distributed.rank"));
        assert!(
            err("preset: tiny\n", &[two, "distributed.local_ranks=3"]).contains("distributed.local_ranks")
        );
        assert!(err("preset: tiny\n", &["distributed.world_size=3"]).contains("train.micro_batch"));
        assert!(err("preset: tiny\n", &["distributed.timeout_s=0"]).contains("distributed.timeout_s"));
        assert!(err("preset: tiny\n", &["distributed.timeout_s=1e300"]).contains("distributed.timeout_s"));
        let many = [
            "distributed.world_size=2048",
            "distributed.local_ranks=2048",
            "train.micro_batch=2048",
        ];
        assert!(err("preset: tiny\n", &many).contains("`distributed.local_ranks`: 2048 is more than 1024"));
        assert!(err("preset: tiny\ndistributed: {ranks: 2}\n", &[]).contains("ranks"));
    }

    /// Issue 8: a checkpoint written before `train.cpu_workers` existed holds a resolved config
    /// without it; it reads back as one pass per micro-batch, how that run trained.
    #[test]
    fn issue_8_configs_saved_without_cpu_workers_read_as_one_pass() {
        let c = ok("preset: tiny\n", &[]);
        assert_eq!(c.train.cpu_workers, 2, "the preset default");
        let mut json = serde_json::to_value(&c.train).unwrap();
        json.as_object_mut().unwrap().remove("cpu_workers");
        let old: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.cpu_workers, 1);
    }
}
