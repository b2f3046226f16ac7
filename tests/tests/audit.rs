//! The audit trail against an attacker with the station's SQLite file and a
//! station role at the real PostgreSQL center: every kind of tampering is
//! found, the first bad entry named, locally and/or against the center; a
//! record edited after its sync is found by `audit verify` and `sync
//! verify`; the center refuses chain breaks and hand-made updates of
//! finished attempts. Attacks are made as an attacker would: rusqlite on the
//! file, triggers dropped first.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_api::audit::{self, AuditKind, AuditQuery};
use imprint_api::{CentralConfig, ErrorCode};
use imprint_store::audit::{entry_hash, AuditEntry, Finding};
use imprint_store::{Recorded, Store};
use imprint_sync::sync_once;
use imprint_tests::pg::{fill, rt, TestDb};
use imprint_tests::station::imprint_bin;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

/// A station store with a trail: 3 provisioned attempts (3 outcomes) and 4
/// sign-in/out entries: 7 entries, #1-#3 outcomes.
fn station(dir: &Path, station_id: &str) -> Arc<Store> {
    let s = Arc::new(Store::open(&dir.join("station.db")).unwrap());
    s.set_station_id(station_id);
    fill(&s, "AUD", 3, 2, 1);
    for (op, kind) in [("op-1", AuditKind::SignIn), ("op-1", AuditKind::SignOut), ("op-2", AuditKind::SignIn), ("op-2", AuditKind::SignOut)]
    {
        audit::append(&s, Some(op), kind, None, serde_json::json!({"via": "badge"}), Vec::new()).unwrap();
    }
    s
}

/// The attacker's connection: triggers dropped, as anyone with the file can.
fn attacker(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    c.execute_batch("DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete;").unwrap();
    c
}

fn entries(s: &Store) -> Vec<AuditEntry> {
    s.audit_entries(&Default::default()).unwrap()
}

/// Verify the store at `path` as `imprint audit verify` does.
/// The development CA's demo admin (an Actor is made only by a sign-in).
fn admin() -> imprint_api::Actor {
    imprint_api::auth::command_actor(&imprint_station::StationConfig::default(), None, false).unwrap()
}

fn verify_local(path: &Path) -> audit::AuditReport {
    let s = Store::open(path).unwrap();
    audit::verify_local(&admin(), &s).unwrap()
}

fn first(r: &audit::AuditReport) -> Finding {
    r.first.as_ref().unwrap_or_else(|| panic!("tampering not found: {r:?}")).finding.clone()
}

/// Write an entry's fields (all but seq) over the row at `seq`.
fn write_entry(c: &rusqlite::Connection, e: &AuditEntry) {
    c.execute(
        "UPDATE audit SET id=?2, at=?3, station_id=?4, operator=?5, kind=?6, subject=?7, detail=?8, anchors=?9, prev_hash=?10, hash=?11 WHERE seq=?1",
        rusqlite::params![e.seq, e.id, e.at, e.station_id, e.operator, e.kind.as_str(), e.subject, e.detail, e.anchors, e.prev_hash, e.hash],
    )
    .unwrap();
}

