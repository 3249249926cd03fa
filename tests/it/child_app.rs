//! `examples/child_app.rs`, a service embedding `canopy::client`, against the real
//! daemon: it applies its app's first signal, then reloads its config in place
//! when only the config changes.

use crate::common;

use std::path::PathBuf;
use std::process::Command;

use common::agent::{Stack, WAIT};
use common::eventually;
use common::process::{Capture, Spawned};

/// The example's binary, next to canopy's (`cargo test` builds examples; a lone
/// `cargo test --test child_app` may not have).
fn child_app() -> PathBuf {
    let canopy = PathBuf::from(env!("CARGO_BIN_EXE_canopy"));
    let binary = canopy.with_file_name("examples").join("child_app");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "--example", "child_app"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --example child_app");
    }
    binary
}

/// The example, its stdout captured.
fn start_child_app(stack: &Stack, app: &str) -> Spawned {
    let mut cmd = Command::new(child_app());
    cmd.args(["--app", app, "--redis-url", &stack.redis.url()])
        .args(["--namespace", &stack.namespace])
        .args(["--server", &stack.daemon.url("")])
        .env("CANOPY_TOKEN", common::agent::TOKEN);
    Spawned::start(&mut cmd, Capture::Stdout, "the child_app example")
}

/// The kinds of the app's signals, oldest first.
fn kinds(stack: &Stack, app: &str) -> Vec<String> {
    let reply: ::redis::streams::StreamRangeReply =
        ::redis::Commands::xrange_all(&mut stack.redis.conn(), stack.key(app, "events"))
            .expect("XRANGE");
    reply
        .ids
        .iter()
        .map(|e| e.get::<String>("kind").expect("a kind field"))
        .collect()
}

#[test]
fn an_embedded_client_applies_files_and_reloads_config_in_place() {
    let stack = Stack::start("child-app");
    let app = "platform/ingress";
    let first = stack.desired_digest(app);
    let mut service = start_child_app(&stack, app);
    assert!(
        eventually(WAIT, || stack.observed_is(app, "synced", &first)),
        "the first signal applied:\n{}",
        service.log()
    );
    assert!(service.printed("running: ", &first), "{}", service.log());
    assert!(service.printed("running: ", r#""CLASS": "nginx""#));

    // Only `config` changes: a `config` signal, and the service reloads it
    // without downloading files or restarting.
    let pid = service.pid();
    stack.commit(&[("platform/ingress/app.yaml", "config: {CLASS: traefik}\n")]);
    stack.refresh();
    let second = {
        assert!(eventually(WAIT, || stack.desired_digest(app) != first));
        stack.desired_digest(app)
    };
    assert!(
        eventually(WAIT, || stack.observed_is(app, "synced", &second)),
        "the config signal applied:\n{}",
        service.log()
    );
    assert!(
        service.printed("config reloaded: ", r#""CLASS": "traefik""#),
        "{}",
        service.log()
    );
    assert_eq!(service.pid(), pid);
    assert!(!service.exited(), "still the same process");
    let kinds = kinds(&stack, app);
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("config"),
        "{kinds:?}"
    );
    assert_eq!(
        stack.observed(app).get("message").map(String::as_str),
        Some("config reloaded without a restart")
    );
}
