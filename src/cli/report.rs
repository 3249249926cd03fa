//! `canopy report`: one drift report now, from Redis only (like `canopy status`).
//! Printed, never stored or delivered: the daemon's schedules do that.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::store::{StoreArgs, runtime};
use super::{CliError, EXIT_OK};
use crate::report::{ON_DEMAND, collect, render};

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Tables for the terminal.
    Text,
    /// Markdown: a heading, a summary, a table per parent app.
    #[value(alias = "markdown")]
    Md,
    /// The JSON stored and posted by schedules (docs/reports.md).
    Json,
    /// A Slack message (`{"text", "blocks"}`), as posted to `format: slack` sinks.
    Slack,
}

pub fn run(args: ReportArgs) -> Result<ExitCode, CliError> {
    let runtime = runtime()?;
    let (mut store, sync_timeout) = args.store.connect(&runtime)?;
    let now = chrono::Utc::now();
    let timeout = chrono::Duration::from_std(sync_timeout).unwrap_or(chrono::Duration::MAX);
    let report = runtime.block_on(collect(&mut store, ON_DEMAND, now, false, now, timeout))?;
    let text = match args.format {
        Format::Text => render::text(&report),
        Format::Md => render::markdown(&report),
        Format::Json => serde_json::to_string_pretty(&report).expect("a report serializes") + "\n",
        Format::Slack => {
            serde_json::to_string_pretty(&render::slack(&report)).expect("JSON serializes") + "\n"
        }
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(CliError::Output)?;
    Ok(ExitCode::from(EXIT_OK))
}
