//! The C reference device (devices/c-reference, C99 + Mbed TLS), built with
//! the system compiler by its own script, run on a pty: it passes
//! `imprint conformance`, and the station provisions it; its key,
//! certificate and lock survive a restart (a power cycle).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_station::conformance::{self, CheckId, CheckResult, ConformanceOptions};
use imprint_tests::station::TestStation;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Build once per test binary with devices/c-reference/build.sh.
fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("imprint-c-device");
        let st = Command::new(repo().join("devices/c-reference/build.sh")).arg(&out).output().expect("build.sh runs");
        assert!(st.status.success(), "build.sh failed (is libmbedtls-dev installed? scripts/setup): {}", String::from_utf8_lossy(&st.stderr));
        out
    })
    .clone()
}

/// A running C device; killed on drop. Its state dir outlives it.
struct CDevice {
    child: Child,
    path: String,
}

impl CDevice {
    fn start(serial: &str, state: &Path) -> CDevice {
        let mut child = Command::new(binary())
            .args(["--serial", serial, "--state-dir"])
            .arg(state)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the C device starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let path = line.split_whitespace().nth(2).unwrap_or_else(|| panic!("no DEVICE line: {line:?}")).to_string();
        CDevice { child, path }
    }
}

impl Drop for CDevice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_c_reference_device_passes_every_conformance_check() {
    let state = tempfile::tempdir().unwrap();
    let dev = CDevice::start("CREF-0001", state.path());
    let r = conformance::run_port(&dev.path, &ConformanceOptions { allow_lock: true, ..Default::default() }).unwrap();
    assert!(r.passed, "{}", conformance::render(&r));
    for c in &r.checks {
        let may_skip = [CheckId::Connect, CheckId::Reset];
        let want = if may_skip.contains(&c.check) { CheckResult::Skipped } else { CheckResult::Pass };
        assert_eq!(c.result, want, "{:?}\n{}", c.check, conformance::render(&r));
    }
    // Without --lock a blank board is left blank.
    let state2 = tempfile::tempdir().unwrap();
    let dev2 = CDevice::start("CREF-0002", state2.path());
    let r = conformance::run_port(&dev2.path, &ConformanceOptions::default()).unwrap();
    assert!(r.passed, "{}", conformance::render(&r));
    assert_eq!(r.result(CheckId::Reset), Some(CheckResult::Pass));
    assert_eq!(r.state_after.as_deref(), Some("blank"));
}

#[test]
fn the_station_provisions_the_c_reference_device_and_its_state_survives_a_restart() {
    let ts = TestStation::new();
    let st = ts.open();
    let state = tempfile::tempdir().unwrap();
    let dev = CDevice::start("CREF-0100", state.path());
    let r = st.provision(&dev.path, None).unwrap();
    assert!(r.passed(), "{:?}", r.outcome);
    drop(dev);
    // Power cycle: the same state dir, a new pty. The station finds its own
    // certificate on a locked board (read back, proof) and writes nothing.
    let dev = CDevice::start("CREF-0100", state.path());
    let again = st.provision(&dev.path, None).unwrap();
    assert!(again.passed(), "{:?}", again.outcome);
    let r = conformance::run_port(&dev.path, &ConformanceOptions::default()).unwrap();
    assert_eq!(r.state_before.as_deref(), Some("locked"));
    assert!(r.passed, "{}", conformance::render(&r));
    assert_eq!(r.result(CheckId::LockedRefusals), Some(CheckResult::Pass));
}
