//! The sync outbox: what has changed locally and not yet reached the center.
//!
//! Every change to a record writes an `outbox` row in the **same SQLite
//! transaction** as the change ([`enqueue`], called from the closures in
//! `records.rs`). The outbox row's `seq` is the record's *version*: a record's
//! current content is always the content of its highest `seq`. The sync
//! worker (crate `imprint-sync`) reads a batch of pending changes with
//! [`Store::pending_changes`] (record content and version read in one
//! snapshot), sends it, and then marks it with [`Store::mark_synced`] or
//! [`Store::quarantine`]. Marking is by `(record, seq <= version)`, so a change
//! made while a batch was on the wire stays pending.

use crate::synced::{read_values, Table, Value, STEPS, TABLES};
use crate::{now_text, Store, StoreError};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;
use std::collections::HashMap;

/// station_meta keys kept by the sync worker.
pub const META_LAST_SUCCESS: &str = "sync.last_success_at";
pub const META_LAST_ERROR: &str = "sync.last_error";
pub const META_LAST_ERROR_AT: &str = "sync.last_error_at";
/// Every outbox row with `seq` at or below this is resolved: synced, or
/// `quarantined` (its `state` says so). Moving one number per batch instead
/// of rewriting every row keeps marking O(1); rows above it are pending
/// unless their `state` says otherwise.
pub const META_WATERMARK: &str = "sync.watermark";

pub(crate) fn watermark(c: &Connection) -> rusqlite::Result<i64> {
    let v: Option<String> = c.query_row("SELECT value FROM station_meta WHERE key = ?1", [META_WATERMARK], |r| r.get(0)).optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// The kinds of record that are synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    Attempt,
    Step,
    Certificate,
    /// An audit trail entry (`crate::audit`).
    Audit,
    /// A QA verdict (`crate::qa`).
    QaVerdict,
    /// A supervisor's rework authorisation (`crate::rework`).
    ReworkAuthorisation,
    /// An entry of the station's lease journal (`crate::leases`).
    LeaseEvent,
}

impl Entity {
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Attempt => "attempt",
            Entity::Step => "step",
            Entity::Certificate => "certificate",
            Entity::Audit => "audit",
            Entity::QaVerdict => "qa_verdict",
            Entity::ReworkAuthorisation => "rework_authorisation",
            Entity::LeaseEvent => "lease_event",
        }
    }

    pub fn parse(s: &str) -> Option<Entity> {
        match s {
            "attempt" => Some(Entity::Attempt),
            "step" => Some(Entity::Step),
            "certificate" => Some(Entity::Certificate),
            "audit" => Some(Entity::Audit),
            "qa_verdict" => Some(Entity::QaVerdict),
            "rework_authorisation" => Some(Entity::ReworkAuthorisation),
            "lease_event" => Some(Entity::LeaseEvent),
            _ => None,
        }
    }
}

/// Queue a change of one record, inside the transaction that makes it.
/// `step_no` is the local `steps.id` for steps and 0 otherwise.
pub(crate) fn enqueue(t: &Transaction<'_>, entity: Entity, id: &str, step_no: i64) -> rusqlite::Result<()> {
    t.prepare_cached("INSERT INTO outbox(entity, entity_id, step_no, changed_at) VALUES (?1, ?2, ?3, ?4)")?.execute(params![
        entity.as_str(),
        id,
        step_no,
        now_text()
    ])?;
    Ok(())
}

/// One record: attempts and certificates by id; steps by their attempt's id
/// and their local number.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RecordKey {
    pub entity: Entity,
    pub id: String,
    pub step_no: i64,
}

impl std::fmt::Display for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.entity {
            Entity::Step => write!(f, "step {}#{}", self.id, self.step_no),
            e => write!(f, "{} {}", e.as_str(), self.id),
        }
    }
}

/// The current content of a changed record: its raw values in the order of
/// its table's columns (`crate::synced`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordState {
    Present(Vec<Value>),
    /// The outbox names a record that is not there (edited outside Imprint).
    Missing,
}

/// A record with pending changes, at its latest version.
#[derive(Clone, Debug)]
pub struct PendingChange {
    pub key: RecordKey,
    /// The outbox `seq` of the record's latest change.
    pub version: i64,
    pub state: RecordState,
}

impl PendingChange {
    /// The record's table.
    pub fn table(&self) -> &'static Table {
        crate::synced::table(self.key.entity)
    }

    /// A column's current value by name (`None`: no such column, or the record is missing).
    pub fn get(&self, column: &str) -> Option<&Value> {
        match &self.state {
            RecordState::Present(v) => v.get(self.table().position(column)?),
            RecordState::Missing => None,
        }
    }
}

