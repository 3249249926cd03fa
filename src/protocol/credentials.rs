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
    pub password: Secret,
}

impl Credentials {
    /// The sha256 (hex) of the password: what the ACL rule holds.
    pub fn password_hash(&self) -> String {
        hex::encode(Sha256::digest(self.password.expose().as_bytes()))
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// The file's JSON. Other fields are kept for readers that want them
/// (`app`, `namespace`) and ignored when read back.
#[derive(Serialize, Deserialize)]
struct File {
    username: String,
    password: String,
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
    ) -> Result<Credentials, CredentialsError> {
        if let Some(existing) = self.load(app)?
            && existing.username == username
        {
            return Ok(existing);
        }
        let credentials = Credentials {
            username: username.to_owned(),
            password: Secret::random().map_err(CredentialsError::Random)?,
        };
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
        let json = serde_json::to_vec_pretty(&File {
            username: credentials.username.clone(),
            password: credentials.password.expose().to_owned(),
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
    Ok(Some(Credentials {
        username: file.username,
        password: Secret::new(file.password),
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
        let parent = dir.load_or_create(&name("payments"), "u-payments").unwrap();
        let child = dir
            .load_or_create(&name("payments/api"), "u-payments-api")
            .unwrap();
        let root_app = dir.load_or_create(&AppName::root(), "u-root").unwrap();
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
            dir.load_or_create(&name("payments"), "u-payments").unwrap(),
            parent
        );
        let renamed = dir.load_or_create(&name("payments"), "u-other").unwrap();
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
