//! The daemon's configuration: `examples/canopy.yaml` loads (so it cannot rot),
//! defaults, the three layers (file < `CANOPY_*` < flags), an error naming the
//! input for every kind of bad input, and secrets that never show.
//!
//! The environment is a closure: no test touches the process's own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use canopy::config::{
    Config, ConfigError, ENV_VARS, JwksSource, NamespaceScope, Overrides, Role, SinkFormat,
};
use canopy::error_chain;
use canopy::layout::GlobPattern;

const CANARY: &str = "canary-s3cr3t";

/// An environment made of `vars`.
fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name: &str| vars.get(name).cloned()
}

/// The variables `examples/canopy.yaml` names, each holding the canary.
fn example_env() -> impl Fn(&str) -> Option<String> + use<> {
    env_of(&[
        ("HOME", "/home/op"),
        ("GIT_USER", "deploy"),
        ("GIT_TOKEN", CANARY),
        ("CANOPY_REDIS_USER", "canopy"),
        ("CANOPY_REDIS_PASSWORD", CANARY),
        ("GITHUB_WEBHOOK_SECRET", CANARY),
        ("GITLAB_WEBHOOK_TOKEN", CANARY),
        ("GITEA_WEBHOOK_SECRET", CANARY),
        ("CANOPY_WEBHOOK_SECRET", CANARY),
        (
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/canary-s3cr3t",
        ),
        ("REPORT_SECRET", CANARY),
    ])
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/canopy.yaml")
}

/// A config file in a temp dir, named `canopy.yaml`.
struct File {
    dir: tempfile::TempDir,
}

impl File {
    fn new(text: impl AsRef<[u8]>) -> File {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("canopy.yaml"), text).unwrap();
        File { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("canopy.yaml")
    }

    fn load(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Config::load(Some(&self.path()), env, &Overrides::default())
    }

    /// The error's whole chain, with the temp dir shown as `<dir>`.
    fn error(&self, env: &dyn Fn(&str) -> Option<String>) -> String {
        let err = self.load(env).expect_err("config must be refused");
        error_chain(&err).replace(&self.dir.path().display().to_string(), "<dir>")
    }
}

#[test]
fn the_example_loads() {
    let config = Config::load(Some(&example()), &example_env(), &Overrides::default()).unwrap();
    assert_eq!(config.namespace.as_str(), "default");
    assert_eq!(config.state_dir, Path::new("/var/lib/canopy"));

    let repo = &config.repo;
    assert_eq!(
        repo.url.as_str(),
        "https://git.example.com/acme/platform.git"
    );
    assert_eq!(repo.reference.as_deref(), Some("main"));
    let children = repo.children.as_ref().unwrap();
    assert_eq!(children.dirs, [GlobPattern::parse("apps/*").unwrap()]);
    assert_eq!(repo.poll_interval, Duration::from_secs(30));
    let credentials = repo.credentials().unwrap();
    assert_eq!(
        (credentials.username.as_str(), credentials.token.expose()),
        ("deploy", CANARY)
    );
    assert_eq!(repo.layout_options().root, "");

    let redis = &config.redis;
    assert_eq!(
        redis.display_url().as_deref(),
        Some("redis://127.0.0.1:6379/0")
    );
    assert_eq!(redis.username.as_deref(), Some("canopy"));
    assert_eq!(redis.password.as_ref().unwrap().expose(), CANARY);
    assert_eq!(redis.sync_timeout, Duration::from_secs(300));

    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.server.max_connections, 256);
    assert_eq!(config.server.header_timeout, Duration::from_secs(10));
    assert_eq!(config.server.body_timeout, Duration::from_secs(10));
    assert_eq!(config.server.unverified_body_budget, 16 << 20);
    let roles: Vec<_> = config
        .server
        .tokens
        .iter()
        .map(|t| (t.name.as_str(), t.role))
        .collect();
    assert_eq!(
        roles,
        [
            ("ci", Role::Sync),
            ("dashboard", Role::Read),
            ("payments-api", Role::Read)
        ]
    );
    let scopes: Vec<String> = config
        .server
        .tokens
        .iter()
        .map(|t| t.apps.to_string())
        .collect();
    assert_eq!(scopes, ["every app", "every app", "payments/api"]);
    let namespaces: Vec<String> = config
        .server
        .tokens
        .iter()
        .map(|t| t.namespaces.to_string())
        .collect();
    assert_eq!(namespaces, ["default", "every namespace", "default"]);
    let oidc = config.server.oidc.as_ref().unwrap();
    assert_eq!(oidc.issuer, "https://idp.example.com/realms/platform");
    assert_eq!(oidc.audience, "canopy");
    assert!(matches!(&oidc.jwks, JwksSource::Url(url) if url.ends_with("/certs")));
    let rules: Vec<String> = oidc
        .grants
        .iter()
        .map(|r| format!("{} {} {} {}", r.describe(), r.role, r.apps, r.namespaces))
        .collect();
    assert_eq!(
        rules,
        [
            "groups=platform-readers read every app every namespace",
            "groups=payments-team sync payments, payments/** default",
            "sub=7c2d6a4e-0b1f-4f57-9d1e-2a6f3b8c9e01 admin every app default",
        ]
    );
    assert!(config.server.read_requires_token);
    // sha256("test")
    assert_eq!(
        hex::encode(config.server.tokens[0].sha256),
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );

    let hooks = &config.webhooks;
    for secret in [&hooks.github, &hooks.gitlab, &hooks.gitea, &hooks.generic] {
        assert_eq!(secret.as_ref().unwrap().expose(), CANARY);
    }
    assert_eq!(hooks.max_body, 1 << 20);

    let [morning, hourly] = &config.reports[..] else {
        panic!("two reports: {:?}", config.reports)
    };
    assert_eq!(morning.name, "morning");
    assert_eq!(morning.schedule.source(), "0 0 6 * * Mon-Fri");
    assert_eq!(morning.timezone, chrono_tz::Europe::Paris);
    assert_eq!(morning.sinks[0].format, SinkFormat::Slack);
    assert!(morning.sinks[0].url.expose().ends_with(CANARY));
    assert_eq!(
        morning.sinks[0].url.to_string(),
        "https://hooks.slack.com/..."
    );
    assert_eq!(morning.sinks[1].secret.as_ref().unwrap().expose(), CANARY);
    assert!(!morning.allow_private_targets);
    assert_eq!(hourly.timezone, chrono_tz::UTC);
    assert_eq!(hourly.sinks[0].url.host(), "10.0.0.5");
    assert!(hourly.allow_private_targets);
    assert_eq!(config.shutdown_grace, Duration::from_secs(30));
}

