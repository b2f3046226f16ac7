//! Reports over attempts and their certificates, from the local store or
//! from the center (across stations, as far as the login role may read).

use crate::SyncError;
use imprint_store::{AttemptFilter, Store, StoreError};
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// One attempt with its certificate, as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReportRow {
    pub station_id: String,
    pub attempt_id: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: String,
    pub stage: Option<String>,
    pub code: Option<String>,
    pub device_serial: Option<String>,
    pub model: Option<String>,
    pub batch: Option<String>,
    pub cert_serial: Option<String>,
    pub cert_status: Option<String>,
    pub not_after: Option<String>,
    pub fingerprint_sha256: Option<String>,
    /// Who started the attempt.
    pub operator: Option<String>,
    /// The device's latest QA verdict (`pass` / `fail`), if QA verified it.
    pub qa_verdict: Option<String>,
}

/// Column names, in the order of [`ReportRow::cells`].
pub const REPORT_COLUMNS: &[&str] = &[
    "station_id",
    "attempt_id",
    "started_at",
    "finished_at",
    "status",
    "stage",
    "code",
    "device_serial",
    "model",
    "batch",
    "cert_serial",
    "cert_status",
    "not_after",
    "fingerprint_sha256",
    "operator",
    "qa_verdict",
];

impl ReportRow {
    /// The row as CSV cells.
    pub fn cells(&self) -> Vec<String> {
        let o = |s: &Option<String>| s.clone().unwrap_or_default();
        vec![
            self.station_id.clone(),
            self.attempt_id.clone(),
            self.started_at.clone(),
            o(&self.finished_at),
            self.status.clone(),
            o(&self.stage),
            o(&self.code),
            o(&self.device_serial),
            o(&self.model),
            o(&self.batch),
            o(&self.cert_serial),
            o(&self.cert_status),
            o(&self.not_after),
            o(&self.fingerprint_sha256),
            o(&self.operator),
            o(&self.qa_verdict),
        ]
    }
}

/// Attempts recorded by this station since `since` (RFC 3339), newest first.
pub fn local_report(store: &Store, station_id: &str, since: Option<&str>) -> Result<Vec<ReportRow>, StoreError> {
    let attempts = store.attempts(&AttemptFilter { since: since.map(str::to_string), ..Default::default() })?;
    let mut out = Vec::with_capacity(attempts.len());
    for a in attempts {
        let c = match &a.certificate_id {
            Some(id) => store.cert_by_id(id)?,
            None => None,
        };
        let qa_verdict = match &a.device_serial {
            Some(s) => store
                .qa_verdicts(&imprint_store::QaFilter { device_serial: Some(s.clone()), limit: Some(1), ..Default::default() })?
                .into_iter()
                .next()
                .map(|v| v.verdict),
            None => None,
        };
        out.push(ReportRow {
            qa_verdict,
            station_id: station_id.to_string(),
            attempt_id: a.id,
            started_at: a.started_at.to_string(),
            finished_at: a.finished_at.map(|t| t.to_string()),
            status: a.status.to_string(),
            stage: a.stage.map(|v| v.to_string()),
            code: a.code.map(|v| v.to_string()),
            device_serial: a.device_serial,
            model: a.model,
            batch: a.batch,
            cert_serial: c.as_ref().map(|c| c.serial_hex.clone()),
            cert_status: c.as_ref().map(|c| c.status.to_string()),
            not_after: c.as_ref().map(|c| c.not_after.to_string()),
            fingerprint_sha256: c.and_then(|c| c.fingerprint_sha256),
            operator: a.operator,
        });
    }
    Ok(out)
}

fn text(t: Option<OffsetDateTime>) -> Option<String> {
    t.map(imprint_store::ts)
}

/// Attempts at the center, optionally of one station and since a time,
/// newest first. A station role sees its own rows; a reader sees all.
pub async fn central_report(opts: &PgConnectOptions, station: Option<&str>, since: Option<&str>) -> Result<Vec<ReportRow>, SyncError> {
    let since = match since {
        Some(s) => {
            Some(OffsetDateTime::parse(s, &Rfc3339).map_err(|_| SyncError::Config(format!("--since {s:?} is not an RFC 3339 time")))?)
        }
        None => None,
    };
    let mut conn = opts.connect().await.map_err(SyncError::connect)?;
    let rows = sqlx::query(
        "SELECT a.station_id, a.id::text, a.started_at, a.finished_at, a.status, a.stage, a.code, a.device_serial, a.model,
                a.batch, c.serial_hex, c.status, c.not_after, c.fingerprint_sha256, a.operator, q.verdict
         FROM attempts a LEFT JOIN certificates c ON c.id = a.certificate_id
         LEFT JOIN LATERAL (SELECT v.verdict FROM qa_verdicts v WHERE v.device_serial = a.device_serial
                            ORDER BY v.at DESC LIMIT 1) q ON true
         WHERE ($1::text IS NULL OR a.station_id = $1) AND ($2::timestamptz IS NULL OR a.started_at >= $2)
         ORDER BY a.started_at DESC, a.id DESC",
    )
    .bind(station)
    .bind(since)
    .fetch_all(&mut conn)
    .await?;
    let _ = conn.close().await;
    rows.iter()
        .map(|r| {
            Ok(ReportRow {
                station_id: r.try_get(0)?,
                attempt_id: r.try_get(1)?,
                started_at: imprint_store::ts(r.try_get(2)?),
                finished_at: text(r.try_get(3)?),
                status: r.try_get(4)?,
                stage: r.try_get(5)?,
                code: r.try_get(6)?,
                device_serial: r.try_get(7)?,
                model: r.try_get(8)?,
                batch: r.try_get(9)?,
                cert_serial: r.try_get(10)?,
                cert_status: r.try_get(11)?,
                not_after: text(r.try_get(12)?),
                fingerprint_sha256: r.try_get(13)?,
                operator: r.try_get(14)?,
                qa_verdict: r.try_get(15)?,
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
