//! Test helpers: a tiny CA, CSR inspection, proof verification, and two
//! drivers running the real host session (imprint_proto::Session) against
//! the simulator: in memory, and over a real pty opened with `serialport`.

#![allow(dead_code)]

use imprint_devsim::{Delivery, Device};
use imprint_proto::codec::{Decoded, Decoder, Direction, Frame};
use imprint_proto::session::{Action, Failure, Input, IssuedChain, Note, Outcome, Session, SessionConfig, Stage};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

pub fn req(rid: u16, verb: &str, fields: &[(&str, &str)]) -> Frame {
    let mut f = Frame::request(rid, verb);
    for (k, v) in fields {
        f = f.with(k, *v);
    }
    f
}

/// A root and an intermediate; the intermediate issues device certificates.
pub struct TestCa {
    root_der: Vec<u8>,
    inter: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut rp = CertificateParams::new(Vec::<String>::new()).unwrap();
        rp.distinguished_name.push(DnType::CommonName, "Imprint Test Root");
        rp.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = CertifiedIssuer::self_signed(rp, KeyPair::generate().unwrap()).unwrap();
        let mut ip = CertificateParams::new(Vec::<String>::new()).unwrap();
        ip.distinguished_name.push(DnType::CommonName, "Imprint Test Issuing CA");
        ip.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let inter = CertifiedIssuer::signed_by(ip, KeyPair::generate().unwrap(), &root).unwrap();
        TestCa { root_der: root.der().to_vec(), inter }
    }

    /// Certificate for `spki` and the chain (intermediate, root).
    pub fn issue(&self, serial: &str, spki_der: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, serial);
        let pk = rcgen::SubjectPublicKeyInfo::from_der(spki_der).unwrap();
        let cert = p.signed_by(&pk, &self.inter).unwrap().der().to_vec();
        let mut chain = self.inter.der().to_vec();
        chain.extend_from_slice(&self.root_der);
        (cert, chain)
    }

    /// What a station's issuer checks before signing (a sketch of the real
    /// policy): signature, subject, nonce, key = KEYGEN key, key strength.
    pub fn check_and_issue(&self, serial: &str, keygen_spki: &[u8], csr_der: &[u8], nonce: &[u8]) -> Result<IssuedChain, Failure> {
        let refuse = |why: String| Failure::new(Stage::Issue, imprint_proto::FailureCode::CsrMalformed, why);
        let facts = CsrFacts::parse(csr_der).map_err(|e| refuse(format!("CSR does not parse: {e}")))?;
        if facts.key_bits < 256 || (facts.is_rsa && facts.key_bits < 2048) {
            return Err(refuse(format!("weak key ({} bits)", facts.key_bits)));
        }
        if !facts.signature_ok {
            return Err(refuse("CSR signature does not verify".into()));
        }
        if facts.cn.as_deref() != Some(serial) || facts.serial_number.as_deref() != Some(serial) {
            return Err(refuse(format!("CSR subject {:?}/{:?} is not {serial}", facts.cn, facts.serial_number)));
        }
        if facts.challenge.as_deref() != Some(hex::encode(nonce).as_str()) {
            return Err(refuse("CSR nonce is stale".into()));
        }
        if facts.spki != keygen_spki {
            return Err(refuse("CSR key is not the KEYGEN key".into()));
        }
        let (cert_der, chain_der) = self.issue(serial, keygen_spki);
        Ok(IssuedChain { cert_der, chain_der, serial_hex: "01".into(), resumed: false })
    }
}

/// What a CSR says.
#[derive(Debug)]
pub struct CsrFacts {
    pub cn: Option<String>,
    pub serial_number: Option<String>,
    pub challenge: Option<String>,
    pub spki: Vec<u8>,
    pub signature_ok: bool,
    pub sig_alg: String,
    pub is_rsa: bool,
    pub key_bits: usize,
}

