//! `imprint-report-bench`: a month's report for one site from a central
//! database holding millions of attempts, timed against a sequential scan of
//! the same rows in the same run (issue 14 item 6).
//!
//! ```sh
//! . scripts/env.sh && cargo run -p imprint-tests --bin imprint-report-bench                  # 10,000,000 attempts
//! imprint-report-bench --attempts 200000                                                      # smaller
//! ```
//!
//! `--keep` leaves the generated database in place (its name is printed) and
//! `--database NAME` times such a database again without generating it (a
//! release build timing the rows a debug run generated, say).
//!
//! The generator fills a fresh migrated database (with the report indexes of
//! `migrations/postgres/0010_report_indexes.sql`) with `--attempts` attempts
//! over 2026 (one a few seconds apart), spread over 10 stations, 7 operators,
//! work orders of 5,000, one in 20 failed (three codes), and a QA verdict for
//! one device in 100. The report is timed both ways for station `site-3` in
//! June, `--runs` times (default 3): before (session 5: every row through
//! `imprint_sync::central_rows`, the summary counted in Rust by
//! `imprint_api::reports::summarize`) and after (`imprint_sync::central_report`:
//! the summary counted at the center by GROUP BY, 500 rows transferred, then
//! `Summary::from_counts`); the two summaries must be equal. The reference
//! is a sequential scan of the same table for the same rows (index and
//! bitmap scans off), counted and summed.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_tests::pg::{psql, rt, TestDb, PG_HOST, PG_PORT};
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
            generate(&db, n);
            let name = db.name.clone();
            (Some(db), name)
        }
    };
    let total: i64 = psql(&name, "SELECT count(*) FROM attempts").trim().parse().unwrap();
    let opts = PgConnectOptions::from_str(&format!("postgres://postgres@{PG_HOST}:{PG_PORT}/{name}?sslmode=disable"))
        .unwrap()
        .log_statements(log::LevelFilter::Off);
    time_report(&opts, total, arg_value(&args, "--runs").unwrap_or(3).max(1));
    if args.iter().any(|a| a == "--keep") {
        if let Some(db) = db {
            // Not dropped: the database outlives the run.
            std::mem::forget(db);
        }
        println!("kept database {name} (time it again with --database {name}; drop it with psql -c 'DROP DATABASE {name}')");
    }
}

/// Fill a fresh migrated center with `n` attempts and their QA verdicts.
fn generate(db: &TestDb, n: usize) {
    let t = Instant::now();
    // One attempt every (a year / n); 10 sites round robin.
    db.psql("INSERT INTO stations (id, db_role) SELECT 'site-' || s, 'bench_site_' || s FROM generate_series(0, 9) s");
    db.psql(&format!(
        "INSERT INTO attempts (id, station_id, port, started_at, finished_at, status, stage, code, reason, device_serial, model,
                               hw_rev, fw_version, batch, operator, resumed, bytes_to_device, bytes_from_device, version, content_sha256)
         SELECT gen_random_uuid(), 'site-' || (i % 10), '/dev/ttyUSB' || (i % 16), ts, ts + interval '25 seconds',
                CASE WHEN i % 20 = 0 THEN 'failed' ELSE 'passed' END,
                CASE WHEN i % 20 = 0 THEN (ARRAY['csr', 'issue', 'prove'])[1 + (i / 20) % 3] ELSE 'done' END,
                CASE WHEN i % 20 = 0 THEN (ARRAY['timeout', 'key_not_allowed', 'proof_failed'])[1 + (i / 20) % 3] END,
                CASE WHEN i % 20 = 0 THEN 'bench failure' END,
                'SN-' || i, 'IMP-1', 'B', '1.2.3', 'WO-' || (i / 5000), 'op-' || (i % 7), false, 4504, 2100, 1, '\\x00'
         FROM (SELECT i, timestamptz '2026-01-01 00:00:00+00' + (i * (31536000.0 / {n})) * interval '1 second' AS ts
               FROM generate_series(0, {n} - 1) i) g"
    ));
    db.psql(
        "INSERT INTO qa_verdicts (id, station_id, at, operator, port, device_serial, batch, verdict, checks, version, content_sha256)
         SELECT gen_random_uuid(), station_id, finished_at + interval '1 hour', 'qa-1', port, device_serial, batch, 'pass', '[]', 1, '\\x00'
         FROM attempts WHERE status = 'passed' AND substr(device_serial, 4)::bigint % 100 = 1",
    );
    db.psql("ANALYZE attempts; ANALYZE qa_verdicts");
    let generated = t.elapsed();
    println!("generated {n} attempts in {:.1} s", generated.as_secs_f64());
    let size = db.psql("SELECT pg_size_pretty(pg_database_size(current_database()))");
    println!("database size: {}", size.trim());
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

