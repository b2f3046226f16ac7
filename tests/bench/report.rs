//! `imprint-report-bench`: a month's report for one site from a central
//! database holding millions of attempts, timed against a sequential scan of
//! the same rows in the same run (issue 14 item 6).
//!
//! ```sh
//! . scripts/env.sh && cargo run -p imprint-tests --bin imprint-report-bench -- --runs 7   # 10,000,000 attempts
//! imprint-report-bench --attempts 200000                                                  # smaller
//! ```
//!
//! `--keep` leaves the generated database in place (its name is printed),
//! `--database NAME` times such a database again without generating it, and
//! `--compare NAME2` times a second one in the same runs. `--partitioned`
//! generates into the experimental schema of `partition_by_month.sql`
//! (attempts and steps partitioned by month). `--explain` prints the summary
//! query's `EXPLAIN (ANALYZE, BUFFERS)` once; `--jit` also times it with the
//! server's JIT. `--export` first measures a CSV export of site-3's year:
//! the peak memory it adds, streamed (`imprint_sync::central_rows_each` into
//! `reports::CsvOut`, as `imprint export csv` does since session 11) against
//! every row collected first (`central_rows` then `write_csv`, as before),
//! in the same runs; the two files must be equal.
//!
//! The generator (`report_generate.sql`, through psql) fills a fresh migrated
//! center with `--attempts` attempts over 2026, 10 sites, their certificates,
//! reworks, QA verdicts and work orders (some overproduced): see the file.
//! The report is timed both ways for station `site-3` in June, `--runs`
//! times (default 3): before (session 5: every row through
//! `imprint_sync::central_rows`, the summary counted in Rust by
//! `imprint_api::reports::summarize`) and after (`imprint_sync::central_report`:
//! the summary counted at the center, 500 rows transferred, then
//! `Summary::from_counts` and `work_orders::overproduced`); the two summaries
//! must be equal, the overproduced work orders those the generator made. The
//! reference is a sequential scan of the same table for the same rows (index,
//! index-only and bitmap scans off), counted and summed.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_tests::pg::{partition_by_month, psql, psql_script, rt, TestDb, PG_HOST, PG_PORT, REPORT_GENERATE_SQL};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};
use std::str::FromStr;
use std::time::Instant;

fn arg_text<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

fn arg_value(args: &[String], name: &str) -> Option<usize> {
    arg_text(args, name).and_then(|v| v.parse().ok())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = arg_value(&args, "--attempts").unwrap_or(10_000_000);
    let build = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!("imprint-report-bench: {build} build");
    let (db, name) = match arg_text(&args, "--database") {
        Some(name) => (None, name.to_string()),
        None => {
            let db = TestDb::new();
            if args.iter().any(|a| a == "--partitioned") {
                partition_by_month(&db.name);
                println!("attempts and attempt_steps partitioned by month (tests/bench/partition_by_month.sql)");
            }
            generate(&db, n);
            let name = db.name.clone();
            (Some(db), name)
        }
    };
    // `--compare OTHER`: a second database (say the same rows partitioned by month), timed in the same runs.
    let mut names = vec![name.clone()];
    names.extend(arg_text(&args, "--compare").map(str::to_string));
    let runs = arg_value(&args, "--runs").unwrap_or(3).max(1);
    println!("load average before the timed runs: {} (1, 5, 15 min)", imprint_tests::loadavg());
    if args.iter().any(|a| a == "--export") {
        measure_export(&name, runs);
    }
    let mut results: Vec<(String, Timings)> = names.iter().map(|d| (d.clone(), Timings::default())).collect();
    for run in 0..runs {
        for (d, t) in results.iter_mut() {
            let first = run == 0;
            time_report(d, t, first && args.iter().any(|a| a == "--explain"), args.iter().any(|a| a == "--jit"));
        }
    }
    for (d, t) in &results {
        t.show(d);
    }
    println!("load average at the end: {} (1, 5, 15 min)", imprint_tests::loadavg());
    if args.iter().any(|a| a == "--keep") {
        if let Some(db) = db {
            // Not dropped: the database outlives the run.
            std::mem::forget(db);
        }
        println!("kept database {name} (time it again with --database {name}; drop it with psql -c 'DROP DATABASE {name}')");
    }
}

