//! Scheduled drift reports against a real Redis, a real Git repository and a real
//! HTTP sink: schedules, the one-report-per-slot claim, the missed-slot policy,
//! signed delivery, retries, the address guard, the API and `canopy report`.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use canopy::report::{
    self, Clock, Deliverer, DeliveryOptions, Made, Options, SIGNATURE_HEADER, SLOT_HEADER,
    Scheduler,
};
use chrono::{DateTime, Utc};
use common::daemon::{NAMESPACE, TestDaemon};
use common::eventually_async;
use common::sink::{Received, Sink};
use redis::Commands;
use serde_json::Value;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "report-secret-canary-5d1e";
/// The digest a child reports for `payments/api`: not the one Git wants.
const HAND_DEPLOYED: &str =
    "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";
const WAIT: Duration = Duration::from_secs(30);

/// Fast retries, so a failing sink costs milliseconds.
fn fast() -> Arc<Deliverer> {
    Arc::new(
        Deliverer::new(DeliveryOptions {
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            attempts: 3,
            backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
        })
        .expect("a client"),
    )
}

fn options(clock: Clock) -> Options {
    Options {
        // Out of sync as soon as a child reports another digest.
        sync_timeout: chrono::Duration::zero(),
        catch_up: report::CATCH_UP_WINDOW,
        clock,
    }
}

/// A daemon whose config has `reports_yaml` under `reports:`.
async fn daemon(reports_yaml: &str) -> TestDaemon {
    TestDaemon::start(
        &format!("reports:\n{reports_yaml}"),
        &[("REPORT_SECRET", SECRET)],
    )
    .await
}

/// `payments/api`'s child reports a digest Git does not want, with a live heartbeat.
fn deploy_by_hand(daemon: &TestDaemon) {
    let key = "canopy:http:app:{payments/api}:desired";
    let generation: String = daemon
        .redis
        .conn()
        .hget(key, "generation")
        .expect("desired");
    daemon.redis.cmd(&[
        "FCALL",
        "canopy_report",
        "1",
        "canopy:http:app:{payments/api}:observed",
        &generation,
        HAND_DEPLOYED,
        "rev",
        "synced",
        "deployed by hand",
        "agent-1",
    ]);
    daemon.redis.cmd(&[
        "SET",
        "canopy:http:app:{payments/api}:heartbeat",
        "agent-1",
        "EX",
        "300",
    ]);
}

/// Runs every report of the daemon's config until dropped.
struct Running {
    shutdown: CancellationToken,
}

