//! Online copies of the store with SQLite's backup API, and the checks a
//! copy must pass before it is trusted (integrity, schema version, what it
//! holds). The copy is taken on a connection of its own in one read
//! transaction (one `backup_step(-1)`): in WAL mode that reader never blocks
//! the station's writer, so provisioning goes on while the copy is made, and
//! the copy is one consistent snapshot.

use crate::audit::Head;
use crate::{Store, StoreError, SCHEMA_VERSION};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::Path;
use std::time::Duration;

/// What a checked copy holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CopyFacts {
    /// `PRAGMA user_version` of the copy.
    pub schema_version: u32,
    pub attempts: u64,
    pub certificates: u64,
    /// Certificates with status `issued` (what devices carry).
    pub issued: u64,
    /// The last audit entry (None: the trail is empty).
    pub audit_head: Option<Head>,
    /// The newest time recorded (attempt start/finish, certificate
    /// issuance, audit entry), RFC 3339 UTC; None for an empty store.
    pub latest_at: Option<String>,
}

fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |cause| StoreError::Open { path: path.to_path_buf(), cause }
}

impl Store {
    /// Copy the store into `dest` (which must not exist; created 0600) with
    /// SQLite's online backup API while the station keeps writing, turn the
    /// copy into a single self-contained file (rollback journal, no WAL) and
    /// check it ([`check_copy`]).
    pub fn backup_into(&self, dest: &Path) -> Result<CopyFacts, StoreError> {
        let src = Connection::open_with_flags(self.path(), OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(sql_err(self.path()))?;
        src.busy_timeout(Duration::from_secs(10)).map_err(sql_err(self.path()))?;
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dest).map_err(|e| io_err(dest, e))?;
        }
        let mut dst = Connection::open(dest).map_err(sql_err(dest))?;
        {
            let b = rusqlite::backup::Backup::new(&src, &mut dst).map_err(sql_err(dest))?;
            // All pages in one step: one read transaction, one snapshot.
            let mut tries = 0;
            loop {
                match b.step(-1).map_err(sql_err(dest))? {
                    rusqlite::backup::StepResult::Done => break,
                    rusqlite::backup::StepResult::More => continue,
                    _ if tries < 100 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    _ => return Err(StoreError::Corrupt(format!("{}: the store stayed busy; no copy was made", self.path().display()))),
                }
            }
        }
        dst.pragma_update(None, "journal_mode", "DELETE").map_err(sql_err(dest))?;
        drop(dst);
        check_copy(dest)
    }
}

fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Open {
        path: path.to_path_buf(),
        cause: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN), Some(e.to_string())),
    }
}

/// Check a copy of a store (read-only): `PRAGMA integrity_check` says ok, its
/// schema is one this build knows (not newer), and what it holds.
pub fn check_copy(path: &Path) -> Result<CopyFacts, StoreError> {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(sql_err(path))?;
    let problems: Vec<String> = {
        let mut s = c.prepare("PRAGMA integrity_check").map_err(sql_err(path))?;
        let rows = s.query_map([], |r| r.get::<_, String>(0)).map_err(sql_err(path))?;
        rows.collect::<Result<_, _>>().map_err(sql_err(path))?
    };
    if problems.len() != 1 || problems[0] != "ok" {
        let first: Vec<&str> = problems.iter().take(3).map(String::as_str).collect();
        return Err(StoreError::Corrupt(format!("{}: integrity check failed: {}", path.display(), first.join("; "))));
    }
    let schema_version: u32 = c.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sql_err(path))?;
    if schema_version > SCHEMA_VERSION {
        return Err(StoreError::Schema {
            found: schema_version,
            expected: SCHEMA_VERSION,
            hint: "this copy was written by a newer Imprint; restore it with that version",
        });
    }
    if schema_version < 5 {
        return Err(StoreError::Corrupt(format!(
            "{}: schema version {schema_version} is not an Imprint store with an audit trail",
            path.display()
        )));
    }
    let count =
        |sql: &str| -> Result<u64, StoreError> { Ok(c.query_row(sql, [], |r| r.get::<_, i64>(0)).map_err(sql_err(path))?.max(0) as u64) };
    let audit_head = c
        .query_row("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", [], |r| Ok(Head { seq: r.get(0)?, hash: r.get(1)? }))
        .optional()
        .map_err(sql_err(path))?;
    let latest_at: Option<String> = c
        .query_row(
            "SELECT max(t) FROM (SELECT max(started_at) AS t FROM attempts UNION ALL SELECT max(finished_at) FROM attempts
             UNION ALL SELECT max(created_at) FROM certificates UNION ALL SELECT max(at) FROM audit)",
            [],
            |r| r.get(0),
        )
        .map_err(sql_err(path))?;
    Ok(CopyFacts {
        schema_version,
        attempts: count("SELECT count(*) FROM attempts")?,
        certificates: count("SELECT count(*) FROM certificates")?,
        issued: count("SELECT count(*) FROM certificates WHERE status = 'issued'")?,
        audit_head,
        latest_at,
    })
}

