//! Provisioning events over MQTT, and the station-side check of what the
//! broker will see.
//!
//! After a pass, the driver builds a JSON event ([`new_event`]) and the store
//! writes it in the same transaction as the pass (`mqtt_events`, migration
//! 0003). The [`EventPublisher`] thread sends pending events at QoS 1 when the
//! broker is reachable (retrying with backoff) and marks each one sent only
//! after its PUBACK. On shutdown ([`EventPublisher::shutdown`], called by
//! `Station::shutdown` before the store writer stops) it keeps sending and
//! retrying until the drain deadline, so events queued while the broker was
//! down go out in the same run when it is back. Only a crash (kill -9, power)
//! between PUBACK and the mark re-sends one: a QoS 1 duplicate, which
//! subscribers drop by `event_id`.

use crate::station::StationCtx;
use imprint_mqtt::{ClientCertProblem, Endpoint, MqttConfig};
use imprint_proto::session::{Failure, Identity, Stage};
use imprint_proto::FailureCode;
use imprint_store::{CertStatus, NewMqttEvent, Store};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Events sent per publish round (one connection).
const BATCH: usize = 100;
/// First and longest wait after a failed round.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How often an idle publisher looks at the queue without being woken.
const IDLE_POLL: Duration = Duration::from_secs(2);

/// The event a subscriber receives (JSON). `event_id` is stable across
/// re-sends: deduplicate on it.
#[derive(Clone, Debug, Serialize)]
pub struct ProvisionedEvent {
    pub event_id: String,
    /// Always `device_provisioned`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub device_id: String,
    pub certificate_serial: String,
    pub certificate_sha256: String,
    pub station_id: String,
    pub batch: Option<String>,
    /// RFC 3339 UTC, when the pass was recorded.
    pub time: String,
    pub attempt_id: String,
    /// The certificate had been issued before (resumed session).
    pub resumed: bool,
    /// The device was already locked with this certificate.
    pub already_provisioned: bool,
}

/// The queued event for a passed attempt, or None when MQTT is not configured.
pub fn new_event(
    ctx: &StationCtx,
    attempt_id: &str,
    identity: &Identity,
    batch: Option<String>,
    resumed: bool,
    already_provisioned: bool,
) -> Option<NewMqttEvent> {
    let m = ctx.cfg.mqtt.as_ref()?;
    let cert =
        ctx.store.attempt(attempt_id).ok().flatten().and_then(|a| a.certificate_id).and_then(|id| ctx.store.cert_by_id(&id).ok().flatten());
    let (serial, fingerprint) = cert.map(|c| (c.serial_hex, c.fingerprint_sha256.unwrap_or_default())).unwrap_or_default();
    let ev = ProvisionedEvent {
        event_id: imprint_store::new_id(),
        kind: "device_provisioned",
        device_id: identity.serial.clone(),
        certificate_serial: serial,
        certificate_sha256: fingerprint,
        station_id: ctx.cfg.station_id.clone(),
        batch,
        time: imprint_store::now_text(),
        attempt_id: attempt_id.to_string(),
        resumed,
        already_provisioned,
    };
    let payload = match serde_json::to_string(&ev) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "could not encode the provisioning event");
            return None;
        }
    };
    Some(NewMqttEvent { id: ev.event_id, topic: m.events_topic.clone(), payload })
}

/// Station-side check after issuance: would the broker accept this
/// certificate from the device? It must chain to the configured CA bundle,
/// allow clientAuth, and not be revoked in the local store. `Ok` when no
/// `[mqtt]` CA bundle is configured.
pub fn check_broker_acceptance(
    ctx: &StationCtx,
    stage: Stage,
    cert_der: &[u8],
    serial_hex: &str,
    spki_sha256: &str,
) -> Result<(), Failure> {
    let Some(bundle) = ctx.cfg.mqtt.as_ref().and_then(|m| m.ca_bundle.as_ref()) else {
        return Ok(());
    };
    let fail = |code: FailureCode, reason: String| Failure::new(stage, code, reason);
    let trusted = imprint_mqtt::load_certs_pem(bundle)
        .map_err(|e| fail(FailureCode::BrokerCaUnreadable, format!("the broker's CA bundle cannot be read: {e}")))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    imprint_mqtt::verify_client_cert(cert_der, &ctx.chain, &trusted, now).map_err(|p| {
        let code = match p {
            ClientCertProblem::Parse(_) => FailureCode::CertUnparsable,
            ClientCertProblem::NotYetValid(_) => FailureCode::CertNotYetValid,
            ClientCertProblem::Expired(_) => FailureCode::CertExpired,
            ClientCertProblem::NoClientAuth => FailureCode::CertNoClientAuth,
            ClientCertProblem::Untrusted(_) => FailureCode::CertUntrustedByBroker,
        };
        fail(code, format!("the broker would refuse certificate {serial_hex}: {p}"))
    })?;
    // One current certificate per key: the key's row (its current one) is this certificate's row.
    let revoked = ctx
        .store
        .cert_by_spki(spki_sha256)
        .map_err(|e| fail(e.failure_code(), format!("local store: {e}")))?
        .is_some_and(|c| c.serial_hex == serial_hex && c.status == CertStatus::Revoked);
    if revoked {
        return Err(fail(FailureCode::CertificateRevoked, format!("certificate {serial_hex} is revoked in the local store")));
    }
    Ok(())
}

