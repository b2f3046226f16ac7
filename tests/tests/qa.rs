//! QA verification against simulated devices on real ptys (issue 12 item 1),
//! verdicts synced to a real PostgreSQL center, and clones refused
//! (`duplicate_serial`, item 4).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_core::qa::{CheckResult, QaCheck};
use imprint_proto::Outcome;
use imprint_station::qa::QaOutcome;
use imprint_station::{Station, StationConfig};
use imprint_tests::pg::{assert_center_equals_local, TestDb};
use imprint_tests::station::{imprint_bin, path_of, sim, TestStation};
use std::process::Command;

fn result(o: &QaOutcome, check: QaCheck) -> CheckResult {
    o.checks.iter().find(|c| c.check == check).unwrap_or_else(|| panic!("no {check:?} check: {o:#?}")).result
}

/// The checks that failed, by name.
fn failed(o: &QaOutcome) -> Vec<QaCheck> {
    o.checks.iter().filter(|c| c.result == CheckResult::Fail).map(|c| c.check).collect()
}

fn provision(st: &Station, dev: &imprint_devsim::SimHandle) -> imprint_station::AttemptResult {
    st.provision(&path_of(dev), None).unwrap()
}

fn passed(st: &Station, dev: &imprint_devsim::SimHandle) {
    let r = provision(st, dev);
    assert!(matches!(r.outcome, Outcome::Passed { .. }), "{:?}", r.outcome);
}

#[test]
fn a_good_device_passes_every_check_writing_nothing_and_the_verdict_is_recorded_and_audited() {
    let ts = TestStation::new();
    let st = ts.open();
    let dev = sim("QA-GOOD-1", "");
    passed(&st, &dev);
    let before = dev.snapshot();

    let o = st.verify(&path_of(&dev)).unwrap();
    assert!(o.passed, "{o:#?}");
    for c in [
        QaCheck::Chain,
        QaCheck::Validity,
        QaCheck::Profile,
        QaCheck::StoreRecord,
        QaCheck::ProofOfPossession,
        QaCheck::Lock,
        QaCheck::Revocation,
    ] {
        assert_eq!(result(&o, c), CheckResult::Pass, "{c:?}: {o:#?}");
    }
    assert_eq!(result(&o, QaCheck::MqttConnect), CheckResult::Skipped, "no [mqtt] device_check here");

    // Nothing was written: key, certificate, chain and lock are as they were.
    let after = dev.snapshot();
    assert_eq!(
        (&after.public_key_spki, &after.cert_der, &after.chain_der, after.locked, &after.csr_der),
        (&before.public_key_spki, &before.cert_der, &before.chain_der, before.locked, &before.csr_der)
    );

    // The verdict: pass, every check, the operator, the device and its certificate.
    let v = &o.verdict;
    assert_eq!((v.verdict.as_str(), v.device_serial.as_str(), v.operator.as_deref()), ("pass", "QA-GOOD-1", Some("test-technician")));
    let cert = st.store().cert_by_id(v.certificate_id.as_deref().unwrap()).unwrap().unwrap();
    assert_eq!(v.cert_serial_hex.as_deref(), Some(cert.serial_hex.as_str()));
    let checks: serde_json::Value = serde_json::from_str(&v.checks).unwrap();
    assert_eq!(checks.as_array().unwrap().len(), 8);
    assert_eq!(st.store().qa_verdicts(&Default::default()).unwrap(), std::slice::from_ref(v));

    // Its audit entry anchors the verdict and the certificate, and the trail verifies.
    let trail = st.store().audit_entries(&Default::default()).unwrap();
    let e = trail.iter().find(|e| e.subject.as_deref() == Some(v.id.as_str())).expect("a qa_verdict entry");
    assert_eq!(e.kind.as_str(), "qa_verdict");
    let anchors: Vec<(String, String)> = e.anchor_list().unwrap().into_iter().map(|a| (a.table, a.key)).collect();
    assert_eq!(anchors, [("qa_verdict".to_string(), v.id.clone()), ("certificate".to_string(), cert.id.clone())]);
    assert!(st.store().verify_audit(None).unwrap().ok());
}

