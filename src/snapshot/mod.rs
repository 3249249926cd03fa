//! The last committed [`Scan`], kept in the state dir so that a new process (a
//! `canopy run --once` from cron, a restarted daemon) moves the desired state to
//! the next commit incrementally, as a running daemon does, instead of scanning
//! the whole repository.
//!
//! The snapshot is a cache, never a source of truth. It is used only when it was
//! made for the commit and layout options that the store's `meta` names (so the
//! store holds exactly its desired state) and its checksums hold; anything else
//! means a full scan, as if there were none.
//!
//! It is a directory. Each app is one self-contained record (spec, files,
//! digest); records are grouped into shards by a hash of the app's name, one
//! file per shard, named by its content. The `head` file holds the stamp, the
//! snapshot's small parts and the list of shard files. So a commit that only
//! modifies a few files reads the shards of the apps owning them
//! ([`Saved::part`]) and writes back those shards and the head
//! ([`Saved::save_moved`]): a few kilobytes, whatever the repository's size.
//!
//! `head`: magic, version, stamp (commit, layout); source, revision, unusable
//! paths, rejected directories, tree problems; the entries no app owns; the
//! shard files (name, CRC-32); a CRC-32 of all of it. Shards: see [`shard`].

mod codec;
mod records;
mod shard;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

pub use codec::Corrupt;
use codec::{Decoder, Encoder};
use records::{get_entry, get_problem, put_entry, put_problem};
use sha2::{Digest as _, Sha256};
use shard::{Record, Shard};

use crate::layout::paths::{ancestors, root_relative, split_last};
use crate::layout::{AppName, AppTree};
use crate::scan::Scan;
use crate::tree::{Change, Entry, EntryKind, Unusable, UnusableReason};

const MAGIC: &[u8; 8] = b"canopy\0s";
/// Bumped whenever the encoding changes; an older snapshot is then ignored.
const FORMAT: u32 = 1;
const HEAD: &str = "head";
const SHARD_EXTENSION: &str = "shard";

/// Which desired state a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The commit id (hex).
    pub commit: String,
    /// The fingerprint of canopy's version and layout options (`meta.layout`).
    pub layout: String,
}

