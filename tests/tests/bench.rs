//! The one engine (imprint-api's Bench, behind the app's Bench view and the
//! CLI's provision/watch/station): tiles follow ports and sessions; auto
//! mode provisions on arrival, manual mode waits; a device unplugged at any
//! step and plugged back is provisioned to the end.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_api::engine::{Bench, BenchEvent, BenchEventFn, PortSource, Tile, TileState};
use imprint_api::Mode;
use imprint_devsim::{SimConfig, SimDevice};
use imprint_tests::station::TestStation;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

fn collector() -> (BenchEventFn, mpsc::Receiver<BenchEvent>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    (
        Arc::new(move |e: &BenchEvent| {
            let _ = tx.lock().unwrap().send(e.clone());
        }),
        rx,
    )
}

fn watch(links: &std::path::Path) -> PortSource {
    PortSource { globs: vec![format!("{}/*", links.display())], ..Default::default() }
}

/// Wait (on events, not on time) until `pred` holds for the bench's tiles.
fn wait_tiles(bench: &Bench, rx: &mpsc::Receiver<BenchEvent>, what: &str, pred: impl Fn(&[Tile]) -> bool) {
    loop {
        if pred(&bench.tiles()) {
            return;
        }
        rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| panic!("timed out waiting for: {what}; tiles: {:#?}", bench.tiles()));
    }
}

#[test]
fn auto_mode_provisions_arrivals_and_tiles_follow_unplugs() {
    let ts = TestStation::new();
    let links = ts.dir.path().join("slots");
    std::fs::create_dir_all(&links).unwrap();
    let (events, rx) = collector();
    let bench = Bench::start(ts.open(), watch(&links), Mode::Auto, events, vec![]);
    let a = SimDevice::spawn(SimConfig::new("AUTO-0001").with_link_dir(&links)).unwrap();
    let b = SimDevice::spawn(SimConfig::new("AUTO-0002").with_link_dir(&links).with_faults("wrong-serial-csr").unwrap()).unwrap();
    wait_tiles(&bench, &rx, "one pass, one fail", |t| {
        t.len() == 2 && t.iter().any(|t| t.state == TileState::Passed) && t.iter().any(|t| t.state == TileState::Failed)
    });
    let tiles = bench.tiles();
    assert_eq!(tiles.iter().map(|t| t.slot).collect::<Vec<_>>(), [1, 2]);
    let failed = tiles.iter().find(|t| t.state == TileState::Failed).unwrap();
    assert_eq!(failed.device_serial.as_deref(), Some("AUTO-0002"));
    assert_eq!(failed.code.map(|c| c.as_str()), Some("csr_subject_mismatch"));
    assert!(failed.hint.is_some());
    let passed = tiles.iter().find(|t| t.state == TileState::Passed).unwrap();
    assert!(passed.cert_serial.is_some());
    assert_eq!(bench.find_serial("AUTO-0001").unwrap().port, passed.port);
    drop(a);
    wait_tiles(&bench, &rx, "unplugged tile marked absent", |t| t.iter().any(|t| !t.present));
    // A finished tile keeps its result after the unplug.
    assert_eq!(bench.tiles().iter().find(|t| !t.present).unwrap().state, TileState::Passed);
    drop(b);
    bench.stop();
}

#[test]
fn manual_mode_identifies_then_waits_for_the_operator() {
    let ts = TestStation::new();
    let links = ts.dir.path().join("slots");
    std::fs::create_dir_all(&links).unwrap();
    let (events, rx) = collector();
    let bench = Bench::start(ts.open(), watch(&links), Mode::Manual, events, vec![]);
    let _d = SimDevice::spawn(SimConfig::new("MAN-0001").with_link_dir(&links)).unwrap();
    wait_tiles(&bench, &rx, "device identified", |t| t.len() == 1 && t[0].device_serial.as_deref() == Some("MAN-0001"));
    assert_eq!(bench.tiles()[0].state, TileState::Ready, "manual mode must not start by itself");
    imprint_tests::station::work_order(bench.station().store(), "WO-7", 10);
    bench.station().set_batch(Some("WO-7".into()));
    assert_eq!(bench.provision_all_ready(), 1);
    wait_tiles(&bench, &rx, "passed", |t| t[0].state == TileState::Passed);
    let id = bench.tiles()[0].attempt_id.clone().unwrap();
    assert_eq!(bench.station().store().attempt(&id).unwrap().unwrap().batch.as_deref(), Some("WO-7"));
    // Retrying a finished device re-verifies it (already provisioned), never re-issues,
    // and the tile says it was a re-check, not a re-send.
    let port = bench.tiles()[0].port.clone();
    bench.provision(&port).unwrap();
    wait_tiles(&bench, &rx, "passed again", |t| t[0].state == TileState::Passed && t[0].attempt_id.as_deref() != Some(id.as_str()));
    assert!(bench.tiles()[0].recheck);
    assert!(!bench.tiles()[0].resumed);
    assert_eq!(bench.station().store().certificates().unwrap().len(), 1);
    bench.stop();
}