/// Meta key: set by a restore, cleared once the restored store has
/// re-learned from the center what it was missing (see
/// [`Store::insert_relearned`]); holds the restore's audit detail (JSON).
pub const META_RESTORE_PENDING: &str = "restore_pending";

impl Store {
    /// Write records re-learned from the center, every kind in one
    /// transaction (attempts and certificates reference each other). Per
    /// table (rows in the descriptor's order, as `imprint_sync` reads them
    /// there): `missing` rows are inserted; `newer` rows (the center holds a
    /// later version than any change made here) replace the local copy and
    /// their pending outbox rows are marked synced (the center is already
    /// past them). Each gets a synced outbox row at the center's version
    /// (the center has it; every record keeps its outbox row). `chain`:
    /// the issuing CA's subject and chain DER, kept with re-learned
    /// certificates of that issuer (chains are not synced). Then new changes
    /// get outbox versions above `floor` (the highest version the center
    /// holds for this station), so no version the center has seen is sent
    /// again for other content. Returns how many rows were written.
    pub fn write_relearned(&self, batches: Vec<Relearn>, chain: Option<(String, Vec<u8>)>, floor: i64) -> Result<usize, StoreError> {
        use crate::synced::{Kind, Value};
        let station = self.station_id();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.write(move |t| {
            t.execute_batch("PRAGMA defer_foreign_keys = ON")?;
            let now = crate::now_text();
            let mut n = 0;
            for Relearn { table, missing, newer } in batches {
                let mut cols: Vec<&str> = table.columns.iter().map(|c| c.local).collect();
                let extra = match table.local {
                    "audit" => Some("station_id"),
                    "certificates" => Some("chain_der"),
                    _ => None,
                };
                cols.extend(extra);
                let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
                let insert = format!("INSERT OR IGNORE INTO {} ({}) VALUES ({})", table.local, cols.join(", "), marks.join(", "));
                let replace = insert.replacen("INSERT OR IGNORE", "INSERT OR REPLACE", 1);
                let issuer_at = table.position("issuer");
                let rows = missing.into_iter().map(|r| (r, false)).chain(newer.into_iter().map(|r| (r, true)));
                for ((row, version), newer) in rows {
                    if let Some(k) = table.record_key(&row) {
                        if newer {
                            t.execute(
                                "UPDATE outbox SET state = 'synced', synced_at = ?4
                                 WHERE entity = ?1 AND entity_id = ?2 AND step_no = ?3 AND state = 'pending'",
                                rusqlite::params![k.entity.as_str(), k.id, k.step_no, now],
                            )?;
                        }
                        // The record's version as the center holds it, already synced
                        // (every record keeps an outbox row; versions stay monotonic).
                        t.execute(
                            "INSERT OR IGNORE INTO outbox(seq, entity, entity_id, step_no, changed_at, state, synced_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, 'synced', ?5)",
                            rusqlite::params![version, k.entity.as_str(), k.id, k.step_no, now],
                        )?;
                    }
                    let mut vals: Vec<rusqlite::types::Value> = table
                        .columns
                        .iter()
                        .zip(&row)
                        .map(|(c, v)| match (c.kind, v) {
                            (_, Value::Null) => rusqlite::types::Value::Null,
                            (Kind::Time, Value::Text(s)) => {
                                rusqlite::types::Value::Text(crate::parse_ts(s).map(crate::ts).unwrap_or_else(|| s.clone()))
                            }
                            (Kind::Uuid, Value::Text(s)) => rusqlite::types::Value::Text(s.to_ascii_lowercase()),
                            (_, Value::Text(s)) => rusqlite::types::Value::Text(s.clone()),
                            (_, Value::Int(i)) => rusqlite::types::Value::Integer(*i),
                            (_, Value::Blob(b)) => rusqlite::types::Value::Blob(b.clone()),
                        })
                        .collect();
                    match extra {
                        Some("station_id") => vals.push(rusqlite::types::Value::Text(station.clone())),
                        Some(_) => {
                            let issuer = issuer_at.and_then(|i| row.get(i)).and_then(Value::as_text);
                            vals.push(match &chain {
                                Some((dn, der)) if Some(dn.as_str()) == issuer => rusqlite::types::Value::Blob(der.clone()),
                                _ => rusqlite::types::Value::Null,
                            });
                        }
                        None => {}
                    }
                    let mut st = t.prepare_cached(if newer { &replace } else { &insert })?;
                    n += st.execute(rusqlite::params_from_iter(vals))?;
                }
            }
            let max: i64 = t.query_row("SELECT coalesce(max(seq), 0) FROM outbox", [], |r| r.get(0))?;
            if floor > max {
                // A synced marker row at the floor: seqs continue after it.
                t.execute(
                    "INSERT INTO outbox(seq, entity, entity_id, step_no, changed_at, state, synced_at)
                     VALUES (?1, 'audit', 'restore-floor', 0, ?2, 'synced', ?2)",
                    rusqlite::params![floor, now],
                )?;
            }
            let _ = tx.send(n);
            Ok(())
        })?;
        rx.recv().map_err(|_| StoreError::WriterGone)
    }
}

