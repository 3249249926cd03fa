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
    // An empty value (`include:`) is an empty list or map, not the default.
    #[serde(deserialize_with = "crate::yaml::null_as_empty")]
    pub depends_on: Vec<AppName>,
    #[serde(deserialize_with = "crate::yaml::null_as_empty")]
    pub include: Vec<GlobPattern>,
    #[serde(deserialize_with = "crate::yaml::null_as_empty")]
    pub exclude: Vec<GlobPattern>,
    pub children: Option<Generator>,
    #[serde(deserialize_with = "crate::yaml::null_as_empty")]
    pub config: SortedMap<Key, ConfigValue>,
    #[serde(deserialize_with = "crate::yaml::null_as_empty")]
    pub secrets: Vec<Key>,
    #[serde(deserialize_with = "crate::yaml::null_as_empty")]
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
    #[serde(deserialize_with = "crate::yaml::null_as_empty")]
    pub dirs: Vec<GlobPattern>,
    /// Directories matching these are not generated, even if `dirs` matches.
    #[serde(default, deserialize_with = "crate::yaml::null_as_empty")]
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
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ConfigValue, E> {
                // An integer past 64 bits arrives as the nearest float: its text
                // would not be what the file says, so it is refused, as it always
                // was. Quoted, it is kept as written.
                // Past u64 above and i64 below, every float is an integer.
                const BELOW_I64: f64 = i64::MIN as f64;
                const ABOVE_U64: f64 = u64::MAX as f64; // rounds up to 2^64
                if v.is_finite() && !(BELOW_I64..ABOVE_U64).contains(&v) {
                    return Err(E::custom(format!(
                        "number {v} is too large to keep exactly: quote it to keep it as text"
                    )));
                }
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
    /// Parses `app.yaml` text. The caller has already capped its size: the YAML
    /// reader additionally bounds nesting depth and alias expansion, so a small
    /// hostile document fails fast instead of growing without bound.
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
        // An empty (or comment-only) file is a marker with every default.
        let spec: Option<AppSpec> = crate::yaml::from_str(text).map_err(|e| SpecError {
            line: e.line,
            column: e.column,
            message: e.message,
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
    fn config_values_keep_the_text_a_reader_sees() {
        let spec = AppSpec::parse(
            b"config: {a: 007, b: 1_000, c: 0x10, d: 1.0, e: yes, g: '', h: .inf}\n",
        )
        .unwrap();
        let values: Vec<&str> = spec.config.iter().map(|(_, v)| v.0.as_str()).collect();
        // As serde_yaml read them: YAML 1.2 numbers are numbers, the rest text.
        assert_eq!(values, ["007", "1_000", "16", "1", "yes", "", "inf"]);
        let err = AppSpec::parse(b"config: {big: 18446744073709551616}\n").unwrap_err();
        assert!(err.message.contains("quote it"), "{}", err.message);
        let spec = AppSpec::parse(b"config: {big: '18446744073709551616'}\n").unwrap();
        assert_eq!(
            spec.config.iter().next().unwrap().1.0,
            "18446744073709551616"
        );
    }

    #[test]
    fn empty_values_are_empty_and_tags_are_refused() {
        let spec = AppSpec::parse(b"include:\nlabels:\nchildren: {dirs: }\n").unwrap();
        assert!(spec.include.is_empty() && spec.labels.is_empty());
        assert!(spec.children.unwrap().dirs.is_empty());
        let err = AppSpec::parse(b"labels: {team: !payments x}\n").unwrap_err();
        assert_eq!(err.line, Some(1));
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
        // beyond the YAML reader's alias budget or the typed schema.
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
