//! docs/cli.md checked against the clap definitions, so that the hand-written
//! reference cannot drift from the binary. A hand-written page keeps what a
//! generated one (clap-markdown) cannot: the prose, examples, exit codes and JSON
//! shapes; these tests keep its option tables exact.
//!
//! The conventions docs/cli.md follows, and these tests enforce:
//!
//! - Each command has a section headed ``## `canopy <command>` ``; the text before
//!   the first `##` heading is the section of `canopy` itself (the global options
//!   and a table with a row per command).
//! - Each option and positional argument has a row in an option table of its
//!   command's section whose first cell names it (`--long`, its short `-s`, and
//!   `a|b` listing its possible values; `<name>` for a positional). The row also
//!   names its environment variable as ``(`CANOPY_...`)`` and its default as
//!   ``default `value` ``. Options shared by several commands live in one section
//!   of their own that each command's section links to (`[...](#anchor)`).
//! - Nothing else: an option, variable or default in a section that clap does not
//!   have for that command is an error too, and so is a `canopy ...` command line
//!   anywhere in README.md or docs/ naming a command or option that does not exist.
//!
//! Hidden arguments and clap's own `--help` and `--version` are exempt.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use clap::{Arg, Command, CommandFactory};

use super::Cli;

const CLI_MD: &str = "docs/cli.md";

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

/// The fully built command tree: global options propagated, `--help` added.
fn cli() -> Command {
    let mut cli = Cli::command();
    cli.build();
    cli
}

