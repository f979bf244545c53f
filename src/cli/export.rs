//! `colossus export`, `colossus import` and `colossus eval`: moving models in and out of the
//! Hugging Face layout, and scoring them on text.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use tokenizers::Tokenizer;

use super::{EvalArgs, ExportArgs, ImportArgs};
use crate::backend::{self, Job};
use crate::checkpoint::{self, export, import, weights};
use crate::config::BackendKind;
use crate::data::{corpus, tokenizer};
use crate::error::{Error, Result};
use crate::model::{Grok, GrokConfig};
use crate::train::eval::{EvalResult, evaluate};
use crate::train::params;

pub fn run_export(args: ExportArgs) -> Result<()> {
    let ckpt = super::generate::resolve_checkpoint(&args.checkpoint)?;
    let opts = export::ExportOptions {
        dtype: args.dtype,
        max_shard_bytes: args.max_shard_size_mb * 1_000_000,
        stop: Some(super::stop_on_signal(
            "stopping after the shard in progress; the partial folder is removed",
            "the partial folder stays in a hidden .NAME.tmp-PID directory beside --out",
        )?),
    };
    let s = export::export(&ckpt, &args.out, &opts)?;
    println!(
        "exported {} tensors ({:.1} MB, {:?}) in {} shard(s) to {}",
        s.tensors,
        s.bytes as f64 / 1e6,
        args.dtype,
        s.shards,
        s.dir.display()
    );
    Ok(())
}

pub fn run_import(args: ImportArgs) -> Result<()> {
    let stop = super::stop_on_signal(
        "stopping after the read or write in progress; the partial checkpoint is removed",
        "the partial checkpoint stays in a hidden .NAME.tmp-PID directory beside --out",
    )?;
    let dir = import::import_or_stop(&args.dir, &args.out, Some(&stop))?;
    println!(
        "imported {} into checkpoint {}",
        args.dir.display(),
        dir.display()
    );
    Ok(())
}

/// A model to run: a Colossus checkpoint (or run directory), or a Hugging Face folder.
pub struct LoadedModel {
    pub model: GrokConfig,
    pub tokenizer: Tokenizer,
    /// The end-of-text id: where generation stops, between eval's files.
    pub eot: u32,
    pub values: Vec<Vec<f32>>,
}

pub fn load_any(path: &Path) -> Result<LoadedModel> {
    if is_hf_folder(path) {
        let i = import::read(path)?;
        return Ok(LoadedModel {
            model: i.model,
            tokenizer: i.tokenizer,
            eot: i.eot.1,
            values: i.values,
        });
    }
    let dir = super::generate::resolve_checkpoint(path)?;
    let cfg = checkpoint::read_config(&dir)?;
    let (tok, eot) = checkpoint::read_tokenizer(&dir, &cfg)?;
    checkpoint::check_weights_file(&dir, &cfg)?;
    let params = params::list_from_config(&cfg.model);
    let file = weights::read_safetensors(&dir.join(checkpoint::WEIGHTS_FILE))?;
    let mut values = Vec::with_capacity(params.len());
    let mut tensors = file.tensors;
    for p in &params {
        match tensors.remove(&p.path) {
            Some((shape, v)) if shape == p.shape => values.push(v),
            _ => {
                return Err(crate::Error::input(
                    dir.join(checkpoint::WEIGHTS_FILE),
                    format!("tensor `{}` is missing or mis-shaped", p.path),
                ));
            }
        }
    }
    Ok(LoadedModel {
        model: cfg.model,
        tokenizer: tok,
        eot,
        values,
    })
}

/// A Hugging Face folder's config.json names its `architectures`; ours never does. Another
/// architecture's folder is taken as one too, so `import::read` can say what it is.
pub(crate) fn is_hf_folder(path: &Path) -> bool {
    std::fs::read_to_string(path.join("config.json")).is_ok_and(|t| {
        serde_json::from_str::<serde_json::Value>(&t).is_ok_and(|v| v.get("architectures").is_some())
    })
}

