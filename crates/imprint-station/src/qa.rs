//! QA verification of one device (docs/lifecycle.md, "QA verification"):
//! the session's inspect mode reads the device's certificate and chain and
//! asks for a fresh proof of possession, **writing nothing**; each check of
//! `imprint_core::qa` is judged; the verdict is recorded with its audit
//! entry. A device that cannot be read to the end (no answer, a corrupt
//! link, an unplug) gets no verdict: the error says why.

use crate::config::StationConfig;
use crate::lock::{DataDirLock, LockError};
use imprint_core::issuance::{self, spki_sha256_hex, CertSummary};
use imprint_core::qa::{self as checks, CheckOutcome, QaCheck};
use imprint_proto::session::{Action, Failure, Identity, Input, Inspection, Outcome, Session, SessionConfig, Stage};
use imprint_proto::{Decoded, Decoder, DeviceState, Direction, FailureCode, KeyAlg};
use imprint_serial::{SerialTransport, Transport, TransportError};
use imprint_store::{CertRow, CertStatus, NewQaVerdict, QaVerdictRow, Recorded, Store, StoreError};
use imprint_sync::qa::CentralCertificate;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// A recorded verification.
#[derive(Clone, Debug)]
pub struct QaOutcome {
    pub identity: Identity,
    pub passed: bool,
    pub checks: Vec<CheckOutcome>,
    pub verdict: QaVerdictRow,
}

/// Why no verdict was recorded.
#[derive(Debug, thiserror::Error)]
pub enum QaError {
    /// The device could not be read to the end.
    #[error("{}: {} ({})", .0.code, .0.reason, .0.hint)]
    Device(Failure),
    #[error("local store: {0}")]
    Store(StoreError),
    /// Another station holds the data dir (its own store writer).
    #[error("{0}")]
    Lock(LockError),
    /// The station's CA chain cannot be read.
    #[error("{0}")]
    Ca(String),
}

/// What a verification needs: no signer (QA never signs, and an HSM's PIN
/// is not the QA operator's), the config (profile, baud, `[mqtt]`), the
/// store and the configured CA chain (issuing CA first, root last); and
/// the center to ask as well (`[central]`, or `imprint verify --central`),
/// read-only, as this station's own role.
#[derive(Clone, Copy)]
pub struct QaContext<'a> {
    pub cfg: &'a StationConfig,
    pub store: &'a Store,
    pub chain: &'a [Vec<u8>],
    pub central: Option<&'a imprint_sync::CentralConfig>,
}

/// `imprint verify`: verify the device on `port` with this data dir's store
/// and CA chain, without opening the station (no signer, no PIN, no port
/// watched). Refused while a station runs on the data dir (its store has
/// one writer): verify from that station instead.
pub fn verify_with_data_dir(cfg: &StationConfig, port: &str, operator: Option<&str>, now: OffsetDateTime) -> Result<QaOutcome, QaError> {
    let lock = DataDirLock::acquire(&cfg.data_dir).map_err(QaError::Lock)?;
    let path = cfg.ca_chain_path();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| QaError::Ca(format!("no CA chain at {} ({e}): nothing to verify against", path.display())))?;
    let chain = imprint_core::ca::load_chain_pem(&text).map_err(|e| QaError::Ca(format!("the CA chain {}: {e}", path.display())))?;
    let store = Store::open(&cfg.store_path()).map_err(QaError::Store)?;
    store.set_station_id(&cfg.station_id);
    let r = verify(QaContext { cfg, store: &store, chain: &chain, central: cfg.central.as_ref() }, port, operator, now);
    store.close();
    drop(lock);
    r
}