/// Outbox rows by state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutboxCounts {
    pub pending: u64,
    pub synced: u64,
    pub quarantined: u64,
}

/// A record set aside because its content conflicts with the center's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Quarantine {
    /// Its row in `sync_quarantine` (0 before it is stored): what an operator
    /// names to release it (`imprint sync release ID`).
    pub id: i64,
    pub key: RecordKey,
    pub version: i64,
    pub reason: String,
    pub local_sha256: String,
    pub central_sha256: Option<String>,
    pub at: String,
    pub audit_id: String,
    pub reported_at: Option<String>,
}

fn json_array<T: Serialize>(v: &[T]) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::NotFound(format!("encoding ids: {e}")))
}

/// One batch of pending changes, and the highest outbox `seq` it covers.
#[derive(Clone, Debug, Default)]
pub struct PendingBatch {
    pub changes: Vec<PendingChange>,
    /// Every pending change with `seq <= hi` (and `> after`) is in `changes`.
    pub hi: i64,
}

fn read_after(c: &Connection, after: i64, limit: usize) -> Result<PendingBatch, StoreError> {
    let after = after.max(watermark(c)?);
    // Steps (most rows) come with their outbox rows in one pass.
    let mut s = c.prepare_cached(&format!(
        "SELECT o.seq, o.entity, o.entity_id, o.step_no, {}
         FROM outbox o LEFT JOIN {} s ON o.entity = 'step' AND s.id = o.step_no
         WHERE o.state = 'pending' AND o.seq > ?1 ORDER BY o.seq LIMIT ?2",
        STEPS.select("s"),
        STEPS.local
    ))?;
    let mut rows = s.query(params![after, limit as i64])?;
    let mut hi = after;
    let mut out: Vec<PendingChange> = Vec::new();
    // Attempts and certificates: each once, at the position of its first change here.
    let mut index: HashMap<(Entity, String), usize> = HashMap::new();
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        hi = seq;
        let Some(entity) = r.get_ref(1)?.as_str().ok().and_then(Entity::parse) else {
            continue;
        };
        let id: String = r.get(2)?;
        let n: i64 = r.get(3)?;
        if entity == Entity::Step {
            let values = read_values(r, 4, STEPS.columns.len())?;
            let key = RecordKey { entity, id, step_no: n };
            // No joined row (the step is gone): its key columns read NULL.
            let state = if STEPS.is_record(&values, &key) { RecordState::Present(values) } else { RecordState::Missing };
            out.push(PendingChange { key, version: seq, state });
            continue;
        }
        match index.get(&(entity, id.clone())) {
            Some(&i) => out[i].version = out[i].version.max(seq),
            None => {
                index.insert((entity, id.clone()), out.len());
                out.push(PendingChange { key: RecordKey { entity, id, step_no: n }, version: seq, state: RecordState::Missing });
            }
        }
    }
    drop(rows);
    if index.is_empty() {
        return Ok(PendingBatch { changes: out, hi });
    }
    // Attempts and certificates change: send their latest version, which may
    // lie beyond this batch, with their current content.
    let mut ids_of: HashMap<Entity, Vec<String>> = HashMap::new();
    for &(entity, ref id) in index.keys() {
        ids_of.entry(entity).or_default().push(id.clone());
    }
    for table in TABLES {
        let Some(ids) = ids_of.remove(&table.entity) else { continue };
        latest_versions(c, table.entity, &ids, |id, v| {
            if let Some(&i) = index.get(&(table.entity, id)) {
                out[i].version = out[i].version.max(v);
            }
        })?;
        read_current(c, table, &ids, |key, values| {
            if let Some(&i) = index.get(&(key.entity, key.id)) {
                out[i].state = RecordState::Present(values);
            }
        })?;
    }
    Ok(PendingBatch { changes: out, hi })
}

/// The latest outbox `seq` of each id-keyed record of `entity` in `ids`, in
/// one statement (issue 18: it was one `SELECT max(seq)` per record, some
/// 770 per batch of 8,000 changes). Each id is still one lookup at the end
/// of its range of `outbox_by_entity` (`entity_id, entity, step_no, seq`);
/// an id without outbox rows gets none.
fn latest_versions(c: &Connection, entity: Entity, ids: &[String], mut each: impl FnMut(String, i64)) -> Result<(), StoreError> {
    let mut s = c.prepare_cached(
        "SELECT j.value, (SELECT max(o.seq) FROM outbox o WHERE o.entity_id = j.value AND o.entity = ?2 AND o.step_no = 0)
         FROM json_each(?1) j",
    )?;
    let mut rows = s.query(params![json_array(ids)?, entity.as_str()])?;
    while let Some(r) = rows.next()? {
        if let Some(v) = r.get::<_, Option<i64>>(1)? {
            each(r.get(0)?, v);
        }
    }
    Ok(())
}

