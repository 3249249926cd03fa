//! Reading `canopy tree --output json` in tests.

use std::collections::BTreeSet;

use serde_json::Value;

/// The apps of a tree document.
pub fn apps(tree: &Value) -> impl Iterator<Item = &Value> {
    tree["apps"].as_array().expect("apps is an array").iter()
}

pub fn app<'a>(tree: &'a Value, name: &str) -> Option<&'a Value> {
    apps(tree).find(|a| a["name"] == name)
}

pub fn app_names(tree: &Value) -> BTreeSet<String> {
    apps(tree)
        .map(|a| a["name"].as_str().expect("name").to_owned())
        .collect()
}

/// The app is valid and has a `sha256:` digest.
pub fn assert_digested(tree: &Value, name: &str, what: &str) {
    let app = app(tree, name).unwrap_or_else(|| panic!("{what}: no app {name:?} in {tree}"));
    assert_eq!(app["valid"], true, "{what}: {name} should be valid: {app}");
    let digest = app["digest"].as_str().unwrap_or_default();
    assert!(
        digest.starts_with("sha256:") && digest.len() == "sha256:".len() + 64,
        "{what}: {name} should have a digest: {app}"
    );
}

/// The app exists, is invalid and has no digest.
pub fn assert_invalid(tree: &Value, name: &str, what: &str) {
    let app = app(tree, name).unwrap_or_else(|| panic!("{what}: no app {name:?} in {tree}"));
    assert_eq!(
        app["valid"], false,
        "{what}: {name} should be invalid: {app}"
    );
    assert_eq!(
        app["digest"],
        Value::Null,
        "{what}: {name} must not have a digest: {app}"
    );
}