/// Verify the device on `port` as of `now` and record the verdict under
/// `operator`. `now` is the time validity is judged at (the real time, but
/// for tests that check an expired certificate without waiting for it).
pub fn verify(ctx: QaContext<'_>, port: &str, operator: Option<&str>, now: OffsetDateTime) -> Result<QaOutcome, QaError> {
    let mut t = SerialTransport::open(port, ctx.cfg.baud).map_err(|e| {
        let code = match e {
            TransportError::Busy(_) => FailureCode::PortBusy,
            TransportError::NotFound(_) => FailureCode::PortMissing,
            _ => FailureCode::PortOpen,
        };
        QaError::Device(Failure::new(Stage::Hello, code, e.to_string()))
    })?;
    verify_on(ctx, port, &mut t, operator, now)
}

/// [`verify`] over a transport the caller opened.
pub fn verify_on(
    ctx: QaContext<'_>,
    port: &str,
    t: &mut dyn Transport,
    operator: Option<&str>,
    now: OffsetDateTime,
) -> Result<QaOutcome, QaError> {
    let found = inspect(ctx, t).map_err(QaError::Device)?;
    let (checks, row) = judge(ctx, &found, now).map_err(QaError::Store)?;
    let passed = !checks.iter().any(CheckOutcome::blocks_pass);
    let cert_serial_hex = found.cert_der.as_deref().and_then(|c| issuance::summarize(c).ok()).map(|s| s.serial_hex);
    let batch = match &row {
        Some(r) => ctx.store.attempt(&r.attempt_id).map_err(QaError::Store)?.and_then(|a| a.batch),
        None => None,
    };
    let checks_json = serde_json::Value::Array(
        checks.iter().map(|c| serde_json::json!({"check": c.check.as_str(), "result": c.result.as_str(), "detail": c.detail})).collect(),
    )
    .to_string();
    let verdict = ctx
        .store
        .record_qa_verdict(NewQaVerdict {
            operator: operator.map(str::to_string),
            port: port.to_string(),
            device_serial: found.identity.serial.clone(),
            cert_serial_hex,
            certificate_id: row.as_ref().map(|r| r.id.clone()),
            batch,
            passed,
            checks_json,
            failed: checks.iter().filter(|c| c.blocks_pass()).map(|c| c.check.as_str().to_string()).collect(),
        })
        .map_err(QaError::Store)?;
    tracing::info!(
        port,
        serial = %found.identity.serial,
        verdict = %verdict.verdict,
        failed = ?checks.iter().filter(|c| c.blocks_pass()).map(|c| c.check.as_str()).collect::<Vec<_>>(),
        "QA verdict recorded"
    );
    Ok(QaOutcome { identity: found.identity, passed, checks, verdict })
}

fn nonce() -> Result<Vec<u8>, Failure> {
    let mut v = vec![0u8; 32];
    getrandom::fill(&mut v)
        .map_err(|e| Failure::new(Stage::Hello, FailureCode::NoRandomness, format!("the OS random source failed: {e}")))?;
    Ok(v)
}

/// Run the session in inspect mode over `t`.
fn inspect(ctx: QaContext<'_>, t: &mut dyn Transport) -> Result<Inspection, Failure> {
    let pop_nonce = nonce()?;
    let rid = nonce()?;
    let cfg = SessionConfig {
        key_alg: KeyAlg::P256,
        // Never sent: an inspection makes no CSR.
        csr_nonce: Vec::new(),
        pop_nonce,
        lock: false,
        retries: 2,
        link_bytes_per_sec: (ctx.cfg.baud / 10).max(1),
        first_rid: u16::from_be_bytes([rid[0], rid[1]]) % 30000 + 1,
        connect: crate::driver::connect_check(ctx.cfg)?,
        inspect: true,
    };
    let mut session = Session::new(cfg);
    let mut decoder = Decoder::new(Direction::Response);
    let mut pending: VecDeque<Decoded> = VecDeque::new();
    let mut buf = [0u8; 2048];
    let mut deadline = Instant::now();
    let mut action = session.start();
    loop {
        let input = match action {
            Action::Send { frame, timeout_ms } => match t.write_all(&frame.encode()) {
                Err(e) => Input::Gone(e.to_string()),
                Ok(()) => {
                    deadline = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
                    wait(t, &mut decoder, &mut pending, &mut buf, deadline)
                }
            },
            Action::KeepWaiting => wait(t, &mut decoder, &mut pending, &mut buf, deadline),
            Action::Wait { ms } => {
                t.pause(Duration::from_millis(u64::from(ms)));
                Input::Waited
            }
            Action::CheckProof { spki_der, message, signature } => {
                Input::ProofChecked(issuance::verify_pop(&spki_der, &message, &signature))
            }
            Action::Lookup { .. } | Action::Issue { .. } | Action::Write { .. } => {
                return Err(Failure::new(session.stage(), FailureCode::Internal, "an inspection asked to look up or issue"))
            }
            Action::Finish(Outcome::Failed(f)) => return Err(f),
            Action::Finish(Outcome::Passed { .. }) => {
                return session
                    .inspection()
                    .cloned()
                    .ok_or_else(|| Failure::new(Stage::Done, FailureCode::Internal, "the inspection finished without what it read"))
            }
        };
        action = session.handle(input);
    }
}

