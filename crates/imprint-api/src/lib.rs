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
//! - [`audit`]: the audit trail (list, append, verify locally and against the center, sync verify)

pub mod api;
pub mod audit;
pub mod ca;
pub mod central;
pub mod engine;
mod error;
pub mod health;
pub mod ports;
pub mod records;
pub mod scan;
pub mod settings;
mod slots;

pub use api::{Api, ApiEvent, ApiOptions, Emitter, StationInfo, SyncView};
pub use engine::{Bench, BenchEvent, Tile, TileState};
pub use error::{ApiError, ApiResult, ErrorCode};

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