#[test]
fn a_device_holding_a_certificate_from_another_ca_fails_the_chain_check() {
    let (ours, theirs) = (TestStation::new(), TestStation::new());
    let st = ours.open();
    let dev = sim("QA-FOREIGN-1", "");
    {
        let other = theirs.open();
        passed(&other, &dev);
        other.shutdown(std::time::Duration::from_secs(5));
    }
    let o = st.verify(&path_of(&dev)).unwrap();
    assert!(!o.passed);
    assert_eq!(result(&o, QaCheck::Chain), CheckResult::Fail, "{o:#?}");
    let chain = o.checks.iter().find(|c| c.check == QaCheck::Chain).unwrap();
    assert!(chain.detail.contains("does not chain to the configured CA"), "{}", chain.detail);
    // What the device itself does is fine: it proves its key and is locked.
    assert_eq!(result(&o, QaCheck::ProofOfPossession), CheckResult::Pass);
    assert_eq!(result(&o, QaCheck::Lock), CheckResult::Pass);
    assert_eq!(o.verdict.verdict, "fail");
}

#[test]
fn an_expired_certificate_fails_the_validity_check_and_nothing_else_about_the_certificate() {
    let ts = TestStation::new();
    let st = ts.open();
    let dev = sim("QA-EXPIRED-1", "");
    passed(&st, &dev);
    // Judged the day after the certificate's notAfter (the development CA
    // and its leaves live 3650 days).
    let later = time::OffsetDateTime::now_utc() + time::Duration::days(3652);
    let o = st.verify_at(&path_of(&dev), later).unwrap();
    assert_eq!(failed(&o), [QaCheck::Validity], "{o:#?}");
    let v = o.checks.iter().find(|c| c.check == QaCheck::Validity).unwrap();
    assert!(v.detail.contains("has expired"), "{}", v.detail);
}

#[test]
fn a_certificate_the_store_does_not_know_fails_the_store_record_check() {
    // Station B issues under the same CA (key and chain) as station A, into
    // its own store: the certificate chains, but A never issued it.
    let a = TestStation::new();
    let st = a.open();
    let b = TestStation::new();
    let cfg_b =
        StationConfig { signer: a.cfg.signer_uri(), ca_chain: a.cfg.ca_chain_path(), station_id: "station-b".into(), ..b.cfg.clone() };
    let dev = sim("QA-UNKNOWN-1", "");
    {
        let other = Station::open(cfg_b, None).unwrap();
        other.set_operator(Some("tech-b".into()));
        passed(&other, &dev);
        other.shutdown(std::time::Duration::from_secs(5));
    }
    let o = st.verify(&path_of(&dev)).unwrap();
    assert_eq!(result(&o, QaCheck::Chain), CheckResult::Pass, "{o:#?}");
    assert_eq!(result(&o, QaCheck::StoreRecord), CheckResult::Fail, "{o:#?}");
    // Without a record its revocation status is unknown, which is no pass.
    assert_eq!(failed(&o), [QaCheck::StoreRecord, QaCheck::Revocation], "{o:#?}");
    assert_eq!(o.verdict.certificate_id, None);
}

#[test]
fn a_revoked_certificate_fails_the_revocation_check() {
    let ts = TestStation::new();
    let st = ts.open();
    let dev = sim("QA-REVOKED-1", "");
    passed(&st, &dev);
    // Revocation lands with another change; set the store's status directly.
    st.store()
        .write(|t| {
            t.execute("UPDATE certificates SET status = 'revoked' WHERE device_serial = 'QA-REVOKED-1'", [])?;
            Ok(())
        })
        .unwrap();
    let o = st.verify(&path_of(&dev)).unwrap();
    assert_eq!(failed(&o), [QaCheck::Revocation], "{o:#?}");
}

#[test]
fn a_device_that_cannot_prove_possession_fails_the_proof_check() {
    let ts = TestStation::new();
    let st = ts.open();
    // PROVE signs with another key: provisioning wrote the certificate but
    // set the device aside unlocked (proof_failed).
    let dev = sim("QA-NOPROOF-1", "bad-proof");
    let r = provision(&st, &dev);
    assert!(matches!(&r.outcome, Outcome::Failed(f) if f.code.as_str() == "proof_failed"), "{:?}", r.outcome);
    let o = st.verify(&path_of(&dev)).unwrap();
    assert_eq!(result(&o, QaCheck::ProofOfPossession), CheckResult::Fail, "{o:#?}");
    assert_eq!(result(&o, QaCheck::StoreRecord), CheckResult::Pass, "the store knows its certificate: {o:#?}");
    assert!(!o.passed);
}

#[test]
fn an_unlocked_device_that_said_it_locked_fails_the_lock_check() {
    let ts = TestStation::new();
    let st = ts.open();
    // Firmware that answers LOCK commit without locking: provisioning passes.
    let dev = sim("QA-UNLOCKED-1", "fake-lock");
    passed(&st, &dev);
    assert!(!dev.snapshot().locked);
    let o = st.verify(&path_of(&dev)).unwrap();
    assert_eq!(failed(&o), [QaCheck::Lock], "{o:#?}");
    let lock = o.checks.iter().find(|c| c.check == QaCheck::Lock).unwrap();
    assert!(lock.detail.contains("provisioned"), "{}", lock.detail);
}