/// The center's row of the certificate read from the device (same issuer and serial).
fn center_row<'a>(rows: &'a [CentralCertificate], s: &CertSummary) -> Option<&'a CentralCertificate> {
    rows.iter().find(|r| r.issuer == s.issuer && r.serial_hex == s.serial_hex)
}

fn center_status_words(r: &CentralCertificate) -> String {
    match r.status.as_str() {
        "revoked" => format!(
            "revoked at the center by station {}{}{}",
            r.station_id,
            r.revoked_at.map(|t| format!(" at {}", imprint_store::ts(t))).unwrap_or_default(),
            r.revocation_reason.as_deref().map(|w| format!(" (reason {w})")).unwrap_or_default()
        ),
        "superseded" => format!("superseded at the center by a newer certificate (station {})", r.station_id),
        other => format!("status {other} at the center (station {})", r.station_id),
    }
}

/// The center check: it passes only when the center holds exactly this
/// certificate (issuer, serial, key, device serial, content) and it is
/// current (`issued`) there; a center that could not be asked is
/// `CheckResult::Unreachable`.
fn judge_center(found: &Result<Vec<CentralCertificate>, String>, s: &CertSummary, serial: &str, issued_here: bool) -> CheckOutcome {
    let rows = match found {
        Err(e) => {
            return CheckOutcome::unreachable(
                QaCheck::CenterRecord,
                format!(
                    "the center could not be asked, so this certificate is not confirmed there ({e}); verify again once the center is back"
                ),
            )
        }
        Ok(rows) => rows,
    };
    let Some(r) = center_row(rows, s) else {
        let mut why = format!("the center holds no certificate {} of this CA", s.serial_hex);
        if let Some(k) = rows.iter().find(|r| r.spki_sha256 == s.spki_sha256) {
            why.push_str(&format!("; it holds certificate {} of station {} for this key", k.serial_hex, k.station_id));
        }
        why.push_str(if issued_here {
            ": this station's record has not reached the center yet (Sync now, then verify again)"
        } else {
            ": no station reported issuing it"
        });
        return CheckOutcome::judge(QaCheck::CenterRecord, Err(why));
    };
    let mut problems = Vec::new();
    if r.spki_sha256 != s.spki_sha256 {
        problems.push(format!("the center's certificate {} certifies another key", r.serial_hex));
    }
    if r.device_serial != serial {
        problems.push(format!("the center has it issued to device {}, not {serial}", r.device_serial));
    }
    if r.fingerprint_sha256.as_deref() != Some(s.fingerprint_sha256.as_str()) {
        problems.push("the device's certificate differs from the center's copy".into());
    }
    if r.status != "issued" {
        problems.push(format!("certificate {} is {}", r.serial_hex, center_status_words(r)));
    }
    if let Some(other) = rows
        .iter()
        .find(|o| o.spki_sha256 == s.spki_sha256 && o.serial_hex != r.serial_hex && matches!(o.status.as_str(), "signing" | "issued"))
    {
        problems
            .push(format!("the center holds another current certificate {} (station {}) for this key", other.serial_hex, other.station_id));
    }
    if problems.is_empty() {
        CheckOutcome::judge(
            QaCheck::CenterRecord,
            Ok(format!(
                "the center holds exactly this certificate ({}, issued by station {} to {serial}), current",
                r.serial_hex, r.station_id
            )),
        )
    } else {
        CheckOutcome::judge(QaCheck::CenterRecord, Err(problems.join("; ")))
    }
}

