//! The deterministic tar writer: the same entries, appended in the same order,
//! always give the same bytes. GNU format (long paths and link targets get GNU's
//! extension records), no directory entries, mtime 0, uid and gid 0, no user or
//! group names; regular files 0644 (0755 if executable), symlinks as symlink
//! entries holding their target text byte for byte.
//!
//! It writes what it is given: which files, in which order, and checking their
//! content is the caller's.

use std::io::Read as _;

use crate::tree::EntryKind;

/// GNU tar's name for the record that carries a link target too long for the
/// header (what GNU tar and the `tar` crate write; every common reader knows it).
const GNU_LONG_LINK: &[u8] = b"././@LongLink";

/// An uncompressed tar, built in memory.
pub(super) struct Tarball {
    builder: tar::Builder<Vec<u8>>,
}

impl Tarball {
    pub(super) fn new() -> Tarball {
        Tarball {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    /// Appends one file, or one symlink whose target text is `bytes`. The path
    /// must be [`clean_path`]: the `tar` crate would drop `.` components and
    /// refuse `..`, so the tar would not hold the path as given.
    pub(super) fn append(
        &mut self,
        path: &str,
        kind: EntryKind,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        let builder = &mut self.builder;
        if kind != EntryKind::Symlink {
            let mut header = header(kind, bytes.len() as u64);
            return builder.append_data(&mut header, path, bytes);
        }
        // The target is written byte for byte: the crate's `set_link_name` goes
        // through `Path` and would normalise `a//b` or `a/./b`, changing the bytes
        // the digest covers.
        let mut header = header(kind, 0);
        let slot = &mut header.as_old_mut().linkname;
        if bytes.len() <= slot.len() {
            slot[..bytes.len()].copy_from_slice(bytes);
        } else {
            let mut long = self::header(EntryKind::File, bytes.len() as u64 + 1);
            long.set_entry_type(tar::EntryType::GNULongLink);
            long.as_old_mut().name[..GNU_LONG_LINK.len()].copy_from_slice(GNU_LONG_LINK);
            long.set_cksum();
            builder.append(&long, bytes.chain(&[0u8][..]))?;
            let len = slot.len();
            slot.copy_from_slice(&bytes[..len]);
        }
        builder.append_data(&mut header, path, std::io::empty())
    }

    /// The tar's bytes, end-of-archive records included.
    pub(super) fn finish(self) -> std::io::Result<Vec<u8>> {
        self.builder.into_inner()
    }
}

/// Whether a tar can hold `path` unchanged: no empty, `.` or `..` component.
pub(super) fn clean_path(path: &str) -> bool {
    path.split('/').all(|c| !matches!(c, "" | "." | ".."))
}

/// A header with everything fixed but the kind and size.
fn header(kind: EntryKind, size: u64) -> tar::Header {
    let (entry_type, mode) = match kind {
        EntryKind::File => (tar::EntryType::Regular, 0o644),
        EntryKind::Executable => (tar::EntryType::Regular, 0o755),
        EntryKind::Symlink => (tar::EntryType::Symlink, 0o777),
    };
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size);
    header
}
