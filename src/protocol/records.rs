//! One decoder per stored hash: `canopy:<ns>:app:{<app>}:desired` (written by
//! the daemon) and `:observed` (written by a child through `canopy_report`).
//!
//! Everyone who reads these hashes (the daemon deciding writes, status and
//! drift evaluation, the artifact endpoint, the child library) goes through the
//! decoder here, so they all agree on what a record means. A field that is
//! present but malformed is an error naming the key and the field, never a
//! silent default: a child can write its keys, so their values are hostile.

use std::fmt;

use crate::layout::AppName;
use crate::status::{ReportedState, SyncMode};

/// A stored record that canopy cannot use, named down to the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field} of {key}: {problem}")]
pub struct RecordError {
    pub key: String,
    pub field: &'static str,
    pub problem: String,
}

/// A view of a hash's fields, whether it came from `HGETALL` or `HMGET`.
pub trait Fields {
    fn get(&self, field: &str) -> Option<&str>;
}

impl<S: std::hash::BuildHasher> Fields for std::collections::HashMap<String, String, S> {
    fn get(&self, field: &str) -> Option<&str> {
        std::collections::HashMap::get(self, field).map(String::as_str)
    }
}

/// The reply of `HMGET key <names...>`, field by field.
pub struct Fetched<'a> {
    pub names: &'a [&'static str],
    pub values: &'a [Option<String>],
}

impl Fields for Fetched<'_> {
    fn get(&self, field: &str) -> Option<&str> {
        let at = self.names.iter().position(|name| *name == field)?;
        self.values.get(at)?.as_deref()
    }
}

/// The `:desired` hash. A pruned app leaves a tombstone: its generation and
/// revision, no [`DesiredApp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRecord {
    /// Per app, only grows.
    pub generation: u64,
    /// The commit the state comes from (or the commit that removed the app).
    pub revision: String,
    /// When the current state was signalled or, for a manual or held app,
    /// became desired (Unix ms).
    pub signalled_at: i64,
    /// `None` for a tombstone.
    pub app: Option<DesiredApp>,
}

/// What an app in Git wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredApp {
    /// `sha256:<64 hex>`.
    pub digest: String,
    pub config_digest: String,
    /// `None` for the root app.
    pub parent: Option<AppName>,
    pub wave: i32,
    /// How many files the manifest holds.
    pub files: u64,
    pub sync: SyncMode,
    pub depends_on: Vec<AppName>,
}

impl DesiredRecord {
    /// Every field [`DesiredRecord::decode`] reads, for `HMGET` (the held
    /// signal, which may be large, is not among them).
    pub const FIELDS: &'static [&'static str] = &[
        "generation",
        "revision",
        "signalled_at",
        "digest",
        "config_digest",
        "parent",
        "wave",
        "files",
        "sync",
        "depends_on",
    ];

    /// `Ok(None)` when the hash does not exist (no field is present).
    pub fn decode(key: &str, hash: &dyn Fields) -> Result<Option<DesiredRecord>, RecordError> {
        if Self::FIELDS.iter().all(|f| hash.get(f).is_none()) {
            return Ok(None);
        }
        let field = Reader { key, hash };
        let app = match hash.get("digest") {
            None => None,
            Some(_) => Some(DesiredApp {
                digest: field.required("digest", digest)?,
                config_digest: field.required("config_digest", digest)?,
                parent: field
                    .optional("parent", |text| match text {
                        "" => Ok(None),
                        name => app_name(name).map(Some),
                    })?
                    .flatten(),
                wave: field.required("wave", number)?,
                files: field.optional("files", number)?.unwrap_or(0),
                sync: field.required("sync", |text| {
                    text.parse::<SyncMode>().map_err(|e| e.to_string())
                })?,
                depends_on: field.optional("depends_on", names)?.unwrap_or_default(),
            }),
        };
        Ok(Some(DesiredRecord {
            generation: field.required("generation", number)?,
            revision: field.required("revision", commit)?,
            signalled_at: field.required("signalled_at", number)?,
            app,
        }))
    }

    /// [`DesiredRecord::decode`] of the reply to `HMGET key` [`DesiredRecord::FIELDS`].
    pub fn from_fetched(
        key: &str,
        values: &[Option<String>],
    ) -> Result<Option<DesiredRecord>, RecordError> {
        let names = Self::FIELDS;
        Self::decode(key, &Fetched { names, values })
    }

    /// The digest an app in Git wants; `None` for a tombstone.
    pub fn digest(&self) -> Option<&str> {
        self.app.as_ref().map(|app| app.digest.as_str())
    }
}

