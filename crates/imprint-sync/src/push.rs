//! Sending one batch of pending changes to the center, exactly once.
//!
//! **Fast path** (new records, the common case): per connection, one
//! transaction of plain `INSERT ... SELECT FROM UNNEST($n::type[], ...)`, one
//! statement per record kind, encoded beforehand on the blocking pool. At the
//! server a plain INSERT costs what COPY costs; `ON CONFLICT` roughly doubles
//! it (speculative insertion), so it is kept for when it is needed.
//!
//! **Careful path** (some row exists already, or the center refuses a row):
//! that transaction is rolled back and, per record kind, in one transaction:
//! 1. the plain INSERT again in a savepoint, else `INSERT ... ON CONFLICT DO
//!    NOTHING` (no conflict target: a certificate whose serial or key another
//!    record holds must not fail the statement);
//! 2. `SELECT id, version, content_sha256` of the center's copies
//!    (row-level security shows a station its own rows only):
//!    - same version, same hash: it arrived before (a lost acknowledgement): done;
//!    - same version, other hash, or a newer version at the center: quarantine;
//!    - no row visible: another record holds the same unique key (a
//!      certificate serial or key issued elsewhere): quarantine;
//!    - older version: candidate for 3;
//! 3. `UPDATE ... FROM UNNEST(...) WHERE version < new AND <immutable columns
//!    equal> AND <the center's copy may still change>`: rows updated are done,
//!    the others are quarantined (a finished attempt or an issued certificate
//!    never changes at the center).
//!
//! A statement that fails for a data reason (SQLSTATE classes 22, 23) is
//! retried on halves of the batch until the one record at fault is found and
//! quarantined with the database's reason; other errors (connection lost,
//! server restarting) abort the batch, which is sent again later.

use crate::hash;
use imprint_store::{now_text, new_id, parse_ts, AttemptRow, CertRow, Entity, PendingChange, Quarantine, RecordKey, RecordState, StepRecord};
use sqlx::postgres::PgConnection;
// SQL built here only from constant column lists and table names; values are always bound.
use sqlx::{AssertSqlSafe, Connection, Row};
use std::collections::{HashMap, HashSet};

use time::OffsetDateTime;
use uuid::Uuid;

/// What became of a batch.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub done: Vec<(RecordKey, i64)>,
    pub quarantine: Vec<Quarantine>,
    pub inserted: usize,
    pub updated: usize,
    pub already: usize,
}

impl Outcome {
    fn merge(&mut self, o: Outcome) {
        self.done.extend(o.done);
        self.quarantine.extend(o.quarantine);
        self.inserted += o.inserted;
        self.updated += o.updated;
        self.already += o.already;
    }
    fn quarantine(&mut self, key: RecordKey, version: i64, local: &[u8], central: Option<&[u8]>, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::warn!(record = %key, version, reason = %reason, "record quarantined: kept locally, not sent");
        self.quarantine.push(Quarantine {
            key,
            version,
            reason,
            local_sha256: hex::encode(local),
            central_sha256: central.map(hex::encode),
            at: now_text(),
            audit_id: new_id(),
            reported_at: None,
        });
    }
}

#[derive(Clone, Debug)]
pub(crate) struct AttemptIn {
    key: RecordKey,
    version: i64,
    hash: [u8; 32],
    id: Uuid,
    started_at: OffsetDateTime,
    finished_at: Option<OffsetDateTime>,
    certificate_id: Option<Uuid>,
    row: AttemptRow,
}

#[derive(Clone, Debug)]
pub(crate) struct StepIn {
    key: RecordKey,
    version: i64,
    hash: [u8; 32],
    attempt_id: Uuid,
    at: OffsetDateTime,
    row: StepRecord,
}

#[derive(Clone, Debug)]
pub(crate) struct CertIn {
    key: RecordKey,
    version: i64,
    hash: [u8; 32],
    id: Uuid,
    attempt_id: Uuid,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    created_at: OffsetDateTime,
    issued_at: Option<OffsetDateTime>,
    row: CertRow,
}

