//! Report rows: attempts with their certificates and the device's latest QA
//! verdict, from the local store or from the center (across stations, as
//! far as the login role may read), through ONE query.
//!
//! [`report_sql`] writes the same SELECT for both databases; a [`Dialect`]
//! only spells what the two spell differently (placeholders, time as text,
//! the station id, which the local store does not keep per row). Both
//! return [`ReportRow`]s in the same order, so everything built on them
//! (columns, CSV, summary, PDF, cloud exports) is one code path: local and
//! central reports of the same records agree.

use crate::SyncError;
use imprint_store::{Store, StoreError};
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};
use time::OffsetDateTime;

/// One attempt with its certificate, as reported.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReportRow {
    pub station_id: String,
    pub attempt_id: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub port: String,
    pub status: String,
    pub stage: Option<String>,
    pub code: Option<String>,
    pub reason: Option<String>,
    pub device_serial: Option<String>,
    pub model: Option<String>,
    pub hw_rev: Option<String>,
    pub fw_version: Option<String>,
    pub batch: Option<String>,
    /// Who started the attempt.
    pub operator: Option<String>,
    pub resumed: bool,
    pub cert_serial: Option<String>,
    pub cert_status: Option<String>,
    /// The certificate's issuer DN.
    pub issuer: Option<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    pub fingerprint_sha256: Option<String>,
    pub spki_sha256: Option<String>,
    /// The device's latest QA verdict (`pass` / `fail`), if QA verified it.
    pub qa_verdict: Option<String>,
    /// The certificate (DER), only when asked for (cloud exports).
    #[serde(skip)]
    pub cert_der: Option<Vec<u8>>,
}

/// The filter as both databases take it: every value already checked and
/// normalised by the caller (times as stored: RFC 3339 UTC with milliseconds).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportQuery {
    /// Attempts started at or after this time.
    pub since: Option<String>,
    /// Attempts started before this time.
    pub until: Option<String>,
    pub station: Option<String>,
    pub batch: Option<String>,
    pub operator: Option<String>,
    pub status: Option<String>,
    pub code: Option<String>,
    pub device_serial: Option<String>,
    /// `pass`, `fail`, or `none` (no verdict).
    pub qa_verdict: Option<String>,
    /// Also read each certificate's DER.
    pub with_der: bool,
    /// Rows returned at most (newest first); none: all. The summary ignores it.
    pub limit: Option<u32>,
    /// Rows skipped before the first returned. The summary ignores it.
    pub offset: Option<u32>,
}

/// Where the query runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    fn param(self, n: usize, cast: &str) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres if cast.is_empty() => format!("${n}"),
            Dialect::Postgres => format!("${n}::{cast}"),
        }
    }
    /// Text ordered by bytes, as Rust orders `String`s.
    fn collate_c(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " COLLATE \"C\"",
        }
    }
    /// A time column as stored text (the local store keeps the text already).
    fn time_text(self, col: &str) -> String {
        match self {
            Dialect::Sqlite => col.to_string(),
            Dialect::Postgres => format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"),
        }
    }
}

