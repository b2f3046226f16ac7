//! The simulator on a real pty: request/answer, link pacing, unplug/replug.

use crate::common::req;
use imprint_devsim::{spawn_many, SimConfig, SimDevice};
use imprint_proto::codec::{Decoded, Decoder, Direction, Frame};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn open(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Set the host side of the pty raw too (as serialport does), so the line
/// discipline neither echoes nor translates.
fn raw(f: &File) {
    use nix::sys::termios::*;
    let mut t = tcgetattr(f.as_fd()).unwrap();
    cfmakeraw(&mut t);
    tcsetattr(f.as_fd(), SetArg::TCSANOW, &t).unwrap();
}

#[derive(Debug)]
enum Got {
    Data(usize),
    Eof(String),
    Timeout,
}

/// One read bounded by `timeout`.
fn read_some(f: &mut File, buf: &mut [u8], timeout: Duration) -> Got {
    let ms = timeout.as_millis().min(60_000) as u16;
    let ready = {
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(ms)).unwrap() > 0
    };
    if !ready {
        return Got::Timeout;
    }
    match f.read(buf) {
        Ok(0) => Got::Eof("EOF".into()),
        Ok(n) => Got::Data(n),
        Err(e) => Got::Eof(e.to_string()),
    }
}

/// Read frames until one answers `rid` (or give up).
fn answer(f: &mut File, dec: &mut Decoder, rid: u16, timeout: Duration) -> Option<Frame> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 512];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match read_some(f, &mut buf, left) {
            Got::Data(n) => {
                for d in dec.feed(&buf[..n]) {
                    if let Decoded::Frame(fr) = d {
                        if fr.rid == rid {
                            return Some(fr);
                        }
                    }
                }
            }
            _ => return None,
        }
    }
    None
}

fn ask(f: &mut File, dec: &mut Decoder, frame: Frame) -> Frame {
    f.write_all(&frame.encode()).unwrap();
    answer(f, dec, frame.rid, Duration::from_secs(5)).unwrap_or_else(|| panic!("no answer to {frame}"))
}

#[test]
fn hello_over_a_pty() {
    let dev = SimDevice::spawn(SimConfig::new("PTY-0001")).unwrap();
    assert!(dev.path().starts_with("/dev/pts"), "{}", dev.path().display());
    let mut f = open(&dev.path());
    raw(&f);
    let mut dec = Decoder::new(Direction::Response);
    let a = ask(&mut f, &mut dec, req(7, "HELLO", &[("proto", "1")]));
    assert!(a.is_ok());
    assert_eq!((a.field("proto"), a.field("chunk")), (Some("1"), Some("512")));
    // Console lines and garbage from the host are ignored; the next request works.
    f.write_all(b"hello device\n\xff\xfe junk @> 3 HELLO *0000\n").unwrap();
    let a = ask(&mut f, &mut dec, req(8, "IDENT", &[]));
    assert_eq!(a.text("serial").as_deref(), Some("PTY-0001"));
    let s = dev.stats();
    assert_eq!(s.requests, 2);
    assert!(s.bytes_from_host > 60 && s.bytes_to_host > 100, "{s:?}");
}

#[test]
fn answers_are_paced_at_115200_baud() {
    let dev = SimDevice::spawn(SimConfig::new("PTY-0002")).unwrap();
    let mut f = open(&dev.path());
    raw(&f);
    // Pipeline enough requests for > 2048 bytes of answers (~117 bytes each).
    let mut burst = Vec::new();
    for rid in 1..=24u16 {
        burst.extend(req(rid, "HELLO", &[("proto", "1")]).encode());
    }
    let started = Instant::now();
    f.write_all(&burst).unwrap();
    let mut got = 0usize;
    let mut buf = [0u8; 4096];
    while got < 2048 {
        match read_some(&mut f, &mut buf, Duration::from_secs(3)) {
            Got::Data(n) => got += n,
            other => panic!("{other:?} after {got} bytes"),
        }
    }
    let took = started.elapsed().as_secs_f64();
    let theory = 2048.0 / 11_520.0;
    let ratio = took / theory;
    eprintln!("2048 bytes of answers in {:.1} ms (theory {:.1} ms, ratio {ratio:.3})", took * 1e3, theory * 1e3);
    assert!((0.9..1.3).contains(&ratio), "took {took:.4}s for 2048 bytes, theory {theory:.4}s");
}

