//! Identity-provider bearer tokens (`server.oidc`) against the real API: keys
//! made in the test, JWTs signed with them, the provider's JWK set served by a
//! real HTTP server on port 0 or read from a file. A JWT's claims map to the
//! same role × apps × namespaces grants as static tokens; every way a JWT can
//! be wrong is a 401 with its reason; a provider that cannot be reached never
//! lets a token in.

use crate::common;

use std::time::Duration;

use common::binary::DaemonProcess;
use common::daemon::{NAMESPACE, TestDaemon};
use common::idp::{self, Idp, TestKey, claims, hs256, message, now, oidc_config};
use common::redis::RedisProc;
use common::{stderr, stdout};
use redis::Commands;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

async fn call(daemon: &TestDaemon, method: &str, path: &str, token: &str) -> (StatusCode, String) {
    let client = reqwest::Client::new();
    let request = match method {
        "POST" => client.post(daemon.url(path)),
        _ => client.get(daemon.url(path)),
    };
    let response = request.bearer_auth(token).send().await.expect("request");
    let status = response.status();
    let challenge = response.headers().get("www-authenticate").cloned();
    let body = response.text().await.expect("body");
    assert!(!body.contains(token), "the token is echoed: {body}");
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(
            challenge.as_ref().map(|v| v.to_str().unwrap()),
            Some("Bearer")
        );
    }
    (status, body)
}

fn error_of(body: &str) -> String {
    let body: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    body["error"].as_str().expect("an error").to_owned()
}

