//! The one library API both shells call (the `imprint` CLI and the desktop
//! app's Tauri commands): one function per operation, each returning a
//! serialisable result or an [`ApiError`] with a closed [`ErrorCode`]. A
//! shell maps arguments in and prints or sends results out; it holds no
//! provisioning logic and reaches nothing below this crate
//! (tests/tests/architecture.rs checks the shells' dependencies).
//!
//! - [`api::Api`]: the running station (open with a PIN, the engine, scans,
//!   mode, simulated devices, settings, sync, shutdown)
//! - [`engine`]: the one hot-plug engine (tiles per fixture slot)
//! - [`records`], [`health`], [`settings`], [`scan`], [`ports`], [`ca`], [`central`]
//! - [`lifecycle`]: revocation and CRLs signed by the CA signer
//! - [`conformance`]: the protocol conformance suite against the board on a port
//! - [`work_orders`]: work orders (create, list, show, close; the quota is enforced in the store)
//! - [`audit`]: the audit trail (list, append, verify locally and against the center, sync verify)

pub mod api;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod ca;
pub mod central;
pub mod cloud;
pub mod conformance;
pub mod engine;
mod error;
pub mod health;
pub mod leases;
pub mod lifecycle;
pub mod pdf;
pub mod ports;
pub mod qa;
pub mod records;
pub mod reports;
pub mod rework;
pub mod roles;
pub mod scan;
pub mod settings;
mod slots;
pub mod work_orders;

pub use api::{Api, ApiEvent, ApiOptions, Emitter, StationInfo, SyncView};
pub use auth::{Actor, ActorKind, Credentials, OperatorPin};
pub use engine::{Bench, BenchEvent, BenchSnapshot, Tile, TileState};
pub use error::{ApiError, ApiResult, ErrorCode};
pub use roles::{Permission, Role};

// What the shells need from below, re-exported so they depend on this crate alone.
pub use imprint_core::ca::CaSubject;
pub use imprint_core::signer::SigAlg;
pub use imprint_signer::Pin;
pub use imprint_station::config::default_config_path;
pub use imprint_station::logging;
pub use imprint_station::{Mode, StationConfig};
pub use imprint_store::Store;
pub use imprint_sync::CentralConfig;

/// Load the station configuration (defaults → file → environment), with an
/// optional data dir override.
pub fn load_config(path: Option<&std::path::Path>, data_dir: Option<&std::path::Path>) -> ApiResult<StationConfig> {
    let mut cfg = StationConfig::load(path)?;
    if let Some(d) = data_dir {
        cfg.data_dir = d.to_path_buf();
    }
    Ok(cfg)
}

/// Open the local store for reading records (History, exports, reports).
pub fn open_store(cfg: &StationConfig) -> ApiResult<std::sync::Arc<Store>> {
    let store = Store::open(&cfg.store_path())?;
    store.set_station_id(&cfg.station_id);
    Ok(std::sync::Arc::new(store))
}

/// Run `f` on this data dir's store for a short change (operators, the
/// first admin, a wrong PIN counted) when no station of this process holds
/// it: the data dir lock is taken for the duration, so a station running in
/// another process is never written behind its back; while one runs, the
/// store is opened read-only (a write then fails with `store`).
pub fn with_local_store<T>(cfg: &StationConfig, f: impl FnOnce(&Store) -> ApiResult<T>) -> ApiResult<T> {
    match imprint_station::DataDirLock::acquire(&cfg.data_dir) {
        Ok(lock) => {
            let store = Store::open(&cfg.store_path())?;
            // Audit entries written here carry this station's id.
            store.set_station_id(&cfg.station_id);
            let r = f(&store);
            store.close();
            drop(lock);
            r
        }
        Err(imprint_station::LockError::InUse { .. }) => {
            let store = Store::open_read_only(&cfg.store_path())?;
            store.set_station_id(&cfg.station_id);
            f(&store)
        }
        Err(e) => Err(ApiError::new(ErrorCode::StoreLocked, e.to_string())),
    }
}
