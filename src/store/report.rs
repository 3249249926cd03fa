//! Drift reports in Redis: the slot claims, the capped stream of reports, the
//! latest one, and each sink's last delivery outcome (docs/reports.md).
//!
//! Not fenced by the epoch: a report is not desired state, and the slot claim
//! already makes one daemon the writer of each slot's report.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::AsyncCommands;

use super::{BATCH, Store, StoreError};
use crate::layout::AppName;

/// `MAXLEN ~` of `canopy:<ns>:reports`: reports are large (every app not
/// synced), and the stream is a recent history, not an archive.
pub const REPORTS_MAXLEN: usize = 100;

impl Store {
    /// Claims one slot of report `name` for `owner`; false if another daemon (or
    /// an earlier run of this one) already did. The claim expires after `ttl`.
    pub async fn claim_report_slot(
        &mut self,
        name: &str,
        slot_ms: i64,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys.report_slot(name, slot_ms))
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut self.conn)
            .await?;
        Ok(set.is_some())
    }

    /// Appends a report (JSON) to the stream and makes it the latest, together.
    pub async fn store_report(
        &mut self,
        name: &str,
        slot: &str,
        payload: &str,
    ) -> Result<(), StoreError> {
        redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(self.keys.reports())
            .arg("MAXLEN")
            .arg("~")
            .arg(REPORTS_MAXLEN)
            .arg("*")
            .arg("name")
            .arg(name)
            .arg("slot")
            .arg(slot)
            .arg("payload")
            .arg(payload)
            .ignore()
            .set(self.keys.report_latest(), payload)
            .ignore()
            .query_async::<()>(&mut self.conn)
            .await?;
        Ok(())
    }

    /// The newest stored report (JSON), if any.
    pub async fn latest_report(&mut self) -> Result<Option<String>, StoreError> {
        Ok(self.conn.get(self.keys.report_latest()).await?)
    }

    /// Records the outcome (JSON) of sink `index` of report `name`.
    pub async fn record_delivery(
        &mut self,
        name: &str,
        index: usize,
        outcome: &str,
    ) -> Result<(), StoreError> {
        let _: () = self
            .conn
            .hset(self.keys.report_deliveries(name), index, outcome)
            .await?;
        Ok(())
    }

    /// The last outcome of each sink of report `name`, by sink index.
    pub async fn report_deliveries(
        &mut self,
        name: &str,
    ) -> Result<BTreeMap<usize, String>, StoreError> {
        Ok(self.conn.hgetall(self.keys.report_deliveries(name)).await?)
    }

    /// Each app's parent as its desired state records it (None: not in Git, or
    /// the root). [`BATCH`] apps per round trip.
    pub async fn parents(&mut self, apps: &[&AppName]) -> Result<Vec<Option<String>>, StoreError> {
        let mut out = Vec::with_capacity(apps.len());
        for batch in apps.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for app in batch {
                pipe.hget(self.keys.app(app).desired(), "parent");
            }
            let replies: Vec<Option<String>> = pipe.query_async(&mut self.conn).await?;
            out.extend(replies.into_iter().map(|p| p.filter(|p| !p.is_empty())));
        }
        Ok(out)
    }
}
