//! Sync against the real PostgreSQL, each test in a database of its own:
//! offline then sync, updates, idempotence, quarantine of tampered rows,
//! schema-version checks, least privilege, cross-station conflicts, TLS, and
//! four stations syncing (and revoking) at once.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_store::{new_id, now_text, AttemptEnd, CertSelector, DeviceFacts, Intent, Revocation, Store};
use imprint_sync::{sync_once, CentralConfig, SyncError, SyncStatus, SyncWorker};
use imprint_tests::pg::{assert_center_equals_local, central_count, central_drift, fill, local_set, rt, TestDb};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn store() -> (tempfile::TempDir, Arc<Store>) {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(Store::open(&d.path().join("station.db")).unwrap());
    (d, s)
}

fn raw(store: &Store, sql: &str) -> usize {
    let c = rusqlite_conn(store);
    c.execute(sql, []).unwrap()
}

/// A second connection straight to the station's SQLite file: what someone
/// editing the file by hand would do.
fn rusqlite_conn(store: &Store) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(store.path()).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

/// The record descriptors (`imprint_store::synced`) are the one definition
/// of a synced record: a column added to `migrations/postgres` but not to
/// the descriptor (or the reverse, or of another type, nullability or UPDATE
/// grant) fails here. The local half is in imprint-store's unit tests.
#[test]
fn the_record_descriptors_match_the_freshly_migrated_central_schema() {
    let db = TestDb::new();
    for table in imprint_store::synced::TABLES {
        assert_eq!(central_drift(&db, table), Vec::<String>::new(), "crates/imprint-store/src/synced.rs and migrations/postgres differ");
    }
    // The check sees drift: a column the descriptor lacks, a changed type.
    db.psql("ALTER TABLE attempt_steps ADD COLUMN extra text; ALTER TABLE certificates ALTER COLUMN issuer TYPE varchar");
    let drift = central_drift(&db, &imprint_store::synced::STEPS);
    assert_eq!(drift, ["attempt_steps: center has `extra text YES false`"]);
    let drift = central_drift(&db, &imprint_store::synced::CERTIFICATES);
    assert_eq!(drift.len(), 2, "{drift:?}");
    assert!(drift.iter().any(|d| d.contains("issuer character varying NO false")), "{drift:?}");
}

#[test]
fn offline_provisioning_then_sync_puts_exactly_the_local_records_at_the_center() {
    let mut db = TestDb::new();
    let cfg = db.add_station("line-1");
    let (_d, s) = store();
    let n = fill(&s, "OFF", 30, 10, 4);
    assert_eq!(n, 30 * 13, "attempt, 10 steps, certificate and audit entry each");

    // Offline: nothing listens on this port. The round fails, is recorded, and nothing is lost.
    let offline = CentralConfig { url: "postgres://127.0.0.1:1/none".into(), ..cfg.clone() };
    let e = sync_once(s.clone(), "line-1", &offline).unwrap_err();
    assert!(matches!(e, SyncError::Connect(_)), "{e}");
    let st = SyncStatus::read(&s).unwrap();
    assert_eq!(st.state, "failing");
    assert!(st.backlog > n as u64, "every change is pending: {}", st.backlog);
    assert!(st.last_error.as_deref().unwrap_or("").contains("unreachable"), "{:?}", st.last_error);

    // Back online.
    let r = sync_once(s.clone(), "line-1", &cfg).unwrap();
    assert_eq!(r.synced(), n as u64, "{r:?}");
    assert_eq!((r.attempts, r.steps, r.certificates, r.audit, r.quarantined), (30, 300, 30, 30, 0));
    assert_eq!(assert_center_equals_local(&db, &s, "line-1"), n);
    let st = SyncStatus::read(&s).unwrap();
    assert_eq!((st.state, st.backlog), ("ok", 0));
    assert!(db.psql("SELECT last_sync_at IS NOT NULL FROM stations WHERE id = 'line-1'") == "t");

    // Again: nothing to send, nothing changes.
    let r = sync_once(s.clone(), "line-1", &cfg).unwrap();
    assert_eq!(r.batches, 0);
    assert_eq!(central_count(&db, "line-1"), n as i64);
}

