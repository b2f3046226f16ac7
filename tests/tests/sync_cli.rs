//! The central database through the `imprint` binary: an administrator
//! migrates and registers a station; the station reports its backlog, syncs
//! on demand, and reports from the center; a station never migrates.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_store::Store;
use imprint_tests::pg::{assert_center_equals_local, fill, TestDb};
use imprint_tests::station::imprint_bin;
use std::process::{Command, Output};
use std::sync::Arc;

fn run(envs: &[(&str, String)], args: &[&str]) -> Output {
    Command::new(imprint_bin())
        .envs(envs.iter().map(|(k, v)| (*k, v.clone())))
        .env_remove("IMPRINT_PG_PASSWORD")
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn admin_migrates_and_registers_then_the_station_syncs_reports_and_shows_its_status() {
    let mut db = TestDb::empty();
    let dir = tempfile::tempdir().unwrap();
    let admin = db.admin_url();
    let role = format!("{}_cli", db.name);
    db.track_role(&role);
    let pw = "cli-station-pass-8d1f";
    let pw_file = dir.path().join("station.pw");
    std::fs::write(&pw_file, format!("{pw}\n")).unwrap();
    let cfg_path = dir.path().join("station.toml");
    let write_cfg = |role: &str| {
        std::fs::write(
            &cfg_path,
            format!(
                "station_id = \"cli-1\"\nport_globs = []\n\n[central]\nurl = \"postgres://127.0.0.1:5432/{}\"\nsslmode = \"disable\"\nrole = \"{role}\"\npassword_file = \"{}\"\n",
                db.name,
                pw_file.display()
            ),
        )
        .unwrap()
    };
    let env = vec![("IMPRINT_CONFIG", cfg_path.display().to_string()), ("IMPRINT_DATA_DIR", dir.path().join("data").display().to_string())];
    let store_path = dir.path().join("data").join("station.db");
    {
        let s = Arc::new(Store::open(&store_path).unwrap());
        fill(&s, "CLI", 6, 3, 2);
    }

    // Before the center has a schema (even connecting as the superuser): the
    // station says what to do and never creates the schema itself.
    write_cfg("postgres");
    let o = run(&env, &["sync", "now"]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(text(&o).contains("no Imprint schema") && text(&o).contains("imprint db migrate"), "{}", text(&o));
    assert_eq!(db.psql("SELECT to_regclass('_sqlx_migrations') IS NULL"), "t");
    write_cfg(&role);

    let o = run(&[], &["db", "migrate", "--url", &admin]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&[], &["db", "migrate", "--url", &admin]);
    assert!(o.status.success(), "migrating twice is harmless: {}", text(&o));
    let o = run(&[], &["db", "version", "--url", &admin]);
    assert!(
        o.status.success() && text(&o).contains(&format!("central schema version: {}", imprint_sync::required_version())),
        "{}",
        text(&o)
    );
    let o = run(
        &[],
        &[
            "db",
            "add-station",
            "--url",
            &admin,
            "--station",
            "cli-1",
            "--role",
            &role,
            "--role-password-file",
            &pw_file.display().to_string(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains(pw), "the password is never printed");

    let o = run(&env, &["sync", "status", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(st["backlog"].as_u64().unwrap() > 0 && st["configured"] == true, "{st}");
    assert_eq!(st["state"], "failing", "the refused round is remembered: {st}");
    assert!(st["last_error"].as_str().unwrap().contains("no Imprint schema"), "{st}");

    let o = run(&env, &["sync", "now", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["report"]["inserted"], 6 * 6, "attempt, 3 steps, certificate and audit entry each: {r}");
    let o = run(&env, &["sync", "status"]);
    let t = text(&o);
    assert!(
        t.contains("state         ok")
            && t.contains("backlog       0 records (0 changes) pending")
            && t.contains("quarantined   0 records"),
        "{t}"
    );
    assert!(!t.contains(pw));
    assert_center_equals_local(&db, &Store::open(&store_path).unwrap(), "cli-1");

    // The shared health view (app and `imprint health`) shows the same.
    let o = run(&env, &["health", "--json"]);
    let h: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let central = h["checks"].as_array().unwrap().iter().find(|c| c["id"] == "central_db").unwrap().clone();
    assert_eq!(central["level"], "ok", "{central}");
    assert!(central["detail"].as_str().unwrap().contains("0 records waiting to sync (0 changes)"), "{central}");

    // Reports: local, central as the station (its own rows), central as a reader (everyone's).
    let rows = |o: &Output| -> Vec<serde_json::Value> {
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)));
        r["rows"].as_array().unwrap().clone()
    };
    let o = run(&env, &["report", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let local = rows(&o);
    assert_eq!(local.len(), 6);
    let o = run(&env, &["report", "--central", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let central = rows(&o);
    assert_eq!(central, local, "the center reports what the station recorded");
    db.psql("INSERT INTO stations (id, db_role) VALUES ('other', 'nobody'); INSERT INTO attempts (id, station_id, port, started_at, status, resumed, bytes_to_device, bytes_from_device, version, content_sha256) VALUES (gen_random_uuid(), 'other', 'p', now(), 'passed', false, 0, 0, 1, '\\x00')");
    let o = run(&env, &["report", "--central", "--csv"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1 + 6, "a station reads only its own rows");
    let reader = format!("{}_rd", db.name);
    db.track_role(&reader);
    let o = run(&[], &["db", "add-reader", "--url", &admin, "--role", &reader, "--role-password-file", &pw_file.display().to_string()]);
    assert!(o.status.success(), "{}", text(&o));
    let reader_url = format!("postgres://{reader}@127.0.0.1:5432/{}", db.name);
    let o = run(
        &env,
        &["report", "--central", "--url", &reader_url, "--password-file", &pw_file.display().to_string(), "--sslmode", "disable", "--csv"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let csv = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(csv.lines().count(), 1 + 7, "a reader sees every station: {csv}");
    assert!(csv.lines().next().unwrap().starts_with("station_id,attempt_id,started_at"));
    let o = run(&env, &["report", "--central", "--url", &reader_url, "--sslmode", "disable", "--station", "other", "--json"]);
    assert_eq!(rows(&o).len(), 1);
    let o = run(&env, &["report", "--central", "--url", &reader_url, "--sslmode", "disable", "--since", "2099-01-01T00:00:00Z", "--json"]);
    assert_eq!(rows(&o).len(), 0, "nothing started after --since");
    let o = run(&env, &["report", "--since", "2000-01-01T00:00:00.000Z", "--csv"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1 + 6, "local report since a past time: all six");
}

#[test]
fn a_password_in_the_config_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("station.toml");
    std::fs::write(&cfg, "[central]\nurl = \"postgres://a@db/x\"\npassword = \"hunter2\"\n").unwrap();
    let o =
        run(&[("IMPRINT_CONFIG", cfg.display().to_string()), ("IMPRINT_DATA_DIR", dir.path().display().to_string())], &["sync", "status"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("never go in the config file") && !text(&o).contains("hunter2"), "{}", text(&o));
}

/// Issue 11: supervisors release quarantined records. A release is not a fix:
/// released while the conflict stands, the record is quarantined again; fixed
/// and released, it reaches the center. Each release is in the audit trail
/// with the operator and the comment, and that trail reaches the center.
#[test]
fn a_quarantined_record_is_released_once_fixed_and_then_reaches_the_center_each_release_audited() {
    let mut db = TestDb::new();
    let cfg = db.add_station("rel-1");
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("station.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "station_id = \"rel-1\"\nport_globs = []\n\n[central]\nurl = \"{}\"\nsslmode = \"disable\"\nrole = \"{}\"\npassword_file = \"{}\"\n",
            cfg.url,
            cfg.role.as_deref().unwrap(),
            cfg.password_file.as_ref().unwrap().display()
        ),
    )
    .unwrap();
    let env = vec![("IMPRINT_CONFIG", cfg_path.display().to_string()), ("IMPRINT_DATA_DIR", dir.path().join("data").display().to_string())];
    let store_path = dir.path().join("data").join("station.db");
    let bad = {
        let s = Arc::new(Store::open(&store_path).unwrap());
        fill(&s, "REL", 4, 2, 1);
        let id = s.attempts(&Default::default()).unwrap()[0].id.clone();
        s.close();
        id
    };
    let central_finished = |db: &TestDb| db.psql(&format!("SELECT count(*) FROM attempts WHERE id = '{bad}'"));
    // By hand, straight into the file: SQLite's own spelling of a time, which the center cannot take.
    let by_hand = |sql: &str| rusqlite::Connection::open(&store_path).unwrap().execute(sql, [bad.as_str()]).unwrap();
    by_hand("UPDATE attempts SET finished_at = '2026-11-30 05:00:00' WHERE id = ?1");

    let o = run(&env, &["sync", "now", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["report"]["quarantined"], 1, "{r}");
    assert_eq!(central_finished(&db), "0");
    let o = run(&env, &["sync", "status"]);
    let t = text(&o);
    assert!(t.contains("quarantined   1 records") && t.contains(&format!("attempt {bad}")), "{t}");
    assert!(t.contains("imprint sync release ID"), "the next step is on screen: {t}");
    let st: serde_json::Value = serde_json::from_slice(&run(&env, &["sync", "status", "--json"]).stdout).unwrap();
    let first = st["quarantined"][0]["id"].as_i64().unwrap();

    // A release says how the conflict was resolved.
    let o = run(&env, &["sync", "release", &first.to_string(), "--comment", "  "]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("[bad_request]") && text(&o).contains("comment"), "{}", text(&o));

    // Released without a fix: quarantined again, nothing reaches the center.
    let o = run(&env, &["sync", "release", &first.to_string(), "--comment", "retry before the fix"]);
    assert!(o.status.success() && text(&o).contains(&format!("released attempt {bad}")), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&run(&env, &["sync", "now", "--json"]).stdout).unwrap();
    assert_eq!(r["report"]["quarantined"], 1, "the conflict still stands: {r}");
    assert_eq!(central_finished(&db), "0");
    let st: serde_json::Value = serde_json::from_slice(&run(&env, &["sync", "status", "--json"]).stdout).unwrap();
    assert_eq!(st["quarantined"].as_array().map(|a| a.len()), Some(1), "{st}");
    let second = st["quarantined"][0]["id"].as_i64().unwrap();
    assert_ne!(first, second, "a new quarantine, the first one kept as history");

    // Fixed by hand, released: it reaches the center.
    by_hand("UPDATE attempts SET finished_at = '2026-11-30T05:00:00.000Z' WHERE id = ?1");
    let o = run(&env, &["sync", "release", &second.to_string(), "--comment", "finished_at respelled by hand (ticket 42)", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let rel: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rel["released"][0]["id"], second, "{rel}");
    // Twice: not found, exit 2, nothing written.
    let o = run(&env, &["sync", "release", &second.to_string(), "--comment", "again"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("[not_found]") && text(&o).contains("released already"), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&run(&env, &["sync", "now", "--json"]).stdout).unwrap();
    assert_eq!(r["report"]["quarantined"], 0, "{r}");
    assert_eq!(central_finished(&db), "1");
    let st: serde_json::Value = serde_json::from_slice(&run(&env, &["sync", "status", "--json"]).stdout).unwrap();
    assert_eq!((st["quarantined"].as_array().map(|a| a.len()), st["quarantined_rows"].as_u64()), (Some(0), Some(0)), "{st}");

    // Both releases are in the trail, with who and why, locally and at the center.
    let o = run(&env, &["audit", "list", "--kind", "quarantine_released", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let entries: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries[1].to_string().contains("ticket 42") && entries[1]["operator"].is_string(), "{:?}", entries[1]);
    assert_eq!(db.psql("SELECT count(*) FROM audit_trail WHERE station_id = 'rel-1' AND kind = 'quarantine_released'"), "2");
}