/// The `:observed` hash: what a child reported with `canopy_report`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRecord {
    /// The generation of the signal the child applied.
    pub generation: u64,
    /// `sha256:<64 hex>`: what the child runs.
    pub digest: String,
    pub revision: String,
    pub status: ReportedState,
    pub message: String,
    pub reporter: String,
    /// Redis's clock when the report arrived (Unix ms).
    pub at: i64,
}

impl ObservedRecord {
    /// Every field [`ObservedRecord::decode`] reads, for `HMGET`.
    pub const FIELDS: &'static [&'static str] = &[
        "generation",
        "digest",
        "revision",
        "status",
        "message",
        "reporter",
        "at",
    ];

    /// `Ok(None)` when the hash does not exist (no field is present).
    pub fn decode(key: &str, hash: &dyn Fields) -> Result<Option<ObservedRecord>, RecordError> {
        if Self::FIELDS.iter().all(|f| hash.get(f).is_none()) {
            return Ok(None);
        }
        let field = Reader { key, hash };
        let text = |text: &str| Ok::<_, String>(text.to_owned());
        Ok(Some(ObservedRecord {
            generation: field.required("generation", number)?,
            digest: field.required("digest", digest)?,
            revision: field.optional("revision", text)?.unwrap_or_default(),
            status: field.required("status", |text| {
                text.parse::<ReportedState>().map_err(|e| e.to_string())
            })?,
            message: field.optional("message", text)?.unwrap_or_default(),
            reporter: field.optional("reporter", text)?.unwrap_or_default(),
            at: field.required("at", number)?,
        }))
    }

    /// [`ObservedRecord::decode`] of the reply to `HMGET key` [`ObservedRecord::FIELDS`].
    pub fn from_fetched(
        key: &str,
        values: &[Option<String>],
    ) -> Result<Option<ObservedRecord>, RecordError> {
        let names = Self::FIELDS;
        Self::decode(key, &Fetched { names, values })
    }
}

/// Only the `generation` of a `:desired` or `:observed` hash, parsed as the
/// record decoders and canopy.lua parse it, for a reader that needs no more:
/// what a write must expect even when the rest of `:desired` is unreadable, and
/// the report generation the next write must exceed. `None` when absent.
pub fn generation_of(key: &str, hash: &dyn Fields) -> Result<Option<u64>, RecordError> {
    Reader { key, hash }.optional("generation", number)
}

struct Reader<'a> {
    key: &'a str,
    hash: &'a dyn Fields,
}

impl Reader<'_> {
    fn error(&self, field: &'static str, problem: impl fmt::Display) -> RecordError {
        RecordError {
            key: self.key.to_owned(),
            field,
            problem: problem.to_string(),
        }
    }

    fn optional<T>(
        &self,
        field: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, RecordError> {
        self.hash
            .get(field)
            .map(|text| parse(text).map_err(|problem| self.error(field, problem)))
            .transpose()
    }

    fn required<T>(
        &self,
        field: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, RecordError> {
        self.optional(field, parse)?
            .ok_or_else(|| self.error(field, "is missing"))
    }
}

/// At most this much of a bad value goes into a message: values may come from
/// a child, and errors stay one line.
const SHOWN: usize = 40;

fn shown(text: &str) -> String {
    let clipped: String = text.chars().take(SHOWN).collect();
    format!("{clipped:?}")
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    // `parse` alone also takes a leading `+`.
    let plain = text.strip_prefix('-').unwrap_or(text);
    if plain.is_empty() || !plain.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{} is not a whole number", shown(text)));
    }
    text.parse()
        .map_err(|_| format!("{} is out of range", shown(text)))
}

/// `sha256:` and 64 lowercase hex digits, as canopy writes every digest.
fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

fn digest(text: &str) -> Result<String, String> {
    if is_digest(text) {
        Ok(text.to_owned())
    } else {
        Err(format!("{} is not sha256:<64 lowercase hex>", shown(text)))
    }
}

fn commit(text: &str) -> Result<String, String> {
    if super::is_commit_id(text) {
        Ok(text.to_owned())
    } else {
        Err(format!("{} is not a full commit id", shown(text)))
    }
}

fn app_name(text: &str) -> Result<AppName, String> {
    AppName::parse(text).map_err(|e| e.to_string())
}

