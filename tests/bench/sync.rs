//! `imprint-sync-bench`: sync 100,000 records from a station's outbox to the
//! real PostgreSQL and divide the rate by the rate of `COPY` of the same rows
//! into the same schema, measured in the same run (target >= 0.7).
//!
//! ```sh
//! . scripts/env.sh && cargo run --release -p imprint-tests --bin imprint-sync-bench
//! imprint-sync-bench --quick          # a few thousand records: proves it runs (CI)
//! imprint-sync-bench --load 2         # a busy machine: 2 CPU-bound processes beside the runs
//! imprint-sync-bench --load 2 --load-in-session   # ... competing with this process only
//! imprint-sync-bench --cpu            # also where the CPU went: this process vs the center's backends
//! imprint-sync-bench --records 50000 --batch 5000 --connections 1 --runs 7
//! scripts/sync-bench 10               # 10 invocations idle, then 10 with --load 2
//! ```
//!
//! Each run starts from an empty table set in the same database: first
//! `COPY` (one statement per synced table, text format, as the superuser: no
//! row-level security, no conflict handling, no local store; the text is
//! built before the clock starts), then `TRUNCATE`, then the station's real
//! sync path (`imprint_sync::sync_once` as the station's role: SQLite outbox
//! reads, parsing, hashing, `INSERT ... SELECT unnest(...)`, and marking the
//! outbox synced with `synchronous=FULL`). It prints every run and the
//! ratio's min / median / max over the runs; the median is the figure.
//!
//! **A busy machine, reproducibly** (`--load N`): N processes that each burn
//! one CPU for the whole measured part (started after the store is filled,
//! stopped after the last run), at the bench's own nice level, each in a
//! session of its own (`setsid`), as other users' jobs would be: with the
//! kernel's autogroup scheduling (on by default) CPU is shared first between
//! sessions, so N burners in their own sessions take CPU from the center's
//! backends and from this process alike (each PostgreSQL backend is a session
//! of its own too: `setsid` in `InitPostmasterChild`). With
//! `--load-in-session` they stay in the bench's session and take CPU from the
//! station's side only, as a busy station process would. They exit by
//! themselves if the bench dies. The load average before and after is printed.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_store::Store;
use imprint_sync::{sync_once, CentralConfig};
use imprint_tests::pg::{assert_center_equals_local, copy_rows, fill, rt, TestDb};
use sqlx::{ConnectOptions, Connection};
use std::sync::Arc;
use std::time::Instant;

const STATION: &str = "bench-1";
const STEPS_PER_ATTEMPT: usize = 20;

