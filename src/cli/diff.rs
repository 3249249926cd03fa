//! `canopy diff <app>`: what the app's child runs against what Git wants, from
//! Redis only. Exit 0 when they agree, 1 when they differ (like diff(1)).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::store::{StoreArgs, runtime};
use super::{CliError, EXIT_OK, EXIT_PROBLEMS, Output};
use crate::layout::AppName;
use crate::plan::{FileChange, FileChangeKind, merge_manifests};

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

#[derive(Debug, serde::Serialize)]
struct Diff {
    app: String,
    desired: Option<Side>,
    observed: Option<Side>,
    in_sync: bool,
    /// Per file, when the child reported its file list (`observed_files`).
    files: Option<Vec<FileChange>>,
    /// Desired file count, when the child reported no file list.
    desired_files: usize,
}

#[derive(Debug, serde::Serialize)]
struct Side {
    digest: String,
    generation: String,
    revision: String,
    /// The child's reported status, for the observed side.
    status: Option<String>,
}

pub fn run(args: DiffArgs) -> Result<ExitCode, CliError> {
    let runtime = runtime()?;
    let (mut store, _) = args.store.connect(&runtime)?;
    let app = &args.app;
    let (state, desired_files, observed_files) = runtime.block_on(async {
        let state = store.app_states(&[app]).await?.remove(0);
        let desired_files = store.stored_files(app).await?;
        let observed_files = store.observed_files(app).await?;
        Ok::<_, crate::store::StoreError>((state, desired_files, observed_files))
    })?;
    let side = |hash: &std::collections::HashMap<String, String>, status: bool| {
        let get = |f: &str| hash.get(f).cloned().unwrap_or_default();
        hash.contains_key("digest").then(|| Side {
            digest: get("digest"),
            generation: get("generation"),
            revision: get("revision"),
            status: status.then(|| get("status")),
        })
    };
    let desired = side(&state.desired, false);
    let observed = side(&state.observed, true);
    if desired.is_none() && observed.is_none() {
        return Err(CliError::UnknownApp {
            app: app.to_string(),
            namespace: store.namespace().to_owned(),
        });
    }
    let in_sync = matches!((&desired, &observed), (Some(d), Some(o)) if d.digest == o.digest);
    let files = (!observed_files.is_empty()).then(|| {
        merge_manifests(
            observed_files.iter().map(|(p, h)| (p.as_str(), h)),
            desired_files.iter().map(|(p, h)| (p.as_str(), h)),
        )
    });
    let diff = Diff {
        app: app.to_string(),
        desired,
        observed,
        in_sync,
        files,
        desired_files: desired_files.len(),
    };
    let text = match args.output {
        Output::Json => serde_json::to_string_pretty(&diff).expect("a diff serializes"),
        Output::Text => render(&diff),
    };
    writeln!(std::io::stdout(), "{text}").map_err(CliError::Output)?;
    Ok(ExitCode::from(if in_sync {
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
