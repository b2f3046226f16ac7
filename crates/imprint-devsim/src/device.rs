//! The device logic: one request frame in, one reply out. No I/O, no clock:
//! compute time is reported in [`Reply::busy_ms`] and the I/O loop
//! ([`crate::SimDevice`]) waits it out. The one exception is CONNECT, which
//! really connects to the MQTT broker ([`crate::mqtt`]).

use crate::faults::Faults;
use crate::keys::{build_csr, corrupt_signature, DeviceKey, KeyKind};
use crate::SimConfig;
use imprint_proto::codec::{b64, pct_encode, unb64, Direction, ErrorCode, Frame};
use imprint_proto::session::pop_message;
use imprint_proto::DeviceState;
use rcgen::SigningKey;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Protocol version the simulated firmware speaks.
pub const PROTO: u32 = 1;
/// Largest raw chunk the device moves in one READ (and advertises in HELLO).
pub const CHUNK: usize = 512;
/// Largest object the staging slot takes.
pub const MAX_OBJECT: usize = 8192;
/// Verbs the device implements, as advertised in HELLO.
pub const CAPS: &str = "HELLO,IDENT,KEYGEN,CSR,READ,PUT,COMMIT,PROVE,LOCK,RESET,CONNECT";
/// Nonce length bounds (bytes) for CSR and PROVE.
pub const NONCE_MIN: usize = 16;
pub const NONCE_MAX: usize = 64;
/// Length of the line the `oversized` faults send.
pub const OVERSIZED_LEN: usize = 1500;

pub const MODEL: &str = "imprint-sim";
pub const HW_REV: &str = "A1";
pub const FW_VERSION: &str = "1.4.2";

/// How an answer leaves the device (the transport faults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The encoded answer.
    Answer,
    /// Nothing at all (`silent`).
    Silent,
    /// The device unplugs itself instead of answering (`unplug-at`).
    Unplug,
    /// A 1500-byte line instead of the answer (`oversized`, `oversized-at`).
    Oversized,
    /// The answer with a wrong CRC (`bad-crc`, `bad-crc-at`).
    BadCrc,
}

/// What the device does about one request.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The answer the firmware logic produced; `None` when the request was
    /// not processed at all (`silent`, `unplug-at`).
    pub frame: Option<Frame>,
    /// How it goes on the wire.
    pub delivery: Delivery,
    /// Console lines written before the answer (`noise`).
    pub console: Vec<Vec<u8>>,
    /// Simulated compute/flash time before the answer starts (includes `slow-ms`).
    pub busy_ms: u64,
}

impl Reply {
    /// The answer frame; panics-free accessor for tests: `None` if unanswered.
    pub fn frame(&self) -> Option<&Frame> {
        self.frame.as_ref()
    }

    /// The bytes that go on the wire, console noise included; empty for
    /// `Silent` and `Unplug`.
    pub fn wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let Some(frame) = &self.frame else { return out };
        match self.delivery {
            Delivery::Silent | Delivery::Unplug => return out,
            _ => {}
        }
        for line in &self.console {
            out.extend_from_slice(line);
        }
        match self.delivery {
            Delivery::Answer => out.extend(frame.encode()),
            Delivery::BadCrc => out.extend(with_wrong_crc(&frame.encode())),
            Delivery::Oversized => out.extend(oversized_line(frame.rid)),
            Delivery::Silent | Delivery::Unplug => {}
        }
        out
    }
}

/// Replace the 4 hex digits of the CRC trailer by a wrong value.
fn with_wrong_crc(line: &[u8]) -> Vec<u8> {
    let mut l = line.to_vec();
    // ... " *XXXX\n"
    if l.len() >= 6 {
        let at = l.len() - 5;
        let hex = std::str::from_utf8(&l[at..at + 4]).ok().and_then(|h| u16::from_str_radix(h, 16).ok());
        if let Some(crc) = hex {
            let bad = format!("{:04X}", crc ^ 0x5A5A);
            l[at..at + 4].copy_from_slice(bad.as_bytes());
        }
    }
    l
}

/// A line of [`OVERSIZED_LEN`] bytes (terminator included) that starts like
/// an answer to `rid`.
fn oversized_line(rid: u16) -> Vec<u8> {
    let mut l = format!("@< {rid} OK junk=").into_bytes();
    l.resize(OVERSIZED_LEN - 1, b'A');
    l.push(b'\n');
    l
}

