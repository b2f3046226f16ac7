//! Sync under faults, against the real PostgreSQL and real processes:
//! connections terminated mid-batch and the server restarted, round after
//! round; the station process SIGKILLed at random moments while it syncs.
//! Every test ends with the center equal to the station's records.
//!
//! These tests restart PostgreSQL or kill backends: each holds the machine's
//! PostgreSQL test lock exclusively (`PgLock`, a file lock), so no other
//! PostgreSQL test runs meanwhile, in this process or another `cargo test`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_store::Store;
use imprint_sync::{CentralConfig, SyncStatus, SyncWorker};
use imprint_tests::pg::{assert_center_equals_local, fill, restart_postgres, wait_for_postgres, PgLock, TestDb};
use imprint_tests::station::imprint_bin;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

fn wait_drained(s: &Store, w: &SyncWorker, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if s.outbox_counts().unwrap().pending == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "backlog not drained: {:?}", w.status());
        w.wake();
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn connections_killed_mid_batch_and_postgres_restarted_over_ten_rounds_lose_and_duplicate_nothing() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _alone = PgLock::exclusive();
    let mut db = TestDb::new();
    let cfg = CentralConfig { batch_size: 150, ..db.add_station("chaos-1") };
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(Store::open(&d.path().join("station.db")).unwrap());
    fill(&s, "BASE", 60, 10, 4);
    let worker = SyncWorker::spawn(s.clone(), "chaos-1", cfg).unwrap();
    let mut kills_total = 0usize;
    let mut records = 60 * 13;
    for round in 0..10 {
        // New records keep coming while the worker syncs and the center misbehaves.
        let stop = Arc::new(AtomicBool::new(false));
        let kills = Arc::new(AtomicUsize::new(0));
        let killer = {
            let (stop, kills, name) = (stop.clone(), kills.clone(), db.name.clone());
            std::thread::spawn(move || {
                let probe = TestDbName(name);
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5 + rand_u64() % 40));
                    kills.fetch_add(probe.kill(), Ordering::SeqCst);
                }
            })
        };
        let writer = {
            let s = s.clone();
            std::thread::spawn(move || fill(&s, &format!("R{round}"), 25, 10, 2))
        };
        std::thread::sleep(Duration::from_millis(100 + rand_u64() % 300));
        restart_postgres();
        records += writer.join().unwrap();
        std::thread::sleep(Duration::from_millis(100 + rand_u64() % 200));
        stop.store(true, Ordering::SeqCst);
        killer.join().unwrap();
        wait_for_postgres();
        wait_drained(&s, &worker, Duration::from_secs(120));
        let k = kills.load(Ordering::SeqCst);
        kills_total += k;
        eprintln!("round {round}: {k} backends terminated, one restart; status {:?}", worker.status());
    }
    let st = worker.status();
    drop(worker);
    assert!(kills_total >= 10, "the faults happened: {kills_total} terminated backends");
    assert!(st.last_error.is_some(), "the worker saw the faults and recovered by itself");
    let n = assert_center_equals_local(&db, &s, "chaos-1");
    assert_eq!(n, records);
    let status = SyncStatus::read(&s).unwrap();
    assert_eq!((status.backlog, status.quarantined.len()), (0, 0));
}

/// Terminates a database's station backends (kept apart from `TestDb` so a
/// thread can own it while the test owns the database).
struct TestDbName(String);
impl TestDbName {
    fn kill(&self) -> usize {
        imprint_tests::pg::try_psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = '{}' AND usename <> 'postgres') t",
                self.0
            ),
        )
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
    }
}

