//! How each part of a snapshot is written: entries, problems, specs, and the
//! record of one app, which holds everything about it (files, spec, digest) so
//! that one app can be read without the others.

use super::codec::{Corrupt, Decoder, Encoder};
use crate::digest::{AppDigest, ManifestLine, Sha256Digest};
use crate::layout::{
    App, AppName, AppSpec, ConfigValue, Generator, GlobPattern, Key, LabelKey, Problem, SyncPolicy,
};
use crate::tree::{BlobId, Entry, EntryKind, FileHash};

/// One app and its digest.
pub fn put_app(e: &mut Encoder, app: &App, digest: Option<&AppDigest>) -> Result<(), Corrupt> {
    e.str(&app.dir);
    e.option(app.parent.as_ref(), |e, p| e.str(p.as_str()));
    e.seq(&app.children, |e, c| e.str(c.as_str()));
    e.bool(app.generated);
    e.option(app.marker.as_deref(), Encoder::str);
    put_spec(e, &app.spec);
    e.option(app.spec_blob.as_ref(), put_blob);
    e.seq(&app.files, put_entry);
    e.seq(&app.problems, put_problem);
    e.seq(&app.read_problems, put_problem);
    match digest {
        None => e.u8(0),
        Some(digest) => {
            e.u8(1);
            put_digest(e, app, digest)?;
        }
    }
    Ok(())
}

pub fn get_app(d: &mut Decoder<'_>, name: AppName) -> Result<(App, Option<AppDigest>), Corrupt> {
    let mut app = App {
        name,
        dir: d.string()?,
        parent: d.option(|d| self::name(d.str()?))?,
        children: d.seq(4, |d| self::name(d.str()?))?,
        generated: d.bool()?,
        marker: d.option(Decoder::string)?,
        spec: get_spec(d)?,
        spec_blob: d.option(get_blob)?,
        files: d.seq(6, get_entry)?,
        problems: d.seq(5, get_problem)?,
        read_problems: Vec::new(),
    };
    app.read_problems = d.seq(5, get_problem)?;
    let digest = d.option(|d| get_digest(d, &app))?;
    Ok((app, digest))
}

pub fn name(text: &str) -> Result<AppName, Corrupt> {
    AppName::parse(text).map_err(|e| Corrupt(e.to_string()))
}

pub fn put_entry(e: &mut Encoder, entry: &Entry) {
    e.str(&entry.path);
    e.u8(match entry.kind {
        EntryKind::File => 0,
        EntryKind::Executable => 1,
        EntryKind::Symlink => 2,
    });
    e.option(entry.blob.as_ref(), put_blob);
}

pub fn get_entry(d: &mut Decoder<'_>) -> Result<Entry, Corrupt> {
    let path = d.string()?;
    let kind = match d.u8()? {
        0 => EntryKind::File,
        1 => EntryKind::Executable,
        2 => EntryKind::Symlink,
        other => return Err(Corrupt(format!("bad entry kind {other}"))),
    };
    let blob = d.option(get_blob)?;
    Ok(Entry {
        path: path.into(),
        kind,
        blob,
    })
}

pub fn put_blob(e: &mut Encoder, blob: &BlobId) {
    e.bytes(blob.as_bytes());
}

pub fn get_blob(d: &mut Decoder<'_>) -> Result<BlobId, Corrupt> {
    let bytes = d.bytes()?;
    gix::hash::oid::try_from_bytes(bytes)
        .map(ToOwned::to_owned)
        .map_err(|e| Corrupt(format!("bad object id: {e}")))
}

pub fn put_problem(e: &mut Encoder, p: &Problem) {
    e.option(p.file.as_deref(), Encoder::str);
    e.option(p.line.map(|l| l as u64), Encoder::u64);
    e.option(p.column.map(|c| c as u64), Encoder::u64);
    e.option(p.app.as_deref(), Encoder::str);
    e.str(&p.message);
}

pub fn get_problem(d: &mut Decoder<'_>) -> Result<Problem, Corrupt> {
    Ok(Problem {
        file: d.option(Decoder::string)?,
        line: d.option(Decoder::u64)?.map(|l| l as usize),
        column: d.option(Decoder::u64)?.map(|c| c as usize),
        app: d.option(Decoder::string)?,
        message: d.string()?,
    })
}