/// The current rows of records of an id-keyed table, by id.
fn read_current(
    c: &Connection,
    table: &'static Table,
    ids: &[String],
    mut each: impl FnMut(RecordKey, Vec<Value>),
) -> Result<(), StoreError> {
    let mut s =
        c.prepare_cached(&format!("SELECT {} FROM {} t WHERE t.id IN (SELECT value FROM json_each(?1))", table.select("t"), table.local))?;
    let mut rows = s.query([json_array(ids)?])?;
    while let Some(r) = rows.next()? {
        let values = read_values(r, 0, table.columns.len())?;
        if let Some(key) = table.record_key(&values) {
            each(key, values);
        }
    }
    Ok(())
}

/// Set the state of a record's pending changes in (`floor`, `version`].
fn set_outbox_state(t: &Transaction<'_>, key: &RecordKey, floor: i64, version: i64, state: &str, at: &str) -> rusqlite::Result<usize> {
    t.prepare_cached(
        "UPDATE outbox SET state = ?5, synced_at = ?6
         WHERE entity_id = ?1 AND entity = ?2 AND step_no = ?3 AND seq <= ?4 AND seq > ?7 AND state = 'pending'",
    )?
    .execute(params![key.id, key.entity.as_str(), key.step_no, version, state, at, floor])
}

fn insert_quarantine(t: &Transaction<'_>, q: &Quarantine, floor: i64) -> rusqlite::Result<()> {
    t.prepare_cached(
        "INSERT INTO sync_quarantine(entity, entity_id, step_no, version, reason, local_sha256, central_sha256, at, audit_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
    )?
    .execute(params![
        q.key.entity.as_str(),
        q.key.id,
        q.key.step_no,
        q.version,
        q.reason,
        q.local_sha256,
        q.central_sha256,
        q.at,
        q.audit_id
    ])?;
    set_outbox_state(t, &q.key, floor, q.version, "quarantined", &q.at)?;
    Ok(())
}

fn quarantine_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Quarantine> {
    let entity: String = r.get(0)?;
    Ok(Quarantine {
        key: RecordKey { entity: Entity::parse(&entity).unwrap_or(Entity::Attempt), id: r.get(1)?, step_no: r.get(2)? },
        version: r.get(3)?,
        reason: r.get(4)?,
        local_sha256: r.get(5)?,
        central_sha256: r.get(6)?,
        at: r.get(7)?,
        audit_id: r.get(8)?,
        reported_at: r.get(9)?,
        id: r.get(10)?,
    })
}

const QUARANTINE_COLS: &str = "entity, entity_id, step_no, version, reason, local_sha256, central_sha256, at, audit_id, reported_at, id";

/// A quarantine released by an operator: what was released, by whom, why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QuarantineRelease {
    /// The record, queued again for the next sync round.
    pub key: RecordKey,
    /// The quarantine rows released (every open one of the record).
    pub released: Vec<Quarantine>,
    pub operator: String,
    pub comment: String,
    pub at: String,
    /// The `quarantine_released` audit entry's sequence number.
    pub audit_seq: i64,
}

impl Store {
    /// The records among the first `limit` pending outbox rows, each with its
    /// current content and latest version, read in one snapshot.
    pub fn pending_changes(&self, limit: usize) -> Result<Vec<PendingChange>, StoreError> {
        self.read(move |c| {
            let tx = c.unchecked_transaction()?;
            let out = read_after(&tx, 0, limit)?;
            tx.commit()?;
            Ok(out.changes)
        })
    }

    /// The pending changes after outbox `seq` `after` (at most `limit`), each
    /// changed record once with its current content and latest version, read
    /// in one snapshot. Read ahead with `after` = the previous batch's `hi`.
    pub fn pending_after(&self, after: i64, limit: usize) -> Result<PendingBatch, StoreError> {
        self.read(move |c| {
            let tx = c.unchecked_transaction()?;
            let out = read_after(&tx, after, limit)?;
            tx.commit()?;
            Ok(out)
        })
    }