/// A station data dir whose config syncs to `cfg` (password in a file).
fn station_dir(cfg: &CentralConfig, station: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let text = format!(
        "station_id = \"{station}\"\nport_globs = []\n\n[central]\nurl = \"{}\"\nsslmode = \"disable\"\nrole = \"{}\"\npassword_file = \"{}\"\nbatch_size = 50\nretry_min_ms = 50\nretry_max_ms = 500\ninterval_ms = 100\n",
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
        .env_remove("IMPRINT_PG_PASSWORD");
    c
}

#[test]
fn the_station_process_killed_at_random_points_during_sync_loses_and_duplicates_nothing() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _alone = PgLock::exclusive();
    let mut db = TestDb::new();
    let cfg = db.add_station("kill-1");
    let dir = station_dir(&cfg, "kill-1");
    let store_path = dir.path().join("data").join("station.db");
    let mut records = 0;
    let mut killed = 0;
    let mut synced_before = 0;
    for round in 0..8 {
        {
            let s = Arc::new(Store::open(&store_path).unwrap());
            records += fill(&s, &format!("K{round}"), 150, 10, 4);
        }
        // `imprint sync now`, SIGKILLed at a random point of its run: once its
        // sync watermark has passed a random fraction of the backlog, plus a
        // random few milliseconds (so the kill lands anywhere in a batch's
        // cycle: reading, at the center, committing, marking).
        let (start, end) = {
            let c = rusqlite::Connection::open(&store_path).unwrap();
            let wm: i64 = c
                .query_row("SELECT coalesce((SELECT CAST(value AS INTEGER) FROM station_meta WHERE key = 'sync.watermark'), 0)", [], |r| {
                    r.get(0)
                })
                .unwrap();
            let top: i64 = c.query_row("SELECT max(seq) FROM outbox", [], |r| r.get(0)).unwrap();
            (wm, top)
        };
        let target = start + ((end - start) as u64 * (5 + rand_u64() % 75) / 100) as i64;
        let extra = rand_u64() % 15;
        let t = Instant::now();
        let mut child = imprint(&dir).args(["sync", "now"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let watch = rusqlite::Connection::open(&store_path).unwrap();
        watch.busy_timeout(Duration::from_secs(5)).unwrap();
        loop {
            let wm: i64 = watch
                .query_row("SELECT coalesce((SELECT CAST(value AS INTEGER) FROM station_meta WHERE key = 'sync.watermark'), 0)", [], |r| {
                    r.get(0)
                })
                .unwrap_or(0);
            if wm >= target || child.try_wait().unwrap().is_some() || t.elapsed() > Duration::from_secs(60) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(extra));
        let delay = t.elapsed().as_millis();
        let _ = child.kill();
        let _ = child.wait();
        let c = Store::open(&store_path).unwrap().outbox_counts().unwrap();
        let pending = c.pending;
        if pending > 0 && c.synced > synced_before {
            killed += 1; // it had sent some and not all: killed mid-sync
        }
        synced_before = c.synced;
        eprintln!("round {round}: killed after {delay} ms, {pending} changes still pending");
    }
    // A real station (simulated devices), with its background worker, killed mid-run.
    for round in 0..3 {
        let delay = 400 + rand_u64() % 1500;
        let mut child = imprint(&dir).args(["station", "--simulate", "3"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("station round {round}: killed after {delay} ms");
    }
    assert!(killed >= 5, "kills landed mid-sync in {killed} of 8 rounds");
    // Whatever is left goes on the next run, and nothing twice.
    let out = imprint(&dir).args(["sync", "now"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = Store::open(&store_path).unwrap();
    let n = assert_center_equals_local(&db, &s, "kill-1");
    assert!(n >= records, "{n} records at the center, {records} written by the test alone");
    let st = SyncStatus::read(&s).unwrap();
    assert_eq!((st.backlog, st.quarantined.len()), (0, 0));
}

#[test]
fn a_station_syncing_through_a_long_outage_resumes_by_itself() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _alone = PgLock::exclusive();
    let mut db = TestDb::new();
    let cfg = db.add_station("outage-1");
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(Store::open(&d.path().join("station.db")).unwrap());
    let worker = SyncWorker::spawn(s.clone(), "outage-1", cfg).unwrap();
    fill(&s, "PRE", 5, 4, 1);
    wait_drained(&s, &worker, Duration::from_secs(30));
    // The server goes away for a while; the station keeps provisioning.
    let version = std::fs::read_dir("/etc/postgresql").unwrap().next().unwrap().unwrap().file_name();
    let stop =
        Command::new("pg_ctlcluster").arg("--skip-systemctl-redirect").arg(&version).args(["main", "stop", "-m", "fast"]).status().unwrap();
    assert!(stop.success());
    let during = fill(&s, "DURING", 10, 4, 2);
    std::thread::sleep(Duration::from_millis(1500));
    let st = worker.status();
    let start = Command::new("pg_ctlcluster").arg("--skip-systemctl-redirect").arg(&version).args(["main", "start"]).status().unwrap();
    assert!(start.success());
    assert!(!st.connected && st.last_error.is_some() && st.retry_in_ms.is_some(), "backing off while down: {st:?}");
    assert!(st.backlog as usize >= during, "the backlog grew while down: {st:?}");
    wait_for_postgres();
    // No wake: it comes back on its own backoff.
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.outbox_counts().unwrap().pending > 0 {
        assert!(Instant::now() < deadline, "did not resume: {:?}", worker.status());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(worker);
    assert_center_equals_local(&db, &s, "outage-1");
    let st = SyncStatus::read(&s).unwrap();
    assert_eq!(st.state, "ok");
}
