//! Symlink targets are untrusted text. They are hashed, never followed, and only
//! accepted when they stay inside the directory of the app that owns the link: a
//! child app materialises only its own files, under a directory of its own, so a
//! target that leaves the app's directory names whatever lies beside or above
//! that checkout (another app's files, the agent's own, the host's).
//!
//! Errors never include the target text: it may name a secret path on the host.

/// Why a symlink was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SymlinkError {
    #[error("symlink target is empty")]
    Empty,
    #[error("symlink target is an absolute path")]
    Absolute,
    #[error("symlink target contains a NUL byte")]
    Nul,
    #[error("symlink target leaves its app's directory")]
    Escapes,
    #[error("symlink target points into .git")]
    IntoGit,
    #[error("symlink target goes through another symlink (chains are not allowed)")]
    Chain,
    #[error("symlink target points into the directory of a nested app")]
    IntoNestedApp,
}

/// Where the target of one link may lead.
#[derive(Clone, Copy)]
pub struct Bounds<'a> {
    /// The directory (a tree path, `""` for the top) that the resolution may not
    /// leave at any step: the owning app's. Going up and back down (`../app/x`)
    /// counts as leaving, because where the files are unpacked the app's
    /// directory has another name.
    pub dir: &'a str,
    /// Called with each path the resolution reaches below `dir`; refuses the
    /// ones a target may not name or pass through (a symlink, a nested app's
    /// directory).
    pub check: &'a dyn Fn(&str) -> Result<(), SymlinkError>,
}

impl Bounds<'static> {
    /// The whole tree, every path allowed: the check the tree readers make,
    /// before anyone knows which app a link belongs to.
    pub const TREE: Bounds<'static> = Bounds {
        dir: "",
        check: &|_| Ok(()),
    };
}

/// Resolves `target`, the text of the symlink at `link_path` (tree-relative), to a
/// tree-relative path without touching any filesystem. It never leaves
/// `bounds.dir` and every path it reaches passes `bounds.check`: resolving through
/// a symlink must be refused there, because lexical resolution is only sound when
/// no component is a link (`up -> ..` then `x -> up/../..` would escape).
pub fn resolve(link_path: &str, target: &[u8], bounds: Bounds<'_>) -> Result<String, SymlinkError> {
    if target.is_empty() {
        return Err(SymlinkError::Empty);
    }
    if target[0] == b'/' {
        return Err(SymlinkError::Absolute);
    }
    if target.contains(&0) {
        return Err(SymlinkError::Nul);
    }
    // Anywhere, not only where the walk below would reach it: `../.git` is
    // named for what it is, whichever app directory it also leaves.
    if super::has_git_component(target) {
        return Err(SymlinkError::IntoGit);
    }
    let floor = components(bounds.dir);
    let mut resolved = components(link_path);
    resolved.pop(); // the link's own name: the target is relative to its directory
    if !resolved.starts_with(&floor) {
        return Err(SymlinkError::Escapes);
    }
    for component in target.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                if resolved.len() == floor.len() {
                    return Err(SymlinkError::Escapes);
                }
                resolved.pop();
            }
            name => {
                resolved.push(name);
                // Non-UTF-8 components cannot name an entry, a link or an app.
                if let Ok(prefix) = std::str::from_utf8(&resolved.join(&b'/')) {
                    (bounds.check)(prefix)?;
                }
            }
        }
    }
    Ok(String::from_utf8_lossy(&resolved.join(&b'/')).into_owned())
}

/// The non-empty `/`-separated components of a tree path.
fn components(path: &str) -> Vec<&[u8]> {
    path.as_bytes()
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_in(dir: &str, link: &str, target: &str) -> Result<String, SymlinkError> {
        let check = |p: &str| match p {
            "d/up" | "loop" => Err(SymlinkError::Chain),
            "a/child" => Err(SymlinkError::IntoNestedApp),
            _ => Ok(()),
        };
        resolve(link, target.as_bytes(), Bounds { dir, check: &check })
    }

    fn check(link: &str, target: &str) -> Result<String, SymlinkError> {
        check_in("", link, target)
    }

    #[test]
    fn in_tree_targets_resolve() {
        assert_eq!(check("a/b/link", "c.yaml").as_deref(), Ok("a/b/c.yaml"));
        assert_eq!(check("a/b/link", "../c.yaml").as_deref(), Ok("a/c.yaml"));
        assert_eq!(check("a/b/link", "./x/../../../top").as_deref(), Ok("top"));
        assert_eq!(check("link", "dir/").as_deref(), Ok("dir"));
    }

    #[test]
    fn hostile_targets_are_refused() {
        assert_eq!(check("a/link", "/etc/passwd"), Err(SymlinkError::Absolute));
        assert_eq!(check("a/link", "../../x"), Err(SymlinkError::Escapes));
        assert_eq!(check("link", ".."), Err(SymlinkError::Escapes));
        assert_eq!(
            check("a/link", "../.git/config"),
            Err(SymlinkError::IntoGit)
        );
        assert_eq!(
            check_in("a", "a/link", "../../.git"),
            Err(SymlinkError::IntoGit)
        );
        assert_eq!(check("a/link", ""), Err(SymlinkError::Empty));
        assert_eq!(check("a/link", "x\0y"), Err(SymlinkError::Nul));
        // `d/up -> ..` is itself fine, but resolving through it is not lexical.
        assert_eq!(check("d/x", "up/../.."), Err(SymlinkError::Chain));
        assert_eq!(check("a", "loop"), Err(SymlinkError::Chain));
    }

    #[test]
    fn targets_stay_inside_the_app_directory_at_every_step() {
        for (dir, link, target, want) in [
            ("a/b", "a/b/c/link", "../x.yaml", Ok("a/b/x.yaml")),
            ("a/b", "a/b/link", "../x.yaml", Err(SymlinkError::Escapes)),
            // Back into the app, but the way out and in is another directory
            // once unpacked elsewhere.
            ("a/b", "a/b/link", "../b/x.yaml", Err(SymlinkError::Escapes)),
            // `a/b` is a prefix of `a/bc` as a string only.
            ("a/b", "a/bc/link", "x.yaml", Err(SymlinkError::Escapes)),
            (
                "a",
                "a/link",
                "child/x.yaml",
                Err(SymlinkError::IntoNestedApp),
            ),
            (
                "a",
                "a/link",
                "other/../child",
                Err(SymlinkError::IntoNestedApp),
            ),
        ] {
            let got = check_in(dir, link, target);
            assert_eq!(
                got.as_deref(),
                want.as_deref(),
                "{link} -> {target} in {dir}"
            );
        }
    }

    #[test]
    fn errors_never_print_the_target() {
        let err = check("a/link", "/etc/shadow").unwrap_err();
        assert!(!err.to_string().contains("shadow"));
    }
}
