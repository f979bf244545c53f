//! The `colossus` command line: argument definitions and the dispatch to each subcommand.

pub mod bench;
mod bench_checkpoint;
pub mod bench_data;
mod bench_flash;
pub mod export;
pub mod generate;
pub mod params;
pub mod plot;
pub mod prepare;
pub mod train;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error::Result;

#[derive(Debug, Parser)]
#[command(
    name = "colossus",
    version,
    about = "Train Grok-1-architecture language models in pure Rust"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a model as a YAML config describes (see configs/).
    Train(TrainArgs),
    /// Print a config's parameter counts (total and active) without allocating the model.
    Params(ConfigArgs),
    /// Tokenize text/JSONL into memory-mapped token shards with a manifest (see docs/data-format.md).
    Prepare(prepare::PrepareArgs),
    /// Measure training throughput on random tokens: tokens/s, TFLOP/s, MFU, peak memory
    /// (`--data`: tokenization MB/s and sampler batches/s instead).
    Bench(BenchArgs),
    /// Continue a prompt with a trained checkpoint (KV-cached sampling, streamed to stdout).
    Generate(GenerateArgs),
    /// Write a checkpoint as a Hugging Face Grok1ForCausalLM folder (SGLang, vLLM, PyTorch).
    Export(ExportArgs),
    /// Read a Hugging Face Grok1ForCausalLM folder into a Colossus checkpoint.
    Import(ImportArgs),
    /// Mean loss and perplexity of a checkpoint or exported folder on text files.
    Eval(EvalArgs),
    /// Describe a checkpoint: step, config, tensor names, shapes, dtypes and sizes; verify checksums.
    Inspect(InspectArgs),
    /// Draw a run's metrics.jsonl into a PNG: loss and validation loss, LR, tokens/s, expert load.
    Plot(PlotArgs),
    /// Size a training run on a GPU cluster: memory per GPU, communication, time and power.
    Plan(crate::plan::PlanArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A checkpoint directory, or a run directory (uses its latest checkpoint).
    pub checkpoint: PathBuf,
    /// New output folder.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: crate::checkpoint::tensors::StoreDtype,
    /// Largest shard, in MB of tensor data; bigger models are split with an index file.
    // Bounded so the size in bytes fits a u64 (u64::MAX overflowed the multiplication).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=u64::MAX / 1_000_000))]
    pub max_shard_size_mb: u64,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A Hugging Face Grok1ForCausalLM folder (config.json, *.safetensors, tokenizer.json).
    pub dir: PathBuf,
    /// New checkpoint directory.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A checkpoint, run directory or exported folder.
    pub model: PathBuf,
    /// Text or JSONL files, or directories of them (as `prepare` reads them).
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// JSONL field holding the text.
    #[arg(long, default_value = crate::data::DEFAULT_JSONL_FIELD)]
    pub jsonl_field: String,
    /// Window length, at most the model's max_seq_len [default: max_seq_len]
    #[arg(long, value_parser = at_least_one)]
    pub seq: Option<usize>,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    pub batch: usize,
    #[arg(long, value_enum)]
    pub backend: Option<crate::config::BackendKind>,
}

/// SIGINT/SIGTERM (Ctrl-C, `kill`, a cluster scheduler's preemption) set the returned flag, and
/// the command stops as `doing` tells the user. A second signal exits at once with status 130,
/// leaving what `left` says (for training: a checkpoint being written stays a hidden temp
/// directory and `latest` keeps pointing at the last complete one).
pub fn stop_on_signal(
    doing: &'static str,
    left: &'static str,
) -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let flag = std::sync::Arc::new(AtomicBool::new(false));
    let seen = flag.clone();
    ctrlc::set_handler(move || {
        if seen.swap(true, Ordering::SeqCst) {
            crate::say::err(format_args!("second signal: exiting now; {left}"));
            std::process::exit(130);
        }
        crate::say::err(format_args!(
            "signal received: {doing} (signal again to exit at once)"
        ));
    })
    .map_err(|e| crate::error::Error::Train(format!("installing the signal handler: {e}")))?;
    Ok(flag)
}

/// A reader that stops early (`colossus generate ... | head`, `inspect | head`) closes the pipe,
/// and Rust's runtime ignores SIGPIPE, so the next print panicked: "failed printing to stdout",
/// a backtrace, exit 101. These commands end as Unix tools do there, by the signal's default
/// action. `train` only once it is done: its ranks talk over sockets while it runs, where a
/// peer gone must be an error the run reports (naming the rank), not a silent end.
fn end_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: sets the process's action for one signal; no handler of ours is replaced.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A count flag that 0 would make meaningless (`eval --seq 0` once looped forever, `bench
/// --steps 0` reported a throughput of 0, `train --stop-after 0` trained nothing).
fn at_least_one(v: &str) -> std::result::Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a whole number of at least 1".into()),
    }
}