/// The filtered rows (`SELECT r.* ...`, unordered): the one filter both the
/// rows and the summary are read through. Parameters are pushed onto `args`.
fn filtered_sql(d: Dialect, q: &ReportQuery, station_id: &str, args: &mut Vec<Option<String>>) -> String {
    let mut p = |v: Option<String>, cast: &str| {
        args.push(v);
        d.param(args.len(), cast)
    };
    let station = match d {
        Dialect::Sqlite => p(Some(station_id.to_string()), ""),
        Dialect::Postgres => "a.station_id".to_string(),
    };
    let id = match d {
        Dialect::Sqlite => "a.id",
        Dialect::Postgres => "a.id::text",
    };
    let der = match (q.with_der, d) {
        (true, _) => "c.cert_der",
        (false, Dialect::Sqlite) => "NULL",
        (false, Dialect::Postgres) => "NULL::bytea",
    };
    let mut conds = Vec::new();
    let time_cast = "timestamptz";
    if let Some(v) = &q.since {
        conds.push(format!("a.started_at >= {}", p(Some(v.clone()), time_cast)));
    }
    if let Some(v) = &q.until {
        conds.push(format!("a.started_at < {}", p(Some(v.clone()), time_cast)));
    }
    if let Some(v) = &q.station {
        conds.push(format!("{station} = {}", p(Some(v.clone()), "")));
    }
    for (col, v) in [
        ("a.batch", &q.batch),
        ("a.operator", &q.operator),
        ("a.status", &q.status),
        ("a.code", &q.code),
        ("a.device_serial", &q.device_serial),
    ] {
        if let Some(v) = v {
            conds.push(format!("{col} = {}", p(Some(v.clone()), "")));
        }
    }
    let outer = match q.qa_verdict.as_deref() {
        None => String::new(),
        Some("none") => " WHERE r.qa_verdict IS NULL".to_string(),
        Some(v) => format!(" WHERE r.qa_verdict = {}", p(Some(v.to_string()), "")),
    };
    let where_ = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
    format!(
        "SELECT r.* FROM (
           SELECT {station} AS station_id, {id} AS attempt_id, {started} AS started_at, {finished} AS finished_at, a.port,
                  a.status, a.stage, a.code, a.reason, a.device_serial, a.model, a.hw_rev, a.fw_version, a.batch, a.operator,
                  a.resumed, c.serial_hex, c.status AS cert_status, c.issuer, {nb} AS not_before, {na} AS not_after,
                  c.fingerprint_sha256, a.spki_sha256,
                  (SELECT v.verdict FROM qa_verdicts v WHERE v.device_serial = a.device_serial ORDER BY v.at DESC LIMIT 1) AS qa_verdict,
                  {der} AS cert_der, a.started_at AS sort_at
           FROM attempts a LEFT JOIN certificates c ON c.id = a.certificate_id{where_}
         ) r{outer}",
        started = d.time_text("a.started_at"),
        finished = d.time_text("a.finished_at"),
        nb = d.time_text("c.not_before"),
        na = d.time_text("c.not_after"),
    )
}

/// The one report query and its parameters (all text): the filtered rows,
/// newest first, `q.offset`/`q.limit` of them when given. `station_id` is the
/// local station's id (the local store keeps no station per row).
pub fn report_sql(d: Dialect, q: &ReportQuery, station_id: &str) -> (String, Vec<Option<String>>) {
    let mut args: Vec<Option<String>> = Vec::new();
    let filtered = filtered_sql(d, q, station_id, &mut args);
    let collate = d.collate_c();
    // Whole numbers, never text from outside: no parameter needed.
    let page = match (q.limit, q.offset, d) {
        (None, None, _) => String::new(),
        (Some(l), o, _) => format!(" LIMIT {l} OFFSET {}", o.unwrap_or(0)),
        (None, Some(o), Dialect::Sqlite) => format!(" LIMIT -1 OFFSET {o}"),
        (None, Some(o), Dialect::Postgres) => format!(" OFFSET {o}"),
    };
    let sql = format!("{filtered}\n         ORDER BY r.sort_at DESC, r.attempt_id{collate} DESC{page}");
    (sql, args)
}

