//! Reports and exports: ONE filter ([`ReportFilter`]), ONE column set
//! ([`COLUMNS`]) and ONE summary ([`Summary`]) for `imprint report`,
//! `imprint export csv`, their JSON, the PDF ([`crate::pdf`]) and the cloud
//! registration files ([`crate::cloud`]); local and central rows come
//! through the same query (`imprint_sync::report`).

use crate::{Actor, ApiError, ApiResult, CentralConfig, Permission, Store};
use imprint_proto::{Closed, FailureCode};
use imprint_store::AttemptStatus;
pub use imprint_sync::{GroupCount, ReportRow, SummaryCounts};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use ts_rs::TS;

/// What a report covers. Blank strings mean "any".
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct ReportFilter {
    /// Attempts started at or after: `2026-11-01` (midnight UTC), an RFC 3339
    /// time, or a relative `7d` / `12h` / `2w` (that long before now).
    pub since: Option<String>,
    /// Attempts started before: a date (that whole day included), an RFC 3339
    /// time, or a relative `1d`.
    pub until: Option<String>,
    /// Work order / batch.
    pub batch: Option<String>,
    pub station: Option<String>,
    pub operator: Option<String>,
    /// `passed`, `failed`, `interrupted`, `running`.
    pub status: Option<String>,
    /// The device's latest QA verdict: `pass`, `fail`, or `none` (not verified).
    pub qa_verdict: Option<String>,
    /// A failure code (`key_not_allowed`, `timeout`, ...).
    pub code: Option<String>,
    pub device_serial: Option<String>,
    /// Rows shown (the summary always covers every matching row); none: all.
    pub limit: Option<u32>,
    /// Rows skipped before the first shown.
    pub offset: Option<u32>,
}

fn blank(s: &Option<String>) -> Option<String> {
    s.as_ref().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// A time bound as stored (RFC 3339 UTC, milliseconds). `end`: a date means
/// the end of that day (the next midnight), so `--until 2026-11-30` includes it.
pub fn parse_time(flag: &str, s: &str, end: bool, now: time::OffsetDateTime) -> ApiResult<String> {
    use time::format_description::well_known::Rfc3339;
    let s = s.trim();
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(imprint_store::ts(t));
    }
    let date_fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(s, &date_fmt) {
        let d = if end { d.next_day().unwrap_or(d) } else { d };
        return Ok(imprint_store::ts(d.midnight().assume_utc()));
    }
    let relative = s.len() >= 2 && s.is_ascii() && s[..s.len() - 1].bytes().all(|b| b.is_ascii_digit());
    if relative {
        if let Ok(n) = s[..s.len() - 1].parse::<i64>() {
            let unit = match &s[s.len() - 1..] {
                "h" => Some(time::Duration::hours(n)),
                "d" => Some(time::Duration::days(n)),
                "w" => Some(time::Duration::weeks(n)),
                _ => None,
            };
            if let Some(back) = unit.filter(|_| n <= 100_000) {
                return Ok(imprint_store::ts(now - back));
            }
        }
    }
    Err(ApiError::bad_request(format!(
        "{flag} {s:?} is not a date (2026-11-01), an RFC 3339 time (2026-11-01T08:00:00Z) or a relative time (7d, 12h, 2w)"
    )))
}

/// One value of a closed set, or a clear refusal that lists the set.
fn closed<T: Closed>(flag: &str, v: Option<String>) -> ApiResult<Option<String>> {
    match v {
        None => Ok(None),
        Some(s) => match T::parse(&s) {
            Some(x) => Ok(Some(x.as_str().to_string())),
            None => {
                let all: Vec<&str> = T::ALL.iter().map(|x| x.as_str()).collect();
                Err(ApiError::bad_request(format!("{flag} {s:?} is not one of: {}", all.join(", "))))
            }
        },
    }
}

impl ReportFilter {
    /// The checked query both databases run.
    pub fn query(&self, now: time::OffsetDateTime) -> ApiResult<imprint_sync::ReportQuery> {
        let since = blank(&self.since).map(|s| parse_time("--since", &s, false, now)).transpose()?;
        let until = blank(&self.until).map(|s| parse_time("--until", &s, true, now)).transpose()?;
        let qa_verdict = match blank(&self.qa_verdict).as_deref() {
            None => None,
            Some(v @ ("pass" | "fail" | "none")) => Some(v.to_string()),
            Some(v) => return Err(ApiError::bad_request(format!("--qa {v:?} is not one of: pass, fail, none"))),
        };
        Ok(imprint_sync::ReportQuery {
            since,
            until,
            station: blank(&self.station),
            batch: blank(&self.batch),
            operator: blank(&self.operator),
            status: closed::<AttemptStatus>("--status", blank(&self.status))?,
            code: closed::<FailureCode>("--code", blank(&self.code))?,
            device_serial: blank(&self.device_serial),
            qa_verdict,
            with_der: false,
            limit: None,
            offset: None,
        })
    }

