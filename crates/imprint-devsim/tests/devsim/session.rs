//! The real host session (imprint_proto::Session) against the simulator:
//! the simulator must be a conforming device, and each fault must end the
//! way the host is designed to handle it.

use crate::common::*;
use imprint_devsim::{Device, SimConfig, SimDevice};
use imprint_proto::session::{KeyAlg, Outcome, Stage};
use std::time::Instant;

fn device(spec: &str) -> Device {
    Device::new(&SimConfig::new("SIM-0001").with_faults(spec).unwrap())
}

#[test]
fn happy_path_p256_and_p384() {
    let ca = TestCa::new();
    for alg in [KeyAlg::P256, KeyAlg::P384] {
        let mut dev = device("");
        let mut cfg = session_cfg();
        cfg.key_alg = alg;
        let r = run_in_memory(&mut dev, cfg, &ca, None);
        assert!(r.passed(), "{alg:?}: {:?}", r.outcome);
        assert_eq!(r.retries(), 0);
        let snap = dev.snapshot();
        assert!(snap.locked);
        let issued = r.issued.unwrap();
        assert_eq!(snap.cert_der, Some(issued.cert_der));
        assert_eq!(snap.chain_der, Some(issued.chain_der));
    }
}

#[test]
fn resume_after_unplug_resends_the_same_certificate_without_a_csr() {
    let ca = TestCa::new();
    // Request 7 is the COMMIT of the certificate (HELLO IDENT KEYGEN CSR READ PUT COMMIT).
    let mut dev = device("unplug-at=7");
    let first = run_in_memory(&mut dev, session_cfg(), &ca, None);
    let f = first.failure();
    assert_eq!((f.code.as_str(), f.retryable, f.stage), ("unplugged", true, Stage::WriteCert));
    let issued = first.issued.clone().unwrap();
    // The station finds the certificate it issued for this serial and key.
    let second = run_in_memory(&mut dev, session_cfg(), &ca, Some(issued.clone()));
    assert!(matches!(second.outcome, Outcome::Passed { resumed: true, .. }), "{:?}", second.outcome);
    assert!(!second.verbs.contains(&"CSR".to_string()));
    assert_eq!(dev.snapshot().cert_der, Some(issued.cert_der));
}

#[test]
fn locked_device_is_verified_by_read_back_and_proof() {
    let ca = TestCa::new();
    let mut dev = device("");
    let first = run_in_memory(&mut dev, session_cfg(), &ca, None);
    assert!(first.passed());
    let again = run_in_memory(&mut dev, session_cfg(), &ca, first.issued.clone());
    assert!(matches!(again.outcome, Outcome::Passed { already_provisioned: true, .. }), "{:?}", again.outcome);
    assert!(!again.verbs.iter().any(|v| v == "PUT" || v == "LOCK" || v == "CSR"));
    assert!(again.verbs.contains(&"PROVE".to_string()));
    // Another station's view (no record of it): refused, not retryable.
    let unknown = run_in_memory(&mut dev, session_cfg(), &ca, None);
    assert_eq!((unknown.failure().code.as_str(), unknown.failure().retryable), ("locked_unknown", false));
}

#[test]
fn one_corrupted_answer_is_retried() {
    let ca = TestCa::new();
    for spec in ["bad-crc-at=2", "oversized-at=5", "bad-crc-at=7", "bad-crc-at=4"] {
        let mut dev = device(spec);
        let r = run_in_memory(&mut dev, session_cfg(), &ca, None);
        assert!(r.passed(), "{spec}: {:?}", r.outcome);
        assert_eq!(r.retries(), 1, "{spec}");
        assert!(dev.snapshot().locked);
    }
}

#[test]
fn links_that_never_work_fail_with_the_right_code() {
    let ca = TestCa::new();
    for (spec, code, stage) in [
        ("silent", "no_response", Stage::Hello),
        ("bad-crc", "corrupt_frames", Stage::Hello),
        ("oversized", "corrupt_frames", Stage::Hello),
        ("unplug-at=1", "unplugged", Stage::Hello),
    ] {
        let mut dev = device(spec);
        let r = run_in_memory(&mut dev, session_cfg(), &ca, None);
        let f = r.failure();
        assert_eq!((f.code.as_str(), f.stage), (code, stage), "{spec}: {f:?}");
        assert!(f.retryable);
    }
}

#[test]
fn every_lie_is_caught_before_anything_is_written() {
    let ca = TestCa::new();
    for (spec, why) in [
        ("wrong-serial-csr", "subject"),
        ("other-key-csr", "not the KEYGEN key"),
        ("bad-csr-sig", "signature"),
        ("stale-nonce", "stale"),
        ("weak-key", "weak key"),
    ] {
        let mut dev = device(spec);
        let r = run_in_memory(&mut dev, session_cfg(), &ca, None);
        let f = r.failure();
        assert_eq!((f.stage, f.code.as_str()), (Stage::Issue, "csr_malformed"), "{spec}");
        assert!(f.reason.contains(why), "{spec}: {}", f.reason);
        assert!(!r.verbs.contains(&"PUT".to_string()), "{spec}");
    }
    let mut dev = device("bad-proof");
    let r = run_in_memory(&mut dev, session_cfg(), &ca, None);
    assert_eq!((r.failure().stage, r.failure().code.as_str()), (Stage::Prove, "proof_failed"));
    assert!(!dev.snapshot().locked, "never locked after a failed proof");
}

/// Console noise before every answer, including a fake answer marker
/// (`@< 99 OK junk *ZZZZ`, corrupt to the host's decoder) and non-UTF-8
/// bytes: the host keeps waiting on a corrupt line that does not name its
/// request id, so every session still passes.
#[test]
fn noise_does_not_break_the_host_session() {
    let ca = TestCa::new();
    for _ in 0..5 {
        let mut dev = device("noise");
        let r = run_in_memory(&mut dev, session_cfg(), &ca, None);
        assert!(r.passed(), "{:?}", r.outcome);
        assert!(dev.snapshot().console_lines_sent >= 20);
    }
}

#[test]
fn full_session_over_a_pty_at_115200_and_resume_after_replug() {
    let ca = TestCa::new();
    let cfg = SimConfig::new("PTY-0100").with_faults("unplug-at=9,replug-after-ms=200").unwrap();
    let dev = SimDevice::spawn(cfg).unwrap();
    let started = Instant::now();
    let first = run_over_port(&dev.path(), session_cfg(), &ca, None);
    let f = first.failure();
    assert_eq!((f.code.as_str(), f.retryable), ("unplugged", true), "{f:?}");
    let path = dev.wait_plugged(std::time::Duration::from_secs(3)).unwrap();
    let second = run_over_port(&path, session_cfg(), &ca, first.issued.clone());
    assert!(matches!(second.outcome, Outcome::Passed { resumed: true, .. }), "{:?}", second.outcome);
    let took = started.elapsed();
    let s = dev.stats();
    eprintln!(
        "two sessions over the pty: {took:?}, {} requests, {} bytes up, {} bytes down",
        s.requests, s.bytes_from_host, s.bytes_to_host
    );
    // At 11,520 B/s the bytes alone take this long: the session can't be faster.
    let floor = (s.bytes_from_host + s.bytes_to_host) as f64 / 11_520.0;
    assert!(took.as_secs_f64() >= floor, "{took:?} < {floor}s: pacing is off");
    assert!(dev.snapshot().locked);
}
