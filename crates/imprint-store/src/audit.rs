//! The audit trail: an append-only hash chain of security events.
//!
//! Every entry carries `prev_hash`, the hash of the entry before it (64
//! zeros for the first), and `hash`, SHA-256 over the canonical encoding of
//! all its fields ([`entry_hash`], specified in docs/audit.md). `anchors`
//! pins the content hashes ([`crate::hash::record`], the hash the sync
//! sends) of the records an entry is about: the provisioning outcome of an
//! attempt anchors the attempt and its certificate, in the same transaction
//! as the attempt's finish. A record edited afterwards no longer matches its
//! latest anchor.
//!
//! Entries are appended only by the writer thread ([`Store::append_audit`],
//! or [`append_in`] inside a record's own transaction), each with its
//! outbox row (entity `audit`), so the trail syncs to the center like the
//! records. SQLite triggers refuse UPDATE and DELETE of an entry.
//!
//! [`verify`] is a pure function over the entries and the current hashes of
//! the anchored records: it names the first bad entry and what happened
//! (altered, deleted, inserted, reordered; truncated and diverged need a
//! known head, e.g. the center's) and every record whose content no longer
//! matches its anchor.

use crate::hash::{self, H};
use crate::outbox::{enqueue, Entity, RecordKey};
use crate::synced::{read_values, synced_row, table, SyncedRow, Table};
use crate::types::{AuditKind, Recorded};
use crate::{now_text, Store, StoreError};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The domain tag that starts every entry's encoding (a new encoding gets a new tag).
pub const ENCODING: &str = "imprint-audit-v1";

/// The current content hash of anchored records by (table, key); `None`:
/// the record is gone.
pub type CurrentHashes = HashMap<(String, String), Option<String>>;

/// One record's content hash as an entry pinned it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The record kind: `attempt`, `certificate`, `step`, `audit`.
    pub table: String,
    /// Its id (steps: `attempt_id#n`).
    pub key: String,
    /// Hex SHA-256 ([`crate::hash::record`] with the entry's station id).
    pub hash: String,
}

/// What a caller appends. The store adds seq, id, time, station, the anchor
/// hashes (computed in the same transaction) and the chain hashes.
#[derive(Clone, Debug)]
pub struct NewEntry {
    pub operator: Option<String>,
    pub kind: AuditKind,
    pub subject: Option<String>,
    /// A JSON object (or null: `{}`); a key judged secret by
    /// `imprint_core::secrets` is refused.
    pub detail: serde_json::Value,
    /// Records whose current content hash the entry pins.
    pub anchor: Vec<RecordKey>,
}

impl NewEntry {
    pub fn new(kind: AuditKind) -> NewEntry {
        NewEntry { operator: None, kind, subject: None, detail: serde_json::Value::Null, anchor: Vec::new() }
    }
}

synced_row! {
    /// An entry as stored (text kept verbatim, so verification hashes exactly
    /// what is there).
    /// (`station_id`: the local-only column of `synced::AUDIT`.)
    #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
    pub struct AuditEntry: AUDIT {
        pub seq: i64,
        pub id: String,
        pub at: String,
        pub station_id: String,
        pub operator: Option<String>,
        pub kind: Recorded<AuditKind>,
        pub subject: Option<String>,
        /// The JSON text as stored.
        pub detail: String,
        /// The JSON text as stored: `[{"table","key","hash"}]`.
        pub anchors: String,
        pub prev_hash: String,
        pub hash: String,
    }
}

impl AuditEntry {
    /// The anchors, parsed (`None`: the stored text is not an anchor list).
    pub fn anchor_list(&self) -> Option<Vec<Anchor>> {
        serde_json::from_str(&self.anchors).ok()
    }
}

/// The canonical hash of an entry: SHA-256 over, in order, each field
/// tagged and length-prefixed as in [`crate::hash`] (text tag 1, integer
/// tag 2 as 8 bytes big-endian, time tag 4 as microseconds since the epoch
/// in 16 bytes big-endian, NULL one 0 byte): the text `imprint-audit-v1`,
/// station_id, seq, id, at, operator, kind, subject, detail, anchors,
/// prev_hash. Returned as lower-case hex. Pinned by
/// `audit_entry_hash_encoding_is_pinned`.
pub fn entry_hash(e: &AuditEntry) -> String {
    let mut h = H::new(ENCODING, &e.station_id);
    h.int(e.seq);
    h.text(&e.id);
    h.time(&e.at);
    opt(&mut h, e.operator.as_deref());
    h.text(e.kind.as_str());
    opt(&mut h, e.subject.as_deref());
    h.text(&e.detail);
    h.text(&e.anchors);
    h.text(&e.prev_hash);
    hex::encode(h.done())
}

