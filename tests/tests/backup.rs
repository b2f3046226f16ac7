//! Backups and restores: an online copy taken while devices provision, age
//! encryption that only the right identity opens, no CA key unless asked,
//! refusals (newer records, a running station, a tampered copy), and the
//! restore drill against a real center: provision, back up, provision more,
//! destroy the store, restore, sync: nothing issued is missing at the
//! center, what was issued after the backup is re-learned, nothing is
//! issued twice.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_api::auth::Actor;
use imprint_api::ErrorCode;
use imprint_devsim::SimHandle;
use imprint_proto::session::Outcome;
use imprint_station::{Station, DRAIN_WITHIN};
use imprint_store::AuditKind;
use imprint_tests::pg::{assert_center_equals_local, TestDb};
use imprint_tests::station::{path_of, sim, TestStation};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

fn admin(ts: &TestStation) -> Actor {
    // The development CA's demo admin.
    imprint_api::auth::command_actor(&ts.cfg, None, false).unwrap()
}

/// Provision every device; (device serial -> certificate serial).
fn provision<'a>(st: &Station, devs: impl IntoIterator<Item = &'a SimHandle>) -> BTreeMap<String, String> {
    let ports: Vec<String> = devs.into_iter().map(path_of).collect();
    st.provision_all(&ports, None)
        .into_iter()
        .map(|r| match r.unwrap().outcome {
            Outcome::Passed { identity, cert_serial_hex, .. } => (identity.serial, cert_serial_hex),
            Outcome::Failed(f) => panic!("{f:?}"),
        })
        .collect()
}

fn wait_synced(st: &Station) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        st.sync_now(Duration::from_secs(20));
        let s = imprint_sync::SyncStatus::read(st.store()).unwrap();
        if s.backlog == 0 {
            assert_eq!(s.quarantined_rows, 0, "{:?}", s.quarantined);
            return;
        }
        assert!(Instant::now() < deadline, "backlog {} never synced: {:?}", s.backlog, s.last_error);
    }
}

/// The archive's members (an unencrypted backup).
fn members(file: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut a = tar::Archive::new(std::fs::File::open(file).unwrap());
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            (name, v)
        })
        .collect()
}

#[test]
fn an_encrypted_backup_opens_only_with_its_identity_and_holds_no_ca_key_unless_asked() {
    let mut ts = TestStation::new();
    let id = age::x25519::Identity::generate();
    let other = age::x25519::Identity::generate();
    ts.cfg.backup.recipient = Some(id.to_public().to_string());
    let write_identity = |name: &str, i: &age::x25519::Identity| {
        use age::secrecy::ExposeSecret;
        let p = ts.dir.path().join(name);
        std::fs::write(&p, format!("# test identity\n{}\n", i.to_string().expose_secret())).unwrap();
        p
    };
    let (right, wrong) = (write_identity("right.key", &id), write_identity("wrong.key", &other));
    let me = admin(&ts);
    let st = ts.open();
    let devs: Vec<SimHandle> = (0..2).map(|i| sim(&format!("SIM-ENC-{i}"), "")).collect();
    provision(&st, &devs);
    let file = ts.dir.path().join("enc.backup");
    let r = imprint_api::backup::backup_store(&me, &ts.cfg, st.store(), &file, false).unwrap();
    assert!(r.encrypted && r.manifest.store.attempts == 2 && !r.manifest.includes_dev_ca_key, "{r:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1"));
    assert!(!bytes.windows(15).any(|w| w == b"SQLite format 3"), "the store is not readable in the file");
    // No identity, the wrong one, the right one.
    assert_eq!(imprint_api::backup::inspect(&me, &file, None).unwrap_err().code, ErrorCode::BadRequest);
    let e = imprint_api::backup::inspect(&me, &file, Some(&wrong)).unwrap_err();
    assert!(e.message.contains("could not be decrypted"), "{e:?}");
    let m = imprint_api::backup::inspect(&me, &file, Some(&right)).unwrap();
    assert_eq!((m.station_id.as_str(), m.store.attempts, m.store.issued), ("test-station", 2, 2));
    // A backup never overwrites a file.
    assert_eq!(imprint_api::backup::backup_store(&me, &ts.cfg, st.store(), &file, false).unwrap_err().code, ErrorCode::BadRequest);

    // Unencrypted, the members can be listed: no CA key unless asked, and then flagged.
    let mut plain = ts.cfg.clone();
    plain.backup.recipient = None;
    let key_file = ts.cfg.data_dir.join("dev-ca").join(imprint_signer::dev::DEV_KEY_FILE);
    let key = std::fs::read(&key_file).unwrap();
    let f1 = ts.dir.path().join("plain.backup");
    imprint_api::backup::backup_store(&me, &plain, st.store(), &f1, false).unwrap();
    let m1 = members(&f1);
    assert_eq!(m1.keys().map(String::as_str).collect::<Vec<_>>(), ["ca-chain.pem", "manifest.json", "station.db"]);
    assert!(!std::fs::read(&f1).unwrap().windows(key.len()).any(|w| w == key.as_slice()), "the CA key is in the backup");
    let f2 = ts.dir.path().join("with-key.backup");
    let r2 = imprint_api::backup::backup_store(&me, &plain, st.store(), &f2, true).unwrap();
    assert!(r2.manifest.includes_dev_ca_key);
    assert_eq!(members(&f2)["dev-ca-key.pem"], key);
    st.shutdown(DRAIN_WITHIN);
}