#[test]
fn the_example_documents_every_variable() {
    let text = std::fs::read_to_string(example()).unwrap();
    for var in ENV_VARS {
        assert!(text.contains(var), "{var} is not in examples/canopy.yaml");
    }
}

#[test]
fn a_minimal_config_gets_every_default() {
    let file = File::new("repo:\n  url: https://git.example.com/platform.git\n");
    let config = file.load(&env_of(&[("HOME", "/home/op")])).unwrap();
    assert_eq!(config.namespace.as_str(), "default");
    assert_eq!(config.state_dir, Path::new("/home/op/.local/state/canopy"));
    let repo = &config.repo;
    assert_eq!(repo.reference, None);
    assert_eq!(repo.path, ".");
    assert!(repo.children.is_none());
    assert_eq!(repo.marker, "app.yaml");
    assert_eq!(repo.poll_interval, Duration::from_secs(30));
    assert_eq!(repo.timeout, Duration::from_secs(60));
    assert!(repo.auth.is_none() && repo.credentials().is_none());
    let redis = &config.redis;
    assert!(redis.url.is_none() && redis.display_url().is_none());
    assert!(redis.username.is_none() && redis.password.is_none());
    assert_eq!(redis.stream_maxlen, 10_000);
    assert_eq!(redis.connect_timeout, Duration::from_secs(5));
    assert_eq!(redis.response_timeout, Duration::from_secs(5));
    assert_eq!(redis.sync_timeout, Duration::from_secs(300));
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert!(config.server.tokens.is_empty() && config.server.read_requires_token);
    assert_eq!(config.server.max_connections, 256);
    assert_eq!(config.server.header_timeout, Duration::from_secs(10));
    assert_eq!(config.server.body_timeout, Duration::from_secs(10));
    assert_eq!(config.server.unverified_body_budget, 16 << 20);
    let hooks = &config.webhooks;
    assert!(hooks.github.is_none() && hooks.gitlab.is_none());
    assert!(hooks.gitea.is_none() && hooks.generic.is_none());
    assert_eq!(hooks.max_body, 1 << 20);
    assert!(config.reports.is_empty());
    assert_eq!(config.shutdown_grace, Duration::from_secs(30));
}

/// A token's namespaces, as written; the daemon's own when omitted and no
/// token names any.
#[test]
fn token_namespaces() {
    let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let file = File::new(format!(
        "repo: {{url: /r}}\nserver:\n  tokens:\n    - {{name: a, role: read, sha256: {sha}, namespaces: [prod, staging]}}\n    - {{name: b, role: sync, sha256: {sha}, namespaces: ['*']}}\n"
    ));
    let config = file.load(&env_of(&[])).unwrap();
    let scopes: Vec<String> = config
        .server
        .tokens
        .iter()
        .map(|t| t.namespaces.to_string())
        .collect();
    assert_eq!(scopes, ["prod, staging", "every namespace"]);
    let file = File::new(format!(
        "repo: {{url: /r}}\nserver:\n  tokens: [{{name: a, role: read, sha256: {sha}}}]\n"
    ));
    let config = file.load(&env_of(&[])).unwrap();
    assert_eq!(config.server.tokens[0].namespaces, NamespaceScope::Daemon);
}

