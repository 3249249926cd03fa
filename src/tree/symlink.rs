//! Symlink targets are untrusted text. They are hashed, never followed, and only
//! accepted when they stay inside the tree: a child app that materialises the files
//! must not be able to reach outside its checkout through one.
//!
//! Errors never include the target text: it may name a secret path on the host.

/// Why a symlink was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SymlinkError {
    #[error("symlink target is empty")]
    Empty,
    #[error("symlink target is an absolute path")]
    Absolute,
    #[error("symlink target escapes the repository")]
    Escapes,
    #[error("symlink target points into .git")]
    IntoGit,
    #[error("symlink target goes through another symlink (chains are not allowed)")]
    Chain,
}

/// Resolves `target`, the text of the symlink at `link_path` (tree-relative), to a
/// tree-relative path without touching any filesystem. `is_symlink` tells whether a
/// tree path is itself a symlink: going through one is refused, because lexical
/// resolution is only sound when no component is a link (`up -> ..` then
/// `x -> up/../..` would escape).
pub fn resolve(
    link_path: &str,
    target: &[u8],
    is_symlink: &dyn Fn(&str) -> bool,
) -> Result<String, SymlinkError> {
    if target.is_empty() {
        return Err(SymlinkError::Empty);
    }
    if target[0] == b'/' {
        return Err(SymlinkError::Absolute);
    }
    let mut parts: Vec<&[u8]> = link_path
        .as_bytes()
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    parts.pop(); // the link's own name: the target is relative to its directory
    let mut resolved = Vec::with_capacity(parts.len() + 4);
    resolved.extend(parts);
    for component in target.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                if resolved.pop().is_none() {
                    return Err(SymlinkError::Escapes);
                }
            }
            b".git" => return Err(SymlinkError::IntoGit),
            name => {
                resolved.push(name);
                // Non-UTF-8 components cannot name an entry, so they cannot be a link.
                if let Ok(prefix) = std::str::from_utf8(&resolved.join(&b'/'))
                    && is_symlink(prefix)
                {
                    return Err(SymlinkError::Chain);
                }
            }
        }
    }
    Ok(String::from_utf8_lossy(&resolved.join(&b'/')).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(link: &str, target: &str) -> Result<String, SymlinkError> {
        resolve(link, target.as_bytes(), &|p| p == "d/up" || p == "loop")
    }

    #[test]
    fn in_repo_targets_resolve() {
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
        assert_eq!(check("a/link", ""), Err(SymlinkError::Empty));
        // `d/up -> ..` is itself fine, but resolving through it is not lexical.
        assert_eq!(check("d/x", "up/../.."), Err(SymlinkError::Chain));
        assert_eq!(check("a", "loop"), Err(SymlinkError::Chain));
    }

    #[test]
    fn errors_never_print_the_target() {
        let err = check("a/link", "/etc/shadow").unwrap_err();
        assert!(!err.to_string().contains("shadow"));
    }
}