#[test]
fn restore_refuses_newer_records_a_running_station_and_a_tampered_copy() {
    let ts = TestStation::new();
    let me = admin(&ts);
    let st = ts.open();
    provision(&st, &[sim("SIM-REF-1", "")]);
    let file = ts.dir.path().join("one.backup");
    imprint_api::backup::backup_store(&me, &ts.cfg, st.store(), &file, false).unwrap();
    // The station holds the data dir.
    assert_eq!(imprint_api::backup::restore(&me, &ts.cfg, &file, None, false).unwrap_err().code, ErrorCode::StoreLocked);
    provision(&st, &[sim("SIM-REF-2", "")]);
    st.shutdown(DRAIN_WITHIN);
    drop(st);
    // The store now holds a record the backup lacks: refused, nothing replaced.
    let e = imprint_api::backup::restore(&me, &ts.cfg, &file, None, false).unwrap_err();
    assert_eq!(e.code, ErrorCode::RestoreRefused, "{e:?}");
    assert!(e.message.contains("--force"), "{e:?}");
    assert_eq!(
        imprint_store::Store::open_read_only(&ts.cfg.store_path()).unwrap().facts().unwrap().attempts_by_status,
        [("passed".to_string(), 2)]
    );

    // A copy whose certificate was edited (digest and manifest made to match): the audit chain's anchors catch it.
    let dir = tempfile::tempdir().unwrap();
    let mut m = members(&file);
    let db = dir.path().join("station.db");
    std::fs::write(&db, &m["station.db"]).unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute("UPDATE certificates SET device_serial = 'SIM-FORGED'", []).unwrap();
    drop(c);
    let forged = std::fs::read(&db).unwrap();
    use sha2_free::hex_sha256;
    let mut manifest: serde_json::Value = serde_json::from_slice(&m["manifest.json"]).unwrap();
    manifest["store_sha256"] = hex_sha256(&forged).into();
    m.insert("manifest.json".into(), serde_json::to_vec(&manifest).unwrap());
    m.insert("station.db".into(), forged);
    let bad = ts.dir.path().join("forged.backup");
    let mut b = tar::Builder::new(std::fs::File::create(&bad).unwrap());
    for (name, data) in &m {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.finish().unwrap();
    drop(b);
    let e = imprint_api::backup::restore(&me, &ts.cfg, &bad, None, true).unwrap_err();
    assert_eq!(e.code, ErrorCode::Tampered, "{e:?}");
    // And a flipped byte in the archive's store fails its digest.
    let mut raw = std::fs::read(&file).unwrap();
    let at = raw.windows(15).position(|w| w == b"SQLite format 3").unwrap() + 3000;
    raw[at] ^= 0xff;
    let flipped = ts.dir.path().join("flipped.backup");
    std::fs::write(&flipped, raw).unwrap();
    assert_eq!(imprint_api::backup::inspect(&me, &flipped, None).unwrap_err().code, ErrorCode::Tampered);
}

/// SHA-256 through ring (already a test dependency).
mod sha2_free {
    pub fn hex_sha256(b: &[u8]) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
    }
}