/// A record ready to send: parsed, hashed.
#[derive(Clone, Debug)]
pub(crate) enum Prepared {
    A(AttemptIn),
    S(StepIn),
    C(CertIn),
}

fn uuid(s: &str) -> Result<Uuid, String> {
    Uuid::parse_str(s).map_err(|_| format!("{s:?} is not a UUID"))
}
fn when(s: &str) -> Result<OffsetDateTime, String> {
    parse_ts(s).ok_or_else(|| format!("{s:?} is not an RFC 3339 time"))
}

impl Prepared {
    /// The record and the version this row carries.
    pub(crate) fn key_version(&self) -> (&RecordKey, i64) {
        match self {
            Prepared::A(a) => (&a.key, a.version),
            Prepared::S(s) => (&s.key, s.version),
            Prepared::C(c) => (&c.key, c.version),
        }
    }
}

/// Turn pending changes into rows to send (CPU work: done off the sending
/// path); malformed ones are quarantined in `out`.
pub(crate) fn prepare(station: &str, changes: Vec<PendingChange>, out: &mut Outcome) -> Vec<Prepared> {
    let mut v = Vec::with_capacity(changes.len());
    for c in changes {
        let (key, version) = (c.key, c.version);
        let r: Result<Prepared, (String, [u8; 32])> = match c.state {
            RecordState::Attempt(row) => {
                let h = hash::attempt(station, &row);
                (|| {
                    Ok(Prepared::A(AttemptIn {
                        id: uuid(&row.id)?,
                        started_at: row.started_at.get(),
                        finished_at: row.finished_at.map(|t| t.get()),
                        certificate_id: row.certificate_id.as_deref().map(uuid).transpose()?,
                        key: key.clone(),
                        version,
                        hash: h,
                        row,
                    }))
                })()
                .map_err(|e: String| (e, h))
            }
            RecordState::Step(row) => {
                let h = hash::step(station, &row);
                (|| {
                    Ok(Prepared::S(StepIn { attempt_id: uuid(&row.attempt_id)?, at: when(&row.at)?, key: key.clone(), version, hash: h, row }))
                })()
                .map_err(|e: String| (e, h))
            }
            RecordState::Certificate(row) => {
                let h = hash::certificate(station, &row);
                (|| {
                    Ok(Prepared::C(CertIn {
                        id: uuid(&row.id)?,
                        attempt_id: uuid(&row.attempt_id)?,
                        not_before: row.not_before.get(),
                        not_after: row.not_after.get(),
                        created_at: row.created_at.get(),
                        issued_at: row.issued_at.map(|t| t.get()),
                        key: key.clone(),
                        version,
                        hash: h,
                        row,
                    }))
                })()
                .map_err(|e: String| (e, h))
            }
            RecordState::Missing => Err(("the outbox names a record that is not in the local store".into(), [0; 32])),
        };
        match r {
            Ok(p) => v.push(p),
            Err((reason, h)) => out.quarantine(key, version, &h, None, format!("malformed local record: {reason}")),
        }
    }
    v
}

/// Why a statement failed: the data of some record, or anything else.
enum PushError {
    Data(String),
    Other(sqlx::Error),
}

impl From<sqlx::Error> for PushError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(d) = &e {
            if let Some(code) = d.code() {
                if code.starts_with("22") || code.starts_with("23") {
                    return PushError::Data(format!("the center refused it: {} (SQLSTATE {code})", d.message()));
                }
            }
        }
        PushError::Other(e)
    }
}

type PgQuery = sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// A batch split over the connections, with the plain INSERTs already
/// encoded (built on the blocking pool, off the sending path).
pub(crate) struct Planned {
    main: Vec<Prepared>,
    main_q: Vec<PgQuery>,
    aux: Vec<Prepared>,
    aux_q: Vec<PgQuery>,
}

impl Planned {
    pub(crate) fn len(&self) -> usize {
        self.main.len() + self.aux.len()
    }
}