/// Build a model on backend `B` from loaded values.
pub fn build<B: burn::tensor::backend::Backend>(m: &LoadedModel, device: &B::Device) -> Result<Grok<B>> {
    let model: Grok<B> = m.model.init(0, device);
    let params = params::list(&model);
    let tensors = params
        .iter()
        .zip(&m.values)
        .map(|(p, v)| (p.path.clone(), (p.shape.clone(), v.clone())))
        .collect();
    let file = weights::TensorFile {
        metadata: Default::default(),
        tensors,
    };
    weights::load_into(model, &params, file, Path::new("(loaded model)"))
}

struct EvalJob {
    loaded: LoadedModel,
    tokens: Vec<u32>,
    seq: usize,
    batch: usize,
}

impl Job for EvalJob {
    type Output = EvalResult;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<EvalResult> {
        let model: Grok<B::InnerBackend> = build(&self.loaded, &device)?;
        Ok(evaluate(&model, &self.tokens, self.seq, self.batch, &device))
    }
}

pub fn run_eval(args: EvalArgs) -> Result<()> {
    let loaded = load_any(&args.model)?;
    let entries: Vec<String> = args
        .data
        .iter()
        .map(|p: &PathBuf| p.display().to_string())
        .collect();
    let inputs = corpus::list_inputs(&entries, "--data")?;
    let files = inputs.len();
    // Documents as `prepare` reads them for training (a JSONL line each, its text field), so a
    // score compares with the run's validation loss; JSONL was once scored as raw JSON text.
    // Bad documents are gathered, not skipped: a score over part of the data would mislead.
    let mut reader = corpus::Reader::new(inputs, &args.jsonl_field, true);
    let flag = |msg: String| Error::Flag {
        flag: "--data".into(),
        msg,
    };
    let (mut tokens, mut documents) = (Vec::new(), 0);
    while let Some(piece) = reader.next_piece()? {
        let ids = tokenizer::encode(&loaded.tokenizer, &piece.text).map_err(|why| {
            let (path, line) = reader.last_place();
            let at = line.map_or(String::new(), |l| format!("line {l}: "));
            Error::input(
                path,
                format!(
                    "{at}the model's tokenizer {why}; it needs an unknown token or byte fallback \
                     to score any text"
                ),
            )
        })?;
        tokens.extend(ids);
        if piece.end_of_doc {
            tokens.push(loaded.eot);
            documents += 1;
        }
    }
    if reader.skips.total() > 0 {
        return Err(flag(format!(
            "{} documents hold no text or cannot be read, e.g. {}",
            reader.skips.total(),
            reader.skips.examples.join("; ")
        )));
    }
    // Each document adds its end-of-text token, so only documents with no tokens get here.
    if tokens.len() < documents + 1 {
        return Err(Error::Flag {
            flag: "--data".into(),
            msg: format!(
                "{} holds no text to score (a loss needs at least one token after the first)",
                entries.join(", ")
            ),
        });
    }
    let max = loaded.model.max_seq_len;
    // A longer window was once cut to max_seq_len without a word; the user asked for more.
    let seq = match args.seq {
        Some(seq) if seq > max => {
            return Err(Error::Flag {
                flag: "--seq".into(),
                msg: format!("{seq} is longer than the model's context, max_seq_len = {max}"),
            });
        }
        seq => seq.unwrap_or(max),
    };
    let backend = args.backend.unwrap_or(BackendKind::Cpu);
    let r = backend::dispatch(
        backend,
        0,
        EvalJob {
            loaded,
            tokens,
            seq,
            batch: args.batch,
        },
    )?;
    println!(
        "loss {:.4} perplexity {:.2} over {} tokens ({files} files, {documents} documents, windows of {seq})",
        r.loss, r.perplexity, r.tokens,
    );
    Ok(())
}