/// `server.oidc` with every key, and with only the required ones.
#[test]
fn oidc_settings_and_their_defaults() {
    let file = File::new(
        "repo: {url: /r}\nserver:\n  oidc:\n    issuer: https://idp.example.com/realms/platform\n    audience: canopy\n    jwks_file: /etc/canopy/jwks.json\n    algorithms: [ES256]\n    leeway: 0s\n    jwks_max_age: 1h\n    jwks_min_interval: 1m\n    grants:\n      - {claim: groups, value: payments-team, role: sync, apps: [\"payments/**\"], namespaces: [prod]}\n      - {sub: alice, role: admin, namespaces: [\"*\"]}\n",
    );
    let oidc = file.load(&env_of(&[])).unwrap().server.oidc.unwrap();
    assert_eq!(oidc.issuer, "https://idp.example.com/realms/platform");
    assert_eq!(oidc.audience, "canopy");
    assert_eq!(oidc.jwks, JwksSource::File("/etc/canopy/jwks.json".into()));
    assert_eq!(oidc.algorithms, [jsonwebtoken::Algorithm::ES256]);
    assert_eq!(oidc.leeway, Duration::ZERO);
    assert_eq!(oidc.jwks_max_age, Duration::from_secs(3600));
    assert_eq!(oidc.jwks_min_interval, Duration::from_secs(60));
    let rules: Vec<String> = oidc
        .grants
        .iter()
        .map(|r| format!("{} {} {} {}", r.describe(), r.role, r.apps, r.namespaces))
        .collect();
    assert_eq!(
        rules,
        [
            "groups=payments-team sync payments/** prod",
            "sub=alice admin every app every namespace"
        ]
    );

    let file = File::new(
        "repo: {url: /r}\nserver:\n  oidc:\n    issuer: https://idp.example.com\n    audience: canopy\n    jwks_url: https://idp.example.com/keys\n    grants: [{sub: alice, role: read}]\n",
    );
    let oidc = file.load(&env_of(&[])).unwrap().server.oidc.unwrap();
    assert_eq!(
        oidc.jwks,
        JwksSource::Url("https://idp.example.com/keys".to_owned())
    );
    assert_eq!(
        oidc.algorithms,
        [
            jsonwebtoken::Algorithm::RS256,
            jsonwebtoken::Algorithm::ES256
        ]
    );
    assert_eq!(oidc.leeway, Duration::from_secs(60));
    assert_eq!(oidc.jwks_max_age, Duration::from_secs(600));
    assert_eq!(oidc.jwks_min_interval, Duration::from_secs(30));
    assert!(!oidc.grants[0].namespaces.is_named());
}

/// `write`, the first name of role `sync`, still loads, as `sync`.
#[test]
fn token_roles_and_the_write_alias() {
    let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let file = File::new(format!(
        "repo: {{url: /r}}\nserver:\n  tokens:\n    - {{name: a, role: read, sha256: {sha}}}\n    - {{name: b, role: sync, sha256: {sha}}}\n    - {{name: c, role: write, sha256: {sha}}}\n    - {{name: d, role: admin, sha256: {sha}}}\n"
    ));
    let config = file.load(&env_of(&[])).unwrap();
    let roles: Vec<Role> = config.server.tokens.iter().map(|t| t.role).collect();
    assert_eq!(roles, [Role::Read, Role::Sync, Role::Sync, Role::Admin]);
    assert!(Role::Read < Role::Sync && Role::Sync < Role::Admin);
}

#[test]
fn env_overrides_the_file_and_flags_override_env() {
    let file = File::new("repo:\n  url: /srv/git/platform.git\n  poll_interval: 10s\n");
    let env = env_of(&[("CANOPY_POLL_INTERVAL", "20s")]);
    let flags = Overrides {
        poll_interval: Some(Duration::from_secs(40)),
        ..Overrides::default()
    };
    let interval = |env: &dyn Fn(&str) -> Option<String>, flags: &Overrides| {
        Config::load(Some(&file.path()), env, flags)
            .unwrap()
            .repo
            .poll_interval
            .as_secs()
    };
    assert_eq!(interval(&env_of(&[]), &Overrides::default()), 10);
    assert_eq!(interval(&env, &Overrides::default()), 20);
    assert_eq!(interval(&env, &flags), 40);
    // An empty variable is unset, not an error.
    assert_eq!(
        interval(
            &env_of(&[("CANOPY_POLL_INTERVAL", "")]),
            &Overrides::default()
        ),
        10
    );
}

