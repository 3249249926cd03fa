//! One shard of a snapshot: the records of the apps whose names hash to it, in
//! name order, behind an index of (name, record length), and a CRC-32 of all of
//! it. A shard is read whole and decoded one record at a time.

use std::ops::Range;

use super::codec::{Corrupt, Decoder, Encoder};
use super::records::{get_app, name, put_app};
use crate::digest::AppDigest;
use crate::layout::App;

/// How many shards a snapshot of `apps` apps has: about 128 apps each, so that
/// a commit touching one app rewrites a few kilobytes whatever the repo's size.
pub fn count_for(apps: usize) -> usize {
    (apps / 128).clamp(1, 4096)
}

/// The shard holding `name`, among `count`: stable across versions.
pub fn of(name: &str, count: usize) -> usize {
    crc32fast::hash(name.as_bytes()) as usize % count
}

/// An app record to write: as it was in a shard, or from an app.
pub enum Record<'a> {
    Raw(&'a [u8]),
    App(&'a App, Option<&'a AppDigest>),
}

/// The bytes of a shard holding `records`, which must be in name order.
pub fn encode<'a>(
    records: impl Iterator<Item = (&'a str, Record<'a>)>,
) -> Result<Vec<u8>, Corrupt> {
    // The index comes first, so records to encode are encoded aside; raw ones
    // are copied once, into place.
    let mut encoded = Encoder::default();
    let mut index = Vec::new();
    for (name, record) in records {
        index.push(match record {
            Record::Raw(bytes) => (name, Err(bytes)),
            Record::App(app, digest) => {
                let start = encoded.buf.len();
                put_app(&mut encoded, app, digest)?;
                (name, Ok(start..encoded.buf.len()))
            }
        });
    }
    let mut e = Encoder::default();
    let raw: usize = index
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .map(|b| b.len())
        .sum();
    e.buf
        .reserve(raw + encoded.buf.len() + index.len() * 40 + 4);
    e.seq(&index, |e, (name, record)| {
        e.str(name);
        e.len(record.as_ref().map_or_else(|raw| raw.len(), Range::len));
    });
    for (_, record) in &index {
        match record {
            Err(raw) => e.fixed(raw),
            Ok(range) => e.fixed(&encoded.buf[range.clone()]),
        }
    }
    let checksum = crc32fast::hash(&e.buf);
    e.u32(checksum);
    Ok(e.buf)
}

/// A shard read from disk, checked, its index parsed.
pub struct Shard {
    bytes: Vec<u8>,
    /// (name, record) byte ranges of every app, in name order.
    index: Vec<(Range<usize>, Range<usize>)>,
}

impl Shard {
    pub fn parse(bytes: Vec<u8>) -> Result<Shard, Corrupt> {
        let body = bytes
            .len()
            .checked_sub(4)
            .ok_or_else(|| Corrupt("shard shorter than its checksum".to_owned()))?;
        if crc32fast::hash(&bytes[..body]).to_le_bytes()[..] != bytes[body..] {
            return Err(Corrupt("shard checksum mismatch".to_owned()));
        }
        let mut d = Decoder::new(&bytes[..body]);
        let at = |d: &Decoder<'_>| body - d.remaining();
        let names = d.seq(8, |d| {
            let start = at(d) + 4;
            let name = d.str()?;
            Ok((start..start + name.len(), d.len()?))
        })?;
        let mut index = Vec::with_capacity(names.len());
        for (name, len) in names {
            let start = at(&d);
            d.fixed(len)?;
            index.push((name, start..start + len));
        }
        if !d.is_empty() {
            return Err(Corrupt("trailing bytes in a shard".to_owned()));
        }
        Ok(Shard { bytes, index })
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.index
            .binary_search_by(|(n, _)| self.bytes[n.clone()].cmp(name.as_bytes()))
            .ok()
    }

    pub fn name(&self, i: usize) -> &str {
        std::str::from_utf8(&self.bytes[self.index[i].0.clone()]).expect("checked when parsed")
    }

    pub fn raw(&self, i: usize) -> &[u8] {
        &self.bytes[self.index[i].1.clone()]
    }

    pub fn app(&self, i: usize) -> Result<(App, Option<AppDigest>), Corrupt> {
        let mut d = Decoder::new(self.raw(i));
        let app = get_app(&mut d, name(self.name(i))?)?;
        if !d.is_empty() {
            return Err(Corrupt(format!(
                "trailing bytes in the record of {}",
                app.0.name
            )));
        }
        Ok(app)
    }
}