fn apps_of(body: &str) -> Vec<String> {
    let body: Value = serde_json::from_str(body).unwrap();
    body["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["app"].as_str().unwrap().to_owned())
        .collect()
}

/// The grants of the matrix: readers read everything everywhere, the payments
/// team syncs its apps in `http` (the test daemon's namespace), alice
/// administers `http`, staging operators sync in `staging` only.
const GRANTS: &[&str] = &[
    "{claim: groups, value: readers, role: read, namespaces: [\"*\"]}",
    "{claim: groups, value: payments-team, role: sync, apps: [payments, \"payments/**\"], namespaces: [http]}",
    "{sub: alice, role: admin, namespaces: [http]}",
    "{claim: groups, value: staging-ops, role: sync, namespaces: [staging]}",
];

async fn daemon_in(namespace: &str, idp: &Idp, extra: &str, grants: &[&str]) -> TestDaemon {
    let config = format!(
        "server:\n  tokens: [{{name: dash, role: read, sha256: \"{}\", namespaces: [\"*\"]}}]\n{}",
        hex::encode(Sha256::digest(common::daemon::READ_TOKEN)),
        oidc_config(&format!("jwks_url: {}", idp.jwks_url()), extra, grants)
    );
    TestDaemon::start_in(namespace, &config, &[]).await
}

/// Role × app scope × namespace through the real API, each caller's grants the
/// union of the rules its claims match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_map_to_role_app_and_namespace_grants() {
    let key = TestKey::rsa("k1");
    let idp = Idp::start(&[&key]).await;
    let daemon = daemon_in(NAMESPACE, &idp, "", GRANTS).await;
    let jwt = |sub: &str, groups: &[&str]| key.sign(&claims(sub, json!({"groups": groups})));
    let reader = jwt("rita", &["readers"]);
    let payments = jwt("pat", &["payments-team"]);
    let both = jwt("pia", &["payments-team", "readers", "unrelated"]);
    let alice = jwt("alice", &[]);
    let staging = jwt("sam", &["staging-ops"]);
    let nobody = jwt("nemo", &["unrelated"]);

    // (token, method, path, expected status, expected error, if refused)
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        // read everywhere, nothing more
        (&reader, "GET", "/api/v1/apps/search", 200, ""),
        (&reader, "GET", "/api/v1/report", 404, ""),
        (
            &reader,
            "POST",
            "/api/v1/apps/search/sync",
            403,
            "subject \"rita\" may not do this: it needs role sync",
        ),
        (
            &reader,
            "POST",
            "/api/v1/refresh",
            403,
            "subject \"rita\" may not do this: it needs role sync",
        ),
        // sync (and so read) of the payments apps only
        (&payments, "GET", "/api/v1/apps/payments/api", 200, ""),
        (&payments, "POST", "/api/v1/apps/payments/db/sync", 202, ""),
        (&payments, "POST", "/api/v1/refresh", 202, ""),
        (
            &payments,
            "GET",
            "/api/v1/apps/search",
            403,
            "subject \"pat\" may not read app search: its read scope is payments, payments/**",
        ),
        (
            &payments,
            "POST",
            "/api/v1/apps/search/sync",
            403,
            "subject \"pat\" may not sync app search: its sync scope is payments, payments/**",
        ),
        (
            &payments,
            "GET",
            "/api/v1/report",
            403,
            "subject \"pat\" may not read this: the answer covers every app and its read scope is payments, payments/**",
        ),
        // the union: reads of every app from one rule, syncs of payments from the other
        (&both, "GET", "/api/v1/apps/search", 200, ""),
        (&both, "GET", "/api/v1/report", 404, ""),
        (&both, "POST", "/api/v1/apps/payments/db/sync", 202, ""),
        (
            &both,
            "POST",
            "/api/v1/apps/search/sync",
            403,
            "subject \"pia\" may not sync app search: its sync scope is payments, payments/**",
        ),
        // sub-based: admin of everything here
        (&alice, "POST", "/api/v1/apps/search/sync", 202, ""),
        (&alice, "GET", "/api/v1/report", 404, ""),
        // valid, but for another namespace
        (
            &staging,
            "GET",
            "/api/v1/apps/search",
            403,
            "subject \"sam\" is not valid in namespace http: it is valid in staging",
        ),
        (
            &staging,
            "POST",
            "/api/v1/refresh",
            403,
            "subject \"sam\" is not valid in namespace http: it is valid in staging",
        ),
        // valid, and no rule matches
        (
            &nobody,
            "GET",
            "/api/v1/apps",
            403,
            "subject \"nemo\" may not do anything here: no rule of server.oidc.grants matches its claims",
        ),
    ];
    for (token, method, path, status, error) in cases {
        let (got, body) = call(&daemon, method, path, token).await;
        let said = error_of_or(&body);
        assert_eq!(got.as_u16(), *status, "{method} {path}: {said}");
        if !error.is_empty() {
            assert_eq!(error_of(&body), *error, "{method} {path}");
        }
    }
    let (_, body) = call(&daemon, "GET", "/api/v1/apps", &payments).await;
    assert_eq!(apps_of(&body), ["payments", "payments/api", "payments/db"]);
    let (_, body) = call(&daemon, "GET", "/api/v1/apps", &both).await;
    assert_eq!(apps_of(&body).len(), 10);

    // The staging operator, at a staging daemon: its grant applies there.
    let staging_daemon = daemon_in("staging", &idp, "", GRANTS).await;
    let (status, body) = call(
        &staging_daemon,
        "POST",
        "/api/v1/apps/search/sync",
        &staging,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = call(&staging_daemon, "GET", "/api/v1/apps/search", &payments).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        error_of(&body),
        "subject \"pat\" is not valid in namespace staging: it is valid in http"
    );
    let (status, _) = call(&staging_daemon, "GET", "/api/v1/apps/search", &reader).await;
    assert_eq!(status, StatusCode::OK);
    // Of the union, only the rules valid in staging count there: the reads.
    let (status, _) = call(&staging_daemon, "GET", "/api/v1/apps/search", &both).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(
        &staging_daemon,
        "POST",
        "/api/v1/apps/payments/db/sync",
        &both,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        error_of(&body),
        "subject \"pia\" may not do this: it needs role sync"
    );
}

/// Sends `request` until its answer is `done`, for up to 10 seconds (what a
/// configured interval of a second or less needs): the last answer.
async fn until<F, Fut>(
    request: F,
    done: impl Fn(&(StatusCode, String)) -> bool,
) -> (StatusCode, String)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (StatusCode, String)>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = request().await;
        if done(&answer) || tokio::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The error text of a body, or the body: for assertion messages.
fn error_of_or(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(80).collect())
}

