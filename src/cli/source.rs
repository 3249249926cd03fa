//! The `<dir|repo>` argument shared by the commands that read a repository.

use std::path::PathBuf;

use clap::Args;

use super::{CliError, GlobError};
use crate::layout::{Generator, GlobPattern, LayoutOptions};
use crate::scan::{Scan, scan};
use crate::tree::{BlobCache, DirTree, GitTree, Tree};

#[derive(Debug, Args)]
pub struct SourceArgs {
    /// A directory (read as it is on disk, uncommitted changes included) or a Git
    /// repository (bare repositories are read at HEAD; see --rev).
    pub source: PathBuf,
    /// Read this commit, branch or tag from Git objects instead of the work tree.
    #[arg(long)]
    pub rev: Option<String>,
    /// The root app's directory inside the repository.
    #[arg(long, default_value = ".", env = "CANOPY_REPO_PATH")]
    pub path: String,
    /// Directory generator for the root app when its app.yaml has no `children`
    /// (repeatable), e.g. `kubernetes/apps/*/*`.
    #[arg(long = "children", value_name = "GLOB")]
    pub children: Vec<String>,
    /// Directories the root generator skips (repeatable; wins over --children).
    #[arg(long = "children-exclude", value_name = "GLOB")]
    pub children_exclude: Vec<String>,
    /// The marker file that makes a directory an app.
    #[arg(long, default_value = crate::layout::DEFAULT_MARKER)]
    pub marker: String,
}

impl SourceArgs {
    pub fn layout_options(&self) -> Result<LayoutOptions, CliError> {
        let globs = |patterns: &[String]| -> Result<Vec<GlobPattern>, CliError> {
            patterns
                .iter()
                .map(|p| GlobPattern::parse(p).map_err(|e| CliError::Glob(GlobError(e))))
                .collect()
        };
        let root_children = if self.children.is_empty() {
            None
        } else {
            Some(Generator {
                dirs: globs(&self.children)?,
                exclude: globs(&self.children_exclude)?,
            })
        };
        let root = self.path.trim_start_matches("./").trim_matches('/');
        Ok(LayoutOptions {
            root: if root == "." {
                String::new()
            } else {
                root.to_owned()
            },
            marker: self.marker.clone(),
            root_children,
            ..LayoutOptions::default()
        })
    }

    /// A directory is read from disk unless `--rev` is given; a bare repository is
    /// read at HEAD.
    pub fn open(&self) -> Result<Box<dyn Tree>, CliError> {
        let source = &self.source;
        let tree_error = |source: crate::tree::Error| CliError::Tree {
            source_desc: self.source.display().to_string(),
            source,
        };
        let is_git = GitTree::is_repository(source);
        let is_bare = is_git && !source.join(".git").exists() && source.join("HEAD").is_file();
        match (&self.rev, is_bare) {
            (Some(rev), _) => Ok(Box::new(GitTree::open(source, rev).map_err(tree_error)?)),
            (None, true) => Ok(Box::new(GitTree::open(source, "HEAD").map_err(tree_error)?)),
            (None, false) if source.is_dir() => Ok(Box::new(DirTree::new(source))),
            (None, false) => Err(CliError::NotASource(source.display().to_string())),
        }
    }

    pub fn scan(&self) -> Result<Scan, CliError> {
        let options = self.layout_options()?;
        let tree = self.open()?;
        scan(tree.as_ref(), &options, &BlobCache::default()).map_err(|source| CliError::Tree {
            source_desc: self.source.display().to_string(),
            source,
        })
    }
}