#[test]
fn every_variable_and_flag_reaches_its_key() {
    let file = File::new(
        "namespace: file\nstate_dir: /file\nrepo: {url: /file, ref: file, path: file, poll_interval: 1s}\nredis: {url: 'redis://file:1/0', acl: {credentials_dir: /file-creds}}\nserver: {listen: '127.0.0.1:1'}\n",
    );
    let env = env_of(&[
        ("CANOPY_NAMESPACE", "env"),
        ("CANOPY_STATE_DIR", "/env"),
        ("CANOPY_REPO_URL", "https://env.example.com/r.git"),
        ("CANOPY_REPO_REF", "env"),
        ("CANOPY_REPO_PATH", "env"),
        ("CANOPY_POLL_INTERVAL", "2s"),
        ("CANOPY_REDIS_URL", "redis://env:2/0"),
        ("CANOPY_REDIS_ACL_CREDENTIALS_DIR", "/env-creds"),
        ("CANOPY_LISTEN", "127.0.0.1:2"),
    ]);
    let config = file.load(&env).unwrap();
    let seen = |c: &Config| {
        format!(
            "{} {} {} {:?} {} {:?} {:?} {} {:?}",
            c.namespace,
            c.state_dir.display(),
            c.repo.url,
            c.repo.reference,
            c.repo.path,
            c.repo.poll_interval,
            c.redis.display_url(),
            c.server.listen,
            c.redis.credentials_dir,
        )
    };
    assert_eq!(
        seen(&config),
        r#"env /env https://env.example.com/r.git Some("env") env 2s Some("redis://env:2/0") 127.0.0.1:2 Some("/env-creds")"#
    );
    let flags = Overrides {
        namespace: Some("flag".parse().unwrap()),
        state_dir: Some("/flag".into()),
        repo_url: Some(canopy::source::RepoUrl::parse("/flag").unwrap()),
        repo_ref: Some("flag".into()),
        repo_path: Some("flag".into()),
        children: vec![GlobPattern::parse("apps/*").unwrap()],
        children_exclude: vec![GlobPattern::parse("apps/old").unwrap()],
        redis_url: Some("redis://flag:3/0".parse().unwrap()),
        credentials_dir: Some("/flag-creds".into()),
        poll_interval: Some(Duration::from_secs(3)),
        listen: Some("127.0.0.1:3".parse().unwrap()),
    };
    let config = Config::load(Some(&file.path()), &env, &flags).unwrap();
    assert_eq!(
        seen(&config),
        r#"flag /flag /flag Some("flag") flag 3s Some("redis://flag:3/0") 127.0.0.1:3 Some("/flag-creds")"#
    );
    let children = config.repo.layout_options().root_children.unwrap();
    assert_eq!(children.exclude[0].0, "apps/old");
}

#[test]
fn without_a_file_the_url_comes_from_env_or_flags() {
    let env = env_of(&[("CANOPY_REPO_URL", "https://git.example.com/platform.git")]);
    let config = Config::load(None, &env, &Overrides::default()).unwrap();
    assert_eq!(
        config.repo.url.as_str(),
        "https://git.example.com/platform.git"
    );
    assert_eq!(config.state_dir, Path::new(".canopy"));

    let err = Config::load(None, &env_of(&[]), &Overrides::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no repository URL: set repo.url in the config file, the CANOPY_REPO_URL environment variable, or the --repo-url flag"
    );
    // A file without repo.url is the same error.
    let file = File::new("namespace: prod\n");
    assert!(matches!(
        file.load(&env_of(&[])),
        Err(ConfigError::MissingRepoUrl)
    ));
}

#[test]
fn an_empty_file_is_all_defaults() {
    let file = File::new("# nothing yet\n");
    let env = env_of(&[("CANOPY_REPO_URL", "/srv/git/r.git")]);
    assert_eq!(file.load(&env).unwrap().namespace.as_str(), "default");
}

/// A bad config file: its text and the variables it sees.
struct Bad {
    case: &'static str,
    yaml: &'static str,
    env: &'static [(&'static str, &'static str)],
}

const fn bad(case: &'static str, yaml: &'static str) -> Bad {
    Bad {
        case,
        yaml,
        env: &[],
    }
}