/// Unplug the device at its `step`-th request and plug it back after a
/// short while: the engine provisions it to the end, with one certificate.
fn unplugged_at_step_and_replugged_is_provisioned_to_the_end(step: u32) {
    let ts = TestStation::new();
    let links = ts.dir.path().join("slots");
    std::fs::create_dir_all(&links).unwrap();
    let (events, rx) = collector();
    let bench = Bench::start(ts.open(), watch(&links), Mode::Auto, events, vec![]);
    // 100 ms: shorter than a poll of the port watcher, so the departure is
    // usually never seen (the regression: such a device was never resumed).
    let faults = format!("unplug-at={step},replug-after-ms=100");
    let _d = SimDevice::spawn(SimConfig::new("REPLUG-0001").with_link_dir(&links).with_faults(&faults).unwrap()).unwrap();
    wait_tiles(&bench, &rx, "the device passed", |t| t.len() == 1 && t[0].state == TileState::Passed);
    let store = bench.station().store().clone();
    let attempts = store.attempts(&Default::default()).unwrap();
    let certs = store.certificates().unwrap();
    assert_eq!(certs.len(), 1, "step {step}: one certificate for one key: {certs:#?}");
    assert_eq!(attempts[0].status.to_string(), "passed", "step {step}");
    if attempts.len() == 2 {
        assert_eq!(attempts[1].code.as_ref().map(|c| c.to_string()).as_deref(), Some("unplugged"), "step {step}: {attempts:#?}");
        assert!(bench.tiles()[0].interrupted, "step {step}: the tile shows it was interrupted and resumed");
    } else {
        assert_eq!(attempts.len(), 1, "step {step}: the flow has fewer requests than this step");
    }
    bench.stop();
}

macro_rules! replug_tests {
    ($($name:ident: $step:expr,)*) => {$(
        #[test]
        fn $name() {
            unplugged_at_step_and_replugged_is_provisioned_to_the_end($step);
        }
    )*};
}

// One test per request of a provisioning run (HELLO, IDENT, KEYGEN, CSR,
// READ csr, PUT/COMMIT cert, PUT/COMMIT chain, READ back, PROVE, LOCK).
replug_tests! {
    replug_at_step_01: 1,
    replug_at_step_02: 2,
    replug_at_step_03: 3,
    replug_at_step_04: 4,
    replug_at_step_05: 5,
    replug_at_step_06: 6,
    replug_at_step_07: 7,
    replug_at_step_08: 8,
    replug_at_step_09: 9,
    replug_at_step_10: 10,
    replug_at_step_11: 11,
    replug_at_step_12: 12,
    replug_at_step_13: 13,
    replug_at_step_14: 14,
    replug_at_step_15: 15,
    replug_at_step_16: 16,
    replug_at_step_17: 17,
    replug_at_step_18: 18,
}

