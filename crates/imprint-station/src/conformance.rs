//! The conformance suite (docs/conformance.md): does a board implement
//! docs/protocol.md? Each check is a named member of the closed
//! [`CheckId`]; it sends requests over any [`Transport`] (a real port, a pty,
//! [`imprint_serial::MemoryTransport`]) and judges the answers against the
//! section of docs/protocol.md it names, keeping the frames that show why.
//!
//! Unlike the provisioning session this tester is strict: it never retries a
//! damaged or missing answer (a conforming board on a clean link needs no
//! retry), and it treats every device-side slip as a finding. It waits out
//! `503 BUSY` as the host does (100 ms, then 200 ms) and reports it.
//!
//! What it changes: on a `blank` board it makes a key, writes a test
//! certificate and chain (from a throwaway CA, or the issuer given), and
//! RESETs the board to `blank` at the end, so nothing remains. With
//! [`ConformanceOptions::allow_lock`] it also commits the LOCK, which is
//! permanent: the report says so. On a board that is not blank it only
//! asks: nothing it does changes the board's persistent state (the checks
//! that need a blank board are skipped, with the reason).

use imprint_core::issuance::{check_csr, key_kind, verify_pop, KeyKind, KeyType, Profile};
use imprint_proto::codec::{b64, crc16, pct_encode, unb64};
use imprint_proto::session::{pop_message, verb_timeout_ms};
use imprint_proto::{Decoded, Decoder, Direction, Frame, MAX_LINE};
use imprint_serial::{SerialTransport, Transport, TransportError};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// Every check of the suite, in the order it runs. A closed set: the JSON
/// report and docs/conformance.md use these names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum CheckId {
    Hello,
    HelloVersion,
    Ident,
    UnknownVerb,
    BadCrcIgnored,
    LineLimit,
    ConsoleNoise,
    Crlf,
    RequestIds,
    FieldErrors,
    BlankRefusals,
    Keygen,
    KeygenIdempotent,
    Csr,
    CsrRetry,
    Read,
    PutCommit,
    CommitWrongHashKeepsOld,
    CommitForeignKeyRefused,
    Chain,
    Prove,
    LockTwoPhase,
    Connect,
    LockCommit,
    LockedRefusals,
    Reset,
    NoStrayFrames,
    ConsoleHygiene,
    Timing,
    Busy,
}

impl CheckId {
    /// Every check, in running order.
    pub const ALL: &'static [CheckId] = &[
        CheckId::Hello,
        CheckId::HelloVersion,
        CheckId::Ident,
        CheckId::UnknownVerb,
        CheckId::BadCrcIgnored,
        CheckId::LineLimit,
        CheckId::ConsoleNoise,
        CheckId::Crlf,
        CheckId::RequestIds,
        CheckId::FieldErrors,
        CheckId::BlankRefusals,
        CheckId::Keygen,
        CheckId::KeygenIdempotent,
        CheckId::Csr,
        CheckId::CsrRetry,
        CheckId::Read,
        CheckId::PutCommit,
        CheckId::CommitWrongHashKeepsOld,
        CheckId::CommitForeignKeyRefused,
        CheckId::Chain,
        CheckId::Prove,
        CheckId::LockTwoPhase,
        CheckId::Connect,
        CheckId::LockCommit,
        CheckId::LockedRefusals,
        CheckId::Reset,
        CheckId::NoStrayFrames,
        CheckId::ConsoleHygiene,
        CheckId::Timing,
        CheckId::Busy,
    ];

    /// The stored/printed name (as in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::Hello => "hello",
            CheckId::HelloVersion => "hello_version",
            CheckId::Ident => "ident",
            CheckId::UnknownVerb => "unknown_verb",
            CheckId::BadCrcIgnored => "bad_crc_ignored",
            CheckId::LineLimit => "line_limit",
            CheckId::ConsoleNoise => "console_noise",
            CheckId::Crlf => "crlf",
            CheckId::RequestIds => "request_ids",
            CheckId::FieldErrors => "field_errors",
            CheckId::BlankRefusals => "blank_refusals",
            CheckId::Keygen => "keygen",
            CheckId::KeygenIdempotent => "keygen_idempotent",
            CheckId::Csr => "csr",
            CheckId::CsrRetry => "csr_retry",
            CheckId::Read => "read",
            CheckId::PutCommit => "put_commit",
            CheckId::CommitWrongHashKeepsOld => "commit_wrong_hash_keeps_old",
            CheckId::CommitForeignKeyRefused => "commit_foreign_key_refused",
            CheckId::Chain => "chain",
            CheckId::Prove => "prove",
            CheckId::LockTwoPhase => "lock_two_phase",
            CheckId::Connect => "connect",
            CheckId::LockCommit => "lock_commit",
            CheckId::LockedRefusals => "locked_refusals",
            CheckId::Reset => "reset",
            CheckId::NoStrayFrames => "no_stray_frames",
            CheckId::ConsoleHygiene => "console_hygiene",
            CheckId::Timing => "timing",
            CheckId::Busy => "busy",
        }
    }

    /// The section of docs/protocol.md the check judges by.
    pub fn section(self) -> &'static str {
        match self {
            CheckId::Hello | CheckId::HelloVersion => "4.1",
            CheckId::Ident => "4.2",
            CheckId::UnknownVerb => "4, 5",
            CheckId::BadCrcIgnored => "2.4, 2.5",
            CheckId::LineLimit => "2.3",
            CheckId::ConsoleNoise => "2.5",
            CheckId::Crlf => "2.1",
            CheckId::RequestIds => "2.1, 3",
            CheckId::FieldErrors => "2.2, 4, 5",
            CheckId::BlankRefusals => "4.0",
            CheckId::Keygen | CheckId::KeygenIdempotent => "4.3",
            CheckId::Csr | CheckId::CsrRetry => "4.4",
            CheckId::Read => "4.5",
            CheckId::PutCommit => "4.6, 4.7",
            CheckId::CommitWrongHashKeepsOld | CheckId::CommitForeignKeyRefused | CheckId::Chain => "4.7",
            CheckId::Prove => "4.8",
            CheckId::LockTwoPhase | CheckId::LockCommit | CheckId::LockedRefusals => "4.9",
            CheckId::Connect => "4.11",
            CheckId::Reset => "4.10",
            CheckId::NoStrayFrames => "3",
            CheckId::ConsoleHygiene => "2.5",
            CheckId::Timing => "6",
            CheckId::Busy => "3",
        }
    }

    /// What the check asks, in one line.
    pub fn title(self) -> &'static str {
        match self {
            CheckId::Hello => "HELLO proto=1 answers proto=1 maxline=1024, a chunk and the caps",
            CheckId::HelloVersion => "HELLO proto=2 answers 426 with proto=1",
            CheckId::Ident => "IDENT answers a valid serial, state and identity fields",
            CheckId::UnknownVerb => "an unknown verb (FROB) answers 405",
            CheckId::BadCrcIgnored => "a request with a wrong CRC is ignored; the next one is answered",
            CheckId::LineLimit => "a 1024-byte request is answered; a 1025-byte one ignored and the next answered",
            CheckId::ConsoleNoise => "console text, binary garbage, an echoed answer and console bytes before a frame leave one answer",
            CheckId::Crlf => "a request ending in CR LF is answered",
            CheckId::RequestIds => "answers echo ids 65535 and 1; a frame with a leading-zero id is ignored",
            CheckId::FieldErrors => "each missing or malformed field answers 400, before any state error",
            CheckId::BlankRefusals => "a blank board refuses CSR, PROVE, LOCK (409) and has no cert (404)",
            CheckId::Keygen => "KEYGEN on a blank board makes a key of the requested alg (new=1)",
            CheckId::KeygenIdempotent => "KEYGEN again returns the same key with new=0, whatever alg is asked",
            CheckId::Csr => "CSR is read back with its len and sha256 and passes the station's CSR checks",
            CheckId::CsrRetry => "a repeated CSR's len and sha256 describe what READ returns",
            CheckId::Read => "READ honours max, returns empty data at the end, 416 past it, 400 for max=0",
            CheckId::PutCommit => "PUT in chunks (retries give the same next, 416, 413) and COMMIT make the cert active",
            CheckId::CommitWrongHashKeepsOld => "a COMMIT with a wrong hash or length answers 422 and the old object stays",
            CheckId::CommitForeignKeyRefused => "a certificate for another key answers 422 and the old one stays",
            CheckId::Chain => "the chain commits and the board reports provisioned",
            CheckId::Prove => "PROVE signs the domain-separated message with the device key",
            CheckId::LockTwoPhase => "LOCK needs a fresh token: none, wrong or invalidated by PUT answers 409",
            CheckId::Connect => "the board connects to the MQTT broker with its new identity",
            CheckId::LockCommit => "LOCK commit locks the board for good",
            CheckId::LockedRefusals => "a locked board refuses writes with 423 and still reads and proves",
            CheckId::Reset => "RESET checks confirm and returns the board to blank",
            CheckId::NoStrayFrames => "no unsolicited or duplicate answer during the run",
            CheckId::ConsoleHygiene => "no console line carries a frame marker; no oversized line",
            CheckId::Timing => "every answer came within its verb's deadline",
            CheckId::Busy => "503 BUSY only as a rare exception",
        }
    }
}

