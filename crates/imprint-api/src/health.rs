//! Health of every dependency, for the app's Health view and `imprint health`,
//! including when the station did not open (each failure under its own item
//! and code: a store failure is not a signer problem).

use crate::api::SyncView;
use crate::{ApiError, ErrorCode};
use imprint_station::health::item;
pub use imprint_station::health::{HealthItem as HealthView, Level};
use imprint_station::{Station, StationConfig};

/// Health of an open station.
pub fn of_station(st: &Station) -> Vec<HealthView> {
    imprint_station::health::check(st)
}

/// Health from outside a station (`imprint health`): read-only, safe beside
/// a live station (no recovery, nothing written); the signer is opened once
/// and closed before returning. Also the signer's own state, for scripts.
pub fn read_only(cfg: &StationConfig, pin: Option<imprint_signer::Pin>) -> (Vec<HealthView>, serde_json::Value) {
    let h = imprint_station::health::check_read_only(cfg, pin);
    let signer = serde_json::to_value(&h.signer).unwrap_or(serde_json::Value::Null);
    (h.items, signer)
}

/// Health when the station did not open: the item the failure belongs to is
/// red with the error; the others say they were not checked.
pub fn not_open(cfg: &StationConfig, e: &ApiError) -> Vec<HealthView> {
    let signer_fault = matches!(e.code.exit_code(), 3);
    let store_fault = matches!(e.code, ErrorCode::Store | ErrorCode::StoreLocked);
    let not_checked = |what: &str| format!("not checked: the station did not open ({what})");
    let mut out = Vec::new();
    out.push(if signer_fault {
        item(
            "signer",
            "CA signer",
            Level::Error,
            format!("{}: the station could not use its CA signer or CA certificate", imprint_signer::display_uri(&cfg.signer_uri())),
            Some(e.message.clone()),
        )
    } else {
        item("signer", "CA signer", Level::Warn, not_checked("see the item in red"), None)
    });
    out.push(if store_fault {
        item("local_store", "Local store", Level::Error, cfg.store_path().display().to_string(), Some(e.message.clone()))
    } else {
        item("local_store", "Local store", Level::Warn, not_checked("see the item in red"), None)
    });
    if !signer_fault && !store_fault {
        out.push(item("station", "Station", Level::Error, "the station did not start".into(), Some(e.message.clone())));
    }
    out.push(match &cfg.central {
        None => item("central_db", "Central database", Level::Off, "not configured: records stay on this station".into(), None),
        Some(_) => item("central_db", "Central database", Level::Warn, not_checked("the center is checked by the running station"), None),
    });
    out.push(match &cfg.mqtt {
        None => item("mqtt", "MQTT broker", Level::Off, "not configured".into(), None),
        Some(_) => item("mqtt", "MQTT broker", Level::Warn, not_checked("the broker is checked by the running station"), None),
    });
    out
}

/// The exit status of `imprint health`: 0 all green/amber/off, 4 the store
/// is red, 3 the signer is red, 1 anything else is red.
pub fn exit_code(items: &[HealthView]) -> u8 {
    let red = |id: &str| items.iter().any(|i| i.id == id && i.level == Level::Error);
    if red("local_store") {
        4
    } else if red("signer") {
        3
    } else if items.iter().any(|i| i.level == Level::Error) {
        1
    } else {
        0
    }
}

/// The center's state for the Bench header (no network: from the local
/// outbox and the sync worker's live state).
pub fn sync_view(st: &Station) -> SyncView {
    let configured = st.ctx().cfg.central.is_some();
    let status = imprint_sync::SyncStatus::read(st.store()).ok();
    let live = st.sync_status();
    let failing = status.as_ref().is_some_and(|s| s.state == "failing");
    SyncView {
        configured,
        connected: configured && status.as_ref().is_some_and(|s| s.state == "ok") && !failing,
        backlog_records: st.store().pending_records().unwrap_or(0),
        last_success_at: status.as_ref().and_then(|s| s.last_success_at.clone()),
        last_error: if failing { status.as_ref().and_then(|s| s.last_error.clone()) } else { None },
        retry_in_ms: live.and_then(|l| l.retry_in_ms),
        quarantined: status.map(|s| s.quarantined.len() as u64).unwrap_or(0),
    }
}