impl Running {
    fn start(daemon: &TestDaemon, clock: Clock) -> Running {
        let shutdown = CancellationToken::new();
        let tasks = report::spawn(
            &daemon.shared.store,
            &daemon.config.reports,
            fast(),
            &options(clock),
            &shutdown,
        );
        tokio::spawn(async move { tasks.join_all().await });
        Running { shutdown }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn deliveries(daemon: &TestDaemon, report: &str) -> BTreeMap<usize, Value> {
    let raw: BTreeMap<usize, String> = daemon
        .redis
        .conn()
        .hgetall(format!("canopy:http:report:{report}:deliveries"))
        .expect("deliveries");
    raw.into_iter()
        .map(|(i, v)| (i, serde_json::from_str(&v).expect("JSON outcome")))
        .collect()
}

/// `(name, slot, payload)` of every stored report.
fn stored(daemon: &TestDaemon) -> Vec<(String, String, Value)> {
    let entries: redis::streams::StreamRangeReply = daemon
        .redis
        .conn()
        .xrange_all("canopy:http:reports")
        .expect("reports stream");
    entries
        .ids
        .iter()
        .map(|entry| {
            let field = |f: &str| entry.get::<String>(f).expect("field");
            (
                field("name"),
                field("slot"),
                serde_json::from_str(&field("payload")).expect("JSON payload"),
            )
        })
        .collect()
}

fn listed(report: &Value) -> BTreeMap<String, Value> {
    report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["apps"].as_array().expect("apps").iter())
        .map(|a| (a["app"].as_str().expect("name").to_owned(), a.clone()))
        .collect()
}

fn time(text: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text.as_str().expect("a time"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// 06:00 UTC tomorrow: schedules at `0 0 6 * * *` are tested with a clock
/// moved there. Forward, never back: what the store holds must not look as if
/// it came from the future.
fn six_am() -> DateTime<Utc> {
    let tomorrow = Utc::now().date_naive().succ_opt().expect("a tomorrow");
    tomorrow.and_hms_opt(6, 0, 0).expect("06:00").and_utc()
}

/// The scheduler of the daemon's first report, on `clock`, delivering fast.
fn scheduler(daemon: &TestDaemon, clock: Clock) -> Scheduler {
    Scheduler::new(
        daemon.config.reports[0].clone(),
        daemon.shared.store.clone(),
        fast(),
        options(clock),
    )
}

fn at(offset: chrono::Duration) -> Clock {
    Clock::starting_at(six_am() + offset)
}

/// The signature header a sink with [`SECRET`] gets for `body`.
fn hmac_hex(body: &[u8]) -> String {
    format!("sha256={}", common::sign(SECRET, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_on_time_and_posts_signed_json_listing_the_drift() {
    let sink = Sink::start().await;
    let daemon = daemon(&format!(
        "  - name: every-second\n    schedule: '* * * * * *'\n    allow_private_targets: true\n    sinks: [{{url: '{}', format: json, secret_env: REPORT_SECRET}}]\n",
        sink.url("/drift")
    ))
    .await;
    deploy_by_hand(&daemon);
    let running = Running::start(&daemon, Clock::system());
    assert!(
        eventually_async(WAIT, || sink.received().len() >= 3).await,
        "{:?}",
        sink.received()
    );
    drop(running);

    let received = sink.received();
    let mut slots = BTreeSet::new();
    let mut delays = Vec::new();
    for request in &received {
        assert_eq!(request.path, "/drift");
        assert_eq!(
            request.header("content-type").as_deref(),
            Some("application/json")
        );
        // Signed: the HMAC of the exact body, with the configured secret.
        assert_eq!(
            request.header(SIGNATURE_HEADER),
            Some(hmac_hex(&request.body)),
            "{}",
            request.text()
        );
        assert!(!request.text().contains(SECRET));
        let body = request.json();
        assert_eq!(body["schema"], 1);
        assert_eq!(body["name"], "every-second");
        assert_eq!(body["namespace"], NAMESPACE);
        assert_eq!(
            request.header(SLOT_HEADER).as_deref(),
            body["slot"].as_str()
        );
        assert!(slots.insert(body["slot"].as_str().expect("slot").to_owned()));
        if body["late"] == false {
            delays.push(time(&body["generated_at"]) - time(&body["slot"]));
        }
        let apps = listed(&body);
        let api = &apps["payments/api"];
        assert_eq!(api["status"], "out_of_sync", "{api}");
        assert_eq!(api["observed"]["digest"], HAND_DEPLOYED);
        assert_ne!(api["desired"]["digest"], HAND_DEPLOYED);
        assert!(
            api["reason"]
                .as_str()
                .expect("reason")
                .starts_with("child reports digest")
        );
        // The others never reported: missing, under their parents.
        assert_eq!(apps["payments/db"]["status"], "missing");
        assert_eq!(body["counts"]["out_of_sync"], 1);
        assert_eq!(body["counts"]["synced"], 0);
        assert_eq!(body["counts"]["total"], apps.len());
        let repo = body["repo"].as_str().expect("repo");
        assert!(repo.starts_with("file://"), "{repo}");
        assert_eq!(body["revision"].as_str().map(str::len), Some(40));
    }

    // On time: never before its slot, and made within the second of it (one
    // slow report under load may miss that; a schedule a slot behind misses it
    // every time).
    assert!(
        delays.iter().all(|d| *d >= chrono::Duration::zero()),
        "{delays:?}"
    );
    let fastest = delays.iter().min().expect("reports made on their slot");
    assert!(*fastest < chrono::Duration::seconds(1), "{delays:?}");

    // Stored too: the stream holds what was sent, the latest is the newest.
    let stored = stored(&daemon);
    assert!(stored.len() >= received.len());
    for request in &received {
        let body = request.json();
        assert!(
            stored
                .iter()
                .any(|(name, slot, payload)| name == "every-second"
                    && slot == body["slot"].as_str().unwrap()
                    && *payload == body),
            "{body}"
        );
    }
    let latest: String = daemon
        .redis
        .conn()
        .get("canopy:http:report:latest")
        .expect("latest");
    assert_eq!(
        serde_json::from_str::<Value>(&latest).expect("JSON"),
        stored.last().expect("a report").2
    );
    assert!(!latest.contains(SECRET));
    let outcome = &deliveries(&daemon, "every-second")[&0];
    assert_eq!(outcome["ok"], true, "{outcome}");
    assert_eq!(outcome["attempts"], 1);
    assert_eq!(outcome["format"], "json");
}

/// The table rows' FOR and SINCE columns and the slot line vary with the clock.
fn redact_times(markdown: &str) -> String {
    markdown
        .lines()
        .map(|line| {
            if let Some(rest) = line.strip_prefix("**") {
                let (summary, _) = rest.split_once(".** Slot ").expect("a summary line");
                let (_, source) = line.split_once("; ").expect("a source");
                return format!("**{summary}.** Slot [slot], generated [time]; {source}");
            }
            let cells: Vec<&str> = line.split(" | ").collect();
            if cells.len() == 8 && !line.starts_with("| App ") {
                let mut cells: Vec<String> = cells.into_iter().map(str::to_owned).collect();
                cells[2] = "[for]".to_owned();
                cells[3] = "[since]".to_owned();
                return cells.join(" | ");
            }
            line.to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_and_markdown_sinks_get_their_formats() {
    let sink = Sink::start().await;
    let daemon = daemon(&format!(
        "  - name: morning\n    schedule: '0 0 6 * * *'\n    allow_private_targets: true\n    sinks:\n      - {{url: '{}', format: slack}}\n      - {{url: '{}', format: markdown}}\n",
        sink.url("/slack"),
        sink.url("/markdown"),
    ))
    .await;
    deploy_by_hand(&daemon);
    // Started at 06:01: the 06:00 slot is made at once, late (missed-slot policy).
    let clock = at(chrono::Duration::minutes(1));
    let mut scheduler = scheduler(&daemon, clock);
    assert_eq!(scheduler.catch_up(clock.now()).await, Some(Made::Made));
    let received = sink.received();
    assert_eq!(received.len(), 2, "{received:?}");
    let by_path = |path: &str| -> Received {
        received
            .iter()
            .find(|r| r.path == path)
            .cloned()
            .unwrap_or_else(|| panic!("nothing posted to {path}"))
    };

    let slack = by_path("/slack");
    assert_eq!(
        slack.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        slack.header(SIGNATURE_HEADER),
        None,
        "no secret, no signature"
    );
    let message = slack.json();
    let text = message["text"].as_str().expect("text");
    assert!(
        text.starts_with("Drift report morning (late): namespace http"),
        "{text}"
    );
    assert!(text.contains("apps not synced: 1 out_of_sync"), "{text}");
    let blocks = message["blocks"].as_array().expect("blocks");
    assert_eq!(blocks[0]["type"], "header");
    assert!(blocks.len() <= 50);
    for block in &blocks[1..] {
        assert_eq!(block["type"], "section", "{block}");
        assert_eq!(block["text"]["type"], "mrkdwn");
        assert!(
            block["text"]["text"]
                .as_str()
                .expect("text")
                .chars()
                .count()
                <= 3000
        );
    }
    assert!(
        blocks.iter().any(|b| b["text"]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("*payments*\n• `payments/api` out_of_sync for"))),
        "{message}"
    );

    let markdown = by_path("/markdown");
    assert_eq!(
        markdown.header("content-type").as_deref(),
        Some("text/markdown; charset=utf-8")
    );
    let repo = format!("file://{}", daemon.repo.display());
    let text = redact_times(&markdown.text()).replace(&repo, "file://[repo]");
    insta::assert_snapshot!("markdown-from-a-run", text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_sinks_are_refused_unless_allowed() {
    let sink = Sink::start().await;
    let port = sink.addr.port();
    let daemon = daemon(&format!(
        "  - name: guarded\n    schedule: '0 0 6 * * *'\n    sinks:\n      - {{url: 'http://127.0.0.1:{port}/secret-path-1', format: json}}\n      - {{url: 'http://localhost:{port}/secret-path-2', format: json}}\n      - {{url: 'http://[::ffff:127.0.0.1]:{port}/secret-path-3', format: json}}\n      - {{url: 'http://2130706433:{port}/secret-path-4', format: json}}\n  - name: allowed\n    schedule: '0 0 6 * * *'\n    allow_private_targets: true\n    sinks: [{{url: 'http://127.0.0.1:{port}/allowed', format: json}}]\n"
    ))
    .await;
    let clock = at(chrono::Duration::seconds(30));
    for report in &daemon.config.reports {
        let mut scheduler = Scheduler::new(
            report.clone(),
            daemon.shared.store.clone(),
            fast(),
            options(clock),
        );
        assert_eq!(scheduler.catch_up(clock.now()).await, Some(Made::Made));
    }
    // Only the allowed report reached the sink.
    let paths: Vec<String> = sink.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/allowed"]);
    assert_eq!(deliveries(&daemon, "allowed")[&0]["ok"], true);

    let refused = deliveries(&daemon, "guarded");
    assert_eq!(refused.len(), 4, "{refused:?}");
    for (index, outcome) in &refused {
        assert_eq!(outcome["ok"], false, "{outcome}");
        // A refusal is final: not retried.
        assert_eq!(outcome["attempts"], 1, "{outcome}");
        let error = outcome["error"].as_str().expect("an error");
        assert!(error.contains("allow_private_targets"), "{error}");
        assert!(!error.contains("secret-path"), "{error}");
        assert!(
            error.starts_with(&format!("sink {}", outcome["sink"].as_str().expect("sink"))),
            "{error}"
        );
        let expected = match index {
            0 | 2 | 3 => "is loopback",
            _ => "host localhost resolves to no public address",
        };
        assert!(error.contains(expected), "{index}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_sinks_are_retried_then_recorded_and_the_next_slot_still_delivers() {
    let mut sink = Sink::start().await;
    let daemon = daemon(&format!(
        "  - name: every-second\n    schedule: '* * * * * *'\n    allow_private_targets: true\n    sinks: [{{url: '{}', format: json}}]\n",
        sink.url("/x")
    ))
    .await;
    let outcome = || deliveries(&daemon, "every-second").remove(&0);
    let per_slot = |sink: &Sink| {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for r in sink.received() {
            *counts
                .entry(r.header(SLOT_HEADER).expect("a slot"))
                .or_default() += 1;
        }
        counts
    };

    // A client error is not retried.
    sink.answer(404);
    let running = Running::start(&daemon, Clock::system());
    assert!(eventually_async(WAIT, || outcome().is_some_and(|o| o["status"] == 404)).await);
    let o = outcome().expect("recorded");
    assert_eq!(
        (o["ok"].clone(), o["attempts"].clone()),
        (false.into(), 1.into()),
        "{o}"
    );

    // A server error is retried, three attempts in all, then recorded.
    sink.answer(500);
    assert!(eventually_async(WAIT, || outcome().is_some_and(|o| o["status"] == 500)).await);
    let o = outcome().expect("recorded");
    assert_eq!(
        (o["ok"].clone(), o["attempts"].clone()),
        (false.into(), 3.into()),
        "{o}"
    );
    assert_eq!(
        o["error"],
        format!(
            "sink http://{}/... answered 500 Internal Server Error",
            sink.addr
        )
    );
    let slot = o["slot"].as_str().expect("slot").to_owned();
    assert_eq!(per_slot(&sink)[&slot], 3, "bounded retries");

    // Down: connections refused, retried, recorded.
    sink.stop().await;
    let before = sink.received().len();
    assert!(
        eventually_async(WAIT, || outcome()
            .is_some_and(|o| o["status"].is_null() && o["ok"] == false))
        .await,
        "{:?}",
        outcome()
    );
    let o = outcome().expect("recorded");
    assert_eq!(o["attempts"], 3, "{o}");
    let error = o["error"].as_str().expect("error");
    assert!(
        error.starts_with(&format!(
            "sink http://{}/...: error sending request",
            sink.addr
        )),
        "{error}"
    );
    assert!(!error.contains("/x"), "{error}");

    // Back: the next slots deliver again.
    sink.answer(200);
    sink.restart().await;
    assert!(eventually_async(WAIT, || outcome().is_some_and(|o| o["ok"] == true)).await);
    drop(running);
    assert!(sink.received().len() > before);
    let o = outcome().expect("recorded");
    assert_eq!(
        (o["attempts"].clone(), o["status"].clone()),
        (1.into(), Value::Null),
        "{o}"
    );
    // Every slot got at most the bounded number of attempts.
    assert!(
        per_slot(&sink).values().all(|n| *n <= 3),
        "{:?}",
        per_slot(&sink)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let sink = Sink::start().await;
    // To the sink itself, so a followed redirect would show as a second request.
    sink.redirect(307, &sink.url("/followed"));
    let daemon = daemon(&format!(
        "  - name: morning\n    schedule: '0 0 6 * * *'\n    allow_private_targets: true\n    sinks: [{{url: '{}', format: markdown, secret_env: REPORT_SECRET}}]\n",
        sink.url("/drift")
    ))
    .await;
    let clock = at(chrono::Duration::seconds(5));
    let mut scheduler = scheduler(&daemon, clock);
    assert_eq!(scheduler.catch_up(clock.now()).await, Some(Made::Made));
    let received = sink.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].path, "/drift");
    // Any format is signed when the sink has a secret.
    assert_eq!(
        received[0].header(SIGNATURE_HEADER),
        Some(hmac_hex(&received[0].body))
    );
    let outcome = &deliveries(&daemon, "morning")[&0];
    assert_eq!(outcome["ok"], false, "{outcome}");
    assert_eq!(outcome["attempts"], 1, "a redirect is final: {outcome}");
    assert_eq!(outcome["status"], 307);
    let error = outcome["error"].as_str().expect("an error");
    assert!(error.ends_with("redirects are not followed"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_make_one_report_per_slot() {
    let sink = Sink::start().await;
    let daemon = daemon(&format!(
        "  - name: every-second\n    schedule: '* * * * * *'\n    allow_private_targets: true\n    sinks: [{{url: '{}', format: json}}]\n",
        sink.url("/x")
    ))
    .await;
    // Two daemons: each with its own Redis connection and scheduler.
    let second =
        canopy::store::Store::connect(&common::store_options(&daemon.redis.url(), NAMESPACE))
            .await
            .expect("connect");
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for store in [daemon.shared.store.clone(), second] {
        let scheduler = Scheduler::new(
            daemon.config.reports[0].clone(),
            store,
            fast(),
            options(Clock::system()),
        );
        tasks.spawn(scheduler.run(shutdown.clone()));
    }
    assert!(eventually_async(WAIT, || sink.received().len() >= 4).await);
    shutdown.cancel();
    tasks.join_all().await;

    let slots: Vec<String> = sink
        .received()
        .iter()
        .map(|r| r.json()["slot"].as_str().expect("slot").to_owned())
        .collect();
    let unique: BTreeSet<&String> = slots.iter().collect();
    assert_eq!(
        unique.len(),
        slots.len(),
        "a slot was delivered twice: {slots:?}"
    );
    let stored: Vec<String> = stored(&daemon)
        .into_iter()
        .map(|(_, slot, _)| slot)
        .collect();
    let unique: BTreeSet<&String> = stored.iter().collect();
    assert_eq!(
        unique.len(),
        stored.len(),
        "a slot was stored twice: {stored:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_slot_is_made_once_late_and_old_ones_never() {
    let sink = Sink::start().await;
    let daemon = daemon(&format!(
        "  - name: morning\n    schedule: '0 0 6 * * *'\n    allow_private_targets: true\n    sinks: [{{url: '{}', format: json}}]\n",
        sink.url("/x")
    ))
    .await;
    let scheduler = |minutes: i64| {
        let clock = at(chrono::Duration::minutes(minutes));
        let scheduler = scheduler(&daemon, clock);
        (scheduler, clock)
    };
    // Down over 06:00, back at 06:04: made once, late.
    let (mut first, clock) = scheduler(4);
    assert_eq!(first.catch_up(clock.now()).await, Some(Made::Made));
    let body = sink.received()[0].json();
    assert_eq!(time(&body["slot"]), six_am());
    assert_eq!(body["late"], true);
    assert!(time(&body["generated_at"]) >= six_am() + chrono::Duration::minutes(4));
    // Restarted at 06:05: the slot is claimed already.
    let (mut again, clock) = scheduler(5);
    assert_eq!(again.catch_up(clock.now()).await, Some(Made::Taken));
    // Back at 06:30, or the next day at 05:59: nothing to replay.
    for minutes in [30, 24 * 60 - 1] {
        let (mut late, clock) = scheduler(minutes);
        assert_eq!(late.catch_up(clock.now()).await, None, "{minutes}");
    }
    assert_eq!(sink.received().len(), 1);
    assert_eq!(stored(&daemon).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_the_cli_serve_reports() {
    let sink = Sink::start().await;
    let daemon = daemon(&format!(
        "  - name: morning\n    schedule: '0 0 6 * * *'\n    allow_private_targets: true\n    sinks: [{{url: '{}', format: json}}]\n",
        sink.url("/x")
    ))
    .await;
    let get = |path: &str| daemon.get(path).send();

    // Nothing stored yet: a JSON 404.
    let response = get("/api/v1/report").await.expect("request");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"], "no report stored yet in namespace http");

    deploy_by_hand(&daemon);
    let clock = at(chrono::Duration::seconds(10));
    let mut scheduler = scheduler(&daemon, clock);
    assert_eq!(scheduler.catch_up(clock.now()).await, Some(Made::Made));
    let response = get("/api/v1/report").await.expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served: Value = response.json().await.expect("JSON");
    let latest: String = daemon
        .redis
        .conn()
        .get("canopy:http:report:latest")
        .expect("latest");
    assert_eq!(
        served,
        serde_json::from_str::<Value>(&latest).expect("JSON")
    );
    assert_eq!(served, sink.received()[0].json());
    assert_eq!(listed(&served)["payments/api"]["status"], "out_of_sync");

    // `canopy report --format json`: a report now, named `now`, not stored.
    let cli = |format: &str| {
        common::canopy(&[
            "report",
            "--format",
            format,
            "--redis-url",
            &daemon.redis.url(),
            "--namespace",
            NAMESPACE,
        ])
    };
    let out = cli("json");
    assert!(out.status.success(), "{}", common::stderr(&out));
    let now: Value = serde_json::from_str(&common::stdout(&out)).expect("JSON");
    assert_eq!(now["name"], "now");
    assert_eq!(now["late"], false);
    let made = time(&now["generated_at"]) - time(&now["slot"]);
    assert!(made >= chrono::Duration::zero() && made < chrono::Duration::seconds(1));
    assert_eq!(now["revision"], served["revision"]);
    assert_eq!(
        listed(&now).keys().collect::<Vec<_>>(),
        listed(&served).keys().collect::<Vec<_>>()
    );
    let api = &listed(&now)["payments/api"];
    // The CLI evaluates with the default sync timeout (5 minutes): a digest
    // signalled seconds ago is still progressing there.
    assert_eq!(api["observed"]["digest"], HAND_DEPLOYED);
    assert_eq!(stored(&daemon).len(), 1, "canopy report stores nothing");

    let md = common::stdout(&cli("md"));
    assert!(
        md.starts_with("# Drift report now: namespace http\n"),
        "{md}"
    );
    assert!(md.contains("| `payments/api` |"), "{md}");
    let text = common::stdout(&cli("text"));
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("payments/api")),
        "{text}"
    );
    let slack: Value = serde_json::from_str(&common::stdout(&cli("slack"))).expect("JSON");
    assert!(slack["text"].is_string() && slack["blocks"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_route_follows_the_read_token_rules() {
    use sha2::Digest;
    let token = "read-canary-77a1";
    let daemon = TestDaemon::start(
        &format!(
            "server:\n  read_requires_token: true\n  tokens: [{{name: dash, role: read, sha256: \"{}\"}}]\n",
            hex::encode(Sha256::digest(token.as_bytes()))
        ),
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    let url = daemon.url("/api/v1/report");
    let anonymous = client.get(&url).send().await.expect("request");
    assert_eq!(anonymous.status(), 401);
    let with_token = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert_eq!(with_token.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canopy_run_makes_the_scheduled_reports_and_stops_on_sigterm() {
    use common::binary::DaemonProcess;
    let sink = Sink::start().await;
    let remote = common::git_repo_from(&common::fixtures().join("example"));
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = common::redis::RedisProc::start();
    let config = dir.path().join("canopy.yaml");
    std::fs::write(
        &config,
        format!(
            "namespace: run\nstate_dir: {state}\nshutdown_grace: 5s\nrepo:\n  url: file://{repo}\n  ref: main\n  poll_interval: 1h\nredis:\n  url: {redis}\nreports:\n  - name: every-second\n    schedule: '* * * * * *'\n    allow_private_targets: true\n    sinks: [{{url: '{sink}', format: json, secret_env: REPORT_SECRET}}]\n",
            state = dir.path().join("state").display(),
            repo = common::repo_path(&remote).display(),
            redis = redis.url(),
            sink = sink.url("/secret-path"),
        ),
    )
    .expect("write config");
    let mut daemon = tokio::task::spawn_blocking(move || {
        DaemonProcess::start(&config, &[], &[("REPORT_SECRET", SECRET)])
    })
    .await
    .expect("started");
    // Reports made before the first cycle is written count no app: wait for
    // one made after it.
    let after_first_cycle = || {
        sink.received()
            .into_iter()
            .find(|r| r.json()["counts"]["total"] != 0)
    };
    assert!(
        eventually_async(WAIT, || after_first_cycle().is_some()).await,
        "{}",
        daemon.log()
    );
    let report = after_first_cycle().expect("received");
    let body = report.json();
    assert_eq!(body["namespace"], "run");
    assert_eq!(body["counts"]["total"], 10, "{body}");
    assert_eq!(
        report.header(SIGNATURE_HEADER),
        Some(hmac_hex(&report.body))
    );
    daemon.signal("TERM");
    let status = tokio::task::spawn_blocking(move || {
        let status = daemon.wait(Duration::from_secs(10));
        (status, daemon.log())
    })
    .await
    .expect("waited");
    let (status, log) = status;
    assert!(status.expect("exits in time").success(), "{log}");
    assert!(log.contains("report delivered"), "{log}");
    // Neither the secret nor the sink's path ever reaches the log.
    assert!(
        !log.contains(SECRET) && !log.contains("secret-path"),
        "{log}"
    );
}
