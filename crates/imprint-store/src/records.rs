//! The station's records: attempts, their steps, and certificates.

use crate::outbox::{enqueue, Entity};
use crate::synced::{synced_row, SyncedRow};
use crate::types::{AttemptStatus, CertStatus, Recorded, StoredTime, Timestamp};
use crate::{now_text, ts, Store, StoreError};
use imprint_proto::{FailureCode, Stage};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

/// Device facts as reported by IDENT.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeviceFacts {
    pub serial: String,
    pub model: String,
    pub hw_rev: String,
    pub fw_version: String,
    pub fw_hash: String,
    pub chip_uid: String,
}

synced_row! {
    /// One step row (its attempt and number are the caller's).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
    pub struct StepRow: STEPS, omits [attempt_id, id] {
        pub at: String,
        pub stage: String,
        pub kind: String,
        pub detail: String,
    }
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptEnd {
    Passed {
        resumed: bool,
    },
    /// `hint` and `retryable` are the code's catalogue entry unless a
    /// caller has more to say.
    Failed {
        stage: Stage,
        code: FailureCode,
        reason: String,
        hint: String,
        retryable: bool,
    },
}

synced_row! {
    /// An attempt as stored: one field per column of `synced::ATTEMPTS`.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
    pub struct AttemptRow: ATTEMPTS {
        pub id: String,
        pub port: String,
        pub started_at: StoredTime,
        pub finished_at: Option<StoredTime>,
        pub status: Recorded<AttemptStatus>,
        pub stage: Option<Recorded<Stage>>,
        pub code: Option<Recorded<FailureCode>>,
        pub reason: Option<String>,
        pub hint: Option<String>,
        pub retryable: Option<bool>,
        pub device_serial: Option<String>,
        pub model: Option<String>,
        pub hw_rev: Option<String>,
        pub fw_version: Option<String>,
        pub fw_hash: Option<String>,
        pub chip_uid: Option<String>,
        pub batch: Option<String>,
        pub spki_sha256: Option<String>,
        pub certificate_id: Option<String>,
        pub resumed: bool,
        pub bytes_to_device: i64,
        pub bytes_from_device: i64,
        /// Who started the attempt (None before operators existed).
        pub operator: Option<String>,
    }
}

synced_row! {
    /// A certificate as stored: one field per column of `synced::CERTIFICATES`
    /// (and its local-only `chain_der`).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
    pub struct CertRow: CERTIFICATES {
        pub id: String,
        pub attempt_id: String,
        pub device_serial: String,
        pub issuer: String,
        pub serial_hex: String,
        pub spki_sha256: String,
        #[serde(skip)]
        pub spki_der: Vec<u8>,
        pub not_before: StoredTime,
        pub not_after: StoredTime,
        pub status: Recorded<CertStatus>,
        #[serde(skip)]
        pub cert_der: Option<Vec<u8>>,
        #[serde(skip)]
        pub chain_der: Option<Vec<u8>>,
        pub fingerprint_sha256: Option<String>,
        pub created_at: StoredTime,
        pub issued_at: Option<StoredTime>,
        /// Set once when the certificate is revoked (status `revoked`).
        pub revoked_at: Option<StoredTime>,
        /// The RFC 5280 reason's stored text (`imprint_core::crl::RevocationReason`).
        pub revocation_reason: Option<String>,
        pub revocation_comment: Option<String>,
        /// The operator who revoked it.
        pub revoked_by: Option<String>,
        /// When a renewal or rework replaced it (status `superseded`, or
        /// `revoked` with reason superseded).
        pub superseded_at: Option<StoredTime>,
        /// The certificate (id) that replaced it.
        pub superseded_by: Option<String>,
    }
}

/// A journaled intent to sign: written before the signer is called.
#[derive(Clone, Debug)]
pub struct Intent {
    pub id: String,
    pub attempt_id: String,
    pub device_serial: String,
    pub issuer: String,
    pub serial_hex: String,
    pub spki_sha256: String,
    pub spki_der: Vec<u8>,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

/// Filters for listing attempts.
#[derive(Clone, Debug, Default)]
pub struct AttemptFilter {
    pub device_serial: Option<String>,
    pub status: Option<String>,
    pub batch: Option<String>,
    pub cert_serial: Option<String>,
    pub since: Option<String>,
    pub limit: Option<u32>,
    pub operator: Option<String>,
}

pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
        || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// Run one UPDATE of an attempt row; if it changed, queue the attempt for sync
/// in the same transaction.
fn update_attempt(t: &rusqlite::Transaction<'_>, id: &str, sql: &str, p: impl rusqlite::Params) -> Result<(), StoreError> {
    if t.execute(sql, p)? > 0 {
        enqueue(t, Entity::Attempt, id, 0)?;
    }
    Ok(())
}

/// A new UUIDv7 as text.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Store {
    /// Record the start of an attempt on `port`. Returns its id.
    pub fn begin_attempt(&self, port: &str, batch: Option<&str>) -> Result<String, StoreError> {
        self.begin_attempt_by(port, batch, None)
    }

    /// Record the start of an attempt on `port` by `operator`. Returns its id.
    pub fn begin_attempt_by(&self, port: &str, batch: Option<&str>, operator: Option<&str>) -> Result<String, StoreError> {
        let id = new_id();
        let (i, p, b, o) = (id.clone(), port.to_string(), batch.map(str::to_string), operator.map(str::to_string));
        self.write(move |t| {
            t.execute(
                "INSERT INTO attempts(id, port, started_at, status, stage, batch, operator) VALUES (?1, ?2, ?3, 'running', 'hello', ?4, ?5)",
                params![i, p, now_text(), b, o],
            )?;
            enqueue(t, Entity::Attempt, &i, 0)?;
            Ok(())
        })?;
        Ok(id)
    }

    /// Append steps and move the attempt's `stage` to the last one.
    pub fn record_steps(&self, attempt_id: &str, steps: Vec<StepRow>) -> Result<(), StoreError> {
        if steps.is_empty() {
            return Ok(());
        }
        let id = attempt_id.to_string();
        self.write(move |t| {
            let mut ins = t.prepare_cached("INSERT INTO steps(attempt_id, at, stage, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)")?;
            for s in &steps {
                ins.execute(params![id, s.at, s.stage, s.kind, s.detail])?;
                enqueue(t, Entity::Step, &id, t.last_insert_rowid())?;
            }
            if let Some(last) = steps.iter().rev().find(|s| s.kind != "console") {
                if t.execute("UPDATE attempts SET stage = ?2 WHERE id = ?1", params![id, last.stage])? > 0 {
                    enqueue(t, Entity::Attempt, &id, 0)?;
                }
            }
            Ok(())
        })
    }

    pub fn set_device(&self, attempt_id: &str, d: &DeviceFacts) -> Result<(), StoreError> {
        let (id, d) = (attempt_id.to_string(), d.clone());
        self.write(move |t| {
            update_attempt(
                t,
                &id,
                "UPDATE attempts SET device_serial=?2, model=?3, hw_rev=?4, fw_version=?5, fw_hash=?6, chip_uid=?7 WHERE id=?1",
                params![id, d.serial, d.model, d.hw_rev, d.fw_version, d.fw_hash, d.chip_uid],
            )
        })
    }

    pub fn set_key(&self, attempt_id: &str, spki_sha256: &str) -> Result<(), StoreError> {
        let (id, k) = (attempt_id.to_string(), spki_sha256.to_string());
        self.write(move |t| update_attempt(t, &id, "UPDATE attempts SET spki_sha256=?2 WHERE id=?1", params![id, k]))
    }

    /// Journal the intent to sign. Fails with `Duplicate` if the key already
    /// has a current certificate or the (issuer, serial) a certificate row.
    pub fn journal_intent(&self, intent: &Intent) -> Result<(), StoreError> {
        let i = intent.clone();
        self.write(move |t| crate::rework::insert_intent(t, &i))
    }

    /// Complete a journaled intent with the signed certificate.
    pub fn mark_issued(&self, cert_id: &str, cert_der: &[u8], chain_der: &[u8], fingerprint: &str) -> Result<(), StoreError> {
        let (id, c, ch, f) = (cert_id.to_string(), cert_der.to_vec(), chain_der.to_vec(), fingerprint.to_string());
        self.write(move |t| {
            let n = t.execute(
                "UPDATE certificates SET status='issued', cert_der=?2, chain_der=?3, fingerprint_sha256=?4, issued_at=?5
                 WHERE id=?1 AND status='signing'",
                params![id, c, ch, f, now_text()],
            )?;
            if n != 1 {
                return Err(StoreError::NotFound(format!("no signing intent {id}")));
            }
            enqueue(t, Entity::Certificate, &id, 0)?;
            Ok(())
        })
    }

    /// Link an attempt to a certificate issued earlier (resume).
    pub fn link_certificate(&self, attempt_id: &str, cert_id: &str) -> Result<(), StoreError> {
        let (a, c) = (attempt_id.to_string(), cert_id.to_string());
        self.write(move |t| update_attempt(t, &a, "UPDATE attempts SET certificate_id=?2, resumed=1 WHERE id=?1", params![a, c]))
    }

    pub fn finish_attempt(
        &self,
        attempt_id: &str,
        end: AttemptEnd,
        bytes_to_device: u64,
        bytes_from_device: u64,
    ) -> Result<(), StoreError> {
        let id = attempt_id.to_string();
        let station = self.station_id();
        self.write_final(move |t| finish_in(t, &station, &id, end.clone(), bytes_to_device, bytes_from_device))
    }

    /// On start-up: attempts left `running` by a stopped station become
    /// `interrupted`, keeping the stage they reached. Returns how many.
    pub fn interrupt_running(&self) -> Result<usize, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let station = self.station_id();
        self.write(move |t| {
            let ids: Vec<String> = {
                let mut s = t.prepare("SELECT id FROM attempts WHERE status='running' ORDER BY started_at, id")?;
                let ids = s.query_map([], |r| r.get(0))?.collect::<Result<Vec<_>, _>>()?;
                ids
            };
            // Queue the changes first: the same rows, in the same transaction.
            t.execute(
                "INSERT INTO outbox(entity, entity_id, changed_at) SELECT 'attempt', id, ?1 FROM attempts
                 WHERE status='running' ORDER BY started_at, id",
                params![now_text()],
            )?;
            let code = FailureCode::StationStopped;
            let n = t.execute(
                "UPDATE attempts SET status='interrupted', finished_at=?1, code=?2,
                     reason='the station stopped during ' || coalesce(stage, 'the attempt'),
                     hint=?3, retryable=?4
                 WHERE status='running'",
                params![now_text(), code.as_str(), code.hint(), code.retryable() as i64],
            )?;
            for id in &ids {
                crate::audit::outcome_in(t, &station, id)?;
            }
            let _ = tx.send(n);
            Ok(())
        })?;
        Ok(rx.recv().unwrap_or(0))
    }

    /// The certificate row whose `column` equals `value`, if any.
    fn cert_where(&self, column: &'static str, value: &str) -> Result<Option<CertRow>, StoreError> {
        let v = value.to_string();
        self.read(move |c| {
            Ok(c.query_row(&format!("SELECT {} FROM certificates c WHERE {column}=?1", CertRow::select("c")), [v], CertRow::read)
                .optional()?)
        })
    }

    /// Certificate rows matching `condition` (SQL), oldest first.
    fn certs_where(&self, condition: &'static str) -> Result<Vec<CertRow>, StoreError> {
        self.read(move |c| {
            let mut s = c.prepare(&format!("SELECT {} FROM certificates c WHERE {condition} ORDER BY created_at", CertRow::select("c")))?;
            let rows = s.query_map([], CertRow::read)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// The certificate of a key: its current one (`signing` or `issued`, at
    /// most one: invariant 4), else its newest (superseded or revoked).
    pub fn cert_by_spki(&self, spki_sha256: &str) -> Result<Option<CertRow>, StoreError> {
        let v = spki_sha256.to_string();
        self.read(move |c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {} FROM certificates c WHERE spki_sha256 = ?1
                     ORDER BY status IN ('signing', 'issued') DESC, created_at DESC, id DESC LIMIT 1",
                    CertRow::select("c")
                ),
                [v],
                CertRow::read,
            )
            .optional()?)
        })
    }

    /// Certificates whose notAfter falls before `until` (stored-time text)
    /// and that are current (`issued`), soonest first: `imprint certs expiring`.
    pub fn certs_expiring_before(&self, until: &str) -> Result<Vec<CertRow>, StoreError> {
        let u = until.to_string();
        self.read(move |c| {
            let mut s = c.prepare(&format!(
                "SELECT {} FROM certificates c WHERE status = 'issued' AND not_after < ?1 ORDER BY not_after, id",
                CertRow::select("c")
            ))?;
            let rows = s.query_map([u], CertRow::read)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    pub fn cert_by_id(&self, id: &str) -> Result<Option<CertRow>, StoreError> {
        self.cert_where("id", id)
    }

    /// The highest number `N` among device serials `<prefix>N` that have a
    /// certificate (0: none). Simulated boards of a restarted station
    /// continue from it: a new board is never named like a certified one.
    pub fn highest_serial_number(&self, prefix: &str) -> Result<u64, StoreError> {
        let p = prefix.to_string();
        self.read(move |c| {
            let mut s =
                c.prepare_cached("SELECT DISTINCT device_serial FROM certificates WHERE substr(device_serial, 1, length(?1)) = ?1")?;
            let serials = s.query_map([&p], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
            Ok(serials.iter().filter_map(|s| s[p.len()..].parse::<u64>().ok()).max().unwrap_or(0))
        })
    }

    /// Every certificate row of a device serial, oldest first (a clone check:
    /// a serial with a current certificate for another key is refused).
    pub fn certs_by_device_serial(&self, device_serial: &str) -> Result<Vec<CertRow>, StoreError> {
        let v = device_serial.to_string();
        self.read(move |c| {
            let mut s = c.prepare_cached(&format!(
                "SELECT {} FROM certificates c WHERE device_serial = ?1 ORDER BY created_at",
                CertRow::select("c")
            ))?;
            let rows = s.query_map([v], CertRow::read)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Intents journaled but never completed (the station stopped while signing).
    pub fn pending_intents(&self) -> Result<Vec<CertRow>, StoreError> {
        self.certs_where("status='signing'")
    }

    pub fn certificates(&self) -> Result<Vec<CertRow>, StoreError> {
        self.certs_where("1=1")
    }

    pub fn attempts(&self, f: &AttemptFilter) -> Result<Vec<AttemptRow>, StoreError> {
        let f = f.clone();
        self.read(move |c| list_attempts(c, &f))
    }

    /// Attempts with their certificates, in one joined query (History, records, exports).
    pub fn attempts_with_certs(&self, f: &AttemptFilter) -> Result<Vec<(AttemptRow, Option<CertRow>)>, StoreError> {
        let f = f.clone();
        self.read(move |c| {
            let (sql, args) = attempt_query(&format!("{}, {}", AttemptRow::select("a"), CertRow::select("c")), &f);
            let mut s = c.prepare(&sql)?;
            let rows = s
                .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                    let a = AttemptRow::read(r)?;
                    // The certificate's columns follow every attempt column.
                    let at = AttemptRow::TABLE.width();
                    let cert = match r.get::<_, Option<String>>(at)? {
                        Some(_) => Some(CertRow::read_at(r, at)?),
                        None => None,
                    };
                    Ok((a, cert))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// How many attempts match a filter (its limit ignored): lists say "N of M".
    pub fn count_attempts(&self, f: &AttemptFilter) -> Result<u64, StoreError> {
        let f = AttemptFilter { limit: None, ..f.clone() };
        self.read(move |c| {
            let (sql, args) = attempt_query("count(*)", &f);
            let sql = sql.replace(" ORDER BY a.started_at DESC, a.id DESC", "");
            let n: i64 = c.query_row(&sql, rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;
            Ok(n as u64)
        })
    }

    pub fn attempt(&self, id: &str) -> Result<Option<AttemptRow>, StoreError> {
        let k = id.to_string();
        self.read(move |c| {
            Ok(c.query_row(&format!("SELECT {} FROM attempts a WHERE a.id=?1", AttemptRow::select("a")), [k], AttemptRow::read)
                .optional()?)
        })
    }

    pub fn steps(&self, attempt_id: &str) -> Result<Vec<StepRow>, StoreError> {
        let k = attempt_id.to_string();
        self.read(move |c| {
            let mut s = c.prepare(&format!("SELECT {} FROM steps s WHERE attempt_id=?1 ORDER BY id", StepRow::select("s")))?;
            let rows = s.query_map([k], StepRow::read)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }
}

/// Record how an attempt ended, inside the caller's transaction (with its
/// outbox row), so other rows can be written atomically with it.
/// Finish an attempt and, in the same transaction, append its
/// `provisioning_outcome` audit entry anchoring the attempt and its certificate.
pub(crate) fn finish_in(
    t: &rusqlite::Transaction<'_>,
    station: &str,
    id: &str,
    end: AttemptEnd,
    bytes_to_device: u64,
    bytes_from_device: u64,
) -> Result<(), StoreError> {
    let n = match end {
        AttemptEnd::Passed { resumed } => t.execute(
            // A pass clears any failure recorded earlier (another process's
            // start-up recovery may have marked this live attempt interrupted).
            "UPDATE attempts SET status='passed', stage='done', finished_at=?2, resumed=max(resumed, ?3),
                 bytes_to_device=?4, bytes_from_device=?5, code=NULL, reason=NULL, hint=NULL, retryable=NULL WHERE id=?1",
            params![id, now_text(), resumed as i64, bytes_to_device as i64, bytes_from_device as i64],
        )?,
        AttemptEnd::Failed { stage, code, reason, hint, retryable } => t.execute(
            "UPDATE attempts SET status='failed', stage=?2, code=?3, reason=?4, hint=?5, retryable=?6, finished_at=?7,
                 bytes_to_device=?8, bytes_from_device=?9 WHERE id=?1",
            params![
                id,
                stage.as_str(),
                code.as_str(),
                reason,
                hint,
                retryable as i64,
                now_text(),
                bytes_to_device as i64,
                bytes_from_device as i64
            ],
        )?,
    };
    if n > 0 {
        enqueue(t, Entity::Attempt, id, 0)?;
        crate::audit::outcome_in(t, station, id)?;
    }
    Ok(())
}

fn list_attempts(c: &Connection, f: &AttemptFilter) -> Result<Vec<AttemptRow>, StoreError> {
    let (sql, args) = attempt_query(&AttemptRow::select("a"), f);
    let mut s = c.prepare(&sql)?;
    let rows = s.query_map(rusqlite::params_from_iter(args.iter()), AttemptRow::read)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The attempts query for a filter: SQL selecting `cols` and its arguments.
fn attempt_query(cols: &str, f: &AttemptFilter) -> (String, Vec<String>) {
    let mut sql = format!("SELECT {cols} FROM attempts a LEFT JOIN certificates c ON c.id = a.certificate_id WHERE 1=1");
    let mut args: Vec<String> = Vec::new();
    let mut add = |clause: &str, v: &Option<String>| {
        if let Some(v) = v {
            args.push(v.clone());
            sql.push_str(&format!(" AND {clause} ?{}", args.len()));
        }
    };
    add("a.device_serial =", &f.device_serial);
    add("a.status =", &f.status);
    add("a.batch =", &f.batch);
    add("c.serial_hex =", &f.cert_serial.as_ref().map(|s| s.to_ascii_lowercase()));
    add("a.started_at >=", &f.since);
    add("a.operator =", &f.operator);
    sql.push_str(" ORDER BY a.started_at DESC, a.id DESC");
    if let Some(l) = f.limit {
        sql.push_str(&format!(" LIMIT {l}"));
    }
    (sql, args)
}

/// Format a time as stored.
pub fn stored_time(t: time::OffsetDateTime) -> String {
    ts(t)
}

/// An intent for device `SN{n}` with key `key{n}` and serial `{n:04x}`: what
/// the store's quota and lease tests journal.
#[cfg(test)]
pub(crate) fn test_intent(attempt: &str, n: usize) -> Intent {
    Intent {
        id: new_id(),
        attempt_id: attempt.into(),
        device_serial: format!("SN{n}"),
        issuer: "CN=CA".into(),
        serial_hex: format!("{n:04x}"),
        spki_sha256: format!("key{n}"),
        spki_der: vec![1, 2, 3],
        not_before: Timestamp::now(),
        not_after: Timestamp::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("station.db")).unwrap();
        (d, s)
    }

    fn intent(attempt: &str, key: &str, serial: &str) -> Intent {
        Intent {
            id: new_id(),
            attempt_id: attempt.into(),
            device_serial: "SN1".into(),
            issuer: "CN=CA".into(),
            serial_hex: serial.into(),
            spki_sha256: key.into(),
            spki_der: vec![1, 2, 3],
            not_before: Timestamp::now(),
            not_after: Timestamp::now(),
        }
    }

    #[test]
    fn pragmas_are_wal_and_full() {
        let (_d, s) = store();
        let (mode, sync): (String, i64) = s
            .read(|c| {
                Ok((c.pragma_query_value(None, "journal_mode", |r| r.get(0))?, c.pragma_query_value(None, "synchronous", |r| r.get(0))?))
            })
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "FULL");
    }

    #[test]
    fn attempt_lifecycle_and_steps() {
        let (_d, s) = store();
        let a = s.begin_attempt("/dev/ttyUSB0", Some("B1")).unwrap();
        s.record_steps(&a, vec![StepRow { at: now_text(), stage: "identify".into(), kind: "started".into(), detail: "".into() }]).unwrap();
        s.set_device(&a, &DeviceFacts { serial: "SN1".into(), ..Default::default() }).unwrap();
        let row = s.attempt(&a).unwrap().unwrap();
        assert_eq!((row.status.clone(), row.stage.clone()), (AttemptStatus::Running.into(), Some(Stage::Identify.into())));
        s.finish_attempt(
            &a,
            AttemptEnd::Failed { stage: Stage::Keygen, code: FailureCode::Timeout, reason: "r".into(), hint: "h".into(), retryable: true },
            10,
            20,
        )
        .unwrap();
        let row = s.attempt(&a).unwrap().unwrap();
        assert_eq!((row.status.as_str(), row.code.as_ref().map(Recorded::as_str), row.bytes_from_device), ("failed", Some("timeout"), 20));
        assert_eq!(s.steps(&a).unwrap().len(), 1);
        let f = AttemptFilter { device_serial: Some("SN1".into()), ..Default::default() };
        assert_eq!(s.attempts(&f).unwrap().len(), 1);
        let f = AttemptFilter { batch: Some("B2".into()), ..Default::default() };
        assert_eq!(s.attempts(&f).unwrap().len(), 0);
    }

    #[test]
    fn intent_then_issue_and_uniqueness() {
        let (_d, s) = store();
        let a = s.begin_attempt("p", None).unwrap();
        let i = intent(&a, "k1", "01");
        s.journal_intent(&i).unwrap();
        assert_eq!(s.pending_intents().unwrap().len(), 1);
        // same key again: refused
        assert!(matches!(s.journal_intent(&intent(&a, "k1", "02")), Err(StoreError::Duplicate(_))));
        // same serial again: refused
        assert!(matches!(s.journal_intent(&intent(&a, "k2", "01")), Err(StoreError::Duplicate(_))));
        s.mark_issued(&i.id, b"cert", b"chain", "fp").unwrap();
        assert!(s.pending_intents().unwrap().is_empty());
        let c = s.cert_by_spki("k1").unwrap().unwrap();
        assert_eq!((c.status.as_str(), c.cert_der.as_deref()), ("issued", Some(&b"cert"[..])));
        // issuing twice is refused
        assert!(s.mark_issued(&i.id, b"x", b"y", "fp").is_err());
    }

    #[test]
    fn a_failing_write_does_not_spoil_its_batch() {
        let (_d, s) = store();
        let a = s.begin_attempt("p", None).unwrap();
        s.journal_intent(&intent(&a, "k1", "01")).unwrap();
        let s = std::sync::Arc::new(s);
        let hs: Vec<_> = (0..20)
            .map(|n| {
                let s = s.clone();
                let a = a.clone();
                std::thread::spawn(move || s.journal_intent(&intent(&a, if n % 2 == 0 { "k1" } else { "kx" }, &format!("{n:02x}ff"))))
            })
            .collect();
        let results: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        // all "k1" duplicates fail; exactly one "kx" succeeds
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "{results:?}");
        assert_eq!(s.certificates().unwrap().len(), 2);
    }

    #[test]
    fn running_attempts_become_interrupted_on_restart() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.db");
        let a = {
            let s = Store::open(&p).unwrap();
            let a = s.begin_attempt("p", None).unwrap();
            s.record_steps(&a, vec![StepRow { at: now_text(), stage: "write_cert".into(), kind: "started".into(), detail: "".into() }])
                .unwrap();
            a
        };
        let s = Store::open(&p).unwrap();
        assert_eq!(s.interrupt_running().unwrap(), 1);
        let r = s.attempt(&a).unwrap().unwrap();
        assert_eq!(r.status, AttemptStatus::Interrupted);
        assert_eq!(r.code, Some(FailureCode::StationStopped.into()));
        assert_eq!(r.reason.as_deref(), Some("the station stopped during write_cert"));
    }

    #[test]
    fn a_pass_after_another_process_marked_the_attempt_interrupted_keeps_no_stale_failure() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.db");
        let s = Store::open(&p).unwrap();
        let a = s.begin_attempt("p", None).unwrap();
        // A second process on the same data dir runs start-up recovery while
        // this attempt is live.
        {
            let other = Store::open(&p).unwrap();
            assert_eq!(other.interrupt_running().unwrap(), 1);
        }
        assert_eq!(s.attempt(&a).unwrap().unwrap().code, Some(FailureCode::StationStopped.into()));
        s.finish_attempt(&a, AttemptEnd::Passed { resumed: false }, 1, 1).unwrap();
        let r = s.attempt(&a).unwrap().unwrap();
        assert_eq!(r.status, AttemptStatus::Passed);
        assert_eq!((r.code, r.reason, r.hint, r.retryable), (None, None, None, None), "a pass carries no failure");
    }

    #[test]
    fn unknown_text_in_an_old_database_reads_back_unrecognized_without_panicking() {
        let (_d, s) = store();
        s.write(|t| {
            t.execute_batch(
                "INSERT INTO attempts(id, port, started_at, status, stage, code)
                 VALUES ('x', 'p', '2026-01-01T00:00:00.000Z', 'failed', 'warp', 'connect_dns')",
            )?;
            Ok(())
        })
        .unwrap();
        let r = s.attempt("x").unwrap().unwrap();
        assert_eq!(r.status, AttemptStatus::Failed);
        assert_eq!(r.stage, Some(Recorded::Unrecognized("warp".into())));
        assert_eq!(r.code.as_ref().map(|c| (c.known(), c.as_str())), Some((None, "connect_dns")));
    }

    /// Unmounts the test's tmpfs when the test ends, however it ends.
    struct Mounted(std::path::PathBuf);
    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }

    #[test]
    fn a_full_disk_is_recorded_as_store_full_not_left_running() {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("SKIPPED a_full_disk_is_recorded_as_store_full_not_left_running: mounting a 4 MiB tmpfs needs root here");
            return;
        }
        let _umount = Mounted(dir.path().to_path_buf());
        let db = dir.path().join("station.db");
        let s = Store::open(&db).unwrap();
        let reserve = dir.path().join("station.db-reserve");
        assert_eq!(std::fs::metadata(&reserve).unwrap().len(), crate::RESERVE_BYTES);
        let a = s.begin_attempt("p", None).unwrap();
        // Fill the disk for real.
        {
            use std::io::Write;
            let mut f = std::fs::File::create(dir.path().join("filler")).unwrap();
            let chunk = vec![7u8; 16 * 1024];
            while f.write_all(&chunk).is_ok() {}
            let _ = f.sync_all();
        }
        let big = "x".repeat(16 * 1024);
        let step = || StepRow { at: now_text(), stage: "identify".into(), kind: "info".into(), detail: big.clone() };
        let err = (0..512).find_map(|_| s.record_steps(&a, vec![step(), step()]).err()).expect("the disk never filled up");
        assert!(matches!(err, StoreError::Full(_)), "{err:?}");
        assert_eq!(err.failure_code(), FailureCode::StoreFull);
        // The failure is still recorded: the reserve is given back for it.
        let code = err.failure_code();
        let end = AttemptEnd::Failed {
            stage: Stage::Identify,
            code,
            reason: err.to_string(),
            hint: code.hint().into(),
            retryable: code.retryable(),
        };
        s.finish_attempt(&a, end, 0, 0).unwrap();
        let r = s.attempt(&a).unwrap().unwrap();
        assert_eq!((r.status.clone(), r.code.clone()), (AttemptStatus::Failed.into(), Some(FailureCode::StoreFull.into())));
        assert!(r.hint.as_deref().is_some_and(|h| h.starts_with("Free disk space")), "{r:?}");
        assert!(!reserve.exists(), "the reserve was given back");
        drop(s);
    }

    #[test]
    fn newer_schema_is_refused_with_a_clear_message() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.db");
        {
            let c = Connection::open(&p).unwrap();
            c.pragma_update(None, "user_version", 99).unwrap();
        }
        let e = Store::open(&p).err().unwrap();
        assert!(e.to_string().contains("newer Imprint"), "{e}");
    }
}