/// What the summary query counts, in one result of uniform rows: `kind`
/// names the group, `k1`/`k2` its key, `a`..`d` its counts. Ordering,
/// percentages and the QA plan are left to the caller: only counts cross.
///
/// Over the filtered rows `r` (materialised once); `dev`, one row per
/// device of `r` (its attempts, whether one passed, whether all are
/// running, its rows with a certificate); and `g`, the rows counted by
/// hour, station, operator, work order, status, stage and code (some
/// thousands of groups for a site's month, from which the attempts, the
/// Pareto, the hours, stations, operators and work orders are summed):
/// - `attempts`: a = attempts, b = attempts without a serial;
/// - `devices`: a = distinct serials, b = those with a passed attempt, c =
///   those whose attempts are all running, d = those whose first attempt
///   (oldest by start, then id: the report's order reversed) passed;
/// - `pareto` (stage or `-`, code or status): a = failed/interrupted attempts;
/// - `hour` (the first 13 characters of the start time), `station`,
///   `operator` (or `-`): a = attempts, b = passed, c = failed or interrupted;
/// - `qa` (work order, may be NULL): over passed attempts with a serial,
///   a = distinct devices, b = those with a QA verdict (any verdict: the
///   latest exists when one does; probed per device, not per row);
/// - `issuer`: a = distinct certificate serials, b = those revoked;
/// - `superseded`: a = distinct (issuer, serial) of a device that is not
///   its newest certificate in the rows (newest by start time text, then
///   issuer, then serial: `imprint_api::reports::superseded`'s order);
/// - `batch`: each work order of the rows (for the overproduction check).
///
/// Written for a site's month among 10 million attempts at the center
/// (docs/performance.md, issue 14 item 6): `r` reads only what the counts
/// need (no QA verdict unless the filter asks for one, so the per-row
/// probe of the newest verdict is not made); every group is a hash
/// aggregate over `r`, `dev` or `g`; the two windows (a device's first attempt, its newest
/// certificate) sort only the devices that need them: a device with one
/// attempt has that attempt first, a device with at most one certificate
/// row has nothing superseded. Distinct counts are counted as groups of
/// groups (`count(DISTINCT x)` sorts its input in PostgreSQL).
pub fn summary_sql(d: Dialect, q: &ReportQuery, station_id: &str) -> (String, Vec<Option<String>>) {
    let mut args: Vec<Option<String>> = Vec::new();
    let mut q = q.clone();
    q.with_der = false;
    let filtered = filtered_sql(d, &q, station_id, &mut args);
    let c = d.collate_c();
    let sql = format!(
        "WITH r AS MATERIALIZED (
           SELECT station_id, attempt_id, started_at, sort_at, status, stage, code, device_serial, batch, operator,
                  serial_hex AS cert_serial, cert_status, issuer
           FROM ({filtered}) f
         ),
         dev AS MATERIALIZED (
           SELECT device_serial, count(*) AS n, max(CASE WHEN status = 'passed' THEN 1 ELSE 0 END) AS passed,
                  min(CASE WHEN status = 'running' THEN 1 ELSE 0 END) AS running,
                  count(CASE WHEN issuer IS NOT NULL AND cert_serial IS NOT NULL THEN 1 END) AS certs
           FROM r WHERE device_serial IS NOT NULL GROUP BY device_serial
         ),
         g AS MATERIALIZED (
           SELECT substr(started_at, 1, 13) AS hour, station_id, coalesce(operator, '-') AS operator, batch, status,
                  coalesce(stage, '-') AS stage, coalesce(code, status) AS code, count(*) AS n,
                  count(CASE WHEN device_serial IS NULL THEN 1 END) AS no_serial
           FROM r GROUP BY substr(started_at, 1, 13), station_id, coalesce(operator, '-'), batch, status, coalesce(stage, '-'), coalesce(code, status)
         ),
         firsts AS (
           SELECT device_serial, status, ROW_NUMBER() OVER (PARTITION BY device_serial ORDER BY sort_at, attempt_id{c}) AS n
           FROM r WHERE device_serial IN (SELECT device_serial FROM dev WHERE n > 1)
         ),
         certs AS (
           SELECT device_serial, issuer, cert_serial,
                  ROW_NUMBER() OVER (PARTITION BY device_serial ORDER BY started_at{c} DESC, issuer{c} DESC, cert_serial{c} DESC) AS n
           FROM r WHERE issuer IS NOT NULL AND cert_serial IS NOT NULL AND device_serial IN (SELECT device_serial FROM dev WHERE certs > 1)
         )
         SELECT 'attempts' AS kind, CAST(NULL AS TEXT) AS k1, CAST(NULL AS TEXT) AS k2,
                CAST(coalesce(sum(n), 0) AS BIGINT) AS a, CAST(coalesce(sum(no_serial), 0) AS BIGINT) AS b, 0 AS c, 0 AS d FROM g
         UNION ALL
         SELECT 'devices', NULL, NULL, count(*), coalesce(sum(passed), 0), coalesce(sum(running), 0),
                coalesce(sum(CASE WHEN n = 1 THEN passed ELSE 0 END), 0) + (SELECT count(*) FROM firsts WHERE n = 1 AND status = 'passed')
         FROM dev
         UNION ALL
         SELECT 'pareto', stage, code, {n}, 0, 0, 0 FROM g WHERE status IN ('failed', 'interrupted') GROUP BY stage, code
         UNION ALL
         SELECT 'hour', hour, NULL, {n}, {passed}, {failed}, 0 FROM g GROUP BY hour
         UNION ALL
         SELECT 'station', station_id, NULL, {n}, {passed}, {failed}, 0 FROM g GROUP BY station_id
         UNION ALL
         SELECT 'operator', operator, NULL, {n}, {passed}, {failed}, 0 FROM g GROUP BY operator
         UNION ALL
         SELECT 'qa', batch, NULL, count(*), sum(CASE WHEN EXISTS (SELECT 1 FROM qa_verdicts v WHERE v.device_serial = q.device_serial) THEN 1 ELSE 0 END), 0, 0
         FROM (SELECT batch, device_serial FROM r WHERE status = 'passed' AND device_serial IS NOT NULL GROUP BY batch, device_serial) q GROUP BY batch
         UNION ALL
         SELECT 'issuer', issuer, NULL, count(*), sum(revoked), 0, 0
         FROM (SELECT issuer, cert_serial, max(CASE WHEN cert_status = 'revoked' THEN 1 ELSE 0 END) AS revoked
               FROM r WHERE issuer IS NOT NULL AND cert_serial IS NOT NULL GROUP BY issuer, cert_serial) i GROUP BY issuer
         UNION ALL
         SELECT 'superseded', NULL, NULL, count(*), 0, 0, 0
         FROM (SELECT DISTINCT o.issuer, o.cert_serial FROM certs o JOIN certs newest ON newest.device_serial = o.device_serial AND newest.n = 1
               WHERE o.issuer <> newest.issuer OR o.cert_serial <> newest.cert_serial) sup
         UNION ALL
         SELECT 'batch', batch, NULL, 0, 0, 0, 0 FROM g WHERE batch IS NOT NULL GROUP BY batch",
        n = "CAST(sum(n) AS BIGINT)",
        passed = "CAST(coalesce(sum(CASE WHEN status = 'passed' THEN n END), 0) AS BIGINT)",
        failed = "CAST(coalesce(sum(CASE WHEN status IN ('failed', 'interrupted') THEN n END), 0) AS BIGINT)",
    );
    (sql, args)
}