/// What a snapshot of the device shows (for tests and the station's
/// simulated-devices mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSnapshot {
    pub serial: String,
    pub locked: bool,
    pub state: DeviceState,
    /// DER SubjectPublicKeyInfo of the device key, if any.
    pub public_key_spki: Option<Vec<u8>>,
    /// The last CSR the device made, if any.
    pub csr_der: Option<Vec<u8>>,
    /// Active (committed) certificate.
    pub cert_der: Option<Vec<u8>>,
    /// Active (committed) chain.
    pub chain_der: Option<Vec<u8>>,
    /// Console lines written so far (the `noise` fault).
    pub console_lines_sent: u64,
    /// Valid requests received so far.
    pub requests: u64,
    /// The device's EC key as PKCS#8 DER: a simulator's key, so a test can
    /// connect as the device (e.g. to a broker that loads a CRL).
    pub key_pkcs8: Option<Vec<u8>>,
}

/// Objects that PUT/COMMIT can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Cert,
    Chain,
    /// The CA that verifies the broker, for CONNECT.
    BrokerCa,
}

/// A simulated board's firmware state.
#[derive(Debug)]
pub struct Device {
    serial: String,
    model: String,
    fw_version: String,
    fwhash: String,
    uid: String,
    faults: Faults,
    keygen_ms: u64,
    csr_ms: u64,
    flash_ms: u64,
    prove_ms: u64,
    key: Option<DeviceKey>,
    csr: Option<Vec<u8>>,
    cert: Option<Vec<u8>>,
    chain: Option<Vec<u8>>,
    staged_cert: Option<Vec<u8>>,
    staged_chain: Option<Vec<u8>>,
    broker_ca: Option<Vec<u8>>,
    staged_broker_ca: Option<Vec<u8>>,
    lock_token: Option<String>,
    locked: bool,
    requests: u64,
    console_lines_sent: u64,
}

/// `len` random bytes from the OS.
pub(crate) fn random_bytes(len: usize) -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; len];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No OS randomness is not survivable for a key store; for a
        // simulator's uid/token/noise a time-derived fallback is enough.
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
        let h = Sha256::digest(seed.to_le_bytes());
        for (i, x) in b.iter_mut().enumerate() {
            *x = h[i % h.len()];
        }
    }
    b
}

fn bad_request(rid: u16, msg: &str) -> Frame {
    Frame::err(rid, ErrorCode::BadRequest, msg)
}

fn field<'a>(req: &'a Frame, key: &str) -> Result<&'a str, Frame> {
    req.field(key).ok_or_else(|| bad_request(req.rid, &format!("missing field {key}")))
}

fn num_field(req: &Frame, key: &str) -> Result<usize, Frame> {
    let v = field(req, key)?;
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_request(req.rid, &format!("field {key} is not a number")));
    }
    v.parse().map_err(|_| bad_request(req.rid, &format!("field {key} is out of range")))
}

fn b64_field(req: &Frame, key: &str) -> Result<Vec<u8>, Frame> {
    unb64(field(req, key)?).map_err(|_| bad_request(req.rid, &format!("field {key} is not base64url")))
}

fn nonce_field(req: &Frame) -> Result<Vec<u8>, Frame> {
    let n = b64_field(req, "nonce")?;
    if !(NONCE_MIN..=NONCE_MAX).contains(&n.len()) {
        return Err(bad_request(req.rid, &format!("nonce must be {NONCE_MIN}..{NONCE_MAX} bytes, got {}", n.len())));
    }
    Ok(n)
}

type Answer = Result<(Frame, u64), Frame>;

impl Device {
    pub fn new(cfg: &SimConfig) -> Self {
        let model = cfg.model.clone().unwrap_or_else(|| MODEL.to_string());
        let fw_version = cfg.fw_version.clone().unwrap_or_else(|| FW_VERSION.to_string());
        let fwhash = hex::encode(Sha256::digest(format!("{model} firmware {fw_version}").as_bytes()));
        Device {
            serial: cfg.serial.clone(),
            model,
            fw_version,
            fwhash,
            uid: hex::encode(random_bytes(8)),
            faults: cfg.faults.clone(),
            keygen_ms: cfg.keygen_ms,
            csr_ms: cfg.csr_ms,
            flash_ms: cfg.flash_ms,
            prove_ms: cfg.prove_ms,
            key: None,
            csr: None,
            cert: None,
            chain: None,
            staged_cert: None,
            staged_chain: None,
            broker_ca: None,
            staged_broker_ca: None,
            lock_token: None,
            locked: false,
            requests: 0,
            console_lines_sent: 0,
        }
    }

