//! The central database: the administrator's operations (migrate, version,
//! register stations and readers), the station's sync status and rounds,
//! and reports (local or central). The password is never an argument: a
//! file path or `IMPRINT_PG_PASSWORD`.

use crate::{Actor, ApiError, ApiResult, Permission};
use imprint_store::Store;
use imprint_sync::{CentralConfig, SyncStatus};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use ts_rs::TS;

pub(crate) fn runtime() -> ApiResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ApiError::internal(format!("could not start an async runtime: {e}")))
}

fn read_password_file(p: &Path) -> ApiResult<String> {
    let t = std::fs::read_to_string(p).map_err(|e| ApiError::io(format!("the password file {}", p.display()), e))?;
    let t = t.trim_end_matches(['\r', '\n']).to_string();
    if t.is_empty() {
        return Err(ApiError::bad_request(format!("the password file {} is empty", p.display())));
    }
    Ok(t)
}

/// Apply the central schema's migrations (administrators only); returns the version reached.
pub fn migrate(actor: &Actor, admin: &CentralConfig) -> ApiResult<i64> {
    actor.require(Permission::CentralAdmin)?;
    let opts = admin.connect_options()?;
    Ok(runtime()?.block_on(imprint_sync::migrate(&opts))?)
}

/// The central schema version found (None: not migrated) and the one this build needs.
pub fn version(actor: &Actor, admin: &CentralConfig) -> ApiResult<(Option<i64>, i64)> {
    actor.require(Permission::CentralAdmin)?;
    let opts = admin.connect_options()?;
    let found = runtime()?.block_on(imprint_sync::schema::found_version(&opts))?;
    Ok((found, imprint_sync::required_version()))
}

pub fn add_station(actor: &Actor, admin: &CentralConfig, station: &str, role: &str, role_password_file: &Path) -> ApiResult<()> {
    actor.require(Permission::CentralAdmin)?;
    let opts = admin.connect_options()?;
    let pw = read_password_file(role_password_file)?;
    Ok(runtime()?.block_on(imprint_sync::add_station(&opts, station, role, &pw))?)
}

pub fn add_reader(actor: &Actor, admin: &CentralConfig, role: &str, role_password_file: &Path) -> ApiResult<()> {
    actor.require(Permission::CentralAdmin)?;
    let opts = admin.connect_options()?;
    let pw = read_password_file(role_password_file)?;
    Ok(runtime()?.block_on(imprint_sync::add_reader(&opts, role, &pw))?)
}

/// Create a login role for supervisors' work order changes at the center (member of imprint_supervisor).
pub fn add_supervisor(actor: &Actor, admin: &CentralConfig, role: &str, role_password_file: &Path) -> ApiResult<()> {
    actor.require(Permission::CentralAdmin)?;
    let opts = admin.connect_options()?;
    let pw = read_password_file(role_password_file)?;
    Ok(runtime()?.block_on(imprint_sync::add_supervisor(&opts, role, &pw))?)
}

/// The outbox's state, from the local store (works offline).
#[derive(Clone, Debug, Serialize)]
pub struct SyncStatusView {
    pub configured: bool,
    pub station_id: String,
    /// Attempts with changes not yet at the center.
    pub backlog_records: u64,
    #[serde(flatten)]
    pub status: SyncStatus,
}

pub fn status(actor: &Actor, store: &Store, configured: bool, station_id: &str) -> ApiResult<SyncStatusView> {
    actor.require(Permission::View)?;
    Ok(SyncStatusView {
        configured,
        station_id: station_id.to_string(),
        backlog_records: store.pending_records()?,
        status: SyncStatus::read(store)?,
    })
}

/// A quarantined record as the app shows it: a record the center holds
/// differently, kept locally exactly as it is and no longer sent.
#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct QuarantineView {
    /// What `release_quarantine` takes.
    #[ts(type = "number")]
    pub id: i64,
    /// The record, e.g. `attempt 0193…` or `step 0193…#4`.
    pub record: String,
    #[ts(type = "number")]
    pub version: i64,
    pub reason: String,
    pub at: String,
    /// The center heard of it (an `audit_events` row).
    pub reported: bool,
}

impl From<&imprint_store::Quarantine> for QuarantineView {
    fn from(q: &imprint_store::Quarantine) -> Self {
        QuarantineView {
            id: q.id,
            record: q.key.to_string(),
            version: q.version,
            reason: q.reason.clone(),
            at: q.at.clone(),
            reported: q.reported_at.is_some(),
        }
    }
}

/// The quarantined records not released yet, oldest first (anyone who may view).
pub fn quarantined(actor: &Actor, store: &Store) -> ApiResult<Vec<QuarantineView>> {
    actor.require(Permission::View)?;
    Ok(store.quarantined()?.iter().map(QuarantineView::from).collect())
}

/// What a release did.
#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct QuarantineReleasedView {
    pub record: String,
    /// The quarantines released (every open one of the record).
    pub released: Vec<QuarantineView>,
    pub operator: String,
    pub comment: String,
    pub at: String,
    /// The `quarantine_released` entry in the audit trail.
    #[ts(type = "number")]
    pub audit_seq: i64,
}

