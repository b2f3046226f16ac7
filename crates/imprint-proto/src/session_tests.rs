//! Session state machine tests against a scripted, crypto-free fake device.

use crate::codec::{b64, unb64, ErrorCode, Frame};
use crate::session::*;
use crate::FailureCode;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// A minimal in-memory device model. Crypto is not needed: the session only
/// moves bytes; signatures are checked by the driver through CheckProof.
#[derive(Default)]
struct Fake {
    locked: bool,
    key: Option<Vec<u8>>,
    staged: HashMap<String, Vec<u8>>,
    objects: HashMap<String, Vec<u8>>,
    /// verb -> number of times to stay silent before answering
    silent: HashMap<&'static str, u32>,
    /// verb -> number of times to answer with a corrupt line
    corrupt: HashMap<&'static str, u32>,
    /// answer READ of cert with different bytes
    tamper_readback: bool,
    /// answer LOCK commit but the host never sees it (timeout), device is locked
    swallow_lock_commit: bool,
    /// CONNECT answers ERR 424 with this reason.
    connect_fails: Option<String>,
    /// The `msg` of that ERR (default: a TLS alert).
    connect_msg: Option<String>,
    /// Old firmware: CONNECT is an unknown verb.
    no_connect: bool,
    verbs: Vec<String>,
}

enum Reply {
    Frame(Frame),
    Silent,
    Corrupt,
}

impl Fake {
    fn answer(&mut self, req: &Frame) -> Reply {
        let verb = req.head.clone();
        self.verbs.push(verb.clone());
        if let Some(n) = self.silent.get_mut(verb.as_str()) {
            if *n > 0 {
                *n -= 1;
                return Reply::Silent;
            }
        }
        if let Some(n) = self.corrupt.get_mut(verb.as_str()) {
            if *n > 0 {
                *n -= 1;
                return Reply::Corrupt;
            }
        }
        let rid = req.rid;
        let ok = Frame::ok(rid);
        let f = match verb.as_str() {
            "HELLO" => ok.with("proto", "1").with("chunk", "64"),
            "IDENT" => ok.with("serial", "SN-0001").with("model", "demo").with(
                "state",
                if self.locked {
                    "locked"
                } else if self.key.is_some() {
                    "keyed"
                } else {
                    "blank"
                },
            ),
            "KEYGEN" => {
                let new = self.key.is_none();
                let key = self.key.get_or_insert_with(|| vec![7u8; 91]).clone();
                ok.with("pub", b64(&key)).with("new", if new { "1" } else { "0" })
            }
            "CSR" => {
                let nonce = unb64(req.field("nonce").unwrap()).unwrap();
                let mut csr = b"CSR-".to_vec();
                csr.extend_from_slice(&nonce);
                csr.extend(std::iter::repeat_n(0xAB, 300));
                let sha = Sha256::digest(&csr);
                let len = csr.len();
                self.objects.insert("csr".into(), csr);
                ok.with("len", len.to_string()).with("sha256", b64(&sha))
            }
            "READ" => {
                let obj = req.field("obj").unwrap();
                let off: usize = req.field("off").unwrap().parse().unwrap();
                let max: usize = req.field("max").unwrap().parse().unwrap();
                let mut data = self.objects.get(obj).cloned().unwrap_or_default();
                if self.tamper_readback && obj == "cert" {
                    data[0] ^= 1;
                }
                let end = (off + max).min(data.len());
                ok.with("obj", obj).with("off", off.to_string()).with("total", data.len().to_string()).with("data", b64(&data[off..end]))
            }
            "PUT" => {
                let obj = req.field("obj").unwrap().to_string();
                let off: usize = req.field("off").unwrap().parse().unwrap();
                let data = unb64(req.field("data").unwrap()).unwrap();
                let st = self.staged.entry(obj).or_default();
                st.truncate(off);
                st.extend_from_slice(&data);
                ok.with("next", st.len().to_string())
            }
            "COMMIT" => {
                let obj = req.field("obj").unwrap();
                let st = self.staged.remove(obj).unwrap_or_default();
                assert_eq!(b64(&Sha256::digest(&st)), req.field("sha256").unwrap());
                self.objects.insert(obj.to_string(), st);
                ok
            }
            "PROVE" => ok.with("sig", b64(b"signature")),
            "RESET" if self.locked => Frame::err(rid, ErrorCode::Locked, "device is locked; reset refused"),
            "RESET" => {
                assert_eq!(req.text("confirm").as_deref(), Some("SN-0001"));
                self.key = Some(vec![9u8; 91]);
                self.objects.clear();
                self.staged.clear();
                ok.with("state", "blank")
            }
            "CONNECT" if !self.no_connect => {
                assert!(self.objects.contains_key("brokerca"), "CONNECT before brokerca was committed");
                assert_eq!((req.field("host"), req.field("port"), req.field("topic")), (Some("127.0.0.1"), Some("8883"), Some("f/dev")));
                match &self.connect_fails {
                    Some(reason) => {
                        let msg = self.connect_msg.as_deref().unwrap_or("TLS alert UnknownCA");
                        Frame::err(rid, ErrorCode::ConnectFailed, msg).with("reason", reason.clone())
                    }
                    None => ok.with("latency_ms", "12"),
                }
            }
            "LOCK" => match req.field("phase") {
                Some("prepare") => ok.with("token", "abcd"),
                _ => {
                    self.locked = true;
                    if self.swallow_lock_commit {
                        self.swallow_lock_commit = false;
                        return Reply::Silent;
                    }
                    ok.with("state", "locked")
                }
            },
            _ => Frame::err(rid, ErrorCode::UnknownVerb, ""),
        };
        Reply::Frame(f)
    }
}

