//! Drives one device session on one port: carries out the session's actions
//! (serial I/O with deadlines, store look-ups, journaled issuance through the
//! signer worker, proof checks) and records every step as it happens.

use crate::config::SignerOffline;
use crate::station::{Progress, ProgressFn, ProgressStatus, StationCtx};
use imprint_core::issuance::{self, spki_sha256_hex, CsrBinding};
use imprint_nrf91::{Nrf91Config, Nrf91Session};
use imprint_proto::session::{Action, Failure, Identity, Input, IssuedChain, Outcome, Reissue, SessionConfig, Stage};
use imprint_proto::{Decoded, Decoder, DeviceSession, DialectKind, Direction, FailureCode, Heard, KeyAlg, NativeDialect};
use imprint_serial::{SerialTransport, Transport, TransportError};
use imprint_store::{
    now_text, AttemptEnd, CertRow, CertStatus, DeviceFacts, Intent, Recorded, StepRow, StoreError, Supersede, Timestamp, WorkOrderRefusal,
};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Console lines kept per attempt (the rest are counted, not stored).
const MAX_CONSOLE_LINES: usize = 200;

/// The result of one attempt.
#[derive(Clone, Debug)]
pub struct AttemptResult {
    pub attempt_id: String,
    pub port: String,
    pub outcome: Outcome,
    pub bytes_to_device: u64,
    pub bytes_from_device: u64,
    pub elapsed: Duration,
}

impl AttemptResult {
    pub fn passed(&self) -> bool {
        matches!(self.outcome, Outcome::Passed { .. })
    }

    /// Ended at a safe point because the station was stopping (not a device
    /// failure: it resumes on the next run).
    pub fn stopped_by_shutdown(&self) -> bool {
        matches!(&self.outcome, Outcome::Failed(f) if f.code == FailureCode::StationStopping)
    }
}

/// Fault injection for crash-recovery tests: when `IMPRINT_TEST_CRASH_AT`
/// names this point, the process aborts on the spot, as a power cut or a
/// `kill -9` would stop it. Points: `after_journal`, `after_sign`,
/// `after_record`, and `send:<VERB>` (before each request of that verb, e.g.
/// `send:RESET` in a rework, `send:CSR` after the reset or in a renewal).
fn crash_point(name: &str) {
    if let Ok(want) = std::env::var("IMPRINT_TEST_CRASH_AT") {
        if want == name {
            eprintln!("imprint: IMPRINT_TEST_CRASH_AT={name}: aborting");
            std::process::abort();
        }
    }
}

/// Nonces from the OS CSPRNG; a session never starts without them.
fn random_bytes(n: usize) -> Result<Vec<u8>, Failure> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).map_err(|e| failure(Stage::Hello, FailureCode::NoRandomness, format!("the OS random source failed: {e}")))?;
    Ok(v)
}

/// A failure with its code's catalogue hint and retryable flag.
fn failure(stage: Stage, code: FailureCode, reason: String) -> Failure {
    Failure::new(stage, code, reason)
}

struct Run<'a> {
    ctx: &'a StationCtx,
    attempt_id: String,
    port: String,
    progress: Option<&'a ProgressFn>,
    notes: Vec<StepRow>,
    console_kept: usize,
    bytes_out: u64,
    bytes_in: u64,
    serial: Option<String>,
    last_stage: Stage,
    /// What the certificate this attempt issues replaces (renewal, rework),
    /// decided at the lookup and carried out in the journal transaction.
    reissue: Option<Supersede>,
    /// The device was sent RESET under a rework authorisation in this attempt.
    reworked: bool,
    /// When `last_stage` began (its time goes to the stage histogram).
    stage_since: Instant,
    /// The work order recorded on the attempt.
    batch: Option<String>,
}

impl Run<'_> {
    fn persist(&mut self) -> Result<(), Failure> {
        if self.notes.is_empty() {
            return Ok(());
        }
        let notes = std::mem::take(&mut self.notes);
        self.ctx
            .store
            .record_steps(&self.attempt_id, notes)
            .map_err(|e| failure(self.last_stage, e.failure_code(), format!("the local store could not record this step: {e}")))
    }

    fn take_session_notes(&mut self, session: &mut dyn DeviceSession) {
        for n in session.take_notes() {
            self.notes.push(StepRow { at: now_text(), stage: n.stage.as_str().into(), kind: n.kind.as_str().into(), detail: n.detail });
        }
        if self.serial.is_none() {
            self.serial = session.identity().map(|i| i.serial.clone());
        }
        let stage = session.stage();
        if stage != self.last_stage {
            self.ctx.metrics.stage_time(self.last_stage, self.stage_since.elapsed());
            self.stage_since = Instant::now();
            self.last_stage = stage;
            self.report(ProgressStatus::Running);
        }
    }

    /// Record how the attempt failed as its last step.
    fn note_failure(&mut self, f: &Failure) {
        self.notes.push(StepRow {
            at: now_text(),
            stage: f.stage.as_str().into(),
            kind: "failed".into(),
            detail: format!("{}: {}", f.code, f.reason),
        });
    }

    fn report(&self, status: ProgressStatus) {
        if let Some(p) = self.progress {
            p(&Progress {
                port: self.port.clone(),
                attempt_id: self.attempt_id.clone(),
                stage: self.last_stage,
                percent: self.last_stage.progress(),
                device_serial: self.serial.clone(),
                status,
            });
        }
    }

    fn console(&mut self, line: String) {
        if self.console_kept < MAX_CONSOLE_LINES {
            self.console_kept += 1;
            let l = cut_at_char_boundary(line, MAX_CONSOLE_LINE_BYTES);
            self.notes.push(StepRow { at: now_text(), stage: self.last_stage.as_str().into(), kind: "console".into(), detail: l });
        }
    }
}