fn arg_value(args: &[String], name: &str) -> Option<usize> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pid) = arg_value(&args, "--burn") {
        burn(pid as u32);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let cpu = args.iter().any(|a| a == "--cpu");
    let target = arg_value(&args, "--records").unwrap_or(if quick { 2_200 } else { 100_000 });
    let batch = arg_value(&args, "--batch").unwrap_or(CentralConfig::default().batch_size as usize);
    let connections = arg_value(&args, "--connections").unwrap_or(CentralConfig::default().connections as usize);
    let load = arg_value(&args, "--load").unwrap_or(0);
    // The burners in this process's own session instead: they then compete
    // with the station's client side only, not with the center's backends.
    let beside = args.iter().any(|a| a == "--load-in-session");
    let attempts = target.div_ceil(STEPS_PER_ATTEMPT + 3);

    let mut db = TestDb::new();
    let cfg = CentralConfig { batch_size: batch as u32, connections: connections as u32, timeout_ms: 60_000, ..db.add_station(STATION) };
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("station.db")).unwrap());
    let t = Instant::now();
    let records = fill(&store, "BENCH", attempts, STEPS_PER_ATTEMPT, 16);
    let pending = store.outbox_counts().unwrap().pending;
    println!(
        "station store: {records} records ({attempts} attempts, {} steps, {attempts} certificates, {attempts} audit entries), {pending} outbox changes, written in {:.1} s",
        attempts * STEPS_PER_ATTEMPT,
        t.elapsed().as_secs_f64()
    );

    let data = copy_rows(&store, STATION);
    let opts = db.admin_options();
    let runs = arg_value(&args, "--runs").unwrap_or(if quick { 1 } else { 5 });
    let load_before = loadavg();
    let burners = Burners::start(load, !beside);
    if load > 0 {
        let how = if beside { "in this bench's session" } else { "each in a session of its own" };
        println!("load: {load} CPU-burning processes, {how}, beside every run");
    }
    let mut ratios = Vec::new();
    for run in 1..=runs {
        // 1. The floor: COPY of the same rows into the same tables, as the owner.
        let probe = cpu.then(|| CpuProbe::start(&db.name));
        let (copy_secs, per_table) = rt().block_on(async {
            let mut c = opts.connect().await.unwrap();
            let t = Instant::now();
            let mut per_table = Vec::new();
            for (table, cols, text, n) in &data {
                let t = Instant::now();
                let mut copy = c.copy_in_raw(&format!("COPY {table} ({cols}) FROM STDIN")).await.unwrap();
                copy.send(text.as_bytes()).await.unwrap();
                copy.finish().await.unwrap();
                if *n > 0 {
                    per_table.push(format!("{table} {n} in {} ms", t.elapsed().as_millis()));
                }
            }
            (t.elapsed().as_secs_f64(), per_table)
        });
        let copy_cpu = probe.map(CpuProbe::stop);
        rt().block_on(async {
            let mut c = opts.connect().await.unwrap();
            for (table, _, _, n) in &data {
                let got: i64 =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).fetch_one(&mut c).await.unwrap();
                assert_eq!(got as usize, *n, "{table}");
            }
            reset_center(&mut c).await;
            let _ = c.close().await;
        });
        let copy_rate = records as f64 / copy_secs;

        // 2. The station's sync, as the station's role, from its outbox.
        let probe = cpu.then(|| CpuProbe::start(&db.name));
        let t = Instant::now();
        let r = sync_once(store.clone(), STATION, &cfg).unwrap();
        let sync_secs = t.elapsed().as_secs_f64();
        let sync_cpu = probe.map(CpuProbe::stop);
        // Read-ahead may carry a changing record into the next batch, where it is
        // recognised and not sent again. Every record is inserted exactly once.
        assert_eq!((r.inserted as usize, r.quarantined), (records, 0), "{r:?}");
        let sync_rate = records as f64 / sync_secs;
        if run == runs {
            assert_center_equals_local(&db, &store, STATION);
        }
        let ratio = sync_rate / copy_rate;
        ratios.push(ratio);
        println!("run {run}: COPY {copy_secs:.3} s = {copy_rate:.0} records/s; sync {sync_secs:.3} s in {} batches = {sync_rate:.0} records/s; ratio {ratio:.3}", r.batches);
        println!("  COPY by table: {}", per_table.join(", "));
        println!(
            "  (overlapping) reading the outbox {} ms, parsing and hashing {} ms, at the center {} ms, marking synced {} ms",
            r.read_ms, r.prepare_ms, r.push_ms, r.mark_ms
        );
        if let (Some(c), Some(s)) = (copy_cpu, sync_cpu) {
            println!(
                "  CPU: COPY client {} ms, server {} ms ({} backend(s)); sync client {} ms, server {} ms ({} backend(s))",
                c.client_ms, c.server_ms, c.backends, s.client_ms, s.server_ms, s.backends
            );
        }
        if run < runs {
            rt().block_on(async {
                let mut c = opts.connect().await.unwrap();
                reset_center(&mut c).await;
                let _ = c.close().await;
            });
            let local = rusqlite::Connection::open(store.path()).unwrap();
            local.busy_timeout(std::time::Duration::from_secs(30)).unwrap();
            local
                .execute_batch(
                    "UPDATE outbox SET state = 'pending' WHERE state = 'synced'; DELETE FROM station_meta WHERE key LIKE 'sync.%';",
                )
                .unwrap();
        }
    }
    drop(burners);
    let load_after = loadavg();
    ratios.sort_by(|a, b| a.total_cmp(b));
    let median = ratios[ratios.len() / 2];
    println!(
        "batches of up to {batch} outbox changes over {connections} connection(s); load average (1 min) {load_before} before, {load_after} after; --load {load}{}",
        if beside { " --load-in-session" } else { "" }
    );
    println!(
        "sync ratio {median:.3} (median of {runs}; min {:.3}, max {:.3}; sync records/s / COPY records/s; target >= 0.7{})",
        ratios[0],
        ratios[ratios.len() - 1],
        if quick { "; --quick, debug-sized: not the release figure" } else { "" }
    );
}