    /// The filter in words, for headers ("all records" when empty).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("since", &self.since),
            ("until", &self.until),
            ("work order", &self.batch),
            ("station", &self.station),
            ("operator", &self.operator),
            ("status", &self.status),
            ("QA", &self.qa_verdict),
            ("code", &self.code),
            ("device", &self.device_serial),
        ] {
            if let Some(v) = blank(v) {
                parts.push(format!("{k} {v}"));
            }
        }
        if parts.is_empty() {
            "all records".into()
        } else {
            parts.join(", ")
        }
    }
}

/// One column of every report and export: its name and how a row gives it.
pub struct Column {
    pub name: &'static str,
    pub value: fn(&ReportRow) -> Value,
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}
fn o(v: &Option<String>) -> Value {
    v.as_deref().map(s).unwrap_or(Value::Null)
}

/// Whether a certificate's issuer is a development CA (its name says DEVELOPMENT).
pub fn is_dev_ca(issuer: &str) -> bool {
    issuer.contains(imprint_core::ca::DEVELOPMENT_MARKER)
}

/// The one column set: CSV header and cells, JSON keys, the PDF's device list.
pub const COLUMNS: &[Column] = &[
    Column { name: "station_id", value: |r| s(&r.station_id) },
    Column { name: "attempt_id", value: |r| s(&r.attempt_id) },
    Column { name: "started_at", value: |r| s(&r.started_at) },
    Column { name: "finished_at", value: |r| o(&r.finished_at) },
    Column { name: "port", value: |r| s(&r.port) },
    Column { name: "status", value: |r| s(&r.status) },
    Column { name: "stage", value: |r| o(&r.stage) },
    Column { name: "code", value: |r| o(&r.code) },
    Column { name: "reason", value: |r| o(&r.reason) },
    Column { name: "device_serial", value: |r| o(&r.device_serial) },
    Column { name: "model", value: |r| o(&r.model) },
    Column { name: "hw_rev", value: |r| o(&r.hw_rev) },
    Column { name: "fw_version", value: |r| o(&r.fw_version) },
    Column { name: "batch", value: |r| o(&r.batch) },
    Column { name: "operator", value: |r| o(&r.operator) },
    Column { name: "resumed", value: |r| Value::Bool(r.resumed) },
    Column { name: "cert_serial", value: |r| o(&r.cert_serial) },
    Column { name: "cert_status", value: |r| o(&r.cert_status) },
    Column { name: "issuer", value: |r| o(&r.issuer) },
    Column { name: "dev_ca", value: |r| r.issuer.as_deref().map(|i| Value::Bool(is_dev_ca(i))).unwrap_or(Value::Null) },
    Column { name: "not_before", value: |r| o(&r.not_before) },
    Column { name: "not_after", value: |r| o(&r.not_after) },
    Column { name: "fingerprint_sha256", value: |r| o(&r.fingerprint_sha256) },
    Column { name: "spki_sha256", value: |r| o(&r.spki_sha256) },
    Column { name: "qa_verdict", value: |r| o(&r.qa_verdict) },
];

/// Column names in order.
pub fn column_names() -> Vec<&'static str> {
    COLUMNS.iter().map(|c| c.name).collect()
}

/// A row as a JSON object keyed by column name.
pub fn row_json(r: &ReportRow) -> serde_json::Map<String, Value> {
    COLUMNS.iter().map(|c| (c.name.to_string(), (c.value)(r))).collect()
}

/// A cell's text (CSV, PDF): null is empty.
pub fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A spreadsheet must never run a cell as a formula (OWASP CSV injection):
/// a cell starting with = + - @ TAB or CR gets a leading '.
pub fn csv_cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

/// A CSV being written (RFC 4180 by the `csv` crate): the header at once,
/// then a row at a time, cells neutralised against formulas.
pub struct CsvOut<W: std::io::Write> {
    out: csv::Writer<W>,
    rows: usize,
}

fn csv_io(e: csv::Error) -> ApiError {
    ApiError::io("writing the CSV", e)
}

impl<W: std::io::Write> CsvOut<W> {
    pub fn new(w: W) -> ApiResult<Self> {
        let mut out = csv::Writer::from_writer(w);
        out.write_record(column_names()).map_err(csv_io)?;
        Ok(CsvOut { out, rows: 0 })
    }

    pub fn row(&mut self, r: &ReportRow) -> ApiResult<()> {
        self.out.write_record(COLUMNS.iter().map(|c| csv_cell(&cell_text(&(c.value)(r))))).map_err(csv_io)?;
        self.rows += 1;
        Ok(())
    }

    /// Flush; the rows written.
    pub fn finish(mut self) -> ApiResult<usize> {
        self.out.flush().map_err(|e| ApiError::io("writing the CSV", e))?;
        Ok(self.rows)
    }
}

/// Rows as CSV: the header, then each row.
pub fn write_csv(rows: &[ReportRow], w: impl std::io::Write) -> ApiResult<usize> {
    let mut out = CsvOut::new(w)?;
    for r in rows {
        out.row(r)?;
    }
    out.finish()
}