/// Fill a fresh migrated center with `n` attempts, their certificates, QA
/// verdicts and work orders (`report_generate.sql`, through psql).
fn generate(db: &TestDb, n: usize) {
    let t = Instant::now();
    psql_script(&db.name, REPORT_GENERATE_SQL, &[("n", n.to_string())]);
    let generated = t.elapsed();
    println!("generated {n} attempts (with certificates, QA verdicts, work orders) in {:.1} s", generated.as_secs_f64());
    let size = db.psql("SELECT pg_size_pretty(pg_database_size(current_database()))");
    println!("database size: {}", size.trim());
}

/// The overproduced work orders among `batches`, by the generator's rule
/// (`report_generate.sql`): WO-w holds attempts w*5000 .. w*5000+4999 (of
/// `n`); one in 20 of a site's attempts fails; a passed attempt has one
/// certificate; one work order in 50 (w % 50 = 7) has a quantity of 4,000.
fn expected_overproduction(batches: &[String], n: usize) -> Vec<imprint_api::reports::Overproduction> {
    let mut v: Vec<_> = batches
        .iter()
        .filter_map(|b| b.strip_prefix("WO-").and_then(|w| w.parse::<usize>().ok()).map(|w| (b, w)))
        .filter(|(_, w)| w % 50 == 7)
        .filter_map(|(b, w)| {
            let certificates = (w * 5000..((w + 1) * 5000).min(n)).filter(|i| (i / 10) % 20 != 3).count() as u32;
            (certificates > 4000).then(|| imprint_api::reports::Overproduction { work_order: b.clone(), quantity: 4000, certificates })
        })
        .collect();
    v.sort_by(|a, b| a.work_order.cmp(&b.work_order));
    v
}

/// `work_orders::OVERPRODUCED_SQL` before migration 0017: each work order's
/// certificates counted by a probe of `certificates_by_attempt` per attempt
/// of the work order (`attempts_by_batch_covering`), timed beside the check.
const OVERPRODUCED_BY_PROBES_SQL: &str = "SELECT w.id, w.quantity, x.n
     FROM work_orders w
     JOIN (SELECT a.batch, CAST(sum((SELECT count(*) FROM certificates c WHERE c.attempt_id = a.id)) AS BIGINT) AS n
           FROM attempts a WHERE a.batch = ANY($1) GROUP BY a.batch) x ON x.batch = w.id
     WHERE x.n > w.quantity ORDER BY w.id";

/// The bench's connection to database `name`, as the administrator.
fn admin_options(name: &str) -> PgConnectOptions {
    PgConnectOptions::from_str(&format!("postgres://postgres@{PG_HOST}:{PG_PORT}/{name}?sslmode=disable"))
        .unwrap()
        .log_statements(log::LevelFilter::Off)
}

/// min / median / max of some timings.
fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn show(what: &str, v: &[f64]) -> f64 {
    let (lo, med, hi) = spread(v);
    println!("{what}: median {med:.3} s (min {lo:.3}, max {hi:.3}, {} runs)", v.len());
    med
}

/// Each measurement's timings over the runs, in seconds.
#[derive(Default)]
struct Timings {
    total: i64,
    rows: usize,
    partitioned: bool,
    before: Vec<f64>,
    fetch: Vec<f64>,
    server: Vec<f64>,
    after: Vec<f64>,
    over: Vec<f64>,
    over_probes: Vec<f64>,
    summary: Vec<f64>,
    summary_jit: Vec<f64>,
    scan: Vec<f64>,
    overproduced: usize,
}

