//! The `canopy` binary: parse arguments, install logging, run, map the outcome to
//! an exit code. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = canopy::cli::Cli::parse();
    canopy::cli::init_logging(&cli);
    match canopy::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", canopy::error_chain(&error));
            ExitCode::from(canopy::cli::EXIT_ERROR)
        }
    }
}