#[test]
fn each_kind_of_local_tampering_is_found_with_the_first_bad_entry_named() {
    // Edit an entry in place.
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("station.db");
    drop(station(d.path(), "aud-local"));
    assert!(verify_local(&p).ok, "an untouched trail verifies");
    attacker(&p).execute("UPDATE audit SET detail = '{\"via\":\"password\"}' WHERE seq = 5", []).unwrap();
    let r = verify_local(&p);
    assert!(matches!(first(&r), Finding::Altered { seq: 5, .. }), "{r:?}");
    assert!(r.first.as_ref().unwrap().message.starts_with("entry #5 ("), "{}", r.first.as_ref().unwrap().message);
    assert_eq!(r.tampered().unwrap().code, ErrorCode::Tampered);

    // Delete one.
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("station.db");
    drop(station(d.path(), "aud-local"));
    attacker(&p).execute("DELETE FROM audit WHERE seq = 4", []).unwrap();
    let r = verify_local(&p);
    assert_eq!(first(&r), Finding::Deleted { seq: 5, from: Some(4), to: Some(4) });
    assert!(r.first.as_ref().unwrap().message.contains("entry #4 was deleted"), "{r:?}");

    // Insert one (a forged entry with a correct hash, the rest renumbered).
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("station.db");
    let s = station(d.path(), "aud-local");
    let before = entries(&s);
    drop(s);
    let c = attacker(&p);
    c.execute_batch("UPDATE audit SET seq = seq + 1000 WHERE seq >= 3; UPDATE audit SET seq = seq - 999 WHERE seq >= 1000;").unwrap();
    let mut forged = AuditEntry {
        seq: 3,
        id: imprint_store::new_id(),
        at: before[1].at.clone(),
        station_id: "aud-local".into(),
        operator: Some("op-9".into()),
        kind: Recorded::Known(AuditKind::SettingsChanged),
        subject: None,
        detail: r#"{"validity_days":99999}"#.into(),
        anchors: "[]".into(),
        prev_hash: before[1].hash.clone(),
        hash: String::new(),
    };
    forged.hash = entry_hash(&forged);
    c.execute(
        "INSERT INTO audit(seq, id, at, station_id, operator, kind, subject, detail, anchors, prev_hash, hash) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
        rusqlite::params![forged.seq, forged.id, forged.at, forged.station_id, forged.operator, forged.kind.as_str(), forged.subject, forged.detail, forged.anchors, forged.prev_hash, forged.hash],
    )
    .unwrap();
    drop(c);
    let r = verify_local(&p);
    assert!(matches!(&first(&r), Finding::Inserted { seq: 3, id, to: 3 } if *id == forged.id), "{r:?}");

    // Reorder two.
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("station.db");
    drop(station(d.path(), "aud-local"));
    attacker(&p)
        .execute_batch(
            "UPDATE audit SET seq = -1 WHERE seq = 5; UPDATE audit SET seq = 5 WHERE seq = 4; UPDATE audit SET seq = 4 WHERE seq = -1;",
        )
        .unwrap();
    let r = verify_local(&p);
    assert!(matches!(first(&r), Finding::Reordered { seq: 4, belongs_after: 5, .. }), "{r:?}");

    // Truncate the tail: a shorter trail is a valid trail on its own; the
    // center's head catches it (`a_trail_truncated_or_rewritten_after_its_sync...`).
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("station.db");
    drop(station(d.path(), "aud-local"));
    attacker(&p).execute("DELETE FROM audit WHERE seq > 5", []).unwrap();
    assert!(verify_local(&p).ok);
}

#[test]
fn a_finished_attempt_appends_its_outcome_anchoring_the_attempt_and_its_certificate() {
    let d = tempfile::tempdir().unwrap();
    let s = station(d.path(), "aud-anchor");
    let outcomes = audit::list(&admin(), &s, &AuditQuery { kind: Some("provisioning_outcome".into()), ..Default::default() }).unwrap();
    assert_eq!(outcomes.len(), 3);
    let attempts = s.attempts(&Default::default()).unwrap();
    for o in &outcomes {
        let a = attempts.iter().find(|a| Some(&a.id) == o.subject.as_ref()).unwrap();
        assert_eq!(o.detail["status"], "passed");
        let anchors = o.anchors.as_array().unwrap();
        let tables: Vec<&str> = anchors.iter().map(|x| x["table"].as_str().unwrap()).collect();
        assert_eq!(tables, ["attempt", "certificate"]);
        assert_eq!(anchors[1]["key"], a.certificate_id.clone().unwrap().as_str());
    }
    let r = audit::verify_local(&admin(), &s).unwrap();
    assert!(r.ok && r.anchors_checked == 6, "{r:?}");
    // Filters: operator, kind, time; an unknown kind is a bad request.
    assert_eq!(audit::list(&admin(), &s, &AuditQuery { operator: Some("op-2".into()), ..Default::default() }).unwrap().len(), 2);
    assert_eq!(
        audit::list(&admin(), &s, &AuditQuery { since: Some("2000-01-01".into()), until: Some("2000-01-02".into()), ..Default::default() })
            .unwrap()
            .len(),
        0
    );
    assert_eq!(audit::list(&admin(), &s, &AuditQuery { since: Some("2000-01-01".into()), ..Default::default() }).unwrap().len(), 7);
    assert_eq!(
        audit::list(&admin(), &s, &AuditQuery { kind: Some("rocket".into()), ..Default::default() }).unwrap_err().code,
        ErrorCode::BadRequest
    );
    // A secret never enters the trail.
    let e = audit::append(&s, Some("op-1"), AuditKind::SettingsChanged, None, serde_json::json!({"after": {"password": "x"}}), vec![])
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(!e.message.contains("\"x\""), "{}", e.message);
}