impl Timings {
    fn show(&self, name: &str) {
        let schema = if self.partitioned { "attempts partitioned by month" } else { "attempts not partitioned" };
        println!("database {name} ({schema}): report for site-3, June: {} attempts of {}", self.rows, self.total);
        let before = show("before: every row to the client, summary in Rust", &self.before);
        show("  of which query + transfer + decoding", &self.fetch);
        show("  the rows query alone in the server", &self.server);
        let after = show("after: summary counted at the center + a page of 500 rows + the overproduction check", &self.after);
        show("  the summary query alone in the server (JIT off, work_mem 32MB, as run)", &self.summary);
        if !self.summary_jit.is_empty() {
            show("  the summary query alone in the server with JIT on (the server's default)", &self.summary_jit);
        }
        let over = show(&format!("  the overproduction check alone ({} work orders overproduced)", self.overproduced), &self.over);
        let probes = show("  the same check counted as before 0017 (a probe per attempt of the work orders, JIT off)", &self.over_probes);
        println!("ratio overproduction check before 0017 / now: {:.0}", probes / over);
        let scan = show("sequential scan of the same rows", &self.scan);
        println!("ratio after / sequential scan: {:.3}", after / scan);
        println!("ratio before / sequential scan: {:.3}", before / scan);
        println!("speed-up before / after: {:.1}", before / after);
    }
}