struct Run {
    outcome: Outcome,
    notes: Vec<Note>,
    issued_calls: u32,
}

fn chain() -> IssuedChain {
    IssuedChain { cert_der: (0..200u8).collect(), chain_der: (0..150u8).rev().collect(), serial_hex: "0a0b".into(), resumed: false }
}

fn cfg() -> SessionConfig {
    SessionConfig::new(vec![1; 16], vec![2; 16])
}

fn run_with(dev: &mut Fake, cfg: SessionConfig, existing: Option<IssuedChain>, proof_ok: bool) -> Run {
    let mut s = Session::new(cfg);
    let mut notes = Vec::new();
    let mut issued_calls = 0;
    let mut action = s.start();
    for _ in 0..1000 {
        notes.extend(s.take_notes());
        let input = match action {
            Action::Send { frame, .. } => match dev.answer(&frame) {
                Reply::Frame(f) => Input::Frame(f),
                Reply::Silent => Input::Timeout,
                Reply::Corrupt => Input::Corrupt(format!("@< {} OK garbage *0000", frame.rid)),
            },
            Action::KeepWaiting => Input::Timeout,
            Action::Write { what, .. } => panic!("the native session wrote raw bytes ({what})"),
            Action::Wait { .. } => Input::Waited,
            Action::Lookup { .. } => Input::Lookup(Ok(existing.clone())),
            Action::Issue { csr_der, nonce, .. } => {
                issued_calls += 1;
                assert!(csr_der.windows(nonce.len()).any(|w| w == nonce.as_slice()));
                Input::Issued(Ok(chain()))
            }
            Action::CheckProof { message, signature, .. } => {
                assert!(message.starts_with(b"IMPRINT-POP-V1\0SN-0001\0"));
                assert_eq!(signature, b"signature");
                Input::ProofChecked(if proof_ok { Ok(()) } else { Err("bad signature".into()) })
            }
            Action::Finish(outcome) => {
                notes.extend(s.take_notes());
                return Run { outcome, notes, issued_calls };
            }
        };
        action = s.handle(input);
    }
    panic!("session did not finish");
}

fn run(dev: &mut Fake) -> Run {
    run_with(dev, cfg(), None, true)
}

fn failure(r: &Run) -> &Failure {
    match &r.outcome {
        Outcome::Failed(f) => f,
        o => panic!("expected failure, got {o:?}"),
    }
}

#[test]
fn happy_path_writes_reads_back_proves_and_locks() {
    let mut dev = Fake::default();
    let r = run(&mut dev);
    let Outcome::Passed { cert_serial_hex, resumed, already_provisioned, identity } = &r.outcome else { panic!("{:?}", r.outcome) };
    assert_eq!(cert_serial_hex, "0a0b");
    assert!(!resumed && !already_provisioned);
    assert_eq!(identity.serial, "SN-0001");
    assert_eq!(r.issued_calls, 1);
    assert!(dev.locked);
    assert_eq!(dev.objects["cert"], chain().cert_der);
    assert_eq!(dev.objects["chain"], chain().chain_der);
    // 200-byte cert in 64-byte chunks = 4 PUTs
    assert_eq!(dev.verbs.iter().filter(|v| *v == "PUT").count(), 4 + 3);
    let stages: Vec<_> = r.notes.iter().filter(|n| n.kind == NoteKind::Started).map(|n| n.stage).collect();
    assert_eq!(
        stages,
        [
            Stage::Hello,
            Stage::Identify,
            Stage::Keygen,
            Stage::Lookup,
            Stage::Csr,
            Stage::Issue,
            Stage::WriteCert,
            Stage::WriteChain,
            Stage::ReadBack,
            Stage::Prove,
            Stage::Lock
        ]
    );
}

