//! Content hashes of entries, cached by Git blob id so that an unchanged blob is
//! never hashed twice (a poll re-hashes only what a commit changed).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use super::symlink::resolve;
use super::{BlobId, Entry, EntryKind, ReadError, Reader};

/// The sha256 and size of one entry's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHash {
    pub sha256: [u8; 32],
    pub size: u64,
}

impl FileHash {
    pub fn of(bytes: &[u8]) -> Self {
        FileHash {
            sha256: Sha256::digest(bytes).into(),
            size: bytes.len() as u64,
        }
    }

    pub fn hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// Blob id -> content hash, shared by the threads of a scan and kept across polls.
#[derive(Debug, Default)]
pub struct BlobCache {
    /// Keyed by Git's own hasher for object ids (their first bytes): ids are
    /// already uniformly random, so SipHash would only cost time.
    map: Mutex<gix::hashtable::HashMap<BlobId, FileHash>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl BlobCache {
    pub fn get(&self, id: &BlobId) -> Option<FileHash> {
        let found = self.lock().get(id).copied();
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn insert(&self, id: BlobId, hash: FileHash) {
        self.lock().insert(id, hash);
    }

    /// Keeps only the hashes of blobs for which `keep` is true.
    pub fn retain(&self, keep: impl Fn(&BlobId) -> bool) {
        self.lock().retain(|id, _| keep(id));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lookups answered from the cache, and lookups that had to read the blob.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, gix::hashtable::HashMap<BlobId, FileHash>> {
        // A panic while holding the lock cannot leave the map half-updated (single
        // insert), so a poisoned lock is still a consistent map.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Hashes one entry: from the cache when its blob id is known, else by reading it.
/// Symlinks bypass the cache because whether a target is acceptable depends on
/// where the link is and on which other paths are links, not only on its text;
/// `is_symlink` answers the latter (see [`super::symlink::resolve`]).
pub fn hash_entry(
    reader: &mut dyn Reader,
    entry: &Entry,
    cache: &BlobCache,
    max_bytes: u64,
    is_symlink: &dyn Fn(&str) -> bool,
    buf: &mut Vec<u8>,
) -> Result<FileHash, ReadError> {
    let cacheable = entry.kind != EntryKind::Symlink;
    if let (true, Some(id)) = (cacheable, entry.blob)
        && let Some(hash) = cache.get(&id)
    {
        if hash.size > max_bytes {
            return Err(ReadError::TooLarge {
                size: hash.size,
                max: max_bytes,
            });
        }
        return Ok(hash);
    }
    reader.read(entry, max_bytes, buf)?;
    if !cacheable {
        resolve(&entry.path, buf, is_symlink)?;
    }
    let hash = FileHash::of(buf);
    if let (true, Some(id)) = (cacheable, entry.blob) {
        cache.insert(id, hash);
    }
    Ok(hash)
}