/// Saving Settings reopens the station: an attempt in flight stops at its
/// next safe point and the device is provisioned to the end by the reopened
/// station (not left failed with `station_stopping`); finished tiles keep
/// their results.
#[test]
fn saving_settings_mid_attempt_resumes_the_device_on_the_reopened_station() {
    use imprint_api::{Api, ApiOptions};
    let ts = TestStation::new();
    let links = ts.dir.path().join("slots");
    std::fs::create_dir_all(&links).unwrap();
    let mut cfg = ts.cfg.clone();
    cfg.port_globs = vec![format!("{}/*", links.display())];
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let api = Api::new(
        ApiOptions::new(cfg, ts.dir.path().join("station.toml")),
        Arc::new(move |_| {
            let _ = tx.lock().unwrap().send(());
        }),
    );
    api.start(None).unwrap();
    let mut c = SimConfig::new("REOPEN-0001").with_link_dir(&links);
    c.keygen_ms = 3_000;
    let _d = SimDevice::spawn(c).unwrap();
    let wait = |what: &str, pred: &dyn Fn(&[Tile]) -> bool| loop {
        let tiles = api.tiles().unwrap_or_default();
        if pred(&tiles) {
            return;
        }
        rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("timed out waiting for: {what}; tiles: {tiles:#?}"));
    };
    wait("the device making its key", &|t| t.len() == 1 && t[0].stage.map(|s| s.as_str()) == Some("keygen"));
    let mut s = api.settings().unwrap();
    s.validity_days = 400;
    let info = api.save_settings(&s).unwrap();
    assert!(info.ready, "{info:?}");
    wait("the device to pass on the reopened station", &|t| t.len() == 1 && t[0].state == TileState::Passed);
    let store = imprint_api::open_store(&api.config()).unwrap();
    let rows = store.attempts(&Default::default()).unwrap();
    let codes: Vec<_> = rows.iter().map(|a| (a.status.to_string(), a.code.as_ref().map(|c| c.to_string()))).collect();
    assert_eq!(
        codes,
        [("passed".to_string(), None), ("failed".to_string(), Some("station_stopping".to_string()))],
        "stopped at a safe point, then resumed: {rows:#?}"
    );
    api.shutdown();
}