/// Not revoked: by the local store's record and, when asked, the center's.
fn judge_revocation(
    has_cert: bool,
    row: Option<&CertRow>,
    center: Option<&Result<Vec<CentralCertificate>, String>>,
    s: Option<&CertSummary>,
) -> CheckOutcome {
    let check = QaCheck::Revocation;
    if !has_cert {
        return CheckOutcome::judge(check, Err("the device holds no certificate".into()));
    }
    let at_center = match (center, s) {
        (Some(Ok(rows)), Some(s)) => center_row(rows, s),
        _ => None,
    };
    if let Some(c) = at_center.filter(|c| c.status == "revoked") {
        return CheckOutcome::judge(check, Err(format!("certificate {} is {}", c.serial_hex, center_status_words(c))));
    }
    match (row, center, at_center) {
        (Some(r), _, _) => CheckOutcome::judge(
            check,
            match &r.status {
                Recorded::Known(CertStatus::Issued) => Ok(format!("certificate {} is not revoked (status issued)", r.serial_hex)),
                Recorded::Known(CertStatus::Revoked) => Err(format!("certificate {} is revoked", r.serial_hex)),
                Recorded::Known(other) => Err(format!("certificate {} has status {}", r.serial_hex, other.as_str())),
                Recorded::Unrecognized(t) => Err(format!("certificate {} has status {t:?}, unknown to this station", r.serial_hex)),
            },
        ),
        (None, _, Some(c)) if c.status == "issued" => CheckOutcome::judge(
            check,
            Ok(format!("certificate {} is not revoked at the center (status issued, station {})", c.serial_hex, c.station_id)),
        ),
        (None, _, Some(c)) => CheckOutcome::judge(check, Err(format!("certificate {} is {}", c.serial_hex, center_status_words(c)))),
        (None, Some(Err(_)), None) => {
            CheckOutcome::unreachable(check, "unknown: the local store has no record of this certificate and the center could not be asked")
        }
        (None, Some(Ok(_)), None) => {
            CheckOutcome::judge(check, Err("unknown: neither the local store nor the center has a record of this certificate".into()))
        }
        (None, None, None) => CheckOutcome::judge(check, Err("unknown: the local store has no record of this certificate".into())),
    }
}

fn wait(t: &mut dyn Transport, decoder: &mut Decoder, pending: &mut VecDeque<Decoded>, buf: &mut [u8], deadline: Instant) -> Input {
    loop {
        while let Some(d) = pending.pop_front() {
            match d {
                Decoded::Frame(f) => return Input::Frame(f),
                Decoded::Console(_) => {}
                Decoded::Corrupt { line, error } => return Input::Corrupt(format!("{line} ({error})")),
                Decoded::Oversized { discarded } => {
                    return Input::Corrupt(format!("oversized line of {discarded} bytes (limit {})", imprint_proto::MAX_LINE))
                }
            }
        }
        match t.read_until(buf, deadline) {
            Ok(0) => return Input::Timeout,
            Ok(n) => pending.extend(decoder.feed(&buf[..n])),
            Err(e) => return Input::Gone(e.to_string()),
        }
    }
}