fn opt(h: &mut H, v: Option<&str>) {
    match v {
        Some(s) => h.text(s),
        None => h.null(),
    }
}

/// JSON with every object's keys sorted, compact (whatever serde_json's
/// map order is in this build).
pub fn canonical_json(v: &serde_json::Value) -> String {
    fn sorted(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let b: BTreeMap<&String, serde_json::Value> = m.iter().map(|(k, v)| (k, sorted(v))).collect();
                serde_json::Value::Object(b.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

/// The first key (as a path) that names a secret, anywhere in the value.
fn secret_key(v: &serde_json::Value, path: &str) -> Option<String> {
    match v {
        serde_json::Value::Object(m) => m.iter().find_map(|(k, v)| {
            let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            if imprint_core::secrets::is_secret_name(k) {
                Some(p)
            } else {
                secret_key(v, &p)
            }
        }),
        serde_json::Value::Array(a) => a.iter().enumerate().find_map(|(i, v)| secret_key(v, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// How an anchor names a record.
pub fn anchor_key(key: &RecordKey) -> String {
    match key.entity {
        Entity::Step => format!("{}#{}", key.id, key.step_no),
        _ => key.id.clone(),
    }
}

/// The record an anchor names (`None`: not a synced kind or a bad key).
pub fn record_key(table_name: &str, key: &str) -> Option<RecordKey> {
    let entity = Entity::parse(table_name)?;
    Some(match entity {
        Entity::Step => {
            let (id, n) = key.rsplit_once('#')?;
            RecordKey { entity, id: id.to_string(), step_no: n.parse().ok()? }
        }
        _ => RecordKey { entity, id: key.to_string(), step_no: 0 },
    })
}

/// The current content hash (hex) of a record as `station` syncs it, or
/// `None` if the record is not in the store.
pub fn current_hash(c: &Connection, key: &RecordKey, station: &str) -> Result<Option<String>, StoreError> {
    let t: &'static Table = table(key.entity);
    let keys: Vec<&str> = t.key_positions().map(|i| t.columns[i].local).collect();
    let mut sql = format!("SELECT {} FROM {} t WHERE t.{} = ?1", t.select("t"), t.local, keys.first().copied().unwrap_or("id"));
    if let Some(k2) = keys.get(1) {
        sql.push_str(&format!(" AND t.{k2} = ?2"));
    }
    let mut s = c.prepare_cached(&sql)?;
    let n = t.columns.len();
    let values = if keys.len() > 1 {
        s.query_row(params![key.id, key.step_no], |r| read_values(r, 0, n)).optional()?
    } else {
        s.query_row(params![key.id], |r| read_values(r, 0, n)).optional()?
    };
    Ok(values.map(|v| hex::encode(hash::record(t, station, &v))))
}

/// Append an entry inside the caller's transaction (the writer thread's):
/// next seq, chained to the current head, anchors hashed from the records as
/// this transaction sees them, and its outbox row. Returns the entry.
pub fn append_in(t: &Transaction<'_>, station: &str, e: &NewEntry) -> Result<AuditEntry, StoreError> {
    let detail = match &e.detail {
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        v @ serde_json::Value::Object(_) => v.clone(),
        _ => return Err(StoreError::NotFound("an audit entry's detail must be a JSON object".into())),
    };
    if let Some(k) = secret_key(&detail, "") {
        return Err(StoreError::SecretInAudit(k));
    }
    let mut anchors = Vec::with_capacity(e.anchor.len());
    for k in &e.anchor {
        let h =
            current_hash(t, k, station)?.ok_or_else(|| StoreError::NotFound(format!("{k}: cannot anchor a record that is not there")))?;
        anchors.push(Anchor { table: k.entity.as_str().to_string(), key: anchor_key(k), hash: h });
    }
    let (seq, prev_hash): (i64, String) = t
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get::<_, i64>(0)? + 1, r.get(1)?)))
        .optional()?
        .unwrap_or((1, GENESIS.to_string()));
    let mut entry = AuditEntry {
        seq,
        id: crate::new_id(),
        at: now_text(),
        station_id: station.to_string(),
        operator: e.operator.clone(),
        kind: Recorded::Known(e.kind),
        subject: e.subject.clone(),
        detail: canonical_json(&detail),
        anchors: serde_json::to_string(&anchors).map_err(|err| StoreError::NotFound(format!("encoding anchors: {err}")))?,
        prev_hash,
        hash: String::new(),
    };
    entry.hash = entry_hash(&entry);
    entry.insert_in(t)?;
    enqueue(t, Entity::Audit, &entry.id, 0)?;
    Ok(entry)
}

/// Which entries [`Store::audit_entries`] returns.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub operator: Option<String>,
    pub kind: Option<String>,
    /// Stored-time text (`at >= since`).
    pub since: Option<String>,
    /// Stored-time text (`at < until`).
    pub until: Option<String>,
    pub limit: Option<usize>,
}

/// The chain head: the last entry's seq and hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

/// What verification found. `seq` names an entry by its position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Finding {
    /// The entry's content does not match its hash, or it was rewritten
    /// with a new hash (the next entry still names the old one).
    Altered { seq: i64, id: String, why: String },
    /// Entries are missing before `seq` (`from..=to` when the numbers show it).
    Deleted { seq: i64, from: Option<i64>, to: Option<i64> },
    /// The entry at `seq` (and up to `to`) is not part of the chain as written.
    Inserted { seq: i64, id: String, to: i64 },
    /// The entry at `seq` was written after the entry now at `belongs_after`.
    Reordered { seq: i64, id: String, belongs_after: i64 },
    /// The trail ends at `local_head`, but `known_head` was seen (e.g. by the center).
    Truncated { local_head: i64, known_head: i64 },
    /// The entry at `seq` differs from the copy the center holds: the local
    /// trail was rewritten after it was synced.
    Diverged { seq: i64, id: String, local_hash: String, central_hash: String },
    /// A record's current content no longer matches the hash its latest
    /// anchoring entry (`anchored_by`) pinned (`current` None: the record is gone).
    RecordChanged { table: String, key: String, anchored_by: i64, anchored: String, current: Option<String> },
}

impl Finding {
    /// The entry position the finding is about (for ordering).
    pub fn seq(&self) -> i64 {
        match self {
            Finding::Altered { seq, .. }
            | Finding::Deleted { seq, .. }
            | Finding::Inserted { seq, .. }
            | Finding::Reordered { seq, .. }
            | Finding::Diverged { seq, .. } => *seq,
            Finding::Truncated { local_head, .. } => local_head + 1,
            Finding::RecordChanged { anchored_by, .. } => *anchored_by,
        }
    }

    /// One line for an operator, naming the entry.
    pub fn message(&self) -> String {
        match self {
            Finding::Altered { seq, id, why } => format!("entry #{seq} ({id}) was altered: {why}"),
            Finding::Deleted { seq, from: Some(f), to: Some(t) } if f == t => {
                format!("entry #{f} was deleted (the trail goes on at #{seq})")
            }
            Finding::Deleted { seq, from: Some(f), to: Some(t) } => {
                format!("entries #{f} to #{t} were deleted (the trail goes on at #{seq})")
            }
            Finding::Deleted { seq, .. } => {
                format!(
                    "an entry before #{seq} was deleted: #{seq} names a previous entry that is not in the trail (the trail was renumbered)"
                )
            }
            Finding::Inserted { seq, id, to } if seq == to => {
                format!("entry #{seq} ({id}) was inserted: the next entry is chained to #{}", seq - 1)
            }
            Finding::Inserted { seq, id, to } => format!("entries #{seq} ({id}) to #{to} were inserted"),
            Finding::Reordered { seq, id, belongs_after } => {
                format!("entry #{seq} ({id}) was moved: it was written after the entry now at #{belongs_after}")
            }
            Finding::Truncated { local_head, known_head } => {
                format!(
                    "the trail was truncated: it ends at #{local_head}, but entries up to #{known_head} were synced; #{} is missing",
                    local_head + 1
                )
            }
            Finding::Diverged { seq, id, .. } => {
                format!("entry #{seq} ({id}) differs from the center's copy: the local trail was rewritten after it was synced")
            }
            Finding::RecordChanged { table, key, anchored_by, current: Some(_), .. } => {
                format!("{table} {key} was changed after entry #{anchored_by} anchored it: its content no longer matches")
            }
            Finding::RecordChanged { table, key, anchored_by, current: None, .. } => {
                format!("{table} {key} was deleted after entry #{anchored_by} anchored it")
            }
        }
    }

    /// True for a problem of the chain itself (not of an anchored record).
    pub fn is_chain(&self) -> bool {
        !matches!(self, Finding::RecordChanged { .. })
    }
}

/// The result of [`verify`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub entries: usize,
    pub head: Option<Head>,
    /// Records whose latest anchor was checked.
    pub anchors_checked: usize,
    /// The first bad entry (chain problems first, by position; else the
    /// first changed record).
    pub first: Option<Finding>,
    /// The first chain problem, then every record that no longer matches.
    pub findings: Vec<Finding>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }

    /// Add findings and recompute `first`.
    pub fn add(&mut self, more: impl IntoIterator<Item = Finding>) {
        self.findings.extend(more);
        self.findings.sort_by_key(|f| (!f.is_chain(), f.seq()));
        self.findings.dedup();
        self.first = self.findings.first().cloned();
    }
}

