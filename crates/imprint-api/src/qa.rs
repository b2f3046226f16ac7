//! QA verification (docs/lifecycle.md, "QA verification"): verify the device
//! on a port (writing nothing to it) and record the verdict; list verdicts;
//! the sampling plan (`[qa] sample_every` / `sample_count`): how many
//! verifications are still due per work order.

use crate::{Actor, ApiError, ApiResult, ErrorCode, Permission};
use imprint_proto::Closed;
use imprint_station::qa::{QaError, QaOutcome};
use imprint_station::{Station, StationConfig};
use imprint_store::{QaFilter, QaVerdictRow, Store};
use serde::Serialize;
use ts_rs::TS;

/// How one check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub enum QaCheckResult {
    Pass,
    Fail,
    /// Not applicable here; does not fail the verdict.
    Skipped,
    /// The center could not be asked: not a pass, so the verdict is no pass.
    Unreachable,
    /// Text a newer build wrote.
    Unrecognized,
}

/// Which check (`imprint_core::qa::QaCheck`, as stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub enum QaCheckName {
    Chain,
    Validity,
    Profile,
    StoreRecord,
    CenterRecord,
    ProofOfPossession,
    Lock,
    Revocation,
    MqttConnect,
    /// Text a newer build wrote.
    Unrecognized,
}

impl QaCheckName {
    fn of(text: &str) -> QaCheckName {
        use imprint_core::qa::QaCheck as C;
        match <C as Closed>::parse(text) {
            Some(C::Chain) => QaCheckName::Chain,
            Some(C::Validity) => QaCheckName::Validity,
            Some(C::Profile) => QaCheckName::Profile,
            Some(C::StoreRecord) => QaCheckName::StoreRecord,
            Some(C::CenterRecord) => QaCheckName::CenterRecord,
            Some(C::ProofOfPossession) => QaCheckName::ProofOfPossession,
            Some(C::Lock) => QaCheckName::Lock,
            Some(C::Revocation) => QaCheckName::Revocation,
            Some(C::MqttConnect) => QaCheckName::MqttConnect,
            None => QaCheckName::Unrecognized,
        }
    }
}

/// One named check of a verdict.
#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct QaCheckView {
    pub check: QaCheckName,
    /// The stored name (as `check`, or a newer build's text).
    pub check_text: String,
    pub result: QaCheckResult,
    /// What the check found, in words.
    pub detail: String,
}

/// A recorded QA verdict.
#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct QaVerdictView {
    pub id: String,
    pub at: String,
    pub operator: Option<String>,
    pub port: String,
    pub device_serial: String,
    pub cert_serial: Option<String>,
    pub batch: Option<String>,
    pub passed: bool,
    pub checks: Vec<QaCheckView>,
}

impl From<QaVerdictRow> for QaVerdictView {
    fn from(r: QaVerdictRow) -> Self {
        let checks: Vec<serde_json::Value> = serde_json::from_str(&r.checks).unwrap_or_default();
        let text = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_string();
        QaVerdictView {
            passed: r.verdict == "pass",
            checks: checks
                .iter()
                .map(|c| QaCheckView {
                    check: QaCheckName::of(&text(c, "check")),
                    check_text: text(c, "check"),
                    result: match <imprint_core::qa::CheckResult as Closed>::parse(&text(c, "result")) {
                        Some(imprint_core::qa::CheckResult::Pass) => QaCheckResult::Pass,
                        Some(imprint_core::qa::CheckResult::Fail) => QaCheckResult::Fail,
                        Some(imprint_core::qa::CheckResult::Skipped) => QaCheckResult::Skipped,
                        Some(imprint_core::qa::CheckResult::Unreachable) => QaCheckResult::Unreachable,
                        None => QaCheckResult::Unrecognized,
                    },
                    detail: text(c, "detail"),
                })
                .collect(),
            id: r.id,
            at: r.at,
            operator: r.operator,
            port: r.port,
            device_serial: r.device_serial,
            cert_serial: r.cert_serial_hex,
            batch: r.batch,
        }
    }
}

