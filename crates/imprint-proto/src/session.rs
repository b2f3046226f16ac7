//! The host side of one provisioning session, as a sans-IO state machine.
//!
//! The driver (imprint-station) owns the port, the clock, the store and the
//! signer. It asks the session what to do next ([`Action`]), does it, and
//! feeds back what happened ([`Input`]). The session never reads a clock,
//! never touches a port and never calls a signer, so every path through it
//! (including every fault) is a plain unit test.
//!
//! ```text
//! HELLO -> IDENT -> KEYGEN -> Lookup --found--> write cert+chain -> read back -> PROVE -> [CONNECT] -> LOCK -> Passed
//!                               |--none--> CSR -> READ csr -> Issue --^
//!                               |--renew--> CSR (existing key) -> READ csr -> Issue --^
//!                               \--rework--> RESET -> KEYGEN (new key) -> Lookup
//! ```

use crate::codec::{b64, unb64, ErrorCode, Frame};
use crate::codes::{sanitize_device_text, Closed, FailureCode};
use sha2::{Digest, Sha256};

/// Protocol version this host speaks.
pub const PROTO_VERSION: u32 = 1;
/// Largest raw chunk the host moves in one PUT/READ (fits a 1024-byte line
/// as base64url with room for the other fields).
pub const MAX_CHUNK: usize = 720;

/// Where in the flow a session is; also the `stage` of a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ts_rs::TS)]
#[ts(export, export_to = "../../../ui/src/bindings/", rename_all = "snake_case")]
pub enum Stage {
    Hello,
    Identify,
    Keygen,
    Lookup,
    Csr,
    Issue,
    WriteCert,
    WriteChain,
    ReadBack,
    Prove,
    /// The device's own broker connection check (brokerca + CONNECT).
    Connect,
    Lock,
    Done,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Hello => "hello",
            Stage::Identify => "identify",
            Stage::Keygen => "keygen",
            Stage::Lookup => "lookup",
            Stage::Csr => "csr",
            Stage::Issue => "issue",
            Stage::WriteCert => "write_cert",
            Stage::WriteChain => "write_chain",
            Stage::ReadBack => "read_back",
            Stage::Prove => "prove",
            Stage::Connect => "connect",
            Stage::Lock => "lock",
            Stage::Done => "done",
        }
    }
    /// The stage whose text is `s`, if any.
    pub fn parse(s: &str) -> Option<Stage> {
        <Stage as Closed>::parse(s)
    }
    /// Coarse progress in percent, for progress bars.
    pub fn progress(self) -> u8 {
        match self {
            Stage::Hello => 2,
            Stage::Identify => 5,
            Stage::Keygen => 10,
            Stage::Lookup => 20,
            Stage::Csr => 25,
            Stage::Issue => 40,
            Stage::WriteCert => 50,
            Stage::WriteChain => 62,
            Stage::ReadBack => 75,
            Stage::Prove => 88,
            Stage::Connect => 92,
            Stage::Lock => 95,
            Stage::Done => 100,
        }
    }
}

impl Closed for Stage {
    const ALL: &'static [Stage] = &[
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
        Stage::Connect,
        Stage::Lock,
        Stage::Done,
    ];
    fn as_str(self) -> &'static str {
        Stage::as_str(self)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl serde::Serialize for Stage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Key algorithm the station asks the device to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlg {
    P256,
    P384,
}

impl KeyAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlg::P256 => "p256",
            KeyAlg::P384 => "p384",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "p256" => Some(KeyAlg::P256),
            "p384" => Some(KeyAlg::P384),
            _ => None,
        }
    }
}

/// Provisioning state a device reports in IDENT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ts_rs::TS)]
#[ts(export, export_to = "../../../ui/src/bindings/", rename_all = "snake_case")]
pub enum DeviceState {
    Blank,
    Keyed,
    Provisioned,
    Locked,
}

impl DeviceState {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "blank" => Some(DeviceState::Blank),
            "keyed" => Some(DeviceState::Keyed),
            "provisioned" => Some(DeviceState::Provisioned),
            "locked" => Some(DeviceState::Locked),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Blank => "blank",
            DeviceState::Keyed => "keyed",
            DeviceState::Provisioned => "provisioned",
            DeviceState::Locked => "locked",
        }
    }
}

impl Closed for DeviceState {
    const ALL: &'static [DeviceState] = &[DeviceState::Blank, DeviceState::Keyed, DeviceState::Provisioned, DeviceState::Locked];
    fn as_str(self) -> &'static str {
        DeviceState::as_str(self)
    }
}

impl serde::Serialize for DeviceState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What the device says it is (IDENT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub serial: String,
    pub model: String,
    pub hw_rev: String,
    pub fw_version: String,
    pub fw_hash: String,
    pub chip_uid: String,
    pub state: DeviceState,
}

/// A certificate and its chain as the station wants them on the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedChain {
    /// The device certificate, DER.
    pub cert_der: Vec<u8>,
    /// The CA certificates above it (intermediates first, root last), each
    /// DER, concatenated.
    pub chain_der: Vec<u8>,
    /// Certificate serial, lowercase hex.
    pub serial_hex: String,
    /// True when this certificate was issued earlier and is being re-sent.
    pub resumed: bool,
}

/// Why a session failed, for the record and the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub stage: Stage,
    /// Stable machine code from the closed catalogue ([`FailureCode`]).
    pub code: FailureCode,
    /// What happened, in words an operator understands (the only place
    /// device-supplied text may appear, sanitised and bounded).
    pub reason: String,
    /// What to do next: the code's catalogue hint.
    pub hint: String,
    /// True where re-attaching / retrying the same device can succeed: the
    /// code's catalogue flag.
    pub retryable: bool,
}

impl Failure {
    /// A failure with the hint and retryable flag of `code`'s catalogue entry.
    pub fn new(stage: Stage, code: FailureCode, reason: impl Into<String>) -> Failure {
        Failure { stage, code, reason: reason.into(), hint: code.hint().to_string(), retryable: code.retryable() }
    }
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed {
        identity: Identity,
        cert_serial_hex: String,
        /// The certificate had been issued before (resumed after an unplug or crash).
        resumed: bool,
        /// The device was already locked with this certificate.
        already_provisioned: bool,
    },
    Failed(Failure),
}

