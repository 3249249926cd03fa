//! An app's files at one revision, from the daemon's artifact endpoint
//! (`GET /api/v1/apps/<app>/artifact?revision=`), verified before use.
//!
//! The download is bounded: a connect, read and overall timeout, at most
//! `max_artifact_bytes` of tar, and at most [`ERROR_BODY_BYTES`] of an error
//! answer. The whole tar is read into memory (within that cap), every entry is
//! checked (relative paths, no `..`, regular files and symlinks only,
//! no path under another entry, symlink targets that stay inside the app's
//! directory), and the digest is recomputed from the bytes exactly as the
//! daemon defines it. Only then can [`Files::write_to`] put them on disk,
//! symlinks last, so no entry is ever written through a symlink.

use std::collections::HashSet;
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path};

use super::{Client, ClientError};
use crate::digest::{ManifestLine, Sha256Digest, manifest_text};
use crate::limits::Limits;
use crate::protocol::ROOT_ALIAS;
use crate::tree::{Bounds, EntryKind, FileHash, SymlinkError, resolve_symlink};

/// How much of an error answer's body is read, for the snippet in the error:
/// enough for any message a daemon or proxy writes, and no more, whatever it
/// sends.
const ERROR_BODY_BYTES: usize = 8 << 10;

/// How much of that snippet goes into the error.
const ERROR_SNIPPET_CHARS: usize = 300;

#[derive(Debug, Clone)]
struct FileEntry {
    path: String,
    kind: EntryKind,
    bytes: Vec<u8>,
}

/// An app's verified files.
#[derive(Debug, Clone)]
pub struct Files {
    revision: String,
    digest: Sha256Digest,
    /// Sorted bytewise by path.
    entries: Vec<FileEntry>,
}

impl Files {
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// `sha256:<hex>`, equal to the signal's digest (checked).
    pub fn digest(&self) -> String {
        self.digest.to_string()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Path -> sha256 hex, for `:observed_files`.
    pub fn manifest(&self) -> Vec<(String, String)> {
        self.lines()
            .into_iter()
            .map(|line| (line.path().to_owned(), line.hash.hex()))
            .collect()
    }

    /// One file's bytes (a symlink's target), by path relative to the app.
    pub fn get(&self, path: &str) -> Option<(&[u8], EntryKind)> {
        self.entries
            .binary_search_by(|e| e.path.as_bytes().cmp(path.as_bytes()))
            .ok()
            .map(|i| (self.entries[i].bytes.as_slice(), self.entries[i].kind))
    }

    fn lines(&self) -> Vec<ManifestLine> {
        self.entries
            .iter()
            .map(|e| ManifestLine::new(e.path.as_str(), FileHash::of(&e.bytes)))
            .collect()
    }

    /// Writes the files into `dir`, which must not exist yet (it is created,
    /// mode 0755). Executables get mode 0755, other files 0644. Every link was
    /// checked to stay inside `dir` when the files were unpacked: `Files` come
    /// from nowhere else.
    pub fn write_to(&self, dir: &Path) -> Result<(), ClientError> {
        use std::os::unix::fs::{OpenOptionsExt as _, symlink};
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| ClientError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir(dir).map_err(io("create", dir))?;
        // Regular files first: no symlink exists yet, so creating parent
        // directories can never go through one.
        for entry in self.entries.iter().filter(|e| e.kind != EntryKind::Symlink) {
            let path = dir.join(&entry.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io("create", parent))?;
            }
            let mode = if entry.kind == EntryKind::Executable {
                0o755
            } else {
                0o644
            };
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
                .map_err(io("create", &path))?;
            std::io::Write::write_all(&mut file, &entry.bytes).map_err(io("write", &path))?;
        }
        for entry in self.entries.iter().filter(|e| e.kind == EntryKind::Symlink) {
            let path = dir.join(&entry.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io("create", parent))?;
            }
            let target = std::ffi::OsStr::from_bytes(&entry.bytes);
            symlink(target, &path).map_err(io("create the symlink", &path))?;
        }
        // Durable before the caller renames `dir` into place: after a crash that
        // rename must not name files that never reached the disk. One syncfs
        // flushes every file and directory written here (an fsync per file
        // would cost seconds for an app of a thousand files).
        std::fs::File::open(dir)
            .and_then(|d| rustix::fs::syncfs(&d).map_err(std::io::Error::from))
            .map_err(io("sync", dir))
    }
}