#[test]
fn requests_are_paced_too() {
    // A 700-byte request line takes 61 ms to arrive at 115200 baud; the
    // answer can not come earlier. Unpaced, it comes at once.
    let big = "A".repeat(680);
    for (baud, min_ms, max_ms) in [(115_200u32, 55.0, 400.0), (0, 0.0, 50.0)] {
        let dev = SimDevice::spawn(SimConfig::new("PTY-0003").with_baud(baud)).unwrap();
        let mut f = open(&dev.path());
        raw(&f);
        let mut dec = Decoder::new(Direction::Response);
        let started = Instant::now();
        let a = ask(&mut f, &mut dec, req(1, "PUT", &[("obj", "cert"), ("off", "0"), ("data", &big)]));
        let ms = started.elapsed().as_secs_f64() * 1e3;
        assert!(a.is_ok(), "{a}");
        assert!((min_ms..max_ms).contains(&ms), "baud {baud}: answered after {ms:.1} ms");
    }
}

#[test]
fn unplug_gives_eof_and_replug_a_new_working_path_with_state_intact() {
    let links = tempfile::tempdir().unwrap();
    let dev = SimDevice::spawn(SimConfig::new("PTY-0004").with_link_dir(links.path())).unwrap();
    let link = dev.link_path().unwrap();
    assert_eq!(link, links.path().join("PTY-0004"));
    assert_eq!(std::fs::read_link(&link).unwrap(), dev.path());
    let old = dev.path();
    let mut f = open(&old);
    raw(&f);
    let mut dec = Decoder::new(Direction::Response);
    let key = ask(&mut f, &mut dec, req(1, "KEYGEN", &[("alg", "p256")]));
    assert_eq!(key.field("new"), Some("1"));

    dev.unplug();
    assert!(!dev.is_plugged());
    assert!(!link.exists() && std::fs::symlink_metadata(&link).is_err(), "link removed on unplug");
    let mut buf = [0u8; 64];
    match read_some(&mut f, &mut buf, Duration::from_secs(2)) {
        Got::Eof(why) => eprintln!("after unplug the host reads: {why}"),
        other => panic!("expected EOF/EIO after unplug, got {other:?}"),
    }

    let new = dev.replug().unwrap();
    assert_ne!(new, old, "replug gives a new path");
    assert_eq!(dev.path(), new);
    assert_eq!(std::fs::read_link(&link).unwrap(), new, "link follows");
    assert_eq!(dev.plug_count(), 2);
    drop(f);
    let mut f = open(&link);
    raw(&f);
    let again = ask(&mut f, &mut dec, req(3, "KEYGEN", &[("alg", "p256")]));
    assert_eq!(again.field("new"), Some("0"), "same key after replug");
    assert_eq!(again.field("pub"), key.field("pub"));

    drop(dev);
    assert!(std::fs::symlink_metadata(&link).is_err(), "link removed on drop");
}

#[test]
fn unplug_at_with_replug_after_ms() {
    let links = tempfile::tempdir().unwrap();
    let cfg = SimConfig::new("PTY-0005").with_link_dir(links.path()).with_faults("unplug-at=3,replug-after-ms=300").unwrap();
    let dev = SimDevice::spawn(cfg).unwrap();
    let old = dev.path();
    let mut f = open(&old);
    raw(&f);
    let mut dec = Decoder::new(Direction::Response);
    ask(&mut f, &mut dec, req(1, "HELLO", &[("proto", "1")]));
    ask(&mut f, &mut dec, req(2, "KEYGEN", &[("alg", "p256")]));
    f.write_all(&req(3, "IDENT", &[]).encode()).unwrap();
    let unplugged_at = Instant::now();
    let mut buf = [0u8; 64];
    assert!(matches!(read_some(&mut f, &mut buf, Duration::from_secs(2)), Got::Eof(_)), "3rd request unplugs, unanswered");
    assert!(!dev.is_plugged());
    let new = dev.wait_plugged(Duration::from_secs(3)).expect("replugged");
    let after = unplugged_at.elapsed();
    assert!(after >= Duration::from_millis(250), "replugged after {after:?}");
    assert_ne!(new, old);
    assert_eq!(std::fs::read_link(links.path().join("PTY-0005")).unwrap(), new);
    drop(f);
    let mut f = open(&new);
    raw(&f);
    // State intact, and the fault does not repeat.
    for rid in 10..16 {
        let a = ask(&mut f, &mut dec, req(rid, "IDENT", &[]));
        assert_eq!(a.field("state"), Some("keyed"));
    }
    assert!(dev.is_plugged());
}

