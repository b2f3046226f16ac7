//! Rework and renewal end to end (issue 12 items 4 and 5) on simulated
//! devices over ptys with a real station: a supervisor's rework
//! authorisation lets a board with a certified serial be reset over the
//! protocol, re-keyed and re-certified while the old certificate is revoked
//! as superseded; a certificate inside its renewal window is replaced for
//! the same key; a kill -9 at each crash point of either flow leaves no
//! device, key or serial with two current certificates and the flow
//! completes on re-attach; superseded and revoked statuses reach the center.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_api::{Actor, ErrorCode};
use imprint_devsim::SimHandle;
use imprint_proto::Outcome;
use imprint_station::{Station, StationConfig};
use imprint_store::{CertRow, Store};
use imprint_tests::station::{imprint_bin, path_of, sim, TestStation};
use std::process::{Command, Output};
use std::time::Duration;

/// The development CA's demo admin (holds `rework` and `report`).
fn supervisor(cfg: &StationConfig) -> Actor {
    imprint_api::auth::command_actor(cfg, None, false).unwrap()
}

fn open(cfg: &StationConfig) -> Station {
    let st = Station::open(cfg.clone(), None).expect("station opens");
    st.set_operator(Some("test-technician".into()));
    st
}

fn passed(st: &Station, dev: &SimHandle) -> CertRow {
    let r = st.provision(&path_of(dev), None).unwrap();
    let Outcome::Passed { .. } = &r.outcome else { panic!("{}: {:?}", dev.serial(), r.outcome) };
    let a = st.store().attempt(&r.attempt_id).unwrap().unwrap();
    st.store().cert_by_id(a.certificate_id.as_deref().unwrap()).unwrap().unwrap()
}

fn failed(st: &Station, dev: &SimHandle) -> imprint_proto::Failure {
    let r = st.provision(&path_of(dev), None).unwrap();
    let Outcome::Failed(f) = r.outcome else { panic!("{} passed: {:?}", dev.serial(), r.outcome) };
    f
}

/// The invariant: no key and no device serial has two current (`signing`
/// or `issued`) certificates. Returns the current ones of `serial`.
fn at_most_one_current(store: &Store, serial: &str) -> Vec<CertRow> {
    let all = store.certificates().unwrap();
    let current: Vec<&CertRow> = all.iter().filter(|c| c.status.known().is_some_and(|s| s.is_current())).collect();
    let mut keys = std::collections::BTreeMap::<&str, usize>::new();
    let mut serials = std::collections::BTreeMap::<&str, usize>::new();
    for c in &current {
        *keys.entry(&c.spki_sha256).or_default() += 1;
        *serials.entry(&c.device_serial).or_default() += 1;
    }
    assert!(keys.values().all(|n| *n == 1), "a key with two current certificates: {current:#?}");
    assert!(serials.values().all(|n| *n == 1), "a serial with two current certificates: {current:#?}");
    current.into_iter().filter(|c| c.device_serial == serial).cloned().collect()
}

