//! The report value: what one drift report says, built by a pure function from
//! the status overview (`crate::view`), so its rules are tested with plain
//! values and every renderer reads the same facts.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::layout::AppName;
use crate::present::format_age;
use crate::status::Status;
use crate::view::{AppStatus, Overview, SourceProblem};

/// Version of the report's JSON shape (`schema` in the JSON, docs/reports.md).
pub const REPORT_SCHEMA: u32 = 1;

/// The name of a report made on demand (`canopy report`), not by a schedule.
pub const ON_DEMAND: &str = "now";

/// One drift report (docs/reports.md documents the JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub schema: u32,
    /// The schedule's name, or [`ON_DEMAND`].
    pub name: String,
    /// The schedule slot this report is for (RFC 3339); `generated_at` for an
    /// on-demand report.
    pub slot: String,
    /// Made after its slot, by the catch-up policy (docs/reports.md).
    pub late: bool,
    /// When the statuses were evaluated (RFC 3339 with milliseconds).
    pub generated_at: String,
    pub namespace: String,
    /// Without credentials (as `meta` stores it); `None` before the first poll.
    pub repo: Option<String>,
    /// The last commit whose desired state is fully written.
    pub revision: Option<String>,
    /// Set while the daemon cannot fetch: the revision above is the last good one.
    pub source_error: Option<SourceProblem>,
    pub counts: Counts,
    /// Every app that is not synced, grouped by parent app, groups and apps by name.
    pub groups: Vec<Group>,
}

/// Apps per status, every status present (zeros included), and their totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub synced: usize,
    pub progressing: usize,
    pub out_of_sync: usize,
    pub missing: usize,
    pub failed: usize,
    pub stale: usize,
    pub orphaned: usize,
    /// Every app the report looked at.
    pub total: usize,
    /// Every app not synced: the apps listed in `groups`.
    pub not_synced: usize,
}

impl Counts {
    pub fn get(&self, status: Status) -> usize {
        match status {
            Status::Synced => self.synced,
            Status::Progressing => self.progressing,
            Status::OutOfSync => self.out_of_sync,
            Status::Missing => self.missing,
            Status::Failed => self.failed,
            Status::Stale => self.stale,
            Status::Orphaned => self.orphaned,
        }
    }

    fn add(&mut self, status: Status) {
        let slot = match status {
            Status::Synced => &mut self.synced,
            Status::Progressing => &mut self.progressing,
            Status::OutOfSync => &mut self.out_of_sync,
            Status::Missing => &mut self.missing,
            Status::Failed => &mut self.failed,
            Status::Stale => &mut self.stale,
            Status::Orphaned => &mut self.orphaned,
        };
        *slot += 1;
        self.total += 1;
        if status != Status::Synced {
            self.not_synced += 1;
        }
    }
}

/// The apps of one parent that are not synced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// The parent app's name. The root app `.` has none: it is listed in the
    /// `.` group, with its direct children.
    pub parent: String,
    pub apps: Vec<Entry>,
}

/// One app that is not synced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub app: String,
    pub status: Status,
    /// When the app left Synced (RFC 3339): what `for` counts from.
    pub since: String,
    /// How long it has not been synced, in seconds, at `generated_at`.
    pub for_seconds: i64,
    /// The same, as people write it: `3h 5m`.
    #[serde(rename = "for")]
    pub for_text: String,
    /// When the current status began (RFC 3339); later than `since` when the
    /// app went, say, from progressing to out of sync.
    pub status_since: String,
    pub desired: Option<Side>,
    pub observed: Option<Side>,
    pub reason: String,
}

/// A digest and its generation, as Git wants it or the child reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Side {
    pub digest: String,
    pub generation: u64,
}

/// What the report is for, beside the overview.
#[derive(Debug, Clone)]
pub struct Header {
    pub name: String,
    pub slot: DateTime<Utc>,
    pub late: bool,
    pub generated_at: DateTime<Utc>,
    pub repo: Option<String>,
}

/// The report of `overview`. `parents` maps apps to their parent app as the
/// desired state records it; an app without one there (an orphan: no longer in
/// Git) goes under its nearest ancestor among the apps of the overview, else the
/// root `.`; the root itself goes under `.` too.
pub fn build(header: &Header, overview: &Overview, parents: &BTreeMap<String, String>) -> Report {
    let mut counts = Counts::default();
    let known: BTreeSet<&str> = overview.apps.iter().map(|a| a.app.as_str()).collect();
    let mut groups: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for app in &overview.apps {
        counts.add(app.record.status);
        if app.record.status == Status::Synced {
            continue;
        }
        let parent = match parents.get(app.app.as_str()) {
            Some(parent) => parent.clone(),
            None => nearest_ancestor(&app.app, &known),
        };
        groups
            .entry(parent)
            .or_default()
            .push(entry(app, header.generated_at));
    }
    let groups = groups
        .into_iter()
        .map(|(parent, mut apps)| {
            apps.sort_by(|a, b| a.app.cmp(&b.app));
            Group { parent, apps }
        })
        .collect();
    Report {
        schema: REPORT_SCHEMA,
        name: header.name.clone(),
        slot: rfc3339(header.slot),
        late: header.late,
        // Milliseconds: a report's delay after its slot is visible.
        generated_at: header
            .generated_at
            .to_rfc3339_opts(SecondsFormat::Millis, true),
        namespace: overview.namespace.clone(),
        repo: header.repo.clone().filter(|r| !r.is_empty()),
        revision: overview.commit.clone(),
        source_error: overview.source_error.clone(),
        counts,
        groups,
    }
}