fn plain_queries(station: &str, rows: &[Prepared]) -> Vec<PgQuery> {
    let (mut a, mut c, mut st) = (Vec::new(), Vec::new(), Vec::new());
    for p in rows {
        match p {
            Prepared::A(x) => a.push(x),
            Prepared::C(x) => c.push(x),
            Prepared::S(x) => st.push(x),
        }
    }
    let names = |cols: &[(&str, &str)]| cols.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    let mut out = Vec::new();
    if !a.is_empty() {
        let sql = format!("INSERT INTO attempts (station_id, {}) SELECT $1, u.* FROM {}", names(ATTEMPT_COLS), unnest(ATTEMPT_COLS, 2));
        out.push(bind_attempts(sqlx::query(AssertSqlSafe(sql)).bind(station.to_string()), &a));
    }
    if !c.is_empty() {
        let sql = format!("INSERT INTO certificates (station_id, {}) SELECT $1, u.* FROM {}", names(CERT_COLS), unnest(CERT_COLS, 2));
        out.push(bind_certs(sqlx::query(AssertSqlSafe(sql)).bind(station.to_string()), &c));
    }
    if !st.is_empty() {
        let sql = format!("INSERT INTO attempt_steps (station_id, {}) SELECT $1, u.* FROM {}", names(STEP_COLS), unnest(STEP_COLS, 2));
        out.push(bind_steps(sqlx::query(AssertSqlSafe(sql)).bind(station.to_string()), &st));
    }
    out
}

/// Split a batch over one or two connections and encode its plain INSERTs.
/// With two, part of the steps go over the second at the same time: steps
/// never change, so their order does not matter; attempts and certificates
/// always go over the first connection, batch after batch, so their versions
/// arrive in order.
pub(crate) fn plan(station: &str, rows: Vec<Prepared>, two: bool) -> Planned {
    let (mut main, aux) = if two {
        let (mut first, mut steps): (Vec<Prepared>, Vec<Prepared>) = rows.into_iter().partition(|p| !matches!(p, Prepared::S(_)));
        let keep = (first.len() + steps.len()).div_ceil(2).saturating_sub(first.len()).min(steps.len());
        let second = steps.split_off(keep);
        first.append(&mut steps);
        (first, second)
    } else {
        (rows, Vec::new())
    };
    main.sort_by_key(|p| match p {
        Prepared::A(_) => 0,
        Prepared::C(_) => 1,
        Prepared::S(_) => 2,
    });
    let main_q = plain_queries(station, &main);
    let aux_q = plain_queries(station, &aux);
    Planned { main, main_q, aux, aux_q }
}

/// Send a planned batch and say what became of each record.
pub(crate) async fn push(
    conn: &mut PgConnection,
    aux: Option<&mut PgConnection>,
    station: &str,
    planned: Planned,
    mut out: Outcome,
) -> Result<Outcome, sqlx::Error> {
    let Planned { main, main_q, aux: aux_rows, aux_q } = planned;
    match aux {
        Some(aux) if !aux_rows.is_empty() => {
            let (a, b) = tokio::join!(send(conn, station, main, main_q), send(aux, station, aux_rows, aux_q));
            out.merge(a?);
            out.merge(b?);
        }
        _ => {
            let mut rows = main;
            rows.extend(aux_rows);
            let mut q = main_q;
            q.extend(aux_q);
            out.merge(send(conn, station, rows, q).await?);
        }
    }
    Ok(out)
}

/// The fast path: the plain INSERTs in one transaction (new rows, the common
/// case, cost at the server what COPY costs; `ON CONFLICT` would roughly
/// double it). If any row exists already or is refused, that transaction is
/// rolled back and the careful path decides record by record.
async fn send(conn: &mut PgConnection, station: &str, rows: Vec<Prepared>, queries: Vec<PgQuery>) -> Result<Outcome, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Outcome::default());
    }
    let mut tx = conn.begin().await?;
    let mut fast = true;
    for q in queries {
        match q.execute(&mut *tx).await.map_err(PushError::from) {
            Ok(_) => {}
            Err(PushError::Data(_)) => {
                fast = false;
                break;
            }
            Err(PushError::Other(e)) => return Err(e),
        }
    }
    if fast {
        tx.commit().await?;
        let mut out = Outcome { inserted: rows.len(), ..Outcome::default() };
        out.done.extend(rows.iter().map(|p| {
            let (k, v) = p.key_version();
            (k.clone(), v)
        }));
        return Ok(out);
    }
    tx.rollback().await?;
    push_rows(conn, station, rows).await
}

