//! `colossus prepare`: tokenize raw text into a shard directory, from a config's `data` section
//! (`--config`) or from inputs and flags. Flags override the config.

use std::path::PathBuf;

use clap::Args;

use crate::config;
use crate::data::{self, prepare, shard::Dtype, tokenizer};
use crate::error::{Error, Result};

#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Text files, JSONL files, or directories of them (default: the config's data.corpus).
    pub inputs: Vec<String>,
    /// Take inputs, tokenizer, vocabulary size and data options from this config.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override one config key (with --config), e.g. `--set model.vocab_size=8192`.
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    pub set: Vec<String>,
    /// Output directory (default: the config's data.shards).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Use this tokenizer.json instead of training a byte-level BPE.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Entries of the BPE to train (or the most a given tokenizer may have).
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// JSONL field holding the text [default: text].
    #[arg(long)]
    pub jsonl_field: Option<String>,
    /// The given tokenizer's end-of-text token, written between documents [default: <|endoftext|>]
    #[arg(long)]
    pub eot_token: Option<String>,
    /// Tokens per shard [default: 67108864].
    #[arg(long)]
    pub shard_tokens: Option<u64>,
    /// Share of the token stream held out for validation [default: 0.01].
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// Token id width [default: u16 when the vocabulary fits, else u32].
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
    /// Skip and count bad documents instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// Tokenizer threads [default: every core].
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Replace the output directory if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: PrepareArgs) -> Result<()> {
    let flag = |flag: &str, msg: &str| Error::Flag {
        flag: flag.into(),
        msg: msg.into(),
    };
    let cfg = match &args.config {
        Some(path) => Some(config::load(path, &args.set)?),
        None => None,
    };
    let (mut opts, cfg_out) = match &cfg {
        Some(cfg) => (data::prepare_options(cfg, args.quiet), cfg.data.shards.clone()),
        None => {
            if !args.set.is_empty() {
                return Err(flag("--set", "needs --config"));
            }
            let opts = prepare::PrepareOptions {
                inputs: Vec::new(),
                inputs_key: "INPUTS".into(),
                tokenizer: None,
                vocab_size: 0,
                vocab_key: "flag --vocab-size".into(),
                jsonl_field: data::DEFAULT_JSONL_FIELD.into(),
                eot_token: tokenizer::EOT.into(),
                eot_key: "flag --eot-token".into(),
                shard_tokens: data::DEFAULT_SHARD_TOKENS,
                val_fraction: 0.01,
                skip_bad: false,
                dtype: None,
                threads: 0,
                overwrite: false,
                quiet: args.quiet,
                stop: None,
            };
            (opts, None)
        }
    };
    if !args.inputs.is_empty() {
        opts.inputs = args.inputs.clone();
        opts.inputs_key = "INPUTS".into();
    }
    if opts.inputs.is_empty() {
        return Err(flag(
            "INPUTS",
            "no inputs: name text/JSONL files or directories, or --config",
        ));
    }
    if let Some(t) = args.tokenizer {
        opts.tokenizer = Some(t);
    }
    match args.vocab_size {
        Some(v) => {
            opts.vocab_size = v;
            opts.vocab_key = "flag --vocab-size".into();
        }
        None if opts.vocab_size == 0 => {
            opts.vocab_size = if opts.tokenizer.is_some() {
                usize::MAX
            } else {
                return Err(flag(
                    "--vocab-size",
                    "needed to train a tokenizer (or give --tokenizer or --config)",
                ));
            };
        }
        None => {}
    }
    if opts.tokenizer.is_none()
        && let Err(why) = tokenizer::check_bpe_size(opts.vocab_size)
    {
        return Err(match &cfg {
            Some(cfg) if args.vocab_size.is_none() => cfg.error("model.vocab_size", why),
            _ => flag("--vocab-size", &why),
        });
    }
    if let Some(f) = args.jsonl_field {
        opts.jsonl_field = f;
    }
    if let Some(t) = args.eot_token {
        if opts.tokenizer.is_none() {
            return Err(flag(
                "--eot-token",
                &format!(
                    "names a token of a given tokenizer (--tokenizer); the byte-level BPE trained \
                     here ends documents with `{}`",
                    tokenizer::EOT
                ),
            ));
        }
        opts.eot_token = t;
        opts.eot_key = "flag --eot-token".into();
    }
    if let Some(n) = args.shard_tokens {
        if n == 0 {
            return Err(flag("--shard-tokens", "must be at least 1"));
        }
        opts.shard_tokens = n;
    }
    if let Some(f) = args.val_fraction {
        if !(0.0..=0.5).contains(&f) {
            return Err(flag("--val-fraction", "must be in [0, 0.5]"));
        }
        opts.val_fraction = f;
    }
    opts.dtype = args.dtype;
    opts.skip_bad |= args.skip_bad;
    opts.threads = args.threads;
    opts.overwrite = args.overwrite;
    let Some(out) = args.out.or(cfg_out.map(PathBuf::from)) else {
        return Err(flag(
            "--out",
            "missing: name the output directory (or set data.shards)",
        ));
    };
    opts.stop = Some(super::stop_on_signal(
        "stopping between rounds of tokenization; the partial output is removed",
        "the partial output stays in a hidden .NAME.tmp-PID directory beside --out",
    )?);
    let p = prepare::prepare(&opts, &out)?;
    println!("{}", p.summary());
    Ok(())
}
