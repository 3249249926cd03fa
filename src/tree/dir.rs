//! A tree read from a plain directory on disk, as it is now (uncommitted changes
//! included). Symlinks are listed, never followed, including while walking.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{
    Entry, EntryKind, Error, Listing, ReadError, Reader, Tree, Unusable, UnusableReason, symlink,
};

#[derive(Debug, Clone)]
pub struct DirTree {
    root: PathBuf,
}

impl DirTree {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirTree { root: root.into() }
    }

    fn walk(&self, dir: &Path, rel: &str, max: usize, out: &mut Listing) -> Result<(), Error> {
        let io = |source| Error::Io {
            path: dir.to_path_buf(),
            source,
        };
        for item in fs::read_dir(dir).map_err(io)? {
            let item = item.map_err(io)?;
            let name = item.file_name();
            if name.as_bytes() == b".git" {
                continue;
            }
            out.check_room(max, || self.describe())?;
            let Ok(name) = name.into_string() else {
                out.unusable.push(Unusable {
                    path: join(rel, &String::from_utf8_lossy(item.file_name().as_bytes())),
                    reason: UnusableReason::NotUtf8,
                });
                continue;
            };
            let path = join(rel, &name);
            // `DirEntry::file_type` does not follow symlinks.
            let file_type = item.file_type().map_err(io)?;
            let kind = if file_type.is_dir() {
                self.walk(&item.path(), &path, max, out)?;
                continue;
            } else if file_type.is_symlink() {
                EntryKind::Symlink
            } else if file_type.is_file() {
                let mode = item.metadata().map_err(io)?.permissions().mode();
                if mode & 0o111 != 0 {
                    EntryKind::Executable
                } else {
                    EntryKind::File
                }
            } else {
                out.unusable.push(Unusable {
                    path,
                    reason: UnusableReason::SpecialFile,
                });
                continue;
            };
            out.entries.push(Entry {
                path: path.into(),
                kind,
                blob: None,
            });
        }
        Ok(())
    }
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_owned()
    } else {
        format!("{rel}/{name}")
    }
}

impl Tree for DirTree {
    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }

    fn revision(&self) -> Option<String> {
        None
    }

    fn list(&self, max_entries: usize) -> Result<Listing, Error> {
        let mut listing = Listing::default();
        self.walk(&self.root, "", max_entries, &mut listing)?;
        listing.entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        Ok(listing)
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>, Error> {
        Ok(Box::new(DirReader { root: &self.root }))
    }
}

struct DirReader<'a> {
    root: &'a Path,
}

impl Reader for DirReader<'_> {
    fn read(&mut self, entry: &Entry, max_bytes: u64, buf: &mut Vec<u8>) -> Result<(), ReadError> {
        buf.clear();
        let path = self.root.join(&*entry.path);
        if entry.kind == EntryKind::Symlink {
            let target = fs::read_link(&path).map_err(ReadError::Io)?;
            let target = target.as_os_str().as_bytes();
            symlink::resolve(&entry.path, target, symlink::Bounds::TREE)?;
            buf.extend_from_slice(target);
            return Ok(());
        }
        // O_NOFOLLOW: if the file was swapped for a symlink since it was listed, the
        // open fails instead of reading whatever the link points at.
        let mut file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(ReadError::Io)?;
        let meta = file.metadata().map_err(ReadError::Io)?;
        if !meta.is_file() {
            return Err(ReadError::Io(std::io::Error::other("not a regular file")));
        }
        if meta.len() > max_bytes {
            return Err(ReadError::TooLarge {
                size: meta.len(),
                max: max_bytes,
            });
        }
        // The file may grow after the size check: read at most one byte past the cap.
        (&mut file)
            .take(max_bytes + 1)
            .read_to_end(buf)
            .map_err(ReadError::Io)?;
        if buf.len() as u64 > max_bytes {
            return Err(ReadError::TooLarge {
                size: buf.len() as u64,
                max: max_bytes,
            });
        }
        Ok(())
    }
}
