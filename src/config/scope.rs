//! What a credential covers: the apps (`apps: [payments, "payments/**"]`) and
//! the namespaces (`namespaces: [prod]`) of an API token or identity-provider
//! grant.
//!
//! An app scope is a list of globs over app names, matched with globset as
//! app.yaml's globs are (`*` stays within one segment, `**` crosses `/`); the
//! root app is `.`. No `apps` key means every app.
//!
//! A namespace is an environment: a namespace scope lists namespace names, or
//! `"*"` for every one. No `namespaces` key means the namespace of the daemon
//! that loads the config, which is the same as every namespace for that daemon;
//! so a config that names namespaces anywhere must name them everywhere (the
//! check is the config file's, [`NamespaceScope::is_named`]).

use std::fmt;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::values::Namespace;
use crate::layout::AppName;

/// The apps a credential may act on.
#[derive(Clone)]
pub struct AppScope {
    /// `None`: every app. Otherwise the patterns as written, for messages.
    patterns: Option<Vec<String>>,
    set: GlobSet,
}

impl AppScope {
    /// Every app, the root included.
    pub fn all() -> AppScope {
        AppScope {
            patterns: None,
            set: GlobSet::empty(),
        }
    }

    /// Apps whose names match one of `patterns`. Each pattern is a glob of app
    /// names: segments as names allow, plus `*`, `**`, `?`, `[...]` and `{a,b}`.
    pub fn of<S: AsRef<str>>(patterns: &[S]) -> Result<AppScope, String> {
        let globs = patterns
            .iter()
            .map(|p| glob(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let patterns = patterns.iter().map(|p| p.as_ref().to_owned()).collect();
        AppScope::from_globs(patterns, globs)
    }

    fn from_globs(patterns: Vec<String>, globs: Vec<Glob>) -> Result<AppScope, String> {
        if patterns.is_empty() {
            return Err(
                "an app scope needs at least one pattern (omit `apps` for every app)".into(),
            );
        }
        let mut set = GlobSetBuilder::new();
        for glob in globs {
            set.add(glob);
        }
        let set = set
            .build()
            .map_err(|e| format!("invalid app patterns: {}", e.kind()))?;
        Ok(AppScope {
            patterns: Some(patterns),
            set,
        })
    }

    /// True if the scope names every app.
    pub fn is_all(&self) -> bool {
        self.patterns.is_none()
    }

    pub fn allows(&self, app: &AppName) -> bool {
        self.is_all() || self.set.is_match(app.as_str())
    }
}

/// One pattern, checked: `*` stays within a segment, as in app.yaml's globs.
fn glob(pattern: &str) -> Result<Glob, String> {
    if pattern.is_empty() || pattern.starts_with('/') || pattern.ends_with('/') {
        return Err(format!(
            "app pattern {pattern:?} must be an app name or a glob of app names \
             (no leading or trailing '/')"
        ));
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("invalid app pattern {pattern:?}: {}", e.kind()))
}

impl Default for AppScope {
    fn default() -> Self {
        AppScope::all()
    }
}

impl fmt::Display for AppScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.patterns {
            None => f.write_str("every app"),
            Some(patterns) => f.write_str(&patterns.join(", ")),
        }
    }
}

impl fmt::Debug for AppScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppScope({self})")
    }
}

/// Equal when written the same way: what a config test compares.
impl PartialEq for AppScope {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl Eq for AppScope {}

/// Each pattern is checked as it is read, inside the list's visitor, so a bad
/// one is located at the list (`server.tokens[0].apps`), with its line.
impl<'de> Deserialize<'de> for AppScope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Patterns;
        impl<'de> Visitor<'de> for Patterns {
            type Value = AppScope;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of app names or globs")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AppScope, A::Error> {
                let (mut patterns, mut globs) = (Vec::new(), Vec::new());
                while let Some(pattern) = seq.next_element::<String>()? {
                    globs.push(glob(&pattern).map_err(de::Error::custom)?);
                    patterns.push(pattern);
                }
                AppScope::from_globs(patterns, globs).map_err(de::Error::custom)
            }
        }
        d.deserialize_seq(Patterns)
    }
}