/// Every check, in catalogue order, and the store's record of the
/// certificate read (if it has one).
fn judge(ctx: QaContext<'_>, found: &Inspection, now: OffsetDateTime) -> Result<(Vec<CheckOutcome>, Option<CertRow>), StoreError> {
    use CheckOutcome as C;
    let serial = found.identity.serial.as_str();
    let no_cert = || "the device holds no certificate".to_string();
    let cert = found.cert_der.as_deref();
    let device_chain: Result<Vec<Vec<u8>>, String> = match found.chain_der.as_deref() {
        Some(d) => checks::split_der_certs(d),
        None => Ok(Vec::new()),
    };
    let cert_spki = cert.map(checks::cert_spki).transpose();
    let row = match &cert_spki {
        Ok(Some(spki)) => ctx.store.cert_by_spki(&spki_sha256_hex(spki))?,
        _ => None,
    };
    let summary = cert.and_then(|c| issuance::summarize(c).ok());
    // The center, asked once (read-only), when configured.
    let center: Option<Result<Vec<CentralCertificate>, String>> = match (ctx.central, &summary) {
        (None, _) => None,
        (Some(_), None) => Some(Ok(Vec::new())),
        (Some(cc), Some(s)) => Some(
            imprint_sync::qa::certificates(cc, &ctx.cfg.station_id, &s.issuer, &s.serial_hex, &s.spki_sha256).map_err(|e| e.to_string()),
        ),
    };
    let mut out = Vec::new();

    out.push(C::judge(
        QaCheck::Chain,
        match (cert, &device_chain) {
            (None, _) => Err(no_cert()),
            (Some(_), Err(e)) => Err(format!("the device's chain: {e}")),
            (Some(c), Ok(dc)) => checks::check_chain(c, dc, ctx.chain),
        },
    ));
    out.push(C::judge(
        QaCheck::Validity,
        match cert {
            None => Err(no_cert()),
            Some(c) => {
                let above = device_chain.as_ref().ok().filter(|d| !d.is_empty()).map_or(ctx.chain, |d| d.as_slice());
                checks::check_validity(c, above, now)
            }
        },
    ));
    out.push(C::judge(QaCheck::Profile, cert.map_or_else(|| Err(no_cert()), |c| checks::check_profile(c, serial, &ctx.cfg.profile))));

    let device_key_is_certified = match (&found.spki_der, &cert_spki) {
        (Some(k), Ok(Some(c))) => k == c,
        _ => false,
    };
    out.push(match (cert, &row, &center) {
        (Some(_), None, Some(_)) => C::skipped(
            QaCheck::StoreRecord,
            "the local store holds no certificate for this key (this station did not issue it): the center check decides",
        ),
        _ => C::judge(
            QaCheck::StoreRecord,
            match (cert, &row) {
                (None, _) => Err(no_cert()),
                (Some(_), None) => Err("the local store holds no certificate for this key: this station did not issue it".into()),
                (Some(c), Some(r)) => {
                    let mut problems = Vec::new();
                    if r.device_serial != serial {
                        problems.push(format!("the store issued it to device {}, not {serial}", r.device_serial));
                    }
                    if r.cert_der.as_deref() != Some(c) {
                        problems
                            .push(format!("the device's certificate differs from the store's certificate {} for this key", r.serial_hex));
                    }
                    if !device_key_is_certified {
                        problems.push("the device's key is not the certified key".into());
                    }
                    if problems.is_empty() {
                        Ok(format!("the store holds exactly this certificate ({}) for {serial} and its key", r.serial_hex))
                    } else {
                        Err(problems.join("; "))
                    }
                }
            },
        ),
    });
    out.push(match (&center, &summary) {
        (None, _) => C::skipped(QaCheck::CenterRecord, "not asked: no [central] section (imprint verify --central asks the center)"),
        (Some(_), None) if cert.is_some() => C::judge(QaCheck::CenterRecord, Err("the device's certificate does not parse".into())),
        (Some(_), None) => C::judge(QaCheck::CenterRecord, Err(no_cert())),
        (Some(found), Some(s)) => judge_center(found, s, serial, row.is_some()),
    });
    out.push(C::judge(
        QaCheck::ProofOfPossession,
        match &found.proof {
            None => Err("the device has no key to prove".into()),
            Some(Err(why)) => Err(format!("the proof over a fresh nonce does not verify: {why}")),
            Some(Ok(())) if cert.is_none() => Err(no_cert()),
            Some(Ok(())) if !device_key_is_certified => Err("the device proved a key, but not the certified one".into()),
            Some(Ok(())) => Ok("the device signed a fresh nonce with the certified key".into()),
        },
    ));
    out.push(if !ctx.cfg.profile.lock_device {
        C::skipped(QaCheck::Lock, "the profile does not lock devices (profile.lock_device = false)")
    } else {
        C::judge(
            QaCheck::Lock,
            match found.identity.state {
                DeviceState::Locked => Ok("the device reports locked".into()),
                s => Err(format!("the device reports {} (not locked)", s.as_str())),
            },
        )
    });
    out.push(judge_revocation(cert.is_some(), row.as_ref(), center.as_ref(), summary.as_ref()));
    out.push(match &found.connect {
        None => C::skipped(QaCheck::MqttConnect, "not asked: [mqtt] device_check is off"),
        Some(Ok(ms)) => C::judge(QaCheck::MqttConnect, Ok(format!("the device connected to the broker over mTLS; round trip {ms} ms"))),
        Some(Err(why)) => C::judge(QaCheck::MqttConnect, Err(format!("the device could not connect to the broker: {why}"))),
    });
    Ok((out, row))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imprint_core::qa::CheckResult;

    fn summary() -> CertSummary {
        CertSummary {
            serial_hex: "5a17".into(),
            subject: "CN=DEV-1".into(),
            issuer: "CN=Test CA".into(),
            not_before: OffsetDateTime::UNIX_EPOCH,
            not_after: OffsetDateTime::UNIX_EPOCH,
            spki_sha256: "aa".into(),
            fingerprint_sha256: "ff".into(),
        }
    }

    fn at_center(status: &str) -> CentralCertificate {
        CentralCertificate {
            station_id: "station-b".into(),
            device_serial: "DEV-1".into(),
            issuer: "CN=Test CA".into(),
            serial_hex: "5a17".into(),
            spki_sha256: "aa".into(),
            status: status.into(),
            fingerprint_sha256: Some("ff".into()),
            revoked_at: None,
            revocation_reason: (status == "revoked").then(|| "key_compromise".to_string()),
            superseded_at: None,
        }
    }

    #[test]
    fn the_center_check_passes_only_for_exactly_this_current_certificate_and_an_unreachable_center_is_no_pass() {
        let s = summary();
        let judged = |rows: Result<Vec<CentralCertificate>, String>| judge_center(&rows, &s, "DEV-1", false);
        let ok = judged(Ok(vec![at_center("issued")]));
        assert_eq!(ok.result, CheckResult::Pass, "{ok:?}");
        assert!(ok.detail.contains("station-b"), "{ok:?}");
        let down = judged(Err("central database unreachable: connection refused".into()));
        assert_eq!(down.result, CheckResult::Unreachable);
        assert!(down.blocks_pass() && down.detail.contains("connection refused"), "{down:?}");
        assert_eq!(judged(Ok(vec![])).result, CheckResult::Fail);
        let revoked = judged(Ok(vec![at_center("revoked")]));
        assert!(revoked.result == CheckResult::Fail && revoked.detail.contains("key_compromise"), "{revoked:?}");
        for bad in [
            CentralCertificate { device_serial: "DEV-2".into(), ..at_center("issued") },
            CentralCertificate { spki_sha256: "bb".into(), ..at_center("issued") },
            CentralCertificate { fingerprint_sha256: Some("00".into()), ..at_center("issued") },
            at_center("superseded"),
        ] {
            assert_eq!(judged(Ok(vec![bad.clone()])).result, CheckResult::Fail, "{bad:?}");
        }
        // Another current certificate for the same key at the center.
        let twin = CentralCertificate { serial_hex: "77".into(), station_id: "station-c".into(), ..at_center("issued") };
        let two = judged(Ok(vec![at_center("issued"), twin]));
        assert!(two.result == CheckResult::Fail && two.detail.contains("another current certificate"), "{two:?}");
    }
}