#[test]
fn station_style_open_close_reopen() {
    // serialport sets TIOCEXCL and raw mode; closing must not hang up the
    // device, and a reopen must work.
    let dev = SimDevice::spawn(SimConfig::new("PTY-0006")).unwrap();
    let path = dev.path().to_string_lossy().into_owned();
    for round in 1..=3u16 {
        let mut port =
            serialport::new(&path, 115_200).timeout(Duration::from_millis(20)).open().unwrap_or_else(|e| panic!("open #{round}: {e}"));
        if round == 1 {
            assert!(serialport::new(&path, 115_200).open().is_err(), "exclusive while open");
        }
        port.write_all(&req(round, "IDENT", &[]).encode()).unwrap();
        let mut dec = Decoder::new(Direction::Response);
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut buf = [0u8; 256];
        let mut answered = false;
        while Instant::now() < deadline && !answered {
            match port.read(&mut buf) {
                Ok(n) => answered = dec.feed(&buf[..n]).iter().any(|d| matches!(d, Decoded::Frame(f) if f.rid == round)),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        assert!(answered, "round {round}");
    }
    assert_eq!(dev.stats().requests, 3);
}

#[test]
fn spawn_many_numbers_serials_and_links_them() {
    let links = tempfile::tempdir().unwrap();
    let base = SimConfig::new("unused").with_baud(0).with_link_dir(links.path());
    let devs = spawn_many(3, "LINE", &base).unwrap();
    let serials: Vec<&str> = devs.iter().map(|d| d.serial()).collect();
    assert_eq!(serials, ["LINE-0001", "LINE-0002", "LINE-0003"]);
    for d in &devs {
        let mut f = open(&d.link_path().unwrap());
        raw(&f);
        let mut dec = Decoder::new(Direction::Response);
        let a = ask(&mut f, &mut dec, req(1, "IDENT", &[]));
        assert_eq!(a.text("serial").as_deref(), Some(d.serial()));
    }
    drop(devs);
    assert_eq!(std::fs::read_dir(links.path()).unwrap().count(), 0);
}

#[test]
fn max_line_is_1024_bytes_and_crlf_works() {
    let dev = SimDevice::spawn(SimConfig::new("PTY-0007").with_baud(0)).unwrap();
    let mut f = open(&dev.path());
    raw(&f);
    let mut dec = Decoder::new(Direction::Response);
    // A line of exactly MAX_LINE bytes, terminator included: HELLO with an
    // unknown field `pad` (devices ignore unknown fields). (A PUT of that
    // size carries more than `chunk` bytes, which is 413 since PUT's limit
    // was settled in docs/protocol.md 4.6.)
    let put = |rid: u16, pad_len: usize| req(rid, "HELLO", &[("proto", "1"), ("pad", &"A".repeat(pad_len))]);
    let rid = 10u16;
    let pad = imprint_proto::MAX_LINE - put(rid, 0).encode().len();
    let exact = put(rid, pad);
    assert_eq!(exact.encode().len(), 1024);
    assert!(ask(&mut f, &mut dec, exact).is_ok());
    // One byte more: discarded without an answer; the next line is answered.
    let over = put(rid + 1, pad + 1);
    assert_eq!(over.encode().len(), 1025);
    f.write_all(&over.encode()).unwrap();
    assert!(answer(&mut f, &mut dec, rid + 1, Duration::from_millis(300)).is_none());
    // CRLF terminators are fine.
    let mut line = req(rid + 2, "IDENT", &[]).encode();
    line.pop();
    line.extend_from_slice(b"\r\n");
    f.write_all(&line).unwrap();
    assert!(answer(&mut f, &mut dec, rid + 2, Duration::from_secs(3)).is_some());
    assert_eq!(dev.stats().requests, 2);
}