/// Where the rows come from.
pub enum Source<'a> {
    /// This station's store (`station_id`: its id).
    Local { store: &'a Store, station_id: &'a str },
    /// The central database, as far as the login role may read.
    Central(&'a CentralConfig),
}

impl Source<'_> {
    fn words(&self) -> String {
        match self {
            Source::Local { station_id, .. } => format!("station {station_id} (local store)"),
            Source::Central(_) => "central database".into(),
        }
    }
}

/// Every row matching the filter, newest first (no cap: the caller pages).
pub fn rows(actor: &Actor, source: &Source<'_>, q: &imprint_sync::ReportQuery) -> ApiResult<Vec<ReportRow>> {
    actor.require(Permission::Report)?;
    match source {
        Source::Local { store, station_id } => Ok(imprint_sync::local_rows(store, station_id, q)?),
        Source::Central(c) => {
            let opts = c.connect_options()?;
            Ok(crate::central::runtime()?.block_on(imprint_sync::central_rows(&opts, q))?)
        }
    }
}

/// A report or export read from this station's store is an `export` entry
/// of its audit trail (what, how many rows, by whom); the center keeps its own.
fn audit_export(actor: &Actor, source: &Source<'_>, format: &str, rows: u64) {
    if let Source::Local { store, .. } = source {
        crate::audit::record(
            store,
            Some(actor.id()),
            crate::audit::AuditKind::Export,
            None,
            serde_json::json!({"format": format, "rows": rows}),
        );
    }
}

/// A report: header facts, one page of rows, the total and the summary over all of them.
#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct Report {
    pub generated_at: String,
    /// "station st-1 (local store)" or "central database".
    pub source: String,
    pub filter: ReportFilter,
    /// The filter in words.
    pub filter_words: String,
    /// Rows matching the filter.
    pub total: u32,
    /// Index of the first row shown.
    pub offset: u32,
    pub columns: Vec<&'static str>,
    /// The rows shown (all, unless the filter has a limit), keyed by column.
    #[ts(type = "Array<Record<string, string | boolean | null>>")]
    pub rows: Vec<serde_json::Map<String, Value>>,
    pub summary: Summary,
    /// The rows shown, for CSV/PDF (every matching row unless the filter has a limit).
    #[serde(skip)]
    #[ts(skip)]
    pub shown: Vec<ReportRow>,
}

impl Report {
    /// The rows shown: `offset..offset+limit` of every matching row, newest first.
    pub fn page(&self) -> &[ReportRow] {
        &self.shown
    }
}

/// The summary's counts over every row of `q` and the rows of `q`'s page,
/// from either source: the database counts (GROUP BY), only the counts and
/// the page cross (`imprint_sync::local_report` / `central_report`: one
/// query text per dialect, the same for both).
pub fn counts_and_page(
    actor: &Actor,
    source: &Source<'_>,
    q: &imprint_sync::ReportQuery,
) -> ApiResult<(imprint_sync::SummaryCounts, Vec<ReportRow>)> {
    actor.require(Permission::Report)?;
    match source {
        Source::Local { store, station_id } => Ok(imprint_sync::local_report(store, station_id, q)?),
        Source::Central(c) => {
            let opts = c.connect_options()?;
            Ok(crate::central::runtime()?.block_on(imprint_sync::central_report(&opts, q))?)
        }
    }
}

/// The report for a filter, from either source; `qa` is the sampling plan
/// (QA coverage), when the station has one.
pub fn report(
    actor: &Actor,
    source: &Source<'_>,
    filter: &ReportFilter,
    qa: Option<&imprint_station::config::QaConfig>,
) -> ApiResult<Report> {
    let now = time::OffsetDateTime::now_utc();
    let mut q = filter.query(now)?;
    q.limit = filter.limit;
    q.offset = filter.offset;
    let (counts, shown) = counts_and_page(actor, source, &q)?;
    audit_export(actor, source, "report", counts.attempts);
    let mut summary = Summary::from_counts(&counts, qa);
    summary.overproduction = overproduction(source, &counts.batches)?;
    Ok(Report {
        generated_at: imprint_store::ts(now),
        source: source.words(),
        filter_words: filter.describe(),
        filter: filter.clone(),
        total: clamp_u64(counts.attempts),
        offset: filter.offset.unwrap_or(0),
        columns: column_names(),
        rows: shown.iter().map(row_json).collect(),
        summary,
        shown,
    })
}