/// Every way a JWT can be wrong: 401, `WWW-Authenticate: Bearer`, and a reason
/// that names no secret; no signal is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_jwt_is_refused_with_its_reason() {
    let rsa = TestKey::rsa("rsa");
    let ec = TestKey::ec("ec");
    // Not published: signs with a kid the provider does publish.
    let impostor = TestKey::rsa("rsa");
    let idp = Idp::start(&[&rsa, &ec]).await;
    let daemon = daemon_in(
        NAMESPACE,
        &idp,
        "    leeway: 30s\n",
        &["{sub: alice, role: admin, namespaces: [\"*\"]}"],
    )
    .await;
    let good = claims("alice", json!({}));
    let header = |alg: &str, kid: &str| json!({"alg": alg, "typ": "JWT", "kid": kid});
    let unsigned = format!("{}.", message(&json!({"alg": "none", "kid": "rsa"}), &good));
    let confused = {
        let message = message(&header("HS256", "rsa"), &good);
        format!("{message}.{}", hs256(&message, &rsa.public_bytes()))
    };
    let tampered = {
        let token = rsa.sign(&good);
        let mut parts: Vec<&str> = token.split('.').collect();
        let admin = message(&json!({}), &claims("mallory", json!({})));
        parts[1] = admin.split('.').nth(1).unwrap();
        parts.join(".")
    };

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            rsa.sign(&claims("alice", json!({"exp": now() - 120}))),
            "the JWT has expired",
        ),
        (
            "not valid yet",
            rsa.sign(&claims("alice", json!({"nbf": now() + 120}))),
            "the JWT is not valid yet (nbf)",
        ),
        (
            "wrong issuer",
            rsa.sign(&claims("alice", json!({"iss": "https://evil.test"}))),
            "the JWT was issued by another issuer than the configured one (iss)",
        ),
        (
            "wrong audience",
            ec.sign(&claims("alice", json!({"aud": ["other-app"]}))),
            "the JWT is meant for another audience than canopy's (aud)",
        ),
        (
            "no audience",
            rsa.sign(&claims("alice", json!({"aud": null}))),
            "the JWT has no aud claim",
        ),
        (
            "no expiry",
            rsa.sign(&claims("alice", json!({"exp": null}))),
            "the JWT has no exp claim",
        ),
        (
            "no subject",
            rsa.sign(&claims("alice", json!({"sub": null}))),
            "the JWT has no sub claim",
        ),
        (
            "unknown kid",
            TestKey::rsa("k-other").sign(&good),
            "the JWT's signing key \"k-other\" is not among the identity provider's keys",
        ),
        (
            "no kid",
            rsa.sign_with(&json!({"alg": "RS256"}), &good),
            "the JWT names no signing key (no kid in its header)",
        ),
        (
            "signed by another key",
            impostor.sign(&good),
            "the JWT's signature is not valid",
        ),
        (
            "claims changed after signing",
            tampered,
            "the JWT's signature is not valid",
        ),
        (
            "alg none",
            unsigned,
            "the JWT is unsigned (alg \"none\"): only RS256, ES256 signatures are accepted",
        ),
        (
            "HS256 with the public key",
            confused,
            "the JWT's algorithm \"HS256\" is not accepted: only RS256, ES256 are",
        ),
        (
            "an algorithm not configured",
            rsa.sign_with(&header("RS512", "rsa"), &good),
            "the JWT's algorithm \"RS512\" is not accepted: only RS256, ES256 are",
        ),
        (
            "ES256 with an RSA key's kid",
            ec.sign_with(&header("ES256", "rsa"), &good),
            "the JWT's algorithm ES256 does not fit its signing key \"rsa\"",
        ),
        (
            "RS256 with an EC key's kid",
            rsa.sign_with(&header("RS256", "ec"), &good),
            "the JWT's algorithm RS256 does not fit its signing key \"ec\"",
        ),
        (
            "garbage in JWT shape",
            "abc.def.ghi".to_owned(),
            "the bearer token is not valid: it is no configured token, and not a readable JWT",
        ),
        (
            "not a JWT at all",
            "just-a-wrong-token".to_owned(),
            "the bearer token is not valid",
        ),
    ];
    let stream = "canopy:http:app:{search}:events";
    let before: usize = daemon.redis.conn().xlen(stream).unwrap();
    for (case, token, reason) in &cases {
        for (method, path) in [
            ("GET", "/api/v1/apps"),
            ("POST", "/api/v1/apps/search/sync"),
        ] {
            let (status, body) = call(&daemon, method, path, token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}");
            assert_eq!(error_of(&body), *reason, "{case}");
        }
    }
    assert_eq!(
        daemon.redis.conn().xlen::<_, usize>(stream).unwrap(),
        before
    );

    // Within the leeway, and the good ones of both key types.
    for token in [
        rsa.sign(&claims("alice", json!({"exp": now() - 10}))),
        rsa.sign(&claims("alice", json!({"nbf": now() + 10}))),
        rsa.sign(&good),
        ec.sign(&good),
        ec.sign(&claims(
            "alice",
            json!({"aud": ["other-app", idp::AUDIENCE]}),
        )),
    ] {
        let (status, body) = call(&daemon, "POST", "/api/v1/apps/search/sync", &token).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
}