/// Send rows over one connection; isolate a record the center refuses.
async fn push_rows(conn: &mut PgConnection, station: &str, rows: Vec<Prepared>) -> Result<Outcome, sqlx::Error> {
    let mut out = Outcome::default();
    let mut stack: Vec<Vec<Prepared>> = vec![rows];
    while let Some(set) = stack.pop() {
        if set.is_empty() {
            continue;
        }
        match push_set(conn, station, &set).await {
            Ok(o) => out.merge(o),
            Err(PushError::Other(e)) => return Err(e),
            Err(PushError::Data(reason)) => {
                if set.len() == 1 {
                    let (key, version, h) = match &set[0] {
                        Prepared::A(a) => (a.key.clone(), a.version, a.hash),
                        Prepared::S(s) => (s.key.clone(), s.version, s.hash),
                        Prepared::C(c) => (c.key.clone(), c.version, c.hash),
                    };
                    out.quarantine(key, version, &h, None, reason);
                } else {
                    tracing::info!(rows = set.len(), reason = %reason, "batch refused for one record's data: splitting to find it");
                    let mut a = set;
                    let b = a.split_off(a.len() / 2);
                    stack.push(b);
                    stack.push(a);
                }
            }
        }
    }
    Ok(out)
}

async fn push_set(conn: &mut PgConnection, station: &str, set: &[Prepared]) -> Result<Outcome, PushError> {
    let mut attempts = Vec::new();
    let mut steps = Vec::new();
    let mut certs = Vec::new();
    for p in set {
        match p {
            Prepared::A(a) => attempts.push(a),
            Prepared::S(s) => steps.push(s),
            Prepared::C(c) => certs.push(c),
        }
    }
    let mut tx = conn.begin().await?;
    let mut out = Outcome::default();
    if !attempts.is_empty() {
        out.merge(push_attempts(&mut tx, station, &attempts).await?);
    }
    if !certs.is_empty() {
        out.merge(push_certs(&mut tx, station, &certs).await?);
    }
    if !steps.is_empty() {
        out.merge(push_steps(&mut tx, station, &steps).await?);
    }
    tx.commit().await?;
    Ok(out)
}