/// How one check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckResult {
    Pass,
    Fail,
    /// Allowed by the protocol, but worth a look (e.g. 503 BUSY answers).
    Warn,
    /// Not run here: the reason says why.
    Skipped,
}

/// One check's result, with the frames that show why.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub check: CheckId,
    pub result: CheckResult,
    /// The section of docs/protocol.md.
    pub section: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// The lines exchanged (`> ` sent, `< ` received, `# ` console/notes).
    pub frames: Vec<String>,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct ConformanceReport {
    pub port: String,
    pub serial: Option<String>,
    /// IDENT `state` before the run.
    pub state_before: Option<String>,
    /// IDENT `state` after the run.
    pub state_after: Option<String>,
    /// What the run changed on the board, in words; empty when nothing.
    pub changed: Vec<String>,
    pub checks: Vec<CheckReport>,
    /// No check failed (warnings and skips do not fail a run).
    pub passed: bool,
}

impl ConformanceReport {
    pub fn result(&self, id: CheckId) -> Option<CheckResult> {
        self.checks.iter().find(|c| c.check == id).map(|c| c.result)
    }
    pub fn failed(&self) -> Vec<CheckId> {
        self.checks.iter().filter(|c| c.result == CheckResult::Fail).map(|c| c.check).collect()
    }
}

/// A CA that issues the test certificates: its certificate and key, PEM.
#[derive(Clone, Debug)]
pub struct TestIssuer {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Where CONNECT goes (4.11).
#[derive(Clone, Debug)]
pub struct ConnectTarget {
    pub host: String,
    pub port: u16,
    pub topic: String,
    /// The broker's server CA (PEM), written as `brokerca`.
    pub broker_ca_pem: String,
}

/// What the suite may do.
#[derive(Clone, Debug, Default)]
pub struct ConformanceOptions {
    /// Link speed for deadlines (baud, 8N1); 115200 when 0.
    pub baud: u32,
    /// Commit the LOCK on a board that was blank (permanent).
    pub allow_lock: bool,
    /// Issue the test certificates from this CA (e.g. one a broker trusts);
    /// a throwaway CA otherwise.
    pub issuer: Option<TestIssuer>,
    /// Run the CONNECT check against this broker.
    pub connect: Option<ConnectTarget>,
}

/// Why the suite could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    #[error(transparent)]
    Port(#[from] TransportError),
    #[error("test issuer: {0}")]
    Issuer(String),
}

/// Open `port` and run the suite on it.
pub fn run_port(port: &str, opts: &ConformanceOptions) -> Result<ConformanceReport, ConformanceError> {
    let baud = if opts.baud == 0 { 115_200 } else { opts.baud };
    let mut t = SerialTransport::open(port, baud)?;
    run(&mut t, opts)
}

/// Run the suite over `t`.
pub fn run(t: &mut dyn Transport, opts: &ConformanceOptions) -> Result<ConformanceReport, ConformanceError> {
    let certs = TestCerts::new(opts.issuer.as_ref())?;
    let baud = if opts.baud == 0 { 115_200 } else { opts.baud };
    let port = t.name().to_string();
    let mut s = Suite {
        link: Link::new(t, (baud / 10).max(1)),
        opts: opts.clone(),
        certs,
        checks: Vec::new(),
        stop: None,
        serial: None,
        state_before: None,
        chunk: 512,
        caps: Vec::new(),
        spki: None,
        cert1: None,
        changed: Vec::new(),
        locked_by_us: false,
    };
    s.run_all();
    let state_after = if s.link.gone.is_none() { s.ident_state() } else { None };
    let passed = !s.checks.iter().any(|c| c.result == CheckResult::Fail);
    Ok(ConformanceReport {
        port,
        serial: s.serial.clone(),
        state_before: s.state_before.clone(),
        state_after,
        changed: s.changed.clone(),
        checks: s.checks,
        passed,
    })
}

// ---------------------------------------------------------------- the link

enum Got {
    Answer(Frame),
    NoAnswer(u32),
    Corrupt(String),
    Gone(String),
}

fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let t = text.trim_end_matches(['\n', '\r']);
    cut(t, 160)
}

fn cut(t: &str, max: usize) -> String {
    if t.chars().count() <= max {
        return t.to_string();
    }
    let head: String = t.chars().take(max / 2).collect();
    let tail: String = t.chars().rev().take(max / 2).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{head}…{tail}")
}

/// Does a line from the device carry a frame marker?
fn has_marker(line: &str) -> bool {
    line.contains("@<") || line.contains("@>")
}

/// The rid a corrupt line legibly names (`@< <rid> `).
fn corrupt_rid(line: &str) -> Option<u16> {
    let rest = line.strip_prefix("@< ")?;
    rest.split(' ').next()?.parse().ok()
}

struct Link<'a> {
    t: &'a mut dyn Transport,
    dec: Decoder,
    next_rid: u16,
    bytes_per_sec: u32,
    /// Lines of the check in progress.
    log: Vec<String>,
    stray: Vec<String>,
    bad_console: Vec<String>,
    late: Vec<String>,
    busy: Vec<String>,
    gone: Option<String>,
}

impl<'a> Link<'a> {
    fn new(t: &'a mut dyn Transport, bytes_per_sec: u32) -> Self {
        let mut r = [0u8; 2];
        let start = match getrandom::fill(&mut r) {
            Ok(()) => 1 + (u16::from_le_bytes(r) % 30_000),
            Err(_) => 1,
        };
        Link {
            t,
            dec: Decoder::new(Direction::Response),
            next_rid: start,
            bytes_per_sec,
            log: Vec::new(),
            stray: Vec::new(),
            bad_console: Vec::new(),
            late: Vec::new(),
            busy: Vec::new(),
            gone: None,
        }
    }

    fn rid(&mut self) -> u16 {
        let r = self.next_rid;
        self.next_rid = if r == u16::MAX { 1 } else { r + 1 };
        r
    }