#[test]
fn restore_drill_nothing_issued_is_lost_at_the_center_or_issued_twice() {
    let mut db = TestDb::new();
    let mut ts = TestStation::new();
    ts.cfg.station_id = "drill".into();
    ts.cfg.central = Some(db.add_station("drill"));
    let me = admin(&ts);
    let st = ts.open();

    // 1. A first lot, synced.
    let a: Vec<SimHandle> = (0..3).map(|i| sim(&format!("SIM-DRILL-A{i}"), "")).collect();
    let mut certs = provision(&st, &a);
    wait_synced(&st);

    // 2. A backup taken while a second lot provisions.
    let b: Vec<SimHandle> = (0..4).map(|i| sim(&format!("SIM-DRILL-B{i}"), "slow-ms=80")).collect();
    let ports: Vec<String> = b.iter().map(path_of).collect();
    let running = {
        let st = st.clone();
        std::thread::spawn(move || st.provision_all(&ports, None))
    };
    // Once they are under way (recorded as running), not before.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !st.store().facts().unwrap().attempts_by_status.iter().any(|(s, _)| s == "running") {
        assert!(Instant::now() < deadline, "the second lot never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let file = ts.dir.path().join("drill.backup");
    let taken = imprint_api::backup::backup_store(&me, &ts.cfg, st.store(), &file, false).unwrap();
    for r in running.join().unwrap() {
        match r.unwrap().outcome {
            Outcome::Passed { identity, cert_serial_hex, .. } => certs.insert(identity.serial, cert_serial_hex),
            Outcome::Failed(f) => panic!("{f:?}"),
        };
    }
    assert!(taken.manifest.store.issued < 7, "the backup was taken while the second lot ran: {:?}", taken.manifest);

    // 3. More after the backup, synced.
    let c: Vec<SimHandle> = (0..3).map(|i| sim(&format!("SIM-DRILL-C{i}"), "")).collect();
    certs.extend(provision(&st, &c));
    wait_synced(&st);
    let central_certs = |db: &TestDb| db.psql("SELECT count(*) FROM certificates WHERE station_id = 'drill'");
    assert_eq!(central_certs(&db), "10");
    st.shutdown(DRAIN_WITHIN);
    drop(st);

    // 4. The disk dies: the store is gone.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", ts.cfg.store_path().display()));
    }

    // 5. Restore: checked, re-learned from the center, audited.
    let r = imprint_api::backup::restore(&me, &ts.cfg, &file, None, false).unwrap();
    let learned = r.relearned.clone().expect("re-learned from the center");
    assert!(r.relearn_error.is_none(), "{r:?}");
    assert_eq!(learned.certificates() as u64, 10 - taken.manifest.store.issued, "every certificate issued after the backup: {learned:?}");

    // 6. The station again: every device comes back and gets the certificate it has, none a second one.
    let st = ts.open();
    let again = provision(&st, a.iter().chain(&b).chain(&c));
    assert_eq!(again, certs, "a device got another certificate after the restore");
    wait_synced(&st);
    assert_eq!(central_certs(&db), "10", "a certificate was issued twice");
    assert_eq!(db.psql("SELECT count(DISTINCT spki_sha256) FROM certificates WHERE station_id = 'drill'"), "10");
    // Nothing issued is missing at the center, and the center equals the restored station.
    assert_eq!(st.store().facts().unwrap().attempts_by_status.iter().map(|(_, n)| n).sum::<u64>(), 20);
    assert_center_equals_local(&db, st.store(), "drill");
    // The trail verifies locally and at the center, and says a restore happened.
    let v = st.store().verify_audit(None).unwrap();
    assert!(v.ok(), "{:?}", v.findings);
    let restored = st
        .store()
        .audit_entries(&imprint_store::audit::AuditFilter { kind: Some(AuditKind::StoreRestored.as_str().into()), ..Default::default() })
        .unwrap();
    assert_eq!(restored.len(), 1);
    let cv = imprint_sync::verify::verify_central(st.store(), "drill", ts.cfg.central.as_ref().unwrap()).unwrap();
    assert!(cv.verification.ok() && cv.central_chain.is_none(), "{:?} {:?}", cv.verification.findings, cv.central_chain);
    st.shutdown(DRAIN_WITHIN);
}