#[test]
fn existing_certificate_is_resent_without_csr_or_issue() {
    let mut dev = Fake::default();
    let r = run_with(&mut dev, cfg(), Some(chain()), true);
    assert!(matches!(r.outcome, Outcome::Passed { resumed: true, .. }), "{:?}", r.outcome);
    assert_eq!(r.issued_calls, 0);
    assert!(!dev.verbs.contains(&"CSR".to_string()));
}

#[test]
fn no_lock_when_profile_says_so() {
    let mut dev = Fake::default();
    let mut c = cfg();
    c.lock = false;
    let r = run_with(&mut dev, c, None, true);
    assert!(matches!(r.outcome, Outcome::Passed { .. }));
    assert!(!dev.locked);
    assert!(!dev.verbs.contains(&"LOCK".to_string()));
}

#[test]
fn silent_device_fails_at_hello_with_cable_hint() {
    let mut dev = Fake::default();
    dev.silent.insert("HELLO", 99);
    let r = run(&mut dev);
    let f = failure(&r);
    assert_eq!((f.stage, f.code.as_str()), (Stage::Hello, "no_response"));
    assert!(f.hint.contains("cable"));
    assert_eq!(dev.verbs.len(), 3, "HELLO tried 1 + 2 retries");
}

#[test]
fn one_timeout_is_retried_and_passes() {
    let mut dev = Fake::default();
    dev.silent.insert("READ", 1);
    let r = run(&mut dev);
    assert!(matches!(r.outcome, Outcome::Passed { .. }), "{:?}", r.outcome);
    assert!(r.notes.iter().any(|n| n.kind == NoteKind::Retry));
}

#[test]
fn corrupt_answers_are_retried_then_fail() {
    let mut dev = Fake::default();
    dev.corrupt.insert("IDENT", 1);
    assert!(matches!(run(&mut dev).outcome, Outcome::Passed { .. }));
    let mut dev = Fake::default();
    dev.corrupt.insert("IDENT", 9);
    let r = run(&mut dev);
    let f = failure(&r);
    assert_eq!((f.stage, f.code.as_str()), (Stage::Identify, "corrupt_frames"));
    assert!(f.hint.contains("baud"));
}

#[test]
fn unplug_mid_write_is_retryable_with_resume_hint() {
    let mut dev = Fake::default();
    let mut s = Session::new(cfg());
    let mut a = s.start();
    loop {
        a = match a {
            Action::Send { frame, .. } if frame.head == "PUT" => s.handle(Input::Gone("EIO".into())),
            Action::Send { frame, .. } => match dev.answer(&frame) {
                Reply::Frame(f) => s.handle(Input::Frame(f)),
                _ => unreachable!(),
            },
            Action::Lookup { .. } => s.handle(Input::Lookup(Ok(None))),
            Action::Issue { .. } => s.handle(Input::Issued(Ok(chain()))),
            Action::Finish(Outcome::Failed(f)) => {
                assert_eq!((f.stage, f.code.as_str(), f.retryable), (Stage::WriteCert, "unplugged", true));
                assert!(f.hint.contains("same certificate"));
                break;
            }
            other => panic!("{other:?}"),
        };
    }
}

#[test]
fn stray_frames_are_dropped() {
    let mut s = Session::new(cfg());
    let Action::Send { frame, .. } = s.start() else { panic!() };
    let stray = Frame::ok(frame.rid.wrapping_add(100)).with("proto", "1");
    assert_eq!(s.handle(Input::Frame(stray)), Action::KeepWaiting);
    let next = s.handle(Input::Frame(Frame::ok(frame.rid).with("proto", "1")));
    assert!(matches!(next, Action::Send { frame, .. } if frame.head == "IDENT"));
}

#[test]
fn retry_uses_new_request_id_so_late_answers_are_stray() {
    let mut s = Session::new(cfg());
    let Action::Send { frame: first, .. } = s.start() else { panic!() };
    let Action::Send { frame: second, .. } = s.handle(Input::Timeout) else { panic!() };
    assert_ne!(first.rid, second.rid);
    assert_eq!(s.handle(Input::Frame(Frame::ok(first.rid).with("proto", "1"))), Action::KeepWaiting);
}

