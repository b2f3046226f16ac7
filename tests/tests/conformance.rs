//! The conformance suite (docs/conformance.md) against the simulator over
//! ptys: a well-behaved board passes every check and is left as it was
//! found; every simulator fault is caught by a named check (the table below
//! fails when a fault is added without a catching check).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_devsim::{Faults, SimConfig, SimDevice, SimHandle};
use imprint_proto::DeviceState;
use imprint_station::conformance::{self, CheckId, CheckResult, ConformanceOptions, ConformanceReport, ConnectTarget, TestIssuer};
use imprint_tests::mosquitto::{BrokerTls, Mosquitto, Pki};
use imprint_tests::station::{imprint_bin, path_of, sim};
use std::process::Command;

fn run(dev: &SimHandle, opts: &ConformanceOptions) -> ConformanceReport {
    conformance::run_port(&path_of(dev), opts).expect("the port opens")
}

fn explain(r: &ConformanceReport) -> String {
    conformance::render(r)
}

#[test]
fn a_well_behaved_blank_board_passes_every_check_and_is_left_blank() {
    let dev = sim("CONF-0001", "");
    let r = run(&dev, &ConformanceOptions::default());
    assert!(r.passed, "{}", explain(&r));
    for c in &r.checks {
        let allowed_skips = [CheckId::Connect, CheckId::LockCommit, CheckId::LockedRefusals];
        if allowed_skips.contains(&c.check) {
            assert_eq!(c.result, CheckResult::Skipped, "{}", explain(&r));
        } else {
            assert_eq!(c.result, CheckResult::Pass, "{:?}: {}", c.check, explain(&r));
        }
    }
    let ids: Vec<CheckId> = r.checks.iter().map(|c| c.check).collect();
    assert_eq!(ids, CheckId::ALL, "every check is reported once, in order");
    // Left as found: blank, no key, nothing committed; and the report says what it did.
    let snap = dev.snapshot();
    assert_eq!((snap.state, snap.public_key_spki.is_none(), snap.cert_der.is_none()), (DeviceState::Blank, true, true));
    assert_eq!((r.state_before.as_deref(), r.state_after.as_deref()), (Some("blank"), Some("blank")));
    assert!(r.changed.last().unwrap().contains("RESET the board to blank"), "{:?}", r.changed);
    // The frames that show a check are kept.
    let wrong_hash = r.checks.iter().find(|c| c.check == CheckId::CommitWrongHashKeepsOld).unwrap();
    assert!(wrong_hash.frames.iter().any(|f| f.contains("ERR 422")), "{:?}", wrong_hash.frames);
    assert_eq!(wrong_hash.section, "4.7");
}

#[test]
fn with_lock_a_blank_board_is_locked_for_good_and_the_report_says_so() {
    let dev = sim("CONF-0002", "");
    let r = run(&dev, &ConformanceOptions { allow_lock: true, ..Default::default() });
    assert!(r.passed, "{}", explain(&r));
    assert_eq!(r.result(CheckId::LockCommit), Some(CheckResult::Pass));
    assert_eq!(r.result(CheckId::LockedRefusals), Some(CheckResult::Pass));
    assert_eq!(r.result(CheckId::Reset), Some(CheckResult::Skipped));
    assert!(dev.snapshot().locked);
    assert!(r.changed.iter().any(|c| c.contains("LOCKED")), "{:?}", r.changed);
    // A second run on the locked board writes nothing and still passes what applies.
    let again = run(&dev, &ConformanceOptions::default());
    assert!(again.passed, "{}", explain(&again));
    assert_eq!(again.result(CheckId::LockedRefusals), Some(CheckResult::Pass));
    assert_eq!(again.result(CheckId::Keygen), Some(CheckResult::Skipped));
    assert!(again.changed.is_empty(), "{:?}", again.changed);
}