#[test]
fn a_resent_batch_is_recognised_by_its_hash_and_not_duplicated() {
    let mut db = TestDb::new();
    let cfg = db.add_station("line-2");
    let (_d, s) = store();
    let n = fill(&s, "RESEND", 5, 4, 1);
    sync_once(s.clone(), "line-2", &cfg).unwrap();
    // The station lost its acknowledgements (as if killed after the center's commit).
    raw(&s, "UPDATE outbox SET state = 'pending', synced_at = NULL");
    raw(&s, "DELETE FROM station_meta WHERE key = 'sync.watermark'");
    let r = sync_once(s.clone(), "line-2", &cfg).unwrap();
    assert_eq!((r.inserted, r.updated, r.already, r.quarantined), (0, 0, n as u64, 0), "{r:?}");
    assert_eq!(assert_center_equals_local(&db, &s, "line-2"), n);
}

#[test]
fn an_attempt_synced_while_running_is_updated_when_it_finishes() {
    let mut db = TestDb::new();
    let cfg = db.add_station("line-3");
    let (_d, s) = store();
    imprint_tests::station::work_order(&s, "WO-7", 10);
    let a = s.begin_attempt("/dev/ttyUSB0", Some("WO-7")).unwrap();
    s.set_device(&a, &DeviceFacts { serial: "UPD-1".into(), ..Default::default() }).unwrap();
    let cert = new_id();
    s.journal_intent(&Intent {
        id: cert.clone(),
        attempt_id: a.clone(),
        device_serial: "UPD-1".into(),
        issuer: "CN=CA".into(),
        serial_hex: "0a0b".into(),
        spki_sha256: "k-upd-1".into(),
        spki_der: vec![1, 2],
        not_before: imprint_store::Timestamp::now(),
        not_after: imprint_store::Timestamp::now(),
    })
    .unwrap();
    sync_once(s.clone(), "line-3", &cfg).unwrap();
    assert_eq!(db.psql(&format!("SELECT status FROM attempts WHERE id = '{a}'")), "running");
    assert_eq!(db.psql(&format!("SELECT status FROM certificates WHERE id = '{cert}'")), "signing");

    s.mark_issued(&cert, b"DER", b"CHAIN", "fp").unwrap();
    s.finish_attempt(&a, AttemptEnd::Passed { resumed: false }, 10, 20).unwrap();
    let r = sync_once(s.clone(), "line-3", &cfg).unwrap();
    assert_eq!((r.updated, r.quarantined), (2, 0), "{r:?}");
    assert_eq!(db.psql(&format!("SELECT status || ' ' || bytes_from_device FROM attempts WHERE id = '{a}'")), "passed 20");
    assert_eq!(db.psql(&format!("SELECT status || ' ' || encode(cert_der, 'escape') FROM certificates WHERE id = '{cert}'")), "issued DER");
    assert_center_equals_local(&db, &s, "line-3");
}

