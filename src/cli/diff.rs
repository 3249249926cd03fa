//! `canopy diff <app>`: what the app's child runs against what Git wants, from
//! Redis only. Exit 0 when they agree, 1 when they differ (like diff(1)).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::store::{StoreArgs, runtime};
use super::{CliError, EXIT_OK, EXIT_PROBLEMS, Output};
use crate::layout::AppName;
use crate::plan::FileChangeKind;
use crate::view::{self, Diff, Side};

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The app, e.g. payments/api (`.` is the root app).
    #[arg(value_parser = AppName::parse)]
    pub app: AppName,
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(args: DiffArgs) -> Result<ExitCode, CliError> {
    let runtime = runtime()?;
    let (mut store, _) = args.store.connect(&runtime)?;
    let app = &args.app;
    let Some(diff) = runtime.block_on(view::diff(&mut store, app))? else {
        return Err(CliError::UnknownApp {
            app: app.to_string(),
            namespace: store.namespace().to_owned(),
        });
    };
    let text = match args.output {
        Output::Json => serde_json::to_string_pretty(&diff).expect("a diff serializes"),
        Output::Text => render(&diff),
    };
    writeln!(std::io::stdout(), "{text}").map_err(CliError::Output)?;
    Ok(ExitCode::from(if diff.in_sync {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    }))
}

fn render(diff: &Diff) -> String {
    let side = |name: &str, side: &Option<Side>| match side {
        Some(s) => format!(
            "{name:<9} {} generation {} revision {}{}\n",
            s.digest,
            s.generation,
            if s.revision.is_empty() {
                "-"
            } else {
                &s.revision
            },
            s.status
                .as_ref()
                .map(|st| format!(" ({st})"))
                .unwrap_or_default()
        ),
        None => format!("{name:<9} -\n"),
    };
    let mut out = format!("app {}\n", diff.app);
    out.push_str(&side("desired", &diff.desired));
    out.push_str(&side("observed", &diff.observed));
    match (&diff.files, diff.in_sync) {
        (_, true) => out.push_str("in sync"),
        (Some(files), false) => {
            for f in files {
                let mark = match f.change {
                    FileChangeKind::Added => '+',
                    FileChangeKind::Modified => '~',
                    FileChangeKind::Deleted => '-',
                };
                out.push_str(&format!("{mark} {}\n", f.path));
            }
            out.push_str("(+ only in Git, - only in the child, ~ content differs)");
        }
        (None, false) => out.push_str(&format!(
            "digests differ; the child reported no file list ({} files desired)",
            diff.desired_files
        )),
    }
    out
}
