//! The `colossus` command line: argument definitions and the dispatch to each subcommand.

pub mod params;
pub mod train;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error::Result;

#[derive(Debug, Parser)]
#[command(name = "colossus", version, about = "Train Grok-1-architecture language models in pure Rust")]
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
    /// No progress bar or log lines.
    #[arg(long)]
    pub quiet: bool,
    /// Replace an existing run directory with the same run_name.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => train::run(args),
        Command::Params(args) => params::run(args),
    }
}