/// The subcommands to document: clap's `help` is exempt.
fn subcommands(command: &Command) -> impl Iterator<Item = &Command> {
    command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

/// Every command with its path of subcommand names (`[]` for `canopy` itself).
fn commands(command: &Command) -> Vec<(Vec<String>, &Command)> {
    fn walk<'a>(
        path: Vec<String>,
        command: &'a Command,
        out: &mut Vec<(Vec<String>, &'a Command)>,
    ) {
        for sub in subcommands(command) {
            let mut sub_path = path.clone();
            sub_path.push(sub.get_name().to_owned());
            walk(sub_path, sub, out);
        }
        out.push((path, command));
    }
    let mut out = Vec::new();
    walk(Vec::new(), command, &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn title(path: &[String]) -> String {
    let mut title = "canopy".to_owned();
    for name in path {
        title.push(' ');
        title.push_str(name);
    }
    format!("`{title}`")
}

/// clap's own arguments, which need no documentation.
fn exempt(arg: &Arg) -> bool {
    arg.is_hide_set() || matches!(arg.get_id().as_str(), "help" | "version")
}

/// What docs/cli.md must say about one argument.
#[derive(Debug)]
struct ArgSpec {
    /// `--long`, or `<name>` for a positional.
    name: String,
    short: Option<String>,
    env: Option<String>,
    default: Option<String>,
    /// In clap's order.
    possible_values: Vec<String>,
}

impl ArgSpec {
    fn new(arg: &Arg) -> ArgSpec {
        let takes_values = arg.get_action().takes_values();
        let name = match arg.get_long() {
            Some(long) => format!("--{long}"),
            None => {
                let name = arg
                    .get_value_names()
                    .and_then(|names| names.first())
                    .map_or_else(|| arg.get_id().to_string(), |name| name.to_string());
                format!("<{}>", name.to_lowercase())
            }
        };
        // A flag's implicit `false` is no default worth documenting.
        let default = match arg.get_default_values() {
            [value] if takes_values => Some(value.to_string_lossy().into_owned()),
            _ => None,
        };
        let possible_values = if takes_values {
            arg.get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| v.get_name().to_owned())
                .collect()
        } else {
            Vec::new()
        };
        ArgSpec {
            name,
            short: arg.get_short().map(|c| format!("-{c}")),
            env: arg
                .get_env()
                .filter(|_| !arg.is_hide_env_set())
                .map(|env| env.to_string_lossy().into_owned()),
            default,
            possible_values,
        }
    }

    /// Its possible values, in any order.
    fn value_set(&self) -> BTreeSet<String> {
        self.possible_values.iter().cloned().collect()
    }
}

/// The arguments of `command` that its section must document: its own, not the
/// global ones it inherits (those are documented once, with `canopy`).
fn documented_args(path: &[String], command: &Command) -> Vec<ArgSpec> {
    command
        .get_arguments()
        .filter(|arg| !exempt(arg) && (path.is_empty() || !arg.is_global_set()))
        .map(ArgSpec::new)
        .collect()
}

/// The options a command accepts, exempt ones included: `--long` and `-s`.
fn accepted_options(command: &Command) -> BTreeSet<String> {
    let mut options = BTreeSet::new();
    for arg in command.get_arguments() {
        for long in arg.get_long_and_visible_aliases().unwrap_or_default() {
            options.insert(format!("--{long}"));
        }
        for short in arg.get_short_and_visible_aliases().unwrap_or_default() {
            options.insert(format!("-{short}"));
        }
    }
    options
}

/// A `##` section of docs/cli.md, fenced code blocks left out.
#[derive(Debug)]
struct Section {
    /// The heading without `## `; `None` for the text before the first heading.
    heading: Option<String>,
    /// Line numbers (1-based) and lines.
    lines: Vec<(usize, String)>,
}

impl Section {
    /// `["agent"]` for ``## `canopy agent` ``.
    fn command(&self) -> Option<Vec<String>> {
        let heading = self.heading.as_deref()?;
        let inner = heading.strip_prefix('`')?.strip_suffix('`')?;
        let mut words = inner.split(' ');
        (words.next() == Some("canopy")).then(|| words.map(str::to_owned).collect())
    }

    /// The heading's line (1 for the text before the first heading).
    fn line(&self) -> usize {
        self.lines.first().map_or(1, |(n, _)| *n)
    }

    fn links(&self) -> impl Iterator<Item = String> + '_ {
        self.lines.iter().flat_map(|(_, line)| {
            line.match_indices("](#").filter_map(|(at, _)| {
                let rest = &line[at + 3..];
                rest.find(')').map(|end| rest[..end].to_owned())
            })
        })
    }

    fn rows(&self) -> impl Iterator<Item = Row> + '_ {
        self.lines
            .iter()
            .filter(|(_, line)| line.trim_start().starts_with('|'))
            .map(|(number, line)| Row {
                line: *number,
                text: line.clone(),
                cells: cells(line),
            })
            .filter(|row| {
                !row.cells
                    .iter()
                    .all(|c| c.chars().all(|ch| matches!(ch, '-' | ':' | ' ')))
            })
    }
}

/// One row of a Markdown table.
#[derive(Debug)]
struct Row {
    line: usize,
    text: String,
    /// Cells, with `\|` unescaped.
    cells: Vec<String>,
}

impl Row {
    /// The first cell, without `canopy ...` command lines: the cell that names
    /// the options a row documents.
    fn first(&self) -> String {
        without_command_lines(self.cells.first().map_or("", String::as_str))
    }

    /// The options and positionals its first cell names.
    fn names(&self) -> BTreeSet<String> {
        let first = self.first();
        let mut names: BTreeSet<String> = options_in(&first).into_iter().collect();
        names.extend(placeholders(&first));
        names
    }

    /// ``(`CANOPY_X`)`` anywhere in the row.
    fn env_vars(&self) -> Vec<String> {
        between(&self.text, "(`", "`)")
            .into_iter()
            .filter(|v| v.starts_with("CANOPY_") && !v.contains(' '))
            .collect()
    }

    /// ``default `value` `` anywhere in the row.
    fn defaults(&self) -> Vec<String> {
        between(&self.text, "default `", "`")
    }