const BAD_FILES: &[Bad] = &[
    bad("yaml syntax", "repo:\n  url: /r\n   ref: main\n"),
    bad("unknown top-level key", "repo: {url: /r}\nrepos: {}\n"),
    bad(
        "unknown nested key",
        "repo:\n  url: /r\n  auth:\n    token_env: T\n    pasword_env: P\n",
    ),
    bad("wrong type", "repo: {url: /r}\nserver: {tokens: {}}\n"),
    bad(
        "duration without unit",
        "repo:\n  url: /r\n  poll_interval: 30\n",
    ),
    bad(
        "zero duration",
        "repo: {url: /r}\nredis: {sync_timeout: 0s}\n",
    ),
    bad("duration unit", "repo: {url: /r}\nshutdown_grace: 2d\n"),
    bad(
        "five-field cron",
        "repo: {url: /r}\nreports:\n  - name: ok\n    schedule: '0 0 6 * * *'\n  - name: nightly\n    schedule: '0 6 * * *'\n",
    ),
    bad(
        "cron garbage",
        "repo: {url: /r}\nreports:\n  - {name: weekly, schedule: 'every monday'}\n",
    ),
    bad(
        "cron that never fires",
        "repo: {url: /r}\nreports:\n  - {name: leap, schedule: '0 0 0 30 2 *'}\n",
    ),
    bad(
        "bad timezone",
        "repo: {url: /r}\nreports:\n  - name: morning\n    schedule: '@daily'\n    timezone: Mars/Olympus\n",
    ),
    bad(
        "duplicate report names",
        "repo: {url: /r}\nreports:\n  - {name: daily, schedule: '@daily'}\n  - {name: other, schedule: '@daily'}\n  - {name: daily, schedule: '@hourly'}\n",
    ),
    bad(
        "bad report name",
        "repo: {url: /r}\nreports:\n  - {name: 'Daily Report', schedule: '@daily'}\n",
    ),
    bad(
        "sink url not http",
        "repo: {url: /r}\nreports:\n  - name: daily\n    schedule: '@daily'\n    sinks:\n      - {url: 'ftp://files.example.com/drop', format: json}\n",
    ),
    bad(
        "sink without url",
        "repo: {url: /r}\nreports:\n  - name: daily\n    schedule: '@daily'\n    sinks: [{format: slack}]\n",
    ),
    bad(
        "sink format",
        "repo: {url: /r}\nreports:\n  - name: daily\n    schedule: '@daily'\n    sinks: [{url: 'https://h/x', format: html}]\n",
    ),
    bad(
        "token sha256 not lowercase hex",
        "repo: {url: /r}\nserver:\n  tokens:\n    - name: ci\n      role: write\n      sha256: 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08\n",
    ),
    bad(
        "token sha256 too short",
        "repo: {url: /r}\nserver:\n  tokens: [{name: ci, role: read, sha256: abc123}]\n",
    ),
    bad(
        "token role",
        "repo: {url: /r}\nserver:\n  tokens: [{name: ci, role: owner, sha256: abc}]\n",
    ),
    bad(
        "acl rotate cron",
        "repo: {url: /r}\nredis:\n  acl: {credentials_dir: /c, rotate: '0 3 * * *'}\n",
    ),
    bad(
        "token app pattern",
        "repo: {url: /r}\nserver:\n  tokens: [{name: ci, role: read, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, apps: [payments, /search]}]\n",
    ),
    bad(
        "duplicate token names",
        "repo: {url: /r}\nserver:\n  tokens:\n    - {name: ci, role: read, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}\n    - {name: ci, role: write, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}\n",
    ),
    bad(
        "token namespaces",
        "repo: {url: /r}\nserver:\n  tokens: [{name: ci, role: read, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, namespaces: [prod, Staging]}]\n",
    ),
    bad(
        "token namespaces named on some tokens only",
        "repo: {url: /r}\nserver:\n  tokens:\n    - {name: prod-ci, role: sync, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, namespaces: [prod]}\n    - {name: ci, role: sync, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}\n",
    ),
    bad(
        "oidc without keys",
        "repo: {url: /r}\nserver:\n  oidc:\n    issuer: https://idp.example.com\n    audience: canopy\n    grants: [{sub: alice, role: read}]\n",
    ),
    bad(
        "oidc with two key sources",
        "repo: {url: /r}\nserver:\n  oidc:\n    issuer: https://idp.example.com\n    audience: canopy\n    jwks_url: https://idp.example.com/keys\n    jwks_file: /etc/keys.json\n    grants: [{sub: alice, role: read}]\n",
    ),
    bad(
        "oidc jwks_url over plain http",
        "repo: {url: /r}\nserver:\n  oidc:\n    issuer: https://idp.example.com\n    audience: canopy\n    jwks_url: http://idp.example.com/keys\n    grants: [{sub: alice, role: read}]\n",
    ),
    bad(
        "oidc algorithm none",
        "repo: {url: /r}\nserver:\n  oidc:\n    issuer: https://idp.example.com\n    audience: canopy\n    jwks_url: https://idp.example.com/keys\n    algorithms: [RS256, none]\n    grants: [{sub: alice, role: read}]\n",
    ),
    bad(
        "oidc algorithm HS256",
        "repo: {url: /r}\nserver:\n  oidc:\n    issuer: https://idp.example.com\n    audience: canopy\n    jwks_url: https://idp.example.com/keys\n    algorithms: [HS256]\n    grants: [{sub: alice, role: read}]\n",
    ),
    bad(
        "oidc without grants",
        "repo: {url: /r}\nserver:\n  oidc:\n    issuer: https://idp.example.com\n    audience: canopy\n    jwks_url: https://idp.example.com/keys\n    grants: []\n",
    ),
    bad(
        "oidc grant with sub and claim",
        "repo: {url: /r}\nserver:\n  oidc:\n    issuer: https://idp.example.com\n    audience: canopy\n    jwks_url: https://idp.example.com/keys\n    grants:\n      - {sub: alice, claim: groups, value: ops, role: admin}\n",
    ),
    bad(
        "oidc grant claim without value",
        "repo: {url: /r}\nserver:\n  oidc:\n    issuer: https://idp.example.com\n    audience: canopy\n    jwks_url: https://idp.example.com/keys\n    grants:\n      - {claim: groups, role: read}\n",
    ),
    bad(
        "oidc grant role",
        "repo: {url: /r}\nserver:\n  oidc:\n    issuer: https://idp.example.com\n    audience: canopy\n    jwks_url: https://idp.example.com/keys\n    grants:\n      - {claim: groups, value: ops, role: root}\n",
    ),
    bad(
        "oidc unknown key",
        "repo: {url: /r}\nserver:\n  oidc:\n    issuer: https://idp.example.com\n    audience: canopy\n    jwks_uri: https://idp.example.com/keys\n    grants: [{sub: alice, role: read}]\n",
    ),
    bad(
        "oidc leeway",
        "repo: {url: /r}\nserver:\n  oidc:\n    issuer: https://idp.example.com\n    audience: canopy\n    jwks_url: https://idp.example.com/keys\n    leeway: 1h\n    grants: [{sub: alice, role: read}]\n",
    ),
    bad(
        "oidc jwks_url with credentials",
        "repo: {url: /r}\nserver:\n  oidc:\n    issuer: https://idp.example.com\n    audience: canopy\n    jwks_url: https://user:canary-s3cr3t@idp.example.com/keys\n    grants: [{sub: alice, role: read}]\n",
    ),
    bad(
        "oidc min interval above max age",
        "repo: {url: /r}\nserver:\n  oidc:\n    issuer: https://idp.example.com\n    audience: canopy\n    jwks_url: https://idp.example.com/keys\n    jwks_max_age: 1m\n    jwks_min_interval: 5m\n    grants: [{sub: alice, role: read}]\n",
    ),
    bad(
        "oidc grant namespaces named on some only",
        "repo: {url: /r}\nserver:\n  tokens:\n    - {name: ci, role: sync, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, namespaces: [prod]}\n  oidc:\n    issuer: https://idp.example.com\n    audience: canopy\n    jwks_url: https://idp.example.com/keys\n    grants:\n      - {claim: groups, value: ops, role: admin}\n",
    ),
    bad("namespace", "namespace: Prod:EU\nrepo: {url: /r}\n"),
    bad(
        "secret_env and secret_file",
        "repo: {url: /r}\nwebhooks:\n  github:\n    secret_env: GITHUB_SECRET\n    secret_file: /run/secrets/github\n",
    ),
    bad(
        "secret without a source",
        "repo: {url: /r}\nwebhooks:\n  gitea: {}\n",
    ),
    bad(
        "auth without token",
        "repo:\n  url: https://h/r.git\n  auth: {username: deploy}\n",
    ),
    bad(
        "env name",
        "repo: {url: /r}\nredis: {password_env: 'MY-PASSWORD'}\n",
    ),
    bad(
        "redis url scheme",
        "repo: {url: /r}\nredis:\n  url: 'http://user:canary-s3cr3t@redis.example.com:6379'\n",
    ),
    bad(
        "repo url scheme",
        "repo:\n  url: 'ssh://git:canary-s3cr3t@git.example.com/r.git'\n",
    ),
    bad("repo path escapes", "repo: {url: /r, path: ../elsewhere}\n"),
    bad(
        "marker with a slash",
        "repo: {url: /r, marker: apps/app.yaml}\n",
    ),
    bad(
        "children glob",
        "repo: {url: /r, children: {dirs: ['/abs/*']}}\n",
    ),
    bad(
        "listen",
        "repo: {url: /r}\nserver: {listen: 'localhost:8080'}\n",
    ),
    bad("max_body", "repo: {url: /r}\nwebhooks: {max_body: 10GiB}\n"),
    bad(
        "max_connections",
        "repo: {url: /r}\nserver: {max_connections: 0}\n",
    ),
    bad(
        "header_timeout",
        "repo: {url: /r}\nserver: {header_timeout: 0s}\n",
    ),
    bad(
        "unverified_body_budget",
        "repo: {url: /r}\nserver: {unverified_body_budget: 100GiB}\n",
    ),
    bad(
        "budget below max_body",
        "repo: {url: /r}\nserver: {unverified_body_budget: 512KiB}\nwebhooks: {max_body: 1MiB}\n",
    ),
    bad(
        "stream_maxlen",
        "repo: {url: /r}\nredis: {stream_maxlen: 0}\n",
    ),
    bad(
        "deep nesting",
        "repo: {url: /r}\nnamespace: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[x]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
    ),
    Bad {
        case: "secret variable unset",
        yaml: "repo: {url: /r}\nwebhooks:\n  github: {secret_env: GITHUB_WEBHOOK_SECRET}\n",
        env: &[],
    },
    Bad {
        case: "secret variable empty",
        yaml: "repo: {url: https://h/r.git, auth: {token_env: GIT_TOKEN}}\n",
        env: &[("GIT_TOKEN", "")],
    },
    bad(
        "secret file unreadable",
        "repo: {url: /r}\nredis: {password_file: /nonexistent/canopy/redis-password}\n",
    ),
    Bad {
        case: "sink url variable not http",
        yaml: "repo: {url: /r}\nreports:\n  - name: daily\n    schedule: '@daily'\n    sinks: [{url_env: SLACK_URL, format: slack}]\n",
        env: &[("SLACK_URL", "hooks.slack.com/services/T0/B0/canary-s3cr3t")],
    },
    Bad {
        case: "url credentials and repo.auth",
        yaml: "repo:\n  url: 'https://u:canary-s3cr3t@git.example.com/r.git'\n  auth: {token_env: GIT_TOKEN}\n",
        env: &[("GIT_TOKEN", CANARY)],
    },
    Bad {
        case: "credentials over plain http",
        yaml: "repo:\n  url: 'http://git.example.com/r.git'\n  auth: {token_env: GIT_TOKEN}\n",
        env: &[("GIT_TOKEN", CANARY)],
    },
    Bad {
        case: "redis password twice",
        yaml: "repo: {url: /r}\nredis:\n  url: 'redis://:canary-s3cr3t@redis:6379/0'\n  password_env: REDIS_PASSWORD\n",
        env: &[("REDIS_PASSWORD", CANARY)],
    },
];