fn clamp_u64(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn clamp(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// The work orders of a report's rows (`batches`) that have more
/// certificates than their quantity, counted over all their attempts (the
/// same count as Health's overproduction item on a station; at the center,
/// over every station's records the role may read).
pub fn overproduction(source: &Source<'_>, batches: &[String]) -> ApiResult<Vec<Overproduction>> {
    let batches: BTreeSet<String> = batches.iter().cloned().collect();
    if batches.is_empty() {
        return Ok(Vec::new());
    }
    let found: Vec<(String, i64, i64)> = match source {
        Source::Local { store, .. } => store
            .work_orders()?
            .into_iter()
            .filter(|w| batches.contains(&w.id) && w.certified > w.quantity)
            .map(|w| (w.id, w.quantity, w.certified))
            .collect(),
        Source::Central(c) => {
            let opts = c.connect_options()?;
            let ids: Vec<String> = batches.into_iter().collect();
            crate::central::runtime()?.block_on(imprint_sync::work_orders::overproduced(&opts, &ids))?
        }
    };
    Ok(found.into_iter().map(|(id, q, c)| Overproduction { work_order: id, quantity: clamp(q), certificates: clamp(c) }).collect())
}

/// One line of the failure Pareto: failed attempts by stage and code, most first.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct ParetoRow {
    pub stage: String,
    pub code: String,
    pub count: u32,
    /// Share of all failed attempts, percent.
    pub percent: f64,
    /// Running total of the shares, percent.
    pub cumulative: f64,
}

/// Attempts and passes in one group (an hour, a station, an operator).
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct Throughput {
    pub key: String,
    pub attempts: u32,
    pub passed: u32,
    pub failed: u32,
}

/// QA coverage of one work order against the sampling plan.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct QaCoverage {
    /// None: attempts without a work order.
    pub batch: Option<String>,
    /// Devices provisioned (with a passed attempt).
    pub provisioned: u32,
    /// Of those, devices with a QA verdict.
    pub verified: u32,
    /// Verifications the plan asks for (None: no plan configured).
    pub required: Option<u32>,
    /// The plan in words, or why there is none.
    pub plan: String,
    /// `verified >= required`.
    pub met: Option<bool>,
}

/// A work order with more certificates than its quantity (a restored
/// backup, a tampered store, a station that issued past its lease).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct Overproduction {
    pub work_order: String,
    pub quantity: u32,
    /// Certificates recorded for its attempts (all of them, not only the filter's).
    pub certificates: u32,
}

/// What a supervisor reads first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct Summary {
    pub attempts: u32,
    /// Distinct devices (by serial) attempted.
    pub devices: u32,
    /// Devices with a passed attempt.
    pub passed: u32,
    /// Devices attempted that have no passed attempt (failed or interrupted).
    pub failed: u32,
    /// Devices whose only attempts are still running.
    pub running: u32,
    /// Attempts that ended before the device said its serial.
    pub attempts_without_serial: u32,
    /// Devices whose first attempt passed, percent of devices (None: no device).
    pub first_pass_yield: Option<f64>,
    /// Devices passed, percent of devices.
    pub final_yield: Option<f64>,
    pub pareto: Vec<ParetoRow>,
    /// Per hour (UTC, `2026-11-30T08`), oldest first.
    pub per_hour: Vec<Throughput>,
    pub per_station: Vec<Throughput>,
    pub per_operator: Vec<Throughput>,
    pub qa: Vec<QaCoverage>,
    /// Certificates (distinct) issued in these attempts.
    pub certificates: u32,
    pub revoked: u32,
    /// Certificates of a device that later got another one.
    pub superseded: u32,
    /// Certificates issued by a development CA.
    pub dev_ca: u32,
    /// Work orders of these attempts with more certificates than their quantity: shown loudly.
    pub overproduction: Vec<Overproduction>,
}

fn pct(n: u32, of: u32) -> Option<f64> {
    (of > 0).then(|| (n as f64 * 1000.0 / of as f64).round() / 10.0)
}

fn group(rows: &[ReportRow], key: impl Fn(&ReportRow) -> String) -> Vec<GroupCount> {
    let mut m: BTreeMap<String, GroupCount> = BTreeMap::new();
    for r in rows {
        let k = key(r);
        let t = m.entry(k.clone()).or_insert(GroupCount { key: k, ..Default::default() });
        t.attempts += 1;
        match r.status.as_str() {
            "passed" => t.passed += 1,
            "failed" | "interrupted" => t.failed += 1,
            _ => {}
        }
    }
    m.into_values().collect()
}

/// Certificates superseded: every certificate of a device but its newest.
pub fn superseded(rows: &[ReportRow]) -> BTreeSet<(String, String)> {
    let mut per_device: HashMap<&str, Vec<(&str, &str, &str)>> = HashMap::new();
    for r in rows {
        if let (Some(d), Some(c), Some(i)) = (&r.device_serial, &r.cert_serial, &r.issuer) {
            per_device.entry(d).or_default().push((&r.started_at, i, c));
        }
    }
    let mut out = BTreeSet::new();
    for (_, mut certs) in per_device {
        certs.sort();
        certs.dedup_by(|a, b| a.1 == b.1 && a.2 == b.2);
        let newest = certs.last().map(|c| (c.1, c.2));
        for c in &certs {
            if Some((c.1, c.2)) != newest {
                out.insert((c.1.to_string(), c.2.to_string()));
            }
        }
    }
    out
}

