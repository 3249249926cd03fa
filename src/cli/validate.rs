//! `canopy validate`: every problem as `file:line:column: message`, exit 1 if any.

use std::process::ExitCode;

use clap::Args;

use super::{CliError, EXIT_OK, EXIT_PROBLEMS, Output, SourceArgs};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Output format (`json`: `{"valid": bool, "apps": N, "problems": [...]}`).
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(args: ValidateArgs) -> Result<ExitCode, CliError> {
    let scan = args.source.scan()?;
    let problems = scan.apps.all_problems();
    match args.output {
        Output::Text => {
            for problem in &problems {
                println!("{problem}");
            }
            if problems.is_empty() {
                println!(
                    "{}: {} apps, no problems",
                    scan.source,
                    scan.apps.apps.len()
                );
            } else {
                eprintln!("{} problem(s) in {}", problems.len(), scan.source);
            }
        }
        Output::Json => {
            let json = serde_json::json!({
                "source": scan.source,
                "valid": problems.is_empty(),
                "apps": scan.apps.apps.len(),
                "problems": problems,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&json).expect("json values serialize")
            );
        }
    }
    let code = if problems.is_empty() {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    };
    drop(problems);
    // As in `canopy tree`: the process exits next, skip freeing the snapshot.
    std::mem::forget(scan);
    Ok(ExitCode::from(code))
}