    /// The value lists (`a|b|c`) of its first cell's code spans.
    fn value_lists(&self) -> Vec<BTreeSet<String>> {
        code_spans(&self.first())
            .iter()
            .flat_map(|span| span.split_whitespace())
            .filter(|word| word.contains('|'))
            .map(|word| word.split('|').map(str::to_owned).collect())
            .collect()
    }
}

fn sections(markdown: &str) -> Vec<Section> {
    let mut sections = vec![Section {
        heading: None,
        lines: Vec::new(),
    }];
    let mut fenced = false;
    for (index, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        match line.strip_prefix("## ") {
            Some(heading) => sections.push(Section {
                heading: Some(heading.trim().to_owned()),
                lines: vec![(index + 1, line.to_owned())],
            }),
            None => sections
                .last_mut()
                .expect("there is always a section")
                .lines
                .push((index + 1, line.to_owned())),
        }
    }
    sections
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every heading's anchor, outside fenced code.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut anchors = BTreeSet::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            anchors.insert(anchor(line.trim_start_matches('#').trim()));
        }
    }
    anchors
}

fn cells(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut chars = line.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                cells.last_mut().expect("never empty").push('|');
            }
            '|' => cells.push(String::new()),
            _ => cells.last_mut().expect("never empty").push(c),
        }
    }
    // The empty strings before the leading and after the trailing `|`.
    cells.remove(0);
    if cells.last().is_some_and(|c| c.trim().is_empty()) {
        cells.pop();
    }
    cells.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// The texts between each `open` and the next `close`.
fn between(text: &str, open: &str, close: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(open) {
        rest = &rest[at + open.len()..];
        match rest.find(close) {
            Some(end) => {
                found.push(rest[..end].to_owned());
                rest = &rest[end + close.len()..];
            }
            None => break,
        }
    }
    found
}

/// The contents of a line's inline code spans.
fn code_spans(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// `text` without its `canopy ...` code spans: those are checked against the
/// command they run, wherever they appear.
fn without_command_lines(text: &str) -> String {
    let mut rest = text.to_owned();
    for span in code_spans(text) {
        if span.starts_with("canopy ") {
            rest = rest.replacen(&format!("`{span}`"), "", 1);
        }
    }
    rest
}

/// `<name>` placeholders.
fn placeholders(text: &str) -> Vec<String> {
    between(text, "<", ">")
        .into_iter()
        .filter(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-|".contains(c))
        })
        .map(|p| format!("<{p}>"))
        .collect()
}

/// The `--long` and `-s` options named in `text`: a run of dashes that does not
/// continue a word, then a name.
fn options_in(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'-' || (i > 0 && word(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let long = bytes.get(i + 1) == Some(&b'-');
        let start = i + if long { 2 } else { 1 };
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_alphanumeric() || (long && bytes[end] == b'-'))
        {
            end += 1;
        }
        let name = text[start..end].trim_end_matches('-');
        let next_is_word = bytes.get(end).is_some_and(|&b| word(b));
        if long && name.starts_with(|c: char| c.is_ascii_lowercase()) {
            found.push(format!("--{name}"));
        } else if !long
            && name.len() == 1
            && name.chars().all(|c| c.is_ascii_alphabetic())
            && !next_is_word
        {
            found.push(format!("-{name}"));
        }
        i = end.max(i + 1);
    }
    found
}

/// docs/cli.md's sections for each command: its own, then the ones it links to.
fn command_sections<'a>(sections: &'a [Section], path: &[String]) -> Option<Vec<&'a Section>> {
    let own = sections.iter().find(|s| match s.command() {
        Some(command) => command == path,
        None => path.is_empty() && s.heading.is_none(),
    })?;
    let mut found = vec![own];
    for link in own.links() {
        // Shared sections only: another command's options are not this one's.
        if let Some(shared) = sections.iter().find(|s| {
            s.command().is_none() && s.heading.as_deref().map(anchor).as_deref() == Some(&link)
        }) && !found.iter().any(|f| std::ptr::eq(*f, shared))
        {
            found.push(shared);
        }
    }
    Some(found)
}