/// The summary's counts of rows already in memory (newest first, as the
/// query returns them), counted here one row at a time: the definition the
/// database's GROUP BY counts ([`imprint_sync::summary_sql`]) are tested
/// against (`the_summary_counted_in_sql_is_the_summary_counted_row_by_row`).
pub fn counts_of(rows: &[ReportRow]) -> SummaryCounts {
    let mut s = SummaryCounts { attempts: rows.len() as u64, ..Default::default() };
    // Per device, oldest attempt first.
    let mut devices: BTreeMap<&str, Vec<&ReportRow>> = BTreeMap::new();
    for r in rows.iter().rev() {
        match &r.device_serial {
            Some(d) => devices.entry(d).or_default().push(r),
            None => s.attempts_without_serial += 1,
        }
    }
    for attempts in devices.values() {
        if attempts.iter().any(|a| a.status == "passed") {
            s.devices_passed += 1;
        } else if attempts.iter().all(|a| a.status == "running") {
            s.devices_running += 1;
        }
        if attempts.first().is_some_and(|a| a.status == "passed") {
            s.devices_first_passed += 1;
        }
    }
    s.devices = devices.len() as u64;

    let mut pareto: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.status == "failed" || r.status == "interrupted") {
        let k = (r.stage.clone().unwrap_or_else(|| "-".into()), r.code.clone().unwrap_or_else(|| r.status.clone()));
        *pareto.entry(k).or_default() += 1;
    }
    s.pareto = pareto.into_iter().map(|((stage, code), n)| (stage, code, n)).collect();

    s.per_hour = group(rows, |r| r.started_at.get(..13).unwrap_or(&r.started_at).to_string());
    s.per_station = group(rows, |r| r.station_id.clone());
    s.per_operator = group(rows, |r| r.operator.clone().unwrap_or_else(|| "-".into()));

    // QA coverage per work order.
    let mut batches: BTreeMap<Option<String>, (BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.status == "passed") {
        if let Some(d) = &r.device_serial {
            let e = batches.entry(r.batch.clone()).or_default();
            e.0.insert(d);
            if r.qa_verdict.is_some() {
                e.1.insert(d);
            }
        }
    }
    s.qa = batches.into_iter().map(|(batch, (prov, ver))| (batch, prov.len() as u64, ver.len() as u64)).collect();

    let mut certs: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut issuers: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for r in rows {
        if let (Some(i), Some(c)) = (&r.issuer, &r.cert_serial) {
            if certs.insert((i, c)) {
                let e = issuers.entry(i).or_default();
                e.0 += 1;
                if r.cert_status.as_deref() == Some("revoked") {
                    e.1 += 1;
                }
            }
        }
    }
    s.issuers = issuers.into_iter().map(|(i, (n, revoked))| (i.to_string(), n, revoked)).collect();
    s.superseded = superseded(rows).len() as u64;
    s.batches = rows.iter().filter_map(|r| r.batch.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    s
}

/// The summary of rows already in memory (newest first, as queried):
/// [`counts_of`] then [`Summary::from_counts`]. Reports count in the
/// database instead ([`report`]); this is their reference.
pub fn summarize(rows: &[ReportRow], qa: Option<&imprint_station::config::QaConfig>) -> Summary {
    Summary::from_counts(&counts_of(rows), qa)
}

fn throughput(groups: &[GroupCount]) -> Vec<Throughput> {
    let mut v: Vec<Throughput> = groups
        .iter()
        .map(|g| Throughput {
            key: g.key.clone(),
            attempts: clamp_u64(g.attempts),
            passed: clamp_u64(g.passed),
            failed: clamp_u64(g.failed),
        })
        .collect();
    v.sort_by(|a, b| a.key.cmp(&b.key));
    v
}

impl Summary {
    /// The summary from its counts (however they were counted, in any
    /// order): ordered, with yields, shares and the QA plan's requirement.
    /// `overproduction` is left empty (the caller asks the source).
    pub fn from_counts(c: &SummaryCounts, qa: Option<&imprint_station::config::QaConfig>) -> Summary {
        let devices = clamp_u64(c.devices);
        let passed = clamp_u64(c.devices_passed);
        let running = clamp_u64(c.devices_running);
        let mut s = Summary {
            attempts: clamp_u64(c.attempts),
            devices,
            passed,
            failed: devices.saturating_sub(passed).saturating_sub(running),
            running,
            attempts_without_serial: clamp_u64(c.attempts_without_serial),
            first_pass_yield: pct(clamp_u64(c.devices_first_passed), devices),
            final_yield: pct(passed, devices),
            ..Default::default()
        };

        let mut pareto: Vec<(&str, &str, u32)> = c.pareto.iter().map(|(st, co, n)| (st.as_str(), co.as_str(), clamp_u64(*n))).collect();
        pareto.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)).then(a.1.cmp(b.1)));
        let failures: u32 = pareto.iter().map(|p| p.2).sum();
        let mut cum = 0;
        s.pareto = pareto
            .into_iter()
            .map(|(stage, code, count)| {
                cum += count;
                ParetoRow {
                    stage: stage.to_string(),
                    code: code.to_string(),
                    count,
                    percent: pct(count, failures).unwrap_or(0.0),
                    cumulative: pct(cum, failures).unwrap_or(0.0),
                }
            })
            .collect();

        s.per_hour = throughput(&c.per_hour);
        s.per_station = throughput(&c.per_station);
        s.per_operator = throughput(&c.per_operator);

        let mut batches: Vec<&(Option<String>, u64, u64)> = c.qa.iter().collect();
        batches.sort_by(|a, b| a.0.cmp(&b.0));
        s.qa = batches
            .into_iter()
            .map(|(batch, prov, ver)| {
                let provisioned = clamp_u64(*prov);
                let verified = clamp_u64(*ver);
                let plan = qa.map(|c| crate::qa::required(c, provisioned));
                let (required, plan) = match plan {
                    Some(Ok((n, words))) => (Some(n), words),
                    Some(Err(e)) => (None, e.message),
                    None => (None, "no sampling plan".into()),
                };
                QaCoverage { batch: batch.clone(), provisioned, verified, required, plan, met: required.map(|n| verified >= n) }
            })
            .collect();

        for (issuer, n, revoked) in &c.issuers {
            s.certificates += clamp_u64(*n);
            s.revoked += clamp_u64(*revoked);
            if is_dev_ca(issuer) {
                s.dev_ca += clamp_u64(*n);
            }
        }
        s.superseded = clamp_u64(c.superseded);
        s
    }
}

