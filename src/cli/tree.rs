//! `canopy tree`: the app tree with digests. The JSON form is documented in
//! docs/cli.md and is stable: fields are only ever added.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::{CliError, EXIT_OK, EXIT_PROBLEMS, Output, SourceArgs};
use crate::layout::{App, AppName, LabelKey, Problem, SortedMap, SyncPolicy};
use crate::scan::Scan;

#[derive(Debug, Args)]
pub struct TreeArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(args: TreeArgs) -> Result<ExitCode, CliError> {
    let scan = args.source.scan()?;
    let text = match args.output {
        Output::Text => render_text(&scan),
        Output::Json => {
            let mut json = serde_json::to_string_pretty(&TreeJson::new(&scan))
                .expect("the tree model always serializes");
            json.push('\n');
            json
        }
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(CliError::Output)?;
    if args.output == Output::Text {
        for problem in scan.apps.all_problems() {
            eprintln!("error: {problem}");
        }
    }
    let code = if scan.has_problems() {
        EXIT_PROBLEMS
    } else {
        EXIT_OK
    };
    // The process exits next: freeing a snapshot's hundred thousand small
    // allocations one by one would cost ~50 ms at 10,000 apps for nothing.
    std::mem::forget(scan);
    Ok(ExitCode::from(code))
}

/// `canopy tree --output json`.
#[derive(Debug, Serialize)]
pub struct TreeJson<'a> {
    pub source: &'a str,
    pub revision: Option<&'a str>,
    pub apps: Vec<AppJson<'a>>,
    pub problems: Vec<&'a Problem>,
}

#[derive(Debug, Serialize)]
pub struct AppJson<'a> {
    pub name: &'a AppName,
    /// Directory inside the repository (`""` for the repository's top).
    pub dir: &'a str,
    pub parent: Option<&'a AppName>,
    pub children: &'a [AppName],
    pub generated: bool,
    pub sync: SyncPolicy,
    pub wave: i32,
    pub depends_on: &'a [AppName],
    pub labels: &'a SortedMap<LabelKey, String>,
    pub valid: bool,
    /// Number of files; `null` when the app is invalid.
    pub files: Option<usize>,
    pub bytes: Option<u64>,
    pub digest: Option<String>,
    pub config_digest: Option<String>,
}

impl<'a> TreeJson<'a> {
    pub fn new(scan: &'a Scan) -> Self {
        TreeJson {
            source: &scan.source,
            revision: scan.revision.as_deref(),
            apps: scan
                .apps
                .apps
                .values()
                .map(|app| {
                    let digest = scan.digests.get(&app.name);
                    AppJson {
                        name: &app.name,
                        dir: &app.dir,
                        parent: app.parent.as_ref(),
                        children: &app.children,
                        generated: app.generated,
                        sync: app.spec.sync,
                        wave: app.spec.wave,
                        depends_on: &app.spec.depends_on,
                        labels: &app.spec.labels,
                        valid: digest.is_some(),
                        files: digest.map(|d| d.files.len()),
                        bytes: digest.map(|d| d.bytes),
                        digest: digest.map(|d| d.digest.to_string()),
                        config_digest: digest.map(|d| d.config_digest.to_string()),
                    }
                })
                .collect(),
            problems: scan.apps.all_problems(),
        }
    }
}

/// An indented tree, one app per line, children in name order:
///
/// ```text
/// .                 2 files  sha256:4d5e6f...
/// ├── payments      3 files  sha256:...      manual
/// ```
pub fn render_text(scan: &Scan) -> String {
    let mut rows: Vec<(String, &App)> = Vec::new();
    if let Some(root) = scan.apps.apps.get(&AppName::root()) {
        collect_rows(scan, root, String::new(), None, &mut rows);
    }
    let width = rows
        .iter()
        .map(|(label, _)| label.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(out, "{}: {} apps", scan.source, scan.apps.apps.len());
    for (label, app) in rows {
        let pad = width - label.chars().count();
        let _ = write!(out, "{label}{:pad$}  ", "");
        match scan.digests.get(&app.name) {
            Some(d) => {
                let noun = if d.files.len() == 1 { "file " } else { "files" };
                let _ = write!(
                    out,
                    "{:>5} {noun}  {}  config {}",
                    d.files.len(),
                    short(&d.digest.to_string()),
                    short(&d.config_digest.to_string())
                );
            }
            None => out.push_str("  INVALID (see errors)"),
        }
        let mut notes = Vec::new();
        if app.generated {
            notes.push("generated".to_owned());
        }
        if app.spec.sync == SyncPolicy::Manual {
            notes.push("manual".to_owned());
        }
        if app.spec.wave != 0 {
            notes.push(format!("wave {}", app.spec.wave));
        }
        if !app.spec.depends_on.is_empty() {
            let deps: Vec<&str> = app.spec.depends_on.iter().map(AppName::as_str).collect();
            notes.push(format!("after {}", deps.join(",")));
        }
        if !notes.is_empty() {
            let _ = write!(out, "  [{}]", notes.join("; "));
        }
        out.push('\n');
    }
    out
}

/// `sha256:` and the first 12 hex digits, like an abbreviated Git id.
fn short(digest: &str) -> &str {
    &digest[..digest.len().min("sha256:".len() + 12)]
}

fn collect_rows<'a>(
    scan: &'a Scan,
    app: &'a App,
    indent: String,
    last: Option<bool>,
    rows: &mut Vec<(String, &'a App)>,
) {
    let branch = match last {
        None => "",
        Some(true) => "└── ",
        Some(false) => "├── ",
    };
    rows.push((format!("{indent}{branch}{}", app.name), app));
    let child_indent = match last {
        None => indent,
        Some(true) => format!("{indent}    "),
        Some(false) => format!("{indent}│   "),
    };
    for (i, child) in app.children.iter().enumerate() {
        if let Some(child_app) = scan.apps.apps.get(child) {
            let is_last = i + 1 == app.children.len();
            collect_rows(scan, child_app, child_indent.clone(), Some(is_last), rows);
        }
    }
}
