//! The bench controller the desktop app renders: tiles follow ports and
//! sessions; auto mode provisions on arrival, manual mode waits.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_devsim::{SimConfig, SimDevice};
use imprint_station::{Bench, BenchEvent, BenchEventFn, Mode, Tile, TileState};
use imprint_tests::station::TestStation;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

fn collector() -> (BenchEventFn, mpsc::Receiver<BenchEvent>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    (Arc::new(move |e: &BenchEvent| { let _ = tx.lock().unwrap().send(e.clone()); }), rx)
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
    let bench = Bench::start(ts.open(), vec![format!("{}/*", links.display())], false, Mode::Auto, events);
    let a = SimDevice::spawn(SimConfig::new("AUTO-0001").with_link_dir(&links)).unwrap();
    let b = SimDevice::spawn(SimConfig::new("AUTO-0002").with_link_dir(&links).with_faults("wrong-serial-csr").unwrap()).unwrap();
    wait_tiles(&bench, &rx, "one pass, one fail", |t| {
        t.len() == 2 && t.iter().any(|t| t.state == TileState::Passed) && t.iter().any(|t| t.state == TileState::Failed)
    });
    let tiles = bench.tiles();
    assert_eq!(tiles.iter().map(|t| t.slot).collect::<Vec<_>>(), [1, 2]);
    let failed = tiles.iter().find(|t| t.state == TileState::Failed).unwrap();
    assert_eq!(failed.device_serial.as_deref(), Some("AUTO-0002"));
    assert_eq!(
        failed.code.map(|c| c.as_str()),
        Some("csr_subject_mismatch")
    );
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
    let bench = Bench::start(ts.open(), vec![format!("{}/*", links.display())], false, Mode::Manual, events);
    let _d = SimDevice::spawn(SimConfig::new("MAN-0001").with_link_dir(&links)).unwrap();
    wait_tiles(&bench, &rx, "device identified", |t| t.len() == 1 && t[0].device_serial.as_deref() == Some("MAN-0001"));
    assert_eq!(bench.tiles()[0].state, TileState::Ready, "manual mode must not start by itself");
    bench.station().set_batch(Some("WO-7".into()));
    assert_eq!(bench.provision_all_ready(), 1);
    wait_tiles(&bench, &rx, "passed", |t| t[0].state == TileState::Passed);
    let id = bench.tiles()[0].attempt_id.clone().unwrap();
    assert_eq!(bench.station().store().attempt(&id).unwrap().unwrap().batch.as_deref(), Some("WO-7"));
    // Retrying a finished device re-verifies it (already provisioned), never re-issues.
    let port = bench.tiles()[0].port.clone();
    bench.provision(&port).unwrap();
    wait_tiles(&bench, &rx, "passed again", |t| t[0].state == TileState::Passed && t[0].attempt_id.as_deref() != Some(id.as_str()));
    assert!(bench.tiles()[0].resumed);
    assert_eq!(bench.station().store().certificates().unwrap().len(), 1);
    bench.stop();
}
