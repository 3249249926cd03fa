//! The git server harness itself: a stock `git` client clones, fetches and
//! lists refs over `git://` and smart HTTP, and the servers enforce what they
//! claim (auth, no pushes over `git://`, nothing left running after drop).

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::eventually;
use common::git_server::{GitDaemon, GitHttpServer, HttpRequest, bare_clone, git_client};

/// A fixture repository (`source`, with work tree) and its bare copy
/// `root/example.git`, which the servers serve.
struct Served {
    source: tempfile::TempDir,
    root: tempfile::TempDir,
    bare: PathBuf,
}

impl Served {
    fn example() -> Served {
        let source = common::git_repo_from(&common::fixtures().join("example"));
        let root = tempfile::tempdir().expect("temp dir");
        let bare = bare_clone(&common::repo_path(&source), root.path(), "example.git");
        Served { source, root, bare }
    }

    fn source(&self) -> PathBuf {
        common::repo_path(&self.source)
    }

    /// Commits a new file in the source and pushes it into the bare repository
    /// through its path; the new commit id.
    fn push_second_commit(&self) -> String {
        let source = self.source();
        common::write_files(&source, &[("second.txt", "second commit\n")]);
        common::git(&source, &["add", "-A"]);
        common::git(&source, &["commit", "-q", "--no-verify", "-m", "second"]);
        let bare = self.bare.to_str().expect("UTF-8 path");
        common::git(&source, &["push", "-q", bare, "main"]);
        rev_parse(&source, "HEAD")
    }
}

fn rev_parse(repo: &Path, rev: &str) -> String {
    common::git(repo, &["rev-parse", rev]).trim().to_owned()
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}",
        output.status,
        common::stderr(output)
    );
}

/// Clones `url` into `parent/name`; the clone's path.
fn clone(url: &str, parent: &Path, name: &str) -> PathBuf {
    let output = git_client(parent, &["clone", "-q", url, name], &[]);
    assert_success(&output, &format!("git clone {url}"));
    parent.join(name)
}

/// Clones over `url`, checks the clone's HEAD is the source's, then pushes a
/// second commit into the served repository and checks a fetch brings it.
fn clone_then_fetch(served: &Served, url: &str) {
    let work = tempfile::tempdir().expect("temp dir");
    let first = rev_parse(&served.source(), "HEAD");

    let clone = clone(url, work.path(), "clone");
    assert_eq!(rev_parse(&clone, "HEAD"), first, "cloned HEAD over {url}");

    let second = served.push_second_commit();
    assert_ne!(second, first);
    let output = git_client(&clone, &["fetch", "-q", "origin"], &[]);
    assert_success(&output, &format!("git fetch {url}"));
    assert_eq!(
        rev_parse(&clone, "origin/main"),
        second,
        "fetched main over {url}"
    );
}

fn describe(requests: &[HttpRequest]) -> String {
    requests
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn git_daemon_serves_clone_and_fetch() {
    let served = Served::example();
    let daemon = GitDaemon::start(served.root.path());
    clone_then_fetch(&served, &daemon.url("example.git"));
    assert!(
        daemon
            .log()
            .contains("Request upload-pack for '/example.git'"),
        "daemon log:\n{}",
        daemon.log()
    );
}

#[test]
fn http_serves_clone_and_fetch() {
    let served = Served::example();
    let server = GitHttpServer::start(served.root.path(), None);
    clone_then_fetch(&served, &server.url("example.git"));

    let requests = server.requests();
    let log = describe(&requests);
    assert!(requests.iter().all(|r| r.status == 200), "requests:\n{log}");
    let advertised = |r: &&HttpRequest| {
        r.method == "GET"
            && r.path == "/example.git/info/refs"
            && r.query == "service=git-upload-pack"
    };
    let uploads = |r: &&HttpRequest| r.method == "POST" && r.path == "/example.git/git-upload-pack";
    // One ref advertisement each for the clone and the fetch, and pack requests.
    assert_eq!(
        requests.iter().filter(advertised).count(),
        2,
        "requests:\n{log}"
    );
    assert!(
        requests.iter().filter(uploads).count() >= 2,
        "requests:\n{log}"
    );
}

#[test]
fn http_with_auth_requires_the_credentials() {
    let served = Served::example();
    let (user, token) = ("canopy", "s3cret-t0ken");
    let server = GitHttpServer::start(
        served.root.path(),
        Some((user.to_owned(), token.to_owned())),
    );
    let work = tempfile::tempdir().expect("temp dir");

    // Without credentials (and no way to prompt for them): refused.
    let output = git_client(
        work.path(),
        &["clone", "-q", &server.url("example.git"), "anonymous"],
        &[],
    );
    assert!(
        !output.status.success(),
        "clone without credentials succeeded"
    );
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.status == 401 && r.path == "/example.git/info/refs"),
        "requests:\n{}",
        describe(&requests)
    );
    assert!(
        requests.iter().all(|r| r.status == 401 && r.user.is_none()),
        "served without credentials:\n{}",
        describe(&requests)
    );

    // A wrong token: refused too.
    server.clear_requests();
    let wrong = server
        .url("example.git")
        .replace("http://", &format!("http://{user}:wrong@"));
    let output = git_client(work.path(), &["clone", "-q", &wrong, "wrong"], &[]);
    assert!(
        !output.status.success(),
        "clone with a wrong token succeeded"
    );
    assert!(
        server.requests().iter().all(|r| r.status == 401),
        "served with a wrong token:\n{}",
        describe(&server.requests())
    );

    // The right ones in the URL: served, as that user.
    server.clear_requests();
    let clone = clone(
        &server.authenticated_url("example.git"),
        work.path(),
        "authenticated",
    );
    assert_eq!(
        rev_parse(&clone, "HEAD"),
        rev_parse(&served.source(), "HEAD")
    );
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.status == 200 && r.path == "/example.git/git-upload-pack"),
        "requests:\n{}",
        describe(&requests)
    );
    assert!(
        requests
            .iter()
            .filter(|r| r.status == 200)
            .all(|r| r.user.as_deref() == Some(user)),
        "requests:\n{}",
        describe(&requests)
    );
    assert!(
        !format!("{requests:?}").contains(token),
        "the token leaked into the request log"
    );
}