/// Bytes of one console line kept in a step.
const MAX_CONSOLE_LINE_BYTES: usize = 200;

/// `s` cut to at most `max` bytes, never inside a UTF-8 character (device
/// text is hostile: `String::truncate` panics on a byte inside a character).
fn cut_at_char_boundary(mut s: String, max: usize) -> String {
    if s.len() > max {
        let end = (0..=max).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        s.truncate(end);
    }
    s
}

/// The text of a caught panic payload.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Run one provisioning attempt on `port`. Never panics on device
/// behaviour: every ending is a recorded outcome.
pub fn run_attempt(ctx: &StationCtx, port: &str, progress: Option<&ProgressFn>) -> Result<AttemptResult, imprint_store::StoreError> {
    attempt(ctx, port, None, progress)
}

/// [`run_attempt`] over a transport the caller opened (an in-memory link in
/// tests and fuzzing); `port` is the name recorded.
pub fn run_attempt_on(
    ctx: &StationCtx,
    port: &str,
    transport: &mut dyn Transport,
    progress: Option<&ProgressFn>,
) -> Result<AttemptResult, imprint_store::StoreError> {
    attempt(ctx, port, Some(transport), progress)
}

fn attempt(
    ctx: &StationCtx,
    port: &str,
    transport: Option<&mut dyn Transport>,
    progress: Option<&ProgressFn>,
) -> Result<AttemptResult, imprint_store::StoreError> {
    let started = Instant::now();
    let batch = ctx.batch();
    let attempt_id = ctx.store.begin_attempt_by(port, batch.as_deref(), ctx.operator().as_deref())?;
    let _inflight = ctx.inflight.enter(&attempt_id, port);
    let span =
        tracing::info_span!("session", port = %port, attempt = %attempt_id, station = %ctx.cfg.station_id, serial = tracing::field::Empty);
    let _enter = span.enter();
    let mut run = Run {
        ctx,
        attempt_id: attempt_id.clone(),
        port: port.to_string(),
        progress,
        notes: Vec::new(),
        console_kept: 0,
        bytes_out: 0,
        bytes_in: 0,
        serial: None,
        last_stage: Stage::Hello,
        reissue: None,
        reworked: false,
        stage_since: Instant::now(),
        batch: batch.clone(),
    };
    run.report(ProgressStatus::Running);
    // A fault in the station's own code (a panic) ends this attempt as a
    // recorded `internal_error` instead of killing the port thread, so the
    // attempt is never left running and the tile can be retried.
    let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| open_and_drive(&mut run, port, transport, &span))) {
        Ok(outcome) => outcome,
        Err(payload) => {
            let f = failure(
                run.last_stage,
                FailureCode::InternalError,
                cut_at_char_boundary(format!("internal fault in the station: {}", panic_text(payload.as_ref())), 500),
            );
            tracing::error!(stage = f.stage.as_str(), reason = %f.reason, "internal fault during an attempt");
            run.note_failure(&f);
            Outcome::Failed(f)
        }
    };
    let _ = run.persist();
    let end = match &outcome {
        Outcome::Passed { resumed, .. } => AttemptEnd::Passed { resumed: *resumed },
        Outcome::Failed(f) => {
            AttemptEnd::Failed { stage: f.stage, code: f.code, reason: f.reason.clone(), hint: f.hint.clone(), retryable: f.retryable }
        }
    };
    // The pass and its MQTT event (if configured) commit in one transaction.
    let event = match &outcome {
        Outcome::Passed { identity, resumed, already_provisioned, .. } => {
            crate::events::new_event(ctx, &attempt_id, identity, batch.clone(), *resumed, *already_provisioned)
        }
        Outcome::Failed(_) => None,
    };
    let queued = event.is_some();
    ctx.store.finish_attempt_with_event(&attempt_id, end, run.bytes_out, run.bytes_in, event)?;
    ctx.metrics.stage_time(run.last_stage, run.stage_since.elapsed());
    ctx.metrics.attempt_finished(
        match &outcome {
            Outcome::Passed { .. } => None,
            Outcome::Failed(f) => Some(f.code),
        },
        started.elapsed(),
    );
    if queued {
        if let Some(p) = &ctx.events {
            p.wake();
        }
    }
    match &outcome {
        Outcome::Passed { cert_serial_hex, resumed, already_provisioned, .. } => {
            tracing::info!(cert_serial = %cert_serial_hex, resumed, recheck = already_provisioned, "device passed");
            run.last_stage = Stage::Done;
            run.report(ProgressStatus::Passed {
                cert_serial: cert_serial_hex.clone(),
                resumed: *resumed && !*already_provisioned,
                recheck: *already_provisioned,
            });
        }
        Outcome::Failed(f) => {
            tracing::warn!(stage = f.stage.as_str(), code = %f.code, reason = %f.reason, "device failed");
            run.report(ProgressStatus::Failed { code: f.code, reason: f.reason.clone(), hint: f.hint.clone(), retryable: f.retryable });
        }
    }
    Ok(AttemptResult {
        attempt_id,
        port: port.to_string(),
        outcome,
        bytes_to_device: run.bytes_out,
        bytes_from_device: run.bytes_in,
        elapsed: started.elapsed(),
    })
}

