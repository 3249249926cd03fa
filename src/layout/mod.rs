//! From a tree of entries to the tree of apps (DESIGN section 2): which
//! directories are apps, who is whose parent, which files each app owns, and each
//! app's `app.yaml` spec. Problems are collected per app, so one broken app is
//! reported without hiding the others.
//!
//! This module reads only the `app.yaml` files; hashing content is `digest`'s job.

mod discover;
mod name;
pub(crate) mod paths;
mod problem;
mod sorted_map;
mod spec;

use std::collections::{BTreeMap, BTreeSet};

pub(crate) use discover::{Filter, read_spec};
pub use discover::{KnownSpec, discover};
pub use name::{AppName, NameError, ROOT};
pub use problem::Problem;
pub use sorted_map::SortedMap;
pub use spec::{
    AppSpec, ConfigValue, Generator, GlobPattern, Key, LabelKey, SpecError, SyncPolicy,
};

use crate::limits::Limits;
use crate::tree::Entry;

/// The marker file that makes a directory an app.
pub const DEFAULT_MARKER: &str = "app.yaml";

/// How to read a repository's layout.
#[derive(Debug, Clone)]
pub struct LayoutOptions {
    /// The root app's directory inside the tree, `/`-separated; `""` is the top.
    pub root: String,
    /// The marker file name (`app.yaml`).
    pub marker: String,
    /// The root app's directory generator when the root has no `children` of its own
    /// (config `repo.children`, CLI `--children`).
    pub root_children: Option<Generator>,
    pub limits: Limits,
}

impl Default for LayoutOptions {
    fn default() -> Self {
        LayoutOptions {
            root: String::new(),
            marker: DEFAULT_MARKER.to_owned(),
            root_children: None,
            limits: Limits::default(),
        }
    }
}

/// Every app of one snapshot, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppTree {
    pub apps: BTreeMap<AppName, App>,
    /// Directories (relative to the root app) that would be apps but whose name is
    /// invalid: they own their files, which are part of no app.
    pub rejected: BTreeSet<String>,
    /// Problems that belong to no valid app: directories whose name is not a valid
    /// app name (their files are claimed and ignored, so the parent is unaffected),
    /// and problems of the layout options themselves.
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub name: AppName,
    /// The app's directory inside the tree; `""` for a root at the top of the tree.
    pub dir: String,
    pub parent: Option<AppName>,
    pub children: Vec<AppName>,
    /// Made by a parent's directory generator rather than by an `app.yaml`.
    pub generated: bool,
    /// The marker file's path inside the tree, if the app has one.
    pub marker: Option<String>,
    pub spec: AppSpec,
    /// The blob `spec` was parsed from, when it came from Git and parsed.
    pub spec_blob: Option<crate::tree::BlobId>,
    /// The files this app owns, sorted by path (tree paths: see [`App::relative`]).
    pub files: Vec<Entry>,
    /// Layout problems (name, app.yaml, dependencies, caps): the app is not digested.
    pub problems: Vec<Problem>,
    /// Problems found while reading its files (sizes, symlinks): no digest either.
    pub read_problems: Vec<Problem>,
}

impl App {
    /// `path` (a tree path of one of this app's files) relative to the app's directory.
    pub fn relative<'a>(&self, path: &'a str) -> &'a str {
        &path[self.prefix_len()..]
    }

    /// How many bytes of a tree path of one of its files come before the part
    /// relative to the app directory: the directory and its `/`.
    pub fn prefix_len(&self) -> usize {
        if self.dir.is_empty() {
            0
        } else {
            self.dir.len() + 1
        }
    }

    /// True if the layout is sound, so the app can be digested.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

impl AppTree {
    /// Every problem, sorted by file, line and app.
    pub fn all_problems(&self) -> Vec<&Problem> {
        let mut all: Vec<&Problem> = self
            .problems
            .iter()
            .chain(
                self.apps
                    .values()
                    .flat_map(|a| a.problems.iter().chain(&a.read_problems)),
            )
            .collect();
        all.sort();
        all
    }
}