/// One group's counts: attempts, of which passed, of which failed or interrupted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GroupCount {
    pub key: String,
    pub attempts: u64,
    pub passed: u64,
    pub failed: u64,
}

/// The summary's counts as the database computed them ([`summary_sql`]), in
/// no particular order: the caller sorts and turns them into percentages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SummaryCounts {
    pub attempts: u64,
    pub attempts_without_serial: u64,
    pub devices: u64,
    pub devices_passed: u64,
    pub devices_running: u64,
    pub devices_first_passed: u64,
    /// (stage, code, failed or interrupted attempts).
    pub pareto: Vec<(String, String, u64)>,
    pub per_hour: Vec<GroupCount>,
    pub per_station: Vec<GroupCount>,
    pub per_operator: Vec<GroupCount>,
    /// (work order, devices provisioned, of which QA verified).
    pub qa: Vec<(Option<String>, u64, u64)>,
    /// (issuer, distinct certificates, of which revoked).
    pub issuers: Vec<(String, u64, u64)>,
    pub superseded: u64,
    /// The work orders of the rows.
    pub batches: Vec<String>,
}

/// One row of the summary query, as both databases return it.
type SummaryRow = (String, Option<String>, Option<String>, [i64; 4]);

impl SummaryCounts {
    fn from_rows(rows: Vec<SummaryRow>) -> SummaryCounts {
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        let mut s = SummaryCounts::default();
        for (kind, k1, k2, [a, b, c, d]) in rows {
            let group = |k1: Option<String>| GroupCount { key: k1.unwrap_or_default(), attempts: n(a), passed: n(b), failed: n(c) };
            match kind.as_str() {
                "attempts" => (s.attempts, s.attempts_without_serial) = (n(a), n(b)),
                "devices" => (s.devices, s.devices_passed, s.devices_running, s.devices_first_passed) = (n(a), n(b), n(c), n(d)),
                "pareto" => s.pareto.push((k1.unwrap_or_default(), k2.unwrap_or_default(), n(a))),
                "hour" => s.per_hour.push(group(k1)),
                "station" => s.per_station.push(group(k1)),
                "operator" => s.per_operator.push(group(k1)),
                "qa" => s.qa.push((k1, n(a), n(b))),
                "issuer" => s.issuers.push((k1.unwrap_or_default(), n(a), n(b))),
                "superseded" => s.superseded = n(a),
                "batch" => s.batches.extend(k1),
                _ => {}
            }
        }
        s
    }
}