/// Empty the synced tables and checkpoint, so every run starts alike.
async fn reset_center(c: &mut sqlx::postgres::PgConnection) {
    sqlx::query("TRUNCATE attempts, attempt_steps, certificates, audit_trail, audit_heads").execute(&mut *c).await.unwrap();
    sqlx::query("CHECKPOINT").execute(&mut *c).await.unwrap();
}

/// The 1-minute load average, as /proc/loadavg says it.
fn loadavg() -> String {
    imprint_tests::loadavg().split_whitespace().next().unwrap_or("?").to_string()
}

/// The CPU-burning processes of `--load N`, stopped on drop.
struct Burners(Vec<std::process::Child>);

impl Burners {
    fn start(n: usize, own_session: bool) -> Burners {
        let exe = std::env::current_exe().unwrap();
        let me = std::process::id().to_string();
        let spawn = |setsid: bool| {
            let mut c = if setsid { std::process::Command::new("setsid") } else { std::process::Command::new(&exe) };
            if setsid {
                c.arg(&exe);
            }
            c.args(["--burn", &me]).stdin(std::process::Stdio::null()).spawn()
        };
        // A session of its own (autogroup scheduling: like another user's job);
        // without setsid(1), a plain child.
        Burners((0..n).map(|_| spawn(own_session).or_else(|_| spawn(false)).expect("start a burner")).collect())
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Burn one CPU until the process `parent` is gone (so a killed bench leaves none behind).
fn burn(parent: u32) {
    let alive = std::path::PathBuf::from(format!("/proc/{parent}"));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    loop {
        let t = Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(100) {
            for _ in 0..10_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
            std::hint::black_box(x);
        }
        if !alive.exists() {
            return;
        }
    }
}

/// CPU time (ms) of this process and of the center's backends serving this
/// bench's database, sampled from /proc every 10 ms while a phase runs (a
/// backend that exits keeps its last sample: up to 10 ms per backend lost).
struct CpuProbe {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, usize, u64)>,
    client0: u64,
}

struct CpuSpent {
    client_ms: u64,
    server_ms: u64,
    backends: usize,
}

fn ticks(stat: &str) -> Option<u64> {
    let text = std::fs::read_to_string(stat).ok()?;
    let f: Vec<&str> = text.rsplit_once(") ")?.1.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn tick_ms(t: u64) -> u64 {
    t * 10 // USER_HZ is 100 on Linux
}

/// (pid, CPU ticks) of the center's backends whose process title names `db`.
fn backends(pattern: &str) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.starts_with("postgres: ") && cmd.contains(pattern) {
            if let Some(t) = ticks(&format!("/proc/{pid}/stat")) {
                out.push((pid, t));
            }
        }
    }
    out
}

impl CpuProbe {
    fn start(db: &str) -> CpuProbe {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, pattern) = (stop.clone(), format!(" {db} "));
        // Backends there before the phase count from now; new ones from zero.
        let before: std::collections::HashMap<u32, u64> = backends(&pattern).into_iter().collect();
        let thread = std::thread::spawn(move || {
            let mut last_seen: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
            loop {
                let last = s.load(std::sync::atomic::Ordering::SeqCst);
                for (pid, t) in backends(&pattern) {
                    last_seen.insert(pid, t);
                }
                if last {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let server = last_seen.iter().map(|(pid, t)| t - before.get(pid).copied().unwrap_or(0).min(*t)).sum();
            // This thread's own scanning is not the client's work.
            (server, last_seen.len(), ticks("/proc/thread-self/stat").unwrap_or(0))
        });
        CpuProbe { stop, thread, client0: ticks("/proc/self/stat").unwrap_or(0) }
    }

    fn stop(self) -> CpuSpent {
        let client = ticks("/proc/self/stat").unwrap_or(0).saturating_sub(self.client0);
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (server, backends, probe) = self.thread.join().unwrap();
        CpuSpent { client_ms: tick_ms(client.saturating_sub(probe)), server_ms: tick_ms(server), backends }
    }
}