    pub fn serial(&self) -> &str {
        &self.serial
    }
    pub fn faults(&self) -> &Faults {
        &self.faults
    }
    /// Clear the `unplug-at` fault (after the replug it schedules).
    pub fn clear_unplug_fault(&mut self) {
        self.faults.unplug_at = None;
        self.faults.replug_after_ms = None;
    }

    pub fn state(&self) -> DeviceState {
        if self.locked {
            DeviceState::Locked
        } else if self.cert.is_some() && self.chain.is_some() {
            DeviceState::Provisioned
        } else if self.key.is_some() {
            DeviceState::Keyed
        } else {
            DeviceState::Blank
        }
    }

    pub fn snapshot(&self) -> DeviceSnapshot {
        DeviceSnapshot {
            serial: self.serial.clone(),
            locked: self.locked,
            state: self.state(),
            public_key_spki: self.key.as_ref().map(DeviceKey::spki_der),
            csr_der: self.csr.clone(),
            cert_der: self.cert.clone(),
            chain_der: self.chain.clone(),
            console_lines_sent: self.console_lines_sent,
            requests: self.requests,
            key_pkcs8: match &self.key {
                Some(DeviceKey::Ec(pair, _)) => Some(pair.serialize_der()),
                _ => None,
            },
        }
    }

    /// Handle one valid request frame.
    pub fn handle(&mut self, req: &Frame) -> Reply {
        self.requests += 1;
        let n = self.requests;
        let unanswered = |delivery| Reply { frame: None, delivery, console: Vec::new(), busy_ms: 0 };
        if req.dir != Direction::Request || self.faults.silent {
            return unanswered(Delivery::Silent);
        }
        if self.faults.unplug_at == Some(n) {
            return unanswered(Delivery::Unplug);
        }
        if self.faults.busy_at == Some(n) {
            // Refused without acting on it, as 503 requires.
            let frame = Frame::err(req.rid, ErrorCode::Busy, "erasing flash");
            return Reply { frame: Some(frame), delivery: Delivery::Answer, console: Vec::new(), busy_ms: 0 };
        }
        let (frame, busy_ms) = match self.execute(req) {
            Ok(x) => x,
            Err(f) => (f, 0),
        };
        let delivery = if self.faults.oversized || self.faults.oversized_at == Some(n) {
            Delivery::Oversized
        } else if self.faults.bad_crc || self.faults.bad_crc_at == Some(n) {
            Delivery::BadCrc
        } else {
            Delivery::Answer
        };
        let console = if self.faults.noise { noise_lines() } else { Vec::new() };
        self.console_lines_sent += console.len() as u64;
        Reply { frame: Some(frame), delivery, console, busy_ms: busy_ms + self.faults.slow_ms }
    }

    fn execute(&mut self, req: &Frame) -> Answer {
        match req.head.as_str() {
            "HELLO" => self.hello(req),
            "IDENT" => Ok((self.ident(req.rid), 0)),
            "KEYGEN" => self.keygen(req),
            "CSR" => self.csr(req),
            "READ" => self.read(req),
            "PUT" => self.put(req),
            "COMMIT" => self.commit(req),
            "PROVE" => self.prove(req),
            "LOCK" => self.lock(req),
            "RESET" => self.reset(req),
            "CONNECT" => self.connect(req),
            other => Err(Frame::err(req.rid, ErrorCode::UnknownVerb, &format!("unknown verb {other}"))),
        }
    }

    fn hello(&self, req: &Frame) -> Answer {
        let proto = field(req, "proto")?;
        if proto != PROTO.to_string() {
            return Err(Frame::err(req.rid, ErrorCode::UnsupportedVersion, &format!("device speaks proto {PROTO}"))
                .with("proto", PROTO.to_string()));
        }
        Ok((
            Frame::ok(req.rid)
                .with("proto", PROTO.to_string())
                .with("maxline", imprint_proto::MAX_LINE.to_string())
                .with("chunk", CHUNK.to_string())
                .with("caps", CAPS),
            0,
        ))
    }