/// The latest anchor of every record, with the entry that pinned it and its
/// station (the hash was computed with it).
pub fn latest_anchors(entries: &[AuditEntry]) -> BTreeMap<(String, String), (i64, String, String)> {
    let mut m = BTreeMap::new();
    for e in entries {
        for a in e.anchor_list().unwrap_or_default() {
            m.insert((a.table, a.key), (e.seq, a.hash, e.station_id.clone()));
        }
    }
    m
}

/// The first problem of a chain, walking it in `seq` order.
fn first_chain_problem(entries: &[AuditEntry]) -> Option<Finding> {
    let at: HashMap<&str, usize> = entries.iter().enumerate().map(|(i, e)| (e.hash.as_str(), i)).collect();
    let mut prev_seq = 0;
    let mut prev_hash: &str = GENESIS;
    for (i, e) in entries.iter().enumerate() {
        let content_ok = entry_hash(e) == e.hash;
        let link_ok = e.prev_hash == prev_hash;
        let seq_ok = e.seq == prev_seq + 1;
        if !link_ok {
            return Some(match at.get(e.prev_hash.as_str()) {
                // It names an earlier entry than its predecessor: the ones between were inserted.
                Some(&j) if j + 1 < i => {
                    let first = &entries[j + 1];
                    Finding::Inserted { seq: first.seq, id: first.id.clone(), to: entries[i - 1].seq }
                }
                // It names a later entry: it was moved up.
                Some(&j) if j > i => Finding::Reordered { seq: e.seq, id: e.id.clone(), belongs_after: entries[j].seq },
                Some(_) => Finding::Altered { seq: e.seq, id: e.id.clone(), why: "it is chained to itself".into() },
                None if e.prev_hash == GENESIS && i > 0 => {
                    Finding::Inserted { seq: entries[0].seq, id: entries[0].id.clone(), to: entries[i - 1].seq }
                }
                None if !seq_ok && e.seq > prev_seq + 1 => Finding::Deleted { seq: e.seq, from: Some(prev_seq + 1), to: Some(e.seq - 1) },
                None if content_ok && i > 0 => {
                    let p = &entries[i - 1];
                    Finding::Altered {
                        seq: p.seq,
                        id: p.id.clone(),
                        why: format!("it was rewritten with a new hash: entry #{} still names its old hash", e.seq),
                    }
                }
                None => Finding::Deleted { seq: e.seq, from: None, to: None },
            });
        }
        if !seq_ok {
            return Some(if e.seq > prev_seq + 1 {
                Finding::Deleted { seq: e.seq, from: Some(prev_seq + 1), to: Some(e.seq - 1) }
            } else {
                Finding::Altered { seq: e.seq, id: e.id.clone(), why: format!("its number follows #{prev_seq}") }
            });
        }
        if !content_ok {
            return Some(Finding::Altered { seq: e.seq, id: e.id.clone(), why: "its content does not match its hash".into() });
        }
        if e.anchor_list().is_none() {
            return Some(Finding::Altered { seq: e.seq, id: e.id.clone(), why: "its anchors are not an anchor list".into() });
        }
        prev_seq = e.seq;
        prev_hash = e.hash.as_str();
    }
    None
}