/// Records of one kind re-learned from the center ([`Store::write_relearned`]).
pub struct Relearn {
    pub table: &'static crate::synced::Table,
    /// (row, the center's version of it).
    pub missing: Vec<(Vec<crate::synced::Value>, i64)>,
    pub newer: Vec<(Vec<crate::synced::Value>, i64)>,
}

impl Store {
    /// The latest outbox version (seq) of every record of a kind, any state.
    pub fn record_versions(&self, entity: crate::Entity) -> Result<std::collections::HashMap<crate::RecordKey, i64>, StoreError> {
        self.read(move |c| {
            let mut s = c.prepare("SELECT entity_id, step_no, max(seq) FROM outbox WHERE entity = ?1 GROUP BY entity_id, step_no")?;
            let rows = s.query_map([entity.as_str()], |r| {
                Ok((crate::RecordKey { entity, id: r.get(0)?, step_no: r.get(1)? }, r.get::<_, i64>(2)?))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_one_checked_file_and_a_damaged_copy_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let st = Store::open(&d.path().join("station.db")).unwrap();
        st.set_station_id("line-1");
        st.begin_attempt("/dev/ttyX", None).unwrap();
        let copy = d.path().join("copy.db");
        let f = st.backup_into(&copy).unwrap();
        assert_eq!((f.schema_version, f.attempts), (SCHEMA_VERSION, 1));
        assert!(f.latest_at.is_some());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!d.path().join("copy.db-wal").exists(), "the copy is one file");
        assert!(st.backup_into(&copy).is_err(), "an existing file is never overwritten");
        // Damage the header of every page but the first: the integrity check refuses the copy.
        // (Damaging one page in the middle stopped failing once more migrations left free
        // pages there: a free page is not part of any b-tree, so nothing checks it.)
        let mut bytes = std::fs::read(&copy).unwrap();
        let page = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
        for start in (page..bytes.len()).step_by(page) {
            for b in &mut bytes[start..start + 12] {
                *b = 0x5a;
            }
        }
        std::fs::write(&copy, bytes).unwrap();
        assert!(check_copy(&copy).is_err());
    }
}
