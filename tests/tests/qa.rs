//! QA verification against simulated devices on real ptys (issue 12 item 1),
//! verdicts synced to a real PostgreSQL center, and clones refused
//! (`duplicate_serial`, item 4).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_core::qa::{CheckResult, QaCheck};
use imprint_proto::Closed;
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
    assert_eq!(result(&o, QaCheck::CenterRecord), CheckResult::Skipped, "no [central] here");

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
    assert_eq!(checks.as_array().unwrap().len(), QaCheck::ALL.len());
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

// ---- QA asks the center (`[central]` or `imprint verify --central`) ----

/// Station A (`test-station`, registered at `db`) and a second station B
/// (`station-b`) issuing under A's CA into its own store.
struct TwoStations {
    db: TestDb,
    a: TestStation,
    central_a: imprint_sync::CentralConfig,
    b_dir: TestStation,
    b_cfg: StationConfig,
    central_b: imprint_sync::CentralConfig,
}

fn two_stations() -> TwoStations {
    let mut db = TestDb::new();
    let central_a = db.add_station("test-station");
    let central_b = db.add_station("station-b");
    let a = TestStation::new();
    // A opens first: it makes the development CA that B signs with too.
    a.open().shutdown(std::time::Duration::from_secs(5));
    let b_dir = TestStation::new();
    let b_cfg =
        StationConfig { signer: a.cfg.signer_uri(), ca_chain: a.cfg.ca_chain_path(), station_id: "station-b".into(), ..b_dir.cfg.clone() };
    TwoStations { db, a, central_a, b_dir, b_cfg, central_b }
}

impl TwoStations {
    /// B provisions `dev` (and syncs it to the center when `sync`).
    fn b_provisions(&self, dev: &imprint_devsim::SimHandle, sync: bool) -> Station {
        let b = Station::open(self.b_cfg.clone(), None).unwrap();
        b.set_operator(Some("tech-b".into()));
        passed(&b, dev);
        if sync {
            let r = imprint_sync::sync_once(b.store().clone(), "station-b", &self.central_b).unwrap();
            assert_eq!(r.quarantined, 0, "{r:?}");
        }
        let _ = &self.b_dir;
        b
    }
}

/// A's verification asking `central` (without a sync worker of A's own racing the test).
fn verify_asking(st: &Station, dev: &imprint_devsim::SimHandle, central: &imprint_sync::CentralConfig) -> QaOutcome {
    let ctx = st.ctx();
    let q = imprint_station::qa::QaContext { cfg: &ctx.cfg, store: &ctx.store, chain: &ctx.chain, central: Some(central) };
    imprint_station::qa::verify(q, &path_of(dev), Some("qa-anna"), time::OffsetDateTime::now_utc()).unwrap()
}

fn detail(o: &QaOutcome, check: QaCheck) -> String {
    o.checks.iter().find(|c| c.check == check).unwrap().detail.clone()
}