/// The plain INSERT first, in a savepoint: new rows (the common case) cost
/// what COPY costs at the server, while `ON CONFLICT` roughly doubles it
/// (speculative insertion). True if it took every row; false if some row
/// exists already (a unique violation, rolled back: take the careful path).
async fn try_plain(
    conn: &mut PgConnection,
    q: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<bool, PushError> {
    sqlx::raw_sql("SAVEPOINT plain").execute(&mut *conn).await?;
    match q.execute(&mut *conn).await {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("23505") => {
            sqlx::raw_sql("ROLLBACK TO SAVEPOINT plain").execute(&mut *conn).await?;
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// `UNNEST($k::t[], ...) AS u(c, ...)` for `cols`, numbering from `first`.
fn unnest(cols: &[(&str, &str)], first: usize) -> String {
    let args: Vec<String> = cols.iter().enumerate().map(|(i, (_, t))| format!("${}::{t}[]", first + i)).collect();
    let names: Vec<&str> = cols.iter().map(|(n, _)| *n).collect();
    format!("UNNEST({}) AS u({})", args.join(", "), names.join(", "))
}

const ATTEMPT_COLS: &[(&str, &str)] = &[
    ("id", "uuid"),
    ("port", "text"),
    ("started_at", "timestamptz"),
    ("finished_at", "timestamptz"),
    ("status", "text"),
    ("stage", "text"),
    ("code", "text"),
    ("reason", "text"),
    ("hint", "text"),
    ("retryable", "bool"),
    ("device_serial", "text"),
    ("model", "text"),
    ("hw_rev", "text"),
    ("fw_version", "text"),
    ("fw_hash", "text"),
    ("chip_uid", "text"),
    ("batch", "text"),
    ("spki_sha256", "text"),
    ("certificate_id", "uuid"),
    ("resumed", "bool"),
    ("bytes_to_device", "int8"),
    ("bytes_from_device", "int8"),
    ("version", "int8"),
    ("content_sha256", "bytea"),
];

fn bind_attempts<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    rows: &[&AttemptIn],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let col = |f: &dyn Fn(&AttemptRow) -> Option<String>| rows.iter().map(|a| f(&a.row)).collect::<Vec<_>>();
    q = q
        .bind(rows.iter().map(|a| a.id).collect::<Vec<_>>())
        .bind(rows.iter().map(|a| a.row.port.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|a| a.started_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|a| a.finished_at).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|a| a.row.status.as_str().to_string())
                .collect::<Vec<_>>(),
        )
        .bind(col(&|r| r.stage.as_ref().map(|v| v.as_str().to_string())))
        .bind(col(&|r| r.code.as_ref().map(|v| v.as_str().to_string())))
        .bind(col(&|r| r.reason.clone()))
        .bind(col(&|r| r.hint.clone()))
        .bind(rows.iter().map(|a| a.row.retryable).collect::<Vec<_>>())
        .bind(col(&|r| r.device_serial.clone()))
        .bind(col(&|r| r.model.clone()))
        .bind(col(&|r| r.hw_rev.clone()))
        .bind(col(&|r| r.fw_version.clone()))
        .bind(col(&|r| r.fw_hash.clone()))
        .bind(col(&|r| r.chip_uid.clone()))
        .bind(col(&|r| r.batch.clone()))
        .bind(col(&|r| r.spki_sha256.clone()))
        .bind(rows.iter().map(|a| a.certificate_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|a| a.row.resumed).collect::<Vec<_>>())
        .bind(rows.iter().map(|a| a.row.bytes_to_device).collect::<Vec<_>>())
        .bind(rows.iter().map(|a| a.row.bytes_from_device).collect::<Vec<_>>())
        .bind(rows.iter().map(|a| a.version).collect::<Vec<_>>())
        .bind(rows.iter().map(|a| a.hash.to_vec()).collect::<Vec<_>>());
    q
}

/// The center's (version, hash) of records by id, as this station sees them.
async fn central_versions(conn: &mut PgConnection, table: &str, ids: Vec<Uuid>) -> Result<HashMap<Uuid, (i64, Vec<u8>)>, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!("SELECT id, version, content_sha256 FROM {table} WHERE id = ANY($1)")))
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?;
    let mut m = HashMap::with_capacity(rows.len());
    for r in rows {
        m.insert(r.try_get::<Uuid, _>(0)?, (r.try_get::<i64, _>(1)?, r.try_get::<Vec<u8>, _>(2)?));
    }
    Ok(m)
}

/// Classify records the INSERT did not take. Returns the update candidates.
fn classify<'a, T>(
    out: &mut Outcome,
    rest: Vec<&'a T>,
    central: &HashMap<Uuid, (i64, Vec<u8>)>,
    get: impl Fn(&T) -> (Uuid, &RecordKey, i64, &[u8; 32]),
    missing_reason: &str,
) -> Vec<&'a T> {
    let mut candidates = Vec::new();
    for r in rest {
        let (id, key, version, h) = get(r);
        match central.get(&id) {
            None => out.quarantine(key.clone(), version, h, None, missing_reason),
            Some((cv, ch)) if *cv == version && ch.as_slice() == h => {
                out.already += 1;
                out.done.push((key.clone(), version));
            }
            Some((cv, ch)) if *cv == version => {
                out.quarantine(key.clone(), version, h, Some(ch), "the center holds different content for the same version of this record")
            }
            Some((cv, ch)) if *cv > version => out.quarantine(
                key.clone(),
                version,
                h,
                Some(ch),
                format!("the center holds a newer version ({cv}) than this station ({version}): was the local store restored from an old copy?"),
            ),
            Some(_) => candidates.push(r),
        }
    }
    candidates
}