/// Every bad file's error, one line each, in one snapshot; each must name the
/// file (with a line for what the parser can locate) and never the canary.
#[test]
fn bad_files_are_refused_with_errors_naming_the_input() {
    let mut report = String::new();
    for case in BAD_FILES {
        let file = File::new(case.yaml);
        let error = file.error(&env_of(case.env));
        assert!(!error.contains(CANARY), "{}: {error}", case.case);
        assert!(
            error.contains("<dir>/canopy.yaml:")
                || error.contains(" environment variable ")
                || error.contains("repo.")
                || error.contains("redis.")
                || error.contains("server.")
                || error.contains("reports["),
            "{}: {error}",
            case.case
        );
        report.push_str(&format!("{}:\n  {error}\n", case.case));
    }
    insta::assert_snapshot!("bad-files", report);
}

#[test]
fn located_errors_point_at_the_offending_line() {
    let line_of = |yaml: &str| {
        let file = File::new(yaml);
        match file.load(&env_of(&[])).unwrap_err() {
            ConfigError::Invalid { line, .. } => line,
            other => panic!("{other}"),
        }
    };
    // The unknown key, the bad duration, the report with the bad schedule.
    assert_eq!(line_of("repo:\n  url: /r\n  sink: x\n"), Some(3));
    assert_eq!(
        line_of("repo:\n  url: /r\n  timeout: 1\n  poll_interval: 5s\n"),
        Some(3)
    );
    assert_eq!(
        line_of(
            "repo: {url: /r}\nreports:\n  - name: a\n    schedule: '@daily'\n  - name: b\n    schedule: '0 6 * * *'\n"
        ),
        Some(5)
    );
}

