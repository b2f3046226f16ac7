//! The host side of one nRF91 provisioning session over AT commands, as a
//! sans-IO state machine behind [`DeviceSession`] (the same actions and
//! failure codes as the native protocol; the driver cannot tell them apart).
//!
//! ```text
//! AT -> AT+CGMM -> AT+CGSN=1 -> AT+CGMR -> AT%XMODEMUUID            (identity)
//!    -> AT+CFUN=4 -> AT%KEYGEN=<tag>,2,0,"CN=<IMEI>"               (offline; key + CSR + COSE attestation)
//!    -> Lookup -> Issue (CSR checked without nonce, attestation recorded)
//!    -> AT%CMNG=0,<tag>,0,"<CA chain PEM>" -> AT%CMNG=0,<tag>,1,"<cert PEM>"
//!    -> AT%CMNG=1,<tag> (SHA-256 of each listed credential compared) -> Passed
//! ```
//!
//! What the nRF91 lacks and what stands in for it (docs/drivers.md): no
//! session nonce in the CSR and no proof of possession — the KEYGEN
//! COSE_Sign1 by the modem's identity key covers the CSR's digest and is
//! recorded with the attempt; no lock — the modem's credential store stays
//! writable, which the record says.

use crate::at::{self, AtLine, LineSplitter};
use crate::attest::{self, AttestError};
use imprint_proto::codes::sanitize_device_text;
use imprint_proto::session::{Action, Failure, Identity, Input, IssuedChain, Note, NoteKind, Outcome, Stage};
use imprint_proto::{Attestation, DeviceSession, DeviceState, DialectKind, FailureCode, Heard};
use sha2::{Digest, Sha256};

/// nRF Cloud's default sec_tag for device credentials.
pub const DEFAULT_SEC_TAG: u32 = 16_842_753;
/// `%CMNG` credential types (Nordic's reference).
pub const TYPE_ROOT_CA: u8 = 0;
pub const TYPE_CLIENT_CERT: u8 = 1;
pub const TYPE_CLIENT_KEY: u8 = 2;
/// KEYGEN on a real modem takes seconds; a slow one up to ~20 s.
pub const KEYGEN_TIMEOUT_MS: u32 = 30_000;
/// Any other command.
pub const COMMAND_TIMEOUT_MS: u32 = 2_000;
/// Longest modem text kept in a reason.
const MAX_TEXT: usize = 200;

/// Fixed inputs of an nRF91 session.
#[derive(Clone, Debug)]
pub struct Nrf91Config {
    /// Where the key, the client certificate and the CA chain go.
    pub sec_tag: u32,
    /// Extra tries of a command after a timeout (never KEYGEN).
    pub retries: u8,
    /// Link speed in bytes per second, to stretch deadlines for long lines.
    pub link_bytes_per_sec: u32,
}

