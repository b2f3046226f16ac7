//! Records: list (History, `imprint records list`), one record with its steps
//! and certificate (`records show`, the History detail pane). Each list is
//! one joined query, never a query per row (the CSV export: `reports`).

use crate::{Actor, ApiError, ApiResult, Permission};
use imprint_proto::Closed;
pub use imprint_proto::{DeviceState, FailureCode, Stage};
use imprint_store::{AttemptFilter, AttemptRow, CertRow, Recorded, Store};
pub use imprint_store::{AttemptStatus, CertStatus};
use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// A stored value of a closed set (a status, a stage, a failure code) as
/// the UI gets it: the value, or, for text this build does not know (a
/// database written by a newer build, or edited by hand), that text under
/// `unrecognized`, never passed off as a value. A known value is sent as its
/// text, so the wire form of every record this build wrote is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
#[serde(untagged)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub enum Stored<T> {
    Known(T),
    Unrecognized { unrecognized: String },
}

impl<T: Closed> Stored<T> {
    /// The text as stored.
    pub fn as_str(&self) -> &str {
        match self {
            Stored::Known(v) => v.as_str(),
            Stored::Unrecognized { unrecognized } => unrecognized,
        }
    }
    /// The value, when this build knows it.
    pub fn known(&self) -> Option<T> {
        match self {
            Stored::Known(v) => Some(*v),
            Stored::Unrecognized { .. } => None,
        }
    }
}

impl<T: Closed> From<Recorded<T>> for Stored<T> {
    fn from(r: Recorded<T>) -> Stored<T> {
        match r {
            Recorded::Known(v) => Stored::Known(v),
            Recorded::Unrecognized(s) => Stored::Unrecognized { unrecognized: s },
        }
    }
}

impl<T: Closed> std::fmt::Display for Stored<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Filters for a list of attempts; blank strings mean "any".
#[derive(Clone, Debug, Default, Deserialize, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct HistoryFilter {
    pub device_serial: Option<String>,
    pub status: Option<String>,
    pub batch: Option<String>,
    pub cert_serial: Option<String>,
    /// RFC 3339 time or a date (`2026-11-01`): attempts started at or after it.
    pub since: Option<String>,
    pub limit: Option<u32>,
    /// Attempts started by this operator.
    #[serde(default)]
    #[ts(optional)]
    pub operator: Option<String>,
}

/// One attempt as shown in a list.
#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/", rename = "AttemptDto")]
pub struct AttemptView {
    pub id: String,
    pub port: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: Stored<AttemptStatus>,
    pub stage: Option<Stored<Stage>>,
    pub code: Option<Stored<FailureCode>>,
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
    pub cert_serial: Option<String>,
    pub cert_status: Option<Stored<CertStatus>>,
    pub resumed: bool,
    /// Who started the attempt.
    pub operator: Option<String>,
}

/// A certificate as shown (never its key).
#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/", rename = "CertificateDto")]
pub struct CertificateView {
    pub serial_hex: String,
    pub status: Stored<CertStatus>,
    pub subject: String,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    pub fingerprint_sha256: String,
    pub pem: String,
    /// When it was revoked (status `revoked`), why (RFC 5280 reason) and by whom.
    pub revoked_at: Option<String>,
    pub revocation_reason: Option<String>,
    pub revoked_by: Option<String>,
}

#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/", rename = "StepDto")]
pub struct StepView {
    pub at: String,
    pub stage: Stored<Stage>,
    /// `started`, `completed`, `retry`, `info`, `console`, `failed`.
    pub kind: String,
    pub detail: String,
}

/// One attempt with every step and its certificate.
#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct RecordDetail {
    pub attempt: AttemptView,
    pub steps: Vec<StepView>,
    pub certificate: Option<CertificateView>,
    /// The device's QA verdicts, newest first.
    pub qa_verdicts: Vec<crate::qa::QaVerdictView>,
}