/// Open the port (unless the caller brought a transport) and drive the session.
fn open_and_drive(run: &mut Run<'_>, port: &str, transport: Option<&mut dyn Transport>, span: &tracing::Span) -> Outcome {
    if let Some(f) = refuse_without_work_order(run) {
        return Outcome::Failed(f);
    }
    if let Some(f) = refuse_while_signer_offline(run) {
        return Outcome::Failed(f);
    }
    if let Some(t) = transport {
        return drive(run, t, span);
    }
    match SerialTransport::open(port, run.ctx.cfg.baud) {
        Ok(mut t) => drive(run, &mut t, span),
        Err(e) => {
            let code = match e {
                TransportError::Busy(_) => FailureCode::PortBusy,
                TransportError::NotFound(_) => FailureCode::PortMissing,
                _ => FailureCode::PortOpen,
            };
            Outcome::Failed(failure(Stage::Hello, code, e.to_string()))
        }
    }
}

/// `[work_orders] required = true`: a device is not started without a work
/// order (it makes no key). Whether the work order may issue is decided
/// where the certificate is journaled, so a device already certified under
/// it still resumes.
fn refuse_without_work_order(run: &mut Run<'_>) -> Option<Failure> {
    if !run.ctx.cfg.work_orders.required || run.batch.is_some() {
        return None;
    }
    let f = failure(
        Stage::Hello,
        FailureCode::WorkOrderRequired,
        "not started: no work order is set and this station provisions only under one ([work_orders] required = true); \
         the device was not touched"
            .into(),
    );
    run.note_failure(&f);
    Some(f)
}

/// Offline policy `refuse`: while the signer is known unreachable (its last
/// call failed and a fresh check fails too), a new device is not started at
/// all, so it makes no key and no CSR. `defer` starts it anyway.
fn refuse_while_signer_offline(run: &mut Run<'_>) -> Option<Failure> {
    if run.ctx.cfg.signer_offline != SignerOffline::Refuse {
        return None;
    }
    let e = run.ctx.signer.ready_for_new_device().err()?;
    let f = failure(
        Stage::Hello,
        e.code(),
        format!(
            "not started: the CA signer is unreachable ({e}); the device was not touched \
             (to provision while it is down and finish later, set signer_offline = \"defer\")"
        ),
    );
    tracing::warn!(code = %f.code, reason = %f.reason, "device not started: signer unreachable");
    run.note_failure(&f);
    Some(f)
}

/// The failure recorded when signing a journaled certificate failed. Under
/// `defer`, a retryable failure says the certificate is deferred: the
/// journaled intent is completed on the device's next attach.
fn signing_failure(ctx: &StationCtx, e: &imprint_core::signer::SignerError) -> Failure {
    if e.is_retryable() && ctx.cfg.signer_offline == SignerOffline::Defer {
        return failure(
            Stage::Issue,
            FailureCode::SigningDeferred,
            format!("deferred: will finish when the signer is back (signing failed: {e})"),
        );
    }
    failure(Stage::Issue, e.code(), format!("signing failed: {e}"))
}

