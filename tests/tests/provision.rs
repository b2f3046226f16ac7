//! End to end over real pseudo-terminals at 115200 baud: the station
//! provisions simulated devices with the development CA; every fault ends in
//! a recorded state with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_proto::Outcome;
use imprint_station::{Progress, ProgressFn, ProgressStatus};
use imprint_store::AttemptFilter;
use imprint_tests::station::{openssl_verify, path_of, pkilint, sim, split_der_chain, TestStation};
use std::sync::{Arc, Mutex};

#[test]
fn happy_path_issues_verifiable_certificate_and_records_every_step() {
    let ts = TestStation::new();
    let st = ts.open();
    let dev = sim("HAPPY-0001", "");
    let r = st.provision(&path_of(&dev), None).unwrap();
    let Outcome::Passed { cert_serial_hex, resumed, identity, .. } = &r.outcome else { panic!("{:?}", r.outcome) };
    assert!(!resumed);
    assert_eq!(identity.serial, "HAPPY-0001");

    // The device holds exactly what the store recorded, and is locked.
    let snap = dev.snapshot();
    assert!(snap.locked);
    let row = st.store().attempt(&r.attempt_id).unwrap().unwrap();
    assert_eq!(row.status.as_str(), "passed");
    assert_eq!(row.device_serial.as_deref(), Some("HAPPY-0001"));
    let cert = st.store().cert_by_id(row.certificate_id.as_deref().unwrap()).unwrap().unwrap();
    assert_eq!(cert.status.as_str(), "issued");
    assert_eq!(&cert.serial_hex, cert_serial_hex);
    assert!(cert.serial_hex.len() >= 16, "serial has at least 64 bits");
    assert_eq!(snap.cert_der.as_deref(), cert.cert_der.as_deref());
    assert_eq!(snap.chain_der.as_deref(), cert.chain_der.as_deref());

    // Every stage was recorded as it happened.
    let steps = st.store().steps(&r.attempt_id).unwrap();
    for stage in ["hello", "identify", "keygen", "lookup", "csr", "issue", "write_cert", "write_chain", "read_back", "prove", "lock"] {
        assert!(
            steps.iter().any(|s| s.stage == stage && (s.kind == "completed" || s.kind == "started")),
            "no step for {stage}: {steps:#?}"
        );
    }

    // External checkers agree the certificate is well formed and chains.
    let chain = split_der_chain(snap.chain_der.as_ref().unwrap());
    openssl_verify(snap.cert_der.as_ref().unwrap(), &chain).unwrap();
    pkilint(snap.cert_der.as_ref().unwrap()).unwrap();
    // The certificate's key is the device's key.
    let (_, x) = x509_parser::parse_x509_certificate(snap.cert_der.as_ref().unwrap()).unwrap();
    assert_eq!(x.public_key().raw, snap.public_key_spki.as_deref().unwrap());
    assert!(x.issuer().to_string().contains("DEVELOPMENT"), "{}", x.issuer());

    // The pass appended its provisioning outcome to the audit trail, anchoring
    // the attempt and its certificate as the station syncs them.
    let trail = st.store().audit_entries(&Default::default()).unwrap();
    let outcome = trail.iter().find(|e| e.subject.as_deref() == Some(r.attempt_id.as_str())).expect("an outcome entry");
    assert_eq!((outcome.kind.as_str(), outcome.station_id.as_str()), ("provisioning_outcome", "test-station"));
    let anchors: Vec<(String, String)> = outcome.anchor_list().unwrap().into_iter().map(|a| (a.table, a.key)).collect();
    assert_eq!(anchors, [("attempt".to_string(), r.attempt_id.clone()), ("certificate".to_string(), cert.id.clone())]);
    let v = st.store().verify_audit(None).unwrap();
    assert!(v.ok() && v.anchors_checked == 2, "{v:?}");
}

/// Each fault: the simulator's fault spec, the failure code the station must
/// record (None = the station must ride it out and pass), and whether a
/// certificate may exist afterwards.
const FAULTS: &[(&str, Option<&str>, bool)] = &[
    ("silent", Some("no_response"), false),
    ("slow-ms=4000", Some("no_response"), false),
    ("unplug-at=5", Some("unplugged"), false),
    ("oversized", Some("corrupt_frames"), false),
    ("bad-crc", Some("corrupt_frames"), false),
    ("wrong-serial-csr", Some("csr_subject_mismatch"), false),
    ("other-key-csr", Some("csr_key_mismatch"), false),
    ("bad-csr-sig", Some("csr_bad_signature"), false),
    ("weak-key", Some("key_not_allowed"), false),
    ("stale-nonce", Some("csr_nonce_mismatch"), false),
    ("bad-proof", Some("proof_failed"), true),
    ("noise", None, true),
    ("bad-crc-at=3", None, true),
    ("oversized-at=4", None, true),
    ("busy-at=4", None, true),
];

