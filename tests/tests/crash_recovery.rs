//! The station process killed mid-flow (abort at exact points, and SIGKILL
//! at random moments) restarts with nothing lost: the device, re-attached,
//! gets the certificate that was journaled for its key, never a second one.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_store::{AttemptFilter, Store};
use imprint_tests::station::{imprint_bin, path_of, sim, TestStation};
use std::process::{Command, Output};
use std::time::Duration;

fn imprint(ts: &TestStation, args: &[&str], crash_at: Option<&str>) -> Output {
    let mut c = Command::new(imprint_bin());
    c.envs(ts.env()).args(args);
    if let Some(p) = crash_at {
        c.env("IMPRINT_TEST_CRASH_AT", p);
    }
    c.output().expect("run imprint")
}

fn check_single_certificate(ts: &TestStation, dev: &imprint_devsim::SimHandle) -> String {
    let store = Store::open(&ts.cfg.store_path()).unwrap();
    let certs: Vec<_> = store.certificates().unwrap().into_iter().filter(|c| c.device_serial == dev.serial()).collect();
    assert_eq!(certs.len(), 1, "exactly one certificate for {}: {certs:#?}", dev.serial());
    assert_eq!(certs[0].status.as_str(), "issued");
    let snap = dev.snapshot();
    assert_eq!(snap.cert_der.as_deref(), certs[0].cert_der.as_deref(), "device holds the recorded certificate");
    assert!(snap.locked);
    certs[0].serial_hex.clone()
}

#[test]
fn killed_at_each_critical_point_the_station_resumes_with_the_journaled_certificate() {
    for point in ["after_journal", "after_sign", "after_record", "send:PUT", "send:COMMIT", "send:PROVE", "send:LOCK"] {
        let ts = TestStation::new();
        let dev = sim("CRASH-0001", "");
        let port = path_of(&dev);
        let out = imprint(&ts, &["provision", "--port", &port], Some(point));
        assert_eq!(
            out.status.code(),
            None,
            "{point}: the station must die by signal, got {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );

        // What the dead station left: the journal, and an attempt still 'running'.
        {
            let store = Store::open(&ts.cfg.store_path()).unwrap();
            let certs = store.certificates().unwrap();
            let expect_status = if point == "after_journal" || point == "after_sign" { "signing" } else { "issued" };
            assert_eq!(certs.len(), 1, "{point}");
            assert_eq!(certs[0].status.as_str(), expect_status, "{point}");
            let running = store.attempts(&AttemptFilter { status: Some("running".into()), ..Default::default() }).unwrap();
            assert_eq!(running.len(), 1, "{point}");
        }
        let journaled_serial = Store::open(&ts.cfg.store_path()).unwrap().certificates().unwrap()[0].serial_hex.clone();

        let out = imprint(&ts, &["provision", "--port", &port], None);
        assert!(
            out.status.success(),
            "{point}: restart failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let serial = check_single_certificate(&ts, &dev);
        assert_eq!(serial, journaled_serial, "{point}: the journaled serial is the one issued");

        let store = Store::open(&ts.cfg.store_path()).unwrap();
        let all = store.attempts(&AttemptFilter::default()).unwrap();
        let statuses: Vec<_> = all.iter().map(|a| a.status.as_str()).collect();
        assert_eq!(statuses, ["passed", "interrupted"], "{point}: newest first");
        assert!(all[1].reason.as_deref().unwrap_or("").starts_with("the station stopped during"), "{point}: {:?}", all[1].reason);
        assert!(all[0].resumed, "{point}: the second attempt resumed");
    }
}

#[test]
fn sigkill_at_random_moments_never_loses_or_duplicates_a_certificate() {
    let ts = TestStation::new();
    // A deterministic spread of kill times across a ~0.6 s provisioning run.
    let delays_ms = [40u64, 130, 220, 310, 400, 520];
    let devs: Vec<_> = (0..delays_ms.len()).map(|i| sim(&format!("KILL-{:04}", i + 1), "")).collect();
    for (dev, delay) in devs.iter().zip(delays_ms) {
        let port = path_of(dev);
        let mut child = Command::new(imprint_bin())
            .envs(ts.env())
            .args(["provision", "--port", &port])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill(); // SIGKILL; it may already have finished
        let _ = child.wait();
        let out = imprint(&ts, &["provision", "--port", &port], None);
        assert!(out.status.success(), "after a kill at {delay} ms: {}", String::from_utf8_lossy(&out.stderr));
        check_single_certificate(&ts, dev);
    }
    let store = Store::open(&ts.cfg.store_path()).unwrap();
    assert_eq!(store.certificates().unwrap().len(), devs.len());
    assert!(store.attempts(&AttemptFilter { status: Some("running".into()), ..Default::default() }).unwrap().is_empty());
}