#[test]
fn a_device_that_cannot_be_read_gets_no_verdict() {
    let ts = TestStation::new();
    let st = ts.open();
    let dev = sim("QA-SILENT-1", "silent");
    let e = st.verify(&path_of(&dev)).unwrap_err();
    assert!(matches!(&e, imprint_station::qa::QaError::Device(f) if f.code.as_str() == "no_response"), "{e}");
    assert!(st.store().qa_verdicts(&Default::default()).unwrap().is_empty());
}

#[test]
fn verdicts_are_synced_to_the_center_with_their_audit_entries() {
    let mut db = TestDb::new();
    let central = db.add_station("test-station");
    let ts = TestStation::new();
    let st = ts.open();
    let (good, unlocked) = (sim("QA-SYNC-1", ""), sim("QA-SYNC-2", "fake-lock"));
    passed(&st, &good);
    passed(&st, &unlocked);
    assert!(st.verify(&path_of(&good)).unwrap().passed);
    assert!(!st.verify(&path_of(&unlocked)).unwrap().passed);
    let r = imprint_sync::sync_once(st.store().clone(), "test-station", &central).unwrap();
    assert_eq!(r.qa_verdicts, 2, "{r:?}");
    assert_eq!(r.quarantined, 0, "{r:?}");
    assert_center_equals_local(&db, st.store(), "test-station");
    // `imprint sync verify` and `audit verify --central` agree: verdicts included.
    let v = imprint_sync::verify::sync_verify(st.store(), "test-station", &central).unwrap();
    assert!(v.differences.is_empty(), "{:?}", v.differences);
    let c = imprint_sync::verify::verify_central(st.store(), "test-station", &central).unwrap();
    assert!(c.verification.ok() && c.central_chain.is_none(), "{c:?}");
    assert_eq!(c.central_entries, 4, "two provisioning outcomes and two QA verdicts: {c:?}");
    let at_center = db.psql("SELECT device_serial || ':' || verdict FROM qa_verdicts ORDER BY device_serial");
    assert_eq!(at_center.lines().collect::<Vec<_>>(), ["QA-SYNC-1:pass", "QA-SYNC-2:fail"]);
    assert_eq!(db.psql("SELECT count(*) FROM audit_trail WHERE kind = 'qa_verdict'"), "2");
    // A station role cannot change a verdict at the center.
    assert!(db.psql("SELECT has_table_privilege('imprint_station', 'qa_verdicts', 'UPDATE')").contains('f'));
}

#[test]
fn a_second_board_with_an_already_certified_serial_and_a_new_key_is_refused_as_duplicate_serial() {
    // Regression: a clone (same serial, new key) used to get a second valid certificate.
    let ts = TestStation::new();
    let st = ts.open();
    let first = sim("QA-CLONE-1", "");
    passed(&st, &first);
    let clone = sim("QA-CLONE-1", "");
    let r = provision(&st, &clone);
    let Outcome::Failed(f) = &r.outcome else { panic!("a clone passed: {:?}", r.outcome) };
    assert_eq!((f.code.as_str(), f.stage.as_str(), f.retryable), ("duplicate_serial", "lookup", false));
    assert!(f.hint.contains("supervisor"), "{}", f.hint);
    assert!(f.reason.contains("already has certificate"), "{}", f.reason);
    // One certificate for the serial, and the clone was written nothing.
    assert_eq!(st.store().certs_by_device_serial("QA-CLONE-1").unwrap().len(), 1);
    let snap = clone.snapshot();
    assert!(snap.cert_der.is_none() && snap.csr_der.is_none() && !snap.locked, "{snap:?}");
    // The original device still re-verifies and re-attaches fine.
    passed(&st, &first);
}