/// The namespaces (environments) a credential is valid in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NamespaceScope {
    /// No `namespaces` key: the namespace of whichever daemon loaded it.
    #[default]
    Daemon,
    /// `namespaces: ["*"]`, written out.
    Every,
    /// `namespaces: [prod, staging]`.
    Only(Vec<Namespace>),
}

impl NamespaceScope {
    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            NamespaceScope::Daemon | NamespaceScope::Every => true,
            NamespaceScope::Only(names) => names.iter().any(|n| n.as_str() == namespace),
        }
    }

    /// True if the config wrote `namespaces` for this credential.
    pub fn is_named(&self) -> bool {
        !matches!(self, NamespaceScope::Daemon)
    }
}

impl fmt::Display for NamespaceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamespaceScope::Daemon => f.write_str("the daemon's own namespace"),
            NamespaceScope::Every => f.write_str("every namespace"),
            NamespaceScope::Only(names) => {
                let names: Vec<&str> = names.iter().map(Namespace::as_str).collect();
                f.write_str(&names.join(", "))
            }
        }
    }
}

impl<'de> Deserialize<'de> for NamespaceScope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Names;
        impl<'de> Visitor<'de> for Names {
            type Value = NamespaceScope;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of namespaces, or [\"*\"] for every namespace")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NamespaceScope, A::Error> {
                let (mut names, mut every) = (Vec::new(), false);
                while let Some(name) = seq.next_element::<String>()? {
                    if name == "*" {
                        every = true;
                    } else {
                        names.push(Namespace::parse(&name).map_err(de::Error::custom)?);
                    }
                }
                match (every, names.is_empty()) {
                    (true, true) => Ok(NamespaceScope::Every),
                    (true, false) => Err(de::Error::custom(
                        "\"*\" is every namespace: list it alone, or list the namespaces",
                    )),
                    (false, true) => Err(de::Error::custom(
                        "a namespace scope needs at least one namespace ([\"*\"] for every one)",
                    )),
                    (false, false) => Ok(NamespaceScope::Only(names)),
                }
            }
        }
        d.deserialize_seq(Names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(app: &str) -> AppName {
        if app == "." {
            AppName::root()
        } else {
            AppName::parse(app).expect("a valid name")
        }
    }

    #[test]
    fn globs_match_app_names_segment_by_segment() {
        let scope = AppScope::of(&["payments", "payments/**", "search/*", "."]).unwrap();
        for app in [
            "payments",
            "payments/api",
            "payments/api/v1",
            "search/web",
            ".",
        ] {
            assert!(scope.allows(&name(app)), "{app}");
        }
        for app in [
            "payments-old",
            "paymentsx/api",
            "search",
            "search/web/v2",
            "docs",
        ] {
            assert!(!scope.allows(&name(app)), "{app}");
        }
        assert_eq!(scope.to_string(), "payments, payments/**, search/*, .");
        assert!(AppScope::all().allows(&name(".")) && AppScope::all().allows(&name("a/b")));
        assert_eq!(AppScope::all().to_string(), "every app");
    }

    #[test]
    fn namespace_scopes() {
        let parse = |yaml: &str| {
            crate::yaml::from_str::<NamespaceScope>(yaml).map(|scope| scope.expect("a document"))
        };
        let only = parse("[prod, staging]").unwrap();
        assert!(only.allows("prod") && only.allows("staging") && !only.allows("dev"));
        assert_eq!(only.to_string(), "prod, staging");
        assert!(parse("['*']").unwrap().allows("anything"));
        assert!(parse("['*']").unwrap().is_named() && only.is_named());
        assert!(!NamespaceScope::default().is_named());
        for (bad, needle) in [
            ("[]", "at least one"),
            ("['*', prod]", "list it alone"),
            ("[Prod]", "invalid namespace \"Prod\""),
            ("prod", "expected a list"),
        ] {
            let err = parse(bad).unwrap_err().message;
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_the_pattern() {
        for (patterns, needle) in [
            (vec![], "at least one"),
            (vec!["/payments"], "\"/payments\""),
            (vec!["payments/"], "\"payments/\""),
            (vec![""], "\"\""),
            (vec!["payments/[a"], "\"payments/[a\""),
        ] {
            let err = AppScope::of(&patterns).unwrap_err();
            assert!(err.contains(needle), "{patterns:?}: {err}");
        }
    }
}