async fn push_attempts(conn: &mut PgConnection, station: &str, rows: &[&AttemptIn]) -> Result<Outcome, PushError> {
    let mut out = Outcome::default();
    let names: Vec<&str> = ATTEMPT_COLS.iter().map(|(n, _)| *n).collect();
    let plain = format!("INSERT INTO attempts (station_id, {}) SELECT $1, u.* FROM {}", names.join(", "), unnest(ATTEMPT_COLS, 2));
    if try_plain(conn, bind_attempts(sqlx::query(AssertSqlSafe(plain)).bind(station), rows)).await? {
        out.inserted += rows.len();
        out.done.extend(rows.iter().map(|a| (a.key.clone(), a.version)));
        return Ok(out);
    }
    let sql = format!(
        "INSERT INTO attempts (station_id, {}) SELECT $1, u.* FROM {} ON CONFLICT DO NOTHING",
        names.join(", "),
        unnest(ATTEMPT_COLS, 2)
    );
    let q = bind_attempts(sqlx::query(AssertSqlSafe(sql)).bind(station), rows);
    let inserted = q.execute(&mut *conn).await?.rows_affected() as usize;
    if inserted == rows.len() {
        out.inserted += inserted;
        out.done.extend(rows.iter().map(|a| (a.key.clone(), a.version)));
        return Ok(out);
    }
    // Some were there already: the center's copy of each decides.
    let central = central_versions(conn, "attempts", rows.iter().map(|a| a.id).collect()).await?;
    let candidates = classify(&mut out, rows.to_vec(), &central, |a| (a.id, &a.key, a.version, &a.hash), "another station's record holds this attempt id");
    out.inserted += inserted;
    out.already = out.already.saturating_sub(inserted);
    if candidates.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "UPDATE attempts AS a SET finished_at = u.finished_at, status = u.status, stage = u.stage, code = u.code, reason = u.reason,
             hint = u.hint, retryable = u.retryable, device_serial = u.device_serial, model = u.model, hw_rev = u.hw_rev,
             fw_version = u.fw_version, fw_hash = u.fw_hash, chip_uid = u.chip_uid, spki_sha256 = u.spki_sha256,
             certificate_id = u.certificate_id, resumed = u.resumed, bytes_to_device = u.bytes_to_device,
             bytes_from_device = u.bytes_from_device, version = u.version, content_sha256 = u.content_sha256, received_at = now()
         FROM {}
         WHERE a.id = u.id AND a.version < u.version AND a.status = 'running' AND a.port = u.port
             AND a.started_at = u.started_at AND a.batch IS NOT DISTINCT FROM u.batch
         RETURNING a.id",
        unnest(ATTEMPT_COLS, 1)
    );
    let updated: HashSet<Uuid> =
        bind_attempts(sqlx::query(AssertSqlSafe(sql)), &candidates).fetch_all(&mut *conn).await?.iter().map(|r| r.try_get::<Uuid, _>(0)).collect::<Result<_, _>>()?;
    for a in candidates {
        if updated.contains(&a.id) {
            out.updated += 1;
            out.done.push((a.key.clone(), a.version));
        } else {
            let ch = central.get(&a.id).map(|(_, h)| h.as_slice());
            out.quarantine(a.key.clone(), a.version, &a.hash, ch, "the center's copy of this attempt is finished and differs: a finished attempt never changes");
        }
    }
    Ok(out)
}