/// `git ls-remote` with protocol v2 requested; checks the refs listed and that
/// the server answered in v2 (a server that drops the request for v2 answers
/// in v0, which the client accepts silently).
fn ls_remote_v2(served: &Served, url: &str) {
    let work = tempfile::tempdir().expect("temp dir");
    let output = git_client(
        work.path(),
        &["-c", "protocol.version=2", "ls-remote", url],
        &[("GIT_TRACE_PACKET", "1")],
    );
    assert_success(&output, &format!("git ls-remote {url}"));
    let head = rev_parse(&served.source(), "HEAD");
    let refs = common::stdout(&output);
    assert!(
        refs.contains(&format!("{head}\tHEAD\n")),
        "ls-remote:\n{refs}"
    );
    assert!(
        refs.contains(&format!("{head}\trefs/heads/main\n")),
        "ls-remote:\n{refs}"
    );
    let trace = common::stderr(&output);
    assert!(
        trace.lines().any(|l| l.ends_with("< version 2")),
        "server did not answer in protocol v2 over {url}:\n{trace}"
    );
}

#[test]
fn protocol_v2_over_git_daemon() {
    let served = Served::example();
    let daemon = GitDaemon::start(served.root.path());
    ls_remote_v2(&served, &daemon.url("example.git"));
    assert!(
        daemon
            .log()
            .contains("Extended attribute \"protocol\": version=2"),
        "daemon log:\n{}",
        daemon.log()
    );
}

#[test]
fn protocol_v2_over_http() {
    let served = Served::example();
    let server = GitHttpServer::start(served.root.path(), None);
    ls_remote_v2(&served, &server.url("example.git"));
    // In v2 the refs come from an `ls-refs` command, a POST; v0 lists them in
    // the GET advertisement alone.
    let requests = server.requests();
    assert!(
        requests.iter().any(|r| r.method == "POST"
            && r.path == "/example.git/git-upload-pack"
            && r.git_protocol.as_deref() == Some("version=2")
            && r.status == 200),
        "requests:\n{}",
        describe(&requests)
    );
}

/// A bare repository `root/name` with `count` branches `bNNNN`, each on its own
/// root commit (deterministic: fixed committer and date), and `main` at `b0000`.
fn repo_with_branches(root: &Path, name: &str, count: usize) -> PathBuf {
    let bare = root.join(name);
    common::git(root, &["init", "-q", "--bare", "-b", "main", name]);
    let mut stream = String::new();
    for i in 0..count {
        let message = format!("branch {i}\n");
        stream.push_str(&format!(
            "commit refs/heads/b{i:04}\n\
             committer canopy tests <tests@canopy.invalid> 1767225600 +0000\n\
             data {}\n{message}\n",
            message.len()
        ));
    }
    stream.push_str("reset refs/heads/main\nfrom refs/heads/b0000\n\n");
    let mut child = Command::new("git")
        .arg("-C")
        .arg(&bare)
        .args(["fast-import", "--quiet"])
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn git fast-import");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stream.as_bytes())
        .expect("write fast-import stream");
    let status = child.wait().expect("wait for git fast-import");
    assert!(status.success(), "git fast-import failed");
    bare
}