/// A static token is matched by its sha256 first, even one shaped like a JWT;
/// a JWT is verified only when no static token is it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_tokens_and_jwts_are_told_apart() {
    let key = TestKey::rsa("k1");
    let idp = Idp::start(&[&key]).await;
    let dotted = "abc.def.ghi";
    let config = format!(
        "server:\n  tokens: [{{name: dotted, role: sync, sha256: \"{}\"}}]\n{}",
        hex::encode(Sha256::digest(dotted)),
        oidc_config(
            &format!("jwks_url: {}", idp.jwks_url()),
            "",
            &["{sub: alice, role: read}"]
        )
    );
    let daemon = TestDaemon::start(&config, &[]).await;
    let (status, body) = call(&daemon, "POST", "/api/v1/refresh", dotted).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let jwt = key.sign(&claims("alice", json!({})));
    let (status, body) = call(&daemon, "POST", "/api/v1/refresh", &jwt).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        error_of(&body),
        "subject \"alice\" may not do this: it needs role sync"
    );
}

/// Keys are read at start, again when a token names an unknown `kid` (at most
/// once per `jwks_min_interval`, however many ask), and again when older than
/// `jwks_max_age`. A provider that fails keeps the keys held in use and lets
/// no other token in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_read_again_when_needed_and_never_in_a_flood() {
    let k1 = TestKey::rsa("k1");
    let k2 = TestKey::ec("k2");
    let idp = Idp::start(&[&k1]).await;
    let daemon = daemon_in(
        NAMESPACE,
        &idp,
        "    jwks_min_interval: 1s\n    jwks_max_age: 1h\n",
        &["{sub: alice, role: read, namespaces: [\"*\"]}"],
    )
    .await;
    assert_eq!(idp.fetches(), 1, "read once at start");
    let good = claims("alice", json!({}));
    let read = async |token: &str| call(&daemon, "GET", "/api/v1/apps", token).await;
    assert_eq!(read(&k1.sign(&good)).await.0, StatusCode::OK);
    assert_eq!(idp.fetches(), 1, "a known key needs no fetch");

    // The provider rotates in a new key: a token signed with it is accepted
    // once the interval since the last read has passed.
    idp.publish(&[&k1, &k2]);
    let new = k2.sign(&good);
    let (status, body) = until(|| read(&new), |(status, _)| *status == StatusCode::OK).await;
    assert_eq!(status, StatusCode::OK, "the rotated key is read: {body}");

    // A flood of unknown kids: at most one more read.
    let fetched = idp.fetches();
    let floods = (0..20).map(|i| {
        let token = TestKey::ec(&format!("rogue-{i}")).sign(&good);
        async move { read(&token).await }
    });
    for (status, body) in futures_util::future::join_all(floods).await {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    assert!(
        idp.fetches() <= fetched + 1,
        "{} reads",
        idp.fetches() - fetched
    );

    // The provider fails: the keys held still verify, an unknown key is
    // refused and says the keys could not be read.
    idp.fail(true);
    let k3 = TestKey::rsa("k3").sign(&good);
    let failed = |(_, body): &(StatusCode, String)| body.contains("could not be read");
    let (status, body) = until(|| read(&k3), failed).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        error_of(&body),
        "the JWT's signing key \"k3\" is not among the identity provider's keys (which could not be read again just now)"
    );
    assert_eq!(read(&k1.sign(&good)).await.0, StatusCode::OK);
}

/// Keys older than `jwks_max_age` are read again: a key the provider removed
/// stops verifying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_key_stops_verifying_after_max_age() {
    let k1 = TestKey::rsa("k1");
    let k2 = TestKey::rsa("k2");
    let idp = Idp::start(&[&k1, &k2]).await;
    let daemon = daemon_in(
        NAMESPACE,
        &idp,
        "    jwks_min_interval: 500ms\n    jwks_max_age: 1s\n",
        &["{sub: alice, role: read, namespaces: [\"*\"]}"],
    )
    .await;
    let token = k1.sign(&claims("alice", json!({})));
    assert_eq!(
        call(&daemon, "GET", "/api/v1/apps", &token).await.0,
        StatusCode::OK
    );
    idp.publish(&[&k2]);
    let refused = |(status, _): &(StatusCode, String)| *status == StatusCode::UNAUTHORIZED;
    let (status, body) = until(|| call(&daemon, "GET", "/api/v1/apps", &token), refused).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "k1 still verifies after jwks_max_age"
    );
    assert_eq!(
        error_of(&body),
        "the JWT's signing key \"k1\" is not among the identity provider's keys"
    );
    let other = k2.sign(&claims("alice", json!({})));
    assert_eq!(
        call(&daemon, "GET", "/api/v1/apps", &other).await.0,
        StatusCode::OK
    );
}

