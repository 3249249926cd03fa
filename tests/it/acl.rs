//! Per-app Redis ACL users against a real redis-server: each app's user does
//! what its child needs on its own keys and nothing on anyone else's (RELIABILITY
//! row 19); users follow the apps; the credentials files are the apps' own.

use crate::common;

use std::os::unix::fs::PermissionsExt;

use canopy::acl::AppUsers;
use canopy::layout::AppName;
use canopy::protocol::credentials::{self, CredentialsDir};
use common::reconcile::{NS, Setup, app_key};
use redis::Value;

fn name(app: &str) -> AppName {
    AppName::parse(app).expect("a valid name")
}

impl Setup {
    /// A reconciler keeping a user and a credentials file per app, after a
    /// first cycle.
    async fn with_users(&self) -> (canopy::reconcile::Reconciler, CredentialsDir) {
        let dir = self.state.path().join("credentials");
        let mut reconciler = self.reconciler().await;
        reconciler.set_app_users(AppUsers::new(&dir, NS));
        reconciler.cycle().await.expect("first cycle");
        (reconciler, CredentialsDir::new(&dir, NS))
    }

    /// A connection as `app`'s user, with the password of its file.
    async fn as_app(&self, creds: &CredentialsDir, app: &str) -> redis::aio::ConnectionManager {
        let file = credentials::read(&creds.path(&name(app)))
            .expect("readable")
            .expect("the daemon wrote it");
        let mut options = common::store_options(&self.redis.url(), NS);
        options.username = Some(file.username);
        options.password = Some(file.password);
        canopy::protocol::open(&options).await.expect("connects").1
    }
}