fn remote_branches(clone: &Path) -> usize {
    common::git(
        clone,
        &[
            "for-each-ref",
            "--format=%(refname)",
            "refs/remotes/origin/",
        ],
    )
    .lines()
    .filter(|r| r.starts_with("refs/remotes/origin/b"))
    .count()
}

#[test]
fn http_accepts_gzip_and_chunked_request_bodies() {
    let root = tempfile::tempdir().expect("temp dir");
    // git gzips a request body over 1 KiB and sends one bigger than its post
    // buffer (1 MiB by default, 64 KiB at least) chunked instead: 60 wants
    // (50 bytes each), and 2000 wants with the smallest buffer.
    repo_with_branches(root.path(), "some.git", 60);
    repo_with_branches(root.path(), "many.git", 2000);
    let server = GitHttpServer::start(root.path(), None);
    let work = tempfile::tempdir().expect("temp dir");

    let some = clone(&server.url("some.git"), work.path(), "some");
    assert_eq!(remote_branches(&some), 60);
    let requests = server.requests();
    assert!(
        requests.iter().any(|r| r.method == "POST"
            && r.content_encoding.as_deref() == Some("gzip")
            && r.status == 200),
        "no gzip request body:\n{requests:#?}"
    );

    server.clear_requests();
    let output = git_client(
        work.path(),
        &[
            "-c",
            "http.postBuffer=65536",
            "clone",
            "-q",
            &server.url("many.git"),
            "many",
        ],
        &[],
    );
    assert_success(&output, "git clone many.git");
    assert_eq!(remote_branches(&work.path().join("many")), 2000);
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.method == "POST" && r.chunked && r.body_len > 65520 && r.status == 200),
        "no chunked request body:\n{requests:#?}"
    );
}

#[test]
fn git_daemon_refuses_pushes() {
    let served = Served::example();
    let daemon = GitDaemon::start(served.root.path());
    let before = rev_parse(&served.bare, "main");
    let source = served.source();
    common::write_files(&source, &[("pushed.txt", "pushed\n")]);
    common::git(&source, &["add", "-A"]);
    common::git(&source, &["commit", "-q", "--no-verify", "-m", "pushed"]);

    let output = git_client(&source, &["push", &daemon.url("example.git"), "main"], &[]);
    assert!(!output.status.success(), "push over git:// succeeded");
    assert!(
        common::stderr(&output).contains("service not enabled"),
        "{}",
        common::stderr(&output)
    );
    assert_eq!(rev_parse(&served.bare, "main"), before);
}

/// Live (not zombie) processes in process group `pgid`, from /proc.
fn live_group_members(pgid: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and parens.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            members.push(pid);
        }
    }
    members
}

#[test]
fn dropping_git_daemon_stops_it_and_its_connection_children() {
    let root = tempfile::tempdir().expect("temp dir");
    let daemon = GitDaemon::start(root.path());
    let pgid = daemon.pid();
    // A connection that never sends its request keeps a forked child waiting.
    let _idle = TcpStream::connect(daemon.addr()).expect("connect to git daemon");
    assert!(
        eventually(Duration::from_secs(30), || live_group_members(pgid).len()
            >= 2),
        "no per-connection child appeared; group: {:?}",
        live_group_members(pgid)
    );

    drop(daemon);
    assert!(
        eventually(Duration::from_secs(30), || live_group_members(pgid)
            .is_empty()),
        "left running: {:?}",
        live_group_members(pgid)
    );
}

#[test]
fn dropping_http_server_closes_open_connections() {
    let root = tempfile::tempdir().expect("temp dir");
    let server = GitHttpServer::start(root.path(), None);
    let addr = server.addr();
    // A client stuck mid-request.
    let mut stuck = TcpStream::connect(addr).expect("connect to http server");
    stuck
        .write_all(b"GET /x.git/info/refs HTTP/1.1\r\n")
        .expect("write");
    stuck
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("read timeout");
    // Connections are accepted in order: once a later request is answered, the
    // stuck one is held by a connection thread, not waiting in the backlog.
    let mut later = TcpStream::connect(addr).expect("connect to http server");
    later
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("read timeout");
    later
        .write_all(b"GET /absent.git/info/refs HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut response = String::new();
    later.read_to_string(&mut response).expect("read response");
    assert!(response.starts_with("HTTP/1.1 404 "), "{response}");

    drop(server);
    let mut buf = [0; 64];
    match stuck.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!(
            "unexpected response: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}