#[test]
fn with_central_a_good_device_and_one_issued_by_another_station_pass_the_center_check_and_the_verdicts_sync() {
    let t = two_stations();
    let (ours, theirs) = (sim("QA-CENTER-OURS", ""), sim("QA-CENTER-THEIRS", ""));
    t.b_provisions(&theirs, true).shutdown(std::time::Duration::from_secs(5));
    // A runs with [central] configured: the center is asked on every verification.
    let cfg = StationConfig { central: Some(t.central_a.clone()), ..t.a.cfg.clone() };
    let st = Station::open(cfg, None).unwrap();
    st.set_operator(Some("qa-anna".into()));
    passed(&st, &ours);
    imprint_sync::sync_once(st.store().clone(), "test-station", &t.central_a).unwrap();

    let o = st.verify(&path_of(&ours)).unwrap();
    assert!(o.passed, "{o:#?}");
    assert_eq!(result(&o, QaCheck::CenterRecord), CheckResult::Pass, "{o:#?}");
    assert!(detail(&o, QaCheck::CenterRecord).contains("issued by station test-station"), "{o:#?}");
    assert_eq!(result(&o, QaCheck::StoreRecord), CheckResult::Pass);

    // Issued by B, known here only through the center: it passes.
    let o = st.verify(&path_of(&theirs)).unwrap();
    assert!(o.passed, "{o:#?}");
    assert_eq!(result(&o, QaCheck::CenterRecord), CheckResult::Pass, "{o:#?}");
    assert!(detail(&o, QaCheck::CenterRecord).contains("issued by station station-b"), "{o:#?}");
    assert_eq!(result(&o, QaCheck::StoreRecord), CheckResult::Skipped, "no local record: the center decides: {o:#?}");
    assert_eq!(result(&o, QaCheck::Revocation), CheckResult::Pass, "{o:#?}");
    assert!(detail(&o, QaCheck::Revocation).contains("at the center"), "{o:#?}");

    // Both verdicts reach the center with their checks, the center equals A's records.
    imprint_sync::sync_once(st.store().clone(), "test-station", &t.central_a).unwrap();
    assert_center_equals_local(&t.db, st.store(), "test-station");
    let at_center = t.db.psql(
        "SELECT device_serial || ':' || verdict FROM qa_verdicts WHERE checks::jsonb @> '[{\"check\": \"center_record\", \"result\": \"pass\"}]' ORDER BY device_serial",
    );
    assert_eq!(at_center.lines().collect::<Vec<_>>(), ["QA-CENTER-OURS:pass", "QA-CENTER-THEIRS:pass"]);
    st.shutdown(std::time::Duration::from_secs(5));
}

#[test]
fn with_central_a_certificate_the_center_does_not_know_fails_the_center_check() {
    let t = two_stations();
    let dev = sim("QA-CENTER-UNKNOWN", "");
    // B issues it under the same CA but never reports it to the center.
    t.b_provisions(&dev, false).shutdown(std::time::Duration::from_secs(5));
    let st = t.a.open();
    let o = verify_asking(&st, &dev, &t.central_a);
    assert_eq!(result(&o, QaCheck::Chain), CheckResult::Pass, "{o:#?}");
    assert_eq!(failed(&o), [QaCheck::CenterRecord, QaCheck::Revocation], "{o:#?}");
    assert!(detail(&o, QaCheck::CenterRecord).contains("holds no certificate"), "{o:#?}");
    assert!(detail(&o, QaCheck::Revocation).contains("neither the local store nor the center"), "{o:#?}");
    assert_eq!(o.verdict.verdict, "fail");

    // A device of A's own not yet synced: the same failure, and the words say why.
    let own = sim("QA-CENTER-UNSYNCED", "");
    passed(&st, &own);
    let o = verify_asking(&st, &own, &t.central_a);
    assert_eq!(failed(&o), [QaCheck::CenterRecord], "{o:#?}");
    assert!(detail(&o, QaCheck::CenterRecord).contains("has not reached the center yet"), "{o:#?}");
    // Once synced, it passes.
    imprint_sync::sync_once(st.store().clone(), "test-station", &t.central_a).unwrap();
    assert!(verify_asking(&st, &own, &t.central_a).passed);
    imprint_sync::sync_once(st.store().clone(), "test-station", &t.central_a).unwrap();
    assert_center_equals_local(&t.db, st.store(), "test-station");
}

#[test]
fn with_central_a_certificate_revoked_at_the_center_by_another_station_fails_center_and_revocation_checks() {
    let t = two_stations();
    let dev = sim("QA-CENTER-REVOKED", "");
    let b = t.b_provisions(&dev, false);
    let sel = imprint_store::CertSelector::DeviceSerial("QA-CENTER-REVOKED".into());
    let rev = imprint_store::Revocation {
        reason: "key_compromise".into(),
        comment: Some("lost in transit".into()),
        operator: Some("sup-b".into()),
    };
    assert_eq!(b.store().revoke(&sel, &rev).unwrap().revoked.len(), 1);
    imprint_sync::sync_once(b.store().clone(), "station-b", &t.central_b).unwrap();
    b.shutdown(std::time::Duration::from_secs(5));
    assert_eq!(t.db.psql("SELECT status FROM certificates WHERE device_serial = 'QA-CENTER-REVOKED'"), "revoked");

    let st = t.a.open();
    let o = verify_asking(&st, &dev, &t.central_a);
    assert_eq!(failed(&o), [QaCheck::CenterRecord, QaCheck::Revocation], "{o:#?}");
    let why = detail(&o, QaCheck::Revocation);
    assert!(why.contains("revoked at the center by station station-b") && why.contains("key_compromise"), "{why}");
    assert!(detail(&o, QaCheck::CenterRecord).contains("revoked at the center"), "{o:#?}");
    imprint_sync::sync_once(st.store().clone(), "test-station", &t.central_a).unwrap();
    assert_center_equals_local(&t.db, st.store(), "test-station");
    assert_eq!(t.db.psql("SELECT verdict FROM qa_verdicts WHERE device_serial = 'QA-CENTER-REVOKED'"), "fail");
}

