//! `imprint-stations-bench`: many stations on one center (issue 17). Each
//! station is a process of its own with its own SQLite store and its own
//! PostgreSQL login role, writing provisioning records through the store API
//! (as a station does: attempt, steps, journaled and issued certificate,
//! finish, audit entry) and syncing them with the real `SyncWorker` to one
//! PostgreSQL database, while a cutter terminates random station connections
//! at the center.
//!
//! Phase 1, ingest: every station first writes a backlog with its sync
//! worker stopped; then all workers start at once and the time until the
//! center holds every row gives the center's ingest rate, divided by the rate
//! of `COPY` of the same rows (built from the stations' stores by
//! `pg::copy_rows`) into a fresh database in the same run.
//! Phase 2, lag: every station writes attempts at a steady pace with its
//! worker running; the lag of each finished attempt is the center's
//! `received_at` minus the attempt's local `finished_at` (one clock: same
//! machine), reported as p50 / p99.
//! At the end each station's records at the center equal its local records
//! (nothing lost, duplicated or altered: `assert_center_equals_local`).
//!
//! ```sh
//! imprint-stations-bench --stations 100 --own-cluster   # the full run
//! imprint-stations-bench --quick --own-cluster          # CI: 10 stations, small
//! ```
//! The center is the machine's shared cluster (127.0.0.1:5432) unless
//! `--own-cluster`: then a private PostgreSQL cluster of the run's own
//! (`pg::PrivateCluster`: initdb in a temporary directory, a free loopback
//! port, `max_connections` sized for the stations), migrated like any test
//! database, stopped and removed at the end, on a panic and on
//! SIGINT/SIGTERM/SIGHUP (the stations killed first). `--pgbouncer
//! MODE:N` (with `--own-cluster`) puts Debian's PgBouncer in front of it for
//! the stations: `pool_mode` MODE, at most N server connections.
//! `--history N` fills the center first with N attempts of 2026 as
//! `imprint-report-bench` generates them (10 sites, certificates, QA
//! verdicts, work orders: a center that is not empty), and at the end times
//! a month's report for one site of that history (`central_report` and the
//! overproduction check, against a sequential scan of the same rows);
//! `--partitioned` applies the experimental `partition_by_month.sql`
//! (attempts and steps partitioned by month) after the migrations, to the
//! center and to the COPY floor's database alike (docs/sync.md, "Partitions
//! by month").
//! Each station holds `--connections` connections (1 by default; a station's
//! own default is 2). On the shared cluster the bench refuses to take more
//! than its free connections minus a reserve for the other users of the
//! machine, and says so (`--force` to try anyway).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_store::Store;
use imprint_sync::{CentralConfig, SyncWorker};
use imprint_tests::pg::{
    assert_center_equals_local, copy_rows, fill, partition_by_month, psql, psql_script, rt, use_cluster_port, PrivateCluster, TestDb,
    REPORT_GENERATE_SQL,
};
use sqlx::{ConnectOptions, Connection};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}

/// What must not outlive the bench: its station processes and its private cluster.
static STATION_PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static CLUSTER: Mutex<Option<PrivateCluster>> = Mutex::new(None);
/// Set by the signal handler: the stations it kills are not failures to report.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Kill the stations still running, then stop and remove the private cluster.
fn cleanup() {
    let pids = std::mem::take(&mut *STATION_PIDS.lock().unwrap_or_else(|e| e.into_inner()));
    if !pids.is_empty() {
        let _ = Command::new("kill").arg("-KILL").args(pids.iter().map(u32::to_string)).stderr(Stdio::null()).status();
    }
    // Stopped under the lock: a second caller (main unwinding while the
    // signal handler cleans up) waits until the cluster is gone.
    let mut cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = cluster.as_mut() {
        c.stop();
    }
    *cluster = None;
}

