//! The report as people and machines read it: JSON (the stored and documented
//! form), Markdown, a Slack-compatible message and plain text for the terminal.
//! Pure: a [`Report`] in, text out.
//!
//! Reasons come from children (a hook's message): every renderer escapes them for
//! its format, so a child cannot inject a table row, a link or a Slack mention.

use serde_json::{Value, json};

use super::model::{Entry, Group, Report};
use crate::present::{align_columns, short_digest};

/// Slack's limit on a section block's text.
pub const SLACK_SECTION_CHARS: usize = 3000;
/// Slack's limit on blocks per message.
pub const SLACK_MAX_BLOCKS: usize = 50;
/// One app's line in a Slack message is clipped to this, so a long reason never
/// fills a section on its own.
const SLACK_LINE_CHARS: usize = 600;

/// The stored and delivered form (docs/reports.md).
pub fn json(report: &Report) -> String {
    serde_json::to_string(report).expect("a report serializes")
}

/// The report's title, in every format.
fn title(report: &Report) -> String {
    let late = if report.late { " (late)" } else { "" };
    format!(
        "Drift report {}{late}: namespace {}",
        report.name, report.namespace
    )
}

/// Where the desired state comes from: `repo at revision`.
fn source_line(report: &Report) -> String {
    let repo = report.repo.as_deref().unwrap_or("(no repository yet)");
    let revision = report
        .revision
        .as_deref()
        .map_or("(no commit yet)", short_revision);
    format!("{repo} at {revision}")
}

fn short_revision(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn generation(entry: &Entry) -> String {
    let g = |side: &Option<super::model::Side>| {
        side.as_ref()
            .map_or("-".to_owned(), |s| s.generation.to_string())
    };
    format!("{}/{}", g(&entry.observed), g(&entry.desired))
}

fn digest(side: &Option<super::model::Side>) -> String {
    side.as_ref()
        .map_or("-".to_owned(), |s| short_digest(&s.digest))
}

// Markdown.

/// A heading, a summary, then one table per parent group.
pub fn markdown(report: &Report) -> String {
    let mut out = format!("# {}\n\n", md_text(&title(report)));
    out.push_str(&format!(
        "**{}.** Slot {}, generated {}; {}.\n",
        // Counts and status names only: nothing to escape.
        report.summary(),
        report.slot,
        report.generated_at,
        md_code(&source_line(report)),
    ));
    if let Some(error) = &report.source_error {
        out.push_str(&format!(
            "\n> **Source error** since {}: {}. The desired state is the last good commit's.\n",
            error.since,
            md_text(&error.message)
        ));
    }
    for group in &report.groups {
        out.push_str(&format!(
            "\n## {}\n\n| App | Status | For | Since | Desired | Observed | Gen (obs/des) | Reason |\n|---|---|---|---|---|---|---|---|\n",
            md_code(&group.parent)
        ));
        for e in &group.apps {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                md_code(&e.app),
                e.status.as_str(),
                e.for_text,
                e.since,
                md_code(&digest(&e.desired)),
                md_code(&digest(&e.observed)),
                generation(e),
                md_text(&e.reason),
            ));
        }
    }
    out
}

/// Text in a Markdown table cell or paragraph: no table breaks, no HTML, no
/// emphasis or links from a child's message.
fn md_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' | '\\' | '*' | '_' | '`' | '[' | ']' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Code span: backticks cannot be escaped inside one, so they are replaced.
fn md_code(text: &str) -> String {
    format!("`{}`", text.replace('`', "'").replace('|', "\\|"))
}

// Slack.

/// A Slack incoming-webhook message: `text` (the notification's fallback) and
/// `blocks` (a header, the summary, then sections of app lines). Bounded: at most
/// [`SLACK_MAX_BLOCKS`] blocks of at most [`SLACK_SECTION_CHARS`] characters; what
/// does not fit ends in "and N more".
pub fn slack(report: &Report) -> Value {
    let summary = format!(
        "{}: {}",
        slack_escape(&title(report)),
        slack_escape(&report.summary())
    );
    let mut intro = format!(
        "*{}*\nSlot {} · `{}`",
        slack_escape(&report.summary()),
        report.slot,
        slack_escape(&source_line(report)).replace('`', "'")
    );
    if let Some(error) = &report.source_error {
        intro.push_str(&format!(
            "\n:warning: source error since {}: {}",
            error.since,
            slack_escape(&error.message)
        ));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": clip(&title(report), 150)}}),
        section(&clip(&intro, SLACK_SECTION_CHARS)),
    ];
    // One section per parent; a full section continues in the next one.
    let mut sections: Vec<(String, usize)> = Vec::new();
    for group in &report.groups {
        let heading = format!("*{}*", slack_escape(&group.parent));
        let (mut text, mut lines) = (heading.clone(), 0);
        for entry in &group.apps {
            let line = clip(&slack_line(entry), SLACK_LINE_CHARS);
            if text.chars().count() + 1 + line.chars().count() > SLACK_SECTION_CHARS {
                sections.push((text, lines));
                (text, lines) = (format!("{heading} (continued)"), 0);
            }
            text.push('\n');
            text.push_str(&line);
            lines += 1;
        }
        sections.push((text, lines));
    }
    let room = SLACK_MAX_BLOCKS - blocks.len();
    if sections.len() <= room {
        blocks.extend(sections.iter().map(|(text, _)| section(text)));
    } else {
        // The last block says what was left out.
        let kept = &sections[..room - 1];
        blocks.extend(kept.iter().map(|(text, _)| section(text)));
        let shown: usize = kept.iter().map(|(_, lines)| lines).sum();
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!(
                "…and {} more apps not synced (see `canopy report`)",
                report.counts.not_synced.saturating_sub(shown)
            )}],
        }));
    }
    json!({"text": summary, "blocks": blocks})
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

