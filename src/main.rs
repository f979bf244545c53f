//! The `colossus` binary: parse flags, run, and turn errors into a message and an exit code
//! (2 for bad input, 1 for failures while running) instead of a panic.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = colossus::cli::Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Our errors already carry their cause in the message; `{:#}` would repeat it.
            match err.downcast_ref::<colossus::Error>() {
                Some(e) => {
                    colossus::say::err(format_args!("error: {e}"));
                    ExitCode::from(e.exit_code() as u8)
                }
                None => {
                    colossus::say::err(format_args!("error: {err:#}"));
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn run(cli: colossus::cli::Cli) -> anyhow::Result<()> {
    colossus::cli::run(cli)?;
    Ok(())
}
