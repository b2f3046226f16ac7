//! Station health, one item per dependency, for the app's Health view and
//! `imprint health`. Each item is green/amber/red (or off when not
//! configured) with the last error an operator can act on.
//!
//! Two entry points: [`check`] asks a station this process runs (the app);
//! [`check_read_only`] is for a process beside it, or with no station at
//! all (`imprint health`): it never writes and never runs start-up recovery.
//! It opens the store read-only and its own short-lived signer connection
//! (a PKCS#11 session of its own, or one KMS call), signs once, checks the
//! CA certificate against the key, and closes the signer before it returns.
//! The signer worker of a live station is not reachable from another
//! process, so its queue and last error are not shown there.

use crate::config::StationConfig;
use crate::lock::LockHolder;
use crate::signer_worker::SignerHealth;
use crate::station::Station;
use imprint_store::Store;
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
    /// Stable id: "signer", "local_store", "central_db", "mqtt", "work_orders".
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
    vec![
        signer_item(station),
        store_item(station.store(), None),
        central_item(&station.ctx().cfg, Some(station.store()), station.sync_status()),
        mqtt_item(&station.ctx().cfg, Some(station.store()), station.ctx().events.as_ref()),
        work_orders_item(station.store()),
    ]
}

/// Health from outside a station ([`check_read_only`]).
#[derive(Clone, Debug, Serialize)]
pub struct ReadOnlyHealth {
    pub items: Vec<HealthItem>,
    /// The signer as this process saw it; None when it was not opened (a
    /// development CA not created yet).
    pub signer: Option<SignerHealth>,
    /// The station running on this data dir now, if any.
    pub station: Option<LockHolder>,
}

/// Check everything a station depends on without being one: safe beside a
/// live station (nothing written, no recovery; see the module docs).
pub fn check_read_only(cfg: &StationConfig, pin: Option<imprint_signer::Pin>) -> ReadOnlyHealth {
    let station = crate::lock::holder(&cfg.data_dir);
    let (signer_item, signer) = signer_item_standalone(cfg, pin);
    let store = Store::open_read_only(&cfg.store_path());
    let store_item = match &store {
        Ok(s) => store_item(s, station.as_ref()),
        Err(imprint_store::StoreError::Missing(p)) => item(
            "local_store",
            "Local store",
            Level::Warn,
            format!("{}: no store yet (created when a station first runs on this data dir)", p.display()),
            None,
        ),
        Err(e) => item("local_store", "Local store", Level::Error, cfg.store_path().display().to_string(), Some(e.to_string())),
    };
    let store = store.ok();
    let mut items = vec![signer_item, store_item, central_item(cfg, store.as_ref(), None), mqtt_item(cfg, store.as_ref(), None)];
    if let Some(s) = &store {
        items.push(work_orders_item(s));
    }
    ReadOnlyHealth { items, signer, station }
}

/// Work orders: off while there are none; red when one has more
/// certificates than its quantity (overproduction: a restored backup, a
/// tampered store); amber when an open one is used up.
pub fn work_orders_item(store: &Store) -> HealthItem {
    const ID: &str = "work_orders";
    const TITLE: &str = "Work orders";
    let all = match store.work_orders() {
        Ok(all) => all,
        Err(e) => return item(ID, TITLE, Level::Error, "the work orders could not be read".into(), Some(e.to_string())),
    };
    if all.is_empty() {
        return item(ID, TITLE, Level::Off, "no work order on this station".into(), None);
    }
    let over: Vec<String> = all
        .iter()
        .filter(|w| w.overproduced())
        .map(|w| format!("{}: {} certificates for a quantity of {}", w.id, w.certified.max(w.issued), w.quantity))
        .collect();
    let open: Vec<&imprint_store::WorkOrderRow> = all.iter().filter(|w| w.status == imprint_store::WorkOrderStatus::Open).collect();
    let detail = open
        .iter()
        .map(|w| format!("{} {}/{} issued", w.id, w.issued, w.quantity))
        .collect::<Vec<_>>()
        .join("; ")
        .chars()
        .take(400)
        .collect();
    let detail = if open.is_empty() { "no open work order".to_string() } else { detail };
    if !over.is_empty() {
        return item(
            ID,
            TITLE,
            Level::Error,
            format!("OVERPRODUCTION: {}; report it to security (the audit trail has an overproduction entry)", over.join("; ")),
            Some(format!("more certificates than the quantity: {}", over.join("; "))),
        );
    }
    let used_up: Vec<&str> = open.iter().filter(|w| w.remaining() == 0).map(|w| w.id.as_str()).collect();
    if !used_up.is_empty() {
        return item(ID, TITLE, Level::Warn, format!("used up (close it or add another): {}; {detail}", used_up.join(", ")), None);
    }
    item(ID, TITLE, Level::Ok, detail, None)
}