#[test]
fn a_restore_without_a_reachable_center_holds_the_station_until_it_has_re_learned() {
    let mut db = TestDb::new();
    let mut ts = TestStation::new();
    ts.cfg.station_id = "drill-offline".into();
    ts.cfg.central = Some(db.add_station("drill-offline"));
    let me = admin(&ts);
    let st = ts.open();
    let a = [sim("SIM-OFF-A0", "")];
    provision(&st, &a);
    let file = ts.dir.path().join("off.backup");
    imprint_api::backup::backup_store(&me, &ts.cfg, st.store(), &file, false).unwrap();
    let c = [sim("SIM-OFF-C0", "")];
    let issued = provision(&st, &c);
    wait_synced(&st);
    st.shutdown(DRAIN_WITHIN);
    drop(st);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", ts.cfg.store_path().display()));
    }
    // The center is unreachable at restore time: restored, not re-learned.
    let mut offline = ts.cfg.clone();
    offline.central.as_mut().unwrap().url = "postgres://127.0.0.1:1/none".into();
    let r = imprint_api::backup::restore(&me, &offline, &file, None, false).unwrap();
    assert!(r.relearned.is_none() && r.relearn_error.is_some(), "{r:?}");
    // The station does not start (it would not know the certificates issued after the backup) ...
    let e = Station::open(offline.clone(), None).err().expect("refused while not re-learned");
    assert!(e.to_string().contains("re-learn"), "{e}");
    // ... until the center answers: then it re-learns first, and the device keeps its certificate.
    let st = ts.open();
    assert_eq!(provision(&st, &c), issued);
    wait_synced(&st);
    assert_eq!(db.psql("SELECT count(*) FROM certificates WHERE station_id = 'drill-offline'"), "2");
    assert_center_equals_local(&db, st.store(), "drill-offline");
    st.shutdown(DRAIN_WITHIN);
}

/// A sample's value in a metrics exposition (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' '))).map_or(0.0, |v| v.parse().unwrap())
}

