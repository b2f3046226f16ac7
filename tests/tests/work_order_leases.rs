//! Work-order leases, the station's half (issue 13 step 3 and "What must be
//! shown"): real PostgreSQL, real stations (in-process, and `imprint`
//! processes SIGKILLed at random) with simulated devices on ptys.
//!
//! - four stations race on one work order of 1,000 while their connections
//!   are cut and their processes SIGKILLed: at most 1,000 certificates exist
//!   for it, every one reaches the center, the leases reconcile, and no
//!   device fails except `quota_exhausted` once the order is used up;
//! - an offline station stops exactly at the end of its lease and resumes
//!   when the center is back;
//! - resume and re-send under a leased work order count once.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_proto::Outcome;
use imprint_store::{AttemptFilter, Store};
use imprint_sync::work_orders::{self, CentralWorkOrder};
use imprint_sync::CentralConfig;
use imprint_tests::pg::{rt, try_psql, PgLock, TestDb};
use imprint_tests::station::{imprint_bin, path_of, sim, TestStation};
use sqlx::ConnectOptions;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

fn add_central(db: &TestDb, id: &str, quantity: i64) {
    let w = CentralWorkOrder { id: id.into(), product: "sensor".into(), quantity, valid_from: None, valid_until: None, stations: None };
    rt().block_on(work_orders::add(&db.admin_options(), &w, "test-admin")).unwrap();
}

fn quota(db: &TestDb, id: &str) -> work_orders::CentralQuota {
    rt().block_on(async { work_orders::quota(&mut db.admin_options().connect().await.unwrap(), id).await }).unwrap().unwrap()
}