#[test]
fn every_fault_ends_in_a_recorded_state_with_a_reason_and_lying_csrs_get_no_certificate() {
    let ts = TestStation::new();
    let st = ts.open();
    let devs: Vec<_> = FAULTS.iter().enumerate().map(|(i, (f, _, _))| sim(&format!("FAULT-{:04}", i + 1), f)).collect();
    let ports: Vec<String> = devs.iter().map(path_of).collect();
    let results = st.provision_all(&ports, None);
    for (((fault, expect, cert_ok), r), dev) in FAULTS.iter().zip(results).zip(&devs) {
        let r = r.unwrap();
        let row = st.store().attempt(&r.attempt_id).unwrap().unwrap();
        match expect {
            None => {
                assert!(matches!(r.outcome, Outcome::Passed { .. }), "{fault}: {:?}", r.outcome);
                assert_eq!(row.status.as_str(), "passed", "{fault}");
            }
            Some(code) => {
                let Outcome::Failed(f) = &r.outcome else { panic!("{fault}: passed but must fail with {code}") };
                assert_eq!(f.code.as_str(), *code, "{fault}: {f:?}");
                assert!(!f.reason.is_empty() && !f.hint.is_empty(), "{fault}: {f:?}");
                // Recorded as such.
                assert_eq!(row.status.as_str(), "failed", "{fault}");
                assert_eq!(row.code.as_ref().map(|c| c.as_str()), Some(*code), "{fault}");
                assert_eq!(row.reason.as_deref(), Some(f.reason.as_str()), "{fault}");
                assert!(row.hint.is_some());
                assert!(st.store().steps(&r.attempt_id).unwrap().iter().any(|s| s.kind == "failed"), "{fault}: no failed step");
            }
        }
        let certs: Vec<_> = st.store().certificates().unwrap().into_iter().filter(|c| c.device_serial == dev.serial()).collect();
        if !cert_ok {
            assert!(certs.is_empty(), "{fault}: a certificate was issued: {certs:?}");
            assert!(dev.snapshot().cert_der.is_none(), "{fault}: the device holds a certificate");
        }
    }
    // Console noise is kept in the device's log, not treated as an error.
    let noise = FAULTS.iter().position(|f| f.0 == "noise").unwrap();
    let attempts =
        st.store().attempts(&AttemptFilter { device_serial: Some(format!("FAULT-{:04}", noise + 1)), ..Default::default() }).unwrap();
    let steps = st.store().steps(&attempts[0].id).unwrap();
    assert!(steps.iter().any(|s| s.kind == "console"), "console lines were not recorded");
    // A BUSY answer is waited out (backed off), recorded as a retry, and passes.
    let busy = FAULTS.iter().position(|f| f.0 == "busy-at=4").unwrap();
    let attempts =
        st.store().attempts(&AttemptFilter { device_serial: Some(format!("FAULT-{:04}", busy + 1)), ..Default::default() }).unwrap();
    let steps = st.store().steps(&attempts[0].id).unwrap();
    assert!(steps.iter().any(|s| s.kind == "retry" && s.detail.contains("busy")), "{steps:#?}");
}

#[test]
fn unplugged_device_resumes_with_the_same_certificate_never_a_second() {
    let ts = TestStation::new();
    let st = ts.open();
    // Request 12 falls after issuance (during read-back); the device comes back on a new pty.
    let dev = sim("RESUME-0001", "unplug-at=12,replug-after-ms=200");
    let first = st.provision(&path_of(&dev), None).unwrap();
    let Outcome::Failed(f) = &first.outcome else { panic!("{:?}", first.outcome) };
    assert_eq!(f.code.as_str(), "unplugged");
    assert!(f.retryable);
    let issued_before = st.store().certificates().unwrap();
    assert_eq!(issued_before.len(), 1, "the certificate was issued before the unplug");

    let new_path = dev.wait_plugged(std::time::Duration::from_secs(5)).expect("device re-plugged");
    let second = st.provision(&new_path.display().to_string(), None).unwrap();
    let Outcome::Passed { resumed, cert_serial_hex, .. } = &second.outcome else { panic!("{:?}", second.outcome) };
    assert!(resumed, "the certificate must be re-sent, not re-issued");
    assert_eq!(cert_serial_hex, &issued_before[0].serial_hex);
    let certs = st.store().certificates().unwrap();
    assert_eq!(certs.len(), 1, "never a second certificate");
    assert_eq!(dev.snapshot().cert_der.as_deref(), certs[0].cert_der.as_deref());
    assert!(st.store().attempt(&second.attempt_id).unwrap().unwrap().resumed);
}

