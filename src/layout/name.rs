//! App names. Names are embedded in Redis key and ACL patterns, which are globs, so
//! the rules here are an allow-list and a security boundary: a name that passes
//! contains no glob, separator or escape character and cannot climb directories.

use std::fmt;

/// The root app's name.
pub const ROOT: &str = ".";

const MAX_SEGMENTS: usize = 8;
const MAX_BYTES: usize = 255;
const MAX_SEGMENT_BYTES: usize = 63;

/// A validated app name: `.` for the root, else its `/`-separated directory path
/// relative to the root app's directory.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct AppName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("app name is empty")]
    Empty,
    #[error("app name {name:?} is {len} bytes, over the limit of {MAX_BYTES}")]
    TooLong { name: String, len: usize },
    #[error("app name {name:?} has {count} segments, over the limit of {MAX_SEGMENTS}")]
    TooManySegments { name: String, count: usize },
    #[error(
        "app name {name:?}: segment {segment:?} must be 1-63 characters of a-z, 0-9, '.', '_', '-', \
         starting with a letter or digit, and must not contain '..'"
    )]
    BadSegment { name: String, segment: String },
}

/// Lookups by `&str` in maps keyed by names: equality, order and hash are the
/// string's.
impl std::borrow::Borrow<str> for AppName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AppName {
    pub fn root() -> Self {
        AppName(ROOT.to_owned())
    }

    pub fn parse(name: &str) -> Result<Self, NameError> {
        if name == ROOT {
            return Ok(Self::root());
        }
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_BYTES {
            return Err(NameError::TooLong {
                name: truncate_for_display(name),
                len: name.len(),
            });
        }
        let count = name.split('/').count();
        if count > MAX_SEGMENTS {
            return Err(NameError::TooManySegments {
                name: name.to_owned(),
                count,
            });
        }
        if let Some(segment) = name.split('/').find(|s| !valid_segment(s)) {
            return Err(NameError::BadSegment {
                name: name.to_owned(),
                segment: segment.to_owned(),
            });
        }
        Ok(AppName(name.to_owned()))
    }

    /// The name of the app whose directory is `dir`, relative to the root app's
    /// directory (`""` is the root).
    pub fn from_dir(dir: &str) -> Result<Self, NameError> {
        if dir.is_empty() {
            Ok(Self::root())
        } else {
            Self::parse(dir)
        }
    }

    pub fn is_root(&self) -> bool {
        self.0 == ROOT
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The directory relative to the root app's directory: `""` for the root.
    pub fn dir(&self) -> &str {
        if self.is_root() { "" } else { &self.0 }
    }
}

fn valid_segment(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b);
    !bytes.is_empty()
        && bytes.len() <= MAX_SEGMENT_BYTES
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(allowed)
        && !segment.contains("..")
}

fn truncate_for_display(name: &str) -> String {
    let mut end = 40.min(name.len());
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &name[..end])
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<'de> serde::Deserialize<'de> for AppName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        AppName::parse(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in [
            ".",
            "payments",
            "payments/api",
            "a",
            "0",
            "x.y_z-1",
            "a/b/c/d/e/f/g/h",
        ] {
            assert!(AppName::parse(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_hostile_names() {
        let long = "a".repeat(300);
        let deep = "a/".repeat(8) + "a";
        for name in [
            "",
            "a*",
            "x[1]",
            "../x",
            "x/..",
            "a..b",
            "Foo",
            "foo:bar",
            "a b",
            "a\\b",
            "a?",
            "a{b}",
            "é",
            "/a",
            "a/",
            "a//b",
            ".a",
            "-a",
            "_a",
            "./a",
            long.as_str(),
            deep.as_str(),
            "a\nb",
            "a\0",
        ] {
            assert!(AppName::parse(name).is_err(), "{name:?} should be rejected");
        }
        let seg64 = "a".repeat(64);
        assert!(AppName::parse(&seg64).is_err());
        assert!(AppName::parse(&seg64[1..]).is_ok());
    }

    #[test]
    fn errors_name_the_input() {
        let err = AppName::parse("payments/Api").unwrap_err().to_string();
        assert!(
            err.contains("\"payments/Api\"") && err.contains("\"Api\""),
            "{err}"
        );
    }

    proptest! {
        /// Whatever the input, an accepted name holds no character that means
        /// something in a Redis glob or key pattern, and cannot climb a directory.
        #[test]
        fn accepted_names_are_glob_safe(name in "\\PC{0,80}|[a-zA-Z0-9._/*?:\\[\\]\\\\ -]{0,80}") {
            if let Ok(parsed) = AppName::parse(&name) {
                let s = parsed.as_str();
                prop_assert!(s.len() <= MAX_BYTES);
                prop_assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)));
                prop_assert!(!s.contains("..") && !s.starts_with('/') && !s.ends_with('/') && !s.contains("//"));
                prop_assert!(s.split('/').count() <= MAX_SEGMENTS);
            }
        }

        #[test]
        fn generated_valid_names_are_accepted(
            segments in proptest::collection::vec("[a-z0-9][a-z0-9_-]{0,20}", 1..=8)
        ) {
            let name = segments.join("/");
            prop_assert_eq!(AppName::parse(&name).map(|n| n.as_str().to_owned()), Ok(name));
        }
    }
}