    fn ident(&self, rid: u16) -> Frame {
        Frame::ok(rid)
            .with("serial", pct_encode(&self.serial))
            .with("model", pct_encode(&self.model))
            .with("hw", pct_encode(HW_REV))
            .with("fw", pct_encode(&self.fw_version))
            .with("fwhash", self.fwhash.clone())
            .with("uid", self.uid.clone())
            .with("state", self.state().as_str())
    }

    fn keygen(&mut self, req: &Frame) -> Answer {
        let kind = match field(req, "alg")? {
            "p256" => KeyKind::P256,
            "p384" => KeyKind::P384,
            other => return Err(bad_request(req.rid, &format!("unsupported alg {other}"))),
        };
        let force = match req.field("force") {
            None | Some("0") => false,
            Some("1") => true,
            Some(_) => return Err(bad_request(req.rid, "force must be 0 or 1")),
        };
        if let Some(key) = &self.key {
            if !force {
                return Ok((Frame::ok(req.rid).with("alg", key.kind().keygen_alg()).with("pub", b64(&key.spki_der())).with("new", "0"), 0));
            }
            if self.locked {
                return Err(Frame::err(req.rid, ErrorCode::Locked, "device is locked; key cannot be replaced"));
            }
        }
        let kind = if self.faults.weak_key { KeyKind::Rsa1024 } else { kind };
        let key =
            DeviceKey::generate(kind).map_err(|e| Frame::err(req.rid, ErrorCode::Internal, &format!("key generation failed: {e}")))?;
        // A new key invalidates everything bound to the old one.
        self.wipe_objects();
        let spki = key.spki_der();
        self.key = Some(key);
        Ok((Frame::ok(req.rid).with("alg", kind.keygen_alg()).with("pub", b64(&spki)).with("new", "1"), self.keygen_ms))
    }

    fn wipe_objects(&mut self) {
        self.broker_ca = None;
        self.staged_broker_ca = None;
        self.csr = None;
        self.cert = None;
        self.chain = None;
        self.staged_cert = None;
        self.staged_chain = None;
        self.lock_token = None;
    }

    fn csr(&mut self, req: &Frame) -> Answer {
        let nonce = nonce_field(req)?;
        let Some(key) = &self.key else {
            return Err(Frame::err(req.rid, ErrorCode::BadState, "no key: send KEYGEN first"));
        };
        let internal = |e: String| Frame::err(req.rid, ErrorCode::Internal, &format!("CSR failed: {e}"));
        let subject = if self.faults.wrong_serial_csr { other_serial(&self.serial) } else { self.serial.clone() };
        let challenge = if self.faults.stale_nonce {
            let mut stale = random_bytes(nonce.len());
            if stale == nonce {
                stale[0] ^= 0xFF;
            }
            stale
        } else {
            nonce
        };
        let mut der = if self.faults.other_key_csr {
            let other = DeviceKey::generate(key.kind()).map_err(internal)?;
            build_csr(&subject, &challenge, &other).map_err(internal)?
        } else {
            build_csr(&subject, &challenge, key).map_err(internal)?
        };
        if self.faults.bad_csr_sig {
            corrupt_signature(&mut der);
        }
        let answer = Frame::ok(req.rid).with("len", der.len().to_string()).with("sha256", b64(&Sha256::digest(&der)));
        self.csr = Some(der);
        Ok((answer, self.csr_ms))
    }

    fn read(&self, req: &Frame) -> Answer {
        let obj = field(req, "obj")?;
        let off = num_field(req, "off")?;
        let max = match req.field("max") {
            Some(_) => num_field(req, "max")?,
            None => CHUNK,
        };
        let data = match obj {
            "csr" => &self.csr,
            "cert" => &self.cert,
            "chain" => &self.chain,
            "brokerca" => &self.broker_ca,
            other => return Err(bad_request(req.rid, &format!("unknown object {other}"))),
        };
        let Some(data) = data else {
            return Err(Frame::err(req.rid, ErrorCode::NotFound, &format!("no {obj} on this device")));
        };
        if off > data.len() {
            return Err(Frame::err(req.rid, ErrorCode::BadOffset, &format!("offset {off} is past the end ({})", data.len())));
        }
        let end = off + max.min(CHUNK).min(data.len() - off);
        Ok((
            Frame::ok(req.rid)
                .with("obj", obj)
                .with("off", off.to_string())
                .with("total", data.len().to_string())
                .with("data", b64(&data[off..end])),
            0,
        ))
    }

