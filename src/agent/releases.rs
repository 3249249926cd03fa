//! The agent's directory. Everything that readers (the hook, the service) look at
//! changes by an atomic rename: a version directory appears whole, `current`
//! points at one whole version or another, `applied` and the config files are
//! replaced, never rewritten in place.
//!
//! ```text
//! <dir>/versions/<hex>/   the app's files at one digest, verified
//! <dir>/current           -> versions/<hex>
//! <dir>/applied           the digest whose hook last succeeded
//! <dir>/config.json       the app's config (the `:config` hash)
//! <dir>/secrets.json      its secret values, mode 0600, when readable
//! <dir>/hook.pid          the running hook's process group, while it runs
//! ```

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::client::{ClientError, Files};

const VERSIONS: &str = "versions";
const CURRENT: &str = "current";
const APPLIED: &str = "applied";
const CONFIG: &str = "config.json";
const SECRETS: &str = "secrets.json";
const HOOK_PID: &str = "hook.pid";
/// Prefix of anything being written; left behind only by a crash, and removed.
const TMP: &str = ".tmp-";

#[derive(Debug, Clone)]
pub struct Releases {
    dir: PathBuf,
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ClientError {
    let path = path.to_path_buf();
    move |source| ClientError::Io {
        action,
        path,
        source,
    }
}

impl Releases {
    /// Creates `dir` and `dir/versions` if needed.
    pub fn open(dir: &Path) -> Result<Releases, ClientError> {
        let versions = dir.join(VERSIONS);
        std::fs::create_dir_all(&versions).map_err(io_error("create", &versions))?;
        Ok(Releases {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The digest whose hook last succeeded.
    pub fn applied(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join(APPLIED)).ok()?;
        let digest = text.trim();
        digest.starts_with("sha256:").then(|| digest.to_owned())
    }

    pub fn set_applied(&self, digest: &str) -> Result<(), ClientError> {
        self.replace(APPLIED, format!("{digest}\n").as_bytes(), 0o644)
    }

    /// Where the running hook's process group is recorded (see `Hook`).
    pub fn hook_pid_file(&self) -> PathBuf {
        self.dir.join(HOOK_PID)
    }

    /// Where the files of `digest` live.
    pub fn version(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join(VERSIONS).join(hex)
    }

    /// The version `current` points at.
    pub fn current(&self) -> Option<PathBuf> {
        let target = std::fs::read_link(self.dir.join(CURRENT)).ok()?;
        Some(self.dir.join(target))
    }

    /// Puts verified files in their version directory (written aside, then
    /// renamed into place); an existing one is kept: it was complete when renamed.
    pub fn install(&self, files: &Files) -> Result<PathBuf, ClientError> {
        let version = self.version(&files.digest());
        if version.is_dir() {
            return Ok(version);
        }
        let scratch = self.scratch(VERSIONS);
        files.write_to(&scratch)?;
        std::fs::rename(&scratch, &version).map_err(io_error("rename into place", &version))?;
        self.sync(VERSIONS)?;
        Ok(version)
    }

    /// Points `current` at `version`, atomically: a new symlink renamed over it.
    pub fn switch(&self, version: &Path) -> Result<(), ClientError> {
        let relative = version.strip_prefix(&self.dir).unwrap_or(version);
        let link = self.scratch("");
        std::os::unix::fs::symlink(relative, &link)
            .map_err(io_error("create the symlink", &link))?;
        let current = self.dir.join(CURRENT);
        std::fs::rename(&link, &current).map_err(io_error("repoint", &current))?;
        self.sync("")
    }

    /// Flushes the entries of `under` (the agent's directory for ""): a rename
    /// into place is durable only once its directory is.
    fn sync(&self, under: &str) -> Result<(), ClientError> {
        let dir = self.dir.join(under);
        crate::client::sync_dir(&dir).map_err(io_error("sync", &dir))
    }

    /// Replaces `config.json` and, when given, `secrets.json` (mode 0600).
    /// Returns their paths.
    pub fn write_config(
        &self,
        config: &BTreeMap<String, String>,
        secrets: Option<&BTreeMap<String, String>>,
    ) -> Result<(PathBuf, Option<PathBuf>), ClientError> {
        let json = |map| serde_json::to_vec_pretty(map).expect("a string map serializes");
        self.replace(CONFIG, &json(config), 0o644)?;
        let secrets = match secrets {
            Some(values) => {
                self.replace(SECRETS, &json(values), 0o600)?;
                Some(self.dir.join(SECRETS))
            }
            None => None,
        };
        Ok((self.dir.join(CONFIG), secrets))
    }

    /// Removes versions beyond the `keep` most recent (never the current one),
    /// and whatever a crash left half-written.
    pub fn remove_old(&self, keep: usize) -> Result<(), ClientError> {
        let versions = self.dir.join(VERSIONS);
        let current = self.current();
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&versions).map_err(io_error("list", &versions))? {
            let entry = entry.map_err(io_error("list", &versions))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with(TMP) {
                remove(&path)?;
                continue;
            }
            if Some(&path) == current.as_ref() {
                continue;
            }
            let modified = entry.metadata().and_then(|m| m.modified()).ok();
            found.push((modified, path));
        }
        found.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
        for (_, path) in found.into_iter().skip(keep.saturating_sub(1)) {
            remove(&path)?;
        }
        Ok(())
    }

    /// Everything the agent wrote: after a `prune`.
    pub fn remove_all(&self) -> Result<(), ClientError> {
        for name in [CURRENT, APPLIED, CONFIG, SECRETS] {
            let path = self.dir.join(name);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_error("remove", &path)(e));
                }
                _ => {}
            }
        }
        let versions = self.dir.join(VERSIONS);
        remove(&versions)?;
        std::fs::create_dir_all(&versions).map_err(io_error("create", &versions))
    }

    fn scratch(&self, under: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        self.dir
            .join(under)
            .join(format!("{TMP}{}-{nanos}", std::process::id()))
    }

    fn replace(&self, name: &str, bytes: &[u8], mode: u32) -> Result<(), ClientError> {
        let scratch = self.scratch("");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&scratch)
            .map_err(io_error("create", &scratch))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(io_error("write", &scratch))?;
        let path = self.dir.join(name);
        std::fs::rename(&scratch, &path).map_err(io_error("replace", &path))?;
        self.sync("")
    }
}

fn remove(path: &Path) -> Result<(), ClientError> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error("remove", path)(e)),
        _ => Ok(()),
    }
}
