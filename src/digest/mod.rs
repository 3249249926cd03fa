//! Desired state: each app's manifest and digests (DESIGN section 3).
//!
//! The manifest is exactly what `sha256sum` prints for the app's files, sorted
//! bytewise, and the app digest is the sha256 of that text, so anyone can verify a
//! digest with coreutils. File hashes come from the blob-id cache whenever the
//! content is unchanged.

mod manifest;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use sha2::{Digest as _, Sha256};

pub use manifest::{ManifestLine, manifest_text};

use crate::layout::paths::root_relative;
use crate::layout::{App, AppName, AppTree, LayoutOptions, Problem};
use crate::limits::Limits;
use crate::tree::{
    self, BlobCache, Bounds, Entry, ReadError, SymlinkError, Tree, hash_entry, par_map,
};

/// A sha256 digest, written `sha256:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Sha256Digest(Sha256::digest(bytes).into())
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The desired state of one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppDigest {
    /// sha256 of the manifest.
    pub digest: Sha256Digest,
    /// sha256 of the canonical JSON of the app's `config`.
    pub config_digest: Sha256Digest,
    /// The manifest, sorted bytewise by path.
    pub files: Vec<ManifestLine>,
    /// Total size of the files.
    pub bytes: u64,
}

/// `config_digest`: sha256 of the config as compact JSON with sorted keys, e.g.
/// `{"LOG_LEVEL":"info","replicas":"3"}` (`{}` when there is none).
pub fn config_digest(
    config: &crate::layout::SortedMap<crate::layout::Key, crate::layout::ConfigValue>,
) -> Sha256Digest {
    let json = serde_json::to_vec(config).expect("a map of strings always serializes");
    Sha256Digest::of(&json)
}

/// What confining an app's symlinks to its own files needs to know of the rest
/// of the snapshot: which paths are links, and where nested apps are.
///
/// A link must resolve inside its app's directory minus the directories of
/// nested apps (valid or not) and of would-be apps whose name is invalid: their
/// files are not the app's, so they are not in its artifact, and a link to them
/// would dangle where the app is unpacked. This applies to the root app too,
/// whose directory is the root app's directory of the layout, minus every app.
pub struct Surroundings<'a> {
    /// Whether a tree path is a symlink, whoever owns it (chains are refused).
    is_symlink: &'a (dyn Fn(&str) -> bool + Sync),
    /// The root app's directory inside the tree (`LayoutOptions::root`, without
    /// surrounding `/`).
    root: &'a str,
    /// Directories whose app name is invalid ([`AppTree::rejected`]).
    rejected: &'a BTreeSet<String>,
}

impl<'a> Surroundings<'a> {
    /// The surroundings of the apps of `tree`, laid out with `options`.
    pub fn of(
        is_symlink: &'a (dyn Fn(&str) -> bool + Sync),
        options: &'a LayoutOptions,
        tree: &'a AppTree,
    ) -> Self {
        Surroundings {
            is_symlink,
            root: options.root.trim_matches('/'),
            rejected: &tree.rejected,
        }
    }

    /// Refuses `path`, below `app`'s directory, as a step of one of its links.
    /// The app's own child list says where its nested apps are, so this holds
    /// for an app restored alone from a snapshot as well.
    fn check(&self, app: &App, path: &str) -> Result<(), SymlinkError> {
        if (self.is_symlink)(path) {
            return Err(SymlinkError::Chain);
        }
        let nested = root_relative(self.root, path).is_some_and(|dir| {
            self.rejected.contains(dir)
                || app
                    .children
                    .binary_search_by(|child| child.as_str().cmp(dir))
                    .is_ok()
        });
        if nested {
            return Err(SymlinkError::IntoNestedApp);
        }
        Ok(())
    }
}

/// Digests `apps`, reading only files whose blob is not in `cache`. Apps with
/// problems are skipped; an app whose files cannot be read gets problems instead
/// of a digest, without affecting the others. A symlink that leaves its app's
/// files (see [`Surroundings`]) is such a problem, named by the link's path.
pub fn digest_apps(
    tree: &dyn Tree,
    surroundings: &Surroundings<'_>,
    apps: &[&App],
    cache: &BlobCache,
    limits: &Limits,
) -> Result<BTreeMap<AppName, Result<AppDigest, Vec<Problem>>>, tree::Error> {
    let work: Vec<(usize, &Entry)> = apps
        .iter()
        .enumerate()
        .filter(|(_, app)| app.is_valid())
        .flat_map(|(i, app)| app.files.iter().map(move |entry| (i, entry)))
        .collect();
    let hashes = par_map(tree, &work, |reader, buf, &(i, entry)| {
        let app = apps[i];
        let check = |path: &str| surroundings.check(app, path);
        let bounds = Bounds {
            dir: &app.dir,
            check: &check,
        };
        hash_entry(reader, entry, cache, limits.max_file_bytes, bounds, buf)
    })?;

    let mut results: Vec<Result<AppDigest, Vec<Problem>>> =
        apps.iter().map(|app| Ok(AppDigest::empty(app))).collect();
    for ((i, entry), hash) in work.into_iter().zip(hashes) {
        let app = apps[i];
        match (&mut results[i], hash) {
            (Ok(digest), Ok(hash)) => {
                digest.bytes += hash.size;
                digest.files.push(ManifestLine::in_dir(
                    entry.path.clone(),
                    app.prefix_len(),
                    hash,
                ));
            }
            (result, Err(e)) => {
                let problem = read_problem(app, entry, &e);
                match result {
                    Ok(_) => *result = Err(vec![problem]),
                    Err(problems) => problems.push(problem),
                }
            }
            (Err(_), Ok(_)) => {}
        }
    }
    Ok(apps
        .iter()
        .zip(results)
        .filter(|(app, _)| app.is_valid())
        .map(|(app, result)| (app.name.clone(), result.and_then(|d| d.finish(app, limits))))
        .collect())
}

impl AppDigest {
    fn empty(app: &App) -> Self {
        AppDigest {
            digest: Sha256Digest([0; 32]),
            config_digest: config_digest(&app.spec.config),
            files: Vec::with_capacity(app.files.len()),
            bytes: 0,
        }
    }

    fn finish(mut self, app: &App, limits: &Limits) -> Result<Self, Vec<Problem>> {
        if self.bytes > limits.max_app_bytes {
            return Err(vec![Problem::in_app(
                app.name.as_str(),
                format!(
                    "app files total {} bytes, over the cap of {} bytes",
                    self.bytes, limits.max_app_bytes
                ),
            )]);
        }
        // Files are in tree order, which is bytewise path order; relative paths of
        // one directory keep that order, but sort anyway: it is the contract.
        self.files
            .sort_unstable_by(|a, b| a.path().as_bytes().cmp(b.path().as_bytes()));
        self.digest = Sha256Digest::of(&manifest_text(&self.files));
        Ok(self)
    }
}

fn read_problem(app: &App, entry: &Entry, error: &ReadError) -> Problem {
    Problem::in_file(app.name.as_str(), &*entry.path, crate::error_chain(error))
}