#[test]
fn with_central_an_unreachable_center_is_its_own_check_result_never_a_pass_and_the_verdict_syncs_later() {
    let t = two_stations();
    let st = t.a.open();
    let dev = sim("QA-CENTER-DOWN", "");
    passed(&st, &dev);
    // Nothing listens on port 1: connection refused at once.
    let down = imprint_sync::CentralConfig { url: "postgres://127.0.0.1:1/imprint".into(), ..t.central_a.clone() };
    let o = verify_asking(&st, &dev, &down);
    assert_eq!(result(&o, QaCheck::CenterRecord), CheckResult::Unreachable, "{o:#?}");
    assert!(failed(&o).is_empty(), "the device itself failed nothing: {o:#?}");
    assert!(!o.passed, "a center that could not be asked is no pass: {o:#?}");
    assert_eq!(o.verdict.verdict, "fail");
    assert!(detail(&o, QaCheck::CenterRecord).contains("could not be asked"), "{o:#?}");
    // In the API's view and words.
    let v = imprint_api::qa::QaVerdictView::from(o.verdict.clone());
    let c = v.checks.iter().find(|c| c.check == imprint_api::qa::QaCheckName::CenterRecord).unwrap();
    assert_eq!(c.result, imprint_api::qa::QaCheckResult::Unreachable);
    assert!(!v.passed);

    // The verdict syncs once the center is reachable, its check result as recorded.
    imprint_sync::sync_once(st.store().clone(), "test-station", &t.central_a).unwrap();
    assert_center_equals_local(&t.db, st.store(), "test-station");
    assert_eq!(
        t.db.psql("SELECT verdict FROM qa_verdicts WHERE device_serial = 'QA-CENTER-DOWN' AND checks::jsonb @> '[{\"check\": \"center_record\", \"result\": \"unreachable\"}]'"),
        "fail"
    );
    st.shutdown(std::time::Duration::from_secs(5));
}

#[test]
fn imprint_verify_central_says_an_unreachable_center_in_words_and_refuses_without_a_central_section() {
    let ts = TestStation::new();
    let dev = sim("QA-CLI-CENTER-1", "");
    {
        let st = ts.open();
        passed(&st, &dev);
        st.shutdown(std::time::Duration::from_secs(5));
    }
    let run = |args: &[&str]| Command::new(imprint_bin()).envs(ts.env()).args(args).output().unwrap();
    let o = run(&["verify", "--port", &path_of(&dev), "--central"]);
    assert_eq!(o.status.code(), Some(2), "bad request: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs the center"), "{}", String::from_utf8_lossy(&o.stderr));

    std::fs::write(
        ts.dir.path().join("station.toml"),
        "port_globs = []\nstation_id = \"test-station\"\n[central]\nurl = \"postgres://qa@127.0.0.1:1/imprint\"\nsslmode = \"disable\"\ntimeout_ms = 2000\n",
    )
    .unwrap();
    let o = run(&["verify", "--port", &path_of(&dev), "--central"]);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(1), "{text}{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("QA FAIL") && text.contains("the center could not be reached"), "{text}");
    assert!(text.lines().any(|l| l.contains("NO CENTER") && l.contains("center_record")), "{text}");
    let o = run(&["verify", "--port", &path_of(&dev), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = v["checks"].as_array().unwrap().iter().find(|c| c["check"] == "center_record").unwrap().clone();
    assert_eq!((c["result"].as_str(), v["passed"].as_bool()), (Some("unreachable"), Some(false)), "[central] alone asks the center: {v}");
}
