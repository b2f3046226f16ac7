//! Sending one batch of pending changes to the center, exactly once.
//!
//! **Fast path** (new records, the common case): per connection, one
//! transaction of plain `INSERT ... SELECT $1, u.* FROM (SELECT unnest($n::type[])
//! AS c, ...) AS u`, one statement per record kind, encoded beforehand on the
//! blocking pool. At the server a plain INSERT costs what COPY costs; `ON
//! CONFLICT` roughly doubles it (speculative insertion), so it is kept for
//! when it is needed.
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
use crate::record::pg_type;
use imprint_store::synced::{Change, Kind, Table, Value, TABLES};
use imprint_store::{new_id, now_text, parse_ts, Entity, PendingChange, Quarantine, RecordKey, RecordState};
use sqlx::postgres::{PgArguments, PgConnection};
// SQL built here only from the constant descriptors (imprint_store::synced) and table names; values are always bound.
use sqlx::{Arguments, AssertSqlSafe, Connection, Row};
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
            id: 0,
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

/// When the center's copy of a record may still change, and what a
/// quarantine of that kind says. The columns are the descriptor's; this is
/// the one rule per kind that is not a column.
struct Policy {
    /// SQL condition on the center's copy `c` (the new row is `u`) under
    /// which it may still be updated; `None`: the record never changes.
    still_changeable: Option<&'static str>,
    /// No row visible under the key: another record holds a unique key.
    missing: &'static str,
    /// The center's copy may not change (or, for a record that never
    /// changes, differs).
    refused: &'static str,
}

fn policy(entity: Entity) -> Policy {
    match entity {
        Entity::Attempt => Policy {
            still_changeable: Some("c.status = 'running'"),
            missing: "another station's record holds this attempt id",
            refused: "the center's copy of this attempt is finished and differs: a finished attempt never changes",
        },
        Entity::Certificate => Policy {
            // A revoked certificate never changes again (the center's trigger
            // refuses it too: migrations/postgres/0004_revocation.sql).
            still_changeable: Some("(c.status = 'signing' OR (c.cert_der = u.cert_der AND c.status <> 'revoked'))"),
            missing: "the center already holds a certificate with this issuer and serial, or for this public key, from another record",
            refused: "the change would alter what the center holds of an issued certificate, or of a revoked one (a revocation is final)",
        },
        Entity::Step => Policy {
            still_changeable: None,
            missing: "another station's record holds this step's attempt id",
            refused: "the center holds a different step under this number: steps never change",
        },
        // A chain break (seq not head + 1, prev_hash not the head's hash) is
        // refused by the center's trigger with a data error: the bisection
        // quarantines the entry with the center's reason.
        Entity::Audit => Policy {
            still_changeable: None,
            missing: "the center already holds another audit entry at this position of this station's chain (or this id from another station): the local trail was rewritten",
            refused: "the center holds a different audit entry under this id: audit entries never change",
        },
        Entity::QaVerdict => Policy {
            still_changeable: None,
            missing: "another station's record holds this QA verdict id",
            refused: "the center holds a different QA verdict under this id: verdicts never change",
        },
        Entity::ReworkAuthorisation => Policy {
            still_changeable: Some("c.used_at IS NULL"),
            missing: "another station's record holds this rework authorisation id",
            refused: "the center's copy of this rework authorisation was used already and differs: an authorisation is used once",
        },
        Entity::LeaseEvent => Policy {
            still_changeable: None,
            missing: "another station's record holds this lease journal entry's id",
            refused: "the center holds a different lease journal entry under this id: journal entries never change",
        },
    }
}

/// One column's value, parsed for PostgreSQL.
#[derive(Clone, Debug)]
enum Cell {
    Text(Option<String>),
    Uuid(Option<Uuid>),
    Time(Option<OffsetDateTime>),
    Int(Option<i64>),
    Bool(Option<bool>),
    Bytes(Option<Vec<u8>>),
}

