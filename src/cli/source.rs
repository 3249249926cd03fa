//! The `<dir|repo>` argument shared by the commands that read a repository.

use std::path::Path;
use std::time::Duration;

use clap::Args;

use super::{CliError, GlobError};
use crate::layout::{Generator, GlobPattern, LayoutOptions};
use crate::protocol::Secret;
use crate::scan::{Scan, scan};
use crate::source::{Credentials, Mirror, MirrorOptions, RepoUrl};
use crate::tree::{BlobCache, DirTree, GitTree, Tree};

#[derive(Debug, Args)]
pub struct SourceArgs {
    /// A directory (read as it is on disk, uncommitted changes included), a local
    /// Git repository (bare repositories are read at HEAD; see --rev), or a remote
    /// repository URL (https://, http://, git://, file://), fetched into a
    /// temporary mirror. HTTP credentials: userinfo in the URL, or
    /// CANOPY_GIT_USERNAME and CANOPY_GIT_TOKEN.
    pub source: String,
    /// Read this commit, branch or tag from Git objects instead of the work tree
    /// (for a URL: the ref to fetch; default: the remote's HEAD).
    #[arg(long)]
    pub rev: Option<String>,
    /// Deadline for fetching a remote URL.
    #[arg(long, default_value = "60s", value_parser = crate::config::parse_duration)]
    pub timeout: Duration,
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
    /// read at HEAD; a URL is fetched into `scratch`.
    pub fn open(&self, scratch: &Path) -> Result<Box<dyn Tree>, CliError> {
        if self.source.contains("://") {
            return self.fetch(scratch);
        }
        let source = Path::new(&self.source);
        let tree_error = |source: crate::tree::Error| CliError::Tree {
            source_desc: self.source.clone(),
            source,
        };
        let is_git = GitTree::is_repository(source);
        let is_bare = is_git && !source.join(".git").exists() && source.join("HEAD").is_file();
        match (&self.rev, is_bare) {
            (Some(rev), _) => Ok(Box::new(GitTree::open(source, rev).map_err(tree_error)?)),
            (None, true) => Ok(Box::new(GitTree::open(source, "HEAD").map_err(tree_error)?)),
            (None, false) if source.is_dir() => Ok(Box::new(DirTree::new(source))),
            (None, false) => Err(CliError::NotASource(self.source.clone())),
        }
    }

    /// Fetches a remote repository into a fresh mirror under `scratch`.
    fn fetch(&self, scratch: &Path) -> Result<Box<dyn Tree>, CliError> {
        let url = RepoUrl::parse(&self.source).map_err(CliError::Url)?;
        let credentials = match (
            std::env::var("CANOPY_GIT_USERNAME"),
            std::env::var("CANOPY_GIT_TOKEN"),
        ) {
            (Ok(username), Ok(token)) => Some(Credentials {
                username,
                token: Secret::new(token),
            }),
            (Err(_), Ok(token)) => Some(Credentials {
                username: "git".to_owned(),
                token: Secret::new(token),
            }),
            _ => None,
        };
        let mirror = Mirror::open(MirrorOptions {
            url,
            reference: self.rev.clone().unwrap_or_else(|| "HEAD".to_owned()),
            credentials,
            timeout: self.timeout,
            dir: scratch.join("mirror.git"),
        })?;
        let commit = mirror.fetch()?;
        Ok(Box::new(mirror.tree(commit)?))
    }

    pub fn scan(&self) -> Result<Scan, CliError> {
        let options = self.layout_options()?;
        let scratch = tempfile::Builder::new()
            .prefix("canopy-")
            .tempdir()
            .map_err(CliError::Scratch)?;
        let tree = self.open(scratch.path())?;
        scan(tree.as_ref(), &options, &BlobCache::default()).map_err(|source| CliError::Tree {
            source_desc: crate::protocol::redact(&self.source),
            source,
        })
    }
}
