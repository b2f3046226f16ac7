//! Station health, one item per dependency, for the app's Health view and
//! `imprint health`. Each item is green/amber/red (or off when not
//! configured) with the last error an operator can act on.

use crate::station::Station;
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub enum Level {
    Ok,
    Warn,
    Error,
    /// Not configured on this station.
    Off,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ts_rs::TS)]
#[ts(export, export_to = "../../../ui/src/bindings/", rename = "HealthItemDto")]
pub struct HealthItem {
    /// Stable id: "signer", "local_store", "central_db", "mqtt".
    pub id: String,
    pub title: String,
    pub level: Level,
    pub detail: String,
    pub last_error: Option<String>,
}

pub fn item(id: &str, title: &str, level: Level, detail: String, last_error: Option<String>) -> HealthItem {
    HealthItem { id: id.into(), title: title.into(), level, detail, last_error }
}

/// Check everything the station depends on. Cheap enough to run on demand:
/// one signature and two small reads.
pub fn check(station: &Station) -> Vec<HealthItem> {
    let mut out = Vec::new();
    out.push(signer_item(station));
    let store = station.store();
    match store.attempts(&imprint_store::AttemptFilter { limit: Some(1), ..Default::default() }) {
        Ok(latest) => {
            let last = latest.first().map(|a| format!("last record written {}", a.started_at)).unwrap_or_else(|| "no records yet".into());
            out.push(item("local_store", "Local store", Level::Ok, format!("{}: readable and writable; {last}", store.path().display()), None));
        }
        Err(e) => out.push(item("local_store", "Local store", Level::Error, store.path().display().to_string(), Some(e.to_string()))),
    }
    out.push(central_item(station));
    out.push(mqtt_item(station));
    out
}

/// The central database, from the local store's sync state (no network:
/// offline is normal for a station; records wait in the outbox): backlog,
/// last success, last error, quarantined records (red: an operator must look).
fn central_item(station: &Station) -> HealthItem {
    if station.ctx().cfg.central.is_none() {
        return item("central_db", "Central database", Level::Off, "not configured: records stay on this station".into(), None);
    }
    match imprint_sync::SyncStatus::read(station.store()) {
        Err(e) => item("central_db", "Central database", Level::Error, "sync state unreadable".into(), Some(e.to_string())),
        Ok(s) => {
            let live = station.sync_status();
            // The last error is shown only while the center is failing: a
            // success after it clears it from the card.
            let last_error = match (s.state, &s.last_error_at, &s.last_error) {
                ("failing", Some(at), Some(e)) => Some(format!("{e} (at {at})")),
                _ => None,
            };
            let records = station.store().pending_records().unwrap_or(0);
            let mut detail = format!(
                "{records} records waiting to sync ({} changes); last success {}",
                s.backlog,
                s.last_success_at.as_deref().unwrap_or("never")
            );
            if let Some(ms) = live.as_ref().and_then(|l| l.retry_in_ms) {
                detail.push_str(&format!("; unreachable, retrying in {:.1} s", ms as f64 / 1e3));
            }
            let level = if !s.quarantined.is_empty() {
                detail.push_str(&format!("; {} records quarantined (conflict with the center): see `imprint sync status`", s.quarantined.len()));
                Level::Error
            } else if s.state == "failing" {
                Level::Warn
            } else {
                Level::Ok
            };
            item("central_db", "Central database", level, detail, last_error)
        }
    }
}

/// The CA signer: one real signature through the signer worker (the only
/// thread that touches the key), then the worker's view of the signer:
/// reachable, key present, PIN accepted, last error.
fn signer_item(station: &Station) -> HealthItem {
    let info = station.signer().info().clone();
    let t = Instant::now();
    let signed = station.signer().sign(b"imprint health check".to_vec());
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let h = station.signer().health();
    let last_error = h.last_error.as_ref().map(|f| format!("{} [{}] at {}", f.message, f.code, f.at));
    let base = format!("{} ({}); CA {}", info.uri, info.kind, station.ctx().issuer_dn);
    match signed {
        Ok(_) if info.development => item(
            "signer",
            "CA signer",
            Level::Warn,
            format!("{base}: signed in {ms:.1} ms; DEVELOPMENT CA: certificates are for testing only"),
            last_error,
        ),
        Ok(_) => item(
            "signer",
            "CA signer",
            Level::Ok,
            format!("{base}: reachable, key present, PIN accepted; signed in {ms:.1} ms; {} queued", h.queued),
            last_error,
        ),
        Err(e) => {
            let what = match h.state {
                crate::signer_worker::SignerState::Unreachable => "unreachable (network, timeout or throttling)",
                crate::signer_worker::SignerState::KeyMissing => "the CA key is missing or disabled",
                _ => "the signer refuses to sign (credentials, PIN or token)",
            };
            item("signer", "CA signer", Level::Error, format!("{base}: {what}"), Some(e.to_string()))
        }
    }
}

/// The broker: connect (TCP, TLS or mTLS as configured), publish and receive
/// on the health topic; the failure class says what to fix.
fn mqtt_item(station: &Station) -> HealthItem {
    let Some(m) = &station.ctx().cfg.mqtt else {
        return item("mqtt", "MQTT broker", Level::Off, "not configured".into(), None);
    };
    let checked = imprint_mqtt::Endpoint::from_config(m, "").and_then(|ep| imprint_mqtt::check(&ep, &m.health_topic));
    let events = crate::events::queue_summary(station.store(), station.ctx().events.as_ref());
    match checked {
        Ok(r) => item(
            "mqtt",
            "MQTT broker",
            Level::Ok,
            format!(
                "{} ({}, MQTT {}): connected in {:.1} ms, publish/receive round trip {:.1} ms; {events}",
                r.broker,
                r.transport,
                r.protocol.as_str(),
                r.connect.as_secs_f64() * 1e3,
                r.round_trip.as_secs_f64() * 1e3
            ),
            None,
        ),
        Err(e) => {
            let what = match &e {
                imprint_mqtt::MqttError::Unreachable(_) => "broker down or unreachable: check that it runs and the address",
                imprint_mqtt::MqttError::TlsVerification(_) => "the broker's certificate does not verify against mqtt.server_ca / mqtt.ca_bundle",
                imprint_mqtt::MqttError::Refused(_) => "the broker refused this station (credentials, authorization or client certificate)",
                imprint_mqtt::MqttError::Timeout(_) => "the broker did not answer in time",
                imprint_mqtt::MqttError::Config(_) => "the [mqtt] configuration is unusable",
                imprint_mqtt::MqttError::Other(_) => "the broker connection failed",
            };
            item("mqtt", "MQTT broker", Level::Error, format!("{}: {what}; {events}", m.url), Some(e.to_string()))
        }
    }
}