/// Flushes a directory's entries (names created, renamed or removed in it).
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Client {
    /// Downloads the app's files at `revision` from the daemon and verifies them
    /// against `digest` (the signal's): the `Digest` header must say so, and the
    /// files must hash to it.
    pub async fn download(&self, revision: &str, digest: &str) -> Result<Files, ClientError> {
        let app = self.options.app.to_string();
        let base = self
            .options
            .server
            .as_deref()
            .ok_or_else(|| ClientError::NoServer { app: app.clone() })?;
        let segment = if self.options.app.is_root() {
            ROOT_ALIAS
        } else {
            app.as_str()
        };
        let mut url = reqwest::Url::parse(base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| ClientError::ServerUrl { url: base.into() })?;
        url.path_segments_mut()
            .map_err(|()| ClientError::ServerUrl { url: base.into() })?
            .pop_if_empty()
            .extend(["api", "v1", "apps"])
            .extend(segment.split('/'))
            .push("artifact");
        url.query_pairs_mut().append_pair("revision", revision);
        let shown = format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port().map(|p| format!(":{p}")).unwrap_or_default()
        );
        // The message names the URL, without credentials: reqwest's own
        // text would repeat it whole.
        let download_error = |source: reqwest::Error| ClientError::Download {
            app: app.clone(),
            revision: revision.to_owned(),
            url: shown.clone(),
            source: source.without_url(),
        };
        let mut request = self.http.get(url);
        if let Some(token) = &self.options.token {
            request = request.bearer_auth(token.expose());
        }
        let mut response = request.send().await.map_err(download_error)?;
        let status = response.status();
        if !status.is_success() {
            let body = error_body(&mut response).await;
            return Err(ClientError::DownloadStatus {
                app,
                revision: revision.to_owned(),
                url: shown,
                status: status.as_u16(),
                detail: String::from_utf8_lossy(&body)
                    .chars()
                    .take(ERROR_SNIPPET_CHARS)
                    .collect(),
            });
        }
        let header = response
            .headers()
            .get("digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let limit = self.options.max_artifact_bytes;
        let too_large = || ClientError::TooLarge {
            app: app.clone(),
            revision: revision.to_owned(),
            url: shown.clone(),
            limit,
        };
        if response
            .content_length()
            .is_some_and(|length| length > limit)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(download_error)? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let files = unpack(&app, revision, &body)?;
        let actual = files.digest();
        if actual != digest || header.as_deref() != Some(digest) {
            return Err(ClientError::DigestMismatch {
                app,
                revision: revision.to_owned(),
                expected: digest.to_owned(),
                actual,
                header: header.filter(|h| h != digest),
            });
        }
        Ok(files)
    }
}