/// What the driver must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write `frame`, then feed back the response, [`Input::Timeout`] after
    /// `timeout_ms`, or [`Input::Gone`].
    Send { frame: Frame, timeout_ms: u32 },
    /// Write raw `bytes` (a dialect that is not framed, such as AT commands;
    /// `what` names the request for the record and crash points), then feed
    /// back what the dialect decodes, [`Input::Timeout`] or [`Input::Gone`].
    Write { bytes: Vec<u8>, what: String, timeout_ms: u32 },
    /// A stray or late frame was dropped: keep waiting for the same request
    /// until its original deadline.
    KeepWaiting,
    /// The device said it is busy: wait `ms` milliseconds, then feed
    /// [`Input::Waited`] (the session asks for the wait; it never sleeps).
    Wait { ms: u32 },
    /// Look for a certificate already issued for this device and key.
    /// Answer with [`Input::Lookup`].
    Lookup { serial: String, spki_der: Vec<u8> },
    /// Check the CSR and issue (journaled, through the signer). Answer with
    /// [`Input::Issued`].
    /// `attestation`: the device's own statement that binds the CSR, for a
    /// dialect whose CSR carries no session nonce (then `nonce` is empty and
    /// the CSR is checked without one: [`crate::dialect::Attestation`]).
    Issue {
        identity: Identity,
        keygen_spki_der: Vec<u8>,
        csr_der: Vec<u8>,
        nonce: Vec<u8>,
        attestation: Option<crate::dialect::Attestation>,
    },
    /// Verify a proof-of-possession signature. Answer with [`Input::ProofChecked`].
    CheckProof { spki_der: Vec<u8>, message: Vec<u8>, signature: Vec<u8> },
    /// The session is over.
    Finish(Outcome),
}

/// What happened since the last action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A decoded response frame.
    Frame(Frame),
    /// One complete text line of an unframed dialect (AT), without its line end.
    Line(String),
    /// A marked line that failed its CRC or syntax, or an oversized line.
    Corrupt(String),
    /// No response before the deadline.
    Timeout,
    /// The port went away (unplug, EOF, EIO).
    Gone(String),
    /// The wait asked for by [`Action::Wait`] is over.
    Waited,
    /// `Err` when the station cannot use what it found (e.g. a revoked certificate).
    Lookup(Result<Option<IssuedChain>, Failure>),
    /// The lookup's other answer: a new certificate although the device may
    /// hold one ([`Reissue`]).
    Reissue(Reissue),
    Issued(Result<IssuedChain, Failure>),
    ProofChecked(Result<(), String>),
}

/// Why the station wants a new certificate for a device that has (or had) one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reissue {
    /// A supervisor authorised rework of this serial: RESET the device
    /// (docs/protocol.md 4.10), let it make a new key, and certify that. A
    /// locked device is never reset: it fails `device_locked`.
    Rework,
    /// The certificate of this key is inside its renewal window: a fresh CSR
    /// over the existing key, and a new certificate for it. A locked device
    /// cannot take it: it fails `renewal_locked`, nothing issued.
    Renew { current_serial_hex: String },
}

/// A step worth recording, drained by the driver with [`Session::take_notes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub stage: Stage,
    pub kind: NoteKind,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteKind {
    /// A stage began.
    Started,
    /// A stage completed.
    Completed,
    /// A request is being retried.
    Retry,
    /// Something the record should show (stray frame, device facts).
    Info,
}

impl NoteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoteKind::Started => "started",
            NoteKind::Completed => "completed",
            NoteKind::Retry => "retry",
            NoteKind::Info => "info",
        }
    }
}

/// The device connectivity check (docs/protocol.md 4.11): after PROVE the
/// host writes the broker's CA as object `brokerca` and sends CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectCheck {
    pub host: String,
    pub port: u16,
    pub topic: String,
    /// DER certificates (concatenated) that verify the broker's certificate.
    pub broker_ca_der: Vec<u8>,
}

/// Fixed inputs of a session. Nonces come from the driver's CSPRNG so the
/// session itself stays deterministic.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub key_alg: KeyAlg,
    /// Bound into the CSR (challengePassword), at least 16 bytes.
    pub csr_nonce: Vec<u8>,
    /// Signed in the proof of possession, at least 16 bytes.
    pub pop_nonce: Vec<u8>,
    /// Lock the device after a successful provisioning.
    pub lock: bool,
    /// Extra tries for an idempotent request after a timeout or corrupt answer.
    pub retries: u8,
    /// Link speed in bytes per second (baud / 10 for 8N1), used to stretch
    /// deadlines for long lines.
    pub link_bytes_per_sec: u32,
    /// First request id (the driver may randomise it so a re-attached
    /// device's late answers to an earlier session are never mistaken).
    pub first_rid: u16,
    /// Ask the device to connect to the broker before LOCK; None: skip.
    pub connect: Option<ConnectCheck>,
    /// QA inspection instead of provisioning: write nothing (see
    /// [`Inspection`]): HELLO, IDENT, then, for a device that reports a key,
    /// KEYGEN without `force` (the protocol answers it with the existing key,
    /// writing nothing), READ `cert` and `chain`, PROVE over `pop_nonce`, and
    /// CONNECT when `connect` is set (no `brokerca` is written: the device
    /// uses the one it kept). Never CSR, PUT, COMMIT, LOCK or RESET.
    pub inspect: bool,
}

impl SessionConfig {
    pub fn new(csr_nonce: Vec<u8>, pop_nonce: Vec<u8>) -> Self {
        SessionConfig {
            key_alg: KeyAlg::P256,
            csr_nonce,
            pop_nonce,
            lock: true,
            retries: 2,
            link_bytes_per_sec: 11_520,
            first_rid: 1,
            connect: None,
            inspect: false,
        }
    }
}

/// What a QA inspection read from a device, writing nothing
/// ([`SessionConfig::inspect`]). The station judges it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    pub identity: Identity,
    /// The device's key (KEYGEN without `force`); None for a blank device.
    pub spki_der: Option<Vec<u8>>,
    /// The active certificate; None when the device has none (404).
    pub cert_der: Option<Vec<u8>>,
    /// The active chain; None when the device has none (404).
    pub chain_der: Option<Vec<u8>>,
    /// The proof of possession over a fresh nonce, as the driver checked it
    /// against `spki_der`; None when it could not be asked (no key).
    pub proof: Option<Result<(), String>>,
    /// The device's own broker connection (CONNECT), when asked: Ok(latency
    /// in ms) or why it failed.
    pub connect: Option<Result<u64, String>>,
}