fn blank(s: &Option<String>) -> Option<String> {
    s.as_ref().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

impl HistoryFilter {
    fn to_store(&self, default_limit: u32) -> ApiResult<AttemptFilter> {
        let since = match blank(&self.since) {
            Some(s) => Some(normalize_since(&s)?),
            None => None,
        };
        Ok(AttemptFilter {
            device_serial: blank(&self.device_serial),
            status: blank(&self.status),
            batch: blank(&self.batch),
            cert_serial: blank(&self.cert_serial),
            since,
            limit: Some(self.limit.unwrap_or(default_limit).min(100_000)),
            operator: blank(&self.operator),
        })
    }
}

/// `since` as stored (RFC 3339 UTC): a full time, or a date meaning its midnight UTC.
pub fn normalize_since(s: &str) -> ApiResult<String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(imprint_store::ts(t));
    }
    let date_fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(s, &date_fmt) {
        return Ok(imprint_store::ts(d.midnight().assume_utc()));
    }
    Err(ApiError::bad_request(format!("{s:?} is neither a date (2026-11-01) nor an RFC 3339 time (2026-11-01T08:00:00Z)")))
}

/// A typed stored value as its stored text.
fn txt<T: std::fmt::Display>(v: &Option<T>) -> Option<String> {
    v.as_ref().map(|x| x.to_string())
}

fn view(a: AttemptRow, c: Option<&CertRow>) -> AttemptView {
    AttemptView {
        id: a.id,
        port: a.port,
        started_at: a.started_at.to_string(),
        finished_at: txt(&a.finished_at),
        status: a.status.into(),
        stage: a.stage.map(Stored::from),
        code: a.code.map(Stored::from),
        reason: a.reason,
        hint: a.hint,
        retryable: a.retryable,
        device_serial: a.device_serial,
        model: a.model,
        hw_rev: a.hw_rev,
        fw_version: a.fw_version,
        fw_hash: a.fw_hash,
        chip_uid: a.chip_uid,
        batch: a.batch,
        spki_sha256: a.spki_sha256,
        cert_serial: c.map(|c| c.serial_hex.clone()),
        cert_status: c.map(|c| c.status.clone().into()),
        resumed: a.resumed,
        operator: a.operator,
    }
}

fn certificate_view(c: &CertRow) -> Option<CertificateView> {
    let der = c.cert_der.as_ref()?;
    let s = imprint_core::issuance::summarize(der).ok()?;
    Some(CertificateView {
        serial_hex: c.serial_hex.clone(),
        status: c.status.clone().into(),
        subject: s.subject,
        issuer: s.issuer,
        not_before: imprint_store::ts(s.not_before),
        not_after: imprint_store::ts(s.not_after),
        fingerprint_sha256: s.fingerprint_sha256,
        pem: pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())),
        revoked_at: c.revoked_at.as_ref().map(|t| t.to_string()),
        revocation_reason: c.revocation_reason.clone(),
        revoked_by: c.revoked_by.clone(),
    })
}

/// Attempts, newest first (default limit 200).
pub fn list(actor: &Actor, store: &Store, filter: &HistoryFilter) -> ApiResult<Vec<AttemptView>> {
    actor.require(Permission::View)?;
    let rows = store.attempts_with_certs(&filter.to_store(200)?)?;
    Ok(rows.into_iter().map(|(a, c)| view(a, c.as_ref())).collect())
}

/// How many attempts match the filter (whatever its limit): "showing 50 of 1234".
pub fn count(actor: &Actor, store: &Store, filter: &HistoryFilter) -> ApiResult<u64> {
    actor.require(Permission::View)?;
    Ok(store.count_attempts(&filter.to_store(200)?)?)
}

