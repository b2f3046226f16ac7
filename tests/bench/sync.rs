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

use imprint_store::{AttemptFilter, Store};
use imprint_sync::{hash, sync_once, CentralConfig};
use imprint_tests::pg::{assert_center_equals_local, fill, rt, TestDb};
use sqlx::{ConnectOptions, Connection};
use std::sync::Arc;
use std::time::Instant;

const STATION: &str = "bench-1";
const STEPS_PER_ATTEMPT: usize = 20;

fn arg_value(args: &[String], name: &str) -> Option<usize> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}

/// COPY text-format field.
fn field(out: &mut String, v: Option<&str>) {
    match v {
        None => out.push_str("\\N"),
        Some(s) => {
            for ch in s.chars() {
                match ch {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
    }
}

fn bytea(out: &mut String, b: Option<&[u8]>) {
    match b {
        None => out.push_str("\\N"),
        Some(b) => {
            out.push_str("\\\\x");
            out.push_str(&hex::encode(b));
        }
    }
}

fn row(out: &mut String, cells: Vec<Cell<'_>>) {
    for (i, c) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        match c {
            Cell::T(v) => field(out, v),
            Cell::B(v) => bytea(out, v),
        }
    }
    out.push('\n');
}

enum Cell<'a> {
    T(Option<&'a str>),
    B(Option<&'a [u8]>),
}
use Cell::{B, T};

/// The same rows the sync sends, as COPY text: (table, columns, data).
fn copy_data(store: &Store) -> Vec<(&'static str, &'static str, String, usize)> {
    let versions: std::collections::HashMap<(String, String, i64), i64> = store
        .read(|c| {
            let mut s = c.prepare("SELECT entity, entity_id, step_no, max(seq) FROM outbox GROUP BY 1, 2, 3")?;
            let rows = s.query_map([], |r| Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get(3)?)))?.collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .unwrap();
    let v = |e: &str, id: &str, n: i64| versions[&(e.to_string(), id.to_string(), n)].to_string();
    let (mut a_txt, mut s_txt, mut c_txt) = (String::new(), String::new(), String::new());
    let (mut na, mut ns, mut nc) = (0, 0, 0);
    let attempts = store.attempts(&AttemptFilter::default()).unwrap();
    for a in &attempts {
        let h = hash::attempt(STATION, a);
        let ver = v("attempt", &a.id, 0);
        let retry = a.retryable.map(|r| r.to_string());
        let (started, finished, status) = (
            a.started_at.to_string(),
            a.finished_at.map(|t| t.to_string()),
            a.status.to_string(),
        );
        let (stage, code) = (
            a.stage.as_ref().map(|v| v.to_string()),
            a.code.as_ref().map(|v| v.to_string()),
        );
        let (resumed, to, from) = (
            a.resumed.to_string(),
            a.bytes_to_device.to_string(),
            a.bytes_from_device.to_string(),
        );
        row(
            &mut a_txt,
            vec![
                T(Some(&a.id)),
                T(Some(STATION)),
                T(Some(&a.port)),
                T(Some(&started)),
                T(finished.as_deref()),
                T(Some(&status)),
                T(stage.as_deref()),
                T(code.as_deref()),
                T(a.reason.as_deref()),
                T(a.hint.as_deref()),
                T(retry.as_deref()),
                T(a.device_serial.as_deref()),
                T(a.model.as_deref()),
                T(a.hw_rev.as_deref()),
                T(a.fw_version.as_deref()),
                T(a.fw_hash.as_deref()),
                T(a.chip_uid.as_deref()),
                T(a.batch.as_deref()),
                T(a.spki_sha256.as_deref()),
                T(a.certificate_id.as_deref()),
                T(Some(&resumed)),
                T(Some(&to)),
                T(Some(&from)),
                T(Some(&ver)),
                B(Some(&h)),
            ],
        );
        na += 1;
    }
    let steps: Vec<imprint_store::StepRecord> = store
        .read(|c| {
            let mut s = c.prepare("SELECT id, attempt_id, at, stage, kind, detail FROM steps ORDER BY id")?;
            let rows = s
                .query_map([], |r| {
                    Ok(imprint_store::StepRecord { n: r.get(0)?, attempt_id: r.get(1)?, at: r.get(2)?, stage: r.get(3)?, kind: r.get(4)?, detail: r.get(5)? })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .unwrap();
    for s in &steps {
        let h = hash::step(STATION, s);
        let (n, ver) = (s.n.to_string(), v("step", &s.attempt_id, s.n));
        row(&mut s_txt, vec![T(Some(&s.attempt_id)), T(Some(&n)), T(Some(STATION)), T(Some(&s.at)), T(Some(&s.stage)), T(Some(&s.kind)), T(Some(&s.detail)), T(Some(&ver)), B(Some(&h))]);
        ns += 1;
    }
    for c in store.certificates().unwrap() {
        let h = hash::certificate(STATION, &c);
        let ver = v("certificate", &c.id, 0);
        let (nb, na_, st) = (
            c.not_before.to_string(),
            c.not_after.to_string(),
            c.status.to_string(),
        );
        let (created, issued) = (c.created_at.to_string(), c.issued_at.map(|t| t.to_string()));
        row(
            &mut c_txt,
            vec![
                T(Some(&c.id)),
                T(Some(STATION)),
                T(Some(&c.attempt_id)),
                T(Some(&c.device_serial)),
                T(Some(&c.issuer)),
                T(Some(&c.serial_hex)),
                T(Some(&c.spki_sha256)),
                B(Some(&c.spki_der)),
                T(Some(&nb)),
                T(Some(&na_)),
                T(Some(&st)),
                B(c.cert_der.as_deref()),
                T(c.fingerprint_sha256.as_deref()),
                T(Some(&created)),
                T(issued.as_deref()),
                T(Some(&ver)),
                B(Some(&h)),
            ],
        );
        nc += 1;
    }
    vec![
        ("attempts", "id, station_id, port, started_at, finished_at, status, stage, code, reason, hint, retryable, device_serial, model, hw_rev, fw_version, fw_hash, chip_uid, batch, spki_sha256, certificate_id, resumed, bytes_to_device, bytes_from_device, version, content_sha256", a_txt, na),
        ("attempt_steps", "attempt_id, n, station_id, at, stage, kind, detail, version, content_sha256", s_txt, ns),
        ("certificates", "id, station_id, attempt_id, device_serial, issuer, serial_hex, spki_sha256, spki_der, not_before, not_after, status, cert_der, fingerprint_sha256, created_at, issued_at, version, content_sha256", c_txt, nc),
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let target = arg_value(&args, "--records").unwrap_or(if quick { 2_200 } else { 100_000 });
    let batch = arg_value(&args, "--batch").unwrap_or(CentralConfig::default().batch_size as usize);
    let connections = arg_value(&args, "--connections").unwrap_or(CentralConfig::default().connections as usize);
    let attempts = target.div_ceil(STEPS_PER_ATTEMPT + 2);

    let mut db = TestDb::new();
    let cfg = CentralConfig { batch_size: batch as u32, connections: connections as u32, timeout_ms: 60_000, ..db.add_station(STATION) };
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("station.db")).unwrap());
    let t = Instant::now();
    let records = fill(&store, "BENCH", attempts, STEPS_PER_ATTEMPT, 16);
    let pending = store.outbox_counts().unwrap().pending;
    println!(
        "station store: {records} records ({attempts} attempts, {} steps, {attempts} certificates), {pending} outbox changes, written in {:.1} s",
        attempts * STEPS_PER_ATTEMPT,
        t.elapsed().as_secs_f64()
    );

    let data = copy_data(&store);
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
                let got: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).fetch_one(&mut c).await.unwrap();
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
            local.execute_batch("UPDATE outbox SET state = 'pending' WHERE state = 'synced'; DELETE FROM station_meta WHERE key LIKE 'sync.%';").unwrap();
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
    sqlx::query("TRUNCATE attempts, attempt_steps, certificates").execute(&mut *c).await.unwrap();
    sqlx::query("CHECKPOINT").execute(&mut *c).await.unwrap();
}