fn drive(run: &mut Run<'_>, t: &mut dyn Transport, span: &tracing::Span) -> Outcome {
    let ctx = run.ctx;
    let (csr_nonce, pop_nonce, rid) = match (random_bytes(32), random_bytes(32), random_bytes(2)) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, [c[0], c[1]]),
        (Err(f), _, _) | (_, Err(f), _) | (_, _, Err(f)) => return Outcome::Failed(f),
    };
    let cfg = SessionConfig {
        key_alg: match ctx.cfg.profile.device_key {
            imprint_core::issuance::KeyType::P256 => KeyAlg::P256,
            imprint_core::issuance::KeyType::P384 => KeyAlg::P384,
        },
        csr_nonce,
        pop_nonce,
        lock: ctx.cfg.profile.lock_device,
        retries: 2,
        link_bytes_per_sec: (ctx.cfg.baud / 10).max(1),
        first_rid: u16::from_be_bytes(rid) % 30000 + 1,
        connect: match connect_check(&ctx.cfg) {
            Ok(c) => c,
            Err(f) => return Outcome::Failed(f),
        },
        inspect: false,
    };
    let (dialect, why) = ctx.cfg.dialect_for(&run.port);
    let mut session: Box<dyn DeviceSession> = match dialect {
        DialectKind::Imprint => Box::new(NativeDialect::new(cfg)),
        DialectKind::Nrf91 => Box::new(Nrf91Session::new(Nrf91Config {
            sec_tag: ctx.cfg.nrf91.sec_tag,
            retries: 2,
            link_bytes_per_sec: (ctx.cfg.baud / 10).max(1),
        })),
    };
    run.notes.push(StepRow {
        at: now_text(),
        stage: Stage::Hello.as_str().into(),
        kind: "info".into(),
        detail: format!("dialect {dialect} ({why})"),
    });
    let mut pending: VecDeque<Heard> = VecDeque::new();
    let mut buf = [0u8; 2048];
    let mut deadline = Instant::now();
    let mut action = session.start();
    let mut device_recorded = false;
    loop {
        run.take_session_notes(session.as_mut());
        // The device's facts go on the attempt as soon as IDENT answers, so
        // an attempt that fails before the certificate lookup is still
        // found by its serial.
        if !device_recorded {
            if let Some(id) = session.identity() {
                device_recorded = true;
                span.record("serial", id.serial.as_str());
                if let Err(e) = ctx.store.set_device(&run.attempt_id, &facts(id)) {
                    return Outcome::Failed(store_failure(session.stage(), &e));
                }
            }
        }
        // A safe point: between requests. A stopping station ends the
        // attempt here; the device resumes where it stopped next time.
        if ctx.shutdown.is_draining() && matches!(action, Action::Send { .. } | Action::Write { .. } | Action::Wait { .. }) {
            return stopping(run, &action);
        }
        let input = match action {
            Action::Send { frame, timeout_ms } => {
                crash_point(&format!("send:{}", frame.head));
                let bytes = frame.encode();
                if let Err(e) = t.write_all(&bytes) {
                    Input::Gone(e.to_string())
                } else {
                    run.bytes_out += bytes.len() as u64;
                    deadline = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
                    // Commit the steps so far while the request is on the wire.
                    if let Err(f) = run.persist() {
                        return Outcome::Failed(f);
                    }
                    wait_input(run, t, session.as_mut(), &mut pending, &mut buf, deadline)
                }
            }
            Action::Write { bytes, what, timeout_ms } => {
                crash_point(&format!("send:{what}"));
                if let Err(e) = t.write_all(&bytes) {
                    Input::Gone(e.to_string())
                } else {
                    run.bytes_out += bytes.len() as u64;
                    deadline = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
                    if let Err(f) = run.persist() {
                        return Outcome::Failed(f);
                    }
                    wait_input(run, t, session.as_mut(), &mut pending, &mut buf, deadline)
                }
            }
            Action::KeepWaiting => wait_input(run, t, session.as_mut(), &mut pending, &mut buf, deadline),
            Action::Wait { ms } => {
                // Commit the steps so far while we wait out the device's BUSY.
                if let Err(f) = run.persist() {
                    return Outcome::Failed(f);
                }
                t.pause(Duration::from_millis(u64::from(ms)));
                Input::Waited
            }
            Action::Lookup { serial, spki_der } => {
                if let Err(f) = run.persist() {
                    return Outcome::Failed(f);
                }
                match lookup(run, &serial, &spki_der) {
                    Ok(Found::Reissue(r)) => Input::Reissue(r),
                    Ok(Found::Chain(found)) => Input::Lookup((|| {
                        if let Some(c) = &found {
                            broker_acceptance(run, Stage::Lookup, c, &spki_der)?;
                        }
                        Ok(found)
                    })()),
                    Err(f) => Input::Lookup(Err(f)),
                }
            }
            Action::Issue { identity, keygen_spki_der, csr_der, nonce, attestation } => {
                if let Some(a) = &attestation {
                    // What binds the CSR when it carries no nonce, on the record before anything is journaled.
                    run.notes.push(StepRow {
                        at: now_text(),
                        stage: Stage::Issue.as_str().into(),
                        kind: "attestation".into(),
                        detail: format!("{} device {} csr_sha256 {} cose {}", a.format, a.device_id, a.csr_sha256, a.raw),
                    });
                }
                if let Err(f) = run.persist() {
                    return Outcome::Failed(f);
                }
                let reissue = run.reissue.clone();
                let binding = match &attestation {
                    Some(_) => CsrBinding::Attested,
                    None => CsrBinding::Nonce(&nonce),
                };
                let issued = issue(ctx, &run.attempt_id, &identity, &keygen_spki_der, &csr_der, binding, reissue.as_ref()).and_then(|c| {
                    broker_acceptance(run, Stage::Issue, &c, &keygen_spki_der)?;
                    Ok(c)
                });
                Input::Issued(issued)
            }
            Action::CheckProof { spki_der, message, signature } => {
                Input::ProofChecked(issuance::verify_pop(&spki_der, &message, &signature))
            }
            Action::Finish(outcome) => {
                run.take_session_notes(session.as_mut());
                if let Outcome::Failed(f) = &outcome {
                    run.note_failure(f);
                }
                return outcome;
            }
        };
        action = session.handle(input);
    }
}