#[test]
fn imprint_verify_and_qa_due_on_the_command_line() {
    let ts = TestStation::new();
    std::fs::write(ts.dir.path().join("station.toml"), "port_globs = []\nstation_id = \"test-station\"\n[qa]\nsample_every = 2\n").unwrap();
    let (good, unlocked, third) = (sim("QA-CLI-1", ""), sim("QA-CLI-2", "fake-lock"), sim("QA-CLI-3", ""));
    {
        let st = ts.open();
        imprint_tests::station::work_order(st.store(), "WO-QA", 10);
        st.set_batch(Some("WO-QA".into()));
        for d in [&good, &unlocked, &third] {
            passed(&st, d);
        }
        st.shutdown(std::time::Duration::from_secs(5));
    }
    let run = |args: &[&str]| Command::new(imprint_bin()).envs(ts.env()).args(args).output().unwrap();
    // 3 devices, every 2nd: 2 due.
    let o = run(&["qa", "due", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let due: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((due[0]["batch"].clone(), due[0]["required"].clone(), due[0]["due"].clone()), ("WO-QA".into(), 2.into(), 2.into()));

    let o = run(&["verify", "--port", &path_of(&good)]);
    assert_eq!(o.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("QA PASS"));
    let o = run(&["verify", "--port", &path_of(&unlocked), "--json"]);
    assert_eq!(o.status.code(), Some(1), "a failed check exits 1: {}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["passed"], false);
    let lock = v["checks"].as_array().unwrap().iter().find(|c| c["check"] == "lock").unwrap().clone();
    assert_eq!(lock["result"], "fail");
    assert_eq!(v["batch"], "WO-QA");

    let o = run(&["qa", "due", "--batch", "WO-QA", "--json"]);
    let due: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((due[0]["verified"].clone(), due[0]["due"].clone()), (2.into(), 0.into()));
    let o = run(&["qa", "list", "--serial", "QA-CLI-2", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!((list[0]["device_serial"].clone(), list[0]["passed"].clone()), ("QA-CLI-2".into(), false.into()));
    // History shows the verdicts with the record; the report has the latest verdict.
    let o = run(&["records", "show", "QA-CLI-2"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("QA FAIL") && text.contains("lock"), "{text}");
    let o = run(&["report", "--csv"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.lines().next().unwrap().ends_with(",qa_verdict"), "{text}");
    assert!(text.lines().any(|l| l.contains("QA-CLI-1") && l.ends_with(",pass")), "{text}");
    assert!(text.lines().any(|l| l.contains("QA-CLI-3") && l.ends_with(',')), "not verified: no verdict: {text}");
    let o = run(&["verify", "--port", "/nonexistent/qa-port"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("device_unreadable"));
    // Beside a running station on the same data dir (its store has one writer): refused, exit 4.
    let st = ts.open();
    let o = run(&["verify", "--port", &path_of(&good)]);
    assert_eq!(o.status.code(), Some(4), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("store_locked"));
    // ... where the station's own verification works (the app's `verify` command).
    assert!(st.verify(&path_of(&good)).unwrap().passed);
}

#[test]
fn simulated_devices_of_a_restarted_station_are_new_boards_not_clones() {
    // Regression: with clones refused, a restarted station's simulated
    // SIM-0001 (a new key) would be refused as `duplicate_serial`.
    let ts = TestStation::new();
    let run = || Command::new(imprint_bin()).envs(ts.env()).args(["station", "--simulate", "1", "--max", "1", "--json"]).output().unwrap();
    for _ in 0..2 {
        let o = run();
        assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    }
    let store = imprint_api::open_store(&ts.cfg).unwrap();
    let mut serials: Vec<String> = store.certificates().unwrap().into_iter().map(|c| c.device_serial).collect();
    serials.sort();
    assert_eq!(serials, ["SIM-0001", "SIM-0002"]);
}

#[test]
fn a_device_with_a_key_but_no_certificate_fails_every_certificate_check_and_gets_no_key_made() {
    let ts = TestStation::new();
    let st = ts.open();
    // Unplugged at CSR (HELLO, IDENT, KEYGEN, CSR): keyed, nothing certified.
    let dev = sim("QA-KEYED-1", "unplug-at=4,replug-after-ms=100");
    assert!(!provision(&st, &dev).passed());
    let port = dev.wait_plugged(std::time::Duration::from_secs(5)).unwrap().display().to_string();
    let before = dev.snapshot();
    assert_eq!((before.state.as_str(), before.cert_der.is_none()), ("keyed", true));
    let o = st.verify(&port).unwrap();
    for c in [QaCheck::Chain, QaCheck::Validity, QaCheck::Profile, QaCheck::StoreRecord, QaCheck::ProofOfPossession, QaCheck::Revocation] {
        let got = o.checks.iter().find(|x| x.check == c).unwrap();
        assert_eq!(got.result, CheckResult::Fail, "{c:?}: {o:#?}");
        assert!(got.detail.contains("no certificate"), "{c:?}: {}", got.detail);
    }
    assert_eq!(o.verdict.cert_serial_hex, None);
    assert_eq!(dev.snapshot().public_key_spki, before.public_key_spki, "the same key: KEYGEN without force made none");
}
