//! Secrets and how they may be shown: [`Secret`] never prints its value, and
//! URLs are shown without their userinfo. Every module that holds a password, a
//! token or a URL that may carry one uses these, so there is one rule for what a
//! log line or an error may contain.

use std::fmt;

/// A secret value (a password, a token). `Debug` and `Display` print
/// `Secret(***)`; only [`Secret::expose`] gives the value, for the one place that
/// uses it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// 32 bytes from the operating system's CSPRNG, as 64 hex digits (safe in
    /// a URL, a config file and an ACL rule without quoting).
    pub fn random() -> Result<Secret, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Secret::new(hex::encode(bytes)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A URL cut at its authority (RFC 3986: `scheme://[userinfo@]host[:port]`, the
/// authority ending at the first `/`, `?` or `#`). Only what canopy needs to
/// show a URL safely and to find its host; not a validating parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlParts<'a> {
    pub scheme: &'a str,
    /// `user:password` before the last `@` of the authority, if any.
    pub userinfo: Option<&'a str>,
    /// `host[:port]`, brackets of an IPv6 literal kept.
    pub host_port: &'a str,
    /// Everything after the authority: path, query and fragment.
    pub rest: &'a str,
}

impl<'a> UrlParts<'a> {
    /// `None` when `text` has no `scheme://` (a local path).
    pub fn split(text: &'a str) -> Option<UrlParts<'a>> {
        let (scheme, after) = text.split_once("://")?;
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((info, host)) => (Some(info), host),
            None => (None, authority),
        };
        Some(UrlParts {
            scheme,
            userinfo,
            host_port,
            rest,
        })
    }

    /// The host without port or IPv6 brackets (empty when there is none).
    pub fn host(&self) -> &'a str {
        match self.host_port.strip_prefix('[') {
            Some(v6) => v6.split_once(']').map_or("", |(host, _)| host),
            None => self.host_port.split(':').next().unwrap_or(""),
        }
    }

    /// `scheme://host[:port]`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.host_port)
    }
}

/// `input` with any `user:password@` after the scheme removed, for messages about
/// URLs, including those that did not even parse.
pub fn redact(input: &str) -> String {
    match UrlParts::split(input) {
        Some(parts) if parts.userinfo.is_some() => format!("{}{}", parts.origin(), parts.rest),
        _ => input.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret}"), "Secret(***)");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn the_authority_ends_at_path_query_or_fragment() {
        let parts = UrlParts::split("https://u:p@w@h.example:8443/x@y?q=@z#@f").unwrap();
        assert_eq!(parts.scheme, "https");
        assert_eq!(parts.userinfo, Some("u:p@w"));
        assert_eq!(parts.host_port, "h.example:8443");
        assert_eq!(parts.host(), "h.example");
        assert_eq!(parts.rest, "/x@y?q=@z#@f");
        // A query or fragment right after the host is not part of the authority,
        // whatever `@` it holds.
        let parts = UrlParts::split("https://h?token=a@b").unwrap();
        assert_eq!((parts.userinfo, parts.host_port), (None, "h"));
        assert_eq!(UrlParts::split("http://[::1]:80/").unwrap().host(), "::1");
        assert_eq!(UrlParts::split("/srv/repo.git"), None);
    }

    #[test]
    fn redaction_removes_userinfo_only() {
        assert_eq!(redact("https://a:b@h/x@y"), "https://h/x@y");
        assert_eq!(
            redact("redis://:pw@127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact("https://h/x@y"), "https://h/x@y");
        assert_eq!(redact("https://a:b@h?x"), "https://h?x");
        assert_eq!(redact("not a url"), "not a url");
    }
}