/// The attempt ends at a safe point because the station is stopping.
fn stopping(run: &mut Run<'_>, next: &Action) -> Outcome {
    let before = match next {
        Action::Send { frame, .. } => format!("before {}", frame.head),
        Action::Write { what, .. } => format!("before {what}"),
        _ => "while waiting out a busy device".to_string(),
    };
    let f = failure(
        run.last_stage,
        FailureCode::StationStopping,
        format!("the station was stopping: the attempt stopped at a safe point {before} (stage {})", run.last_stage.as_str()),
    );
    run.ctx.inflight.note_stopped();
    tracing::info!(stage = run.last_stage.as_str(), "attempt stopped at a safe point: the station is stopping");
    run.note_failure(&f);
    Outcome::Failed(f)
}

/// Station-side check of what the broker will see (docs/mqtt.md), recorded
/// as a step when it ran.
fn broker_acceptance(run: &mut Run<'_>, stage: Stage, c: &IssuedChain, spki_der: &[u8]) -> Result<(), Failure> {
    if run.ctx.cfg.mqtt.as_ref().and_then(|m| m.ca_bundle.as_ref()).is_none() {
        return Ok(());
    }
    crate::events::check_broker_acceptance(run.ctx, stage, &c.cert_der, &c.serial_hex, &spki_sha256_hex(spki_der))?;
    run.notes.push(StepRow {
        at: now_text(),
        stage: stage.as_str().into(),
        kind: "info".into(),
        detail: format!(
            "certificate {} would be accepted by the broker: chains to mqtt.ca_bundle, allows clientAuth, not revoked",
            c.serial_hex
        ),
    });
    Ok(())
}

/// The device broker check, when `[mqtt] device_check = true`: where the
/// device connects and the CA that verifies the broker (written as `brokerca`).
pub(crate) fn connect_check(cfg: &crate::StationConfig) -> Result<Option<imprint_proto::session::ConnectCheck>, Failure> {
    let Some(m) = cfg.mqtt.as_ref().filter(|m| m.device_check) else {
        return Ok(None);
    };
    let bad = |e: String| failure(Stage::Hello, FailureCode::MqttConfig, format!("the device broker check cannot start: {e}"));
    let broker = m.broker().map_err(|e| bad(e.to_string()))?;
    let ca = m.server_ca_path().ok_or_else(|| bad("mqtt.server_ca (or mqtt.ca_bundle) is needed for the device check".into()))?;
    let certs = imprint_mqtt::load_certs_pem(ca).map_err(|e| bad(e.to_string()))?;
    Ok(Some(imprint_proto::session::ConnectCheck {
        host: broker.host,
        port: broker.port,
        topic: m.device_topic.clone(),
        broker_ca_der: certs.concat(),
    }))
}

fn wait_input(
    run: &mut Run<'_>,
    t: &mut dyn Transport,
    session: &mut dyn DeviceSession,
    pending: &mut VecDeque<Heard>,
    buf: &mut [u8],
    deadline: Instant,
) -> Input {
    loop {
        while let Some(h) = pending.pop_front() {
            match h {
                Heard::Input(i) => return i,
                Heard::Console(line) => run.console(line),
            }
        }
        match t.read_until(buf, deadline) {
            Ok(0) => return Input::Timeout,
            Ok(n) => {
                run.bytes_in += n as u64;
                pending.extend(session.feed(&buf[..n]));
            }
            Err(e) => return Input::Gone(e.to_string()),
        }
    }
}

fn facts(id: &Identity) -> DeviceFacts {
    DeviceFacts {
        serial: id.serial.clone(),
        model: id.model.clone(),
        hw_rev: id.hw_rev.clone(),
        fw_version: id.fw_version.clone(),
        fw_hash: id.fw_hash.clone(),
        chip_uid: id.chip_uid.clone(),
    }
}

/// A store error as the attempt's failure: `store_full` when the disk is
/// full, else `store_error`.
fn store_failure(stage: Stage, e: &StoreError) -> Failure {
    failure(stage, e.failure_code(), format!("local store: {e}"))
}

/// What the lookup found for the device's key.
enum Found {
    /// A certificate to (re-)send, or none yet (CSR and issue).
    Chain(Option<IssuedChain>),
    /// A new certificate although the device has (or had) one: rework or renewal.
    Reissue(Reissue),
}

