//! The station's durable local store: SQLite in WAL mode with
//! `synchronous=FULL`, the station's source of truth.
//!
//! Writes go through one writer thread that **group-commits**: every caller
//! waits until its change is durable, but changes from many ports that arrive
//! together share one fsync. Each change runs in its own SAVEPOINT, so one
//! failing change (a UNIQUE violation, say) never takes its batch-mates down.
//! Reads use a separate connection (WAL readers never block the writer).
//!
//! Invariants kept here:
//! - a certificate row is journaled (`status='signing'`, with serial and
//!   validity) before the signer is called; `issued` rows always carry DER;
//! - one *current* (`signing` or `issued`) certificate per public key (the
//!   partial unique index `certificates_one_current_per_key`; a renewal or
//!   rework supersedes the old one in the transaction that journals the new
//!   one: `rework.rs`) and one certificate per (issuer, serial);
//! - a station that stops mid-attempt finds the attempt `running` on restart
//!   and marks it `interrupted` with the last stage it reached;
//! - every change to a record (attempt, step, certificate) writes its
//!   `outbox` row in the same transaction (`outbox.rs`), so the sync worker
//!   can never miss one.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("../../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../../migrations/sqlite/0002_outbox.sql")),
    (3, include_str!("../../../migrations/sqlite/0003_mqtt_events.sql")),
    (4, include_str!("../../../migrations/sqlite/0004_operators.sql")),
    (5, include_str!("../../../migrations/sqlite/0005_audit.sql")),
    (6, include_str!("../../../migrations/sqlite/0006_revocation.sql")),
    (7, include_str!("../../../migrations/sqlite/0007_qa.sql")),
    (8, include_str!("../../../migrations/sqlite/0008_central_operators.sql")),
    (9, include_str!("../../../migrations/sqlite/0009_rework_renewal.sql")),
    // 10 was reserved for a feature that needed no migration: the list may skip a number.
    (11, include_str!("../../../migrations/sqlite/0011_work_orders.sql")),
    (12, include_str!("../../../migrations/sqlite/0012_report_indexes.sql")),
    (13, include_str!("../../../migrations/sqlite/0013_work_order_leases.sql")),
    (14, include_str!("../../../migrations/sqlite/0014_work_order_changes.sql")),
    // 15 and 16 were reserved for branches that needed none.
    (17, include_str!("../../../migrations/sqlite/0017_quarantine_release.sql")),
    (18, include_str!("../../../migrations/sqlite/0018_lease_journal.sql")),
    (19, include_str!("../../../migrations/sqlite/0019_work_order_stations.sql")),
];

/// Schema version this build expects.
pub const SCHEMA_VERSION: u32 = 19;

/// Each cause is printed once: a variant that shows its cause in its
/// message does not also expose it as `source()` (no `#[from]`/`source`
/// field), so `{:#}` chains never repeat it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("local store {path}: {cause}")]
    Open { path: PathBuf, cause: rusqlite::Error },
    #[error("local store schema is version {found}, this station needs {expected}: {hint}")]
    Schema { found: u32, expected: u32, hint: &'static str },
    #[error("duplicate: {0}")]
    Duplicate(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("local store error: {0}")]
    Sql(rusqlite::Error),
    /// The disk holding the store is full (SQLITE_FULL; SQLite reports a
    /// write that failed with ENOSPC as SQLITE_FULL too).
    #[error("the station's disk is full: the local store cannot grow ({0})")]
    Full(String),
    #[error("local store writer has stopped")]
    WriterGone,
    /// A write on a store opened with [`Store::open_read_only`].
    #[error("local store {0} is open read-only (a station owns it): this process does not write")]
    ReadOnly(PathBuf),
    /// An audit entry's detail names a secret (by key, judged by
    /// `imprint_core::secrets`): secrets never enter the trail. The key path
    /// is shown, never the value.
    #[error("audit detail key {0:?} names a secret: secrets never go into the audit trail")]
    SecretInAudit(String),
    /// A copy of the store (a backup) failed its checks.
    #[error("{0}")]
    Corrupt(String),
    /// [`Store::open_read_only`] found no store at the path.
    #[error("no local store at {0}: nothing has been recorded on this data dir yet (it is created when a station first runs)")]
    Missing(PathBuf),
    /// The work order of an attempt (or a scan) refuses issuance: unknown,
    /// closed, outside its validity window, or used up (`quota_exhausted`).
    #[error("{0}")]
    WorkOrder(work_orders::WorkOrderRefusal),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        if is_full(&e) {
            StoreError::Full(e.to_string())
        } else {
            StoreError::Sql(e)
        }
    }
}