/// A month's report for one site, `runs` times each way, against a sequential scan of the same rows.
fn time_report(opts: &PgConnectOptions, total: i64, runs: usize) {
    let q = imprint_sync::ReportQuery {
        station: Some("site-3".into()),
        since: Some("2026-06-01T00:00:00.000Z".into()),
        until: Some("2026-07-01T00:00:00.000Z".into()),
        ..Default::default()
    };
    // The page the app's Reports view shows.
    let paged = imprint_sync::ReportQuery { limit: Some(500), ..q.clone() };
    let rt = rt();
    let (mut before_s, mut fetch_s, mut server_s, mut after_s, mut summary_server_s, mut summary_jit_s, mut scan_s) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut rows_n = 0;
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
    for _ in 0..runs {
        // Before (session 5): every row to the client, the summary counted in Rust.
        let t = Instant::now();
        let rows = rt.block_on(imprint_sync::central_rows(opts, &q)).unwrap();
        fetch_s.push(t.elapsed().as_secs_f64());
        let before = imprint_api::reports::summarize(&rows, None);
        before_s.push(t.elapsed().as_secs_f64());
        rows_n = rows.len();
        assert_eq!(before.attempts as usize, rows.len());
        drop(rows);

        // After: the summary counted at the center, 500 rows transferred.
        let t = Instant::now();
        let (counts, page) = rt.block_on(imprint_sync::central_report(opts, &paged)).unwrap();
        let mut after = imprint_api::reports::Summary::from_counts(&counts, None);
        // The overproduction check of the report's work orders, as `reports::report` makes it.
        let over = rt.block_on(imprint_sync::work_orders::overproduced(opts, &counts.batches)).unwrap();
        after.overproduction = over
            .into_iter()
            .map(|(work_order, q, c)| imprint_api::reports::Overproduction { work_order, quantity: q as u32, certificates: c as u32 })
            .collect();
        after_s.push(t.elapsed().as_secs_f64());
        assert_eq!(after, before, "the summary counted in SQL is the summary counted row by row (no work order overproduced here)");
        assert_eq!(page.len(), rows_n.min(500));

        // Each query alone, in the server (no transfer, no decoding).
        let mut c = rt.block_on(opts.connect()).unwrap();
        let (s, n) = server(&mut c, sql.clone(), &params);
        server_s.push(s);
        assert_eq!(n as usize, rows_n);
        // The summary alone: with the server's JIT (the default) and as `central_report` runs it (JIT off).
        summary_jit_s.push(server(&mut c, summary_sql.clone(), &summary_params).0);
        rt.block_on(sqlx::query("SET jit = off").execute(&mut c)).unwrap();
        rt.block_on(sqlx::query("SET work_mem = '32MB'").execute(&mut c)).unwrap();
        summary_server_s.push(server(&mut c, summary_sql.clone(), &summary_params).0);
        let _ = rt.block_on(c.close());

        let scanned: i64 = rt.block_on(async {
            let mut c = opts.connect().await.unwrap();
            sqlx::query("SET enable_indexscan = off").execute(&mut c).await.unwrap();
            sqlx::query("SET enable_bitmapscan = off").execute(&mut c).await.unwrap();
            let t = Instant::now();
            let r = sqlx::query(
                "SELECT count(*), sum(length(device_serial)) FROM attempts
                 WHERE station_id = 'site-3' AND started_at >= '2026-06-01T00:00:00Z' AND started_at < '2026-07-01T00:00:00Z'",
            )
            .fetch_one(&mut c)
            .await
            .unwrap();
            scan_s.push(t.elapsed().as_secs_f64());
            let _ = c.close().await;
            r.get::<i64, _>(0)
        });
        assert_eq!(scanned as usize, rows_n, "the scan counts the report's rows");
    }
    println!("report: site-3, June: {rows_n} attempts of {total}");
    let before = show("before: every row to the client, summary in Rust", &before_s);
    show("  of which query + transfer + decoding", &fetch_s);
    show("  the rows query alone in the server", &server_s);
    let after = show("after: summary counted at the center + a page of 500 rows + the overproduction check", &after_s);
    show("  the summary query alone in the server (JIT off, as run)", &summary_server_s);
    show("  the summary query alone in the server with JIT on (the server's default)", &summary_jit_s);
    let scan = show("sequential scan of the same rows", &scan_s);
    println!("ratio after / sequential scan: {:.3}", after / scan);
    println!("ratio before / sequential scan: {:.3}", before / scan);
    println!("speed-up before / after: {:.1}", before / after);
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at the end: {}", l.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    }
}