fn where_(section: &Section) -> String {
    match &section.heading {
        Some(heading) => format!("{CLI_MD}:{} (## {heading})", section.line()),
        None => format!("{CLI_MD}:1 (the text before the first ## heading)"),
    }
}

fn assert_no_failures(failures: &[String], what: &str) {
    assert!(
        failures.is_empty(),
        "{what}: {} problem(s)\n- {}",
        failures.len(),
        failures.join("\n- ")
    );
}

/// Clap to docs: every command, option, short, variable, default and value list.
#[test]
fn every_command_and_option_is_documented_in_cli_md() {
    let cli = cli();
    let markdown = read(CLI_MD);
    let sections = sections(&markdown);
    let mut failures = Vec::new();
    for (path, command) in commands(&cli) {
        let title = title(&path);
        let Some(own) = command_sections(&sections, &path) else {
            failures.push(format!("{CLI_MD} has no section `## {title}`"));
            continue;
        };
        let rows: Vec<Row> = own.iter().flat_map(|s| s.rows()).collect();
        for spec in documented_args(&path, command) {
            let named: Vec<&Row> = rows
                .iter()
                .filter(|r| r.names().contains(&spec.name))
                .collect();
            let name = &spec.name;
            if named.is_empty() {
                failures.push(format!(
                    "{title}: {name} is missing: no row of an option table in {} names it in its first cell",
                    where_(own[0])
                ));
                continue;
            }
            let lines = named
                .iter()
                .map(|r| r.line.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            if let Some(short) = &spec.short
                && !named.iter().any(|r| options_in(&r.first()).contains(short))
            {
                failures.push(format!(
                    "{title}: the short form {short} of {name} is missing from its row ({CLI_MD} line {lines})"
                ));
            }
            if let Some(env) = &spec.env
                && !named.iter().any(|r| r.env_vars().contains(env))
            {
                failures.push(format!(
                    "{title}: the variable of {name} is missing: its row ({CLI_MD} line {lines}) must say (`{env}`)"
                ));
            }
            if let Some(default) = &spec.default
                && !named.iter().any(|r| r.defaults().contains(default))
            {
                failures.push(format!(
                    "{title}: the default of {name} is missing: its row ({CLI_MD} line {lines}) must say default `{default}`"
                ));
            }
            if !spec.possible_values.is_empty()
                && !named
                    .iter()
                    .any(|r| r.value_lists().contains(&spec.value_set()))
            {
                failures.push(format!(
                    "{title}: the values of {name} are missing: its row ({CLI_MD} line {lines}) must list {} in its first cell",
                    spec.possible_values.join("|")
                ));
            }
        }
        if path.is_empty() {
            // The overview table names every command.
            for sub in subcommands(command) {
                let prefix = format!("`canopy {}", sub.get_name());
                if !rows
                    .iter()
                    .any(|r| r.cells.first().is_some_and(|c| c.starts_with(&prefix)))
                {
                    failures.push(format!(
                        "`canopy {}` is missing from the table of commands at the top of {CLI_MD}",
                        sub.get_name()
                    ));
                }
            }
        }
        if path == ["run"] {
            // `canopy run` also reads these through the config layer.
            for var in crate::config::ENV_VARS {
                if !own
                    .iter()
                    .any(|s| s.lines.iter().any(|(_, l)| l.contains(var)))
                {
                    failures.push(format!(
                        "{title}: the config variable {var} is missing from {}",
                        where_(own[0])
                    ));
                }
            }
        }
    }
    assert_no_failures(&failures, "docs/cli.md lacks what clap defines");
}

/// Docs to clap: no section, option, variable or default that the code lacks.
#[test]
fn cli_md_documents_nothing_clap_lacks() {
    let cli = cli();
    let markdown = read(CLI_MD);
    let sections = sections(&markdown);
    let commands: BTreeMap<Vec<String>, &Command> = commands(&cli).into_iter().collect();
    let mut failures = Vec::new();
    for section in &sections {
        if let Some(path) = section.command()
            && !commands.contains_key(&path)
        {
            failures.push(format!(
                "{}: there is no command {}",
                where_(section),
                title(&path)
            ));
        }
    }
    for (path, command) in &commands {
        let Some(own) = command_sections(&sections, path) else {
            continue;
        };
        let title = title(path);
        let accepted = accepted_options(command);
        let all: Vec<ArgSpec> = command.get_arguments().map(ArgSpec::new).collect();
        for section in &own {
            // Prose: table rows are checked below, with more to say.
            for (number, line) in section
                .lines
                .iter()
                .filter(|(_, l)| !l.trim_start().starts_with('|'))
            {
                for option in options_in(&without_command_lines(line)) {
                    if option.starts_with("--") && !accepted.contains(&option) {
                        failures.push(format!(
                            "{title}: {CLI_MD} line {number} documents {option}, which the command does not have"
                        ));
                    }
                }
            }
            for row in section.rows() {
                let names = row.names();
                for option in options_in(&row.first()) {
                    if !accepted.contains(&option) {
                        failures.push(format!(
                            "{title}: {CLI_MD} line {} documents {option}, which the command does not have",
                            row.line
                        ));
                    }
                }
                for placeholder in placeholders(&row.first()) {
                    if !all.iter().any(|s| s.name == placeholder) {
                        failures.push(format!(
                            "{title}: {CLI_MD} line {} documents the argument {placeholder}, which the command does not take",
                            row.line
                        ));
                    }
                }
                let in_row: Vec<&ArgSpec> =
                    all.iter().filter(|s| names.contains(&s.name)).collect();
                if in_row.is_empty() {
                    continue;
                }
                for env in row.env_vars() {
                    let clap_env = in_row
                        .iter()
                        .any(|s| s.env.as_deref() == Some(env.as_str()));
                    let config_env =
                        path == &["run"] && crate::config::ENV_VARS.contains(&env.as_str());
                    if !clap_env && !config_env {
                        let names: Vec<&str> = in_row.iter().map(|s| s.name.as_str()).collect();
                        failures.push(format!(
                            "{title}: {CLI_MD} line {} gives {} the variable {env}, which it does not read",
                            row.line,
                            names.join(", ")
                        ));
                    }
                }
                if let [spec] = in_row.as_slice()
                    && let Some(default) = &spec.default
                {
                    for stated in row.defaults() {
                        if &stated != default {
                            failures.push(format!(
                                "{title}: {CLI_MD} line {} says {} defaults to `{stated}`; it is `{default}`",
                                row.line, spec.name
                            ));
                        }
                    }
                }
                for list in row.value_lists() {
                    if !in_row.iter().any(|s| s.value_set() == list) {
                        let values: Vec<&str> = list.iter().map(String::as_str).collect();
                        failures.push(format!(
                            "{title}: {CLI_MD} line {} lists the values {}, which no option of the row takes",
                            row.line,
                            values.join("|")
                        ));
                    }
                }
            }
        }
    }
    assert_no_failures(&failures, "docs/cli.md documents what clap does not define");
}

#[test]
fn cli_md_links_to_its_own_headings_resolve() {
    let markdown = read(CLI_MD);
    let anchors = anchors(&markdown);
    let mut failures = Vec::new();
    for section in sections(&markdown) {
        for link in section.links() {
            if !anchors.contains(&link) {
                failures.push(format!(
                    "{}: no heading has the anchor #{link}",
                    where_(&section)
                ));
            }
        }
    }
    assert_no_failures(&failures, "broken links in docs/cli.md");
}

/// A `canopy ...` command line: an inline code span, or a line of a code block
/// (`$ ` prompts, `VAR=value` prefixes and `\` continuations allowed).
fn command_lines(markdown: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut fenced = false;
    let mut continued: Option<(usize, String)> = None;
    for (index, line) in markdown.lines().enumerate() {
        let number = index + 1;
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            found.extend(code_spans(line).into_iter().map(|s| (number, s.to_owned())));
            continue;
        }
        // A shell comment is not part of the command.
        let code = line.split(" #").next().unwrap_or(line).trim();
        let (start, mut text) = continued.take().unwrap_or((number, String::new()));
        text.push(' ');
        match code.strip_suffix('\\') {
            Some(code) => {
                text.push_str(code);
                continued = Some((start, text));
            }
            None => {
                text.push_str(code);
                found.push((start, text));
            }
        }
    }
    found
        .into_iter()
        .filter_map(|(number, text)| {
            let words: Vec<&str> = text
                .split_whitespace()
                .skip_while(|w| *w == "$" || (w.contains('=') && !w.starts_with('-')))
                .collect();
            (words.first() == Some(&"canopy")).then(|| (number, words[1..].join(" ")))
        })
        .collect()
}

