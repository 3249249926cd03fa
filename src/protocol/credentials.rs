//! Each app's Redis credentials as a file its child mounts:
//! `<credentials_dir>/<namespace>/<app>/credentials.json`, JSON with `username`
//! and `password`, mode 0600 in a directory of its own (0700), replaced by an
//! atomic rename. That is the shape of a Kubernetes Secret volume or a Vault
//! Agent template: a child mounts its own directory and nothing else.
//!
//! The directory of an app is its name with `/` written `+` (`payments+api`), so
//! no app's directory is inside another's (`payments/` would otherwise hold
//! `payments/api/`), and no two names map to one directory (`+` is not a name
//! character); the root app `.` is `_root`, which no app name can be.
//!
//! Passwords come from the operating system's CSPRNG. Redis holds only their
//! sha256 (`#<hex>` rules); these files are the only place with the passwords.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::Secret;
use crate::layout::AppName;

/// The root app's directory name: `.` is no directory name, and `_` starts
/// no app name.
const ROOT_DIR: &str = super::ROOT_ALIAS;

/// The file in each app's directory.
pub const FILE_NAME: &str = "credentials.json";

/// An app's credentials, as its file holds them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    /// The password to use.
    pub password: Secret,
    /// The password a rotation replaced, still valid until its grace ends: a
    /// child that has not read the new file yet keeps working.
    pub previous: Option<Previous>,
    /// When `password` was made (Unix ms): a rotation replaces passwords made
    /// before its slot.
    pub created_at: i64,
}

/// A replaced password, and until when (Unix ms) it stays valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    pub password: Secret,
    pub until: i64,
}

impl Credentials {
    /// New credentials for `username`: a password from the CSPRNG.
    pub fn new(username: &str, now_ms: i64) -> Result<Credentials, CredentialsError> {
        Ok(Credentials {
            username: username.to_owned(),
            password: Secret::random().map_err(CredentialsError::Random)?,
            previous: None,
            created_at: now_ms,
        })
    }

    /// The sha256 (hex) of the password: what the ACL rule holds.
    pub fn password_hash(&self) -> String {
        hash(&self.password)
    }

    /// The sha256 of every password valid at `now_ms`: the current one, and
    /// the previous one during its grace.
    pub fn hashes(&self, now_ms: i64) -> Vec<String> {
        let mut hashes = vec![self.password_hash()];
        if let Some(previous) = self.previous.as_ref().filter(|p| p.until > now_ms) {
            hashes.push(hash(&previous.password));
        }
        hashes
    }

    /// A rotation: a new password, the current one valid `grace_ms` longer.
    pub fn rotated(&self, now_ms: i64, grace_ms: i64) -> Result<Credentials, CredentialsError> {
        let mut next = Credentials::new(&self.username, now_ms)?;
        next.previous = Some(Previous {
            password: self.password.clone(),
            until: now_ms.saturating_add(grace_ms),
        });
        Ok(next)
    }

    /// These credentials without a previous password whose grace ended by
    /// `now_ms`; `None` if there is nothing to drop.
    pub fn expired(&self, now_ms: i64) -> Option<Credentials> {
        let previous = self.previous.as_ref()?;
        (previous.until <= now_ms).then(|| Credentials {
            previous: None,
            ..self.clone()
        })
    }
}