/// Runs [`cleanup`] when `main` returns or unwinds.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        cleanup();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--child") {
        return child(&args);
    }
    let _cleanup = Cleanup;
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).unwrap();
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                INTERRUPTED.store(true, Ordering::SeqCst);
                eprintln!("imprint-stations-bench: signal {sig}: killing the stations, stopping the private cluster");
                cleanup();
                std::process::exit(128 + sig);
            }
        });
    }
    let quick = args.iter().any(|a| a == "--quick");
    let mut stations: usize = arg(&args, "--stations").unwrap_or(if quick { 10 } else { 100 });
    let backlog: usize = arg(&args, "--backlog").unwrap_or(if quick { 10 } else { 40 });
    let live: usize = arg(&args, "--live").unwrap_or(if quick { 10 } else { 30 });
    let steps: usize = arg(&args, "--steps").unwrap_or(8);
    let pace_ms: u64 = arg(&args, "--pace-ms").unwrap_or(500);
    let cut_ms: u64 = arg(&args, "--cut-ms").unwrap_or(if quick { 300 } else { 200 });
    let interval_ms: u64 = arg(&args, "--interval-ms").unwrap_or(1000);
    let reserve: i64 = arg(&args, "--reserve").unwrap_or(20);
    let connections: u32 = arg(&args, "--connections").unwrap_or(1);
    let own_cluster = args.iter().any(|a| a == "--own-cluster");
    let partitioned = args.iter().any(|a| a == "--partitioned");
    let history: usize = arg(&args, "--history").unwrap_or(0);
    let report_runs: usize = arg(&args, "--report-runs").unwrap_or(5);
    let load_start = imprint_tests::loadavg();

    // A private cluster: room for every station's connections, the cutter,
    // the bench's own queries and the COPY floor.
    let center = if own_cluster {
        let t = Instant::now();
        let c = PrivateCluster::start(stations * connections as usize + 20);
        use_cluster_port(c.port);
        let what = format!(
            "private cluster {} on 127.0.0.1:{} (max_connections {}, started in {:.1} s)",
            c.bin.display(),
            c.port,
            c.max_connections,
            t.elapsed().as_secs_f64()
        );
        *CLUSTER.lock().unwrap() = Some(c);
        what
    } else {
        "the shared cluster on 127.0.0.1:5432".to_string()
    };

    // The shared cluster's connection budget: the stations', a reserve left for the others.
    let free: i64 = psql(
        "postgres",
        "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int - count(*) FROM pg_stat_activity",
    )
    .parse()
    .unwrap();
    let fits = ((free - reserve - 2).max(1) / i64::from(connections)).max(1) as usize;
    if !own_cluster && stations > fits && !args.iter().any(|a| a == "--force") {
        println!(
            "only {free} connections free at the center (max_connections minus reserved minus in use); keeping {reserve} for other users: {fits} stations of {connections} connections, not {stations} (--own-cluster for a cluster of the run's own)"
        );
        stations = fits;
    }
    let mut db = TestDb::new();
    let schema = prepare_center(&db, partitioned, history);
    let exe = std::env::current_exe().unwrap();
    let per_attempt = steps + 3; // attempt, steps, certificate, audit entry
    let mut center_port_for_stations: Option<(String, String)> = None;
    println!(
        "imprint-stations-bench: {stations} station processes, backlog {backlog} + live {live} attempts each ({per_attempt} records per attempt), up to {connections} connection(s) each, a random station connection cut every {cut_ms} ms; center: {center}; load average {load_start}"
    );
    println!("center schema: {schema}");

    // Every station's login role, then (--pgbouncer MODE:SERVERS) PgBouncer in
    // front of the private cluster, then the stations.
    let cfgs: Vec<_> = (0..stations).map(|i| (format!("st-{i:03}"), db.add_station(&format!("st-{i:03}")))).collect();
    if let Some(spec) = arg::<String>(&args, "--pgbouncer") {
        let (mode, servers) = spec.split_once(':').expect("--pgbouncer MODE:SERVER_CONNECTIONS");
        let servers: usize = servers.parse().unwrap();
        let users: Vec<String> = cfgs.iter().map(|(_, c)| c.role.clone().unwrap()).collect();
        let mut guard = CLUSTER.lock().unwrap();
        let cluster = guard.as_mut().expect("--pgbouncer needs --own-cluster");
        let port = cluster.start_pgbouncer(mode, servers, connections as usize, stations * connections as usize + 20, &users);
        println!("PgBouncer 1.18 on 127.0.0.1:{port} in front of the center: pool_mode {mode}, at most {servers} server connections for {stations} stations");
        let from = format!(":{}/", cluster.port);
        drop(guard);
        center_port_for_stations = Some((from, format!(":{port}/")));
    }

    // Start the stations: each writes its backlog and says READY.
    let mut children = Vec::new();
    let mut stores = Vec::new();
    for (station, cfg) in cfgs {
        let url = match &center_port_for_stations {
            Some((from, to)) => cfg.url.replace(from.as_str(), to),
            None => cfg.url.clone(),
        };
        let dir = db.dir.path().join(&station);
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = Command::new(&exe)
            .args(["--child", &station, "--dir", &dir.display().to_string(), "--url", &url])
            .args(["--role", cfg.role.as_deref().unwrap(), "--password-file", &cfg.password_file.as_ref().unwrap().display().to_string()])
            .args(["--backlog", &backlog.to_string(), "--live", &live.to_string(), "--steps", &steps.to_string()])
            .args(["--pace-ms", &pace_ms.to_string(), "--interval-ms", &interval_ms.to_string()])
            .args(["--connections", &connections.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        STATION_PIDS.lock().unwrap().push(c.id());
        let lines = BufReader::new(c.stdout.take().unwrap()).lines();
        stores.push((station, dir.join("station.db")));
        children.push((c, lines));
    }
    for (c, lines) in children.iter_mut() {
        let l = lines.next().and_then(Result::ok).unwrap_or_default();
        assert_eq!(l, "READY", "station process {} did not get ready", c.id());
    }
    let backlog_rows = stations * backlog * per_attempt;
    let count_sql = "SELECT (SELECT count(*) FROM attempts) + (SELECT count(*) FROM attempt_steps) + (SELECT count(*) FROM certificates) + (SELECT count(*) FROM audit_trail)";
    // The history's rows (--history) are there before the stations start.
    let baseline: usize = db.psql(count_sql).parse().unwrap();

    // The cutter: terminates one random station backend every cut_ms, over a
    // connection of its own held open (a psql per cut starved under load: the
    // 100-station run of 2026-11-30 cut 28 times in 40 s instead of 200).
    let stop = Arc::new(AtomicBool::new(false));
    let cuts = Arc::new(AtomicUsize::new(0));
    let cutter = {
        let (stop, cuts, name, opts) = (stop.clone(), cuts.clone(), db.name.clone(), db.admin_options());
        std::thread::spawn(move || {
            let sql = format!(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = '{name}' AND usename <> 'postgres' AND backend_type = 'client backend' ORDER BY random() LIMIT 1) t"
            );
            rt().block_on(async {
                let mut conn: Option<sqlx::postgres::PgConnection> = None;
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(cut_ms)).await;
                    if conn.is_none() {
                        conn = opts.connect().await.ok();
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    match sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.as_str())).fetch_one(c).await {
                        Ok(n) => {
                            cuts.fetch_add(n as usize, Ordering::SeqCst);
                        }
                        Err(_) => conn = None,
                    }
                }
            })
        })
    };

    // Phase 1: all workers start at once; the backlog's arrival is timed.
    let t = Instant::now();
    for (c, _) in children.iter_mut() {
        writeln!(c.stdin.as_mut().unwrap(), "GO").unwrap();
    }
    loop {
        let n: usize = db.psql(count_sql).parse::<usize>().unwrap() - baseline;
        if n >= backlog_rows {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(1800), "the backlog did not arrive: {n} of {backlog_rows} rows");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ingest_secs = t.elapsed().as_secs_f64();
    let cuts_phase1 = cuts.load(Ordering::SeqCst);

    // Phase 2 runs in the children (live writes at a pace); wait for all to drain and exit.
    let mut failed = 0;
    for (mut c, mut lines) in children {
        let last: Vec<String> = lines.by_ref().map_while(Result::ok).collect();
        let st = c.wait().unwrap();
        STATION_PIDS.lock().unwrap().retain(|p| *p != c.id());
        while INTERRUPTED.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(1)); // the signal handler exits the process
        }
        if !st.success() {
            failed += 1;
            println!("station process {} exited {st}: {last:?}", c.id());
        }
    }
    let wall = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    cutter.join().unwrap();
    assert_eq!(failed, 0, "every station process drained its outbox and exited 0");

    // Nothing lost, duplicated or altered, station by station.
    let mut total = 0;
    let mut copy_data: Vec<(&'static str, String, String, usize)> = Vec::new();
    for (station, path) in &stores {
        let store = Store::open(path).unwrap();
        total += assert_center_equals_local(&db, &store, station);
        for (k, (table, cols, text, n)) in copy_rows(&store, station).into_iter().enumerate() {
            match copy_data.get_mut(k) {
                Some(e) => {
                    e.2.push_str(&text);
                    e.3 += n;
                }
                None => copy_data.push((table, cols, text, n)),
            }
        }
    }
    let expected = stations * (backlog + live) * per_attempt;
    assert_eq!(total, expected, "records at the center");

    // Lag of the live attempts: local finish to arrival at the center.
    let lag = db.psql(
        "SELECT round(1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - finished_at)))::bigint || ' ' ||
                round(1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - finished_at)))::bigint || ' ' ||
                round(1000 * max(extract(epoch FROM received_at - finished_at)))::bigint || ' ' || count(*)
         FROM attempts WHERE device_serial LIKE 'L-%'",
    );
    let lag: Vec<i64> = lag.split_whitespace().map(|v| v.parse().unwrap()).collect();

    // A month's report for one site of the history, on the center the stations just synced to.
    let report = (history > 0).then(|| time_month_report(&db, report_runs));

    // The floor: COPY of the same rows into a fresh database (the same schema and history), as the owner.
    let floor = TestDb::new();
    prepare_center(&floor, partitioned, history);
    let copy_secs = rt().block_on(async {
        let mut c = floor.admin_options().connect().await.unwrap();
        let t = Instant::now();
        for (table, cols, text, _) in &copy_data {
            let mut copy = c.copy_in_raw(&format!("COPY {table} ({cols}) FROM STDIN")).await.unwrap();
            copy.send(text.as_bytes()).await.unwrap();
            copy.finish().await.unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        let _ = c.close().await;
        secs
    });
    let copy_rate = total as f64 / copy_secs;
    let ingest_rate = backlog_rows as f64 / ingest_secs;
    println!(
        "phase 1 (backlog, all stations at once): {backlog_rows} rows in {ingest_secs:.2} s = {ingest_rate:.0} rows/s with {cuts_phase1} connections cut"
    );
    println!("COPY of the same kind of rows ({total}, every station's, into a fresh database): {copy_secs:.2} s = {copy_rate:.0} rows/s");
    println!("ingest ratio {:.3} (center ingest rows/s / COPY rows/s, same run)", ingest_rate / copy_rate);
    println!(
        "phase 2 (live, one attempt every {pace_ms} ms per station, worker interval {interval_ms} ms): lag local commit -> center p50 {} ms, p99 {} ms, max {} ms over {} attempts",
        lag[0], lag[1], lag[2], lag[3]
    );
    println!(
        "{stations} stations, {total} records at the center = local, none lost or duplicated; {} connections cut in {wall:.1} s",
        cuts.load(Ordering::SeqCst)
    );
    println!(
        "load average at the start {load_start}, at the end {} (1, 5, 15 min; {} cores)",
        imprint_tests::loadavg(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if let Some((report, scan)) = report {
        let (lo, med, hi) = spread(&report);
        let (slo, smed, shi) = spread(&scan);
        println!(
            "month report (site-3, June 2026, of {history} attempts of history; summary + 500 rows + overproduction check, {} runs): median {med:.3} s (min {lo:.3}, max {hi:.3}); sequential scan of the same rows: median {smed:.3} s (min {slo:.3}, max {shi:.3}); ratio {:.2}",
            report.len(),
            med / smed
        );
    }
    // The private cluster's refusals, by message (the cutter's terminations are FATAL, not counted).
    if let Some(c) = CLUSTER.lock().unwrap().as_ref() {
        let mut errors: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
        for l in c.server_log().lines().filter_map(|l| l.split_once("ERROR:  ").map(|(_, m)| m)) {
            let m: String = l.chars().map(|ch| if ch.is_ascii_digit() { '#' } else { ch }).take(90).collect();
            *errors.entry(m).or_default() += 1;
        }
        println!("center ERRORs: {}", if errors.is_empty() { "none".to_string() } else { format!("{errors:?}") });
    }
    drop(floor);
    drop(db);
}

/// One station: own store, own role, own sync worker.
fn child(args: &[String]) {
    let station: String = arg(args, "--child").unwrap();
    let dir: PathBuf = arg(args, "--dir").unwrap();
    let backlog: usize = arg(args, "--backlog").unwrap();
    let live: usize = arg(args, "--live").unwrap();
    let steps: usize = arg(args, "--steps").unwrap();
    let pace = Duration::from_millis(arg(args, "--pace-ms").unwrap());
    let cfg = CentralConfig {
        url: arg(args, "--url").unwrap(),
        sslmode: Some("disable".into()),
        role: arg(args, "--role"),
        password_file: arg(args, "--password-file"),
        connections: arg(args, "--connections").unwrap(),
        interval_ms: arg(args, "--interval-ms").unwrap(),
        retry_min_ms: 100,
        retry_max_ms: 2000,
        timeout_ms: 30_000,
        ..CentralConfig::default()
    };
    let store = Arc::new(Store::open(&dir.join("station.db")).unwrap());
    for i in 0..backlog {
        fill(&store, &format!("B-{station}-{i}"), 1, steps, 1);
    }
    println!("READY");
    std::io::stdout().flush().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let worker = SyncWorker::spawn(store.clone(), &station, cfg).unwrap();
    for i in 0..live {
        std::thread::sleep(pace);
        fill(&store, &format!("L-{station}-{i}"), 1, steps, 1);
        worker.wake();
    }
    let t = Instant::now();
    loop {
        let c = store.outbox_counts().unwrap();
        assert_eq!(c.quarantined, 0, "{station}: quarantined records");
        if c.pending == 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(1200), "{station}: {} changes still pending", c.pending);
        std::thread::sleep(Duration::from_millis(100));
    }
    worker.shutdown(Instant::now() + Duration::from_secs(10));
    println!("DONE");
}

/// Make a migrated center ready: `history` attempts of 2026 generated as
/// `imprint-report-bench` generates them (10 sites, certificates, QA
/// verdicts, work orders), attempts and steps partitioned by month if asked
/// (the experimental `partition_by_month.sql`, applied before the history
/// so the history is loaded into the partitions). Returns what it made.
fn prepare_center(db: &TestDb, partitioned: bool, history: usize) -> String {
    let t = Instant::now();
    if partitioned {
        partition_by_month(&db.name);
    }
    if history > 0 {
        psql_script(&db.name, REPORT_GENERATE_SQL, &[("n", history.to_string())]);
        // The history's work orders are not the stations' business here: every
        // station would pull the open ones and journal them (records this
        // bench does not count). The month report's overproduction check
        // still counts their certificates; it finds no work order rows.
        db.psql("DELETE FROM work_orders WHERE created_by = 'bench'");
    }
    format!(
        "{}, {history} attempts of history (made in {:.1} s)",
        if partitioned {
            "attempts and attempt_steps partitioned by month (tests/bench/partition_by_month.sql)"
        } else {
            "the migrations' (no partitions)"
        },
        t.elapsed().as_secs_f64()
    )
}

/// min / median / max.
fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// `runs` times: `central_report` (the summary and a page of 500 rows) and the
/// overproduction check of its work orders, as `imprint report --central`
/// makes them, for site-3's June 2026; and a sequential scan of the same rows.
fn time_month_report(db: &TestDb, runs: usize) -> (Vec<f64>, Vec<f64>) {
    let opts = db.admin_options();
    let q = imprint_sync::ReportQuery {
        station: Some("site-3".into()),
        since: Some("2026-06-01T00:00:00.000Z".into()),
        until: Some("2026-07-01T00:00:00.000Z".into()),
        limit: Some(500),
        ..Default::default()
    };
    let rt = rt();
    let (mut report, mut scan) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let (counts, page) = rt.block_on(imprint_sync::central_report(&opts, &q)).unwrap();
        rt.block_on(imprint_sync::work_orders::overproduced(&opts, &counts.batches)).unwrap();
        report.push(t.elapsed().as_secs_f64());
        assert!(counts.attempts > 0 && !page.is_empty(), "the history has site-3's June");
        let n: i64 = rt.block_on(async {
            let mut c = opts.connect().await.unwrap();
            for off in ["enable_indexscan", "enable_indexonlyscan", "enable_bitmapscan"] {
                sqlx::query(sqlx::AssertSqlSafe(format!("SET {off} = off"))).execute(&mut c).await.unwrap();
            }
            let t = Instant::now();
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM attempts
                 WHERE station_id = 'site-3' AND started_at >= '2026-06-01T00:00:00Z' AND started_at < '2026-07-01T00:00:00Z'",
            )
            .fetch_one(&mut c)
            .await
            .unwrap();
            scan.push(t.elapsed().as_secs_f64());
            let _ = c.close().await;
            n
        });
        assert_eq!(n as u64, counts.attempts, "the scan counts the report's rows");
    }
    (report, scan)
}
