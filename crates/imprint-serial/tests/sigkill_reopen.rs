//! A station killed with SIGKILL must not leave its ports closed to the next
//! station. The factory runs the station as a non-root user: a non-root
//! opener is refused a tty that has `TIOCEXCL` set, root (CAP_SYS_ADMIN) is
//! not, so run as root this test re-runs itself without CAP_SYS_ADMIN.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use imprint_serial::{SerialTransport, TransportError};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const TEST: &str = "a_non_root_station_killed_with_sigkill_can_reopen_the_simulator_pty";
const HOLD: &str = "IMPRINT_TEST_HOLD_PORT";
const DROPPED: &str = "IMPRINT_TEST_WITHOUT_SYS_ADMIN";
const CAP_SYS_ADMIN: u32 = 21;

fn has_sys_admin() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim();
    u64::from_str_radix(eff, 16).unwrap() & (1 << CAP_SYS_ADMIN) != 0
}

/// The holder dies with the test whatever happens (a failed assertion included).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Not a check of its own: with `IMPRINT_TEST_HOLD_PORT` set, this is the
/// station process that holds the port until it is killed.
#[test]
fn holder_process() {
    let Ok(path) = std::env::var(HOLD) else { return };
    let _port = SerialTransport::open(&path, 115_200).unwrap();
    println!("HELD {path}");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

#[test]
fn a_non_root_station_killed_with_sigkill_can_reopen_the_simulator_pty() {
    let exe = std::env::current_exe().unwrap();
    if has_sys_admin() {
        assert!(std::env::var_os(DROPPED).is_none(), "setpriv did not drop CAP_SYS_ADMIN: the test would prove nothing");
        let out = Command::new("setpriv")
            .args(["--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--"])
            .arg(&exe)
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(DROPPED, "1")
            .output()
            .expect("setpriv (util-linux) runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "without CAP_SYS_ADMIN:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("1 passed"), "the test ran without CAP_SYS_ADMIN:\n{stdout}");
        return;
    }
    // The simulator's side: it holds the master and its own slave descriptor
    // for as long as the device is plugged (imprint-devsim's `Pty`).
    let (_master, slave) = serialport::TTYPort::pair().unwrap();
    let path = serialport::SerialPort::name(&slave).unwrap();

    // A station process opens the port ...
    let mut station = Command::new(&exe)
        .args(["--exact", "holder_process", "--nocapture", "--test-threads=1"])
        .env(HOLD, &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(station.stdout.take().unwrap()).lines();
    let mut station = KillOnDrop(station);
    assert!(lines.by_ref().map_while(Result::ok).any(|l| l.contains("HELD /dev/")), "the station process opened {path}");
    // ... and holds it exclusively while it lives,
    let second = SerialTransport::open(&path, 115_200).err();
    assert!(matches!(second, Some(TransportError::Busy(_))), "a second station is refused while the first lives: {second:?}");

    // ... until it is killed with no chance to clean up.
    station.0.kill().unwrap(); // SIGKILL
    station.0.wait().unwrap();
    let reopened = SerialTransport::open(&path, 115_200);
    assert!(reopened.is_ok(), "the next station opens {path} after a SIGKILL: {:?}", reopened.err());
    drop(reopened);
    // And a normal close leaves it openable too.
    assert!(SerialTransport::open(&path, 115_200).is_ok());
}
