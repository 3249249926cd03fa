//! Caps on untrusted repository content. The repo is hostile input (DESIGN section
//! 8): every read is bounded before it happens, and exceeding a cap is an error
//! for the app concerned, not for the whole tree.

/// The caps; `Limits::default()` documents the defaults in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single file (or symlink target) in an app.
    pub max_file_bytes: u64,
    /// Most files one app may own.
    pub max_app_files: usize,
    /// Largest total size of one app's files.
    pub max_app_bytes: u64,
    /// Largest `app.yaml`, checked before parsing.
    pub max_spec_bytes: u64,
    /// Most entries in the whole tree; past this the tree is refused as a whole.
    pub max_tree_entries: usize,
}

impl Limits {
    /// The defaults, as a constant: other defaults derive from them.
    pub const DEFAULT: Limits = Limits {
        max_file_bytes: 8 << 20,
        max_app_files: 20_000,
        max_app_bytes: 256 << 20,
        max_spec_bytes: 256 << 10,
        max_tree_entries: 2_000_000,
    };

    /// The largest tar of one app's files (the artifact endpoint's answer)
    /// that a child accepts by default: the per-app cap on content, plus three
    /// 512-byte blocks per file and for the end of the archive, for headers,
    /// GNU long-name records and padding.
    pub const fn max_tar_bytes(&self) -> u64 {
        self.max_app_bytes + (self.max_app_files as u64 + 1) * 3 * 512
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