fn lite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReportRow> {
    Ok(ReportRow {
        station_id: r.get(0)?,
        attempt_id: r.get(1)?,
        started_at: r.get(2)?,
        finished_at: r.get(3)?,
        port: r.get(4)?,
        status: r.get(5)?,
        stage: r.get(6)?,
        code: r.get(7)?,
        reason: r.get(8)?,
        device_serial: r.get(9)?,
        model: r.get(10)?,
        hw_rev: r.get(11)?,
        fw_version: r.get(12)?,
        batch: r.get(13)?,
        operator: r.get(14)?,
        resumed: r.get(15)?,
        cert_serial: r.get(16)?,
        cert_status: r.get(17)?,
        issuer: r.get(18)?,
        not_before: r.get(19)?,
        not_after: r.get(20)?,
        fingerprint_sha256: r.get(21)?,
        spki_sha256: r.get(22)?,
        qa_verdict: r.get(23)?,
        cert_der: r.get(24)?,
    })
}

fn pg_row(r: &sqlx::postgres::PgRow) -> Result<ReportRow, sqlx::Error> {
    Ok(ReportRow {
        station_id: r.try_get(0)?,
        attempt_id: r.try_get(1)?,
        started_at: r.try_get(2)?,
        finished_at: r.try_get(3)?,
        port: r.try_get(4)?,
        status: r.try_get(5)?,
        stage: r.try_get(6)?,
        code: r.try_get(7)?,
        reason: r.try_get(8)?,
        device_serial: r.try_get(9)?,
        model: r.try_get(10)?,
        hw_rev: r.try_get(11)?,
        fw_version: r.try_get(12)?,
        batch: r.try_get(13)?,
        operator: r.try_get(14)?,
        resumed: r.try_get(15)?,
        cert_serial: r.try_get(16)?,
        cert_status: r.try_get(17)?,
        issuer: r.try_get(18)?,
        not_before: r.try_get(19)?,
        not_after: r.try_get(20)?,
        fingerprint_sha256: r.try_get(21)?,
        spki_sha256: r.try_get(22)?,
        qa_verdict: r.try_get(23)?,
        cert_der: r.try_get(24)?,
    })
}

fn lite_summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SummaryRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, [r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?]))
}

fn pg_summary_row(r: &sqlx::postgres::PgRow) -> Result<SummaryRow, sqlx::Error> {
    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, [r.try_get(3)?, r.try_get(4)?, r.try_get(5)?, r.try_get(6)?]))
}