/// Parse a record's raw values by its table's column kinds; `times[i]` is
/// column `i`'s time, parsed once for the hash and this (`None`: not a time).
fn cells(table: &Table, values: Vec<Value>, times: &[Option<OffsetDateTime>]) -> Result<Vec<Cell>, String> {
    if values.len() != table.columns.len() {
        return Err(format!("{} values for {} columns", values.len(), table.columns.len()));
    }
    table
        .columns
        .iter()
        .zip(values)
        .enumerate()
        .map(|(i, (c, v))| {
            if v == Value::Null && !c.nullable {
                return Err(format!("{} is NULL", c.name));
            }
            let wrong = |v: &Value| format!("{} holds {v:?}, not {:?}", c.name, c.kind);
            Ok(match (c.kind, v) {
                (Kind::Text, Value::Null) => Cell::Text(None),
                (Kind::Text, Value::Text(s)) => Cell::Text(Some(s)),
                (Kind::Uuid, Value::Null) => Cell::Uuid(None),
                (Kind::Uuid, Value::Text(s)) => {
                    Cell::Uuid(Some(Uuid::parse_str(&s).map_err(|_| format!("{}: {s:?} is not a UUID", c.name))?))
                }
                (Kind::Time, Value::Null) => Cell::Time(None),
                (Kind::Time, Value::Text(s)) => {
                    let t = times.get(i).copied().flatten().ok_or_else(|| format!("{}: {s:?} is not an RFC 3339 time", c.name))?;
                    // PostgreSQL takes the instant in UTC: an offset that moves it
                    // past 9999-12-31 cannot be converted (the encoder would panic).
                    let utc = t.checked_to_offset(time::UtcOffset::UTC);
                    Cell::Time(Some(utc.ok_or_else(|| format!("{}: {s:?} is out of range once in UTC", c.name))?))
                }
                (Kind::Int, Value::Null) => Cell::Int(None),
                (Kind::Int, Value::Int(n)) => Cell::Int(Some(n)),
                (Kind::Bool, Value::Null) => Cell::Bool(None),
                (Kind::Bool, Value::Int(n)) => Cell::Bool(Some(n != 0)),
                (Kind::Bytes, Value::Null) => Cell::Bytes(None),
                (Kind::Bytes, Value::Blob(b)) => Cell::Bytes(Some(b)),
                (_, v) => return Err(wrong(&v)),
            })
        })
        .collect()
}

/// A record ready to send: parsed, hashed.
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    table: &'static Table,
    /// The table's position in `TABLES`: the order a batch sends tables in.
    order: usize,
    key: RecordKey,
    version: i64,
    hash: [u8; 32],
    /// The key at the center: a UUID and, for steps, the local number.
    ckey: (Uuid, i64),
    cells: Vec<Cell>,
}

impl Prepared {
    /// The record and the version this row carries.
    pub(crate) fn key_version(&self) -> (&RecordKey, i64) {
        (&self.key, self.version)
    }
}

fn central_key(table: &Table, cells: &[Cell]) -> Result<(Uuid, i64), String> {
    let mut k = table.key_positions();
    let id = match k.next().and_then(|i| cells.get(i)) {
        Some(Cell::Uuid(Some(u))) => *u,
        _ => return Err("the key is not a UUID".into()),
    };
    let n = match k.next().map(|i| cells.get(i)) {
        None => 0,
        Some(Some(Cell::Int(Some(n)))) => *n,
        Some(_) => return Err("the key's number is missing".into()),
    };
    Ok((id, n))
}