    /// The deadline of docs/protocol.md 6 for a request line of `len` bytes.
    fn deadline_ms(&self, verb: &str, len: usize) -> u32 {
        let stretch = ((len + MAX_LINE) as u64 * 2 * 1000) / u64::from(self.bytes_per_sec.max(1));
        verb_timeout_ms(verb).saturating_add(stretch as u32)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        if let Some(g) = &self.gone {
            return Err(g.clone());
        }
        self.log.push(format!("> {}", shown(bytes)));
        self.t.write_all(bytes).map_err(|e| self.lost(e))
    }

    fn lost(&mut self, e: TransportError) -> String {
        let why = format!("the port was lost: {e}");
        self.log.push(format!("# {why}"));
        self.gone = Some(why.clone());
        why
    }

    /// Read until an answer with `rid` (or a corrupt line naming it), or
    /// until `ms` pass. Everything else is judged and logged.
    fn await_answer(&mut self, rid: u16, ms: u32) -> Got {
        if let Some(g) = &self.gone {
            return Got::Gone(g.clone());
        }
        let deadline = Instant::now() + Duration::from_millis(u64::from(ms));
        let mut buf = [0u8; 512];
        loop {
            let n = match self.t.read_until(&mut buf, deadline) {
                Ok(0) => {
                    if Instant::now() >= deadline {
                        return Got::NoAnswer(ms);
                    }
                    continue;
                }
                Ok(n) => n,
                Err(TransportError::Gone(g)) => return Got::Gone(self.lost(TransportError::Gone(g))),
                Err(e) => {
                    self.log.push(format!("# serial error: {e}"));
                    if Instant::now() >= deadline {
                        return Got::NoAnswer(ms);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            for d in self.dec.feed(&buf[..n]) {
                match d {
                    Decoded::Frame(f) if f.rid == rid => {
                        self.log.push(format!("< {f}"));
                        return Got::Answer(f);
                    }
                    Decoded::Frame(f) => {
                        self.log.push(format!("< {f}   (stray: not the outstanding id {rid})"));
                        self.stray.push(format!("{f} (while waiting for {rid})"));
                    }
                    Decoded::Console(line) => {
                        self.log.push(format!("# console: {}", cut(&line, 120)));
                        if has_marker(&line) {
                            self.bad_console.push(format!("console line with a marker: {}", cut(&line, 120)));
                        }
                    }
                    Decoded::Corrupt { line, error } => {
                        self.log.push(format!("< {}   (corrupt: {error})", cut(&line, 140)));
                        if corrupt_rid(&line) == Some(rid) {
                            return Got::Corrupt(format!("{} ({error})", cut(&line, 100)));
                        }
                        self.bad_console.push(format!("a marked line that is not a valid frame: {}", cut(&line, 120)));
                    }
                    Decoded::Oversized { discarded } => {
                        self.log.push(format!("# an oversized line of {discarded} bytes was discarded"));
                        self.bad_console.push(format!("an oversized line ({discarded} bytes; the limit is {MAX_LINE})"));
                    }
                }
            }
        }
    }

    /// Send a request and wait for its answer; 503 BUSY is waited out as
    /// the host does (100 ms, then 200 ms; new ids).
    fn ask(&mut self, req: &Frame) -> Got {
        let mut waits = [100u64, 200].into_iter();
        loop {
            let mut f = req.clone();
            f.rid = self.rid();
            let line = f.encode();
            let ms = self.deadline_ms(&f.head, line.len());
            if let Err(g) = self.write(&line) {
                return Got::Gone(g);
            }
            let got = self.await_answer(f.rid, ms);
            match &got {
                Got::NoAnswer(ms) => self.late.push(format!("no answer to {} within {ms} ms", f.head)),
                Got::Answer(a) if a.error_code() == Some(imprint_proto::ErrorCode::Busy) => {
                    self.busy.push(format!("{f} -> {a}"));
                    if let Some(w) = waits.next() {
                        self.log.push(format!("# 503 BUSY: asking again in {w} ms"));
                        self.t.pause(Duration::from_millis(w));
                        continue;
                    }
                }
                _ => {}
            }
            return got;
        }
    }

    /// Send raw bytes that must draw no answer; wait `ms` for anything.
    fn expect_silence(&mut self, bytes: &[u8], ms: u32) -> Result<(), String> {
        self.write(bytes)?;
        // No rid can match 0: any frame is stray here.
        let before = self.stray.len();
        match self.await_answer(0, ms) {
            Got::Gone(g) => Err(g),
            _ if self.stray.len() > before => {
                let s = self.stray.split_off(before);
                Err(format!("the device answered a line it must ignore: {}", s.join("; ")))
            }
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------- test certificates

struct TestCerts {
    issuer_cert_der: Vec<u8>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    serial: u64,
}

impl TestCerts {
    fn new(given: Option<&TestIssuer>) -> Result<Self, ConformanceError> {
        use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let e = |e: rcgen::Error| ConformanceError::Issuer(e.to_string());
        match given {
            Some(i) => {
                let key = KeyPair::from_pem(&i.key_pem).map_err(e)?;
                let issuer = Issuer::from_ca_cert_pem(&i.cert_pem, key).map_err(e)?;
                let der = pem::parse(&i.cert_pem).map_err(|x| ConformanceError::Issuer(x.to_string()))?.contents().to_vec();
                Ok(TestCerts { issuer_cert_der: der, issuer, serial: 1 })
            }
            None => {
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(e)?;
                let mut params = CertificateParams::default();
                let mut dn = DistinguishedName::new();
                dn.push(DnType::CommonName, "Imprint conformance test CA (throwaway)");
                params.distinguished_name = dn;
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
                let cert = params.self_signed(&key).map_err(e)?;
                Ok(TestCerts { issuer_cert_der: cert.der().to_vec(), issuer: Issuer::new(params, key), serial: 1 })
            }
        }
    }

    /// A client certificate for `serial` over `spki`.
    fn leaf(&mut self, serial: &str, spki: &[u8]) -> Result<Vec<u8>, String> {
        use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SerialNumber};
        let key = rcgen::SubjectPublicKeyInfo::from_der(spki).map_err(|e| format!("device key: {e}"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, serial);
        params.distinguished_name = dn;
        self.serial += 1;
        params.serial_number = Some(SerialNumber::from_slice(&self.serial.to_be_bytes()));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(2);
        params.signed_by(&key, &self.issuer).map(|c| c.der().to_vec()).map_err(|e| e.to_string())
    }

    /// The SPKI of a fresh key that is not the device's.
    fn foreign_spki() -> Result<Vec<u8>, String> {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map(|k| rcgen::PublicKeyData::subject_public_key_info(&k))
            .map_err(|e| e.to_string())
    }
}

// ---------------------------------------------------------------- the suite

enum Verdict {
    Pass(String),
    Fail(String),
    Warn(String),
    Skip(String),
}

type Step<T> = Result<T, String>;

struct Suite<'a> {
    link: Link<'a>,
    opts: ConformanceOptions,
    certs: TestCerts,
    checks: Vec<CheckReport>,
    /// Why the remaining checks cannot run.
    stop: Option<String>,
    serial: Option<String>,
    state_before: Option<String>,
    chunk: usize,
    caps: Vec<String>,
    spki: Option<Vec<u8>>,
    cert1: Option<Vec<u8>>,
    changed: Vec<String>,
    locked_by_us: bool,
}

fn nonce(seed: u8, len: usize) -> Vec<u8> {
    let mut n = vec![0u8; len];
    if getrandom::fill(&mut n).is_err() {
        n.iter_mut().enumerate().for_each(|(i, b)| *b = seed.wrapping_add(i as u8));
    }
    n
}

fn describe(got: &Got) -> String {
    match got {
        Got::Answer(f) => format!("answered {f}"),
        Got::NoAnswer(ms) => format!("no answer within {ms} ms"),
        Got::Corrupt(l) => format!("a corrupt answer: {l}"),
        Got::Gone(g) => g.clone(),
    }
}

impl<'a> Suite<'a> {
    fn record(&mut self, id: CheckId, v: Verdict) {
        let frames = std::mem::take(&mut self.link.log);
        let (result, detail) = match v {
            Verdict::Pass(d) => (CheckResult::Pass, d),
            Verdict::Fail(d) => (CheckResult::Fail, d),
            Verdict::Warn(d) => (CheckResult::Warn, d),
            Verdict::Skip(d) => (CheckResult::Skipped, d),
        };
        self.checks.push(CheckReport { check: id, result, section: id.section(), title: id.title(), detail, frames });
    }

    /// Run one check unless the run has stopped.
    fn check(&mut self, id: CheckId, f: impl FnOnce(&mut Self) -> Verdict) {
        if let Some(why) = &self.stop {
            let why = why.clone();
            self.record(id, Verdict::Skip(format!("not run: {why}")));
            return;
        }
        self.link.log.clear();
        let v = f(self);
        if let (Verdict::Fail(_), Some(g)) = (&v, &self.link.gone) {
            self.stop = Some(g.clone());
        }
        self.record(id, v);
    }

    fn ok(&mut self, req: Frame) -> Step<Frame> {
        let verb = req.head.clone();
        match self.link.ask(&req) {
            Got::Answer(f) if f.is_ok() => Ok(f),
            other => Err(format!("{verb}: expected OK, {}", describe(&other))),
        }
    }

    fn err(&mut self, req: Frame, code: u16) -> Step<Frame> {
        let what = req.to_string();
        let what = cut(what.trim_start_matches("@> ").split_once(' ').map_or(&what[..], |(_, r)| r), 80);
        match self.link.ask(&req) {
            Got::Answer(f) if f.error_code().map(|c| c.as_u16()) == Some(code) => Ok(f),
            other => Err(format!("{what}: expected ERR {code}, {}", describe(&other))),
        }
    }

    fn ident_state(&mut self) -> Option<String> {
        let saved = std::mem::take(&mut self.link.log);
        let s = self.ok(Frame::request(0, "IDENT")).ok().and_then(|f| f.field("state").map(str::to_string));
        self.link.log = saved;
        s
    }

    fn expect_state(&mut self, want: &str) -> Step<()> {
        let f = self.ok(Frame::request(0, "IDENT"))?;
        match f.field("state") {
            Some(s) if s == want => Ok(()),
            other => Err(format!("IDENT state is {other:?}, expected {want}")),
        }
    }

    fn serial(&self) -> String {
        self.serial.clone().unwrap_or_default()
    }

    fn blank_at_start(&self) -> bool {
        self.state_before.as_deref() == Some("blank")
    }

    fn needs_blank(&self) -> Option<Verdict> {
        if self.blank_at_start() {
            return None;
        }
        Some(Verdict::Skip(format!(
            "needs a blank board (this one was {}): the suite never changes a board it did not make blank again",
            self.state_before.as_deref().unwrap_or("unknown")
        )))
    }

    fn run_all(&mut self) {
        self.check(CheckId::Hello, |s| s.hello());
        if self.checks.last().is_some_and(|c| c.result == CheckResult::Fail) && self.stop.is_none() {
            self.stop = Some("HELLO failed".into());
        }
        self.check(CheckId::HelloVersion, |s| verdict(s.hello_version()));
        self.check(CheckId::Ident, |s| s.ident());
        if self.state_before.is_none() && self.stop.is_none() {
            self.stop = Some("IDENT failed".into());
        }
        self.check(CheckId::UnknownVerb, |s| verdict(s.err(Frame::request(0, "FROB"), 405).map(|_| "FROB answered 405".into())));
        self.check(CheckId::BadCrcIgnored, |s| verdict(s.bad_crc()));
        self.check(CheckId::LineLimit, |s| verdict(s.line_limit()));
        self.check(CheckId::ConsoleNoise, |s| verdict(s.console_noise()));
        self.check(CheckId::Crlf, |s| verdict(s.crlf()));
        self.check(CheckId::RequestIds, |s| verdict(s.request_ids()));
        self.check(CheckId::FieldErrors, |s| verdict(s.field_errors()));
        let blank = self.blank_at_start();
        let locked_before = self.state_before.as_deref() == Some("locked");
        self.check(CheckId::BlankRefusals, |s| s.needs_blank().unwrap_or_else(|| verdict(s.blank_refusals())));
        self.check(CheckId::Keygen, |s| s.needs_blank().unwrap_or_else(|| verdict(s.keygen())));
        self.check(CheckId::KeygenIdempotent, |s| verdict(s.keygen_idempotent()));
        if self.spki.is_none() && self.stop.is_none() && self.state_before.as_deref() != Some("blank") {
            // Not blank, but no key learned: later checks have nothing to use.
        }
        self.check(CheckId::Csr, |s| s.needs_blank().unwrap_or_else(|| verdict(s.csr())));
        self.check(CheckId::CsrRetry, |s| s.needs_blank().unwrap_or_else(|| verdict(s.csr_retry())));
        self.check(CheckId::Read, |s| s.needs_blank().unwrap_or_else(|| verdict(s.read())));
        self.check(CheckId::PutCommit, |s| s.needs_blank().unwrap_or_else(|| verdict(s.put_commit())));
        self.check(CheckId::CommitWrongHashKeepsOld, |s| s.needs_blank().unwrap_or_else(|| verdict(s.commit_wrong_hash())));
        self.check(CheckId::CommitForeignKeyRefused, |s| s.needs_blank().unwrap_or_else(|| verdict(s.commit_foreign_key())));
        self.check(CheckId::Chain, |s| s.needs_blank().unwrap_or_else(|| verdict(s.chain())));
        self.check(CheckId::Prove, |s| verdict(s.prove()));
        self.check(CheckId::LockTwoPhase, |s| s.needs_blank().unwrap_or_else(|| verdict(s.lock_two_phase())));
        self.check(CheckId::Connect, |s| match &s.opts.connect {
            None => Verdict::Skip("no broker given (--broker)".into()),
            Some(_) if locked_before => Verdict::Skip("the board was locked: brokerca cannot be written".into()),
            Some(_) if !blank => Verdict::Skip("needs a blank board (brokerca is written)".into()),
            Some(t) => {
                let t = t.clone();
                verdict(s.connect(&t))
            }
        });
        self.check(CheckId::LockCommit, |s| match s.needs_blank() {
            Some(v) => v,
            None if !s.opts.allow_lock => Verdict::Skip("the lock is permanent: run with --lock on a board you may lock".into()),
            None => verdict(s.lock_commit()),
        });
        self.check(CheckId::LockedRefusals, |s| {
            if locked_before || s.locked_by_us {
                verdict(s.locked_refusals())
            } else {
                Verdict::Skip("the board is not locked (run on a locked board, or with --lock on a blank one)".into())
            }
        });
        self.check(CheckId::Reset, |s| match s.needs_blank() {
            Some(v) => v,
            None if s.locked_by_us => Verdict::Skip("the board is locked now; RESET must be refused (checked by locked_refusals)".into()),
            None => verdict(s.reset()),
        });
        // Judged over the whole run, whatever stopped it.
        let stopped = self.stop.take();
        let stray = self.link.stray.clone();
        self.record(CheckId::NoStrayFrames, if stray.is_empty() { Verdict::Pass("none".into()) } else { Verdict::Fail(stray.join("; ")) });
        let bad = self.link.bad_console.clone();
        self.record(
            CheckId::ConsoleHygiene,
            if bad.is_empty() { Verdict::Pass("no marker in console output".into()) } else { Verdict::Fail(bad.join("; ")) },
        );
        let late = self.link.late.clone();
        self.record(
            CheckId::Timing,
            if late.is_empty() { Verdict::Pass("every answer within its deadline".into()) } else { Verdict::Fail(late.join("; ")) },
        );
        let busy = self.link.busy.clone();
        self.record(
            CheckId::Busy,
            if busy.is_empty() {
                Verdict::Pass("no 503 BUSY".into())
            } else {
                Verdict::Warn(format!("{} request(s) answered 503 BUSY (the host waits and resends): {}", busy.len(), busy.join("; ")))
            },
        );
        self.stop = stopped;
    }

    // ---- checks ----

    fn hello(&mut self) -> Verdict {
        let f = match self.ok(Frame::request(0, "HELLO").with("proto", "1")) {
            Ok(f) => f,
            Err(e) => return Verdict::Fail(e),
        };
        let mut bad = Vec::new();
        if f.field("proto") != Some("1") {
            bad.push(format!("proto={:?}, expected 1", f.field("proto")));
        }
        if f.field("maxline") != Some("1024") {
            bad.push(format!("maxline={:?}, expected 1024", f.field("maxline")));
        }
        match f.field("chunk").map(uint) {
            Some(Some(c)) if c >= 16 => self.chunk = c.min(imprint_proto::session::MAX_CHUNK),
            other => bad.push(format!("chunk={other:?}: expected a uint of at least 16")),
        }
        self.caps = f.field("caps").unwrap_or_default().split(',').map(str::to_string).collect();
        for v in ["HELLO", "IDENT", "KEYGEN", "CSR", "READ", "PUT", "COMMIT", "PROVE", "LOCK"] {
            if !self.caps.iter().any(|c| c == v) {
                bad.push(format!("caps lacks {v}"));
            }
        }
        if bad.is_empty() {
            Verdict::Pass(format!("chunk {}, caps {}", self.chunk, self.caps.join(",")))
        } else {
            Verdict::Fail(bad.join("; "))
        }
    }

    fn hello_version(&mut self) -> Step<String> {
        let f = self.err(Frame::request(0, "HELLO").with("proto", "2"), 426)?;
        if f.field("proto") != Some("1") {
            return Err(format!("426 without proto=1 (got {:?})", f.field("proto")));
        }
        Ok("426 with proto=1".into())
    }

    fn ident(&mut self) -> Verdict {
        let f = match self.ok(Frame::request(0, "IDENT")) {
            Ok(f) => f,
            Err(e) => return Verdict::Fail(e),
        };
        let serial = f.text("serial").unwrap_or_default();
        let state = f.field("state").unwrap_or_default().to_string();
        let mut bad = Vec::new();
        let serial_ok =
            (1..=64).contains(&serial.len()) && serial.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if !serial_ok {
            bad.push(format!("serial {serial:?} is not 1..64 characters of A-Z a-z 0-9 - _ . :"));
        }
        if !matches!(state.as_str(), "blank" | "keyed" | "provisioned" | "locked") {
            bad.push(format!("state {state:?} is not blank, keyed, provisioned or locked"));
        }
        let hexf =
            |k: &str| f.field(k).is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        if !hexf("fwhash") || f.field("fwhash").map(str::len) != Some(64) {
            bad.push("fwhash is not 64 lowercase hex digits".into());
        }
        if !hexf("uid") {
            bad.push("uid is not lowercase hex".into());
        }
        for k in ["model", "hw", "fw"] {
            if f.field(k).is_none() {
                bad.push(format!("no {k}"));
            }
        }
        if serial_ok {
            self.serial = Some(serial.clone());
        }
        if matches!(state.as_str(), "blank" | "keyed" | "provisioned" | "locked") {
            self.state_before = Some(state.clone());
        }
        if bad.is_empty() {
            Verdict::Pass(format!("serial {serial}, state {state}"))
        } else {
            Verdict::Fail(bad.join("; "))
        }
    }

    fn bad_crc(&mut self) -> Step<String> {
        let mut f = Frame::request(0, "HELLO").with("proto", "1");
        f.rid = self.link.rid();
        let mut line = f.encode();
        let at = line.len() - 5;
        let good = std::str::from_utf8(&line[at..at + 4]).ok().and_then(|h| u16::from_str_radix(h, 16).ok()).unwrap_or(0);
        line[at..at + 4].copy_from_slice(format!("{:04X}", good ^ 0x0101).as_bytes());
        let ms = self.link.deadline_ms("HELLO", line.len());
        self.link.expect_silence(&line, ms)?;
        self.ok(Frame::request(0, "HELLO").with("proto", "1"))?;
        Ok("the bad-CRC request drew no answer; the next one was answered".into())
    }

    fn padded(&mut self, total: usize) -> (u16, Vec<u8>) {
        // HELLO with an unknown field `pad` (devices MUST ignore it) padded
        // so the line is exactly `total` bytes with its LF.
        let rid = self.link.rid();
        let probe = Frame::request(rid, "HELLO").with("proto", "1").with("pad", "").encode().len();
        let pad = "A".repeat(total.saturating_sub(probe));
        (rid, Frame::request(rid, "HELLO").with("proto", "1").with("pad", pad).encode())
    }

    fn line_limit(&mut self) -> Step<String> {
        let (rid, line) = self.padded(MAX_LINE);
        debug_assert_eq!(line.len(), MAX_LINE);
        self.link.write(&line)?;
        let ms = self.link.deadline_ms("HELLO", line.len());
        match self.link.await_answer(rid, ms) {
            Got::Answer(f) if f.is_ok() => {}
            other => return Err(format!("a request of exactly {MAX_LINE} bytes: expected OK, {}", describe(&other))),
        }
        let (_, long) = self.padded(MAX_LINE + 1);
        self.link.expect_silence(&long, ms)?;
        self.ok(Frame::request(0, "HELLO").with("proto", "1"))?;
        Ok(format!("{MAX_LINE} bytes answered, {} ignored, the next answered", MAX_LINE + 1))
    }

    fn console_noise(&mut self) -> Step<String> {
        self.link.write(b"boot: console text before a frame\n")?;
        self.link.write(&[0x80, 0xff, 0x00, 0x1b, b'[', b'0', b'm', 0xfe, b'\n'])?;
        self.link.write(b"@< 7 OK proto=1 *0000\n")?;
        let mut f = Frame::request(0, "HELLO").with("proto", "1");
        f.rid = self.link.rid();
        let mut line = b"I (123) app: log line without its newline ".to_vec();
        line.extend(f.encode());
        self.link.write(&line)?;
        let ms = self.link.deadline_ms("HELLO", line.len());
        match self.link.await_answer(f.rid, ms) {
            Got::Answer(a) if a.is_ok() => {}
            other => return Err(format!("a frame after console bytes on its line: expected OK, {}", describe(&other))),
        }
        // Anything more (a second answer, an answer to the echo) is stray.
        let before = self.link.stray.len();
        let _ = self.link.await_answer(0, 300);
        if self.link.stray.len() > before {
            return Err(format!("more than one answer: {}", self.link.stray[before..].join("; ")));
        }
        Ok("only the valid request was answered, once".into())
    }

    fn crlf(&mut self) -> Step<String> {
        let mut f = Frame::request(0, "HELLO").with("proto", "1");
        f.rid = self.link.rid();
        let mut line = f.encode();
        line.pop();
        line.extend_from_slice(b"\r\n");
        self.link.write(&line)?;
        let ms = self.link.deadline_ms("HELLO", line.len());
        match self.link.await_answer(f.rid, ms) {
            Got::Answer(a) if a.is_ok() => Ok("answered".into()),
            other => Err(format!("expected OK, {}", describe(&other))),
        }
    }

    fn raw_request(&mut self, rid_text: &str, verb_fields: &str) -> Vec<u8> {
        let covered = format!("@> {rid_text} {verb_fields} ");
        format!("{covered}*{:04X}\n", crc16(covered.as_bytes())).into_bytes()
    }

    fn request_ids(&mut self) -> Step<String> {
        for rid in [65_535u16, 1] {
            let line = Frame::request(rid, "HELLO").with("proto", "1").encode();
            self.link.write(&line)?;
            let ms = self.link.deadline_ms("HELLO", line.len());
            match self.link.await_answer(rid, ms) {
                Got::Answer(a) if a.is_ok() => {}
                other => return Err(format!("request id {rid}: expected OK, {}", describe(&other))),
            }
        }
        let line = self.raw_request("02", "HELLO proto=1");
        let ms = self.link.deadline_ms("HELLO", line.len());
        self.link.expect_silence(&line, ms).map_err(|e| format!("request id written 02 (leading zero): {e}"))?;
        Ok("ids 65535 and 1 echoed; a leading-zero id ignored".into())
    }

    fn field_errors(&mut self) -> Step<String> {
        let mut cases: Vec<(Frame, &str)> = vec![
            (Frame::request(0, "HELLO"), "HELLO without proto"),
            (Frame::request(0, "HELLO").with("proto", "01"), "HELLO proto=01 (leading zero)"),
            (Frame::request(0, "KEYGEN").with("alg", "rsa2048"), "KEYGEN alg=rsa2048"),
            (Frame::request(0, "KEYGEN").with("alg", "p256").with("force", "2"), "KEYGEN force=2"),
            (Frame::request(0, "CSR"), "CSR without nonce"),
            (Frame::request(0, "CSR").with("nonce", b64(&[7u8; 15])), "CSR with a 15-byte nonce"),
            (Frame::request(0, "CSR").with("nonce", b64(&[7u8; 65])), "CSR with a 65-byte nonce"),
            (Frame::request(0, "CSR").with("nonce", "!!notb64!!"), "CSR nonce not base64url"),
            (Frame::request(0, "READ").with("obj", "bogus").with("off", "0").with("max", "16"), "READ obj=bogus"),
            (Frame::request(0, "READ").with("obj", "cert").with("off", "0"), "READ without max"),
            (Frame::request(0, "PUT").with("obj", "csr").with("off", "0").with("data", "AAAA"), "PUT obj=csr"),
            (Frame::request(0, "COMMIT").with("obj", "cert").with("len", "3"), "COMMIT without sha256"),
            (Frame::request(0, "PROVE"), "PROVE without nonce"),
            (Frame::request(0, "LOCK").with("phase", "bogus"), "LOCK phase=bogus"),
            (Frame::request(0, "LOCK").with("phase", "commit"), "LOCK commit without token"),
            (Frame::request(0, "RESET"), "RESET without confirm"),
        ];
        if !self.caps.iter().any(|c| c == "RESET") {
            cases.retain(|(f, _)| f.head != "RESET");
        }
        let n = cases.len();
        for (req, what) in cases {
            self.err(req, 400).map_err(|e| format!("{what}: {e}"))?;
        }
        Ok(format!("{n} malformed requests answered 400"))
    }

    fn blank_refusals(&mut self) -> Step<String> {
        self.err(Frame::request(0, "CSR").with("nonce", b64(&nonce(1, 16))), 409)?;
        self.err(Frame::request(0, "PROVE").with("nonce", b64(&nonce(2, 16))), 409)?;
        self.err(Frame::request(0, "READ").with("obj", "cert").with("off", "0").with("max", "16"), 404)?;
        self.err(Frame::request(0, "LOCK").with("phase", "prepare"), 409)?;
        self.err(Frame::request(0, "COMMIT").with("obj", "cert").with("len", "1").with("sha256", b64(&Sha256::digest([0u8]))), 409)?;
        Ok("CSR, PROVE, LOCK prepare, COMMIT 409; READ cert 404".into())
    }

    fn keygen(&mut self) -> Step<String> {
        let f = self.ok(Frame::request(0, "KEYGEN").with("alg", "p256"))?;
        self.changed.push("made a device key (KEYGEN)".into());
        let alg = f.field("alg").unwrap_or_default().to_string();
        let spki = f.field("pub").and_then(|p| unb64(p).ok()).ok_or("KEYGEN answered no valid pub")?;
        self.spki = Some(spki.clone());
        if f.field("new") != Some("1") {
            return Err(format!("new={:?} on a blank board, expected 1", f.field("new")));
        }
        match key_kind(&spki) {
            Ok(KeyKind::Ec(KeyType::P256)) if alg == "p256" => {}
            Ok(k) => return Err(format!("asked for alg=p256, got alg={alg} and a {k} key: a new key MUST be of the requested alg")),
            Err(e) => return Err(format!("pub is not a SubjectPublicKeyInfo: {e}")),
        }
        self.expect_state("keyed")?;
        Ok("a P-256 key, new=1; IDENT says keyed".into())
    }

    fn keygen_idempotent(&mut self) -> Step<String> {
        if self.state_before.as_deref() == Some("blank") && self.spki.is_none() {
            return Err("no key was made (keygen failed)".into());
        }
        let f = self.ok(Frame::request(0, "KEYGEN").with("alg", "p256"))?;
        let spki = f.field("pub").and_then(|p| unb64(p).ok()).ok_or("KEYGEN answered no valid pub")?;
        if f.field("new") != Some("0") {
            return Err(format!("new={:?} for an existing key, expected 0", f.field("new")));
        }
        if let Some(known) = &self.spki {
            if *known != spki {
                return Err("a repeated KEYGEN returned a different key".into());
            }
        }
        self.spki = Some(spki.clone());
        let alg = f.field("alg").unwrap_or_default().to_string();
        let other = if alg == "p384" { "p256" } else { "p384" };
        let g = self.ok(Frame::request(0, "KEYGEN").with("alg", other))?;
        if g.field("pub").and_then(|p| unb64(p).ok()).as_deref() != Some(&spki[..]) || g.field("new") != Some("0") {
            return Err(format!("KEYGEN alg={other} without force must return the existing key with new=0"));
        }
        if g.field("alg") != Some(alg.as_str()) {
            return Err(format!("alg={:?} for the existing {alg} key", g.field("alg")));
        }
        Ok(format!("the same {alg} key, new=0, also when asked for {other}"))
    }

    fn read_object(&mut self, obj: &str, max: usize) -> Step<Vec<u8>> {
        let mut got = Vec::new();
        loop {
            let f = self.ok(Frame::request(0, "READ").with("obj", obj).with("off", got.len().to_string()).with("max", max.to_string()))?;
            let total = f.field("total").and_then(uint).ok_or("READ without a valid total")?;
            if f.field("off").and_then(uint) != Some(got.len()) {
                return Err(format!("READ off not echoed (asked {}, got {:?})", got.len(), f.field("off")));
            }
            let data = f.field("data").and_then(|d| unb64(d).ok()).ok_or("READ without valid data")?;
            if data.len() > max.min(self.chunk) {
                return Err(format!("READ gave {} bytes, more than max {max} / chunk {}", data.len(), self.chunk));
            }
            if got.len() + data.len() > total {
                return Err("READ data runs past total".into());
            }
            if data.is_empty() && got.len() < total {
                return Err("READ gave empty data before the end".into());
            }
            got.extend(data);
            if got.len() == total {
                return Ok(got);
            }
        }
    }

    fn csr_once(&mut self) -> Step<(Vec<u8>, Vec<u8>)> {
        let n = nonce(0x10, 16);
        let f = self.ok(Frame::request(0, "CSR").with("nonce", b64(&n)))?;
        let len = f.field("len").and_then(uint).ok_or("CSR answered no valid len")?;
        let sha = f.field("sha256").and_then(|s| unb64(s).ok()).ok_or("CSR answered no valid sha256")?;
        let der = self.read_object("csr", self.chunk)?;
        if der.len() != len || Sha256::digest(&der).as_slice() != sha.as_slice() {
            return Err(format!("READ csr gave {} bytes that do not match len={len} and sha256", der.len()));
        }
        Ok((der, n))
    }

    fn csr(&mut self) -> Step<String> {
        let spki = self.spki.clone().ok_or("no key (keygen failed)")?;
        let (der, n) = self.csr_once()?;
        check_csr(&der, &self.serial(), &spki, &n, &Profile::default()).map_err(|e| format!("the station would refuse this CSR: {e}"))?;
        Ok(format!("{} bytes, bound to the nonce, subject and key right", der.len()))
    }

    fn csr_retry(&mut self) -> Step<String> {
        let spki = self.spki.clone().ok_or("no key (keygen failed)")?;
        let (der, n) = self.csr_once()?;
        check_csr(&der, &self.serial(), &spki, &n, &Profile::default()).map_err(|e| format!("the station would refuse this CSR: {e}"))?;
        Ok("the latest CSR's len and sha256 describe what READ returns".into())
    }

    fn read(&mut self) -> Step<String> {
        let whole = self.read_object("csr", self.chunk)?;
        let f = self.ok(Frame::request(0, "READ").with("obj", "csr").with("off", "0").with("max", "16"))?;
        let d = f.field("data").and_then(|d| unb64(d).ok()).unwrap_or_default();
        if d.len() != 16.min(whole.len()) || d[..] != whole[..d.len()] {
            return Err(format!("READ max=16 gave {} bytes", d.len()));
        }
        let end = whole.len().to_string();
        let f = self.ok(Frame::request(0, "READ").with("obj", "csr").with("off", end.clone()).with("max", "16"))?;
        if f.field("data") != Some("") {
            return Err("READ at off=total must give empty data".into());
        }
        self.err(Frame::request(0, "READ").with("obj", "csr").with("off", (whole.len() + 1).to_string()).with("max", "16"), 416)?;
        self.err(Frame::request(0, "READ").with("obj", "csr").with("off", "0").with("max", "0"), 400)?;
        Ok("max honoured, empty at the end, 416 past it, 400 for max=0".into())
    }

    fn put_object(&mut self, obj: &str, bytes: &[u8]) -> Step<()> {
        let mut off = 0;
        for part in bytes.chunks(self.chunk.max(1)) {
            let f = self.ok(Frame::request(0, "PUT").with("obj", obj).with("off", off.to_string()).with("data", b64(part)))?;
            off += part.len();
            if f.field("next").and_then(uint) != Some(off) {
                return Err(format!("PUT next={:?}, expected {off}", f.field("next")));
            }
        }
        Ok(())
    }

    fn commit_frame(obj: &str, bytes: &[u8]) -> Frame {
        Frame::request(0, "COMMIT").with("obj", obj).with("len", bytes.len().to_string()).with("sha256", b64(&Sha256::digest(bytes)))
    }

    fn put_commit(&mut self) -> Step<String> {
        let spki = self.spki.clone().ok_or("no key (keygen failed)")?;
        let cert = self.certs.leaf(&self.serial(), &spki)?;
        // A retried PUT gives the same next; a gap is 416; more than a chunk is 413.
        let first = &cert[..self.chunk.min(cert.len())];
        for _ in 0..2 {
            let f = self.ok(Frame::request(0, "PUT").with("obj", "cert").with("off", "0").with("data", b64(first)))?;
            if f.field("next").and_then(uint) != Some(first.len()) {
                return Err(format!("PUT (or its retry) next={:?}, expected {}", f.field("next"), first.len()));
            }
        }
        self.err(Frame::request(0, "PUT").with("obj", "cert").with("off", (first.len() + 1).to_string()).with("data", "AAAA"), 416)?;
        let big = vec![0x30u8; self.chunk + 1];
        self.err(Frame::request(0, "PUT").with("obj", "cert").with("off", "0").with("data", b64(&big)), 413)
            .map_err(|e| format!("a PUT of chunk+1 bytes: {e}"))?;
        self.put_object("cert", &cert)?;
        self.ok(Self::commit_frame("cert", &cert))?;
        self.changed.push("committed a test certificate".into());
        self.ok(Self::commit_frame("cert", &cert)).map_err(|e| format!("a retried COMMIT must answer OK: {e}"))?;
        let back = self.read_object("cert", self.chunk)?;
        if back != cert {
            return Err("READ cert does not return the committed bytes".into());
        }
        self.cert1 = Some(cert);
        Ok("staged in chunks, committed, read back equal; retries answered alike".into())
    }

    fn commit_wrong_hash(&mut self) -> Step<String> {
        let spki = self.spki.clone().ok_or("no key (keygen failed)")?;
        let old = self.cert1.clone().ok_or("no certificate committed (put_commit failed)")?;
        let new = self.certs.leaf(&self.serial(), &spki)?;
        self.put_object("cert", &new)?;
        let wrong =
            Frame::request(0, "COMMIT").with("obj", "cert").with("len", new.len().to_string()).with("sha256", b64(&Sha256::digest(&old)));
        self.err(wrong, 422)?;
        let wrong_len = Frame::request(0, "COMMIT")
            .with("obj", "cert")
            .with("len", (new.len() + 1).to_string())
            .with("sha256", b64(&Sha256::digest(&new)));
        self.err(wrong_len, 422)?;
        let back = self.read_object("cert", self.chunk)?;
        if back != old {
            return Err("after a refused COMMIT the active certificate changed".into());
        }
        Ok("422 for a wrong hash and a wrong length; the old certificate stayed active".into())
    }

    fn commit_foreign_key(&mut self) -> Step<String> {
        let old = self.cert1.clone().ok_or("no certificate committed (put_commit failed)")?;
        let foreign = self.certs.leaf(&self.serial(), &TestCerts::foreign_spki()?)?;
        self.put_object("cert", &foreign)?;
        self.err(Self::commit_frame("cert", &foreign), 422)?;
        let back = self.read_object("cert", self.chunk)?;
        if back != old {
            return Err("after a refused COMMIT the active certificate changed".into());
        }
        Ok("422; the old certificate stayed active".into())
    }

    fn chain(&mut self) -> Step<String> {
        let chain = self.certs.issuer_cert_der.clone();
        self.put_object("chain", &chain)?;
        self.ok(Self::commit_frame("chain", &chain))?;
        self.changed.push("committed a test chain".into());
        if self.read_object("chain", self.chunk)? != chain {
            return Err("READ chain does not return the committed bytes".into());
        }
        self.expect_state("provisioned")?;
        Ok("committed, read back equal; IDENT says provisioned".into())
    }

    fn prove(&mut self) -> Step<String> {
        if self.state_before.as_deref() == Some("blank") && self.spki.is_none() {
            return Err("no key (keygen failed)".into());
        }
        let spki = self.spki.clone().ok_or("no key learned from KEYGEN")?;
        for i in 0..2 {
            let n = nonce(0x20 + i, 16 + 16 * usize::from(i));
            let f = self.ok(Frame::request(0, "PROVE").with("nonce", b64(&n)))?;
            let sig = f.field("sig").and_then(|s| unb64(s).ok()).ok_or("PROVE answered no valid sig")?;
            let want = match key_kind(&spki) {
                Ok(KeyKind::Ec(KeyType::P384)) => "ecdsa-sha384",
                _ => "ecdsa-sha256",
            };
            if f.field("alg") != Some(want) {
                return Err(format!("alg={:?}, expected {want}", f.field("alg")));
            }
            verify_pop(&spki, &pop_message(&self.serial(), &n), &sig).map_err(|e| format!("the proof does not verify: {e}"))?;
        }
        self.err(Frame::request(0, "PROVE").with("nonce", b64(&[1u8; 8])), 400)?;
        Ok("two proofs verify with the KEYGEN key; an 8-byte nonce answers 400".into())
    }

    fn prepare(&mut self) -> Step<String> {
        let f = self.ok(Frame::request(0, "LOCK").with("phase", "prepare"))?;
        let t = f.field("token").unwrap_or_default().to_string();
        if t.len() != 8 || !t.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!("token {t:?} is not 8 lowercase hex digits"));
        }
        Ok(t)
    }

    fn lock_two_phase(&mut self) -> Step<String> {
        let cert = self.cert1.clone().ok_or("no certificate committed")?;
        self.err(Frame::request(0, "LOCK").with("phase", "commit").with("token", "00000000"), 409)
            .map_err(|e| format!("commit with no token issued: {e}"))?;
        let t = self.prepare()?;
        self.put_object("cert", &cert[..self.chunk.min(cert.len())])?;
        self.err(Frame::request(0, "LOCK").with("phase", "commit").with("token", t), 409)
            .map_err(|e| format!("a token used after a PUT: {e}"))?;
        let t = self.prepare()?;
        let wrong = if t == "00000000" { "00000001" } else { "00000000" };
        self.err(Frame::request(0, "LOCK").with("phase", "commit").with("token", wrong), 409)?;
        self.err(Frame::request(0, "LOCK").with("phase", "commit").with("token", t), 409)
            .map_err(|e| format!("the issued token after a wrong one (a wrong token invalidates it): {e}"))?;
        self.expect_state("provisioned")?;
        Ok("409 with no token, after a PUT, for a wrong token and for the token after a wrong one".into())
    }

    fn connect(&mut self, t: &ConnectTarget) -> Step<String> {
        let mut ca = Vec::new();
        for p in pem::parse_many(&t.broker_ca_pem).map_err(|e| format!("broker CA: {e}"))? {
            ca.extend_from_slice(p.contents());
        }
        self.put_object("brokerca", &ca)?;
        self.ok(Self::commit_frame("brokerca", &ca))?;
        self.changed.push("committed a brokerca (wiped again by RESET)".into());
        let f = self.ok(Frame::request(0, "CONNECT")
            .with("host", pct_encode(&t.host))
            .with("port", t.port.to_string())
            .with("topic", pct_encode(&t.topic)))?;
        Ok(format!("round trip in {} ms", f.field("latency_ms").unwrap_or("?")))
    }

    fn lock_commit(&mut self) -> Step<String> {
        let t = self.prepare()?;
        let f = self.ok(Frame::request(0, "LOCK").with("phase", "commit").with("token", t))?;
        if f.field("state") != Some("locked") {
            return Err(format!("LOCK commit answered state={:?}", f.field("state")));
        }
        self.expect_state("locked").map_err(|e| format!("LOCK commit answered locked, but the lock did not take: {e}"))?;
        self.changed.push("LOCKED the board with the test certificate (permanent, --lock)".into());
        self.locked_by_us = true;
        Ok("locked; IDENT says locked".into())
    }

    fn locked_refusals(&mut self) -> Step<String> {
        self.expect_state("locked")?;
        let serial = self.serial();
        self.err(Frame::request(0, "PUT").with("obj", "cert").with("off", "0").with("data", "MA"), 423)?;
        self.err(Frame::request(0, "COMMIT").with("obj", "chain").with("len", "1").with("sha256", b64(&Sha256::digest([0u8]))), 423)?;
        self.err(Frame::request(0, "KEYGEN").with("alg", "p256").with("force", "1"), 423)?;
        self.err(Frame::request(0, "LOCK").with("phase", "prepare"), 423)?;
        if self.caps.iter().any(|c| c == "RESET") {
            self.err(Frame::request(0, "RESET").with("confirm", pct_encode(&serial)), 423)?;
        }
        self.read_object("cert", self.chunk)?;
        self.prove()?;
        Ok("PUT, COMMIT, KEYGEN force=1, LOCK and RESET 423; READ and PROVE work".into())
    }

    fn reset(&mut self) -> Step<String> {
        if !self.caps.iter().any(|c| c == "RESET") {
            self.changed.push("left the board provisioned with the test certificate: it does not implement RESET".into());
            return Err("RESET is not in caps: the board cannot be returned to blank".into());
        }
        let serial = self.serial();
        self.err(Frame::request(0, "RESET").with("confirm", pct_encode(&format!("{serial}X"))), 400)?;
        let f = self.ok(Frame::request(0, "RESET").with("confirm", pct_encode(&serial)))?;
        if f.field("state") != Some("blank") {
            return Err(format!("RESET answered state={:?}", f.field("state")));
        }
        self.expect_state("blank")?;
        self.err(Frame::request(0, "READ").with("obj", "cert").with("off", "0").with("max", "16"), 404)?;
        self.changed.push("RESET the board to blank: nothing of the run remains".into());
        Ok("400 for a wrong confirm; blank after RESET, the certificate gone".into())
    }
}

fn verdict(r: Step<String>) -> Verdict {
    match r {
        Ok(d) => Verdict::Pass(d),
        Err(e) => Verdict::Fail(e),
    }
}

/// A `uint` of docs/protocol.md 2.2: digits, no leading zeros.
fn uint(v: &str) -> Option<usize> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || (v.len() > 1 && v.starts_with('0')) {
        return None;
    }
    v.parse().ok()
}

/// The report as text: one line per check, the frames of every check that
/// did not pass.
pub fn render(r: &ConformanceReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "conformance {}  port {}  serial {}  state {} -> {}",
        if r.passed { "PASS" } else { "FAIL" },
        r.port,
        r.serial.as_deref().unwrap_or("-"),
        r.state_before.as_deref().unwrap_or("?"),
        r.state_after.as_deref().unwrap_or("?"),
    );
    for c in &r.checks {
        let word = match c.result {
            CheckResult::Pass => "pass",
            CheckResult::Fail => "FAIL",
            CheckResult::Warn => "warn",
            CheckResult::Skipped => "skip",
        };
        let _ = writeln!(s, "  {word:<4} {:<28} §{:<9} {}", c.check.as_str(), c.section, c.detail);
        if matches!(c.result, CheckResult::Fail | CheckResult::Warn) {
            for f in &c.frames {
                let _ = writeln!(s, "         {f}");
            }
        }
    }
    if r.changed.is_empty() {
        let _ = writeln!(s, "changed on the board: nothing");
    } else {
        let _ = writeln!(s, "changed on the board:");
        for c in &r.changed {
            let _ = writeln!(s, "  - {c}");
        }
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_check_has_a_unique_name_and_a_section() {
        let mut names: Vec<&str> = CheckId::ALL.iter().map(|c| c.as_str()).collect();
        for c in CheckId::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), serde_json::json!(c.as_str()));
            assert!(!c.section().is_empty() && !c.title().is_empty());
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CheckId::ALL.len());
    }

    #[test]
    fn uint_refuses_leading_zeros() {
        assert_eq!(uint("0"), Some(0));
        assert_eq!(uint("10"), Some(10));
        assert_eq!(uint("01"), None);
        assert_eq!(uint(""), None);
        assert_eq!(uint("-1"), None);
    }
}
