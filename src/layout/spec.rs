//! `app.yaml`: the typed spec of one app. Every key is optional; unknown keys and
//! bad values are errors that carry the line and column of the offending text.
//! Values that must be valid (globs, app names, keys) are checked while
//! deserializing, so their errors carry a location too.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use super::name::AppName;
use super::sorted_map::SortedMap;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppSpec {
    pub sync: SyncPolicy,
    pub wave: i32,
    pub depends_on: Vec<AppName>,
    pub include: Vec<GlobPattern>,
    pub exclude: Vec<GlobPattern>,
    pub children: Option<Generator>,
    pub config: SortedMap<Key, ConfigValue>,
    pub secrets: Vec<Key>,
    pub labels: SortedMap<LabelKey, String>,
    /// The line of the `depends_on` key, for errors found after parsing (an
    /// unknown target); not part of the file's content model.
    #[serde(skip)]
    pub depends_on_line: Option<usize>,
}

impl Default for AppSpec {
    fn default() -> Self {
        AppSpec {
            sync: SyncPolicy::Auto,
            wave: 0,
            depends_on: Vec::new(),
            include: vec![GlobPattern("**".to_owned())],
            exclude: Vec::new(),
            children: None,
            config: SortedMap::new(),
            secrets: Vec::new(),
            labels: SortedMap::new(),
            depends_on_line: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// Signalled as soon as its desired state changes.
    #[default]
    Auto,
    /// Drift is reported; signalled only when someone asks.
    Manual,
}

/// A directory generator: child apps from directories without an `app.yaml`, like
/// Argo CD's ApplicationSet git directory generator.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Generator {
    /// Globs relative to the parent's directory, matched against directories.
    pub dirs: Vec<GlobPattern>,
    /// Directories matching these are not generated, even if `dirs` matches.
    #[serde(default)]
    pub exclude: Vec<GlobPattern>,
}

/// A glob, relative to an app's directory, checked when parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct GlobPattern(pub String);

impl GlobPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if pattern.starts_with('/') || pattern.split('/').any(|c| c == "..") {
            return Err(format!(
                "glob {pattern:?} must be relative to the app directory (no leading '/', no '..')"
            ));
        }
        globset::Glob::new(pattern)
            .map_err(|e| format!("invalid glob {pattern:?}: {}", e.kind()))?;
        Ok(GlobPattern(pattern.to_owned()))
    }

    /// The compiled matcher. `*` does not cross `/`; `**` does.
    pub fn glob(&self) -> globset::Glob {
        globset::GlobBuilder::new(&self.0)
            .literal_separator(true)
            .build()
            .expect("pattern was validated when parsed")
    }
}

impl<'de> Deserialize<'de> for GlobPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        GlobPattern::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A config key or secret name: it becomes a Redis hash field and an environment
/// variable name in child apps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Key(pub String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let key = String::deserialize(d)?;
        let ok = (1..=128).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if ok {
            Ok(Key(key))
        } else {
            Err(serde::de::Error::custom(format!(
                "invalid key {key:?}: use 1-128 characters of A-Z, a-z, 0-9, '_', '.', '-'"
            )))
        }
    }
}

/// A label key (`team`, `example.com/tier`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct LabelKey(pub String);

impl<'de> Deserialize<'de> for LabelKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let key = String::deserialize(d)?;
        let ok = (1..=253).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b));
        if ok {
            Ok(LabelKey(key))
        } else {
            Err(serde::de::Error::custom(format!(
                "invalid label key {key:?}: use 1-253 characters of A-Z, a-z, 0-9, '_', '.', '-', '/'"
            )))
        }
    }
}

/// A config value. Child apps see strings (a Redis hash), so scalars are accepted
/// and kept as the text a reader of `app.yaml` sees: `replicas: 3` is `"3"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ConfigValue(pub String);

