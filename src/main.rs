//! The `colossus` binary: parse flags, run, and turn errors into a message and an exit code
//! (2 for bad input, 1 for failures while running) instead of a panic.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = colossus::cli::Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            let code = err
                .downcast_ref::<colossus::Error>()
                .map_or(1, colossus::Error::exit_code);
            ExitCode::from(code as u8)
        }
    }
}

fn run(cli: colossus::cli::Cli) -> anyhow::Result<()> {
    colossus::cli::run(cli)?;
    Ok(())
}