fn slack_line(e: &Entry) -> String {
    format!(
        "• `{}` {} for {}: {}",
        slack_escape(&e.app),
        e.status.as_str(),
        e.for_text,
        slack_escape(&e.reason).replace('`', "'")
    )
}

/// Slack's three control characters (mrkdwn links and mentions use them).
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters, the last one `…` when clipped.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

// Plain text.

/// For the terminal: a title, the summary, then per parent a table.
pub fn text(report: &Report) -> String {
    let mut out = format!(
        "{}\n{}\nslot {}, generated {}\n{}\n",
        title(report),
        source_line(report),
        report.slot,
        report.generated_at,
        report.summary()
    );
    if let Some(error) = &report.source_error {
        out.push_str(&format!(
            "source error since {}: {}\n",
            error.since, error.message
        ));
    }
    for group in &report.groups {
        out.push('\n');
        out.push_str(&format!("{}\n", &group.parent));
        out.push_str(&table(group));
    }
    out
}

fn table(group: &Group) -> String {
    let mut rows = vec![
        [
            "APP", "STATUS", "FOR", "GEN", "DESIRED", "OBSERVED", "REASON",
        ]
        .map(str::to_owned),
    ];
    for e in &group.apps {
        rows.push([
            e.app.clone(),
            e.status.as_str().to_owned(),
            e.for_text.clone(),
            generation(e),
            digest(&e.desired),
            digest(&e.observed),
            e.reason.clone(),
        ]);
    }
    align_columns(&rows, "  ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::build;
    use crate::report::model::tests::{app, sample, t};
    use crate::status::Status;

    fn report() -> Report {
        let (header, overview, parents) = sample();
        build(&header, &overview, &parents)
    }

    #[test]
    fn markdown_snapshot() {
        insta::assert_snapshot!(markdown(&report()));
    }

    #[test]
    fn text_snapshot() {
        insta::assert_snapshot!(text(&report()));
    }

    #[test]
    fn json_snapshot() {
        let value: Value = serde_json::from_str(&json(&report())).expect("valid JSON");
        insta::assert_json_snapshot!(value);
    }

    #[test]
    fn slack_snapshot() {
        insta::assert_json_snapshot!(slack(&report()));
    }

    #[test]
    fn children_cannot_inject_markup() {
        let (header, mut overview, parents) = sample();
        overview.apps[2].record.reason =
            "hook failed: x | y <!channel> <https://evil|click> *bold* `code`\nnext".to_owned();
        let report = build(&header, &overview, &parents);
        let md = markdown(&report);
        let row = md
            .lines()
            .find(|l| l.contains("payments/api"))
            .expect("a row");
        assert_eq!(row.matches(" | ").count(), 7, "{row}");
        assert!(!row.contains('<') && !row.contains("*bold*"), "{row}");
        let message = slack(&report).to_string();
        assert!(
            !message.contains("<!channel>") && !message.contains("<https"),
            "{message}"
        );
        assert!(message.contains("&lt;!channel&gt;"), "{message}");
    }

    #[test]
    fn slack_messages_stay_within_slack_limits() {
        let (header, mut overview, parents) = sample();
        for i in 0..3000 {
            let mut a = app(
                &format!("fleet/app-{i:04}"),
                Status::OutOfSync,
                100,
                Some(50),
            );
            a.record.reason = "x".repeat(if i % 7 == 0 { 2000 } else { 120 });
            overview.apps.push(a);
        }
        let report = build(&header, &overview, &parents);
        let message = slack(&report);
        let blocks = message["blocks"].as_array().expect("blocks");
        assert!(blocks.len() <= SLACK_MAX_BLOCKS, "{}", blocks.len());
        let mut lines = 0;
        for block in blocks {
            if block["type"] == "section" {
                let text = block["text"]["text"].as_str().expect("text");
                assert!(text.chars().count() <= SLACK_SECTION_CHARS);
                lines += text.lines().filter(|l| l.starts_with('•')).count();
            }
        }
        let last = blocks.last().expect("a block")["elements"][0]["text"]
            .as_str()
            .expect("a trailer")
            .to_owned();
        let more: usize = last
            .trim_start_matches("…and ")
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a count");
        assert_eq!(lines + more, report.counts.not_synced, "{last}");
        assert!(more > 0);
    }

    #[test]
    fn a_small_report_needs_no_trailer() {
        let message = slack(&report());
        let blocks = message["blocks"].as_array().expect("blocks");
        assert_eq!(
            blocks.len(),
            2 + 4,
            "header, summary, one section per parent"
        );
        assert!(blocks.iter().all(|b| b["type"] != "context"));
        assert!(
            message["text"]
                .as_str()
                .expect("text")
                .contains("6 of 9 apps not synced")
        );
        let _ = t(0);
    }
}