/// A certificate already issued for this key, re-sent on resume. A journaled
/// intent that never completed (the station stopped while signing) is
/// completed now with the identical plan: same serial, same validity. A
/// serial with an open rework authorisation is reset first (once per
/// attempt); a current certificate inside its renewal window is renewed.
fn lookup(run: &mut Run<'_>, serial: &str, spki_der: &[u8]) -> Result<Found, Failure> {
    let ctx = run.ctx;
    let attempt_id = run.attempt_id.clone();
    let key = spki_sha256_hex(spki_der);
    ctx.store.set_key(&attempt_id, &key).map_err(|e| store_failure(Stage::Lookup, &e))?;
    let rework =
        if run.reworked { None } else { ctx.store.open_rework(serial, &now_text()).map_err(|e| store_failure(Stage::Lookup, &e))? };
    let start_rework = |run: &mut Run<'_>, a: imprint_store::ReworkRow| -> Result<Found, Failure> {
        tracing::info!(serial, authorisation = %a.id, by = ?a.authorised_by, "rework authorised: resetting the device");
        run.reworked = true;
        run.reissue = Some(Supersede::Rework { authorisation_id: a.id, operator: ctx.operator() });
        Ok(Found::Reissue(Reissue::Rework))
    };
    let Some(row) = ctx.store.cert_by_spki(&key).map_err(|e| store_failure(Stage::Lookup, &e))? else {
        if run.reworked {
            // Reset in this attempt under an authorisation: the serial's old
            // certificates are revoked (superseded) when the new one is journaled.
            return Ok(Found::Chain(None));
        }
        return match (refuse_duplicate_serial(ctx, serial), rework) {
            (Ok(()), _) => Ok(Found::Chain(None)),
            (Err(_), Some(a)) => start_rework(run, a),
            (Err(f), None) => Err(f),
        };
    };
    if row.device_serial != serial {
        return Err(failure(
            Stage::Lookup,
            FailureCode::KeyAlreadyCertified,
            format!(
                "this device's public key was already certified for device {} (certificate {}): a cloned or copied key",
                row.device_serial, row.serial_hex
            ),
        ));
    }
    if let Some(a) = rework {
        // The same board back under an authorisation (a signing intent is
        // completed first: the rework happens on its next attach).
        if row.status != CertStatus::Signing {
            return start_rework(run, a);
        }
    }
    let row = match row.status {
        Recorded::Known(CertStatus::Issued) => {
            if renewal_due(ctx, &row, time::OffsetDateTime::now_utc()) {
                tracing::info!(serial, cert = %row.serial_hex, not_after = %row.not_after, "certificate inside its renewal window: renewing");
                run.reissue = Some(Supersede::Renewal {
                    old_id: row.id.clone(),
                    revoke: ctx.cfg.profile.revoke_on_renewal,
                    operator: ctx.operator(),
                });
                return Ok(Found::Reissue(Reissue::Renew { current_serial_hex: row.serial_hex }));
            }
            row
        }
        Recorded::Known(CertStatus::Signing) => {
            crate::station::complete_intent(ctx, &row).map_err(|e| signing_failure(ctx, &e))?;
            ctx.store
                .cert_by_id(&row.id)
                .map_err(|e| store_failure(Stage::Lookup, &e))?
                .ok_or_else(|| failure(Stage::Lookup, FailureCode::StoreError, "local store: certificate row vanished".into()))?
        }
        Recorded::Known(CertStatus::Revoked) => {
            return Err(failure(
                Stage::Lookup,
                FailureCode::CertificateRevoked,
                format!("the certificate {} for this device's key is revoked", row.serial_hex),
            ))
        }
        Recorded::Known(CertStatus::Superseded) => {
            return Err(failure(
                Stage::Lookup,
                FailureCode::CertificateRevoked,
                format!("the certificate {} for this device's key was superseded and the key has no current certificate", row.serial_hex),
            ))
        }
        Recorded::Unrecognized(other) => {
            return Err(failure(
                Stage::Lookup,
                FailureCode::StoreError,
                format!("local store: unknown certificate status {other:?} (written by a newer station?)"),
            ))
        }
    };
    ctx.store.link_certificate(&attempt_id, &row.id).map_err(|e| store_failure(Stage::Lookup, &e))?;
    Ok(Found::Chain(Some(IssuedChain {
        cert_der: row.cert_der.unwrap_or_default(),
        chain_der: row.chain_der.unwrap_or_default(),
        serial_hex: row.serial_hex,
        resumed: true,
    })))
}

/// A current certificate is renewed when it expires within the profile's
/// `renew_before_days` and a new one (same plan as a first issue, capped at
/// the CA) would end outside that window: a renewal that gains nothing (a CA
/// about to expire caps both) is not made.
pub(crate) fn renewal_due(ctx: &StationCtx, row: &CertRow, now: time::OffsetDateTime) -> bool {
    let days = ctx.cfg.profile.renew_before_days;
    let Some(not_after) = row.not_after.get() else { return false };
    if days == 0 {
        return false;
    }
    let window = time::Duration::days(i64::from(days));
    if not_after.get() - now > window {
        return false;
    }
    issuance::plan(&ctx.cfg.profile, &row.device_serial, &row.spki_der, now, ctx.ca_validity.not_after)
        .is_ok_and(|p| p.not_after - now > window)
}

