//! What the station's metrics read from the store at scrape time: attempts
//! by status, the sync backlog and its age, quarantined changes, queued
//! MQTT events and the store's size on disk. Read on the reader connection
//! (never blocking the writer); attempts, lag and the MQTT queue in one read
//! transaction.

use crate::{Store, StoreError};
use std::time::Duration;

/// The store's facts as of one read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreFacts {
    /// (status as stored, count) for every status present.
    pub attempts_by_status: Vec<(String, u64)>,
    /// Outbox changes not yet at the center.
    pub pending_changes: u64,
    /// How long the oldest of them has waited (None: nothing pending).
    pub oldest_pending_age: Option<Duration>,
    pub quarantined_changes: u64,
    pub mqtt_events_pending: u64,
    /// Database file plus its WAL, in bytes.
    pub size_bytes: u64,
}

impl Store {
    /// Read the store's facts (see [`StoreFacts`]).
    pub fn facts(&self) -> Result<StoreFacts, StoreError> {
        let counts = self.outbox_counts()?;
        let mut f = self.read(|c| {
            let tx = c.unchecked_transaction()?;
            let mut by_status = Vec::new();
            {
                let mut st = tx.prepare("SELECT status, count(*) FROM attempts GROUP BY status ORDER BY status")?;
                let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?;
                for r in rows {
                    by_status.push(r?);
                }
            }
            let wm = crate::outbox::watermark(&tx)?;
            let oldest: Option<String> =
                tx.query_row("SELECT min(changed_at) FROM outbox WHERE state = 'pending' AND seq > ?1", [wm], |r| r.get(0))?;
            let mqtt: i64 = tx.query_row("SELECT count(*) FROM mqtt_events WHERE state = 'pending'", [], |r| r.get(0))?;
            tx.commit()?;
            let now = time::OffsetDateTime::now_utc();
            let oldest_pending_age =
                oldest.as_deref().and_then(crate::parse_ts).map(|t| Duration::try_from(now - t).unwrap_or(Duration::ZERO));
            Ok(StoreFacts {
                attempts_by_status: by_status,
                oldest_pending_age,
                mqtt_events_pending: mqtt.max(0) as u64,
                ..StoreFacts::default()
            })
        })?;
        f.pending_changes = counts.pending;
        f.quarantined_changes = counts.quarantined;
        f.size_bytes = ["", "-wal"]
            .iter()
            .filter_map(|s| {
                let mut p = self.path().as_os_str().to_owned();
                p.push(s);
                std::fs::metadata(p).ok().map(|m| m.len())
            })
            .sum();
        Ok(f)
    }
}