fn store_item(store: &Store, running: Option<&LockHolder>) -> HealthItem {
    let beside = running.map(|h| format!("; in use by a running station ({h}), read here read-only")).unwrap_or_default();
    match store.attempts(&imprint_store::AttemptFilter { limit: Some(1), ..Default::default() }) {
        Ok(latest) => {
            let last = latest.first().map(|a| format!("last record written {}", a.started_at)).unwrap_or_else(|| "no records yet".into());
            item("local_store", "Local store", Level::Ok, format!("{}: readable; {last}{beside}", store.path().display()), None)
        }
        Err(e) => item("local_store", "Local store", Level::Error, store.path().display().to_string(), Some(e.to_string())),
    }
}

/// The signer opened by this process for one check, then closed.
fn signer_item_standalone(cfg: &StationConfig, pin: Option<imprint_signer::Pin>) -> (HealthItem, Option<SignerHealth>) {
    let uri = cfg.signer_uri();
    let kind = uri.split(':').next().unwrap_or_default().to_string();
    let chain_path = cfg.ca_chain_path();
    if cfg.is_development() && !chain_path.exists() {
        // Opening the development signer would create its key: leave that
        // to the station.
        let detail = format!("{uri} (dev): no DEVELOPMENT CA yet: a station creates it when it first starts");
        return (item("signer", "CA signer", Level::Warn, detail, None), None);
    }
    let mut signer = match imprint_signer::open_signer(&uri, pin) {
        Ok(s) => s,
        Err(e) => {
            let h = SignerHealth::from_open_error(&uri, &kind, &e);
            let detail = format!("{uri} ({kind}): the signer could not be opened");
            return (item("signer", "CA signer", Level::Error, detail, Some(e.to_string())), Some(h));
        }
    };
    let info = signer.info();
    let mut h = SignerHealth::opened(&info.uri, info.kind, info.development);
    let now = time::OffsetDateTime::now_utc();
    let ca = std::fs::read_to_string(&chain_path)
        .map_err(|e| format!("no CA certificate at {} ({e}): create one with `imprint ca init`", chain_path.display()))
        .and_then(|t| imprint_core::ca::load_chain_pem(&t).map_err(|e| e.to_string()))
        .and_then(|chain| {
            let issuing = chain.first().ok_or_else(|| "the CA chain file is empty".to_string())?;
            imprint_core::ca::check_ca_matches_signer(issuing, signer.as_ref()).map_err(|e| e.to_string())?;
            // Expired or not yet valid: red, with the dates.
            let validity = imprint_core::ca::check_chain_validity(&chain, now).map_err(|e| e.to_string())?;
            imprint_core::issuance::summarize(issuing).map(|s| (s.subject, validity))
        });
    let t = Instant::now();
    let signed = signer.sign(b"imprint health check");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    match &signed {
        Ok(_) => h.record_ok(),
        Err(e) => h.record_err(e),
    }
    // Close it here (PKCS#11: session closed, module finalized) before the
    // process goes on to exit.
    drop(signer);
    let ca_text = ca.as_ref().map(|(s, _)| s.as_str()).unwrap_or("?");
    let base = format!("{} ({}); CA {ca_text}", info.uri, info.kind);
    let it = match (&ca, signed) {
        (Err(e), _) => {
            item("signer", "CA signer", Level::Error, format!("{base}: the CA certificate is not usable (see the error)"), Some(e.clone()))
        }
        (Ok(_), Ok(_)) if info.development => item(
            "signer",
            "CA signer",
            Level::Warn,
            format!("{base}: signed in {ms:.1} ms; DEVELOPMENT CA: certificates are for testing only"),
            None,
        ),
        (Ok(_), Ok(_)) => {
            item("signer", "CA signer", Level::Ok, format!("{base}: reachable, key present, PIN accepted; signed in {ms:.1} ms"), None)
        }
        (Ok(_), Err(e)) => item("signer", "CA signer", Level::Error, format!("{base}: {}", signer_trouble(h.state)), Some(e.to_string())),
    };
    let it = match &ca {
        Ok((_, validity)) => with_ca_expiry(it, validity, cfg.ca_expiry_warn_days, now),
        Err(_) => it,
    };
    (it, Some(h))
}