/// Release a quarantined record after its conflict was resolved (supervisors:
/// `Permission::ReleaseQuarantine`). `id` is the quarantine's number as
/// `imprint sync status` lists it; every open quarantine of that record is
/// released, the record is queued for the next round, and the release is in
/// the audit trail with the operator and the comment, which must say how the
/// conflict was resolved. If it still stands, the next round quarantines the
/// record again: nothing is resolved silently.
pub fn release_quarantine(actor: &Actor, store: &Store, id: i64, comment: &str) -> ApiResult<QuarantineReleasedView> {
    actor.require(Permission::ReleaseQuarantine)?;
    let comment = comment.trim();
    if comment.is_empty() {
        return Err(ApiError::bad_request("say how the conflict was resolved (a comment): it goes into the audit trail"));
    }
    if comment.chars().count() > 500 {
        return Err(ApiError::bad_request("the comment is longer than 500 characters"));
    }
    match store.release_quarantine(id, actor.id(), comment) {
        Ok(r) => {
            tracing::info!(record = %r.key, quarantines = r.released.len(), operator = actor.id(), "quarantine released: the record is queued again");
            Ok(QuarantineReleasedView {
                record: r.key.to_string(),
                released: r.released.iter().map(QuarantineView::from).collect(),
                operator: r.operator,
                comment: r.comment,
                at: r.at,
                audit_seq: r.audit_seq,
            })
        }
        Err(imprint_store::StoreError::NotFound(m)) => Err(ApiError::not_found(m)),
        Err(e) => Err(e.into()),
    }
}

/// One sync round now, then the status.
#[derive(Clone, Debug, Serialize)]
pub struct SyncNowDone {
    pub report: imprint_sync::SyncReport,
    pub status: SyncStatusView,
}

/// The round leases by the station's own `[work_orders]` policy (block,
/// low water, lifetime), as the station's sync worker does: never by the
/// defaults, which would hand a station set to lease small blocks a large one.
pub fn sync_now(
    actor: &Actor,
    store: Arc<Store>,
    station_id: &str,
    central: Option<&CentralConfig>,
    leases: imprint_sync::LeasePolicy,
) -> ApiResult<SyncNowDone> {
    actor.require(Permission::SyncNow)?;
    let central = central.ok_or_else(|| ApiError::bad_request("no [central] section in the configuration: nothing to sync to"))?;
    let report = imprint_sync::sync_once_with(store.clone(), station_id, central, leases)?;
    let status = status(actor, &store, true, station_id)?;
    Ok(SyncNowDone { report, status })
}

pub use imprint_sync::required_version;

fn central_admin(actor: &Actor) -> ApiResult<()> {
    actor.require(Permission::CentralAdmin)?;
    actor.require(Permission::Operators)
}

/// The center's operators (admin), as shown (never a hash).
pub fn operators(actor: &Actor, admin: &CentralConfig) -> ApiResult<Vec<crate::auth::OperatorView>> {
    central_admin(actor)?;
    let opts = admin.connect_options()?;
    let rows = runtime()?.block_on(imprint_sync::operators::list(&opts))?;
    Ok(rows
        .into_iter()
        .map(|r| crate::auth::OperatorView {
            role: crate::Role::parse(&r.role).unwrap_or(crate::Role::Technician),
            id: r.id,
            display_name: r.display_name,
            enabled: r.enabled,
            has_badge: r.badge_sha256.is_some(),
            locked_until: None,
            created_at: String::new(),
        })
        .collect())
}

/// Add an operator at the center (admin); stations copy it on their next sync.
pub fn add_operator(actor: &Actor, admin: &CentralConfig, new: &crate::auth::NewOperator) -> ApiResult<()> {
    central_admin(actor)?;
    let row = crate::auth::row_of(new)?;
    let op = imprint_store::operators::CentralOperator {
        id: row.id.clone(),
        display_name: row.display_name,
        role: row.role,
        pin_hash: row.pin_hash,
        badge_sha256: row.badge_sha256,
        enabled: true,
    };
    let opts = admin.connect_options()?;
    if !runtime()?.block_on(imprint_sync::operators::add(&opts, &op))? {
        return Err(ApiError::bad_request(format!("the center has an operator {} or that badge already", row.id)));
    }
    tracing::info!(by = %actor.id(), operator = %row.id, "central operator added");
    Ok(())
}

/// Change an operator at the center (admin); stations apply it on their next sync.
pub fn edit_operator(actor: &Actor, admin: &CentralConfig, id: &str, edit: &crate::auth::OperatorEdit) -> ApiResult<()> {
    use crate::auth::OperatorEdit as E;
    use imprint_sync::operators::CentralChange as C;
    central_admin(actor)?;
    let change = match edit {
        E::Enable => C::Enabled(true),
        E::Disable => C::Enabled(false),
        E::SetRole { role } => C::Role(role.as_str().into()),
        E::ResetPin { pin } => {
            crate::auth::check_pin_rules(pin)?;
            C::Pin(crate::auth::hash_pin(pin)?)
        }
        E::SetBadge { badge } => C::Badge(badge.as_deref().map(str::trim).filter(|b| !b.is_empty()).map(crate::auth::badge_hash)),
    };
    let opts = admin.connect_options()?;
    if !runtime()?.block_on(imprint_sync::operators::change(&opts, id.trim(), &change))? {
        return Err(ApiError::not_found(format!("the center has no operator {}", id.trim())));
    }
    tracing::info!(by = %actor.id(), operator = %id, change = edit.word(), "central operator changed");
    Ok(())
}