#[test]
fn read_back_mismatch_fails() {
    let mut dev = Fake { tamper_readback: true, ..Default::default() };
    let r = run(&mut dev);
    let f = failure(&r);
    assert_eq!((f.stage, f.code.as_str()), (Stage::ReadBack, "read_back_mismatch"));
}

#[test]
fn failed_proof_is_not_retryable() {
    let mut dev = Fake::default();
    let r = run_with(&mut dev, cfg(), None, false);
    let f = failure(&r);
    assert_eq!((f.stage, f.code.as_str(), f.retryable), (Stage::Prove, "proof_failed", false));
    assert!(!dev.locked, "a device that fails its proof is never locked");
}

#[test]
fn lock_commit_timeout_asks_state_instead_of_retrying() {
    let mut dev = Fake { swallow_lock_commit: true, ..Default::default() };
    let r = run(&mut dev);
    assert!(matches!(r.outcome, Outcome::Passed { .. }), "{:?}", r.outcome);
    let locks = dev.verbs.iter().filter(|v| *v == "LOCK").count();
    assert_eq!(locks, 2, "prepare + one commit, never a blind second commit");
    assert_eq!(dev.verbs.last().map(String::as_str), Some("IDENT"));
}

#[test]
fn locked_device_with_our_certificate_is_verified_not_rewritten() {
    let mut dev = Fake { locked: true, key: Some(vec![7; 91]), ..Default::default() };
    dev.objects.insert("cert".into(), chain().cert_der);
    dev.objects.insert("chain".into(), chain().chain_der);
    let r = run_with(&mut dev, cfg(), Some(chain()), true);
    assert!(matches!(r.outcome, Outcome::Passed { already_provisioned: true, .. }), "{:?}", r.outcome);
    assert!(!dev.verbs.contains(&"PUT".to_string()));
}

#[test]
fn locked_device_unknown_to_us_fails_not_retryable() {
    let mut dev = Fake { locked: true, key: Some(vec![7; 91]), ..Default::default() };
    let r = run(&mut dev);
    let f = failure(&r);
    assert_eq!((f.code.as_str(), f.retryable), ("locked_unknown", false));
}

#[test]
fn issue_refusal_ends_the_session_with_that_failure() {
    let mut dev = Fake::default();
    let mut s = Session::new(cfg());
    let mut a = s.start();
    loop {
        a = match a {
            Action::Send { frame, .. } => match dev.answer(&frame) {
                Reply::Frame(f) => s.handle(Input::Frame(f)),
                _ => unreachable!(),
            },
            Action::Lookup { .. } => s.handle(Input::Lookup(Ok(None))),
            Action::Issue { .. } => s.handle(Input::Issued(Err(Failure {
                stage: Stage::Issue,
                code: FailureCode::CsrBadSignature,
                reason: "CSR subject does not match".into(),
                hint: "set aside".into(),
                retryable: false,
            }))),
            Action::Finish(Outcome::Failed(f)) => {
                assert_eq!(f.code, FailureCode::CsrBadSignature);
                break;
            }
            other => panic!("{other:?}"),
        };
    }
    assert!(!dev.verbs.contains(&"PUT".to_string()));
}

#[test]
fn device_error_codes_become_clear_failures() {
    let mut s = Session::new(cfg());
    let Action::Send { frame, .. } = s.start() else { panic!() };
    let a = s.handle(Input::Frame(Frame::err(frame.rid, ErrorCode::UnsupportedVersion, "need proto 2")));
    let Action::Finish(Outcome::Failed(f)) = a else { panic!("{a:?}") };
    assert!(f.reason.contains("426 UNSUPPORTED_VERSION") && f.reason.contains("need proto 2"), "{}", f.reason);
    assert!(!f.retryable);
}

#[test]
fn bad_serial_in_ident_is_refused() {
    let mut s = Session::new(cfg());
    let Action::Send { frame, .. } = s.start() else { panic!() };
    let Action::Send { frame, .. } = s.handle(Input::Frame(Frame::ok(frame.rid).with("proto", "1"))) else { panic!() };
    let a = s.handle(Input::Frame(Frame::ok(frame.rid).with("serial", "bad%20serial").with("state", "blank")));
    assert!(matches!(a, Action::Finish(Outcome::Failed(ref f)) if f.code == FailureCode::BadResponse), "{a:?}");
}

#[test]
fn deadlines_grow_with_line_length_and_verb_class() {
    let mut s = Session::new(cfg());
    let Action::Send { timeout_ms: hello, .. } = s.start() else { panic!() };
    assert!((500..1000).contains(&hello), "{hello}");
    assert_eq!(verb_timeout_ms("KEYGEN"), 10_000);
}