/// The title of the overproduction table (first, when there is one; the PDF draws it red).
pub const OVERPRODUCTION_TITLE: &str = "OVERPRODUCTION: more certificates than the work order's quantity";

/// A table of text: what the CLI prints and the PDF draws.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextTable {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

fn opt_pct(v: Option<f64>) -> String {
    v.map(|p| format!("{p:.1}%")).unwrap_or_else(|| "-".into())
}

fn throughput_table(title: &str, what: &str, t: &[Throughput]) -> TextTable {
    let mut rows: Vec<Vec<String>> = t
        .iter()
        .map(|t| {
            vec![t.key.clone(), t.attempts.to_string(), t.passed.to_string(), t.failed.to_string(), opt_pct(pct(t.passed, t.attempts))]
        })
        .collect();
    let (a, p, f) = t.iter().fold((0, 0, 0), |(a, p, f), t| (a + t.attempts, p + t.passed, f + t.failed));
    rows.push(vec!["total".into(), a.to_string(), p.to_string(), f.to_string(), opt_pct(pct(p, a))]);
    TextTable {
        title: title.into(),
        header: [what, "attempts", "passed", "failed", "pass rate"].iter().map(|s| s.to_string()).collect(),
        rows,
    }
}

impl Summary {
    /// The summary as tables, each with a header row (and totals where they add up).
    pub fn tables(&self) -> Vec<TextTable> {
        let kv = |k: &str, v: String| vec![k.to_string(), v];
        let mut out = Vec::new();
        if !self.overproduction.is_empty() {
            out.push(TextTable {
                title: OVERPRODUCTION_TITLE.into(),
                header: ["work order", "quantity", "certificates", "over by"].iter().map(|s| s.to_string()).collect(),
                rows: self
                    .overproduction
                    .iter()
                    .map(|o| {
                        vec![
                            o.work_order.clone(),
                            o.quantity.to_string(),
                            o.certificates.to_string(),
                            o.certificates.saturating_sub(o.quantity).to_string(),
                        ]
                    })
                    .collect(),
            });
        }
        out.push(TextTable {
            title: "Summary".into(),
            header: vec!["measure".into(), "value".into()],
            rows: vec![
                kv("attempts", self.attempts.to_string()),
                kv("devices attempted", self.devices.to_string()),
                kv("devices passed", self.passed.to_string()),
                kv("devices failed", self.failed.to_string()),
                kv("devices still running", self.running.to_string()),
                kv("attempts without a serial", self.attempts_without_serial.to_string()),
                kv("first-pass yield", opt_pct(self.first_pass_yield)),
                kv("final yield", opt_pct(self.final_yield)),
                kv("certificates", self.certificates.to_string()),
                kv("revoked", self.revoked.to_string()),
                kv("superseded", self.superseded.to_string()),
                kv("development CA certificates", self.dev_ca.to_string()),
                kv("overproduced work orders", self.overproduction.len().to_string()),
            ],
        });
        let mut pareto: Vec<Vec<String>> = self
            .pareto
            .iter()
            .map(|p| {
                vec![p.stage.clone(), p.code.clone(), p.count.to_string(), format!("{:.1}%", p.percent), format!("{:.1}%", p.cumulative)]
            })
            .collect();
        let failed: u32 = self.pareto.iter().map(|p| p.count).sum();
        pareto.push(vec![
            "total".into(),
            String::new(),
            failed.to_string(),
            if failed > 0 { "100.0%".into() } else { "-".into() },
            String::new(),
        ]);
        out.push(TextTable {
            title: "Failures by stage and code (Pareto)".into(),
            header: ["stage", "code", "count", "share", "cumulative"].iter().map(|s| s.to_string()).collect(),
            rows: pareto,
        });
        out.push(throughput_table("Throughput per hour (UTC)", "hour", &self.per_hour));
        out.push(throughput_table("Per station", "station", &self.per_station));
        out.push(throughput_table("Per operator", "operator", &self.per_operator));
        let mut qa: Vec<Vec<String>> = self
            .qa
            .iter()
            .map(|q| {
                vec![
                    q.batch.clone().unwrap_or_else(|| "(none)".into()),
                    q.provisioned.to_string(),
                    q.verified.to_string(),
                    q.required.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                    match q.met {
                        Some(true) => "met".into(),
                        Some(false) => "NOT MET".into(),
                        None => "-".into(),
                    },
                    q.plan.clone(),
                ]
            })
            .collect();
        let (p, v) = self.qa.iter().fold((0, 0), |(p, v), q| (p + q.provisioned, v + q.verified));
        let r: Option<u32> = self.qa.iter().map(|q| q.required).sum();
        qa.push(vec![
            "total".into(),
            p.to_string(),
            v.to_string(),
            r.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            String::new(),
            String::new(),
        ]);
        out.push(TextTable {
            title: "QA coverage against the sampling plan".into(),
            header: ["work order", "provisioned", "verified", "required", "coverage", "plan"].iter().map(|s| s.to_string()).collect(),
            rows: qa,
        });
        out
    }
}