pub fn put_spec(e: &mut Encoder, spec: &AppSpec) {
    e.u8(match spec.sync {
        SyncPolicy::Auto => 0,
        SyncPolicy::Manual => 1,
    });
    e.i32(spec.wave);
    e.seq(&spec.depends_on, |e, n| e.str(n.as_str()));
    put_globs(e, &spec.include);
    put_globs(e, &spec.exclude);
    e.option(spec.children.as_ref(), |e, g| {
        put_globs(e, &g.dirs);
        put_globs(e, &g.exclude);
    });
    e.len(spec.config.len());
    for (key, value) in &spec.config {
        e.str(&key.0);
        e.str(&value.0);
    }
    e.seq(&spec.secrets, |e, k| e.str(&k.0));
    e.len(spec.labels.len());
    for (key, value) in &spec.labels {
        e.str(&key.0);
        e.str(value);
    }
    e.option(spec.depends_on_line.map(|l| l as u64), Encoder::u64);
}

pub fn get_spec(d: &mut Decoder<'_>) -> Result<AppSpec, Corrupt> {
    let sync = match d.u8()? {
        0 => SyncPolicy::Auto,
        1 => SyncPolicy::Manual,
        other => return Err(Corrupt(format!("bad sync policy {other}"))),
    };
    let wave = d.i32()?;
    let depends_on = d.seq(4, |d| name(d.str()?))?;
    let include = get_globs(d)?;
    let exclude = get_globs(d)?;
    let children = d.option(|d| {
        Ok(Generator {
            dirs: get_globs(d)?,
            exclude: get_globs(d)?,
        })
    })?;
    let count = d.count(8)?;
    let config = (0..count)
        .map(|_| Ok((Key(d.string()?), ConfigValue(d.string()?))))
        .collect::<Result<_, Corrupt>>()?;
    let secrets = d.seq(4, |d| Ok(Key(d.string()?)))?;
    let count = d.count(8)?;
    let labels = (0..count)
        .map(|_| Ok((LabelKey(d.string()?), d.string()?)))
        .collect::<Result<_, Corrupt>>()?;
    let depends_on_line = d.option(Decoder::u64)?.map(|l| l as usize);
    Ok(AppSpec {
        sync,
        wave,
        depends_on,
        include,
        exclude,
        children,
        config,
        secrets,
        labels,
        depends_on_line,
    })
}

fn put_globs(e: &mut Encoder, globs: &[GlobPattern]) {
    e.seq(globs, |e, g| e.str(&g.0));
}

/// Globs were validated when their `app.yaml` was parsed, and the checksum
/// vouches for the text since.
fn get_globs(d: &mut Decoder<'_>) -> Result<Vec<GlobPattern>, Corrupt> {
    d.seq(4, |d| Ok(GlobPattern(d.string()?)))
}

/// A digest; each manifest line refers to the app file it hashes by index, since
/// its path is that file's path relative to the app directory.
fn put_digest(e: &mut Encoder, app: &App, digest: &AppDigest) -> Result<(), Corrupt> {
    e.fixed(&digest.digest.0);
    e.fixed(&digest.config_digest.0);
    e.u64(digest.bytes);
    e.len(digest.files.len());
    let mut files = app.files.iter().enumerate();
    for line in &digest.files {
        let (i, _) = files
            .find(|(_, f)| app.relative(&f.path) == line.path())
            .ok_or_else(|| {
                Corrupt(format!(
                    "manifest line {} of {} is not one of its files",
                    line.path(),
                    app.name
                ))
            })?;
        e.len(i);
        e.fixed(&line.hash.sha256);
        e.u64(line.hash.size);
    }
    Ok(())
}

fn get_digest(d: &mut Decoder<'_>, app: &App) -> Result<AppDigest, Corrupt> {
    let digest = Sha256Digest(d.array()?);
    let config_digest = Sha256Digest(d.array()?);
    let bytes = d.u64()?;
    let files = d.seq(44, |d| {
        let i = d.len()?;
        let file = app
            .files
            .get(i)
            .filter(|f| {
                let prefix = app.prefix_len();
                f.path.len() > prefix
                    && f.path.starts_with(&app.dir)
                    && (prefix == 0 || f.path.as_bytes()[prefix - 1] == b'/')
            })
            .ok_or_else(|| Corrupt(format!("manifest file index {i} out of range")))?;
        let hash = FileHash {
            sha256: d.array()?,
            size: d.u64()?,
        };
        Ok(ManifestLine::in_dir(
            file.path.clone(),
            app.prefix_len(),
            hash,
        ))
    })?;
    Ok(AppDigest {
        digest,
        config_digest,
        files,
        bytes,
    })
}