/// The station's `imprint` config for the CLI.
fn cli_env(dir: &Path, station_id: &str, cfg: &CentralConfig) -> Vec<(&'static str, String)> {
    let path = dir.join("station.toml");
    std::fs::write(
        &path,
        format!(
            "station_id = \"{station_id}\"\nport_globs = []\n\n[central]\nurl = \"{}\"\nsslmode = \"disable\"\nrole = \"{}\"\npassword_file = \"{}\"\n",
            cfg.url,
            cfg.role.as_deref().unwrap(),
            cfg.password_file.as_ref().unwrap().display()
        ),
    )
    .unwrap();
    vec![("IMPRINT_CONFIG", path.display().to_string()), ("IMPRINT_DATA_DIR", dir.join("data").display().to_string())]
}

fn imprint(env: &[(&str, String)], args: &[&str]) -> Output {
    Command::new(imprint_bin())
        .envs(env.iter().map(|(k, v)| (*k, v.clone())))
        .env_remove("IMPRINT_PG_PASSWORD")
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A station in `<dir>/data`, synced to a fresh center.
fn synced_station(db: &mut TestDb, dir: &Path, id: &str) -> (PathBuf, CentralConfig) {
    let cfg = db.add_station(id);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let s = station(&dir.join("data"), id);
    let r = sync_once(s.clone(), id, &cfg).unwrap();
    assert_eq!((r.audit, r.quarantined), (7, 0), "{r:?}");
    assert_eq!(db.psql(&format!("SELECT seq FROM audit_heads WHERE station_id = '{id}'")), "7");
    (dir.join("data/station.db"), cfg)
}

#[test]
fn a_trail_truncated_or_rewritten_after_its_sync_is_caught_by_the_center() {
    let mut db = TestDb::new();

    // Truncated: valid locally, caught against the center's head.
    let d = tempfile::tempdir().unwrap();
    let (p, cfg) = synced_station(&mut db, d.path(), "aud-trunc");
    attacker(&p).execute("DELETE FROM audit WHERE seq > 4", []).unwrap();
    let s = Store::open(&p).unwrap();
    assert!(audit::verify_local(&admin(), &s).unwrap().ok);
    let r = audit::verify_central(&admin(), &s, "aud-trunc", Some(&cfg)).unwrap();
    assert_eq!(first(&r), Finding::Truncated { local_head: 4, known_head: 7 });
    assert!(r.tampered().unwrap().message.contains("#5 is missing"), "{r:?}");
    let env = cli_env(d.path(), "aud-trunc", &cfg);
    let o = imprint(&env, &["audit", "verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = imprint(&env, &["audit", "verify", "--central"]);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(text(&o).contains("error [tampered]") && text(&o).contains("#5 is missing"), "{}", text(&o));
    drop(s);

    // Rewritten: every hash recomputed after entry #2 was changed, so the
    // local chain is consistent; the center's copy shows the rewrite.
    let d = tempfile::tempdir().unwrap();
    let (p, cfg) = synced_station(&mut db, d.path(), "aud-rewrite");
    let s = Store::open(&p).unwrap();
    let mut all = entries(&s);
    drop(s);
    let c = attacker(&p);
    all[1].detail = r#"{"code":null,"status":"failed"}"#.into();
    let mut prev = imprint_store::audit::GENESIS.to_string();
    for e in &mut all {
        e.prev_hash = prev.clone();
        e.hash = entry_hash(e);
        prev = e.hash.clone();
        write_entry(&c, e);
    }
    drop(c);
    let s = Arc::new(Store::open(&p).unwrap());
    s.set_station_id("aud-rewrite");
    let local = audit::verify_local(&admin(), &s).unwrap();
    assert!(local.ok, "a consistently rewritten chain verifies on its own: {local:?}");
    let r = audit::verify_central(&admin(), &s, "aud-rewrite", Some(&cfg)).unwrap();
    assert!(matches!(first(&r), Finding::Diverged { seq: 2, .. }), "{r:?}");
    assert!(r.central_chain.is_none(), "the center's copy itself is intact");
    // The next entry chains to the rewritten head: the center refuses the
    // break and the station quarantines it; the center's head stays.
    audit::append(&s, Some("op-1"), AuditKind::SignIn, None, serde_json::Value::Null, vec![]).unwrap();
    let rep = sync_once(s.clone(), "aud-rewrite", &cfg).unwrap();
    assert_eq!((rep.audit, rep.quarantined), (0, 1), "{rep:?}");
    let q = imprint_sync::SyncStatus::read(&s).unwrap().quarantined;
    assert!(q[0].reason.contains("audit chain break") && q[0].reason.contains("#8"), "{q:?}");
    assert_eq!(db.psql("SELECT seq FROM audit_heads WHERE station_id = 'aud-rewrite'"), "7");
    let env = cli_env(d.path(), "aud-rewrite", &cfg);
    let o = imprint(&env, &["audit", "verify", "--central", "--json"]);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((j["first"]["problem"].as_str(), j["first"]["seq"].as_i64()), (Some("diverged"), Some(2)), "{j}");
}

#[test]
fn a_certificate_or_attempt_edited_in_station_db_after_its_sync_is_found_by_audit_verify_and_sync_verify() {
    let mut db = TestDb::new();
    let d = tempfile::tempdir().unwrap();
    let (p, cfg) = synced_station(&mut db, d.path(), "aud-rec");
    let env = cli_env(d.path(), "aud-rec", &cfg);
    let o = imprint(&env, &["sync", "verify"]);
    assert_eq!(o.status.code(), Some(0), "nothing differs after a sync: {}", text(&o));
    let o = imprint(&env, &["audit", "verify", "--central"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = imprint(&env, &["audit", "list", "--kind", "provisioning_outcome", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|e| e["detail"]["status"] == "passed" && e["station_id"] == "aud-rec"), "{listed:?}");
    let o = imprint(&env, &["audit", "list", "--by", "op-2"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2, "{}", text(&o));
    let o = imprint(&env, &["audit", "list", "--kind", "rocket"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unknown audit kind") && text(&o).contains("provisioning_outcome"), "{}", text(&o));

    let s = Store::open(&p).unwrap();
    let cert = s.certificates().unwrap()[0].clone();
    let attempt =
        s.attempts(&Default::default()).unwrap().into_iter().find(|a| a.certificate_id.as_deref() != Some(cert.id.as_str())).unwrap();
    drop(s);
    let c = attacker(&p);
    c.execute("UPDATE certificates SET serial_hex = 'dead' WHERE id = ?1", [&cert.id]).unwrap();
    c.execute("UPDATE attempts SET status = 'failed', code = 'forged' WHERE id = ?1", [&attempt.id]).unwrap();
    drop(c);

    let s = Store::open(&p).unwrap();
    let r = audit::verify_local(&admin(), &s).unwrap();
    let changed: Vec<(String, String)> = r
        .findings
        .iter()
        .filter_map(|f| match &f.finding {
            Finding::RecordChanged { table, key, current: Some(_), .. } => Some((table.clone(), key.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(changed.len(), 2, "{r:?}");
    assert!(
        changed.contains(&("certificate".into(), cert.id.clone())) && changed.contains(&("attempt".into(), attempt.id.clone())),
        "{changed:?}"
    );

    let v = audit::sync_verify(&admin(), &s, "aud-rec", Some(&cfg)).unwrap();
    let diffs: Vec<(String, Vec<String>)> = v.verification.unexplained().map(|d| (d.record.to_string(), d.columns.clone())).collect();
    assert_eq!(
        diffs,
        [
            (format!("attempt {}", attempt.id), vec!["status".to_string(), "code".to_string()]),
            (format!("certificate {}", cert.id), vec!["serial_hex".to_string()])
        ],
        "{v:?}"
    );
    drop(s);
    let o = imprint(&env, &["audit", "verify"]);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(text(&o).contains("was changed after entry #"), "{}", text(&o));
    let o = imprint(&env, &["sync", "verify"]);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(text(&o).contains(&format!("certificate {} differs [serial_hex]", cert.id)), "{}", text(&o));
    // The center kept the true copies.
    assert_eq!(db.psql(&format!("SELECT serial_hex FROM certificates WHERE id = '{}'", cert.id)), cert.serial_hex);
    assert_eq!(db.psql(&format!("SELECT status FROM attempts WHERE id = '{}'", attempt.id)), "passed");
}

#[test]
fn a_station_role_cannot_change_its_finished_attempt_or_its_trail_at_the_center_by_hand() {
    let mut db = TestDb::new();
    let d = tempfile::tempdir().unwrap();
    let (p, cfg) = synced_station(&mut db, d.path(), "aud-db");
    let s = Store::open(&p).unwrap();
    let attempt = s.attempts(&Default::default()).unwrap()[0].id.clone();
    let cert = s.certificates().unwrap()[0].id.clone();
    drop(s);
    let opts = cfg.connect_options().unwrap();
    let got = rt().block_on(async {
        use sqlx::{ConnectOptions, Connection};
        let mut c = opts.connect().await.unwrap();
        let mut out = Vec::new();
        for sql in [
            format!("UPDATE attempts SET status = 'failed', code = 'forged' WHERE id = '{attempt}'"),
            format!("UPDATE certificates SET cert_der = '\\x00' WHERE id = '{cert}'"),
            "UPDATE audit_trail SET detail = '{}'".to_string(),
            "DELETE FROM audit_trail".to_string(),
            "UPDATE audit_heads SET seq = 1".to_string(),
            "INSERT INTO audit_heads (station_id, seq, hash, at) VALUES ('aud-db', 99, 'x', now())".to_string(),
        ] {
            let r = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
            out.push(r.map(|r| r.rows_affected()).map_err(|e| e.to_string()));
        }
        let _ = c.close().await;
        out
    });
    assert!(got[0].as_ref().unwrap_err().contains("a finished attempt never changes"), "{:?}", got[0]);
    assert!(got[1].as_ref().unwrap_err().contains("its content never changes"), "{:?}", got[1]);
    for g in &got[2..] {
        assert!(g.as_ref().unwrap_err().contains("permission denied"), "{got:?}");
    }
    assert_eq!(db.psql(&format!("SELECT status FROM attempts WHERE id = '{attempt}'")), "passed");
    // An administrator's copy of the trail is the station's.
    assert_eq!(db.psql("SELECT count(*) FROM audit_trail WHERE station_id = 'aud-db'"), "7");
}

/// Migration 0016 moves the center's head once per statement instead of
/// once per entry: the chain rule must stay the one 0002 enforced entry by
/// entry, also for a break hidden inside one multi-row statement (a wrong
/// `prev_hash`, a gap, a wrong successor of the head), and a refused
/// statement must leave the head where it was.
#[test]
fn a_chain_break_inside_one_statement_is_refused_and_the_head_moves_only_with_good_statements() {
    let db = TestDb::new();
    db.psql("INSERT INTO stations (id, db_role) VALUES ('aud-stmt', 'aud_stmt_role')");
    // Entry i's hash is i in hex; the genesis (0) is the center's empty head.
    let h = |i: i64| format!("{i:064x}");
    let row = |seq: i64, prev: &str| {
        format!("(gen_random_uuid(), 'aud-stmt', {seq}, now(), NULL, 'sign_in', NULL, '{{}}', '[]', '{prev}', '{}', 1, '\\x00')", h(seq))
    };
    let insert = |rows: Vec<String>| {
        imprint_tests::pg::try_psql(
            &db.name,
            &format!(
                "INSERT INTO audit_trail (id, station_id, seq, at, operator, kind, subject, detail, anchors, prev_hash, hash, version, content_sha256) VALUES {}",
                rows.join(", ")
            ),
        )
    };
    let head = || db.psql("SELECT seq || ' ' || hash FROM audit_heads WHERE station_id = 'aud-stmt'");
    insert((1..=3).map(|i| row(i, &h(i - 1))).collect()).unwrap();
    assert_eq!(head(), format!("3 {}", h(3)));

    let e = insert(vec![row(4, &h(3)), row(5, &h(99))]).unwrap_err();
    assert!(e.contains("audit chain break") && e.contains("#5"), "a wrong prev_hash inside the statement: {e}");
    let e = insert(vec![row(4, &h(3)), row(6, &h(5))]).unwrap_err();
    assert!(e.contains("audit chain break") && e.contains("#6"), "a gap inside the statement: {e}");
    let e = insert(vec![row(4, &h(98)), row(5, &h(4))]).unwrap_err();
    assert!(e.contains("audit chain break") && e.contains("#4"), "a wrong successor of the head: {e}");
    let e = insert(vec![row(2, &h(1))]).unwrap_err();
    assert!(e.contains("duplicate key") || e.contains("audit chain break"), "an entry at or below the head is never a new one: {e}");
    assert_eq!(head(), format!("3 {}", h(3)), "a refused statement leaves the head where it was");
    assert_eq!(db.psql("SELECT count(*) FROM audit_trail WHERE station_id = 'aud-stmt'"), "3");

    insert((4..=6).map(|i| row(i, &h(i - 1))).collect()).unwrap();
    assert_eq!(head(), format!("6 {}", h(6)), "a good statement moves the head once, to its last entry");
}