impl Default for Nrf91Config {
    fn default() -> Self {
        Nrf91Config { sec_tag: DEFAULT_SEC_TAG, retries: 2, link_bytes_per_sec: 11_520 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Start,
    Hello,
    Model,
    Imei,
    FwVersion,
    FwUuid,
    Offline,
    Keygen,
    Lookup,
    Issue,
    WriteChain,
    WriteCert,
    ReadBack,
    Finished,
}

impl Step {
    fn stage(self) -> Stage {
        match self {
            Step::Start | Step::Hello => Stage::Hello,
            Step::Model | Step::Imei | Step::FwVersion | Step::FwUuid => Stage::Identify,
            Step::Offline | Step::Keygen => Stage::Keygen,
            Step::Lookup => Stage::Lookup,
            Step::Issue => Stage::Issue,
            Step::WriteChain => Stage::WriteChain,
            Step::WriteCert => Stage::WriteCert,
            Step::ReadBack => Stage::ReadBack,
            Step::Finished => Stage::Done,
        }
    }
    /// The information-response prefix the command answers with.
    fn expects(self) -> Option<&'static str> {
        match self {
            Step::Imei => Some("+CGSN"),
            Step::FwUuid => Some("%XMODEMUUID"),
            Step::Keygen => Some("%KEYGEN"),
            Step::ReadBack => Some("%CMNG"),
            _ => None,
        }
    }
    /// The command answers with bare text lines.
    fn expects_text(self) -> bool {
        matches!(self, Step::Model | Step::FwVersion)
    }
}

/// The failure code of a `+CME ERROR` number.
pub fn cme_code(n: u16) -> FailureCode {
    match n {
        514 => FailureCode::ModemNotAllowed,
        515 => FailureCode::ModemMemoryFull,
        518 => FailureCode::ModemActive,
        519 => FailureCode::ModemKeyExists,
        523 => FailureCode::ModemKeygenFailed,
        528 => FailureCode::ModemPowerOffWarning,
        _ => FailureCode::ModemError,
    }
}

/// One nRF91 session.
pub struct Nrf91Session {
    cfg: Nrf91Config,
    step: Step,
    stage: Stage,
    notes: Vec<Note>,
    lines: LineSplitter,
    identity: Option<Identity>,
    /// The command in flight (without its line end) and what it collected.
    command: String,
    tries_left: u8,
    infos: Vec<String>,
    texts: Vec<String>,
    model: String,
    imei: String,
    fw_version: String,
    csr_der: Vec<u8>,
    spki_der: Vec<u8>,
    attestation: Option<Attestation>,
    chain: Option<IssuedChain>,
    /// SHA-256 (hex) of what was written, per credential type.
    written: Vec<(u8, String)>,
}

impl Nrf91Session {
    pub fn new(cfg: Nrf91Config) -> Self {
        Nrf91Session {
            cfg,
            step: Step::Start,
            stage: Stage::Hello,
            notes: Vec::new(),
            lines: LineSplitter::new(),
            identity: None,
            command: String::new(),
            tries_left: 0,
            infos: Vec::new(),
            texts: Vec::new(),
            model: String::new(),
            imei: String::new(),
            fw_version: String::new(),
            csr_der: Vec::new(),
            spki_der: Vec::new(),
            attestation: None,
            chain: None,
            written: Vec::new(),
        }
    }

    fn note(&mut self, kind: NoteKind, detail: impl Into<String>) {
        self.notes.push(Note { stage: self.stage, kind, detail: detail.into() });
    }

    fn enter(&mut self, step: Step) {
        self.step = step;
        let stage = step.stage();
        if stage != self.stage || matches!(step, Step::Hello) {
            self.stage = stage;
            self.note(NoteKind::Started, "");
        }
    }

    fn fail(&mut self, code: FailureCode, reason: String) -> Action {
        self.step = Step::Finished;
        Action::Finish(Outcome::Failed(Failure::new(self.stage, code, reason)))
    }

    /// The name of the command in flight, for reasons (no PEM bodies).
    fn label(&self) -> String {
        match self.command.split_once('"') {
            Some((head, _)) => format!("{head}\"...\""),
            None => self.command.clone(),
        }
    }

    fn send(&mut self, step: Step, command: String) -> Action {
        self.enter(step);
        self.command = command;
        self.tries_left = if step == Step::Keygen { 0 } else { self.cfg.retries };
        self.write()
    }

    fn write(&mut self) -> Action {
        self.infos.clear();
        self.texts.clear();
        let bytes = format!("{}\r\n", self.command).into_bytes();
        let base = if self.step == Step::Keygen { KEYGEN_TIMEOUT_MS } else { COMMAND_TIMEOUT_MS };
        let transfer = ((bytes.len() + at::MAX_AT_LINE) as u64 * 2 * 1000) / u64::from(self.cfg.link_bytes_per_sec.max(1));
        let what = self.command.split(['=', '?']).next().unwrap_or("AT").to_string();
        Action::Write { bytes, what, timeout_ms: base.saturating_add(transfer.min(u64::from(u32::MAX)) as u32) }
    }

