//! imprint-backup-bench: provisioning while the store is backed up (issue 16,
//! "backup while 16 devices provision"), as ratios against a floor measured
//! in the same run (never a timed test).
//!
//! 16 simulated devices at 115200 baud provision in parallel, in rounds that
//! alternate: without a backup (the floor), and with backups taken
//! back-to-back for the whole round (SQLite's backup API on its own read
//! connection, checked, age-encrypted: what `imprint backup` and the
//! scheduler do; back-to-back is the worst case of a scheduled one). Each
//! attempt's own time (the driver's `elapsed`) is compared:
//!   (m) median attempt with backups ÷ median attempt without;
//!   (s) slowest attempt with backups ÷ slowest attempt without (per-round
//!       maxima, median over rounds): "no attempt slowed".
//!
//! Run for the record: `cargo run --release -p imprint-tests --bin imprint-backup-bench`
//! `--quick` runs tiny sizes (CI uses it to prove the benchmark still works).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_tests::station::{path_of, sim, TestStation};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (parallel, rounds) = if quick { (4, 2) } else { (16, 10) };
    println!("imprint-backup-bench ({})", if quick { "quick" } else { "full" });
    println!("load average at the start: {} (1, 5, 15 min)", imprint_tests::loadavg());

    let mut ts = TestStation::new();
    // Encrypted, as a production station's backups are (the encryption is CPU the devices share).
    ts.cfg.backup.recipient = Some(age::x25519::Identity::generate().to_public().to_string());
    let st = ts.open();
    let backups = ts.dir.path().join("backups");

    // A warm-up round (first pty, signer and store pages), not counted.
    let warm: Vec<_> = (0..parallel).map(|i| sim(&format!("BBENCH-W-{i:04}"), "")).collect();
    assert!(st.provision_all(&warm.iter().map(path_of).collect::<Vec<_>>(), None).iter().all(|r| r.as_ref().unwrap().passed()));
    drop(warm);

    let (mut all_with, mut all_without) = (Vec::new(), Vec::new());
    let (mut max_with, mut max_without) = (Vec::new(), Vec::new());
    let (mut taken, mut backup_ms, mut backup_bytes) = (0u64, Vec::new(), 0u64);
    for round in 0..rounds * 2 {
        let with = round % 2 == 1;
        let devs: Vec<_> = (0..parallel).map(|i| sim(&format!("BBENCH-{round:03}-{i:04}"), "")).collect();
        let ports: Vec<String> = devs.iter().map(path_of).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let backer = with.then(|| {
            let (cfg, st, stop, dir) = (ts.cfg.clone(), st.clone(), stop.clone(), backups.clone());
            std::thread::spawn(move || {
                let mut reports = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let out = dir.join(format!("r{round}-{}.backup", reports.len()));
                    let r = imprint_station::backup::backup(&cfg, st.store(), &out, false).unwrap();
                    std::fs::remove_file(&out).unwrap();
                    reports.push(r);
                }
                reports
            })
        });
        let results = st.provision_all(&ports, None);
        stop.store(true, Ordering::Relaxed);
        if let Some(b) = backer {
            let reports = b.join().unwrap();
            assert!(!reports.is_empty(), "no backup overlapped the round");
            taken += reports.len() as u64;
            backup_ms.extend(reports.iter().map(|r| r.ms as f64));
            backup_bytes = reports.last().unwrap().bytes;
        }
        let times: Vec<f64> = results
            .into_iter()
            .map(|r| {
                let r = r.unwrap();
                assert!(r.passed(), "{:?}", r.outcome);
                r.elapsed.as_secs_f64()
            })
            .collect();
        let slowest = times.iter().copied().fold(0.0, f64::max);
        if with {
            all_with.extend(times);
            max_with.push(slowest);
        } else {
            all_without.extend(times);
            max_without.push(slowest);
        }
    }
    let (mw, mn) = (median(&mut all_with), median(&mut all_without));
    let (sw, sn) = (median(&mut max_with), median(&mut max_without));
    let (rm, rs) = (mw / mn, sw / sn);
    let store_bytes = std::fs::metadata(ts.cfg.store_path()).map(|m| m.len()).unwrap_or(0);
    println!(
        "{rounds} rounds of {parallel} devices each way; {taken} backups taken during the rounds with (median {:.0} ms, {backup_bytes} bytes encrypted, store {store_bytes} bytes)",
        median(&mut backup_ms)
    );
    println!("(m) median attempt: {mw:.3} s with backups ÷ {mn:.3} s without = {rm:.3} (target <= 1.05)");
    println!("(s) slowest attempt: {sw:.3} s with backups ÷ {sn:.3} s without = {rs:.3} (target <= 1.05)");
    println!("load average at the end: {} (1, 5, 15 min)", imprint_tests::loadavg());
    println!("RESULT m={rm:.3} s={rs:.3}");
    st.shutdown(imprint_station::DRAIN_WITHIN);
}