/// Verify a trail: `entries` in `seq` order as stored; `current` the current
/// content hash of each record in [`latest_anchors`] (`None`: gone; a record
/// absent from the map is not checked); `known_head` a head seen elsewhere
/// (the center's), for truncation and divergence.
pub fn verify(entries: &[AuditEntry], current: &CurrentHashes, known_head: Option<&Head>) -> Verification {
    let mut v = Verification {
        entries: entries.len(),
        head: entries.last().map(|e| Head { seq: e.seq, hash: e.hash.clone() }),
        ..Verification::default()
    };
    let mut found: Vec<Finding> = first_chain_problem(entries).into_iter().collect();
    if let Some(k) = known_head {
        let local_head = entries.last().map(|e| e.seq).unwrap_or(0);
        match entries.iter().find(|e| e.seq == k.seq) {
            Some(e) if e.hash != k.hash => {
                found.push(Finding::Diverged { seq: e.seq, id: e.id.clone(), local_hash: e.hash.clone(), central_hash: k.hash.clone() })
            }
            Some(_) => {}
            None if k.seq > local_head => found.push(Finding::Truncated { local_head, known_head: k.seq }),
            None => found.push(Finding::Deleted { seq: k.seq, from: Some(k.seq), to: Some(k.seq) }),
        }
    }
    for ((table, key), (seq, anchored, _)) in latest_anchors(entries) {
        let Some(now) = current.get(&(table.clone(), key.clone())) else { continue };
        v.anchors_checked += 1;
        if now.as_deref() != Some(anchored.as_str()) {
            found.push(Finding::RecordChanged { table, key, anchored_by: seq, anchored, current: now.clone() });
        }
    }
    v.add(found);
    v
}