const CERT_COLS: &[(&str, &str)] = &[
    ("id", "uuid"),
    ("attempt_id", "uuid"),
    ("device_serial", "text"),
    ("issuer", "text"),
    ("serial_hex", "text"),
    ("spki_sha256", "text"),
    ("spki_der", "bytea"),
    ("not_before", "timestamptz"),
    ("not_after", "timestamptz"),
    ("status", "text"),
    ("cert_der", "bytea"),
    ("fingerprint_sha256", "text"),
    ("created_at", "timestamptz"),
    ("issued_at", "timestamptz"),
    ("version", "int8"),
    ("content_sha256", "bytea"),
];

fn bind_certs<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    rows: &[&CertIn],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(rows.iter().map(|c| c.id).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.attempt_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.row.device_serial.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.row.issuer.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.row.serial_hex.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.row.spki_sha256.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.row.spki_der.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.not_before).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.not_after).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|c| c.row.status.as_str().to_string())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|c| c.row.cert_der.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|c| c.row.fingerprint_sha256.clone())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|c| c.created_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.issued_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.version).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.hash.to_vec()).collect::<Vec<_>>())
}

async fn push_certs(conn: &mut PgConnection, station: &str, rows: &[&CertIn]) -> Result<Outcome, PushError> {
    let mut out = Outcome::default();
    let names: Vec<&str> = CERT_COLS.iter().map(|(n, _)| *n).collect();
    let plain = format!("INSERT INTO certificates (station_id, {}) SELECT $1, u.* FROM {}", names.join(", "), unnest(CERT_COLS, 2));
    if try_plain(conn, bind_certs(sqlx::query(AssertSqlSafe(plain)).bind(station), rows)).await? {
        out.inserted += rows.len();
        out.done.extend(rows.iter().map(|c| (c.key.clone(), c.version)));
        return Ok(out);
    }
    let sql = format!(
        "INSERT INTO certificates (station_id, {}) SELECT $1, u.* FROM {} ON CONFLICT DO NOTHING",
        names.join(", "),
        unnest(CERT_COLS, 2)
    );
    let inserted = bind_certs(sqlx::query(AssertSqlSafe(sql)).bind(station), rows).execute(&mut *conn).await?.rows_affected() as usize;
    if inserted == rows.len() {
        out.inserted += inserted;
        out.done.extend(rows.iter().map(|c| (c.key.clone(), c.version)));
        return Ok(out);
    }
    let central = central_versions(conn, "certificates", rows.iter().map(|c| c.id).collect()).await?;
    let candidates = classify(
        &mut out,
        rows.to_vec(),
        &central,
        |c| (c.id, &c.key, c.version, &c.hash),
        "the center already holds a certificate with this issuer and serial, or for this public key, from another record",
    );
    out.inserted += inserted;
    out.already = out.already.saturating_sub(inserted);
    if candidates.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "UPDATE certificates AS c SET status = u.status, cert_der = u.cert_der, fingerprint_sha256 = u.fingerprint_sha256,
             issued_at = u.issued_at, version = u.version, content_sha256 = u.content_sha256, received_at = now()
         FROM {}
         WHERE c.id = u.id AND c.version < u.version AND c.attempt_id = u.attempt_id AND c.device_serial = u.device_serial
             AND c.issuer = u.issuer AND c.serial_hex = u.serial_hex AND c.spki_sha256 = u.spki_sha256
             AND c.spki_der = u.spki_der AND c.not_before = u.not_before AND c.not_after = u.not_after
             AND c.created_at = u.created_at AND (c.status = 'signing' OR c.cert_der = u.cert_der)
         RETURNING c.id",
        unnest(CERT_COLS, 1)
    );
    let updated: HashSet<Uuid> =
        bind_certs(sqlx::query(AssertSqlSafe(sql)), &candidates).fetch_all(&mut *conn).await?.iter().map(|r| r.try_get::<Uuid, _>(0)).collect::<Result<_, _>>()?;
    for c in candidates {
        if updated.contains(&c.id) {
            out.updated += 1;
            out.done.push((c.key.clone(), c.version));
        } else {
            let ch = central.get(&c.id).map(|(_, h)| h.as_slice());
            out.quarantine(c.key.clone(), c.version, &c.hash, ch, "the change would alter what the center holds of an issued certificate");
        }
    }
    Ok(out)
}