#[test]
fn a_keyed_board_is_only_asked_and_keeps_its_key() {
    let dev = sim("CONF-0003", "");
    // A board with a key of its own: the suite must not touch it.
    let mut t = imprint_serial::SerialTransport::open(&path_of(&dev), 115_200).unwrap();
    use imprint_serial::Transport;
    t.write_all(&imprint_proto::Frame::request(1, "KEYGEN").with("alg", "p256").encode()).unwrap();
    imprint_tests::mosquitto::wait_until(std::time::Duration::from_secs(5), "a key", || dev.snapshot().public_key_spki.is_some());
    drop(t);
    let key = dev.snapshot().public_key_spki;
    let r = run(&dev, &ConformanceOptions::default());
    assert!(r.passed, "{}", explain(&r));
    assert_eq!(r.state_before.as_deref(), Some("keyed"));
    assert!(r.changed.is_empty(), "{:?}", r.changed);
    assert_eq!(dev.snapshot().public_key_spki, key, "the key is kept");
    assert_eq!(r.result(CheckId::Prove), Some(CheckResult::Pass));
    assert_eq!(r.result(CheckId::Csr), Some(CheckResult::Skipped));
}

/// What the table needs beyond the fault.
#[derive(Clone, Copy, PartialEq)]
enum Needs {
    Nothing,
    Lock,
    Broker,
}

/// Every simulator fault (by its name in `Faults::NAMES`), the spec that
/// shows it, and the check that must catch it.
const CAUGHT_BY: &[(&str, &str, CheckId, Needs)] = &[
    ("unplug-at", "unplug-at=1", CheckId::Hello, Needs::Nothing),
    ("replug-after-ms", "unplug-at=3,replug-after-ms=200", CheckId::Ident, Needs::Nothing),
    ("noise", "noise", CheckId::ConsoleHygiene, Needs::Nothing),
    ("oversized", "oversized", CheckId::Hello, Needs::Nothing),
    ("oversized-at", "oversized-at=14", CheckId::ConsoleHygiene, Needs::Nothing),
    ("bad-crc", "bad-crc", CheckId::Hello, Needs::Nothing),
    ("bad-crc-at", "bad-crc-at=2", CheckId::HelloVersion, Needs::Nothing),
    ("busy-at", "busy-at=3", CheckId::Busy, Needs::Nothing),
    ("slow-ms", "slow-ms=900", CheckId::Timing, Needs::Nothing),
    ("silent", "silent", CheckId::Hello, Needs::Nothing),
    ("wrong-serial-csr", "wrong-serial-csr", CheckId::Csr, Needs::Nothing),
    ("other-key-csr", "other-key-csr", CheckId::Csr, Needs::Nothing),
    ("bad-csr-sig", "bad-csr-sig", CheckId::Csr, Needs::Nothing),
    ("weak-key", "weak-key", CheckId::Keygen, Needs::Nothing),
    ("stale-nonce", "stale-nonce", CheckId::Csr, Needs::Nothing),
    ("bad-proof", "bad-proof", CheckId::Prove, Needs::Nothing),
    ("mqtt-foreign-cert", "mqtt-foreign-cert", CheckId::Connect, Needs::Broker),
    ("mqtt-expired-cert", "mqtt-expired-cert", CheckId::Connect, Needs::Broker),
    ("mqtt-wrong-key", "mqtt-wrong-key", CheckId::Connect, Needs::Broker),
    ("fake-lock", "fake-lock", CheckId::LockCommit, Needs::Lock),
];

#[test]
fn every_simulator_fault_has_a_row_in_the_catching_table() {
    let names: Vec<&str> = Faults::NAMES.iter().map(|n| n.split('=').next().unwrap()).collect();
    let rows: Vec<&str> = CAUGHT_BY.iter().map(|r| r.0).collect();
    for n in &names {
        assert!(rows.contains(n), "fault {n} has no catching check in CAUGHT_BY: add one (and a check if none catches it)");
    }
    for r in &rows {
        assert!(names.contains(r), "CAUGHT_BY names {r}, which is not a simulator fault");
    }
    for (_, spec, _, _) in CAUGHT_BY {
        Faults::parse(spec).unwrap();
    }
}