#[test]
fn corrupt_line_for_another_request_is_waited_out_not_retried() {
    let mut s = Session::new(cfg());
    let Action::Send { frame, .. } = s.start() else { panic!() };
    // Console noise that happens to carry a marker: not ours, keep waiting.
    assert_eq!(s.handle(Input::Corrupt("@< 999 OK junk *ZZZZ".into())), Action::KeepWaiting);
    assert_eq!(s.handle(Input::Corrupt("oversized line (1500 bytes)".into())), Action::KeepWaiting);
    // The real answer still arrives and is taken.
    let next = s.handle(Input::Frame(Frame::ok(frame.rid).with("proto", "1")));
    assert!(matches!(next, Action::Send { frame, .. } if frame.head == "IDENT"));
}

#[test]
fn the_last_tries_corrupt_answer_fails_corrupt_frames_at_once_without_waiting_out_the_deadline() {
    // docs/protocol.md 3: the host used to wait the whole deadline (10 s for
    // CSR) after the last try's damaged answer before failing.
    let mut s = Session::new(cfg());
    let mut a = s.start();
    for i in 0..3 {
        let Action::Send { frame, .. } = a else { panic!("try {i}: {a:?}") };
        a = s.handle(Input::Corrupt(format!("@< {} OK proto=1 *0000", frame.rid)));
    }
    let Action::Finish(Outcome::Failed(f)) = a else { panic!("no timeout needed: {a:?}") };
    assert_eq!(f.code, FailureCode::CorruptFrames);
}

#[test]
fn a_corrupt_answer_to_lock_commit_asks_ident_at_once_and_never_resends_the_commit() {
    let mut dev = Fake::default();
    let mut s = Session::new(cfg());
    let mut a = s.start();
    let mut commits = 0;
    let mut after_commit = Vec::new();
    let outcome = loop {
        a = match a {
            Action::Send { frame, .. } => {
                if commits > 0 {
                    after_commit.push(frame.head.clone());
                }
                let is_commit = frame.head == "LOCK" && frame.field("phase") == Some("commit");
                let reply = dev.answer(&frame);
                if is_commit {
                    commits += 1;
                    s.handle(Input::Corrupt(format!("@< {} OK state=locked *0000", frame.rid)))
                } else {
                    match reply {
                        Reply::Frame(f) => s.handle(Input::Frame(f)),
                        _ => s.handle(Input::Timeout),
                    }
                }
            }
            Action::Lookup { .. } => s.handle(Input::Lookup(Ok(None))),
            Action::Issue { .. } => s.handle(Input::Issued(Ok(chain()))),
            Action::CheckProof { .. } => s.handle(Input::ProofChecked(Ok(()))),
            Action::Finish(o) => break o,
            other => panic!("{other:?}"),
        };
    };
    assert_eq!(commits, 1, "LOCK commit is never resent");
    assert_eq!(after_commit, vec!["IDENT".to_string()]);
    assert!(matches!(outcome, Outcome::Passed { .. }), "{outcome:?}");
}

#[test]
fn persistent_oversized_answers_fail_as_corrupt_frames() {
    let mut s = Session::new(cfg());
    let mut a = s.start();
    for _ in 0..3 {
        assert!(matches!(a, Action::Send { .. }));
        assert_eq!(s.handle(Input::Corrupt("oversized line (1500 bytes)".into())), Action::KeepWaiting);
        a = s.handle(Input::Timeout);
    }
    let Action::Finish(Outcome::Failed(f)) = a else { panic!("{a:?}") };
    assert_eq!(f.code, FailureCode::CorruptFrames);
    assert!(f.reason.contains("oversized"), "{}", f.reason);
}

#[test]
fn lookup_failure_ends_the_session() {
    let mut dev = Fake::default();
    let mut s = Session::new(cfg());
    let mut a = s.start();
    loop {
        a = match a {
            Action::Send { frame, .. } => match dev.answer(&frame) {
                Reply::Frame(f) => s.handle(Input::Frame(f)),
                _ => unreachable!(),
            },
            Action::Lookup { .. } => s.handle(Input::Lookup(Err(Failure {
                stage: Stage::Lookup,
                code: FailureCode::CertificateRevoked,
                reason: "revoked".into(),
                hint: "rework".into(),
                retryable: false,
            }))),
            Action::Finish(Outcome::Failed(f)) => {
                assert_eq!(f.code, FailureCode::CertificateRevoked);
                break;
            }
            other => panic!("{other:?}"),
        };
    }
}

fn connect_cfg() -> SessionConfig {
    SessionConfig {
        connect: Some(ConnectCheck { host: "127.0.0.1".into(), port: 8883, topic: "f/dev".into(), broker_ca_der: (0..100u8).collect() }),
        ..cfg()
    }
}