/// The CA chain's expiry on the signer item: red once expired or not yet
/// valid (a station that has run past its CA's notAfter), amber inside the
/// warning window (`ca_expiry_warn_days`), always with the date.
fn with_ca_expiry(mut it: HealthItem, v: &imprint_core::ca::ChainValidity, warn_days: u32, now: time::OffsetDateTime) -> HealthItem {
    use imprint_core::ca::rfc3339;
    let (level, text) = if now > v.not_after {
        (
            Level::Error,
            format!(
                "the CA certificate {:?} expired on {}: nothing issued now would verify; install a valid chain (imprint ca import --force)",
                v.first_to_expire,
                rfc3339(v.not_after)
            ),
        )
    } else if now < v.not_before {
        (Level::Error, format!("the CA chain is not valid until {}: check the station's clock", rfc3339(v.not_before)))
    } else if v.days_left(now) < i64::from(warn_days) {
        (
            Level::Warn,
            format!(
                "the CA certificate {:?} expires on {} (in {} days): device certificates are cut short to end then; renew the CA",
                v.first_to_expire,
                rfc3339(v.not_after),
                v.days_left(now)
            ),
        )
    } else {
        (Level::Ok, format!("CA valid until {}", rfc3339(v.not_after)))
    };
    it.detail = format!("{}; {text}", it.detail);
    if level == Level::Error {
        it.last_error.get_or_insert(text);
    }
    it.level = worst(it.level, level);
    it
}

/// The more severe of two levels (`Off` counts as fine).
fn worst(a: Level, b: Level) -> Level {
    let rank = |l: Level| match l {
        Level::Off | Level::Ok => 0,
        Level::Warn => 1,
        Level::Error => 2,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

fn signer_trouble(state: crate::signer_worker::SignerState) -> &'static str {
    match state {
        crate::signer_worker::SignerState::Unreachable => "unreachable (network, timeout or throttling)",
        crate::signer_worker::SignerState::KeyMissing => "the CA key is missing or disabled",
        _ => "the signer refuses to sign (credentials, PIN or token)",
    }
}

/// The central database, from the local store's sync state (no network:
/// offline is normal for a station; records wait in the outbox): backlog,
/// last success, last error, quarantined records (red: an operator must look).
fn central_item(cfg: &StationConfig, store: Option<&Store>, live: Option<imprint_sync::LiveStatus>) -> HealthItem {
    if cfg.central.is_none() {
        return item("central_db", "Central database", Level::Off, "not configured: records stay on this station".into(), None);
    }
    let Some(store) = store else {
        return item("central_db", "Central database", Level::Warn, "no local store yet: nothing to sync".into(), None);
    };
    match imprint_sync::SyncStatus::read(store) {
        Err(e) => item("central_db", "Central database", Level::Error, "sync state unreadable".into(), Some(e.to_string())),
        Ok(s) => {
            // The last error is shown only while the center is failing: a
            // success after it clears it from the card.
            let last_error = match (s.state, &s.last_error_at, &s.last_error) {
                ("failing", Some(at), Some(e)) => Some(format!("{e} (at {at})")),
                _ => None,
            };
            let records = store.pending_records().unwrap_or(0);
            let mut detail = format!(
                "{records} records waiting to sync ({} changes); last success {}",
                s.backlog,
                s.last_success_at.as_deref().unwrap_or("never")
            );
            if let Some(ms) = live.as_ref().and_then(|l| l.retry_in_ms) {
                detail.push_str(&format!("; unreachable, retrying in {:.1} s", ms as f64 / 1e3));
            }
            let level = if !s.quarantined.is_empty() {
                detail.push_str(&format!(
                    "; {} records quarantined (conflict with the center): see `imprint sync status`",
                    s.quarantined.len()
                ));
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
    let ctx = station.ctx();
    with_ca_expiry(signer_item_signing(station), &ctx.ca_validity, ctx.cfg.ca_expiry_warn_days, time::OffsetDateTime::now_utc())
}

fn signer_item_signing(station: &Station) -> HealthItem {
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
        Err(e) => item("signer", "CA signer", Level::Error, format!("{base}: {}", signer_trouble(h.state)), Some(e.to_string())),
    }
}

/// The broker: connect (TCP, TLS or mTLS as configured), publish and receive
/// on the health topic; the failure class says what to fix.
fn mqtt_item(cfg: &StationConfig, store: Option<&Store>, publisher: Option<&crate::events::EventPublisher>) -> HealthItem {
    let Some(m) = &cfg.mqtt else {
        return item("mqtt", "MQTT broker", Level::Off, "not configured".into(), None);
    };
    let checked = imprint_mqtt::Endpoint::from_config(m, "").and_then(|ep| imprint_mqtt::check(&ep, &m.health_topic));
    let events = match store {
        Some(s) => crate::events::queue_summary(s, publisher),
        None => "events: no local store yet".into(),
    };
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
                imprint_mqtt::MqttError::TlsVerification(_) => {
                    "the broker's certificate does not verify against mqtt.server_ca / mqtt.ca_bundle"
                }
                imprint_mqtt::MqttError::Refused(_) => "the broker refused this station (credentials, authorization or client certificate)",
                imprint_mqtt::MqttError::Timeout(_) => "the broker did not answer in time",
                imprint_mqtt::MqttError::Config(_) => "the [mqtt] configuration is unusable",
                imprint_mqtt::MqttError::Other(_) => "the broker connection failed",
            };
            item("mqtt", "MQTT broker", Level::Error, format!("{}: {what}; {events}", m.url), Some(e.to_string()))
        }
    }
}
