//! Backups and restores ([`imprint_station::backup`]): `imprint backup`
//! copies the store online (beside a running station too) and `imprint
//! restore` replaces it under the data dir lock. Both need the admin's
//! permissions (`backup`, `restore`).

use crate::auth::Actor;
use crate::roles::Permission;
use crate::{ApiError, ApiResult, ErrorCode};
use imprint_station::backup::{BackupError, BackupReport, Manifest, RestoreReport};
use imprint_station::StationConfig;
use imprint_store::Store;
use std::path::Path;

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> Self {
        let msg = crate::error::chain(&e);
        let code = match e {
            BackupError::Store(s) => return s.into(),
            BackupError::Exists(_) | BackupError::IdentityNeeded | BackupError::Decrypt(_) | BackupError::Format(_) => {
                ErrorCode::BadRequest
            }
            BackupError::Io { .. } => ErrorCode::Io,
            BackupError::BadRecipient => ErrorCode::InvalidSettings,
            BackupError::Tampered(_) => ErrorCode::Tampered,
            BackupError::Newer { .. } | BackupError::OtherStation { .. } => ErrorCode::RestoreRefused,
            BackupError::Locked(_) => ErrorCode::StoreLocked,
            BackupError::RelearnPending(_) => ErrorCode::Central,
            _ => ErrorCode::Internal,
        };
        ApiError::new(code, msg)
    }
}

/// `imprint backup --out FILE`: an online, checked copy of the store (the
/// station may be provisioning meanwhile), encrypted to `[backup]
/// recipient` when set. The development CA key only with `include_dev_ca_key`.
pub fn backup(actor: &Actor, cfg: &StationConfig, out: &Path, include_dev_ca_key: bool) -> ApiResult<BackupReport> {
    actor.require(Permission::Backup)?;
    let store = Store::open_read_only(&cfg.store_path())?;
    Ok(imprint_station::backup::backup(cfg, &store, out, include_dev_ca_key)?)
}

/// [`backup`] of a store this process already has open (the app, tests).
pub fn backup_store(actor: &Actor, cfg: &StationConfig, store: &Store, out: &Path, include_dev_ca_key: bool) -> ApiResult<BackupReport> {
    actor.require(Permission::Backup)?;
    Ok(imprint_station::backup::backup(cfg, store, out, include_dev_ca_key)?)
}

/// `imprint restore FILE --check`: decrypt and check a backup, restore nothing.
pub fn inspect(actor: &Actor, file: &Path, identity: Option<&Path>) -> ApiResult<Manifest> {
    actor.require(Permission::Restore)?;
    Ok(imprint_station::backup::inspect(file, identity)?)
}

/// `imprint restore FILE`: check, refuse to lose newer records unless
/// `force`, replace (the old store kept aside), re-learn from the center,
/// record a `store_restored` audit entry. No station may run on the data dir.
pub fn restore(actor: &Actor, cfg: &StationConfig, file: &Path, identity: Option<&Path>, force: bool) -> ApiResult<RestoreReport> {
    actor.require(Permission::Restore)?;
    Ok(imprint_station::backup::restore(cfg, file, identity, force, Some(actor.id()))?)
}
