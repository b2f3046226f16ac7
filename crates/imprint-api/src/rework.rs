//! Rework and renewal for supervisors
//! ([docs/lifecycle.md](../../../docs/lifecycle.md#rework)).
//!
//! - [`authorise`]: a supervisor authorises re-provisioning one device serial
//!   ([`Permission::Rework`]). The authorisation is a record (synced,
//!   audited), single-use and expiring (`[rework] authorisation_hours`).
//!   With it, the next device reporting that serial is reset over the
//!   protocol, makes a new key and gets a new certificate, and the serial's
//!   old certificate is revoked with reason superseded: one flow, in one
//!   journal transaction (`imprint_store::rework`). Without it a second
//!   board with a certified serial stays refused (`duplicate_serial`).
//! - [`expiring`]: current certificates expiring within a window, from the
//!   local store or the center ([`Permission::Report`]). Renewal itself
//!   happens on the bench: a device attached whose certificate is inside the
//!   profile's `renew_before_days` gets a new certificate for its key.

use crate::{Actor, ApiError, ApiResult, ErrorCode, Permission};
use imprint_station::StationConfig;
use imprint_store::{ReworkRow, Store};
use serde::Serialize;
use ts_rs::TS;

/// Where a rework authorisation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub enum ReworkState {
    /// Not used and not expired: the next device reporting the serial is reworked.
    Open,
    /// A rework used it.
    Used,
    /// Expired unused.
    Expired,
}

/// A rework authorisation as shown.
#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/", rename = "ReworkAuthorisationDto")]
pub struct ReworkAuthorisationView {
    pub id: String,
    pub device_serial: String,
    pub authorised_at: String,
    pub authorised_by: Option<String>,
    pub expires_at: String,
    pub comment: Option<String>,
    /// When a rework used it (None: still open, or expired unused).
    pub used_at: Option<String>,
    pub attempt_id: Option<String>,
    pub certificate_id: Option<String>,
    pub state: ReworkState,
}

impl From<ReworkRow> for ReworkAuthorisationView {
    fn from(r: ReworkRow) -> Self {
        let state = if r.used_at.is_some() {
            ReworkState::Used
        } else if r.expires_at <= imprint_store::now_text() {
            ReworkState::Expired
        } else {
            ReworkState::Open
        };
        ReworkAuthorisationView {
            state,
            id: r.id,
            device_serial: r.device_serial,
            authorised_at: r.authorised_at,
            authorised_by: r.authorised_by,
            expires_at: r.expires_at,
            comment: r.comment,
            used_at: r.used_at,
            attempt_id: r.attempt_id,
            certificate_id: r.certificate_id,
        }
    }
}

/// A current certificate expiring within the window.
#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/", rename = "ExpiringCertDto")]
pub struct ExpiringCertView {
    pub station_id: String,
    pub device_serial: String,
    pub serial_hex: String,
    pub issuer: String,
    pub not_after: String,
    /// Whole days left (negative: expired already).
    #[ts(type = "number")]
    pub days_left: i64,
}

impl From<imprint_sync::ExpiringRow> for ExpiringCertView {
    fn from(r: imprint_sync::ExpiringRow) -> Self {
        ExpiringCertView {
            station_id: r.station_id,
            device_serial: r.device_serial,
            serial_hex: r.serial_hex,
            issuer: r.issuer,
            not_after: r.not_after,
            days_left: r.days_left,
        }
    }
}

fn check_serial(serial: &str) -> ApiResult<String> {
    let s = serial.trim();
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
        return Err(ApiError::bad_request(format!(
            "{s:?} is not a device serial (1 to 64 letters, digits and - _ . :, as the device reports it)"
        )));
    }
    Ok(s.to_string())
}

/// Authorise re-provisioning the device `serial` (needs [`Permission::Rework`]):
/// recorded with its outbox row and a `rework_authorised` audit entry;
/// valid for `cfg.rework.authorisation_hours` or until a rework uses it.
pub fn authorise(
    actor: &Actor,
    cfg: &StationConfig,
    store: &Store,
    serial: &str,
    comment: Option<&str>,
) -> ApiResult<ReworkAuthorisationView> {
    actor.require(Permission::Rework)?;
    let serial = check_serial(serial)?;
    let comment = crate::lifecycle::check_comment(comment)?;
    if store.is_read_only() {
        return Err(ApiError::new(
            ErrorCode::StoreLocked,
            "a station is running on this data dir and owns its store: authorise the rework from that station's app, or stop it and run `imprint rework authorise` again",
        ));
    }
    if store.certs_by_device_serial(&serial)?.is_empty() {
        return Err(ApiError::not_found(format!(
            "no certificate was ever issued to {serial} here: a device never provisioned needs no rework"
        )));
    }
    let expires = time::OffsetDateTime::now_utc() + time::Duration::hours(i64::from(cfg.rework.authorisation_hours));
    let row = store.authorise_rework(&serial, Some(actor.id()), comment.as_deref(), &imprint_store::ts(expires))?;
    tracing::info!(serial = %row.device_serial, expires = %row.expires_at, operator = actor.id(), "rework authorised");
    Ok(row.into())
}

/// Rework authorisations, newest first (of one serial, or all).
pub fn authorisations(actor: &Actor, store: &Store, serial: Option<&str>) -> ApiResult<Vec<ReworkAuthorisationView>> {
    actor.require(Permission::View)?;
    Ok(store.rework_authorisations(serial)?.into_iter().map(Into::into).collect())
}

/// Current (issued) certificates whose notAfter falls within `days` from
/// now (expired ones too), soonest first: from the local store, or with
/// `central` from the center (every station's, as far as the role may read).
pub fn expiring(actor: &Actor, cfg: &StationConfig, store: Option<&Store>, days: u32, central: bool) -> ApiResult<Vec<ExpiringCertView>> {
    actor.require(Permission::Report)?;
    if days > 36_500 {
        return Err(ApiError::bad_request("--days is at most 36500"));
    }
    let now = time::OffsetDateTime::now_utc();
    let until = now + time::Duration::days(i64::from(days));
    let rows = if central {
        let cc = cfg.central.as_ref().ok_or_else(|| {
            ApiError::bad_request("no [central] section in the configuration: `certs expiring --central` needs the center")
        })?;
        let opts = cc.connect_options()?;
        crate::central::runtime()?.block_on(imprint_sync::central_expiring(&opts, now, until))?
    } else {
        let store = store.ok_or_else(|| ApiError::new(ErrorCode::StoreLocked, "the local store is not open"))?;
        imprint_sync::local_expiring(store, &cfg.station_id, now, until)?
    };
    Ok(rows.into_iter().map(Into::into).collect())
}