#[test]
fn a_bench_of_ports_named_per_device_stays_bounded_and_its_tally_counts_every_device() {
    // Regression (issue 17's soak stopped at 7,702 devices): every device on a
    // new port path (`/dev/serial/by-id/...`) left a tile on the bench and a
    // Tile in the list of finished attempts for the whole run.
    use imprint_api::engine::MAX_ABSENT_TILES;
    let ts = TestStation::new();
    let links = ts.dir.path().join("by-id");
    std::fs::create_dir_all(&links).unwrap();
    let (inner, rx) = collector();
    // Removed events counted as they are sent (wait_tiles consumes the channel).
    let removed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let events: BenchEventFn = {
        let removed = removed.clone();
        Arc::new(move |e: &BenchEvent| {
            if matches!(e, BenchEvent::Removed { .. }) {
                removed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            inner(e)
        })
    };
    let bench = Bench::start(ts.open(), watch(&links), Mode::Auto, events, vec![]);
    let total = MAX_ABSENT_TILES + 16;
    for batch in 0..total / 8 {
        // The very first device fails (a weak key); it comes back at the end.
        let cfg = |n: usize| {
            let c = SimConfig::new(format!("BYID-{n:04}")).with_link_dir(&links);
            if n == 0 {
                c.with_faults("weak-key").unwrap()
            } else {
                c
            }
        };
        let devices: Vec<imprint_devsim::SimHandle> = (0..8).map(|i| SimDevice::spawn(cfg(batch * 8 + i)).unwrap()).collect();
        let want = (batch + 1) * 8;
        assert_eq!(bench.wait_finished(want, Duration::from_secs(120)), want, "tiles: {:#?}", bench.tiles());
        drop(devices);
        // A departure shows on its tile before the longest-gone tile is
        // removed (two steps, the Removed event last): wait for both.
        wait_tiles(&bench, &rx, "the batch unplugged and the bench back within its bound", |t| {
            t.iter().all(|t| !t.present) && t.len() <= MAX_ABSENT_TILES
        });
    }
    assert_eq!(bench.tiles().len(), MAX_ABSENT_TILES, "the newest gone tiles stay on the bench");
    assert_eq!(removed.load(std::sync::atomic::Ordering::SeqCst), total - MAX_ABSENT_TILES, "each removed tile was announced");
    assert_eq!(bench.finished_count(), total);
    let tally = bench.tally();
    assert_eq!((tally.passed, tally.failed, tally.stopped), (total - 1, 1, 0), "removed tiles still count");
    // The newest devices' results are still shown.
    assert!(bench.tiles().iter().any(|t| t.device_serial.as_deref() == Some(&*format!("BYID-{:04}", total - 1))));
    assert_eq!(bench.station().store().certificates().unwrap().len(), total - 1);
    // The first device, its tile long removed, comes back on its port with
    // a good key and passes: it counts once, as passed (session 10's note:
    // it counted as failed and passed, and `imprint station` exited 1).
    assert!(!bench.tiles().iter().any(|t| t.device_serial.as_deref() == Some("BYID-0000")), "its tile was removed");
    let back = SimDevice::spawn(SimConfig::new("BYID-0000").with_link_dir(&links)).unwrap();
    assert_eq!(bench.wait_finished(total + 1, Duration::from_secs(120)), total + 1, "tiles: {:#?}", bench.tiles());
    let tally = bench.tally();
    assert_eq!((tally.passed, tally.failed, tally.stopped), (total, 0, 0), "the returning device counts once, by its last ending");
    assert_eq!(bench.station().store().certificates().unwrap().len(), total);
    drop(back);
    bench.stop();
}

#[test]
fn a_failure_is_never_older_than_the_snapshot_that_shows_its_device_running() {
    // CI, session 10: the app showed a weak-key device as running for 90 s
    // after it failed: its start-up snapshot put back a state older than the
    // `failed` event that overtook it. Every change carries the revision it
    // was made at, under the tiles' lock: per port, the newest event is what
    // the bench holds, no two changes share a revision, and a snapshot covers
    // every change up to its own revision.
    let ts = TestStation::new();
    let links = ts.dir.path().join("slots");
    std::fs::create_dir_all(&links).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<BenchEvent>::new()));
    let (inner, rx) = collector();
    let events: BenchEventFn = {
        let seen = seen.clone();
        Arc::new(move |e: &BenchEvent| {
            seen.lock().unwrap().push(e.clone());
            inner(e)
        })
    };
    let bench = Bench::start(ts.open(), watch(&links), Mode::Auto, events, vec![]);
    let first = bench.snapshot();
    let devices = [
        SimDevice::spawn(SimConfig::new("REV-0001").with_link_dir(&links)).unwrap(),
        SimDevice::spawn(SimConfig::new("REV-0002").with_link_dir(&links).with_faults("weak-key").unwrap()).unwrap(),
        SimDevice::spawn(SimConfig::new("REV-0003").with_link_dir(&links).with_faults("unplug-at=4").unwrap()).unwrap(),
    ];
    // An attempt's count goes up after its last tile event: wait on the count.
    assert_eq!(bench.wait_finished(3, Duration::from_secs(120)), 3, "tiles: {:#?}", bench.tiles());
    // The newest event of a port, as the UI would keep it.
    let newest = |port: &str| -> Option<Tile> {
        seen.lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                BenchEvent::Tile { tile } if tile.port == port => Some(tile.clone()),
                _ => None,
            })
            .max_by_key(|t| t.rev)
    };
    // Events stamped before the count went up may still be on their way.
    wait_tiles(&bench, &rx, "every change sent", |t| t.len() == 3 && t.iter().all(|t| newest(&t.port).as_ref() == Some(t)));
    let snap = bench.snapshot();
    assert!(snap.rev > first.rev, "changes move the revision on");
    let events = seen.lock().unwrap().clone();
    let revs: Vec<u64> = events
        .iter()
        .map(|e| match e {
            BenchEvent::Tile { tile } => tile.rev,
            BenchEvent::Removed { rev, .. } => *rev,
        })
        .collect();
    let mut unique = revs.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), revs.len(), "no two changes share a revision");
    assert!(revs.iter().all(|r| *r > first.rev && *r <= snap.rev), "every change is between the snapshots");
    for t in &snap.tiles {
        assert_eq!(newest(&t.port).as_ref(), Some(t), "the newest event of {} is what the snapshot holds", t.port);
    }
    let weak = snap.tiles.iter().find(|t| t.device_serial.as_deref() == Some("REV-0002")).unwrap();
    assert_eq!((weak.state, weak.code.map(|c| c.as_str())), (TileState::Failed, Some("key_not_allowed")));
    // A bench that replaces this one (Settings saved) numbers above what it carries.
    bench.stop();
    let _ = bench.station().shutdown(Duration::from_secs(5));
    drop(bench);
    let carried = snap.tiles.clone();
    let (events, _rx2) = collector();
    let next = Bench::start(ts.open(), watch(&links), Mode::Auto, events, carried);
    let again = next.snapshot();
    assert!(again.tiles.iter().all(|t| t.rev > snap.rev), "carried tiles are newer than the old bench's snapshot");
    next.stop();
    drop(devices);
}