/// A config file plus `--set` overrides, shared by every subcommand that reads one.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Path to the YAML config, e.g. configs/small.yaml.
    pub config: PathBuf,
    /// Override one config key, e.g. `--set train.steps=100` (repeatable; applied in order).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    pub set: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// No progress bar: one plain log line every train.log_every steps (as when not on a terminal).
    #[arg(long)]
    pub quiet: bool,
    /// Replace an existing run directory with the same run_name.
    #[arg(long)]
    pub overwrite: bool,
    /// Continue the run from its newest complete checkpoint (`--resume`), or from the checkpoint
    /// directory given (`--resume PATH`). Same as `train.resume` in the config.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "auto")]
    pub resume: Option<String>,
    /// Stop after this many steps (saving a checkpoint); `--resume` continues the run.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub stop_after: Option<usize>,
    #[command(flatten)]
    pub dist: DistArgs,
}

/// Data-parallel flags; each overrides the `distributed:` key of the same name and the
/// environment variable in brackets (docs/distributed.md).
#[derive(Debug, Args, Default)]
pub struct DistArgs {
    /// Ranks in the job [WORLD_SIZE].
    #[arg(long, value_name = "N")]
    pub world_size: Option<usize>,
    /// This process's (first) rank [RANK].
    #[arg(long, value_name = "R")]
    pub rank: Option<usize>,
    /// Ranks this process runs, one thread each.
    #[arg(long, value_name = "N")]
    pub local_ranks: Option<usize>,
    /// Host of rank 0's process [MASTER_ADDR].
    #[arg(long, value_name = "HOST")]
    pub master_addr: Option<String>,
    /// Port of the collective orchestrator on rank 0's host [MASTER_PORT].
    #[arg(long, value_name = "PORT")]
    pub master_port: Option<u16>,
    /// This machine's address as the others reach it [NODE_ADDR].
    #[arg(long, value_name = "HOST")]
    pub node_addr: Option<String>,
}

impl DistArgs {
    /// The flags as `--set` overrides.
    pub fn sets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut num = |k: &str, v: Option<usize>| {
            if let Some(v) = v {
                out.push(format!("distributed.{k}={v}"));
            }
        };
        num("world_size", self.world_size);
        num("rank", self.rank);
        num("local_ranks", self.local_ranks);
        num("master_port", self.master_port.map(usize::from));
        for (k, v) in [("master_addr", &self.master_addr), ("node_addr", &self.node_addr)] {
            if let Some(v) = v {
                out.push(format!("distributed.{k}=\"{v}\""));
            }
        }
        out
    }
}

/// `bench`'s modes that time no training step: the flags that change the step do not apply.
const NOT_TRAINING: [&str; 4] = ["checkpoint", "data", "check_flash_backward", "peer_json"];

