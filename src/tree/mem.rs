//! A tree held in memory, with Git blob ids: for tests and benchmarks of
//! everything above the tree (layout, digests, incremental updates) without Git.

use std::collections::BTreeMap;

use super::{BlobId, Change, Entry, EntryKind, Error, Listing, ReadError, Reader, Tree, symlink};

#[derive(Debug, Clone, Default)]
pub struct MemTree {
    files: BTreeMap<String, (EntryKind, Vec<u8>)>,
}

impl MemTree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a file.
    pub fn put(&mut self, path: &str, kind: EntryKind, content: &[u8]) {
        self.files.insert(path.to_owned(), (kind, content.to_vec()));
    }

    pub fn remove(&mut self, path: &str) {
        self.files.remove(path);
    }

    /// The changes from `self` to `newer`, as a Git tree diff reports them: each
    /// differing path once, in path order.
    pub fn diff(&self, newer: &MemTree) -> Vec<Change> {
        let paths: std::collections::BTreeSet<&String> =
            self.files.keys().chain(newer.files.keys()).collect();
        paths
            .into_iter()
            .filter(|p| self.files.get(*p) != newer.files.get(*p))
            .map(|p| match newer.entry(p) {
                Some(entry) => Change::Upsert(entry),
                None => Change::Remove(p.clone()),
            })
            .collect()
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    fn entry(&self, path: &str) -> Option<Entry> {
        let (kind, content) = self.files.get(path)?;
        Some(Entry {
            path: path.into(),
            kind: *kind,
            blob: Some(blob_id(content)),
        })
    }
}

/// The id Git gives a blob with this content.
pub fn blob_id(content: &[u8]) -> BlobId {
    gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::object::Kind::Blob, content)
        .expect("sha1 of an in-memory buffer cannot fail")
}

impl Tree for MemTree {
    fn describe(&self) -> String {
        "in-memory tree".to_owned()
    }

    fn revision(&self) -> Option<String> {
        None
    }

    fn list(&self, max_entries: usize) -> Result<Listing, Error> {
        if self.files.len() > max_entries {
            return Err(Error::TooManyEntries {
                what: self.describe(),
                max: max_entries,
            });
        }
        Ok(Listing {
            entries: self.files.keys().filter_map(|p| self.entry(p)).collect(),
            unusable: Vec::new(),
        })
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>, Error> {
        Ok(Box::new(MemReader { tree: self }))
    }
}

struct MemReader<'a> {
    tree: &'a MemTree,
}

impl Reader for MemReader<'_> {
    fn read(&mut self, entry: &Entry, max_bytes: u64, buf: &mut Vec<u8>) -> Result<(), ReadError> {
        let (kind, content) = self
            .tree
            .files
            .get(&*entry.path)
            .ok_or_else(|| ReadError::Io(std::io::Error::from(std::io::ErrorKind::NotFound)))?;
        if content.len() as u64 > max_bytes {
            return Err(ReadError::TooLarge {
                size: content.len() as u64,
                max: max_bytes,
            });
        }
        if *kind == EntryKind::Symlink {
            symlink::resolve(&entry.path, content, symlink::Bounds::TREE)?;
        }
        buf.clear();
        buf.extend_from_slice(content);
        Ok(())
    }
}