fn failure(r: &imprint_station::AttemptResult) -> (String, String) {
    match &r.outcome {
        Outcome::Failed(f) => (f.code.as_str().to_string(), f.reason.clone()),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Certificates the center holds for a work order (through their attempts).
fn central_certificates(db: &TestDb, wo: &str) -> i64 {
    db.psql(&format!("SELECT count(*) FROM certificates c JOIN attempts a ON a.id = c.attempt_id WHERE a.batch = '{wo}'")).parse().unwrap()
}

/// A station role cut off from the center (its login refused, its sessions ended), or let back in.
fn set_reachable(db: &TestDb, cfg: &CentralConfig, reachable: bool) {
    let role = cfg.role.as_deref().unwrap();
    db.psql(&format!("ALTER ROLE {role} {}", if reachable { "LOGIN" } else { "NOLOGIN" }));
    if !reachable {
        try_psql("postgres", &format!("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '{role}'")).unwrap();
    }
}

#[test]
fn an_offline_station_stops_exactly_at_the_end_of_its_lease_and_resumes_when_the_center_is_back() {
    let mut db = TestDb::new();
    add_central(&db, "WO-OFF", 100);
    let central = db.add_station("lease-off");
    let mut ts = TestStation::new();
    ts.cfg.station_id = "lease-off".into();
    ts.cfg.central = Some(central.clone());
    ts.cfg.work_orders.lease_block = 4;
    ts.cfg.work_orders.lease_low_water = 1;
    ts.cfg.work_orders.lease_wait_ms = 1500;
    let st = ts.open();
    assert!(st.sync_now(Duration::from_secs(10)), "a first round");
    assert!(st.store().is_central_work_order("WO-OFF").unwrap(), "copied from the center");
    st.set_batch(Some("WO-OFF".into()));
    // Online: the first device waits for the first block (4).
    let first = st.provision(&path_of(&sim("OFF-0001", "")), None).unwrap();
    assert!(first.passed(), "{:?}", first.outcome);
    let held = st.store().lease_balance("WO-OFF").unwrap();
    assert_eq!(held.balance, 3, "{held:?}");
    // The center goes away: the station issues what it holds and not one more.
    set_reachable(&db, &central, false);
    let mut passed = 1;
    let mut n = 1;
    let refused = loop {
        n += 1;
        let r = st.provision(&path_of(&sim(&format!("OFF-{n:04}"), "")), None).unwrap();
        if !r.passed() {
            break r;
        }
        passed += 1;
        assert!(passed <= 100, "never stopped");
    };
    let granted: i64 = st
        .store()
        .read(|c| Ok(c.query_row("SELECT sum(granted) FROM work_order_leases WHERE status = 'active'", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(passed, granted, "exactly what it leased");
    let (code, reason) = failure(&refused);
    assert_eq!(code, "quota_exhausted");
    assert!(reason.contains("is it reachable"), "{reason}");
    let w = st.store().work_order("WO-OFF").unwrap().unwrap();
    assert_eq!((w.issued, w.certified), (granted, granted));
    // The Bench warns: nothing left while the center is unreachable.
    let v = imprint_api::leases::view(st.store(), "WO-OFF", 1, false).unwrap();
    assert!(v.low && v.warning && v.balance == 0, "{v:?}");
    assert!(!st.sync_status().unwrap().connected);
    // Back: the refused device and a new one pass; the center's books agree.
    set_reachable(&db, &central, true);
    let again = st.provision(&path_of(&sim(&format!("OFF-{n:04}"), "")), None).unwrap();
    assert!(again.passed(), "{:?}", again.outcome);
    assert!(st.sync_now(Duration::from_secs(10)));
    assert!(st.sync_now(Duration::from_secs(10)));
    let issued = st.store().work_order("WO-OFF").unwrap().unwrap().issued;
    assert_eq!(issued, granted + 1);
    let q = quota(&db, "WO-OFF");
    assert_eq!(q.consumed, issued, "every use reported: {q:?}");
    assert!(q.consumed + q.leased <= q.quantity && q.leased == q.outstanding, "{q:?}");
    assert_eq!(central_certificates(&db, "WO-OFF"), issued, "every certificate reached the center");
    // Closed at the center: the station returns what it holds.
    db.psql("UPDATE work_orders SET status = 'closed', closed_at = now() WHERE id = 'WO-OFF'");
    assert!(st.sync_now(Duration::from_secs(10)));
    let q = quota(&db, "WO-OFF");
    assert_eq!((q.consumed, q.leased, q.outstanding), (issued, 0, 0), "returned: {q:?}");
    assert!(st.store().verify_audit(None).unwrap().ok());
    st.shutdown(Duration::from_secs(10));
}

#[test]
fn killed_mid_issuance_under_a_leased_work_order_the_resumed_device_counts_once() {
    let mut db = TestDb::new();
    add_central(&db, "WO-KILL", 10);
    let central = db.add_station("lease-kill");
    // No round before: the station learns of the work order when its first device needs it.
    let dir = station_dir(&central, "lease-kill", 3, 1);
    let dev = sim("KILL-LEASE-1", "");
    // Crash right after the journal commit (the lease's count and the signing row), before the device has its certificate.
    let out = imprint(&dir)
        .env("IMPRINT_TEST_CRASH_AT", "after_journal")
        .args(["provision", "--port", &path_of(&dev), "--batch", "WO-KILL"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "crashed");
    let out = imprint(&dir).args(["provision", "--port", &path_of(&dev), "--batch", "WO-KILL"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(imprint(&dir).args(["sync", "now"]).output().unwrap().status.success());
    let s = Store::open_read_only(&dir.path().join("data/station.db")).unwrap();
    let w = s.work_order("WO-KILL").unwrap().unwrap();
    assert_eq!((w.issued, w.certified), (1, 1), "counted once");
    let used: i64 = s.read(|c| Ok(c.query_row("SELECT sum(used) FROM work_order_leases", [], |r| r.get(0))?)).unwrap();
    assert_eq!(used, 1);
    assert_eq!(quota(&db, "WO-KILL").consumed, 1);
}

/// Regression: `imprint sync now` ran its round with the default lease
/// policy (blocks of 50), not the station's `[work_orders]` settings, so a
/// station set to lease one at a time was handed 50 by the command.
#[test]
fn sync_now_from_the_cli_leases_the_configured_block_not_the_default() {
    let mut db = TestDb::new();
    add_central(&db, "WO-CLI", 100);
    let central = db.add_station("lease-cli");
    let dir = station_dir(&central, "lease-cli", 1, 0);
    let dev = sim("CLI-LEASE-1", "");
    let out = imprint(&dir).args(["provision", "--port", &path_of(&dev), "--batch", "WO-CLI"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let asked = || -> Vec<i64> {
        let s = Store::open_read_only(&dir.path().join("data/station.db")).unwrap();
        s.read(|c| {
            let mut q = c.prepare("SELECT asked FROM work_order_leases ORDER BY asked_at, rowid")?;
            let v = q.query_map([], |r| r.get(0))?.collect::<Result<Vec<i64>, _>>()?;
            Ok(v)
        })
        .unwrap()
    };
    let before = asked();
    assert!(!before.is_empty() && before.iter().all(|&a| a == 1), "the station's own rounds ask blocks of 1: {before:?}");
    // Now set to lease 3 whenever 2 or fewer are left: what the station holds (at most 1) is below
    // that, so the command's round must ask, and for 3.
    let conf = dir.path().join("station.toml");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, text.replace("lease_block = 1\nlease_low_water = 0\n", "lease_block = 3\nlease_low_water = 2\n")).unwrap();
    let out = imprint(&dir).args(["sync", "now"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after = asked();
    assert_eq!(after.len(), before.len() + 1, "the command's round asked once: {before:?} then {after:?}");
    assert_eq!(after.last(), Some(&3), "for the configured block (the default is 50): {after:?}");
    let q = quota(&db, "WO-CLI");
    assert!(q.leased <= 4 && q.consumed == 1, "{q:?}");
}

/// A station data dir whose config syncs to `cfg` and leases in blocks of `block`.
fn station_dir(cfg: &CentralConfig, station: &str, block: i64, low: i64) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let text = format!(
        "station_id = \"{station}\"\nport_globs = []\n\n[central]\nurl = \"{}\"\nsslmode = \"disable\"\nrole = \"{}\"\npassword_file = \"{}\"\n\
         batch_size = 200\nretry_min_ms = 50\nretry_max_ms = 400\ninterval_ms = 200\ntimeout_ms = 5000\n\n\
         [work_orders]\nlease_block = {block}\nlease_low_water = {low}\nlease_ttl_seconds = 3600\nlease_wait_ms = 60000\n",
        cfg.url,
        cfg.role.as_deref().unwrap(),
        cfg.password_file.as_ref().unwrap().display()
    );
    std::fs::write(d.path().join("station.toml"), text).unwrap();
    d
}

fn imprint(dir: &tempfile::TempDir) -> Command {
    let mut c = Command::new(imprint_bin());
    c.env("IMPRINT_CONFIG", dir.path().join("station.toml"))
        .env("IMPRINT_DATA_DIR", dir.path().join("data"))
        .env_remove("IMPRINT_PG_PASSWORD")
        .env_remove("IMPRINT_TEST_CRASH_AT");
    c
}

const QUANTITY: i64 = 1000;
const STATIONS: usize = 4;
const PORTS: usize = 6;

/// One station: `imprint provision` over PORTS simulated devices at a time,
/// SIGKILLed at a random moment in about one run of three; a device stays
/// until it holds its certificate or failed `quota_exhausted`. Stops when a
/// device was refused `quota_exhausted`. Returns (runs, kills).
fn race_station(dir: &tempfile::TempDir, i: usize, stop: &AtomicBool) -> (usize, usize) {
    let mut devs: Vec<imprint_devsim::SimHandle> = Vec::new();
    let (mut runs, mut kills, mut next) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(600);
    while !stop.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "station {i} made no progress");
        // Keep PORTS devices without a certificate attached.
        devs.retain(|d| d.snapshot().cert_der.is_none());
        while devs.len() < PORTS {
            next += 1;
            devs.push(sim(&format!("RACE-{i}-{next:05}"), ""));
        }
        let mut cmd = imprint(dir);
        cmd.arg("provision").arg("--batch").arg("WO-RACE");
        for d in &devs {
            cmd.arg("--port").arg(path_of(d));
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        runs += 1;
        let kills_before = kills;
        if rand_u64().is_multiple_of(3) {
            std::thread::sleep(Duration::from_millis(100 + rand_u64() % 900));
            if child.try_wait().unwrap().is_none() {
                let _ = child.kill(); // SIGKILL
                kills += 1;
            }
        }
        let _ = child.wait();
        // Refused for the quota: this station is done (the center had none left).
        // Regression: a station killed within its first second may not have
        // created or fully migrated its store yet (found at schema 7 of 17); a
        // read-only reader never migrates, so there is nothing to read: the
        // next run creates or migrates it.
        let killed = kills > kills_before;
        let db_path = dir.path().join("data/station.db");
        let s = match Store::open_read_only(&db_path) {
            Ok(s) => s,
            Err(imprint_store::StoreError::Schema { .. }) if killed => continue,
            Err(_) if killed && !db_path.exists() => continue,
            Err(e) => panic!("station {i}: its store does not open: {e}"),
        };
        let refused = s
            .attempts(&AttemptFilter { status: Some("failed".into()), ..Default::default() })
            .unwrap()
            .iter()
            .any(|a| a.code.as_ref().is_some_and(|c| c.as_str() == "quota_exhausted"));
        if refused {
            break;
        }
    }
    (runs, kills)
}

#[test]
fn four_stations_racing_on_one_work_order_of_1000_with_connections_cut_and_sigkills_issue_at_most_1000_and_reconcile() {
    let _alone = PgLock::exclusive();
    let mut db = TestDb::new();
    add_central(&db, "WO-RACE", QUANTITY);
    let dirs: Vec<_> = (1..=STATIONS)
        .map(|i| {
            let cfg = db.add_station(&format!("race-{i}"));
            station_dir(&cfg, &format!("race-{i}"), 50, 20)
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    // The invariant, sampled by the administrator all along.
    let monitor = {
        let (done, opts) = (done.clone(), db.admin_options());
        std::thread::spawn(move || {
            rt().block_on(async move {
                let mut c = opts.connect().await.unwrap();
                let mut samples = 0;
                while !done.load(Ordering::SeqCst) {
                    let q = work_orders::quota(&mut c, "WO-RACE").await.unwrap().unwrap();
                    assert!(q.consumed + q.leased <= q.quantity, "over the quantity: {q:?}");
                    samples += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                samples
            })
        })
    };
    // Station connections cut at random moments.
    let cutter = {
        let (done, name) = (done.clone(), db.name.clone());
        std::thread::spawn(move || {
            let mut cuts = 0usize;
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100 + rand_u64() % 400));
                cuts += try_psql(
                    "postgres",
                    &format!(
                        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                         WHERE datname = '{name}' AND usename <> 'postgres') t"
                    ),
                )
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(0);
            }
            cuts
        })
    };
    let dirs = Arc::new(dirs);
    let stop = Arc::new(AtomicBool::new(false));
    let stations: Vec<_> = (0..STATIONS)
        .map(|i| {
            let (dirs, stop) = (dirs.clone(), stop.clone());
            std::thread::spawn(move || race_station(&dirs[i], i, &stop))
        })
        .collect();
    let runs: Vec<(usize, usize)> = stations.into_iter().map(|h| h.join().expect("a station failed")).collect();
    done.store(true, Ordering::SeqCst);
    let samples = monitor.join().expect("the invariant broke");
    let cuts = cutter.join().unwrap();
    // Close at the center; each station settles (returns what it holds) and sends everything.
    db.psql("UPDATE work_orders SET status = 'closed', closed_at = now() WHERE id = 'WO-RACE'");
    let mut total = 0i64;
    for (i, d) in dirs.iter().enumerate() {
        for _ in 0..2 {
            let out = imprint(d).args(["sync", "now"]).output().unwrap();
            assert!(out.status.success(), "station {i}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let s = Store::open_read_only(&d.path().join("data/station.db")).unwrap();
        let w = s.work_order("WO-RACE").unwrap().unwrap();
        assert_eq!(w.issued, w.certified, "station {i}: each journaled certificate counted once");
        let (used, open): (i64, i64) = s
            .read(|c| {
                Ok(c.query_row(
                    "SELECT coalesce(sum(used), 0), count(*) FILTER (WHERE status <> 'settled') FROM work_order_leases",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .unwrap();
        assert_eq!((used, open), (w.issued, 0), "station {i}: its leases' use is its count, all settled");
        // No device failed except for the quota once the center had none left.
        for a in s.attempts(&AttemptFilter { status: Some("failed".into()), ..Default::default() }).unwrap() {
            let code = a.code.as_ref().map(|c| c.as_str().to_string()).unwrap_or_default();
            let reason = a.reason.clone().unwrap_or_default();
            assert_eq!(code, "quota_exhausted", "station {i}: {reason}");
            assert!(reason.contains("none left"), "station {i}: refused before the order was used up: {reason}");
        }
        assert!(s.verify_audit(None).unwrap().ok(), "station {i}");
        total += w.issued;
    }
    assert!(total <= QUANTITY, "at most the quantity: {total}");
    assert_eq!(total, QUANTITY, "the whole quantity was issued (no lease left unused): {runs:?}");
    assert_eq!(central_certificates(&db, "WO-RACE"), total, "every certificate reached the center");
    let q = quota(&db, "WO-RACE");
    assert_eq!((q.consumed, q.leased, q.outstanding, q.used), (total, 0, 0, total), "leases reconcile: {q:?}");
    assert!(cuts > 0, "connections were cut");
    assert!(runs.iter().map(|r| r.1).sum::<usize>() > 0, "stations were killed: {runs:?}");
    assert!(samples > 10, "the invariant was sampled");
    let _ = stop;
}