fn lite_query<T>(
    c: &rusqlite::Connection,
    (sql, args): (String, Vec<Option<String>>),
    f: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let mut s = c.prepare(&sql)?;
    let rows = s.query_map(rusqlite::params_from_iter(args.iter()), f)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

async fn pg_query<T>(
    c: &mut sqlx::PgConnection,
    sql_args: (String, Vec<Option<String>>),
    f: fn(&sqlx::postgres::PgRow) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, SyncError> {
    let rows = pg_bound(sql_args).fetch_all(&mut *c).await?;
    Ok(rows.iter().map(f).collect::<Result<Vec<T>, sqlx::Error>>()?)
}

/// A report query with its values bound.
fn pg_bound((sql, args): (String, Vec<Option<String>>)) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    // Audited: the text is built from constants only; every value is a bind parameter.
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for a in args {
        query = query.bind(a);
    }
    query
}

/// The report's rows from the local store, newest first.
pub fn local_rows(store: &Store, station_id: &str, q: &ReportQuery) -> Result<Vec<ReportRow>, StoreError> {
    let sql = report_sql(Dialect::Sqlite, q, station_id);
    store.read(move |c| lite_query(c, sql, lite_row))
}

/// Every row of `q` from the local store, newest first, handed to `each` one
/// at a time (an export: memory stays one row whatever the filter matches),
/// on a connection of its own so the Bench's reads go on meanwhile; returns
/// how many. An error of `each` stops the read and is returned.
pub fn local_rows_each<E: From<StoreError>>(
    store: &Store,
    station_id: &str,
    q: &ReportQuery,
    mut each: impl FnMut(ReportRow) -> Result<(), E>,
) -> Result<u64, E> {
    let (sql, args) = report_sql(Dialect::Sqlite, q, station_id);
    let mut stopped: Option<E> = None;
    let n = store.read_apart(|c| {
        let mut s = c.prepare(&sql)?;
        let mut rows = s.query(rusqlite::params_from_iter(args.iter()))?;
        let mut n = 0u64;
        while let Some(r) = rows.next()? {
            if let Err(e) = each(lite_row(r)?) {
                stopped = Some(e);
                break;
            }
            n += 1;
        }
        Ok(n)
    })?;
    stopped.map_or(Ok(n), Err)
}

/// The same from the center, streamed as PostgreSQL sends the rows (never
/// all of them in memory); a station role sees its own rows, a reader all.
pub async fn central_rows_each<E: From<SyncError>>(
    opts: &PgConnectOptions,
    q: &ReportQuery,
    mut each: impl FnMut(ReportRow) -> Result<(), E>,
) -> Result<u64, E> {
    use futures_util::TryStreamExt;
    let mut conn = opts.connect().await.map_err(SyncError::connect)?;
    let query = pg_bound(report_sql(Dialect::Postgres, q, ""));
    let mut n = 0u64;
    let mut stopped: Option<E> = None;
    // JIT off, as for the report: compiling the query costs more than it
    // saves (a year of a site, 100,000 rows: 2.0 s with it, 1.7 s without;
    // docs/performance.md).
    sqlx::query("BEGIN READ ONLY").execute(&mut conn).await.map_err(SyncError::from)?;
    sqlx::query("SET LOCAL jit = off").execute(&mut conn).await.map_err(SyncError::from)?;
    {
        let mut rows = query.fetch(&mut conn);
        while let Some(r) = rows.try_next().await.map_err(SyncError::from)? {
            if let Err(e) = each(pg_row(&r).map_err(SyncError::from)?) {
                stopped = Some(e);
                break;
            }
            n += 1;
        }
    }
    if stopped.is_none() {
        sqlx::query("COMMIT").execute(&mut conn).await.map_err(SyncError::from)?;
    }
    let _ = conn.close().await;
    stopped.map_or(Ok(n), Err)
}

/// The same rows from the center, newest first. A station role sees its
/// own rows; a reader sees all.
pub async fn central_rows(opts: &PgConnectOptions, q: &ReportQuery) -> Result<Vec<ReportRow>, SyncError> {
    let mut conn = opts.connect().await.map_err(SyncError::connect)?;
    let rows = async {
        // JIT off, as for the report and the CSV export.
        sqlx::query("BEGIN READ ONLY").execute(&mut conn).await?;
        sqlx::query("SET LOCAL jit = off").execute(&mut conn).await?;
        let rows = pg_query(&mut conn, report_sql(Dialect::Postgres, q, ""), pg_row).await?;
        sqlx::query("COMMIT").execute(&mut conn).await?;
        Ok::<_, SyncError>(rows)
    }
    .await;
    let _ = conn.close().await;
    rows
}

/// The summary's counts over the local store's rows of the filter (no rows).
pub fn local_summary(store: &Store, station_id: &str, q: &ReportQuery) -> Result<SummaryCounts, StoreError> {
    Ok(local_report(store, station_id, &ReportQuery { limit: Some(0), offset: None, ..q.clone() })?.0)
}

/// The same counts computed at the center (no rows).
pub async fn central_summary(opts: &PgConnectOptions, q: &ReportQuery) -> Result<SummaryCounts, SyncError> {
    Ok(central_report(opts, &ReportQuery { limit: Some(0), offset: None, ..q.clone() }).await?.0)
}

/// A report from the local store: the counts over every row of `q` and the
/// rows of `q` (its `limit`/`offset`: the page shown), in one read transaction.
pub fn local_report(store: &Store, station_id: &str, q: &ReportQuery) -> Result<(SummaryCounts, Vec<ReportRow>), StoreError> {
    let summary = summary_sql(Dialect::Sqlite, q, station_id);
    let page = report_sql(Dialect::Sqlite, q, station_id);
    store.read(move |c| {
        let tx = c.unchecked_transaction()?;
        let counts = SummaryCounts::from_rows(lite_query(&tx, summary, lite_summary_row)?);
        let rows = lite_query(&tx, page, lite_row)?;
        tx.finish()?;
        Ok((counts, rows))
    })
}

/// The same at the center, on one connection in one read-only snapshot:
/// only the counts and the page's rows are transferred.
///
/// Two settings for this transaction only, both measured at 10 million
/// attempts (docs/performance.md): JIT off (PostgreSQL compiles the summary
/// query because its estimated cost is high, and a site's month took 4.6-5.5 s
/// with the compiling, 1.25 s without) and `work_mem` 32 MB (the per-device
/// groups of a site's month, 78,000 devices, stay in memory).
pub async fn central_report(opts: &PgConnectOptions, q: &ReportQuery) -> Result<(SummaryCounts, Vec<ReportRow>), SyncError> {
    let mut conn = opts.connect().await.map_err(SyncError::connect)?;
    let r = async {
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut conn).await?;
        sqlx::query("SET LOCAL jit = off").execute(&mut conn).await?;
        sqlx::query("SET LOCAL work_mem = '32MB'").execute(&mut conn).await?;
        let counts = SummaryCounts::from_rows(pg_query(&mut conn, summary_sql(Dialect::Postgres, q, ""), pg_summary_row).await?);
        let rows = pg_query(&mut conn, report_sql(Dialect::Postgres, q, ""), pg_row).await?;
        sqlx::query("COMMIT").execute(&mut conn).await?;
        Ok::<_, SyncError>((counts, rows))
    }
    .await;
    let _ = conn.close().await;
    r
}