impl Store {
    /// Append an entry (standalone) and wait until it is durable.
    pub fn append_audit(&self, e: NewEntry) -> Result<AuditEntry, StoreError> {
        let station = self.station_id();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.write(move |t| {
            let entry = append_in(t, &station, &e)?;
            let _ = tx.send(entry);
            Ok(())
        })?;
        rx.recv().map_err(|_| StoreError::WriterGone)
    }

    /// Entries matching `f`, in `seq` order.
    pub fn audit_entries(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let f = f.clone();
        self.read(move |c| {
            let mut sql = format!("SELECT {} FROM audit e WHERE 1=1", AuditEntry::select("e"));
            let mut args: Vec<String> = Vec::new();
            for (clause, v) in [("operator =", &f.operator), ("kind =", &f.kind), ("at >=", &f.since), ("at <", &f.until)] {
                if let Some(v) = v {
                    args.push(v.clone());
                    sql.push_str(&format!(" AND {clause} ?{}", args.len()));
                }
            }
            sql.push_str(" ORDER BY seq");
            if let Some(l) = f.limit {
                sql.push_str(&format!(" LIMIT {l}"));
            }
            let mut s = c.prepare(&sql)?;
            let rows = s.query_map(rusqlite::params_from_iter(args.iter()), AuditEntry::read)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Every entry and the current hash of every record it anchors, read
    /// in one snapshot.
    pub fn audit_snapshot(&self) -> Result<(Vec<AuditEntry>, CurrentHashes), StoreError> {
        self.read(|c| {
            let tx = c.unchecked_transaction()?;
            let entries = {
                let mut s = tx.prepare(&format!("SELECT {} FROM audit e ORDER BY seq", AuditEntry::select("e")))?;
                let rows = s.query_map([], AuditEntry::read)?.collect::<Result<Vec<_>, _>>()?;
                rows
            };
            let mut current = HashMap::new();
            for ((table, key), (_, _, station)) in latest_anchors(&entries) {
                let now = match record_key(&table, &key) {
                    Some(k) => current_hash(&tx, &k, &station)?,
                    None => None,
                };
                current.insert((table, key), now);
            }
            tx.commit()?;
            Ok((entries, current))
        })
    }

    /// Verify the local trail (see [`verify`]).
    pub fn verify_audit(&self, known_head: Option<&Head>) -> Result<Verification, StoreError> {
        let (entries, current) = self.audit_snapshot()?;
        Ok(verify(&entries, &current, known_head))
    }
}

/// The provisioning outcome of an attempt that just finished, in its
/// transaction: anchors the attempt and its certificate.
pub(crate) fn outcome_in(t: &Transaction<'_>, station: &str, attempt_id: &str) -> Result<(), StoreError> {
    let facts = t
        .prepare_cached("SELECT status, code, stage, device_serial, certificate_id, port, operator FROM attempts WHERE id = ?1")?
        .query_row([attempt_id], |r| {
            let cert: Option<String> = r.get(4)?;
            let detail = serde_json::json!({
                "status": r.get::<_, String>(0)?, "code": r.get::<_, Option<String>>(1)?, "stage": r.get::<_, Option<String>>(2)?,
                "device_serial": r.get::<_, Option<String>>(3)?, "certificate_id": cert, "port": r.get::<_, String>(5)?
            });
            Ok((detail, cert, r.get::<_, Option<String>>(6)?))
        })
        .optional()?;
    let Some((detail, cert, operator)) = facts else { return Ok(()) };
    let mut anchor = vec![RecordKey { entity: Entity::Attempt, id: attempt_id.to_string(), step_no: 0 }];
    if let Some(c) = cert {
        anchor.push(RecordKey { entity: Entity::Certificate, id: c, step_no: 0 });
    }
    append_in(
        t,
        station,
        &NewEntry { operator, kind: AuditKind::ProvisioningOutcome, subject: Some(attempt_id.to_string()), detail, anchor },
    )?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn entry(seq: i64, prev: &str) -> AuditEntry {
        let mut e = AuditEntry {
            seq,
            id: format!("0190a1b2-0000-7000-8000-{seq:012}"),
            at: "2026-03-01T10:00:00.000Z".into(),
            station_id: "line-1".into(),
            operator: Some("op-7".into()),
            kind: Recorded::Known(AuditKind::SignIn),
            subject: None,
            detail: "{}".into(),
            anchors: "[]".into(),
            prev_hash: prev.into(),
            hash: String::new(),
        };
        e.hash = entry_hash(&e);
        e
    }

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut v: Vec<AuditEntry> = Vec::new();
        for s in 1..=n {
            let prev = v.last().map(|e| e.hash.clone()).unwrap_or_else(|| GENESIS.into());
            v.push(entry(s, &prev));
        }
        v
    }

    fn first(v: &[AuditEntry]) -> Option<Finding> {
        verify(v, &HashMap::new(), None).first
    }

    /// The encoding is the chain: changing it would make every stored trail
    /// fail verification. This value was computed once, and independently
    /// from the encoding as docs/audit.md specifies it (a Python sketch of
    /// the tag/length/bytes fields); it must not change.
    #[test]
    fn audit_entry_hash_encoding_is_pinned() {
        let e = entry(1, GENESIS);
        assert_eq!(e.hash, "f33919bafde13b2e45bb25c59fba5e40914a91c5097e3697bcf0b22a3bba9aa4", "encoding changed: {}", e.hash);
    }

    #[test]
    fn an_intact_chain_verifies() {
        let v = verify(&chain(5), &HashMap::new(), None);
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.head.unwrap().seq, 5);
        assert_eq!(first(&[]), None);
    }

    #[test]
    fn each_kind_of_tampering_names_the_first_bad_entry() {
        // Altered in place.
        let mut c = chain(6);
        c[2].detail = r#"{"x":1}"#.into();
        assert!(matches!(first(&c), Some(Finding::Altered { seq: 3, .. })), "{:?}", first(&c));
        // Altered and re-hashed: the next entry still names the old hash.
        let mut c = chain(6);
        c[2].detail = r#"{"x":1}"#.into();
        c[2].hash = entry_hash(&c[2]);
        assert!(matches!(first(&c), Some(Finding::Altered { seq: 3, .. })), "{:?}", first(&c));
        // Deleted (a gap).
        let mut c = chain(6);
        c.remove(2);
        assert_eq!(first(&c), Some(Finding::Deleted { seq: 4, from: Some(3), to: Some(3) }));
        // Deleted and renumbered.
        let mut c = chain(6);
        c.remove(2);
        for e in &mut c[2..] {
            e.seq -= 1;
        }
        assert_eq!(first(&c), Some(Finding::Deleted { seq: 3, from: None, to: None }));
        // Inserted (renumbered, forged with a correct hash).
        let mut c = chain(6);
        for e in &mut c[2..] {
            e.seq += 1;
        }
        let mut forged = entry(3, &c[1].hash);
        forged.id = "forged".into();
        forged.hash = entry_hash(&forged);
        c.insert(2, forged);
        assert!(matches!(first(&c), Some(Finding::Inserted { seq: 3, to: 3, .. })), "{:?}", first(&c));
        // Reordered: two entries swapped (content, not position numbers).
        let mut c = chain(6);
        let (a, b) = (c[2].clone(), c[3].clone());
        c[2] = AuditEntry { seq: 3, ..b };
        c[3] = AuditEntry { seq: 4, ..a };
        assert!(matches!(first(&c), Some(Finding::Reordered { seq: 3, belongs_after: 4, .. })), "{:?}", first(&c));
        // Truncated: only against a known head.
        let mut c = chain(6);
        let head = Head { seq: 6, hash: c[5].hash.clone() };
        c.truncate(4);
        assert_eq!(first(&c), None, "a truncated trail is a valid trail on its own");
        let v = verify(&c, &HashMap::new(), Some(&head));
        assert_eq!(v.first, Some(Finding::Truncated { local_head: 4, known_head: 6 }));
        assert!(v.first.unwrap().message().contains("#5 is missing"));
    }

    #[test]
    fn a_record_that_no_longer_matches_its_latest_anchor_is_named() {
        let mut c = chain(2);
        let a = |h: &str| format!(r#"[{{"table":"attempt","key":"A","hash":"{h}"}}]"#);
        c[0].anchors = a("h1");
        c[0].hash = entry_hash(&c[0]);
        c[1].prev_hash = c[0].hash.clone();
        c[1].anchors = a("h2");
        c[1].hash = entry_hash(&c[1]);
        let mut now = HashMap::new();
        now.insert(("attempt".to_string(), "A".to_string()), Some("h2".to_string()));
        assert!(verify(&c, &now, None).ok(), "the latest anchor counts");
        now.insert(("attempt".to_string(), "A".to_string()), Some("h1".to_string()));
        let v = verify(&c, &now, None);
        assert!(matches!(&v.first, Some(Finding::RecordChanged { anchored_by: 2, .. })), "{v:?}");
        now.insert(("attempt".to_string(), "A".to_string()), None);
        assert!(verify(&c, &now, None).first.unwrap().message().contains("deleted"));
    }

    #[test]
    fn secrets_are_refused_by_key_anywhere_in_the_detail() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s.db")).unwrap();
        let mut e = NewEntry::new(AuditKind::SettingsChanged);
        e.detail = serde_json::json!({"before": {"signer": {"pin-value": "1234"}}});
        match s.append_audit(e) {
            Err(StoreError::SecretInAudit(k)) => {
                assert_eq!(k, "before.signer.pin-value");
            }
            other => panic!("{other:?}"),
        }
        assert!(s.audit_entries(&AuditFilter::default()).unwrap().is_empty());
        let mut e = NewEntry::new(AuditKind::SettingsChanged);
        e.detail = serde_json::json!({"z": 1, "a": {"pin-source": "env"}});
        let got = s.append_audit(e).unwrap();
        assert_eq!(got.detail, r#"{"a":{"pin-source":"env"},"z":1}"#, "canonical: keys sorted");
    }

    #[test]
    fn the_trail_refuses_update_and_delete_through_sqlite() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s.db")).unwrap();
        s.append_audit(NewEntry::new(AuditKind::SignIn)).unwrap();
        let c = Connection::open(s.path()).unwrap();
        let e = c.execute("UPDATE audit SET detail = '{}' WHERE seq = 1", []).unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
        assert!(c.execute("DELETE FROM audit", []).unwrap_err().to_string().contains("append-only"));
    }

    #[test]
    fn unknown_kind_text_reads_back_as_unrecognized() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s.db")).unwrap();
        s.write(|t| {
            t.execute(
                "INSERT INTO audit(seq, id, at, station_id, kind, detail, anchors, prev_hash, hash) VALUES (1, 'x', 'now', 's', 'launched_rocket', '{}', '[]', '', '')",
                [],
            )?;
            Ok(())
        })
        .unwrap();
        let e = s.audit_entries(&AuditFilter::default()).unwrap();
        assert_eq!(e[0].kind, Recorded::Unrecognized("launched_rocket".into()));
        assert!(!s.verify_audit(None).unwrap().ok());
    }
}