#[test]
fn bad_variables_are_errors_naming_the_variable() {
    let mut report = String::new();
    for (var, value) in [
        ("CANOPY_POLL_INTERVAL", "30"),
        ("CANOPY_NAMESPACE", "Prod"),
        ("CANOPY_LISTEN", "localhost:8080"),
        ("CANOPY_STATE_DIR", "\0"),
        ("CANOPY_REPO_REF", "main branch"),
        ("CANOPY_REPO_PATH", "/abs"),
        ("CANOPY_REDIS_URL", "http://u:canary-s3cr3t@redis:6379"),
        (
            "CANOPY_REPO_URL",
            "ssh://git:canary-s3cr3t@git.example.com/r.git",
        ),
    ] {
        // Later pairs win: the bad value replaces the good URL for CANOPY_REPO_URL.
        let env = env_of(&[("CANOPY_REPO_URL", "/r"), (var, value)]);
        let err = Config::load(None, &env, &Overrides::default()).unwrap_err();
        let text = error_chain(&err);
        assert!(
            text.starts_with(&format!("environment variable {var}: ")),
            "{text}"
        );
        assert!(!text.contains(CANARY), "{text}");
        report.push_str(&format!("{text}\n"));
    }
    insta::assert_snapshot!("bad-variables", report);
}