/// A serial that already has a current certificate (issued, or journaled
/// for signing) for another key is a cloned or mislabelled board: it gets
/// no second certificate (`duplicate_serial`). A revoked certificate does
/// not count (the rework path).
fn refuse_duplicate_serial(ctx: &StationCtx, serial: &str) -> Result<(), Failure> {
    let rows = ctx.store.certs_by_device_serial(serial).map_err(|e| store_failure(Stage::Lookup, &e))?;
    let current = rows.iter().rev().find(|r| !matches!(r.status, Recorded::Known(CertStatus::Revoked | CertStatus::Superseded)));
    match current {
        None => Ok(()),
        Some(r) => Err(failure(
            Stage::Lookup,
            FailureCode::DuplicateSerial,
            format!(
                "serial {serial} already has certificate {} (issued {}) for another key (spki_sha256 {}): this board reports a serial that is already provisioned",
                r.serial_hex,
                r.issued_at.as_ref().map_or_else(|| r.created_at.to_string(), |t| t.to_string()),
                &r.spki_sha256[..r.spki_sha256.len().min(16)]
            ),
        )),
    }
}

/// Check the CSR, journal the intent, sign, record the certificate.
fn issue(
    ctx: &StationCtx,
    attempt_id: &str,
    identity: &Identity,
    keygen_spki_der: &[u8],
    csr_der: &[u8],
    binding: CsrBinding<'_>,
    reissue: Option<&Supersede>,
) -> Result<IssuedChain, Failure> {
    let checked = issuance::check_csr_bound(csr_der, &identity.serial, keygen_spki_der, binding, &ctx.cfg.profile)
        .map_err(|r| failure(Stage::Issue, r.code(), format!("CSR refused: {r}")))?;
    // Capped at (or refused past) the CA's notAfter: a certificate never outlives its CA.
    let plan =
        issuance::plan(&ctx.cfg.profile, &identity.serial, &checked.spki_der, time::OffsetDateTime::now_utc(), ctx.ca_validity.not_after)
            .map_err(|e| failure(Stage::Issue, e.code(), e.to_string()))?;
    let intent = Intent {
        id: imprint_store::new_id(),
        attempt_id: attempt_id.to_string(),
        device_serial: identity.serial.clone(),
        issuer: ctx.issuer_dn.clone(),
        serial_hex: plan.serial_hex(),
        spki_sha256: spki_sha256_hex(&checked.spki_der),
        spki_der: checked.spki_der.clone(),
        not_before: Timestamp::from(plan.not_before),
        not_after: Timestamp::from(plan.not_after),
    };
    // Renewal and rework: the old certificate(s) leave the current state in
    // the same transaction that journals the new one (crash-safe: never two
    // current certificates, never none journaled after the old one went).
    let journal = || match reissue {
        None => ctx.store.journal_intent(&intent),
        Some(how) => ctx.store.journal_reissue(&intent, how).map(|r| {
            for c in &r.replaced {
                tracing::info!(old = %c.serial_hex, status = %c.status, new = %intent.serial_hex, "certificate replaced");
            }
        }),
    };
    let journaled = journal_within_leases(ctx, journal);
    match journaled {
        Ok(()) => {}
        Err(StoreError::NotFound(d)) if matches!(reissue, Some(Supersede::Rework { .. })) => {
            return Err(failure(Stage::Issue, FailureCode::DuplicateSerial, format!("rework not carried out: {d}")))
        }
        Err(StoreError::Duplicate(d)) => {
            return Err(failure(Stage::Issue, FailureCode::KeyAlreadyCertified, format!("this key already has a certificate: {d}")))
        }
        // The quota (or the work order's state) refused: nothing was journaled, nothing consumed.
        Err(StoreError::WorkOrder(r)) => return Err(failure(Stage::Issue, r.failure_code(), format!("not issued: {r}"))),
        Err(e) => return Err(store_failure(Stage::Issue, &e)),
    }
    crash_point("after_journal");
    let cert = ctx.signer.issue(plan).map_err(|e| match &e {
        issuance::IssueError::Signer(se) => signing_failure(ctx, se),
        _ => failure(Stage::Issue, FailureCode::IssueFailed, format!("signing failed: {e}")),
    })?;
    crash_point("after_sign");
    let fp = issuance::summarize(&cert).map(|s| s.fingerprint_sha256).unwrap_or_default();
    ctx.store.mark_issued(&intent.id, &cert, &ctx.chain_der, &fp).map_err(|e| store_failure(Stage::Issue, &e))?;
    crash_point("after_record");
    Ok(IssuedChain { cert_der: cert, chain_der: ctx.chain_der.clone(), serial_hex: intent.serial_hex, resumed: false })
}