/// A table as aligned text lines (header first).
pub fn table_lines(t: &TextTable) -> Vec<String> {
    let n = t.header.len();
    let mut w = vec![0usize; n];
    for row in std::iter::once(&t.header).chain(&t.rows) {
        for (i, c) in row.iter().enumerate().take(n) {
            w[i] = w[i].max(c.chars().count());
        }
    }
    std::iter::once(&t.header)
        .chain(&t.rows)
        .map(|row| {
            let cells: Vec<String> = row.iter().enumerate().map(|(i, c)| format!("{c:<width$}", width = w[i.min(n - 1)])).collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect()
}

/// Write the CSV of a filter's rows (the page, when it has a limit) as they
/// are read, one row in memory at a time whatever the filter matches (a
/// station's store read on a connection of its own, the center's rows as
/// PostgreSQL sends them; docs/reports.md); returns the count.
pub fn export_csv(actor: &Actor, source: &Source<'_>, filter: &ReportFilter, w: impl std::io::Write) -> ApiResult<usize> {
    actor.require(Permission::Report)?;
    let mut q = filter.query(time::OffsetDateTime::now_utc())?;
    q.limit = filter.limit;
    q.offset = filter.offset;
    let mut out = CsvOut::new(w)?;
    let write = |r: ReportRow| out.row(&r);
    match source {
        Source::Local { store, station_id } => imprint_sync::local_rows_each(store, station_id, &q, write)?,
        Source::Central(c) => {
            let opts = c.connect_options()?;
            crate::central::runtime()?.block_on(imprint_sync::central_rows_each(&opts, &q, write))?
        }
    };
    let n = out.finish()?;
    audit_export(actor, source, "csv", n as u64);
    Ok(n)
}

/// [`export_csv`] into a file, 0600, whole or not at all: the rows go to a
/// temporary file beside it, renamed into place once every row is written
/// and synced. A read that fails part way (the center gone mid-export)
/// leaves no truncated CSV where a complete one is expected, and an earlier
/// file of that name as it was.
pub fn export_csv_file(actor: &Actor, source: &Source<'_>, filter: &ReportFilter, path: &std::path::Path) -> ApiResult<usize> {
    imprint_station::fsutil::replace_private_file(path, |p, e| ApiError::io(p.display(), e), |w| export_csv(actor, source, filter, w))
}

/// What the app's Export writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, TS)]
#[serde(rename_all = "lowercase")]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub enum ReportFormat {
    Csv,
    Pdf,
}

/// Write a report to a file (0600) as CSV or PDF; returns the rows written.
pub fn export_file(
    actor: &Actor,
    source: &Source<'_>,
    filter: &ReportFilter,
    qa: Option<&imprint_station::config::QaConfig>,
    station: &str,
    format: ReportFormat,
    path: &std::path::Path,
) -> ApiResult<u32> {
    match format {
        ReportFormat::Csv => Ok(clamp_u64(export_csv_file(actor, source, filter, path)? as u64)),
        ReportFormat::Pdf => {
            let r = report(actor, source, filter, qa)?;
            crate::pdf::write_report_pdf(&r, station, path)?;
            Ok(r.page().len() as u32)
        }
    }
}

/// A new export file readable by its owner only (0600; an existing file is replaced).
pub fn create_export_file(path: &std::path::Path) -> ApiResult<std::io::BufWriter<std::fs::File>> {
    let f = imprint_station::fsutil::create_private_file(path).map_err(|e| ApiError::io(path.display(), e))?;
    Ok(std::io::BufWriter::new(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> time::OffsetDateTime {
        time::macros::datetime!(2026-11-30 10:00 UTC)
    }

    #[test]
    fn since_and_until_take_a_date_a_time_or_a_relative_time_and_refuse_anything_else() {
        // Regression: `report --central --since 2026-11-01` (the README's own example) was refused,
        // and `--since yesterday` silently reported nothing.
        assert_eq!(parse_time("--since", "2026-11-01", false, now()).unwrap(), "2026-11-01T00:00:00.000Z");
        assert_eq!(parse_time("--until", "2026-11-01", true, now()).unwrap(), "2026-11-02T00:00:00.000Z");
        assert_eq!(parse_time("--since", "2026-11-01T08:30:00+01:00", false, now()).unwrap(), "2026-11-01T07:30:00.000Z");
        assert_eq!(parse_time("--since", "7d", false, now()).unwrap(), "2026-11-23T10:00:00.000Z");
        assert_eq!(parse_time("--since", "12h", false, now()).unwrap(), "2026-11-29T22:00:00.000Z");
        for bad in ["yesterday", "7x", "d", "-7d", "2026-13-01", "", "7 d"] {
            let e = parse_time("--since", bad, false, now()).unwrap_err();
            assert_eq!(e.code, crate::ErrorCode::BadRequest, "{bad}");
            assert!(e.message.contains("7d") && e.message.contains("2026-11-01"), "{}", e.message);
        }
    }

    #[test]
    fn a_status_code_or_verdict_outside_its_set_is_refused_by_name() {
        let f = |g: fn(&mut ReportFilter)| {
            let mut x = ReportFilter::default();
            g(&mut x);
            x.query(now())
        };
        assert!(f(|x| x.status = Some("passed".into())).is_ok());
        assert!(f(|x| x.code = Some("key_not_allowed".into())).is_ok());
        let e = f(|x| x.status = Some("pass".into())).unwrap_err();
        assert!(e.message.contains("passed, failed"), "{}", e.message);
        assert!(f(|x| x.code = Some("nope".into())).unwrap_err().message.contains("--code"));
        assert!(f(|x| x.qa_verdict = Some("ok".into())).unwrap_err().message.contains("pass, fail, none"));
    }

    #[test]
    fn a_cell_that_a_spreadsheet_would_run_is_quoted() {
        for bad in ["=HYPERLINK(\"x\")", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(csv_cell(bad), format!("'{bad}"));
        }
        assert_eq!(csv_cell("SN-1"), "SN-1");
    }

    fn row(serial: &str, at: &str, status: &str, code: Option<&str>) -> ReportRow {
        ReportRow {
            station_id: "st".into(),
            attempt_id: format!("{serial}-{at}"),
            started_at: format!("2026-11-30T{at}:00.000Z"),
            status: status.into(),
            stage: code.map(|_| "csr".into()),
            code: code.map(str::to_string),
            device_serial: Some(serial.into()),
            batch: Some("WO-1".into()),
            operator: Some("ann".into()),
            ..Default::default()
        }
    }

    #[test]
    fn yields_count_devices_first_pass_and_final_and_the_pareto_adds_up() {
        let mut rows = vec![
            row("A", "08:00", "passed", None),
            row("B", "08:10", "failed", Some("weak_key")),
            row("B", "08:20", "passed", None),
            row("C", "09:00", "failed", Some("weak_key")),
            row("D", "09:05", "failed", Some("timeout")),
        ];
        rows[0].cert_serial = Some("01".into());
        rows[0].issuer = Some("CN=Imprint DEVELOPMENT CA".into());
        rows[0].qa_verdict = Some("pass".into());
        rows.reverse(); // newest first, as queried
        let s = summarize(&rows, Some(&imprint_station::config::QaConfig { sample_every: Some(10), sample_count: None }));
        assert_eq!((s.attempts, s.devices, s.passed, s.failed), (5, 4, 2, 2));
        assert_eq!(s.first_pass_yield, Some(25.0));
        assert_eq!(s.final_yield, Some(50.0));
        assert_eq!(s.pareto[0].code, "weak_key");
        assert_eq!(s.pareto[0].count, 2);
        assert_eq!(s.pareto.last().map(|p| p.cumulative), Some(100.0));
        assert_eq!(s.per_hour.iter().map(|t| t.attempts).sum::<u32>(), 5);
        assert_eq!(
            s.qa,
            vec![QaCoverage {
                batch: Some("WO-1".into()),
                provisioned: 2,
                verified: 1,
                required: Some(1),
                plan: "every 10th device".into(),
                met: Some(true)
            }]
        );
        assert_eq!((s.certificates, s.dev_ca), (1, 1));
        let t = s.tables();
        assert!(t.iter().all(|t| !t.header.is_empty()));
        assert_eq!(t[1].rows.last().unwrap()[2], "3", "the Pareto's total row");
    }

    #[test]
    fn every_certificate_of_a_device_but_its_newest_is_superseded() {
        let mut a = row("A", "08:00", "passed", None);
        a.cert_serial = Some("01".into());
        a.issuer = Some("CN=CA".into());
        let mut b = row("A", "09:00", "passed", None);
        b.cert_serial = Some("02".into());
        b.issuer = Some("CN=CA".into());
        let sup = superseded(&[b, a]);
        assert_eq!(sup.into_iter().collect::<Vec<_>>(), vec![("CN=CA".to_string(), "01".to_string())]);
    }
}