/// A current certificate that expires within a window (`imprint certs expiring`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExpiringRow {
    pub station_id: String,
    pub device_serial: String,
    pub serial_hex: String,
    pub issuer: String,
    pub not_after: String,
    /// Whole days from now to notAfter (negative: expired already).
    pub days_left: i64,
}

fn days_left(not_after: OffsetDateTime, now: OffsetDateTime) -> i64 {
    (not_after - now).whole_days()
}

/// Issued (current) certificates of the local store whose notAfter is before `until`, soonest first.
pub fn local_expiring(store: &Store, station_id: &str, now: OffsetDateTime, until: OffsetDateTime) -> Result<Vec<ExpiringRow>, StoreError> {
    Ok(store
        .certs_expiring_before(&imprint_store::ts(until))?
        .into_iter()
        .map(|c| ExpiringRow {
            station_id: station_id.to_string(),
            days_left: c.not_after.get().map_or(0, |t| days_left(t.get(), now)),
            not_after: c.not_after.to_string(),
            device_serial: c.device_serial,
            serial_hex: c.serial_hex,
            issuer: c.issuer,
        })
        .collect())
}

/// The same at the center: every station's issued certificates as far as
/// the login role may read (a reader role sees every station's, a station
/// role its own), soonest first.
pub async fn central_expiring(opts: &PgConnectOptions, now: OffsetDateTime, until: OffsetDateTime) -> Result<Vec<ExpiringRow>, SyncError> {
    let mut conn = opts.connect().await.map_err(SyncError::connect)?;
    let rows = sqlx::query(
        "SELECT station_id, device_serial, serial_hex, issuer, not_after FROM certificates
         WHERE status = 'issued' AND not_after < $1 ORDER BY not_after, id",
    )
    .bind(until)
    .fetch_all(&mut conn)
    .await?;
    let _ = conn.close().await;
    rows.iter()
        .map(|r| {
            let not_after: OffsetDateTime = r.try_get(4)?;
            Ok(ExpiringRow {
                station_id: r.try_get(0)?,
                device_serial: r.try_get(1)?,
                serial_hex: r.try_get(2)?,
                issuer: r.try_get(3)?,
                not_after: imprint_store::ts(not_after),
                days_left: days_left(not_after, now),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(SyncError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_dialects_write_the_same_query_but_for_placeholders_and_time_text() {
        let q = ReportQuery {
            since: Some("2026-11-01T00:00:00.000Z".into()),
            batch: Some("WO-1".into()),
            qa_verdict: Some("pass".into()),
            ..Default::default()
        };
        let (lite, la) = report_sql(Dialect::Sqlite, &q, "st-1");
        let (pg, pa) = report_sql(Dialect::Postgres, &q, "");
        assert!(lite.contains("a.started_at >= ?2") && lite.contains("a.batch = ?3") && lite.contains("r.qa_verdict = ?4"), "{lite}");
        assert!(pg.contains("a.started_at >= $1::timestamptz") && pg.contains("a.batch = $2") && pg.contains("r.qa_verdict = $3"), "{pg}");
        assert_eq!(la[1..], pa[..], "the same values in the same order after the local station id");
        let (slite, sla) = summary_sql(Dialect::Sqlite, &q, "st-1");
        let (spg, spa) = summary_sql(Dialect::Postgres, &q, "");
        assert_eq!((sla, spa), (la.clone(), pa.clone()), "the summary filters by the same values");
        assert!(slite.contains("a.batch = ?3") && spg.contains("a.batch = $2") && spg.contains("COLLATE \"C\""), "{spg}");
        let page = ReportQuery { limit: Some(50), offset: Some(100), ..q.clone() };
        assert!(report_sql(Dialect::Postgres, &page, "").0.ends_with("LIMIT 50 OFFSET 100"));
        assert!(report_sql(Dialect::Sqlite, &ReportQuery { offset: Some(7), ..q.clone() }, "").0.ends_with("LIMIT -1 OFFSET 7"));
        let none = ReportQuery { qa_verdict: Some("none".into()), ..Default::default() };
        assert!(report_sql(Dialect::Postgres, &none, "").0.contains("r.qa_verdict IS NULL"));
    }

    /// A date range or a work order read every attempt before the report indexes (0012).
    #[test]
    fn a_report_by_date_or_work_order_uses_an_index_in_the_local_store() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("station.db")).unwrap();
        for (q, index) in [
            (ReportQuery { since: Some("2026-11-01T00:00:00.000Z".into()), ..Default::default() }, "attempts_by_started"),
            (ReportQuery { batch: Some("WO-1".into()), ..Default::default() }, "attempts_by_batch"),
        ] {
            // The rows and the summary alike.
            for (sql, args) in [report_sql(Dialect::Sqlite, &q, "st"), summary_sql(Dialect::Sqlite, &q, "st")] {
                let plan: Vec<String> = store
                    .read(move |c| {
                        let mut s = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                        let rows = s.query_map(rusqlite::params_from_iter(args.iter()), |r| r.get::<_, String>(3))?;
                        Ok(rows.collect::<Result<Vec<_>, _>>()?)
                    })
                    .unwrap();
                assert!(plan.iter().any(|p| p.contains(index)), "{index} not used: {plan:#?}");
            }
        }
    }
}