#[test]
fn bad_flags_are_errors_naming_the_flag() {
    let env = env_of(&[("CANOPY_REPO_URL", "/r")]);
    let load = |flags: Overrides| error_chain(&Config::load(None, &env, &flags).unwrap_err());
    assert_eq!(
        load(Overrides {
            repo_path: Some("../up".into()),
            ..Overrides::default()
        }),
        r#"flag --repo-path: path "../up" must be a directory relative to the repository's top, without '..' ("." for the top)"#
    );
    assert_eq!(
        load(Overrides {
            poll_interval: Some(Duration::ZERO),
            ..Overrides::default()
        }),
        "flag --poll-interval: must be greater than zero"
    );
    assert!(
        load(Overrides {
            children_exclude: vec![GlobPattern::parse("x").unwrap()],
            ..Overrides::default()
        })
        .starts_with("flag --children-exclude: ")
    );
}

#[test]
fn file_level_failures_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let err = Config::load(Some(&missing), &env_of(&[]), &Overrides::default()).unwrap_err();
    let text = error_chain(&err);
    assert!(
        text.starts_with(&format!(
            "failed to read config file {}: ",
            missing.display()
        )),
        "{text}"
    );

    let huge = File::new(format!("# {}\n", "x".repeat(1 << 20)));
    let text = huge.error(&env_of(&[]));
    assert_eq!(
        text,
        "config file <dir>/canopy.yaml is larger than 1048576 bytes"
    );

    let binary = File::new(b"repo: {url: /r}\nnamespace: \xff\n");
    assert_eq!(
        binary.error(&env_of(&[])),
        "<dir>/canopy.yaml:2: the config file is not valid UTF-8"
    );
}

#[test]
fn secret_files_are_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{CANARY}\n")).unwrap();
    let file = File::new(format!(
        "repo:\n  url: https://git.example.com/r.git\n  auth: {{username: bot, token_file: {}}}\n",
        token.display()
    ));
    let config = file.load(&env_of(&[])).unwrap();
    let auth = config.repo.auth.as_ref().unwrap();
    assert_eq!(
        (auth.username.as_str(), auth.token.expose()),
        ("bot", CANARY)
    );
}

/// The canary, given through every secret form (variables, files, URL userinfo),
/// never shows in the config's Debug or Display forms.
#[test]
fn secrets_never_show_in_debug_output() {
    let config = Config::load(Some(&example()), &example_env(), &Overrides::default()).unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains(CANARY), "{shown}");
    assert!(shown.contains("Secret(***)"));

    let env = env_of(&[
        (
            "CANOPY_REPO_URL",
            "https://deploy:canary-s3cr3t@git.example.com/r.git",
        ),
        (
            "CANOPY_REDIS_URL",
            "redis://canopy:canary-s3cr3t@redis:6379/0",
        ),
    ]);
    let config = Config::load(None, &env, &Overrides::default()).unwrap();
    assert_eq!(config.repo.credentials().unwrap().token.expose(), CANARY);
    assert!(config.redis.url.as_ref().unwrap().expose().contains(CANARY));
    let shown = format!(
        "{config:?} {} {}",
        config.repo.url,
        config.redis.url.as_ref().unwrap()
    );
    assert!(!shown.contains(CANARY), "{shown}");
    assert_eq!(
        config.redis.display_url().as_deref(),
        Some("redis://redis:6379/0")
    );
}

#[test]
fn reading_commands_need_only_the_redis_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canopy.yaml");
    std::fs::write(
        &path,
        "repo: {url: 'https://git.example.com/r.git', auth: {token_env: GIT_TOKEN}}\n\
         redis: {url: 'redis://127.0.0.1:6379', password_env: REDIS_PASSWORD}\n\
         webhooks:\n  github: {secret_env: GITHUB_WEBHOOK_SECRET}\n\
         reports:\n  - name: daily\n    schedule: '0 0 6 * * *'\n    sinks: [{url_env: SLACK_URL, format: slack}]\n",
    )
    .unwrap();
    // An agent's host has the Redis password and nothing else of the daemon's.
    let env = env_of(&[("REDIS_PASSWORD", CANARY)]);
    let full = Config::load(Some(&path), &env, &Overrides::default()).unwrap_err();
    assert!(full.to_string().contains("GIT_TOKEN"), "{full}");
    let config = Config::load_for_redis(Some(&path), &env, &Overrides::default()).unwrap();
    assert_eq!(
        config.redis.password.as_ref().map(|p| p.expose()),
        Some(CANARY)
    );
    assert!(config.repo.auth.is_none());
    assert!(config.webhooks.github.is_none());
    assert!(config.reports.is_empty());
    // The Redis password itself stays required.
    let err = Config::load_for_redis(Some(&path), &env_of(&[]), &Overrides::default()).unwrap_err();
    assert!(err.to_string().contains("REDIS_PASSWORD"), "{err}");
}