fn hash(password: &Secret) -> String {
    hex::encode(Sha256::digest(password.expose().as_bytes()))
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .field("previous_until", &self.previous.as_ref().map(|p| p.until))
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// The file's JSON. Other fields are kept for readers that want them
/// (`app`, `namespace`) and ignored when read back.
#[derive(Serialize, Deserialize)]
struct File {
    username: String,
    password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_until: Option<i64>,
    #[serde(default)]
    created_at: i64,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    app: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("failed to {action} {}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("credentials file {} is not JSON with `username` and `password`", .path.display())]
    Malformed {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to generate a password")]
    Random(#[source] getrandom::Error),
}

/// The credentials files of one namespace.
#[derive(Debug, Clone)]
pub struct CredentialsDir {
    dir: PathBuf,
    namespace: String,
}

impl CredentialsDir {
    pub fn new(root: &Path, namespace: &str) -> CredentialsDir {
        CredentialsDir {
            dir: root.join(namespace),
            namespace: namespace.to_owned(),
        }
    }

    /// Where `app`'s file is (`canopy creds path <app>`).
    pub fn path(&self, app: &AppName) -> PathBuf {
        self.app_dir(app).join(FILE_NAME)
    }

    fn app_dir(&self, app: &AppName) -> PathBuf {
        let name = if app.is_root() {
            ROOT_DIR.to_owned()
        } else {
            app.as_str().replace('/', "+")
        };
        self.dir.join(name)
    }

    /// `app`'s credentials, if its file exists.
    pub fn load(&self, app: &AppName) -> Result<Option<Credentials>, CredentialsError> {
        read(&self.path(app))
    }

    /// `app`'s credentials: those of its file, or new ones written there for
    /// `username` (a fresh CSPRNG password) if it has none yet.
    pub fn load_or_create(
        &self,
        app: &AppName,
        username: &str,
        now_ms: i64,
    ) -> Result<Credentials, CredentialsError> {
        if let Some(existing) = self.load(app)?
            && existing.username == username
        {
            return Ok(existing);
        }
        let credentials = Credentials::new(username, now_ms)?;
        self.store(app, &credentials)?;
        Ok(credentials)
    }

    /// Writes `credentials` as `app`'s file: a temporary file (0600) in the
    /// app's directory (0700), synced, then renamed over the old one, so a
    /// reader sees the old file or the new one, never a part.
    pub fn store(&self, app: &AppName, credentials: &Credentials) -> Result<(), CredentialsError> {
        let dir = self.app_dir(app);
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| CredentialsError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io("create", &dir))?;
        let previous = credentials.previous.as_ref();
        let json = serde_json::to_vec_pretty(&File {
            username: credentials.username.clone(),
            password: credentials.password.expose().to_owned(),
            previous_password: previous.map(|p| p.password.expose().to_owned()),
            previous_until: previous.map(|p| p.until),
            created_at: credentials.created_at,
            namespace: self.namespace.clone(),
            app: app.to_string(),
        })
        .expect("a struct of strings serializes");
        let temp = dir.join(format!(".{FILE_NAME}.tmp"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io("write", &temp))?;
        file.write_all(&json)
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(io("write", &temp))?;
        let path = dir.join(FILE_NAME);
        std::fs::rename(&temp, &path).map_err(io("replace", &path))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", &dir))
    }

    /// Removes `app`'s directory (its app was pruned).
    pub fn remove(&self, app: &AppName) -> Result<(), CredentialsError> {
        let dir = self.app_dir(app);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CredentialsError::Io {
                action: "remove",
                path: dir,
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

/// Reads a credentials file; `None` if there is none. Also what a child reads.
pub fn read(path: &Path) -> Result<Option<Credentials>, CredentialsError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CredentialsError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let file: File =
        serde_json::from_slice(&bytes).map_err(|source| CredentialsError::Malformed {
            path: path.to_path_buf(),
            source,
        })?;
    let previous = match (file.previous_password, file.previous_until) {
        (Some(password), Some(until)) => Some(Previous {
            password: Secret::new(password),
            until,
        }),
        _ => None,
    };
    Ok(Some(Credentials {
        username: file.username,
        password: Secret::new(file.password),
        previous,
        created_at: file.created_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn name(app: &str) -> AppName {
        AppName::parse(app).expect("a valid name")
    }

    #[test]
    fn each_app_has_a_private_directory_of_its_own() {
        let root = tempfile::tempdir().unwrap();
        let dir = CredentialsDir::new(root.path(), "prod");
        let parent = dir
            .load_or_create(&name("payments"), "u-payments", 1)
            .unwrap();
        let child = dir
            .load_or_create(&name("payments/api"), "u-payments-api", 1)
            .unwrap();
        let root_app = dir.load_or_create(&AppName::root(), "u-root", 1).unwrap();
        assert_ne!(parent.password, child.password);
        assert_eq!(parent.password.expose().len(), 64);

        let path = dir.path(&name("payments/api"));
        assert_eq!(path, root.path().join("prod/payments+api/credentials.json"));
        assert_eq!(
            dir.path(&AppName::root()),
            root.path().join("prod/_root/credentials.json")
        );
        assert!(
            !path.starts_with(dir.path(&name("payments")).parent().unwrap()),
            "no app's directory holds another's"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);

        // Stable across loads; a file for another user is replaced.
        assert_eq!(
            dir.load_or_create(&name("payments"), "u-payments", 2)
                .unwrap(),
            parent
        );
        let renamed = dir.load_or_create(&name("payments"), "u-other", 2).unwrap();
        assert_ne!(renamed.password, parent.password);
        assert_eq!(read(&dir.path(&AppName::root())).unwrap(), Some(root_app));

        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["username"], "u-payments-api");
        assert_eq!(json["app"], "payments/api");
        dir.remove(&name("payments/api")).unwrap();
        assert!(!path.parent().unwrap().exists());
        dir.remove(&name("payments/api")).unwrap();
    }

    #[test]
    fn a_rotation_keeps_the_old_password_valid_through_its_grace() {
        let root = tempfile::tempdir().unwrap();
        let dir = CredentialsDir::new(root.path(), "prod");
        let first = dir.load_or_create(&name("search"), "u", 1_000).unwrap();
        assert_eq!(first.hashes(1_000), [first.password_hash()]);
        let second = first.rotated(5_000, 3_000).unwrap();
        assert_ne!(second.password, first.password);
        assert_eq!(second.created_at, 5_000);
        assert_eq!(
            second.hashes(7_999),
            [second.password_hash(), first.password_hash()]
        );
        assert_eq!(second.hashes(8_000), [second.password_hash()], "grace over");
        dir.store(&name("search"), &second).unwrap();
        assert_eq!(
            read(&dir.path(&name("search"))).unwrap(),
            Some(second.clone())
        );
        assert_eq!(second.expired(7_999), None);
        let expired = second.expired(8_000).expect("the previous one goes");
        assert_eq!(
            (expired.previous, &expired.password),
            (None, &second.password)
        );
        assert_eq!(first.expired(9_000), None, "nothing to drop");
    }

    #[test]
    fn a_malformed_file_is_an_error_naming_it_and_never_its_content() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("credentials.json");
        std::fs::write(&path, "{\"username\": \"u\", \"pass\": \"hunter2\"}").unwrap();
        let err = read(&path).unwrap_err();
        let text = format!("{err}: {:?}", std::error::Error::source(&err));
        assert!(text.contains("credentials.json"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(read(&root.path().join("none.json")).unwrap().is_none());
    }
}