    fn on_line(&mut self, line: String) -> Action {
        let trimmed = line.trim();
        // An echo of the command (ATE1): not an answer.
        if trimmed.starts_with("AT") || trimmed.starts_with("at") {
            return Action::KeepWaiting;
        }
        match at::classify(trimmed) {
            AtLine::Ok => self.on_ok(),
            AtLine::Error => {
                let label = self.label();
                self.fail(FailureCode::ModemError, format!("{label} answered ERROR"))
            }
            AtLine::CmeError(n) => {
                let label = self.label();
                self.fail(cme_code(n), format!("{label} answered +CME ERROR: {n} ({})", at::cme_meaning(n)))
            }
            AtLine::CmeText(t) => {
                let label = self.label();
                self.fail(FailureCode::ModemError, format!("{label} answered +CME ERROR: {}", sanitize_device_text(&t, MAX_TEXT)))
            }
            AtLine::Response { prefix, body } if Some(prefix.as_str()) == self.step.expects() => {
                self.infos.push(body);
                Action::KeepWaiting
            }
            AtLine::Text(t) if self.step.expects_text() => {
                self.texts.push(t);
                Action::KeepWaiting
            }
            other => {
                let text = match other {
                    AtLine::Response { prefix, body } => format!("{prefix}: {body}"),
                    AtLine::Text(t) => t,
                    _ => String::new(),
                };
                self.note(NoteKind::Info, format!("unsolicited: {}", sanitize_device_text(&text, MAX_TEXT)));
                Action::KeepWaiting
            }
        }
    }

    fn first_info_field(&self) -> Option<String> {
        self.infos.first().and_then(|b| at::fields(b)).and_then(|f| f.into_iter().next()).filter(|s| !s.is_empty())
    }

    fn on_ok(&mut self) -> Action {
        match self.step {
            Step::Hello => self.send(Step::Model, "AT+CGMM".into()),
            Step::Model => {
                self.model = self.texts.first().map(|t| sanitize_device_text(t, 64)).unwrap_or_else(|| "nRF91".into());
                self.send(Step::Imei, "AT+CGSN=1".into())
            }
            Step::Imei => {
                let imei = self.first_info_field().unwrap_or_default();
                if imei.is_empty() || imei.len() > 32 || !imei.bytes().all(|b| b.is_ascii_digit()) {
                    let got = sanitize_device_text(&self.infos.join(" | "), MAX_TEXT);
                    return self.fail(FailureCode::BadResponse, format!("AT+CGSN=1 gave no IMEI (+CGSN: \"<digits>\"), got {got:?}"));
                }
                self.imei = imei;
                self.send(Step::FwVersion, "AT+CGMR".into())
            }
            Step::FwVersion => {
                self.fw_version = self.texts.first().map(|t| sanitize_device_text(t, 64)).unwrap_or_default();
                self.send(Step::FwUuid, "AT%XMODEMUUID".into())
            }
            Step::FwUuid => {
                let uuid = self.first_info_field().map(|u| sanitize_device_text(&u, 64)).unwrap_or_default();
                let id = Identity {
                    serial: self.imei.clone(),
                    model: self.model.clone(),
                    hw_rev: String::new(),
                    fw_version: self.fw_version.clone(),
                    fw_hash: uuid.clone(),
                    chip_uid: String::new(),
                    state: DeviceState::Blank,
                };
                self.note(
                    NoteKind::Completed,
                    format!("nRF91 modem {} IMEI {} firmware {} (build UUID {uuid})", id.model, id.serial, id.fw_version),
                );
                self.identity = Some(id);
                self.send(Step::Offline, "AT+CFUN=4".into())
            }
            Step::Offline => {
                let tag = self.cfg.sec_tag;
                let cn = self.imei.clone();
                self.send(Step::Keygen, format!("AT%KEYGEN={tag},2,0,\"CN={cn}\""))
            }
            Step::Keygen => self.on_keygen(),
            Step::WriteChain => {
                let Some(chain) = self.chain.clone() else { return self.fail(FailureCode::Internal, "no certificate to write".into()) };
                let pem = cert_pem(&chain.cert_der);
                self.written.push((TYPE_CLIENT_CERT, sha256_hex(pem.as_bytes())));
                let tag = self.cfg.sec_tag;
                self.send(Step::WriteCert, format!("AT%CMNG=0,{tag},{TYPE_CLIENT_CERT},\"{pem}\""))
            }
            Step::WriteCert => {
                let tag = self.cfg.sec_tag;
                self.send(Step::ReadBack, format!("AT%CMNG=1,{tag}"))
            }
            Step::ReadBack => self.on_read_back(),
            Step::Start | Step::Lookup | Step::Issue | Step::Finished => {
                self.fail(FailureCode::BadResponse, "an OK that answers no command".into())
            }
        }
    }

