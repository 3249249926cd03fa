//! Content hashes of entries, cached by Git blob id so that an unchanged blob is
//! never hashed twice (a poll re-hashes only what a commit changed).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use gix::hashtable::hash_table::{self, HashTable};
use sha2::{Digest as _, Sha256};

use super::symlink::{Bounds, resolve};
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
    slots: Mutex<Slots>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The hashes in a vector and a table of indices into it. A `HashMap` keeps its
/// 64-byte pairs in a table at most 7/8 full after doubling (8.5 MB for the
/// 60,000 files of 10,000 apps, and both tables at once while it grows); here
/// the sparse table holds 4-byte indices, and only the vector holds pairs.
#[derive(Debug, Default)]
struct Slots {
    table: HashTable<u32>,
    hashes: Vec<(BlobId, FileHash)>,
}

/// Blob ids are already uniformly random: their first bytes are the hash.
fn table_hash(id: &BlobId) -> u64 {
    let bytes = id.as_slice();
    u64::from_ne_bytes(
        bytes[..8]
            .try_into()
            .expect("object ids have 20 or 32 bytes"),
    )
}

impl Slots {
    fn find(&self, id: &BlobId) -> Option<&FileHash> {
        let at = self
            .table
            .find(table_hash(id), |&i| self.hashes[i as usize].0 == *id)?;
        Some(&self.hashes[*at as usize].1)
    }

    fn insert(&mut self, id: BlobId, hash: FileHash) {
        let Slots { table, hashes } = self;
        match table.entry(
            table_hash(&id),
            |&i| hashes[i as usize].0 == id,
            |&i| table_hash(&hashes[i as usize].0),
        ) {
            hash_table::Entry::Occupied(at) => hashes[*at.get() as usize].1 = hash,
            hash_table::Entry::Vacant(slot) => {
                let index = u32::try_from(hashes.len()).expect("fewer than 2^32 blobs");
                hashes.push((id, hash));
                slot.insert(index);
            }
        }
    }

    fn retain(&mut self, keep: impl Fn(&BlobId) -> bool) {
        self.hashes.retain(|(id, _)| keep(id));
        self.hashes.shrink_to_fit();
        self.table = HashTable::with_capacity(self.hashes.len());
        for (i, (id, _)) in self.hashes.iter().enumerate() {
            let hashes = &self.hashes;
            self.table.insert_unique(table_hash(id), i as u32, |&j| {
                table_hash(&hashes[j as usize].0)
            });
        }
    }
}

impl BlobCache {
    pub fn get(&self, id: &BlobId) -> Option<FileHash> {
        let found = self.lock().find(id).copied();
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
        self.lock().retain(keep);
    }

    pub fn len(&self) -> usize {
        self.lock().hashes.len()
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        // A panic while holding the lock cannot leave the slots half-updated (the
        // vector is pushed before the table names the new index), so a poisoned
        // lock still guards consistent slots.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Hashes one entry: from the cache when its blob id is known, else by reading it.
/// Symlinks bypass the cache because whether a target is acceptable depends on
/// where the link is, which app owns it and which other paths are links or
/// nested apps, not only on its text; `bounds` says (see
/// [`super::symlink::resolve`]). Other entries never look at `bounds`.
pub fn hash_entry(
    reader: &mut dyn Reader,
    entry: &Entry,
    cache: &BlobCache,
    max_bytes: u64,
    bounds: Bounds<'_>,
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
        resolve(&entry.path, buf, bounds)?;
    }
    let hash = FileHash::of(buf);
    if let (true, Some(id)) = (cacheable, entry.blob) {
        cache.insert(id, hash);
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> BlobId {
        // Ids that share their first 8 bytes collide in the table: lookups must
        // still compare whole ids.
        let mut bytes = [0u8; 20];
        bytes[8..12].copy_from_slice(&n.to_be_bytes());
        bytes[0] = (n % 3) as u8;
        BlobId::from_bytes_or_panic(&bytes)
    }

    #[test]
    fn finds_each_hash_by_its_whole_id_and_survives_a_retain() {
        let cache = BlobCache::default();
        for n in 0..5000 {
            cache.insert(id(n), FileHash::of(&n.to_le_bytes()));
        }
        cache.insert(id(7), FileHash::of(b"again"));
        assert_eq!(cache.len(), 5000);
        assert_eq!(cache.get(&id(7)), Some(FileHash::of(b"again")));
        assert_eq!(
            cache.get(&id(4999)),
            Some(FileHash::of(&4999u32.to_le_bytes()))
        );
        assert_eq!(cache.get(&id(5000)), None);

        let even: std::collections::HashSet<BlobId> = (0..5000).step_by(2).map(id).collect();
        cache.retain(|blob| even.contains(blob));
        assert_eq!(cache.len(), 2500);
        for n in 0..5000u32 {
            let want = (n % 2 == 0).then(|| FileHash::of(&n.to_le_bytes()));
            let want = if n == 7 { None } else { want };
            assert_eq!(cache.get(&id(n)), want, "blob {n}");
        }
        cache.insert(id(1), FileHash::of(b"back"));
        assert_eq!(cache.get(&id(1)), Some(FileHash::of(b"back")));
        assert_eq!(cache.stats().0 + cache.stats().1, 5004);
    }
}
