//! Values named in the config file by an environment variable (`*_env`) or a
//! file (`*_file`), read once at load. Secrets among them are kept in
//! [`Secret`], which never prints its value.

use std::io::Read;
use std::path::PathBuf;

use super::ConfigError;
use crate::protocol::Secret;

/// Largest secret file read; a token or password is far smaller, and a bigger
/// file is a misconfiguration (a key ring, a log) rather than a secret.
const MAX_SECRET_FILE_BYTES: u64 = 64 << 10;

/// Where a value is read from, as the config file names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    /// Written in the config file: only for values that are not secret (usernames).
    Literal(String),
    Env(String),
    File(PathBuf),
}

/// A value given by one of `<stem>`, `<stem>_env`, `<stem>_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ValueRef {
    stem: &'static str,
    source: Source,
}

impl ValueRef {
    /// At most one of the forms may be set; `literal` is `None` for secrets, which
    /// have no literal form.
    pub(super) fn at_most_one(
        stem: &'static str,
        literal: Option<String>,
        env: Option<String>,
        file: Option<PathBuf>,
    ) -> Result<Option<ValueRef>, String> {
        let has_literal = literal.is_some();
        let sources: Vec<Source> = [
            literal.map(Source::Literal),
            env.map(Source::Env),
            file.map(Source::File),
        ]
        .into_iter()
        .flatten()
        .collect();
        match <[Source; 1]>::try_from(sources) {
            Ok([source]) => Ok(Some(ValueRef { stem, source })),
            Err(sources) if sources.is_empty() => Ok(None),
            Err(_) if has_literal => Err(format!(
                "set only one of `{stem}`, `{stem}_env` and `{stem}_file`"
            )),
            Err(_) => Err(format!("set only one of `{stem}_env` and `{stem}_file`")),
        }
    }

    /// Exactly one of `<stem>_env` and `<stem>_file`.
    pub(super) fn exactly_one(
        stem: &'static str,
        env: Option<String>,
        file: Option<PathBuf>,
    ) -> Result<ValueRef, String> {
        ValueRef::at_most_one(stem, None, env, file)?
            .ok_or_else(|| format!("set `{stem}_env` or `{stem}_file`"))
    }

    /// Reads the value. `section` is the config key holding this value
    /// (`webhooks.github`), for messages.
    pub(super) fn read(
        &self,
        section: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, ConfigError> {
        let key = self.key(section);
        match &self.source {
            Source::Literal(value) => Ok(value.clone()),
            Source::Env(var) => env(var).filter(|value| !value.is_empty()).ok_or_else(|| {
                ConfigError::SecretEnvMissing {
                    key,
                    var: var.clone(),
                }
            }),
            Source::File(path) => {
                let invalid = |problem| ConfigError::SecretFileInvalid {
                    key: key.clone(),
                    path: path.clone(),
                    problem,
                };
                let mut bytes = Vec::new();
                std::fs::File::open(path)
                    .and_then(|file| file.take(MAX_SECRET_FILE_BYTES + 1).read_to_end(&mut bytes))
                    .map_err(|source| ConfigError::SecretFileRead {
                        key: key.clone(),
                        path: path.clone(),
                        source,
                    })?;
                if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
                    return Err(invalid("is larger than 64 KiB"));
                }
                let text = String::from_utf8(bytes).map_err(|_| invalid("is not UTF-8"))?;
                // Files written by `echo` or editors end with a newline that is not
                // part of the secret.
                let value = text.trim_end_matches(['\n', '\r']);
                if value.is_empty() {
                    return Err(invalid("is empty"));
                }
                Ok(value.to_owned())
            }
        }
    }

    /// The config key this value was given by (`webhooks.github.secret_env`).
    pub(super) fn key(&self, section: &str) -> String {
        let stem = self.stem;
        match self.source {
            Source::Literal(_) => format!("{section}.{stem}"),
            Source::Env(_) => format!("{section}.{stem}_env"),
            Source::File(_) => format!("{section}.{stem}_file"),
        }
    }

    /// Where the value was read from, for messages about the value itself.
    pub(super) fn origin(&self) -> String {
        match &self.source {
            Source::Literal(_) => "the config file".to_owned(),
            Source::Env(var) => format!("environment variable {var}"),
            Source::File(path) => format!("file {}", path.display()),
        }
    }

    pub(super) fn read_secret(
        &self,
        section: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Secret, ConfigError> {
        self.read(section, env).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_form_only() {
        let both = ValueRef::at_most_one("secret", None, Some("A".into()), Some("/f".into()));
        assert_eq!(
            both.unwrap_err(),
            "set only one of `secret_env` and `secret_file`"
        );
        assert_eq!(ValueRef::at_most_one("token", None, None, None), Ok(None));
        assert_eq!(
            ValueRef::exactly_one("token", None, None).unwrap_err(),
            "set `token_env` or `token_file`"
        );
        let user = ValueRef::at_most_one("username", Some("git".into()), Some("U".into()), None);
        assert!(user.unwrap_err().contains("`username`, `username_env`"));
    }

    #[test]
    fn files_lose_their_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "t0ken\r\n").unwrap();
        let token = ValueRef::exactly_one("token", None, Some(path.clone())).unwrap();
        let none = |_: &str| None;
        assert_eq!(token.read("repo.auth", &none).unwrap(), "t0ken");
        std::fs::write(&path, "\n").unwrap();
        let err = token.read("repo.auth", &none).unwrap_err().to_string();
        assert!(
            err.starts_with("repo.auth.token_file: ") && err.ends_with("is empty"),
            "{err}"
        );
    }
}