/// One attempt by id, or the latest attempt of a device serial.
pub fn show(actor: &Actor, store: &Store, id_or_serial: &str) -> ApiResult<RecordDetail> {
    actor.require(Permission::View)?;
    let key = id_or_serial.trim();
    let attempt = match store.attempt(key)? {
        Some(a) => a,
        None => store
            .attempts(&AttemptFilter { device_serial: Some(key.to_string()), limit: Some(1), ..Default::default() })?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::not_found(format!("no attempt and no device serial {key:?} in the local store")))?,
    };
    let steps = store.steps(&attempt.id)?;
    let cert = match &attempt.certificate_id {
        Some(c) => store.cert_by_id(c)?,
        None => None,
    };
    let qa_verdicts = match &attempt.device_serial {
        Some(serial) => store
            .qa_verdicts(&imprint_store::QaFilter { device_serial: Some(serial.clone()), limit: Some(50), ..Default::default() })?
            .into_iter()
            .map(crate::qa::QaVerdictView::from)
            .collect(),
        None => Vec::new(),
    };
    Ok(RecordDetail {
        qa_verdicts,
        certificate: cert.as_ref().and_then(certificate_view),
        attempt: view(attempt, cert.as_ref()),
        steps: steps
            .into_iter()
            .map(|s| StepView { at: s.at, stage: Recorded::from_text(s.stage).into(), kind: s.kind, detail: s.detail })
            .collect(),
    })
}

/// Certificates in the local store.
pub fn certificates(actor: &Actor, store: &Store) -> ApiResult<Vec<CertRow>> {
    actor.require(Permission::View)?;
    Ok(store.certificates()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_date_or_a_time() {
        // Regression: `report --since 2026-11-01` (the README's own example) was refused.
        assert_eq!(normalize_since("2026-11-01").unwrap(), "2026-11-01T00:00:00.000Z");
        assert_eq!(normalize_since("2026-11-01T08:30:00+01:00").unwrap(), "2026-11-01T07:30:00.000Z");
        let e = normalize_since("yesterday").unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::BadRequest);
    }

    /// A time edited by hand in one record (here SQLite's own spelling, and
    /// a word) failed the whole read: History showed an error instead of
    /// any record, and the CSV export stopped. Each record is listed, the
    /// edited one with the text as found.
    #[test]
    fn a_hand_edited_time_in_one_record_does_not_hide_the_others_from_history_or_the_export() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("station.db")).unwrap();
        let a = store.begin_attempt("p0", None).unwrap();
        let b = store.begin_attempt("p1", None).unwrap();
        let cert = imprint_store::new_id();
        store
            .journal_intent(&imprint_store::Intent {
                id: cert.clone(),
                attempt_id: b.clone(),
                device_serial: "SN-1".into(),
                issuer: "CN=CA".into(),
                serial_hex: "01".into(),
                spki_sha256: "k".into(),
                spki_der: vec![1],
                not_before: imprint_store::Timestamp::now(),
                not_after: imprint_store::Timestamp::now(),
            })
            .unwrap();
        let sql = format!(
            "UPDATE attempts SET started_at = '2026-11-30 05:00:00' WHERE id = '{a}'; UPDATE certificates SET not_after = 'soon' WHERE id = '{cert}'"
        );
        store.write(move |t| Ok(t.execute_batch(&sql)?)).unwrap();
        let rows = list(&crate::auth::Actor::for_test(crate::Role::Admin), &store, &HistoryFilter::default()).unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows.iter().any(|r| r.id == a && r.started_at == "2026-11-30 05:00:00"), "{rows:?}");
        assert!(rows.iter().any(|r| r.id == b && r.cert_serial.as_deref() == Some("01")), "{rows:?}");
        let mut csv = Vec::new();
        let local = crate::reports::Source::Local { store: &store, station_id: "st" };
        let me = crate::auth::Actor::for_test(crate::Role::Admin);
        assert_eq!(crate::reports::export_csv(&me, &local, &crate::reports::ReportFilter::default(), &mut csv).unwrap(), 2);
        let csv = String::from_utf8(csv).unwrap();
        assert!(csv.contains("2026-11-30 05:00:00") && csv.contains(",soon,"), "{csv}");
    }
}