/// What the publisher has seen lately, for health displays.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PublisherStatus {
    /// The last round's failure, None after a successful round.
    pub last_error: Option<String>,
    pub last_sent_at: Option<String>,
    pub sent: u64,
}

/// The background thread that sends queued events.
pub struct EventPublisher {
    wake: Mutex<mpsc::Sender<()>>,
    stop: Arc<AtomicBool>,
    /// Set by [`EventPublisher::shutdown`]: send what is queued until then, then end.
    drain_until: Arc<Mutex<Option<Instant>>>,
    status: Arc<Mutex<PublisherStatus>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    done: Mutex<Option<mpsc::Receiver<()>>>,
}

/// What [`EventPublisher::shutdown`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PublisherDrain {
    /// Events acked and marked sent during the drain.
    pub sent: u64,
    /// Events still queued (sent by the next station run; -1: unknown).
    pub left: i64,
    /// The thread ended (false: still in a broker call at the deadline).
    pub joined: bool,
}

impl EventPublisher {
    /// Start publishing the store's pending events to the broker of `cfg`.
    pub fn spawn(store: Arc<Store>, cfg: MqttConfig, station_id: &str) -> std::io::Result<EventPublisher> {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let drain_until = Arc::new(Mutex::new(None));
        let status = Arc::new(Mutex::new(PublisherStatus::default()));
        let client_id = format!("imprint-events-{station_id}-{}", imprint_store::new_id().get(24..).unwrap_or_default());
        let (s2, d2, st2) = (stop.clone(), drain_until.clone(), status.clone());
        let (done_tx, done_rx) = mpsc::channel();
        let thread = std::thread::Builder::new().name("imprint-mqtt-events".into()).spawn(move || {
            publish_loop(&store, &cfg, &client_id, &rx, &s2, &d2, &st2);
            let _ = done_tx.send(());
        })?;
        Ok(EventPublisher {
            wake: Mutex::new(tx),
            stop,
            drain_until,
            status,
            thread: Mutex::new(Some(thread)),
            done: Mutex::new(Some(done_rx)),
        })
    }

    /// Look at the queue now (a pass was just recorded).
    pub fn wake(&self) {
        if let Ok(tx) = self.wake.lock() {
            let _ = tx.send(());
        }
    }

    pub fn status(&self) -> PublisherStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Send what is queued (retrying a broker that is down) until `deadline`,
    /// marking each event sent after its PUBACK, then end the thread and join
    /// it. Call while the store writer still runs: the marks go through it.
    pub fn shutdown(&self, store: &Store, deadline: Instant) -> PublisherDrain {
        let before = self.status().sent;
        if let Ok(mut d) = self.drain_until.lock() {
            *d = Some(deadline);
        }
        self.wake();
        let done = self.done.lock().ok().and_then(|mut d| d.take());
        // A broker call may overrun the deadline by its own timeout (capped
        // to what was left when it started): allow one more second.
        let joined = match done {
            Some(rx) => match rx.recv_timeout(deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1)) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if let Ok(mut t) = self.thread.lock() {
                        if let Some(h) = t.take() {
                            let _ = h.join();
                        }
                    }
                    true
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.stop.store(true, Ordering::Relaxed);
                    false
                }
            },
            None => true,
        };
        let left = store.mqtt_event_counts().map(|c| c.pending).unwrap_or(-1);
        PublisherDrain { sent: self.status().sent.saturating_sub(before), left, joined }
    }
}