    fn slot(req: &Frame) -> Result<Slot, Frame> {
        match field(req, "obj")? {
            "cert" => Ok(Slot::Cert),
            "chain" => Ok(Slot::Chain),
            "brokerca" => Ok(Slot::BrokerCa),
            other => Err(bad_request(req.rid, &format!("object {other} cannot be written"))),
        }
    }

    fn put(&mut self, req: &Frame) -> Answer {
        let slot = Self::slot(req)?;
        let off = num_field(req, "off")?;
        let data = b64_field(req, "data")?;
        if self.locked {
            return Err(Frame::err(req.rid, ErrorCode::Locked, "device is locked"));
        }
        let staged = match slot {
            Slot::Cert => &mut self.staged_cert,
            Slot::Chain => &mut self.staged_chain,
            Slot::BrokerCa => &mut self.staged_broker_ca,
        };
        let have = staged.as_ref().map_or(0, Vec::len);
        if off > have {
            return Err(Frame::err(req.rid, ErrorCode::BadOffset, &format!("offset {off} is past the staged length {have}")));
        }
        if off + data.len() > MAX_OBJECT {
            return Err(Frame::err(
                req.rid,
                ErrorCode::TooLarge,
                &format!("object would be {} bytes; the limit is {MAX_OBJECT}", off + data.len()),
            ));
        }
        let buf = staged.get_or_insert_with(Vec::new);
        buf.truncate(off);
        buf.extend_from_slice(&data);
        // Staging invalidates a pending lock.
        let next = buf.len();
        self.lock_token = None;
        Ok((Frame::ok(req.rid).with("next", next.to_string()), 0))
    }

    fn commit(&mut self, req: &Frame) -> Answer {
        let slot = Self::slot(req)?;
        let len = num_field(req, "len")?;
        let sha = b64_field(req, "sha256")?;
        if sha.len() != 32 {
            return Err(bad_request(req.rid, "sha256 must be 32 bytes"));
        }
        if self.locked {
            return Err(Frame::err(req.rid, ErrorCode::Locked, "device is locked"));
        }
        let (staged, active) = match slot {
            Slot::Cert => (&self.staged_cert, &self.cert),
            Slot::Chain => (&self.staged_chain, &self.chain),
            Slot::BrokerCa => (&self.staged_broker_ca, &self.broker_ca),
        };
        let matches = |b: &[u8]| b.len() == len && Sha256::digest(b).as_slice() == sha.as_slice();
        let Some(staged) = staged else {
            // A retried COMMIT whose first answer was lost: already done.
            if active.as_deref().is_some_and(matches) {
                return Ok((Frame::ok(req.rid), 0));
            }
            return Err(Frame::err(req.rid, ErrorCode::BadState, "nothing staged: PUT first"));
        };
        if staged.len() != len {
            return Err(Frame::err(req.rid, ErrorCode::VerifyFailed, &format!("staged {} bytes, COMMIT says {len}", staged.len())));
        }
        if !matches(staged) {
            return Err(Frame::err(req.rid, ErrorCode::VerifyFailed, "staged bytes do not match sha256"));
        }
        match slot {
            Slot::Cert => {
                let Some(key) = &self.key else {
                    return Err(Frame::err(req.rid, ErrorCode::BadState, "no key: send KEYGEN first"));
                };
                let parsed = X509Certificate::from_der(staged);
                let cert = match parsed {
                    Ok(([], cert)) => cert,
                    _ => return Err(Frame::err(req.rid, ErrorCode::VerifyFailed, "certificate does not parse")),
                };
                if cert.tbs_certificate.subject_pki.raw != key.spki_der().as_slice() {
                    return Err(Frame::err(req.rid, ErrorCode::VerifyFailed, "certificate key does not match device key"));
                }
            }
            Slot::Chain | Slot::BrokerCa => {
                let mut rest: &[u8] = staged;
                while !rest.is_empty() {
                    match X509Certificate::from_der(rest) {
                        Ok((r, _)) => rest = r,
                        Err(_) => return Err(Frame::err(req.rid, ErrorCode::VerifyFailed, "chain is not a sequence of DER certificates")),
                    }
                }
            }
        }
        // The swap: the staged object becomes the active one in one step.
        match slot {
            Slot::Cert => self.cert = self.staged_cert.take(),
            Slot::Chain => self.chain = self.staged_chain.take(),
            Slot::BrokerCa => self.broker_ca = self.staged_broker_ca.take(),
        }
        self.lock_token = None;
        Ok((Frame::ok(req.rid), self.flash_ms))
    }