    /// A batch read by [`Store::pending_after`] reached the center: record
    /// its quarantines, mark every other pending change up to `hi` synced
    /// (one range update), and changes beyond `hi` of the records in `beyond`
    /// up to their version. One transaction; notes the time of this success.
    pub fn mark_batch(&self, hi: i64, beyond: Vec<(RecordKey, i64)>, quarantine: Vec<Quarantine>) -> Result<(), StoreError> {
        self.write(move |t| {
            let at = now_text();
            let floor = watermark(t)?;
            for q in &quarantine {
                insert_quarantine(t, q, floor)?;
            }
            let hi = hi.max(floor);
            for (key, version) in beyond.iter().filter(|(_, v)| *v > hi) {
                set_outbox_state(t, key, hi, *version, "synced", &at)?;
            }
            let mut meta = t.prepare_cached(
                "INSERT INTO station_meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )?;
            meta.execute(params![META_WATERMARK, hi.to_string()])?;
            meta.execute(params![META_LAST_SUCCESS, at])?;
            Ok(())
        })
    }

    /// The center holds these records at these versions: mark their changes
    /// up to `version` synced, and note the time of this success.
    pub fn mark_synced(&self, done: Vec<(RecordKey, i64)>) -> Result<usize, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.write(move |t| {
            let at = now_text();
            let floor = watermark(t)?;
            let mut n = 0;
            for (key, version) in &done {
                n += set_outbox_state(t, key, floor, *version, "synced", &at)?;
            }
            t.execute(
                "INSERT INTO station_meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![META_LAST_SUCCESS, at],
            )?;
            let _ = tx.send(n);
            Ok(())
        })?;
        Ok(rx.recv().unwrap_or(0))
    }

    /// Set records aside: their changes up to `version` stop being sent, and
    /// each gets a row in `sync_quarantine` (reported by `imprint sync status`).
    /// The record itself is left exactly as it is.
    pub fn quarantine(&self, items: Vec<Quarantine>) -> Result<(), StoreError> {
        self.write(move |t| {
            let floor = watermark(t)?;
            for q in &items {
                insert_quarantine(t, q, floor)?;
            }
            Ok(())
        })
    }

