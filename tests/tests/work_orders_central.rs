//! Work orders at the center (issue 13 step 3, the center's half): four
//! stations, each with its own login role, race for one work order's
//! quantity in leases while their connections are cut at random. At every
//! moment the center's consumed + outstanding leases stay within the
//! quantity, and at the end exactly the quantity was consumed, each lease
//! reconciled.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_sync::work_orders::{self, CentralWorkOrder, LeaseStatus};
use imprint_tests::pg::{rt, PgLock, TestDb};
use sqlx::ConnectOptions;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const QUANTITY: i64 = 200;
const BLOCK: i64 = 7;

/// One station's loop: ask for a block (its lease id recorded first, as the
/// station's store would), consume it one certificate at a time, report as
/// it goes, settle it, ask again; every call retried on a cut connection
/// with the same arguments. Returns what it consumed.
fn station(cfg: imprint_sync::CentralConfig, id: usize) -> i64 {
    let opts = cfg.connect_options().unwrap();
    rt().block_on(async move {
        let mut consumed = 0i64;
        let mut conn: Option<sqlx::PgConnection> = None;
        let deadline = Instant::now() + Duration::from_secs(120);
        macro_rules! retry {
            ($c:ident => $call:expr) => {{
                loop {
                    assert!(Instant::now() < deadline, "station {id} made no progress");
                    if conn.is_none() {
                        conn = opts.connect().await.ok();
                        if conn.is_none() {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                    let $c = conn.as_mut().unwrap();
                    match $call.await {
                        Ok(v) => break v,
                        Err(_) => {
                            conn = None; // cut: reconnect and ask again, the same way
                        }
                    }
                }
            }};
        }
        loop {
            let lease_id = imprint_store::new_id();
            let lease = retry!(c => work_orders::lease(c, &lease_id, "WO-RACE", BLOCK, 600));
            if lease.granted == 0 {
                assert_eq!(lease.status, LeaseStatus::Open);
                if lease.free == 0 {
                    // Others may still return unused quantity: look once more after they settle.
                    let q = retry!(c => work_orders::quota(c, "WO-RACE"));
                    if q.unwrap().leased == 0 {
                        return consumed;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            assert!(lease.granted <= BLOCK);
            // Use part of the block (some stations stop early and return the rest).
            let use_n = if (id + consumed as usize).is_multiple_of(3) { (lease.granted / 2).max(1) } else { lease.granted };
            for used in 1..=use_n {
                consumed += 1;
                if used % 3 == 0 {
                    let (u, settled, _) = retry!(c => work_orders::report(c, &lease_id, used, false));
                    assert_eq!((u, settled), (used, false));
                }
            }
            let (u, settled, _) = retry!(c => work_orders::report(c, &lease_id, use_n, true));
            assert_eq!((u, settled), (use_n, true));
        }
    })
}

#[test]
fn four_stations_racing_for_one_work_order_with_connections_cut_never_exceed_its_quantity() {
    let _alone = PgLock::exclusive();
    let mut db = TestDb::new();
    let w = CentralWorkOrder {
        id: "WO-RACE".into(),
        product: "sensor".into(),
        quantity: QUANTITY,
        valid_from: None,
        valid_until: None,
        stations: None,
    };
    rt().block_on(work_orders::add(&db.admin_options(), &w, "test-admin")).unwrap();
    let cfgs: Vec<_> = (1..=4).map(|i| db.add_station(&format!("wo-race-{i}"))).collect();
    let done = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(AtomicI64::new(0));
    // The invariant, sampled by the administrator in one snapshot, all along.
    let monitor = {
        let (done, samples, opts) = (done.clone(), samples.clone(), db.admin_options());
        std::thread::spawn(move || {
            rt().block_on(async move {
                let mut c = opts.connect().await.unwrap();
                while !done.load(Ordering::SeqCst) {
                    let q = work_orders::quota(&mut c, "WO-RACE").await.unwrap().unwrap();
                    assert!(q.consumed + q.leased <= q.quantity, "over the quantity: {q:?}");
                    assert_eq!((q.leased, q.consumed), (q.outstanding, q.used), "the counters match the leases: {q:?}");
                    samples.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
    };
    // Connections cut at random moments.
    let cutter = {
        let done = done.clone();
        let db_name = db.name.clone();
        std::thread::spawn(move || {
            let mut cuts = 0;
            let mut n = 0u64;
            while !done.load(Ordering::SeqCst) {
                n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                std::thread::sleep(Duration::from_millis(5 + (n >> 59)));
                cuts += imprint_tests::pg::try_psql(
                    "postgres",
                    &format!(
                        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                         WHERE datname = '{db_name}' AND usename <> 'postgres') t"
                    ),
                )
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(0);
            }
            cuts
        })
    };
    let stations: Vec<_> = cfgs.into_iter().enumerate().map(|(i, cfg)| std::thread::spawn(move || station(cfg, i))).collect();
    let consumed: Vec<i64> = stations.into_iter().map(|h| h.join().expect("a station panicked")).collect();
    done.store(true, Ordering::SeqCst);
    monitor.join().expect("the invariant broke");
    let cuts = cutter.join().unwrap();
    let total: i64 = consumed.iter().sum();
    assert_eq!(total, QUANTITY, "every certificate of the quantity and no more: {consumed:?}");
    let q =
        rt().block_on(async { work_orders::quota(&mut db.admin_options().connect().await.unwrap(), "WO-RACE").await }).unwrap().unwrap();
    assert_eq!((q.consumed, q.leased, q.outstanding, q.used), (QUANTITY, 0, 0, QUANTITY), "leases reconcile: {q:?}");
    assert!(cuts > 0, "connections were cut");
    assert!(samples.load(Ordering::SeqCst) > 10, "the invariant was sampled");
    assert!(consumed.iter().filter(|c| **c > 0).count() >= 2, "stations shared the work order: {consumed:?}");
}

#[test]
fn a_lease_is_idempotent_by_its_id_a_settled_lease_is_final_and_a_closed_work_order_grants_nothing() {
    let mut db = TestDb::new();
    let w =
        CentralWorkOrder { id: "WO-ONE".into(), product: "p".into(), quantity: 10, valid_from: None, valid_until: None, stations: None };
    rt().block_on(work_orders::add(&db.admin_options(), &w, "test-admin")).unwrap();
    let (a, b) = (db.add_station("wo-a"), db.add_station("wo-b"));
    rt().block_on(async {
        let mut ca = a.connect_options().unwrap().connect().await.unwrap();
        let mut cb = b.connect_options().unwrap().connect().await.unwrap();
        let id = imprint_store::new_id();
        let l1 = work_orders::lease(&mut ca, &id, "WO-ONE", 6, 60).await.unwrap();
        let l2 = work_orders::lease(&mut ca, &id, "WO-ONE", 6, 60).await.unwrap();
        assert_eq!((l1.granted, l2.granted, l2.id.as_deref()), (6, 6, Some(id.as_str())), "asked twice, granted once");
        // Another station cannot take or report this lease.
        assert!(work_orders::lease(&mut cb, &id, "WO-ONE", 6, 60).await.is_err());
        let mut cb = b.connect_options().unwrap().connect().await.unwrap();
        assert!(work_orders::report(&mut cb, &id, 1, false).await.is_err());
        let mut cb = b.connect_options().unwrap().connect().await.unwrap();
        // Only 4 are free: b gets 4, not 6.
        let lb = work_orders::lease(&mut cb, &imprint_store::new_id(), "WO-ONE", 6, 60).await.unwrap();
        assert_eq!((lb.granted, lb.free), (4, 0));
        // Used 2 of 6, settled: 4 come back; reports are monotonic and a settled lease is final.
        assert_eq!(work_orders::report(&mut ca, &id, 2, false).await.unwrap(), (2, false, 0));
        assert_eq!(work_orders::report(&mut ca, &id, 1, false).await.unwrap(), (2, false, 0), "a stale report changes nothing");
        assert!(work_orders::report(&mut ca, &id, 7, false).await.is_err(), "never more than leased");
        let mut ca = a.connect_options().unwrap().connect().await.unwrap();
        assert_eq!(work_orders::report(&mut ca, &id, 2, true).await.unwrap(), (2, true, 4));
        assert_eq!(work_orders::report(&mut ca, &id, 2, true).await.unwrap(), (2, true, 0), "settling again returns nothing more");
        assert!(work_orders::report(&mut ca, &id, 3, true).await.is_err(), "a settled lease does not change");
        let mut ca = a.connect_options().unwrap().connect().await.unwrap();
        // Closed: nothing more is granted; the closed state is final.
        db.psql("UPDATE work_orders SET status = 'closed', closed_at = now() WHERE id = 'WO-ONE'");
        let l = work_orders::lease(&mut ca, &imprint_store::new_id(), "WO-ONE", 3, 60).await.unwrap();
        assert_eq!((l.granted, l.status), (0, LeaseStatus::Closed));
        assert!(imprint_tests::pg::try_psql(&db.name, "UPDATE work_orders SET status = 'open' WHERE id = 'WO-ONE'").is_err());
        // The row's CHECK refuses anything past the quantity, whoever writes it.
        assert!(imprint_tests::pg::try_psql(&db.name, "UPDATE work_orders SET leased = leased + 100 WHERE id = 'WO-ONE'").is_err());
        // A station role cannot write the tables directly.
        assert!(sqlx::query("UPDATE work_orders SET consumed = 0").execute(&mut ca).await.is_err());
        let q = work_orders::quota(&mut ca, "WO-ONE").await.unwrap().unwrap();
        assert_eq!((q.consumed, q.leased), (2, 4));
    });
}