/// Checks one command line's words against the command tree; returns the path of
/// the command it runs.
fn check_command_line(cli: &Command, words: &str) -> Result<Vec<String>, String> {
    let mut command = cli;
    let mut path = Vec::new();
    let mut words = words.split_whitespace();
    while let Some(word) = words.next() {
        if word.starts_with('-') && word.len() > 1 {
            let option = word.split('=').next().unwrap_or(word);
            let arg = command.get_arguments().find(|a| {
                let long = option.strip_prefix("--");
                let short = option.strip_prefix('-').filter(|s| s.len() == 1);
                (long.is_some() && a.get_long() == long)
                    || (short.is_some() && a.get_short().map(String::from).as_deref() == short)
            });
            match arg {
                None => return Err(format!("{} has no option {option}", title(&path))),
                Some(arg) if arg.get_action().takes_values() && !word.contains('=') => {
                    words.next();
                }
                Some(_) => {}
            }
        } else if command.has_subcommands() {
            match command.find_subcommand(word) {
                Some(sub) => {
                    path.push(word.to_owned());
                    command = sub;
                }
                // A placeholder, `canopy <command>` or `canopy ...`.
                None if word.starts_with('<') || word == "..." => {}
                None => return Err(format!("{} has no command {word}", title(&path))),
            }
        }
    }
    Ok(path)
}