    fn on_keygen(&mut self) -> Action {
        let Some(body) = self.infos.first().cloned() else {
            return self.fail(FailureCode::BadResponse, "AT%KEYGEN answered OK without %KEYGEN:".into());
        };
        let answer = at::fields(&body).and_then(|f| f.into_iter().next()).unwrap_or(body);
        let checked = attest::split_keygen(&answer).and_then(|(csr, cose, raw)| {
            let a = attest::check(&csr, &cose, self.cfg.sec_tag)?;
            Ok((csr, a, raw))
        });
        let (csr, a, raw) = match checked {
            Ok(v) => v,
            Err(e @ (AttestError::DigestMismatch { .. } | AttestError::SecTagMismatch { .. })) => {
                return self.fail(FailureCode::AttestationMismatch, e.to_string())
            }
            Err(e) => return self.fail(FailureCode::AttestationInvalid, e.to_string()),
        };
        use x509_parser::prelude::FromDer;
        let spki = match x509_parser::certification_request::X509CertificationRequest::from_der(&csr) {
            Ok((_, req)) => req.certification_request_info.subject_pki.raw.to_vec(),
            Err(e) => return self.fail(FailureCode::CsrMalformed, format!("the KEYGEN CSR is not a PKCS#10 request: {e}")),
        };
        let csr_sha256 = hex::encode(a.csr_sha256);
        let checked = format!(
            "COSE_Sign1 ES256 by the modem's identity key over CSR_msg_v1: device UUID {}, sec_tag {}, SHA-256 {} = the CSR's; \
             signature {} kept with its Sig_structure, not verified by the station (the identity key is Nordic's)",
            a.device_uuid,
            a.sec_tag,
            csr_sha256,
            hex::encode(&a.signature)
        );
        self.note(NoteKind::Info, format!("attestation: {checked}"));
        self.attestation =
            Some(Attestation { format: "nrf91-keygen-cose-sign1", device_id: a.device_uuid, csr_sha256, raw: cut(&raw, 1024), checked });
        self.csr_der = csr;
        self.spki_der = spki.clone();
        self.note(NoteKind::Completed, format!("key and CSR made in sec_tag {}", self.cfg.sec_tag));
        self.enter(Step::Lookup);
        let serial = self.imei.clone();
        Action::Lookup { serial, spki_der: spki }
    }