impl From<QaOutcome> for QaVerdictView {
    fn from(o: QaOutcome) -> Self {
        o.verdict.into()
    }
}

impl From<QaError> for ApiError {
    fn from(e: QaError) -> Self {
        match e {
            QaError::Device(f) => ApiError::new(
                ErrorCode::DeviceUnreadable,
                format!("no verdict recorded: the device could not be read ({}: {}). {}", f.code, f.reason, f.hint),
            ),
            QaError::Store(s) => s.into(),
            QaError::Lock(l) => ApiError::new(
                ErrorCode::StoreLocked,
                format!("{l} (or verify from that station: the app's QA commands, which use its store)"),
            ),
            QaError::Ca(m) => ApiError::new(ErrorCode::Ca, m),
        }
    }
}

/// Verify the device on `port` with an open station, as `actor` (role qa,
/// supervisor or admin). The verdict is recorded whatever it is; a device
/// that cannot be read gets none (`device_unreadable`).
pub fn verify(actor: &Actor, station: &Station, port: &str) -> ApiResult<QaVerdictView> {
    actor.require(Permission::Verify)?;
    let port = port.trim();
    if port.is_empty() {
        return Err(ApiError::bad_request("name the port of the device to verify"));
    }
    let now = time::OffsetDateTime::now_utc();
    let ctx = station.ctx();
    let q = imprint_station::qa::QaContext { cfg: &ctx.cfg, store: &ctx.store, chain: &ctx.chain, central: ctx.cfg.central.as_ref() };
    Ok(imprint_station::qa::verify(q, port, Some(actor.id()), now)?.into())
}

/// `imprint verify --port P`: this data dir's store and CA chain, without
/// opening the station: no signer (no HSM PIN for QA), no port watched.
/// Refused (`store_locked`) while a station runs on the data dir. The center
/// is asked too whenever `[central]` is configured; `central` (`--central`)
/// insists on it, refusing a configuration without `[central]`.
pub fn verify_port(actor: &Actor, cfg: &StationConfig, port: &str, central: bool) -> ApiResult<QaVerdictView> {
    actor.require(Permission::Verify)?;
    if central && cfg.central.is_none() {
        return Err(ApiError::bad_request("no [central] section in the configuration: `verify --central` needs the center"));
    }
    let port = port.trim();
    if port.is_empty() {
        return Err(ApiError::bad_request("name the port of the device to verify"));
    }
    let now = time::OffsetDateTime::now_utc();
    Ok(imprint_station::qa::verify_with_data_dir(cfg, port, Some(actor.id()), now)?.into())
}

/// Verdicts of a device serial (or all), newest first.
pub fn verdicts(
    actor: &Actor,
    store: &Store,
    device_serial: Option<&str>,
    batch: Option<&str>,
    limit: Option<usize>,
) -> ApiResult<Vec<QaVerdictView>> {
    actor.require(Permission::View)?;
    let f = QaFilter { device_serial: device_serial.map(str::to_string), batch: batch.map(str::to_string), limit };
    Ok(store.qa_verdicts(&f)?.into_iter().map(QaVerdictView::from).collect())
}

/// The sampling plan's standing for one work order / batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct QaDueView {
    /// None: attempts without a work order.
    pub batch: Option<String>,
    /// Devices provisioned (distinct serials with a passed attempt).
    pub provisioned: u32,
    /// Devices QA verified (distinct serials with a verdict).
    pub verified: u32,
    /// Verifications the plan asks for.
    pub required: u32,
    /// Still due: required minus verified (never below 0).
    pub due: u32,
    /// The plan in words: "every 10th device", "5 devices".
    pub plan: String,
}