#[test]
fn connect_check_writes_the_broker_ca_then_connects_after_prove_and_before_lock() {
    let mut dev = Fake::default();
    let r = run_with(&mut dev, connect_cfg(), None, true);
    assert!(matches!(r.outcome, Outcome::Passed { .. }), "{:?}", r.outcome);
    assert_eq!(dev.objects["brokerca"], (0..100u8).collect::<Vec<u8>>());
    let tail: Vec<&str> = dev.verbs.iter().map(String::as_str).skip_while(|v| *v != "PROVE").collect();
    assert_eq!(tail, ["PROVE", "PUT", "PUT", "COMMIT", "CONNECT", "LOCK", "LOCK"]);
    assert!(
        r.notes.iter().any(|n| n.stage == Stage::Connect && n.kind == NoteKind::Completed && n.detail.contains("12 ms")),
        "{:#?}",
        r.notes
    );
    assert!(dev.locked);
}

#[test]
fn without_a_connect_check_no_connect_is_sent() {
    let mut dev = Fake::default();
    let r = run(&mut dev);
    assert!(matches!(r.outcome, Outcome::Passed { .. }));
    assert!(!dev.verbs.iter().any(|v| v == "CONNECT"));
    assert!(!dev.objects.contains_key("brokerca"));
}

#[test]
fn broker_refusing_the_device_fails_connect_unlocked_and_not_retryable() {
    let mut dev = Fake { connect_fails: Some("refused".into()), ..Fake::default() };
    let r = run_with(&mut dev, connect_cfg(), None, true);
    let f = failure(&r);
    assert_eq!((f.stage, f.code.as_str(), f.retryable), (Stage::Connect, "connect_refused", false));
    assert!(f.reason.contains("UnknownCA"), "{f:?}");
    assert!(!dev.locked, "a device the broker refuses is never locked");
}

#[test]
fn unreachable_broker_is_a_retryable_connect_failure() {
    let mut dev = Fake { connect_fails: Some("unreachable".into()), ..Fake::default() };
    let f = failure(&run_with(&mut dev, connect_cfg(), None, true)).clone();
    assert_eq!((f.code.as_str(), f.retryable), ("connect_unreachable", true));
}

#[test]
fn device_connect_reason_text_never_becomes_a_code() {
    // Whatever a device puts in `reason=` (and `msg=`) of a failed CONNECT,
    // the code is one of the closed CONNECT set; the device's words reach
    // only the reason, without control characters and bounded in length.
    let long = "x".repeat(5 * 1024);
    let multibyte = "é漢🙂".repeat(700);
    let said: Vec<String> = vec![
        "dns".into(),
        "store_full".into(),
        "signer_pin_locked".into(),
        "refused\n".into(),
        "REFUSED".into(),
        "".into(),
        long.clone(),
        multibyte.clone(),
        "a\u{0}b\u{7}c\r\nd\u{1b}[31m".into(),
        "\u{202e}unreachable".into(),
    ];
    let closed = [
        FailureCode::ConnectRefused,
        FailureCode::ConnectTlsVerification,
        FailureCode::ConnectUnreachable,
        FailureCode::ConnectTimeout,
        FailureCode::ConnectOther,
    ];
    for reason in said {
        for msg in [String::from("short"), long.clone(), multibyte.clone(), "bell\u{7}\u{0}nul\nline".into()] {
            let mut dev = Fake { connect_fails: Some(reason.clone()), connect_msg: Some(msg.clone()), ..Fake::default() };
            let f = failure(&run_with(&mut dev, connect_cfg(), None, true)).clone();
            assert_eq!(f.stage, Stage::Connect);
            assert_eq!(f.code, FailureCode::ConnectOther, "device text {:?} made code {:?}", &reason[..reason.len().min(40)], f.code);
            assert!(closed.contains(&f.code));
            assert_eq!((f.hint.as_str(), f.retryable), (f.code.hint(), f.code.retryable()), "hint and flag come from the catalogue");
            assert!(!f.reason.chars().any(char::is_control), "control characters in {:?}", &f.reason[..f.reason.len().min(80)]);
            assert!(f.reason.len() <= 600, "reason of {} bytes", f.reason.len());
            assert!(!dev.locked);
        }
    }
    // The known reasons still pick their own code.
    for (reason, code) in [
        ("refused", FailureCode::ConnectRefused),
        ("timeout", FailureCode::ConnectTimeout),
        ("tls_verification", FailureCode::ConnectTlsVerification),
    ] {
        let mut dev = Fake { connect_fails: Some(reason.into()), ..Fake::default() };
        assert_eq!(failure(&run_with(&mut dev, connect_cfg(), None, true)).code, code);
    }
}

