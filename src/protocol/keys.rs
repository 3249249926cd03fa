//! The key schema of DESIGN section 5. Every key canopy reads or writes is spelled
//! here and nowhere else. Per-app keys share the hash tag `{<app>}`, so a Redis
//! Cluster would keep one app's keys on one shard; app names are allow-listed
//! (`layout::name`), which keeps them safe inside key and ACL glob patterns.

use crate::layout::AppName;

/// The consumer group the daemon creates on every app stream, at id 0, before the
/// first signal, so a child that starts late still reads its app's history.
pub const CONSUMER_GROUP: &str = "canopy";

/// Version of the key schema and payload format, in `meta.schema`.
pub const SCHEMA_VERSION: u32 = 1;

/// The keys of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// `namespace` must already be validated (config does): it is part of every key.
    pub fn new(namespace: &str) -> Keys {
        Keys {
            prefix: format!("canopy:{namespace}"),
        }
    }

    pub fn meta(&self) -> String {
        format!("{}:meta", self.prefix)
    }

    pub fn epoch(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    pub fn apps(&self) -> String {
        format!("{}:apps", self.prefix)
    }

    pub fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// Apps whose signal waits for their dependencies (canopy's own key).
    pub fn held(&self) -> String {
        format!("{}:held", self.prefix)
    }

    pub fn reports(&self) -> String {
        format!("{}:reports", self.prefix)
    }

    pub fn report_latest(&self) -> String {
        format!("{}:report:latest", self.prefix)
    }

    /// The claim on one slot of a schedule (`SET NX PX`): one report per slot,
    /// whatever the number of daemons. `report` is a validated report name.
    pub fn report_slot(&self, report: &str, slot_ms: i64) -> String {
        format!("{}:report:{report}:slot:{slot_ms}", self.prefix)
    }

    /// The last delivery outcome of each sink of a report (hash: sink index ->
    /// JSON).
    pub fn report_deliveries(&self, report: &str) -> String {
        format!("{}:report:{report}:deliveries", self.prefix)
    }

    pub fn app(&self, app: &AppName) -> AppKeys {
        AppKeys {
            base: format!("{}:app:{{{}}}", self.prefix, app.as_str()),
        }
    }

    /// The pattern matching one kind of per-app key of every app (for SCAN).
    pub fn app_pattern(&self, suffix: &str) -> String {
        format!("{}:app:{{*}}:{suffix}", self.prefix)
    }

    /// The app name inside a per-app key, or `None` if `key` is not one.
    pub fn app_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(":app:{")?;
        let end = rest.find("}:")?;
        Some(&rest[..end])
    }
}

/// The keys of one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppKeys {
    base: String,
}

impl AppKeys {
    /// A glob of every key of this app (for ACL key patterns: the app-name
    /// allow-list keeps glob characters out of `base`).
    pub fn every(&self) -> String {
        format!("{}:*", self.base)
    }
    pub fn desired(&self) -> String {
        format!("{}:desired", self.base)
    }
    pub fn files(&self) -> String {
        format!("{}:files", self.base)
    }
    pub fn config(&self) -> String {
        format!("{}:config", self.base)
    }
    pub fn observed(&self) -> String {
        format!("{}:observed", self.base)
    }
    /// Optional: the manifest the child runs (path -> sha256 hex), for `canopy diff`.
    pub fn observed_files(&self) -> String {
        format!("{}:observed_files", self.base)
    }
    /// Resolved secret values (readable by the app's own user only).
    pub fn secrets(&self) -> String {
        format!("{}:secrets", self.base)
    }
    pub fn heartbeat(&self) -> String {
        format!("{}:heartbeat", self.base)
    }
    pub fn events(&self) -> String {
        format!("{}:events", self.base)
    }
    pub fn signal(&self) -> String {
        format!("{}:signal", self.base)
    }
    pub fn dead(&self) -> String {
        format!("{}:dead", self.base)
    }
    /// The daemon's status record (canopy's own key; see docs/protocol.md).
    pub fn status(&self) -> String {
        format!("{}:status", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_schema() {
        let keys = Keys::new("prod");
        let app = AppName::parse("payments/api").expect("valid name");
        let app_keys = keys.app(&app);
        assert_eq!(keys.meta(), "canopy:prod:meta");
        assert_eq!(app_keys.desired(), "canopy:prod:app:{payments/api}:desired");
        assert_eq!(app_keys.signal(), "canopy:prod:app:{payments/api}:signal");
        assert_eq!(keys.app_of(&app_keys.observed()), Some("payments/api"));
        assert_eq!(keys.app_of("canopy:other:app:{x}:observed"), None);
        assert_eq!(keys.app_pattern("observed"), "canopy:prod:app:{*}:observed");
    }
}