    fn prove(&self, req: &Frame) -> Answer {
        let nonce = nonce_field(req)?;
        let Some(key) = &self.key else {
            return Err(Frame::err(req.rid, ErrorCode::BadState, "no key: send KEYGEN first"));
        };
        let msg = pop_message(&self.serial, &nonce);
        let internal = |e: String| Frame::err(req.rid, ErrorCode::Internal, &format!("signing failed: {e}"));
        let sig = if self.faults.bad_proof {
            DeviceKey::generate(key.kind()).map_err(internal)?.sign(&msg).map_err(|e| internal(e.to_string()))?
        } else {
            key.sign(&msg).map_err(|e| internal(e.to_string()))?
        };
        Ok((Frame::ok(req.rid).with("alg", key.kind().proof_alg()).with("sig", b64(&sig)), self.prove_ms))
    }

    fn lock(&mut self, req: &Frame) -> Answer {
        match field(req, "phase")? {
            "prepare" => {
                if self.locked {
                    return Err(Frame::err(req.rid, ErrorCode::Locked, "device is already locked"));
                }
                if self.cert.is_none() || self.chain.is_none() {
                    return Err(Frame::err(req.rid, ErrorCode::BadState, "certificate and chain must be committed first"));
                }
                let token = hex::encode(random_bytes(4));
                self.lock_token = Some(token.clone());
                Ok((Frame::ok(req.rid).with("token", token), 0))
            }
            "commit" => {
                let token = field(req, "token")?;
                if self.locked {
                    return Err(Frame::err(req.rid, ErrorCode::Locked, "device is already locked"));
                }
                if self.lock_token.as_deref() != Some(token) {
                    return Err(Frame::err(req.rid, ErrorCode::BadState, "no such lock token: LOCK phase=prepare first"));
                }
                self.lock_token = None;
                // `fake-lock`: firmware that answers the commit but never persists the lock.
                self.locked = !self.faults.fake_lock;
                Ok((Frame::ok(req.rid).with("state", "locked"), self.flash_ms))
            }
            other => Err(bad_request(req.rid, &format!("unknown phase {other}"))),
        }
    }

    /// CONNECT (docs/protocol.md 4.11): connect to the broker over mTLS with
    /// the device key and the installed certificate + chain, verifying the
    /// broker with `brokerca`; publish and receive on `topic`.
    fn connect(&self, req: &Frame) -> Answer {
        let rid = req.rid;
        let text = |k: &str| req.text(k).filter(|v| !v.is_empty()).ok_or_else(|| bad_request(rid, &format!("missing field {k}")));
        let host = text("host")?;
        let topic = text("topic")?;
        let port = u16::try_from(num_field(req, "port")?).ok().filter(|p| *p > 0).ok_or_else(|| bad_request(rid, "port out of range"))?;
        let (Some(key), Some(cert), Some(chain)) = (&self.key, &self.cert, &self.chain) else {
            return Err(Frame::err(rid, ErrorCode::BadState, "not provisioned: key, certificate and chain are needed"));
        };
        let Some(broker_ca) = &self.broker_ca else {
            return Err(Frame::err(rid, ErrorCode::BadState, "no brokerca: PUT/COMMIT obj=brokerca first"));
        };
        let failed = |reason: &str, msg: &str| Frame::err(rid, ErrorCode::ConnectFailed, msg).with("reason", reason);
        let DeviceKey::Ec(pair, _) = key else {
            return Err(failed("other", "this device key type cannot be used for TLS"));
        };
        let pkcs8 = pair.serialize_der();
        let identity = if self.faults.mqtt_foreign_cert {
            crate::mqtt::foreign_identity(key, pkcs8, &self.serial)
        } else if self.faults.mqtt_expired_cert {
            crate::mqtt::expired_identity(key, pkcs8, &self.serial)
        } else {
            let key_pkcs8 = if self.faults.mqtt_wrong_key { crate::mqtt::unrelated_key_pkcs8() } else { Ok(pkcs8) };
            let mut presented = vec![cert.clone()];
            presented.extend(split_der(chain));
            key_pkcs8.map(|key_pkcs8| crate::mqtt::Identity { chain: presented, key_pkcs8 })
        }
        .map_err(|e| failed("other", &e))?;
        match crate::mqtt::connect_and_round_trip(&host, port, &topic, &self.serial, &split_der(broker_ca), &identity) {
            Ok(rtt) => Ok((Frame::ok(rid).with("latency_ms", rtt.as_millis().to_string()), 0)),
            Err(e) => Err(failed(e.reason, &e.msg)),
        }
    }