fn imprint(ts: &TestStation, args: &[&str], crash_at: Option<&str>) -> Output {
    let mut c = Command::new(imprint_bin());
    c.envs(ts.env()).args(args);
    if let Some(p) = crash_at {
        c.env("IMPRINT_TEST_CRASH_AT", p);
    }
    c.output().expect("run imprint")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn write_config(ts: &TestStation, extra: &str) {
    std::fs::write(ts.dir.path().join("station.toml"), format!("port_globs = []\nstation_id = \"test-station\"\n{extra}")).unwrap();
}

/// The test station's config with `extra` (TOML) applied. No `[central]`:
/// the tests sync explicitly, so no background worker races them.
fn config(ts: &TestStation, extra: &str) -> StationConfig {
    let mut c = StationConfig::parse(extra).unwrap();
    c.data_dir = ts.cfg.data_dir.clone();
    c.port_globs = vec![];
    c.station_id = ts.cfg.station_id.clone();
    c
}

#[test]
fn a_replacement_board_with_a_certified_serial_is_reworked_only_with_a_supervisors_authorisation() {
    let ts = TestStation::new();
    let st = ts.open();
    let original = sim("RW-0001", "");
    let old = passed(&st, &original);

    // Without an authorisation the second board stays refused.
    let board = sim("RW-0001", "");
    let f = failed(&st, &board);
    assert_eq!(f.code.as_str(), "duplicate_serial", "{f:?}");

    // A technician may not authorise; a supervisor may, for a known serial only.
    let me = supervisor(&ts.cfg);
    let none = imprint_api::rework::authorise(&me, &ts.cfg, st.store(), "RW-NEVER", None).unwrap_err();
    assert_eq!(none.code, ErrorCode::NotFound, "{none:?}");
    let auth = imprint_api::rework::authorise(&me, &ts.cfg, st.store(), "RW-0001", Some("board swapped after a drop test")).unwrap();
    assert_eq!(auth.state, imprint_api::rework::ReworkState::Open);

    // The board is reset over the protocol, makes a new key and gets a new certificate.
    let new = passed(&st, &board);
    assert_ne!(new.spki_sha256, old.spki_sha256);
    let snap = board.snapshot();
    assert_eq!(snap.cert_der.as_deref(), new.cert_der.as_deref(), "the board holds the new certificate");
    assert!(snap.locked);
    let attempt = st.store().attempts(&imprint_store::AttemptFilter::default()).unwrap().remove(0);
    let steps = st.store().steps(&attempt.id).unwrap();
    assert!(steps.iter().any(|s| s.detail.contains("device reset to blank")), "{steps:#?}");

    // The old certificate is revoked as superseded in the same flow; one current certificate for the serial.
    let old = st.store().cert_by_id(&old.id).unwrap().unwrap();
    assert_eq!((old.status.as_str(), old.revocation_reason.as_deref()), ("revoked", Some("superseded")));
    assert_eq!(old.superseded_by.as_deref(), Some(new.id.as_str()));
    let current = at_most_one_current(st.store(), "RW-0001");
    assert_eq!(current.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [new.id.as_str()]);

    // Single use: the authorisation is used by this attempt, and a third board is refused again.
    let used = &imprint_api::rework::authorisations(&me, st.store(), Some("RW-0001")).unwrap()[0];
    assert_eq!(used.state, imprint_api::rework::ReworkState::Used);
    assert_eq!((used.attempt_id.as_deref(), used.certificate_id.as_deref()), (Some(attempt.id.as_str()), Some(new.id.as_str())));
    let third = sim("RW-0001", "");
    assert_eq!(failed(&st, &third).code.as_str(), "duplicate_serial");
    // The original board, re-attached, holds a revoked certificate.
    assert_eq!(failed(&st, &original).code.as_str(), "certificate_revoked");
    // The new board re-attaches fine (nothing is reworked twice).
    let again = passed(&st, &board);
    assert_eq!(again.id, new.id);

    // Every change went through the audit trail.
    let v = st.store().verify_audit(None).unwrap();
    assert!(v.ok(), "{v:?}");
    let kinds: Vec<String> = st
        .store()
        .audit_entries(&imprint_store::audit::AuditFilter::default())
        .unwrap()
        .iter()
        .map(|e| e.kind.as_str().to_string())
        .collect();
    assert!(kinds.iter().any(|k| k == "rework_authorised") && kinds.iter().any(|k| k == "revocation"), "{kinds:?}");
    st.shutdown(Duration::from_secs(5));
}

#[test]
fn the_same_unlocked_board_is_reset_and_rekeyed_and_a_locked_one_is_never_reset() {
    let ts = TestStation::new();
    let cfg = config(&ts, "[profile]\nlock_device = false\n");
    let me = supervisor(&cfg);
    {
        let st = open(&cfg);
        let dev = sim("RW-SAME-1", "");
        let old = passed(&st, &dev);
        imprint_api::rework::authorise(&me, &cfg, st.store(), "RW-SAME-1", None).unwrap();
        let new = passed(&st, &dev);
        assert_ne!(new.spki_sha256, old.spki_sha256, "the same board made a new key after the reset");
        assert_eq!(dev.snapshot().public_key_spki.as_deref(), Some(new.spki_der.as_slice()));
        assert_eq!(st.store().cert_by_id(&old.id).unwrap().unwrap().revocation_reason.as_deref(), Some("superseded"));
        at_most_one_current(st.store(), "RW-SAME-1");
        st.shutdown(Duration::from_secs(5));
    }
    // A locked board: RESET is never sent, the authorisation stays open, nothing changes.
    let st = ts.open();
    let dev = sim("RW-LOCK-1", "");
    let old = passed(&st, &dev);
    imprint_api::rework::authorise(&me, &ts.cfg, st.store(), "RW-LOCK-1", None).unwrap();
    let before = dev.snapshot();
    let f = failed(&st, &dev);
    assert_eq!((f.code.as_str(), f.retryable), ("device_locked", false), "{f:?}");
    assert!(f.reason.contains("never reset"), "{}", f.reason);
    let after = dev.snapshot();
    assert_eq!((after.public_key_spki, after.cert_der), (before.public_key_spki, before.cert_der));
    assert_eq!(st.store().cert_by_id(&old.id).unwrap().unwrap().status.as_str(), "issued");
    let open_auth = imprint_api::rework::authorisations(&me, st.store(), Some("RW-LOCK-1")).unwrap();
    assert_eq!(open_auth[0].state, imprint_api::rework::ReworkState::Open);
    st.shutdown(Duration::from_secs(5));
}

/// Provisioned with a 10-day certificate, then the profile says 365 days
/// and renew 30 days before: the device is inside its renewal window.
const SHORT: &str = "[profile]\nlock_device = false\nvalidity_days = 10\n";
const RENEWING: &str = "[profile]\nlock_device = false\nvalidity_days = 365\nrenew_before_days = 30\n";

#[test]
fn a_certificate_inside_its_renewal_window_is_renewed_for_the_same_key_and_listed_as_expiring_before() {
    let ts = TestStation::new();
    let me = supervisor(&ts.cfg);
    let (dev, dev2, locked) = (sim("RN-0001", ""), sim("RN-0002", ""), sim("RN-0003", ""));
    let (old, old2, old3) = {
        let st = open(&config(&ts, SHORT));
        let r = (passed(&st, &dev), passed(&st, &dev2), passed(&st, &locked));
        st.shutdown(Duration::from_secs(5));
        r
    };
    // `certs expiring` lists the three (local), not with a window of 5 days.
    let cfg = config(&ts, RENEWING);
    let store = imprint_api::open_store(&cfg).unwrap();
    let soon = imprint_api::rework::expiring(&me, &cfg, Some(&store), 30, false).unwrap();
    assert_eq!(soon.iter().map(|c| c.device_serial.as_str()).collect::<Vec<_>>(), ["RN-0001", "RN-0002", "RN-0003"]);
    assert!(soon.iter().all(|c| (9..=10).contains(&c.days_left)), "{soon:?}");
    assert!(imprint_api::rework::expiring(&me, &cfg, Some(&store), 5, false).unwrap().is_empty());
    store.close();
    drop(store);

    let st = open(&cfg);
    let new = passed(&st, &dev);
    assert_eq!(new.spki_sha256, old.spki_sha256, "the same key");
    assert_ne!(new.serial_hex, old.serial_hex, "a new serial");
    assert_eq!(dev.snapshot().cert_der.as_deref(), new.cert_der.as_deref());
    let old = st.store().cert_by_id(&old.id).unwrap().unwrap();
    assert_eq!((old.status.as_str(), old.superseded_by.as_deref()), ("superseded", Some(new.id.as_str())));
    assert!(old.revoked_at.is_none(), "not revoked: the profile keeps a superseded certificate valid");
    assert_eq!(at_most_one_current(st.store(), "RN-0001").len(), 1);
    // Re-attached: outside the window now, nothing renewed again.
    assert_eq!(passed(&st, &dev).id, new.id);
    // A locked device inside its window: nothing issued, it keeps its certificate.
    let mut lock_it = config(&ts, RENEWING);
    lock_it.profile.lock_device = true;
    st.shutdown(Duration::from_secs(5));
    drop(st);
    {
        // Lock the third device (a station that locks re-sends its certificate and locks it).
        let st = open(&config(&ts, "[profile]\nvalidity_days = 10\n"));
        assert_eq!(passed(&st, &locked).id, old3.id);
        assert!(locked.snapshot().locked);
        st.shutdown(Duration::from_secs(5));
    }
    let st = open(&lock_it);
    let f = failed(&st, &locked);
    assert_eq!((f.code.as_str(), f.stage.as_str()), ("renewal_locked", "lookup"), "{f:?}");
    assert_eq!(st.store().certs_by_device_serial("RN-0003").unwrap().len(), 1, "nothing issued");
    st.shutdown(Duration::from_secs(5));
    drop(st);
    // With revoke_on_renewal the old one is revoked as superseded.
    let st = open(&config(&ts, &format!("{RENEWING}revoke_on_renewal = true\n")));
    let new2 = passed(&st, &dev2);
    let old2 = st.store().cert_by_id(&old2.id).unwrap().unwrap();
    assert_eq!((old2.status.as_str(), old2.revocation_reason.as_deref()), ("revoked", Some("superseded")));
    assert_eq!(new2.spki_sha256, old2.spki_sha256);
    let v = st.store().verify_audit(None).unwrap();
    assert!(v.ok(), "{v:?}");
    // Only the locked one is still expiring.
    let soon = imprint_api::rework::expiring(&me, &cfg, Some(st.store()), 30, false).unwrap();
    assert_eq!(soon.iter().map(|c| c.device_serial.as_str()).collect::<Vec<_>>(), ["RN-0003"]);
    st.shutdown(Duration::from_secs(5));
}

/// A kill -9 (abort) at `point` during the flow `provision` runs, then a
/// restart: the invariant holds in what the dead station left and after
/// the flow completes on re-attach.
fn crash_then_complete(ts: &TestStation, dev: &SimHandle, point: &str) -> Vec<CertRow> {
    let port = path_of(dev);
    let out = imprint(ts, &["provision", "--port", &port], Some(point));
    assert_eq!(out.status.code(), None, "{point}: the station must die by signal, got {:?}\n{}", out.status, text(&out));
    {
        let store = Store::open(&ts.cfg.store_path()).unwrap();
        at_most_one_current(&store, dev.serial());
    }
    let out = imprint(ts, &["provision", "--port", &port], None);
    assert!(out.status.success(), "{point}: restart failed: {}", text(&out));
    let store = Store::open(&ts.cfg.store_path()).unwrap();
    let current = at_most_one_current(&store, dev.serial());
    assert_eq!(current.len(), 1, "{point}");
    assert_eq!(current[0].status.as_str(), "issued", "{point}");
    assert_eq!(dev.snapshot().cert_der.as_deref(), current[0].cert_der.as_deref(), "{point}: the device holds the current certificate");
    let v = store.verify_audit(None).unwrap();
    assert!(v.ok(), "{point}: {v:?}");
    store.certs_by_device_serial(dev.serial()).unwrap()
}

#[test]
fn killed_at_each_point_of_a_rework_no_serial_has_two_current_certificates_and_it_completes_on_reattach() {
    for point in ["send:RESET", "send:CSR", "after_journal", "after_sign", "after_record", "send:PUT", "send:PROVE", "send:LOCK"] {
        let ts = TestStation::new();
        let serial = "RWK-0001";
        let original = sim(serial, "");
        let out = imprint(&ts, &["provision", "--port", &path_of(&original)], None);
        assert!(out.status.success(), "{}", text(&out));
        let me = supervisor(&ts.cfg);
        imprint_api::with_local_store(&ts.cfg, |s| imprint_api::rework::authorise(&me, &ts.cfg, s, serial, Some(point))).unwrap();
        let board = sim(serial, "");
        let all = crash_then_complete(&ts, &board, point);
        assert_eq!(all.len(), 2, "{point}: {all:#?}");
        let (old, new) = (&all[0], &all[1]);
        assert_eq!((old.status.as_str(), old.revocation_reason.as_deref()), ("revoked", Some("superseded")), "{point}");
        assert_eq!(old.superseded_by.as_deref(), Some(new.id.as_str()), "{point}");
        assert_eq!(board.snapshot().public_key_spki.as_deref(), Some(new.spki_der.as_slice()), "{point}");
        let store = Store::open(&ts.cfg.store_path()).unwrap();
        let auth = store.rework_authorisations(Some(serial)).unwrap();
        assert_eq!(
            (auth.len(), auth[0].certificate_id.as_deref()),
            (1, Some(new.id.as_str())),
            "{point}: used once, by the new certificate"
        );
    }
}

#[test]
fn killed_at_each_point_of_a_renewal_no_key_has_two_current_certificates_and_it_completes_on_reattach() {
    for point in ["send:CSR", "after_journal", "after_sign", "after_record", "send:PUT", "send:COMMIT", "send:PROVE"] {
        let ts = TestStation::new();
        let dev = sim("RNK-0001", "");
        write_config(&ts, SHORT);
        let out = imprint(&ts, &["provision", "--port", &path_of(&dev)], None);
        assert!(out.status.success(), "{}", text(&out));
        write_config(&ts, RENEWING);
        let all = crash_then_complete(&ts, &dev, point);
        assert_eq!(all.len(), 2, "{point}: {all:#?}");
        let (old, new) = (&all[0], &all[1]);
        assert_eq!(old.status.as_str(), "superseded", "{point}");
        assert_eq!((old.spki_sha256.as_str(), old.superseded_by.as_deref()), (new.spki_sha256.as_str(), Some(new.id.as_str())), "{point}");
    }
}

#[test]
fn superseded_and_revoked_statuses_sync_to_the_center_and_certs_expiring_lists_local_and_central() {
    use imprint_tests::pg::{assert_center_equals_local, TestDb};
    let mut db = TestDb::new();
    let mut ts = TestStation::new();
    ts.cfg.station_id = "rw-sync".into();
    ts.cfg.central = Some(db.add_station("rw-sync"));
    let me = supervisor(&ts.cfg);
    let (renewed, reworked) = (sim("RWS-0001", ""), sim("RWS-0002", ""));
    let sync = |store: &std::sync::Arc<Store>| {
        let r = imprint_sync::sync_once(store.clone(), "rw-sync", ts.cfg.central.as_ref().unwrap()).unwrap();
        assert_eq!(r.quarantined, 0, "{r:?}");
        assert_center_equals_local(&db, store, "rw-sync");
        r
    };
    let (old_a, old_b) = {
        let st = open(&config(&ts, SHORT));
        let r = (passed(&st, &renewed), passed(&st, &reworked));
        sync(st.store());
        st.shutdown(Duration::from_secs(5));
        r
    };
    let cfg = config(&ts, RENEWING);
    let with_center = StationConfig { central: ts.cfg.central.clone(), ..cfg.clone() };
    // Central: both certificates expire within 30 days.
    let central = imprint_api::rework::expiring(&me, &with_center, None, 30, true).unwrap();
    assert_eq!(
        central.iter().map(|c| (c.device_serial.as_str(), c.station_id.as_str())).collect::<Vec<_>>(),
        [("RWS-0001", "rw-sync"), ("RWS-0002", "rw-sync")]
    );

    // A renewal (same key: the center's old row must leave `issued` before the
    // new one fits its one-current-per-key index, in one batch) and a rework.
    let st = open(&cfg);
    let new_a = passed(&st, &renewed);
    imprint_api::rework::authorise(&me, &cfg, st.store(), "RWS-0002", Some("sync test")).unwrap();
    let board = sim("RWS-0002", "");
    let new_b = passed(&st, &board);
    let r = sync(st.store());
    assert!(r.updated >= 2, "the old certificates were updated at the center: {r:?}");
    assert!(r.rework_authorisations >= 1, "{r:?}");
    let row = |id: &str| db.psql(&format!("SELECT status || '|' || coalesce(revocation_reason, '-') FROM certificates WHERE id = '{id}'"));
    assert_eq!((row(&old_a.id), row(&old_b.id)), ("superseded|-".to_string(), "revoked|superseded".to_string()));
    assert_eq!((row(&new_a.id), row(&new_b.id)), ("issued|-".to_string(), "issued|-".to_string()));
    assert_eq!(db.psql("SELECT count(*) FROM rework_authorisations WHERE used_at IS NOT NULL"), "1");
    // Nothing is expiring any more, here or at the center.
    assert!(imprint_api::rework::expiring(&me, &cfg, Some(st.store()), 30, false).unwrap().is_empty());
    assert!(imprint_api::rework::expiring(&me, &with_center, None, 30, true).unwrap().is_empty());
    // The center refuses a second current certificate for a key, and a superseded one made current again.
    let dup = imprint_tests::pg::try_psql(&db.name, &format!("UPDATE certificates SET status = 'issued' WHERE id = '{}'", old_a.id));
    assert!(dup.is_err(), "a superseded certificate became current again at the center: {dup:?}");
    st.shutdown(Duration::from_secs(5));
}

#[test]
fn imprint_rework_authorise_and_certs_expiring_on_the_command_line() {
    let ts = TestStation::new();
    write_config(&ts, SHORT);
    let dev = sim("RWC-0001", "");
    let out = imprint(&ts, &["provision", "--port", &path_of(&dev)], None);
    assert!(out.status.success(), "{}", text(&out));
    let o = imprint(&ts, &["certs", "expiring", "--days", "30", "--json"], None);
    assert!(o.status.success(), "{}", text(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[0]["device_serial"], "RWC-0001", "{rows}");
    let o = imprint(&ts, &["rework", "authorise", "--serial", "RWC-0001", "--comment", "mislabelled", "--json"], None);
    assert!(o.status.success(), "{}", text(&o));
    let a: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((a["device_serial"].clone(), a["state"].clone()), ("RWC-0001".into(), "open".into()));
    let o = imprint(&ts, &["rework", "list"], None);
    assert!(text(&o).contains("RWC-0001") && text(&o).contains("open until") && text(&o).contains("mislabelled"), "{}", text(&o));
    let o = imprint(&ts, &["certs", "expiring", "--central"], None);
    assert_eq!(o.status.code(), Some(i32::from(ErrorCode::BadRequest.exit_code())), "{}", text(&o));
}

/// The app's path (issue 12 item 4: "a scan or a command"): a replacement
/// board refused as `duplicate_serial` on the Bench; a technician's
/// `REWORK:` scan is refused `forbidden` and changes nothing; a
/// supervisor's scan records the same single-use, expiring authorisation
/// as `imprint rework authorise`, the tile shows it and offers Retry, and
/// the Retry resets, re-keys and re-certifies the board while the old
/// certificate is revoked as superseded.
#[test]
fn a_supervisors_rework_scan_authorises_the_rework_shown_on_the_tile_and_retry_reworks_the_board() {
    use imprint_api::engine::TileState;
    use imprint_api::scan::ScanKind;
    use imprint_api::{Api, ApiOptions, Credentials, Mode, OperatorPin, Role};
    let dir = tempfile::tempdir().unwrap();
    let links = dir.path().join("slots");
    std::fs::create_dir_all(&links).unwrap();
    let mut cfg = StationConfig {
        data_dir: dir.path().join("data"),
        port_globs: vec![format!("{}/*", links.display())],
        station_id: "rework-scan".into(),
        mode: Mode::Manual,
        ..Default::default()
    };
    cfg.operators.demo_admin = false;
    let api = Api::new(ApiOptions::new(cfg, dir.path().join("station.toml")), std::sync::Arc::new(|_| {}));
    api.start(None).unwrap();
    let new_op = |id: &str, role| imprint_api::auth::NewOperator {
        id: id.into(),
        display_name: id.into(),
        role,
        pin: OperatorPin::new(format!("{id}-pin-7")),
        badge: None,
    };
    api.create_first_admin(&new_op("admin", Role::Admin)).unwrap();
    api.add_operator(&new_op("tech", Role::Technician)).unwrap();
    api.add_operator(&new_op("sup", Role::Supervisor)).unwrap();
    let sign_in = |id: &str| {
        api.sign_out();
        api.sign_in(&Credentials::Pin { id: id.into(), pin: OperatorPin::new(format!("{id}-pin-7")) }).unwrap();
    };
    let bench = api.bench().unwrap();
    let tile_of = |port: &str| bench.tiles().into_iter().find(|t| t.port == port);
    let wait = |what: &str, pred: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !pred() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for: {what}; tiles: {:#?}", bench.tiles());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    sign_in("tech");

    // The original board is provisioned, then unplugged.
    let original = imprint_devsim::SimDevice::spawn(imprint_devsim::SimConfig::new("RWSCAN-1").with_link_dir(&links)).unwrap();
    wait("the original identified", &|| bench.find_serial("RWSCAN-1").is_some());
    let p1 = bench.find_serial("RWSCAN-1").unwrap().port;
    api.provision(&p1).unwrap();
    wait("the original passed", &|| tile_of(&p1).is_some_and(|t| t.state == TileState::Passed));
    let store = api.station().unwrap().store().clone();
    let old = store.certs_by_device_serial("RWSCAN-1").unwrap().remove(0);
    drop(original);
    wait("the original unplugged", &|| tile_of(&p1).is_some_and(|t| !t.present));

    // The replacement board with the same serial: refused as a clone, no Retry.
    let board = imprint_devsim::SimDevice::spawn(imprint_devsim::SimConfig::new("RWSCAN-1").with_link_dir(&links)).unwrap();
    wait("the board identified", &|| bench.tiles().iter().any(|t| t.present && t.device_serial.as_deref() == Some("RWSCAN-1")));
    let p2 = bench.tiles().into_iter().find(|t| t.present && t.device_serial.as_deref() == Some("RWSCAN-1")).unwrap().port;
    api.provision(&p2).unwrap();
    wait("the board refused", &|| tile_of(&p2).is_some_and(|t| t.state == TileState::Failed));
    let t = tile_of(&p2).unwrap();
    assert_eq!((t.code.map(|c| c.as_str()), t.retryable, t.rework_until.clone()), (Some("duplicate_serial"), false, None), "{t:#?}");

    // A technician's scan is refused in the library, and records nothing.
    let e = api.scan("REWORK:RWSCAN-1").unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden, "{e:?}");
    assert!(store.rework_authorisations(Some("RWSCAN-1")).unwrap().is_empty());
    assert_eq!(tile_of(&p2).unwrap().rework_until, None);

    // A supervisor's scan: the authorisation, on the tile at once, with Retry.
    sign_in("sup");
    let r = api.scan(" rework:RWSCAN-1\r\n").unwrap();
    assert_eq!((r.kind, r.port.as_deref()), (ScanKind::Rework, Some(p2.as_str())), "{r:?}");
    assert!(r.message.contains("rework of RWSCAN-1 authorised by sup"), "{}", r.message);
    let auths = store.rework_authorisations(Some("RWSCAN-1")).unwrap();
    assert_eq!(auths.len(), 1);
    assert_eq!((auths[0].authorised_by.as_deref(), auths[0].used_at.as_deref()), (Some("sup"), None));
    let t = tile_of(&p2).unwrap();
    assert_eq!(t.rework_until.as_deref(), Some(auths[0].expires_at.as_str()), "{t:#?}");
    assert!(t.retryable && t.hint.as_deref().unwrap_or("").contains("Retry resets this board"), "{t:#?}");
    // The authorisation is a record with its audit entry, as from the command.
    let kinds: Vec<String> = store
        .audit_entries(&imprint_store::audit::AuditFilter::default())
        .unwrap()
        .into_iter()
        .map(|e| e.kind.as_str().to_string())
        .collect();
    assert!(kinds.iter().any(|k| k == "rework_authorised"), "{kinds:?}");

    // Retry (the technician again): reset, new key, new certificate; the old one revoked as superseded.
    sign_in("tech");
    api.provision(&p2).unwrap();
    wait("the board reworked", &|| tile_of(&p2).is_some_and(|t| t.state == TileState::Passed));
    let t = tile_of(&p2).unwrap();
    assert_eq!(t.rework_until, None, "the authorisation is used: {t:#?}");
    let new = store.latest_cert_for_device("RWSCAN-1").unwrap().unwrap();
    assert_ne!(new.spki_sha256, old.spki_sha256);
    assert_eq!(board.snapshot().cert_der.as_deref(), new.cert_der.as_deref());
    let old = store.cert_by_id(&old.id).unwrap().unwrap();
    assert_eq!((old.status.as_str(), old.revocation_reason.as_deref()), ("revoked", Some("superseded")));
    at_most_one_current(&store, "RWSCAN-1");
    let used = store.rework_authorisations(Some("RWSCAN-1")).unwrap().remove(0);
    assert_eq!(used.certificate_id.as_deref(), Some(new.id.as_str()));
    // Single use: nothing is open any more.
    assert!(store.open_rework("RWSCAN-1", &imprint_store::now_text()).unwrap().is_none());
    api.shutdown();
}