#[derive(Debug, Args)]
// The modes that run instead of training steps, one at a time: given together, the first of them
// ran and the others were dropped without a word (found 2026-12-07).
#[command(group(clap::ArgGroup::new("mode").multiple(false)))]
pub struct BenchArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Timed optimizer steps (0 would print a throughput of 0 and an MFU of 0% as if measured).
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    pub steps: usize,
    /// Untimed steps first (allocation, autotune, kernel compilation).
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Sequences per step (sets train.micro_batch).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Tokens per sequence (sets data.seq_len).
    #[arg(long)]
    pub seq: Option<usize>,
    /// Measure checkpoint save/load throughput and the training stall per save instead
    /// (writes under train.out_dir/run_name, removed afterwards).
    #[arg(long, group = "mode")]
    pub checkpoint: bool,
    /// Benchmark the data pipeline on the config's corpus instead of the model: tokenization MB/s
    /// on one thread and on every core, and sampler batches/s.
    #[arg(long, group = "mode")]
    pub data: bool,
    /// Run the plain burn tensor-op paths instead of the fused kernels (`model::fused` on the
    /// CPU, `backend/gpu.rs`'s kernels on GPUs), to measure what they buy.
    #[arg(long, conflicts_with_all = NOT_TRAINING)]
    pub plain_kernels: bool,
    /// Under bf16, compute the output head in f32 (tf32 on tensor cores), as before the bf16
    /// head product (`model::wide`), to measure what that product buys.
    #[arg(long, conflicts_with_all = NOT_TRAINING)]
    pub f32_head: bool,
    /// On a GPU, run each MoE expert as its own autodiff node (the path before `model::experts`'
    /// one node for all of a layer's experts), to measure what that node buys.
    #[arg(long, conflicts_with_all = NOT_TRAINING)]
    pub per_expert_moe: bool,
    /// Under `attention: flash`, run the composed backward (matmuls around the softmax kernels)
    /// even where the fused flash backward runs on tensor cores, to measure what it buys.
    #[arg(long, conflicts_with_all = NOT_TRAINING)]
    pub composed_flash_backward: bool,
    /// Instead of benchmarking: compare the fused flash backward's gradients with the composed
    /// backward's on the config's GPU backend, precision and attention shape (one sequence of
    /// data.seq_len); exit 1 if they differ by more than the precision's tolerance.
    #[arg(long, group = "mode")]
    pub check_flash_backward: bool,
    /// Without a GPU: run the steps on a stand-in CUDA device that compiles every kernel they
    /// launch for an H100/H200 (sm_90a) with cubecl's CUDA code generator and NVRTC, and runs
    /// none; print how many compiled and each failure. Needs a `--features cuda` build, NVRTC on
    /// the library path and the CUDA headers under CUDA_PATH. Any `backend` in the config.
    #[arg(long, group = "mode")]
    pub compile_only: bool,
    /// With --compile-only: also store each kernel it compiles, as sm_90a machine code, in DIR,
    /// under the key burn's CUDA runtime looks it up by. A GPU host whose `cubecl.toml` says
    /// `[compilation] cache = { file = "DIR" }` loads those kernels instead of compiling them
    /// (minutes of NVRTC on a first run). Runs add to what DIR holds. Use it only with the very
    /// binary that wrote it: the key does not identify the build.
    #[arg(long, value_name = "DIR", requires = "compile_only")]
    pub kernel_cache: Option<PathBuf>,
    /// Write the config's model shape as a Hugging Face config.json (the input of
    /// shared/reference/torch_train_peer.py) to this path instead of benchmarking.
    #[arg(long, value_name = "PATH", group = "mode")]
    pub peer_json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// A run directory (checkpoints/<run_name>) holding metrics.jsonl.
    pub run_dir: PathBuf,
    /// Output PNG [default: RUN_DIR/metrics.png].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A checkpoint directory, a run directory (its latest checkpoint), or an exported folder.
    pub checkpoint: PathBuf,
    /// Skip reading every byte to check the CRC-32 checksums.
    #[arg(long)]
    pub no_verify: bool,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// A checkpoint, a run directory (its latest checkpoint) or an exported Hugging Face folder.
    pub checkpoint: PathBuf,
    #[arg(long, default_value = "")]
    pub prompt: String,
    #[arg(long, default_value_t = 200)]
    pub max_new_tokens: usize,
    /// 0 for greedy decoding.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Sample among the k most likely tokens (0: no limit).
    #[arg(long, default_value_t = 50)]
    pub top_k: usize,
    /// Then among the fewest tokens whose probabilities reach p, in (0, 1] (1: no limit).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Recompute the full sequence every token instead of using the KV cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Backend to run on (default cpu).
    #[arg(long, value_enum)]
    pub backend: Option<crate::config::BackendKind>,
}

pub fn run(cli: Cli) -> Result<()> {
    if !matches!(cli.command, Command::Train(_)) {
        end_quietly_on_a_closed_pipe();
    }
    match cli.command {
        Command::Train(args) => train::run(args),
        Command::Params(args) => params::run(args),
        Command::Prepare(args) => prepare::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Export(args) => export::run_export(args),
        Command::Import(args) => export::run_import(args),
        Command::Eval(args) => export::run_eval(args),
        Command::Inspect(args) => {
            let dir = if args.checkpoint.join(crate::checkpoint::WEIGHTS_FILE).is_file()
                || args.checkpoint.join("model.safetensors.index.json").is_file()
            {
                args.checkpoint.clone()
            } else {
                generate::resolve_checkpoint(&args.checkpoint)?
            };
            print!("{}", crate::checkpoint::inspect::describe(&dir, !args.no_verify)?);
            Ok(())
        }
        Command::Plot(args) => plot::run(args),
        Command::Plan(args) => crate::plan::run(args),
    }
}