#[test]
fn firmware_without_connect_is_told_apart() {
    let mut dev = Fake { no_connect: true, ..Fake::default() };
    let f = failure(&run_with(&mut dev, connect_cfg(), None, true)).clone();
    assert_eq!((f.stage, f.code.as_str(), f.retryable), (Stage::Connect, "connect_unsupported", false));
    assert!(!dev.locked);
}

#[test]
fn a_silent_connect_is_retried_with_a_new_id_then_passes() {
    let mut dev = Fake::default();
    dev.silent.insert("CONNECT", 1);
    let r = run_with(&mut dev, connect_cfg(), None, true);
    assert!(matches!(r.outcome, Outcome::Passed { .. }), "{:?}", r.outcome);
    assert_eq!(dev.verbs.iter().filter(|v| *v == "CONNECT").count(), 2);
    assert_eq!(verb_timeout_ms("CONNECT"), CONNECT_TIMEOUT_MS);
}

#[test]
fn busy_device_is_asked_again_after_a_growing_back_off() {
    let mut s = Session::new(cfg());
    let Action::Send { frame, .. } = s.start() else { panic!() };
    let busy = |rid| Input::Frame(Frame::err(rid, ErrorCode::Busy, "flash erase"));
    assert_eq!(s.handle(busy(frame.rid)), Action::Wait { ms: 100 });
    let Action::Send { frame: again, .. } = s.handle(Input::Waited) else { panic!() };
    assert_eq!(again.head, "HELLO");
    assert_ne!(again.rid, frame.rid, "a new request id after the wait");
    assert_eq!(s.handle(busy(again.rid)), Action::Wait { ms: 200 });
    let Action::Send { frame: third, .. } = s.handle(Input::Waited) else { panic!() };
    // Out of tries: the third BUSY is a clear, retryable failure.
    let a = s.handle(busy(third.rid));
    let Action::Finish(Outcome::Failed(f)) = a else { panic!("{a:?}") };
    assert!(f.reason.contains("503 BUSY") && f.retryable, "{f:?}");
}

/// Run a QA inspection against `dev`; returns the outcome and what was read.
fn inspect(dev: &mut Fake, proof_ok: bool) -> (Outcome, Option<Inspection>) {
    let mut s = Session::new(SessionConfig { inspect: true, ..cfg() });
    let mut action = s.start();
    for _ in 0..1000 {
        let input = match action {
            Action::Send { frame, .. } => match dev.answer(&frame) {
                Reply::Frame(f) => Input::Frame(f),
                Reply::Silent => Input::Timeout,
                Reply::Corrupt => Input::Corrupt(format!("@< {} OK garbage *0000", frame.rid)),
            },
            Action::KeepWaiting => Input::Timeout,
            Action::Wait { .. } => Input::Waited,
            Action::CheckProof { spki_der, message, .. } => {
                assert_eq!(spki_der, vec![7u8; 91], "the proof is checked against the device's key");
                assert!(message.starts_with(b"IMPRINT-POP-V1\0SN-0001\0"));
                Input::ProofChecked(if proof_ok { Ok(()) } else { Err("bad signature".into()) })
            }
            Action::Lookup { .. } | Action::Issue { .. } | Action::Write { .. } => {
                panic!("an inspection never looks up, issues or writes raw bytes: {action:?}")
            }
            Action::Finish(outcome) => return (outcome, s.inspection().cloned()),
        };
        action = s.handle(input);
    }
    panic!("inspection did not finish");
}

#[test]
fn a_qa_inspection_reads_cert_chain_and_proof_and_writes_nothing() {
    let mut dev = Fake::default();
    assert!(matches!(run(&mut dev).outcome, Outcome::Passed { .. }));
    let (objects, locked) = (dev.objects.clone(), dev.locked);
    dev.verbs.clear();
    let (outcome, found) = inspect(&mut dev, true);
    assert!(matches!(outcome, Outcome::Passed { already_provisioned: true, .. }), "{outcome:?}");
    let found = found.unwrap();
    assert_eq!(found.cert_der.as_deref(), Some(&chain().cert_der[..]));
    assert_eq!(found.chain_der.as_deref(), Some(&chain().chain_der[..]));
    assert_eq!(found.spki_der, Some(vec![7u8; 91]));
    assert_eq!(found.proof, Some(Ok(())));
    assert_eq!(found.identity.state, DeviceState::Locked);
    // Only reads: no CSR, PUT, COMMIT, LOCK, RESET; KEYGEN without force.
    assert!(dev.verbs.iter().all(|v| ["HELLO", "IDENT", "KEYGEN", "READ", "PROVE"].contains(&v.as_str())), "{:?}", dev.verbs);
    assert_eq!((dev.objects.clone(), dev.locked), (objects, locked), "the device is unchanged");
}