/// One run of a month's report for one site in database `name`, each way,
/// against a sequential scan of the same rows; timings pushed onto `t`.
fn time_report(name: &str, t: &mut Timings, explain: bool, jit: bool) {
    let opts = admin_options(name);
    if t.total == 0 {
        t.total = psql(name, "SELECT count(*) FROM attempts").trim().parse().unwrap();
        t.partitioned = psql(name, "SELECT relkind FROM pg_class WHERE oid = 'attempts'::regclass") == "p";
    }
    let q = imprint_sync::ReportQuery {
        station: Some("site-3".into()),
        since: Some("2026-06-01T00:00:00.000Z".into()),
        until: Some("2026-07-01T00:00:00.000Z".into()),
        ..Default::default()
    };
    // The page the app's Reports view shows.
    let paged = imprint_sync::ReportQuery { limit: Some(500), ..q.clone() };
    let rt = rt();
    let (sql, params) = imprint_sync::report_sql(imprint_sync::Dialect::Postgres, &q, "");
    let (summary_sql, summary_params) = imprint_sync::summary_sql(imprint_sync::Dialect::Postgres, &q, "");
    let server = |c: &mut sqlx::PgConnection, sql: String, params: &[Option<String>]| {
        let counted = format!("SELECT count(*) FROM ({sql}) q");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(counted));
        for p in params {
            query = query.bind(p.clone());
        }
        let t = Instant::now();
        let n: i64 = rt.block_on(query.fetch_one(c)).unwrap().get(0);
        (t.elapsed().as_secs_f64(), n)
    };
    let n_attempts = usize::try_from(t.total).unwrap();

    // Before (session 5): every row to the client, the summary counted in Rust.
    let start = Instant::now();
    let rows = rt.block_on(imprint_sync::central_rows(&opts, &q)).unwrap();
    t.fetch.push(start.elapsed().as_secs_f64());
    let mut before = imprint_api::reports::summarize(&rows, None);
    t.before.push(start.elapsed().as_secs_f64());
    t.rows = rows.len();
    assert_eq!(before.attempts as usize, rows.len());
    drop(rows);

    // After: the summary counted at the center, 500 rows transferred, the overproduction check.
    let start = Instant::now();
    let (counts, page) = rt.block_on(imprint_sync::central_report(&opts, &paged)).unwrap();
    let mut after = imprint_api::reports::Summary::from_counts(&counts, None);
    // The overproduction check of the report's work orders, as `reports::report` makes it.
    let over_start = Instant::now();
    let over = rt.block_on(imprint_sync::work_orders::overproduced(&opts, &counts.batches)).unwrap();
    t.over.push(over_start.elapsed().as_secs_f64());
    after.overproduction = over
        .into_iter()
        .map(|(work_order, q, c)| imprint_api::reports::Overproduction { work_order, quantity: q as u32, certificates: c as u32 })
        .collect();
    t.after.push(start.elapsed().as_secs_f64());
    // The row-by-row summary knows nothing of quantities: the generator's rule gives its overproduction.
    before.overproduction = expected_overproduction(&counts.batches, n_attempts);
    t.overproduced = before.overproduction.len();
    assert_eq!(after, before, "the summary counted in SQL is the summary counted row by row, the overproduction as generated");
    assert_eq!(page.len(), t.rows.min(500));

    // Each query alone, in the server (no transfer, no decoding).
    let mut c = rt.block_on(opts.connect()).unwrap();
    let (s, n) = server(&mut c, sql.clone(), &params);
    t.server.push(s);
    assert_eq!(n as usize, t.rows);
    if jit {
        t.summary_jit.push(server(&mut c, summary_sql.clone(), &summary_params).0);
    }
    rt.block_on(sqlx::query("SET jit = off").execute(&mut c)).unwrap();
    rt.block_on(sqlx::query("SET work_mem = '32MB'").execute(&mut c)).unwrap();
    t.summary.push(server(&mut c, summary_sql.clone(), &summary_params).0);
    if explain {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN (ANALYZE, BUFFERS) {summary_sql}")));
        for p in &summary_params {
            query = query.bind(p.clone());
        }
        let plan = rt.block_on(query.fetch_all(&mut c)).unwrap();
        println!("EXPLAIN (ANALYZE, BUFFERS) of the summary query in {name}:");
        for r in plan {
            println!("  {}", r.get::<String, _>(0));
        }
    }
    // The overproduction check as it counted before migration 0017 (0015's indexes, a certificate
    // probe per attempt of the work orders): the same work orders and counts.
    let start = Instant::now();
    let probed: Vec<(String, i64, i64)> = rt
        .block_on(sqlx::query(OVERPRODUCED_BY_PROBES_SQL).bind(&counts.batches).fetch_all(&mut c))
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    t.over_probes.push(start.elapsed().as_secs_f64());
    let now: Vec<(String, i64, i64)> =
        after.overproduction.iter().map(|o| (o.work_order.clone(), i64::from(o.quantity), i64::from(o.certificates))).collect();
    assert_eq!(probed, now, "the counts 0017 keeps are the certificates counted row by row");
    let _ = rt.block_on(c.close());

    let scanned: i64 = rt.block_on(async {
        let mut c = opts.connect().await.unwrap();
        sqlx::query("SET enable_indexscan = off").execute(&mut c).await.unwrap();
        sqlx::query("SET enable_indexonlyscan = off").execute(&mut c).await.unwrap();
        sqlx::query("SET enable_bitmapscan = off").execute(&mut c).await.unwrap();
        let start = Instant::now();
        let r = sqlx::query(
            "SELECT count(*), sum(length(device_serial)) FROM attempts
             WHERE station_id = 'site-3' AND started_at >= '2026-06-01T00:00:00Z' AND started_at < '2026-07-01T00:00:00Z'",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        t.scan.push(start.elapsed().as_secs_f64());
        let _ = c.close().await;
        r.get::<i64, _>(0)
    });
    assert_eq!(scanned as usize, t.rows, "the scan counts the report's rows");
}

/// A figure of this process from /proc/self/status, in KiB.
fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Reset the peak RSS to the current RSS (Linux: `5` to clear_refs).
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS through /proc/self/clear_refs");
}

