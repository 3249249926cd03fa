//! The manifest text: byte for byte what GNU `sha256sum` prints.

use std::fmt;
use std::sync::Arc;

use crate::tree::FileHash;

/// One manifest line: a path relative to the app directory and its content hash.
/// The path is kept as the file's tree path, shared with its entry, and the
/// length of the app directory's prefix: a snapshot holds no second copy of its
/// 60,000 paths (at 10,000 apps).
#[derive(Clone)]
pub struct ManifestLine {
    tree_path: Arc<str>,
    skip: usize,
    pub hash: FileHash,
}

impl ManifestLine {
    pub fn new(path: impl Into<Arc<str>>, hash: FileHash) -> Self {
        ManifestLine::in_dir(path.into(), 0, hash)
    }

    /// The line of a file at `tree_path`, whose first `skip` bytes are the app
    /// directory and its `/`.
    pub fn in_dir(tree_path: Arc<str>, skip: usize, hash: FileHash) -> Self {
        assert!(
            tree_path.is_char_boundary(skip),
            "{skip} is not a prefix length of {tree_path:?}"
        );
        ManifestLine {
            tree_path,
            skip,
            hash,
        }
    }

    /// The path relative to the app directory.
    pub fn path(&self) -> &str {
        &self.tree_path[self.skip..]
    }
}

/// Lines are equal when they print the same: path and hash.
impl PartialEq for ManifestLine {
    fn eq(&self, other: &Self) -> bool {
        self.path() == other.path() && self.hash == other.hash
    }
}

impl Eq for ManifestLine {}

impl fmt::Debug for ManifestLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManifestLine")
            .field("path", &self.path())
            .field("hash", &self.hash)
            .finish()
    }
}

/// `<hex>  <path>\n` per file. Like coreutils (9.x), a path containing `\`, a
/// newline or a carriage return is escaped and its line starts with `\`.
pub fn manifest_text(files: &[ManifestLine]) -> Vec<u8> {
    let mut out = Vec::with_capacity(files.len() * 96);
    for line in files {
        let needs_escape = line
            .path()
            .bytes()
            .any(|b| matches!(b, b'\\' | b'\n' | b'\r'));
        if needs_escape {
            out.push(b'\\');
        }
        let mut hex = [0u8; 64];
        hex::encode_to_slice(line.hash.sha256, &mut hex).expect("64 hex digits for 32 bytes");
        out.extend_from_slice(&hex);
        out.extend_from_slice(b"  ");
        if needs_escape {
            for b in line.path().bytes() {
                match b {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    other => out.push(other),
                }
            }
        } else {
            out.extend_from_slice(line.path().as_bytes());
        }
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_match_sha256sum_format() {
        let files = vec![
            ManifestLine::new("a.yaml", FileHash::of(b"x")),
            ManifestLine::in_dir("app/dir/b\\c".into(), 4, FileHash::of(b"y")),
        ];
        let text = String::from_utf8(manifest_text(&files)).unwrap();
        assert_eq!(
            text,
            "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881  a.yaml\n\
             \\a1fce4363854ff888cff4b8e7875d600c2682390412a8cf79b37d0b11148b0fa  dir/b\\\\c\n"
        );
    }
}
