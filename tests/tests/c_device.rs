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
        assert!(
            st.status.success(),
            "build.sh failed (is libmbedtls-dev installed? scripts/setup): {}",
            String::from_utf8_lossy(&st.stderr)
        );
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

/// The fenced block after `<!-- vector: NAME -->` in docs/protocol.md, as bytes.
fn doc_vector(name: &str) -> Vec<u8> {
    let doc = std::fs::read_to_string(repo().join("docs/protocol.md")).unwrap();
    let marker = format!("<!-- vector: {name} -->");
    let rest = &doc[doc.find(&marker).unwrap() + marker.len()..];
    let body = rest.split("```").nth(1).unwrap();
    let hex: String = body.split_once('\n').unwrap().1.split_whitespace().collect();
    hex::decode(hex).unwrap()
}

#[test]
fn the_c_device_reproduces_the_documented_csr_and_proof_bytes_for_the_rfc_6979_key() {
    use imprint_proto::codec::{b64, unb64};
    use imprint_proto::{Decoded, Decoder, Direction, Frame};
    use imprint_serial::{SerialTransport, Transport};
    // SEC1 ECPrivateKey of the RFC 6979 A.2.5 key, as the device stores it.
    let spki = doc_vector("spki");
    let tlv = |tag: u8, c: &[u8]| [&[tag, c.len() as u8][..], c].concat();
    let priv_key = hex::decode("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721").unwrap();
    let curve = hex::decode("06082a8648ce3d030107").unwrap();
    let point = [&[0u8][..], &spki[spki.len() - 65..]].concat();
    let body = [tlv(2, &[1]), tlv(4, &priv_key), tlv(0xa0, &curve), tlv(0xa1, &tlv(3, &point))].concat();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("key.der"), tlv(0x30, &body)).unwrap();
    let dev = CDevice::start("SIM-0001", state.path());
    let mut t = SerialTransport::open(&dev.path, 115_200).unwrap();
    let mut dec = Decoder::new(Direction::Response);
    let mut ask = |f: Frame| -> Frame {
        t.write_all(&f.encode()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut buf = [0u8; 1024];
        loop {
            let n = t.read_until(&mut buf, deadline).unwrap();
            assert!(n > 0, "no answer to {f}");
            for d in dec.feed(&buf[..n]) {
                if let Decoded::Frame(a) = d {
                    return a;
                }
            }
        }
    };
    let key = ask(Frame::request(1, "KEYGEN").with("alg", "p256"));
    assert_eq!((key.field("new"), key.field("pub").map(|p| unb64(p).unwrap())), (Some("0"), Some(spki)));
    let nonce: Vec<u8> = (0x10..0x20).collect();
    ask(Frame::request(2, "CSR").with("nonce", b64(&nonce)));
    let csr = ask(Frame::request(3, "READ").with("obj", "csr").with("off", "0").with("max", "512"));
    assert_eq!(unb64(csr.field("data").unwrap()).unwrap(), doc_vector("csr"), "the CSR of docs/protocol.md 10.3");
    let nonce: Vec<u8> = (0x20..0x30).collect();
    let proof = ask(Frame::request(4, "PROVE").with("nonce", b64(&nonce)));
    assert_eq!(unb64(proof.field("sig").unwrap()).unwrap(), doc_vector("pop-signature"), "the proof of docs/protocol.md 10.3");
}