    fn on_read_back(&mut self) -> Action {
        let tag = self.cfg.sec_tag.to_string();
        let mut listed: Vec<(u8, String)> = Vec::new();
        for body in &self.infos {
            let Some(f) = at::fields(body) else { continue };
            if f.len() >= 3 && f[0] == tag {
                if let Ok(t) = f[1].parse::<u8>() {
                    listed.push((t, f[2].to_ascii_lowercase()));
                }
            }
        }
        if !listed.iter().any(|(t, _)| *t == TYPE_CLIENT_KEY) {
            return self.fail(FailureCode::ReadBackMismatch, format!("AT%CMNG=1,{tag} lists no private key (type 2) in the sec_tag"));
        }
        for (ty, want) in self.written.clone() {
            match listed.iter().find(|(t, _)| *t == ty) {
                Some((_, got)) if *got == want => {}
                Some((_, got)) => {
                    return self.fail(
                        FailureCode::ReadBackMismatch,
                        format!(
                            "credential type {ty} in sec_tag {tag} reads back SHA-256 {}, written {want}",
                            sanitize_device_text(got, 80)
                        ),
                    )
                }
                None => return self.fail(FailureCode::ReadBackMismatch, format!("credential type {ty} is not listed in sec_tag {tag}")),
            }
        }
        self.note(NoteKind::Completed, "CA chain and certificate read back with the SHA-256 written");
        let Some(chain) = self.chain.clone() else { return self.fail(FailureCode::Internal, "no certificate written".into()) };
        let Some(identity) = self.identity.clone() else { return self.fail(FailureCode::Internal, "no identity".into()) };
        self.note(
            NoteKind::Info,
            "nRF91: no proof of possession (the modem signs nothing on request; the KEYGEN attestation binds the CSR) \
             and no lock (the modem's credential store stays writable)",
        );
        self.step = Step::Finished;
        self.stage = Stage::Done;
        Action::Finish(Outcome::Passed { identity, cert_serial_hex: chain.serial_hex, resumed: chain.resumed, already_provisioned: false })
    }

    fn on_lookup(&mut self, found: Result<Option<IssuedChain>, Failure>) -> Action {
        if self.step != Step::Lookup {
            return self.fail(FailureCode::Internal, "lookup answer out of order".into());
        }
        match found {
            Err(f) => {
                self.step = Step::Finished;
                Action::Finish(Outcome::Failed(f))
            }
            Ok(Some(chain)) => self.write_chain(chain),
            Ok(None) => self.issue(),
        }
    }

    fn issue(&mut self) -> Action {
        self.enter(Step::Issue);
        let Some(identity) = self.identity.clone() else { return self.fail(FailureCode::Internal, "no identity".into()) };
        Action::Issue {
            identity,
            keygen_spki_der: self.spki_der.clone(),
            csr_der: self.csr_der.clone(),
            nonce: Vec::new(),
            attestation: self.attestation.clone(),
        }
    }

    fn write_chain(&mut self, chain: IssuedChain) -> Action {
        let pem = match chain_pem(&chain.chain_der) {
            Ok(p) => p,
            Err(e) => return self.fail(FailureCode::Internal, format!("the CA chain cannot be written as PEM: {e}")),
        };
        self.written.clear();
        self.written.push((TYPE_ROOT_CA, sha256_hex(pem.as_bytes())));
        self.chain = Some(chain);
        let tag = self.cfg.sec_tag;
        self.send(Step::WriteChain, format!("AT%CMNG=0,{tag},{TYPE_ROOT_CA},\"{pem}\""))
    }

    fn on_timeout(&mut self) -> Action {
        if self.tries_left > 0 {
            self.tries_left -= 1;
            let label = self.label();
            self.note(NoteKind::Retry, format!("{label}: no answer, sending it again"));
            return self.write();
        }
        let label = self.label();
        if self.step == Step::Hello {
            self.fail(FailureCode::NoResponse, "no answer to AT: not an nRF91 AT interface, or not powered".into())
        } else {
            self.fail(FailureCode::Timeout, format!("no answer to {label}"))
        }
    }
}

fn cut(s: &str, max: usize) -> String {
    imprint_proto::codes::cut(s, max)
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn cert_pem(der: &[u8]) -> String {
    pem::encode_config(&pem::Pem::new("CERTIFICATE", der.to_vec()), pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF))
}

/// The chain's DER certificates (concatenated) as one PEM text.
fn chain_pem(chain_der: &[u8]) -> Result<String, String> {
    let mut rest = chain_der;
    let mut out = String::new();
    while !rest.is_empty() {
        let (next, _) = x509_parser::parse_x509_certificate(rest).map_err(|e| e.to_string())?;
        let len = rest.len() - next.len();
        out.push_str(&cert_pem(&rest[..len]));
        rest = next;
    }
    if out.is_empty() {
        return Err("the chain is empty".into());
    }
    Ok(out)
}

impl DeviceSession for Nrf91Session {
    fn dialect(&self) -> DialectKind {
        DialectKind::Nrf91
    }

