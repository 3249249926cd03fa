//! `/`-separated tree paths, relative to the tree or to the root app.

/// `path` relative to the root app's directory, or `None` outside of it.
pub(crate) fn root_relative<'a>(root: &str, path: &'a str) -> Option<&'a str> {
    if root.is_empty() {
        return Some(path);
    }
    path.strip_prefix(root)?.strip_prefix('/')
}

/// (directory, file name) of a `/`-separated path.
pub(crate) fn split_last(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// `dir`, its parent, ... up to `""`.
pub(crate) fn ancestors(dir: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(dir);
    std::iter::from_fn(move || {
        let current = next?;
        next = (!current.is_empty()).then(|| split_last(current).0);
        Some(current)
    })
}

pub(crate) fn join(root: &str, dir: &str) -> String {
    match (root.is_empty(), dir.is_empty()) {
        (true, _) => dir.to_owned(),
        (false, true) => root.to_owned(),
        (false, false) => format!("{root}/{dir}"),
    }
}