/// What `f` added to the process's peak RSS (KiB), and its time (s).
fn peak_growth(f: impl FnOnce()) -> (u64, f64) {
    reset_peak();
    let base = status_kib("VmRSS:");
    let t = Instant::now();
    f();
    let secs = t.elapsed().as_secs_f64();
    (status_kib("VmHWM:").saturating_sub(base), secs)
}

/// `--export`: site-3's year as CSV at the center, streamed and collected.
/// Streamed runs first in each run, so memory the collected way leaves with
/// the allocator cannot flatter it.
fn measure_export(name: &str, runs: usize) {
    use imprint_api::reports::{write_csv, CsvOut};
    let opts = admin_options(name);
    let q = imprint_sync::ReportQuery {
        station: Some("site-3".into()),
        since: Some("2026-01-01T00:00:00.000Z".into()),
        until: Some("2027-01-01T00:00:00.000Z".into()),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let (streamed_path, collected_path) = (dir.path().join("streamed.csv"), dir.path().join("collected.csv"));
    let rt = rt();
    let (mut s_mem, mut c_mem, mut s_time, mut c_time) = (vec![], vec![], vec![], vec![]);
    let mut rows = 0;
    for _ in 0..runs {
        let (m, t) = peak_growth(|| {
            let mut out = CsvOut::new(std::io::BufWriter::new(std::fs::File::create(&streamed_path).unwrap())).unwrap();
            rt.block_on(imprint_sync::central_rows_each(&opts, &q, |r| out.row(&r))).unwrap();
            rows = out.finish().unwrap();
        });
        s_mem.push(m as f64 / 1024.0);
        s_time.push(t);
        let (m, t) = peak_growth(|| {
            let all = rt.block_on(imprint_sync::central_rows(&opts, &q)).unwrap();
            write_csv(&all, std::io::BufWriter::new(std::fs::File::create(&collected_path).unwrap())).unwrap();
        });
        c_mem.push(m as f64 / 1024.0);
        c_time.push(t);
        assert_eq!(std::fs::read(&streamed_path).unwrap(), std::fs::read(&collected_path).unwrap(), "the same CSV either way");
    }
    let mb = std::fs::metadata(&streamed_path).unwrap().len() as f64 / 1e6;
    println!("export: site-3's year as CSV at the center: {rows} rows, {mb:.1} MB");
    let span = |v: &[f64]| {
        let (lo, med, hi) = spread(v);
        format!("median {med:.1} (min {lo:.1}, max {hi:.1}, {} runs)", v.len())
    };
    println!("  peak RSS added, streamed (now), MiB: {}", span(&s_mem));
    println!("  peak RSS added, every row collected first (before), MiB: {}", span(&c_mem));
    println!("  time streamed, s: {}", span(&s_time));
    println!("  time collected, s: {}", span(&c_time));
    let (s_m, c_m) = (spread(&s_mem).1, spread(&c_mem).1);
    println!("ratio export peak memory streamed / collected: {:.3}", s_m / c_m.max(0.001));
    println!("ratio export time streamed / collected: {:.3}", spread(&s_time).1 / spread(&c_time).1);
    // The server's JIT on the export's query: the export turns it off for its
    // transaction (session 11), so with the connection's `jit` on or off the
    // time is the same; before, `on` (the server's default) was what ran.
    let (mut on, mut off) = (vec![], vec![]);
    for _ in 0..runs {
        for (jit, v) in [("on", &mut on), ("off", &mut off)] {
            let o = opts.clone().options([("jit", jit)]);
            let t = Instant::now();
            let mut out = CsvOut::new(std::io::sink()).unwrap();
            rt.block_on(imprint_sync::central_rows_each(&o, &q, |r| out.row(&r))).unwrap();
            out.finish().unwrap();
            v.push(t.elapsed().as_secs_f64());
        }
    }
    println!("  export over a connection with jit = on, s: {}", span(&on));
    println!("  export over a connection with jit = off, s: {}", span(&off));
    println!("ratio export time JIT off / on: {:.3}", spread(&off).1 / spread(&on).1);
}