#[test]
fn eight_devices_in_parallel_all_pass_with_distinct_serials() {
    let ts = TestStation::new();
    let st = ts.open();
    let devs: Vec<_> = (1..=8).map(|i| sim(&format!("PAR-{i:04}"), "")).collect();
    let ports: Vec<String> = devs.iter().map(path_of).collect();
    let results = st.provision_all(&ports, None);
    assert!(results.iter().all(|r| r.as_ref().unwrap().passed()), "{results:?}");
    let certs = st.store().certificates().unwrap();
    assert_eq!(certs.len(), 8);
    let mut serials: Vec<_> = certs.iter().map(|c| c.serial_hex.clone()).collect();
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 8);
    for d in &devs {
        assert!(d.snapshot().locked, "{} not locked", d.serial());
    }
}

#[test]
fn a_stalled_device_does_not_hold_up_the_others() {
    let ts = TestStation::new();
    let st = ts.open();
    let silent = sim("STALL-0001", "silent");
    let good: Vec<_> = (2..=4).map(|i| sim(&format!("STALL-{i:04}"), "")).collect();
    let mut ports = vec![path_of(&silent)];
    ports.extend(good.iter().map(path_of));
    let events: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let ev = events.clone();
    let progress: ProgressFn = Arc::new(move |p: &Progress| {
        if !matches!(p.status, ProgressStatus::Running) {
            ev.lock().unwrap().push(p.clone());
        }
    });
    let results = st.provision_all(&ports, Some(progress));
    assert!(!results[0].as_ref().unwrap().passed());
    let order: Vec<_> =
        events.lock().unwrap().iter().map(|p| (p.port.clone(), matches!(p.status, ProgressStatus::Passed { .. }))).collect();
    // The three good devices finished (passed) before the silent one gave up.
    assert_eq!(order.len(), 4, "{order:?}");
    assert!(order[..3].iter().all(|(_, passed)| *passed), "{order:?}");
    assert_eq!(order[3].0, ports[0]);
}

#[test]
fn a_device_already_locked_with_our_certificate_is_verified_not_reissued() {
    let ts = TestStation::new();
    let st = ts.open();
    let dev = sim("AGAIN-0001", "");
    assert!(st.provision(&path_of(&dev), None).unwrap().passed());
    let again = st.provision(&path_of(&dev), None).unwrap();
    assert!(matches!(again.outcome, Outcome::Passed { already_provisioned: true, resumed: true, .. }), "{:?}", again.outcome);
    assert_eq!(st.store().certificates().unwrap().len(), 1);
}

#[test]
fn p384_device_keys_are_certified_when_the_profile_asks_for_them() {
    let mut ts = TestStation::new();
    ts.cfg.profile.device_key = imprint_core::issuance::KeyType::P384;
    let st = ts.open();
    let dev = sim("P384-0001", "");
    let r = st.provision(&path_of(&dev), None).unwrap();
    assert!(r.passed(), "{:?}", r.outcome);
    let snap = dev.snapshot();
    let spki = snap.public_key_spki.unwrap();
    assert_eq!(
        imprint_core::issuance::key_kind(&spki).unwrap(),
        imprint_core::issuance::KeyKind::Ec(imprint_core::issuance::KeyType::P384)
    );
    let chain = split_der_chain(snap.chain_der.as_ref().unwrap());
    openssl_verify(snap.cert_der.as_ref().unwrap(), &chain).unwrap();
    pkilint(snap.cert_der.as_ref().unwrap()).unwrap();
}

#[test]
fn an_attempt_failing_between_ident_and_lookup_is_found_by_its_serial() {
    let ts = TestStation::new();
    let st = ts.open();
    // Unplugged at request 3 (KEYGEN): IDENT has answered, the certificate
    // lookup never ran.
    let dev = sim("IDENT-0001", "unplug-at=3");
    let r = st.provision(&path_of(&dev), None).unwrap();
    let Outcome::Failed(f) = &r.outcome else { panic!("{:?}", r.outcome) };
    assert_eq!((f.code.as_str(), f.stage.as_str()), ("unplugged", "keygen"), "{f:?}");
    let found = st.store().attempts(&AttemptFilter { device_serial: Some("IDENT-0001".into()), ..Default::default() }).unwrap();
    assert_eq!(found.len(), 1, "records list --serial finds the attempt");
    assert_eq!(found[0].id, r.attempt_id);
    assert_eq!(found[0].status.as_str(), "failed");
    assert!(found[0].model.is_some(), "the device's facts are recorded with its serial");
}