const STEP_COLS: &[(&str, &str)] = &[
    ("attempt_id", "uuid"),
    ("n", "int8"),
    ("at", "timestamptz"),
    ("stage", "text"),
    ("kind", "text"),
    ("detail", "text"),
    ("version", "int8"),
    ("content_sha256", "bytea"),
];

fn bind_steps<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    rows: &[&StepIn],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(rows.iter().map(|s| s.attempt_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|s| s.row.n).collect::<Vec<_>>())
        .bind(rows.iter().map(|s| s.at).collect::<Vec<_>>())
        .bind(rows.iter().map(|s| s.row.stage.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|s| s.row.kind.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|s| s.row.detail.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|s| s.version).collect::<Vec<_>>())
        .bind(rows.iter().map(|s| s.hash.to_vec()).collect::<Vec<_>>())
}

async fn push_steps(conn: &mut PgConnection, station: &str, rows: &[&StepIn]) -> Result<Outcome, PushError> {
    let mut out = Outcome::default();
    let names: Vec<&str> = STEP_COLS.iter().map(|(n, _)| *n).collect();
    let plain = format!("INSERT INTO attempt_steps (station_id, {}) SELECT $1, u.* FROM {}", names.join(", "), unnest(STEP_COLS, 2));
    if try_plain(conn, bind_steps(sqlx::query(AssertSqlSafe(plain)).bind(station), rows)).await? {
        out.inserted += rows.len();
        out.done.extend(rows.iter().map(|s| (s.key.clone(), s.version)));
        return Ok(out);
    }
    let sql = format!(
        "INSERT INTO attempt_steps (station_id, {}) SELECT $1, u.* FROM {} ON CONFLICT DO NOTHING",
        names.join(", "),
        unnest(STEP_COLS, 2)
    );
    let inserted = bind_steps(sqlx::query(AssertSqlSafe(sql)).bind(station), rows)
        .execute(&mut *conn)
        .await?
        .rows_affected() as usize;
    out.inserted += inserted;
    if inserted == rows.len() {
        out.done.extend(rows.iter().map(|s| (s.key.clone(), s.version)));
        return Ok(out);
    }
    let rest = rows;
    let found = sqlx::query(
        "SELECT s.attempt_id, s.n, s.version, s.content_sha256 FROM attempt_steps s
         JOIN UNNEST($1::uuid[], $2::int8[]) AS k(attempt_id, n) ON s.attempt_id = k.attempt_id AND s.n = k.n",
    )
    .bind(rest.iter().map(|s| s.attempt_id).collect::<Vec<_>>())
    .bind(rest.iter().map(|s| s.row.n).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let mut central: HashMap<(Uuid, i64), (i64, Vec<u8>)> = HashMap::new();
    for r in found {
        central.insert((r.try_get(0)?, r.try_get(1)?), (r.try_get(2)?, r.try_get(3)?));
    }
    let mut matched: usize = 0;
    for s in rest {
        match central.get(&(s.attempt_id, s.row.n)) {
            Some((v, h)) if *v == s.version && h.as_slice() == s.hash => {
                matched += 1;
                out.done.push((s.key.clone(), s.version));
            }
            Some((_, h)) => out.quarantine(s.key.clone(), s.version, &s.hash, Some(h), "the center holds a different step under this number: steps never change"),
            None => out.quarantine(s.key.clone(), s.version, &s.hash, None, "another station's record holds this step's attempt id"),
        }
    }
    out.already += matched.saturating_sub(inserted);
    Ok(out)
}

/// Keys of records, for callers that want to know which kinds moved.
pub(crate) fn count_by_entity(done: &[(RecordKey, i64)]) -> [usize; 3] {
    let mut c = [0; 3];
    for (k, _) in done {
        c[match k.entity {
            Entity::Attempt => 0,
            Entity::Step => 1,
            Entity::Certificate => 2,
        }] += 1;
    }
    c
}
