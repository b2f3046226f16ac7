//! Sync status as the local store knows it: no network needed, so
//! `imprint sync status` answers even when the center is down.

use imprint_store::{Quarantine, Store, StoreError, META_LAST_ERROR, META_LAST_ERROR_AT, META_LAST_SUCCESS};
use serde::Serialize;

/// Backlog, last success, last error, quarantined records.
#[derive(Clone, Debug, Serialize)]
pub struct SyncStatus {
    /// `ok` (nothing pending or the last round succeeded), `failing` (the
    /// last round failed), `never` (no round has succeeded yet).
    pub state: &'static str,
    /// Outbox rows not yet at the center.
    pub backlog: u64,
    pub synced: u64,
    /// Outbox rows set aside, and the records they belong to.
    pub quarantined_rows: u64,
    pub quarantined: Vec<Quarantine>,
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

impl SyncStatus {
    pub fn read(store: &Store) -> Result<SyncStatus, StoreError> {
        let c = store.outbox_counts()?;
        let last_success_at = store.meta(META_LAST_SUCCESS)?;
        let last_error = store.meta(META_LAST_ERROR)?;
        let last_error_at = store.meta(META_LAST_ERROR_AT)?;
        // RFC 3339 UTC texts of one format compare as times.
        let failing = match (&last_success_at, &last_error_at) {
            (Some(s), Some(e)) => e > s,
            (None, Some(_)) => true,
            _ => false,
        };
        let state = if failing {
            "failing"
        } else if last_success_at.is_some() || (c.pending == 0 && c.synced == 0) {
            "ok"
        } else {
            "never"
        };
        Ok(SyncStatus {
            state,
            backlog: c.pending,
            synced: c.synced,
            quarantined_rows: c.quarantined,
            quarantined: store.quarantined()?,
            last_success_at,
            last_error,
            last_error_at,
        })
    }
}
