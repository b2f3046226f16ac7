//! Re-learning a restored station's records from the center. A backup is
//! older than the station's last records: what the station synced after the
//! backup is at the center. Before a restored store provisions again it
//! fetches its own records from the center (its role sees only its own
//! rows): those it lacks are inserted, those the center holds at a later
//! version replace the local copy, and the outbox continues above every
//! version the center has seen. So a device certified after the backup is
//! found by its key (and gets the same certificate, not a second one), the
//! audit trail continues from the center's head, and nothing already at the
//! center is sent again as something else. What was never synced before the
//! store was lost cannot be re-learned: it is missing at both ends.

use crate::config::CentralConfig;
use crate::record::{central_select, central_values};
use crate::verify::connect;
use crate::SyncError;
use imprint_store::synced::{Table, Value, TABLES};
use imprint_store::{hash, Store};
use serde::Serialize;
use sqlx::{AssertSqlSafe, Connection};
use std::collections::HashMap;

/// What re-learning wrote, per record kind.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Relearned {
    /// (kind, records inserted, local records replaced by the center's later version).
    pub kinds: Vec<(String, usize, usize)>,
    /// The highest version the center holds for this station.
    pub center_version: i64,
}

impl Relearned {
    /// Certificates inserted or replaced.
    pub fn certificates(&self) -> usize {
        self.kinds.iter().filter(|k| k.0 == "certificate").map(|k| k.1 + k.2).sum()
    }
    pub fn total(&self) -> usize {
        self.kinds.iter().map(|k| k.1 + k.2).sum()
    }
}

type CentralRows = Vec<(Vec<Value>, i64)>;

async fn central_rows(conn: &mut sqlx::PgConnection, table: &Table, station: &str) -> Result<CentralRows, SyncError> {
    let order = if table.local == "audit" { " ORDER BY c.seq" } else { "" };
    let sql = format!("SELECT {} FROM {} c WHERE c.station_id = $1{order}", central_select(table), table.central);
    let mut out = Vec::new();
    for r in sqlx::query(AssertSqlSafe(sql)).bind(station).fetch_all(&mut *conn).await? {
        let (values, version, _) = central_values(table, &r)?;
        out.push((values, version));
    }
    Ok(out)
}

/// Re-learn `station`'s records from the center into `store` (see the
/// module doc). `chain`: the issuing CA's subject (as recorded) and chain
/// DER, kept with re-learned certificates of that issuer.
pub fn relearn(store: &Store, station: &str, cfg: &CentralConfig, chain: Option<(String, Vec<u8>)>) -> Result<Relearned, SyncError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SyncError::Config(format!("cannot start the sync runtime: {e}")))?;
    let central: Vec<CentralRows> = rt.block_on(async {
        let mut c = connect(cfg, station).await?;
        let mut out = Vec::new();
        for t in TABLES {
            out.push(central_rows(&mut c, t, station).await?);
        }
        let _ = c.close().await;
        Ok::<_, SyncError>(out)
    })?;
    let mut report = Relearned::default();
    let mut batches = Vec::new();
    for (table, rows) in TABLES.iter().copied().zip(central) {
        let local: HashMap<_, _> = store.synced_records(table)?.into_iter().collect();
        let versions = store.record_versions(table.entity)?;
        let (mut missing, mut newer) = (Vec::new(), Vec::new());
        for (values, version) in rows {
            report.center_version = report.center_version.max(version);
            let Some(key) = table.record_key(&values) else { continue };
            match local.get(&key) {
                None => missing.push((values, version)),
                Some(lv) if hash::record(table, station, lv) != hash::record(table, station, &values) => {
                    // The center's copy is later than any change made here.
                    if versions.get(&key).is_none_or(|v| *v <= version) {
                        newer.push((values, version));
                    }
                }
                Some(_) => {}
            }
        }
        report.kinds.push((table.entity.as_str().to_string(), missing.len(), newer.len()));
        batches.push(imprint_store::backup::Relearn { table, missing, newer });
    }
    // One transaction: attempts and certificates reference each other.
    store.write_relearned(batches, chain, report.center_version)?;
    Ok(report)
}