/// The real binary, its keys read from a file: `canopy sync` with a JWT (or a
/// static token) in scope signals, out of scope prints the daemon's 403 reason
/// and exits 2; the log names the caller by its `sub`, never by the token; a
/// rewritten key file is read again for a new `kid`.
#[test]
fn canopy_sync_with_a_jwt_and_keys_from_a_file() {
    const STATIC: &str = "team-canary-0e94c1";
    let k1 = TestKey::ec("k1");
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    std::fs::write(&keys, idp::jwks(&[&k1])).unwrap();
    let remote = common::git_repo_from(&common::fixtures().join("example"));
    let redis = RedisProc::start();
    let config = dir.path().join("canopy.yaml");
    std::fs::write(
        &config,
        format!(
            "namespace: e2e\nstate_dir: {state}\nrepo:\n  url: file://{repo}\n  ref: main\n  poll_interval: 1h\nredis:\n  url: {redis}\nserver:\n  tokens: [{{name: team, role: sync, apps: [payments], sha256: \"{sha}\"}}]\n{oidc}",
            state = dir.path().join("state").display(),
            repo = common::repo_path(&remote).display(),
            redis = redis.url(),
            sha = hex::encode(Sha256::digest(STATIC)),
            oidc = oidc_config(
                &format!("jwks_file: {}", keys.display()),
                "    jwks_min_interval: 1s\n",
                &["{claim: groups, value: payments-team, role: sync, apps: [payments, \"payments/**\"]}"],
            ),
        ),
    )
    .unwrap();
    let daemon = DaemonProcess::start(&config, &[], &[]);
    let ready = || {
        reqwest::blocking::get(daemon.url("/readyz")).is_ok_and(|r| r.status() == StatusCode::OK)
    };
    assert!(
        common::eventually(Duration::from_secs(30), ready),
        "{}",
        daemon.log()
    );

    let sync = |app: &str, token: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
            .args(["sync", app, "--server", &daemon.url("")])
            .env("CANOPY_TOKEN", token)
            .output()
            .unwrap()
    };
    let jwt = k1.sign(&claims(
        "pat@example.com",
        json!({"groups": ["payments-team"]}),
    ));
    let out = sync("payments/db", &jwt);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("signalled payments/db"),
        "{}",
        stdout(&out)
    );

    for (token, message) in [
        (
            jwt.as_str(),
            "error: the daemon answered 403: subject \"pat@example.com\" may not sync app search: its sync scope is payments, payments/**\n",
        ),
        (
            STATIC,
            "error: the daemon answered 403: token team may not sync app search: its sync scope is payments\n",
        ),
    ] {
        let out = sync("search", token);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert_eq!(stderr(&out), message);
    }
    let out = sync(
        "search",
        &k1.sign(&claims("pat", json!({"exp": now() - 3600}))),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: the daemon answered 401: the JWT has expired\n"
    );

    // The provider's new key, written to the file, is read for its kid.
    let k2 = TestKey::rsa("k2");
    std::fs::write(&keys, idp::jwks(&[&k1, &k2])).unwrap();
    let rotated = k2.sign(&claims(
        "pat@example.com",
        json!({"groups": ["payments-team"]}),
    ));
    assert!(
        common::eventually(Duration::from_secs(10), || sync("payments/api", &rotated)
            .status
            .success()),
        "{}",
        daemon.log()
    );

    let log = daemon.log();
    assert!(
        log.lines()
            .any(|line| line.contains("sync signalled on request")
                && line.contains("\"client\":\"oidc:pat@example.com\"")),
        "{log}"
    );
    for token in [&jwt, &rotated] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a token reached the log");
    }
}

/// A key file that cannot be read stops `canopy run` before it serves, with
/// an error naming the file.
#[test]
fn an_unreadable_key_file_stops_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let remote = common::git_repo_from(&common::fixtures().join("example"));
    let redis = RedisProc::start();
    let missing = dir.path().join("no-such-jwks.json");
    let config = dir.path().join("canopy.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {state}\nrepo:\n  url: file://{repo}\nredis:\n  url: {redis}\nserver:\n{oidc}",
            state = dir.path().join("state").display(),
            repo = common::repo_path(&remote).display(),
            redis = redis.url(),
            oidc = oidc_config(
                &format!("jwks_file: {}", missing.display()),
                "",
                &["{sub: alice, role: read}"]
            ),
        ),
    )
    .unwrap();
    let out = common::canopy(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).ends_with(&format!(
            "error: server.oidc: failed to read the JWK set file {}: No such file or directory (os error 2)\n",
            missing.display()
        )),
        "{}",
        stderr(&out)
    );
    // Nothing was claimed: the namespace has no epoch.
    let epoch: Option<String> = redis.conn().get("canopy:default:epoch").unwrap();
    assert_eq!(epoch, None);
}