/// Journal, and when the attempt's central work order has no leased
/// quantity left here, ask the sync worker for rounds (the next block) and
/// journal again, until `[work_orders] lease_wait_ms` has passed, the center
/// said it has nothing left, or the station stops. Offline, the device fails
/// `quota_exhausted` exactly at the end of what the station holds.
fn journal_within_leases(ctx: &StationCtx, journal: impl Fn() -> Result<(), StoreError>) -> Result<(), StoreError> {
    let started = Instant::now();
    let asked_at = imprint_store::now_text();
    let wait = Duration::from_millis(ctx.cfg.work_orders.lease_wait_ms);
    let mut unknown_asked = false;
    loop {
        let r = journal();
        let Some(sync) = ctx.sync.get() else { return r };
        let (central_free, central_seen_at) = match &r {
            Err(StoreError::WorkOrder(WorkOrderRefusal::LeaseUsedUp { central_free, central_seen_at, .. })) => {
                (central_free, central_seen_at)
            }
            // Not copied from the center yet (created there since the last round): one round, then once more.
            Err(StoreError::WorkOrder(WorkOrderRefusal::Unknown { .. })) if !unknown_asked => {
                unknown_asked = true;
                sync.round_now(wait.min(Duration::from_secs(5)));
                continue;
            }
            _ => return r,
        };
        // The center answered since this device asked, and has nothing left: used up.
        if *central_free == Some(0) && central_seen_at.as_deref().is_some_and(|at| at >= asked_at.as_str()) {
            return r;
        }
        let left = wait.saturating_sub(started.elapsed());
        if left.is_zero() || ctx.shutdown.is_draining() {
            return r;
        }
        tracing::info!(waited_ms = started.elapsed().as_millis() as u64, "leased quantity used up: asking the center for the next block");
        if !sync.round_now(left.min(Duration::from_secs(5))) || !sync.status().connected {
            // No round finished, or the center is unreachable: do not hammer it.
            std::thread::sleep(Duration::from_millis(250).min(wait.saturating_sub(started.elapsed())));
        }
    }
}

/// Ask the device on `port` who it is in its dialect, writing nothing: the
/// Imprint protocol's HELLO + IDENT, or an nRF91's `AT+CGSN=1` (its IMEI).
pub fn identify_as(port: &str, baud: u32, dialect: DialectKind) -> Result<Identity, String> {
    match dialect {
        DialectKind::Imprint => identify(port, baud),
        DialectKind::Nrf91 => identify_nrf91(port, baud),
    }
}

fn identify_nrf91(port: &str, baud: u32) -> Result<Identity, String> {
    use imprint_nrf91::at::{self, AtLine, LineSplitter};
    let mut t = SerialTransport::open(port, baud).map_err(|e| e.to_string())?;
    t.write_all(b"AT+CGSN=1\r\n").map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut lines = LineSplitter::new();
    let mut buf = [0u8; 1024];
    let mut imei = None;
    loop {
        let n = t.read_until(&mut buf, deadline).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("no answer to AT+CGSN=1".into());
        }
        for l in lines.feed(&buf[..n]) {
            match at::classify(&l) {
                AtLine::Response { prefix, body } if prefix == "+CGSN" => {
                    imei = at::fields(&body).and_then(|f| f.into_iter().next());
                }
                AtLine::Ok => {
                    let serial = imei.filter(|i| !i.is_empty()).ok_or("AT+CGSN=1 gave no IMEI")?;
                    return Ok(Identity {
                        serial,
                        model: "nRF91".into(),
                        hw_rev: String::new(),
                        fw_version: String::new(),
                        fw_hash: String::new(),
                        chip_uid: String::new(),
                        state: imprint_proto::DeviceState::Blank,
                    });
                }
                AtLine::Error | AtLine::CmeError(_) | AtLine::CmeText(_) => return Err(format!("the modem refused AT+CGSN=1: {l}")),
                _ => {}
            }
        }
    }
}

/// Ask the device on `port` who it is (HELLO + IDENT), writing nothing.
pub fn identify(port: &str, baud: u32) -> Result<Identity, String> {
    use imprint_proto::Frame;
    let mut t = SerialTransport::open(port, baud).map_err(|e| e.to_string())?;
    let mut decoder = Decoder::new(Direction::Response);
    let mut buf = [0u8; 2048];
    let mut ask = |rid: u16, frame: Frame| -> Result<Frame, String> {
        let mut frame = frame;
        frame.rid = rid;
        t.write_all(&frame.encode()).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_millis(1500);
        loop {
            let n = t.read_until(&mut buf, deadline).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("no answer to {}", frame.head));
            }
            for d in decoder.feed(&buf[..n]) {
                if let Decoded::Frame(f) = d {
                    if f.rid == rid {
                        return if f.is_ok() { Ok(f) } else { Err(format!("device refused {}: {f}", frame.head)) };
                    }
                }
            }
        }
    };
    ask(1, Frame::request(0, "HELLO").with("proto", "1"))?;
    let f = ask(2, Frame::request(0, "IDENT"))?;
    Ok(Identity {
        serial: f.text("serial").unwrap_or_default(),
        model: f.text("model").unwrap_or_default(),
        hw_rev: f.text("hw").unwrap_or_default(),
        fw_version: f.text("fw").unwrap_or_default(),
        fw_hash: f.field("fwhash").unwrap_or_default().to_string(),
        chip_uid: f.field("uid").unwrap_or_default().to_string(),
        state: f.field("state").and_then(imprint_proto::DeviceState::parse).unwrap_or(imprint_proto::DeviceState::Blank),
    })
}