/// Turn pending changes into rows to send (CPU work: done off the sending
/// path); malformed ones are quarantined in `out`.
pub(crate) fn prepare(station: &str, changes: Vec<PendingChange>, out: &mut Outcome) -> Vec<Prepared> {
    let mut v = Vec::with_capacity(changes.len());
    let mut times: Vec<Option<OffsetDateTime>> = Vec::new();
    for c in changes {
        let table = c.table();
        let order = TABLES.iter().position(|t| t.entity == table.entity).unwrap_or(TABLES.len());
        let (key, version) = (c.key, c.version);
        let values = match c.state {
            RecordState::Present(values) => values,
            RecordState::Missing => {
                out.quarantine(
                    key,
                    version,
                    &[0; 32],
                    None,
                    "malformed local record: the outbox names a record that is not in the local store",
                );
                continue;
            }
        };
        // Each time is parsed once, for the hash and for its cell (the same
        // bytes as `hash::record`, which parses them itself).
        times.clear();
        times.extend(table.columns.iter().zip(&values).map(|(c, v)| match (c.kind, v) {
            (Kind::Time, Value::Text(s)) => parse_ts(s),
            _ => None,
        }));
        let h = hash::record_with_times(table, station, &values, |i, _| times.get(i).copied().flatten());
        match cells(table, values, &times).and_then(|cells| Ok((central_key(table, &cells)?, cells))) {
            Ok((ckey, cells)) => v.push(Prepared { table, order, key, version, hash: h, ckey, cells }),
            Err(reason) => out.quarantine(key, version, &h, None, format!("malformed local record: {reason}")),
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

/// `(SELECT unnest($k::t[]) AS c, ...) AS u` over the table's columns and the
/// version and hash, numbering from `first`.
///
/// The arrays are unnested in the select list (`ProjectSet`, which hands each
/// row on as it is made), not as `FROM UNNEST($k, ...)`: PostgreSQL runs a
/// multi-argument `UNNEST` in `FROM` as a function scan that first copies
/// each array into a tuplestore of its own and then reads them back in step.
/// Measured in psql on 90,000 step rows: the `FROM` form 147 ms, the select
/// list 48 ms; the whole INSERT about a third less server CPU (docs/sync.md).
/// The rows are the same: arrays of one batch have equal lengths, and both
/// forms walk them in step.
fn unnest(table: &Table, first: usize) -> String {
    let cols = table.columns.iter().map(|c| (c.name, pg_type(c.kind))).chain([("version", "int8"), ("content_sha256", "bytea")]);
    let items: Vec<String> = cols.enumerate().map(|(i, (n, t))| format!("unnest(${}::{t}[]) AS {n}", first + i)).collect();
    format!("(SELECT {}) AS u", items.join(", "))
}

/// The INSERT of a table's rows (`$1` the station), plain or `ON CONFLICT DO NOTHING`.
fn insert_sql(table: &Table, on_conflict: bool) -> String {
    let names: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
    format!(
        "INSERT INTO {} (station_id, {}, version, content_sha256) SELECT $1, u.* FROM {}{}",
        table.central,
        names.join(", "),
        unnest(table, 2),
        if on_conflict { " ON CONFLICT DO NOTHING" } else { "" }
    )
}

/// `c.k1, c.k2` (or `c.k1, 0::int8`): the center's key as `(uuid, int8)`.
fn key_select(table: &Table) -> String {
    let k: Vec<&str> = table.key_positions().map(|i| table.columns[i].name).collect();
    let second = k.get(1).map(|n| format!("c.{n}")).unwrap_or_else(|| "0::int8".into());
    format!("c.{}, {second}", k.first().copied().unwrap_or("id"))
}

/// The UPDATE of the center's older copies: mutable columns set, key and
/// fixed columns required equal, and the copy still changeable.
fn update_sql(table: &Table, still_changeable: &str) -> String {
    let mut set: Vec<String> =
        table.columns.iter().filter(|c| c.change == Change::Mutable).map(|c| format!("{0} = u.{0}", c.name)).collect();
    set.extend(["version = u.version".into(), "content_sha256 = u.content_sha256".into()]);
    if table.received_at {
        set.push("received_at = now()".into());
    }
    let mut cond: Vec<String> = table
        .columns
        .iter()
        .filter(|c| c.change != Change::Mutable)
        .map(|c| if c.nullable { format!("c.{0} IS NOT DISTINCT FROM u.{0}", c.name) } else { format!("c.{0} = u.{0}", c.name) })
        .collect();
    cond.push("c.version < u.version".into());
    cond.push(format!("({still_changeable})"));
    format!(
        "UPDATE {} AS c SET {} FROM {} WHERE {} RETURNING {}",
        table.central,
        set.join(", "),
        unnest(table, 1),
        cond.join(" AND "),
        key_select(table)
    )
}

/// A statement over rows of one table: `$1` the station (if given), then
/// one array per column, then the versions and the hashes.
///
/// The arrays are encoded straight from the prepared cells into one
/// argument buffer sized beforehand (issue 18): no cell is cloned into an
/// owned array first, and the buffer is not grown and copied as it fills.
/// An argument that cannot be encoded (an array past PostgreSQL's 1 GB
/// limit) is `sqlx::Error::Encode`: not a data error, so the batch is
/// aborted, as a failed bind was before.
fn row_query(sql: String, station: Option<&str>, table: &Table, rows: &[&Prepared]) -> Result<PgQuery, sqlx::Error> {
    Ok(sqlx::query_with(AssertSqlSafe(sql), row_arguments(station, table, rows).map_err(sqlx::Error::Encode)?))
}

/// Bytes of one encoded array of `n` elements of `payload` bytes in all:
/// the argument's length, the array header (dimensions, flags, element type,
/// length, lower bound) and each element's length.
fn array_size(n: usize, payload: usize) -> usize {
    4 + 20 + 4 * n + payload
}

/// The encoded size of the arguments [`row_arguments`] adds.
fn encoded_size(station: Option<&str>, table: &Table, rows: &[&Prepared]) -> usize {
    let n = rows.len();
    let mut size = station.map_or(0, |s| 4 + s.len()) + array_size(n, 8 * n) + array_size(n, 32 * n);
    for (i, c) in table.columns.iter().enumerate() {
        size += array_size(
            n,
            match c.kind {
                Kind::Uuid => 16 * n,
                Kind::Time | Kind::Int => 8 * n,
                Kind::Bool => n,
                Kind::Text | Kind::Bytes => rows
                    .iter()
                    .map(|p| match p.cells.get(i) {
                        Some(Cell::Text(Some(t))) => t.len(),
                        Some(Cell::Bytes(Some(b))) => b.len(),
                        _ => 0,
                    })
                    .sum(),
            },
        );
    }
    size
}

/// Encode rows of one table, column by column, then their versions and hashes.
fn row_arguments(station: Option<&str>, table: &Table, rows: &[&Prepared]) -> Result<PgArguments, sqlx::error::BoxDynError> {
    let mut args = PgArguments::default();
    args.reserve(table.columns.len() + 3, encoded_size(station, table, rows));
    if let Some(station) = station {
        args.add(station)?;
    }
    // Cells were built from the same column kinds (`cells`), so each match
    // takes its first arm; another cell would bind NULL, which the center
    // refuses for a NOT NULL column (a data error, quarantined).
    fn cell(p: &Prepared, i: usize) -> Option<&Cell> {
        p.cells.get(i)
    }
    for (i, c) in table.columns.iter().enumerate() {
        match c.kind {
            Kind::Text => {
                args.add(rows.iter().map(|p| if let Some(Cell::Text(v)) = cell(p, i) { v.as_deref() } else { None }).collect::<Vec<_>>())?
            }
            Kind::Uuid => {
                args.add(rows.iter().map(|p| if let Some(Cell::Uuid(v)) = cell(p, i) { *v } else { None }).collect::<Vec<_>>())?
            }
            Kind::Time => {
                args.add(rows.iter().map(|p| if let Some(Cell::Time(v)) = cell(p, i) { *v } else { None }).collect::<Vec<_>>())?
            }
            Kind::Int => args.add(rows.iter().map(|p| if let Some(Cell::Int(v)) = cell(p, i) { *v } else { None }).collect::<Vec<_>>())?,
            Kind::Bool => {
                args.add(rows.iter().map(|p| if let Some(Cell::Bool(v)) = cell(p, i) { *v } else { None }).collect::<Vec<_>>())?
            }
            Kind::Bytes => {
                args.add(rows.iter().map(|p| if let Some(Cell::Bytes(v)) = cell(p, i) { v.as_deref() } else { None }).collect::<Vec<_>>())?
            }
        }
    }
    args.add(rows.iter().map(|p| p.version).collect::<Vec<_>>())?;
    args.add(rows.iter().map(|p| &p.hash[..]).collect::<Vec<_>>())?;
    Ok(args)
}

/// Rows grouped by table, in the order a batch sends them.
fn by_table(rows: &[Prepared]) -> Vec<(&'static Table, Vec<&Prepared>)> {
    TABLES
        .iter()
        .map(|&t| (t, rows.iter().filter(|p| p.table.entity == t.entity).collect::<Vec<_>>()))
        .filter(|(_, r)| !r.is_empty())
        .collect()
}

/// A batch split over the connections, with the plain INSERTs already
/// encoded (built on the blocking pool, off the sending path).
pub(crate) struct Planned {
    main: Vec<Prepared>,
    main_q: Vec<Result<PgQuery, sqlx::Error>>,
    aux: Vec<Prepared>,
    aux_q: Vec<Result<PgQuery, sqlx::Error>>,
}

impl Planned {
    pub(crate) fn len(&self) -> usize {
        self.main.len() + self.aux.len()
    }
}

fn plain_queries(station: &str, rows: &[Prepared]) -> Vec<Result<PgQuery, sqlx::Error>> {
    by_table(rows).into_iter().map(|(t, r)| row_query(insert_sql(t, false), Some(station), t, &r)).collect()
}

/// Split a batch over one or two connections and encode its plain INSERTs.
/// With two, part of the steps go over the second at the same time: steps
/// never change, so their order does not matter; attempts and certificates
/// always go over the first connection, batch after batch, so their versions
/// arrive in order.
pub(crate) fn plan(station: &str, rows: Vec<Prepared>, two: bool) -> Planned {
    let (main, aux) = if two {
        let (mut first, mut steps): (Vec<Prepared>, Vec<Prepared>) = rows.into_iter().partition(|p| p.table.entity != Entity::Step);
        let keep = (first.len() + steps.len()).div_ceil(2).saturating_sub(first.len()).min(steps.len());
        let second = steps.split_off(keep);
        first.append(&mut steps);
        (first, second)
    } else {
        (rows, Vec::new())
    };
    let main = group_by_table(main);
    let main_q = plain_queries(station, &main);
    let aux_q = plain_queries(station, &aux);
    Planned { main, main_q, aux, aux_q }
}

/// The rows in the order of their tables (`TABLES`), each table's rows in
/// the order given: what a stable sort by table gives, in one pass, with
/// each row moved twice instead of O(n log n) times (issue 18).
fn group_by_table(rows: Vec<Prepared>) -> Vec<Prepared> {
    let n = rows.len();
    let mut sizes = [0usize; TABLES.len() + 1];
    for p in &rows {
        sizes[p.order.min(TABLES.len())] += 1;
    }
    let mut groups: Vec<Vec<Prepared>> = sizes.iter().map(|&k| Vec::with_capacity(k)).collect();
    for p in rows {
        let g = p.order.min(TABLES.len());
        groups[g].push(p);
    }
    let mut out = Vec::with_capacity(n);
    for g in groups {
        out.extend(g);
    }
    out
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
async fn send(
    conn: &mut PgConnection,
    station: &str,
    rows: Vec<Prepared>,
    queries: Vec<Result<PgQuery, sqlx::Error>>,
) -> Result<Outcome, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Outcome::default());
    }
    let mut tx = conn.begin().await?;
    let mut fast = true;
    for q in queries {
        match q?.execute(&mut *tx).await.map_err(PushError::from) {
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
        out.done.extend(rows.into_iter().map(|p| (p.key, p.version)));
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
                    let p = &set[0];
                    out.quarantine(p.key.clone(), p.version, &p.hash, None, reason);
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
    let mut tx = conn.begin().await?;
    let mut out = Outcome::default();
    for (table, rows) in by_table(set) {
        out.merge(push_table(&mut tx, station, table, &rows).await?);
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

/// The center's (version, hash) of records by key, as this station sees them.
async fn central_versions(
    conn: &mut PgConnection,
    table: &Table,
    rows: &[&Prepared],
) -> Result<HashMap<(Uuid, i64), (i64, Vec<u8>)>, sqlx::Error> {
    let k: Vec<&str> = table.key_positions().map(|i| table.columns[i].name).collect();
    let ids: Vec<Uuid> = rows.iter().map(|p| p.ckey.0).collect();
    let first = k.first().copied().unwrap_or("id");
    let found = match k.get(1) {
        None => {
            sqlx::query(AssertSqlSafe(format!(
                "SELECT {}, c.version, c.content_sha256 FROM {} c WHERE c.{first} = ANY($1)",
                key_select(table),
                table.central
            )))
            .bind(ids)
            .fetch_all(&mut *conn)
            .await?
        }
        Some(second) => {
            sqlx::query(AssertSqlSafe(format!(
                "SELECT {}, c.version, c.content_sha256 FROM {} c
                 JOIN UNNEST($1::uuid[], $2::int8[]) AS k({first}, {second}) ON c.{first} = k.{first} AND c.{second} = k.{second}",
                key_select(table),
                table.central
            )))
            .bind(ids)
            .bind(rows.iter().map(|p| p.ckey.1).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await?
        }
    };
    let mut m = HashMap::with_capacity(found.len());
    for r in found {
        m.insert((r.try_get::<Uuid, _>(0)?, r.try_get::<i64, _>(1)?), (r.try_get::<i64, _>(2)?, r.try_get::<Vec<u8>, _>(3)?));
    }
    Ok(m)
}

/// Classify records the INSERT did not take. Returns the update candidates.
fn classify<'a>(
    out: &mut Outcome,
    rest: &[&'a Prepared],
    central: &HashMap<(Uuid, i64), (i64, Vec<u8>)>,
    policy: &Policy,
) -> Vec<&'a Prepared> {
    let mut candidates = Vec::new();
    for &r in rest {
        let (key, version, h) = (&r.key, r.version, &r.hash);
        match central.get(&r.ckey) {
            None => out.quarantine(key.clone(), version, h, None, policy.missing),
            Some((cv, ch)) if *cv == version && ch.as_slice() == h => {
                out.already += 1;
                out.done.push((key.clone(), version));
            }
            Some((_, ch)) if policy.still_changeable.is_none() => out.quarantine(key.clone(), version, h, Some(ch), policy.refused),
            Some((cv, ch)) if *cv == version => {
                out.quarantine(key.clone(), version, h, Some(ch), "the center holds different content for the same version of this record")
            }
            Some((cv, ch)) if *cv > version => out.quarantine(
                key.clone(),
                version,
                h,
                Some(ch),
                format!(
                    "the center holds a newer version ({cv}) than this station ({version}): was the local store restored from an old copy?"
                ),
            ),
            Some(_) => candidates.push(r),
        }
    }
    candidates
}

/// The careful path for one table's rows, in the caller's transaction:
/// the plain INSERT in a savepoint, else `ON CONFLICT DO NOTHING`; then the
/// center's copies decide: already there, updated while still changeable,
/// or quarantined.
async fn push_table(conn: &mut PgConnection, station: &str, table: &Table, rows: &[&Prepared]) -> Result<Outcome, PushError> {
    let mut out = Outcome::default();
    if try_plain(conn, row_query(insert_sql(table, false), Some(station), table, rows)?).await? {
        out.inserted += rows.len();
        out.done.extend(rows.iter().map(|p| (p.key.clone(), p.version)));
        return Ok(out);
    }
    let q = row_query(insert_sql(table, true), Some(station), table, rows)?;
    let inserted = q.execute(&mut *conn).await?.rows_affected() as usize;
    if inserted == rows.len() {
        out.inserted += inserted;
        out.done.extend(rows.iter().map(|p| (p.key.clone(), p.version)));
        return Ok(out);
    }
    // Some were there already: the center's copy of each decides. (The rows
    // just inserted are found with their own version and hash: not "already".)
    let policy = policy(table.entity);
    let central = central_versions(conn, table, rows).await?;
    // A record with no row visible may be held off by a unique key that a
    // record updated below frees: a renewal's new certificate for the same
    // key arrives with the old certificate's change to `superseded` (one
    // current certificate per key). Those are inserted again after the
    // updates, and only then judged.
    let (missing, present): (Vec<&Prepared>, Vec<&Prepared>) = rows.iter().copied().partition(|p| !central.contains_key(&p.ckey));
    let candidates = classify(&mut out, &present, &central, &policy);
    out.inserted += inserted;
    out.already = out.already.saturating_sub(inserted);
    let mut updated_any = false;
    if let Some(still_changeable) = policy.still_changeable.filter(|_| !candidates.is_empty()) {
        let updated: HashSet<(Uuid, i64)> = row_query(update_sql(table, still_changeable), None, table, &candidates)?
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<Uuid, _>(0)?, r.try_get::<i64, _>(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        for p in candidates {
            if updated.contains(&p.ckey) {
                updated_any = true;
                out.updated += 1;
                out.done.push((p.key.clone(), p.version));
            } else {
                let ch = central.get(&p.ckey).map(|(_, h)| h.as_slice());
                out.quarantine(p.key.clone(), p.version, &p.hash, ch, policy.refused);
            }
        }
    }
    if missing.is_empty() {
        return Ok(out);
    }
    let again = if updated_any {
        let q = row_query(insert_sql(table, true), Some(station), table, &missing)?;
        q.execute(&mut *conn).await?.rows_affected() as usize
    } else {
        0
    };
    let central = if again > 0 { central_versions(conn, table, &missing).await? } else { HashMap::new() };
    let before = out.already;
    let candidates = classify(&mut out, &missing, &central, &policy);
    // Rows inserted now are found with their own version and hash: inserted, not "already".
    let found_now = out.already - before;
    out.already -= found_now.min(again);
    out.inserted += again;
    for p in candidates {
        let ch = central.get(&p.ckey).map(|(_, h)| h.as_slice());
        out.quarantine(p.key.clone(), p.version, &p.hash, ch, policy.missing);
    }
    Ok(out)
}

/// Keys of records, for callers that want to know which kinds moved.
pub(crate) fn count_by_entity(done: &[(RecordKey, i64)]) -> [usize; 7] {
    let mut c = [0; 7];
    for (k, _) in done {
        c[match k.entity {
            Entity::Attempt => 0,
            Entity::Step => 1,
            Entity::Certificate => 2,
            Entity::Audit => 3,
            Entity::QaVerdict => 4,
            Entity::ReworkAuthorisation => 5,
            Entity::LeaseEvent => 6,
        }] += 1;
    }
    c
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use imprint_store::synced::{ATTEMPTS, CERTIFICATES, STEPS};

    /// A well-formed record of `table`: every column a value of its kind;
    /// with `nulls`, every nullable column NULL.
    fn record(table: &'static Table, n: usize, nulls: bool) -> PendingChange {
        let id = format!("0190a1b2-0000-7000-8000-{n:012}");
        let values: Vec<Value> = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| match c.kind {
                _ if nulls && c.nullable => Value::Null,
                Kind::Uuid => Value::Text(id.clone()),
                Kind::Text => Value::Text(format!("text {n}.{i} \u{e9}")),
                Kind::Time => Value::Text(format!("2026-01-01T00:00:{:02}.{n:03}+01:00", i % 60)),
                Kind::Int => Value::Int(n as i64 * 10 + i as i64),
                Kind::Bool => Value::Int((n % 2) as i64),
                Kind::Bytes => Value::Blob(vec![n as u8; i + 1]),
            })
            .collect();
        let key = table.record_key(&values).unwrap();
        PendingChange { key, version: n as i64, state: RecordState::Present(values) }
    }

    /// The arguments encoded straight from the cells (issue 18) are byte for
    /// byte those of the owned arrays bound before, for every table, with
    /// and without NULLs.
    #[test]
    fn the_arguments_are_encoded_as_the_owned_arrays_were() {
        for table in TABLES {
            let changes: Vec<PendingChange> = (1..=9).map(|n| record(table, n, n % 3 == 0)).collect();
            let mut out = Outcome::default();
            let rows = prepare("S", changes, &mut out);
            assert_eq!((rows.len(), out.quarantine.len()), (9, 0), "{}: {:?}", table.central, out.quarantine);
            let refs: Vec<&Prepared> = rows.iter().collect();
            for station in [Some("S"), None] {
                let mut old = PgArguments::default();
                if let Some(s) = station {
                    old.add(s.to_string()).unwrap();
                }
                for (i, c) in table.columns.iter().enumerate() {
                    let cell = |p: &&Prepared| p.cells.get(i).cloned();
                    let added = match c.kind {
                        Kind::Text => {
                            old.add(refs.iter().map(|p| if let Some(Cell::Text(v)) = cell(p) { v } else { None }).collect::<Vec<_>>())
                        }
                        Kind::Uuid => {
                            old.add(refs.iter().map(|p| if let Some(Cell::Uuid(v)) = cell(p) { v } else { None }).collect::<Vec<_>>())
                        }
                        Kind::Time => {
                            old.add(refs.iter().map(|p| if let Some(Cell::Time(v)) = cell(p) { v } else { None }).collect::<Vec<_>>())
                        }
                        Kind::Int => {
                            old.add(refs.iter().map(|p| if let Some(Cell::Int(v)) = cell(p) { v } else { None }).collect::<Vec<_>>())
                        }
                        Kind::Bool => {
                            old.add(refs.iter().map(|p| if let Some(Cell::Bool(v)) = cell(p) { v } else { None }).collect::<Vec<_>>())
                        }
                        Kind::Bytes => {
                            old.add(refs.iter().map(|p| if let Some(Cell::Bytes(v)) = cell(p) { v } else { None }).collect::<Vec<_>>())
                        }
                    };
                    added.unwrap();
                }
                old.add(refs.iter().map(|p| p.version).collect::<Vec<_>>()).unwrap();
                old.add(refs.iter().map(|p| p.hash.to_vec()).collect::<Vec<_>>()).unwrap();
                let new = row_arguments(station, table, &refs).unwrap();
                assert_eq!(format!("{new:?}"), format!("{old:?}"), "{} (station {station:?})", table.central);
                assert_eq!(new.len(), table.columns.len() + 2 + usize::from(station.is_some()));
            }
        }
    }

    /// `plan` groups a batch by table in one pass (issue 18); the order must
    /// be the stable sort by table it replaced.
    #[test]
    fn grouping_by_table_keeps_the_order_of_a_stable_sort() {
        let order = [2, 0, 2, 6, 1, 2, 0, 6, 2, 1, 1, 2, 0, 3, 4, 5, 2];
        let changes: Vec<PendingChange> = order.iter().enumerate().map(|(n, &t)| record(TABLES[t], n + 1, n % 2 == 0)).collect();
        let mut out = Outcome::default();
        let rows = prepare("S", changes, &mut out);
        assert_eq!(rows.len(), order.len(), "{:?}", out.quarantine);
        let mut sorted = rows.clone();
        sorted.sort_by_key(|p| p.order);
        let grouped = group_by_table(rows);
        let keys = |v: &[Prepared]| v.iter().map(|p| (p.key.clone(), p.version)).collect::<Vec<_>>();
        assert_eq!(keys(&grouped), keys(&sorted));
        assert_eq!(grouped.first().map(|p| p.table.entity), Some(TABLES[0].entity));
    }

    /// The SQL the descriptors yield: the hand-written copies' statements, with
    /// the arrays unnested in the select list since issue 18 (docs/sync.md).
    #[test]
    fn the_descriptors_yield_the_insert_and_update_statements() {
        assert_eq!(
            insert_sql(&STEPS, false),
            "INSERT INTO attempt_steps (station_id, attempt_id, n, at, stage, kind, detail, version, content_sha256) SELECT $1, u.* FROM \
             (SELECT unnest($2::uuid[]) AS attempt_id, unnest($3::int8[]) AS n, unnest($4::timestamptz[]) AS at, unnest($5::text[]) AS stage, \
             unnest($6::text[]) AS kind, unnest($7::text[]) AS detail, unnest($8::int8[]) AS version, unnest($9::bytea[]) AS content_sha256) AS u"
        );
        let u = update_sql(&ATTEMPTS, "c.status = 'running'");
        assert!(
            u.starts_with("UPDATE attempts AS c SET finished_at = u.finished_at, status = u.status, stage = u.stage, code = u.code"),
            "{u}"
        );
        assert!(u.contains("c.id = u.id AND c.port = u.port AND c.started_at = u.started_at AND c.batch IS NOT DISTINCT FROM u.batch AND c.operator IS NOT DISTINCT FROM u.operator AND c.version < u.version AND (c.status = 'running') RETURNING c.id, 0::int8"), "{u}");
        assert!(!u.contains("port = u.port,") && !u.contains("batch = u.batch,"), "{u}");
        let c = update_sql(&CERTIFICATES, "x");
        assert!(
            c.contains(
                "SET status = u.status, cert_der = u.cert_der, fingerprint_sha256 = u.fingerprint_sha256, issued_at = u.issued_at, \
                 revoked_at = u.revoked_at, revocation_reason = u.revocation_reason, revocation_comment = u.revocation_comment, \
                 revoked_by = u.revoked_by, superseded_at = u.superseded_at, superseded_by = u.superseded_by, version"
            ),
            "{c}"
        );
        assert!(
            c.contains(
                "c.spki_der = u.spki_der AND c.not_before = u.not_before AND c.not_after = u.not_after AND c.created_at = u.created_at"
            ),
            "{c}"
        );
        assert_eq!(key_select(&STEPS), "c.attempt_id, c.n");
    }

    #[test]
    fn malformed_local_records_are_quarantined_before_sending() {
        let key = |id: &str| RecordKey { entity: Entity::Step, id: id.into(), step_no: 1 };
        let step = |id: &str, at: &str, n: Value| {
            vec![
                Value::Text(id.into()),
                n,
                Value::Text(at.into()),
                Value::Text("s".into()),
                Value::Text("k".into()),
                Value::Text("d".into()),
            ]
        };
        let good = "0190a1b2-0000-7000-8000-000000000001";
        let changes = vec![
            PendingChange { key: key(good), version: 1, state: RecordState::Present(step(good, "2026-01-01T00:00:00Z", Value::Int(1))) },
            PendingChange {
                key: key("nope"),
                version: 2,
                state: RecordState::Present(step("nope", "2026-01-01T00:00:00Z", Value::Int(1))),
            },
            PendingChange { key: key(good), version: 3, state: RecordState::Present(step(good, "yesterday", Value::Int(1))) },
            PendingChange {
                key: key(good),
                version: 4,
                state: RecordState::Present(step(good, "2026-01-01T00:00:00Z", Value::Text("1".into()))),
            },
            PendingChange { key: key(good), version: 5, state: RecordState::Present(step(good, "2026-01-01T00:00:00Z", Value::Null)) },
            PendingChange { key: key(good), version: 6, state: RecordState::Missing },
            PendingChange {
                key: key(good),
                version: 7,
                state: RecordState::Present(step(good, "9999-12-31T23:59:59-01:00", Value::Int(1))),
            },
        ];
        let mut out = Outcome::default();
        let rows = prepare("S", changes, &mut out);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].ckey, (Uuid::parse_str(good).unwrap(), 1));
        let reasons: Vec<(i64, &str)> = out.quarantine.iter().map(|q| (q.version, q.reason.as_str())).collect();
        assert_eq!(reasons.len(), 6, "{reasons:?}");
        assert!(reasons[0].1.contains("attempt_id: \"nope\" is not a UUID"), "{reasons:?}");
        assert!(reasons[1].1.contains("at: \"yesterday\" is not an RFC 3339 time"), "{reasons:?}");
        assert!(reasons[2].1.contains("n holds Text"), "{reasons:?}");
        assert!(reasons[3].1.contains("n is NULL"), "{reasons:?}");
        assert!(reasons[4].1.contains("not in the local store"), "{reasons:?}");
        assert!(reasons[5].1.contains("at: \"9999-12-31T23:59:59-01:00\" is out of range once in UTC"), "{reasons:?}");
    }
}