impl CsrFacts {
    pub fn parse(der: &[u8]) -> Result<Self, String> {
        let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|e| e.to_string())?;
        if !rest.is_empty() {
            return Err("trailing bytes".into());
        }
        let info = &csr.certification_request_info;
        let mut cn = None;
        let mut serial_number = None;
        for attr in info.subject.iter_attributes() {
            let v = attr.as_str().ok().map(str::to_string);
            match attr.attr_type().to_id_string().as_str() {
                "2.5.4.3" => cn = v,
                "2.5.4.5" => serial_number = v,
                other => return Err(format!("unexpected subject attribute {other}")),
            }
        }
        let mut challenge = None;
        for a in info.iter_attributes() {
            if let ParsedCriAttribute::ChallengePassword(cp) = a.parsed_attribute() {
                challenge = Some(cp.0.clone());
            }
        }
        let pk = info.subject_pki.parsed().map_err(|e| e.to_string())?;
        let is_rsa = matches!(pk, x509_parser::public_key::PublicKey::RSA(_));
        // ring (behind x509-parser's verify) refuses RSA keys under 2048
        // bits: check RSA signatures with the rsa crate instead.
        let signature_ok = if is_rsa {
            use rsa::pkcs1::DecodeRsaPublicKey;
            use sha2::Digest;
            rsa::RsaPublicKey::from_pkcs1_der(&info.subject_pki.subject_public_key.data)
                .map_err(|e| e.to_string())?
                .verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &sha2::Sha256::digest(info.raw), &csr.signature_value.data)
                .is_ok()
        } else {
            csr.verify_signature().is_ok()
        };
        Ok(CsrFacts {
            cn,
            serial_number,
            challenge,
            spki: info.subject_pki.raw.to_vec(),
            signature_ok,
            sig_alg: csr.signature_algorithm.algorithm.to_id_string(),
            is_rsa,
            key_bits: pk.key_size(),
        })
    }
}

/// Verify an ECDSA proof of possession with ring, choosing the curve from
/// the SPKI.
pub fn verify_proof(spki_der: &[u8], message: &[u8], sig: &[u8]) -> Result<(), String> {
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| e.to_string())?;
    let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string()).unwrap_or_default();
    let alg: &dyn ring::signature::VerificationAlgorithm = match curve.as_str() {
        "1.2.840.10045.3.1.7" => &ring::signature::ECDSA_P256_SHA256_ASN1,
        "1.3.132.0.34" => &ring::signature::ECDSA_P384_SHA384_ASN1,
        other => return Err(format!("unsupported key (curve {other:?})")),
    };
    ring::signature::UnparsedPublicKey::new(alg, spki.subject_public_key.data.as_ref())
        .verify(message, sig)
        .map_err(|_| "signature does not verify".to_string())
}

pub fn session_cfg() -> SessionConfig {
    SessionConfig::new((1..=16).collect(), (101..=132).collect())
}

pub struct Run {
    pub outcome: Outcome,
    pub notes: Vec<Note>,
    pub verbs: Vec<String>,
    pub issued: Option<IssuedChain>,
}

impl Run {
    pub fn passed(&self) -> bool {
        matches!(self.outcome, Outcome::Passed { .. })
    }
    pub fn failure(&self) -> &Failure {
        match &self.outcome {
            Outcome::Failed(f) => f,
            o => panic!("expected a failure, got {o:?}"),
        }
    }
    pub fn retries(&self) -> usize {
        self.notes.iter().filter(|n| n.kind == imprint_proto::NoteKind::Retry).count()
    }
}

/// Drive a host session against `dev` in memory: each request is encoded,
/// decoded by the device, answered, and the answer's wire bytes (noise,
/// bad CRCs, oversized lines and all) go through the host's decoder. Bytes
/// still in flight when the host moves on arrive afterwards, like on a wire.
pub fn run_in_memory(dev: &mut Device, cfg: SessionConfig, ca: &TestCa, existing: Option<IssuedChain>) -> Run {
    let mut s = Session::new(cfg);
    let mut notes = Vec::new();
    let mut verbs = Vec::new();
    let mut issued = None;
    let mut host_dec = Decoder::new(Direction::Response);
    let mut dev_dec = Decoder::new(Direction::Request);
    let mut in_flight: std::collections::VecDeque<Input> = Default::default();
    let mut action = s.start();
    for _ in 0..10_000 {
        notes.extend(s.take_notes());
        action = match action {
            Action::Send { frame, .. } => {
                verbs.push(frame.head.clone());
                for d in dev_dec.feed(&frame.encode()) {
                    let Decoded::Frame(f) = d else { panic!("device could not decode {frame}") };
                    let reply = dev.handle(&f);
                    match reply.delivery {
                        Delivery::Unplug => in_flight.push_back(Input::Gone("EOF".into())),
                        Delivery::Silent => {}
                        _ => {
                            for d in host_dec.feed(&reply.wire()) {
                                match d {
                                    Decoded::Frame(f) => in_flight.push_back(Input::Frame(f)),
                                    Decoded::Corrupt { line, .. } => in_flight.push_back(Input::Corrupt(line)),
                                    Decoded::Oversized { discarded } => {
                                        in_flight.push_back(Input::Corrupt(format!("{discarded}-byte line")))
                                    }
                                    Decoded::Console(_) => {}
                                }
                            }
                        }
                    }
                }
                s.handle(in_flight.pop_front().unwrap_or(Input::Timeout))
            }
            Action::KeepWaiting => s.handle(in_flight.pop_front().unwrap_or(Input::Timeout)),
            Action::Wait { .. } => s.handle(Input::Waited),
            Action::Lookup { .. } => s.handle(Input::Lookup(Ok(existing.clone()))),
            Action::Write { what, .. } => panic!("the native session wrote raw bytes ({what})"),
            Action::Issue { identity, keygen_spki_der, csr_der, nonce, .. } => {
                let r = ca.check_and_issue(&identity.serial, &keygen_spki_der, &csr_der, &nonce);
                issued = r.as_ref().ok().cloned();
                s.handle(Input::Issued(r))
            }
            Action::CheckProof { spki_der, message, signature } => {
                s.handle(Input::ProofChecked(verify_proof(&spki_der, &message, &signature)))
            }
            Action::Finish(outcome) => {
                notes.extend(s.take_notes());
                return Run { outcome, notes, verbs, issued };
            }
        };
    }
    panic!("session did not finish");
}