/// `Ok` or the error's code (`NOPERM`, ...), of one command.
async fn run(conn: &mut redis::aio::ConnectionManager, args: &[&str]) -> Result<(), String> {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async::<Value>(conn).await.map(drop).map_err(|e| {
        format!(
            "{} {}",
            e.code().unwrap_or("?"),
            e.detail().unwrap_or_default()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_user_reaches_its_own_keys_and_nothing_else() {
    let setup = Setup::new();
    let (_reconciler, creds) = setup.with_users().await;
    let mut a = setup.as_app(&creds, "payments/api").await;
    let own = |suffix: &str| app_key("payments/api", suffix);
    let other = |suffix: &str| app_key("payments/db", suffix);
    let desired = setup.hash(&own("desired"));
    let generation = desired["generation"].as_str();
    let digest = desired["digest"].as_str();

    // What the child does.
    let allowed: Vec<Vec<String>> = vec![
        vec!["PING".into()],
        vec!["HGETALL".into(), own("desired")],
        vec!["HGETALL".into(), own("config")],
        vec!["HGETALL".into(), own("files")],
        vec!["XRANGE".into(), own("events"), "-".into(), "+".into()],
        vec![
            "XREADGROUP".into(),
            "GROUP".into(),
            "canopy".into(),
            "child-a".into(),
            "COUNT".into(),
            "1".into(),
            "STREAMS".into(),
            own("events"),
            ">".into(),
        ],
        vec!["XPENDING".into(), own("events"), "canopy".into()],
        vec![
            "SET".into(),
            own("heartbeat"),
            "child-a".into(),
            "PX".into(),
            "30000".into(),
        ],
        vec![
            "HSET".into(),
            own("observed_files"),
            "app.yaml".into(),
            "0".repeat(64),
        ],
        vec![
            "XADD".into(),
            own("dead"),
            "*".into(),
            "error".into(),
            "x".into(),
        ],
        vec![
            "FCALL".into(),
            "canopy_report".into(),
            "2".into(),
            own("observed"),
            own("desired"),
            generation.into(),
            digest.into(),
            desired["revision"].clone(),
            "synced".into(),
            "ok".into(),
            "child-a".into(),
        ],
    ];
    for args in &allowed {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(run(&mut a, &args).await, Ok(()), "{args:?}");
    }
    assert_eq!(setup.hash(&own("observed"))["digest"], digest);

    // What it may not do: another app's keys and functions, the daemon's
    // keys and functions, signals on its own stream, its own desired state,
    // administration.
    let epoch = format!("canopy:{NS}:epoch");
    let refused: Vec<Vec<String>> = vec![
        vec!["HGETALL".into(), other("desired")],
        vec!["HGETALL".into(), other("secrets")],
        vec!["XRANGE".into(), other("events"), "-".into(), "+".into()],
        vec!["SET".into(), other("heartbeat"), "x".into()],
        vec![
            "FCALL".into(),
            "canopy_report".into(),
            "2".into(),
            other("observed"),
            other("desired"),
            "1".into(),
            digest.into(),
            desired["revision"].clone(),
            "synced".into(),
            "forged".into(),
            "child-a".into(),
        ],
        vec![
            "XADD".into(),
            own("events"),
            "*".into(),
            "kind".into(),
            "sync".into(),
        ],
        vec!["HSET".into(), own("desired"), "digest".into(), "x".into()],
        vec!["DEL".into(), own("desired")],
        vec!["GET".into(), epoch.clone()],
        vec!["HGETALL".into(), format!("canopy:{NS}:meta")],
        vec!["SMEMBERS".into(), format!("canopy:{NS}:apps")],
        vec![
            "FCALL".into(),
            "canopy_claim".into(),
            "1".into(),
            epoch.clone(),
            "0".into(),
        ],
        vec![
            "FCALL".into(),
            "canopy_hset".into(),
            "2".into(),
            epoch.clone(),
            own("desired"),
            "1".into(),
            "digest".into(),
            "x".into(),
        ],
        vec!["KEYS".into(), "*".into()],
        vec!["SCAN".into(), "0".into()],
        vec!["FLUSHALL".into()],
        vec!["CONFIG".into(), "GET".into(), "*".into()],
        vec!["ACL".into(), "LIST".into()],
        vec!["FUNCTION".into(), "DELETE".into(), "canopy".into()],
        vec!["PUBLISH".into(), own("signal"), "{}".into()],
        vec![
            "SUBSCRIBE".into(),
            format!("canopy:{NS}:app:{{payments/db}}:signal"),
        ],
    ];
    for args in &refused {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = run(&mut a, &args).await;
        assert!(
            result
                .as_ref()
                .is_err_and(|e| e.contains("NOPERM") || e.contains("permissions")),
            "{args:?} was allowed: {result:?}"
        );
    }
    // Nothing of another app changed.
    assert!(setup.hash(&other("observed")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_files_follow_the_apps() {
    let setup = Setup::new();
    let (mut reconciler, creds) = setup.with_users().await;
    let mut admin = setup.redis.async_conn().await;
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut admin)
        .await
        .unwrap();
    let apps: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("canopy:{NS}:apps"))
        .query_async(&mut admin)
        .await
        .unwrap();
    for app in &apps {
        assert!(
            users.contains(&format!("canopy:{NS}:app:{app}")),
            "{app}: {users:?}"
        );
        let path = creds.path(&name_or_root(app));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    // Redis holds only the passwords' sha256.
    let file = credentials::read(&creds.path(&name("search")))
        .unwrap()
        .unwrap();
    let acl: Vec<String> = redis::cmd("ACL")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(!acl.iter().any(|line| line.contains(file.password.expose())));
    assert!(acl.iter().any(|line| line.contains(&file.password_hash())));

    // Redis loses its users: the next full comparison makes them again, with
    // the same passwords (a child's file stays valid).
    let _: () = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(format!("canopy:{NS}:app:search"))
        .query_async(&mut admin)
        .await
        .unwrap();
    reconciler.set_full_compare_every(std::time::Duration::ZERO);
    reconciler.cycle().await.unwrap();
    let mut child = setup.as_app(&creds, "search").await;
    assert_eq!(run(&mut child, &["PING"]).await, Ok(()));

    // A new app gets its user before its signal; a removed one keeps its
    // user through the prune grace, so its child can read the prune signal.
    setup.commit(
        &[("billing/app.yaml", "labels: {team: billing}\n")],
        "add billing",
    );
    reconciler.set_full_compare_every(std::time::Duration::from_secs(3600));
    reconciler.cycle().await.unwrap();
    let mut billing = setup.as_app(&creds, "billing").await;
    assert_eq!(
        run(&mut billing, &["HGETALL", &app_key("billing", "desired")]).await,
        Ok(())
    );
    common::git(&setup.repo, &["rm", "-rq", "billing"]);
    common::git(&setup.repo, &["commit", "-qm", "remove billing"]);
    reconciler.cycle().await.unwrap();
    assert_eq!(
        run(
            &mut billing,
            &["XRANGE", &app_key("billing", "events"), "-", "+"]
        )
        .await,
        Ok(()),
        "the prune signal is still readable"
    );
    assert!(creds.path(&name("billing")).exists());
}

fn name_or_root(app: &str) -> AppName {
    if app == "." {
        AppName::root()
    } else {
        name(app)
    }
}

/// The reference child, connected as its app's user with the file the daemon
/// wrote, applies its signals and reports as always.
#[test]
fn an_agent_runs_with_its_apps_credentials_only() {
    let creds = tempfile::tempdir().unwrap();
    let dir = creds.path().display().to_string();
    let stack = common::agent::Stack::start_with(
        "acl-agent",
        &[("CANOPY_REDIS_ACL_CREDENTIALS_DIR", &dir)],
        |_| {},
    );
    let app = "platform/ingress";
    let file = CredentialsDir::new(creds.path(), "acl-agent").path(&name(app));
    assert!(
        common::eventually(common::agent::WAIT, || file.exists()),
        "the daemon wrote {}",
        file.display()
    );
    let file_arg = file.display().to_string();
    let agent = stack.agent(
        app,
        "ingress-1",
        "true",
        &["--redis-credentials", &file_arg],
    );
    assert!(
        common::eventually(common::agent::WAIT, || stack.synced(app)),
        "{}",
        stack.explain(app, &[&agent])
    );
    let observed = stack.observed(app);
    assert_eq!(observed["reporter"], "ingress-1");
    // Its connections are its app's user's, not the default user's.
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut stack.redis.conn())
        .unwrap();
    let user = format!("user=canopy:acl-agent:app:{app} ");
    assert!(clients.lines().any(|c| c.contains(&user)), "{clients}");
}

/// The daemon itself runs as a user of `daemon_rules` (what docs/security.md
/// tells an operator to create): every cycle, user and function call works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_needs_no_more_than_its_documented_rules() {
    let setup = Setup::new();
    let password = "daemon-pw-for-the-test";
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(password));
    let user = canopy::acl::rules::daemon_user(NS);
    let mut admin = setup.redis.async_conn().await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg(canopy::acl::rules::daemon_rules(NS, &[hash]))
        .query_async(&mut admin)
        .await
        .unwrap();

    let mut options = common::store_options(&setup.redis.url(), NS);
    options.username = Some(user);
    options.password = Some(canopy::protocol::Secret::new(password));
    let mut reconciler = setup
        .reconciler_as(
            &setup.repo,
            setup.state.path(),
            canopy::layout::LayoutOptions::default(),
            &options,
        )
        .await;
    let dir = setup.state.path().join("credentials");
    reconciler.set_app_users(AppUsers::new(&dir, NS));
    let report = reconciler
        .cycle()
        .await
        .expect("a full cycle as the daemon's user");
    assert!(report.signals > 0, "{report:?}");
    setup.commit(&[("search/values.yaml", "replicas: 5\n")], "scale");
    reconciler.set_full_compare_every(std::time::Duration::ZERO);
    let report = reconciler.cycle().await.expect("an incremental one");
    assert_eq!(report.kinds.get("sync"), Some(&1), "{report:?}");
    let mut child = setup.as_app(&CredentialsDir::new(&dir, NS), "search").await;
    assert_eq!(run(&mut child, &["PING"]).await, Ok(()));

    // It manages its namespace's users only: another namespace's key is out
    // of its reach.
    let mut daemon = canopy::protocol::open(&options).await.unwrap().1;
    let refused = run(&mut daemon, &["GET", "canopy:other:epoch"]).await;
    assert!(refused.is_err_and(|e| e.contains("NOPERM")));
}

#[test]
fn creds_path_names_the_file_the_daemon_writes() {
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().display().to_string();
    let out = common::canopy(&["creds", "path", "payments/api", "--state-dir", &state_arg]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let want = CredentialsDir::new(&state.path().join("credentials"), "default")
        .path(&name("payments/api"));
    assert_eq!(common::stdout(&out).trim(), want.display().to_string());
    let out = common::canopy(&[
        "creds",
        "path",
        ".",
        "--credentials-dir",
        "/c",
        "--namespace",
        "prod",
    ]);
    assert_eq!(
        common::stdout(&out).trim(),
        "/c/prod/_root/credentials.json"
    );

    // An external Redis without a credentials dir: no per-app users, said so.
    let config = state.path().join("canopy.yaml");
    std::fs::write(
        &config,
        "repo: {url: /r}\nredis: {url: 'redis://127.0.0.1:1/0'}\n",
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let out = common::canopy(&["creds", "path", "search", "--config", &config_arg]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        common::stderr(&out).contains("redis.acl.credentials_dir"),
        "{}",
        common::stderr(&out)
    );
}

/// Twenty rotations while a child applies signals and a probe connects with
/// the file's password every 100 ms: no probe ever fails, the child follows
/// every change, and it holds the newest password when its connections drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_rotate_under_load_and_no_child_is_ever_locked_out() {
    use common::daemon::{NAMESPACE, READ_TOKEN, TestDaemon};
    use std::str::FromStr as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    let mut daemon = TestDaemon::start("", &[]).await;
    let creds_dir = daemon.redis.dir().join("credentials");
    let grace = Duration::from_secs(3);
    let every_second = cron::Schedule::from_str("* * * * * *").unwrap();
    daemon
        .reconciler
        .set_app_users(AppUsers::new(&creds_dir, NAMESPACE).rotate_on(every_second, grace));
    daemon.reconciler.cycle().await.expect("users made");
    let app = "platform/ingress";
    let creds = CredentialsDir::new(&creds_dir, NAMESPACE);
    let file = creds.path(&name(app));

    // The probe: what a child starting at any moment would do.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let probes = Arc::new(AtomicUsize::new(0));
    let probe = {
        let (stop, failures, probes) = (stop.clone(), failures.clone(), probes.clone());
        let (url, file) = (daemon.redis.url(), file.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let credentials = credentials::read(&file).unwrap().unwrap();
                let mut options = common::store_options(&url, NAMESPACE);
                options.username = Some(credentials.username);
                options.password = Some(credentials.password);
                match canopy::protocol::open(&options).await {
                    Ok((_, mut conn)) => {
                        if let Err(e) = run(&mut conn, &["PING"]).await {
                            failures.lock().unwrap().push(e);
                        }
                    }
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
                probes.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let agent_dir = daemon.redis.dir().join("agent");
    let args: Vec<String> = [
        "agent",
        "--app",
        app,
        "--exec",
        "true",
        "--consumer",
        "ingress-1",
        "--redis-url",
        &daemon.redis.url(),
        "--namespace",
        NAMESPACE,
        "--server",
        &daemon.url(""),
        "--token",
        READ_TOKEN,
        "--redis-credentials",
        &file.display().to_string(),
        "--dir",
        &agent_dir.display().to_string(),
        "--poll",
        "200ms",
        "--retry-delay",
        "100ms",
        "--heartbeat-ttl",
        "3s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = common::agent::AgentProcess::start(&args, agent_dir.clone(), &[]);
    let desired = |daemon: &TestDaemon| {
        daemon
            .redis
            .cmd(&["HGET", &app_key_in(app, "desired"), "digest"])
    };
    let observed = |daemon: &TestDaemon| {
        daemon
            .redis
            .cmd(&["HGET", &app_key_in(app, "observed"), "digest"])
    };
    let synced = |daemon: &TestDaemon| desired(daemon) == observed(daemon);

    let mut passwords = std::collections::BTreeSet::new();
    let mut round = 0;
    while passwords.len() < 21 {
        round += 1;
        assert!(
            round < 200,
            "rotations stalled: {} passwords",
            passwords.len()
        );
        daemon
            .commit_and_cycle(&[(
                "platform/ingress/deployment.yaml",
                &format!("replicas: {round}\n"),
            )])
            .await;
        passwords.insert(
            credentials::read(&file)
                .unwrap()
                .unwrap()
                .password
                .expose()
                .to_owned(),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !synced(&daemon) {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}:\n{}",
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            daemon.reconciler.cycle().await.expect("cycle");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Past the last grace, the child's connections drop: it reconnects with
    // the password it read last, and keeps following.
    tokio::time::sleep(grace + Duration::from_millis(500)).await;
    daemon
        .reconciler
        .cycle()
        .await
        .expect("the last grace ends");
    let user = format!("canopy:{NAMESPACE}:app:{app}");
    daemon.redis.cmd(&["CLIENT", "KILL", "USER", &user]);
    daemon
        .commit_and_cycle(&[("platform/ingress/deployment.yaml", "replicas: final\n")])
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !synced(&daemon) {
        assert!(
            std::time::Instant::now() < deadline,
            "after the drop:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    probe.await.unwrap();
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} probes failed: {failures:?}",
        failures.len(),
        probes.load(Ordering::Relaxed)
    );
    assert!(probes.load(Ordering::Relaxed) > 100);
    let dead = daemon.redis.cmd(&["XLEN", &app_key_in(app, "dead")]);
    assert_eq!(dead, redis::Value::Int(0), "nothing dead-lettered");
}

fn app_key_in(app: &str, suffix: &str) -> String {
    format!(
        "canopy:{}:app:{{{app}}}:{suffix}",
        common::daemon::NAMESPACE
    )
}