#[test]
fn a_tampered_local_row_that_conflicts_with_the_center_is_quarantined_and_reported_not_overwritten() {
    let mut db = TestDb::new();
    let cfg = db.add_station("line-4");
    let (_d, s) = store();
    fill(&s, "TAMPER", 3, 2, 1);
    sync_once(s.clone(), "line-4", &cfg).unwrap();
    let before = local_set(&s, "line-4");
    let certs = s.certificates().unwrap();
    let attempts = s.attempts(&Default::default()).unwrap();
    let central_serial = |id: &str| db.psql(&format!("SELECT serial_hex FROM certificates WHERE id = '{id}'"));
    let orig0 = central_serial(&certs[0].id);

    // 1. Edited in place and re-queued at the same version (a hand edit, or a restored copy).
    raw(&s, &format!("UPDATE certificates SET serial_hex = 'ffff' WHERE id = '{}'", certs[0].id));
    // (the sync watermark goes back to just below its latest change, as in a restored copy)
    raw(
        &s,
        &format!(
            "UPDATE station_meta SET value = (SELECT max(seq) - 1 FROM outbox WHERE entity_id = '{}') WHERE key = 'sync.watermark'",
            certs[0].id
        ),
    );
    // 2. An issued certificate changed with a new version, as if through the store.
    raw(&s, &format!("UPDATE certificates SET not_after = '2099-01-01T00:00:00Z' WHERE id = '{}'", certs[1].id));
    raw(&s, &format!("INSERT INTO outbox(entity, entity_id, changed_at) VALUES ('certificate', '{}', 'now')", certs[1].id));
    // 3. A finished attempt changed with a new version.
    raw(&s, &format!("UPDATE attempts SET status = 'failed', code = 'forged' WHERE id = '{}'", attempts[0].id));
    raw(&s, &format!("INSERT INTO outbox(entity, entity_id, changed_at) VALUES ('attempt', '{}', 'now')", attempts[0].id));

    let r = sync_once(s.clone(), "line-4", &cfg).unwrap();
    assert_eq!(r.quarantined, 3, "{r:?}");

    // The center kept what it had.
    assert_eq!(central_serial(&certs[0].id), orig0);
    assert_ne!(db.psql(&format!("SELECT to_char(not_after, 'YYYY') FROM certificates WHERE id = '{}'", certs[1].id)), "2099");
    assert_eq!(db.psql(&format!("SELECT status FROM attempts WHERE id = '{}'", attempts[0].id)), "passed");
    let central = imprint_tests::pg::central_set(&db, "line-4");
    assert_eq!(central, before, "the center is exactly what was synced before the tampering");

    // The station keeps its rows, flags them, and reports them.
    assert_eq!(s.cert_by_id(&certs[0].id).unwrap().unwrap().serial_hex, "ffff");
    let st = SyncStatus::read(&s).unwrap();
    assert_eq!(st.quarantined.len(), 3);
    assert_eq!(st.backlog, 0, "quarantined changes are not retried forever");
    let reasons: Vec<&str> = st.quarantined.iter().map(|q| q.reason.as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("different content for the same version")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("issued certificate")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("finished attempt")), "{reasons:?}");
    assert!(st.quarantined.iter().all(|q| q.central_sha256.is_some() && q.reported_at.is_some()), "{:?}", st.quarantined);
    // ... and the center hears of it as audit events.
    assert_eq!(db.psql("SELECT count(*) FROM audit_events WHERE kind = 'sync_quarantine' AND station_id = 'line-4'"), "3");
    // A later sync leaves it that way.
    let r = sync_once(s.clone(), "line-4", &cfg).unwrap();
    assert_eq!((r.batches, r.quarantined), (0, 0));
    assert_eq!(central_serial(&certs[0].id), orig0);
}

#[test]
fn a_certificate_key_seen_at_two_stations_is_quarantined_and_the_device_flagged() {
    let mut db = TestDb::new();
    let cfg_a = db.add_station("st-a");
    let cfg_b = db.add_station("st-b");
    let (_da, a) = store();
    let (_db, b) = store();
    let write = |s: &Store, serial_hex: &str| {
        let at = s.begin_attempt("p", None).unwrap();
        s.set_device(&at, &DeviceFacts { serial: "REWORK-1".into(), ..Default::default() }).unwrap();
        let id = new_id();
        s.journal_intent(&Intent {
            id: id.clone(),
            attempt_id: at.clone(),
            device_serial: "REWORK-1".into(),
            issuer: "CN=CA".into(),
            serial_hex: serial_hex.into(),
            spki_sha256: "the-same-key".into(),
            spki_der: vec![9],
            not_before: imprint_store::Timestamp::now(),
            not_after: imprint_store::Timestamp::now(),
        })
        .unwrap();
        s.mark_issued(&id, b"der", b"chain", "fp").unwrap();
        s.finish_attempt(&at, AttemptEnd::Passed { resumed: false }, 1, 1).unwrap();
        id
    };
    write(&a, "01");
    let cert_b = write(&b, "02");
    assert_eq!(sync_once(a.clone(), "st-a", &cfg_a).unwrap().quarantined, 0);
    let r = sync_once(b.clone(), "st-b", &cfg_b).unwrap();
    assert_eq!(r.quarantined, 1, "the second certificate for the same key: {r:?}");
    let q = &SyncStatus::read(&b).unwrap().quarantined[0];
    assert_eq!(q.key.id, cert_b);
    assert!(q.reason.contains("for this public key"), "{}", q.reason);
    // The device serial seen at both stations is flagged, not rejected: both attempts are there.
    assert_eq!(db.psql("SELECT count(*) FROM attempts WHERE device_serial = 'REWORK-1'"), "2");
    assert_eq!(
        db.psql("SELECT array_to_string(stations, ',') || ' ' || flag FROM device_flags WHERE serial = 'REWORK-1'"),
        "st-a,st-b seen at several stations"
    );
}