impl Drop for EventPublisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake();
        if let Ok(mut t) = self.thread.lock() {
            if let Some(h) = t.take() {
                let _ = h.join();
            }
        }
    }
}

fn set_status(status: &Mutex<PublisherStatus>, f: impl FnOnce(&mut PublisherStatus)) {
    if let Ok(mut s) = status.lock() {
        f(&mut s);
    }
}

/// Wait for a wake-up up to `d`, but never past a drain deadline.
fn wait(wake: &mpsc::Receiver<()>, d: Duration, drain: Option<Instant>) {
    let d = match drain {
        Some(until) => d.min(until.saturating_duration_since(Instant::now())),
        None => d,
    };
    if !d.is_zero() {
        let _ = wake.recv_timeout(d);
    }
}

fn publish_loop(
    store: &Store,
    cfg: &MqttConfig,
    client_id: &str,
    wake: &mpsc::Receiver<()>,
    stop: &AtomicBool,
    drain_until: &Mutex<Option<Instant>>,
    status: &Mutex<PublisherStatus>,
) {
    let mut backoff = BACKOFF_MIN;
    let draining = || drain_until.lock().map(|d| *d).unwrap_or(None);
    while !stop.load(Ordering::Relaxed) {
        let drain = draining();
        if drain.is_some_and(|until| Instant::now() >= until) {
            break;
        }
        let pending = match store.pending_mqtt_events(BATCH) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "MQTT events: cannot read the queue");
                wait(wake, BACKOFF_MAX, drain);
                continue;
            }
        };
        if pending.is_empty() {
            if drain.is_some() {
                break;
            }
            wait(wake, IDLE_POLL, drain);
            continue;
        }
        let result = Endpoint::from_config(cfg, client_id).map(|mut ep| {
            if let Some(until) = drain {
                // Never wait on the broker past the drain deadline.
                ep.timeout = ep.timeout.min(until.saturating_duration_since(Instant::now()).max(Duration::from_millis(100)));
            }
            let msgs: Vec<(String, Vec<u8>)> = pending.iter().map(|e| (e.topic.clone(), e.payload.clone().into_bytes())).collect();
            imprint_mqtt::publish_qos1(&ep, &msgs)
        });
        let (acked, error) = match result {
            Ok(p) => (p.acked, p.error),
            Err(e) => (0, Some(e)),
        };
        if acked > 0 {
            let ids: Vec<String> = pending[..acked].iter().map(|e| e.id.clone()).collect();
            match store.mark_mqtt_events_sent(&ids) {
                Ok(()) => {
                    tracing::info!(sent = acked, "MQTT events published (PUBACK received)");
                    set_status(status, |s| {
                        s.sent += acked as u64;
                        s.last_sent_at = Some(imprint_store::now_text());
                    });
                }
                // Sent but not marked: they go again (a QoS 1 duplicate).
                Err(e) => tracing::warn!(error = %e, "MQTT events: acked but could not be marked sent"),
            }
        }
        match error {
            None => {
                backoff = BACKOFF_MIN;
                set_status(status, |s| s.last_error = None);
            }
            Some(e) => {
                tracing::warn!(code = e.code(), error = %e, retry_in_ms = backoff.as_millis() as u64, "MQTT events: broker not reachable; events stay queued");
                if let Some(ev) = pending.get(acked) {
                    let _ = store.note_mqtt_event_failure(&ev.id, &e.to_string());
                }
                set_status(status, |s| s.last_error = Some(e.to_string()));
                // A wake-up (new pass) does not cut the backoff short; a
                // stop does, and a drain deadline bounds it.
                let until = Instant::now() + backoff;
                while !stop.load(Ordering::Relaxed) {
                    let mut left = until.saturating_duration_since(Instant::now());
                    if let Some(d) = draining() {
                        left = left.min(d.saturating_duration_since(Instant::now()));
                    }
                    if left.is_zero() {
                        break;
                    }
                    let _ = wake.recv_timeout(left);
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// One line on the event queue for the health view.
pub fn queue_summary(store: &Store, publisher: Option<&EventPublisher>) -> String {
    let counts = match store.mqtt_event_counts() {
        Ok(c) => format!("events: {} queued, {} sent", c.pending, c.sent),
        Err(e) => format!("events: queue unreadable ({e})"),
    };
    match publisher.map(EventPublisher::status).and_then(|s| s.last_error) {
        Some(e) => format!("{counts}; last publish failed: {e}"),
        None => counts,
    }
}