fn names(text: &str) -> Result<Vec<AppName>, String> {
    text.split(',')
        .filter(|name| !name.is_empty())
        .map(app_name)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const KEY: &str = "canopy:t:app:{a}:desired";
    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const REV: &str = "0123456789abcdef0123456789abcdef01234567";

    fn hash(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn put() -> HashMap<String, String> {
        hash(&[
            ("generation", "7"),
            ("revision", REV),
            ("signalled_at", "1700000000000"),
            ("digest", D1),
            ("config_digest", D2),
            ("parent", "payments"),
            ("wave", "-1"),
            ("files", "3"),
            ("sync", "manual"),
            ("depends_on", "payments/db,search"),
            ("held_payload", "{}"),
        ])
    }

    #[test]
    fn a_desired_record_decodes_every_field() {
        let record = DesiredRecord::decode(KEY, &put()).unwrap().unwrap();
        assert_eq!(record.generation, 7);
        assert_eq!(record.revision, REV);
        assert_eq!(record.digest(), Some(D1));
        let app = record.app.unwrap();
        assert_eq!(app.parent.unwrap().as_str(), "payments");
        assert_eq!((app.wave, app.files, app.sync), (-1, 3, SyncMode::Manual));
        let deps: Vec<&str> = app.depends_on.iter().map(AppName::as_str).collect();
        assert_eq!(deps, ["payments/db", "search"]);
    }

    #[test]
    fn tombstones_and_absent_records() {
        let tombstone = hash(&[
            ("generation", "8"),
            ("revision", REV),
            ("removed_at", "1"),
            ("signalled_at", "1"),
        ]);
        let record = DesiredRecord::decode(KEY, &tombstone).unwrap().unwrap();
        assert_eq!((record.generation, record.app), (8, None));
        assert_eq!(DesiredRecord::decode(KEY, &HashMap::new()), Ok(None));
        let names = DesiredRecord::FIELDS;
        let values = vec![None; names.len()];
        let fetched = Fetched {
            names,
            values: &values,
        };
        assert_eq!(DesiredRecord::decode(KEY, &fetched), Ok(None));
    }

    #[test]
    fn hmget_replies_decode_like_hashes() {
        let full = put();
        let values: Vec<Option<String>> = DesiredRecord::FIELDS
            .iter()
            .map(|f| full.get(*f).cloned())
            .collect();
        let fetched = Fetched {
            names: DesiredRecord::FIELDS,
            values: &values,
        };
        assert_eq!(
            DesiredRecord::decode(KEY, &fetched),
            DesiredRecord::decode(KEY, &full)
        );
    }

    #[test]
    fn every_malformed_field_is_named() {
        let cases = [
            ("generation", "999999999999999999999", "out of range"),
            ("generation", "-1", "out of range"),
            ("generation", "+1", "not a whole number"),
            ("generation", "", "not a whole number"),
            ("revision", "main", "not a full commit id"),
            ("signalled_at", "soon", "not a whole number"),
            ("digest", "sha256:XYZ", "not sha256"),
            ("config_digest", "md5:0", "not sha256"),
            ("parent", "../etc", "app name \"../etc\""),
            ("wave", "1.5", "not a whole number"),
            ("files", "many", "not a whole number"),
            ("sync", "sometimes", "unknown sync mode"),
            ("depends_on", "a,B", "app name \"B\""),
        ];
        for (field, value, problem) in cases {
            let mut bad = put();
            bad.insert(field.to_owned(), value.to_owned());
            let error = DesiredRecord::decode(KEY, &bad).expect_err(field);
            assert_eq!((error.key.as_str(), error.field), (KEY, field));
            let text = error.to_string();
            assert!(
                text.starts_with(&format!("field {field} of {KEY}: ")) && text.contains(problem),
                "{field}={value:?}: {text}"
            );
        }
        for field in ["generation", "revision", "signalled_at", "config_digest"] {
            let mut missing = put();
            missing.remove(field);
            let error = DesiredRecord::decode(KEY, &missing).expect_err(field);
            assert!(error.to_string().ends_with("is missing"), "{error}");
        }
    }

    #[test]
    fn observed_records_are_strict_too() {
        let key = "canopy:t:app:{a}:observed";
        let good = hash(&[
            ("generation", "3"),
            ("digest", D1),
            ("revision", REV),
            ("status", "synced"),
            ("message", "ok"),
            ("reporter", "pod-1"),
            ("at", "1700000000000"),
        ]);
        let record = ObservedRecord::decode(key, &good).unwrap().unwrap();
        assert_eq!(
            (record.generation, record.status),
            (3, ReportedState::Synced)
        );
        assert_eq!(ObservedRecord::decode(key, &HashMap::new()), Ok(None));
        for (field, value) in [
            ("generation", "18446744073709551616"),
            ("digest", "x"),
            ("status", "fine"),
            ("at", "noon"),
        ] {
            let mut bad = good.clone();
            bad.insert(field.to_owned(), value.to_owned());
            let error = ObservedRecord::decode(key, &bad).expect_err(field);
            assert_eq!(error.field, field);
        }
    }
}