#[test]
fn a_qa_inspection_reports_a_failed_proof_and_never_keygens_a_blank_device() {
    let mut dev = Fake::default();
    assert!(matches!(run(&mut dev).outcome, Outcome::Passed { .. }));
    let (_, found) = inspect(&mut dev, false);
    assert_eq!(found.unwrap().proof, Some(Err("bad signature".into())));

    let mut blank = Fake::default();
    let (outcome, found) = inspect(&mut blank, true);
    assert!(matches!(outcome, Outcome::Passed { .. }), "{outcome:?}");
    let found = found.unwrap();
    assert_eq!((found.spki_der, found.cert_der, found.proof), (None, None, None));
    assert_eq!(blank.verbs, ["HELLO", "IDENT"], "a blank device gets no KEYGEN (it would make a key)");
    assert!(blank.key.is_none());
}

/// Drive a session whose first lookup answers `first` and later lookups `None`.
fn run_reissue(dev: &mut Fake, first: Reissue) -> (Outcome, Vec<String>, u32) {
    let mut s = Session::new(cfg());
    let mut action = s.start();
    let mut lookups = 0;
    let mut issued = 0;
    for _ in 0..1000 {
        let input = match action {
            Action::Send { frame, .. } => match dev.answer(&frame) {
                Reply::Frame(f) => Input::Frame(f),
                _ => Input::Timeout,
            },
            Action::Lookup { spki_der, .. } => {
                lookups += 1;
                if lookups == 1 {
                    Input::Reissue(first.clone())
                } else {
                    assert_eq!(spki_der, vec![9u8; 91], "the lookup after RESET is over the new key");
                    Input::Lookup(Ok(None))
                }
            }
            Action::Issue { .. } => {
                issued += 1;
                Input::Issued(Ok(chain()))
            }
            Action::CheckProof { .. } => Input::ProofChecked(Ok(())),
            Action::Finish(o) => return (o, dev.verbs.clone(), issued),
            other => panic!("unexpected {other:?}"),
        };
        action = s.handle(input);
    }
    panic!("session did not finish");
}

#[test]
fn rework_resets_the_device_then_keygens_and_certifies_the_new_key() {
    let mut dev = Fake { key: Some(vec![7u8; 91]), ..Fake::default() };
    let (o, verbs, issued) = run_reissue(&mut dev, Reissue::Rework);
    assert!(matches!(o, Outcome::Passed { .. }), "{o:?}");
    let i = verbs.iter().position(|v| v == "RESET").expect("RESET sent");
    assert_eq!(&verbs[i..i + 3], ["RESET", "KEYGEN", "CSR"]);
    assert_eq!(issued, 1);
}

#[test]
fn rework_of_a_locked_device_sends_no_reset_and_renewal_of_one_issues_nothing() {
    for (r, code) in
        [(Reissue::Rework, FailureCode::DeviceLocked), (Reissue::Renew { current_serial_hex: "0a".into() }, FailureCode::RenewalLocked)]
    {
        let mut dev = Fake { key: Some(vec![7u8; 91]), locked: true, ..Fake::default() };
        let (o, verbs, issued) = run_reissue(&mut dev, r);
        let Outcome::Failed(f) = o else { panic!("{o:?}") };
        assert_eq!((f.code, f.stage, issued), (code, Stage::Lookup, 0));
        assert!(!verbs.iter().any(|v| v == "RESET" || v == "CSR" || v == "PUT"), "{verbs:?}");
    }
}

#[test]
fn renewal_asks_a_csr_over_the_existing_key_and_issues_once() {
    let mut dev = Fake { key: Some(vec![7u8; 91]), ..Fake::default() };
    let (o, verbs, issued) = run_reissue(&mut dev, Reissue::Renew { current_serial_hex: "0a".into() });
    assert!(matches!(o, Outcome::Passed { .. }), "{o:?}");
    assert!(!verbs.iter().any(|v| v == "RESET"), "{verbs:?}");
    assert_eq!(verbs.iter().filter(|v| *v == "KEYGEN").count(), 1);
    assert_eq!(issued, 1);
    assert_eq!(dev.key, Some(vec![7u8; 91]), "the same key");
}