/// The first [`ERROR_BODY_BYTES`] of an error answer's body, or what came of
/// it before the connection failed: the rest is never read (the connection is
/// dropped with the response).
async fn error_body(response: &mut reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = ERROR_BODY_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// Reads and checks every entry of an artifact tar of `app` at `revision`,
/// as [`Client::download`] does before it compares digests: the checks that
/// keep [`Files::write_to`] inside its directory. Public for the fuzzer and for
/// services that fetch artifacts themselves.
pub fn unpack_artifact(app: &str, revision: &str, tar: &[u8]) -> Result<Files, ClientError> {
    unpack(app, revision, tar)
}

/// Reads and checks every entry of the tar, then computes the app digest of
/// what it holds.
fn unpack(app: &str, revision: &str, tar: &[u8]) -> Result<Files, ClientError> {
    let tar_error = |source| ClientError::Tar {
        app: app.to_owned(),
        revision: revision.to_owned(),
        source,
    };
    let unsafe_entry = |path: &str, why: &'static str| ClientError::UnsafeEntry {
        app: app.to_owned(),
        revision: revision.to_owned(),
        path: path.to_owned(),
        why: why.into(),
    };
    let limits = Limits::default();
    let mut archive = tar::Archive::new(tar);
    let mut entries = Vec::new();
    for entry in archive.entries().map_err(tar_error)? {
        let mut entry = entry.map_err(tar_error)?;
        let raw = entry.path_bytes().into_owned();
        let path = String::from_utf8(raw)
            .map_err(|e| unsafe_entry(&String::from_utf8_lossy(e.as_bytes()), "not UTF-8"))?;
        let kind = match entry.header().entry_type() {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if entry.header().mode().map_err(tar_error)? & 0o111 != 0 {
                    EntryKind::Executable
                } else {
                    EntryKind::File
                }
            }
            tar::EntryType::Symlink => EntryKind::Symlink,
            _ => return Err(unsafe_entry(&path, "neither a file nor a symlink")),
        };
        check_path(&path).map_err(|why| unsafe_entry(&path, why))?;
        let bytes = if kind == EntryKind::Symlink {
            entry
                .link_name_bytes()
                .ok_or_else(|| unsafe_entry(&path, "a symlink without a target"))?
                .into_owned()
        } else {
            if entry.size() > limits.max_file_bytes {
                return Err(unsafe_entry(&path, "larger than the file size cap"));
            }
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut bytes).map_err(tar_error)?;
            bytes
        };
        if entries.len() >= limits.max_app_files {
            return Err(unsafe_entry(&path, "more files than the per-app cap"));
        }
        entries.push(FileEntry { path, kind, bytes });
    }
    entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let paths: HashSet<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    if paths.len() != entries.len() {
        let dup = entries
            .windows(2)
            .find(|w| w[0].path == w[1].path)
            .map(|w| w[0].path.clone())
            .unwrap_or_default();
        return Err(unsafe_entry(&dup, "listed twice"));
    }
    // A path under another entry would be written through it (a symlink to
    // elsewhere): a real tree never has one.
    for entry in &entries {
        let mut prefix = entry.path.as_str();
        while let Some(cut) = prefix.rfind('/') {
            prefix = &prefix[..cut];
            if paths.contains(prefix) {
                return Err(unsafe_entry(
                    &entry.path,
                    "lies under another file or symlink",
                ));
            }
        }
    }
    // The daemon confines links to their app, but whatever it sent, a link is
    // checked again here: resolved from its own directory, it must stay inside
    // the directory the files are unpacked into, at every step, and never go
    // through another of the links (lexical resolution would be unsound). A
    // nested app's directory cannot be told apart here, and needs no check: its
    // files are not in the tar, so a link into it dangles.
    let links: HashSet<&str> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Symlink)
        .map(|e| e.path.as_str())
        .collect();
    let check = |path: &str| {
        if links.contains(path) {
            return Err(SymlinkError::Chain);
        }
        Ok(())
    };
    for entry in entries.iter().filter(|e| e.kind == EntryKind::Symlink) {
        let bounds = Bounds {
            dir: "",
            check: &check,
        };
        resolve_symlink(&entry.path, &entry.bytes, bounds).map_err(|e| {
            ClientError::UnsafeEntry {
                app: app.to_owned(),
                revision: revision.to_owned(),
                path: entry.path.clone(),
                why: e.to_string().into(),
            }
        })?;
    }
    let mut files = Files {
        revision: revision.to_owned(),
        digest: Sha256Digest([0; 32]),
        entries,
    };
    files.digest = Sha256Digest::of(&manifest_text(&files.lines()));
    Ok(files)
}