/// Every `canopy ...` command line in README.md and docs/ runs a real command
/// with real options, and README.md shows each command at least once.
#[test]
fn command_lines_in_the_docs_name_real_commands_and_options() {
    let cli = cli();
    let mut files = vec!["README.md".to_owned()];
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    for entry in std::fs::read_dir(&docs).expect("docs/ exists") {
        let name = entry.expect("docs/ is readable").file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".md") {
            files.push(format!("docs/{name}"));
        }
    }
    files.sort();
    let mut failures = Vec::new();
    let mut in_readme = BTreeSet::new();
    for file in &files {
        for (number, words) in command_lines(&read(file)) {
            match check_command_line(&cli, &words) {
                Ok(path) if file == "README.md" => {
                    in_readme.extend(path.first().cloned());
                }
                Ok(_) => {}
                Err(error) => failures.push(format!("{file}:{number}: `canopy {words}`: {error}")),
            }
        }
    }
    for sub in subcommands(&cli) {
        if !in_readme.contains(sub.get_name()) {
            failures.push(format!("README.md never shows `canopy {}`", sub.get_name()));
        }
    }
    assert_no_failures(&failures, "command lines in the docs");
}

#[test]
fn options_in_finds_long_and_short_options_only() {
    assert_eq!(
        options_in("`--config`, `-c FILE` (`CANOPY_CONFIG`), --children-exclude GLOB"),
        ["--config", "-c", "--children-exclude"]
    );
    assert_eq!(
        options_in("a-b, -/1, non-ASCII, 2026-11-29, -rf"),
        Vec::<String>::new()
    );
}