impl<'de> Deserialize<'de> for ConfigValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Scalar;
        impl serde::de::Visitor<'_> for Scalar {
            type Value = ConfigValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<ConfigValue, E> {
                Ok(ConfigValue(v.to_owned()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<ConfigValue, E> {
                Ok(ConfigValue(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<ConfigValue, E> {
                Ok(ConfigValue(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<ConfigValue, E> {
                Ok(ConfigValue(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<ConfigValue, E> {
                Ok(ConfigValue(v.to_string()))
            }
        }
        d.deserialize_any(Scalar)
    }
}

/// A parse failure, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl AppSpec {
    /// Parses `app.yaml` text. The caller has already capped its size: serde_yaml
    /// additionally bounds nesting depth and alias expansion, so a small hostile
    /// document fails fast instead of growing without bound.
    pub fn parse(text: &[u8]) -> Result<AppSpec, SpecError> {
        let text = std::str::from_utf8(text).map_err(|e| {
            let line = text[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            SpecError {
                line: Some(line),
                column: None,
                message: "app.yaml is not valid UTF-8".to_owned(),
            }
        })?;
        check_flow_depth(text)?;
        // An empty (or comment-only) file is a marker with every default.
        let spec: Option<AppSpec> = serde_yaml::from_str(text).map_err(|e| {
            let location = e.location();
            SpecError {
                line: location.as_ref().map(|l| l.line()),
                column: location.as_ref().map(|l| l.column()),
                message: strip_location(
                    &e.to_string(),
                    location.as_ref().map(|l| (l.line(), l.column())),
                ),
            }
        })?;
        let mut spec = spec.unwrap_or_default();
        spec.depends_on_line = text
            .lines()
            .position(|line| line.starts_with("depends_on:"))
            .map(|i| i + 1);
        Ok(spec)
    }

    /// True if `other` discovers the same apps and files as `self`: only `sync`,
    /// `wave`, `config`, `secrets` and `labels` differ. `depends_on` counts as
    /// layout because its validity depends on other apps (cycles).
    pub fn same_layout(&self, other: &AppSpec) -> bool {
        self.include == other.include
            && self.exclude == other.exclude
            && self.children == other.children
            && self.depends_on == other.depends_on
    }
}

/// Deepest `[`/`{` nesting accepted. app.yaml needs 3; serde_yaml stops at 128
/// levels, but its parser is quadratic in flow nesting (100,000 brackets, 200 KB,
/// take 45 s), so hostile nesting is refused before parsing, in linear time.
const MAX_FLOW_DEPTH: usize = 32;

/// Refuses flow collections nested deeper than [`MAX_FLOW_DEPTH`]. Quoted scalars
/// and comments are skipped; a bracket inside a plain scalar may count, which can
/// only make the check stricter for absurd documents.
pub(crate) fn check_flow_depth(text: &str) -> Result<(), SpecError> {
    let mut depth = 0usize;
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let mut previous = '\n';
    let mut last_significant = '\n';
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            '#' if previous.is_whitespace() => {
                while chars.peek().is_some_and(|c| *c != '\n') {
                    chars.next();
                }
            }
            // A quote opens a quoted scalar only where a scalar can start; inside a
            // plain scalar (`it's`) it is an ordinary character.
            '"' | '\'' if starts_scalar(last_significant) => {
                while let Some(q) = chars.next() {
                    match q {
                        '\n' => line += 1,
                        '\\' if c == '"' => {
                            chars.next();
                        }
                        q if q == c => break,
                        _ => {}
                    }
                }
            }
            '[' | '{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(SpecError {
                        line: Some(line),
                        column: None,
                        message: format!("collections nested deeper than {MAX_FLOW_DEPTH} levels"),
                    });
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = c;
        if c == '\n' || !c.is_whitespace() {
            last_significant = c;
        }
    }
    Ok(())
}

/// Whether a scalar can start after `c`, the last character that was not a space.
fn starts_scalar(c: char) -> bool {
    matches!(
        c,
        '\n' | ':' | '-' | '[' | '{' | ',' | '?' | '!' | '&' | '|' | '>'
    )
}

/// serde_yaml writes the error's location into the message as " at line L column
/// C"; the caller prints it as `file:line:column` instead. Other locations in the
/// message (where an unclosed collection started) are kept.
pub(crate) fn strip_location(message: &str, location: Option<(usize, usize)>) -> String {
    match location {
        Some((line, column)) => {
            message.replacen(&format!(" at line {line} column {column}"), "", 1)
        }
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses() {
        let spec = AppSpec::parse(
            br#"
sync: manual
wave: -2
depends_on: [search, payments/db]
include: ["**"]
exclude: ["**/*.md"]
children: {dirs: ["apps/*"], exclude: ["apps/legacy-*"]}
config: {LOG_LEVEL: info, replicas: 3, debug: false}
secrets: [db_password]
labels: {team: payments}
"#,
        )
        .unwrap();
        assert_eq!(spec.sync, SyncPolicy::Manual);
        assert_eq!(spec.wave, -2);
        assert_eq!(spec.depends_on[1].as_str(), "payments/db");
        assert_eq!(spec.config.get(&Key("replicas".into())).unwrap().0, "3");
        assert_eq!(spec.config.get(&Key("debug".into())).unwrap().0, "false");
        assert_eq!(spec.children.unwrap().exclude[0].0, "apps/legacy-*");
    }

    #[test]
    fn empty_and_comment_only_files_are_defaults() {
        assert_eq!(AppSpec::parse(b"").unwrap(), AppSpec::default());
        assert_eq!(
            AppSpec::parse(b"# just a marker\n").unwrap(),
            AppSpec::default()
        );
    }

    #[test]
    fn errors_carry_line_and_column() {
        let err = AppSpec::parse(b"wave: 1\nsink: auto\n").unwrap_err();
        assert_eq!((err.line, err.column), (Some(2), Some(1)));
        assert!(
            err.message.contains("unknown field `sink`"),
            "{}",
            err.message
        );
        let err = AppSpec::parse(b"depends_on:\n  - ok\n  - Bad*\n").unwrap_err();
        assert!(err.line.is_some());
        assert!(err.message.contains("\"Bad*\""), "{}", err.message);
        let err = AppSpec::parse(b"exclude: ['a[']\n").unwrap_err();
        assert!(err.message.contains("invalid glob"), "{}", err.message);
        let err = AppSpec::parse(b"config: {a: [1]}\n").unwrap_err();
        assert!(
            err.message.contains("a string, number or boolean"),
            "{}",
            err.message
        );
    }

    #[test]
    fn alias_bomb_fails_fast() {
        // 10^30 nodes if expanded: returning at all proves nothing was expanded
        // beyond serde_yaml's repetition limit or the typed schema.
        let mut doc = String::from("labels: {}\nexclude: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        let mut anchors = String::new();
        for i in 1..30 {
            let p = i - 1;
            anchors.push_str(&format!(
                "  - &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        doc.push_str(&format!("include:\n{anchors}depends_on: *a29\n"));
        assert!(AppSpec::parse(doc.as_bytes()).is_err());
    }

    #[test]
    fn deep_nesting_fails_fast() {
        for (open, close) in [("[", "]"), ("{a: ", "}")] {
            let doc = format!("labels: {}{}", open.repeat(100_000), close.repeat(100_000));
            let err = AppSpec::parse(doc.as_bytes()).unwrap_err();
            assert!(err.message.contains("nested deeper"), "{}", err.message);
        }
        let doc = format!("labels: {}x", "- ".repeat(100_000));
        assert!(AppSpec::parse(doc.as_bytes()).is_err());
        // Brackets in quotes and comments do not count.
        let doc = format!(
            "labels: {{a: \"{}\"}} # {}\n",
            "[".repeat(100),
            "{".repeat(100)
        );
        assert!(AppSpec::parse(doc.as_bytes()).is_ok());
    }
}