struct Broker {
    _pki: tempfile::TempDir,
    broker: Mosquitto,
    issuer: TestIssuer,
    server_ca_pem: String,
}

fn broker() -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let server_ca = pki.ca("broker-ca");
    let server = pki.leaf(&server_ca, "broker", true);
    let devices = pki.ca("device-ca");
    let cafile = dir.path().join("clients.pem");
    let mut trusted = std::fs::read_to_string(&devices.cert).unwrap();
    trusted.push_str(&imprint_devsim::mqtt::expiry_test_ca_pem().unwrap());
    std::fs::write(&cafile, trusted).unwrap();
    let broker = Mosquitto::mtls(&BrokerTls { client_ca: cafile, server });
    let issuer =
        TestIssuer { cert_pem: std::fs::read_to_string(&devices.cert).unwrap(), key_pem: std::fs::read_to_string(&devices.key).unwrap() };
    Broker { server_ca_pem: std::fs::read_to_string(&server_ca.cert).unwrap(), _pki: dir, broker, issuer }
}

fn connect_opts(b: &Broker) -> ConformanceOptions {
    ConformanceOptions {
        issuer: Some(b.issuer.clone()),
        connect: Some(ConnectTarget {
            host: "127.0.0.1".into(),
            port: b.broker.port,
            topic: format!("imprint/test/conformance/{}", imprint_store::new_id()),
            broker_ca_pem: b.server_ca_pem.clone(),
        }),
        ..Default::default()
    }
}

#[test]
fn connect_passes_against_a_real_mtls_broker() {
    let b = broker();
    let dev = sim("CONF-0004", "");
    let r = run(&dev, &connect_opts(&b));
    assert!(r.passed, "{}\n{}", explain(&r), b.broker.log());
    assert_eq!(r.result(CheckId::Connect), Some(CheckResult::Pass), "{}", explain(&r));
    assert_eq!(dev.snapshot().state, DeviceState::Blank);
}

#[test]
fn every_simulator_fault_is_caught_by_its_named_check() {
    let b = broker();
    let handles: Vec<_> = CAUGHT_BY
        .iter()
        .enumerate()
        .map(|(i, (name, spec, check, needs))| {
            let cfg = SimConfig::new(format!("CONF-F{:03}", i + 1)).with_faults(spec).unwrap();
            let dev = SimDevice::spawn(cfg).unwrap();
            let opts = match needs {
                Needs::Nothing => ConformanceOptions::default(),
                Needs::Lock => ConformanceOptions { allow_lock: true, ..Default::default() },
                Needs::Broker => connect_opts(&b),
            };
            let (name, check) = (name.to_string(), *check);
            std::thread::spawn(move || {
                let r = conformance::run_port(&path_of(&dev), &opts).expect("port opens");
                (name, check, r)
            })
        })
        .collect();
    let mut missed = Vec::new();
    for h in handles {
        let (name, check, r) = h.join().unwrap();
        let got = r.result(check);
        let caught = match check {
            CheckId::Busy => got == Some(CheckResult::Warn),
            _ => got == Some(CheckResult::Fail) && !r.passed,
        };
        if !caught {
            missed.push(format!("{name}: {check:?} was {got:?}\n{}", explain(&r)));
        }
    }
    assert!(missed.is_empty(), "faults not caught by their check:\n{}", missed.join("\n"));
}

#[test]
fn the_cli_prints_the_report_and_exits_1_when_a_check_fails() {
    let good = sim("CONF-0005", "");
    let out = Command::new(imprint_bin()).args(["conformance", "--port", &path_of(&good), "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["passed"], true);
    assert_eq!(v["checks"][0]["check"], "hello");
    assert_eq!(v["checks"][0]["section"], "4.1");
    let bad = sim("CONF-0006", "bad-proof");
    let out = Command::new(imprint_bin()).args(["conformance", "--port", &path_of(&bad)]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAIL prove"), "{text}");
    assert!(text.contains("> @> "), "the frames that show why: {text}");
}
