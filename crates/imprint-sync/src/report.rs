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
    /// A time column as stored text (the local store keeps the text already).
    fn time_text(self, col: &str) -> String {
        match self {
            Dialect::Sqlite => col.to_string(),
            Dialect::Postgres => format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"),
        }
    }
}

/// The one report query and its parameters (all text). `station_id` is the
/// local station's id (the local store keeps no station per row).
pub fn report_sql(d: Dialect, q: &ReportQuery, station_id: &str) -> (String, Vec<Option<String>>) {
    let mut args: Vec<Option<String>> = Vec::new();
    let mut p = |v: Option<String>, cast: &str| {
        args.push(v);
        d.param(args.len(), cast)
    };
    let station = match d {
        Dialect::Sqlite => p(Some(station_id.to_string()), ""),
        Dialect::Postgres => "a.station_id".to_string(),
    };
    let (id, collate) = match d {
        Dialect::Sqlite => ("a.id", ""),
        Dialect::Postgres => ("a.id::text", " COLLATE \"C\""),
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
    let sql = format!(
        "SELECT r.* FROM (
           SELECT {station} AS station_id, {id} AS attempt_id, {started} AS started_at, {finished} AS finished_at, a.port,
                  a.status, a.stage, a.code, a.reason, a.device_serial, a.model, a.hw_rev, a.fw_version, a.batch, a.operator,
                  a.resumed, c.serial_hex, c.status AS cert_status, c.issuer, {nb} AS not_before, {na} AS not_after,
                  c.fingerprint_sha256, a.spki_sha256,
                  (SELECT v.verdict FROM qa_verdicts v WHERE v.device_serial = a.device_serial ORDER BY v.at DESC LIMIT 1) AS qa_verdict,
                  {der} AS cert_der, a.started_at AS sort_at
           FROM attempts a LEFT JOIN certificates c ON c.id = a.certificate_id{where_}
         ) r{outer}
         ORDER BY r.sort_at DESC, r.attempt_id{collate} DESC",
        started = d.time_text("a.started_at"),
        finished = d.time_text("a.finished_at"),
        nb = d.time_text("c.not_before"),
        na = d.time_text("c.not_after"),
    );
    (sql, args)
}

/// The report's rows from the local store, newest first.
pub fn local_rows(store: &Store, station_id: &str, q: &ReportQuery) -> Result<Vec<ReportRow>, StoreError> {
    let (sql, args) = report_sql(Dialect::Sqlite, q, station_id);
    store.read(move |c| {
        let mut s = c.prepare(&sql)?;
        let rows = s
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
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
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    })
}

/// The same rows from the center, newest first. A station role sees its
/// own rows; a reader sees all.
pub async fn central_rows(opts: &PgConnectOptions, q: &ReportQuery) -> Result<Vec<ReportRow>, SyncError> {
    let (sql, args) = report_sql(Dialect::Postgres, q, "");
    let mut conn = opts.connect().await.map_err(SyncError::connect)?;
    // Audited: the text is built from constants only; every value is a bind parameter.
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for a in args {
        query = query.bind(a);
    }
    let rows = query.fetch_all(&mut conn).await?;
    let _ = conn.close().await;
    rows.iter()
        .map(|r| {
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
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(SyncError::from)
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
            let (sql, args) = report_sql(Dialect::Sqlite, &q, "st");
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
