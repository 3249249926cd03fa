//! The manifest text: byte for byte what GNU `sha256sum` prints.

use crate::tree::FileHash;

/// One manifest line: a path relative to the app directory and its content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestLine {
    pub path: String,
    pub hash: FileHash,
}

/// `<hex>  <path>\n` per file. Like coreutils (9.x), a path containing `\`, a
/// newline or a carriage return is escaped and its line starts with `\`.
pub fn manifest_text(files: &[ManifestLine]) -> Vec<u8> {
    let mut out = Vec::with_capacity(files.len() * 96);
    for line in files {
        let needs_escape = line
            .path
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
            for b in line.path.bytes() {
                match b {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    other => out.push(other),
                }
            }
        } else {
            out.extend_from_slice(line.path.as_bytes());
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
            ManifestLine {
                path: "a.yaml".into(),
                hash: FileHash::of(b"x"),
            },
            ManifestLine {
                path: "dir/b\\c".into(),
                hash: FileHash::of(b"y"),
            },
        ];
        let text = String::from_utf8(manifest_text(&files)).unwrap();
        assert_eq!(
            text,
            "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881  a.yaml\n\
             \\a1fce4363854ff888cff4b8e7875d600c2682390412a8cf79b37d0b11148b0fa  dir/b\\\\c\n"
        );
    }
}
