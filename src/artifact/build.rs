//! Building an artifact: the files [`select`](super::select) chose, read from
//! Git objects, each checked against the hash it must have, packed by the
//! deterministic tar writer, with the digest of exactly what went in.

use std::path::Path;

use super::select::{Member, from_layout, from_own_dir, open_commit};
use super::tarball::{Tarball, clean_path};
use crate::digest::{ManifestLine, Sha256Digest, manifest_text};
use crate::layout::{AppName, LayoutOptions};
use crate::limits::Limits;
use crate::store::StoreError;
use crate::tree::{self, FileHash, GitTree, ReadError, Tree, full_commit_id};

/// An app's files at one commit, packed.
#[derive(Debug)]
pub struct Artifact {
    /// The uncompressed tar (shared: cached artifacts are served without a copy).
    pub tar: bytes::Bytes,
    /// The app digest of the tar's files (`sha256:<hex>` of their manifest).
    pub digest: Sha256Digest,
    /// The commit the files come from (40 hex digits).
    pub revision: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("revision {0:?} is not a full commit id (40 hex digits)")]
    BadRevision(String),
    #[error("app {app} has no desired state")]
    NoDesiredState { app: AppName },
    #[error("revision {revision} is not in the daemon's mirror of the repository")]
    UnknownRevision { revision: String },
    #[error("revision {revision} is not a commit")]
    NotACommit { revision: String },
    #[error("app {app} does not exist at revision {revision}")]
    NoApp { app: AppName, revision: String },
    #[error("app {app} is invalid at revision {revision} (`canopy validate` tells why)")]
    Invalid { app: AppName, revision: String },
    #[error("file {path} of app {app} at revision {revision} changed while it was packed")]
    Mismatch {
        app: AppName,
        path: String,
        revision: String,
    },
    #[error("file {path:?} of app {app} has an empty, `.` or `..` component: no tar can hold it")]
    BadPath { app: AppName, path: String },
    #[error(
        "the files of app {app} at revision {revision} do not give the digest the daemon stored"
    )]
    StoredDigest { app: AppName, revision: String },
    #[error(
        "the files of app {app} at revision {revision} do not give the digest its layout computed"
    )]
    Unstable { app: AppName, revision: String },
    #[error("files of app {app} total over the cap of {max} bytes")]
    TooLarge { app: AppName, max: u64 },
    #[error("too many artifacts are being built; try again")]
    Busy,
    #[error("failed to read the mirror's Git objects")]
    Mirror(#[source] tree::Error),
    #[error("failed to read file {path} of app {app}")]
    Read {
        app: AppName,
        path: String,
        #[source]
        source: ReadError,
    },
    /// The app's current desired state could not be read.
    #[error("failed to read the desired state of app {app} from Redis")]
    Store {
        app: AppName,
        #[source]
        source: StoreError,
    },
    #[error("client {client} already has {max} artifact builds in flight; try again")]
    ClientBusy { client: String, max: usize },
    #[error("failed to write the tar")]
    Tar(#[source] std::io::Error),
    #[error("the artifact build failed")]
    Join(#[source] tokio::task::JoinError),
}

/// A commit id as the query gives it: exactly 40 hex digits (any case). Names
/// (`main`, `HEAD~1`) are refused: an artifact names the content it serves.
pub fn parse_revision(text: &str) -> Result<gix::ObjectId, ArtifactError> {
    full_commit_id(text).ok_or_else(|| ArtifactError::BadRevision(text.chars().take(80).collect()))
}

/// Packs `app`'s files at `commit` of the repository at `mirror_dir` (opened
/// read-only from its Git objects). The commit's layout decides which files make
/// the app, as a poll would.
///
/// With `stored` (the digest the daemon stored for the app at exactly this
/// commit) the app's own directory is read first, which costs its size only;
/// the whole tree is laid out only if that does not give `stored` (an
/// ancestor's generator made apps inside this one). Files whose digest is not
/// `stored` are an error, never an artifact. Without `stored`, the app must
/// exist and be valid at `commit`. Blocking: call it from `spawn_blocking`.
pub fn build_tar(
    mirror_dir: &Path,
    layout: &LayoutOptions,
    commit: gix::ObjectId,
    app: &AppName,
    stored: Option<&str>,
) -> Result<Artifact, ArtifactError> {
    let revision = commit.to_string();
    let tree = open_commit(mirror_dir, commit)?;
    let is_stored = |digest: &Sha256Digest| stored == Some(digest.to_string().as_str());
    let own = match stored {
        Some(_) => from_own_dir(&tree, layout, app)?.filter(|(_, digest)| is_stored(digest)),
        None => None,
    };
    let (members, expected) = match own {
        Some(found) => found,
        None => from_layout(&tree, layout, app, &revision)?,
    };
    if stored.is_some() && !is_stored(&expected) {
        return Err(ArtifactError::StoredDigest {
            app: app.clone(),
            revision,
        });
    }
    let (tar, digest) = pack(&tree, members, &layout.limits, app, &revision)?;
    // Git objects do not change, so this holds unless the code is wrong; it is
    // checked because a child would refuse an artifact whose digest lies.
    if digest != expected {
        return Err(ArtifactError::Unstable {
            app: app.clone(),
            revision,
        });
    }
    Ok(Artifact {
        tar: tar.into(),
        digest,
        revision,
    })
}

/// Reads, checks and packs `members`; returns the tar and the digest of what it
/// holds.
fn pack(
    tree: &GitTree,
    mut members: Vec<Member>,
    limits: &Limits,
    app: &AppName,
    revision: &str,
) -> Result<(Vec<u8>, Sha256Digest), ArtifactError> {
    members.sort_unstable_by(|a, b| a.relative.as_bytes().cmp(b.relative.as_bytes()));
    let mut reader = tree.reader().map_err(ArtifactError::Mirror)?;
    let mut tarball = Tarball::new();
    let mut lines = Vec::with_capacity(members.len());
    let mut total: u64 = 0;
    let mut buf = Vec::new();
    for member in members {
        // Git trees written with plumbing can hold such names; the `tar` crate
        // would drop `.` components and refuse `..`, so the tar would not hold
        // the manifest's paths.
        if !clean_path(&member.relative) {
            return Err(ArtifactError::BadPath {
                app: app.clone(),
                path: member.relative,
            });
        }
        reader
            .read(&member.entry, limits.max_file_bytes, &mut buf)
            .map_err(|source| ArtifactError::Read {
                app: app.clone(),
                path: member.relative.clone(),
                source,
            })?;
        let hash = FileHash::of(&buf);
        if hash.hex() != member.sha256 {
            return Err(ArtifactError::Mismatch {
                app: app.clone(),
                path: member.relative,
                revision: revision.to_owned(),
            });
        }
        total += hash.size;
        if total > limits.max_app_bytes {
            return Err(ArtifactError::TooLarge {
                app: app.clone(),
                max: limits.max_app_bytes,
            });
        }
        tarball
            .append(&member.relative, member.entry.kind, &buf)
            .map_err(ArtifactError::Tar)?;
        lines.push(ManifestLine::new(member.relative, hash));
    }
    let tar = tarball.finish().map_err(ArtifactError::Tar)?;
    Ok((tar, Sha256Digest::of(&manifest_text(&lines))))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Read as _;
    use std::process::Command;

    use sha2::{Digest as _, Sha256};

    use crate::digest::AppDigest;
    use crate::tree::BlobCache;

    /// A Git repository of `src`, made by `fixtures/make-repo.sh`.
    fn repo_from(src: &Path) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/make-repo.sh");
        let status = Command::new(script)
            .arg(src)
            .arg(dir.path().join("repo"))
            .status()
            .expect("run make-repo.sh");
        assert!(status.success(), "make-repo.sh failed");
        dir
    }

    fn example() -> tempfile::TempDir {
        repo_from(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/example"))
    }

    fn head(repo: &Path) -> gix::ObjectId {
        GitTree::open(repo, "main").expect("open").commit()
    }

    fn name(app: &str) -> AppName {
        AppName::parse(app).expect("valid name")
    }

    /// (path, entry type, mode, bytes or link target) of each entry, in order.
    type Unpacked = Vec<(String, tar::EntryType, u32, Vec<u8>)>;

    /// Reads a tar with the `tar` crate and checks the fixed fields.
    fn unpack(tar: &[u8]) -> Unpacked {
        let mut archive = tar::Archive::new(tar);
        let mut out = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let header = entry.header().clone();
            assert_eq!(header.mtime().unwrap(), 0);
            assert_eq!(header.uid().unwrap(), 0);
            assert_eq!(header.gid().unwrap(), 0);
            assert_eq!(header.username_bytes(), Some(&b""[..]));
            assert_eq!(header.groupname_bytes(), Some(&b""[..]));
            let path = String::from_utf8(entry.path_bytes().into_owned()).expect("utf-8");
            let kind = header.entry_type();
            let bytes = if kind == tar::EntryType::Symlink {
                entry.link_name_bytes().expect("target").into_owned()
            } else {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).expect("read");
                data
            };
            out.push((path, kind, header.mode().unwrap(), bytes));
        }
        out
    }

    /// The digest of unpacked files, computed here from scratch as `sha256sum`
    /// would (no escaped names in these fixtures).
    fn digest_of(files: &Unpacked) -> String {
        let mut lines: Vec<String> = files
            .iter()
            .map(|(path, _, _, bytes)| format!("{}  {path}\n", hex::encode(Sha256::digest(bytes))))
            .collect();
        lines.sort_by(|a, b| a[66..].cmp(&b[66..])); // str order is bytewise
        format!("sha256:{}", hex::encode(Sha256::digest(lines.concat())))
    }

    fn scanned(repo: &Path, layout: &LayoutOptions, app: &str) -> AppDigest {
        let tree = GitTree::open(repo, "main").expect("open");
        let scan = crate::scan::scan(&tree, layout, &BlobCache::default()).expect("scan");
        scan.digests[&name(app)].clone()
    }

    #[test]
    fn an_app_is_its_own_files_with_the_scans_digest() {
        let dir = example();
        let repo = dir.path().join("repo");
        let layout = LayoutOptions::default();
        let commit = head(&repo);
        for app in ["payments/api", "payments", "search", "."] {
            let artifact = build_tar(&repo, &layout, commit, &name(app), None).expect(app);
            let files = unpack(&artifact.tar);
            let expected = scanned(&repo, &layout, app);
            let paths: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
            let want: Vec<&str> = expected.files.iter().map(|l| l.path()).collect();
            assert_eq!(paths, want, "{app}: exactly its files, in path order");
            assert_eq!(artifact.digest, expected.digest, "{app}");
            assert_eq!(digest_of(&files), artifact.digest.to_string(), "{app}");
            assert_eq!(artifact.revision, commit.to_string());
        }
        let payments = unpack(
            &build_tar(&repo, &layout, commit, &name("payments"), None)
                .unwrap()
                .tar,
        );
        assert!(
            payments
                .iter()
                .all(|f| !f.0.starts_with("api/") && !f.0.starts_with("db/"))
        );
    }

    #[test]
    fn the_stored_digest_gives_the_same_bytes_and_is_checked() {
        let dir = example();
        let repo = dir.path().join("repo");
        let layout = LayoutOptions::default();
        let commit = head(&repo);
        for app in ["payments/api", "payments", "search", "."] {
            let digest = scanned(&repo, &layout, app).digest.to_string();
            let stored = build_tar(&repo, &layout, commit, &name(app), Some(&digest)).unwrap();
            let again = build_tar(&repo, &layout, commit, &name(app), Some(&digest)).unwrap();
            let laid_out = build_tar(&repo, &layout, commit, &name(app), None).unwrap();
            assert_eq!(stored.tar, again.tar, "{app}: deterministic");
            assert_eq!(
                stored.tar, laid_out.tar,
                "{app}: both ways give the same tar"
            );
            assert_eq!(stored.digest.to_string(), digest, "{app}");
        }

        // Redis is not trusted: a stored digest the files do not give is an
        // error, never an artifact of whatever the store claims.
        let wrong = format!("sha256:{}", "0".repeat(64));
        let err =
            build_tar(&repo, &layout, commit, &name("payments/api"), Some(&wrong)).unwrap_err();
        assert!(matches!(err, ArtifactError::StoredDigest { .. }), "{err}");
        assert!(err.to_string().contains("payments/api"), "{err}");

        for bad in ["../x", "a//b", "./a", "a/.", ""] {
            assert!(!clean_path(bad), "{bad}");
        }
        assert!(clean_path("a/.b/c..d"));
    }

    /// An ancestor's generator can make an app inside a generated app: the app's
    /// own directory alone then claims too much, and the whole layout decides.
    #[test]
    fn apps_generated_inside_generated_apps_are_not_packed_with_them() {
        let src = tempfile::tempdir().unwrap();
        for (path, text) in [
            ("apps/x/deploy.yaml", "x: 1\n"),
            ("apps/x/y/deploy.yaml", "y: 1\n"),
            ("README.md", "root\n"),
        ] {
            let path = src.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let dir = repo_from(src.path());
        let repo = dir.path().join("repo");
        let layout = LayoutOptions {
            root_children: Some(crate::layout::Generator {
                dirs: vec![
                    crate::layout::GlobPattern("apps/*".to_owned()),
                    crate::layout::GlobPattern("apps/*/*".to_owned()),
                ],
                exclude: Vec::new(),
            }),
            ..LayoutOptions::default()
        };
        let commit = head(&repo);
        for (app, files) in [
            ("apps/x", vec!["deploy.yaml"]),
            ("apps/x/y", vec!["deploy.yaml"]),
            (".", vec!["README.md"]),
        ] {
            let digest = scanned(&repo, &layout, app).digest.to_string();
            let artifact = build_tar(&repo, &layout, commit, &name(app), Some(&digest))
                .unwrap_or_else(|e| panic!("{app}: {e}"));
            let paths: Vec<String> = unpack(&artifact.tar).into_iter().map(|f| f.0).collect();
            assert_eq!(paths, files, "{app}");
            assert_eq!(artifact.digest.to_string(), digest, "{app}");
        }
    }

    #[test]
    fn a_symlink_is_a_symlink_entry() {
        let dir = example();
        let repo = dir.path().join("repo");
        let artifact = build_tar(
            &repo,
            &LayoutOptions::default(),
            head(&repo),
            &name("payments/db"),
            None,
        )
        .unwrap();
        let files = unpack(&artifact.tar);
        let link = files.iter().find(|f| f.0 == "schema.sql").unwrap();
        assert_eq!(link.1, tar::EntryType::Symlink);
        assert_eq!(link.3, b"migrations.sql");
        let regular = files.iter().find(|f| f.0 == "statefulset.yaml").unwrap();
        assert_eq!((regular.1, regular.2), (tar::EntryType::Regular, 0o644));
        assert_eq!(digest_of(&files), artifact.digest.to_string());
    }

    #[test]
    fn long_names_odd_link_targets_and_executables_survive_exactly() {
        let src = tempfile::tempdir().unwrap();
        let long = format!("deep/{}/{}.yaml", "d".repeat(90), "f".repeat(60));
        let files: [(&str, &str); 3] = [
            ("app.yaml", ""),
            (&long, "long\n"),
            ("sub/x.yaml", "x: 1\n"),
        ];
        for (path, text) in files {
            let path = src.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let run = src.path().join("run.sh");
        std::fs::write(&run, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        let long_target = format!("{}{long}", "./".repeat(40));
        let links = [("odd", "sub//./x.yaml"), ("far", long_target.as_str())];
        for (link, target) in links {
            std::os::unix::fs::symlink(target, src.path().join(link)).unwrap();
        }
        let dir = repo_from(src.path());
        let repo = dir.path().join("repo");
        let layout = LayoutOptions::default();
        let artifact = build_tar(&repo, &layout, head(&repo), &AppName::root(), None).unwrap();
        let files = unpack(&artifact.tar);
        let get = |p: &str| {
            files
                .iter()
                .find(|f| f.0 == p)
                .unwrap_or_else(|| panic!("{p}"))
        };
        assert_eq!(get(&long).3, b"long\n");
        assert_eq!(get("odd").3, b"sub//./x.yaml");
        assert_eq!(get("far").3, long_target.as_bytes());
        assert_eq!(get("far").1, tar::EntryType::Symlink);
        assert_eq!(
            (get("run.sh").1, get("run.sh").2),
            (tar::EntryType::Regular, 0o755)
        );
        assert_eq!(digest_of(&files), artifact.digest.to_string());
        assert_eq!(artifact.digest, scanned(&repo, &layout, ".").digest);

        // GNU tar reads the same names and targets.
        let out = tempfile::tempdir().unwrap();
        let archive = out.path().join("a.tar");
        std::fs::write(&archive, &artifact.tar).unwrap();
        let listed = Command::new("tar")
            .arg("-tvf")
            .arg(&archive)
            .output()
            .expect("run tar");
        let listed = String::from_utf8_lossy(&listed.stdout);
        assert!(
            listed.contains(&format!("far -> {long_target}")),
            "{listed}"
        );
        assert!(listed.contains("odd -> sub//./x.yaml"), "{listed}");
        assert!(listed.contains(&long), "{listed}");
    }

    #[test]
    fn unknown_apps_and_revisions_are_not_found() {
        let dir = example();
        let repo = dir.path().join("repo");
        let layout = LayoutOptions::default();
        let commit = head(&repo);
        let err = build_tar(&repo, &layout, commit, &name("nope"), None).unwrap_err();
        assert!(matches!(err, ArtifactError::NoApp { .. }), "{err}");

        let missing = gix::ObjectId::from_hex(&[b'a'; 40]).unwrap();
        let err = build_tar(&repo, &layout, missing, &name("payments"), None).unwrap_err();
        assert!(
            matches!(err, ArtifactError::UnknownRevision { .. }),
            "{err}"
        );

        let tree = GitTree::open(&repo, "main").unwrap();
        let blob = tree.list_dir("payments", 100).unwrap().entries[0]
            .blob
            .unwrap();
        let err = build_tar(&repo, &layout, blob, &name("payments"), None).unwrap_err();
        assert!(matches!(err, ArtifactError::NotACommit { .. }), "{err}");
        assert!(
            !err.to_string().contains(&*repo.to_string_lossy()),
            "no server paths: {err}"
        );
    }

    #[test]
    fn apps_are_found_under_the_layout_root() {
        let dir = example();
        let repo = dir.path().join("repo");
        let layout = LayoutOptions {
            root: "payments/".to_owned(),
            ..LayoutOptions::default()
        };
        let commit = head(&repo);
        for app in [".", "db"] {
            let expected = scanned(&repo, &layout, app);
            let digest = expected.digest.to_string();
            let stored = build_tar(&repo, &layout, commit, &name(app), Some(&digest)).unwrap();
            let scanned = build_tar(&repo, &layout, commit, &name(app), None).unwrap();
            assert_eq!(stored.digest, expected.digest, "{app}");
            assert_eq!(stored.tar, scanned.tar, "{app}");
        }
        // Under this root `api`'s `depends_on: [payments/db]` names no app.
        let err = build_tar(&repo, &layout, commit, &name("api"), None).unwrap_err();
        assert!(matches!(err, ArtifactError::Invalid { .. }), "{err}");
        let root = unpack(
            &build_tar(&repo, &layout, commit, &AppName::root(), None)
                .unwrap()
                .tar,
        );
        let paths: Vec<&str> = root.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(paths, ["app.yaml", "kustomization.yaml"]);
    }

    #[test]
    fn a_directory_listing_holds_full_paths_of_that_directory_only() {
        let dir = example();
        let tree = GitTree::open(&dir.path().join("repo"), "main").unwrap();
        let paths = |d: &str| -> Vec<String> {
            let listing = tree.list_dir(d, 1000).unwrap();
            listing
                .entries
                .into_iter()
                .map(|e| e.path.to_string())
                .collect()
        };
        assert_eq!(
            paths("payments/api"),
            [
                "payments/api/NOTES.md",
                "payments/api/app.yaml",
                "payments/api/deployment.yaml",
                "payments/api/service.yaml"
            ]
        );
        assert!(paths("payments/api/app.yaml").is_empty(), "a file");
        assert!(paths("nope").is_empty());
        assert_eq!(paths(""), {
            let all = tree.list(1000).unwrap().entries;
            all.into_iter()
                .map(|e| e.path.to_string())
                .collect::<Vec<_>>()
        });
        assert!(tree.list_dir("payments", 3).is_err(), "capped");
    }

    #[test]
    fn revisions_must_be_full_commit_ids() {
        for bad in [
            "main",
            "HEAD",
            "abc123",
            &"g".repeat(40),
            &"a".repeat(41),
            "",
        ] {
            let err = parse_revision(bad).unwrap_err();
            assert!(matches!(err, ArtifactError::BadRevision(_)), "{bad}");
        }
        let upper = "ABCDEF0123456789ABCDEF0123456789ABCDEF01";
        assert_eq!(
            parse_revision(upper).unwrap().to_string(),
            upper.to_ascii_lowercase()
        );
    }
}