/// The plan: every `sample_every`-th device (the 1st, the N+1st, ...:
/// ceil(provisioned / N)) or `sample_count` devices per work order.
pub fn required(cfg: &imprint_station::config::QaConfig, provisioned: u32) -> ApiResult<(u32, String)> {
    match (cfg.sample_every, cfg.sample_count) {
        (Some(_), Some(_)) => Err(ApiError::new(ErrorCode::InvalidSettings, "[qa] sets both sample_every and sample_count: choose one")),
        (Some(0), _) | (_, Some(0)) => {
            Err(ApiError::new(ErrorCode::InvalidSettings, "[qa] sample_every / sample_count must be at least 1"))
        }
        (Some(n), None) => {
            Ok((provisioned.div_ceil(n), if n == 1 { "every device".into() } else { format!("every {} device", ordinal(n)) }))
        }
        (None, Some(k)) => Ok((provisioned.min(k), format!("{k} device{} per work order", if k == 1 { "" } else { "s" }))),
        (None, None) => Err(ApiError::new(
            ErrorCode::InvalidSettings,
            "no sampling plan: set [qa] sample_every = N (every Nth device) or sample_count = K (K devices per work order)",
        )),
    }
}

/// 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, 22nd, 101st, ...
fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// How many verifications are still due, per work order (`batch`: that one only).
pub fn due(actor: &Actor, store: &Store, cfg: &StationConfig, batch: Option<&str>) -> ApiResult<Vec<QaDueView>> {
    actor.require(Permission::Verify)?;
    let counts = store.qa_batch_counts(batch)?;
    if let Some(b) = batch {
        if counts.is_empty() {
            return Err(ApiError::not_found(format!("no device of work order {b:?} in the local store")));
        }
    }
    counts
        .into_iter()
        .map(|c| {
            let provisioned = c.provisioned as u32;
            let verified = c.verified as u32;
            let (required, plan) = required(&cfg.qa, provisioned)?;
            Ok(QaDueView { batch: c.batch, provisioned, verified, required, due: required.saturating_sub(verified), plan })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use imprint_station::config::QaConfig;

    #[test]
    fn every_stored_check_name_maps_to_its_variant_and_unknown_text_to_unrecognized() {
        for c in <imprint_core::qa::QaCheck as Closed>::ALL {
            let n = QaCheckName::of(c.as_str());
            assert_ne!(n, QaCheckName::Unrecognized, "{c:?}");
            assert_eq!(serde_json::to_value(n).unwrap(), serde_json::Value::String(c.as_str().into()));
        }
        assert_eq!(QaCheckName::of("lock "), QaCheckName::Unrecognized);
    }

    #[test]
    fn the_plan_asks_every_nth_device_rounded_up_or_a_count() {
        let every = |n| QaConfig { sample_every: Some(n), sample_count: None };
        assert_eq!(required(&every(10), 0).map(|r| r.0), Ok(0));
        assert_eq!(required(&every(10), 1).map(|r| r.0), Ok(1));
        assert_eq!(required(&every(10), 20).map(|r| r.0), Ok(2));
        assert_eq!(required(&every(10), 21).map(|r| r.0), Ok(3));
        let count = QaConfig { sample_every: None, sample_count: Some(5) };
        assert_eq!(required(&count, 3).map(|r| r.0), Ok(3));
        assert_eq!(required(&count, 300).map(|r| r.0), Ok(5));
        for bad in [QaConfig { sample_every: Some(2), sample_count: Some(2) }, every(0), QaConfig::default()] {
            assert_eq!(required(&bad, 5).map_err(|e| e.code), Err(ErrorCode::InvalidSettings));
        }
    }

    #[test]
    fn the_plan_in_words_says_every_2nd_device_not_every_2th() {
        let every = |n| QaConfig { sample_every: Some(n), sample_count: None };
        // As the QA view and `qa due` show it.
        let words = |n| required(&every(n), 1).map(|r| r.1);
        assert_eq!(words(1), Ok("every device".into()));
        for (n, w) in [
            (2, "2nd"),
            (3, "3rd"),
            (4, "4th"),
            (10, "10th"),
            (11, "11th"),
            (12, "12th"),
            (13, "13th"),
            (21, "21st"),
            (22, "22nd"),
            (101, "101st"),
            (111, "111th"),
        ] {
            assert_eq!(words(n), Ok(format!("every {w} device")), "{n}");
        }
    }
}