#[test]
fn a_station_never_migrates_and_says_which_schema_version_it_needs() {
    let empty = TestDb::empty();
    let cfg = CentralConfig {
        url: format!("postgres://postgres@127.0.0.1:5432/{}", empty.name),
        sslmode: Some("disable".into()),
        ..CentralConfig::default()
    };
    let (_d, s) = store();
    fill(&s, "SCHEMA", 1, 1, 1);
    let e = sync_once(s.clone(), "x", &cfg).unwrap_err().to_string();
    assert!(e.contains("has no Imprint schema") && e.contains("imprint db migrate"), "{e}");
    assert_eq!(empty.psql("SELECT to_regclass('_sqlx_migrations') IS NULL"), "t", "the station created nothing");

    let mut db = TestDb::new();
    let cfg = db.add_station("line-5");
    db.psql(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (999, 'future', true, '\\x00', 0)",
    );
    let e = sync_once(s.clone(), "line-5", &cfg).unwrap_err().to_string();
    assert!(
        e.contains("version 999")
            && e.contains(&format!("needs {}", imprint_sync::required_version()))
            && e.contains("upgrade the station"),
        "{e}"
    );
    db.psql("DELETE FROM _sqlx_migrations WHERE version = 999");
    // Registered for another station id: refused, clearly.
    let e = sync_once(s.clone(), "line-6", &cfg).unwrap_err().to_string();
    assert!(e.contains("syncs for station \"line-5\"") && e.contains("configured as \"line-6\""), "{e}");
    sync_once(s.clone(), "line-5", &cfg).unwrap();
}

#[test]
fn a_station_role_writes_and_reads_only_its_own_rows() {
    let mut db = TestDb::new();
    let cfg_a = db.add_station("own-a");
    let cfg_b = db.add_station("own-b");
    let (_d, s) = store();
    fill(&s, "OWN", 2, 1, 1);
    sync_once(s.clone(), "own-a", &cfg_a).unwrap();
    let opts_b = cfg_b.connect_options().unwrap();
    let results = rt().block_on(async {
        use sqlx::{ConnectOptions, Row};
        let mut c = opts_b.connect().await.unwrap();
        let seen: i64 = sqlx::query("SELECT count(*) FROM attempts").fetch_one(&mut c).await.unwrap().get(0);
        let forge = sqlx::query("INSERT INTO attempts (id, station_id, port, started_at, status, resumed, bytes_to_device, bytes_from_device, version, content_sha256) VALUES (gen_random_uuid(), 'own-a', 'p', now(), 'running', false, 0, 0, 1, '\\x00')")
            .execute(&mut c).await.map(|_| ()).map_err(|e| e.to_string());
        let upd = sqlx::query("UPDATE attempts SET station_id = 'own-b'").execute(&mut c).await.map(|r| r.rows_affected()).map_err(|e| e.to_string());
        let upd_mine = sqlx::query("UPDATE certificates SET serial_hex = '00'").execute(&mut c).await.map(|r| r.rows_affected()).map_err(|e| e.to_string());
        let del = sqlx::query("DELETE FROM attempts").execute(&mut c).await.map(|r| r.rows_affected()).map_err(|e| e.to_string());
        let view = sqlx::query("SELECT count(*) FROM devices").fetch_one(&mut c).await.map(|_| ()).map_err(|e| e.to_string());
        let ddl = sqlx::query("DROP TABLE attempts").execute(&mut c).await.map(|_| ()).map_err(|e| e.to_string());
        (seen, forge, upd, upd_mine, del, view, ddl)
    });
    let (seen, forge, upd, upd_mine, del, view, ddl) = results;
    assert_eq!(seen, 0, "station b sees none of station a's attempts");
    assert!(forge.unwrap_err().contains("row-level security"), "b cannot write rows as a");
    assert!(upd.unwrap_err().contains("permission denied"), "station_id is not updatable");
    assert!(upd_mine.unwrap_err().contains("permission denied"), "issued certificate columns are not updatable");
    assert!(del.unwrap_err().contains("permission denied"), "no deletes");
    assert!(view.unwrap_err().contains("permission denied"), "cross-station views are for readers");
    assert!(ddl.is_err());
    assert_center_equals_local(&db, &s, "own-a");
}