    fn reset(&mut self, req: &Frame) -> Answer {
        if self.locked {
            return Err(Frame::err(req.rid, ErrorCode::Locked, "device is locked; reset refused"));
        }
        let confirm = req.text("confirm").unwrap_or_default();
        if confirm != self.serial {
            return Err(bad_request(req.rid, "confirm must be the device serial"));
        }
        self.key = None;
        self.wipe_objects();
        Ok((Frame::ok(req.rid).with("state", "blank"), self.flash_ms))
    }
}

/// A plausible serial that is not `serial` (for `wrong-serial-csr`).
fn other_serial(serial: &str) -> String {
    let mut s: Vec<u8> = serial.bytes().collect();
    match s.iter().rposition(|b| b.is_ascii_digit()) {
        Some(i) => s[i] = if s[i] == b'9' { b'0' } else { s[i] + 1 },
        None => s.extend_from_slice(b"-2"),
    }
    String::from_utf8(s).unwrap_or_else(|_| format!("{serial}-2"))
}

/// 1-3 console lines: boot-log text, a line of non-UTF-8 bytes, a line
/// with a fake answer marker.
fn noise_lines() -> Vec<Vec<u8>> {
    let r = random_bytes(48);
    let count = 1 + (r[0] % 3) as usize;
    let mut lines = Vec::with_capacity(count);
    for i in 0..count {
        let pick = r[1 + i] % 3;
        let v = u32::from_le_bytes([r[4 + 4 * i], r[5 + 4 * i], r[6 + 4 * i], r[7 + 4 * i]]);
        let line = match pick {
            0 => match v % 3 {
                0 => format!("I ({}) imprint: heap free {} bytes\r\n", v % 100_000, 20_000 + v % 40_000).into_bytes(),
                1 => format!("[00:00:{:02}.{:03},000] <inf> flash: erase sector 0x{:05x}\r\n", v % 60, v % 1000, v % 0x40000).into_bytes(),
                _ => b"rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n".to_vec(),
            },
            1 => {
                let mut l: Vec<u8> = r[20..20 + 8 + (v % 20) as usize].iter().map(|b| 0x80 | b).collect();
                l.push(b'\n');
                l
            }
            _ => b"dbg: @< 99 OK junk *ZZZZ\n".to_vec(),
        };
        lines.push(line);
    }
    lines
}

/// Split concatenated DER certificates (already checked at COMMIT).
fn split_der(mut der: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Ok((rest, _)) = X509Certificate::from_der(der) {
        out.push(der[..der.len() - rest.len()].to_vec());
        der = rest;
        if der.is_empty() {
            break;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn wrong_crc_is_wrong_and_oversized_is_oversized() {
        let line = Frame::ok(3).with("a", "b").encode();
        let bad = with_wrong_crc(&line);
        assert_eq!(bad.len(), line.len());
        assert_ne!(bad, line);
        assert!(imprint_proto::codec::parse_frame(&bad[..bad.len() - 1], Direction::Response).is_err());
        assert_eq!(oversized_line(7).len(), OVERSIZED_LEN);
    }

    #[test]
    fn other_serial_differs() {
        assert_eq!(other_serial("SIM-0001"), "SIM-0002");
        assert_eq!(other_serial("SIM-0009"), "SIM-0000");
        assert_eq!(other_serial("ABC"), "ABC-2");
    }
}