    fn start(&mut self) -> Action {
        self.send(Step::Hello, "AT".into())
    }

    fn handle(&mut self, input: Input) -> Action {
        if self.step == Step::Finished {
            return Action::Finish(Outcome::Failed(Failure::new(self.stage, FailureCode::SessionOver, "input after the session finished")));
        }
        match input {
            Input::Line(l) => self.on_line(l),
            Input::Timeout => self.on_timeout(),
            Input::Gone(why) => {
                let stage = self.stage;
                let after = if self.chain.as_ref().is_some_and(|c| !c.resumed) {
                    "; a modem makes a new key on every attach and never shows an existing one, so the certificate issued \
                     in this attempt cannot be resumed: re-provisioning this IMEI needs a supervisor's rework authorisation"
                } else {
                    ""
                };
                self.fail(FailureCode::Unplugged, format!("modem disconnected during {}: {why}{after}", stage.as_str()))
            }
            Input::Lookup(found) => self.on_lookup(found),
            Input::Reissue(_) => {
                if self.step != Step::Lookup {
                    return self.fail(FailureCode::Internal, "reissue answer out of order".into());
                }
                // KEYGEN made a new key already: renewal and rework are a new certificate for it.
                self.issue()
            }
            Input::Issued(Ok(chain)) if self.step == Step::Issue => self.write_chain(chain),
            Input::Issued(Err(f)) if self.step == Step::Issue => {
                self.step = Step::Finished;
                Action::Finish(Outcome::Failed(f))
            }
            Input::Frame(_) | Input::Corrupt(_) | Input::Waited | Input::ProofChecked(_) | Input::Issued(_) => {
                self.fail(FailureCode::Internal, "an input the nRF91 dialect never asks for".into())
            }
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> Vec<Heard> {
        self.lines
            .feed(bytes)
            .into_iter()
            .map(|line| {
                // URCs and console text while a command runs are recorded as console, not answers.
                let is_answer = match at::classify(&line) {
                    AtLine::Response { prefix, .. } => Some(prefix.as_str()) == self.step.expects(),
                    AtLine::Text(t) => self.step.expects_text() || t.starts_with("AT"),
                    _ => true,
                };
                if is_answer {
                    Heard::Input(Input::Line(line))
                } else {
                    Heard::Console(line)
                }
            })
            .collect()
    }

    fn take_notes(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.notes)
    }

    fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    fn stage(&self) -> Stage {
        self.stage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(s: &mut Nrf91Session, text: &str) -> Action {
        let mut last = Action::KeepWaiting;
        for h in s.feed(text.as_bytes()) {
            if let Heard::Input(i) = h {
                last = s.handle(i);
            }
        }
        last
    }

    fn written(a: &Action) -> String {
        match a {
            Action::Write { bytes, .. } => String::from_utf8_lossy(bytes).into_owned(),
            other => panic!("expected a command, got {other:?}"),
        }
    }

    fn identified() -> Nrf91Session {
        let mut s = Nrf91Session::new(Nrf91Config { sec_tag: 7, ..Default::default() });
        assert_eq!(written(&s.start()), "AT\r\n");
        assert_eq!(written(&answers(&mut s, "\r\nOK\r\n")), "AT+CGMM\r\n");
        assert_eq!(written(&answers(&mut s, "\r\nnRF9160-SICA\r\nOK\r\n")), "AT+CGSN=1\r\n");
        assert_eq!(written(&answers(&mut s, "\r\n+CGSN: \"352656100367872\"\r\nOK\r\n")), "AT+CGMR\r\n");
        assert_eq!(written(&answers(&mut s, "\r\nmfw_nrf9160_1.3.5\r\nOK\r\n")), "AT%XMODEMUUID\r\n");
        assert_eq!(written(&answers(&mut s, "%XMODEMUUID: 25c95751-efa4-40d4-8b4a-1dcaab81fac9\r\nOK\r\n")), "AT+CFUN=4\r\n");
        s
    }

    #[test]
    fn the_identity_is_the_imei_and_the_firmware_build_uuid_and_the_modem_goes_offline_before_keygen() {
        let mut s = identified();
        let id = s.identity().cloned().unwrap();
        assert_eq!((id.serial.as_str(), id.model.as_str()), ("352656100367872", "nRF9160-SICA"));
        assert_eq!(id.fw_hash, "25c95751-efa4-40d4-8b4a-1dcaab81fac9");
        let a = answers(&mut s, "OK\r\n");
        assert_eq!(written(&a), "AT%KEYGEN=7,2,0,\"CN=352656100367872\"\r\n");
        let Action::Write { timeout_ms, .. } = a else { unreachable!() };
        assert!(timeout_ms >= KEYGEN_TIMEOUT_MS);
    }

    #[test]
    fn urcs_are_console_and_a_cme_error_is_its_code_at_its_stage() {
        let mut s = identified();
        let heard = s.feed(b"+CEREG: 2,\"76C1\",\"0102DA04\",7\r\n%CESQ: 54,2,16,2\r\n");
        assert!(heard.iter().all(|h| matches!(h, Heard::Console(_))), "{heard:?}");
        let a = answers(&mut s, "+CME ERROR: 518\r\n");
        let Action::Finish(Outcome::Failed(f)) = a else { panic!("{a:?}") };
        assert_eq!((f.code, f.stage), (FailureCode::ModemActive, Stage::Keygen));
        assert!(f.reason.contains("AT+CFUN=4 answered +CME ERROR: 518 (not allowed in active state)"), "{}", f.reason);
    }

    #[test]
    fn a_keygen_answer_whose_cose_does_not_cover_the_csr_fails_attestation_mismatch() {
        use base64::Engine;
        let mut s = identified();
        answers(&mut s, "OK\r\n");
        let payload = crate::attest::csr_message_payload([1; 16], 7, [0; 32], [2; 16]);
        let cose = crate::attest::sign1(payload, |_| vec![1; 64]);
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let line = format!("%KEYGEN: \"{}.{}\"\r\nOK\r\n", b.encode(b"not a csr"), b.encode(cose));
        let Action::Finish(Outcome::Failed(f)) = answers(&mut s, &line) else { panic!() };
        assert_eq!((f.code, f.stage), (FailureCode::AttestationMismatch, Stage::Keygen), "{f:?}");
    }

    #[test]
    fn a_silent_modem_is_retried_then_fails_and_keygen_is_never_resent() {
        let mut s = Nrf91Session::new(Nrf91Config::default());
        s.start();
        assert_eq!(written(&s.handle(Input::Timeout)), "AT\r\n");
        assert_eq!(written(&s.handle(Input::Timeout)), "AT\r\n");
        let Action::Finish(Outcome::Failed(f)) = s.handle(Input::Timeout) else { panic!() };
        assert_eq!(f.code, FailureCode::NoResponse);
        let mut s = identified();
        answers(&mut s, "OK\r\n");
        let Action::Finish(Outcome::Failed(f)) = s.handle(Input::Timeout) else { panic!("KEYGEN was resent") };
        assert_eq!((f.code, f.stage), (FailureCode::Timeout, Stage::Keygen));
    }
}