/// A QA verdict of `c` as `Station::verify` records it: every check passed,
/// or `revocation` failed because the certificate is revoked.
fn verdict_of(c: &imprint_store::CertRow, revoked: bool) -> imprint_store::NewQaVerdict {
    let revocation = if revoked {
        format!(r#"{{"check":"revocation","result":"fail","detail":"certificate {} is revoked"}}"#, c.serial_hex)
    } else {
        format!(r#"{{"check":"revocation","result":"pass","detail":"certificate {} is not revoked (status issued)"}}"#, c.serial_hex)
    };
    imprint_store::NewQaVerdict {
        operator: Some("qa-1".into()),
        port: "/dev/ttyQA0".into(),
        device_serial: c.device_serial.clone(),
        cert_serial_hex: Some(c.serial_hex.clone()),
        certificate_id: Some(c.id.clone()),
        batch: Some("WO-BENCH".into()),
        passed: !revoked,
        checks_json: format!(r#"[{{"check":"lock","result":"pass","detail":"the device reports locked"}},{revocation}]"#),
        failed: if revoked { vec!["revocation".into()] } else { vec![] },
    }
}

/// Issue 12: revocations and QA verdicts from four stations, made while each
/// station's sync worker runs, are consistent at the center: each station's
/// records equal its local ones (the center-equals-local check), every
/// verdict names its station's certificate there, every verdict that failed
/// `revocation` names a certificate the center holds as revoked (no later
/// than the verdict), and the center's CRL entries for the CA are exactly
/// the union of the stations' local revocations.
#[test]
fn four_stations_syncing_and_revoking_at_once_each_end_with_the_center_equal_to_their_records() {
    let mut db = TestDb::new();
    let stations: Vec<(String, CentralConfig, tempfile::TempDir, Arc<Store>)> = (0..4)
        .map(|i| {
            let id = format!("quad-{i}");
            let cfg = db.add_station(&id);
            let (d, s) = store();
            (id, cfg, d, s)
        })
        .collect();
    // Workers run while the stations keep provisioning.
    let workers: Vec<SyncWorker> = stations.iter().map(|(id, cfg, _, s)| SyncWorker::spawn(s.clone(), id, cfg.clone()).unwrap()).collect();
    std::thread::scope(|sc| {
        for (i, (_, _, _, s)) in stations.iter().enumerate() {
            sc.spawn(move || {
                fill(s, &format!("Q{i}"), 40, 8, 2);
                // QA verifies every 4th device (it passes): a verdict naming
                // the device's certificate, and its audit entry.
                let mut certs = s.certificates().unwrap();
                certs.sort_by(|a, b| a.device_serial.cmp(&b.device_serial));
                for c in certs.iter().step_by(4) {
                    s.record_qa_verdict(verdict_of(c, false)).unwrap();
                }
            });
        }
    });
    // Then each station revokes 10 of its certificates while its worker runs
    // (some reach the center issued first and are updated to revoked), and
    // QA verifies each revoked device again: it fails `revocation`. Three of
    // them (devices 0, 4, 8) passed before they were revoked.
    std::thread::scope(|sc| {
        for (_, _, _, s) in &stations {
            sc.spawn(move || {
                let mut certs = s.certificates().unwrap();
                certs.sort_by(|a, b| a.device_serial.cmp(&b.device_serial));
                for c in certs.into_iter().take(10) {
                    let r = Revocation { reason: "superseded".into(), comment: Some("quad".into()), operator: Some("sup".into()) };
                    assert_eq!(s.revoke(&CertSelector::CertSerial(c.serial_hex.clone()), &r).unwrap().revoked.len(), 1);
                    s.record_qa_verdict(verdict_of(&c, true)).unwrap();
                }
            });
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    for (w, (_, _, _, s)) in workers.iter().zip(&stations) {
        w.wake();
        while s.outbox_counts().unwrap().pending > 0 {
            assert!(Instant::now() < deadline, "backlog not drained: {:?}", w.status());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    drop(workers);
    let mut total = 0;
    for (id, _, _, s) in &stations {
        total += assert_center_equals_local(&db, s, id);
    }
    // 40 attempts of 11 records each, 10 revocation entries and 20 QA
    // verdicts with their audit entries per station.
    assert_eq!(total, 4 * (40 * 11 + 10 + 20 * 2));
    assert_eq!(db.psql("SELECT count(*) FROM certificates WHERE status = 'revoked' AND revocation_reason = 'superseded'"), "40");
    let central_total: i64 = db
        .psql("SELECT (SELECT count(*) FROM attempts) + (SELECT count(*) FROM attempt_steps) + (SELECT count(*) FROM certificates) + (SELECT count(*) FROM audit_trail) + (SELECT count(*) FROM qa_verdicts)")
        .parse()
        .unwrap();
    assert_eq!(central_total, total as i64, "the center holds the union and nothing else");

    // Every verdict names a certificate of its own station at the center,
    // for the same device and serial.
    assert_eq!(db.psql("SELECT count(*) FROM qa_verdicts"), "80");
    let dangling = db.psql(
        "SELECT count(*) FROM qa_verdicts v LEFT JOIN certificates c
           ON c.id = v.certificate_id AND c.station_id = v.station_id AND c.serial_hex = v.cert_serial_hex AND c.device_serial = v.device_serial
         WHERE c.id IS NULL",
    );
    assert_eq!(dangling, "0", "a verdict names a certificate the center does not hold for its station and device");
    // A verdict that failed `revocation` names a certificate revoked at the
    // center no later than the verdict; a passing one, a certificate that was
    // issued when it was made.
    assert_eq!(
        db.psql(
            "SELECT count(*) FROM qa_verdicts v JOIN certificates c ON c.id = v.certificate_id
             WHERE v.verdict = 'fail' AND c.status = 'revoked' AND c.revoked_at <= v.at AND v.checks LIKE '%\"revocation\",\"result\":\"fail\"%'"
        ),
        "40"
    );
    assert_eq!(
        db.psql("SELECT count(*) FROM qa_verdicts v JOIN certificates c ON c.id = v.certificate_id WHERE v.verdict = 'pass' AND (c.revoked_at IS NULL OR c.revoked_at > v.at)"),
        "40"
    );
    // The latest verdict of each revoked device is the failing one, at the
    // center as at its station (what `report --central` shows).
    for (id, _, _, s) in &stations {
        // Newest first: the first verdict seen of a device is its latest.
        let mut latest = std::collections::BTreeMap::new();
        for v in s.qa_verdicts(&imprint_store::QaFilter::default()).unwrap() {
            latest.entry(v.device_serial).or_insert(v.verdict);
        }
        let local: Vec<String> = latest.into_iter().filter(|(_, v)| v == "fail").map(|(d, _)| d).collect();
        let central = db.psql(&format!(
            "SELECT string_agg(device_serial, ',' ORDER BY device_serial) FROM (
               SELECT DISTINCT ON (device_serial) device_serial, verdict FROM qa_verdicts WHERE station_id = '{id}' ORDER BY device_serial, at DESC, id DESC
             ) latest WHERE verdict = 'fail'"
        ));
        assert_eq!(central, local.join(","), "{id}: the devices whose latest verdict failed");
        assert_eq!(local.len(), 10, "{id}");
    }
    // The center's CRL entries for the CA (what `crl generate --central`
    // signs) are exactly every station's local revocations.
    let mut local_revoked: Vec<String> = stations
        .iter()
        .flat_map(|(id, _, _, s)| {
            s.certificates()
                .unwrap()
                .into_iter()
                .filter(|c| c.revoked_at.is_some())
                .map(move |c| format!("{id} {} {}", c.serial_hex, c.revocation_reason.unwrap_or_default()))
        })
        .collect();
    local_revoked.sort();
    let mut central_crl: Vec<String> = db
        .psql("SELECT station_id || ' ' || serial_hex || ' ' || revocation_reason FROM crl_entries('CN=Imprint Test CA')")
        .lines()
        .map(str::to_string)
        .collect();
    central_crl.sort();
    assert_eq!(local_revoked.len(), 40);
    assert_eq!(central_crl, local_revoked, "the center's CRL entries are the union of the stations' revocations");
}

#[test]
fn verify_full_tls_connects_to_the_right_name_and_refuses_a_wrong_one() {
    // The cluster's certificate is Debian's snakeoil: CN and SAN "localhost".
    let ca = std::path::Path::new("/etc/ssl/certs/ssl-cert-snakeoil.pem");
    if !ca.exists() || imprint_tests::pg::try_psql("postgres", "SHOW ssl").as_deref() != Ok("on") {
        eprintln!("SKIP: the cluster has no TLS set up");
        return;
    }
    let mut db = TestDb::new();
    let cfg = db.add_station("tls-1");
    let (_d, s) = store();
    fill(&s, "TLS", 2, 2, 1);
    let tls = |host: &str, root: Option<&std::path::Path>| CentralConfig {
        url: format!("postgres://{host}:5432/{}", db.name),
        sslmode: Some("verify-full".into()),
        sslrootcert: root.map(|p| p.to_path_buf()),
        ..cfg.clone()
    };
    // Wrong name: 127.0.0.1 is not in the certificate.
    let e = sync_once(s.clone(), "tls-1", &tls("127.0.0.1", Some(ca))).unwrap_err().to_string();
    assert!(e.contains("unreachable"), "{e}");
    // Wrong root: the public roots do not vouch for a self-signed server.
    let e = sync_once(s.clone(), "tls-1", &tls("localhost", None)).unwrap_err().to_string();
    assert!(e.contains("unreachable"), "{e}");
    // Right name, right root: synced over TLS.
    let r = sync_once(s.clone(), "tls-1", &tls("localhost", Some(ca))).unwrap();
    assert_eq!(r.synced(), 10, "2 attempts, 4 steps, 2 certificates, 2 audit entries");
    assert_center_equals_local(&db, &s, "tls-1");
    let ssl_used = rt().block_on(async {
        use sqlx::{ConnectOptions, Row};
        let mut c = tls("localhost", Some(ca)).connect_options().unwrap().connect().await.unwrap();
        let r: bool = sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetch_one(&mut c).await.unwrap().get(0);
        r
    });
    assert!(ssl_used);
}

#[test]
fn a_record_the_center_refuses_is_quarantined_alone_and_the_rest_go_through() {
    let mut db = TestDb::new();
    let cfg = db.add_station("poison-1");
    let (_d, s) = store();
    let n = fill(&s, "POISON", 20, 5, 2);
    // A device wrote a NUL into a step's detail: SQLite keeps it, PostgreSQL text cannot.
    let a = s.begin_attempt("p", None).unwrap();
    s.record_steps(
        &a,
        vec![imprint_store::StepRow { at: now_text(), stage: "identify".into(), kind: "console".into(), detail: "bad\0byte".into() }],
    )
    .unwrap();
    let r = sync_once(s.clone(), "poison-1", &cfg).unwrap();
    assert_eq!(r.quarantined, 1, "{r:?}");
    let st = SyncStatus::read(&s).unwrap();
    assert_eq!(st.quarantined.len(), 1);
    assert_eq!(st.quarantined[0].key.entity, imprint_store::Entity::Step);
    assert!(st.quarantined[0].reason.contains("the center refused it"), "{}", st.quarantined[0].reason);
    assert_eq!(st.backlog, 0);
    // Everything else arrived: the center holds the local set minus that one step.
    let mut local = local_set(&s, "poison-1");
    local.retain(|k, _| !k.starts_with(&format!("step:{a}#")));
    assert_eq!(imprint_tests::pg::central_set(&db, "poison-1"), local);
    assert_eq!(local.len(), n + 1);
}

/// A time edited by hand in one record (text that is no RFC 3339 time, or
/// one whose offset puts it past year 9999 in UTC, which the PostgreSQL
/// encoder cannot convert) must not stop the sync: that record is
/// quarantined with a reason naming the column, and every other record of
/// the batch reaches the center.
#[test]
fn a_malformed_hand_edited_time_in_one_record_is_quarantined_alone_and_the_rest_sync() {
    let mut db = TestDb::new();
    let cfg = db.add_station("badtime-1");
    let (_d, s) = store();
    let n = fill(&s, "BADTIME", 12, 4, 1);
    let attempts = s.attempts(&Default::default()).unwrap();
    let (a0, a1) = (attempts[0].id.clone(), attempts[1].id.clone());
    // By hand, straight into the file: SQLite's own spelling of a time, and an
    // RFC 3339 time that is after 9999-12-31 once in UTC.
    raw(&s, &format!("UPDATE attempts SET finished_at = '2026-11-30 05:00:00' WHERE id = '{a0}'"));
    raw(&s, &format!("UPDATE steps SET at = '9999-12-31T23:59:59-01:00' WHERE attempt_id = '{a1}' AND id = (SELECT min(id) FROM steps WHERE attempt_id = '{a1}')"));
    let r = sync_once(s.clone(), "badtime-1", &cfg).unwrap();
    assert_eq!(r.quarantined, 2, "{r:?}");
    let st = SyncStatus::read(&s).unwrap();
    assert_eq!(st.backlog, 0, "nothing is left pending: {st:?}");
    let reasons: Vec<(String, &str)> = st.quarantined.iter().map(|q| (q.key.id.clone(), q.reason.as_str())).collect();
    assert!(reasons.iter().any(|(id, r)| *id == a0 && r.contains("finished_at") && r.contains("is not an RFC 3339 time")), "{reasons:?}");
    assert!(reasons.iter().any(|(id, r)| *id == a1 && r.contains("at:") && r.contains("out of range")), "{reasons:?}");
    // Everything else arrived: the center holds the local set minus those two records.
    let mut local = local_set(&s, "badtime-1");
    let before = local.len();
    let (bad_attempt, bad_step) = (format!("attempt:{a0}"), format!("step:{a1}#{}", first_step(&s, &a1)));
    local.retain(|k, _| *k != bad_attempt && *k != bad_step);
    assert_eq!(local.len(), before - 2, "{:?}", local.keys().take(3).collect::<Vec<_>>());
    assert_eq!(imprint_tests::pg::central_set(&db, "badtime-1"), local);
    assert_eq!(before, n);
}

fn first_step(s: &Store, attempt: &str) -> i64 {
    rusqlite_conn(s).query_row("SELECT min(id) FROM steps WHERE attempt_id = ?1", [attempt], |r| r.get(0)).unwrap()
}

/// Sync now (the Bench header's button) woke the worker and returned at
/// once with the state of the round before: after the center came back the
/// operator was told "Could not reach the central database" by a round that
/// was about to succeed. `round_now` waits for a round begun after the call.
/// Here the worker backs off for a minute after failing, so only the asked
/// round can have reached the center.
#[test]
fn sync_now_reports_the_round_it_asked_for_once_the_center_is_back() {
    let mut db = TestDb::new();
    let cfg = db.add_station("now-1");
    let (_d, s) = store();
    fill(&s, "NOW", 3, 2, 1);
    // A relay to the real server on a port nobody listens on yet: the center is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = CentralConfig {
        url: cfg.url.replace(&format!(":{}/", imprint_tests::pg::PG_PORT), &format!(":{port}/")),
        retry_min_ms: 60_000,
        retry_max_ms: 60_000,
        ..cfg.clone()
    };
    let w = SyncWorker::spawn(s.clone(), "now-1", down).unwrap();
    let started = Instant::now();
    while w.status().last_error.is_none() {
        assert!(started.elapsed() < Duration::from_secs(20), "the first round never failed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!w.status().connected);
    // The center comes back.
    let relay = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for c in relay.incoming() {
            let Ok(c) = c else { break };
            let Ok(up) = std::net::TcpStream::connect((imprint_tests::pg::PG_HOST, imprint_tests::pg::PG_PORT)) else { break };
            let (mut c2, mut up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
            let (mut c, mut up) = (c, up);
            std::thread::spawn(move || std::io::copy(&mut c2, &mut up2));
            std::thread::spawn(move || std::io::copy(&mut up, &mut c));
        }
    });
    assert!(w.round_now(Duration::from_secs(20)), "the asked round finished in time");
    let st = w.status();
    assert!(st.connected, "{st:?}");
    assert_eq!(st.backlog, 0, "{st:?}");
    assert_eq!(db.psql("SELECT count(*) FROM attempts WHERE station_id = 'now-1'"), "3");
    w.stop();
}