#[test]
fn scheduled_backups_wait_the_interval_go_to_the_dir_and_keep_the_newest_n() {
    // A real station with `[backup] interval_minutes = 1, dir, keep = 2`; the
    // dir already holds two older scheduled backups of this station, one of
    // another station and a file of someone else's.
    let mut ts = TestStation::new();
    let dir = ts.dir.path().join("scheduled");
    ts.cfg.backup.interval_minutes = 1;
    ts.cfg.backup.dir = dir.clone();
    ts.cfg.backup.keep = 2;
    std::fs::create_dir_all(&dir).unwrap();
    let (oldest, older) = ("imprint-test-station-20200101T000000000Z.backup", "imprint-test-station-20200102T000000000Z.backup");
    for name in [oldest, older, "imprint-other-line-20190101T000000000Z.backup", "notes.txt"] {
        std::fs::write(dir.join(name), b"not ours to judge").unwrap();
    }
    // A second station whose backup dir cannot be made (a file is in the way): its failure is counted.
    let mut broken = TestStation::new();
    broken.cfg.station_id = "broken".into();
    broken.cfg.backup.interval_minutes = 1;
    broken.cfg.backup.dir = broken.dir.path().join("in-the-way");
    std::fs::write(&broken.cfg.backup.dir, b"a file, not a dir").unwrap();

    let me = admin(&ts);
    let opened = Instant::now();
    let st = ts.open();
    let bst = broken.open();
    let devs: Vec<SimHandle> = (0..2).map(|i| sim(&format!("SIM-SCHED-{i}"), "")).collect();
    provision(&st, &devs);
    let ours = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    // Nothing before the interval.
    std::thread::sleep(Duration::from_secs(45).saturating_sub(opened.elapsed()));
    assert_eq!(ours(&dir).len(), 4, "a scheduled backup before its interval: {:?}", ours(&dir));
    assert_eq!(sample(&st.metrics_text(), "imprint_backups_total{result=\"ok\"}"), 0.0);

    // After one interval: one new backup, the oldest of this station's pruned, the rest untouched.
    let deadline = Instant::now() + Duration::from_secs(90);
    while sample(&st.metrics_text(), "imprint_backups_total{result=\"ok\"}") < 1.0 || ours(&dir).contains(&oldest.to_string()) {
        assert!(Instant::now() < deadline, "no scheduled backup within the interval: {:?}", ours(&dir));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(opened.elapsed() >= Duration::from_secs(60), "taken before the interval: {:?}", opened.elapsed());
    let now = ours(&dir);
    let new: Vec<&String> = now.iter().filter(|n| n.starts_with("imprint-test-station-2") && n.as_str() != older).collect();
    assert_eq!(new.len(), 1, "{now:?}");
    assert_eq!(now.len(), 4, "keep = 2 of this station's, the others stay: {now:?}");
    assert!(now.contains(&older.to_string()) && now.contains(&"imprint-other-line-20190101T000000000Z.backup".to_string()));
    let file = dir.join(new[0]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let m = imprint_api::backup::inspect(&me, &file, None).unwrap();
    assert_eq!((m.station_id.as_str(), m.store.attempts, m.store.issued, m.includes_dev_ca_key), ("test-station", 2, 2, false));
    let text = st.metrics_text();
    assert!(sample(&text, "imprint_last_backup_timestamp_seconds") > 0.0, "{text}");
    assert_eq!(sample(&text, "imprint_backups_total{result=\"failed\"}"), 0.0, "{text}");

    // The broken station: a failure, counted, and no last good backup.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sample(&bst.metrics_text(), "imprint_backups_total{result=\"failed\"}") < 1.0 {
        assert!(Instant::now() < deadline, "the failed scheduled backup was not counted:\n{}", bst.metrics_text());
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(sample(&bst.metrics_text(), "imprint_last_backup_timestamp_seconds"), 0.0);
    // The scheduler stops with the station (shutdown does not wait out an interval).
    let stopping = Instant::now();
    st.shutdown(DRAIN_WITHIN);
    bst.shutdown(DRAIN_WITHIN);
    assert!(stopping.elapsed() < Duration::from_secs(30), "shutdown waited for the backup interval");
}

#[test]
fn a_backup_runs_at_the_lowest_cpu_priority_and_leaves_the_callers_alone() {
    // Regression (issue 16's backup-under-load bench, 1.19 against <= 1.05):
    // the copy, its checks, the hash and the encryption ran at the caller's
    // priority and took CPU from the port threads.
    let ts = TestStation::new();
    let me = admin(&ts);
    let st = ts.open();
    let devs: Vec<SimHandle> = (0..1).map(|i| sim(&format!("SIM-NICE-{i}"), "")).collect();
    provision(&st, &devs);
    let before = imprint_station::backup::this_threads_nice();
    let file = ts.dir.path().join("nice.backup");
    imprint_api::backup::backup_store(&me, &ts.cfg, st.store(), &file, false).unwrap();
    assert_eq!(imprint_station::backup::last_backup_nice(), imprint_station::backup::BACKUP_NICE, "the copy ran at nice 19");
    assert_eq!(imprint_station::backup::this_threads_nice(), before, "the caller's thread keeps its priority");
    st.shutdown(DRAIN_WITHIN);
}
