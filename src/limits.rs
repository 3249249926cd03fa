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

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 8 << 20,
            max_app_files: 20_000,
            max_app_bytes: 256 << 20,
            max_spec_bytes: 256 << 10,
            max_tree_entries: 2_000_000,
        }
    }
}