fn entry(app: &AppStatus, now: DateTime<Utc>) -> Entry {
    let record = &app.record;
    let since = record.unsynced_since.unwrap_or(record.since);
    let unsynced = record
        .unsynced_for(now)
        .unwrap_or_else(|| (now - since).max(chrono::Duration::zero()));
    Entry {
        app: app.app.to_string(),
        status: record.status,
        since: rfc3339(since),
        for_seconds: unsynced.num_seconds(),
        for_text: format_age(unsynced),
        status_since: rfc3339(record.since),
        desired: app.desired.as_ref().map(|d| Side {
            digest: d.digest.clone(),
            generation: d.generation,
        }),
        observed: app.observed.as_ref().map(|o| Side {
            digest: o.digest.clone(),
            generation: o.generation,
        }),
        reason: record.reason.clone(),
    }
}

/// The longest proper prefix of `app` (by path segments) that is a known app;
/// the root `.` otherwise (the root's own too).
fn nearest_ancestor(app: &AppName, known: &BTreeSet<&str>) -> String {
    let mut prefix = app.as_str();
    while let Some((head, _)) = prefix.rsplit_once('/') {
        if known.contains(head) {
            return head.to_owned();
        }
        prefix = head;
    }
    ".".to_owned()
}

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Report {
    /// Every listed app, in group order.
    pub fn entries(&self) -> impl Iterator<Item = (&Group, &Entry)> {
        self.groups
            .iter()
            .flat_map(|g| g.apps.iter().map(move |e| (g, e)))
    }

    /// `3 of 8 apps not synced: 1 out_of_sync, 2 missing`, or `all 8 apps synced`.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        if c.not_synced == 0 {
            return match c.total {
                0 => "no apps yet".to_owned(),
                1 => "the only app is synced".to_owned(),
                n => format!("all {n} apps synced"),
            };
        }
        let parts: Vec<String> = Status::ALL
            .into_iter()
            .filter(|s| *s != Status::Synced && c.get(*s) > 0)
            .map(|s| format!("{} {}", c.get(s), s.as_str()))
            .collect();
        format!(
            "{} of {} apps not synced: {}",
            c.not_synced,
            c.total,
            parts.join(", ")
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::status::{Desired, Observed, Record, ReportedState, SyncMode};

    pub(crate) fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600 + secs, 0).expect("in range") // 2026-01-01
    }

    pub(crate) fn app(name: &str, status: Status, since: i64, unsynced: Option<i64>) -> AppStatus {
        let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        AppStatus {
            app: AppName::parse(name).expect("valid name"),
            record: Record {
                status,
                since: t(since),
                unsynced_since: unsynced.map(t),
                reason: format!("{name} is {status}"),
            },
            desired: (status != Status::Orphaned).then(|| Desired {
                digest: digest('b'),
                generation: 4,
                sync: SyncMode::Auto,
                since: t(0),
            }),
            observed: (status != Status::Missing).then(|| Observed {
                digest: digest(if status == Status::Synced { 'b' } else { 'a' }),
                generation: 3,
                state: ReportedState::Synced,
                message: String::new(),
                at: t(0),
            }),
            transition: None,
        }
    }

    /// An overview of the example tree with one app in each status.
    pub(crate) fn sample() -> (Header, Overview, BTreeMap<String, String>) {
        let apps = vec![
            app(".", Status::Synced, 0, None),
            app("payments", Status::Synced, 0, None),
            app("payments/api", Status::OutOfSync, 3600, Some(1800)),
            app("payments/db", Status::Failed, 7000, Some(7000)),
            app("platform", Status::Progressing, 10_000, Some(10_000)),
            app("platform/ingress", Status::Stale, 9000, Some(100)),
            app("search", Status::Missing, 5000, Some(5000)),
            app("search/legacy", Status::Orphaned, 10_700, Some(10_700)),
            app("search/query", Status::Synced, 0, None),
        ];
        let parents = [
            ("payments", "."),
            ("payments/api", "payments"),
            ("payments/db", "payments"),
            ("platform", "."),
            ("platform/ingress", "platform"),
            ("search", "."),
            ("search/query", "search"),
        ]
        .into_iter()
        .map(|(a, p)| (a.to_owned(), p.to_owned()))
        .collect();
        let header = Header {
            name: "morning".to_owned(),
            slot: t(10_800),
            late: false,
            generated_at: t(10_801),
            repo: Some("https://git.example.com/acme/platform.git".to_owned()),
        };
        let overview = Overview {
            namespace: "prod".to_owned(),
            commit: Some("0123456789abcdef0123456789abcdef01234567".to_owned()),
            source_error: None,
            apps,
        };
        (header, overview, parents)
    }

    #[test]
    fn counts_every_status_and_lists_only_apps_not_synced() {
        let (header, overview, parents) = sample();
        let report = build(&header, &overview, &parents);
        let c = &report.counts;
        assert_eq!(
            Status::ALL.map(|s| c.get(s)),
            [3, 1, 1, 1, 1, 1, 1],
            "{c:?}"
        );
        assert_eq!((c.total, c.not_synced), (9, 6));
        let listed: Vec<&str> = report.entries().map(|(_, e)| e.app.as_str()).collect();
        assert_eq!(
            listed,
            [
                "platform",
                "search",
                "payments/api",
                "payments/db",
                "platform/ingress",
                "search/legacy"
            ]
        );
        let parents: Vec<&str> = report.groups.iter().map(|g| g.parent.as_str()).collect();
        assert_eq!(parents, [".", "payments", "platform", "search"]);
        assert_eq!(
            report.summary(),
            "6 of 9 apps not synced: 1 progressing, 1 out_of_sync, 1 missing, 1 failed, 1 stale, 1 orphaned"
        );
    }

    #[test]
    fn entries_say_since_when_and_for_how_long() {
        let (header, overview, parents) = sample();
        let report = build(&header, &overview, &parents);
        let api = report
            .entries()
            .find(|(_, e)| e.app == "payments/api")
            .expect("listed")
            .1;
        // Left Synced at t(1800), out of sync since t(3600); generated at t(10_801).
        assert_eq!(api.since, "2026-01-01T00:30:00Z");
        assert_eq!(api.status_since, "2026-01-01T01:00:00Z");
        assert_eq!((api.for_seconds, api.for_text.as_str()), (9001, "2h 30m"));
        assert_eq!(api.desired.as_ref().map(|d| d.generation), Some(4));
        assert_eq!(api.observed.as_ref().map(|o| o.generation), Some(3));
        assert_eq!(api.reason, "payments/api is out_of_sync");
        let orphan = report
            .entries()
            .find(|(_, e)| e.app == "search/legacy")
            .expect("listed");
        // Not in Git, so no recorded parent: its nearest ancestor app.
        assert_eq!(orphan.0.parent, "search");
        assert_eq!(orphan.1.desired, None);
    }

    #[test]
    fn header_fields_and_the_root_app() {
        let (mut header, mut overview, parents) = sample();
        header.late = true;
        overview.apps[0].record.status = Status::Missing;
        overview.apps[0].record.unsynced_since = Some(t(0));
        overview.source_error = Some(SourceProblem {
            message: "failed to fetch".to_owned(),
            since: "2026-01-01T02:00:00Z".to_owned(),
        });
        let report = build(&header, &overview, &parents);
        assert_eq!(report.slot, "2026-01-01T03:00:00Z");
        assert_eq!(report.generated_at, "2026-01-01T03:00:01.000Z");
        assert!(report.late);
        assert_eq!(report.namespace, "prod");
        assert_eq!(
            report.revision.as_deref(),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        assert_eq!(
            report.source_error.as_ref().map(|e| e.message.as_str()),
            Some("failed to fetch")
        );
        // The root has no parent: listed first among its children.
        assert_eq!(report.groups[0].parent, ".");
        assert_eq!(report.groups[0].apps[0].app, ".");
        assert_eq!(report.groups[0].apps[1].app, "platform");
    }

    #[test]
    fn an_empty_or_all_synced_tree() {
        let (header, mut overview, parents) = sample();
        overview.apps.retain(|a| a.record.status == Status::Synced);
        let report = build(&header, &overview, &parents);
        assert!(report.groups.is_empty());
        assert_eq!(report.summary(), "all 3 apps synced");
        overview.apps.clear();
        overview.commit = None;
        let report = build(&header, &overview, &parents);
        assert_eq!(report.summary(), "no apps yet");
        assert_eq!(report.counts, Counts::default());
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["counts"]["orphaned"], 0, "zeros are present");
        assert_eq!(json["revision"], serde_json::Value::Null);
    }

    #[test]
    fn nearest_ancestor_skips_missing_levels() {
        let known: BTreeSet<&str> = [".", "a", "a/b/c"].into_iter().collect();
        let name = |n: &str| AppName::parse(n).expect("valid");
        assert_eq!(nearest_ancestor(&name("a/b/c/d"), &known), "a/b/c");
        assert_eq!(nearest_ancestor(&name("a/x/y"), &known), "a");
        assert_eq!(nearest_ancestor(&name("z"), &known), ".");
        assert_eq!(nearest_ancestor(&AppName::root(), &known), ".");
    }
}