/// Drive a host session over a real serial port (the pty at `path`),
/// opened the way the station opens ports, with the session's deadlines.
pub fn run_over_port(path: &std::path::Path, cfg: SessionConfig, ca: &TestCa, existing: Option<IssuedChain>) -> Run {
    let mut port = serialport::new(path.to_string_lossy(), 115_200)
        .timeout(Duration::from_millis(10))
        .open()
        .expect("open the pty like the station does");
    let mut s = Session::new(cfg);
    let mut notes = Vec::new();
    let mut verbs = Vec::new();
    let mut issued = None;
    let mut dec = Decoder::new(Direction::Response);
    let mut queue: std::collections::VecDeque<Input> = Default::default();
    let mut deadline = Instant::now();
    let mut action = s.start();
    let mut buf = [0u8; 1024];
    loop {
        notes.extend(s.take_notes());
        let wait = match action {
            Action::Send { frame, timeout_ms } => {
                verbs.push(frame.head.clone());
                port.write_all(&frame.encode()).expect("write");
                deadline = Instant::now() + Duration::from_millis(timeout_ms as u64);
                true
            }
            Action::KeepWaiting => true,
            Action::Wait { ms } => {
                std::thread::sleep(Duration::from_millis(u64::from(ms)));
                action = s.handle(Input::Waited);
                continue;
            }
            Action::Lookup { .. } => {
                action = s.handle(Input::Lookup(Ok(existing.clone())));
                continue;
            }
            Action::Write { what, .. } => panic!("the native session wrote raw bytes ({what})"),
            Action::Issue { identity, keygen_spki_der, csr_der, nonce, .. } => {
                let r = ca.check_and_issue(&identity.serial, &keygen_spki_der, &csr_der, &nonce);
                issued = r.as_ref().ok().cloned();
                action = s.handle(Input::Issued(r));
                continue;
            }
            Action::CheckProof { spki_der, message, signature } => {
                action = s.handle(Input::ProofChecked(verify_proof(&spki_der, &message, &signature)));
                continue;
            }
            Action::Finish(outcome) => {
                notes.extend(s.take_notes());
                return Run { outcome, notes, verbs, issued };
            }
        };
        debug_assert!(wait);
        let input = loop {
            if let Some(i) = queue.pop_front() {
                break i;
            }
            if Instant::now() >= deadline {
                break Input::Timeout;
            }
            match port.read(&mut buf) {
                Ok(0) => break Input::Gone("EOF".into()),
                Ok(n) => {
                    for d in dec.feed(&buf[..n]) {
                        match d {
                            Decoded::Frame(f) => queue.push_back(Input::Frame(f)),
                            Decoded::Corrupt { line, .. } => queue.push_back(Input::Corrupt(line)),
                            Decoded::Oversized { discarded } => queue.push_back(Input::Corrupt(format!("{discarded}-byte line"))),
                            Decoded::Console(_) => {}
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => break Input::Gone(e.to_string()),
            }
        };
        action = s.handle(input);
    }
}