/// The proof-of-possession message a device signs: a domain-separated
/// binding of the host nonce to the device serial (docs/protocol.md 4.8).
pub fn pop_message(serial: &str, nonce: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + serial.len() + nonce.len());
    m.extend_from_slice(b"IMPRINT-POP-V1");
    m.push(0);
    m.extend_from_slice(serial.as_bytes());
    m.push(0);
    m.extend_from_slice(nonce);
    m
}

/// Per-verb deadline class (docs/protocol.md 6), in milliseconds, before
/// adding line transfer time.
pub fn verb_timeout_ms(verb: &str) -> u32 {
    match verb {
        "KEYGEN" | "CSR" => 10_000,
        "COMMIT" | "LOCK" | "RESET" => 5_000,
        "PROVE" => 5_000,
        "CONNECT" => CONNECT_TIMEOUT_MS,
        _ => 500,
    }
}

/// Longest device-supplied message kept in a failure's reason, in bytes.
pub const MAX_DEVICE_TEXT: usize = 200;

/// Deadline base of CONNECT: the device has 10 s to connect and round-trip.
pub const CONNECT_TIMEOUT_MS: u32 = 15_000;

/// Which object a transfer is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Obj {
    Csr,
    Cert,
    Chain,
    BrokerCa,
}

impl Obj {
    fn as_str(self) -> &'static str {
        match self {
            Obj::Csr => "csr",
            Obj::Cert => "cert",
            Obj::Chain => "chain",
            Obj::BrokerCa => "brokerca",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Start,
    Hello,
    Ident,
    Keygen,
    Lookup,
    CsrGen,
    ReadCsr {
        expect_len: usize,
        expect_sha: Vec<u8>,
        got: Vec<u8>,
    },
    Issue,
    Put {
        obj: Obj,
        off: usize,
    },
    Commit {
        obj: Obj,
    },
    ReadBack {
        obj: Obj,
        got: Vec<u8>,
    },
    Prove,
    CheckProof,
    Connect,
    /// Rework: RESET sent.
    Reset,
    /// QA inspection: reading the active `cert` / `chain`.
    Inspect {
        obj: Obj,
        got: Vec<u8>,
    },
    LockPrepare,
    LockCommit {
        token: String,
    },
    LockVerify,
    Finished,
}

/// One provisioning session with one device.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    state: State,
    stage: Stage,
    next_rid: u16,
    /// The outstanding request, for retries.
    outstanding: Option<Frame>,
    tries_left: u8,
    device_chunk: usize,
    identity: Option<Identity>,
    keygen_spki: Vec<u8>,
    issued: Option<IssuedChain>,
    /// Device already locked on arrival.
    locked_on_arrival: bool,
    notes: Vec<Note>,
    corrupt_seen: u32,
    /// Last corrupt line seen while the current request was outstanding.
    last_corrupt: Option<String>,
    /// The request to send again once a BUSY back-off wait is over.
    resend_after_wait: Option<Frame>,
    /// What a QA inspection found so far.
    inspection: Option<Inspection>,
    /// Rework: the device was reset in this session (never twice).
    reset_done: bool,
}

impl Session {
    pub fn new(cfg: SessionConfig) -> Self {
        let rid = cfg.first_rid.max(1);
        Session {
            cfg,
            state: State::Start,
            stage: Stage::Hello,
            next_rid: rid,
            outstanding: None,
            tries_left: 0,
            device_chunk: 512,
            identity: None,
            keygen_spki: Vec::new(),
            issued: None,
            locked_on_arrival: false,
            notes: Vec::new(),
            corrupt_seen: 0,
            last_corrupt: None,
            resend_after_wait: None,
            inspection: None,
            reset_done: false,
        }
    }

