//! `canopy status`: every app's status, desired vs observed, from Redis only.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::store::{StoreArgs, runtime};
use super::{CliError, EXIT_OK, Output};
use crate::present::{align_columns, format_age};
use crate::view::{self, AppStatus};

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(args: StatusArgs) -> Result<ExitCode, CliError> {
    let runtime = runtime()?;
    let (mut store, sync_timeout) = args.store.connect(&runtime)?;
    let now = chrono::Utc::now();
    let timeout = chrono::Duration::from_std(sync_timeout).unwrap_or(chrono::Duration::MAX);
    let overview = runtime.block_on(view::overview(&mut store, now, timeout))?;
    let text = match args.output {
        Output::Json => serde_json::to_string_pretty(&overview).expect("status serializes"),
        Output::Text => {
            let mut text = String::new();
            if let Some(error) = &overview.source_error {
                // The desired state below is the last good commit's.
                text.push_str(&format!(
                    "source error since {}: {}\n",
                    error.since, error.message
                ));
            }
            text + &table(&overview.apps, overview.commit.as_deref(), now)
        }
    };
    writeln!(std::io::stdout(), "{text}").map_err(CliError::Output)?;
    Ok(ExitCode::from(EXIT_OK))
}

fn table(apps: &[AppStatus], commit: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut rows = vec![[
        "APP".to_owned(),
        "STATUS".to_owned(),
        "FOR".to_owned(),
        "GEN".to_owned(),
        "DESIRED".to_owned(),
        "OBSERVED".to_owned(),
        "REASON".to_owned(),
    ]];
    for app in apps {
        let generation = match (&app.desired, &app.observed) {
            (Some(d), Some(o)) => format!("{}/{}", o.generation, d.generation),
            (Some(d), None) => format!("-/{}", d.generation),
            (None, Some(o)) => format!("{}/-", o.generation),
            (None, None) => "-".to_owned(),
        };
        rows.push([
            app.app.to_string(),
            app.record.status.as_str().to_owned(),
            format_age(now - app.record.since),
            generation,
            short(app.desired.as_ref().map(|d| d.digest.as_str())),
            short(app.observed.as_ref().map(|o| o.digest.as_str())),
            app.record.reason.clone(),
        ]);
    }
    let mut out = format!("commit {}\n", commit.unwrap_or("(none yet)"));
    out.push_str(&align_columns(&rows, ""));
    out.pop();
    out
}

/// `sha256:` and the first 12 hex digits: enough to tell digests apart by eye.
fn short(digest: Option<&str>) -> String {
    match digest {
        Some(d) => d.chars().take("sha256:".len() + 12).collect(),
        None => "-".to_owned(),
    }
}
