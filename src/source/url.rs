//! Repository URLs as users write them, and how they may be shown: never with
//! credentials. Userinfo is split off before gix sees the URL, so no gix error
//! message can carry a password.

use std::fmt;

pub use crate::protocol::redact;
use crate::protocol::{Secret, UrlParts};

/// A repository location with any `user:password@` removed.
#[derive(Clone, PartialEq, Eq)]
pub struct RepoUrl {
    /// What gix fetches from: a URL without userinfo, or a local path.
    url: String,
    /// Credentials that were embedded in the URL, if any.
    embedded: Option<Credentials>,
}

/// A username and token for HTTP(S).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub token: Secret,
}

impl RepoUrl {
    /// Accepts `https://`, `http://`, `git://`, `file://` URLs and local paths.
    pub fn parse(input: &str) -> Result<Self, String> {
        let input = input.trim();
        if input.is_empty() {
            return Err("repository URL is empty".to_owned());
        }
        let Some(parts) = UrlParts::split(input) else {
            // A local path (scp-like `host:path` is ssh, which canopy does not speak).
            return Ok(RepoUrl {
                url: input.to_owned(),
                embedded: None,
            });
        };
        if !matches!(parts.scheme, "https" | "http" | "git" | "file") {
            return Err(format!(
                "unsupported URL scheme {:?} in {}: use https, http, git or file",
                parts.scheme,
                redact(input)
            ));
        }
        let embedded = parts.userinfo.map(|info| {
            let (user, token) = info.split_once(':').unwrap_or((info, ""));
            Credentials {
                username: percent_decode(user),
                token: Secret::new(percent_decode(token)),
            }
        });
        Ok(RepoUrl {
            url: format!("{}{}", parts.origin(), parts.rest),
            embedded,
        })
    }

    /// The URL to fetch from, without credentials.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    pub fn embedded_credentials(&self) -> Option<&Credentials> {
        self.embedded.as_ref()
    }

    pub fn is_remote(&self) -> bool {
        self.url.starts_with("http://")
            || self.url.starts_with("https://")
            || self.url.starts_with("git://")
    }
}

/// Shows the URL without credentials.
impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl fmt::Debug for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoUrl({:?})", self.url)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_split_off_and_never_shown() {
        let url =
            RepoUrl::parse("https://deploy:s3cr%40t@git.example.com/acme/platform.git").unwrap();
        assert_eq!(url.as_str(), "https://git.example.com/acme/platform.git");
        let creds = url.embedded_credentials().unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.token.expose()),
            ("deploy", "s3cr@t")
        );
        for shown in [url.to_string(), format!("{url:?}"), format!("{creds:?}")] {
            assert!(!shown.contains("s3cr"), "{shown}");
        }
        assert_eq!(redact("https://a:b@h/x@y"), "https://h/x@y");
    }

    #[test]
    fn paths_and_schemes() {
        assert!(!RepoUrl::parse("/srv/git/platform.git").unwrap().is_remote());
        assert!(
            !RepoUrl::parse("file:///srv/git/platform.git")
                .unwrap()
                .is_remote()
        );
        assert!(
            RepoUrl::parse("git://127.0.0.1:9418/platform.git")
                .unwrap()
                .is_remote()
        );
        let err = RepoUrl::parse("ssh://u:pw@host/x").unwrap_err();
        assert!(err.contains("unsupported") && !err.contains("pw"), "{err}");
        assert!(RepoUrl::parse("  ").is_err());
    }
}