    /// What a QA inspection read, once it finished (passed: every request
    /// answered; the station judges the contents).
    pub fn inspection(&self) -> Option<&Inspection> {
        self.inspection.as_ref()
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }
    /// The certificate this session issued or re-sent, once known.
    pub fn issued(&self) -> Option<&IssuedChain> {
        self.issued.as_ref()
    }
    pub fn take_notes(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.notes)
    }

    /// The first action.
    pub fn start(&mut self) -> Action {
        self.enter(Stage::Hello);
        self.state = State::Hello;
        self.request(Frame::request(0, "HELLO").with("proto", PROTO_VERSION.to_string()))
    }

    /// Feed what happened; get the next action.
    pub fn handle(&mut self, input: Input) -> Action {
        if matches!(self.state, State::Finished) {
            return Action::Finish(Outcome::Failed(Failure::new(self.stage, FailureCode::SessionOver, "input after the session finished")));
        }
        match input {
            Input::Gone(why) => {
                let stage = self.stage;
                self.fail(FailureCode::Unplugged, format!("device disconnected during {}: {why}", stage.as_str()))
            }
            Input::Timeout => self.on_timeout(),
            Input::Waited => match self.resend_after_wait.take() {
                Some(req) => self.send(req),
                None => self.fail(FailureCode::Internal, "a wait ended with nothing to resend".into()),
            },
            Input::Corrupt(line) => self.on_corrupt(line),
            Input::Frame(f) => self.on_frame(f),
            Input::Line(l) => self.fail(
                FailureCode::BadResponse,
                format!("an unframed line where a frame was expected: {}", sanitize_device_text(&l, MAX_DEVICE_TEXT)),
            ),
            Input::Lookup(found) => self.on_lookup(found),
            Input::Reissue(r) => self.on_reissue(r),
            Input::Issued(r) => self.on_issued(r),
            Input::ProofChecked(r) => self.on_proof(r),
        }
    }

    // ---- plumbing ----

    fn note(&mut self, kind: NoteKind, detail: impl Into<String>) {
        self.notes.push(Note { stage: self.stage, kind, detail: detail.into() });
    }

    fn enter(&mut self, stage: Stage) {
        self.stage = stage;
        self.note(NoteKind::Started, "");
    }

    fn complete(&mut self, detail: impl Into<String>) {
        self.note(NoteKind::Completed, detail);
    }

    fn alloc_rid(&mut self) -> u16 {
        let rid = self.next_rid;
        self.next_rid = if self.next_rid == u16::MAX { 1 } else { self.next_rid + 1 };
        rid
    }

    fn timeout_for(&self, frame: &Frame, line_len: usize) -> u32 {
        let base = verb_timeout_ms(&frame.head);
        let rate = self.cfg.link_bytes_per_sec.max(1) as u64;
        // Request line out + worst-case response line back, doubled for slack.
        let transfer = ((line_len + crate::codec::MAX_LINE) as u64 * 2 * 1000) / rate;
        base.saturating_add(transfer.min(u32::MAX as u64) as u32)
    }

    /// Issue a new request (fresh retry budget).
    fn request(&mut self, frame: Frame) -> Action {
        self.tries_left = self.cfg.retries;
        self.last_corrupt = None;
        self.send(frame)
    }

    fn send(&mut self, mut frame: Frame) -> Action {
        frame.rid = self.alloc_rid();
        let len = frame.encode().len();
        let timeout_ms = self.timeout_for(&frame, len);
        self.outstanding = Some(frame.clone());
        Action::Send { frame, timeout_ms }
    }

    fn idempotent(req: &Frame) -> bool {
        // LOCK commit is the one step never retried blindly: after a timeout
        // the host asks the device for its state instead. LOCK prepare only
        // hands out a token and may be repeated.
        !(req.head == "LOCK" && req.field("phase") == Some("commit"))
    }

    fn on_timeout(&mut self) -> Action {
        let Some(req) = self.outstanding.clone() else {
            return self.fail(FailureCode::Internal, "timeout with no request outstanding".into());
        };
        if let State::LockCommit { .. } = self.state {
            // Did the lock happen? Ask, never retry the commit blindly.
            self.note(NoteKind::Retry, "LOCK commit timed out; asking the device for its state");
            self.state = State::LockVerify;
            return self.request(Frame::request(0, "IDENT"));
        }
        if self.tries_left > 0 && Self::idempotent(&req) {
            self.tries_left -= 1;
            self.note(NoteKind::Retry, format!("{} timed out; retrying", req.head));
            return self.send(req);
        }
        if let Some(line) = self.last_corrupt.take() {
            return self.fail(
                FailureCode::CorruptFrames,
                format!(
                    "the device's answers to {} were corrupt or oversized ({} tries; last: {})",
                    req.head,
                    1 + self.cfg.retries,
                    truncate(&line, 80)
                ),
            );
        }
        let code = if matches!(self.state, State::Hello) { FailureCode::NoResponse } else { FailureCode::Timeout };
        let tries = 1 + self.cfg.retries as u32;
        let ms = self.timeout_for(&req, req.encode().len());
        self.fail(code, format!("no answer to {} within {ms} ms ({tries} tries)", req.head))
    }

    fn on_corrupt(&mut self, line: String) -> Action {
        self.corrupt_seen += 1;
        let Some(req) = self.outstanding.clone() else {
            self.note(NoteKind::Info, format!("corrupt line ignored: {}", truncate(&line, 80)));
            return Action::KeepWaiting;
        };
        self.last_corrupt = Some(line.clone());
        // Only a corrupt line that names our request id is surely our answer:
        // retry at once. Anything else may be console noise that happens to
        // carry a marker; keep waiting for the real answer until the deadline.
        let ours = corrupt_rid(&line) == Some(req.rid);
        if ours && matches!(self.state, State::LockCommit { .. }) {
            // Did the lock happen? Ask at once, never resend the commit.
            self.note(NoteKind::Retry, format!("corrupt answer to LOCK commit ({}); asking the device for its state", truncate(&line, 80)));
            self.outstanding = None;
            self.state = State::LockVerify;
            return self.request(Frame::request(0, "IDENT"));
        }
        if ours && self.tries_left > 0 && Self::idempotent(&req) {
            self.tries_left -= 1;
            self.note(NoteKind::Retry, format!("corrupt answer to {} ({}); retrying", req.head, truncate(&line, 80)));
            return self.send(req);
        }
        if ours {
            // The last try's answer is damaged: no clean answer to this id
            // will follow, so waiting out the deadline gains nothing
            // (docs/protocol.md 3, "Corrupt answers").
            self.outstanding = None;
            return self.fail(
                FailureCode::CorruptFrames,
                format!(
                    "the device's answers to {} were corrupt or oversized ({} tries; last: {})",
                    req.head,
                    1 + self.cfg.retries,
                    truncate(&line, 80)
                ),
            );
        }
        self.note(NoteKind::Info, format!("corrupt line while waiting for {}: {}", req.head, truncate(&line, 80)));
        Action::KeepWaiting
    }

    fn on_frame(&mut self, f: Frame) -> Action {
        let Some(req) = self.outstanding.as_ref() else {
            self.note(NoteKind::Info, format!("unsolicited frame dropped: {f}"));
            return Action::KeepWaiting;
        };
        if f.rid != req.rid {
            self.note(NoteKind::Info, format!("stray frame for request {} dropped (waiting for {})", f.rid, req.rid));
            return Action::KeepWaiting;
        }
        let req = req.clone();
        self.outstanding = None;
        if f.head == "ERR" {
            return self.on_device_error(&req, &f);
        }
        if !f.is_ok() {
            return self.fail(FailureCode::BadResponse, format!("the device answered {} with {:?}", req.head, f.head));
        }
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Hello => self.after_hello(&f),
            State::Ident => self.after_ident(&f),
            State::Keygen => self.after_keygen(&f),
            State::CsrGen => self.after_csr(&f),
            State::ReadCsr { expect_len, expect_sha, got } => self.after_read_csr(&f, expect_len, expect_sha, got),
            State::Put { obj, off } => self.after_put(&f, obj, off),
            State::Commit { obj } => self.after_commit(obj),
            State::ReadBack { obj, got } => self.after_read_back(&f, obj, got),
            State::Prove => self.after_prove(&f),
            State::Inspect { obj, got } => self.after_inspect(&f, obj, got),
            State::Connect => self.after_connect(&f),
            State::Reset => self.after_reset(&f),
            State::LockPrepare => self.after_lock_prepare(&f),
            State::LockCommit { .. } => self.after_lock_commit(),
            State::LockVerify => self.after_lock_verify(&f),
            other => {
                self.state = other;
                self.fail(FailureCode::Internal, format!("frame in state {:?}", self.stage))
            }
        }
    }

    fn on_device_error(&mut self, req: &Frame, f: &Frame) -> Action {
        let code = f.error_code().unwrap_or(ErrorCode::Other(0));
        let msg = f.text("msg").unwrap_or_default();
        if code == ErrorCode::Busy && self.tries_left > 0 {
            // Back off before asking again: 100 ms, then 200 ms, ... (capped),
            // so a device busy for a while is not run out of tries at once.
            let attempt = u32::from(self.cfg.retries - self.tries_left);
            self.tries_left -= 1;
            let ms = (100u32 << attempt.min(4)).min(2_000);
            self.note(NoteKind::Retry, format!("device busy on {}; asking again in {ms} ms", req.head));
            self.resend_after_wait = Some(req.clone());
            return Action::Wait { ms };
        }
        if self.cfg.inspect {
            if let Some(a) = self.inspect_error(code, f) {
                return a;
            }
        }
        if self.state == State::Connect {
            return self.connect_failed(code, f);
        }
        if matches!(self.state, State::LockPrepare | State::LockCommit { .. }) && code == ErrorCode::Locked {
            // Already locked: fine if it is our certificate, which read-back showed.
            return self.pass();
        }
        let (failure_code, what) = match code {
            ErrorCode::Locked => (FailureCode::DeviceLocked, ""),
            ErrorCode::UnsupportedVersion | ErrorCode::UnknownVerb => (FailureCode::UnsupportedVersion, ""),
            ErrorCode::Storage => (FailureCode::DeviceError, ": the device could not write its flash"),
            _ => (FailureCode::DeviceError, ""),
        };
        let msg = sanitize_device_text(&msg, MAX_DEVICE_TEXT);
        self.fail(
            failure_code,
            format!(
                "device refused {}: {} {}{}{what}",
                req.head,
                code.as_u16(),
                code.name(),
                if msg.is_empty() { String::new() } else { format!(" ({msg})") }
            ),
        )
    }

    fn bad(&mut self, what: String) -> Action {
        self.fail(FailureCode::BadResponse, what)
    }

    fn after_hello(&mut self, f: &Frame) -> Action {
        let proto: u32 = f.field("proto").and_then(|v| v.parse().ok()).unwrap_or(0);
        if proto != PROTO_VERSION {
            return self
                .fail(FailureCode::UnsupportedVersion, format!("device speaks protocol version {proto}, station speaks {PROTO_VERSION}"));
        }
        if let Some(c) = f.field("chunk").and_then(|v| v.parse::<usize>().ok()) {
            self.device_chunk = c.clamp(16, MAX_CHUNK);
        }
        self.complete(format!("proto={proto} chunk={}", self.device_chunk));
        self.enter(Stage::Identify);
        self.state = State::Ident;
        self.request(Frame::request(0, "IDENT"))
    }

    fn after_ident(&mut self, f: &Frame) -> Action {
        let serial = f.text("serial").unwrap_or_default();
        let state = f.field("state").and_then(DeviceState::parse);
        let (false, Some(state)) = (serial.is_empty(), state) else {
            return self.bad(format!("IDENT answer lacks serial or state: {f}"));
        };
        if serial.len() > 64 || !serial.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
            return self.bad(format!("device serial {serial:?} is not a valid serial number"));
        }
        let id = Identity {
            serial,
            model: f.text("model").unwrap_or_default(),
            hw_rev: f.text("hw").unwrap_or_default(),
            fw_version: f.text("fw").unwrap_or_default(),
            fw_hash: f.field("fwhash").unwrap_or_default().to_string(),
            chip_uid: f.field("uid").unwrap_or_default().to_string(),
            state,
        };
        self.complete(format!("serial={} model={} hw={} fw={} state={}", id.serial, id.model, id.hw_rev, id.fw_version, state.as_str()));
        self.locked_on_arrival = state == DeviceState::Locked;
        self.identity = Some(id.clone());
        if self.cfg.inspect {
            self.inspection =
                Some(Inspection { identity: id, spki_der: None, cert_der: None, chain_der: None, proof: None, connect: None });
            if state == DeviceState::Blank {
                // KEYGEN would make a key: a blank device is inspected as it is.
                return self.inspected();
            }
        }
        self.enter(Stage::Keygen);
        self.state = State::Keygen;
        self.request(Frame::request(0, "KEYGEN").with("alg", self.cfg.key_alg.as_str()))
    }

    fn after_keygen(&mut self, f: &Frame) -> Action {
        let Some(spki) = f.field("pub").and_then(|v| unb64(v).ok()) else {
            return self.bad(format!("KEYGEN answer lacks a valid pub: {f}"));
        };
        let new = f.field("new") == Some("1");
        self.complete(format!("{} key, spki_sha256={}", if new { "new" } else { "existing" }, hex_lower(&Sha256::digest(&spki))));
        self.keygen_spki = spki.clone();
        if self.cfg.inspect {
            if let Some(i) = self.inspection.as_mut() {
                i.spki_der = Some(spki);
            }
            self.enter(Stage::ReadBack);
            self.state = State::Inspect { obj: Obj::Cert, got: Vec::new() };
            return self.read_chunk(Obj::Cert, 0);
        }
        self.enter(Stage::Lookup);
        self.state = State::Lookup;
        let serial = self.identity.as_ref().map(|i| i.serial.clone()).unwrap_or_default();
        Action::Lookup { serial, spki_der: spki }
    }

    fn on_lookup(&mut self, found: Result<Option<IssuedChain>, Failure>) -> Action {
        if self.state != State::Lookup {
            return self.fail(FailureCode::Internal, "lookup answer out of order".into());
        }
        let found = match found {
            Ok(f) => f,
            Err(failure) => return self.finish_failed(failure),
        };
        match found {
            Some(chain) => {
                self.complete(format!("certificate {} already issued for this key: re-sending it", chain.serial_hex));
                self.issued = Some(IssuedChain { resumed: true, ..chain });
                if self.locked_on_arrival {
                    // Locked devices cannot be written: verify what they hold.
                    self.enter(Stage::ReadBack);
                    self.state = State::ReadBack { obj: Obj::Cert, got: Vec::new() };
                    return self.read_chunk(Obj::Cert, 0);
                }
                self.start_put(Obj::Cert)
            }
            None => {
                if self.locked_on_arrival {
                    return self
                        .fail(FailureCode::LockedUnknown, "the device is locked and holds no certificate this station issued".into());
                }
                self.complete("no certificate for this key yet");
                self.enter(Stage::Csr);
                self.state = State::CsrGen;
                self.request(Frame::request(0, "CSR").with("nonce", b64(&self.cfg.csr_nonce)))
            }
        }
    }

    fn on_reissue(&mut self, r: Reissue) -> Action {
        if self.state != State::Lookup {
            return self.fail(FailureCode::Internal, "reissue answer out of order".into());
        }
        let serial = self.identity.as_ref().map(|i| i.serial.clone()).unwrap_or_default();
        match r {
            Reissue::Rework => {
                if self.reset_done {
                    return self.fail(FailureCode::Internal, "rework asked again after the device was reset".into());
                }
                if self.locked_on_arrival {
                    return self.fail(
                        FailureCode::DeviceLocked,
                        format!(
                            "rework of {serial} is authorised, but the device is locked: a locked device is never reset \
                             (RESET answers 423), so it keeps its key and certificate and the authorisation stays unused"
                        ),
                    );
                }
                self.complete("rework authorised by a supervisor: resetting the device (key, certificate and chain are wiped)");
                self.enter(Stage::Keygen);
                self.state = State::Reset;
                self.request(Frame::request(0, "RESET").with("confirm", crate::codec::pct_encode(&serial)))
            }
            Reissue::Renew { current_serial_hex } => {
                if self.locked_on_arrival {
                    return self.fail(
                        FailureCode::RenewalLocked,
                        format!(
                            "certificate {current_serial_hex} is inside its renewal window, but the device is locked and cannot \
                             take a new certificate: nothing was issued"
                        ),
                    );
                }
                self.complete(format!(
                    "certificate {current_serial_hex} is inside its renewal window: a new certificate for the existing key"
                ));
                self.enter(Stage::Csr);
                self.state = State::CsrGen;
                self.request(Frame::request(0, "CSR").with("nonce", b64(&self.cfg.csr_nonce)))
            }
        }
    }

    fn after_reset(&mut self, f: &Frame) -> Action {
        if f.field("state") != Some("blank") {
            return self.bad(format!("RESET answer does not say state=blank: {f}"));
        }
        self.reset_done = true;
        self.complete("device reset to blank");
        self.state = State::Keygen;
        self.request(Frame::request(0, "KEYGEN").with("alg", self.cfg.key_alg.as_str()))
    }

    fn after_csr(&mut self, f: &Frame) -> Action {
        let len = f.field("len").and_then(|v| v.parse::<usize>().ok());
        let sha = f.field("sha256").and_then(|v| unb64(v).ok());
        let (Some(len), Some(sha)) = (len, sha) else {
            return self.bad(format!("CSR answer lacks len or sha256: {f}"));
        };
        if len == 0 || len > 16 * 1024 || sha.len() != 32 {
            return self.bad(format!("CSR answer has len={len} and a {}-byte hash", sha.len()));
        }
        self.state = State::ReadCsr { expect_len: len, expect_sha: sha, got: Vec::new() };
        self.read_chunk(Obj::Csr, 0)
    }

    fn read_chunk(&mut self, obj: Obj, off: usize) -> Action {
        self.request(
            Frame::request(0, "READ").with("obj", obj.as_str()).with("off", off.to_string()).with("max", self.device_chunk.to_string()),
        )
    }

    /// Parse a READ answer; returns (total, data).
    fn read_answer(&mut self, f: &Frame, off: usize) -> Result<(usize, Vec<u8>), String> {
        let got_off = f.field("off").and_then(|v| v.parse::<usize>().ok());
        let total = f.field("total").and_then(|v| v.parse::<usize>().ok());
        let data = f.field("data").map(unb64);
        match (got_off, total, data) {
            (Some(o), Some(t), Some(Ok(d))) if o == off && d.len() <= self.device_chunk.max(MAX_CHUNK) && o + d.len() <= t => {
                if d.is_empty() && o < t {
                    return Err(format!("READ at {o} of {t} returned no data"));
                }
                Ok((t, d))
            }
            _ => Err(format!("bad READ answer at offset {off}: {f}")),
        }
    }

    fn after_read_csr(&mut self, f: &Frame, expect_len: usize, expect_sha: Vec<u8>, mut got: Vec<u8>) -> Action {
        let (total, data) = match self.read_answer(f, got.len()) {
            Ok(x) => x,
            Err(e) => return self.bad(e),
        };
        if total != expect_len {
            return self.bad(format!("CSR is {total} bytes on READ but {expect_len} announced"));
        }
        got.extend_from_slice(&data);
        if got.len() < total {
            let off = got.len();
            self.state = State::ReadCsr { expect_len, expect_sha, got };
            return self.read_chunk(Obj::Csr, off);
        }
        if Sha256::digest(&got).as_slice() != expect_sha.as_slice() {
            return self.fail(FailureCode::CsrTransfer, "the CSR read from the device does not match the SHA-256 it announced".into());
        }
        self.complete(format!("CSR {} bytes", got.len()));
        self.enter(Stage::Issue);
        self.state = State::Issue;
        let identity = self.identity.clone().unwrap_or_else(unreachable_identity);
        Action::Issue {
            identity,
            keygen_spki_der: self.keygen_spki.clone(),
            csr_der: got,
            nonce: self.cfg.csr_nonce.clone(),
            attestation: None,
        }
    }

    fn on_issued(&mut self, r: Result<IssuedChain, Failure>) -> Action {
        if self.state != State::Issue {
            return self.fail(FailureCode::Internal, "issue answer out of order".into());
        }
        match r {
            Ok(chain) => {
                self.complete(format!("certificate serial {}", chain.serial_hex));
                self.issued = Some(chain);
                self.start_put(Obj::Cert)
            }
            Err(failure) => self.finish_failed(failure),
        }
    }

    fn object_bytes(&self, obj: Obj) -> &[u8] {
        match (obj, self.issued.as_ref()) {
            (Obj::Cert, Some(c)) => &c.cert_der,
            (Obj::Chain, Some(c)) => &c.chain_der,
            (Obj::BrokerCa, _) => self.cfg.connect.as_ref().map_or(&[][..], |c| &c.broker_ca_der[..]),
            _ => &[],
        }
    }

    fn start_put(&mut self, obj: Obj) -> Action {
        match obj {
            Obj::Cert => self.enter(Stage::WriteCert),
            Obj::Chain => self.enter(Stage::WriteChain),
            _ => {}
        }
        self.put_chunk(obj, 0)
    }

    fn put_chunk(&mut self, obj: Obj, off: usize) -> Action {
        let bytes = self.object_bytes(obj);
        let end = (off + self.device_chunk).min(bytes.len());
        let data = b64(&bytes[off..end]);
        self.state = State::Put { obj, off };
        self.request(Frame::request(0, "PUT").with("obj", obj.as_str()).with("off", off.to_string()).with("data", data))
    }

    fn after_put(&mut self, f: &Frame, obj: Obj, off: usize) -> Action {
        let total = self.object_bytes(obj).len();
        let expect_next = (off + self.device_chunk).min(total);
        let next = f.field("next").and_then(|v| v.parse::<usize>().ok());
        if next != Some(expect_next) {
            return self.bad(format!("PUT {} at {off}: device says next={next:?}, expected {expect_next}", obj.as_str()));
        }
        if expect_next < total {
            return self.put_chunk(obj, expect_next);
        }
        let sha = Sha256::digest(self.object_bytes(obj));
        self.state = State::Commit { obj };
        self.request(Frame::request(0, "COMMIT").with("obj", obj.as_str()).with("len", total.to_string()).with("sha256", b64(&sha)))
    }

    fn after_commit(&mut self, obj: Obj) -> Action {
        self.complete(format!("{} committed ({} bytes)", obj.as_str(), self.object_bytes(obj).len()));
        match obj {
            Obj::Cert => self.start_put(Obj::Chain),
            Obj::BrokerCa => self.send_connect(),
            _ => {
                self.enter(Stage::ReadBack);
                self.state = State::ReadBack { obj: Obj::Cert, got: Vec::new() };
                self.read_chunk(Obj::Cert, 0)
            }
        }
    }

    fn after_read_back(&mut self, f: &Frame, obj: Obj, mut got: Vec<u8>) -> Action {
        let (total, data) = match self.read_answer(f, got.len()) {
            Ok(x) => x,
            Err(e) => return self.bad(e),
        };
        got.extend_from_slice(&data);
        if got.len() < total {
            let off = got.len();
            self.state = State::ReadBack { obj, got };
            return self.read_chunk(obj, off);
        }
        if got != self.object_bytes(obj) {
            let locked = self.locked_on_arrival;
            return self.fail(
                // A locked device cannot be rewritten: it holds a certificate
                // this station did not issue for its key.
                if locked { FailureCode::LockedUnknown } else { FailureCode::ReadBackMismatch },
                format!(
                    "the {} read back from the device differs from what {} ({} bytes read, {} expected)",
                    obj.as_str(),
                    if locked { "this station issued for its key" } else { "was written" },
                    got.len(),
                    self.object_bytes(obj).len()
                ),
            );
        }
        match obj {
            Obj::Cert => {
                self.state = State::ReadBack { obj: Obj::Chain, got: Vec::new() };
                self.read_chunk(Obj::Chain, 0)
            }
            _ => {
                self.complete("certificate and chain read back identical");
                self.enter(Stage::Prove);
                self.state = State::Prove;
                self.request(Frame::request(0, "PROVE").with("nonce", b64(&self.cfg.pop_nonce)))
            }
        }
    }

    fn after_prove(&mut self, f: &Frame) -> Action {
        let Some(sig) = f.field("sig").and_then(|v| unb64(v).ok()) else {
            return self.bad(format!("PROVE answer lacks a valid sig: {f}"));
        };
        self.state = State::CheckProof;
        let serial = self.identity.as_ref().map(|i| i.serial.clone()).unwrap_or_default();
        Action::CheckProof { spki_der: self.keygen_spki.clone(), message: pop_message(&serial, &self.cfg.pop_nonce), signature: sig }
    }

    fn on_proof(&mut self, r: Result<(), String>) -> Action {
        if self.state != State::CheckProof {
            return self.fail(FailureCode::Internal, "proof answer out of order".into());
        }
        if self.cfg.inspect {
            if let Some(i) = self.inspection.as_mut() {
                i.proof = Some(r);
            }
            if self.cfg.connect.is_some() {
                self.enter(Stage::Connect);
                return self.send_connect();
            }
            return self.inspected();
        }
        if let Err(why) = r {
            return self.fail(FailureCode::ProofFailed, format!("the device could not prove it holds the certified key: {why}"));
        }
        self.complete("proof of possession verified");
        if !self.locked_on_arrival && self.cfg.connect.is_some() {
            // Written like cert and chain; the device checks it parses.
            self.enter(Stage::Connect);
            return self.put_chunk(Obj::BrokerCa, 0);
        }
        self.lock_or_pass()
    }

    fn lock_or_pass(&mut self) -> Action {
        if self.locked_on_arrival || !self.cfg.lock {
            return self.pass();
        }
        self.enter(Stage::Lock);
        self.state = State::LockPrepare;
        self.request(Frame::request(0, "LOCK").with("phase", "prepare"))
    }

    fn send_connect(&mut self) -> Action {
        let Some(c) = self.cfg.connect.clone() else {
            return self.lock_or_pass();
        };
        self.state = State::Connect;
        self.request(
            Frame::request(0, "CONNECT")
                .with("host", crate::codec::pct_encode(&c.host))
                .with("port", c.port.to_string())
                .with("topic", crate::codec::pct_encode(&c.topic)),
        )
    }

    fn after_connect(&mut self, f: &Frame) -> Action {
        let latency = f.field("latency_ms").and_then(|v| v.parse::<u64>().ok());
        let Some(latency) = latency else {
            return self.bad(format!("CONNECT answer lacks latency_ms: {f}"));
        };
        if self.cfg.inspect {
            if let Some(i) = self.inspection.as_mut() {
                i.connect = Some(Ok(latency));
            }
            return self.inspected();
        }
        let c = self.cfg.connect.clone();
        let (host, port) = c.map(|c| (c.host, c.port)).unwrap_or_default();
        self.complete(format!(
            "device connected to the broker {host}:{port} over mTLS with its certificate; publish/receive round trip {latency} ms"
        ));
        self.lock_or_pass()
    }

    /// CONNECT answered ERR: the device could not use its identity at the broker.
    fn connect_failed(&mut self, code: ErrorCode, f: &Frame) -> Action {
        let msg = f.text("msg").unwrap_or_default();
        if code == ErrorCode::UnknownVerb {
            return self.fail(
                FailureCode::ConnectUnsupported,
                "the device firmware does not implement CONNECT, and this station requires the broker check".into(),
            );
        }
        if code != ErrorCode::ConnectFailed {
            return self.fail(
                FailureCode::DeviceError,
                format!("device refused CONNECT: {} {} ({})", code.as_u16(), code.name(), sanitize_device_text(&msg, MAX_DEVICE_TEXT)),
            );
        }
        // The device's reason picks one of a closed set of codes; its words
        // only ever reach the (sanitised, bounded) reason text.
        let said = f.field("reason").unwrap_or("other");
        let code = FailureCode::from_connect_reason(said);
        self.fail(
            code,
            format!(
                "the device could not connect to the broker with its new certificate: {}: {}",
                sanitize_device_text(said, 64),
                sanitize_device_text(&msg, MAX_DEVICE_TEXT)
            ),
        )
    }

    // ---- QA inspection (writes nothing) ----

    /// A device error during an inspection that is a finding, not a link
    /// failure: no such object (404), no key to prove with (409), a failed
    /// CONNECT. `None`: handled like in provisioning.
    fn inspect_error(&mut self, code: ErrorCode, f: &Frame) -> Option<Action> {
        let msg = sanitize_device_text(&f.text("msg").unwrap_or_default(), MAX_DEVICE_TEXT);
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Inspect { obj, .. } if code == ErrorCode::NotFound => {
                self.note(NoteKind::Info, format!("the device holds no {}", obj.as_str()));
                Some(self.inspect_next(obj))
            }
            State::Prove => {
                if let Some(i) = self.inspection.as_mut() {
                    i.proof = Some(Err(format!("the device refused PROVE: {} {} ({msg})", code.as_u16(), code.name())));
                }
                Some(self.inspected())
            }
            State::Connect => {
                let said = sanitize_device_text(f.field("reason").unwrap_or("other"), 64);
                if let Some(i) = self.inspection.as_mut() {
                    i.connect = Some(Err(format!("{} {}: {said}: {msg}", code.as_u16(), code.name())));
                }
                Some(self.inspected())
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    fn after_inspect(&mut self, f: &Frame, obj: Obj, mut got: Vec<u8>) -> Action {
        let (total, data) = match self.read_answer(f, got.len()) {
            Ok(x) => x,
            Err(e) => return self.bad(e),
        };
        got.extend_from_slice(&data);
        if got.len() < total {
            let off = got.len();
            self.state = State::Inspect { obj, got };
            return self.read_chunk(obj, off);
        }
        if let Some(i) = self.inspection.as_mut() {
            match obj {
                Obj::Cert => i.cert_der = Some(got),
                _ => i.chain_der = Some(got),
            }
        }
        self.inspect_next(obj)
    }

    /// After reading `obj` (or finding it absent): the chain, then PROVE.
    fn inspect_next(&mut self, obj: Obj) -> Action {
        if obj == Obj::Cert {
            self.state = State::Inspect { obj: Obj::Chain, got: Vec::new() };
            return self.read_chunk(Obj::Chain, 0);
        }
        self.complete("certificate and chain read (nothing written)");
        self.enter(Stage::Prove);
        self.state = State::Prove;
        self.request(Frame::request(0, "PROVE").with("nonce", b64(&self.cfg.pop_nonce)))
    }

    /// The inspection is over: every request was answered.
    fn inspected(&mut self) -> Action {
        self.stage = Stage::Done;
        self.state = State::Finished;
        self.outstanding = None;
        self.note(NoteKind::Completed, "inspected");
        let identity = self.identity.clone().unwrap_or_else(unreachable_identity);
        Action::Finish(Outcome::Passed {
            identity,
            cert_serial_hex: String::new(),
            resumed: false,
            already_provisioned: self.locked_on_arrival,
        })
    }

    fn after_lock_prepare(&mut self, f: &Frame) -> Action {
        let Some(token) = f.field("token").map(str::to_string) else {
            return self.bad(format!("LOCK prepare answer lacks a token: {f}"));
        };
        self.state = State::LockCommit { token: token.clone() };
        self.request(Frame::request(0, "LOCK").with("phase", "commit").with("token", token))
    }

    fn after_lock_commit(&mut self) -> Action {
        self.complete("device locked");
        self.pass()
    }

    fn after_lock_verify(&mut self, f: &Frame) -> Action {
        if f.field("state") == Some("locked") {
            self.complete("device reports locked after the commit timed out");
            return self.pass();
        }
        self.fail(
            FailureCode::LockUnconfirmed,
            format!("LOCK commit timed out and the device reports state {}", sanitize_device_text(f.field("state").unwrap_or("?"), 64)),
        )
    }

    fn pass(&mut self) -> Action {
        self.stage = Stage::Done;
        self.state = State::Finished;
        let identity = self.identity.clone().unwrap_or_else(unreachable_identity);
        let issued = self.issued.clone();
        self.note(NoteKind::Completed, "passed");
        Action::Finish(Outcome::Passed {
            identity,
            cert_serial_hex: issued.as_ref().map(|i| i.serial_hex.clone()).unwrap_or_default(),
            resumed: issued.as_ref().is_some_and(|i| i.resumed),
            already_provisioned: self.locked_on_arrival,
        })
    }

    fn fail(&mut self, code: FailureCode, reason: String) -> Action {
        self.finish_failed(Failure::new(self.stage, code, reason))
    }

    fn finish_failed(&mut self, f: Failure) -> Action {
        self.state = State::Finished;
        self.outstanding = None;
        Action::Finish(Outcome::Failed(f))
    }
}

/// The identity is set in IDENT before any state that reads it; this
/// placeholder only exists so that invariant is not an `expect`.
fn unreachable_identity() -> Identity {
    Identity {
        serial: String::new(),
        model: String::new(),
        hw_rev: String::new(),
        fw_version: String::new(),
        fw_hash: String::new(),
        chip_uid: String::new(),
        state: DeviceState::Blank,
    }
}

/// The request id of a corrupt response line, if it is legible: `@< <rid> ...`.
fn corrupt_rid(line: &str) -> Option<u16> {
    let rest = line.strip_prefix(crate::codec::RESP_MARKER)?.trim_start();
    rest.split(' ').next()?.parse().ok()
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
