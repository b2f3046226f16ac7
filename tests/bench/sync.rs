//! `imprint-sync-bench`: sync 100,000 records from a station's outbox to the
//! real PostgreSQL and divide the rate by the rate of `COPY` of the same rows
//! into the same schema, measured in the same run (target >= 0.7).
//!
//! ```sh
//! . scripts/env.sh && cargo run --release -p imprint-tests --bin imprint-sync-bench
//! imprint-sync-bench --quick          # a few thousand records: proves it runs (CI)
//! imprint-sync-bench --records 50000 --batch 5000
//! ```
//!
//! Both runs start from an empty table set in the same database: first
//! `COPY` (three statements: attempts, steps, certificates, text format, as
//! the superuser: no row-level security, no conflict handling, no local
//! store), then `TRUNCATE`, then the station's real sync path
//! (`imprint_sync::sync_once` as the station's role: SQLite outbox reads,
//! hashing, `INSERT ... SELECT FROM UNNEST ... ON CONFLICT DO NOTHING
//! RETURNING`, and marking the outbox synced with `synchronous=FULL`).
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
    let quick = args.iter().any(|a| a == "--quick");
    let target = arg_value(&args, "--records").unwrap_or(if quick { 2_200 } else { 100_000 });
    let batch = arg_value(&args, "--batch").unwrap_or(CentralConfig::default().batch_size as usize);
    let connections = arg_value(&args, "--connections").unwrap_or(CentralConfig::default().connections as usize);
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
    let runs = arg_value(&args, "--runs").unwrap_or(if quick { 1 } else { 3 });
    let mut ratios = Vec::new();
    for run in 1..=runs {
        // 1. The floor: COPY of the same rows into the same tables, as the owner.
        let copy_secs = rt().block_on(async {
            let mut c = opts.connect().await.unwrap();
            let t = Instant::now();
            for (table, cols, text, _) in &data {
                let mut copy = c.copy_in_raw(&format!("COPY {table} ({cols}) FROM STDIN")).await.unwrap();
                copy.send(text.as_bytes()).await.unwrap();
                copy.finish().await.unwrap();
            }
            let secs = t.elapsed().as_secs_f64();
            for (table, _, _, n) in &data {
                let got: i64 =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).fetch_one(&mut c).await.unwrap();
                assert_eq!(got as usize, *n, "{table}");
            }
            reset_center(&mut c).await;
            let _ = c.close().await;
            secs
        });
        let copy_rate = records as f64 / copy_secs;

        // 2. The station's sync, as the station's role, from its outbox.
        let t = Instant::now();
        let r = sync_once(store.clone(), STATION, &cfg).unwrap();
        let sync_secs = t.elapsed().as_secs_f64();
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
        println!(
            "  (overlapping) reading the outbox {} ms, parsing and hashing {} ms, at the center {} ms, marking synced {} ms",
            r.read_ms, r.prepare_ms, r.push_ms, r.mark_ms
        );
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
    ratios.sort_by(|a, b| a.total_cmp(b));
    let median = ratios[ratios.len() / 2];
    println!("batches of up to {batch} outbox changes over {connections} connection(s)");
    println!(
        "sync ratio {median:.3} (median of {runs}; sync records/s / COPY records/s; target >= 0.7{})",
        if quick { "; --quick, debug-sized: not the release figure" } else { "" }
    );
}

/// Empty the synced tables and checkpoint, so every run starts alike.
async fn reset_center(c: &mut sqlx::postgres::PgConnection) {
    sqlx::query("TRUNCATE attempts, attempt_steps, certificates, audit_trail, audit_heads").execute(&mut *c).await.unwrap();
    sqlx::query("CHECKPOINT").execute(&mut *c).await.unwrap();
}
