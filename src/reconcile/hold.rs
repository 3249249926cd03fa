//! Apps with `depends_on`: their signal is held in the store with their desired
//! state and published once every dependency reports Synced at its current
//! digest, or after the wait timeout (which is logged). Deciding is pure; the
//! cycle reads the held apps and their dependencies' states.

use std::collections::HashMap;

use crate::layout::AppName;
use crate::store::HeldApp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Keep waiting.
    Wait,
    /// Every dependency is Synced.
    Ready,
    /// Waited `depends_on_timeout`; these dependencies are still not Synced.
    TimedOut(Vec<AppName>),
}

/// Whether `held` may be signalled now (`now` and `timeout` in ms).
pub fn release(
    held: &HeldApp,
    synced: &HashMap<&AppName, bool>,
    now: i64,
    timeout: i64,
) -> Release {
    let waiting: Vec<AppName> = held
        .depends_on
        .iter()
        .filter(|dep| !synced.get(dep).copied().unwrap_or(false))
        .cloned()
        .collect();
    if waiting.is_empty() {
        Release::Ready
    } else if now.saturating_sub(held.since) >= timeout {
        Release::TimedOut(waiting)
    } else {
        Release::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> AppName {
        AppName::parse(n).unwrap()
    }

    #[test]
    fn released_when_every_dependency_is_synced_or_after_the_timeout() {
        let (db, cache) = (name("db"), name("cache"));
        let held = HeldApp {
            app: name("api"),
            depends_on: vec![db.clone(), cache.clone()],
            payload: None,
            since: 1_000,
        };
        let mut synced = HashMap::from([(&db, true), (&cache, false)]);
        assert_eq!(release(&held, &synced, 2_000, 60_000), Release::Wait);
        assert_eq!(
            release(&held, &synced, 61_000, 60_000),
            Release::TimedOut(vec![cache.clone()])
        );
        synced.insert(&cache, true);
        assert_eq!(release(&held, &synced, 2_000, 60_000), Release::Ready);
        // A dependency the store knows nothing about is not Synced.
        synced.remove(&cache);
        assert_eq!(release(&held, &synced, 2_000, 60_000), Release::Wait);
    }
}