fn is_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

impl StoreError {
    /// The failure code an attempt records when the store fails it.
    pub fn failure_code(&self) -> imprint_proto::FailureCode {
        match self {
            StoreError::Full(_) => imprint_proto::FailureCode::StoreFull,
            StoreError::WorkOrder(r) => r.failure_code(),
            _ => imprint_proto::FailureCode::StoreError,
        }
    }
}

type Job = Box<dyn FnOnce(&Transaction<'_>) -> Result<(), StoreError> + Send>;
struct Op {
    job: Job,
    reply: mpsc::SyncSender<Result<(), StoreError>>,
}

/// Handle to the local store; share it with `Arc`.
///
/// [`Store::open`] is the station's: it migrates and runs the one writer
/// thread. [`Store::open_read_only`] is for every other process (health,
/// records, export, reports, sync status): SQLite read-only, `query_only`,
/// no migration, no writer; its writes fail with [`StoreError::ReadOnly`].
pub struct Store {
    path: PathBuf,
    read_only: bool,
    tx: Mutex<Option<mpsc::Sender<Op>>>,
    reader: Mutex<Connection>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The station id audit entries carry and record hashes are anchored
    /// with ([`Store::set_station_id`]; empty until a station sets it).
    station: Mutex<String>,
}

/// Now, as stored: RFC 3339 UTC with milliseconds.
pub fn now_text() -> String {
    ts(OffsetDateTime::now_utc())
}

/// RFC 3339 UTC with exactly three fractional digits, so stored times sort
/// and line up as text.
pub fn ts(t: OffsetDateTime) -> String {
    const FMT: &[time::format_description::BorrowedFormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(FMT).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

pub fn parse_ts(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// The database file (created empty if missing) and its side files: 0600.
fn make_private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        // Created 0600 before SQLite opens it (never briefly world-readable).
        drop(std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?);
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            match std::fs::metadata(&p) {
                Ok(m) if m.permissions().mode() & 0o777 != 0o600 => std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    #[cfg(not(unix))]
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    Ok(())
}

/// Bytes kept free next to the store (`<db>-reserve`, 0600) so that, when
/// the disk fills up, the failures can still be recorded: the reserve is
/// deleted and the final write retried ([`Store::write_final`]). It is made
/// again when the store opens with room for it.
pub const RESERVE_BYTES: u64 = 1 << 20;

fn reserve_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-reserve");
    PathBuf::from(p)
}

fn make_reserve(p: &Path) {
    if std::fs::metadata(p).is_ok_and(|m| m.len() == RESERVE_BYTES) {
        return;
    }
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(p)?;
        // Real blocks, not a sparse file: they must be there to give back.
        f.write_all(&vec![0u8; RESERVE_BYTES as usize])?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(p);
        tracing::warn!(reserve = %p.display(), error = %e, "could not keep a disk reserve next to the store");
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// A read-only connection beside the station's writer (`SQLITE_OPEN_READ_ONLY`,
/// `PRAGMA query_only`, a busy timeout): [`Store::open_read_only`]'s and
/// [`Store::read_apart`]'s.
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    use rusqlite::OpenFlags;
    let open_err = |cause| StoreError::Open { path: path.to_path_buf(), cause };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(open_err)?;
    conn.pragma_update(None, "query_only", "ON").map_err(open_err)?;
    Ok(conn)
}

impl Store {
    /// Open (creating if needed) the store at `path` and apply migrations.
    /// The store is private: a missing directory is created 0700, and the
    /// database with its `-wal` and `-shm` files is 0600 (created so, or
    /// tightened; SQLite gives the side files the database file's mode).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |cause| StoreError::Open { path: path.to_path_buf(), cause };
        let io_err = |e: std::io::Error| StoreError::Open {
            path: path.to_path_buf(),
            cause: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN), Some(e.to_string())),
        };
        make_private(path).map_err(io_err)?;
        let mut conn = Connection::open(path).map_err(open_err)?;
        configure(&conn).map_err(open_err)?;
        migrate(&mut conn)?;
        make_reserve(&reserve_path(path));
        let reader = Connection::open(path).map_err(open_err)?;
        configure(&reader).map_err(open_err)?;
        let (tx, rx) = mpsc::channel::<Op>();
        let writer = std::thread::Builder::new()
            .name("imprint-store-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| StoreError::Open { path: path.to_path_buf(), cause: rusqlite::Error::ToSqlConversionFailure(Box::new(e)) })?;
        Ok(Store {
            path: path.to_path_buf(),
            read_only: false,
            tx: Mutex::new(Some(tx)),
            reader: Mutex::new(reader),
            writer: Mutex::new(Some(writer)),
            station: Mutex::new(String::new()),
        })
    }

    /// Run a write that records how something ended; when the disk is full,
    /// give back the reserve (see [`RESERVE_BYTES`]) and try once more, so a
    /// full disk is recorded as a failure instead of leaving the record open.
    pub(crate) fn write_final<F>(&self, f: F) -> Result<(), StoreError>
    where
        F: Fn(&Transaction<'_>) -> Result<(), StoreError> + Clone + Send + 'static,
    {
        match self.write(f.clone()) {
            Err(StoreError::Full(why)) => {
                let reserve = reserve_path(&self.path);
                if std::fs::remove_file(&reserve).is_err() {
                    return Err(StoreError::Full(why));
                }
                tracing::error!(reserve = %reserve.display(), "disk full: released the store's reserve to record the failure");
                self.write(f)
            }
            other => other,
        }
    }

    /// Open an existing store for reading only, beside a station that may be
    /// writing it: `SQLITE_OPEN_READ_ONLY` and `PRAGMA query_only`, no
    /// migration, no writer thread, and no start-up recovery (that is the
    /// station's, under its data dir lock). WAL lets this reader see every
    /// committed change without blocking the station's writer.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        let open_err = |cause| StoreError::Open { path: path.to_path_buf(), cause };
        let conn = open_reader(path)?;
        let found: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(open_err)?;
        if found != SCHEMA_VERSION {
            return Err(StoreError::Schema {
                found,
                expected: SCHEMA_VERSION,
                hint: if found < SCHEMA_VERSION {
                    "a read-only reader never migrates: start the station once with this version to upgrade the store"
                } else {
                    "this database was written by a newer Imprint; upgrade the station software"
                },
            });
        }
        Ok(Store {
            path: path.to_path_buf(),
            read_only: true,
            tx: Mutex::new(None),
            reader: Mutex::new(conn),
            writer: Mutex::new(None),
            station: Mutex::new(String::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The station this store records for: audit entries carry it and the
    /// record hashes they anchor are computed with it (as the sync does).
    pub fn set_station_id(&self, id: &str) {
        if let Ok(mut s) = self.station.lock() {
            *s = id.to_string();
        }
    }

    /// The id set by [`Store::set_station_id`] (empty if none).
    pub fn station_id(&self) -> String {
        self.station.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Opened with [`Store::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Run `f` in the writer's transaction and wait until it is durable.
    pub fn write<F>(&self, f: F) -> Result<(), StoreError>
    where
        F: FnOnce(&Transaction<'_>) -> Result<(), StoreError> + Send + 'static,
    {
        if self.read_only {
            return Err(StoreError::ReadOnly(self.path.clone()));
        }
        let (reply, wait) = mpsc::sync_channel(1);
        {
            let guard = self.tx.lock().map_err(|_| StoreError::WriterGone)?;
            let tx = guard.as_ref().ok_or(StoreError::WriterGone)?;
            tx.send(Op { job: Box::new(f), reply }).map_err(|_| StoreError::WriterGone)?;
        }
        wait.recv().map_err(|_| StoreError::WriterGone)?
    }

    /// Run a read on the reader connection.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = self.reader.lock().map_err(|_| StoreError::WriterGone)?;
        f(&conn)
    }

    /// Run a long read (an export streaming every row of a filter to a file)
    /// on a read-only connection of its own, in one read transaction (one
    /// snapshot): the shared reader stays free for the Bench's short reads
    /// (revocation and rework lookups) however long the export takes.
    pub fn read_apart<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = open_reader(&self.path)?;
        let tx = conn.unchecked_transaction()?;
        let out = f(&tx)?;
        tx.finish()?;
        Ok(out)
    }

    /// Stop the writer after it has committed everything queued.
    pub fn close(&self) {
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        if let Ok(mut w) = self.writer.lock() {
            if let Some(h) = w.take() {
                let _ = h.join();
            }
        }
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.read(move |c| Ok(c.query_row("SELECT value FROM station_meta WHERE key = ?1", [key], |r| r.get(0)).optional()?))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (k, v) = (key.to_string(), value.to_string());
        self.write(move |t| {
            t.execute(
                "INSERT INTO station_meta(key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![k, v],
            )?;
            Ok(())
        })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let found: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Schema {
            found,
            expected: SCHEMA_VERSION,
            hint: "this database was written by a newer Imprint; upgrade the station software",
        });
    }
    // A migration may rebuild a table others refer to (SQLite's own
    // procedure: new table, copy, drop, rename), which needs foreign keys off
    // (they cannot be switched inside a transaction); each migration is
    // checked with `foreign_key_check` before it commits.
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let r = (|| -> Result<(), StoreError> {
        for (version, sql) in MIGRATIONS {
            if *version <= found {
                continue;
            }
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            let broken: Option<String> = tx.query_row("PRAGMA foreign_key_check", [], |r| r.get(0)).optional()?;
            if let Some(table) = broken {
                return Err(StoreError::NotFound(format!("migration {version} left a broken reference in table {table}")));
            }
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()?;
        }
        Ok(())
    })();
    conn.pragma_update(None, "foreign_keys", "ON")?;
    r
}

const MAX_BATCH: usize = 256;

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut results: Vec<Result<(), StoreError>> = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let commit = (|| -> Result<(), rusqlite::Error> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for op in batch {
                tx.execute_batch("SAVEPOINT op")?;
                let r = (op.job)(&tx);
                if r.is_err() {
                    tx.execute_batch("ROLLBACK TO op")?;
                }
                tx.execute_batch("RELEASE op")?;
                results.push(r);
                replies.push(op.reply);
            }
            tx.commit()
        })();
        match commit {
            Ok(()) => {
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                let full = is_full(&e);
                tracing::error!(error = %msg, full, "local store commit failed");
                for reply in replies {
                    let _ = reply.send(Err(if full {
                        StoreError::Full(format!("commit failed: {msg}"))
                    } else {
                        StoreError::Sql(rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                            Some(format!("commit failed: {msg}")),
                        ))
                    }));
                }
            }
        }
    }
}

pub mod audit;
pub mod backup;
pub mod facts;
pub mod hash;
pub mod leases;
pub mod mqtt_events;
pub mod operators;
pub mod outbox;
pub mod qa;
pub mod records;
pub mod revocation;
pub mod rework;
pub mod synced;
pub mod types;
pub use facts::StoreFacts;
pub mod work_orders;
pub use mqtt_events::{MqttEvent, MqttEventCounts, NewMqttEvent};
pub use outbox::*;
pub use qa::{BatchQaCounts, NewQaVerdict, QaFilter, QaVerdictRow};
pub use records::*;
pub use revocation::{CertSelector, Revocation, RevokeOutcome, RevokedCert};
pub use rework::{Reissued, ReworkRow, Supersede};
pub use work_orders::{NewWorkOrder, WorkOrderEdit, WorkOrderRefusal, WorkOrderRow};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod error_tests {
    use super::*;

    fn chain(e: &dyn std::error::Error) -> String {
        let mut parts = vec![e.to_string()];
        let mut cur = e.source();
        while let Some(s) = cur {
            parts.push(s.to_string());
            cur = s.source();
        }
        parts.join(": ")
    }

    #[test]
    fn store_errors_print_each_cause_once() {
        let e = StoreError::from(rusqlite::Error::InvalidColumnName("CAUSE-X".into()));
        assert_eq!(chain(&e).matches("CAUSE-X").count(), 1, "{}", chain(&e));
        let dir = tempfile::tempdir().unwrap();
        let e = Store::open(dir.path()).err().unwrap();
        let shown = chain(&e);
        assert_eq!(shown.matches(&dir.path().display().to_string()).count(), 1, "{shown}");
    }

    #[test]
    fn the_store_and_its_side_files_are_0600_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/station.db");
        let st = Store::open(&path).unwrap();
        st.interrupt_running().unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        for f in ["station.db", "station.db-wal", "station.db-shm"] {
            let p = path.with_file_name(f);
            if p.exists() {
                assert_eq!(mode(&p), 0o600, "{f}");
            }
        }
        assert!(path.with_file_name("station.db-wal").exists(), "WAL mode makes a -wal file");
        st.close();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(Store::open(&path).unwrap());
        assert_eq!(mode(&path), 0o600, "an existing store is tightened on open");
    }
}

pub use types::{AttemptStatus, AuditKind, CertStatus, Recorded, StoredTime, Timestamp, WorkOrderStatus};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod read_only_tests {
    use super::*;

    #[test]
    fn a_read_only_store_sees_the_writers_commits_and_never_writes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("station.db");
        assert!(matches!(Store::open_read_only(&p), Err(StoreError::Missing(_))), "no store is created");
        assert!(!p.exists());
        let w = Store::open(&p).unwrap();
        let id = w.begin_attempt("/dev/ttyX", None).unwrap();
        let r = Store::open_read_only(&p).unwrap();
        assert!(r.is_read_only());
        assert_eq!(r.attempt(&id).unwrap().unwrap().status.to_string(), "running");
        assert!(matches!(r.set_meta("k", "v"), Err(StoreError::ReadOnly(_))));
        assert!(matches!(r.interrupt_running(), Err(StoreError::ReadOnly(_))), "no recovery from a reader");
        // query_only also stops a write that bypasses the writer thread.
        assert!(r.read(|c| Ok(c.execute("DELETE FROM attempts", [])?)).is_err());
        assert_eq!(w.attempt(&id).unwrap().unwrap().status.to_string(), "running");
    }

    #[test]
    fn a_read_only_store_refuses_an_old_schema_instead_of_migrating_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("station.db");
        drop(Store::open(&p).unwrap());
        Connection::open(&p).unwrap().pragma_update(None, "user_version", 1).unwrap();
        match Store::open_read_only(&p) {
            Err(StoreError::Schema { found: 1, .. }) => {}
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened an old schema read-only"),
        }
        assert_eq!(Connection::open(&p).unwrap().pragma_query_value(None, "user_version", |r| r.get::<_, u32>(0)).unwrap(), 1);
    }
}