/// Why no snapshot was loaded. Every case means a full scan instead.
#[derive(Debug, thiserror::Error)]
pub enum Miss {
    #[error("no snapshot")]
    Missing,
    #[error("the snapshot is of commit {commit}, not of the stored one")]
    Other { commit: String },
    #[error("the snapshot is unreadable")]
    Io(#[from] std::io::Error),
    #[error("the snapshot is corrupt")]
    Corrupt(#[from] Corrupt),
}

/// Writes `scan` into the snapshot directory `dir` as the desired state `stamp`
/// names. Shards whose content is already there are not written again.
pub fn save(dir: &Path, stamp: &Stamp, scan: &Scan) -> std::io::Result<()> {
    let owned: HashSet<&str> = scan
        .apps
        .apps
        .values()
        .flat_map(|a| a.files.iter().map(|f| &*f.path))
        .collect();
    let others: Vec<&Entry> = scan
        .entries
        .values()
        .filter(|e| !owned.contains(&*e.path))
        .collect();
    let count = shard::count_for(scan.apps.apps.len());
    let mut groups: Vec<Vec<(&str, Record)>> = (0..count).map(|_| Vec::new()).collect();
    for app in scan.apps.apps.values() {
        let name = app.name.as_str();
        let record = Record::App(app, scan.digests.get(&app.name));
        groups[shard::of(name, count)].push((name, record));
    }
    let shards = groups
        .into_iter()
        .map(|group| shard::encode(group.into_iter()).map(Some))
        .collect::<Result<Vec<_>, _>>()
        .map_err(std::io::Error::other)?;
    write_snapshot(dir, stamp, scan, &others, shards, &[])
}

/// Reads and decodes the whole snapshot in `dir`, if it holds `stamp`.
pub fn load(dir: &Path, stamp: &Stamp) -> Result<Scan, Miss> {
    Saved::read(dir, stamp)?.merged(None)
}

/// A snapshot whose head is read and checked: [`Saved::merged`] decodes all of
/// it, [`Saved::part`] only the apps that a change touches.
pub struct Saved {
    dir: PathBuf,
    /// The small parts; no entries, apps or digests.
    head: Scan,
    /// The entries that no app owns.
    others: Vec<Entry>,
    /// File name and CRC-32 of each shard.
    shards: Vec<(String, u32)>,
    loaded: BTreeMap<usize, Shard>,
}

impl Saved {
    /// Reads the head of the snapshot in `dir`, if it holds `stamp`.
    pub fn read(dir: &Path, stamp: &Stamp) -> Result<Saved, Miss> {
        let bytes = match std::fs::read(dir.join(HEAD)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Missing),
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Err(Miss::Missing),
            other => other?,
        };
        let (head, others, shards) = parse_head(&bytes, stamp)?;
        Ok(Saved {
            dir: dir.to_path_buf(),
            head,
            others,
            shards,
            loaded: BTreeMap::new(),
        })
    }

    /// Every app, decoded; with `part` (made by [`Saved::part`] and moved
    /// since), its apps and entries replace the saved ones.
    pub fn merged(&mut self, part: Option<&Scan>) -> Result<Scan, Miss> {
        let mut scan = part.unwrap_or(&self.head).clone();
        scan.entries = self
            .others_moved(part)
            .into_iter()
            .map(|e| (e.path.clone(), e))
            .collect();
        for k in 0..self.shards.len() {
            let shard = self.shard(k)?;
            for i in 0..shard.len() {
                if part.is_some_and(|p| p.apps.apps.contains_key(shard.name(i))) {
                    continue;
                }
                let (app, digest) = shard.app(i)?;
                if let Some(digest) = digest {
                    scan.digests.insert(app.name.clone(), digest);
                }
                scan.apps.apps.insert(app.name.clone(), app);
            }
        }
        for app in scan.apps.apps.values() {
            for file in &app.files {
                scan.entries.insert(file.path.clone(), file.clone());
            }
        }
        Ok(scan)
    }

    /// The part of the snapshot that `changes` touch, if they only modify the
    /// content of existing paths (no path added or removed, none changing
    /// between file and symlink) and the apps owning them hold no symlink
    /// (whose check reads other apps' entries). It holds those paths' entries,
    /// their owners and their owners' ancestors, with every rejected directory:
    /// what [`Scan::update_in_place`] reads for such changes. `None`: the changes
    /// need the whole snapshot. `root` is the root app's directory.
    pub fn part(&mut self, root: &str, changes: &[Change]) -> Result<Option<Scan>, Miss> {
        let mut part = self.head.clone();
        for change in changes {
            let Change::Upsert(new) = change else {
                return Ok(None);
            };
            let mut old = None;
            if let Some(owner) = self.owner(root, &new.path)? {
                self.load_chain(&owner, &mut part)?;
                let app = &part.apps.apps[&owner];
                if app.files.iter().any(|f| f.kind == EntryKind::Symlink) {
                    return Ok(None);
                }
                old = app
                    .files
                    .binary_search_by(|f| f.path.cmp(&new.path))
                    .ok()
                    .map(|at| app.files[at].clone());
            }
            let old = old.or_else(|| self.others.iter().find(|e| e.path == new.path).cloned());
            match old {
                Some(old) if old.kind == new.kind => {
                    part.entries.insert(old.path.clone(), old);
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(part))
    }

    /// Writes `part` (made by [`Saved::part`] and moved since) into this
    /// snapshot's directory as the desired state `stamp` names: the shards of
    /// its apps and the head are written again, every other shard stays.
    pub fn save_moved(&mut self, stamp: &Stamp, part: &Scan) -> std::io::Result<()> {
        let touched: BTreeSet<usize> = part
            .apps
            .apps
            .keys()
            .map(|name| shard::of(name.as_str(), self.shards.len()))
            .collect();
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; self.shards.len()];
        let mut found = 0;
        for k in touched {
            let shard = self.shard(k).map_err(std::io::Error::other)?;
            let records = (0..shard.len()).map(|i| {
                let name = shard.name(i);
                match part.apps.apps.get(name) {
                    Some(app) => {
                        found += 1;
                        (name, Record::App(app, part.digests.get(&app.name)))
                    }
                    None => (name, Record::Raw(shard.raw(i))),
                }
            });
            shards[k] = Some(shard::encode(records).map_err(std::io::Error::other)?);
        }
        if found != part.apps.apps.len() {
            return Err(std::io::Error::other(
                "the part holds apps the snapshot does not",
            ));
        }
        let others = self.others_moved(Some(part));
        let others: Vec<&Entry> = others.iter().collect();
        write_snapshot(&self.dir, stamp, part, &others, shards, &self.shards)
    }

    /// The entries no app owns, with `part`'s changes.
    fn others_moved(&self, part: Option<&Scan>) -> Vec<Entry> {
        let mut others = self.others.clone();
        if let Some(part) = part {
            for entry in &mut others {
                if let Some(new) = part.entries.get(&entry.path) {
                    *entry = new.clone();
                }
            }
        }
        others
    }

    /// The app owning `path`: the nearest enclosing app directory, unless a
    /// rejected directory is nearer (its files belong to no app).
    fn owner(&mut self, root: &str, path: &str) -> Result<Option<AppName>, Miss> {
        let Some(relative) = root_relative(root, path) else {
            return Ok(None);
        };
        for dir in ancestors(split_last(relative).0) {
            if self.head.apps.rejected.contains(dir) {
                return Ok(None);
            }
            let name = if dir.is_empty() {
                crate::layout::ROOT
            } else {
                dir
            };
            if self.find(name)?.is_some() {
                return Ok(Some(records::name(name)?));
            }
        }
        Ok(None)
    }

    /// Decodes `name` and its ancestors into `part`.
    fn load_chain(&mut self, name: &AppName, part: &mut Scan) -> Result<(), Miss> {
        let mut next = Some(name.clone());
        while let Some(name) = next.take() {
            if part.apps.apps.contains_key(&name) {
                break;
            }
            let (k, i) = self
                .find(name.as_str())?
                .ok_or_else(|| Corrupt(format!("app {name} has no record")))?;
            let (app, digest) = self.shard(k)?.app(i)?;
            next = app.parent.clone();
            if let Some(digest) = digest {
                part.digests.insert(name.clone(), digest);
            }
            part.apps.apps.insert(name, app);
        }
        Ok(())
    }

    /// (shard, position) of the record of `name`.
    fn find(&mut self, name: &str) -> Result<Option<(usize, usize)>, Miss> {
        let k = shard::of(name, self.shards.len());
        Ok(self.shard(k)?.find(name).map(|i| (k, i)))
    }

    /// Shard `k`, read and checked on first use.
    fn shard(&mut self, k: usize) -> Result<&Shard, Miss> {
        if !self.loaded.contains_key(&k) {
            let (name, crc) = &self.shards[k];
            let bytes = std::fs::read(self.dir.join(name))?;
            if bytes.len() < 4 || bytes[bytes.len() - 4..] != crc.to_le_bytes() {
                return Err(Corrupt(format!("shard {name} is not the one the head lists")).into());
            }
            self.loaded.insert(k, Shard::parse(bytes)?);
        }
        Ok(&self.loaded[&k])
    }
}

/// Writes the new shards (`None`: shard `k` stays `kept[k]`), then the head
/// naming them, then removes the shard files no longer named. A reader sees
/// the old snapshot or the new one, never a mix: shards are named by content
/// and the head is renamed into place.
fn write_snapshot(
    dir: &Path,
    stamp: &Stamp,
    head: &Scan,
    others: &[&Entry],
    shards: Vec<Option<Vec<u8>>>,
    kept: &[(String, u32)],
) -> std::io::Result<()> {
    if dir.is_file() {
        std::fs::remove_file(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let mut list = Vec::with_capacity(shards.len());
    for (k, bytes) in shards.into_iter().enumerate() {
        let Some(bytes) = bytes else {
            list.push(kept[k].clone());
            continue;
        };
        let name = format!(
            "{}.{SHARD_EXTENSION}",
            hex::encode(&Sha256::digest(&bytes)[..10])
        );
        let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes"));
        if !dir.join(&name).exists() {
            write_file(&dir.join(&name), &bytes)?;
        }
        list.push((name, crc));
    }
    let mut e = Encoder::default();
    e.fixed(MAGIC);
    e.u32(FORMAT);
    e.str(&stamp.commit);
    e.str(&stamp.layout);
    e.str(&head.source);
    e.option(head.revision.as_deref(), Encoder::str);
    e.seq(&head.unusable, |e, u| {
        e.str(&u.path);
        e.u8(match u.reason {
            UnusableReason::NotUtf8 => 0,
            UnusableReason::SpecialFile => 1,
        });
    });
    e.strs(&head.apps.rejected.iter().collect::<Vec<_>>());
    e.seq(&head.apps.problems, put_problem);
    e.seq(others, |e, entry| put_entry(e, entry));
    e.seq(&list, |e, (name, crc)| {
        e.str(name);
        e.u32(*crc);
    });
    let checksum = crc32fast::hash(&e.buf);
    e.u32(checksum);
    write_file(&dir.join(HEAD), &e.buf)?;

    let named: HashSet<&str> = list.iter().map(|(name, _)| name.as_str()).collect();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if (is_shard_name(&name) && !named.contains(name.as_ref())) || name.ends_with(".tmp") {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Writes `bytes` aside, then renames them over `path`: never half a file.
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let aside = path.with_extension("tmp");
    let mut file = std::fs::File::create(&aside)?;
    file.write_all(bytes)?;
    drop(file);
    std::fs::rename(&aside, path)
}

fn is_shard_name(name: &str) -> bool {
    name.strip_suffix(SHARD_EXTENSION)
        .and_then(|n| n.strip_suffix('.'))
        .is_some_and(|hex| hex.len() == 20 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The head's parts: the small parts of the scan, the entries no app owns and
/// the shard list.
type Head = (Scan, Vec<Entry>, Vec<(String, u32)>);

/// Decodes and checks a head file's bytes, if it holds `stamp`.
fn parse_head(bytes: &[u8], stamp: &Stamp) -> Result<Head, Miss> {
    let mut d = Decoder::new(bytes);
    if d.fixed(MAGIC.len())? != MAGIC {
        return Err(Corrupt("not a canopy snapshot".to_owned()).into());
    }
    let format = d.u32()?;
    if format != FORMAT {
        return Err(Corrupt(format!("format {format}, this canopy reads {FORMAT}")).into());
    }
    let (commit, layout) = (d.str()?, d.str()?);
    if commit != stamp.commit || layout != stamp.layout {
        return Err(Miss::Other {
            commit: commit.to_owned(),
        });
    }
    let header = bytes.len() - d.remaining();
    let body = bytes
        .len()
        .checked_sub(4)
        .filter(|&body| body >= header)
        .ok_or_else(|| Corrupt("shorter than its checksum".to_owned()))?;
    if crc32fast::hash(&bytes[..body]).to_le_bytes()[..] != bytes[body..] {
        return Err(Corrupt("checksum mismatch".to_owned()).into());
    }
    let mut d = Decoder::new(&bytes[header..body]);
    let head = Scan {
        source: d.string()?,
        revision: d.option(Decoder::string)?,
        entries: BTreeMap::new(),
        unusable: d.seq(5, |d| {
            let path = d.string()?;
            let reason = match d.u8()? {
                0 => UnusableReason::NotUtf8,
                1 => UnusableReason::SpecialFile,
                other => return Err(Corrupt(format!("bad unusable reason {other}"))),
            };
            Ok(Unusable { path, reason })
        })?,
        apps: AppTree {
            apps: BTreeMap::new(),
            rejected: d.strings()?.into_iter().collect(),
            problems: d.seq(5, get_problem)?,
        },
        digests: BTreeMap::new(),
    };
    let others = d.seq(6, get_entry)?;
    let shards = d.seq(8, |d| Ok((d.string()?, d.u32()?)))?;
    if !d.is_empty() {
        return Err(Corrupt("trailing bytes".to_owned()).into());
    }
    if shards.is_empty() || shards.iter().any(|(name, _)| !is_shard_name(name)) {
        return Err(Corrupt("bad shard list".to_owned()).into());
    }
    Ok((head, others, shards))
}

/// Decodes a head file's bytes as [`Saved::read`] does, if it holds `stamp`.
/// Public for the fuzzer: whatever the bytes, an error and never a panic.
pub fn decode_head(bytes: &[u8], stamp: &Stamp) -> Result<(), Miss> {
    parse_head(bytes, stamp).map(drop)
}

/// Decodes a shard file's bytes and every app record in it, as loading does;
/// the number of apps. Public for the fuzzer.
pub fn decode_shard(bytes: Vec<u8>) -> Result<usize, Corrupt> {
    let shard = Shard::parse(bytes)?;
    for i in 0..shard.len() {
        shard.app(i)?;
    }
    Ok(shard.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::LayoutOptions;
    use crate::tree::{BlobCache, MemTree};

    fn sample() -> Scan {
        let mut tree = MemTree::new();
        tree.put(
            "app.yaml",
            EntryKind::File,
            b"children: {dirs: ['gen/*']}\n",
        );
        tree.put("README.md", EntryKind::File, b"root\n");
        tree.put(
            "pay/app.yaml",
            EntryKind::File,
            b"sync: manual\nwave: -2\nconfig: {A: 1}\nsecrets: [s]\nlabels: {team: x}\nexclude: ['*.md']\n",
        );
        tree.put("pay/deploy.yaml", EntryKind::Executable, b"kind: x\n");
        tree.put("pay/notes.md", EntryKind::File, b"excluded\n");
        tree.put("pay/link", EntryKind::Symlink, b"deploy.yaml");
        tree.put(
            "pay/api/app.yaml",
            EntryKind::File,
            b"depends_on: [search]\n",
        );
        tree.put("pay/api/x.yaml", EntryKind::File, b"x\n");
        tree.put("gen/one/a.yaml", EntryKind::File, b"a\n");
        tree.put("Bad/app.yaml", EntryKind::File, b"");
        tree.put("broken/app.yaml", EntryKind::File, b"nope: 1\n");
        let scan = crate::scan::scan(&tree, &LayoutOptions::default(), &BlobCache::default());
        let scan = scan.unwrap();
        assert!(scan.apps.apps.len() >= 5 && scan.has_problems() && !scan.digests.is_empty());
        scan
    }

    fn stamp() -> Stamp {
        Stamp {
            commit: "1a2b".to_owned(),
            layout: "sha256:00".to_owned(),
        }
    }

    fn files(dir: &Path) -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_saved_snapshot_loads_as_the_same_scan() {
        let scan = sample();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot");
        save(&path, &stamp(), &scan).unwrap();
        assert_eq!(load(&path, &stamp()).unwrap(), scan);
        let written = files(&path);
        assert!(written.contains(HEAD) && written.iter().all(|f| !f.ends_with(".tmp")));
        // Saving the same state again writes no shard and leaves none behind.
        save(&path, &stamp(), &scan).unwrap();
        assert_eq!(files(&path), written);
    }

    #[test]
    fn a_snapshot_of_another_commit_or_layout_or_none_at_all_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot");
        assert!(matches!(load(&path, &stamp()), Err(Miss::Missing)));
        save(&path, &stamp(), &sample()).unwrap();
        let other = Stamp {
            commit: "9f9f".to_owned(),
            ..stamp()
        };
        assert!(matches!(load(&path, &other), Err(Miss::Other { commit }) if commit == "1a2b"));
        let relaid = Stamp {
            layout: "sha256:01".to_owned(),
            ..stamp()
        };
        assert!(matches!(load(&path, &relaid), Err(Miss::Other { .. })));
    }

    #[test]
    fn a_one_file_commit_rewrites_only_its_shards_and_the_head() {
        let options = LayoutOptions::default();
        let mut tree = MemTree::new();
        for i in 0..600 {
            tree.put(
                &format!("t{}/app-{i}/app.yaml", i % 4),
                EntryKind::File,
                b"",
            );
            tree.put(
                &format!("t{}/app-{i}/f.yaml", i % 4),
                EntryKind::File,
                b"v1",
            );
        }
        let whole = crate::scan::scan(&tree, &options, &BlobCache::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &stamp(), &whole).unwrap();
        let before = files(dir.path());
        assert_eq!(before.len(), 1 + shard::count_for(601));
        assert!(shard::count_for(601) >= 4);

        let mut next = tree.clone();
        next.put("t3/app-7/f.yaml", EntryKind::File, b"v2");
        let changes = tree.diff(&next);
        let mut saved = Saved::read(dir.path(), &stamp()).unwrap();
        let mut part = saved.part("", &changes).unwrap().expect("a modification");
        // The app and its parent, the root: nothing else is decoded.
        let names: Vec<&str> = part.apps.apps.keys().map(AppName::as_str).collect();
        assert_eq!(names, [".", "t3/app-7"]);
        part.update_in_place(&next, &changes, &options, &BlobCache::default())
            .unwrap()
            .expect("in place");
        let after = Stamp {
            commit: "3c4d".to_owned(),
            ..stamp()
        };
        saved.save_moved(&after, &part).unwrap();

        let mut moved = whole.clone();
        moved
            .update(&next, &changes, &options, &BlobCache::default())
            .unwrap();
        assert_eq!(load(dir.path(), &after).unwrap(), moved);
        let now = files(dir.path());
        assert_eq!(now.len(), before.len());
        let rewritten = now.difference(&before).count();
        assert!((1..=2).contains(&rewritten), "{rewritten} shards rewritten");
    }

    #[test]
    fn any_flipped_byte_truncation_or_missing_shard_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot");
        save(&path, &stamp(), &sample()).unwrap();
        for name in files(&path) {
            let file = path.join(&name);
            let bytes = std::fs::read(&file).unwrap();
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 0x40;
                std::fs::write(&file, &bad).unwrap();
                assert!(load(&path, &stamp()).is_err(), "{name}: byte {i} flipped");
            }
            for cut in 0..bytes.len() {
                std::fs::write(&file, &bytes[..cut]).unwrap();
                assert!(load(&path, &stamp()).is_err(), "{name}: cut at {cut}");
            }
            std::fs::remove_file(&file).unwrap();
            assert!(load(&path, &stamp()).is_err(), "{name} missing");
            std::fs::write(&file, &bytes).unwrap();
            assert_eq!(load(&path, &stamp()).unwrap(), sample());
        }
    }
}
