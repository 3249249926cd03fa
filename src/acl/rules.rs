//! What each Redis user may do, as `ACL SETUSER` rules (pure; DESIGN section 8).
//!
//! An app's user reaches its own keys and channel only: it reads every key of
//! its app; it runs the consumer-group commands on its `:events`; it writes its
//! `:heartbeat`, `:observed_files`, `:dead` and, through `canopy_report`, its
//! `:observed`; it subscribes to its own channel; it pings. Redis checks the
//! commands a function runs against the caller's rights, so `canopy_report`
//! needs `:observed` writable and a child could also `HSET` it directly: that
//! only misreports its own app, which the daemon reads strictly (an invalid
//! report is that app's problem). Every daemon function touches the epoch key,
//! which no app user can read: a child calling one gets NOPERM.
//!
//! User names embed app names, which hold `/` and `.`: Redis takes any name
//! without spaces, and the app-name allow-list keeps glob characters out of
//! the key and channel patterns built from them.

use crate::layout::AppName;
use crate::protocol::{AppKeys, Keys};

/// Commands an app's user may run on every key of its app (reads), and
/// without keys (connecting, transactions, its channel).
const APP_COMMANDS: &[&str] = &[
    "+ping",
    // `canopy_report` stamps the report with the server's clock.
    "+time",
    "+hello",
    "+auth",
    "+select",
    "+client|setname",
    "+get",
    "+exists",
    "+type",
    "+ttl",
    "+pttl",
    "+hget",
    "+hmget",
    "+hgetall",
    "+hexists",
    "+hlen",
    "+xrange",
    "+xrevrange",
    "+xlen",
    "+xinfo|stream",
    "+xinfo|groups",
    "+xinfo|consumers",
    "+multi",
    "+exec",
    "+discard",
    "+subscribe",
    "+unsubscribe",
];

/// What an app's user may write, key by key (Redis 7 selectors: each grants
/// its commands on its keys only, so `XADD` works on `:dead` and not on the
/// app's signal stream, `SET` on `:heartbeat` and nowhere else).
///
/// `FCALL` checks the keys it declares as read and written, so its selector
/// names `:observed` and `:desired` (what `canopy_report` declares); the
/// commands the function runs are checked against the user's other rights,
/// which let it write neither `:desired` nor any key of the daemon's.
fn writable(own: &AppKeys) -> [(&'static str, String); 6] {
    [
        ("+fcall", format!("{} ~{}", own.observed(), own.desired())),
        (
            "+xgroup|create +xgroup|createconsumer +xreadgroup +xack +xpending +xclaim +xautoclaim",
            own.events(),
        ),
        ("+set +expire +pexpire +del +unlink", own.heartbeat()),
        // `canopy_report` writes it with HSET, run with the caller's rights.
        ("+hset +del +unlink", own.observed()),
        ("+hset +hdel +del +unlink", own.observed_files()),
        ("+xadd +xtrim +del +unlink", own.dead()),
    ]
}

/// The Redis user of `app` in `namespace`: `canopy:<ns>:app:<app>`.
pub fn app_user(namespace: &str, app: &AppName) -> String {
    format!("{}{app}", app_user_prefix(namespace))
}

/// What every app user's name of `namespace` starts with: which users the
/// daemon manages (it never touches another).
pub fn app_user_prefix(namespace: &str) -> String {
    format!("canopy:{namespace}:app:")
}

/// The app of a user name of `namespace`, if it is an app user's.
pub fn app_of_user(namespace: &str, user: &str) -> Option<AppName> {
    let name = user.strip_prefix(&app_user_prefix(namespace))?;
    if name == "." {
        return Some(AppName::root());
    }
    AppName::parse(name).ok()
}

/// The daemon's Redis user in `namespace`.
pub fn daemon_user(namespace: &str) -> String {
    format!("canopy:{namespace}:daemon")
}

/// `ACL SETUSER <user>` arguments for `app`, accepting the passwords whose
/// sha256 (hex) are `password_hashes` (two during a rotation's grace). `reset`
/// first: whatever the user held before, it holds exactly this.
pub fn app_rules(keys: &Keys, app: &AppName, password_hashes: &[String]) -> Vec<String> {
    let own = keys.app(app);
    let mut rules = vec!["reset".to_owned(), "on".to_owned()];
    rules.extend(password_hashes.iter().map(|hash| format!("#{hash}")));
    rules.push("resetchannels".to_owned());
    rules.push(format!("&{}", own.signal()));
    rules.push("-@all".to_owned());
    rules.extend(APP_COMMANDS.iter().map(|c| (*c).to_owned()));
    rules.push(format!("%R~{}", own.every()));
    for (commands, keys) in writable(&own) {
        rules.push(format!("({commands} ~{keys})"));
    }
    rules
}

/// `ACL SETUSER <daemon user>` arguments: every key and channel of the
/// namespace, every command but the dangerous ones, plus managing ACL users
/// (of which it only touches its namespace's app users) and loading its
/// Functions library.
pub fn daemon_rules(namespace: &str, password_hashes: &[String]) -> Vec<String> {
    let mut rules = vec!["reset".to_owned(), "on".to_owned()];
    rules.extend(password_hashes.iter().map(|hash| format!("#{hash}")));
    rules.extend([
        format!("~canopy:{namespace}:*"),
        "resetchannels".to_owned(),
        format!("&canopy:{namespace}:*"),
        "+@all".to_owned(),
        "-@dangerous".to_owned(),
        "+acl|setuser".to_owned(),
        "+acl|deluser".to_owned(),
        "+acl|getuser".to_owned(),
        "+acl|users".to_owned(),
        "+acl|whoami".to_owned(),
        "+info".to_owned(),
        "+function|load".to_owned(),
        "+function|list".to_owned(),
    ]);
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(app: &str) -> AppName {
        AppName::parse(app).expect("a valid name")
    }

    #[test]
    fn users_are_named_after_their_app_and_back() {
        let user = app_user("prod", &name("payments/api"));
        assert_eq!(user, "canopy:prod:app:payments/api");
        assert_eq!(app_of_user("prod", &user), Some(name("payments/api")));
        assert_eq!(
            app_of_user("prod", &app_user("prod", &AppName::root())),
            Some(AppName::root())
        );
        assert_eq!(app_of_user("staging", &user), None, "another namespace's");
        assert_eq!(app_of_user("prod", "canopy:prod:daemon"), None);
        assert_eq!(app_of_user("prod", "canopy:prod:app:Bad*"), None);
    }

    #[test]
    fn an_apps_rules_name_its_own_keys_and_channel_only() {
        let keys = Keys::new("prod");
        let rules = app_rules(&keys, &name("payments/api"), &["ab".repeat(32)]);
        assert_eq!(
            rules[..3],
            ["reset", "on", &format!("#{}", "ab".repeat(32))]
        );
        let patterns: Vec<&String> = rules
            .iter()
            .filter(|r| r.starts_with('%') || r.starts_with('~') || r.starts_with('&'))
            .collect();
        for pattern in &patterns {
            assert!(
                pattern.contains("canopy:prod:app:{payments/api}:"),
                "{pattern}"
            );
        }
        assert!(rules.contains(&"%R~canopy:prod:app:{payments/api}:*".to_owned()));
        assert!(rules.contains(&"&canopy:prod:app:{payments/api}:signal".to_owned()));
        assert!(
            !rules
                .iter()
                .any(|r| r.contains("@admin") || r == "+keys" || r == "+@all")
        );
    }
}