/// A relative path of plain components: no root, no `.` or `..`, no empty part.
fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() || path.starts_with('/') || path.ends_with('/') || path.contains("//") {
        return Err("not a plain relative path");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    if Path::new(path)
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
        || path.split('/').any(|part| part == "." || part == "..")
    {
        return Err("contains . or .. or a root");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, bytes) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            // Bypass the crate's own path checks: hostile tars are the point.
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            if *kind == tar::EntryType::Symlink {
                header.set_size(0);
                let link = &mut header.as_old_mut().linkname;
                link[..bytes.len()].copy_from_slice(bytes);
                header.set_cksum();
                builder.append(&header, std::io::empty()).expect("append");
            } else {
                header.set_size(bytes.len() as u64);
                header.set_cksum();
                builder.append(&header, *bytes).expect("append");
            }
        }
        builder.into_inner().expect("tar")
    }

    #[test]
    fn the_digest_is_sha256sum_of_the_manifest() {
        let tar = tar_of(&[
            ("b.yaml", tar::EntryType::Regular, b"b\n"),
            ("a/x.yaml", tar::EntryType::Regular, b"x\n"),
            ("link", tar::EntryType::Symlink, b"a/x.yaml"),
        ]);
        let files = unpack("app", "r", &tar).expect("valid");
        let sha = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
        let manifest = format!(
            "{}  a/x.yaml\n{}  b.yaml\n{}  link\n",
            sha(b"x\n"),
            sha(b"b\n"),
            sha(b"a/x.yaml")
        );
        assert_eq!(
            files.digest(),
            format!("sha256:{}", sha(manifest.as_bytes()))
        );
        assert_eq!(
            files.get("link"),
            Some((&b"a/x.yaml"[..], EntryKind::Symlink))
        );
    }

    #[test]
    fn hostile_entries_are_refused() {
        for (path, kind, why) in [
            ("../x", tar::EntryType::Regular, "contains . or .."),
            ("a/../../x", tar::EntryType::Regular, "contains . or .."),
            ("../../x", tar::EntryType::Symlink, "contains . or .."),
            (
                "/etc/x",
                tar::EntryType::Regular,
                "not a plain relative path",
            ),
            ("a/./b", tar::EntryType::Regular, "contains . or .."),
            ("dev", tar::EntryType::Char, "neither a file nor a symlink"),
            ("h", tar::EntryType::Link, "neither a file nor a symlink"),
        ] {
            let err = unpack("app", "r", &tar_of(&[(path, kind, b"x")])).expect_err(path);
            assert!(err.to_string().contains(why), "{path}: {err}");
        }
        let through_link = tar_of(&[
            ("out", tar::EntryType::Symlink, b"/etc"),
            ("out/passwd", tar::EntryType::Regular, b"x"),
        ]);
        let err = unpack("app", "r", &through_link).expect_err("under a symlink");
        assert!(err.to_string().contains("lies under another"), "{err}");
    }

    /// Whatever the daemon checked, a link whose target is absolute, enters
    /// `.git`, goes through another link or leaves the version directory at
    /// any step refuses the whole artifact, by the link's path, before anything
    /// is written. In-app links, `..` included, are fine.
    #[test]
    fn links_that_leave_the_version_directory_are_refused_before_writing() {
        for (link, target, why) in [
            ("escape", "../../escape", "leaves its app's directory"),
            ("a/up", "../../x", "leaves its app's directory"),
            ("a/back", "../../v/a/x.yaml", "leaves its app's directory"),
            ("absolute", "/etc/passwd", "absolute"),
            ("a/git", "../.git/config", ".git"),
            ("a/chain", "hop/x.yaml", "another symlink"),
        ] {
            let tar = tar_of(&[
                ("a/x.yaml", tar::EntryType::Regular, b"x\n"),
                ("a/hop", tar::EntryType::Symlink, b"."),
                (link, tar::EntryType::Symlink, target.as_bytes()),
            ]);
            let err = unpack("app", "r", &tar).expect_err(target);
            match &err {
                ClientError::UnsafeEntry {
                    path, why: said, ..
                } => {
                    assert_eq!(path, link, "{target}");
                    assert!(said.contains(why), "{target}: {err}");
                }
                other => panic!("{target}: {other}"),
            }
            assert!(!err.to_string().contains(target), "{err}");
        }
        let fine = tar_of(&[
            ("a/x.yaml", tar::EntryType::Regular, b"x\n"),
            ("a/b/up", tar::EntryType::Symlink, b"../x.yaml"),
            ("top", tar::EntryType::Symlink, b"a/./b/../x.yaml"),
        ]);
        let files = unpack("app", "r", &fine).expect("in-app links");
        let dir = tempfile::tempdir().expect("tempdir");
        files.write_to(&dir.path().join("v")).expect("written");
        let read = std::fs::read(dir.path().join("v/a/b/up")).expect("through the link");
        assert_eq!(read, b"x\n");
    }

    #[test]
    fn files_are_written_with_modes_and_links() {
        use std::os::unix::fs::PermissionsExt as _;
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o755);
        header.set_size(3);
        tar.append_data(&mut header, "bin/run", &b"sh\n"[..])
            .expect("append");
        let files = unpack("app", "r", &tar.into_inner().expect("tar")).expect("valid");
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("v1");
        files.write_to(&target).expect("written");
        let meta = std::fs::metadata(target.join("bin/run")).expect("file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert!(
            files.write_to(&target).is_err(),
            "an existing directory is refused"
        );
    }
}