    /// Every quarantined record not released yet, oldest first.
    pub fn quarantined(&self) -> Result<Vec<Quarantine>, StoreError> {
        self.read(|c| {
            let mut s = c.prepare(&format!("SELECT {QUARANTINE_COLS} FROM sync_quarantine WHERE released_at IS NULL ORDER BY id"))?;
            let rows = s.query_map([], quarantine_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Release a quarantined record after an operator resolved its conflict:
    /// every open quarantine row of the record named by quarantine `id` is
    /// marked released (time, operator, comment), the record is queued again
    /// at its current content, and a `quarantine_released` audit entry
    /// anchoring that content is appended, in one transaction. Nothing is
    /// resolved silently: if the conflict still stands, the next round
    /// quarantines the record again. A quarantine that does not exist or was
    /// released already is `NotFound`.
    pub fn release_quarantine(&self, id: i64, operator: &str, comment: &str) -> Result<QuarantineRelease, StoreError> {
        let (operator, comment) = (operator.to_string(), comment.to_string());
        let station = self.station_id();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.write(move |t| {
            let first = t
                .query_row(&format!("SELECT {QUARANTINE_COLS} FROM sync_quarantine WHERE id = ?1"), [id], quarantine_row)
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("no quarantined record #{id}")))?;
            let key = first.key.clone();
            let mut s = t.prepare_cached(&format!(
                "SELECT {QUARANTINE_COLS} FROM sync_quarantine
                 WHERE entity_id = ?1 AND entity = ?2 AND step_no = ?3 AND released_at IS NULL ORDER BY id"
            ))?;
            let open = s.query_map(params![key.id, key.entity.as_str(), key.step_no], quarantine_row)?.collect::<Result<Vec<_>, _>>()?;
            drop(s);
            if open.is_empty() {
                return Err(StoreError::NotFound(format!("quarantine #{id} ({key}) was released already")));
            }
            let at = now_text();
            t.prepare_cached(
                "UPDATE sync_quarantine SET released_at = ?4, released_by = ?5, release_comment = ?6
                 WHERE entity_id = ?1 AND entity = ?2 AND step_no = ?3 AND released_at IS NULL",
            )?
            .execute(params![key.id, key.entity.as_str(), key.step_no, at, operator, comment])?;
            enqueue(t, key.entity, &key.id, key.step_no)?;
            let mut entry = crate::audit::NewEntry::new(crate::types::AuditKind::QuarantineReleased);
            entry.operator = Some(operator.clone());
            entry.subject = Some(key.to_string());
            entry.detail = serde_json::json!({
                "quarantines": open.iter().map(|q| q.id).collect::<Vec<_>>(),
                "reasons": open.iter().map(|q| q.reason.clone()).collect::<Vec<_>>(),
                "comment": comment,
            });
            entry.anchor = vec![key.clone()];
            let e = crate::audit::append_in(t, &station, &entry)?;
            let _ = tx.send(QuarantineRelease { key, released: open, operator, comment, at, audit_seq: e.seq });
            Ok(())
        })?;
        rx.recv().map_err(|_| StoreError::WriterGone)
    }

    /// Quarantined records whose audit event has not reached the center yet.
    pub fn unreported_quarantine(&self) -> Result<Vec<Quarantine>, StoreError> {
        self.read(|c| {
            let mut s = c.prepare(&format!("SELECT {QUARANTINE_COLS} FROM sync_quarantine WHERE reported_at IS NULL ORDER BY id"))?;
            let rows = s.query_map([], quarantine_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// The audit events about these quarantined records reached the center.
    pub fn mark_quarantine_reported(&self, audit_ids: Vec<String>) -> Result<(), StoreError> {
        self.write(move |t| {
            let at = now_text();
            for id in &audit_ids {
                t.prepare_cached("UPDATE sync_quarantine SET reported_at = ?2 WHERE audit_id = ?1 AND reported_at IS NULL")?
                    .execute(params![id, at])?;
            }
            Ok(())
        })
    }

    /// Outbox rows by state: `pending` is the sync backlog.
    pub fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        self.read(|c| {
            let tx = c.unchecked_transaction()?;
            let wm = watermark(&tx)?;
            let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<u64> {
                tx.query_row(sql, p, |r| r.get::<_, i64>(0)).map(|n| n.max(0) as u64)
            };
            let pending = count("SELECT count(*) FROM outbox WHERE state = 'pending' AND seq > ?1", &[&wm])?;
            // Changes of records still in quarantine (a released record's
            // old changes stay `quarantined` as history; it is queued anew).
            let quarantined = count(
                "SELECT count(*) FROM outbox o WHERE o.state = 'quarantined' AND EXISTS (SELECT 1 FROM sync_quarantine q
                 WHERE q.entity_id = o.entity_id AND q.entity = o.entity AND q.step_no = o.step_no AND q.released_at IS NULL)",
                &[],
            )?;
            let total = count("SELECT count(*) FROM outbox", &[])?;
            tx.commit()?;
            Ok(OutboxCounts { pending, synced: total.saturating_sub(pending + quarantined), quarantined })
        })
    }

    /// Attempts with a change not yet at the center (an attempt, its steps
    /// and its certificate count once): the backlog in records, as shown to
    /// an operator (`outbox_counts().pending` counts changes).
    pub fn pending_records(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            let tx = c.unchecked_transaction()?;
            let wm = watermark(&tx)?;
            let n: i64 = tx.query_row(
                "SELECT count(DISTINCT CASE o.entity WHEN 'certificate'
                        THEN coalesce((SELECT attempt_id FROM certificates WHERE id = o.entity_id), o.entity_id)
                        WHEN 'audit'
                        THEN coalesce((SELECT subject FROM audit WHERE id = o.entity_id AND kind = 'provisioning_outcome'), o.entity_id)
                        ELSE o.entity_id END)
                 FROM outbox o WHERE o.state = 'pending' AND o.seq > ?1",
                [wm],
                |r| r.get(0),
            )?;
            tx.commit()?;
            Ok(n.max(0) as u64)
        })
    }

    /// Records with a change the center does not hold (pending) and
    /// records set aside (quarantined): a difference from the center is
    /// expected for them (`imprint sync verify`).
    pub fn unsynced_keys(&self) -> Result<(std::collections::HashSet<RecordKey>, std::collections::HashSet<RecordKey>), StoreError> {
        self.read(|c| {
            let tx = c.unchecked_transaction()?;
            let wm = watermark(&tx)?;
            let keys = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<std::collections::HashSet<RecordKey>> {
                let mut s = tx.prepare(sql)?;
                let rows = s.query_map(p, |r| {
                    let e: String = r.get(0)?;
                    Ok((Entity::parse(&e), r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
                })?;
                let mut out = std::collections::HashSet::new();
                for row in rows {
                    let (e, id, step_no) = row?;
                    if let Some(entity) = e {
                        out.insert(RecordKey { entity, id, step_no });
                    }
                }
                Ok(out)
            };
            let pending = keys("SELECT DISTINCT entity, entity_id, step_no FROM outbox WHERE state = 'pending' AND seq > ?1", &[&wm])?;
            let quarantined = keys("SELECT DISTINCT entity, entity_id, step_no FROM outbox WHERE state = 'quarantined'", &[])?;
            tx.commit()?;
            Ok((pending, quarantined))
        })
    }

    /// Note a failed sync round (the message must hold no secret).
    pub fn record_sync_error(&self, message: &str) -> Result<(), StoreError> {
        let m = message.to_string();
        self.write(move |t| {
            let at = now_text();
            for (k, v) in [(META_LAST_ERROR, m.as_str()), (META_LAST_ERROR_AT, at.as_str())] {
                t.execute(
                    "INSERT INTO station_meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    params![k, v],
                )?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::records::{new_id, AttemptEnd, DeviceFacts, Intent, StepRow};

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("station.db")).unwrap();
        (d, s)
    }

    fn outbox(s: &Store) -> Vec<(String, String, i64)> {
        s.read(|c| {
            let mut st = c.prepare("SELECT entity, entity_id, step_no FROM outbox ORDER BY seq")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .unwrap()
    }

    fn step(stage: &str) -> StepRow {
        StepRow { at: now_text(), stage: stage.into(), kind: "started".into(), detail: String::new() }
    }

    #[test]
    fn every_record_change_writes_an_outbox_row_in_its_transaction() {
        let (_d, s) = store();
        let a = s.begin_attempt("p", None).unwrap();
        s.record_steps(&a, vec![step("identify"), step("keygen")]).unwrap();
        s.set_device(&a, &DeviceFacts { serial: "SN1".into(), ..Default::default() }).unwrap();
        s.set_key(&a, "k").unwrap();
        let cert = new_id();
        s.journal_intent(&Intent {
            id: cert.clone(),
            attempt_id: a.clone(),
            device_serial: "SN1".into(),
            issuer: "CN=CA".into(),
            serial_hex: "01".into(),
            spki_sha256: "k".into(),
            spki_der: vec![1],
            not_before: crate::Timestamp::now(),
            not_after: crate::Timestamp::now(),
        })
        .unwrap();
        s.mark_issued(&cert, b"c", b"ch", "fp").unwrap();
        s.finish_attempt(&a, AttemptEnd::Passed { resumed: false }, 1, 2).unwrap();
        let kinds: Vec<String> = outbox(&s).into_iter().map(|(e, _, n)| if n > 0 { format!("{e}#{n}") } else { e }).collect();
        assert_eq!(
            kinds,
            ["attempt", "step#1", "step#2", "attempt", "attempt", "attempt", "certificate", "attempt", "certificate", "attempt", "audit"],
            "the finish appends its provisioning outcome to the audit trail in the same transaction"
        );
        // A change that fails rolls back with its outbox row.
        let before = outbox(&s).len();
        assert!(s.mark_issued(&cert, b"x", b"y", "fp").is_err());
        assert_eq!(outbox(&s).len(), before);
    }

    #[test]
    fn pending_changes_give_each_record_once_at_its_latest_version() {
        let (_d, s) = store();
        let a = s.begin_attempt("p", None).unwrap();
        s.record_steps(&a, vec![step("identify")]).unwrap();
        s.finish_attempt(&a, AttemptEnd::Passed { resumed: false }, 1, 2).unwrap();
        let p = s.pending_changes(100).unwrap();
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(p[0].key.entity, Entity::Attempt);
        assert_eq!(p[0].version, 4, "the finish is the attempt's 4th change (begin, stage, finish) = seq 4");
        assert_eq!(p[0].get("status"), Some(&Value::Text("passed".into())));
        assert_eq!((p[1].get("stage"), p[1].get("n")), (Some(&Value::Text("identify".into())), Some(&Value::Int(1))));
        assert_eq!(
            (p[2].key.entity, p[2].version, p[2].get("kind")),
            (Entity::Audit, 5, Some(&Value::Text("provisioning_outcome".into())))
        );
        // Marking at an older version leaves the newer change pending.
        s.mark_synced(vec![(p[0].key.clone(), 1), (p[1].key.clone(), p[1].version), (p[2].key.clone(), 5)]).unwrap();
        let c = s.outbox_counts().unwrap();
        assert_eq!((c.pending, c.synced), (2, 3));
        let p2 = s.pending_changes(100).unwrap();
        assert_eq!(p2.len(), 1);
        assert_eq!(p2[0].version, 4);
        s.mark_synced(vec![(p2[0].key.clone(), 4)]).unwrap();
        assert_eq!(s.outbox_counts().unwrap().pending, 0);
        assert!(s.meta(META_LAST_SUCCESS).unwrap().is_some());
    }

    #[test]
    fn batches_read_ahead_and_mark_by_range_without_losing_later_changes() {
        let (_d, s) = store();
        let a = s.begin_attempt("p", None).unwrap(); // seq 1
        s.record_steps(&a, vec![step("identify"), step("keygen")]).unwrap(); // 2, 3 (steps), 4 (attempt)
        let b1 = s.pending_after(0, 2).unwrap();
        assert_eq!(b1.hi, 2);
        assert_eq!(b1.changes.len(), 2);
        assert_eq!(b1.changes[0].version, 4, "the attempt goes at its latest version");
        let b2 = s.pending_after(b1.hi, 10).unwrap();
        assert_eq!((b2.hi, b2.changes.len()), (4, 2), "step #2 and the attempt again");
        s.finish_attempt(&a, AttemptEnd::Passed { resumed: false }, 1, 1).unwrap(); // 5 (+ 6: its audit entry), after both reads
        s.mark_batch(b1.hi, vec![(b1.changes[0].key.clone(), 4)], vec![]).unwrap();
        assert_eq!(s.outbox_counts().unwrap(), OutboxCounts { pending: 3, synced: 3, quarantined: 0 });
        s.mark_batch(b2.hi, vec![], vec![]).unwrap();
        let left = s.pending_changes(10).unwrap();
        assert_eq!(left.len(), 2);
        assert_eq!(left[0].version, 5, "the change made meanwhile is still pending");
        assert_eq!((left[1].key.entity, left[1].version), (Entity::Audit, 6));
    }

    /// `read_after` reads the latest versions of a batch's attempts,
    /// certificates and audit entries in one statement per kind (issue 18);
    /// each must equal what the per-record `SELECT max(seq)` it replaced gives,
    /// also when the latest change lies beyond the batch.
    #[test]
    fn latest_versions_in_one_query_equal_the_per_record_lookups() {
        let (_d, s) = store();
        let mut attempts = Vec::new();
        for i in 0..6 {
            let a = s.begin_attempt(&format!("p{i}"), None).unwrap();
            s.record_steps(&a, vec![step("identify"), step("keygen")]).unwrap();
            attempts.push(a);
        }
        // Changed again in turns: their latest changes lie beyond early batches.
        for a in &attempts {
            s.finish_attempt(a, AttemptEnd::Passed { resumed: false }, 1, 2).unwrap();
        }
        let per_record = |key: &RecordKey| -> i64 {
            s.read(|c| {
                Ok(c.query_row(
                    "SELECT max(seq) FROM outbox WHERE entity_id = ?1 AND entity = ?2 AND step_no = 0",
                    params![key.id, key.entity.as_str()],
                    |r| r.get(0),
                )?)
            })
            .unwrap()
        };
        let (mut checked, mut beyond) = (0, 0);
        for limit in [1, 2, 3, 5, 8, 13, 1000] {
            let mut after = 0;
            loop {
                let b = s.pending_after(after, limit).unwrap();
                if b.changes.is_empty() {
                    break;
                }
                for c in b.changes.iter().filter(|c| c.key.entity != Entity::Step) {
                    assert_eq!(c.version, per_record(&c.key), "{} (limit {limit}, after {after})", c.key);
                    checked += 1;
                    beyond += usize::from(c.version > b.hi);
                }
                after = b.hi;
            }
        }
        assert!(checked > 40 && beyond > 5, "{checked} records checked, {beyond} with their latest change beyond the batch");
    }

    #[test]
    fn quarantine_sets_the_record_aside_without_touching_it() {
        let (_d, s) = store();
        let a = s.begin_attempt("p", None).unwrap();
        let p = s.pending_changes(10).unwrap();
        s.quarantine(vec![Quarantine {
            id: 0,
            key: p[0].key.clone(),
            version: p[0].version,
            reason: "differs".into(),
            local_sha256: "aa".into(),
            central_sha256: Some("bb".into()),
            at: now_text(),
            audit_id: new_id(),
            reported_at: None,
        }])
        .unwrap();
        assert_eq!(s.outbox_counts().unwrap(), OutboxCounts { pending: 0, synced: 0, quarantined: 1 });
        assert_eq!(s.quarantined().unwrap().len(), 1);
        assert_eq!(s.attempt(&a).unwrap().unwrap().status.to_string(), "running");
        let q = s.unreported_quarantine().unwrap();
        s.mark_quarantine_reported(vec![q[0].audit_id.clone()]).unwrap();
        assert!(s.unreported_quarantine().unwrap().is_empty());
    }

    #[test]
    fn releasing_a_quarantine_queues_the_record_again_audits_it_and_only_once() {
        let (_d, s) = store();
        s.begin_attempt("p", None).unwrap();
        let p = s.pending_changes(10).unwrap();
        s.mark_batch(p.last().map(|c| c.version).unwrap_or(0), Vec::new(), Vec::new()).unwrap();
        let q = |version: i64| Quarantine {
            id: 0,
            key: p[0].key.clone(),
            version,
            reason: format!("differs at v{version}"),
            local_sha256: "aa".into(),
            central_sha256: Some("bb".into()),
            at: now_text(),
            audit_id: new_id(),
            reported_at: None,
        };
        s.quarantine(vec![q(p[0].version), q(p[0].version + 1000)]).unwrap();
        let open = s.quarantined().unwrap();
        assert_eq!(open.len(), 2);
        assert!(open.iter().all(|q| q.id > 0), "{open:?}");
        assert_eq!(s.outbox_counts().unwrap().pending, 0);
        let audit_before = s.audit_entries(&Default::default()).unwrap().len();

        // Released by the first row's id: every open row of the record goes.
        let r = s.release_quarantine(open[0].id, "super", "center fixed by hand (ticket 42)").unwrap();
        assert_eq!((r.key.clone(), r.released.len(), r.operator.as_str()), (p[0].key.clone(), 2, "super"));
        assert!(s.quarantined().unwrap().is_empty());
        assert_eq!(s.outbox_counts().unwrap().quarantined, 0, "a released record's old changes are history, not quarantined");
        let again = s.pending_changes(10).unwrap();
        assert_eq!(again.iter().filter(|c| c.key == p[0].key).count(), 1, "the record is queued again: {again:?}");
        let entries = s.audit_entries(&Default::default()).unwrap();
        assert_eq!(entries.len(), audit_before + 1);
        let e = entries.last().unwrap();
        assert_eq!(
            (e.kind.to_string(), e.operator.as_deref(), e.subject.clone()),
            ("quarantine_released".into(), Some("super"), Some(p[0].key.to_string()))
        );
        assert!(e.detail.contains("ticket 42"), "{}", e.detail);
        let anchors: serde_json::Value = serde_json::from_str(&e.anchors).unwrap();
        assert_eq!(anchors.as_array().map(|a| a.len()), Some(1), "the released content is pinned: {e:?}");
        // Twice, or a quarantine that never was: refused, nothing written.
        for id in [open[0].id, open[1].id, 999] {
            assert!(matches!(s.release_quarantine(id, "super", "again"), Err(StoreError::NotFound(_))), "{id}");
        }
        assert_eq!(s.audit_entries(&Default::default()).unwrap().len(), audit_before + 1);
    }

    #[test]
    fn a_store_upgraded_from_version_1_queues_its_history() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("old.db");
        {
            let c = Connection::open(&p).unwrap();
            c.execute_batch(crate::MIGRATIONS[0].1).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute_batch(
                "INSERT INTO attempts(id, port, started_at, status) VALUES ('a1', 'p', '2026-01-01T00:00:00.000Z', 'passed');
                 INSERT INTO steps(attempt_id, at, stage, kind, detail) VALUES ('a1', '2026-01-01T00:00:00.000Z', 'hello', 'started', '');
                 INSERT INTO certificates(id, attempt_id, device_serial, issuer, serial_hex, spki_sha256, spki_der, not_before, not_after, status, cert_der, created_at)
                     VALUES ('c1', 'a1', 'SN', 'CN=CA', '01', 'k', x'00', '2026-01-01T00:00:00.000Z', '2027-01-01T00:00:00.000Z', 'issued', x'00', '2026-01-01T00:00:00.000Z');",
            )
            .unwrap();
        }
        let s = Store::open(&p).unwrap();
        let queued: Vec<(String, String, i64)> = outbox(&s);
        assert_eq!(queued, [("attempt".into(), "a1".into(), 0), ("certificate".into(), "c1".into(), 0), ("step".into(), "a1".into(), 1)]);
        assert_eq!(s.pending_changes(10).unwrap().len(), 3);
    }

    #[test]
    fn interrupted_attempts_are_queued() {
        let (_d, s) = store();
        s.begin_attempt("p", None).unwrap();
        s.begin_attempt("q", None).unwrap();
        assert_eq!(s.interrupt_running().unwrap(), 2);
        assert_eq!(outbox(&s).len(), 6, "each interruption is an attempt change and an audit entry");
    }
}
